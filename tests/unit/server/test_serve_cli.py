"""``local-llm serve`` as a process (bind errors, warnings, signals), ``ps`` and ``stop``.

``serve`` runs in a subprocess on a free loopback port (``LOCAL_LLM_HOST``); the
shutdown tests run the real runner (:func:`local_llm_runtime.server.run.serve`:
bind, signal handling, drain, lifespan unload) over a slow FakeEngine with the
probe routes of ``tests.support.probe``, so a stream is open when the signal
arrives. ``ps``/``stop`` are the CLI's clients against a server in a thread.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from local_llm_runtime.cli.main import main
from local_llm_runtime.testing import FakeEngine
from tests.support.server import ServerThread, free_port, make_app

ROOT = Path(__file__).resolve().parents[3]
BOUND_S = 60.0
"""Upper bound for a start or an exit: a hang fails the test, a slow machine does not."""


def env_for(host: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_LLM_API_KEY")}
    env.update(
        LOCAL_LLM_HOST=host,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "runtime")]),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(url, timeout=1).text == "Ollama is running":
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the server did not start")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


CLI = ["-c", "import sys; from local_llm_runtime.cli.main import main; sys.exit(main())"]
"""``local-llm ARGS`` (the console script's entry point) from this worktree."""
PROBE = ["-m", "tests.support.probe"]


def test_serve_on_a_port_in_use_is_one_line_naming_local_llm_host() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, *CLI, "serve"],
            env=env_for(f"127.0.0.1:{port}"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=BOUND_S,
        )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ") and "LOCAL_LLM_HOST" in lines[0]
    assert f"127.0.0.1:{port} is already in use" in lines[0]
    assert "Traceback" not in done.stderr


def test_serve_without_the_server_extra_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from local_llm_runtime.cli.main import main\n"
        "sys.exit(main(['serve']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env_for(f"127.0.0.1:{free_port()}"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND_S,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: local-llm serve needs the server extra (uvicorn is missing): "
        "pip install 'local-llm-integrations[server]'"
    )


@pytest.mark.parametrize(("key", "warned"), [(None, True), ("s3cret", False)])
def test_serve_on_all_interfaces_warns_without_an_api_key(
    procs: list[subprocess.Popen[str]], key: str | None, warned: bool
) -> None:
    port = free_port()
    extra = {"LOCAL_LLM_API_KEY": key} if key else {}
    proc = start(CLI + ["serve"], env_for(f"0.0.0.0:{port}", **extra))
    procs.append(proc)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + BOUND_S
    while True:
        assert proc.poll() is None and time.monotonic() < deadline
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", headers=headers, timeout=1).is_success:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=BOUND_S)
    assert proc.returncode == 0, err
    warning = f"Warning: listening on 0.0.0.0:{port} with no API key"
    assert (warning in err) is warned, err
    assert "set LOCAL_LLM_API_KEY" in err if warned else "s3cret" not in err
    assert f"serving Ollama and OpenAI APIs on http://127.0.0.1:{port}" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_open_streams_cleanly_unloads_and_exits_0(
    procs: list[subprocess.Popen[str]], sig: signal.Signals
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(PROBE, env_for(f"127.0.0.1:{port}", PROBE_CHUNK_DELAY="0.05"))
    procs.append(proc)
    wait_healthy(proc, url)
    request = {"model": "m", "prompt": "hi", "options": {}}
    with httpx.stream("POST", url + "/test/stream", json=request, timeout=BOUND_S) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines))["done"] is False  # 2000 tokens: 100 s unless stopped
        proc.send_signal(sig)
        rest = [json.loads(line) for line in lines]
    assert rest[-1] == {"done": True, "done_reason": "cancelled"}
    _, err = proc.communicate(timeout=BOUND_S)
    assert proc.returncode == 0, err
    assert "unloaded 1 model instance(s)" in err
    assert "Traceback" not in err and "Interrupted" not in err


def test_serve_exits_0_on_sigterm_with_the_real_engine(
    procs: list[subprocess.Popen[str]],
) -> None:
    port = free_port()
    proc = start(CLI + ["serve"], env_for(f"127.0.0.1:{port}"))
    procs.append(proc)
    wait_healthy(proc, f"http://127.0.0.1:{port}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=BOUND_S)
    assert proc.returncode == 0, err
    assert "unloaded 0 model instance(s)" in err


# ---- ps / stop: clients of a running server ------------------------------------------------


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServerThread, FakeEngine]]:
    engine = FakeEngine(responses=["Hello!"], cycle=True)
    with ServerThread(make_app(engine, api_key="s3cret")) as server:
        monkeypatch.setenv("LOCAL_LLM_HOST", f"127.0.0.1:{server.port}")
        monkeypatch.setenv("LOCAL_LLM_API_KEY", "s3cret")
        yield server, engine


def test_ps_lists_the_loaded_models_like_ollama_ps(
    running: tuple[ServerThread, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    _, engine = running
    engine.preload("qwen2.5:0.5b")
    assert main(["ps"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert len(out) == 2 and out[1].startswith("qwen2.5:0.5b ")
    assert "CPU" in out[1] or "GPU" in out[1]


def test_stop_unloads_the_model_on_the_server(
    running: tuple[ServerThread, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    _, engine = running
    engine.preload("qwen2.5:0.5b")
    assert main(["stop", "qwen2.5:0.5b"]) == 0
    assert capsys.readouterr().out == "stopped 'qwen2.5:0.5b'\n"
    assert engine.ps() == []
    assert main(["stop", "qwen2.5:0.5b"]) == 1  # no longer loaded
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not loaded" in err[0]


def test_ps_and_stop_send_the_api_key(
    running: tuple[ServerThread, FakeEngine],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCAL_LLM_API_KEY", "wr0ng-key")
    for argv in (["ps"], ["stop", "m"]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "401" in err[0] and "API key" in err[0], err
        assert "wr0ng-key" not in err[0]


@pytest.mark.parametrize("argv", [["ps"], ["stop", "m"]])
def test_ps_and_stop_without_a_server_are_one_line_and_exit_1(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_LLM_HOST", f"127.0.0.1:{free_port()}")
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LOCAL_LLM_HOST" in err[0] and "local-llm serve" in err[0]
