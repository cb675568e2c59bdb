"""LangChain's standard integration suites with ``ChatLocal(base_url=<local-llm serve>/v1)``.

The same capability flags as the in-process suite (test_langchain_standard.py):
the remote backend must not lose any. The server (uvicorn on a free loopback
port, over the real engine) serves the demo model as ``qwen2.5-coder:0.5b`` and
a tiny GGUF as ``other-model`` (the model-override test); it starts on first use
and stops at the end of the module.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests

from local_llm_integrations import ChatLocal
from local_llm_integrations.langchain import LocalEmbeddings
from local_llm_runtime.backends import create_engine
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.library import ModelLibrary
from tests.support.server import ServerThread, make_app
from tests.support.tiny_gguf import write_tiny_gguf

MODEL = "qwen2.5-coder:0.5b"
OTHER = "other-model"
_running: list[tuple[ServerThread, Any]] = []


@cache
def _server_url() -> str:
    from demo_model import ensure_demo_model

    root = Path(tempfile.mkdtemp(prefix="remote-standard-"))
    runtime = RuntimeSettings.from_env(
        {"LOCAL_LLM_HOME": str(root / "home"), "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1"}
    )
    library = ModelLibrary(runtime)
    library.create(MODEL, str(ensure_demo_model(quiet=True)))
    library.create(OTHER, str(write_tiny_gguf(root / "other-model.gguf")))
    engine = create_engine(settings=runtime)
    server = ServerThread(make_app(engine, library=library, runtime=runtime)).__enter__()
    _running.append((server, engine))
    return server.url


@pytest.fixture(scope="module", autouse=True)
def _stop_server() -> Iterator[None]:
    yield
    while _running:
        server, engine = _running.pop()
        server.__exit__(None, None, None)
        engine.unload()
    _server_url.cache_clear()


class TestRemoteChatLocalIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatLocal]:
        return ChatLocal

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": MODEL,
            "base_url": _server_url() + "/v1",
            "temperature": 0,
            "num_ctx": 4096,
        }

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
        return OTHER


class TestRemoteLocalEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": MODEL, "base_url": _server_url() + "/v1"}
