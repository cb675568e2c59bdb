"""Default thread count: physical cores, from /proc/cpuinfo on Linux."""

from __future__ import annotations

from local_llm_runtime.llama.cpu import _linux_physical_cores, default_threads


def _cpuinfo(*cpus: tuple[int, int, int]) -> str:
    return "\n".join(
        f"processor\t: {p}\nvendor_id\t: GenuineIntel\nphysical id\t: {s}\ncore id\t\t: {c}\n"
        for p, s, c in cpus
    )


def test_hyperthreads_count_once() -> None:
    info = _cpuinfo((0, 0, 0), (1, 0, 1), (2, 0, 0), (3, 0, 1))  # 2 cores x 2 threads
    assert _linux_physical_cores(info, None) == 2


def test_one_thread_per_core_and_two_sockets() -> None:
    info = _cpuinfo((0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1))
    assert _linux_physical_cores(info, None) == 4


def test_affinity_limits_the_count() -> None:
    info = _cpuinfo((0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 0, 3))
    assert _linux_physical_cores(info, {0, 1}) == 2


def test_cpuinfo_without_topology_counts_processors() -> None:
    info = "processor\t: 0\nBogoMIPS\t: 50.00\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n"
    assert _linux_physical_cores(info, None) == 2
    assert _linux_physical_cores("", None) is None


def test_default_threads_is_positive() -> None:
    assert default_threads() >= 1


def test_a_loaded_model_generates_on_the_physical_cores(tiny_gguf: object) -> None:
    from local_llm_runtime.llama.engine import Engine

    engine = Engine()
    try:
        engine.chat(str(tiny_gguf), [{"role": "user", "content": "hi"}], options={"num_predict": 1})
        (entry,) = engine.pool._entries.values()
        assert entry.llm.context_params.n_threads == default_threads()
        engine.chat(
            str(tiny_gguf),
            [{"role": "user", "content": "hi"}],
            options={"num_predict": 1, "num_thread": 1},
        )
        pinned = [e for e in engine.pool._entries.values() if e.options.num_thread == 1]
        assert pinned[0].llm.context_params.n_threads == 1
    finally:
        engine.pool.close()
