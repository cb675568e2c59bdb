"""Continuous batching vs llama.cpp's own ``llama-batched-bench`` (same build, same shape).

The reference is ``llama-batched-bench -m MODEL -c 2048 -b 512 -ub 512 -npp 128 -ntg 64
-npl 1,4,8`` built by ``benchmarks/llama_cpp_tools.sh`` from the vendored llama.cpp of the
installed llama-cpp-python. This project's side: an engine with ``num_parallel=B`` and B
clients (threads), each sending a distinct raw prompt of ``--npp`` tokens and streaming
``--ntg`` tokens (greedy), for each B of ``--npl``.

Printed for each B:

* ``ours decode`` -- generated tokens/s of all clients while every one of them is decoding
  (from the last client's first token to the last client's end), against batched-bench's
  ``S_TG`` (B x ntg tokens over the pure decode time): ratio goal >= 0.95;
* ``ours e2e`` -- wall time of the whole round (B prompts + B x ntg tokens) against
  batched-bench's ``T`` (prefill + decode of the same token counts);
* the speed-up of B over B=1 for both.

Fairness: the same thread count for both (``-t``/``-tb`` and ``num_thread``; default the
runtime's own default), flash attention off for both (llama-cpp-python's default; the tool's
default is ``auto``), and the runtime's weight-repack choice (``LOCAL_LLM_REPACK``; off
where the CPU has AMX, see ``local_llm_runtime.llama.repack``) passed to the tool as
``--no-repack``/``--repack``. Prompts differ between rounds so no slot reuses a prefix
(batched-bench's prompts are random tokens, never shared). Both run in the same
environment (``OMP_WAIT_POLICY`` etc. as set by the caller); rounds alternate the two.

Usage::

    python benchmarks/batched_reference.py [MODEL] [--npl 1,4,8] [--rounds 3] [--json PATH]
        [--tools-dir DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, median, model_path, spread, summary_row, write_json

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama import cpu, repack
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.types import FinalChunk, TextDelta

GOAL = 0.95
FILLER = (
    "The service keeps a small cache of recent results, evicts the least recently used entry "
    "when it is full, and records hits and misses for the metrics endpoint. Each request "
    "carries a deadline; a worker that misses it returns a timeout error to the caller. "
)


def tools_dir(arg: str | None) -> Path:
    """The folder with ``llama-batched-bench`` (built, or reused, by llama_cpp_tools.sh)."""
    if arg:
        return Path(arg)
    script = ROOT / "benchmarks" / "llama_cpp_tools.sh"
    tarball = ROOT / ".dev" / "llama_slim.tar.gz"
    cmd = [str(script), "--python", sys.executable]
    if tarball.exists():
        cmd += ["--tarball", str(tarball)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def reference_run(
    binary: Path, model: str, npl: list[int], npp: int, ntg: int, threads: int, extra_bufts: bool
) -> dict[int, dict[str, float]]:
    """One run of llama-batched-bench: ``{B: {"s_tg", "t", "t_pp", "t_tg"}}``."""
    cmd = [
        str(binary), "-m", model, "-c", "2048", "-b", "512", "-ub", "512",
        "-npp", str(npp), "-ntg", str(ntg), "-npl", ",".join(map(str, npl)),
        "-t", str(threads), "-tb", str(threads), "-fa", "off",
        "--repack" if extra_bufts else "--no-repack", "--output-format", "jsonl",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"llama-batched-bench failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return parse_batched_bench(proc.stdout + proc.stderr)


def parse_batched_bench(text: str) -> dict[int, dict[str, float]]:
    """Rows of batched-bench's output, JSONL or its Markdown table, keyed by B."""
    rows: dict[int, dict[str, float]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            row = json.loads(line)
            rows[int(row["pl"])] = {
                "s_tg": row["speed_tg"], "t": row["t"], "t_pp": row["t_pp"], "t_tg": row["t_tg"]
            }  # fmt: skip
        elif line.startswith("|") and not line.startswith("|    PP") and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 10 and cells[2].isdigit():
                rows[int(cells[2])] = {
                    "t_pp": float(cells[4]), "t_tg": float(cells[6]),
                    "s_tg": float(cells[7]), "t": float(cells[8]),
                }  # fmt: skip
    return rows


def make_prompts(model: str, n: int, npp: int, tag: str) -> list[str]:
    """``n`` distinct raw prompts of about ``npp`` tokens, each starting with its own tag."""
    import llama_cpp

    vocab = llama_cpp.Llama(model, vocab_only=True, verbose=False)
    try:
        texts = []
        for i in range(n):
            tokens = vocab.tokenize(
                f"[{tag}.{i}] {FILLER * 8}".encode(), add_bos=False, special=False
            )[:npp]
            texts.append(vocab.detokenize(tokens).decode("utf-8", "ignore"))
        return texts
    finally:
        vocab.close()


def ours_run(
    engine: Engine, model: str, texts: list[str], ntg: int, threads: int
) -> dict[str, Any]:
    """B clients at once; the decode rate while all decode, and the round's wall time."""
    n = len(texts)
    stamps: list[list[float]] = [[] for _ in range(n)]
    counts = [0] * n
    prompt_tokens = [0] * n
    gate = threading.Barrier(n + 1)
    options = {"temperature": 0, "num_predict": ntg, "num_ctx": slot_ctx(n), "num_thread": threads}

    def client(i: int) -> None:
        gate.wait()
        for chunk in engine.generate_stream(model, texts[i], raw=True, options=options):
            if isinstance(chunk, TextDelta):
                stamps[i].append(time.perf_counter())
            elif isinstance(chunk, FinalChunk):
                counts[i] = chunk.usage.completion_tokens
                prompt_tokens[i] = chunk.usage.prompt_tokens
        stamps[i].append(time.perf_counter())  # the end

    threads_ = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads_:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads_:
        t.join()
    end = time.perf_counter()
    last_first = max(s[0] for s in stamps)
    decoded = 0.0
    for i in range(n):
        deltas = stamps[i][:-1]
        after = sum(1 for s in deltas if s > last_first)
        decoded += counts[i] * after / max(len(deltas), 1)
    decode_end = max(s[-1] for s in stamps)
    return {
        "decode_tok_s": decoded / (decode_end - last_first) if decode_end > last_first else 0.0,
        "wall_s": end - started,
        "tokens": sum(counts),
        "prompt_tokens": median(prompt_tokens),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--npl", default="1,4,8", help="batch sizes B (default 1,4,8)")
    parser.add_argument("--npp", type=int, default=128, help="prompt tokens per client")
    parser.add_argument("--ntg", type=int, default=64, help="generated tokens per client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="default: the runtime's default threads")
    parser.add_argument("--tools-dir", help="folder with llama-batched-bench (default: build)")
    parser.add_argument("--json", help="write the figures here (for benchmarks/report.py)")
    args = parser.parse_args()
    path = model_path(args.model)
    npl = [int(b) for b in args.npl.split(",")]
    base = RuntimeSettings.from_env()
    threads = args.threads or base_threads()
    extra_bufts = repack.use_extra_buffers(base.repack)
    binary = tools_dir(args.tools_dir) / "llama-batched-bench"

    engines = {b: Engine(base.model_copy(update={"num_parallel": b})) for b in npl}
    ref: dict[int, list[dict[str, float]]] = {b: [] for b in npl}
    ours: dict[int, list[dict[str, Any]]] = {b: [] for b in npl}
    try:
        for b, engine in engines.items():  # load (and warm) outside the timings
            options = {"num_predict": 1, "num_ctx": slot_ctx(b), "num_thread": threads}
            engine.generate(path, "hi", raw=True, options=options)
        for r in range(args.rounds):
            order = ["ref", "ours"] if r % 2 == 0 else ["ours", "ref"]
            for who in order:
                if who == "ref":
                    for b, row in reference_run(
                        binary, path, npl, args.npp, args.ntg, threads, extra_bufts
                    ).items():
                        ref[b].append(row)
                else:
                    for b in npl:
                        texts = make_prompts(path, b, args.npp, f"r{r}b{b}")
                        ours[b].append(ours_run(engines[b], path, texts, args.ntg, threads))
    finally:
        for engine in engines.values():
            engine.pool.close()

    print(
        f"# B clients x {args.npp} prompt + {args.ntg} generated tokens, {threads} threads, "
        f"repack {'on' if extra_bufts else 'off'}, flash attention off, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"{os.cpu_count()} CPUs, medians of {args.rounds} rounds, {path}"
    )
    print(
        f"{'B':>3} {'ours dec t/s':>12} {'S_TG t/s':>9} {'ratio':>6} {'ours x B1':>9} "
        f"{'ref x B1':>8} {'ours e2e s':>10} {'ref T s':>8} {'e2e ratio':>9}  spread ours/ref"
    )
    summary = []
    rows = []
    b1 = npl[0]
    for b in npl:
        o = [x["decode_tok_s"] for x in ours[b]]
        s = [x["s_tg"] for x in ref[b]]
        ow, rt = median([x["wall_s"] for x in ours[b]]), median([x["t"] for x in ref[b]])
        row = {
            "B": b,
            "ours_decode_tok_s": median(o),
            "ref_s_tg": median(s),
            "ratio": median(o) / median(s),
            "ours_speedup": median(o) / median([x["decode_tok_s"] for x in ours[b1]]),
            "ref_speedup": median(s) / median([x["s_tg"] for x in ref[b1]]),
            "ours_wall_s": ow,
            "ref_t_s": rt,
            "e2e_ratio": rt / ow,
            "ours_prompt_tokens": median([x["prompt_tokens"] for x in ours[b]]),
            "ours_tokens": median([x["tokens"] for x in ours[b]]),
            "ours_rounds": ours[b],
            "ref_rounds": ref[b],
        }
        rows.append(row)
        print(
            f"{b:>3} {row['ours_decode_tok_s']:12.1f} {row['ref_s_tg']:9.1f} {row['ratio']:6.2f} "
            f"{row['ours_speedup']:9.2f} {row['ref_speedup']:8.2f} {ow:10.2f} {rt:8.2f} "
            f"{row['e2e_ratio']:9.2f}  {spread(o)} / {spread(s)}"
        )
        summary.append(summary_row(
            f"batched decode B={b}", median(o), median(s), "llama-batched-bench S_TG",
            goal=GOAL if b > 1 else None,
        ))  # fmt: skip
    write_json(
        args.json, "batched_reference", summary, rows=rows, threads=threads,
        repack=extra_bufts, npp=args.npp, ntg=args.ntg, rounds=args.rounds,
    )  # fmt: skip


def slot_ctx(b: int) -> int:
    """Context per slot: batched-bench's ``-c 2048`` split over B sequences, as llama.cpp does."""
    return 2048 // b


def base_threads() -> int:
    """The runtime's default thread count for generation."""
    return cpu.default_threads()


if __name__ == "__main__":
    main()
