"""One thread for every llama.cpp graph computation in this process.

llama.cpp built with OpenMP (llama-cpp-python's default) runs each graph in a
``#pragma omp parallel`` region of the *calling* thread, and libgomp keeps one
team of worker threads per calling thread for as long as that thread lives. As
soon as two threads have decoded, there are more OpenMP-managed threads than
CPUs, and libgomp switches every team to its "throttled" spin count (100
spins instead of ~3 ms; ``GOMP_SPINCOUNT`` in libgomp's ``env.c``): the workers
then sleep in the kernel at each of the graph's barriers, as with
``OMP_WAIT_POLICY=passive``. Measured on 2 CPUs with the demo model (0.5B Q4_K_M):
36 ms per token when one thread ever decoded, 54 ms (0.66x) once a second thread
had -- which is every real application: LangChain's ``batch`` and async paths,
a web server's worker threads, several models each with its decoder thread.

llama-server avoids it by design: one thread decodes for every slot. This
module does the same for the whole process: :func:`run` executes a function
(a ``llama_decode`` and what must happen around it) on one long-lived daemon
thread and returns its result to the caller, so only one OpenMP team ever
exists. The hand-off costs two thread wake-ups (~0.05 ms) per decode. Decodes
of several models in one process take turns instead of competing for the same
cores (on a CPU they could not run faster at once; see
:mod:`~local_llm_runtime.llama.threads`).

Model loading is not routed here: it runs no OpenMP region on the CPU builds
measured (a worker thread that only loaded a model left the main thread's decode
speed unchanged), and a load taking seconds must not stall other models' decodes.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["is_compute_thread", "run"]

T = TypeVar("T")


class _Job:
    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _ComputeThread(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="llama-compute", daemon=True)
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                job.result = job.fn(*job.args)
            except BaseException as exc:  # handed to the caller, who re-raises it
                job.error = exc
            finally:
                job.done.set()
                del job


class _Holder:
    """The process's compute thread, started on first use."""

    lock = threading.Lock()
    thread: _ComputeThread | None = None

    @classmethod
    def get(cls) -> _ComputeThread:
        thread = cls.thread
        if thread is not None and thread.is_alive():
            return thread
        with cls.lock:
            if cls.thread is None or not cls.thread.is_alive():
                cls.thread = _ComputeThread()
                cls.thread.start()
            return cls.thread

    @classmethod
    def forget(cls) -> None:
        """A forked child has no compute thread (threads do not survive ``fork``)."""
        cls.thread = None
        cls.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Holder.forget)


def is_compute_thread() -> bool:
    """Whether the calling thread is the compute thread."""
    return threading.current_thread() is _Holder.thread


def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the compute thread; its result, or its exception re-raised here.

    Called on the compute thread itself, ``fn`` runs directly. The caller waits
    until ``fn`` has returned even when interrupted (Ctrl-C): ``fn`` uses the
    caller's llama.cpp context, which the caller's cleanup may free; the first
    interruption is re-raised once ``fn`` is done.

    Raises:
        BaseException: Whatever ``fn`` raised.
    """
    thread = _Holder.get()
    if threading.current_thread() is thread:
        return fn(*args)
    job = _Job(fn, args)
    thread.jobs.put(job)
    interrupted: BaseException | None = None
    while True:
        try:
            job.done.wait()
            break
        except BaseException as exc:  # KeyboardInterrupt while a decode still runs
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted
    if job.error is not None:
        error, job.error = job.error, None
        raise error
    result: T = job.result
    return result
