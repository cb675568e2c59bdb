"""Overhead of the remote backend: ``ChatLocal(base_url=...)`` vs the raw ``openai`` client.

Usage: python benchmarks/remote_overhead.py [MODEL_PATH] [--rounds 7] [--max-tokens 64]
       [--threads N]                                   (default model: the demo model)

One llama-cpp-python server (``python -m llama_cpp.server``, loaded as the runtime
loads, on a free loopback port) serves the GGUF; two clients stream the same chat
request to it, in alternating rounds (raw, ChatLocal, raw, ...), after one warm-up
call each:

* ``openai``    -- ``openai.OpenAI(...).chat.completions.create(stream=True)``
* ``ChatLocal`` -- ``ChatLocal(model=..., base_url=<server>/v1).stream`` (the remote engine)

Greedy (temperature 0), the same seed, a fixed ``max_tokens`` and ``ignore_eos``-free
prompts asking for a long answer. Completion tokens are counted the same way for both:
the streamed text through the server's ``/extras/tokenize``. Reported per client:
the median end-to-end tokens/s (completion tokens / wall time of the whole call,
first byte to last) and the median time to first text; the ratio ChatLocal / openai
of the median tokens/s is the overhead figure (target >= 0.98).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "runtime"), str(ROOT / "benchmarks")]

import httpx  # noqa: E402
import openai  # noqa: E402
from _common import median, model_path, spread, summary_row, write_json  # noqa: E402

from local_llm_integrations.langchain import ChatLocal  # noqa: E402
from tests.support.llama_cpp_server import LlamaCppServer  # noqa: E402

SERVED = "bench-model"
PROMPT = "Write a Python function that checks whether a number is prime, with comments."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="write the figures here (for benchmarks/report.py)")
    args = parser.parse_args()
    gguf = Path(model_path(args.model))
    os.environ["LOCAL_LLM_MODEL_MAP"] = f"{SERVED}={SERVED}"
    with LlamaCppServer(gguf, alias=SERVED, n_threads=args.threads) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        chat = ChatLocal(
            model=SERVED,
            base_url=server.url + "/v1",
            temperature=0,
            seed=1,
            num_predict=args.max_tokens,
        )

        def count(text: str) -> int:
            body = {"model": SERVED, "input": text}
            tokens = httpx.post(server.url + "/extras/tokenize", json=body, timeout=60).json()
            return len(tokens["tokens"])

        def raw() -> tuple[float, float, str]:
            start = time.perf_counter()
            first = None
            parts: list[str] = []
            stream = client.chat.completions.create(
                model=SERVED,
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
                temperature=0,
                seed=1,
                max_tokens=args.max_tokens,
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter()
                    parts.append(chunk.choices[0].delta.content)
            end = time.perf_counter()
            return end - start, (first or end) - start, "".join(parts)

        def adapter() -> tuple[float, float, str]:
            start = time.perf_counter()
            first = None
            parts: list[str] = []
            for chunk in chat.stream(PROMPT):
                if chunk.content:
                    first = first or time.perf_counter()
                    parts.append(str(chunk.content))
            end = time.perf_counter()
            return end - start, (first or end) - start, "".join(parts)

        runs = {"openai": raw, "ChatLocal": adapter}
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
        texts: dict[str, str] = {}
        for fn in runs.values():
            fn()  # warm-up: first prompt evaluation, connections
        for _ in range(args.rounds):
            for name, fn in runs.items():
                wall, ttft, text = fn()
                texts[name] = text
                results[name].append((wall, ttft, count(text)))
        print(
            f"model {gguf.name}, {args.rounds} rounds, max_tokens {args.max_tokens}, "
            f"{args.threads} threads, llama_cpp.server on loopback"
        )
        print(f"same text from both clients: {texts['openai'] == texts['ChatLocal']}")
        rates = {}
        for name, rows in results.items():
            tps = [tokens / wall for wall, _, tokens in rows]
            ttfts = [ttft * 1000 for _, ttft, _ in rows]
            rates[name] = median(tps)
            print(
                f"{name:10s} tokens/s median {median(tps):7.2f} ({spread(tps, 2)})  "
                f"TTFT median {median(ttfts):7.1f} ms ({spread(ttfts, 0)})  "
                f"tokens {rows[-1][2]}"
            )
        print(
            f"ratio ChatLocal / openai: {rates['ChatLocal'] / rates['openai']:.3f} (target >= 0.98)"
        )
        summary = [summary_row("remote ChatLocal tokens/s", rates["ChatLocal"], rates["openai"],
                               "openai client, same server", goal=0.98)]  # fmt: skip
        write_json(args.json, "remote_overhead", summary)


if __name__ == "__main__":
    main()
