"""Resident memory before a load, while loaded, and after unload (3 cycles).

Usage: python benchmarks/load_unload_memory.py [MODEL]   (default: the demo model)

Prints RSS figures and the ratio of the post-unload level to the pre-load
level; llama.cpp memory-maps the weights, so the mapped pages are returned to
the OS when the model is closed.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from demo_model import ensure_demo_model
from local_llm_runtime.llama.engine import Engine


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else str(ensure_demo_model(quiet=True))
    engine = Engine()
    engine.chat(
        model,
        [{"role": "user", "content": "warm up imports"}],
        options={"num_predict": 1},
        keep_alive=0,
    )
    gc.collect()
    baseline = rss_mib()
    print(f"model: {model}")
    print(
        f"{'cycle':>5} {'before MiB':>11} {'loaded MiB':>11} {'after unload MiB':>17} {'after/before':>13}"
    )
    for cycle in range(1, 4):
        before = rss_mib()
        engine.chat(
            model,
            [{"role": "user", "content": "Say hi."}],
            options={"num_predict": 8},
            keep_alive=-1,
        )
        loaded = rss_mib()
        assert len(engine.ps()) == 1
        engine.unload()
        gc.collect()
        after = rss_mib()
        print(f"{cycle:>5} {before:>11.1f} {loaded:>11.1f} {after:>17.1f} {after / before:>13.3f}")
    print(
        f"baseline {baseline:.1f} MiB; final {rss_mib():.1f} MiB; ps() after unload: {engine.ps()}"
    )


if __name__ == "__main__":
    from local_llm_runtime.llama import repack

    with repack.like_the_runtime():  # raw baselines and peers load as the runtime does
        main()
