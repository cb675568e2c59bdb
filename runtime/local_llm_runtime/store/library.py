"""Model management: resolve, pull, list, show, remove, copy and create.

:class:`ModelLibrary` ties together names (:mod:`.names`), the catalog, the Hub
client and the store. Resolution order for a name is: the local store (names
the user pulled, copied or created), then the catalog, then -- for
``hf.co/...`` -- the Hub itself (``modelscope.cn/...``: ModelScope). A catalog name
with a ModelScope repository falls back to it when the Hub cannot be reached
(``LOCAL_LLM_SOURCE=modelscope``: ModelScope first, the Hub the fallback). A
name that was pulled resolves from the store with no network at all: its
repository, commit, files and hashes are recorded at pull time.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_llm_runtime.errors import (
    InvalidAdapterError,
    InvalidModelFileError,
    InvalidModelNameError,
    InvalidOptionError,
    ModelExistsError,
    ModelNotFoundError,
    SourceUnreachableError,
    StoreError,
)
from local_llm_runtime.options import validate_options
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store import catalog
from local_llm_runtime.store.gguf_meta import read_gguf_info, summarize
from local_llm_runtime.store.names import FileRef, HubRef, OllamaName, parse_name, parse_ref
from local_llm_runtime.store.records import (
    FileRecord,
    Manifest,
    ModelRecord,
    Store,
    hub_file_key,
    import_blob,
    now,
    store_key,
)

# The Hub client and the HF cache API import huggingface_hub (~0.15 s): imported
# on first pull or removal, so resolving, listing and showing stored models never do.
if TYPE_CHECKING:
    from local_llm_runtime.store.auto_quant import MemoryBudget, MemoryProbe
    from local_llm_runtime.store.hub import HubClient, HubResolution, ProgressCallback
    from local_llm_runtime.store.modelscope import ModelScopeClient

__all__ = ["LocalModel", "ModelLibrary"]

logger = logging.getLogger(__name__)

DEFAULT_QUANT = "Q4_K_M"
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class LocalModel:
    """A model whose files are on disk, ready for llama.cpp."""

    name: str
    """The name it was resolved from."""
    paths: tuple[Path, ...]
    """The GGUF file(s), shards in order; llama.cpp opens the first."""
    size: int
    """Total bytes."""
    sha256: str | None = None
    """Hash of the first file when known (always, for stored models)."""
    embedding: bool = False
    """Whether this is an embedding model."""
    system: str | None = None
    """Default system prompt bound by ``create``."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """Default options bound by ``create``."""
    template: str | None = None
    """Jinja chat template bound by ``create`` (replaces the GGUF's own)."""
    messages: tuple[Mapping[str, str], ...] = ()
    """Fixed few-shot history bound by ``create``, prepended to every chat."""
    adapters: tuple[Path, ...] = ()
    """LoRA adapter GGUF files bound by ``create``, applied at load in this order."""
    record: ModelRecord | None = None
    """The store record, or ``None`` for a plain file path."""

    @property
    def path(self) -> Path:
        """The file to hand to llama.cpp."""
        return self.paths[0]


def _shards_of(path: Path) -> list[Path]:
    match = _SHARD.match(path.name)
    if not match:
        return [path]
    total = int(match["total"])
    shards = [
        path.with_name(f"{match['prefix']}-{i:05d}-of-{match['total']}.gguf")
        for i in range(1, total + 1)
    ]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise InvalidModelFileError(
            f"Split model {path.name} is incomplete: missing {', '.join(missing)}."
        )
    return shards


def _checked_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """A fixed history for ``create``: ``role`` system/user/assistant, ``content`` text."""
    out: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise InvalidOptionError(
                f"messages[{index}] must be {{'role': 'system'|'user'|'assistant', "
                f"'content': text}}, got {message!r}."
            )
        out.append({"role": role, "content": content})
    return out


@functools.lru_cache(maxsize=256)
def _check_gguf(path: Path, size: int, mtime_ns: int) -> None:
    """Validate a GGUF header once per file version (size and mtime are part of the key).

    Parsing a header walks the whole vocabulary (150k strings for Qwen): doing it
    on every request cost ~100 ms of time-to-first-token for path references.
    """
    del size, mtime_ns
    read_gguf_info(path)


class ModelLibrary:
    """The model store seen through names.

    Args:
        settings: Where things live and how to reach the Hub; read from the
            environment when omitted.
        hub: The Hub client (injectable for tests).
        modelscope: The ModelScope client (injectable for tests).
        memory: Returns the memory a model will run in, for ``:auto`` quantization and
            the warning before a pull larger than memory (injectable for tests; default
            :func:`local_llm_runtime.store.auto_quant.probe_budget`).
    """

    def __init__(
        self,
        settings: RuntimeSettings | None = None,
        *,
        hub: HubClient | None = None,
        modelscope: ModelScopeClient | None = None,
        memory: MemoryProbe | None = None,
    ) -> None:
        self.settings = settings if settings is not None else RuntimeSettings.from_env()
        self.store = Store(self.settings)
        self._hub = hub
        self._modelscope = modelscope
        self._memory = memory

    @property
    def hub(self) -> HubClient:
        """The Hub client, created on first use (no I/O: it connects per request)."""
        if self._hub is None:
            from local_llm_runtime.store.hub import HubClient

            self._hub = HubClient(self.settings)
        return self._hub

    @property
    def modelscope(self) -> ModelScopeClient:
        """The ModelScope client, created on first use (no I/O: it connects per request)."""
        if self._modelscope is None:
            from local_llm_runtime.store.modelscope import ModelScopeClient

            self._modelscope = ModelScopeClient(self.settings)
        return self._modelscope

    # ---- names -------------------------------------------------------------

    def _stored_name(self, ref: OllamaName | HubRef) -> str:
        if isinstance(ref, HubRef):
            return ref.with_quant(ref.quant or self.settings.quant or DEFAULT_QUANT).key
        return ref.key

    def _names(self) -> list[str]:
        return [record.name for record in self.store.read().models.values()]

    def _parse_stored(self, text: str) -> OllamaName | HubRef:
        ref = parse_ref(text)
        if isinstance(ref, FileRef):
            raise InvalidModelNameError(
                f"{text!r} is a file path; give the name of a model in the store "
                "(see 'local-llm list')."
            )
        return ref

    def _record_or_raise(self, ref: OllamaName | HubRef, hint: str) -> ModelRecord:
        name = self._stored_name(ref)
        record = self.store.get(name)
        if record is not None:
            return record
        known = self._names()
        if isinstance(ref, HubRef) or catalog.lookup(ref) is not None:
            raise ModelNotFoundError(f"Model '{name}' is not pulled; {hint}")
        suggestions = catalog.suggest(name, known)
        raise ModelNotFoundError(
            f"Model '{name}' not found in the store; run 'local-llm list' to see local models.",
            suggestions,
        )

    # ---- resolve -----------------------------------------------------------

    def resolve(self, text: str, *, pull: bool = True) -> LocalModel:
        """Turn any reference into files on disk, pulling them if needed.

        Args:
            text: A model reference (see :mod:`local_llm_runtime.store.names`).
            pull: Download a catalog or Hub model that is not in the store yet
                (like ``ollama run``). With ``False`` such a model raises.

        Returns:
            The local model.
        """
        ref = parse_ref(text)
        if isinstance(ref, FileRef):
            return self._local_file(ref)
        record = self.store.get(self._stored_name(ref))
        if record is not None and self.store.present(record):
            return self._local(record)
        if not pull:
            self._record_or_raise(ref, f"run 'local-llm pull {self._stored_name(ref)}' first.")
            raise ModelNotFoundError(
                f"The files of '{self._stored_name(ref)}' are missing; "
                f"run 'local-llm pull {self._stored_name(ref)}'."
            )
        return self._local(self.pull(text))

    def _local(self, record: ModelRecord) -> LocalModel:
        return LocalModel(
            name=record.name,
            paths=tuple(self.store.paths(record)),
            size=record.size,
            sha256=record.digest,
            embedding=record.embedding,
            system=record.system,
            parameters=dict(record.parameters),
            template=record.template,
            messages=tuple(dict(m) for m in record.messages),
            adapters=tuple(self.store.adapter_paths(record)),
            record=record,
        )

    @staticmethod
    def _local_file(ref: FileRef) -> LocalModel:
        path = ref.path
        if not path.is_file():
            raise ModelNotFoundError(f"No such model file: {path}.")
        shards = _shards_of(path.resolve())
        stat = shards[0].stat()
        _check_gguf(shards[0], stat.st_size, stat.st_mtime_ns)  # non-GGUF never reaches llama.cpp
        return LocalModel(
            name=str(ref.path),
            paths=tuple(shards),
            size=sum(s.stat().st_size for s in shards),
        )

    # ---- pull --------------------------------------------------------------

    def _hub_source(self, ref: OllamaName | HubRef) -> tuple[str, str, bool]:
        """(repo, quant, embedding) for a reference that is not in the store."""
        if isinstance(ref, HubRef):
            return ref.repo_id, ref.quant or self.settings.quant or DEFAULT_QUANT, False
        entry = catalog.lookup(ref)
        if entry is None:
            raise catalog.not_found(ref, self._names())
        quant = entry.quant if entry.quant_in_tag else (self.settings.quant or entry.quant)
        return entry.repo_id, quant, entry.embedding

    def pull(
        self,
        text: str,
        *,
        update: bool = False,
        progress: ProgressCallback | None = None,
        num_ctx: int | None = None,
    ) -> ModelRecord:
        """Download a model into the HF cache, verify it and record its name.

        A name already in the store with its files present is returned as is,
        with no network request: names are pinned to the commit they were
        pulled at. ``update=True`` re-resolves the repository's latest commit.

        Args:
            text: A catalog name, an ``hf.co/`` or ``modelscope.cn/`` reference (or a stored
                name).
            update: Check the Hub for a newer commit even if the files are here.
            progress: Called (on this thread) with each step: ``pulling manifest``,
                ``pulling`` (bytes of each file), ``verifying sha256 digest``,
                ``writing manifest`` (see :class:`~local_llm_runtime.store.hub.PullProgress`);
                with ``:auto``, the choice and its reason; for a file larger than the
                memory, a ``warning: ...`` status.
            num_ctx: The context ``:auto`` plans the KV cache for; default 4096 (capped
                by the model's trained context).

        Returns:
            The store record (``quant``: the quantization pulled, the one chosen for
            ``:auto``).

        Raises:
            InsufficientMemoryError: ``:auto`` found no quantization that fits (nothing
                is downloaded).
        """
        from local_llm_runtime.store.hub import PullProgress

        ref = self._parse_stored(text)
        name = self._stored_name(ref)
        if progress is not None:
            progress(PullProgress("pulling manifest"))
        existing = self.store.get(name)
        if existing is not None and not update and self.store.present(existing):
            if progress is not None:
                for stored in existing.files:
                    progress(
                        PullProgress(
                            "pulling", stored.repo_path, stored.sha256, stored.size, stored.size
                        )
                    )
            return existing
        if existing is not None and self._missing_adapters(existing):
            raise StoreError(
                f"The LoRA adapter file(s) of '{name}' are missing from {self.store.blobs_dir}: "
                f"{', '.join(str(p) for p in self._missing_adapters(existing))}; create "
                f"'{name}' again with its ADAPTER file(s)."
            )
        if existing is not None and existing.source == "file":
            if self.store.present(existing):
                return existing
            raise StoreError(
                f"The imported file of '{name}' is missing from {self.store.blobs_dir}; "
                f"create '{name}' again from its GGUF file."
            )
        if existing is not None and existing.repo_id and existing.quant:
            repo_id, quant, embedding = existing.repo_id, existing.quant, existing.embedding
            revision = "main" if update else (existing.revision or "main")
        else:
            repo_id, quant, embedding = self._hub_source(ref)
            revision = "main"
        sources = self._sources(ref, existing, repo_id)
        ms_revision = existing.revision if existing and existing.source == "modelscope" else None
        unreachable: SourceUnreachableError | None = None
        if sources[0][0] == "modelscope":
            try:
                return self._pull_modelscope(
                    name, sources[0][1], quant, embedding, None if update else ms_revision, progress
                )
            except SourceUnreachableError as exc:
                if len(sources) == 1:
                    raise
                unreachable = self._fall_back(exc, sources[0], sources[1], progress)
                repo_id, revision = sources[1][1], "main"
        try:
            if quant.upper() == "AUTO":
                quant, revision = self._auto_quant(repo_id, revision, num_ctx, progress)
                resolution = self.hub.resolve(repo_id, quant, revision)
            else:
                resolution = self.hub.resolve(repo_id, quant, revision)
                self._warn_if_too_big(resolution, progress)
            fetched = self.hub.download(resolution, progress=progress)
        except SourceUnreachableError as exc:
            if unreachable is not None:
                raise SourceUnreachableError(f"{unreachable} {exc}") from None
            if len(sources) == 1:
                raise
            unreachable = self._fall_back(exc, sources[0], sources[1], progress)
            try:
                return self._pull_modelscope(name, sources[1][1], quant, embedding, None, progress)
            except SourceUnreachableError as again:
                raise SourceUnreachableError(f"{unreachable} {again}") from None
        files = [
            FileRecord(
                sha256=f.sha256,
                size=f.path.stat().st_size,
                repo_path=f.file.path,
                verified=f.verified,
            )
            for f in fetched
        ]
        if isinstance(ref, HubRef):  # the Hub's spelling of the id, whatever case was typed
            # (and the quant as named: ':AUTO' stays the name, the choice is record.quant)
            name = HubRef(resolution.repo_id, name.rsplit(":", 1)[1]).key
        if progress is not None:
            progress(PullProgress("writing manifest"))
        after_commit: list[Callable[[], None]] = []
        with self.store.transaction(after_commit) as manifest:
            previous = manifest.models.get(store_key(name))
            record = ModelRecord(
                name=previous.name if previous else name,
                source="hub",
                files=files,
                repo_id=resolution.repo_id,
                revision=resolution.revision,
                quant=quant,
                origin=previous.origin if previous else name,
                embedding=embedding,
                system=previous.system if previous else None,
                parameters=dict(previous.parameters) if previous else {},
                template=previous.template if previous else None,
                messages=[dict(m) for m in previous.messages] if previous else [],
                adapters=list(previous.adapters) if previous else [],
                license=previous.license if previous else None,
                modified_at=now(),
            )
            self._check_present(record, "pulled")
            manifest.models[store_key(name)] = record
            owned = set(manifest.downloaded)
            for f in fetched:
                key = hub_file_key(resolution.repo_id, resolution.revision, f.file.path)
                if f.downloaded and key not in owned:
                    manifest.downloaded.append(key)
            if previous is not None:
                after_commit.append(self._collect_garbage(manifest, [previous]))
        return record

    def _sources(
        self, ref: OllamaName | HubRef, existing: ModelRecord | None, repo_id: str
    ) -> list[tuple[str, str]]:
        """The (source, repository) pairs to pull from, in order: later ones are fallbacks.

        A ``hf.co/`` or ``modelscope.cn/`` reference has its one source. A catalog name
        has the Hub and, where the catalog names one, ModelScope: the source it was pulled
        from before comes first, else the one ``LOCAL_LLM_SOURCE`` prefers.
        """
        if isinstance(ref, HubRef):
            return [(ref.source, repo_id)]
        entry = catalog.lookup(ref)
        if existing is not None and existing.source == "modelscope":
            return [("modelscope", repo_id)] + ([("hf", entry.repo_id)] if entry else [])
        hub = ("hf", repo_id)
        if entry is None or entry.modelscope_repo_id is None:
            return [hub]
        mirror = ("modelscope", entry.modelscope_repo_id)
        if existing is None and self.settings.source == "modelscope":
            return [mirror, hub]
        return [hub, mirror]

    @staticmethod
    def _fall_back(
        exc: SourceUnreachableError,
        failed: tuple[str, str],
        to: tuple[str, str],
        progress: ProgressCallback | None,
    ) -> SourceUnreachableError:
        """Say that one source is unreachable and the pull goes to the other; return ``exc``."""
        from local_llm_runtime.store.hub import PullProgress

        prefix = {"hf": "hf.co/", "modelscope": "modelscope.cn/"}
        message = (
            f"{prefix[failed[0]]}{failed[1]} is unreachable; "
            f"pulling from {prefix[to[0]]}{to[1]} instead"
        )
        logger.warning("%s (%s)", message, exc)
        if progress is not None:
            progress(PullProgress(message))
        return exc

    def _pull_modelscope(
        self,
        name: str,
        repo_id: str,
        quant: str,
        embedding: bool,
        revision: str | None,
        progress: ProgressCallback | None,
    ) -> ModelRecord:
        """Pull from ModelScope into the store's blobs and record ``name``."""
        from local_llm_runtime.store.hub import PullProgress

        if quant.upper() == "AUTO":
            quant, revision = self._auto_quant(
                repo_id, revision, None, progress, source="modelscope"
            )
        resolution = self.modelscope.resolve(repo_id, quant, revision)
        stored = self.modelscope.download(resolution, self.store, progress=progress)
        if progress is not None:
            progress(PullProgress("writing manifest"))
        after_commit: list[Callable[[], None]] = []
        with self.store.transaction(after_commit) as manifest:
            previous = manifest.models.get(store_key(name))
            pulled: dict[str, Any] = {
                "source": "modelscope",
                "files": [s.record for s in stored],
                "repo_id": resolution.repo_id,
                "revision": resolution.revision,
                "quant": quant,
                "embedding": embedding,
                "modified_at": now(),
            }
            record = (
                previous.model_copy(update=pulled)
                if previous is not None
                else ModelRecord(name=name, origin=name, **pulled)
            )
            self._check_present(record, "pulled", blobs=True)  # before linking shard names
            self.store.link_split(record)
            manifest.models[store_key(name)] = record
            if previous is not None:
                after_commit.append(self._collect_garbage(manifest, [previous]))
        return record

    def _memory_budget(self) -> MemoryBudget | None:
        if self._memory is not None:
            return self._memory()
        from local_llm_runtime.store.auto_quant import probe_budget

        return probe_budget()

    def _auto_quant(
        self,
        repo_id: str,
        revision: str | None,
        num_ctx: int | None,
        progress: ProgressCallback | None,
        *,
        source: str = "hf",
    ) -> tuple[str, str]:
        """(quant, revision) that ``:auto`` chooses for this machine (see :mod:`.auto_quant`).

        Among the files of ``repo_id`` on ``source`` (``hf`` or ``modelscope``; a
        ``revision`` of ``None`` is ModelScope's default branch).
        """
        from local_llm_runtime.memory import KV_BYTES_PER_ELEM
        from local_llm_runtime.store.auto_quant import choose_for_listing
        from local_llm_runtime.store.hub import PullProgress
        from local_llm_runtime.types import DEFAULT_NUM_CTX

        client: HubClient | ModelScopeClient
        if source == "modelscope":
            client, prefix = self.modelscope, "modelscope.cn/"
            listing = self.modelscope.list_sizes(repo_id, revision)
        else:
            client, prefix = self.hub, "hf.co/"
            listing = self.hub.list_sizes(repo_id, revision or "main")
        budget = self._memory_budget()
        if budget is None:
            line = (
                f"auto: cannot tell this machine's free memory; pulling the default "
                f"{DEFAULT_QUANT} of {prefix}{listing.repo_id} (name a quantization to choose)"
            )
            logger.warning("%s", line)
            if progress is not None:
                progress(PullProgress(line))
            return DEFAULT_QUANT, listing.revision
        choice = choose_for_listing(
            client,
            listing,
            budget=budget,
            num_ctx=num_ctx,
            num_parallel=self.settings.num_parallel,
            kv_bytes_per_elem=KV_BYTES_PER_ELEM[self.settings.kv_cache_type],
            default_num_ctx=DEFAULT_NUM_CTX,
            prefix=prefix,
        )
        logger.warning("%s%s %s", prefix, listing.repo_id, choice.reason)
        if progress is not None:
            progress(PullProgress(choice.reason))
        return choice.quant, listing.revision

    def _warn_if_too_big(
        self, resolution: HubResolution, progress: ProgressCallback | None
    ) -> None:
        """Warn (log and progress status, no error) before pulling more than the memory."""
        from local_llm_runtime.memory import human_bytes
        from local_llm_runtime.store.hub import PullProgress

        size = sum(f.size for f in resolution.files)
        budget = self._memory_budget()
        if budget is None or size <= budget.available_bytes:
            return
        line = (
            f"warning: {resolution.quant} of hf.co/{resolution.repo_id} is "
            f"{human_bytes(size)}, more than the {human_bytes(budget.available_bytes)} of "
            f"{budget.where}; it may not load or run slowly (':auto' picks one that fits)"
        )
        logger.warning("%s", line)
        if progress is not None:
            progress(PullProgress(line))

    # ---- list / show -------------------------------------------------------

    def list(self) -> list[ModelRecord]:
        """Every model in the store, most recently modified first."""
        records = list(self.store.read().models.values())
        return sorted(records, key=lambda r: r.modified_at, reverse=True)

    def show(self, text: str) -> dict[str, Any]:
        """Describe a local model from its GGUF header(s), without loading weights.

        Args:
            text: A stored name or a ``.gguf`` path.

        Returns:
            A JSON-ready mapping: ``name``, ``details`` (architecture, parameters,
            quantization, context and embedding length, chat template, license,
            capabilities), ``files``, ``source``, ``system`` and ``parameters``, what
            a Modelfile bound: ``template``, ``messages``, ``license``, and ``adapters``
            (the LoRA adapters' ``path``, ``size`` and ``sha256``, in order).
            ``verified`` (also per file) says whether the digest was checked against a
            hash the source sent; ``False`` for a Hub file that came with no hash at all
            (its digest is only that of the bytes received); ``None`` for a plain path.
        """
        model = self.resolve(text, pull=False)
        details = summarize([read_gguf_info(path) for path in model.paths])
        if model.embedding and "embedding" not in details["capabilities"]:
            details["capabilities"] = ["embedding"]
        record = model.record
        files = [
            {
                "path": str(path),
                "size": path.stat().st_size,
                "sha256": f.sha256 if f else None,
                "verified": f.verified if f else None,
            }
            for path, f in zip(
                model.paths, record.files if record else [None] * len(model.paths), strict=True
            )
        ]
        source: dict[str, Any] = {"kind": "file"}
        if record is not None and record.source in ("hub", "modelscope"):
            source = {
                "kind": record.source,
                "repo_id": record.repo_id,
                "revision": record.revision,
                "quant": record.quant,
            }
        elif record is not None:
            source = {"kind": "imported"}
        return {
            "name": model.name,
            "digest": model.sha256,
            "verified": record.verified if record else None,
            "size": model.size,
            "modified_at": record.modified_at.isoformat() if record else None,
            "origin": record.origin if record else None,
            "details": details,
            "files": files,
            "source": source,
            "system": model.system,
            "parameters": dict(model.parameters),
            "template": model.template,
            "messages": [dict(m) for m in model.messages],
            "license": record.license if record else None,
            "adapters": [
                {"path": str(path), "size": f.size, "sha256": f.sha256}
                for path, f in zip(model.adapters, record.adapters if record else [], strict=True)
            ],
        }

    # ---- rm / cp / create --------------------------------------------------

    def remove(self, text: str) -> ModelRecord:
        """Delete a name; its files go only when no other name uses them.

        Args:
            text: A stored name.

        Returns:
            The record that was removed.
        """
        ref = self._parse_stored(text)
        name = self._stored_name(ref)
        if self.store.get(name) is None:  # fail before the store is touched
            raise self._missing(name)
        after_commit: list[Callable[[], None]] = []
        with self.store.transaction(after_commit) as manifest:
            record = manifest.models.pop(store_key(name), None)
            if record is None:  # removed by another process meanwhile
                raise self._missing(name)
            after_commit.append(self._collect_garbage(manifest, [record]))
        return record

    def _missing(self, name: str) -> ModelNotFoundError:
        return ModelNotFoundError(
            f"Model '{name}' is not in the store; run 'local-llm list' to see local models.",
            difflib.get_close_matches(name, self._names(), n=3),
        )

    def copy(self, source: str, destination: str) -> ModelRecord:
        """Give a stored model a second name (files are shared, not copied).

        Args:
            source: A stored name.
            destination: A new Ollama-style name.

        Returns:
            The new record.
        """
        src_ref = self._parse_stored(source)
        dst = parse_name(destination)
        src_name = self._stored_name(src_ref)
        hint = f"run 'local-llm pull {src_name}' first."
        self._record_or_raise(src_ref, hint)  # fail before the store is touched
        if self.store.get(dst.key) is not None:
            raise self._exists(dst.key)
        with self.store.transaction() as manifest:
            record = manifest.models.get(store_key(src_name))
            if record is None:
                record = self._record_or_raise(src_ref, hint)
            if store_key(dst.key) in manifest.models:
                raise self._exists(dst.key)
            copied = record.model_copy(
                update={"name": dst.key, "origin": record.name, "modified_at": now()}
            )
            manifest.models[store_key(dst.key)] = copied
        return copied

    def _check_present(self, record: ModelRecord, done: str, *, blobs: bool = False) -> None:
        """Before a commit, under the store lock: every file ``record`` names is on disk.

        Files are imported or downloaded before the lock is taken; an ``rm`` in another
        process meanwhile deletes the blobs (or Hub files) that no committed name uses,
        even ones this record is about to use. Checked here, that race is an error to
        retry instead of a name whose files are missing.

        Args:
            record: The record about to be committed.
            done: What is being done, for the message (``created``, ``pulled``).
            blobs: Check the store's blobs of ``record.files`` (a ModelScope record before
                its split shards are linked) instead of :meth:`Store.paths`.

        Raises:
            StoreError: A file is gone (the message says to try again).
        """
        if blobs:
            files = [(self.store.blob_path(f.sha256), f.size) for f in record.files]
            files += [(self.store.blob_path(f.sha256), f.size) for f in record.adapters]
            present = all(path.is_file() and path.stat().st_size == size for path, size in files)
        else:
            present = self.store.present(record)
        if not present:
            raise StoreError(
                f"Files of '{record.name}' were deleted while it was being {done} (a "
                "'local-llm rm' of another name that used them?); try again."
            )

    @staticmethod
    def _exists(name: str) -> ModelExistsError:
        return ModelExistsError(
            f"Model '{name}' already exists; remove it first with 'local-llm rm {name}'."
        )

    def create(
        self,
        name: str,
        source: str,
        *,
        system: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        template: str | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
        adapters: Sequence[str | Path] | None = None,
        license: str | None = None,
    ) -> ModelRecord:
        """Create (or replace) a named model from a GGUF file or another model.

        Like an Ollama Modelfile (``FROM``, ``SYSTEM``, ``PARAMETER``, ``TEMPLATE``,
        ``MESSAGE``, ``ADAPTER``, ``LICENSE``): the new name carries a default system
        prompt, default options, a chat template, a few-shot history and LoRA adapters.
        A local file is imported into the store (copied, sha256 recorded).

        Args:
            name: The new Ollama-style name.
            source: A ``.gguf`` path, or a stored/catalog/Hub name.
            system: Default system prompt; inherited from ``source`` when omitted.
            parameters: Default options (Ollama names); merged over ``source``'s.
            template: Jinja chat template; inherited from ``source`` when omitted.
            messages: Few-shot history (``role``/``content``); inherited when omitted.
            adapters: LoRA adapter GGUF paths, imported into the store; inherited when
                omitted.
            license: License text; inherited when omitted.

        Returns:
            The new record.

        Raises:
            InvalidAdapterError: An adapter is not a LoRA adapter GGUF for the base model.
        """
        target = parse_name(name)
        src_ref = parse_ref(source)
        params = validate_options(parameters or {})
        if template is not None:
            from local_llm_runtime.store.modelfile import check_template

            check_template(template)  # before anything is pulled or imported
        if messages is not None:
            messages = _checked_messages(messages)
        # Everything is checked before anything is written: a bad FROM file, adapter or
        # value leaves the store as it was (no orphan blob of an import that then failed).
        for adapter in adapters or ():  # before a FROM name is pulled
            if not Path(adapter).expanduser().exists():
                raise ModelNotFoundError(f"No such adapter file: {Path(adapter).expanduser()}.")
        stored: ModelRecord | None = None
        base_paths: Sequence[Path]
        if isinstance(src_ref, FileRef):
            shards = self._check_import(src_ref)
            base_paths, base_name = shards, str(src_ref.path)
        else:
            stored = self.store.get(self._stored_name(src_ref))
            if stored is None or not self.store.present(stored):
                stored = self.pull(source)
            base_paths, base_name = self.store.paths(stored), stored.name
        adapter_paths = (
            self._check_adapters(adapters, base_paths, base_name=base_name)
            if adapters is not None
            else None
        )
        base = self._import(src_ref, shards) if isinstance(src_ref, FileRef) else stored
        assert base is not None
        update: dict[str, Any] = {
            "name": target.key,
            "origin": base.origin if isinstance(src_ref, FileRef) else base.name,
            "system": system if system is not None else base.system,
            "parameters": {**base.parameters, **params},
            "modified_at": now(),
        }
        if template is not None:
            update["template"] = template
        if messages is not None:
            update["messages"] = [dict(m) for m in messages]
        if license is not None:
            update["license"] = license
        if adapter_paths is not None:
            update["adapters"] = [import_blob(self.store, path) for path in adapter_paths]
        record = base.model_copy(update=update)
        after_commit: list[Callable[[], None]] = []
        with self.store.transaction(after_commit) as manifest:
            if not self.store.present(record):  # a concurrent rm deleted a shared blob
                sources = [
                    *(shards if isinstance(src_ref, FileRef) else ()),
                    *(adapter_paths or ()),
                ]
                for path in sources:
                    import_blob(self.store, path)  # the same bytes, the same sha256
            self._check_present(record, "created")
            previous = manifest.models.get(store_key(target.key))
            manifest.models[store_key(target.key)] = record
            if previous is not None:
                after_commit.append(self._collect_garbage(manifest, [previous]))
        return record

    def create_from_modelfile(
        self, name: str, modelfile: str, *, base_dir: str | Path | None = None
    ) -> ModelRecord:
        """Create (or replace) a named model from an Ollama Modelfile's text.

        ``FROM``, ``PARAMETER``, ``SYSTEM``, ``TEMPLATE``, ``MESSAGE``, ``ADAPTER`` and
        ``LICENSE`` map onto :meth:`create`'s arguments; what the Modelfile leaves out
        is inherited from ``FROM``.

        Args:
            name: The new Ollama-style name.
            modelfile: The Modelfile's content (see :mod:`~local_llm_runtime.store.modelfile`).
            base_dir: The Modelfile's folder: relative ``FROM``/``ADAPTER`` paths are
                relative to it (the current directory when omitted).

        Returns:
            The new record.

        Raises:
            ModelfileError: The Modelfile is malformed (the message names the line).
        """
        from local_llm_runtime.store.modelfile import parse_modelfile

        parsed = parse_modelfile(modelfile)
        if base_dir is not None:
            parsed = parsed.resolved(base_dir)
        return self.create(name, **parsed.create_arguments())

    def modelfile(self, text: str) -> str:
        """The Modelfile of a model: :meth:`create_from_modelfile` turns it back into it.

        ``FROM`` is the model's name (a stored model) or its path; ``TEMPLATE``,
        ``SYSTEM``, ``PARAMETER``, ``MESSAGE``, ``ADAPTER`` and ``LICENSE`` are the ones
        bound by ``create`` (the GGUF's own chat template is not repeated).

        Args:
            text: A stored name or a ``.gguf`` path.

        Raises:
            ModelNotFoundError: The model is not in the store (nothing is pulled).
        """
        from local_llm_runtime.store.modelfile import modelfile_of, render_modelfile

        model = self.resolve(text, pull=False)
        record = model.record
        return render_modelfile(
            modelfile_of(
                record.name if record is not None else str(model.path),
                system=model.system,
                parameters=model.parameters,
                template=model.template,
                messages=model.messages,
                adapters=[self.store.blob_path(f.sha256) for f in record.adapters]
                if record is not None
                else [],
                license=record.license if record is not None else None,
            ),
            name=model.name,
        )

    @staticmethod
    def _check_adapters(
        adapters: Sequence[str | Path], base_paths: Sequence[Path], *, base_name: str
    ) -> tuple[Path, ...]:
        """Check LoRA adapter GGUFs against the base model's files; no I/O but reading.

        Returns:
            The adapters' resolved paths, in order.

        Raises:
            ModelNotFoundError: A path does not exist.
            InvalidAdapterError: A file is not a LoRA adapter GGUF for this base model.
        """
        from local_llm_runtime.store.adapters import check_lora_adapter

        paths = [Path(a).expanduser() for a in adapters]
        seen: set[Path] = set()
        for path in paths:
            if not path.exists():
                raise ModelNotFoundError(f"No such adapter file: {path}.")
            if path.resolve() in seen:  # llama.cpp would add its deltas twice
                raise InvalidAdapterError(
                    f"The adapter {path} is listed twice; list each ADAPTER once (a second "
                    "copy would apply its weights twice)."
                )
            seen.add(path.resolve())
            check_lora_adapter(path, base_paths, base_name=base_name)
        return tuple(path.resolve() for path in paths)

    def _missing_adapters(self, record: ModelRecord) -> tuple[Path, ...]:
        """The record's adapter blobs that are not on disk with their recorded size."""
        missing: tuple[Path, ...] = ()
        for path, file in zip(self.store.adapter_paths(record), record.adapters, strict=True):
            try:
                if path.stat().st_size == file.size:
                    continue
            except OSError:
                pass
            missing += (path,)
        return missing

    @staticmethod
    def _check_import(ref: FileRef) -> tuple[Path, ...]:
        """The shards of a GGUF file to import, each header checked; nothing is written.

        Raises:
            ModelNotFoundError: The file does not exist.
            InvalidModelFileError: A shard is missing or not a valid GGUF.
        """
        path = ref.path
        if not path.is_file():
            raise ModelNotFoundError(f"No such model file: {path}.")
        shards = _shards_of(path.resolve())
        for shard in shards:
            read_gguf_info(shard)
        return tuple(shards)

    def _import(self, ref: FileRef, shards: Sequence[Path] | None = None) -> ModelRecord:
        path = ref.path
        if shards is None:
            shards = self._check_import(ref)
        infos = [read_gguf_info(shard) for shard in shards]
        files = [import_blob(self.store, shard) for shard in shards]
        pooling = summarize(infos)["pooling_type"]
        return ModelRecord(
            name=str(path),
            source="file",
            files=files,
            origin=str(path.resolve()),
            embedding=isinstance(pooling, int) and pooling > 0,
        )

    def _collect_garbage(
        self, manifest: Manifest, dropped: Iterable[ModelRecord]
    ) -> Callable[[], None]:
        """Plan the deletion of the files of dropped records that no remaining record uses.

        LoRA adapters are imported blobs whatever the record's source: one goes when no
        remaining record names it among its files or adapters.

        Runs inside the transaction: it only decides (and forgets the ownership of
        what it will delete in ``manifest``); the returned callback deletes, after the
        manifest commit succeeded. Imported and ModelScope blobs are the store's own; a Hub file is
        deleted only if this store downloaded it (``manifest.downloaded``), through
        huggingface_hub's cache API, which keeps blobs other snapshots reference.
        """
        remaining = [r for r in manifest.models.values()]
        dropped = list(dropped)
        keep_blobs = {f.sha256 for r in remaining if r.source != "hub" for f in r.files}
        keep_blobs |= {f.sha256 for r in remaining for f in r.adapters}  # always blobs
        keep_hub = {
            hub_file_key(r.repo_id, r.revision, f.repo_path)
            for r in remaining
            if r.source == "hub" and r.repo_id and r.revision
            for f in r.files
            if f.repo_path
        }
        keep_splits = {self.store.split_dir(r) for r in remaining} - {None}
        splits = {self.store.split_dir(r) for r in dropped} - keep_splits - {None}
        owned = set(manifest.downloaded)
        imported: list[Path] = []
        hub_files: list[tuple[str, str, str]] = []
        for record in dropped:
            imported += [
                self.store.blob_path(f.sha256)
                for f in record.adapters
                if f.sha256 not in keep_blobs
            ]
            for file in record.files:
                if record.source != "hub":  # imported or ModelScope: the store's own blobs
                    if file.sha256 not in keep_blobs:
                        imported.append(self.store.blob_path(file.sha256))
                    continue
                if not (record.repo_id and record.revision and file.repo_path):
                    continue
                key = hub_file_key(record.repo_id, record.revision, file.repo_path)
                if key in owned and key not in keep_hub:
                    hub_files.append((record.repo_id, record.revision, file.repo_path))
                    owned.discard(key)
        manifest.downloaded = [key for key in manifest.downloaded if key in owned]
        cache = self.settings.hf_cache

        def delete() -> None:
            for path in imported:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            for split in splits:  # hard links of a split ModelScope model's blobs
                if split is not None:
                    shutil.rmtree(split, ignore_errors=True)
            if not hub_files:  # nothing downloaded to delete: no need for huggingface_hub
                return
            try:
                from local_llm_runtime.store.hf_cache import delete_snapshot_files

                delete_snapshot_files(cache, hub_files)
            except OSError as exc:  # the names are gone already; files stay behind
                logger.warning("Could not delete files from the HF cache %s: %s", cache, exc)

        return delete
