"""One thread runs every llama.cpp graph computation (``llama/compute.py``).

With OpenMP, each thread that decodes keeps its own team of worker threads, and
two teams on a small machine make libgomp throttle its spinning (0.66x decode
speed measured). These tests check the rule -- every ``llama_decode`` of
generation and embeddings, from any number of caller threads, runs on the one
compute thread -- and the hand-off's contract (results, exceptions, nesting,
interruption, fork).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama import binding, compute
from local_llm_runtime.llama.engine import Engine

GREEDY = {"temperature": 0.0, "num_predict": 6}


def test_run_returns_the_result_and_runs_on_one_thread() -> None:
    names = {compute.run(lambda: threading.current_thread().name) for _ in range(5)}
    assert names == {"llama-compute"}
    assert compute.run(lambda a, b: a + b, 2, 3) == 5
    assert not compute.is_compute_thread()


def test_run_reraises_the_functions_exception() -> None:
    def fail() -> None:
        raise ValueError("from the compute thread")

    with pytest.raises(ValueError, match="from the compute thread"):
        compute.run(fail)
    assert compute.run(lambda: 7) == 7  # the thread survived


def test_a_nested_run_calls_directly() -> None:
    def outer() -> tuple[bool, str]:
        return compute.is_compute_thread(), compute.run(lambda: threading.current_thread().name)

    assert compute.run(outer) == (True, "llama-compute")


def test_callers_from_many_threads_all_get_their_own_results() -> None:
    results: dict[int, int] = {}

    def caller(i: int) -> None:
        results[i] = compute.run(lambda: i * i)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i * i for i in range(16)}


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_an_interrupted_caller_waits_until_the_computation_ends() -> None:
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        finished.set()

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            compute.run(slow)
        assert finished.is_set()  # the caller's cleanup cannot free a context in use
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_compute_thread() -> None:
    compute.run(lambda: None)  # the parent's thread exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's thread did not survive the fork
        try:
            ok = compute.run(lambda: threading.current_thread().name) == "llama-compute"
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    assert status == 0


@pytest.fixture
def decode_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that called ``llama_decode``."""
    binding.check()  # against the real binding, before a Python stand-in replaces one function
    seen: list[str] = []
    real: Callable[..., Any] = llama_cpp.llama_decode

    def recording(ctx: Any, batch: Any) -> Any:
        seen.append(threading.current_thread().name)
        return real(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", recording)  # the runtime's own calls
    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_decode", recording)  # llama-cpp-python's
    return seen


@pytest.mark.parametrize("parallel", ["1", "3"])
def test_generation_from_many_threads_decodes_on_the_compute_thread(
    monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path, decode_threads: list[str], parallel: str
) -> None:
    monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", parallel)
    engine = Engine(RuntimeSettings.from_env())
    try:
        errors: list[BaseException] = []

        def caller(i: int) -> None:
            try:
                engine.generate(str(tiny_gguf), f"caller {i}", options=GREEDY)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        engine.generate(str(tiny_gguf), "from the main thread", options=GREEDY)
        assert errors == []
    finally:
        engine.pool.close()
    assert decode_threads
    assert set(decode_threads) == {"llama-compute"}


def test_embeddings_decode_on_the_compute_thread(
    tiny_gguf: Path, decode_threads: list[str]
) -> None:
    engine = Engine(RuntimeSettings.from_env())
    try:
        vectors = engine.embed(str(tiny_gguf), ["one", "two words", "three more words"])
    finally:
        engine.pool.close()
    assert len(vectors) == 3
    assert decode_threads
    assert set(decode_threads) == {"llama-compute"}
