"""Continuous batching (LOCAL_LLM_NUM_PARALLEL > 1) on the tiny model.

Random weights cannot tell whether sequences bleed into each other (see
tests/integration/test_batching_real.py for that); here: slots, queueing,
grammar per slot, cancellation, cache reuse per slot, and unloading.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.types import FinalChunk
from tests.support.events import SetAfter

GREEDY = {"temperature": 0.0, "num_predict": 24}


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", "3")
    eng = Engine(RuntimeSettings.from_env())
    yield eng
    eng.pool.close()


def _batcher(engine: Engine) -> object:
    (entry,) = engine.pool._entries.values()
    assert entry.batcher is not None
    return entry.batcher


def test_requests_share_decoding_steps(engine: Engine, tiny_gguf: Path) -> None:
    results: dict[int, tuple[str, int]] = {}
    errors: list[BaseException] = []
    gate = threading.Barrier(6)

    def work(i: int) -> None:
        try:
            gate.wait()
            r = engine.chat(
                str(tiny_gguf),
                [{"role": "user", "content": f"hello {i} " * (i + 1)}],
                options={"num_predict": 200, "seed": i},
            )
            results[i] = (r.text, r.usage.completion_tokens)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(results) == list(range(6))
    assert all(0 < n <= 200 for _text, n in results.values())
    batcher = _batcher(engine)
    assert batcher.max_active == 3  # type: ignore[attr-defined]  # three slots decoded together
    (running,) = engine.ps()
    assert running.parallel == 3 and running.active_requests == 0


def test_each_slot_keeps_its_own_grammar(engine: Engine, tiny_gguf: Path) -> None:
    schemas = [
        {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"]},
        {"type": "object", "properties": {"b": {"type": "boolean"}}, "required": ["b"]},
        {"type": "object", "properties": {"c": {"enum": [1, 2, 3]}}, "required": ["c"]},
    ]
    out: dict[int, str] = {}

    def work(i: int) -> None:
        out[i] = engine.chat(
            str(tiny_gguf),
            [{"role": "user", "content": "json please"}],
            format=schemas[i],
            options={"temperature": 1.0, "seed": i, "num_predict": 64},
        ).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(json.loads(out[0])) == {"a"}
    assert set(json.loads(out[1])) == {"b"}
    assert set(json.loads(out[2])) == {"c"}


def test_breaking_out_frees_the_slot(engine: Engine, tiny_gguf: Path) -> None:
    for _ in range(5):  # more abandoned streams than slots: each must give its slot back
        stream = engine.chat_stream(
            str(tiny_gguf), [{"role": "user", "content": "go"}], options={"num_predict": 500}
        )
        for seen, _chunk in enumerate(stream, start=1):
            if seen == 3:
                break
        stream.close()  # type: ignore[attr-defined]
    done = engine.chat(str(tiny_gguf), [{"role": "user", "content": "x"}], options=GREEDY)
    assert done.usage.completion_tokens > 0


def test_cancel_ends_a_run_with_cancelled(engine: Engine, tiny_gguf: Path) -> None:
    # The random tiny model may sample its end token within the first tokens; seeds make
    # each run reproducible, and the first seed whose run gets past 3 chunks is cancelled.
    for seed in range(20):
        cancel = threading.Event()
        chunks = []
        for chunk in engine.chat_stream(
            str(tiny_gguf),
            [{"role": "user", "content": "go"}],
            options={"num_predict": 1000, "seed": seed},
            cancel=cancel,
        ):
            chunks.append(chunk)
            if len(chunks) == 3:
                cancel.set()
        if len(chunks) > 3:
            break
    final = chunks[-1]
    assert isinstance(final, FinalChunk) and final.finish_reason == "cancelled"
    assert final.usage.completion_tokens < 1000


def test_a_slot_reuses_its_conversation_prefix(engine: Engine, tiny_gguf: Path) -> None:
    convo_a = [{"role": "user", "content": "a " * 300}]
    convo_b = [{"role": "user", "content": "the " * 300}]
    first_a = engine.chat(str(tiny_gguf), convo_a, options=GREEDY)
    engine.chat(str(tiny_gguf), convo_b, options=GREEDY)  # interleaved: lands in another slot
    follow_a = engine.chat(
        str(tiny_gguf),
        [
            *convo_a,
            {"role": "assistant", "content": first_a.text},
            {"role": "user", "content": "a"},
        ],
        options=GREEDY,
    )
    # only the new turn is evaluated: conversation A's prefix survived B's request
    assert first_a.timings.prompt_tokens > 300
    assert follow_a.timings.prompt_tokens < first_a.timings.prompt_tokens / 3


def test_unload_stops_the_decoding_thread(engine: Engine, tiny_gguf: Path) -> None:
    engine.chat(str(tiny_gguf), [{"role": "user", "content": "x"}], options=GREEDY)
    batcher = _batcher(engine)
    thread = batcher._thread  # type: ignore[attr-defined]
    assert thread is not None and thread.is_alive()
    assert engine.unload() == 1
    thread.join(10)
    assert not thread.is_alive()
    assert engine.ps() == []


def test_embeddings_are_not_batched(engine: Engine, tiny_gguf: Path) -> None:
    assert len(engine.embed(str(tiny_gguf), ["one", "two"])) == 2
    (running,) = engine.ps()
    assert running.embedding and running.parallel == 1


def test_cancel_aborts_a_prompt_step_mid_way(engine: Engine, tiny_gguf: Path) -> None:
    messages = [{"role": "user", "content": "a " * 400}]  # one step of ~400 prompt tokens
    cancel = SetAfter(4)  # engine + step admission, then llama.cpp's graph callback aborts
    chunks = list(engine.chat_stream(str(tiny_gguf), messages, options=GREEDY, cancel=cancel))
    final = chunks[-1]
    assert isinstance(final, FinalChunk) and final.finish_reason == "cancelled"
    assert final.timings.sampled_tokens == 0  # without the abort the step would sample a token
    done = engine.chat(str(tiny_gguf), messages, options=GREEDY)  # the slot and cache recover
    assert done.usage.completion_tokens == 24


def test_a_failing_step_reaches_the_consumer_and_the_thread_survives(
    engine: Engine, tiny_gguf: Path
) -> None:
    from local_llm_runtime.llama.sampling import Sampler, SamplingOptions

    engine.chat(str(tiny_gguf), [{"role": "user", "content": "x"}], options=GREEDY)
    (entry,) = engine.pool._entries.values()
    batcher = entry.batcher
    assert batcher is not None

    class Broken:
        vocab = None

        def sample(self, ctx: object, index: int = -1) -> int:
            raise RuntimeError("sampler exploded")

        def close(self) -> None:
            raise RuntimeError("and so does its cleanup")

    tokens = entry.llm.tokenize(b"hello world")
    run = batcher.start(tokens, Broken(), max_tokens=5, reuse=False)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="exploded"):
        list(run)
    run.close()
    with Sampler(entry.llm, SamplingOptions(temperature=0), seed=1) as sampler:
        good = batcher.start(tokens, sampler, max_tokens=5, reuse=False)
        assert len(list(good)) == 5
        good.close()


def test_more_slots_than_the_batch_size(monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path) -> None:
    monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", "4")
    engine = Engine(RuntimeSettings.from_env())
    results: list[int] = []
    gate = threading.Barrier(4)

    def work(i: int) -> None:
        gate.wait()
        r = engine.chat(
            str(tiny_gguf),
            [{"role": "user", "content": f"hello {i}"}],
            options={"num_predict": 50, "num_batch": 2, "seed": i},
        )
        results.append(r.usage.completion_tokens)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == 4 and all(n > 0 for n in results)
    finally:
        engine.pool.close()
