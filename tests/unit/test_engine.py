"""The engine and its pool on tiny real models: sharing, keep-alive, concurrency, cancellation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from local_llm_runtime import (
    ContextLengthExceededError,
    InvalidModelFileError,
    InvalidOptionError,
    ModelLoadError,
    RuntimeSettings,
)
from local_llm_runtime.llama.engine import Engine, split_options
from local_llm_runtime.llama.pool import FairLock, ModelPool
from local_llm_runtime.types import FinalChunk, TextDelta
from tests.support.events import SetAfter

GREEDY = {"temperature": 0.0, "seed": 1, "num_predict": 12}


@pytest.fixture
def engine() -> Engine:
    eng = Engine()
    yield eng
    eng.pool.close()


def _chat(engine: Engine, model: Path, text: str = "hello", **options: object) -> str:
    return engine.chat(
        str(model), [{"role": "user", "content": text}], options={**GREEDY, **options}
    ).text


def test_one_load_shared_by_every_request(engine: Engine, tiny_gguf: Path) -> None:
    loads: list[int] = []
    original = engine.pool.loader.build

    def counting(*args: object) -> object:
        loads.append(1)
        return original(*args)  # type: ignore[arg-type]

    engine.pool.loader.build = counting  # type: ignore[assignment]
    for _ in range(3):
        _chat(engine, tiny_gguf)
    assert len(loads) == 1
    assert len(engine.ps()) == 1
    _chat(engine, tiny_gguf, num_ctx=256)  # different load options -> its own instance
    assert len(loads) == 2
    assert sorted(p.num_ctx for p in engine.ps()) == [256, 2048]


def test_default_context_is_not_512(engine: Engine, tiny_gguf: Path) -> None:
    _chat(engine, tiny_gguf)
    (running,) = engine.ps()
    assert running.num_ctx == 2048  # min(4096, trained context of the tiny model)
    assert running.gpu_layers == 0
    assert "CPU" in running.offload or "no GPU" in running.offload


def test_usage_streamed_equals_non_streamed(engine: Engine, tiny_gguf: Path) -> None:
    messages = [{"role": "user", "content": "count"}]
    chunks = list(engine.chat_stream(str(tiny_gguf), messages, options=GREEDY))
    final = chunks[-1]
    assert isinstance(final, FinalChunk)
    assert all(not isinstance(c, FinalChunk) for c in chunks[:-1])
    whole = engine.chat(str(tiny_gguf), messages, options=GREEDY)
    assert whole.usage == final.usage
    assert whole.usage.completion_tokens == 12
    assert whole.finish_reason == "length"
    assert whole.text == "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert final.timings.generation_tokens_per_s > 0


def test_same_seed_same_output(engine: Engine, tiny_gguf: Path) -> None:
    opts = {"temperature": 1.0, "seed": 42, "num_predict": 16}
    a = _chat(engine, tiny_gguf, "abc", **opts)
    _chat(engine, tiny_gguf, "something else entirely", **opts)
    b = _chat(engine, tiny_gguf, "abc", **opts)
    assert a == b


def test_stop_sequences_are_honoured_while_streaming(engine: Engine, tiny_gguf: Path) -> None:
    full = _chat(engine, tiny_gguf, num_predict=40)
    assert len(full) > 6
    stop = full[3:6]
    cut = full[: full.index(stop)]
    messages = [{"role": "user", "content": "hello"}]
    streamed = engine.chat_stream(
        str(tiny_gguf), messages, options={**GREEDY, "num_predict": 40, "stop": [stop]}
    )
    chunks = list(streamed)
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert text == cut
    assert stop not in text
    assert isinstance(chunks[-1], FinalChunk) and chunks[-1].finish_reason == "stop"


def test_prompt_longer_than_context_names_both_numbers(engine: Engine, tiny_gguf: Path) -> None:
    with pytest.raises(ContextLengthExceededError) as info:
        _chat(engine, tiny_gguf, "hello " * 400, num_ctx=128)
    assert info.value.num_ctx == 128
    assert info.value.prompt_tokens > 128
    assert "128" in str(info.value) and str(info.value.prompt_tokens) in str(info.value)
    assert _chat(engine, tiny_gguf, num_ctx=128)  # the model still serves requests


def test_keep_alive_zero_unloads_after_request(engine: Engine, tiny_gguf: Path) -> None:
    engine.chat(str(tiny_gguf), [{"role": "user", "content": "x"}], options=GREEDY, keep_alive=0)
    assert engine.ps() == []


def test_keep_alive_expiry_unloads_in_background(engine: Engine, tiny_gguf: Path) -> None:
    engine.chat(
        str(tiny_gguf), [{"role": "user", "content": "x"}], options=GREEDY, keep_alive="300ms"
    )
    (running,) = engine.ps()
    assert running.expires_at is not None
    deadline = time.monotonic() + 10
    while engine.ps() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.ps() == []


def test_negative_keep_alive_never_expires(engine: Engine, tiny_gguf: Path) -> None:
    engine.chat(str(tiny_gguf), [{"role": "user", "content": "x"}], options=GREEDY, keep_alive=-1)
    (running,) = engine.ps()
    assert running.expires_at is None
    assert engine.unload(str(tiny_gguf)) == 1
    assert engine.ps() == []


def test_lru_eviction_over_max_loaded(
    tiny_gguf_factory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_LLM_MAX_LOADED_MODELS", "2")
    engine = Engine()
    models = [tiny_gguf_factory(seed=i) for i in range(3)]
    for model in models:
        _chat(engine, model)
    loaded = {p.path for p in engine.ps()}
    assert loaded == {models[1].resolve(), models[2].resolve()}
    engine.pool.close()


def test_fifo_lock_grants_in_arrival_order() -> None:
    lock = FairLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(6):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        while lock.waiting < i + 1:
            time.sleep(0.001)
        threads.append(t)
    lock.release()
    for t in threads:
        t.join(5)
    assert order == list(range(6))


def test_threads_and_tasks_share_one_model_safely(engine: Engine, tiny_gguf: Path) -> None:
    prompts = [f"request {i}" for i in range(12)]
    expected = {p: _chat(engine, tiny_gguf, p, temperature=0.7, seed=7) for p in prompts}
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def worker(prompt: str) -> None:
        try:
            stream = engine.chat_stream(
                str(tiny_gguf),
                [{"role": "user", "content": prompt}],
                options={**GREEDY, "temperature": 0.7, "seed": 7},
            )
            results[prompt] = "".join(c.text for c in stream if isinstance(c, TextDelta))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in prompts[:8]]
    for t in threads:
        t.start()

    async def tasks() -> list[str]:
        async def one(prompt: str) -> str:
            res = await engine.achat(
                str(tiny_gguf),
                [{"role": "user", "content": prompt}],
                options={**GREEDY, "temperature": 0.7, "seed": 7},
            )
            return res.text

        return list(await asyncio.gather(*(one(p) for p in prompts[8:])))

    async_results = asyncio.run(tasks())
    for t in threads:
        t.join(60)
    assert not errors
    for prompt, text in zip(prompts[8:], async_results, strict=True):
        results[prompt] = text
    assert results == expected


def test_breaking_out_of_a_stream_frees_the_model(engine: Engine, tiny_gguf: Path) -> None:
    stream = engine.chat_stream(
        str(tiny_gguf), [{"role": "user", "content": "go"}], options={"num_predict": 500}
    )
    for seen, _chunk in enumerate(stream, start=1):
        if seen == 3:
            break
    stream.close()  # type: ignore[attr-defined]
    done = threading.Event()
    threading.Thread(target=lambda: (_chat(engine, tiny_gguf), done.set()), daemon=True).start()
    assert done.wait(30), "the model stayed locked after the consumer stopped"


def test_cancelling_an_async_task_stops_generation(engine: Engine, tiny_gguf: Path) -> None:
    async def scenario() -> tuple[int, int]:
        ticks = 0
        received = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        async def consume() -> None:
            nonlocal received
            async for _chunk in engine.achat_stream(
                str(tiny_gguf),
                [{"role": "user", "content": "go"}],
                options={"num_predict": 100_000, "num_ctx": 2048},
            ):
                received += 1

        tick_task = asyncio.create_task(ticker())
        task = asyncio.create_task(consume())
        while received < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the next request gets the model promptly
        result = await asyncio.wait_for(
            engine.achat(
                str(tiny_gguf),
                [{"role": "user", "content": "x"}],
                options={**GREEDY, "num_ctx": 2048},
            ),
            timeout=30,
        )
        tick_task.cancel()
        assert result.usage.completion_tokens > 0
        return ticks, received

    ticks, received = asyncio.run(scenario())
    assert received >= 3
    assert ticks > 10  # the event loop kept running while the engine worked


def test_cancel_aborts_a_long_prompt_before_any_token(engine: Engine, tiny_gguf: Path) -> None:
    messages = [{"role": "user", "content": "a " * 1400}]  # ~1,400 tokens: 3 batches of 512
    cancel = SetAfter(3)  # the engine checks once; llama.cpp's graph callback then aborts
    chunks = list(
        engine.chat_stream(str(tiny_gguf), messages, options=GREEDY, cancel=cancel)  # type: ignore[arg-type]
    )
    final = chunks[-1]
    assert isinstance(final, FinalChunk)
    assert final.finish_reason == "cancelled"
    assert final.timings.sampled_tokens == 0  # stopped inside prompt evaluation
    assert cancel.checks < 50  # llama.cpp stopped asking once it aborted
    # the cache is consistent: the same request now completes like on a fresh engine
    done = engine.chat(str(tiny_gguf), messages, options=GREEDY)
    fresh = Engine()
    try:
        assert done.text == fresh.chat(str(tiny_gguf), messages, options=GREEDY).text
    finally:
        fresh.pool.close()


def test_empty_raw_prompt_is_a_typed_error(
    engine: Engine, tiny_gguf_factory: Callable[..., Path]
) -> None:
    no_bos = tiny_gguf_factory(add_bos=False)  # like Qwen: an empty raw prompt has no tokens
    with pytest.raises(InvalidOptionError, match="empty"):
        engine.generate(str(no_bos), "", raw=True, options=GREEDY)


def test_bad_options_are_typed_errors(engine: Engine, tiny_gguf: Path) -> None:
    with pytest.raises(InvalidOptionError):
        _chat(engine, tiny_gguf, temperature="hot")
    with pytest.raises(InvalidOptionError):
        split_options({"nonsense": 1})
    with pytest.raises(InvalidOptionError, match="names no offered tool"):
        engine.chat(
            str(tiny_gguf), [{"role": "user", "content": "x"}], tools=[], tool_choice="weather"
        )


def test_embeddings_one_vector_per_input(engine: Engine, tiny_gguf: Path) -> None:
    texts = ["hello world", "", "a" * 50, "the world"]
    vectors = engine.embed(str(tiny_gguf), texts)
    assert len(vectors) == len(texts)
    assert {len(v) for v in vectors} == {64}
    for v in vectors:
        assert abs(sum(x * x for x in v) - 1.0) < 1e-3
    again = engine.embed(str(tiny_gguf), ["hello world"])
    assert again[0] == pytest.approx(vectors[0], abs=1e-5)
    # generation instance and embedding instance are separate pool entries
    _chat(engine, tiny_gguf)
    assert sorted(p.embedding for p in engine.ps()) == [False, True]


BROKEN = {
    "zero-bytes": b"",
    "not-gguf": b"PK\x03\x04 this is a zip, not a model" * 100,
    "truncated": None,  # filled from the tiny model
    "corrupt-header": None,
}


@pytest.mark.parametrize("variant", list(BROKEN))
def test_broken_files_fail_typed_and_the_process_survives(
    variant: str, tiny_gguf: Path, tmp_path: Path
) -> None:
    data = BROKEN[variant]
    good = tiny_gguf.read_bytes()
    if variant == "truncated":
        data = good[: len(good) * 2 // 3]
    elif variant == "corrupt-header":
        data = good[:24] + b"\xff" * 64 + good[88:]
    path = tmp_path / f"{variant}.gguf"
    path.write_bytes(data or b"")
    code = (
        "import sys\n"
        "from local_llm_runtime.llama.engine import Engine\n"
        "from local_llm_runtime import LocalLLMError\n"
        f"try:\n    Engine().chat({str(path)!r}, [{{'role': 'user', 'content': 'x'}}])\n"
        "except LocalLLMError as e:\n    print(type(e).__name__); sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() in {InvalidModelFileError.__name__, ModelLoadError.__name__}


def test_failed_load_reports_llama_cpp_reason(tiny_gguf: Path) -> None:
    """A GGUF our header reader accepts but llama.cpp rejects (unknown architecture)."""
    import gguf

    path = tiny_gguf.parent / "alien.gguf"
    writer = gguf.GGUFWriter(str(path), "no-such-arch")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_head_count(1)
    import numpy as np

    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    engine = Engine(RuntimeSettings.from_env())
    with pytest.raises(ModelLoadError) as info:
        engine.chat(str(path), [{"role": "user", "content": "x"}])
    assert "no-such-arch" in str(info.value) or "architecture" in str(info.value)


def test_pool_is_injectable(tiny_gguf: Path) -> None:
    pool = ModelPool(gpu_available=False)
    engine = Engine(pool=pool)
    assert _chat(engine, tiny_gguf)
    assert pool.ps()[0].gpu_layers == 0
    pool.close()


def test_embedding_task_prefixes_follow_the_architecture(
    engine: Engine, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from local_llm_runtime.prompt import families

    model = str(tiny_gguf)
    plain = engine.embed(model, ["where is it?"])
    assert engine.embed(model, ["where is it?"], task="query") == plain  # llama: no convention
    # A row of the family table gives an architecture its prefixes; the tiny llama stands
    # in for a nomic-bert GGUF here.
    row = families.Family(
        "tiny",
        architectures=("llama",),
        embedding_prefixes={"query": "search_query: ", "document": "d: "},
    )
    monkeypatch.setattr(families, "FAMILIES", [row, *families.FAMILIES])
    query = engine.embed(model, ["where is it?"], task="query")
    assert query == engine.embed(model, ["search_query: where is it?"])
    assert query != plain
    assert engine.embed(model, ["search_query: where is it?"], task="query") == query  # not twice
    assert engine.embed(model, ["where is it?"], task="query", prefix="") == plain
    assert engine.embed(model, ["x"], task="document") == engine.embed(model, ["d: x"])


def test_an_interrupted_wait_leaves_the_fair_queue() -> None:
    import signal

    lock = FairLock()
    lock.acquire()  # held by "someone else"

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            lock.acquire()  # Ctrl-C while queued
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert lock.waiting == 0
    lock.release()
    got = threading.Event()
    threading.Thread(target=lambda: (lock.acquire(), got.set()), daemon=True).start()
    assert got.wait(5), "the interrupted waiter still blocked the queue"
