"""llama-cpp-python's own OpenAI-compatible server, started on a free loopback port.

The remote backend's first foreign target: ``python -m llama_cpp.server`` with a
GGUF, in a subprocess, loaded inside
:func:`local_llm_runtime.llama.repack.like_the_runtime` (on an AMX machine a
load with llama.cpp's extra buffer types crashes; the bootstrap makes the
server load as the runtime does). The model is loaded in the main thread by
``create_app`` before uvicorn starts, where the context variable is set.

Example::

    with LlamaCppServer(gguf, alias="Qwen/Qwen2.5-Coder-0.5B-Instruct") as server:
        ChatLocal(model="qwen2.5-coder:0.5b", base_url=server.url + "/v1").invoke("hi")
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.server import free_port

__all__ = ["LlamaCppServer"]

_BOOTSTRAP = (
    "import functools, os, runpy, sys\n"
    "import llama_cpp\n"
    "from local_llm_runtime.llama.repack import like_the_runtime\n"
    "pooling = os.environ.get('TEST_LLAMA_POOLING')\n"
    "if pooling:  # llama-server's --pooling; llama_cpp.server has no flag for it\n"
    "    init = llama_cpp.Llama.__init__\n"
    "    @functools.wraps(init)\n"
    "    def pooled(self, *a, **k):\n"
    "        k['pooling_type'] = getattr(llama_cpp, 'LLAMA_POOLING_TYPE_' + pooling.upper())\n"
    "        init(self, *a, **k)\n"
    "    llama_cpp.Llama.__init__ = pooled\n"
    "sys.argv = ['llama_cpp.server', *sys.argv[1:]]\n"
    "with like_the_runtime():\n"
    "    runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)


class LlamaCppServer:
    """``python -m llama_cpp.server --model GGUF`` on ``127.0.0.1:<free port>``.

    Args:
        model: The GGUF file.
        alias: The id the server serves it as (``--model_alias``).
        embedding: Serve ``/v1/embeddings`` too (``--embedding``).
        pooling: ``mean``, ``cls``, ``last`` (llama-server's ``--pooling``); ``None``:
            the model's own (a chat model has none: one vector per token).
        n_ctx: Context size in tokens.
        n_threads: CPU threads (generation and prompt).
        api_key: Require this bearer key (``--api_key``).
        extra: More command-line arguments.
    """

    def __init__(
        self,
        model: Path,
        *,
        alias: str | None = None,
        embedding: bool = False,
        pooling: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        api_key: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        threads = str(n_threads or min(4, os.cpu_count() or 1))
        self.args = [
            "--model", str(model),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(n_ctx),
            "--n_threads", threads,
            "--n_threads_batch", threads,
            "--verbose", "false",
            # by default a new request cuts the running stream short (an empty answer
            # with finish_reason "stop"); concurrent clients need it off
            "--interrupt_requests", "false",
        ]  # fmt: skip
        if alias:
            self.args += ["--model_alias", alias]
        if embedding:
            self.args += ["--embedding", "true"]
        if api_key:
            self.args += ["--api_key", api_key]
        self.args += list(extra)
        self.api_key = api_key
        self.pooling = pooling
        self.process: subprocess.Popen[bytes] | None = None
        self.log = b""

    def __enter__(self) -> LlamaCppServer:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        if self.pooling:
            env["TEST_LLAMA_POOLING"] = self.pooling
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                self.log = self.process.stdout.read() if self.process.stdout else b""
                raise RuntimeError(
                    f"llama_cpp.server exited ({self.process.returncode}):\n"
                    + self.log.decode("utf-8", "replace")[-4000:]
                )
            try:
                if httpx.get(self.url + "/v1/models", headers=headers, timeout=2).is_success:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("llama_cpp.server did not start in 300 s")
            time.sleep(0.2)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None
