"""``/api/create`` with a Modelfile and Ollama's create fields; ``/api/show``'s Modelfile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from local_llm_runtime.cli.main import main
from local_llm_runtime.store.modelfile import JINJA_CHATML_EXAMPLE, parse_modelfile
from local_llm_runtime.testing import FakeEngine


def test_server_create_and_show(client_for: Callable[..., TestClient], tiny_gguf: Path) -> None:
    assert main(["create", "base", "--from", str(tiny_gguf), "--param", "num_predict=8"]) == 0
    base = "base"
    client = client_for(FakeEngine(responses=["Hi"], cycle=True))
    made = client.post(
        "/api/create",
        json={
            "model": "srv:1",
            "modelfile": f"FROM {base}\nSYSTEM from the modelfile\nPARAMETER seed 3",
            "template": JINJA_CHATML_EXAMPLE,
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "license": ["MIT", "Apache"],
            "stream": False,
        },
    )
    assert made.status_code == 200, made.text
    shown = client.post("/api/show", json={"model": "srv:1"}).json()
    assert shown["template"] == JINJA_CHATML_EXAMPLE
    parsed = parse_modelfile(shown["modelfile"])
    assert parsed.from_ == "srv:1" and parsed.system == "from the modelfile"
    assert parsed.parameters == {"num_predict": 8, "seed": 3}
    assert parsed.template == JINJA_CHATML_EXAMPLE and parsed.license == "MIT\n\nApache"
    assert [m["content"] for m in parsed.messages] == ["q", "a"]
    bad = client.post(
        "/api/create", json={"model": "srv:2", "modelfile": "FROM x\nNOPE 1", "stream": False}
    )
    assert bad.status_code == 400 and "line 2" in bad.json()["error"]
    go = client.post(
        "/api/create",
        json={"model": "srv:3", "from": base, "template": "{{ .Prompt }}", "stream": False},
    )
    assert go.status_code == 400 and "Go template" in go.json()["error"]
