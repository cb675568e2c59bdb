"""The real Qwen2.5-Coder-0.5B-Instruct GGUF through the fake Hub, the store and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import llama_cpp
import pytest

from demo_model import DEMO_NAME, SHA256, SIZE
from local_llm_runtime import ModelLibrary
from local_llm_runtime.cli.main import main
from local_llm_runtime.llama import repack
from tests.support.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[2]
REPO = "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"
FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def test_both_names_pull_the_same_verified_real_file_then_work_offline(
    fake_hub: FakeHub,
    demo_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_hub.add_repo(REPO, {FILE: demo_model, "README.md": b"# Qwen2.5-Coder\n"})
    lib = ModelLibrary()
    by_name = lib.pull("qwen2.5-coder:0.5b")
    by_ref = lib.pull(f"hf.co/{REPO}:Q4_K_M")
    assert by_name.digest == by_ref.digest == SHA256
    assert by_name.size == SIZE
    path = lib.resolve("qwen2.5-coder:0.5b").path
    assert path == lib.resolve(f"hf.co/{REPO}:Q4_K_M").path
    assert fake_hub.file_gets(FILE) == 1

    assert main(["show", "qwen2.5-coder:0.5b", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    details = info["details"]
    assert details["architecture"] == "qwen2"
    assert details["quantization"] == "Q4_K_M"
    assert details["context_length"] == 32768
    assert details["embedding_length"] == 896
    assert "tools" in details["capabilities"]
    assert info["source"]["repo_id"] == REPO

    # Offline: resolution and a real load + answer, with zero requests to the Hub.
    fake_hub.reset_requests()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ModelLibrary().resolve("qwen2.5-coder:0.5b")
    with repack.like_the_runtime():  # no AMX buffers where they crash llama.cpp
        llm = llama_cpp.Llama(model_path=str(model.path), n_ctx=512, n_threads=2, verbose=False)
    try:
        reply = llm.create_chat_completion(
            messages=[{"role": "user", "content": "What is 2 + 2? Reply with just the number."}],
            max_tokens=8,
            temperature=0.0,
        )
    finally:
        llm.close()
    assert "4" in reply["choices"][0]["message"]["content"]
    assert fake_hub.requests == []


def test_readme_demo_command_registers_and_shows(demo_model: Path, tmp_path: Path) -> None:
    env = os.environ.copy()
    env["LOCAL_LLM_HOME"] = str(tmp_path / "demo-home")
    env["LOCAL_LLM_DEMO_CACHE"] = str(demo_model.parent)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "qwen2" in result.stdout
    assert "Q4_K_M" in result.stdout
    assert "ChatLocal" in result.stdout
    assert "def " in result.stdout  # the chain streamed the model's code
    listing = subprocess.run(
        [sys.executable, "-m", "local_llm_runtime", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert DEMO_NAME in listing
    assert SHA256[:12] in listing
