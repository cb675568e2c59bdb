"""The pool of loaded models: one llama.cpp instance per (file, LoRA adapters, load options).

Every caller in the process shares the pool. An entry is loaded lazily on the
first request, kept warm for ``keep_alive`` after its last request (Ollama's
semantics: ``0`` unloads right after, negative keeps it forever), evicted
least-recently-used when more than ``max_loaded_models`` are loaded, and
unloaded with ``Llama.close()`` so its memory is really freed.

Each entry serializes its requests through a FIFO lock: ``Llama`` is not
thread-safe and a streaming generator holds engine state between tokens, so a
request owns the model from its first token to its last. Every generation
entry decodes through a :class:`~local_llm_runtime.llama.batching.BatchDecoder`;
with ``num_parallel > 1`` the lock becomes a FIFO semaphore with that many
permits, each a slot of one batched llama.cpp context (with 1, the one slot is
the model's own context). Callers only see :meth:`ModelPool.lease`; how a model
is loaded is :mod:`~local_llm_runtime.llama.loader`'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

import llama_cpp

from local_llm_runtime.llama import gpu, llama_log
from local_llm_runtime.llama.batching import BatchDecoder
from local_llm_runtime.llama.loader import Builder, LoadOptions, ModelLoader, planned_num_ctx
from local_llm_runtime.llama.prompt_cache import MIB, ModelPromptCache, PromptCache
from local_llm_runtime.llama.slot_files import SlotFiles, model_identity
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.library import LocalModel
from local_llm_runtime.streams import QueueLeftError, current_request
from local_llm_runtime.types import RunningModel

__all__ = ["FairLock", "LoadOptions", "LoadedModel", "ModelPool", "RunningModel", "planned_num_ctx"]

logger = logging.getLogger(__name__)


class Reclaimable(Protocol):
    """A lease holder that can give its model back when it has gone idle (a stream)."""

    def reclaim_if_idle(self) -> bool:
        """Release the model if the holder has been idle too long; return whether it did."""


class FairLock:
    """A lock (or, with ``permits > 1``, a semaphore) granted in arrival order.

    ``threading.Lock`` makes no ordering promise; here waiters are served FIFO.
    A waiter with a ``cancel`` event or a ``deadline`` leaves the queue (raising
    :class:`~local_llm_runtime.streams.QueueLeftError`) within :data:`POLL_S` of
    either, without ever holding the lock; the others keep their order. While
    waiting, it also asks idle holders (abandoned streams) to give the lock back.
    """

    POLL_S = 0.05
    """How often a waiter re-checks its cancel event, its deadline and idle holders."""

    def __init__(self, permits: int = 1) -> None:
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._permits = permits
        self._held = 0
        # Weak: a holder nobody else references (an abandoned stream) must stay
        # collectable, so that its finalizer closes it and releases the permit.
        self._holders: dict[object, weakref.ref[Reclaimable] | None] = {}

    def acquire(
        self,
        *,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        owner: Reclaimable | None = None,
    ) -> object:
        """Wait for our turn, then hold a permit.

        Args:
            cancel: Leave the queue once this is set.
            deadline: Leave the queue at this ``time.monotonic()`` instant.
            owner: The holder, asked to give the permit back if it goes idle.

        Returns:
            A ticket to pass to :meth:`release`.

        Raises:
            QueueLeftError: ``cancel`` was set or ``deadline`` passed while waiting.
        """
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._held >= self._permits or self._queue[0] is not ticket:
                    if cancel is not None and cancel.is_set():
                        raise QueueLeftError("cancelled while waiting for the model")
                    if deadline is not None and time.monotonic() >= deadline:
                        raise QueueLeftError("deadline passed while waiting for the model")
                    owners = [o for o in map(_alive, self._holders.values()) if o is not None]
                    if owners and self._held >= self._permits:
                        self._cond.release()  # a reclaimed stream releases its permit
                        try:
                            reclaimed = any([o.reclaim_if_idle() for o in owners])
                        finally:
                            self._cond.acquire()
                        if reclaimed:
                            continue
                    polling = cancel is not None or deadline is not None or bool(owners)
                    self._cond.wait(self.POLL_S if polling else None)
            except BaseException:  # cancelled, past the deadline or interrupted: leave
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self._held += 1
            self._holders[ticket] = None if owner is None else weakref.ref(owner)
            self._cond.notify_all()  # the next in line may fit too
        return ticket

    def release(self, ticket: object | None = None) -> None:
        """Give a permit back and let the next waiter in.

        Args:
            ticket: What :meth:`acquire` returned (``None``: any permit).
        """
        with self._cond:
            if ticket is not None:
                self._holders.pop(ticket, None)
            elif self._holders:
                self._holders.pop(next(iter(self._holders)))
            self._held -= 1
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """How many callers are queued."""
        with self._cond:
            return len(self._queue)


def _alive(ref: weakref.ref[Reclaimable] | None) -> Reclaimable | None:
    return None if ref is None else ref()


@dataclass(eq=False)
class LoadedModel:
    """A loaded llama.cpp instance and its bookkeeping."""

    key: tuple[str, LoadOptions]
    model: LocalModel
    llm: llama_cpp.Llama
    options: LoadOptions
    num_ctx: int
    offload: gpu.OffloadDecision
    metadata: dict[str, Any]
    load_s: float
    lock: FairLock = field(default_factory=FairLock)
    batcher: BatchDecoder | None = None
    """The generation decoder: ``num_parallel`` slots, or one (``None``: an embedding instance)."""
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float | None = None
    keep_alive: float = 300.0
    unload_when_idle: bool = False

    def running(self) -> RunningModel:
        """Describe this entry for ``ps()``."""
        expires = None
        if self.expires_at is not None and self.active == 0:
            wall = time.time() + (self.expires_at - time.monotonic())
            expires = datetime.fromtimestamp(wall, timezone.utc)
        return RunningModel(
            name=self.model.name,
            path=self.model.path,
            size=self.model.size,
            num_ctx=self.num_ctx,
            gpu_layers=self.offload.num_gpu,
            offload=self.offload.reason,
            embedding=self.options.embedding,
            expires_at=expires,
            active_requests=self.active,
            parallel=self.batcher.n_slots if self.batcher is not None else 1,
        )


def _return_heap_to_os() -> None:
    """Ask glibc to give freed heap pages back (llama.cpp frees, glibc keeps them)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class ModelPool:
    """Loaded models shared by every caller in the process.

    Loading itself is the :class:`~local_llm_runtime.llama.loader.ModelLoader`'s
    (``self.loader``); the pool caches what it loads, keeps it warm, evicts and
    leases it.

    Args:
        settings: keep-alive and max-loaded defaults.
        loader: Builds a ``Llama`` (injectable for tests; see :data:`Builder`).
        device_probe: Reports free GPU memory (injectable for tests).
        gpu_available: Whether this llama.cpp build can offload (injectable).
    """

    def __init__(
        self,
        settings: RuntimeSettings | None = None,
        *,
        loader: Builder | None = None,
        device_probe: Callable[[], gpu.DeviceMemory | None] | None = None,
        gpu_available: bool | None = None,
    ) -> None:
        self.settings = settings or RuntimeSettings.from_env()
        self.loader = ModelLoader(
            self.settings, build=loader, device_probe=device_probe, gpu_available=gpu_available
        )
        self._entries: dict[tuple[str, LoadOptions], LoadedModel] = {}
        self._loading: dict[tuple[str, LoadOptions], threading.Lock] = {}
        self._lock = threading.RLock()
        self._reaper_wakeup = threading.Event()
        self._reaper: threading.Thread | None = None
        self._vocabs: dict[str, llama_cpp.Llama] = {}
        self.prompt_cache = PromptCache(self.settings.cache_ram * MIB)
        """Saved prompt states of every loaded model (``LOCAL_LLM_CACHE_RAM``)."""
        llama_log.install()

    # ---- leasing -----------------------------------------------------------

    @contextlib.contextmanager
    def lease(
        self, model: LocalModel, options: LoadOptions, *, keep_alive: float | None = None
    ) -> Iterator[tuple[LoadedModel, float, float]]:
        """Hold a loaded model for one request (loading it first if needed).

        Yields:
            ``(entry, load_seconds, queue_seconds)``; the entry's lock is held
            until the context exits, so nothing else touches the engine.
        """
        request = current_request()  # the stream advancing in this thread, if any
        signal, owner = request if request is not None else (None, None)
        del request  # this frame lives as long as the stream's generator: no cycle to it
        lease_at = time.monotonic()
        if signal is not None:
            signal.lease_at = lease_at
        entry, loaded_now = self._get_or_load(model, options)
        load_s = entry.load_s if loaded_now else 0.0
        waited_from = time.monotonic()
        if signal is not None:
            signal.model, signal.load_s = entry.model.name, load_s
        try:
            ticket = entry.lock.acquire(
                cancel=signal, deadline=signal.deadline if signal else None, owner=owner
            )
            del owner  # (the lock holds it weakly: an abandoned stream stays collectable)
        except BaseException:
            if signal is not None:
                signal.queue_s = time.monotonic() - waited_from
            self._finish(entry, keep_alive)
            raise
        queue_s = time.monotonic() - waited_from
        if signal is not None:
            signal.queue_s, signal.acquired_at = queue_s, time.monotonic()
        try:
            yield entry, load_s, queue_s
        finally:
            entry.lock.release(ticket)
            self._finish(entry, keep_alive)

    def _get_or_load(self, model: LocalModel, options: LoadOptions) -> tuple[LoadedModel, bool]:
        options = self._resolved(options)
        # The model's LoRA adapters are part of the key: with other adapters (or none)
        # the same file is another instance; the same base and adapters share one.
        options = replace(options, adapters=tuple(str(p.resolve()) for p in model.adapters))
        key = (str(model.path.resolve()), options)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.active += 1
                return entry, False
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:  # one load per key; other keys load in parallel
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.active += 1
                    return entry, False
            entry = self._load(key, model, options)
            with self._lock:
                self._entries[key] = entry
                self._loading.pop(key, None)
                entry.active += 1
                self._evict_over_limit(keep=entry)
            return entry, True

    def _resolved(self, options: LoadOptions) -> LoadOptions:
        """Fill the attention settings in (they are part of the pool key)."""
        kv = options.kv_cache_type or self.settings.kv_cache_type
        flash = options.flash_attention
        if flash is None:
            flash = self.settings.flash_attention
        if kv != "f16":
            flash = True  # llama.cpp quantizes the V cache only with flash attention
        return replace(options, kv_cache_type=kv, flash_attention=bool(flash))

    def _load(
        self, key: tuple[str, LoadOptions], model: LocalModel, options: LoadOptions
    ) -> LoadedModel:
        loaded = self.loader.load(model, options)
        if loaded.batcher is not None:
            loaded.batcher.prompt_cache = self._prompt_cache(key, model, loaded.options)
        return LoadedModel(
            key=key,
            model=model,
            llm=loaded.llm,
            options=loaded.options,
            num_ctx=loaded.num_ctx,
            offload=loaded.offload,
            metadata=loaded.metadata,
            load_s=loaded.load_s,
            keep_alive=self.settings.keep_alive,
            lock=FairLock(loaded.batcher.n_slots if loaded.batcher is not None else 1),
            batcher=loaded.batcher,
        )

    def _prompt_cache(
        self, key: tuple[str, LoadOptions], model: LocalModel, options: LoadOptions
    ) -> ModelPromptCache | None:
        """The model's part of the RAM prompt cache and its saved prefixes on disk, if on."""
        settings = self.settings
        disk = None
        if settings.cache_disk > 0 and settings.slot_save_path is not None:
            file_id = model.sha256
            if file_id is None:
                st = model.path.stat()
                file_id = f"{model.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
            if options.adapters:  # a state computed with adapters is another model's
                file_id += "+lora:" + ",".join(options.adapters)  # blobs named by sha256
            identity = model_identity(
                file_id,
                kv_cache_type=options.kv_cache_type,
                flash_attention=options.flash_attention,
            )
            disk = SlotFiles(
                settings.slot_save_path,
                identity,
                limit_bytes=settings.cache_disk * MIB,
                min_tokens=settings.slot_save_min,
            )
        if self.prompt_cache.limit_bytes == 0 and disk is None:
            return None
        return ModelPromptCache(self.prompt_cache, repr(key), disk)

    # ---- keep-alive and eviction -------------------------------------------

    def _finish(self, entry: LoadedModel, keep_alive: float | None) -> None:
        ttl = self.settings.keep_alive if keep_alive is None else keep_alive
        with self._lock:
            entry.active -= 1
            entry.last_used = time.monotonic()
            entry.keep_alive = ttl
            if entry.active > 0:
                return
            if ttl == 0 or entry.unload_when_idle:
                self._unload_entry(entry)
                return
            entry.expires_at = None if ttl < 0 else entry.last_used + ttl
            self._evict_over_limit()
        self._ensure_reaper()

    def _evict_over_limit(self, keep: LoadedModel | None = None) -> None:
        limit = self.settings.max_loaded_models
        while len(self._entries) > limit:
            idle = [e for e in self._entries.values() if e.active == 0 and e is not keep]
            if not idle:
                return
            self._unload_entry(min(idle, key=lambda e: e.last_used))

    def _unload_entry(self, entry: LoadedModel) -> None:
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        if entry.batcher is not None:
            entry.batcher.close()
        entry.llm.close()
        _return_heap_to_os()
        logger.info("Unloaded %s", entry.model.name)

    def _ensure_reaper(self) -> None:
        if sys.is_finalizing():
            # A stream closed by the garbage collector at exit: a thread started now
            # never runs (Python 3.11 waits for it forever), and nothing needs reaping.
            return
        with self._lock:
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(
                    target=self._reap, name="local-llm-keep-alive", daemon=True
                )
                self._reaper.start()
            else:
                self._reaper_wakeup.set()

    def _reap(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                for entry in list(self._entries.values()):
                    if (
                        entry.active == 0
                        and entry.expires_at is not None
                        and entry.expires_at <= now
                    ):
                        self._unload_entry(entry)
                deadlines = [
                    e.expires_at
                    for e in self._entries.values()
                    if e.active == 0 and e.expires_at is not None
                ]
                if not self._entries:
                    self._reaper = None
                    return
            timeout = max(0.05, min(deadlines) - time.monotonic()) if deadlines else 60.0
            self._reaper_wakeup.wait(timeout)
            self._reaper_wakeup.clear()

    # ---- inspection and control ---------------------------------------------

    def ps(self) -> list[RunningModel]:
        """The models loaded now, most recently used first."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.last_used, reverse=True)
            return [e.running() for e in entries]

    def unload(self, name: str | None = None) -> int:
        """Unload idle models (all, or those whose name or path matches).

        Models serving a request are marked to unload as soon as they finish.

        Returns:
            How many instances were unloaded or marked.
        """
        count = 0
        with self._lock:
            for entry in list(self._entries.values()):
                if name is not None and name not in (entry.model.name, str(entry.model.path)):
                    continue
                count += 1
                if entry.active == 0:
                    self._unload_entry(entry)
                else:
                    entry.unload_when_idle = True
        return count

    def vocab(self, model: LocalModel) -> llama_cpp.Llama:
        """A vocabulary-only instance of the model, for tokenizing (weights not loaded).

        Separate from the generation instances, so tokenizing never races an
        unload; one per file, kept until :meth:`close` (a few MB).
        """
        path = str(model.path.resolve())
        with self._lock:
            llm = self._vocabs.get(path)
            if llm is not None:
                return llm
        llm = self.loader.vocab(model)
        with self._lock:
            existing = self._vocabs.setdefault(path, llm)
        if existing is not llm:
            llm.close()
        return existing

    def close(self) -> None:
        """Unload everything (idle or not: only call when no request runs)."""
        with self._lock:
            for entry in list(self._entries.values()):
                self._unload_entry(entry)
            for vocab in self._vocabs.values():
                vocab.close()
            self._vocabs.clear()
