"""Structured output speed: our grammar fast path vs llama-cpp-python's grammar sampling.

llama-cpp-python applies a grammar to the whole vocabulary before sampling each
token; ``local_llm_runtime.llama.sampling.Sampler`` samples first and checks only the
chosen token (as llama.cpp's common sampler and Ollama do). Contenders, on one
``Llama`` instance, the same prompt tokens, greedy, the same JSON schema:

* ``free``      — no grammar at all (the ceiling: what the model costs per token)
* ``constrain`` — ``Llama.generate(grammar=LlamaGrammar)``, llama-cpp-python's way
* ``fast``      — our ``Sampler`` with the same grammar
* ``engine``    — ``Engine.chat(format=schema)`` end to end, and
  ``raw_chat`` — ``Llama.create_chat_completion(response_format=json_schema)``

Runs are interleaved; we print the median generation tokens/s (first token to
last, so prompt evaluation is excluded) and ratios. Greedy runs of ``constrain``
and ``fast`` must produce the same tokens; the script checks and says so.

Usage::

    python benchmarks/grammar_sampling.py [MODEL_PATH] [--runs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Iterator

import llama_cpp
from _common import median, model_path, spread, summary_row, write_json
from llama_cpp.llama_grammar import LlamaGrammar

from local_llm_runtime import Engine
from local_llm_runtime.llama.batching import BatchDecoder
from local_llm_runtime.llama.sampling import Sampler, SamplingOptions
from local_llm_runtime.prompt.tool_calls import json_schema_gbnf

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "born": {"type": "integer"},
        "fields": {"type": "array", "items": {"type": "string"}},
        "notable_works": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
                "required": ["title", "year"],
            },
        },
    },
    "required": ["name", "born", "fields", "notable_works"],
}
QUESTION = "Describe Ada Lovelace as JSON: name, born, fields, notable_works (title, year)."
LIMIT = 160

Run = Callable[[], tuple[list[int] | str, int, float]]
"""One generation: (tokens or text, generated tokens, seconds from first token to last)."""


def timed(llm: llama_cpp.Llama, tokens: Iterator[int]) -> tuple[list[int], int, float]:
    out: list[int] = []
    first = 0.0
    for token in tokens:
        if not out:
            first = time.perf_counter()
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or len(out) == LIMIT:
            break
        out.append(token)
    return out, len(out), time.perf_counter() - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="write the figures here (for benchmarks/report.py)")
    args = parser.parse_args()
    path = model_path(args.model)

    llm = llama_cpp.Llama(path, n_ctx=2048, n_threads=args.threads, verbose=False)
    gbnf = json_schema_gbnf(SCHEMA)
    messages = [{"role": "user", "content": QUESTION}]
    prompt_text = (
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
        if "<|im_start|>" in (llm.metadata.get("tokenizer.chat_template") or "")
        else QUESTION
    )
    prompt = llm.tokenize(prompt_text.encode(), special=True)
    greedy = SamplingOptions(temperature=0.0)

    def ours(grammar: str | None) -> tuple[list[int], int, float]:
        # The runtime's single-request token loop: a one-slot batch on the model's context.
        decoder = BatchDecoder(llm, n_slots=1, num_ctx=llm.n_ctx(), n_batch=512)
        with Sampler(llm, greedy, seed=0, grammar=grammar) as sampler:
            run = decoder.start(prompt, sampler, max_tokens=llm.n_ctx(), reuse=False)
            try:
                return timed(llm, iter(run))
            finally:
                run.close()
                decoder.close()

    def free() -> tuple[list[int], int, float]:
        return ours(None)

    def constrain() -> tuple[list[int], int, float]:
        llm.reset()
        gen = llm.generate(
            prompt, temp=0.0, repeat_penalty=1.1, grammar=LlamaGrammar.from_string(gbnf, False)
        )
        try:
            return timed(llm, gen)
        finally:
            gen.close()

    def fast() -> tuple[list[int], int, float]:
        return ours(gbnf)

    engine = Engine()

    def engine_chat() -> tuple[str, int, float]:
        result = engine.chat(
            path,
            messages,
            format=SCHEMA,
            options={"temperature": 0, "num_predict": LIMIT, "num_thread": args.threads},
        )
        return result.text, result.usage.completion_tokens, result.timings.generation_s

    def raw_chat() -> tuple[str, int, float]:
        llm.reset()
        started = time.perf_counter()
        first = None
        text = ""
        stream = llm.create_chat_completion(
            messages,  # type: ignore[arg-type]
            response_format={"type": "json_object", "schema": SCHEMA},
            temperature=0,
            top_k=40,
            top_p=0.9,
            min_p=0.0,
            repeat_penalty=1.1,
            max_tokens=LIMIT,
            stream=True,
        )
        pieces = 0
        for chunk in stream:
            delta = chunk["choices"][0]["delta"].get("content")  # type: ignore[index]
            if delta:
                first = first or time.perf_counter()
                text += delta
                pieces += 1
        n = len(llm.tokenize(text.encode(), add_bos=False))
        return text, n, time.perf_counter() - (first or started)

    contenders: dict[str, Run] = {
        "free": free,
        "constrain": constrain,
        "fast": fast,
        "engine": engine_chat,
        "raw_chat": raw_chat,
    }
    names = list(contenders)
    rates: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, list[int] | str] = {}
    for run in range(args.runs):
        order = names[run % len(names) :] + names[: run % len(names)]
        for name in order:
            out, n, seconds = contenders[name]()
            outputs[name] = out
            rates[name].append((n - 1) / seconds if seconds > 0 and n > 1 else float("nan"))

    print(f"# {platform.processor() or platform.machine()}, {args.threads} threads, {path}")
    print(f"# greedy, JSON schema with nested array of objects, up to {LIMIT} tokens")
    same = outputs["constrain"] == outputs["fast"]
    print(f"constrain and fast produced identical tokens: {same}")
    for name in ("engine", "raw_chat"):
        try:
            json.loads(str(outputs[name]))
            valid = "valid JSON"
        except ValueError:
            valid = "INVALID JSON"
        print(f"{name}: {valid}")
    print(f"{'contender':<10} {'tok/s':>7} {'range':>12} {'÷ free':>7} {'÷ constrain':>12}")
    base = median(rates["free"])
    ref = median(rates["constrain"])
    for name in names:
        value = median(rates[name])
        print(
            f"{name:<10} {value:7.1f} {spread(rates[name]):>12} "
            f"{value / base:7.2f} {value / ref:12.2f}"
        )
    print(f"engine ÷ raw_chat: {median(rates['engine']) / median(rates['raw_chat']):.2f}")
    summary = [
        summary_row("JSON-schema sampling (fast)", median(rates["fast"]), base,
                    "unconstrained (free)", goal=0.95),
        summary_row("JSON-schema sampling (fast) vs LlamaGrammar", median(rates["fast"]), ref,
                    "llama-cpp-python grammar"),
        summary_row("Engine.chat(format=) vs raw chat", median(rates["engine"]),
                    median(rates["raw_chat"]), "raw create_chat_completion(json_schema)"),
    ]  # fmt: skip
    write_json(args.json, "grammar_sampling", summary, same_tokens=same)
    engine.pool.close()
    llm.close()


if __name__ == "__main__":
    from local_llm_runtime.llama import repack

    with repack.like_the_runtime():  # raw baselines and peers load as the runtime does
        main()
