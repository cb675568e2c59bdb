"""A bounded RAM cache of prompt states, as llama-server's ``--cache-ram``.

A decoder slot keeps the KV cache of its last request, so a follow-up in the
same conversation evaluates only its new tokens. With fewer slots than
conversations (``LOCAL_LLM_NUM_PARALLEL=1``: one), a request of another
conversation cuts the slot back to the prefix they share and the first
conversation's state is lost. This cache keeps it: before a slot's cells are
cut, the slot's sequence state (``llama_state_seq_get_data``) is copied here
with its tokens; when a request starts and a cached state shares a longer
prefix with its prompt than the slot it was given, the state is copied back
into that slot (``llama_state_seq_set_data``) and cut to the shared prefix.

As llama-server's ``server_prompt_cache``: the budget is in MiB
(``LOCAL_LLM_CACHE_RAM``, ``0`` disables it), the least recently used states
go first, a state larger than the whole budget is not kept, and a state whose
tokens are a prefix of a newer one is dropped (the newer one covers it).
Entries are keyed by the loaded model (file and load options) and tokens; the
states of a model are freed when it is unloaded. Recurrent and hybrid models,
whose state cannot be cut back to a prefix, do not use it.

The pool owns one cache for every model it loads; a decoder reaches it through
a :class:`ModelPromptCache` (the cache and its model key). Every call that
touches a llama.cpp context runs on the thread that decodes on it, between
decode calls.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

from local_llm_runtime.llama.sampling import common_prefix
from local_llm_runtime.llama.slot_files import SlotFiles

__all__ = ["CachedPrompt", "ModelPromptCache", "PromptCache", "PromptCacheStats"]

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

_FLUSH_ON_UNLOAD_S = 5.0
"""How long an unload waits for a prefix still being written to disk."""


@dataclass(eq=False)
class CachedPrompt:
    """One saved sequence state and the tokens it holds, by position."""

    tokens: tuple[int, ...]
    data: Any
    """The state bytes (a ctypes ``c_uint8`` array, as llama.cpp reads it back)."""
    size: int
    """Bytes of ``data``."""
    path: Path | None = None
    """The file it was read from (a prefix saved to disk), if any."""
    prompt_len: int = 0
    """How many of ``tokens`` were the prompt (the rest: its answer); 0 if unknown."""


@dataclass
class PromptCacheStats:
    """Counters of a :class:`PromptCache` (for tests, ``ps`` and benchmarks)."""

    saved: int = 0
    """States copied into the cache."""
    restored: int = 0
    """States copied back into a slot (cache hits)."""
    skipped: int = 0
    """States not kept: larger than the budget, or llama.cpp could not copy them."""
    evicted: int = 0
    """States dropped to stay within the budget."""


class PromptCache:
    """Saved prompt states of every loaded model, within ``limit_bytes`` in all.

    Args:
        limit_bytes: The budget (bytes); ``0`` keeps nothing.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = max(0, limit_bytes)
        self._lock = threading.Lock()
        self._lru: OrderedDict[tuple[str, int], CachedPrompt] = OrderedDict()
        """``(model key, id(entry))`` -> entry, least recently used first."""
        self.size = 0
        """Bytes held now."""
        self.stats = PromptCacheStats()

    def for_model(self, key: str) -> ModelPromptCache:
        """The view a decoder of the model ``key`` saves to and restores from."""
        return ModelPromptCache(self, key)

    def entries(self, key: str) -> list[CachedPrompt]:
        """The states of model ``key``, least recently used first."""
        with self._lock:
            return [e for (k, _), e in self._lru.items() if k == key]

    def best(
        self, key: str, tokens: Sequence[int], more_than: int = 0, *, touch: bool = True
    ) -> tuple[CachedPrompt, int] | None:
        """The state of model ``key`` sharing the longest prefix with ``tokens``, and its length.

        ``None`` unless a state shares more than ``more_than`` tokens (``tokens``
        minus its last one, which is evaluated for its logits, counts). The state
        found becomes the most recently used.
        """
        usable = len(tokens) - 1
        with self._lock:
            found: tuple[tuple[str, int], int] | None = None
            for lru_key, entry in self._lru.items():
                if lru_key[0] != key:
                    continue
                shared = min(common_prefix(entry.tokens, tokens), usable)
                if shared > more_than and (found is None or shared > found[1]):
                    found = (lru_key, shared)
            if found is None:
                return None
            if touch:
                self._lru.move_to_end(found[0])
            return self._lru[found[0]], found[1]

    def covers(self, key: str, tokens: Sequence[int]) -> bool:
        """Whether a state of model ``key`` holds ``tokens`` (it becomes the most recent)."""
        with self._lock:
            for lru_key, entry in self._lru.items():
                if lru_key[0] == key and common_prefix(entry.tokens, tokens) == len(tokens):
                    self._lru.move_to_end(lru_key)
                    return True
            return False

    def add(
        self, key: str, tokens: Sequence[int], data: Any, size: int, prompt_len: int = 0
    ) -> bool:
        """Keep a state of model ``key``; ``False`` if it is larger than the whole budget.

        States of the same model whose tokens are a prefix of ``tokens`` are
        dropped (this one covers them); if a kept state already covers
        ``tokens``, nothing is added. The least recently used states go until
        the budget holds.
        """
        tokens = tuple(tokens)
        with self._lock:
            if size > self.limit_bytes:
                self.stats.skipped += 1
                return False
            for lru_key, entry in list(self._lru.items()):
                if lru_key[0] != key:
                    continue
                shared = common_prefix(entry.tokens, tokens)
                if shared == len(tokens):  # already covered (same or longer)
                    self._lru.move_to_end(lru_key)
                    return True
                if shared == len(entry.tokens):
                    self._drop(lru_key)
            while self._lru and self.size + size > self.limit_bytes:
                self._drop(next(iter(self._lru)))
                self.stats.evicted += 1
            entry = CachedPrompt(tokens=tokens, data=data, size=size, prompt_len=prompt_len)
            self._lru[(key, id(entry))] = entry
            self.size += size
            self.stats.saved += 1
            return True

    def drop_model(self, key: str) -> None:
        """Free every state of model ``key`` (it was unloaded)."""
        with self._lock:
            for lru_key in [k for k in self._lru if k[0] == key]:
                self._drop(lru_key)

    def clear(self) -> None:
        """Free every state."""
        with self._lock:
            self._lru.clear()
            self.size = 0

    def _drop(self, lru_key: tuple[str, int]) -> None:
        entry = self._lru.pop(lru_key)
        self.size -= entry.size


class ModelPromptCache:
    """One model's part of a :class:`PromptCache`: saves and restores slot states.

    Args:
        cache: The shared cache.
        key: The loaded model (file and load options).
        disk: Where long shared prefixes are saved (``None``: not on disk).
    """

    def __init__(self, cache: PromptCache, key: str, disk: SlotFiles | None = None) -> None:
        self.cache = cache
        self.key = key
        self.disk = disk

    def best(
        self, tokens: Sequence[int], more_than: int = 0, *, touch: bool = True
    ) -> tuple[CachedPrompt, int] | None:
        """See :meth:`PromptCache.best`."""
        return self.cache.best(self.key, tokens, more_than, touch=touch)

    def from_disk(self, tokens: Sequence[int], have: int) -> CachedPrompt | None:
        """A state saved to disk sharing more of ``tokens`` than ``have`` and any state in RAM.

        Runs on the requesting thread (a file read), before the request takes a slot.
        """
        if self.disk is None:
            return None
        found = self.disk.best(tokens, more_than=have)
        if found is None:
            return None
        saved, shared = found
        if self.best(tokens, more_than=shared - 1, touch=False) is not None:
            return None  # RAM holds as much
        data = self.disk.load(saved)
        if data is None:
            return None
        n = len(saved.tokens)
        return CachedPrompt(saved.tokens, data, len(data), path=saved.path, prompt_len=n)

    def save(self, ctx: Any, seq: int, tokens: Sequence[int], prompt_len: int = 0) -> bool:
        """Copy sequence ``seq`` of ``ctx`` (holding ``tokens``) into the cache.

        ``prompt_len``: how many of ``tokens`` were the prompt (the rest, its answer).

        Returns:
            Whether it was kept (not when larger than the budget or when
            llama.cpp could not copy it).
        """
        if not tokens:
            return False
        if self.cache.covers(self.key, tokens):
            return True
        started = time.perf_counter()
        size = int(llama_cpp.llama_state_seq_get_size(ctx, seq))
        if size <= 0 or size > self.cache.limit_bytes:
            with self.cache._lock:
                self.cache.stats.skipped += 1
            return False
        data = (ctypes.c_uint8 * size)()
        copied = int(llama_cpp.llama_state_seq_get_data(ctx, data, size, seq))
        if copied <= 0:
            with self.cache._lock:
                self.cache.stats.skipped += 1
            return False
        kept = self.cache.add(self.key, tokens, data, copied, prompt_len)
        logger.debug(
            "Prompt cache: saved %d tokens (%.1f MiB) in %.1f ms",
            len(tokens),
            copied / MIB,
            (time.perf_counter() - started) * 1000,
        )
        return kept

    def restore(self, ctx: Any, seq: int, entry: CachedPrompt) -> bool:
        """Copy ``entry`` into sequence ``seq`` of ``ctx`` (replacing what it held).

        Returns:
            Whether llama.cpp took it; if not, the sequence is left empty.
        """
        memory = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
        if int(llama_cpp.llama_state_seq_set_data(ctx, entry.data, entry.size, seq)) <= 0:
            llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            if entry.path is not None and self.disk is not None:
                self.disk.discard(entry.path)  # llama.cpp refuses it: never again
            return False
        with self.cache._lock:
            self.cache.stats.restored += 1
        return True

    def save_prefix(self, ctx: Any, seq: int, tokens: Sequence[int]) -> bool:
        """Write sequence ``seq`` (holding ``tokens``, a shared prefix) to disk if long enough."""
        if self.disk is None:
            return False
        return self.disk.save(ctx, seq, tokens)

    def drop(self) -> None:
        """Free this model's states in RAM (the files stay; a write under way may finish)."""
        self.cache.drop_model(self.key)
        if self.disk is not None:
            self.disk.flush(timeout=_FLUSH_ON_UNLOAD_S)
