"""LlamaIndex throughput, side by side: LocalLLM vs raw llama-cpp-python vs LlamaCPP.

Generation: the same model file, the same prompt text (the model's own chat
template, rendered once and handed to every contender), the same sampling
(greedy, identical top_k/top_p/min_p/repeat_penalty) and the same number of new
tokens. Runs are interleaved (A B C, B C A, ...) so drifting machine load hits
everyone alike; we report medians and ratios to raw llama-cpp-python, the
ceiling. Tokens are counted by tokenizing each answer with the same tokenizer.

Embeddings: ``LocalEmbedding`` on 1,000 short chunks, batched
(``get_text_embedding_batch``, 64 per engine call) vs one text per call (timed
on a sample, 200 by default), interleaved in rounds.

Usage::

    python benchmarks/llama_index_throughput.py [MODEL] [--runs 5] [--tokens 128]
        [--texts 1000] [--single-texts 200]

``MODEL`` defaults to ``$LOCAL_LLM_MODEL`` or ``qwen2.5-coder:0.5b``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import llama_cpp
from _common import summary_row, write_json
from llama_index.core.llms import ChatMessage
from llama_index.llms.llama_cpp import LlamaCPP

from local_llm_integrations.llama_index import LocalEmbedding, LocalLLM
from local_llm_runtime import ModelLibrary
from local_llm_runtime.llama.cpu import default_threads
from local_llm_runtime.prompt.chat_template import ChatTemplate
from local_llm_runtime.store.gguf_meta import read_gguf_info

PROMPT = (
    "Write a Python module that implements a binary search tree with insert, delete, "
    "search and in-order traversal. Add a docstring to every function."
)
NUM_CTX = 4096
THREADS = default_threads()
global_rates: dict[str, float] = {}
"""Median generation tokens/s of each contender (for ``--json``)."""
"""The same thread count for every contender (prompt and generation alike)."""
SAMPLING = {"top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1}

Run = Callable[[], tuple[str, float, float]]
"""One generation: (answer text, seconds to the first token, total seconds)."""


def local_llm_runner(model: str, tokens: int) -> Run:
    llm = LocalLLM(
        model=model,
        temperature=0,
        num_predict=tokens,
        num_ctx=NUM_CTX,
        num_thread=THREADS,
        **SAMPLING,
    )
    messages = [ChatMessage(role="user", content=PROMPT)]

    def run() -> tuple[str, float, float]:
        started = time.perf_counter()
        first = None
        text = ""
        for response in llm.stream_chat(messages):
            if response.delta and first is None:
                first = time.perf_counter() - started
            text = response.message.content or ""
        return text, first or 0.0, time.perf_counter() - started

    run()  # load + warm up
    return run


def raw_llama(path: str) -> llama_cpp.Llama:
    with contextlib.redirect_stderr(io.StringIO()):
        return llama_cpp.Llama(
            model_path=path,
            n_ctx=NUM_CTX,
            n_gpu_layers=0,
            n_threads=THREADS,
            n_threads_batch=THREADS,
            verbose=False,
        )


def raw_runner(llm: llama_cpp.Llama, prompt: str, tokens: int) -> Run:
    def run() -> tuple[str, float, float]:
        started = time.perf_counter()
        first = None
        parts: list[str] = []
        for chunk in llm.create_completion(
            prompt, max_tokens=tokens, temperature=0.0, stream=True, **SAMPLING
        ):
            piece = chunk["choices"][0]["text"]  # type: ignore[index]
            if piece and first is None:
                first = time.perf_counter() - started
            parts.append(piece)
        return "".join(parts), first or 0.0, time.perf_counter() - started

    run()
    return run


def llama_cpp_llm_runner(path: str, template: ChatTemplate, tokens: int) -> Run:
    def messages_to_prompt(messages: Any) -> str:
        return template.render([{"role": m.role.value, "content": m.content} for m in messages])

    with contextlib.redirect_stderr(io.StringIO()):
        llm = LlamaCPP(
            model_path=path,
            temperature=0.0,
            max_new_tokens=tokens,
            context_window=NUM_CTX,
            generate_kwargs=dict(SAMPLING),
            model_kwargs={"n_gpu_layers": 0, "n_threads": THREADS, "n_threads_batch": THREADS},
            messages_to_prompt=messages_to_prompt,
            completion_to_prompt=lambda p: p,
            verbose=False,
        )
    messages = [ChatMessage(role="user", content=PROMPT)]

    def run() -> tuple[str, float, float]:
        started = time.perf_counter()
        first = None
        text = ""
        for response in llm.stream_chat(messages):
            if response.delta and first is None:
                first = time.perf_counter() - started
            text = response.message.content or ""
        return text, first or 0.0, time.perf_counter() - started

    run()
    return run


def bench_generation(model: str, path: str, runs: int, tokens: int) -> None:
    metadata = read_gguf_info(path).metadata
    template = ChatTemplate(metadata.get("tokenizer.chat_template"))
    prompt = template.render([{"role": "user", "content": PROMPT}])
    tokenizer = raw_llama(path)
    runners: dict[str, Run] = {
        "raw llama-cpp-python": raw_runner(tokenizer, prompt, tokens),
        "LocalLLM.stream_chat": local_llm_runner(model, tokens),
        "LlamaCPP.stream_chat": llama_cpp_llm_runner(path, template, tokens),
    }
    names = list(runners)
    rates: dict[str, list[float]] = {n: [] for n in names}
    global_rates.clear()
    ttft: dict[str, list[float]] = {n: [] for n in names}
    counts: dict[str, list[int]] = {n: [] for n in names}
    for i in range(runs):
        order = names[i % len(names) :] + names[: i % len(names)]  # interleaved, rotated
        for name in order:
            text, first, total = runners[name]()
            n = len(tokenizer.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            counts[name].append(n)
            rates[name].append(n / total)
            ttft[name].append(first)
    ceiling = statistics.median(rates[names[0]])
    global_rates.update({name: statistics.median(rates[name]) for name in names})
    print(f"\nGeneration: {runs} interleaved runs each, greedy, up to {tokens} new tokens")
    print(f"{'':24} {'tokens/s':>9} {'ratio':>7} {'first token':>12} {'tokens':>7}")
    for name in names:
        rate = statistics.median(rates[name])
        print(
            f"{name:24} {rate:9.1f} {rate / ceiling:7.2f} "
            f"{statistics.median(ttft[name]) * 1000:10.0f}ms {statistics.median(counts[name]):7.0f}"
        )
    print(
        "(tokens/s: new tokens / wall time from request to last token, prompt cache warm)",
        flush=True,
    )


def bench_embeddings(model: str, texts: int, single_texts: int) -> None:
    subjects = ["The lighthouse", "A small robot", "The bakery", "Our garden", "The old bridge"]
    verbs = ["opens", "was repaired", "is painted", "closes", "was visited"]
    times = ["at dawn", "in winter", "every Tuesday", "after the storm", "in 1871"]
    chunks = [
        f"{subjects[i % 5]} {verbs[(i // 5) % 5]} {times[(i // 25) % 5]} (note {i})."
        for i in range(texts)
    ]
    embedding = LocalEmbedding(model=model, embed_batch_size=64, num_thread=THREADS)
    embedding.get_text_embedding("warm up")  # load the embedding instance
    print(f"\nEmbeddings: {texts} short chunks (~12 tokens each)")
    print(f"{'':40} {'texts/s':>8} {'ratio':>7}", flush=True)
    # Interleave the two ways in rounds, so drifting machine load hits both alike.
    rounds = 5
    single_s = batched_s = 0.0
    embedded = 0
    single = chunks[:single_texts]
    for r in range(rounds):
        part = single[r * len(single) // rounds : (r + 1) * len(single) // rounds]
        started = time.perf_counter()
        for chunk in part:
            embedding.get_text_embedding(chunk)
        single_s += time.perf_counter() - started
        part = chunks[r * len(chunks) // rounds : (r + 1) * len(chunks) // rounds]
        started = time.perf_counter()
        embedded += len(embedding.get_text_embedding_batch(part))
        batched_s += time.perf_counter() - started
    assert embedded == len(chunks)
    single_rate = len(single) / single_s
    batched_rate = len(chunks) / batched_s
    label = "LocalEmbedding batched (64 per call)"
    print(f"{'one text per call':40} {single_rate:8.1f} {1.0:7.2f}   ({len(single)} texts)")
    print(
        f"{label:40} {batched_rate:8.1f} {batched_rate / single_rate:7.2f}   ({len(chunks)} texts)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", nargs="?", default=os.environ.get("LOCAL_LLM_MODEL", "qwen2.5-coder:0.5b")
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument(
        "--single-texts", type=int, default=200, help="texts embedded one per call (a sample)"
    )
    parser.add_argument("--json", help="write the figures here (for benchmarks/report.py)")
    args = parser.parse_args()
    path = str(ModelLibrary().resolve(args.model).path)
    print(f"Model: {args.model}\nFile: {path}")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, llama-cpp-python {llama_cpp.__version__}"
    )
    bench_generation(args.model, path, args.runs, args.tokens)
    bench_embeddings(args.model, args.texts, args.single_texts)
    raw = global_rates["raw llama-cpp-python"]
    summary = [
        summary_row("LlamaIndex LocalLLM.stream_chat", global_rates["LocalLLM.stream_chat"], raw,
                    "raw llama-cpp-python", goal=0.98),
        summary_row("LlamaIndex LocalLLM vs LlamaCPP peer", global_rates["LocalLLM.stream_chat"],
                    global_rates["LlamaCPP.stream_chat"], "llama-index LlamaCPP.stream_chat"),
    ]  # fmt: skip
    write_json(args.json, "llama_index_throughput", summary)


if __name__ == "__main__":
    from local_llm_runtime.llama import repack

    with repack.like_the_runtime():  # raw baselines and peers load as the runtime does
        main()
