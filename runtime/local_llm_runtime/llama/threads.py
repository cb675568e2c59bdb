"""How many threads each ``llama_decode`` gets: the CPUs this process may use that others are not.

llama.cpp (built with OpenMP, as llama-cpp-python builds it) splits every graph
node over ``n_threads`` threads that meet at a barrier after each node, hundreds
of times per token. Alone on its cores this is the fastest way to decode. When
another process takes one of those cores, a descheduled thread holds up every
barrier until the scheduler gives it a time slice again, and the others spin
meanwhile: two llama.cpp processes on two cores each fall from 28 to 2.8
tokens/s with the demo model (0.2x together), and a model next to a test run
falls to 0.26 tokens/s. ``OMP_WAIT_POLICY=passive`` stops the spinning but costs
every barrier a futex wake-up: alone, 0.53x.

:class:`ThreadGovernor` keeps single-process speed and degrades gracefully: it
measures, at most every :data:`INTERVAL` seconds, how much of the CPUs this
process may run on (affinity, cgroup ``cpu.max`` quota) *other* processes used
(``/proc/stat`` of the allowed CPUs minus this process's own CPU time), and
gives the next decode the CPUs left, at least one (``llama_set_n_threads``,
which llama.cpp applies to the next graph). Two such processes settle at one
thread each; next to a busy process a model keeps the core that is free; alone
it uses all of them. Several models decoding at once in this process (an
embedding model beside a chat model) split the free CPUs between them. A
``num_thread`` option fixes the count (no governor), as in Ollama and llama.cpp.

Only Linux has ``/proc/stat``; elsewhere the count stays at its maximum.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "INTERVAL",
    "CpuSample",
    "ThreadGovernor",
    "allowed_cpus",
    "cgroup_cpu_limit",
    "read_cpu_sample",
]

INTERVAL = 0.5
"""Seconds between two measurements of the other processes' CPU use."""
_MARGIN = 0.3
"""CPU (in cores) others may use before this process gives up a thread for it:
background noise (a shell, the kernel) must not cost a core."""
_STALE = 4
"""A reading older than this many intervals is not averaged over (the model was idle)."""
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
"""``/proc/stat`` units per second (``USER_HZ``)."""


@dataclass(frozen=True)
class CpuSample:
    """A reading of the CPUs' busy time and this process's own CPU time, in seconds."""

    wall: float
    busy: float
    """Time the allowed CPUs spent not idle (user, nice, system, irq, softirq, steal)."""
    own: float
    """CPU time of this process (all its threads)."""


def allowed_cpus() -> set[int] | None:
    """The logical CPUs this process may run on, or ``None`` where unknown."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup v2 ``cpu.max`` quota allows (``quota / period``), or ``None``.

    Containers (``docker run --cpus 1.5``) set it; ``max`` means no quota.
    """
    try:
        fields = (root / "cpu.max").read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_proc_stat(text: str, cpus: set[int] | None) -> float | None:
    """Busy seconds of ``cpus`` (all when ``None``) from ``/proc/stat``'s text."""
    busy = 0
    found = False
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        if not name[3:].isdigit() or (cpus is not None and int(name[3:]) not in cpus):
            continue
        numbers = [int(v) for v in values[:8]]
        # user nice system idle iowait irq softirq steal: idle and iowait are free time
        busy += sum(numbers) - numbers[3] - (numbers[4] if len(numbers) > 4 else 0)
        found = True
    return busy / _TICKS if found else None


def read_cpu_sample(cpus: set[int] | None) -> CpuSample | None:
    """Read ``/proc/stat`` and this process's CPU time now (``None`` off Linux)."""
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return None
    busy = parse_proc_stat(text, cpus)
    if busy is None:
        return None
    times = os.times()
    return CpuSample(time.monotonic(), busy, times.user + times.system)


def threads_for(others: float, cpus: float, maximum: int) -> int:
    """Threads for a decode when other processes use ``others`` of ``cpus`` CPUs.

    Args:
        others: CPUs (cores, fractional) other processes used lately.
        cpus: CPUs this process may use (affinity, quota).
        maximum: The most threads wanted (the physical cores; every CPU for prompts).

    Returns:
        Between 1 and ``maximum``: the CPUs nobody else uses, rounded down after a
        small margin for background noise.
    """
    free = cpus - max(0.0, others - _MARGIN)
    return max(1, min(maximum, math.floor(free + 1e-9)))


class ThreadGovernor:
    """Sets a context's thread counts before each decode from the CPUs others leave free.

    Args:
        n_threads: Most threads for generation steps (the physical cores).
        n_threads_batch: Most threads for prompt steps (every CPU by default).
        sample: Reads the CPU counters (tests inject their own); ``None`` where
            there is nothing to read (the counts stay at their maxima).
        interval: Seconds between two readings.

    Thread-safe: one model's decodes can come from several threads (one slot:
    each consumer drives its own steps).
    """

    def __init__(
        self,
        n_threads: int,
        n_threads_batch: int,
        *,
        sample: Callable[[], CpuSample | None] | None = None,
        interval: float = INTERVAL,
    ) -> None:
        cpus = allowed_cpus()
        self.cpus = float(len(cpus)) if cpus else float(os.cpu_count() or 1)
        quota = cgroup_cpu_limit()
        if quota is not None:
            self.cpus = min(self.cpus, max(1.0, quota))
        self.max_threads = max(1, n_threads)
        self.max_threads_batch = max(1, n_threads_batch)
        self._sample = sample if sample is not None else (lambda: read_cpu_sample(cpus))
        self._interval = interval
        self._lock = threading.Lock()
        self._last: CpuSample | None = None
        self.others = 0.0
        """CPUs other processes used over the last interval."""
        self._applied: tuple[int, int] | None = None

    def counts(self, sharing: int = 1) -> tuple[int, int]:
        """``(n_threads, n_threads_batch)`` for a decode that ``sharing`` decodes run beside.

        Args:
            sharing: Decodes of this process running at once (this one included):
                the CPUs other processes leave free are split between them.
        """
        cpus = self.cpus / max(1, sharing)
        return (
            threads_for(self.others, cpus, self.max_threads),
            threads_for(self.others, cpus, self.max_threads_batch),
        )

    def update(self, sharing: int = 1) -> tuple[int, int]:
        """Take a new reading if the last is older than the interval; the counts to use."""
        with self._lock:
            last = self._last
            if last is None or time.monotonic() - last.wall >= self._interval:
                now = self._sample()
                if now is not None:
                    elapsed = now.wall - last.wall if last is not None else 0.0
                    # After an idle gap the average would describe the gap: keep the
                    # last figure until a fresh interval has passed.
                    if last is not None and 0 < elapsed <= _STALE * self._interval:
                        used = (now.busy - last.busy) - (now.own - last.own)
                        self.others = max(0.0, used / elapsed)
                    self._last = now
            return self.counts(sharing)

    @contextmanager
    def decoding(
        self, ctx: object, set_n_threads: Callable[[object, int, int], None]
    ) -> Iterator[None]:
        """Around one decode: set ``ctx``'s thread counts (if they changed) for it.

        Decodes of several models in this process at once (an embedding model and a
        chat model in one RAG app, two models in ``local-llm serve``) split the
        free CPUs: their own threads are not "other processes" to the readings.
        """
        with _ACTIVE_LOCK:
            _ACTIVE[0] += 1
            sharing = _ACTIVE[0]
        try:
            counts = self.update(sharing)
            if counts != self._applied:
                set_n_threads(ctx, *counts)
                self._applied = counts
            yield
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE[0] -= 1


_ACTIVE = [0]
"""Decodes running in this process now (every model's governor counts here)."""
_ACTIVE_LOCK = threading.Lock()


def governor_for(
    num_thread: int | None, n_threads: int, n_threads_batch: int
) -> ThreadGovernor | None:
    """The governor of a model loaded with these counts; ``None`` when ``num_thread`` fixes them."""
    if num_thread or not sys.platform.startswith("linux"):
        return None
    return ThreadGovernor(n_threads, n_threads_batch)
