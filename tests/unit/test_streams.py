"""Streams are resources: an unread stream never blocks its model, queue waits are
cancel-aware, async requests use a bounded number of threads, timeouts are typed errors.

All on the real tiny engine; no wall-clock asserts (joins have generous limits).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.errors import LocalLLMError, RequestTimeoutError, StreamReclaimedError
from local_llm_runtime.llama.engine import Engine, default_engine
from local_llm_runtime.llama.pool import FairLock
from local_llm_runtime.streams import MAX_WORKERS, ChunkStream, QueueLeftError, RequestSignal
from local_llm_runtime.types import Chunk, FinalChunk, TextDelta, ToolCallDelta

LONG = {"num_predict": 100_000, "temperature": 1.0, "seed": 3}
SHORT = {"temperature": 0.0, "seed": 1, "num_predict": 4}
MSG = [{"role": "user", "content": "go"}]


@pytest.fixture
def engine() -> Iterator[Engine]:
    settings = RuntimeSettings.from_env().model_copy(update={"stream_idle_timeout": 0.2})
    eng = Engine(settings)
    yield eng
    eng.pool.close()


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _held_stream(engine: Engine, model: Path) -> ChunkStream:
    """A stream that has yielded its first chunk and holds the model."""
    stream = engine.chat_stream(str(model), MSG, options=LONG)
    first = next(stream)
    assert not isinstance(first, FinalChunk)
    return stream


def _lock_of(engine: Engine, model: Path | None = None) -> FairLock:
    entries = [  # with a model: the entry serving it now (others may be warm from other tests)
        e
        for e in engine.pool._entries.values()
        if model is None or (e.model.path == model and e.active > 0)
    ]
    (entry,) = entries
    return entry.lock


# ---- 1. an unread stream does not block the model -------------------------------


def test_an_unread_stream_does_not_block_the_next_request(engine: Engine, tiny_gguf: Path) -> None:
    stream = _held_stream(engine, tiny_gguf)  # referenced, never advanced again
    thread, box = _in_thread(lambda: engine.chat(str(tiny_gguf), MSG, options=SHORT))
    thread.join(60)
    assert not thread.is_alive(), "the next request stayed blocked behind an unread stream"
    assert box["result"].usage.completion_tokens > 0
    assert stream.reclaimed
    with pytest.raises(StreamReclaimedError, match="not read for"):
        next(stream)  # touched later: a typed error, not a hang or a half answer
    stream.close()  # still fine to close


def test_a_stream_abandoned_in_an_exception_does_not_block(engine: Engine, tiny_gguf: Path) -> None:
    seen: list[ChunkStream] = []

    def consume() -> None:
        stream = engine.chat_stream(str(tiny_gguf), MSG, options=LONG)
        seen.append(stream)
        for _chunk in stream:
            raise ValueError("the loop body failed")

    try:
        consume()
    except ValueError as exc:
        kept = exc  # the traceback keeps the frame, and the suspended stream, alive
    thread, box = _in_thread(lambda: engine.chat(str(tiny_gguf), MSG, options=SHORT))
    thread.join(60)
    assert not thread.is_alive()
    assert "result" in box, box
    with pytest.raises(StreamReclaimedError):
        next(seen[0])
    del kept


def test_without_waiters_an_idle_stream_keeps_its_model(engine: Engine, tiny_gguf: Path) -> None:
    stream = _held_stream(engine, tiny_gguf)
    time.sleep(engine.settings.stream_idle_timeout * 2)  # idle, but nobody waits
    assert not stream.reclaimed
    assert isinstance(next(stream), (TextDelta, FinalChunk))
    stream.close()
    assert _lock_of(engine)._held == 0


def test_streams_are_context_managers_and_close_releases(engine: Engine, tiny_gguf: Path) -> None:
    with engine.chat_stream(str(tiny_gguf), MSG, options=LONG) as stream:
        next(stream)
        assert _lock_of(engine)._held == 1
    assert _lock_of(engine)._held == 0
    assert list(stream) == []  # closed: ends, no error


def test_the_langchain_adapter_closes_an_abandoned_stream(tiny_gguf: Path) -> None:
    from local_llm_integrations import ChatLocal

    llm = ChatLocal(model=str(tiny_gguf), max_tokens=100_000, temperature=1.0)
    gen = llm.stream("go")
    next(gen)
    lock = _lock_of(default_engine(), tiny_gguf)
    assert lock._held == 1
    gen.close()  # what LangChain does when the consumer stops: our stream closes too
    assert lock._held == 0


# ---- 2. the queue is cancel-aware -----------------------------------------------


def test_a_cancelled_waiter_leaves_the_queue_and_fifo_holds() -> None:
    lock = FairLock()
    holder = lock.acquire()
    order: list[str] = []
    threads: dict[str, tuple[threading.Thread, dict[str, Any]]] = {}
    cancel = threading.Event()

    def waiter(name: str, event: threading.Event | None = None) -> None:
        ticket = lock.acquire(cancel=event)
        order.append(name)
        lock.release(ticket)

    for name, event in (("a", None), ("b", cancel), ("c", None)):
        threads[name] = _in_thread(lambda name=name, event=event: waiter(name, event))
        while lock.waiting < len(threads):
            time.sleep(0.001)
    cancel.set()
    threads["b"][0].join(30)
    assert not threads["b"][0].is_alive(), "the cancelled waiter kept waiting"
    assert isinstance(threads["b"][1]["error"], QueueLeftError)
    assert lock.waiting == 2
    assert order == []  # it left without ever holding the lock
    lock.release(holder)
    for name in ("a", "c"):
        threads[name][0].join(30)
    assert order == ["a", "c"]
    assert lock.waiting == 0 and lock._held == 0


def test_a_request_cancelled_in_the_queue_ends_without_the_model(
    engine: Engine, tiny_gguf: Path
) -> None:
    engine.settings = engine.settings.model_copy(update={"stream_idle_timeout": 3600.0})
    holder = _held_stream(engine, tiny_gguf)
    cancel = threading.Event()
    thread, box = _in_thread(
        lambda: list(engine.chat_stream(str(tiny_gguf), MSG, options=SHORT, cancel=cancel))
    )
    while _lock_of(engine).waiting < 1:
        time.sleep(0.001)
    cancel.set()
    thread.join(30)
    assert not thread.is_alive()
    (final,) = box["result"]
    assert isinstance(final, FinalChunk)
    assert final.finish_reason == "cancelled"
    assert final.usage.completion_tokens == 0 and final.usage.prompt_tokens == 0
    assert not holder.reclaimed and _lock_of(engine)._held == 1  # the holder kept the model
    holder.close()


def test_cancelling_a_queued_async_request(engine: Engine, tiny_gguf: Path) -> None:
    engine.settings = engine.settings.model_copy(update={"stream_idle_timeout": 3600.0})
    holder = _held_stream(engine, tiny_gguf)

    async def scenario() -> None:
        task = asyncio.create_task(engine.achat(str(tiny_gguf), MSG, options=SHORT))
        while _lock_of(engine).waiting < 1:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while _lock_of(engine).waiting:  # the worker leaves the queue (bounded by the test)
            await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert _lock_of(engine)._held == 1
    holder.close()


# ---- 3. async requests use a bounded number of threads --------------------------


def test_abatch_of_1000_uses_a_bounded_number_of_threads(tiny_gguf: Path) -> None:
    from local_llm_integrations import ChatLocal

    llm = ChatLocal(model=str(tiny_gguf), max_tokens=2, temperature=0)
    llm.invoke("warm up")  # load first
    others = sum(1 for t in threading.enumerate() if t.name != "local-llm-worker")
    peak = {"all": 0, "workers": 0}
    names: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            threads = threading.enumerate()
            workers = sum(1 for t in threads if t.name == "local-llm-worker")
            peak["workers"] = max(peak["workers"], workers)
            if len(threads) > peak["all"]:
                peak["all"] = len(threads)
                names[:] = sorted(t.name for t in threads)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        replies = asyncio.run(llm.abatch([f"prompt {i}" for i in range(1000)]))
    finally:
        done.set()
        watcher.join(5)
    assert len(replies) == 1000
    assert all(r.response_metadata["finish_reason"] in ("length", "stop") for r in replies)
    print(f"abatch(1000): peak {peak} threads ({others} others before): {names}")
    # Model work: at most MAX_WORKERS threads, however many requests.
    assert peak["workers"] <= MAX_WORKERS
    # Everything else: the threads there before, the watcher, and asyncio's own
    # default executor (LangChain runs sync callbacks there; min(32, CPUs + 4) threads).
    asyncio_default = min(32, (os.cpu_count() or 1) + 4)
    assert peak["all"] <= others + 1 + asyncio_default + MAX_WORKERS


# ---- 4. timeouts are typed errors -----------------------------------------------


def test_a_timeout_while_queued_raises_a_typed_error_naming_the_queue(
    engine: Engine, tiny_gguf: Path
) -> None:
    engine.settings = engine.settings.model_copy(update={"stream_idle_timeout": 3600.0})
    holder = _held_stream(engine, tiny_gguf)
    with pytest.raises(RequestTimeoutError) as caught:
        engine.chat(str(tiny_gguf), MSG, options=SHORT, timeout=0.3)
    err = caught.value
    assert isinstance(err, TimeoutError) and isinstance(err, LocalLLMError)
    assert err.timeout == 0.3
    assert set(err.phases) == {"resolve", "load", "queue", "prompt", "generation"}
    assert err.phases["queue"] > 0 and err.phases["generation"] == 0
    assert "queue" in str(err) and "timed out after 0.3 s" in str(err)

    async def queued() -> None:
        await engine.achat(str(tiny_gguf), MSG, options=SHORT, timeout=0.3)

    with pytest.raises(RequestTimeoutError, match="queue"):
        asyncio.run(queued())
    assert not holder.reclaimed
    holder.close()


def test_a_stream_that_times_out_midway_raises_after_its_chunks(
    engine: Engine, tiny_gguf: Path
) -> None:
    stream = engine.chat_stream(str(tiny_gguf), MSG, options=LONG, timeout=30.0)
    got: list[Chunk] = [next(stream), next(stream)]
    deadline = stream.signal.deadline
    assert deadline is not None
    stream.signal.deadline = time.monotonic() - 0.001  # the clock runs out now
    with pytest.raises(RequestTimeoutError) as caught:
        got.extend(stream)
    assert len(got) == 2 and all(isinstance(c, TextDelta) for c in got)
    assert caught.value.phases["prompt"] > 0
    assert _lock_of(engine)._held == 0  # generation stopped and the model is free
    assert engine.chat(str(tiny_gguf), MSG, options=SHORT).usage.completion_tokens > 0


class _ExpiresAfter(RequestSignal):
    """A deadline that passes at the engine's ``n``-th check (deterministic timeout)."""

    def __init__(self, n: int) -> None:
        super().__init__(None, 3600.0)
        self.checks = 0
        self._n = n

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks == self._n:
            self.deadline = time.monotonic() - 0.001
        return super().is_set()


def test_a_timeout_never_yields_a_cut_tool_call(engine: Engine, tiny_gguf: Path) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "pay",
            "description": "Pay an amount.",
            "parameters": {
                "type": "object",
                "properties": {"amount": {"type": "integer"}, "to": {"type": "integer"}},
                "required": ["amount", "to"],
            },
        },
    }
    args = {"tools": [tool], "tool_choice": "pay", "options": {"num_predict": 400, "seed": 1}}
    complete = engine.chat(str(tiny_gguf), MSG, **args)  # type: ignore[arg-type]
    assert complete.tool_calls, "the forced call completes without a deadline"
    sampled = complete.timings.sampled_tokens if complete.timings else 0
    assert sampled > 8
    chunks: list[Chunk] = []
    stream = engine.chat_stream(str(tiny_gguf), MSG, cancel=_ExpiresAfter(6), **args)  # type: ignore[arg-type]
    with pytest.raises(RequestTimeoutError):
        chunks.extend(stream)
    assert not any(isinstance(c, ToolCallDelta) for c in chunks)


def test_adapters_raise_the_typed_timeout(tiny_gguf: Path) -> None:
    from local_llm_integrations import ChatLocal
    from local_llm_integrations.langchain import LocalLLM
    from local_llm_integrations.llama_index import LocalLLM as IndexLLM

    engine = default_engine()
    ChatLocal(model=str(tiny_gguf), max_tokens=4).invoke("warm")  # loads
    chat = ChatLocal(model=str(tiny_gguf), max_tokens=4, timeout=0.2)
    holder = engine.chat_stream(str(tiny_gguf), MSG, options=LONG)
    next(holder)
    try:
        with pytest.raises(RequestTimeoutError):
            chat.invoke("hi")
        with pytest.raises(RequestTimeoutError):
            list(chat.stream("hi"))
        with pytest.raises(RequestTimeoutError):
            asyncio.run(chat.ainvoke("hi"))
        with pytest.raises(RequestTimeoutError):
            LocalLLM(model=str(tiny_gguf), max_tokens=4, timeout=0.2).invoke("hi")
        with pytest.raises(RequestTimeoutError):
            IndexLLM(model=str(tiny_gguf), num_predict=4, request_timeout=0.2).complete("hi")
    finally:
        holder.close()


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RequestSignal(None, 0)


def test_exit_with_an_abandoned_stream_does_not_hang(tiny_gguf: Path) -> None:
    """The garbage collector closes the stream at exit; that must not start threads."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        from local_llm_integrations import ChatLocal
        llm = ChatLocal(model={str(tiny_gguf)!r}, max_tokens=100_000, temperature=1.0)
        gen = llm.stream("go")
        next(gen)
        cycle = [gen]
        cycle.append(cycle)  # only the garbage collector at exit reaches it
        """
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
