"""Every LangChain example runs offline on the demo model and does what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, model: Path) -> str:
    env = {**os.environ, "LOCAL_LLM_MODEL": str(model), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_prompt_template_chain_streams_code(demo_model: Path) -> None:
    out = run_example("chain.py", demo_model)
    assert "def " in out


def test_rag_answers_from_the_retrieved_text(demo_model: Path) -> None:
    out = run_example("rag.py", demo_model)
    assert "manual-1" in out.splitlines()[0]  # the right passage was retrieved
    assert "42" in out


def test_agent_makes_both_tool_calls_and_answers(demo_model: Path) -> None:
    out = run_example("agent.py", demo_model)
    calls = next(line for line in out.splitlines() if line.startswith("tool calls:"))
    assert "get_stock" in calls and "get_price" in calls
    answer = next(line for line in out.splitlines() if line.startswith("answer:"))
    assert "12" in answer and "2.5" in answer


@pytest.mark.parametrize("name", ["extract.py"])
def test_structured_extraction(name: str, demo_model: Path) -> None:
    out = run_example(name, demo_model)
    assert '"name":"Ada Lovelace"' in out and '"born":1815' in out
