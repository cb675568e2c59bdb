"""Reference parsing: every accepted form, and many malformed ones rejected safely."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_llm_runtime import (
    FileRef,
    HubRef,
    InvalidModelNameError,
    LocalLLMError,
    ModelNotFoundError,
    OllamaName,
    parse_ref,
)
from local_llm_runtime.cli.main import main
from local_llm_runtime.store.names import parse_name

VALID = [
    ("qwen2.5", OllamaName("qwen2.5", "latest")),
    ("qwen2.5:7b", OllamaName("qwen2.5", "7b")),
    ("QWEN2.5:7B", OllamaName("qwen2.5", "7b")),
    ("qwen2.5:7b-instruct-q8_0", OllamaName("qwen2.5", "7b-instruct-q8_0")),
    ("qwen2.5:latest", OllamaName("qwen2.5", "latest")),
    ("library/qwen2.5:3b", OllamaName("qwen2.5", "3b")),
    ("me/assistant:v2", OllamaName("assistant", "v2", "me")),
    ("  llama3.2  ", OllamaName("llama3.2", "latest")),
    ("hf.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF:Q4_K_M",
     HubRef("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "Q4_K_M")),
    ("hf.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF:q8_0",
     HubRef("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "Q8_0")),
    ("huggingface.co/bartowski/phi-4-GGUF", HubRef("bartowski/phi-4-GGUF", None)),
    ("https://huggingface.co/bartowski/phi-4-GGUF:latest", HubRef("bartowski/phi-4-GGUF", None)),
    ("./models/m.gguf", FileRef(Path("./models/m.gguf"))),
    ("/abs/m.GGUF", FileRef(Path("/abs/m.GGUF"))),
    ("m.gguf", FileRef(Path("m.gguf"))),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_references_parse(text: str, expected: object) -> None:
    assert parse_ref(text) == expected


def test_keys_are_canonical() -> None:
    assert parse_ref("Qwen2.5").key == "qwen2.5:latest"  # type: ignore[union-attr]
    assert parse_ref("me/x:1").key == "me/x:1"  # type: ignore[union-attr]
    assert parse_ref("hf.co/a/b:q4_k_m").key == "hf.co/a/b:Q4_K_M"  # type: ignore[union-attr]


MALFORMED = [
    "", " ", ":", "qwen2.5:", ":7b", "qwen2.5::7b", "qwen2.5:7b:q4",
    "../etc/passwd", "/etc/passwd", "./model.bin", "~/.ssh/id_rsa", "..",
    "qwen2.5:../../x", "qwen2.5:..", "qwen/../x", "a/b/c", "qwen/", "/qwen",
    "qwen 2.5", "qwen2.5\n:7b", "qwen\x00", "qwen\x1b[31m", "qwen2.5:7b\x7f", "qwen\u200b",
    "-qwen", "qwen-", ".qwen", "qwen..2", "qwen!", "qwen$(rm -rf ~)", "qwen;ls",
    "qwen`id`", "qwen|cat", "qwen2.5:7b?x=1", "qwen#x", "qwen%2e%2e", "ｑｗｅｎ", "名前",
    "qwen2.5:7b\tx", "a" * 400, "qwen:" + "t" * 200,
    "hf.co/", "hf.co/org", "hf.co/org/", "hf.co//repo", "hf.co/org/repo/extra",
    "hf.co/../repo", "hf.co/org/re..po", "hf.co/org/re--po", "hf.co/org/repo:",
    "hf.co/org/repo:../x", "hf.co/org/repo:Q4/K", "huggingface.co/org",
    "C:\\models\\x.bin", "\\\\server\\share",
]  # fmt: skip
UNKNOWN = ["qwen2.5:8b", "qwen2.5:7b-base", "nosuchmodel", "llama3.2:7b", "me/mymodel"]


def test_enough_bad_references_are_covered() -> None:
    assert len(MALFORMED) + len(UNKNOWN) >= 40


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_references_raise_typed_error(text: str) -> None:
    with pytest.raises(InvalidModelNameError) as info:
        parse_ref(text)
    assert isinstance(info.value, ValueError)  # also the matching builtin
    assert "\n" not in str(info.value).strip()


@pytest.mark.parametrize("text", ["qwen2.5:7b", "../x", "/x.gguf", "hf.co/a/b", "a:b:c"])
def test_created_names_must_be_plain_names(text: str) -> None:
    if text == "qwen2.5:7b":
        assert parse_name(text).key == "qwen2.5:7b"
        return
    with pytest.raises(InvalidModelNameError):
        parse_name(text)


def _assert_nothing_written(isolated_env: dict[str, Path]) -> None:
    for key in ("home", "hf_home"):
        path = isolated_env[key]
        assert not path.exists() or not any(path.rglob("*")), f"{path} was written to"


@pytest.mark.parametrize("text", MALFORMED + UNKNOWN)
@pytest.mark.parametrize("command", ["show", "pull", "rm"])
def test_cli_rejects_bad_reference_in_one_line(
    text: str,
    command: str,
    capsys: pytest.CaptureFixture[str],
    isolated_env: dict[str, Path],
) -> None:
    assert main([command, "--", text]) == 1
    out, err = capsys.readouterr()
    assert out == "" or out.startswith("pulling")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    _assert_nothing_written(isolated_env)


@pytest.mark.parametrize("text", MALFORMED[:12] + ["hf.co/a/b", "x.gguf"])
def test_cli_create_and_cp_reject_bad_destination(
    text: str,
    capsys: pytest.CaptureFixture[str],
    isolated_env: dict[str, Path],
    tiny_gguf: Path,
) -> None:
    assert main(["create", "--from", str(tiny_gguf), "--", text]) == 1
    assert main(["cp", "--", "qwen2.5:7b", text]) == 1
    err = capsys.readouterr().err
    assert all(line.startswith("Error: ") for line in err.strip().splitlines())
    _assert_nothing_written(isolated_env)


def test_unknown_name_suggests_close_match() -> None:
    from local_llm_runtime import ModelLibrary

    with pytest.raises(ModelNotFoundError) as info:
        ModelLibrary().resolve("qwen2.5:8b")
    assert "qwen2.5:7b" in info.value.suggestions
    assert "Did you mean 'qwen2.5:7b'" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_unknown_family_suggests_close_match() -> None:
    from local_llm_runtime import ModelLibrary

    with pytest.raises(ModelNotFoundError) as info:
        ModelLibrary().resolve("qwen2.5-codr:7b")
    assert "qwen2.5-coder:7b" in info.value.suggestions


def test_all_errors_share_the_base_class() -> None:
    with pytest.raises(LocalLLMError):
        parse_ref("../../etc/passwd")
