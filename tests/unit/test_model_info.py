"""``LlamaEngine.model_info``: facts from the GGUF header, no load, no download."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from local_llm_runtime import EngineProtocol, LlamaEngine, ModelNotFoundError


def test_a_chat_model_from_its_header(tiny_gguf: Path) -> None:
    engine: EngineProtocol = LlamaEngine()
    info = engine.model_info(str(tiny_gguf))
    assert info.name == str(tiny_gguf)
    assert info.kind == "chat"
    assert info.capabilities[0] == "completion"
    assert info.context_length == 2048  # {arch}.context_length of the tiny model
    assert info.embedding_length == 64
    assert info.architecture == "llama"
    assert info.context_window() == 2048  # min(default 4096, trained)
    assert info.context_window(1024) == 1024  # an explicit num_ctx is what loads...
    assert info.context_window(8192) == 2048  # ...capped at the trained context
    assert engine.ps() == []  # nothing was loaded


@pytest.mark.parametrize("num_ctx", [4096, 2**31 - 1])
def test_a_num_ctx_past_the_trained_context_loads_the_trained_one(
    tiny_gguf: Path, num_ctx: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Any path that sets num_ctx (a request, a stored create parameter, an adapter field):
    # the load is planned in one place, so one rule covers them all.
    engine = LlamaEngine()
    try:
        running = engine.preload(str(tiny_gguf), options={"num_ctx": num_ctx})
        assert running.num_ctx == 2048
        assert running.num_ctx == engine.model_info(str(tiny_gguf)).context_window(num_ctx)
        assert "trained context" in caplog.text
        assert engine.chat(str(tiny_gguf), [{"role": "user", "content": "hi"}],
                           options={"num_ctx": num_ctx, "num_predict": 2}).usage.completion_tokens <= 2  # fmt: skip
    finally:
        engine.unload()


def test_template_decides_tools(tiny_gguf_factory: Callable[..., Path]) -> None:
    engine = LlamaEngine()
    plain = tiny_gguf_factory("plain.gguf", chat_template="{{ messages[0]['content'] }}")
    none = tiny_gguf_factory("none.gguf", chat_template=None)
    assert not engine.model_info(str(plain)).supports_tools
    # No template: the engine renders ChatML, which renders tools.
    assert engine.model_info(str(none)).supports_tools
    for path in (plain, none):  # `show` and model_info tell the same story
        shown = engine.library.show(str(path))["details"]["capabilities"]
        assert tuple(shown) == engine.model_info(str(path)).capabilities


def test_not_pulled_is_model_not_found_without_a_download() -> None:
    with pytest.raises(ModelNotFoundError, match="pull"):
        LlamaEngine().model_info("qwen2.5:72b")
