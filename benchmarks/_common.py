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
