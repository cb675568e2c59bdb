"""Over HTTP a model is a name, never a server path: every field that names a model, both APIs."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from local_llm_runtime.server.model_names import check_model_name
from local_llm_runtime.testing import FakeEngine

PATHS = [
    "../../etc/passwd",
    "/etc/passwd.gguf",
    "./model.gguf",
    "models/../../secret.gguf",
    "C:\\models\\m.gguf",
    "qwen2.5:../../x",
    "~/m.gguf",
]

# (method, path, body with MODEL where the name goes, the field named in the error)
ROUTES = [
    (
        "POST",
        "/api/chat",
        {"model": "MODEL", "messages": [{"role": "user", "content": "hi"}]},
        "model",
    ),
    ("POST", "/api/generate", {"model": "MODEL", "prompt": "hi"}, "model"),
    ("POST", "/api/embed", {"model": "MODEL", "input": "hi"}, "model"),
    ("POST", "/api/embeddings", {"model": "MODEL", "prompt": "hi"}, "model"),
    ("POST", "/api/show", {"model": "MODEL"}, "model"),
    ("POST", "/api/pull", {"model": "MODEL", "stream": False}, "model"),
    ("DELETE", "/api/delete", {"model": "MODEL"}, "model"),
    ("POST", "/api/copy", {"source": "MODEL", "destination": "x"}, "source"),
    ("POST", "/api/copy", {"source": "x", "destination": "MODEL"}, "destination"),
    ("POST", "/api/create", {"model": "MODEL", "from": "x", "stream": False}, "model"),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "MODEL", "messages": [{"role": "user", "content": "hi"}]},
        "model",
    ),
    ("POST", "/v1/completions", {"model": "MODEL", "prompt": "hi"}, "model"),
    ("POST", "/v1/embeddings", {"model": "MODEL", "input": "hi"}, "model"),
]


def _with(body: dict[str, object], name: str) -> dict[str, object]:
    return {k: (name if v == "MODEL" else v) for k, v in body.items()}


@pytest.mark.parametrize("name", PATHS)
def test_rule_refuses_paths(name: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        check_model_name(name)


@pytest.mark.parametrize(
    "name", ["qwen2.5:7b", "hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "my-model", "llama3.2"]
)
def test_rule_keeps_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    ("method", "path", "body", "field"), ROUTES, ids=[f"{r[1]}:{r[3]}" for r in ROUTES]
)
@pytest.mark.parametrize("name", PATHS[:3])
def test_every_route_refuses_a_path_as_model_with_400_and_runs_nothing(
    client: TestClient,
    engine: FakeEngine,
    method: str,
    path: str,
    body: dict[str, object],
    field: str,
    name: str,
) -> None:
    response = client.request(method, path, json=_with(body, name))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if path.startswith("/v1/"):
        assert error["param"] == field
        message = error["message"]
    else:
        assert error.startswith(field)
        message = error
    assert "path" in message and "Value error" not in message
    assert engine.requests == []
    assert engine.ps() == []
    assert client.get("/").status_code == 200
