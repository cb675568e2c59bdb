"""A stream nobody can reach any more gives its model slot back when it is collected.

The rule, for every way a caller can drop a stream unclosed (the runtime's sync and
async streams, the LangChain and LlamaIndex stream generators) and for one slot or a
continuous batch: drop ``slots + 1`` streams that hold a slot, and the next request
still gets the model, and ``ps()`` shows no active request afterwards. The idle
reclaim is pushed out to 60 s, so only the garbage-collection path can free the
slots; every request carries its own ``timeout=`` so a leak fails fast (a
``RequestTimeoutError``) instead of hanging.

All on the real tiny engine; no wall-clock asserts.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage

from local_llm_integrations import ChatLocal
from local_llm_integrations.llama_index import LocalLLM
from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama.engine import LlamaEngine
from local_llm_runtime.types import FinalChunk

BOUND_S = 30.0
"""Each request's own timeout: a leaked slot makes the next request fail after this."""
LONG = {"num_predict": 100_000, "temperature": 1.0, "seed": 3}
SHORT = {"temperature": 0.0, "seed": 1, "num_predict": 4}
MSG = [{"role": "user", "content": "go"}]


@pytest.fixture(params=[1, 3], ids=["one-slot", "three-slots"])
def engine(request: pytest.FixtureRequest) -> Iterator[LlamaEngine]:
    settings = RuntimeSettings.from_env().model_copy(
        update={"num_parallel": request.param, "stream_idle_timeout": 60.0}
    )
    eng = LlamaEngine(settings)
    yield eng
    eng.pool.close()


def _slots(engine: LlamaEngine) -> int:
    return engine.settings.num_parallel


def _assert_model_free(engine: LlamaEngine, model: Path) -> None:
    """A new request completes, then no request and no decoder slot is left active."""
    result = engine.chat(str(model), MSG, options=SHORT, timeout=BOUND_S)
    assert result.usage.completion_tokens > 0
    # An async stream's worker releases its lease just after the drop: allow it time.
    deadline = time.monotonic() + BOUND_S
    while [m.active_requests for m in engine.ps()] != [0] and time.monotonic() < deadline:
        time.sleep(0.02)
    running = engine.ps()
    assert [m.active_requests for m in running] == [0], "a dropped stream kept its slot"
    assert running[0].parallel == _slots(engine)
    (entry,) = engine.pool._entries.values()
    assert entry.batcher is not None
    assert all(slot.run is None for slot in entry.batcher._slots)
    assert entry.lock._held == 0 and not entry.lock._holders


def _drop_sync(engine: LlamaEngine, model: Path) -> None:
    stream = engine.chat_stream(str(model), MSG, options=LONG, timeout=BOUND_S)
    first = next(iter(stream))  # now it holds a slot
    assert not isinstance(first, FinalChunk)
    del stream, first


def test_a_dropped_stream_releases_its_slot(engine: LlamaEngine, tiny_gguf: Path) -> None:
    for _ in range(_slots(engine) + 1):  # one more than the slots: a leak blocks the last
        _drop_sync(engine, tiny_gguf)
        gc.collect()
    _assert_model_free(engine, tiny_gguf)


def test_a_dropped_stream_is_released_without_the_cycle_collector(
    engine: LlamaEngine, tiny_gguf: Path
) -> None:
    """No reference cycle keeps a stream alive: the last ``del`` releases the slot."""
    gc.disable()
    try:
        for _ in range(_slots(engine) + 1):
            _drop_sync(engine, tiny_gguf)
        assert [m.active_requests for m in engine.ps()] == [0]
    finally:
        gc.enable()
    _assert_model_free(engine, tiny_gguf)


def test_a_dropped_stream_read_to_its_timeout_or_never_read(
    engine: LlamaEngine, tiny_gguf: Path
) -> None:
    """Streams dropped before their first read (no slot yet) hold nothing either."""
    for _ in range(_slots(engine) + 1):
        stream = engine.chat_stream(str(tiny_gguf), MSG, options=LONG, timeout=BOUND_S)
        del stream
        gc.collect()
    _assert_model_free(engine, tiny_gguf)


def test_a_dropped_async_stream_releases_its_slot(engine: LlamaEngine, tiny_gguf: Path) -> None:
    async def drop_all() -> None:
        for _ in range(_slots(engine) + 1):
            stream = engine.achat_stream(str(tiny_gguf), MSG, options=LONG, timeout=BOUND_S)
            first = await stream.__anext__()  # its worker holds a slot now
            assert not isinstance(first, FinalChunk)
            del stream, first  # no aclose()
            gc.collect()

    asyncio.run(drop_all())
    _assert_model_free(engine, tiny_gguf)


def _langchain(engine: LlamaEngine, model: Path) -> Iterator[Any]:
    llm = ChatLocal(model=str(model), engine=engine, timeout=BOUND_S, max_tokens=100_000, seed=3)
    return iter(llm.stream("go"))


async def _langchain_async(engine: LlamaEngine, model: Path) -> Any:
    llm = ChatLocal(model=str(model), engine=engine, timeout=BOUND_S, max_tokens=100_000, seed=3)
    return llm.astream("go")


async def _llama_index_async(engine: LlamaEngine, model: Path) -> Any:
    llm = LocalLLM(
        model=str(model), engine=engine, request_timeout=BOUND_S, num_predict=100_000, seed=3
    )
    return await llm.astream_chat([ChatMessage(role="user", content="go")])


def _llama_index(engine: LlamaEngine, model: Path) -> Iterator[Any]:
    llm = LocalLLM(
        model=str(model), engine=engine, request_timeout=BOUND_S, num_predict=100_000, seed=3
    )
    return iter(llm.stream_chat([ChatMessage(role="user", content="go")]))


def _llama_index_complete(engine: LlamaEngine, model: Path) -> Iterator[Any]:
    llm = LocalLLM(
        model=str(model), engine=engine, request_timeout=BOUND_S, num_predict=100_000, seed=3
    )
    return iter(llm.stream_complete("go"))


@pytest.mark.parametrize(
    "open_stream",
    [_langchain, _llama_index, _llama_index_complete],
    ids=["langchain-stream", "llama-index-stream-chat", "llama-index-stream-complete"],
)
def test_an_abandoned_adapter_generator_releases_its_slot(
    engine: LlamaEngine,
    tiny_gguf: Path,
    open_stream: Callable[[LlamaEngine, Path], Iterator[Any]],
) -> None:
    for _ in range(_slots(engine) + 1):
        generator = open_stream(engine, tiny_gguf)
        next(generator)  # mid-way: the engine stream under it holds a slot
        del generator
        gc.collect()
    _assert_model_free(engine, tiny_gguf)


@pytest.mark.parametrize(
    "open_stream",
    [_langchain_async, _llama_index_async],
    ids=["langchain-astream", "llama-index-astream-chat"],
)
def test_an_abandoned_async_adapter_generator_releases_its_slot(
    engine: LlamaEngine, tiny_gguf: Path, open_stream: Callable[..., Any]
) -> None:
    async def drop_all() -> None:
        for _ in range(_slots(engine) + 1):
            generator = await open_stream(engine, tiny_gguf)
            await generator.__anext__()
            del generator  # no aclose(): the event loop's asyncgen hooks finalize it
            gc.collect()
            await asyncio.sleep(0)  # let the finalizer's aclose task run

    asyncio.run(drop_all())
    _assert_model_free(engine, tiny_gguf)


def test_exiting_with_streams_held_does_not_hang(tiny_gguf: Path, tmp_path: Path) -> None:
    """Streams still referenced at exit are collected during shutdown: no hang, no thread."""
    script = f"""
import gc
from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama.engine import LlamaEngine
engine = LlamaEngine(RuntimeSettings.from_env().model_copy(update={{"num_parallel": 3}}))
held = []
for _ in range(2):
    s = engine.chat_stream({str(tiny_gguf)!r}, [{{"role": "user", "content": "go"}}],
                           options={{"num_predict": 100000, "temperature": 1.0, "seed": 3}})
    next(s)
    held.append(s)
print("ok", flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
