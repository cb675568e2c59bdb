"""`local-llm serve` vs in-process: what the HTTP layer costs per token.

The same requests (greedy, ``--tokens`` new tokens, a different prompt per
client) sent by 1, 4 and 8 concurrent clients, on one batched engine
(``num_parallel=8``) over the demo model:

* ``in-process`` -- ``engine.achat_stream`` in this process's event loop;
* ``http``       -- the same engine behind ``local-llm serve``'s app (uvicorn on
  a loopback port, in a thread of this process), clients streaming
  ``POST /api/chat`` NDJSON with ``httpx`` (``--api openai``: ``/v1/chat/completions`` SSE).

Printed per client count: aggregate generated tokens/s, median time to the
first token of a client, their ratio, and the server's overhead per token
(``per-stream seconds per token, http - in-process``, in ms). Rounds alternate
the contenders; medians over rounds. No assertions.

Usage::

    python benchmarks/serve_throughput.py [MODEL_PATH] [--tokens 48] [--rounds 2] [--api ollama]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable

import httpx
import uvicorn
from _common import median, model_path, summary_row, write_json

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.backends import create_engine
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.server import create_app
from local_llm_runtime.server.run import listen
from local_llm_runtime.settings import ServerSettings
from local_llm_runtime.store.library import ModelLibrary
from local_llm_runtime.types import FinalChunk, TextDelta

NAME = "qwen2.5-coder:0.5b"
NUM_CTX = 1024
CLIENTS = (1, 4, 8)
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

Result = tuple[int, float, list[float]]
"""(generated tokens, wall seconds, each client's time to first token)."""


def messages(i: int) -> list[dict[str, str]]:
    text = f"Write Python code for {TOPICS[i % len(TOPICS)]}, with comments."
    return [{"role": "user", "content": text}]


def options(tokens: int) -> dict[str, int]:
    return {"temperature": 0, "num_predict": tokens, "num_ctx": NUM_CTX}


async def clients(n: int, one: Callable[[int], Awaitable[tuple[int, float]]]) -> Result:
    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - started
    return sum(r[0] for r in results), wall, [r[1] for r in results]


def in_process(
    engine: EngineProtocol, tokens: int
) -> Callable[[int], Awaitable[tuple[int, float]]]:
    async def one(i: int) -> tuple[int, float]:
        started, first, count = time.perf_counter(), 0.0, 0
        async with engine.achat_stream(NAME, messages(i), options=options(tokens)) as stream:
            async for chunk in stream:
                if isinstance(chunk, TextDelta) and chunk.text and not first:
                    first = time.perf_counter() - started
                if isinstance(chunk, FinalChunk):
                    count = chunk.usage.completion_tokens
        return count, first

    return one


def over_http(
    client: httpx.AsyncClient, tokens: int, api: str
) -> Callable[[int], Awaitable[tuple[int, float]]]:
    async def ollama(i: int) -> tuple[int, float]:
        body = {"model": NAME, "messages": messages(i), "options": options(tokens)}
        started, first, count = time.perf_counter(), 0.0, 0
        async with client.stream("POST", "/api/chat", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                obj = json.loads(line)
                if obj.get("message", {}).get("content") and not first:
                    first = time.perf_counter() - started
                if obj.get("done"):
                    count = obj["eval_count"]
        return count, first

    async def openai(i: int) -> tuple[int, float]:
        body = {
            "model": NAME,
            "messages": messages(i),
            "max_tokens": tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started, first, count = time.perf_counter(), 0.0, 0
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                obj = json.loads(line[6:])
                choices = obj.get("choices") or [{}]
                if choices[0].get("delta", {}).get("content") and not first:
                    first = time.perf_counter() - started
                if obj.get("usage"):
                    count = obj["usage"]["completion_tokens"]
        return count, first

    return ollama if api == "ollama" else openai


def start_server(engine: EngineProtocol, library: ModelLibrary) -> tuple[uvicorn.Server, str]:
    settings = ServerSettings(max_queue=64)
    app = create_app(engine, library=library, settings=settings, runtime=library.settings)
    sock = listen("127.0.0.1", 0)  # as `local-llm serve` binds
    config = uvicorn.Config(app, log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def run(args: argparse.Namespace, engine: EngineProtocol, url: str) -> None:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await in_process(engine, 1)(0)  # load the model outside the timings
        rows = []
        for n in CLIENTS:
            contenders = {
                "in-process": in_process(engine, args.tokens),
                "http": over_http(client, args.tokens, args.api),
            }
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            ttft: dict[str, list[float]] = {name: [] for name in contenders}
            step: dict[str, list[float]] = {name: [] for name in contenders}
            names = list(contenders)
            for r in range(args.rounds):
                for name in names[r % 2 :] + names[: r % 2]:
                    generated, wall, firsts = await clients(n, contenders[name])
                    rates[name].append(generated / wall)
                    ttft[name].append(median(firsts))
                    step[name].append(wall / (generated / n))  # per-stream s per token
            rows.append((n, rates, ttft, step))

    print(
        f"# {args.tokens} tokens per client, greedy, num_parallel=8, "
        f"{os.cpu_count()} CPUs, api={args.api}, {args.rounds} rounds (medians)"
    )
    print(
        f"{'clients':>7} {'in-proc tok/s':>14} {'http tok/s':>11} {'http ÷ in':>10} "
        f"{'TTFT in s':>10} {'TTFT http s':>12} {'overhead ms/token':>18}"
    )
    summary = []
    for n, rates, ttft, step in rows:
        ins, http = median(rates["in-process"]), median(rates["http"])
        summary.append(summary_row(f"serve over HTTP, {n} clients", http, ins, "in-process engine"))
        overhead = (median(step["http"]) - median(step["in-process"])) * 1000
        print(
            f"{n:7d} {ins:14.1f} {http:11.1f} {http / ins:10.2f} "
            f"{median(ttft['in-process']):10.2f} {median(ttft['http']):12.2f} {overhead:18.2f}"
        )
    write_json(args.json, "serve_throughput", summary, api=args.api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--api", choices=("ollama", "openai"), default="ollama")
    parser.add_argument("--json", help="write the figures here (for benchmarks/report.py)")
    args = parser.parse_args()
    path = model_path(args.model)
    with tempfile.TemporaryDirectory() as home:
        os.environ["LOCAL_LLM_HOME"] = home
        settings = RuntimeSettings.from_env().model_copy(update={"num_parallel": 8})
        library = ModelLibrary(settings)
        library.create(NAME, path)
        engine = create_engine(settings=settings)
        server, url = start_server(engine, library)
        try:
            asyncio.run(run(args, engine, url))
        finally:
            server.should_exit = True
            engine.unload()


if __name__ == "__main__":
    main()
