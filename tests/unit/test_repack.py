"""Extra buffer types (repacking, AMX) are chosen per load, and only for our loads."""

from __future__ import annotations

import threading
from pathlib import Path

import llama_cpp.llama_cpp as binding
import pytest

from local_llm_runtime.llama import repack
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.settings import RuntimeSettings


def test_the_override_applies_inside_the_block_and_this_thread_only() -> None:
    default = binding.llama_model_default_params().use_extra_bufts
    seen_elsewhere: list[bool] = []
    with repack.model_params(use_extra_bufts=not default):
        assert binding.llama_model_default_params().use_extra_bufts is (not default)
        other = threading.Thread(
            target=lambda: seen_elsewhere.append(
                binding.llama_model_default_params().use_extra_bufts
            )
        )
        other.start()
        other.join()
    assert seen_elsewhere == [default]
    assert binding.llama_model_default_params().use_extra_bufts is default


@pytest.mark.parametrize(
    ("setting", "amx", "expected"),
    [(None, True, False), (None, False, True), (True, True, True), (False, False, False)],
)
def test_policy(
    monkeypatch: pytest.MonkeyPatch, setting: bool | None, amx: bool, expected: bool
) -> None:
    monkeypatch.setattr(repack, "amx_available", lambda: amx)
    assert repack.use_extra_buffers(setting) is expected


@pytest.mark.parametrize(("raw", "value"), [(None, None), ("1", True), ("0", False)])
def test_setting_from_env(tmp_path: Path, raw: str | None, value: bool | None) -> None:
    env = {"LOCAL_LLM_HOME": str(tmp_path)} | ({"LOCAL_LLM_REPACK": raw} if raw else {})
    assert RuntimeSettings.from_env(env).repack is value


@pytest.mark.parametrize("raw", ["1", "0"])
def test_a_real_load_honours_the_setting(
    monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path, raw: str
) -> None:
    monkeypatch.setenv("LOCAL_LLM_REPACK", raw)
    loads: list[bool] = []
    caller = threading.get_ident()  # other tests' leftover threads may load models meanwhile
    original = binding.llama_model_load_from_file

    def spy(path: bytes, params: binding.llama_model_params) -> object:
        ours = path == str(tiny_gguf).encode() and threading.get_ident() == caller
        if ours and not params.vocab_only:  # the vocabulary-only instance holds no weights
            loads.append(bool(params.use_extra_bufts))
        return original(path, params)

    monkeypatch.setattr(binding, "llama_model_load_from_file", spy)
    engine = Engine()
    try:
        reply = engine.generate(str(tiny_gguf), "hello", raw=True, options={"num_predict": 3})
    finally:
        engine.unload()
    assert reply.finish_reason in ("stop", "length")  # it loaded and generated (or ended)
    assert loads and all(flag is (raw == "1") for flag in loads)
