"""Local names -> served names (table-driven)."""

from __future__ import annotations

import pytest

from local_llm_runtime.errors import ModelNotFoundError
from local_llm_runtime.remote.models import ServedNames
from local_llm_runtime.remote.openai_dialect import ServedModel


@pytest.mark.parametrize(
    ("served", "local", "expected"),
    [
        (["Qwen/Qwen2.5-7B-Instruct"], "qwen2.5:7b", "Qwen/Qwen2.5-7B-Instruct"),
        (["/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"], "qwen2.5-coder:0.5b",
         "/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        (["qwen2.5:7b", "qwen2.5:14b"], "qwen2.5:7b", "qwen2.5:7b"),
        (["Llama3:latest"], "llama3", "Llama3:latest"),
        (["a", "Qwen/Qwen2.5-7B-Instruct"], "hf.co/Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M",
         "Qwen/Qwen2.5-7B-Instruct"),
    ],
)  # fmt: skip
def test_resolution(served: list[str], local: str, expected: str) -> None:
    names = ServedNames()
    names.set_served([ServedModel(s) for s in served])
    assert names.resolve(local) == expected


def test_map_wins_and_unknown_lists_models() -> None:
    names = ServedNames({"qwen2.5:7b": "my-qwen"})
    assert names.resolve("qwen2.5:7b") == "my-qwen"  # no list needed
    names.set_served([ServedModel("x"), ServedModel("y")])
    with pytest.raises(ModelNotFoundError, match="it has: x, y"):
        names.resolve("llama3:8b")


def test_ambiguous_match_is_an_error() -> None:
    names = ServedNames()
    names.set_served([ServedModel("Qwen/Qwen2.5-7B-Instruct"), ServedModel("qwen2.5-7b-instruct")])
    with pytest.raises(ModelNotFoundError, match="matches several"):
        names.resolve("qwen2.5:7b")
