"""Decoding speed on a busy machine: alone, beside a second model process, beside a CPU hog.

llama.cpp's threads meet at a barrier after every graph node; when another
process takes a core, a descheduled thread holds everybody up. This script
measures, in separate processes started at the same moment:

* ``alone``  — one model process generating;
* ``pair``   — two model processes generating at once (aggregate tokens/s);
* ``hog``    — one model process beside a pure-Python busy loop (a test run's shape);

for each thread policy:

* ``fixed``    — ``num_thread`` = the physical cores (the runtime's count before the
  governor; what llama.cpp and Ollama use);
* ``adaptive`` — the runtime's default: :class:`~local_llm_runtime.llama.threads.ThreadGovernor`
  sets the threads before every decode from the CPUs other processes leave free;
* ``passive``  — ``fixed`` with ``OMP_WAIT_POLICY=passive`` (threads sleep at barriers).

Printed: generation tokens/s (after the first token) and prompt tokens/s, medians
of ``--rounds``, and ratios to ``fixed`` alone. Goals (issue 12): adaptive alone
>= 0.97x fixed alone; pair aggregate >= 0.8x; beside the hog >= 0.4x.

Usage::

    python benchmarks/contention.py [MODEL_PATH] [--tokens 96] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import median, model_path, spread, summary_row

HERE = Path(__file__).resolve().parent
PROMPT = (
    "Write a long, complete Python module implementing a thread-safe LRU cache with "
    "time-to-live expiry, statistics, type hints and docstrings, then its unit tests."
)
POLICIES = ("fixed", "adaptive", "passive")


def worker(path: str, policy: str, tokens: int, go: str) -> None:
    """Load, wait for ``go`` to exist, generate ``tokens`` tokens; print JSON figures."""
    from local_llm_runtime import RuntimeSettings
    from local_llm_runtime.llama import cpu
    from local_llm_runtime.llama.engine import Engine
    from local_llm_runtime.types import FinalChunk

    options: dict[str, object] = {"temperature": 0, "num_predict": tokens, "num_ctx": 1024}
    if policy != "adaptive":
        options["num_thread"] = cpu.default_threads()
    engine = Engine(RuntimeSettings.from_env().model_copy(update={"num_parallel": 1}))
    messages = [{"role": "user", "content": PROMPT}]
    for _ in engine.chat_stream(path, messages, options={**options, "num_predict": 1}):
        pass  # loaded and warm
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    started = time.perf_counter()
    first = 0.0
    final: FinalChunk | None = None
    # A different first word: the prompt is evaluated again (no cached prefix).
    messages = [{"role": "user", "content": "Please. " + PROMPT}]
    for chunk in engine.chat_stream(path, messages, options=options):
        if not first:
            first = time.perf_counter()
        if isinstance(chunk, FinalChunk):
            final = chunk
    ended = time.perf_counter()
    assert final is not None
    generated = final.usage.completion_tokens
    result = {
        "gen_tps": (generated - 1) / (ended - first) if generated > 1 else 0.0,
        "prompt_tps": final.usage.prompt_tokens / (first - started),
        "tokens": generated,
    }
    print(json.dumps(result), flush=True)
    engine.unload()


def _spawn(path: str, policy: str, tokens: int, go: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "passive"
    else:
        env.pop("OMP_WAIT_POLICY", None)
    cmd = [sys.executable, str(HERE / "contention.py"), path, "--worker", policy]
    cmd += ["--tokens", str(tokens), "--go", go]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def scenario(path: str, policy: str, kind: str, tokens: int) -> list[dict[str, float]]:
    """Run one scenario; the workers' figures."""
    with tempfile.TemporaryDirectory() as tmp:
        go = os.path.join(tmp, "go")
        procs = [_spawn(path, policy, tokens, go) for _ in range(2 if kind == "pair" else 1)]
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"worker failed to start: {line!r}")
        hog = None
        if kind == "hog":
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)  # the hog is running and the governor has seen it
        Path(go).touch()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=900)
            results.append(json.loads(out.strip().splitlines()[-1]))
        if hog is not None:
            hog.kill()
            hog.wait()
    return results


def summary_rows(figures: dict[str, Any]) -> list[dict[str, object]]:
    """The report's rows: each scenario's generation rate against ``fixed`` alone, per policy.

    ``fixed`` is the runtime's thread policy before issue 12 (all cores, spinning), so its
    rows are the "before" of the adaptive ones. Goals: alone >= 0.97, two processes >= 0.8
    (aggregate), beside a CPU hog >= 0.4.
    """
    by = {(r["policy"], r["scenario"]): r for r in figures["rows"]}
    alone = by.get(("fixed", "alone"))
    if alone is None:
        return []
    goals = {"alone": 0.97, "pair": 0.8, "hog": 0.4}
    names = {"alone": "alone", "pair": "two model processes (aggregate)", "hog": "beside a CPU hog"}
    out = []
    for policy in ("adaptive", "fixed", "passive"):
        for scenario in ("alone", "pair", "hog"):
            row = by.get((policy, scenario))
            if row is None or (policy, scenario) == ("fixed", "alone"):
                continue
            out.append(summary_row(
                f"decode {names[scenario]}, {policy} threads", row["gen_tps"], alone["gen_tps"],
                "fixed threads, alone", goal=goals[scenario] if policy == "adaptive" else None,
            ))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--kinds", default="alone,pair,hog")
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.model, args.worker, args.tokens, args.go)
        return
    path = model_path(args.model)
    policies = args.policies.split(",")
    kinds = args.kinds.split(",")
    gen: dict[tuple[str, str], list[float]] = {}
    prompt: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for kind in kinds:
            for policy in policies:
                results = scenario(path, policy, kind, args.tokens)
                gen.setdefault((policy, kind), []).append(sum(r["gen_tps"] for r in results))
                prompt.setdefault((policy, kind), []).append(sum(r["prompt_tps"] for r in results))
    base = median(gen.get(("fixed", "alone"), []))
    base_prompt = median(prompt.get(("fixed", "alone"), []))
    print(f"{os.cpu_count()} CPUs, {args.tokens} tokens, medians of {args.rounds} rounds")
    print(
        f"{'policy':9} {'scenario':7} {'gen tok/s':>10} {'range':>11} {'x fixed alone':>14}"
        f" {'prompt tok/s':>13} {'x fixed alone':>14}"
    )
    figures = []
    for kind in kinds:
        for policy in policies:
            g, p = gen[(policy, kind)], prompt[(policy, kind)]
            row = {
                "policy": policy,
                "scenario": kind,
                "gen_tps": median(g),
                "gen_ratio": median(g) / base,
                "prompt_tps": median(p),
                "prompt_ratio": median(p) / base_prompt,
            }
            figures.append(row)
            print(
                f"{policy:9} {kind:7} {row['gen_tps']:10.1f} {spread(g):>11} "
                f"{row['gen_ratio']:14.2f} {row['prompt_tps']:13.1f} {row['prompt_ratio']:14.2f}"
            )
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps(
                {"benchmark": "contention", "rows": figures, "summary": summary_rows(figures)}
            )
        )


if __name__ == "__main__":
    main()
