"""Every LlamaIndex example runs offline on the demo model (path passed as argv[1])."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, model: Path, *, via_env: bool = False) -> str:
    """Run an example with the model as ``argv[1]`` (or ``$LOCAL_LLM_MODEL``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, str(EXAMPLES / name)]
    if via_env:
        env["LOCAL_LLM_MODEL"] = str(model)
    else:
        argv.append(str(model))
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rag_example_streams_an_answer_from_the_folder(demo_model: Path) -> None:
    out = run_example("llama_index_rag.py", demo_model)
    assert "Indexed 4 files" in out
    answer = out.split("A: ", 1)[1]
    assert "Brindle" in answer
    assert "Sources: robot.txt" in out


def test_agent_example_calls_a_tool(demo_model: Path) -> None:
    out = run_example("llama_index_agent.py", demo_model)
    assert "FunctionAgent" in out
    assert "tool get_weather({'city': 'Oslo'})" in out
    assert re.search(r"Answer: .*-3", out, re.DOTALL)


def test_structured_example_prints_a_valid_invoice(demo_model: Path) -> None:
    out = run_example("llama_index_structured.py", demo_model, via_env=True)
    invoice = json.loads(out[: out.index("}") + 1])
    assert invoice["number"] == "2024-117"
    assert invoice["total"] == 54.0
    assert invoice["currency"] == "EUR"
