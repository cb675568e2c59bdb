"""``local-llm serve``: the engine behind Ollama's and OpenAI's wire APIs.

Needs the ``server`` extra (FastAPI + uvicorn): ``pip install 'local-llm-integrations[server]'``.

* :func:`create_app` -- the ASGI app over any engine (no I/O);
* :func:`serve` -- bind ``LOCAL_LLM_HOST`` and run it with uvicorn until SIGTERM/SIGINT.

Modules, one idea each: :mod:`.app` (factory, guards, error handlers),
:mod:`.state` (admission, drain), :mod:`.streaming` (bodies in, NDJSON/SSE out,
disconnects), :mod:`.errors` (statuses and error bodies), :mod:`.ollama_api`
and :mod:`.openai_api` (the two wire APIs), :mod:`.run` (uvicorn).
"""

from __future__ import annotations

from local_llm_runtime.server.app import create_app
from local_llm_runtime.server.run import serve

__all__ = ["create_app", "serve"]
