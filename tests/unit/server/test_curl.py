"""Wire framing as ``curl`` and ``requests`` users see it (the seed article's recipes).

``curl -d`` sends ``application/x-www-form-urlencoded``: the server must read the JSON
anyway, as Ollama's does. NDJSON: one JSON object per line, the last ``done: true``;
SSE: ``data: {json}`` events separated by a blank line, ending ``data: [DONE]``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from local_llm_runtime.testing import FakeEngine
from tests.support.server import ServerThread, make_app

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    engine = FakeEngine(responses=["Hello, world"], cycle=True)
    with ServerThread(make_app(engine)) as server:
        yield server.url


def curl(*args: str) -> str:
    done = subprocess.run(
        ["curl", "-sS", "-N", "--max-time", "30", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_generate_ndjson_with_curls_default_content_type(url: str) -> None:
    out = curl(
        f"{url}/api/generate", "-d", '{"model": "qwen2.5:7b", "prompt": "Why is the sky blue?"}'
    )
    lines = out.splitlines()
    assert len(lines) >= 3 and all(line.startswith("{") for line in lines)
    objects = [json.loads(line) for line in lines]
    assert "".join(o["response"] for o in objects) == "Hello, world"
    assert [o["done"] for o in objects] == [False] * (len(objects) - 1) + [True]
    final = objects[-1]
    for field in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "eval_count",
        "eval_duration",
    ):
        assert isinstance(final[field], int), field
    assert final["done_reason"] == "stop"


def test_chat_whole_object(url: str) -> None:
    body = {"model": "qwen2.5:7b", "stream": False, "messages": [{"role": "user", "content": "Hi"}]}
    out = curl(f"{url}/api/chat", "-d", json.dumps(body))
    obj = json.loads(out)
    assert obj["message"] == {"role": "assistant", "content": "Hello, world"}
    assert obj["done"] is True


def test_openai_sse_framing(url: str) -> None:
    body = {"model": "qwen2.5:7b", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    out = curl(
        f"{url}/v1/chat/completions", "-H", "Content-Type: application/json", "-d", json.dumps(body)
    )
    assert out.endswith("data: [DONE]\n\n")
    events = out.split("\n\n")[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello, world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_errors_are_json_to_curl_too(url: str) -> None:
    out = curl(f"{url}/api/generate", "-d", "{not json")
    assert "error" in json.loads(out)
    out = curl(f"{url}/v1/chat/completions", "-d", '{"model": "m"}')
    assert json.loads(out)["error"]["param"] == "messages"


def test_the_seed_articles_requests_recipes(url: str) -> None:
    requests = pytest.importorskip("requests")
    payload = {
        "model": "qwen2.5:7b",
        "prompt": "Explain decorators",
        "stream": False,
        "options": {"temperature": 0.7, "num_ctx": 4096},
        "system": "You are a Python programmer",
    }
    result = requests.post(f"{url}/api/generate", json=payload, timeout=30).json()
    assert result["response"] == "Hello, world"
    assert result["eval_count"] >= 1 and result["load_duration"] >= 0
    streamed = requests.post(
        f"{url}/api/generate", json={**payload, "stream": True}, stream=True, timeout=30
    )
    pieces = [json.loads(line) for line in streamed.iter_lines() if line]
    assert "".join(p["response"] for p in pieces) == "Hello, world" and pieces[-1]["done"]
