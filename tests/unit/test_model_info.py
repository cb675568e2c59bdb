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
    assert info.context_window(8192) == 8192  # an explicit num_ctx is what loads
    assert engine.ps() == []  # nothing was loaded


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
