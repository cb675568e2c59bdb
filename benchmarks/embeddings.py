"""Embedding throughput: the runtime's ``Engine.embed`` vs raw ``Llama.embed`` vs prompt prefill.

Contenders, the same model, the same texts (short, ~20 tokens each):

* ``engine``  -- ``Engine.embed`` (texts packed into decodes of up to 256 tokens)
* ``raw``     -- llama-cpp-python's ``Llama.embed`` (``embedding=True``, mean pooling,
  ``n_batch = n_ubatch = 512``)
* ``prefill`` -- a generation context evaluating the same tokens as prompts of up to
  ``--prompt`` tokens (whole texts concatenated, cache cleared between prompts,
  ``n_batch`` 512): the speed the model reads a prompt at, the goal for embeddings.

Rounds are interleaved; we print the median tokens/s of each, the spread, and
the ratios. ``--json PATH`` writes the figures for ``benchmarks/report.py``.

Usage::

    python benchmarks/embeddings.py [MODEL_PATH] [--texts 300] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import llama_cpp
from _common import median, model_path, spread, summary_row

from local_llm_runtime import Engine
from local_llm_runtime.llama import repack

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "rivers",
    "of",
    "data",
    "flow",
    "through",
    "quiet",
    "pipes",
    "of",
    "ideas",
    "and",
    "small",
    "models",
    "read",
    "every",
    "line",
    "of",
    "text",
    "they",
    "are",
    "given",
    "today",
]


def make_texts(n: int) -> list[str]:
    """``n`` distinct short sentences of about 20 tokens."""
    return [
        " ".join(WORDS[(i * 7 + j * (1 + i % 3)) % len(WORDS)] for j in range(16)) + f" #{i}."
        for i in range(n)
    ]


def summary_rows(figures: dict[str, Any]) -> list[dict[str, object]]:
    """The report's rows from this script's figures (``tok_s`` medians)."""
    rate = figures["tok_s"]
    return [
        summary_row(
            "embeddings vs prompt prefill", rate["engine"], rate["prefill"],
            "prompt prefill of the same tokens", goal=0.9,
        ),
        summary_row(
            "embeddings vs raw Llama.embed", rate["engine"], rate["raw"],
            "raw llama-cpp-python embed",
        ),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--num-ctx", type=int, default=4096)
    parser.add_argument("--prompt", type=int, default=2048, help="prefill prompt length")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    path = model_path(args.model)
    texts = make_texts(args.texts)
    threads = args.threads

    with repack.like_the_runtime():
        raw = llama_cpp.Llama(
            path,
            n_ctx=args.num_ctx,
            n_batch=512,
            n_ubatch=512,
            n_threads=threads,
            n_threads_batch=threads,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            verbose=False,
        )
        gen = llama_cpp.Llama(
            path,
            n_ctx=args.num_ctx,
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
    tokens = [gen.tokenize(t.encode()) for t in texts]
    n_tokens = sum(map(len, tokens))
    prompts: list[list[int]] = [[]]
    for toks in tokens:
        if prompts[-1] and len(prompts[-1]) + len(toks) > min(args.prompt, args.num_ctx):
            prompts.append([])
        prompts[-1].extend(toks)

    engine = Engine()
    options = {"num_ctx": args.num_ctx, "num_thread": threads}
    engine.embed(path, texts[:2], options=options)  # load outside the timing

    def run_engine() -> None:
        vectors = engine.embed(path, texts, options=options)
        assert len(vectors) == len(texts)

    def run_raw() -> None:
        vectors = raw.embed(texts)
        assert len(vectors) == len(texts)

    def run_prefill() -> None:
        for prompt in prompts:
            gen.reset()
            gen._ctx.kv_cache_clear()
            gen.eval(prompt)

    contenders: dict[str, Callable[[], None]] = {
        "engine": run_engine,
        "raw": run_raw,
        "prefill": run_prefill,
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            rates[name].append(n_tokens / (time.perf_counter() - started))
            print(f"round {r + 1} {name:8s} {rates[name][-1]:7.1f} tok/s", flush=True)
    engine.pool.close()

    med = {name: median(values) for name, values in rates.items()}
    print(f"\n{len(texts)} texts, {n_tokens} tokens, {threads} threads, {platform.processor()}")
    for name in contenders:
        print(f"{name:8s} {med[name]:7.1f} tok/s (median of {args.rounds}, {spread(rates[name])})")
    ratios = {
        "engine_vs_prefill": med["engine"] / med["prefill"],
        "engine_vs_raw": med["engine"] / med["raw"],
        "raw_vs_prefill": med["raw"] / med["prefill"],
    }
    for name, value in ratios.items():
        print(f"{name:18s} {value:.2f}x")
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(
                {
                    "benchmark": "embeddings",
                    "texts": len(texts),
                    "tokens": n_tokens,
                    "threads": threads,
                    "rounds": args.rounds,
                    "tok_s": med,
                    "tok_s_all": rates,
                    "ratios": ratios,
                    "summary": summary_rows({"tok_s": med}),
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
