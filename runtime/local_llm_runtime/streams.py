"""Streams as explicit resources: deadlines, reclaiming abandoned streams, bounded async workers.

A generation stream holds its model's lease (the pool's FIFO lock) between
chunks. Three rules keep a model from being stuck behind it:

* :class:`ChunkStream` is an iterator *and* a context manager with
  :meth:`~ChunkStream.close`; every adapter closes it on every path. A stream
  its caller drops unclosed is closed when it is collected (nothing in the pool
  references a stream strongly), so a dropped stream never keeps its slot.
* A stream nobody advances is *reclaimed*: when another request waits for the
  same model and the stream has not been advanced for ``stream_idle_timeout``
  seconds (:class:`~local_llm_runtime.settings.RuntimeSettings`, default 10 s),
  the waiting request closes it (generation stops, the lease is released) and
  takes the model. Touching a reclaimed stream later raises
  :class:`~local_llm_runtime.errors.StreamReclaimedError`. Without waiters the
  stream keeps the model, as before. Per token this costs one uncontended
  mutex and a clock read; the chunks are still produced in the reading thread.
* Async streams run on :func:`workers`, a process-wide pool of at most
  :data:`MAX_WORKERS` daemon threads, one task per request (queued requests wait
  in the pool's queue without a thread), and hand chunks to the event loop
  through a bounded buffer.

A request's clock (:class:`RequestSignal`) starts when the stream is created:
resolving or pulling the model, preparing the prompt, loading, waiting in the
model's queue, prompt evaluation and generation all count. Past the deadline the
stream raises :class:`~local_llm_runtime.errors.RequestTimeoutError`, naming the
time of each phase, instead of a partial answer.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from local_llm_runtime.errors import RequestTimeoutError, StreamReclaimedError
from local_llm_runtime.types import ChatResult, Chunk, FinalChunk, Timings, Usage, aggregate

__all__ = [
    "MAX_WORKERS",
    "AsyncChunkStream",
    "NativeAsyncChunkStream",
    "ChunkStream",
    "QueueLeftError",
    "RequestSignal",
    "WholeResults",
    "current_request",
    "workers",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

MAX_WORKERS = 32
"""Threads of the process-wide pool that runs async requests and embeddings."""

BUFFER_CHUNKS = 64
"""Chunks an async stream produces ahead of its consumer before it pauses."""


class QueueLeftError(Exception):
    """Internal: a request left the model's queue (cancelled or past its deadline)."""


class RequestSignal(threading.Event):
    """A request's cancel flag and deadline, read as one event by the engine.

    ``is_set()`` is true once the request is closed, the caller's own event is
    set, or the deadline has passed; the engine checks it at every token and
    llama.cpp's abort callback during prompt evaluation, and the model's queue
    while the request waits.

    Args:
        cancel: The caller's event (``None``: none).
        timeout: Seconds from now until the deadline (``None``: no deadline).

    Raises:
        ValueError: If ``timeout`` is not a positive number.
    """

    def __init__(self, cancel: threading.Event | None = None, timeout: float | None = None):
        super().__init__()
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
        self.started = time.monotonic()
        self.timeout = timeout
        self.deadline = None if timeout is None else self.started + timeout
        self._cancel = cancel
        self.model = ""
        self.lease_at: float | None = None
        """When the request asked the pool for its model (resolve and prompt preparation end)."""
        self.load_s = 0.0
        self.queue_s = 0.0
        self.acquired_at: float | None = None

    def is_set(self) -> bool:
        """Whether the request should stop (closed, cancelled or past its deadline)."""
        if super().is_set():
            return True
        if self._cancel is not None and self._cancel.is_set():
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    @property
    def timed_out(self) -> bool:
        """Past the deadline, and not cancelled or closed first."""
        return (
            self.deadline is not None
            and time.monotonic() >= self.deadline
            and not super().is_set()
            and not (self._cancel is not None and self._cancel.is_set())
        )

    def timeout_error(self, timings: Timings | None = None) -> RequestTimeoutError:
        """The typed error for this request's deadline, with the time of each phase."""
        now = time.monotonic()
        lease_at = self.lease_at if self.lease_at is not None else now
        if timings is not None:
            prompt_s, generation_s = timings.prompt_s, timings.generation_s
        else:
            prompt_s = now - self.acquired_at if self.acquired_at is not None else 0.0
            generation_s = 0.0
        phases = {
            "resolve": lease_at - self.started,
            "load": self.load_s,
            "queue": self.queue_s,
            "prompt": prompt_s,
            "generation": generation_s,
        }
        return RequestTimeoutError(float(self.timeout or 0.0), phases, model=self.model)

    def cancelled_final(self) -> FinalChunk:
        """The final chunk of a request cancelled before it reached the model."""
        return FinalChunk(
            finish_reason="cancelled",
            usage=Usage(prompt_tokens=0, completion_tokens=0),
            timings=Timings(
                load_s=self.load_s, queue_s=self.queue_s, prompt_s=0.0, generation_s=0.0
            ),
            model=self.model,
        )


_CURRENT: contextvars.ContextVar[tuple[RequestSignal, ChunkStream] | None] = contextvars.ContextVar(
    "local_llm_request", default=None
)


def current_request() -> tuple[RequestSignal, ChunkStream] | None:
    """The request whose stream is advancing in this thread (for the pool's lease)."""
    return _CURRENT.get()


class ChunkStream(Iterator[Chunk]):
    """A generation stream: iterate it for chunks; close it (or use ``with``) when done.

    Closing stops generation and releases the model at once. A stream that is
    neither read nor closed keeps its model only until another request for the
    model has waited while the stream sat idle for ``idle_timeout`` seconds;
    then that request closes it, and reading it afterwards raises
    :class:`~local_llm_runtime.errors.StreamReclaimedError`. Past the request's
    deadline, reading raises :class:`~local_llm_runtime.errors.RequestTimeoutError`
    (after the chunks already read; a tool call cut by the deadline is never
    yielded). A request cancelled while it waits for the model ends with a
    :class:`~local_llm_runtime.types.FinalChunk` whose finish reason is
    ``cancelled`` (zero tokens).

    Args:
        chunks: The engine's chunk generator (leases the model on first use).
        signal: The request's cancel flag and deadline.
        idle_timeout: Seconds without a read after which a waiting request may
            reclaim the model.
    """

    def __init__(
        self, chunks: Iterator[Chunk], signal: RequestSignal, *, idle_timeout: float
    ) -> None:
        self._chunks = chunks
        self.signal = signal
        self.idle_timeout = idle_timeout
        self._mutex = threading.Lock()
        self._busy = False
        self._idle_since = time.monotonic()
        self._state = "open"  # open | done | closed | reclaimed
        self._pending: FinalChunk | None = None

    @property
    def reclaimed(self) -> bool:
        """Whether a waiting request closed this idle stream to take the model."""
        return self._state == "reclaimed"

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> Chunk:
        with self._mutex:
            if self._state == "reclaimed":
                raise StreamReclaimedError(self.signal.model, self.idle_timeout)
            if self._pending is not None:
                final, self._pending = self._pending, None
                return final
            if self._state != "open":
                raise StopIteration
            self._busy = True
            token = _CURRENT.set((self.signal, self))
            try:
                chunk = next(self._chunks)
                if self.signal.timed_out:
                    raise self._timed_out()
            except QueueLeftError:
                self._state = "done"
                if self.signal.timed_out:
                    raise self.signal.timeout_error() from None
                return self.signal.cancelled_final()
            except BaseException:
                self._state = "done"
                raise
            finally:
                _CURRENT.reset(token)
                self._busy = False
                self._idle_since = time.monotonic()
            return chunk

    def _timed_out(self) -> RequestTimeoutError:
        """Finish generation (it stops at the next token), drop what is left, name the phases."""
        final: FinalChunk | None = None
        try:
            for chunk in self._chunks:
                if isinstance(chunk, FinalChunk):
                    final = chunk
        except QueueLeftError:
            pass
        return self.signal.timeout_error(final.timings if final is not None else None)

    def close(self) -> None:
        """Stop generating and release the model (idempotent; safe from any thread)."""
        self.signal.set()  # an in-flight read in another thread stops within a token
        with self._mutex:
            if self._state == "open":
                self._state = "closed"
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()

    def __del__(self) -> None:
        # A stream nobody can reach any more (dropped unclosed, read or not) gives
        # its model back now, as a dropped generator runs its ``finally``. Nothing
        # references it but its caller (the pool's lock holds it weakly), so this
        # runs when the last reference goes, in whatever thread drops it; closing
        # starts no thread (the pool checks ``sys.is_finalizing()``).
        if "_chunks" not in self.__dict__:
            return  # __init__ did not finish
        try:
            self.close()
        except Exception:  # a finalizer must not raise; the generator's own ends it too
            logger.debug("Closing an abandoned stream failed", exc_info=True)

    def reclaim_if_idle(self) -> bool:
        """Close this stream if nobody has read it for ``idle_timeout`` seconds.

        Called by requests waiting for the model this stream holds.

        Returns:
            Whether the stream was reclaimed.
        """
        if self._busy or time.monotonic() - self._idle_since < self.idle_timeout:
            return False
        if not self._mutex.acquire(blocking=False):
            return False
        try:
            if self._state != "open" or self._busy:
                return False
            self._state = "reclaimed"
            self.signal.set()
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._mutex.release()
        logger.warning(
            "A stream of %s was not read for %.1f s while another request waited for the "
            "model; it was cancelled (close streams you stop reading).",
            self.signal.model or "a model",
            self.idle_timeout,
        )
        return True

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Workers:
    """A bounded pool of daemon threads (they never hold up interpreter exit).

    Threads start on demand up to ``max_workers`` and retire after a minute idle;
    further tasks wait in the queue without a thread.
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._unclaimed = 0

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on a worker thread; its future carries the result."""
        future: Future[T] = Future()
        with self._lock:
            self._tasks.put((future, fn))
            self._unclaimed += 1
            if self._unclaimed > self._idle and self._threads < self.max_workers:
                self._threads += 1
                threading.Thread(target=self._work, name="local-llm-worker", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                future, fn = self._tasks.get(timeout=60.0)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._unclaimed == 0:
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._unclaimed -= 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)
            del future, fn

    @property
    def threads(self) -> int:
        """Threads alive now."""
        with self._lock:
            return self._threads


_workers: _Workers | None = None
_workers_lock = threading.Lock()


def workers() -> _Workers:
    """The process-wide bounded pool for blocking model work from async code."""
    global _workers  # noqa: PLW0603
    with _workers_lock:
        if _workers is None:
            _workers = _Workers(MAX_WORKERS)
        return _workers


async def run_blocking(fn: Callable[[], T]) -> T:
    """Run ``fn`` on :func:`workers` without blocking the event loop."""
    return await asyncio.wrap_future(workers().submit(fn))


_DONE = object()


class _Producer:
    """The worker side of an :class:`AsyncChunkStream`: runs the request, fills the buffer.

    Separate from the stream so that the worker thread never references the
    stream itself: a stream its caller drops stays collectable, and its
    finalizer stops this producer (which then closes the request's stream and
    releases the model).
    """

    def __init__(self, start: Callable[[RequestSignal], ChunkStream], signal: RequestSignal):
        self.start = start
        self.signal = signal
        self.queue: asyncio.Queue[tuple[object, Any]] | None = None
        self.slots = threading.Semaphore(BUFFER_CHUNKS)
        self.closed = False

    def close(self) -> None:
        """Stop producing (safe from any thread, and from a finalizer: only flags)."""
        self.closed = True
        self.signal.set()

    def run(self, loop: asyncio.AbstractEventLoop) -> None:
        queue_ = self.queue
        assert queue_ is not None

        def post(kind: object, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue_.put_nowait, (kind, value))
            except RuntimeError:  # the loop is gone; nobody is listening
                self.close()

        try:
            if self.closed:
                return
            with self.start(self.signal) as stream:
                for chunk in stream:
                    while not self.slots.acquire(timeout=0.1):
                        if self.closed or stream.reclaimed:
                            break
                    if self.closed:
                        return
                    post("item", chunk)
        except BaseException as exc:
            post("error", exc)
        else:
            post(_DONE, None)


class AsyncChunkStream(AsyncIterator[Chunk]):
    """Async twin of :class:`ChunkStream`: ``async for``, ``async with`` and :meth:`aclose`.

    The request runs as one task on :func:`workers`; chunks reach the event loop
    through a buffer of :data:`BUFFER_CHUNKS`. When the buffer is full the
    producer pauses (the stream is then idle, and reclaimable as above).
    Cancelling the consuming task or closing the stream stops generation within
    a token, and a request still waiting for the model leaves the queue; so does
    dropping the last reference to the stream without closing it.

    Args:
        start: Creates the synchronous stream (runs in the worker thread).
        signal: The request's cancel flag and deadline (its clock started at the call).
    """

    def __init__(self, start: Callable[[RequestSignal], ChunkStream], signal: RequestSignal):
        self.signal = signal
        self._producer = _Producer(start, signal)
        self._finished = False

    def __aiter__(self) -> AsyncChunkStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._finished:
            raise StopAsyncIteration
        producer = self._producer
        if producer.queue is None:
            producer.queue = asyncio.Queue()
            loop = asyncio.get_running_loop()
            workers().submit(functools.partial(producer.run, loop))  # never ``self``
        try:
            kind, value = await producer.queue.get()
        except BaseException:  # cancelled: stop the producer
            self._close()
            raise
        producer.slots.release()
        if kind is _DONE:
            self._finished = True
            raise StopAsyncIteration
        if kind == "error":
            self._finished = True
            raise value
        chunk: Chunk = value
        return chunk

    def _close(self) -> None:
        self._finished = True
        self._producer.close()

    def __del__(self) -> None:
        # Dropped without aclose(): stop the request; the worker then closes its
        # stream and releases the model (only flags are set here, in any thread).
        producer = self.__dict__.get("_producer")
        if producer is not None:
            producer.close()

    async def aclose(self) -> None:
        """Stop generating and release the model (does not wait for the worker)."""
        self._close()

    async def __aenter__(self) -> AsyncChunkStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()


class NativeAsyncChunkStream(AsyncChunkStream):
    """An :class:`AsyncChunkStream` over a native async generator: no worker thread.

    For backends whose I/O is itself async (the remote backend over
    ``httpx.AsyncClient``). Same behaviour as the threaded stream: ``async for``,
    ``async with`` and :meth:`aclose` (which closes the generator, and so its
    HTTP response); cancelling the consuming task cancels the generator where it
    waits; past the request's deadline reading raises
    :class:`~local_llm_runtime.errors.RequestTimeoutError`. The caller's cancel
    event is the generator's to check (it ends with a ``cancelled`` final chunk).

    Args:
        start: Creates the async generator of chunks, given the request's signal
            (called on the first read, in the consuming task).
        signal: The request's cancel flag and deadline (its clock started at the call).
    """

    def __init__(
        self,
        start: Callable[[RequestSignal], AsyncGenerator[Chunk, None]],
        signal: RequestSignal,
    ) -> None:
        self.signal = signal
        self._start = start
        self._agen: AsyncGenerator[Chunk, None] | None = None
        self._finished = False

    async def __anext__(self) -> Chunk:
        if self._finished:
            raise StopAsyncIteration
        if self._agen is None:
            self._agen = self._start(self.signal)
        agen = self._agen
        deadline = self.signal.deadline
        try:
            if deadline is None:
                chunk = await agen.__anext__()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise asyncio.TimeoutError
                chunk = await asyncio.wait_for(agen.__anext__(), remaining)
        except StopAsyncIteration:
            self._finished = True
            raise
        except asyncio.TimeoutError:
            # Read before _end(): closing marks the signal closed, which is not a timeout.
            timed_out = self.signal.timed_out
            await self._end()
            if timed_out:
                raise self.signal.timeout_error() from None
            raise
        except BaseException:
            await self._end()
            raise
        return chunk

    async def _end(self) -> None:
        self._finished = True
        self.signal.set()
        if self._agen is not None:
            await self._agen.aclose()

    def _close(self) -> None:
        self._finished = True
        self.signal.set()

    def __del__(self) -> None:
        # The event loop's async-generator hooks close an unfinished generator.
        signal = self.__dict__.get("signal")
        if signal is not None:
            signal.set()

    async def aclose(self) -> None:
        """Stop generating and close the generator (and its HTTP response) now."""
        await self._end()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._end()


def stream_method(fn: Callable[P, Iterator[Chunk]]) -> Callable[P, ChunkStream]:
    """Wrap an engine's chunk-generator method so it returns a :class:`ChunkStream`.

    The wrapper reads ``timeout`` and ``cancel``, starts the request's clock,
    passes a :class:`RequestSignal` as ``cancel`` (and ``timeout=None``) to the
    method, and wraps what it returns. A :class:`RequestSignal` given as
    ``cancel`` (from the async twin) is used as is: its clock started earlier.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> ChunkStream:
        timeout: float | None = kwargs.pop("timeout", None)  # type: ignore[assignment]
        cancel: threading.Event | None = kwargs.pop("cancel", None)  # type: ignore[assignment]
        if isinstance(cancel, RequestSignal) and timeout is None:
            signal = cancel
        else:
            signal = RequestSignal(cancel, timeout)
        kwargs["cancel"] = signal
        chunks = fn(*args, **kwargs)
        idle_timeout = float(args[0].settings.stream_idle_timeout)  # type: ignore[attr-defined]
        return ChunkStream(chunks, signal, idle_timeout=idle_timeout)

    return wrapper


class WholeResults:
    """The whole-answer methods of an engine, derived from its streams (one way to aggregate).

    ``chat``/``generate``/``achat``/``agenerate`` of
    :class:`~local_llm_runtime.interface.EngineProtocol` are the aggregate
    (:func:`~local_llm_runtime.types.aggregate`) of the matching stream with the same
    keyword arguments, closed when done. A backend mixes this in and writes only
    the streams.
    """

    # What the backend provides (any signature that takes these arguments).
    chat_stream: Callable[..., ChunkStream]
    generate_stream: Callable[..., ChunkStream]
    achat_stream: Callable[..., AsyncChunkStream]
    agenerate_stream: Callable[..., AsyncChunkStream]

    def chat(self, model: str, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> ChatResult:
        """The whole :meth:`chat_stream` answer (same arguments)."""
        with self.chat_stream(model, messages, **kwargs) as stream:
            return aggregate(stream)

    def generate(self, model: str, prompt: str, **kwargs: Any) -> ChatResult:
        """The whole :meth:`generate_stream` answer (same arguments)."""
        with self.generate_stream(model, prompt, **kwargs) as stream:
            return aggregate(stream)

    async def achat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> ChatResult:
        """Async :meth:`chat`."""
        async with self.achat_stream(model, messages, **kwargs) as stream:
            return aggregate([c async for c in stream])

    async def agenerate(self, model: str, prompt: str, **kwargs: Any) -> ChatResult:
        """Async :meth:`generate`."""
        async with self.agenerate_stream(model, prompt, **kwargs) as stream:
            return aggregate([c async for c in stream])
