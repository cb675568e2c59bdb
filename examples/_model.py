"""Which model the examples use: argv[1], else $LOCAL_LLM_MODEL, else the demo name."""

from __future__ import annotations

import os
import sys

DEMO = "qwen2.5-coder:0.5b"  # registered by `python scripts/demo.py` (README command 1)


def model_name() -> str:
    """The model reference for this run."""
    if len(sys.argv) > 1:
        return sys.argv[1]
    return os.environ.get("LOCAL_LLM_MODEL", DEMO)
