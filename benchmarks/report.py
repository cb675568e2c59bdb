"""One benchmark report: run the benchmark scripts, write a Markdown table and a PNG chart.

Each script in :data:`BENCHMARKS` that exists runs once, one after another (never two model
processes at once), in short mode by default (``--full``: the scripts' own defaults), with
``--json`` into a temporary folder. Every script's ``summary`` rows (see
``_common.summary_row``: this project, the reference -- raw llama-cpp-python, the
LangChain/LlamaIndex peers, llama.cpp's own tools --, their ratio and the goal) go into

* ``benchmarks/results/latest.md``   -- the table, with pass/fail against each goal;
* ``benchmarks/results/latest.png``  -- a bar chart of the ratios with the goal lines;
* ``benchmarks/results/latest.json`` -- every script's figures (``--only`` updates just
  those benchmarks in it and redraws the table and chart from all of them).

A missing script is skipped, a failing one is listed with the end of its output.

``--before DIR`` (a checkout of an earlier commit, e.g. ``git worktree add --detach
/tmp/before <commit>``) also runs each script with DIR's packages first on ``PYTHONPATH``
(the same script, the earlier code), right before the run on this checkout, and adds a
before/after table: this project's figure then and now, and the change (now / then for
rates, then / now for times). A script the earlier code cannot run is listed as not measured.

Usage::

    python benchmarks/report.py [--only NAME ...] [--full] [--model GGUF] [--out DIR]
        [--before DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"

BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    # name: (short-mode arguments, full-mode arguments); the model path is added when given
    "langchain_overhead": (["--rounds", "3", "--max-tokens", "64"], []),
    "llama_index_throughput": (
        ["--runs", "3", "--tokens", "64", "--texts", "200", "--single-texts", "50"],
        [],
    ),
    "grammar_sampling": (["--runs", "3"], []),
    "parallel_throughput": (["--rounds", "3", "--tokens", "48"], ["--rounds", "5"]),
    "batched_reference": (["--rounds", "3"], ["--rounds", "5"]),
    "serve_throughput": (["--rounds", "2", "--tokens", "32"], []),
    "remote_overhead": (["--rounds", "3", "--max-tokens", "32"], []),
    "startup": ([], []),
    "embeddings": ([], []),
    "prompt_cache": ([], []),
    "contention": ([], []),
}
NO_MODEL_ARG = {"llama_index_throughput", "startup"}
"""Scripts whose positional argument is not a GGUF path (a model name) or that take none."""


def run_one(
    name: str, args: list[str], folder: Path, timeout: float, code: Path = ROOT
) -> dict[str, Any]:
    """Run ``benchmarks/NAME.py ARGS --json ...`` with ``code``'s packages first on the path
    and ``code`` as the working folder (a ``python -c`` child puts it first on ``sys.path``);
    its JSON, or ``{"error": ...}``."""
    out = folder / f"{name}{'' if code == ROOT else '-before'}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(code), str(code / "runtime"), *filter(None, [env.get("PYTHONPATH")])]
    )
    cmd = [sys.executable, str(HERE / f"{name}.py"), *args, "--json", str(out)]
    print(f"## {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=code, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"benchmark": name, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - started
    (folder / f"{name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    print(proc.stdout, end="", flush=True)
    if proc.returncode or not out.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-8:]
        why = f"exit {proc.returncode}" if proc.returncode else "no --json output"
        return {"benchmark": name, "error": why, "tail": tail, "wall_s": wall}
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    data.setdefault("benchmark", name)
    data["wall_s"] = wall
    data["command"] = " ".join(["python", *cmd[1:-2]])
    return data


def rows_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary rows of one script's JSON (a single row for a flat ours/reference JSON)."""
    if isinstance(data.get("summary"), list):
        return [r for r in data["summary"] if isinstance(r, dict)]
    if "ratio" in data:  # a script that wrote one flat comparison
        return [
            {
                "metric": data.get("metric", data["benchmark"]),
                "ours": data.get("ours"),
                "reference": data.get("reference"),
                "reference_name": data.get("reference_name", ""),
                "ratio": data["ratio"],
                "goal": data.get("goal"),
                "unit": data.get("unit", ""),
            }
        ]
    return []


def verdict(row: dict[str, Any]) -> str:
    ratio, goal = row.get("ratio"), row.get("goal")
    if goal is None or not isinstance(ratio, (int, float)) or math.isnan(ratio):
        return "-"
    return "pass" if ratio >= goal else "FAIL"


def fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, (int, float)) and not math.isnan(value):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def figure(value: Any) -> str:
    """A measured value with the digits that matter: 27.7, 0.183, 1240."""
    if isinstance(value, (int, float)) and not math.isnan(value):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return fmt(value)


def machine() -> str:
    """CPU model, CPU count, load and the llama-cpp-python version, for the report's header."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        llama = version("llama-cpp-python")
    except Exception:
        llama = "?"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} CPUs, load {load:.2f}, llama-cpp-python {llama}"


def git_commit(folder: Path = ROOT) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "?"


def markdown(
    results: dict[str, dict[str, Any]],
    header: dict[str, str],
    before: dict[str, dict[str, Any]] | None = None,
) -> str:
    lines = [
        "# Benchmark report",
        "",
        f"Generated {header['date']} at commit `{header['commit']}` by "
        f"`python benchmarks/report.py{header['mode']}` on {header['machine']}.",
        "",
        "Ratio: this project / reference for rates (higher is better), reference / this "
        "project for times, so a ratio at or above the goal passes. Medians of the rounds "
        "each script runs; see its `--help` and docstring for the method.",
    ]
    if header.get("note"):
        lines += ["", f"**Note:** {header['note']}"]
    lines += [
        "",
        "![ratios](latest.png)",
        "",
        "| benchmark | metric | this project | reference | ratio | goal | result |",
        "|---|---|---|---|---|---|---|",
    ]
    problems = []
    for name, data in results.items():
        if "error" in data:
            problems.append(f"- `{name}`: {data['error']}")
            problems += [f"      {line}" for line in data.get("tail", [])]
            continue
        rows = rows_of(data)
        if not rows:
            problems.append(f"- `{name}`: its JSON has no `summary` rows (see latest.json)")
        for row in rows:
            unit = row.get("unit") or ""
            lines.append(
                f"| {name} | {row.get('metric', '')} | {figure(row.get('ours'))} {unit} | "
                f"{figure(row.get('reference'))} {unit} ({row.get('reference_name', '')}) | "
                f"{fmt(row.get('ratio'))} | {fmt(row.get('goal'))} | {verdict(row)} |"
            )
    if problems:
        lines += ["", "Not measured:", "", *problems]
    if before:
        lines += before_after(results, before, header.get("before", "?"))
    return "\n".join(lines) + "\n"


_TIME_UNITS = {"s", "ms", "us", "µs"}


def before_after(
    results: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]], commit: str
) -> list[str]:
    """The before/after table: this project's figure per summary row, earlier code vs now."""
    lines = [
        "",
        f"## Before / after (earlier code: commit `{commit}`, same scripts, same run)",
        "",
        "Change: now / before for rates, before / now for times (above 1 is better).",
        "",
        "| benchmark | metric | before | now | change |",
        "|---|---|---|---|---|",
    ]
    problems = []
    for name, then in before.items():
        if "error" in then:
            problems.append(f"- `{name}` (earlier code): {then['error']}")
            continue
        now = {r.get("metric"): r for r in rows_of(results.get(name, {}))}
        for row in rows_of(then):
            new = now.get(row.get("metric"))
            unit = row.get("unit") or ""
            old_v, new_v = row.get("ours"), (new or {}).get("ours")
            change: float | None = None
            numbers = isinstance(old_v, (int, float)) and isinstance(new_v, (int, float))
            lower_is_better = not row.get("higher_is_better", unit not in _TIME_UNITS)
            if numbers and old_v > 0 and new_v > 0:
                change = old_v / new_v if lower_is_better else new_v / old_v
            lines.append(
                f"| {name} | {row.get('metric', '')} | {fmt(old_v, 2)} {unit} | "
                f"{fmt(new_v, 2)} {unit} | {fmt(change)} |"
            )
    if problems:
        lines += ["", "Not measured with the earlier code:", "", *problems]
    return lines


def chart(results: dict[str, dict[str, Any]], path: Path, title: str) -> bool:
    """A horizontal bar per summary row (its ratio), its goal as a black tick; False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (pip install -e '.[dev]'): no chart", file=sys.stderr)
        return False
    labels, ratios, goals, colors = [], [], [], []
    for name, data in results.items():
        for row in rows_of(data) if "error" not in data else []:
            ratio = row.get("ratio")
            if not isinstance(ratio, (int, float)) or math.isnan(ratio):
                continue
            labels.append(f"{name}: {row.get('metric', '')}")
            ratios.append(float(ratio))
            goals.append(row.get("goal"))
            v = verdict(row)
            colors.append({"pass": "tab:green", "FAIL": "tab:red"}.get(v, "tab:gray"))
    fig, ax = plt.subplots(figsize=(10, 0.45 * max(len(labels), 2) + 1.2))
    y = list(range(len(labels)))
    ax.barh(y, ratios, color=colors)
    for i, goal in enumerate(goals):
        if goal is not None:
            ax.plot([goal, goal], [i - 0.42, i + 0.42], color="black", linewidth=2)
    for i, ratio in enumerate(ratios):
        ax.text(ratio, i, f" {ratio:.2f}", va="center", fontsize=8)
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio to the reference (black tick: goal; green pass, red fail, grey no goal)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _scrub(value: Any, before: Path | None = None) -> Any:
    """``value`` with this machine's paths made relative: the checkout as ``.``, an earlier
    checkout as ``BEFORE``, the home folder as ``~`` (the results are committed)."""
    if isinstance(value, dict):
        return {k: _scrub(v, before) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, before) for v in value]
    if isinstance(value, str):
        if before is not None:
            value = value.replace(str(before), "BEFORE")
        return value.replace(str(ROOT), ".").replace(str(Path.home()), "~")
    return value


def _with_rows(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``summary`` rows derived by the script's ``summary_rows`` when it has none
    (figures written before the script wrote them)."""
    if "error" in data or "summary" in data:
        return data
    try:
        module = importlib.import_module(name)
        return {**data, "summary": module.summary_rows(data)}
    except Exception:  # an old figure shape: listed as having no rows
        return data


def render(out: Path, note: str | None) -> None:
    """Redraw ``latest.md`` and ``latest.png`` from ``latest.json`` without running anything."""
    stored = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    header = stored["header"]
    if note:
        header["note"] = note
    results = {n: _with_rows(n, d) for n, d in stored["results"].items()}
    before = {n: _with_rows(n, d) for n, d in stored.get("before", {}).items()}
    stored.update(header=header, results=results, before=before)
    stored = _scrub(stored)
    (out / "latest.json").write_text(json.dumps(stored, indent=2) + "\n", encoding="utf-8")
    (out / "latest.md").write_text(markdown(results, header, before), encoding="utf-8")
    chart(results, out / "latest.png", f"{header['date']}, {header['machine']}")
    print(f"wrote {out / 'latest.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(BENCHMARKS))
    parser.add_argument("--full", action="store_true", help="the scripts' own (longer) defaults")
    parser.add_argument("--model", help="GGUF file (default: each script's demo model)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per script")
    parser.add_argument("--note", help="a line for the report (e.g. 'machine shared')")
    parser.add_argument("--before", type=Path, help="a checkout of earlier code to compare")
    parser.add_argument(
        "--render", action="store_true", help="only redraw the table and chart from latest.json"
    )
    args = parser.parse_args()
    if args.render:
        render(Path(args.out), args.note)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "latest.json"
    results: dict[str, dict[str, Any]] = {}
    before: dict[str, dict[str, Any]] = {}
    if args.only and store.exists():  # update only these benchmarks of the last report
        stored = json.loads(store.read_text(encoding="utf-8"))
        results = stored.get("results", {})
        before = stored.get("before", {})
    names = args.only or list(BENCHMARKS)
    with tempfile.TemporaryDirectory(prefix="llm-report-") as tmp:
        for name in names:
            if not (HERE / f"{name}.py").exists():
                print(f"## {name}: no benchmarks/{name}.py, skipped", flush=True)
                continue
            short, full = BENCHMARKS[name]
            extra = list(full if args.full else short)
            if args.model and name not in NO_MODEL_ARG:
                extra = [args.model, *extra]
            if args.before:
                before[name] = run_one(name, extra, Path(tmp), args.timeout, args.before)
            results[name] = run_one(name, extra, Path(tmp), args.timeout)
    header = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine(),
        "mode": " --full" if args.full else "",
        "note": args.note or "",
    }
    if args.before:
        header["before"] = git_commit(args.before)
    elif args.only and store.exists():  # the stored before/after runs keep their commit
        header["before"] = stored.get("header", {}).get("before", "")
    order = [n for n in BENCHMARKS if n in results]
    results = {n: results[n] for n in order}
    before = {n: before[n] for n in order if n in before}
    stored_all: dict[str, Any] = {"header": header, "results": results}
    if before:
        stored_all["before"] = before
    store.write_text(json.dumps(_scrub(stored_all, args.before), indent=2) + "\n")
    (out / "latest.md").write_text(markdown(results, header, before), encoding="utf-8")
    drawn = chart(results, out / "latest.png", f"{header['date']}, {header['machine']}")
    print(f"wrote {out / 'latest.md'}" + (f" and {out / 'latest.png'}" if drawn else ""))


if __name__ == "__main__":
    main()
