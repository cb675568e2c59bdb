"""``local-llm run`` on a tiny model: one-shot, stdin, interactive chat with /bye and Ctrl-C."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local_llm_runtime.cli.main import main


@pytest.fixture
def tiny_name(tiny_gguf: Path) -> str:
    assert main(["create", "tiny", "--from", str(tiny_gguf), "--param", "num_predict=8"]) == 0
    return "tiny"


def test_run_with_prompt_streams_and_reports(
    tiny_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", tiny_name, "hello", "--verbose", "--param", "seed=1"]) == 0
    out, err = capsys.readouterr()
    assert out.strip()
    for key in ("load duration", "prompt eval rate", "eval count:", "eval rate"):
        assert key in err
    assert "8 token(s)" in err


def test_run_reads_stdin_when_piped(tiny_name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local_llm_runtime", "run", tiny_name],
        input="hello there",
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_run_unknown_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "qwen2.5:8b", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1


def _read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {marker!r}; got {data[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_interactive_chat_keeps_history_and_exits_on_bye(tiny_name: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a terminal
        os.execv(sys.executable, [sys.executable, "-m", "local_llm_runtime", "run", tiny_name])
    try:
        _read_until(fd, b">>> ")
        os.write(fd, b"first question\r")
        _read_until(fd, b">>> ")
        # input() writes the prompt before it blocks in read(); a SIGINT that lands in
        # between only sets Python's flag and is seen after the next line. A person
        # cannot type that fast; give the child time to reach read().
        time.sleep(0.5)
        os.write(fd, b"\x03")  # Ctrl-C at the prompt does not exit
        _read_until(fd, b"/bye to exit")
        os.write(fd, b"second question\r")
        _read_until(fd, b">>> ")
        os.write(fd, b"/bye\r")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)


def test_interactive_slash_commands_like_ollama(tiny_name: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a terminal
        os.execv(
            sys.executable,
            [sys.executable, "-m", "local_llm_runtime", "run", tiny_name, "--verbose"],
        )

    def say(line: bytes, expect: bytes) -> bytes:
        os.write(fd, line + b"\r")
        return _read_until(fd, expect)

    try:
        _read_until(fd, b">>> ")
        assert b"/set parameter KEY VALUE" in say(b"/?", b">>> ")
        assert b"Set parameter 'num_predict' to '3'" in say(
            b"/set parameter num_predict 3", b">>> "
        )
        shown = say(b"/show parameters", b">>> ")
        assert b"num_predict" in shown and b"3" in shown
        # the option applies: at most 3 tokens (the random tiny model may sample its
        # end-of-generation token sooner)
        counted = re.search(rb"(?m)^eval count:\s+(\d+) token", say(b"hello", b">>> "))
        assert counted is not None and 1 <= int(counted.group(1)) <= 3
        assert b"Error: " in say(
            b"/set parameter tempreature 1", b">>> "
        )  # and the session goes on
        assert b"Set system message." in say(b"/set system Answer briefly.", b">>> ")
        assert b"Answer briefly." in say(b"/show system", b">>> ")
        assert b"architecture" in say(b"/show info", b">>> ")
        assert b"Cleared session context" in say(b"/clear", b">>> ")
        assert b"Unknown command" in say(b"/frobnicate", b">>> ")
        os.write(fd, b'"""first line\r')
        _read_until(fd, b"... ")
        assert b"eval count" in say(b'second line"""', b">>> ")  # one message of two lines
        os.write(fd, b"/bye\r")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)


def test_run_talks_to_the_engine_interface(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    from local_llm_runtime.testing import FakeEngine

    cli_main = importlib.import_module("local_llm_runtime.cli.main")  # the package re-exports main

    engine = FakeEngine(["Hi from the fake."])
    monkeypatch.setattr(cli_main, "make_engine", lambda lib: engine)
    assert main(["run", "any-model", "hello", "--system", "Be brief."]) == 0
    assert capsys.readouterr().out.strip() == "Hi from the fake."
    assert engine.last_request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
