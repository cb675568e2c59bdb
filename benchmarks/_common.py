"""Helpers shared by the LangChain benchmark scripts (measurements only, no assertions)."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    """Resident set size of this process, from ``/proc/self/statm``."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def model_path(arg: str | None) -> str:
    """The model given on the command line, or the demo model (assembled if needed)."""
    if arg:
        return str(Path(arg).expanduser().resolve())
    sys.path.insert(0, str(ROOT / "scripts"))
    from demo_model import ensure_demo_model

    return str(ensure_demo_model(quiet=True))


def median(values: Sequence[float]) -> float:
    """Median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``min..max`` of a series, for judging noise next to a median."""
    if not values:
        return "-"
    return f"{min(values):.{digits}f}..{max(values):.{digits}f}"


def summary_row(
    metric: str,
    ours: float,
    reference: float,
    reference_name: str,
    *,
    goal: float | None = None,
    unit: str = "tok/s",
    higher_is_better: bool = True,
) -> dict[str, object]:
    """One row of a benchmark's ``--json`` summary, as ``benchmarks/report.py`` reads it.

    ``ratio`` is ours / reference when higher is better (throughput), reference / ours
    when lower is better (times), so a ratio >= ``goal`` always passes.
    """
    if higher_is_better:
        ratio = ours / reference if reference else float("nan")
    else:
        ratio = reference / ours if ours else float("nan")
    return {
        "metric": metric,
        "ours": ours,
        "reference": reference,
        "reference_name": reference_name,
        "ratio": ratio,
        "goal": goal,
        "unit": unit,
        "higher_is_better": higher_is_better,
    }


def write_json(
    path: str | None, benchmark: str, summary: list[dict[str, object]], **details: object
) -> None:
    """Write ``{"benchmark", "cpus", "summary": [summary_row...], **details}`` to ``path`` (if given).

    ``benchmarks/report.py`` runs each script with ``--json PATH`` and tabulates ``summary``.
    """
    if not path:
        return
    import json

    data = {"benchmark": benchmark, "cpus": os.cpu_count(), "summary": summary, **details}
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
