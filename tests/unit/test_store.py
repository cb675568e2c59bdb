"""The local store through the CLI and the Python API: list, show, cp, create, rm."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from local_llm_runtime import (
    InvalidModelFileError,
    InvalidOptionError,
    ModelExistsError,
    ModelLibrary,
    ModelNotFoundError,
    StoreError,
)
from local_llm_runtime.cli.main import main
from local_llm_runtime.store.records import Store
from tests.support.fake_hub import FakeHub

REPO = "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"
Q4 = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pulled(fake_hub: FakeHub, tiny_gguf: Path) -> Path:
    fake_hub.add_repo(REPO, {Q4: tiny_gguf})
    assert main(["pull", "qwen2.5-coder:0.5b"]) == 0
    return tiny_gguf


def test_create_from_file_records_sha_and_shows_header(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str], isolated_env: dict[str, Path]
) -> None:
    code, out, _ = _run(
        capsys, "create", "me/helper:v1", "--from", str(tiny_gguf),
        "--system", "You are terse.", "--param", "temperature=0.2",
        "--param", "stop=<end>", "--param", "stop=###", "--param", "num_ctx=1024",
    )  # fmt: skip
    assert code == 0
    assert out.strip() == "created 'me/helper:v1'"
    record = ModelLibrary().store.get("me/helper:v1")
    assert record is not None
    assert record.digest == _sha(tiny_gguf)
    assert record.parameters == {"temperature": 0.2, "stop": ["<end>", "###"], "num_ctx": 1024}
    assert record.system == "You are terse."
    blob = isolated_env["home"] / "blobs" / f"sha256-{record.digest}"
    assert blob.read_bytes() == tiny_gguf.read_bytes()

    code, out, _ = _run(capsys, "show", "me/helper:v1", "--json")
    info = json.loads(out)
    assert info["details"]["architecture"] == "llama"
    assert info["details"]["context_length"] == 2048
    assert info["details"]["embedding_length"] == 64
    assert info["details"]["quantization"] == "F32"
    assert info["details"]["chat_template"] is True
    assert info["details"]["license"] == "apache-2.0"
    assert info["details"]["parameters"] > 100_000
    assert info["files"][0]["sha256"] == record.digest
    assert info["system"] == "You are terse."

    code, out, _ = _run(capsys, "show", "me/helper:v1")
    assert "architecture" in out and "llama" in out and "temperature" in out and "terse" in out


def test_list_columns(pulled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert row.startswith("qwen2.5-coder:0.5b")
    assert _sha(pulled)[:12] in row
    assert "KB" in row and "ago" in row.lower()


def test_cp_shares_files_and_rm_keeps_them_while_used(
    pulled: Path, capsys: pytest.CaptureFixture[str], isolated_env: dict[str, Path]
) -> None:
    lib = ModelLibrary()
    path = lib.resolve("qwen2.5-coder:0.5b").path
    blob = path.resolve()
    assert _run(capsys, "cp", "qwen2.5-coder:0.5b", "mine")[0] == 0
    assert lib.resolve("mine:latest").path == path
    assert _run(capsys, "create", "terse", "--from", "mine", "--system", "Be terse.")[0] == 0
    assert lib.show("terse")["system"] == "Be terse."

    code, out, _ = _run(capsys, "rm", "qwen2.5-coder:0.5b")
    assert (code, out.strip()) == (0, "deleted 'qwen2.5-coder:0.5b'")
    assert blob.exists() and path.exists()  # still used by 'mine' and 'terse'
    assert _run(capsys, "rm", "mine")[0] == 0
    assert blob.exists()
    assert _run(capsys, "rm", "terse")[0] == 0
    assert not blob.exists() and not path.exists()
    assert lib.list() == []


def test_rm_of_imported_blob_waits_for_last_name(
    tiny_gguf: Path, capsys: pytest.CaptureFixture[str], isolated_env: dict[str, Path]
) -> None:
    lib = ModelLibrary()
    lib.create("a", str(tiny_gguf))
    lib.create("b", str(tiny_gguf))  # same content: one blob
    blobs = list((isolated_env["home"] / "blobs").iterdir())
    assert len(blobs) == 1
    lib.remove("a")
    assert blobs[0].exists()
    lib.remove("b:latest")
    assert not blobs[0].exists()


def test_create_replaces_and_collects_unused_blob(
    tiny_gguf_factory: Callable[..., Path], isolated_env: dict[str, Path]
) -> None:
    lib = ModelLibrary()
    first, second = tiny_gguf_factory(seed=1), tiny_gguf_factory(seed=2)
    lib.create("m", str(first))
    lib.create("m", str(second))
    names = {p.name for p in (isolated_env["home"] / "blobs").iterdir()}
    assert names == {f"sha256-{_sha(second)}"}


def test_cp_and_create_errors(pulled: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    lib = ModelLibrary()
    lib.copy("qwen2.5-coder:0.5b", "mine")
    with pytest.raises(ModelExistsError):
        lib.copy("qwen2.5-coder:0.5b", "mine")
    with pytest.raises(ModelNotFoundError, match="pull"):
        lib.copy("qwen2.5:7b", "other")
    with pytest.raises(ModelNotFoundError):
        lib.copy("nothing-here", "other")
    with pytest.raises(InvalidOptionError, match="Unknown option"):
        lib.create("x", str(tiny_gguf), parameters={"temprature": 1})
    assert main(["create", "x", "--from", str(tiny_gguf), "--param", "num_ctx=big"]) == 1
    not_gguf = tmp_path / "fake.gguf"
    not_gguf.write_bytes(b"not a model" * 10)
    with pytest.raises(InvalidModelFileError):
        lib.create("x", str(not_gguf))
    with pytest.raises(ModelNotFoundError, match="No such model file"):
        lib.create("x", str(tmp_path / "absent.gguf"))
    assert [r.name for r in lib.list()] == ["mine:latest", "qwen2.5-coder:0.5b"]


def test_cli_user_errors_are_one_line(
    pulled: Path, tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["cp", "qwen2.5-coder:0.5b", "qwen2.5-coder:0.5b"],
        ["show", "qwen2.5:7b"],
        ["rm", "qwen2.5:7b"],
        ["create", "x", "--from", str(tiny_gguf), "--param", "seed"],
        ["create", "x", "--from", str(tiny_gguf), "--param", "top_p=3"],
    ):
        code, _out, err = _run(capsys, *argv)
        assert code == 1, argv
        assert len(err.strip().splitlines()) == 1 and err.startswith("Error: "), err


def test_show_local_path_without_store(tiny_gguf: Path, isolated_env: dict[str, Path]) -> None:
    info = ModelLibrary().show(str(tiny_gguf))
    assert info["details"]["architecture"] == "llama"
    assert not isolated_env["home"].exists()


def test_crash_mid_write_keeps_previous_state(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: dict[str, Path]
) -> None:
    lib = ModelLibrary()
    lib.create("kept", str(tiny_gguf))
    before = (isolated_env["home"] / "models.json").read_bytes()

    def boom(*_: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", boom)
        with pytest.raises(StoreError, match="No space"):
            lib.copy("kept", "lost")
    assert (isolated_env["home"] / "models.json").read_bytes() == before
    assert [p.name for p in isolated_env["home"].iterdir() if p.name.endswith(".tmp")] == []
    assert [r.name for r in ModelLibrary().list()] == ["kept:latest"]


def test_damaged_manifest_is_a_typed_error(isolated_env: dict[str, Path]) -> None:
    isolated_env["home"].mkdir(parents=True)
    (isolated_env["home"] / "models.json").write_text("{not json")
    with pytest.raises(StoreError, match="damaged"):
        ModelLibrary().list()
    assert main(["list"]) == 1


def test_concurrent_cli_processes_do_not_lose_writes(tiny_gguf: Path) -> None:
    ModelLibrary().create("base", str(tiny_gguf))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "local_llm_runtime", "cp", "base", f"copy-{i}"],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    names = {r.name for r in ModelLibrary().list()}
    assert names == {"base:latest"} | {f"copy-{i}:latest" for i in range(8)}
    manifest = Store(ModelLibrary().settings).read()
    assert len(manifest.models) == 9
