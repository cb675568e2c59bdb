"""The Dockerfile and docker-compose.yml carry what `local-llm serve` in a container needs.

Docker is not available in CI; this checks the essentials line by line (and the
compose file as YAML), so an edit that drops one of them fails here.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def values(keyword: str) -> list[str]:
    return [rest for kw, rest in instructions() if kw == keyword]


def env() -> dict[str, str]:
    found: dict[str, str] = {}
    for rest in values("ENV"):
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            found[key] = value
    return found


def test_dockerfile_runs_local_llm_serve_on_11434_for_all_interfaces() -> None:
    assert json.loads(values("CMD")[-1]) == ["local-llm", "serve"]
    assert values("EXPOSE") == ["11434"]
    assert env()["LOCAL_LLM_HOST"] == "0.0.0.0:11434"


def test_dockerfile_installs_the_server_extra_with_a_cpu_build_by_default() -> None:
    runs = " ".join(values("RUN"))
    assert re.search(r"pip install [\"']?\.\[server\]", runs)
    assert "cmake" in runs and "build-essential" in runs  # llama-cpp-python compiles
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[-1] for rest in values("ARG")}
    assert "CUDA" not in args["CMAKE_ARGS"]  # CPU unless --build-arg CMAKE_ARGS=-DGGML_CUDA=on
    assert env()["CMAKE_ARGS"] == "${CMAKE_ARGS}"
    assert values("FROM") == ["${BASE}"] and "BASE" in args


def test_dockerfile_keeps_models_on_a_volume_and_runs_as_a_user() -> None:
    (volume,) = values("VOLUME")
    (data,) = json.loads(volume)
    assert env()["LOCAL_LLM_HOME"].startswith(data + "/")
    assert env()["HF_HOME"].startswith(data + "/")
    users = values("USER")
    assert users and users[-1] not in ("root", "0")
    # the volume's folders belong to that user, or the store cannot be written
    assert any(f"chown -R {users[-1]}" in rest for rest in values("RUN"))


def test_dockerfile_copies_what_pip_install_needs() -> None:
    copied = " ".join(values("COPY"))
    for path in ("pyproject.toml", "README.md", "runtime", "local_llm_integrations"):
        assert path in copied


def test_compose_serves_the_image_with_a_model_volume() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    ((_name, service),) = compose["services"].items()
    assert service["build"] == "."
    assert "11434:11434" in service["ports"]
    volume, _, target = service["volumes"][0].partition(":")
    assert target == "/data" and volume in compose["volumes"]
    assert service["environment"]["LOCAL_LLM_HOST"] == "0.0.0.0:11434"
    for key in service["environment"]:
        assert key.startswith("LOCAL_LLM_"), key
