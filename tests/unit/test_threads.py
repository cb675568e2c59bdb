"""The thread governor: decode threads follow the CPUs other processes leave free."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama import threads
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.llama.threads import (
    CpuSample,
    ThreadGovernor,
    cgroup_cpu_limit,
    governor_for,
    parse_proc_stat,
    threads_for,
)

PROC_STAT = """\
cpu  300 0 100 500 20 0 5 3 0 0
cpu0 100 0 50 300 10 0 2 1 0 0
cpu1 200 0 50 200 10 0 3 2 0 0
intr 1 2 3
ctxt 99
procs_running 3
"""


def test_proc_stat_busy_time_counts_the_allowed_cpus_without_idle_and_iowait() -> None:
    ticks = threads._TICKS
    # cpu0: 100 + 50 + 2 + 1 busy; cpu1: 200 + 50 + 3 + 2 busy (idle, iowait excluded)
    assert parse_proc_stat(PROC_STAT, None) == pytest.approx(408 / ticks)
    assert parse_proc_stat(PROC_STAT, {0}) == pytest.approx(153 / ticks)
    assert parse_proc_stat(PROC_STAT, {1}) == pytest.approx(255 / ticks)
    assert parse_proc_stat(PROC_STAT, {7}) is None
    assert parse_proc_stat("intr 1\n", None) is None


@pytest.mark.parametrize(
    ("others", "cpus", "maximum", "expected"),
    [
        (0.0, 2, 2, 2),  # alone: every core
        (0.2, 2, 2, 2),  # background noise costs nothing
        (1.0, 2, 2, 1),  # a busy process (a test run, another model): the free core
        (0.9, 2, 2, 1),
        (1.9, 2, 2, 1),  # never fewer than one
        (3.0, 2, 2, 1),
        (0.0, 8, 4, 4),  # never more than the maximum (the physical cores)
        (2.0, 8, 8, 6),
        (2.0, 8, 4, 4),
        (0.0, 1.5, 4, 1),  # a fractional quota rounds down
    ],
)
def test_threads_for_the_cpus_left(others: float, cpus: float, maximum: int, expected: int) -> None:
    assert threads_for(others, cpus, maximum) == expected


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    return now


def test_governor_subtracts_its_own_cpu_time(clock: list[float]) -> None:
    samples = iter(
        [
            CpuSample(0.0, 0.0, 0.0),
            CpuSample(1.0, 2.0, 1.0),  # both cores busy, half of it ours: others use 1 core
            CpuSample(2.0, 3.9, 2.8),  # both busy, 1.8 ours: others 0.1 (noise)
        ]
    )
    gov = ThreadGovernor(2, 2, sample=lambda: next(samples), interval=0.5)
    assert gov.update() == (2, 2)  # first reading: nothing measured yet
    clock[0] = 1.0
    assert gov.update() == (1, 1)
    assert gov.others == pytest.approx(1.0)
    clock[0] = 1.2  # within the interval: no new reading (the iterator would be exhausted)
    assert gov.update() == (1, 1)
    clock[0] = 2.0
    assert gov.update() == (2, 2)
    assert gov.others == pytest.approx(0.1)


def test_governor_does_not_average_over_an_idle_gap(clock: list[float]) -> None:
    samples = iter(
        [
            CpuSample(0.0, 0.0, 0.0),
            CpuSample(1.0, 1.0, 0.0),  # others: 1 core
            CpuSample(60.0, 1.5, 0.0),  # a minute later: the average would say 0.01
            CpuSample(61.0, 1.6, 0.0),  # a fresh interval: 0.1
        ]
    )
    gov = ThreadGovernor(2, 2, sample=lambda: next(samples), interval=0.5)
    gov.update()
    clock[0] = 1.0
    assert gov.update() == (1, 1)
    clock[0] = 60.0
    assert gov.update() == (1, 1)  # kept until a fresh interval has passed
    clock[0] = 61.0
    assert gov.update() == (2, 2)


def test_governor_without_readings_keeps_the_maxima(clock: list[float]) -> None:
    gov = ThreadGovernor(4, 8, sample=lambda: None)
    clock[0] = 5.0
    assert gov.update() == (2, 2)  # the two allowed CPUs cap it


def test_apply_sets_the_counts_only_when_they_change(clock: list[float]) -> None:
    others = iter([0.0, 1.0, 1.0, 1.0, 0.0])
    state = {"busy": 0.0}

    def sample() -> CpuSample:
        state["busy"] += next(others)
        return CpuSample(clock[0], state["busy"], 0.0)

    gov = ThreadGovernor(2, 2, sample=sample, interval=0.5)
    calls: list[tuple[object, int, int]] = []
    for step in range(5):
        clock[0] = float(step)
        with gov.decoding("ctx", lambda ctx, n, nb: calls.append((ctx, n, nb))):
            pass
    assert calls == [("ctx", 2, 2), ("ctx", 1, 1), ("ctx", 2, 2)]


def test_decodes_in_one_process_split_the_free_cpus(clock: list[float]) -> None:
    """Two models decoding at once in this process (embeddings beside a chat) share the cores."""
    chat = ThreadGovernor(2, 2, sample=lambda: None)
    embed = ThreadGovernor(2, 2, sample=lambda: None)
    calls: list[tuple[object, int, int]] = []

    def record(ctx: object, n: int, nb: int) -> None:
        calls.append((ctx, n, nb))

    with chat.decoding("chat", record):
        with embed.decoding("embed", record):
            pass
        assert threads._ACTIVE[0] == 1
    with chat.decoding("chat", record):
        pass
    assert threads._ACTIVE[0] == 0
    assert calls == [("chat", 2, 2), ("embed", 1, 1)]  # chat's 2 unchanged: not set again


def test_the_active_count_survives_a_failed_decode(clock: list[float]) -> None:
    gov = ThreadGovernor(2, 2, sample=lambda: None)
    with pytest.raises(RuntimeError), gov.decoding("ctx", lambda *a: None):
        raise RuntimeError("decode failed")
    assert threads._ACTIVE[0] == 0


def test_cgroup_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == pytest.approx(1.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_quota_caps_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert ThreadGovernor(4, 4, sample=lambda: None).cpus == 2.5


def test_num_thread_fixes_the_count() -> None:
    assert governor_for(3, 2, 2) is None
    assert isinstance(governor_for(None, 2, 2), ThreadGovernor)


def test_real_readings_on_this_machine() -> None:
    sample = threads.read_cpu_sample(threads.allowed_cpus())
    assert sample is not None and sample.busy > 0 and sample.own > 0


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_decodes_run_with_the_governors_counts(
    monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path, parallel: str
) -> None:
    """A model loaded without num_thread decodes with the governor's counts; with it, fixed."""
    monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", parallel)
    engine = Engine(RuntimeSettings.from_env())
    try:
        engine.chat(str(tiny_gguf), [{"role": "user", "content": "hi"}], options={"num_predict": 2})
        (entry,) = engine.pool._entries.values()
        batcher = entry.batcher
        assert batcher is not None and batcher.governor is not None
        # Pretend another process took all but one CPU: the next decode uses one thread.
        batcher.governor.max_threads = batcher.governor.max_threads_batch = 2
        monkeypatch.setattr(batcher.governor, "update", lambda sharing=1: (1, 1))
        engine.chat(str(tiny_gguf), [{"role": "user", "content": "yo"}], options={"num_predict": 2})
        assert llama_cpp.llama_n_threads(batcher.ctx) == 1
        assert llama_cpp.llama_n_threads_batch(batcher.ctx) == 1
        monkeypatch.setattr(batcher.governor, "update", lambda sharing=1: (2, 2))
        engine.chat(str(tiny_gguf), [{"role": "user", "content": "ho"}], options={"num_predict": 2})
        assert llama_cpp.llama_n_threads(batcher.ctx) == 2
        engine.unload()
        engine.chat(
            str(tiny_gguf),
            [{"role": "user", "content": "hi"}],
            options={"num_predict": 2, "num_thread": 1},
        )
        (entry,) = engine.pool._entries.values()
        assert entry.batcher is not None and entry.batcher.governor is None
    finally:
        engine.pool.close()
