"""The remote backend: the engine interface over an existing model server.

``RemoteEngine(remote=RemoteSettings(base_url="http://gpu-box:8000/v1"))`` (or
``LOCAL_LLM_BASE_URL``) sends every request to an OpenAI-compatible server
(vLLM, SGLang, llama-server, llama_cpp.server, ``local-llm serve``) or an Ollama
server, and answers with the runtime's own chunks and typed errors. See
:mod:`local_llm_runtime.remote.engine`.
"""

from __future__ import annotations

from local_llm_runtime.remote.engine import RemoteEngine

__all__ = ["RemoteEngine"]
