"""Concurrent requests on one model: one at a time vs continuous batching.

N clients (threads) each send a different prompt at the same moment and stream
``--tokens`` new tokens (greedy). Contenders, all on the same model file:

* ``serial``  — ``num_parallel=1``: requests queue FIFO for the model (the default);
* ``batched`` — ``num_parallel=N``: one decoding step serves every client;
* ``chatlocal.batch`` — LangChain's ``ChatLocal.batch`` of the same N prompts on an
  engine with ``num_parallel=N`` (LangChain runs them in threads);
* ``raw sequential`` — raw llama-cpp-python, the same prompts one after another
  (what a single ``Llama`` object can do; it is not thread-safe).

Printed: aggregate generated tokens/s, the median time to the first token of a
client, and ratios to ``serial``. Rounds alternate the contenders.

Usage::

    python benchmarks/parallel_throughput.py [MODEL_PATH] [--clients 4] [--tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable

import llama_cpp
from _common import median, model_path, summary_row, write_json

from local_llm_integrations.langchain import ChatLocal
from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.types import FinalChunk, TextDelta

TOPICS = [
    "a binary search tree",
    "a least-recently-used cache",
    "a token bucket rate limiter",
    "a trie for autocomplete",
    "a min-heap priority queue",
    "an interval tree",
    "a bloom filter",
    "a union-find structure",
]
NUM_CTX = 1024

Result = tuple[int, float, list[float]]
"""(generated tokens, wall seconds, each client's time to first token)."""


def prompts(n: int) -> list[str]:
    return [f"Write Python code for {TOPICS[i % len(TOPICS)]}, with comments." for i in range(n)]


def engine_run(engine: Engine, path: str, texts: list[str], tokens: int) -> Result:
    firsts: list[float] = [0.0] * len(texts)
    counts: list[int] = [0] * len(texts)
    gate = threading.Barrier(len(texts) + 1)

    def client(i: int) -> None:
        gate.wait()
        started = time.perf_counter()
        for chunk in engine.chat_stream(
            path,
            [{"role": "user", "content": texts[i]}],
            options={"temperature": 0, "num_predict": tokens, "num_ctx": NUM_CTX},
        ):
            if isinstance(chunk, TextDelta) and not firsts[i]:
                firsts[i] = time.perf_counter() - started
            if isinstance(chunk, FinalChunk):
                counts[i] = chunk.usage.completion_tokens

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - started, firsts


def chatlocal_run(engine: Engine, path: str, texts: list[str], tokens: int) -> Result:
    # The batched engine, through the public field (the default engine reads the environment).
    llm = ChatLocal(model=path, temperature=0, num_predict=tokens, num_ctx=NUM_CTX, engine=engine)
    started = time.perf_counter()
    messages = llm.batch(texts, config={"max_concurrency": len(texts)})
    wall = time.perf_counter() - started
    generated = sum((m.usage_metadata or {}).get("output_tokens", 0) for m in messages)
    return generated, wall, [float("nan")]


def raw_run(llm: llama_cpp.Llama, texts: list[str], tokens: int) -> Result:
    started = time.perf_counter()
    firsts = []
    generated = 0
    for text in texts:
        t0 = time.perf_counter()
        first = None
        for chunk in llm.create_chat_completion(
            [{"role": "user", "content": text}],
            temperature=0,
            max_tokens=tokens,
            stream=True,
        ):
            delta = chunk["choices"][0]["delta"].get("content")  # type: ignore[index]
            if delta and first is None:
                first = time.perf_counter() - started
            generated += 1 if delta else 0
        firsts.append(first or (time.perf_counter() - t0))
    return generated, time.perf_counter() - started, firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="write the figures here (for benchmarks/report.py)")
    args = parser.parse_args()
    path = model_path(args.model)
    texts = prompts(args.clients)
    base = RuntimeSettings.from_env()
    serial = Engine(base.model_copy(update={"num_parallel": 1}))
    batched = Engine(base.model_copy(update={"num_parallel": args.clients}))
    raw = llama_cpp.Llama(path, n_ctx=NUM_CTX, verbose=False)
    for engine in (serial, batched):  # load outside the timings
        engine.chat(
            path,
            [{"role": "user", "content": "hi"}],
            options={"num_predict": 1, "num_ctx": NUM_CTX},
        )

    contenders: dict[str, Callable[[], Result]] = {
        "serial": lambda: engine_run(serial, path, texts, args.tokens),
        "batched": lambda: engine_run(batched, path, texts, args.tokens),
        "chatlocal.batch": lambda: chatlocal_run(batched, path, texts, args.tokens),
        "raw sequential": lambda: raw_run(raw, texts, args.tokens),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    ttft: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            generated, wall, firsts = contenders[name]()
            rates[name].append(generated / wall)
            ttft[name].append(statistics.median(firsts))

    print(
        f"# {args.clients} concurrent clients x {args.tokens} tokens, greedy, "
        f"{os.cpu_count()} CPUs, {path}"
    )
    print(f"{'contender':<16} {'tok/s':>7} {'÷ serial':>9} {'median TTFT s':>14}")
    ref = median(rates["serial"])
    for name in names:
        print(
            f"{name:<16} {median(rates[name]):7.1f} {median(rates[name]) / ref:9.2f} "
            f"{median(ttft[name]):14.2f}"
        )
    summary = [
        summary_row(f"{args.clients} clients batched vs serial", median(rates["batched"]), ref,
                    "num_parallel=1 (this project)"),
        summary_row(f"{args.clients} clients batched vs raw", median(rates["batched"]),
                    median(rates["raw sequential"]), "raw llama-cpp-python, sequential"),
    ]  # fmt: skip
    write_json(args.json, "parallel_throughput", summary,
               rates={k: median(v) for k, v in rates.items()})  # fmt: skip
    serial.pool.close()
    batched.pool.close()
    raw.close()


if __name__ == "__main__":
    from local_llm_runtime.llama import repack

    with repack.like_the_runtime():  # raw baselines and peers load as the runtime does
        main()
