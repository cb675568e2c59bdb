"""The local model store: one JSON manifest of names, written atomically.

The manifest (``$LOCAL_LLM_HOME/models.json``) maps each normalized name to a
:class:`ModelRecord`: where its files come from (a Hub repository at a pinned
commit, or a file imported into ``$LOCAL_LLM_HOME/blobs``), their sha256 and
sizes, and the defaults bound by ``create`` (system prompt, options).

Names are keys inside the manifest, never paths: imported and ModelScope files
are stored as ``blobs/sha256-<hex>`` (the shards of a split ModelScope model also
hard-linked under their own names, which llama.cpp needs) and Hub files stay in
the standard Hugging Face cache.
Every read-modify-write runs under an inter-process file lock, and the new
manifest replaces the old one with an atomic rename, so concurrent CLI
processes cannot corrupt it and a crash mid-write leaves the previous state.
Reading never creates anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel, Field, ValidationError

from local_llm_runtime.errors import StoreError
from local_llm_runtime.settings import RuntimeSettings

__all__ = ["FileRecord", "Manifest", "ModelRecord", "Store", "hub_file_key", "hub_snapshot_path"]

MANIFEST_VERSION = 1
_SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*-\d{5}-of-\d{5}\.gguf")
_LOCK_TIMEOUT_S = 120.0


class FileRecord(BaseModel):
    """One file of a model (several for a split GGUF, in shard order)."""

    sha256: str
    """Lower-case hex sha256 of the file's content, verified when it was stored."""
    size: int
    """Size in bytes."""
    repo_path: str | None = None
    """Path inside the Hub (or ModelScope) repository; ``None`` for an imported file."""
    verified: bool = True
    """Whether ``sha256`` was checked against a hash the source sent. ``False`` only for a
    Hub file whose listing and download carried no hash: then ``sha256`` is merely the
    hash of the bytes that arrived (recorded, shown as unverified, never called verified)."""


class ModelRecord(BaseModel):
    """What the store knows about one name."""

    name: str
    """The name as displayed (``qwen2.5:7b``, ``hf.co/Org/Repo-GGUF:Q4_K_M``)."""
    source: Literal["hub", "file", "modelscope"]
    """Where the files come from: the Hugging Face Hub (files in the HF cache), an imported
    file or ModelScope (both in ``$LOCAL_LLM_HOME/blobs``, named by sha256)."""
    files: list[FileRecord]
    """The GGUF file(s); the first one is what llama.cpp opens."""
    repo_id: str | None = None
    """Hub (or ModelScope) repository the files were pulled from."""
    revision: str | None = None
    """Commit the files were pulled at (pinned: resolution needs no network); for ModelScope
    the revision (branch or tag) listed, the files themselves pinned by their sha256."""
    quant: str | None = None
    """Quantization requested when pulling."""
    origin: str | None = None
    """The reference this record was pulled, copied or created from."""
    embedding: bool = False
    """Whether the model is an embedding model (from the catalog)."""
    system: str | None = None
    """Default system prompt bound by ``create --system``."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Default options bound by ``create --param``."""
    template: str | None = None
    """Jinja chat template bound by a Modelfile's ``TEMPLATE`` (replaces the GGUF's own)."""
    messages: list[dict[str, str]] = Field(default_factory=list)
    """Fixed few-shot history bound by a Modelfile's ``MESSAGE`` lines (``role``/``content``),
    prepended to every chat."""
    adapters: list[FileRecord] = Field(default_factory=list)
    """LoRA adapter GGUF files bound by a Modelfile's ``ADAPTER`` (imported blobs), applied
    at load in this order."""
    license: str | None = None
    """License text bound by a Modelfile's ``LICENSE``."""
    modified_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    """When the record was last written."""

    @property
    def digest(self) -> str:
        """The sha256 of the first file: the model's identity."""
        return self.files[0].sha256

    @property
    def size(self) -> int:
        """Total size of the files in bytes."""
        return sum(f.size for f in self.files)

    @property
    def verified(self) -> bool:
        """Whether every file was checked against a hash its source sent."""
        return all(f.verified for f in self.files)


class Manifest(BaseModel):
    """The whole store: a versioned mapping of lower-cased names to records."""

    version: int = MANIFEST_VERSION
    models: dict[str, ModelRecord] = Field(default_factory=dict)
    downloaded: list[str] = Field(default_factory=list)
    """Hub files this store transferred into the shared HF cache (:func:`hub_file_key`),
    as opposed to files that were already there (another tool's, or another revision's
    blob): only these are ever deleted from the shared cache."""


def hub_file_key(repo_id: str, revision: str, repo_path: str) -> str:
    """The identity of one Hub file at one commit (repo ids are case-insensitive)."""
    return f"{repo_id.lower()}@{revision}/{repo_path}"


def store_key(name: str) -> str:
    """The manifest key for a display name (names compare case-insensitively)."""
    return name.lower()


def hub_snapshot_path(cache: Path, repo_id: str, revision: str, repo_path: str) -> Path:
    """Where ``huggingface_hub`` puts a file of a repository at a commit."""
    folder = "models--" + repo_id.replace("/", "--")
    return cache / folder / "snapshots" / revision / Path(*repo_path.split("/"))


class Store:
    """Reads and writes the manifest and imported blobs under ``LOCAL_LLM_HOME``."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.home = settings.home
        self.manifest_path = self.home / "models.json"
        self.blobs_dir = self.home / "blobs"
        self._lock_path = self.home / ".models.lock"

    def read(self) -> Manifest:
        """Read the manifest (an empty one if the store does not exist yet)."""
        try:
            text = self.manifest_path.read_text("utf-8")
        except FileNotFoundError:
            return Manifest()
        except OSError as exc:
            raise StoreError(f"Cannot read {self.manifest_path}: {exc.strerror}.") from None
        try:
            return Manifest.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            raise StoreError(
                f"{self.manifest_path} is damaged; move it aside and pull your models again."
            ) from None

    def get(self, name: str) -> ModelRecord | None:
        """Look a name up (case-insensitively)."""
        return self.read().models.get(store_key(name))

    @contextlib.contextmanager
    def transaction(
        self, after_commit: list[Callable[[], None]] | None = None
    ) -> Iterator[Manifest]:
        """Lock the store, yield the manifest for changes, then write it atomically.

        If the body raises, nothing is written.

        Args:
            after_commit: Callbacks the body may append to; they run once the new
                manifest is written, still under the lock (so no other process sees a
                half-applied change), and never if the body or the write failed.
        """
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self._lock_path), timeout=_LOCK_TIMEOUT_S)
            lock.acquire()
        except Timeout:
            raise StoreError(
                f"The model store {self.home} is locked by another process; try again."
            ) from None
        except OSError as exc:
            raise StoreError(f"Cannot write the model store {self.home}: {exc.strerror}.") from None
        try:
            manifest = self.read()
            yield manifest
            try:
                self._write(manifest)
            except OSError as exc:
                raise StoreError(
                    f"Cannot write {self.manifest_path}: {exc.strerror or exc}; "
                    "the previous state is kept."
                ) from None
            for callback in after_commit or ():
                callback()
        finally:
            lock.release()

    def _write(self, manifest: Manifest) -> None:
        data = manifest.model_dump_json(indent=2).encode("utf-8")
        self._atomic_write(self.manifest_path, data)

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def blob_path(self, sha256: str) -> Path:
        """Where an imported file with this hash lives."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise StoreError(f"Invalid sha256 {sha256!r} in the model store.")
        return self.blobs_dir / f"sha256-{sha256}"

    def split_dir(self, record: ModelRecord) -> Path | None:
        """Where the shards of a split ModelScope model are linked under their own names.

        llama.cpp finds shard 2.. of a split GGUF by the first one's file name
        (``x-00001-of-00003.gguf``), so the content-named blobs are hard-linked as
        ``blobs/split-<sha256 of shard 1>/<shard name>``. ``None`` for other records.
        """
        if record.source != "modelscope" or len(record.files) < 2:
            return None
        return self.blob_path(record.files[0].sha256).with_name(f"split-{record.files[0].sha256}")

    def file_path(self, record: ModelRecord, file: FileRecord) -> Path:
        """The on-disk path of one file of a record."""
        if record.source == "hub":
            if record.repo_id is None or record.revision is None or file.repo_path is None:
                raise StoreError(f"The record of '{record.name}' is incomplete; pull it again.")
            return hub_snapshot_path(
                self.settings.hf_cache, record.repo_id, record.revision, file.repo_path
            )
        split = self.split_dir(record)
        if split is not None:
            name = (file.repo_path or "").rsplit("/", 1)[-1]
            if not _SHARD_NAME.fullmatch(name):
                raise StoreError(f"The record of '{record.name}' is damaged; pull it again.")
            return split / name
        return self.blob_path(file.sha256)

    def link_split(self, record: ModelRecord) -> None:
        """Hard-link the blobs of a split ModelScope model under their shard names."""
        split = self.split_dir(record)
        if split is None:
            return
        try:
            split.mkdir(parents=True, exist_ok=True)
            for file in record.files:
                blob, link = self.blob_path(file.sha256), self.file_path(record, file)
                with contextlib.suppress(FileNotFoundError):
                    if os.path.samefile(blob, link):
                        continue
                    link.unlink()
                try:
                    os.link(blob, link)
                except OSError:  # no hard links on this file system: a copy
                    shutil.copyfile(blob, link)
        except OSError as exc:
            raise StoreError(f"Cannot write {split}: {exc.strerror}.") from None

    def paths(self, record: ModelRecord) -> list[Path]:
        """The on-disk paths of every file of a record, in shard order."""
        return [self.file_path(record, f) for f in record.files]

    def adapter_paths(self, record: ModelRecord) -> list[Path]:
        """The on-disk paths of a record's LoRA adapters (imported blobs), in order."""
        return [self.blob_path(f.sha256) for f in record.adapters]

    def present(self, record: ModelRecord) -> bool:
        """Whether every file of a record, its LoRA adapters too, is on disk with its size."""
        files = [*zip(self.paths(record), record.files, strict=True)]
        files += zip(self.adapter_paths(record), record.adapters, strict=True)
        for path, file in files:
            try:
                if path.stat().st_size != file.size:
                    return False
            except OSError:
                return False
        return True


def _hash_copy(src: Path, dst_dir: Path) -> tuple[str, int, Path]:
    """Copy ``src`` into a temp file in ``dst_dir`` while hashing it."""
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(prefix=".import.", suffix=".tmp", dir=dst_dir)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as handle:
            while chunk := handle.read(8 * 1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return digest.hexdigest(), size, Path(tmp)


def import_blob(store: Store, src: Path) -> FileRecord:
    """Copy a local file into the store's blobs, named by its sha256.

    The copy is hashed as it is written and renamed into place atomically; an
    existing blob with the same hash is reused.

    Args:
        store: The store to import into.
        src: The file to import.

    Returns:
        The record of the imported file.
    """
    try:
        store.blobs_dir.mkdir(parents=True, exist_ok=True)
        sha, size, tmp = _hash_copy(src, store.blobs_dir)
        target = store.blob_path(sha)
        if target.exists() and target.stat().st_size == size:
            tmp.unlink()
        else:
            os.replace(tmp, target)
    except OSError as exc:
        raise StoreError(f"Cannot import {src} into {store.blobs_dir}: {exc.strerror}.") from None
    return FileRecord(sha256=sha, size=size)


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(timezone.utc)
