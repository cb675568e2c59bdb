"""LangChain's own standard integration suites on the real Qwen2.5-Coder-0.5B-Instruct.

Capability flags are honest: tool calling, tool choice, structured output, JSON
mode and usage metadata are all claimed. Any xfail below is a limit of a 0.5B
model, not of the adapter, and says why.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests

from local_llm_integrations import ChatLocal
from local_llm_integrations.langchain import LocalEmbeddings
from tests.support.tiny_gguf import write_tiny_gguf


@cache
def _demo_path() -> str:
    from demo_model import ensure_demo_model

    return str(ensure_demo_model(quiet=True))


@cache
def _other_model_path() -> str:
    folder = Path(tempfile.mkdtemp(prefix="override-model-"))
    return str(write_tiny_gguf(folder / "other-model.gguf"))


class TestChatLocalIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatLocal]:
        return ChatLocal

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": _demo_path(), "temperature": 0, "num_ctx": 4096}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return _other_model_path()


class TestLocalEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": _demo_path()}
