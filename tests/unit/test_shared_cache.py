"""The shared HF cache loses nothing: rm/create/pull --update delete only what this store
downloaded and nothing else references, after the manifest commit; repo ids are
case-insensitive; a file is verified against a Hub hash or recorded unverified."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from local_llm_runtime import ChecksumMismatchError, ModelLibrary, StoreError
from local_llm_runtime.cli.main import main
from tests.support.fake_hub import FakeHub

REPO = "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"
Q4 = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
Q8 = "qwen2.5-coder-0.5b-instruct-q8_0.gguf"
NAME = "qwen2.5-coder:0.5b"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _blobs(cache: Path) -> set[str]:
    return {p.name for p in cache.rglob("*") if p.is_file() and "blobs" in p.parts}


def _other_tool(fake_hub: FakeHub, cache: Path, path: str, revision: str | None = None) -> Path:
    """What another program does: hf_hub_download into the same cache."""
    return Path(
        hf_hub_download(REPO, path, revision=revision, cache_dir=cache, endpoint=fake_hub.url)
    )


@pytest.fixture
def cache(isolated_env: dict[str, Path]) -> Path:
    return isolated_env["hf_cache"]


@pytest.fixture
def models(tiny_gguf_factory: Callable[..., Path]) -> dict[str, Path]:
    return {"a": tiny_gguf_factory(seed=1), "b": tiny_gguf_factory(seed=2)}


def test_rm_keeps_a_file_another_tool_downloaded_first(
    fake_hub: FakeHub, models: dict[str, Path], cache: Path
) -> None:
    fake_hub.add_repo(REPO, {Q4: models["a"], Q8: models["b"]})
    theirs = _other_tool(fake_hub, cache, Q4)
    before = _blobs(cache)
    lib = ModelLibrary()
    lib.pull(NAME)
    assert fake_hub.file_gets(Q4) == 1  # found in the cache: no second transfer
    lib.remove(NAME)
    assert _blobs(cache) == before == {_sha(models["a"])}
    assert theirs.read_bytes() == models["a"].read_bytes()


def test_rm_keeps_a_blob_another_revision_shares_and_other_files_of_the_snapshot(
    fake_hub: FakeHub, models: dict[str, Path], cache: Path
) -> None:
    old = fake_hub.add_repo(REPO, {Q4: models["a"], "README.md": b"v1\n"})
    lib = ModelLibrary()
    lib.pull(NAME)  # ours: Q4 at `old`
    readme = _other_tool(fake_hub, cache, "README.md", old)  # another tool, same snapshot
    new = fake_hub.add_repo(REPO, {Q4: models["a"], "README.md": b"v2\n"})
    shared = _other_tool(fake_hub, cache, Q4, new)  # another revision, same blob
    readme2 = _other_tool(fake_hub, cache, "README.md", new)
    assert new != old
    before = _blobs(cache)
    assert before == {_sha(models["a"]), _sha(readme), _sha(readme2)}
    lib.remove(NAME)
    assert _blobs(cache) == before  # the Q4 blob is shared with `new`: kept
    assert shared.read_bytes() == models["a"].read_bytes()
    assert readme.read_text() == "v1\n"
    snapshot_q4 = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / old / Q4
    assert not snapshot_q4.exists() and not snapshot_q4.is_symlink()  # our entry is gone


def test_rm_of_our_only_download_removes_it_all(
    fake_hub: FakeHub, models: dict[str, Path], cache: Path
) -> None:
    fake_hub.add_repo(REPO, {Q4: models["a"]})
    lib = ModelLibrary()
    lib.pull(NAME)
    assert _blobs(cache) == {_sha(models["a"])}
    lib.remove(NAME)
    assert _blobs(cache) == set()
    assert not (cache / f"models--{REPO.replace('/', '--')}").exists()


def test_failed_manifest_commit_deletes_nothing(
    fake_hub: FakeHub,
    models: dict[str, Path],
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_hub.add_repo(REPO, {Q4: models["a"]})
    lib = ModelLibrary()
    path = lib.resolve(NAME).path

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", full_disk)
        with pytest.raises(StoreError, match="No space"):
            lib.remove(NAME)
        with pytest.raises(StoreError, match="No space"):
            lib.create(NAME.replace(":0.5b", ":other"), NAME)  # new name: nothing to drop
        fake_hub.add_repo(REPO, {Q4: models["b"]})
        with pytest.raises(StoreError, match="No space"):
            lib.pull(NAME, update=True)
    assert path.read_bytes() == models["a"].read_bytes()  # still there
    assert lib.resolve(NAME, pull=False).path == path
    assert _sha(models["a"]) in _blobs(cache)


def test_rm_after_update_removes_only_ours(
    fake_hub: FakeHub,
    models: dict[str, Path],
    cache: Path,
    tiny_gguf_factory: Callable[..., Path],
) -> None:
    old = fake_hub.add_repo(REPO, {Q4: models["a"], Q8: models["b"]})
    lib = ModelLibrary()
    lib.pull(NAME)  # ours: Q4 at `old`
    theirs = _other_tool(fake_hub, cache, Q8, old)  # another tool: Q8 at `old`
    newer = tiny_gguf_factory(seed=3)
    fake_hub.add_repo(REPO, {Q4: newer, Q8: models["b"]})
    counts = [len(_blobs(cache))]
    lib.pull(NAME, update=True)
    counts.append(len(_blobs(cache)))
    assert _blobs(cache) == {_sha(newer), _sha(models["b"])}  # old Q4 (ours, unused) went
    lib.remove(NAME)
    counts.append(len(_blobs(cache)))
    assert _blobs(cache) == {_sha(models["b"])}
    assert theirs.read_bytes() == models["b"].read_bytes()
    assert counts == [2, 2, 1]


def test_repo_id_case_is_one_record_and_one_download(
    fake_hub: FakeHub, models: dict[str, Path], cache: Path
) -> None:
    fake_hub.add_repo(REPO, {Q4: models["a"]})
    lib = ModelLibrary()
    first = lib.pull(f"hf.co/{REPO.lower()}:q4_k_m")
    second = lib.pull(f"hf.co/{REPO}:Q4_K_M")
    third = lib.pull(f"hf.co/{REPO.upper()}")
    assert [r.name for r in lib.list()] == [f"hf.co/{REPO}:Q4_K_M"]  # the Hub's spelling
    assert first.repo_id == second.repo_id == third.repo_id == REPO
    assert fake_hub.file_gets(Q4) == 1
    assert [p.name for p in cache.iterdir() if p.name.startswith("models--")] == [
        f"models--{REPO.replace('/', '--')}"
    ]
    lib.remove(f"hf.co/{REPO.lower()}")
    assert lib.list() == [] and _blobs(cache) == set()


def test_listing_without_lfs_uses_the_etag_and_catches_corrupt_bytes(
    fake_hub: FakeHub, models: dict[str, Path], cache: Path
) -> None:
    fake_hub.add_repo(REPO, {Q4: models["a"]})
    fake_hub.faults.omit_lfs.add(Q4)
    fake_hub.faults.corrupt.add(Q4)
    with pytest.raises(ChecksumMismatchError, match="corrupt"):
        ModelLibrary().pull(NAME)
    assert ModelLibrary().list() == []
    assert _blobs(cache) == set()
    fake_hub.faults.corrupt.clear()
    record = ModelLibrary().pull(NAME)
    assert record.verified and record.digest == _sha(models["a"])


def test_no_hash_anywhere_is_recorded_unverified_and_shown(
    fake_hub: FakeHub,
    models: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_hub.add_repo(REPO, {Q4: models["a"]})
    fake_hub.faults.omit_lfs.add(Q4)
    fake_hub.faults.opaque_etag.add(Q4)
    assert main(["pull", NAME]) == 0
    out = capsys.readouterr().out
    assert "UNVERIFIED" in out and "verifying sha256" not in out
    record = ModelLibrary().store.get(NAME)
    assert record is not None and record.verified is False and not record.files[0].verified
    info = ModelLibrary().show(NAME)
    assert info["verified"] is False and info["files"][0]["verified"] is False
    assert main(["show", NAME]) == 0
    assert "NO - the source sent no hash" in capsys.readouterr().out
    assert main(["show", NAME, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is False
