"""How many CPU threads llama.cpp should use by default.

Token generation on a CPU is bound by memory bandwidth and scales with
*physical* cores; hyper-threads add contention, not speed. llama.cpp's own CLI
and Ollama default to the physical core count. llama-cpp-python defaults to
half the logical CPUs, which is the physical count on a machine with two
threads per core but only half of it on one without (most cloud VMs, many
laptops' efficiency cores aside): there it leaves half the cores idle.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["default_threads", "physical_cores"]


def _linux_physical_cores(cpuinfo: str, allowed: set[int] | None) -> int | None:
    """Distinct (physical id, core id) pairs among the allowed logical CPUs."""
    cores: set[tuple[str, str]] = set()
    processor: int | None = None
    physical = core = ""
    for line in [*cpuinfo.splitlines(), ""]:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            processor = int(value) if value.isdigit() else None
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not line.strip() and processor is not None:
            if allowed is None or processor in allowed:
                cores.add((physical, core or str(processor)))
            processor, physical, core = None, "", ""
    return len(cores) or None


def physical_cores() -> int | None:
    """Physical cores this process may run on, or ``None`` when unknown."""
    if sys.platform.startswith("linux"):
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        return _linux_physical_cores(cpuinfo, allowed)
    if sys.platform == "darwin":  # Apple silicon: the performance cores
        for key in ("hw.perflevel0.physicalcpu", "hw.physicalcpu"):
            try:
                out = subprocess.run(
                    ["sysctl", "-n", key], capture_output=True, text=True, timeout=2, check=True
                ).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                continue
            if out.isdigit() and int(out) > 0:
                return int(out)
    return None


def default_threads() -> int:
    """Physical cores if known, else half the logical CPUs (at least 1)."""
    return physical_cores() or max(1, (os.cpu_count() or 2) // 2)
