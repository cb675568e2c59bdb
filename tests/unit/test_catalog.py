"""The catalog (data) and the choice of files inside a repository listing."""

from __future__ import annotations

import pytest

from local_llm_runtime import QuantizationNotFoundError, parse_ref
from local_llm_runtime.store.catalog import families, lookup
from local_llm_runtime.store.hub import available_quants, select_files
from local_llm_runtime.store.names import OllamaName

REQUIRED = [
    "qwen2.5", "qwen2.5-coder", "llama3.2", "llama3.1", "deepseek-r1", "deepseek-coder",
    "glm4", "gemma3", "phi4", "mistral", "nomic-embed-text",
]  # fmt: skip


def _lookup(text: str):  # type: ignore[no-untyped-def]
    ref = parse_ref(text)
    assert isinstance(ref, OllamaName)
    return lookup(ref)


def test_catalog_has_the_required_families() -> None:
    assert set(REQUIRED) <= set(families())
    qwen = families()["qwen2.5"]
    assert {"0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b"} <= set(qwen.tags)
    assert {"0.5b", "32b"} <= set(families()["qwen2.5-coder"].tags)


def test_catalog_entries_point_at_gguf_repos_with_default_quant() -> None:
    for family in families().values():
        assert family.default_tag in family.tags
        assert family.default_quant
        for repo in family.tags.values():
            org, _, name = repo.partition("/")
            assert org and name.lower().endswith("gguf"), repo


@pytest.mark.parametrize(
    ("text", "repo", "quant"),
    [
        ("qwen2.5-coder:0.5b", "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "Q4_K_M"),
        ("qwen2.5", "Qwen/Qwen2.5-7B-Instruct-GGUF", "Q4_K_M"),
        ("qwen2.5:latest", "Qwen/Qwen2.5-7B-Instruct-GGUF", "Q4_K_M"),
        ("qwen2.5:7b-instruct-q8_0", "Qwen/Qwen2.5-7B-Instruct-GGUF", "Q8_0"),
        ("qwen2.5:7b-q5_K_M", "Qwen/Qwen2.5-7B-Instruct-GGUF", "Q5_K_M"),
        ("qwen2.5:7b-instruct", "Qwen/Qwen2.5-7B-Instruct-GGUF", "Q4_K_M"),
        ("llama3.2:1b", "bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"),
        ("deepseek-coder:6.7b", "TheBloke/deepseek-coder-6.7B-instruct-GGUF", "Q4_K_M"),
        ("nomic-embed-text", "nomic-ai/nomic-embed-text-v1.5-GGUF", "F16"),
    ],
)
def test_lookup(text: str, repo: str, quant: str) -> None:
    entry = _lookup(text)
    assert entry is not None
    assert (entry.repo_id, entry.quant) == (repo, quant)


def test_embedding_models_are_marked() -> None:
    assert _lookup("nomic-embed-text").embedding
    assert not _lookup("qwen2.5").embedding


@pytest.mark.parametrize("text", ["qwen2.5:8b", "qwen2.5:7b-base", "qwen2.5:7b-chat", "me/qwen2.5"])
def test_unknown_tags_are_not_in_catalog(text: str) -> None:
    assert _lookup(text) is None


LISTING = [
    "README.md",
    "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
    "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf",
    "qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf",
    "qwen2.5-7b-instruct-q8_0-00002-of-00003.gguf",
    "qwen2.5-7b-instruct-q4_k.gguf",
    "qwen2.5-7b-instruct-q5_k_m.gguf",
    "Model-Q5_K_M.gguf",
    "mmproj-model-f16.gguf",
    "sub/Model-IQ4_XS.gguf",
]


def test_select_single_file_case_insensitively() -> None:
    assert select_files(LISTING, "Q5_K_M") == ["Model-Q5_K_M.gguf"]
    assert select_files(LISTING, "iq4_xs") == ["sub/Model-IQ4_XS.gguf"]


def test_select_distinguishes_q4_k_from_q4_k_m() -> None:
    assert select_files(LISTING, "Q4_K") == ["qwen2.5-7b-instruct-q4_k.gguf"]


def test_select_complete_split_in_order() -> None:
    assert select_files(LISTING, "Q4_K_M") == [
        "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
        "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf",
    ]


def test_single_file_preferred_over_split() -> None:
    listing = ["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf", "m-Q4_K_M.gguf"]
    assert select_files(listing, "Q4_K_M") == ["m-Q4_K_M.gguf"]


def test_incomplete_split_is_rejected_with_available_quants() -> None:
    with pytest.raises(QuantizationNotFoundError) as info:
        select_files(LISTING, "Q8_0")
    assert "Q5_K_M" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_mmproj_is_never_chosen() -> None:
    with pytest.raises(QuantizationNotFoundError):
        select_files(["mmproj-model-f16.gguf"], "F16")


def test_available_quants() -> None:
    assert {"Q4_K_M", "Q5_K_M", "IQ4_XS", "Q4_K"} <= set(available_quants(LISTING))
