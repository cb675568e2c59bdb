"""LoRA adapters (a Modelfile's ``ADAPTER``): checked and imported by ``create``, kept by the
store while a name uses them, and applied by llama.cpp to every decoding context at load.

Real llama.cpp on the tiny model and adapters generated as ``convert_lora_to_gguf.py``
writes them (``tests/support/tiny_gguf.py``).
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from local_llm_runtime import (
    ModelLibrary,
    ModelLoadError,
    ModelNotFoundError,
    RuntimeSettings,
    StoreError,
)
from local_llm_runtime.cli.main import main
from local_llm_runtime.errors import InvalidAdapterError
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.llama.loader import LoadOptions, ModelLoader
from local_llm_runtime.store.adapters import tensor_shapes
from local_llm_runtime.store.gguf_meta import read_gguf_info
from local_llm_runtime.store.library import LocalModel
from local_llm_runtime.store.records import Store
from tests.support.fake_hub import FakeHub
from tests.support.tiny_gguf import LORA_TARGETS, write_tiny_lora_gguf

GREEDY = {"temperature": 0.0, "seed": 1, "num_predict": 12}
PROMPT_TOKENS = [1, 259, 260, 261, 262]  # BOS and letters of the tiny vocabulary


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


@pytest.fixture
def lora_factory(tmp_path: Path) -> Callable[..., Path]:
    """Write adapters: ``factory(name="a.gguf", **write_tiny_lora_gguf kwargs)``."""
    counter = iter(range(1_000_000))

    def make(name: str | None = None, **kwargs: object) -> Path:
        folder = tmp_path / f"adapters-{next(counter)}"
        folder.mkdir()
        return write_tiny_lora_gguf(folder / (name or "lora.gguf"), **kwargs)  # type: ignore[arg-type]

    return make


def _chat(engine: Engine, model: str, text: str = "hello world") -> str:
    return engine.chat(model, [{"role": "user", "content": text}], options=GREEDY).text


def _blobs(home: Path) -> set[str]:
    return {p.name for p in (home / "blobs").iterdir()} if (home / "blobs").exists() else set()


def _blob(sha: str) -> str:
    return f"sha256-{sha}"


def _logits(model: Path, adapters: tuple[Path, ...] = ()) -> np.ndarray:
    """The last position's logits for PROMPT_TOKENS, loaded as the runtime loads a model."""
    local = LocalModel(name="tiny", paths=(model,), size=model.stat().st_size, adapters=adapters)
    options = LoadOptions(adapters=tuple(str(a) for a in adapters))
    loaded = ModelLoader(RuntimeSettings.from_env()).load(local, options)
    try:
        llm = loaded.llm
        llm.eval(PROMPT_TOKENS)
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm._model.model))
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(
            ctypes.cast(row, ctypes.POINTER(ctypes.c_float)), (n_vocab,)
        ).copy()
    finally:
        if loaded.batcher is not None:
            loaded.batcher.close()
        loaded.llm.close()


# ---- the generated adapter ------------------------------------------------------------------


def test_generated_adapter_has_convert_lora_to_gguf_layout(tiny_lora_gguf: Path) -> None:
    meta = read_gguf_info(tiny_lora_gguf).metadata
    assert meta["general.type"] == "adapter"
    assert meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 8.0
    assert meta["general.architecture"] == "llama"
    shapes = tensor_shapes(tiny_lora_gguf)
    assert len(shapes) == 2 * 2 * len(LORA_TARGETS)
    # ggml order (innermost first): lora_a [n_in, rank], lora_b [rank, n_out]
    assert shapes["blk.0.attn_q.weight.lora_a"] == (64, 4)
    assert shapes["blk.0.attn_q.weight.lora_b"] == (4, 64)


def test_adapter_changes_the_logits_and_a_zero_b_adapter_does_not(
    tiny_gguf: Path, tiny_lora_gguf: Path, lora_factory: Callable[..., Path]
) -> None:
    base = _logits(tiny_gguf)
    assert np.array_equal(base, _logits(tiny_gguf))  # deterministic: a difference means something
    adapted = _logits(tiny_gguf, (tiny_lora_gguf,))
    assert float(np.max(np.abs(adapted - base))) > 1e-3
    zero = _logits(tiny_gguf, (lora_factory(zero_b=True),))
    assert np.array_equal(zero, base)


def test_adapter_applies_to_a_quantized_model_under_the_runtime_repack_choice(
    tiny_gguf: Path, tiny_lora_gguf: Path, lora_factory: Callable[..., Path], tmp_path: Path
) -> None:
    """Q4_0 weights are the ones llama.cpp repacks (where the runtime keeps repacking on)."""
    q4 = tmp_path / "tiny-q4_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    assert (
        llama_cpp.llama_model_quantize(
            str(tiny_gguf).encode(), str(q4).encode(), ctypes.byref(params)
        )
        == 0
    )
    base = _logits(q4)
    assert float(np.max(np.abs(_logits(q4, (tiny_lora_gguf,)) - base))) > 1e-3
    assert np.array_equal(_logits(q4, (lora_factory(zero_b=True),)), base)


# ---- create: check, import, show, gc -------------------------------------------------------


def test_create_imports_the_adapter_and_show_lists_it(
    tiny_gguf: Path,
    tiny_lora_gguf: Path,
    isolated_env: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    lib = ModelLibrary()
    record = lib.create("tiny-lora", str(tiny_gguf), adapters=[tiny_lora_gguf])
    (adapter,) = record.adapters
    blob = isolated_env["home"] / "blobs" / _blob(adapter.sha256)
    assert blob.read_bytes() == tiny_lora_gguf.read_bytes()
    assert adapter.size == tiny_lora_gguf.stat().st_size
    model = lib.resolve("tiny-lora", pull=False)
    assert model.adapters == (blob,)
    assert model.paths == (isolated_env["home"] / "blobs" / _blob(record.digest),)
    shown = lib.show("tiny-lora")["adapters"]
    assert shown == [{"path": str(blob), "size": adapter.size, "sha256": adapter.sha256}]
    assert lib.show(str(tiny_gguf))["adapters"] == []
    assert main(["show", "tiny-lora"]) == 0
    out = capsys.readouterr().out
    assert "Adapters" in out and str(blob) in out
    # inherited by a model created from it, replaced when given
    assert lib.create("child", "tiny-lora", system="x").adapters == record.adapters
    assert lib.create("bare", "tiny-lora", adapters=[]).adapters == []


def test_adapter_blob_lives_while_any_name_uses_it(
    tiny_gguf: Path, tiny_lora_gguf: Path, isolated_env: dict[str, Path]
) -> None:
    home = isolated_env["home"]
    lib = ModelLibrary()
    base = lib.create("tiny", str(tiny_gguf))
    record = lib.create("tiny-lora", "tiny", adapters=[tiny_lora_gguf])
    lib.copy("tiny-lora", "tiny-lora-2")
    both = {_blob(base.digest), _blob(record.adapters[0].sha256)}
    assert _blobs(home) == both
    lib.remove("tiny")  # the base's name: its blob is still tiny-lora's model file
    assert _blobs(home) == both
    assert lib.resolve("tiny-lora", pull=False).adapters
    lib.remove("tiny-lora")
    assert _blobs(home) == both  # tiny-lora-2 still names both
    lib.remove("tiny-lora-2")
    assert _blobs(home) == set()


def test_replacing_a_model_collects_its_old_adapter(
    tiny_gguf: Path, lora_factory: Callable[..., Path], isolated_env: dict[str, Path]
) -> None:
    lib = ModelLibrary()
    first = lib.create("m", str(tiny_gguf), adapters=[lora_factory(seed=1)])
    second = lib.create("m", str(tiny_gguf), adapters=[lora_factory(seed=2)])
    assert _blobs(isolated_env["home"]) == {
        _blob(second.digest),
        _blob(second.adapters[0].sha256),
    }
    assert first.adapters[0].sha256 != second.adapters[0].sha256


def test_hub_model_with_adapter_keeps_it_through_update_and_base_rm(
    fake_hub: FakeHub, tiny_gguf: Path, tiny_lora_gguf: Path, isolated_env: dict[str, Path]
) -> None:
    fake_hub.add_repo(
        "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        {"qwen2.5-coder-0.5b-instruct-q4_k_m.gguf": tiny_gguf},
    )
    lib = ModelLibrary()
    record = lib.create("coder-lora", "qwen2.5-coder:0.5b", adapters=[tiny_lora_gguf])
    assert record.source == "hub"
    blob = isolated_env["home"] / "blobs" / _blob(record.adapters[0].sha256)
    updated = lib.pull("coder-lora", update=True)
    assert updated.adapters == record.adapters  # an update re-pins files, not the bindings
    lib.remove("qwen2.5-coder:0.5b")
    assert blob.exists()
    assert lib.resolve("coder-lora", pull=False).adapters == (blob,)
    lib.remove("coder-lora")
    assert not blob.exists()


def test_missing_adapter_blob_is_a_store_error(
    tiny_gguf: Path, tiny_lora_gguf: Path, isolated_env: dict[str, Path]
) -> None:
    lib = ModelLibrary()
    record = lib.create("tiny-lora", str(tiny_gguf), adapters=[tiny_lora_gguf])
    assert Store(lib.settings).present(record)
    (isolated_env["home"] / "blobs" / _blob(record.adapters[0].sha256)).unlink()
    assert not Store(lib.settings).present(record)
    with pytest.raises(StoreError, match=r"LoRA adapter.*create 'tiny-lora:latest' again"):
        lib.resolve("tiny-lora")


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("model GGUF", InvalidAdapterError, "is a model, not a LoRA adapter.*FROM"),
        ("other adapter type", InvalidAdapterError, "type 'control_vector', not 'lora'"),
        ("other architecture", InvalidAdapterError, "for 'qwen2' models.*'llama' model"),
        ("other model size", InvalidAdapterError, r"is \[64, 64\] in .*lora_a \[32, 4\]"),
        ("more layers", InvalidAdapterError, "has no tensor 'blk.2.attn_k.weight'"),
        ("not GGUF", InvalidAdapterError, "not a valid GGUF.*convert_lora_to_gguf"),
        ("PEFT folder", InvalidAdapterError, "a PEFT adapter.*convert_lora_to_gguf.py --base"),
        ("missing", ModelNotFoundError, "No such adapter file"),
    ],
)
def test_wrong_adapter_files_are_refused_before_anything_is_stored(
    case: str,
    error: type[Exception],
    message: str,
    tiny_gguf: Path,
    lora_factory: Callable[..., Path],
    tmp_path: Path,
    isolated_env: dict[str, Path],
) -> None:
    files: dict[str, Callable[[], Path]] = {
        "model GGUF": lambda: tiny_gguf,
        "other adapter type": lambda: lora_factory(adapter_type="control_vector"),
        "other architecture": lambda: lora_factory(architecture="qwen2"),
        "other model size": lambda: lora_factory(n_embd=32),
        "more layers": lambda: lora_factory(n_layer=3),
        "not GGUF": lambda: _text_file(tmp_path / "notes.gguf"),
        "PEFT folder": lambda: _peft_folder(tmp_path / "my-adapter"),
        "missing": lambda: tmp_path / "nowhere.gguf",
    }
    lib = ModelLibrary()
    lib.create("tiny", str(tiny_gguf))
    before = _blobs(isolated_env["home"])
    with pytest.raises(error, match=message):
        lib.create("bad", "tiny", adapters=[files[case]()])
    assert lib.store.get("bad") is None
    assert _blobs(isolated_env["home"]) == before  # nothing copied


def _text_file(path: Path) -> Path:
    path.write_text("not a model\n" * 10)
    return path


def _peft_folder(path: Path) -> Path:
    path.mkdir()
    (path / "adapter_config.json").write_text("{}")
    return path


# ---- applied at load -----------------------------------------------------------------------


def test_chat_through_the_engine_differs_with_the_adapter(
    engine: Engine, tiny_gguf: Path, tiny_lora_gguf: Path, lora_factory: Callable[..., Path]
) -> None:
    engine.library.create("tiny-lora", str(tiny_gguf), adapters=[tiny_lora_gguf])
    engine.library.create("tiny-zero", str(tiny_gguf), adapters=[lora_factory(zero_b=True)])
    base = _chat(engine, str(tiny_gguf))
    assert _chat(engine, str(tiny_gguf)) == base
    adapted = _chat(engine, "tiny-lora")
    assert adapted != base
    assert _chat(engine, "tiny-lora") == adapted
    assert _chat(engine, "tiny-zero") == base


def test_batched_context_has_the_adapter_too(
    monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path, tiny_lora_gguf: Path
) -> None:
    monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", "2")
    engine = Engine()
    try:
        engine.library.create("tiny-lora", str(tiny_gguf), adapters=[tiny_lora_gguf])
        base = _chat(engine, str(tiny_gguf))
        adapted = _chat(engine, "tiny-lora")
        assert {p.parallel for p in engine.ps()} == {2}
        assert adapted != base
    finally:
        engine.pool.close()


def test_adapters_are_part_of_the_pool_key(
    engine: Engine, tiny_gguf: Path, tiny_lora_gguf: Path, lora_factory: Callable[..., Path]
) -> None:
    lib = engine.library
    lib.create("plain", str(tiny_gguf))
    lib.copy("plain", "plain-copy")
    lib.create("tiny-lora", str(tiny_gguf), adapters=[tiny_lora_gguf])
    lib.copy("tiny-lora", "tiny-lora-copy")
    lib.create("tiny-other", str(tiny_gguf), adapters=[lora_factory(seed=7)])
    # every name's model file is the same blob
    assert len({lib.resolve(n).path for n in ("plain", "tiny-lora", "tiny-other")}) == 1
    _chat(engine, "plain")
    _chat(engine, "plain-copy")  # same file, no adapter: shared
    assert len(engine.ps()) == 1
    _chat(engine, "tiny-lora")
    _chat(engine, "tiny-lora-copy")  # same base and adapter: shared
    assert len(engine.ps()) == 2
    _chat(engine, "tiny-other")
    assert len(engine.ps()) == 3


def test_adapters_are_freed_on_unload(
    engine: Engine,
    tiny_gguf: Path,
    tiny_lora_gguf: Path,
    lora_factory: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    freed: list[object] = []
    real_free = llama_cpp.llama_adapter_lora_free

    def spy(handle: object) -> None:
        freed.append(handle)
        real_free(handle)

    monkeypatch.setattr(llama_cpp, "llama_adapter_lora_free", spy)
    engine.library.create("two", str(tiny_gguf), adapters=[tiny_lora_gguf, lora_factory(seed=3)])
    _chat(engine, "two")
    assert freed == []
    assert engine.unload("two") == 1
    assert len(freed) == 2


def test_an_adapter_llama_cpp_refuses_is_a_load_error_naming_it(
    engine: Engine, tiny_gguf: Path, lora_factory: Callable[..., Path]
) -> None:
    bad = lora_factory(n_embd=32)  # bypasses create's check, as a blob replaced on disk would
    model = LocalModel(name="tiny", paths=(tiny_gguf,), size=1, adapters=(bad,))
    with (
        pytest.raises(
            ModelLoadError, match=rf"LoRA adapter {re.escape(str(bad))}.*incorrect shape"
        ),
        engine.pool.lease(model, LoadOptions()),
    ):
        pass
    assert engine.ps() == []


def test_embedding_instance_has_the_adapter_too(
    engine: Engine, tiny_gguf: Path, tiny_lora_gguf: Path, lora_factory: Callable[..., Path]
) -> None:
    engine.library.create("tiny-lora", str(tiny_gguf), adapters=[tiny_lora_gguf])
    engine.library.create("tiny-zero", str(tiny_gguf), adapters=[lora_factory(zero_b=True)])
    base = np.array(engine.embed(str(tiny_gguf), ["hello world"])[0])
    adapted = np.array(engine.embed("tiny-lora", ["hello world"])[0])
    assert float(np.max(np.abs(adapted - base))) > 1e-3
    assert np.array_equal(np.array(engine.embed("tiny-zero", ["hello world"])[0]), base)


def test_the_same_adapter_twice_is_refused(tiny_gguf: Path, tiny_lora_gguf: Path) -> None:
    from local_llm_runtime.errors import InvalidAdapterError
    from local_llm_runtime.store.library import ModelLibrary

    lib = ModelLibrary()
    with pytest.raises(InvalidAdapterError, match="listed twice"):
        lib.create("twice", str(tiny_gguf), adapters=[tiny_lora_gguf, tiny_lora_gguf])
    assert lib.list() == []  # nothing written
