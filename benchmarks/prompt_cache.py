"""Prompt caches: interleaved conversations on one slot, and a restart.

Two conversations, each with its own ~1,000-token system prompt, alternate on
one slot (``LOCAL_LLM_NUM_PARALLEL=1``): A, B, follow-up A, follow-up B, ...
Without the RAM prompt cache (``LOCAL_LLM_CACHE_RAM=0``) each request evicts the
other conversation's prefix, so every follow-up evaluates its whole prompt again;
with it (llama-server's ``--cache-ram``) a follow-up evaluates only its new turn.

Printed per contender: the cold time to first token (the first request, whole
prompt), the median follow-up time to first token, and their ratio (target with
the cache: <= 0.2). Then the restart case: two conversations sharing one system
prompt on a first engine (which saves the shared prefix to disk,
``LOCAL_LLM_CACHE_DISK``), then a new engine's first request with that system
prompt, with the saved prefix vs without (a cold start). Times are the engine's own ``timings.prompt_s`` (lease to first
token, model already loaded). Greedy, unseeded (seeded requests never reuse).

Usage::

    python benchmarks/prompt_cache.py [MODEL_PATH] [--rounds 3] [--turns 2] [--part all|ram|disk]
                                      [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import median, model_path, spread, summary_row

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama.engine import Engine

RULES = [
    "Answer in plain English and keep every sentence short.",
    "Prefer standard library modules over third-party packages.",
    "Name variables after what they hold, never after their type.",
    "Write a docstring for every public function, with its arguments and errors.",
    "Raise a typed error with a message that says what to do next.",
    "Never swallow an exception without logging why.",
    "Keep functions under forty lines; split them when they grow.",
    "Test the behaviour, not the implementation, and make each test able to fail.",
    "Measure before optimising and report medians of several rounds.",
    "Document units, defaults and shapes of every parameter.",
]
OPTIONS = {"temperature": 0.0, "num_predict": 8}
NUM_CTX = 4096


def system_prompt(round_no: int, role: str = "code reviewer", target_words: int = 700) -> str:
    """A ~1,000-token house style guide (unique per round and role: each round starts cold)."""
    lines = [f"You are the {role} of project number {round_no}. House rules follow."]
    i = 0
    while sum(len(line.split()) for line in lines) < target_words:
        lines.append(f"Rule {i + 1}: {RULES[i % len(RULES)]} (section {i // len(RULES) + 1})")
        i += 1
    return "\n".join(lines)


def engine_with(**env: str) -> Engine:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_LLM_CACHE")}
    base.update({"LOCAL_LLM_NUM_PARALLEL": "1", "LOCAL_LLM_KEEP_ALIVE": "-1", **env})
    return Engine(RuntimeSettings.from_env(base))


def chat(engine: Engine, path: str, messages: list[dict[str, str]]) -> tuple[str, float, int]:
    """One request: its answer, time to first token (s) and prompt tokens evaluated."""
    result = engine.chat(path, messages, options={**OPTIONS, "num_ctx": NUM_CTX})
    return result.text, result.timings.prompt_s, result.timings.prompt_tokens


def interleaved(engine: Engine, path: str, round_no: int, turns: int) -> dict[str, Any]:
    """A, B, then ``turns - 1`` follow-ups of each, alternating."""
    convos = [
        [
            {"role": "system", "content": system_prompt(round_no, "code reviewer")},
            {"role": "user", "content": "How should I name a list of open files?"},
        ],
        [
            {"role": "system", "content": system_prompt(round_no, "release manager")},
            {"role": "user", "content": "When may I catch a bare Exception?"},
        ],
    ]
    follow = ["And in tests?", "Give a one-line example.", "Why?", "Anything else?"]
    cold_s, cold_tokens, follow_s, follow_tokens = [], [], [], []
    for turn in range(turns):
        for messages in convos:
            text, ttft, evaluated = chat(engine, path, messages)
            (cold_s if turn == 0 else follow_s).append(ttft)
            (cold_tokens if turn == 0 else follow_tokens).append(evaluated)
            messages += [
                {"role": "assistant", "content": text},
                {"role": "user", "content": follow[turn % len(follow)]},
            ]
    return {
        "cold_s": cold_s[0],  # A's first request: nothing cached
        "cold_tokens": cold_tokens[0],
        "follow_s": median(follow_s),
        "follow_tokens": median(follow_tokens),
    }


def restart(path: str, round_no: int, folder: Path, *, disk: bool) -> dict[str, Any]:
    """Engine 1 sees two conversations (saving their shared prefix); engine 2 starts anew.

    Without ``disk`` engine 1 is skipped: nothing it does survives the restart.
    """
    env = {"LOCAL_LLM_SLOT_SAVE_PATH": str(folder), "LOCAL_LLM_CACHE_DISK": "1024" if disk else "0"}
    system = {"role": "system", "content": system_prompt(1000 + round_no)}
    if disk:
        first = engine_with(**env)
        try:
            for question in ("What is a good test?", "What is a bad test?"):
                chat(first, path, [system, {"role": "user", "content": question}])
            for entry in first.pool._entries.values():
                cache = entry.batcher.prompt_cache if entry.batcher else None
                if cache is not None and cache.disk is not None:
                    cache.disk.flush()
        finally:
            first.pool.close()
    second = engine_with(**env)
    try:
        second.chat(
            path,
            [{"role": "user", "content": "hi"}],
            options={"num_predict": 1, "num_ctx": NUM_CTX},
        )  # load
        _text, ttft, evaluated = chat(second, path, [system, {"role": "user", "content": "Why?"}])
    finally:
        second.pool.close()
    return {"first_s": ttft, "first_tokens": evaluated}


def summary_rows(figures: dict[str, Any]) -> list[dict[str, object]]:
    """The report's rows: follow-up TTFT with the RAM cache vs cold, first request after a
    restart with the saved prefix vs without (goal of issue 12: <= 0.2x, as a ratio >= 5)."""
    rows = []
    ram = figures.get("cache_ram_on")
    if ram:
        rows.append(summary_row(
            "follow-up TTFT, RAM prompt cache", ram["follow_up_ttft_s"], ram["cold_ttft_s"],
            "cold TTFT (same conversation)", goal=5.0, unit="s", higher_is_better=False,
        ))  # fmt: skip
    restart = figures.get("restart")
    if restart:
        rows.append(summary_row(
            "TTFT after a restart, prefix saved to disk", restart["disk_on_ttft_s"],
            restart["disk_off_ttft_s"], "without the saved prefix", unit="s",
            higher_is_better=False,
        ))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=2, help="requests per conversation")
    parser.add_argument("--part", choices=("all", "ram", "disk"), default="all")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    path = model_path(args.model)

    rows: dict[str, list[dict[str, Any]]] = {"cache_ram_off": [], "cache_ram_on": []}
    disk_rows: dict[str, list[dict[str, Any]]] = {"disk_off": [], "disk_on": []}
    engines = {
        "cache_ram_off": engine_with(LOCAL_LLM_CACHE_RAM="0", LOCAL_LLM_CACHE_DISK="0"),
        "cache_ram_on": engine_with(LOCAL_LLM_CACHE_RAM="1024", LOCAL_LLM_CACHE_DISK="0"),
    }
    if args.part == "disk":
        engines = {}
    try:
        for engine in engines.values():  # load once; TTFTs below exclude the load
            engine.chat(
                path,
                [{"role": "user", "content": "hi"}],
                options={"num_predict": 1, "num_ctx": NUM_CTX},
            )
        for r in range(args.rounds):
            for name, engine in engines.items():  # alternate the contenders each round
                rows[name].append(interleaved(engine, path, r, args.turns))
                print(f"round {r + 1} {name}: {rows[name][-1]}", file=sys.stderr)
    finally:
        for engine in engines.values():
            engine.pool.close()
    with tempfile.TemporaryDirectory(prefix="slots-") as tmp:
        for r in range(args.rounds if args.part != "ram" else 0):
            for name, series in disk_rows.items():
                on = name == "disk_on"
                series.append(restart(path, r, Path(tmp) / name, disk=on))
                print(f"round {r + 1} {name}: {series[-1]}", file=sys.stderr)

    figures: dict[str, Any] = {"model": path, "rounds": args.rounds, "turns": args.turns}
    if args.part != "disk":
        print(f"\nPrompt cache, one slot, {args.rounds} rounds (medians; min..max):")
        print(
            f"{'contender':16} {'cold TTFT':>14} {'follow-up TTFT':>16} {'ratio':>7} {'tokens':>12}"
        )
    for name, series in rows.items():
        if not series:
            continue
        cold = [row["cold_s"] for row in series]
        follow = [row["follow_s"] for row in series]
        ratio = median(follow) / median(cold)
        tokens = f"{median([r['cold_tokens'] for r in series]):.0f}->"
        tokens += f"{median([r['follow_tokens'] for r in series]):.0f}"
        print(
            f"{name:16} {median(cold):7.3f} s ({spread(cold, 2)}) "
            f"{median(follow):7.3f} s ({spread(follow, 2)}) {ratio:6.2f}x {tokens:>12}"
        )
        figures[name] = {
            "cold_ttft_s": median(cold),
            "follow_up_ttft_s": median(follow),
            "follow_up_over_cold": ratio,
            "cold_prompt_tokens": median([r["cold_tokens"] for r in series]),
            "follow_up_prompt_tokens": median([r["follow_tokens"] for r in series]),
        }
    if args.part != "ram":
        off = median([row["first_s"] for row in disk_rows["disk_off"]])
        on = median([row["first_s"] for row in disk_rows["disk_on"]])
        print("\nFirst request after a restart (the system prompt saved to disk or not):")
        for name, series in disk_rows.items():
            firsts = [row["first_s"] for row in series]
            tokens = median([row["first_tokens"] for row in series])
            print(f"{name:16} {median(firsts):7.3f} s ({spread(firsts, 2)}) {tokens:6.0f} tokens")
        print(f"{'ratio on/off':16} {on / off:7.2f}x")
        figures["restart"] = {
            "disk_off_ttft_s": off,
            "disk_on_ttft_s": on,
            "on_over_off": on / off,
            "disk_off_prompt_tokens": median([r["first_tokens"] for r in disk_rows["disk_off"]]),
            "disk_on_prompt_tokens": median([r["first_tokens"] for r in disk_rows["disk_on"]]),
        }
    if args.json:
        figures["summary"] = summary_rows(figures)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
