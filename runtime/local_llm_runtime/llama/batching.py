"""Continuous batching: several requests decoded together on one model.

With ``num_parallel`` (``LOCAL_LLM_NUM_PARALLEL``) above 1, a loaded model gets
a llama.cpp context with that many sequences ("slots", ``num_ctx`` positions
each) and one decoding thread. Every step the thread builds one batch holding
the next token of every generating slot plus a chunk of any prompt still being
read, calls ``llama_decode`` once, and samples each slot's token from its own
row of logits with that request's own :class:`~local_llm_runtime.llama.sampling.Sampler`.
On a CPU, where decoding one token is bound by memory bandwidth, four
sequences cost little more than one; on a GPU the gain is larger still.

Requests reach a slot through the pool's lease (a FIFO semaphore with
``num_parallel`` permits) and read their tokens from a queue, so the engine's
output pipeline (stop sequences, tool calls, reasoning) is the same as with one
slot. A slot keeps its cache when its request ends, and a new request takes the
free slot whose cached tokens share the longest prefix with its prompt, so
interleaved conversations each keep their own prefix. With a prompt cache
(:mod:`local_llm_runtime.llama.prompt_cache`, ``LOCAL_LLM_CACHE_RAM``) a slot's
state is saved before its cells are cut for another prompt, and restored into
a slot when it shares a longer prefix with a new prompt than the slot does, so
more conversations than slots keep their prefixes.

As with Ollama's and llama-server's parallel slots, a seeded request is
reproducible only up to the batch it shares: llama.cpp's kernels are not
bit-identical across batch shapes.

One slot is a batch of one: with ``n_slots == 1`` the decoder works on the
model's own context and has no thread; the consumer's iteration runs each step
itself (a token is evaluated only when the next one is asked for, as
``Llama.generate`` does). So a single request and a continuous batch share
prefix reuse, abort handling, the recurrent-model rule and error mapping.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from local_llm_runtime.errors import GenerationError
from local_llm_runtime.llama import compute
from local_llm_runtime.llama.prompt_cache import CachedPrompt, ModelPromptCache
from local_llm_runtime.llama.sampling import Sampler, common_prefix
from local_llm_runtime.llama.threads import ThreadGovernor

__all__ = ["BatchDecoder", "SlotRun", "StepTimes"]

logger = logging.getLogger(__name__)

_DONE = object()
"""Queue sentinel: the run produced its last token."""


@dataclass(eq=False)
class SlotRun:
    """One request's tokens, produced by the decoding thread.

    Iterate it for sampled tokens; it ends after ``max_tokens`` tokens, an
    end-of-generation token, or a cancel. :meth:`close` (also called when the
    consumer stops early) frees the slot and returns once the decoding thread
    no longer touches this run. The decoder owns the run's sampler from
    :meth:`BatchDecoder.start` on and frees it when it retires the run.
    """

    prompt: list[int]
    """The whole prompt."""
    pending: list[int]
    """Prompt tokens not yet evaluated."""
    sampler: Sampler
    max_tokens: int
    cancel: threading.Event | None
    reused: int
    """Prompt tokens found in the slot's cache (not evaluated again)."""
    _decoder: BatchDecoder
    _slot: _Slot
    _queue: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    sampled: int = 0
    last: int | None = None
    """The last sampled token, evaluated in the next step."""
    started: bool = False
    restore: CachedPrompt | None = None
    """A cached state to copy into the slot before the run starts (prompt cache hit)."""
    finished: bool = False
    closing: bool = False
    logprobs: deque[tuple[float, list[tuple[int, float]]]] = field(default_factory=deque)
    """Per sampled token, in order, when the sampler reports logprobs: its log-probability
    and the most likely alternatives (:meth:`Sampler.logprobs`), put here before the token."""

    def __iter__(self) -> Iterator[int]:
        decoder = self._decoder
        while True:
            while decoder.synchronous and self._queue.empty():
                decoder._advance(self)  # one slot: the consumer runs the steps
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop this run and wait until the decoding thread has let go of it."""
        self._decoder._release(self)


@dataclass
class StepTimes:
    """Seconds the decoder spent per phase of its steps, summed (``perf_counter``).

    ``fill``: building the batch in Python; ``decode``: ``llama_decode`` (prefill
    and generation, thread-count changes included); ``sample``: sampling every
    finished row and handing its token over, with the bookkeeping after the
    decode. Whatever else a step's wall time holds is waiting: for the lock, for
    consumers, or (one slot) the consumer's own work between tokens.
    """

    steps: int = 0
    tokens: int = 0
    """Tokens decoded (prompt and generated)."""
    rows: int = 0
    """Rows sampled."""
    fill: float = 0.0
    decode: float = 0.0
    sample: float = 0.0

    def split(self) -> dict[str, float]:
        """Milliseconds per step of each phase."""
        n = max(1, self.steps)
        return {
            "fill_ms": 1e3 * self.fill / n,
            "decode_ms": 1e3 * self.decode / n,
            "sample_ms": 1e3 * self.sample / n,
        }


@dataclass(eq=False)
class _Slot:
    seq: int
    cells: list[int] = field(default_factory=list)
    """Tokens in this sequence's KV cache, by position."""
    run: SlotRun | None = None
    last_used: float = 0.0
    prompt_len: int = 0
    """Length of the prompt of the run that last used this slot (kept for the prompt cache)."""


_ABORTABLE_PROMPT = 32
"""Prompt tokens in a step from which cancelling may abort the step mid-way."""


def _abandoned(run: SlotRun) -> bool:
    """Whether nobody wants this run's next token any more."""
    return run.closing or (run.cancel is not None and run.cancel.is_set())


def _close_sampler(run: SlotRun) -> None:
    try:
        run.sampler.close()
    except Exception:  # never let one run's cleanup stop the decoding thread
        logger.exception("Closing a sampler failed")


_SIMILARITY = 0.5
"""Reuse a slot's cache only if the prompt keeps at least this share of it."""


_SAVE_MIN_CUT = 16
"""When a prompt extends the one a slot last read (a follow-up in the same conversation),
save the slot's state to the prompt cache only if more cells than this would be cut (the
tail of an answer the template renders differently, say: a few tokens are not worth a
copy). Cells of another prompt are saved whatever their number."""


def _spare(free: list[_Slot]) -> _Slot:
    """An empty slot if there is one, else the least recently used."""
    return min(free, key=lambda s: (bool(s.cells), s.last_used))


def _choose_slot(free: list[_Slot], tokens: Sequence[int]) -> tuple[_Slot, int]:
    """The slot to serve ``tokens`` and how many of its cached tokens to keep.

    The slot sharing the longest prefix wins if the prompt keeps at least half
    of its cache (as llama-server's slot similarity); a chat template's common
    opening alone must not let one conversation evict another's cache.
    """
    best = max(free, key=lambda s: common_prefix(s.cells, tokens))
    shared = common_prefix(best.cells, tokens)
    spare = _spare(free)
    # The similarity bar protects another conversation's cache; a slot that
    # would be overwritten anyway (the only one, say) keeps what it shares.
    if shared > 0 and (shared >= _SIMILARITY * len(best.cells) or spare is best):
        return best, min(shared, len(tokens) - 1)
    return spare, 0


class BatchDecoder:
    """Decodes up to ``n_slots`` sequences of one model together.

    Args:
        llm: The loaded model. With ``n_slots > 1`` its weights and vocabulary
            serve a context of its own (``llm``'s context is not used); with one
            slot ``llm``'s own context is decoded, synchronously (no thread).
        n_slots: Sequences served at once.
        num_ctx: Positions per sequence.
        n_batch: Most tokens per ``llama_decode`` call.
        governor: Sets the thread counts before each decode from the CPUs other
            processes leave free; ``None`` keeps the context's own counts.

    Raises:
        RuntimeError: llama.cpp could not create the batched context.
    """

    def __init__(
        self,
        llm: llama_cpp.Llama,
        *,
        n_slots: int,
        num_ctx: int,
        n_batch: int,
        governor: ThreadGovernor | None = None,
    ) -> None:
        self.synchronous = n_slots == 1
        """One slot: no decoding thread; iterating a run drives the steps."""
        if self.synchronous:
            self.ctx: Any = llm.ctx
            self._own_ctx = False
            n_batch = min(n_batch, int(llama_cpp.llama_n_batch(self.ctx)))
        else:
            self.ctx = self._new_context(llm, n_slots, num_ctx, n_batch)
            self._own_ctx = True
            n_batch = max(n_batch, n_slots)  # every generating slot adds a token per step
        model = llm._model.model
        # A recurrent state cannot be cut back to a prefix: such models start afresh.
        self._cut_ok = not (
            llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model)
        )
        self.n_slots = n_slots
        self.num_ctx = num_ctx
        self.governor = governor
        self._n_batch = n_batch
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._memory = llama_cpp.llama_get_memory(self.ctx)
        self._slots = [_Slot(seq) for seq in range(n_slots)]
        self._cond = threading.Condition()
        self._closed = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.max_active = 0
        """The most runs decoded in one step so far (for tests and ``ps``)."""
        self.steps = 0
        self.times = StepTimes()
        """Where the steps' time went (for benchmarks and ``ps``)."""
        self.prompt_cache: ModelPromptCache | None = None
        """Where slot states are saved before being cut (set by the pool; ``None``: off)."""

    @staticmethod
    def _new_context(llm: llama_cpp.Llama, n_slots: int, num_ctx: int, n_batch: int) -> Any:
        """A context of ``n_slots`` sequences on ``llm``'s weights."""
        params = llama_cpp.llama_context_params()
        # Start from the model's own context settings: threads, offload, KV types.
        size = ctypes.sizeof(params)
        ctypes.memmove(ctypes.byref(params), ctypes.byref(llm.context_params), size)
        params.n_ctx = num_ctx * n_slots
        params.n_seq_max = n_slots
        n_batch = max(n_batch, n_slots)  # every generating slot adds a token per step
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.embeddings = False
        ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if not ctx:
            raise RuntimeError(
                f"llama.cpp could not create a context for {n_slots} parallel sequences of "
                f"{num_ctx} tokens; lower LOCAL_LLM_NUM_PARALLEL or num_ctx."
            )
        return ctx

    # ---- requests ------------------------------------------------------------

    def start(
        self,
        tokens: Sequence[int],
        sampler: Sampler,
        *,
        max_tokens: int,
        reuse: bool,
        cancel: threading.Event | None = None,
    ) -> SlotRun:
        """Give a prompt a free slot and start decoding it.

        The caller must hold one of the pool's ``n_slots`` permits, so a free
        slot exists. With ``reuse`` the slot whose cache shares the longest
        prefix with ``tokens`` is taken (all but the last prompt token can be
        skipped); otherwise the least recently used one, cleared.
        """
        if not tokens:
            raise ValueError("nothing to evaluate: the prompt has no tokens")
        # A prefix saved to disk is read here, on the requesting thread, not under the lock.
        saved = self._from_disk(tokens) if reuse and self._cut_ok else None
        with self._cond:
            if self._closed:
                raise GenerationError("the model was unloaded; send the request again")
            free = [s for s in self._slots if s.run is None]
            if not free:
                raise GenerationError("no free slot: hold a pool permit before starting a run")
            restore = None
            if reuse and self._cut_ok:
                slot, keep = _choose_slot(free, tokens)
                restore, keep = self._cached(tokens, keep, saved)
            else:
                slot, keep = _spare(free), 0
            run = SlotRun(
                prompt=list(tokens),
                pending=list(tokens[keep:]),
                sampler=sampler,
                max_tokens=max_tokens,
                cancel=cancel,
                reused=keep,
                _decoder=self,
                _slot=slot,
                restore=restore,
            )
            slot.run = run
            slot.last_used = time.monotonic()
            if self._thread is None and not self.synchronous:
                self._thread = threading.Thread(
                    target=self._loop, name="local-llm-batch", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        return run

    def _release(self, run: SlotRun) -> None:
        with self._cond:
            run.closing = True
            self._cond.notify_all()
            if self.synchronous:
                self._admit()  # retires it now: no thread will
                return
            if threading.current_thread() is self._thread:
                return  # e.g. a generator collected on this thread: retired next step
            if sys.is_finalizing():
                return  # collected at exit: the (daemon) decoding thread may never run again
            while run._slot.run is run and not self._stopped:
                self._cond.wait()

    def close(self) -> None:
        """Stop the decoding thread and free the context (runs end with an error)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            for slot in self._slots:
                if slot.run is not None:
                    slot.run._queue.put(
                        GenerationError("the model was unloaded during the request")
                    )
                    _close_sampler(slot.run)
                    slot.run = None
            self._stopped = True
            self._cond.notify_all()
        if self.prompt_cache is not None:
            self.prompt_cache.drop()  # the model's saved states go with it
        llama_cpp.llama_batch_free(self._batch)
        if self._own_ctx:
            llama_cpp.llama_free(self.ctx)
        self.ctx = None

    # ---- the prompt cache ------------------------------------------------------

    def _from_disk(self, tokens: Sequence[int]) -> CachedPrompt | None:
        """A prefix of ``tokens`` saved to disk, longer than what any slot holds now."""
        if self.prompt_cache is None or self.prompt_cache.disk is None:
            return None
        # An unlocked look at the slots (a copy of each list): only a hint.
        have = max(common_prefix(list(s.cells), tokens) for s in self._slots)
        return self.prompt_cache.from_disk(tokens, have)

    def _cached(
        self, tokens: Sequence[int], keep: int, saved: CachedPrompt | None = None
    ) -> tuple[CachedPrompt | None, int]:
        """A cached state to restore if it keeps more of ``tokens`` than a slot's ``keep``."""
        if self.prompt_cache is None:
            return None, keep
        restore = None
        found = self.prompt_cache.best(tokens, more_than=keep)
        if found is not None:
            restore, keep = found
        if saved is not None:
            shared = min(common_prefix(saved.tokens, tokens), len(tokens) - 1)
            if shared > keep:
                restore, keep = saved, shared
        return restore, keep

    def _swap_cached(self, slot: _Slot, run: SlotRun) -> None:
        """Before ``run`` starts (on the decoding thread): save what it cuts, restore its state.

        A slot's cells are another prompt's when the new prompt does not extend the
        prompt the slot last read (a follow-up in the same conversation does: only
        the tail of its answer may be cut).
        """
        cache = self.prompt_cache
        if cache is None or not self._cut_ok:
            return
        other = common_prefix(slot.cells, run.prompt) < slot.prompt_len
        cut = len(slot.cells) - run.reused
        if slot.cells and (run.restore is not None or (cut > 0 and other) or cut > _SAVE_MIN_CUT):
            try:
                cache.save(self.ctx, slot.seq, slot.cells, slot.prompt_len)
            except Exception:  # a cache is an optimisation: never fail the request for it
                logger.exception("Saving a prompt state failed")
        entry, run.restore = run.restore, None
        if entry is not None:
            if cache.restore(self.ctx, slot.seq, entry):
                slot.cells[:] = entry.tokens
                slot.prompt_len = entry.prompt_len
                other = common_prefix(slot.cells, run.prompt) < slot.prompt_len
            else:  # the sequence is empty now: evaluate the whole prompt
                slot.cells.clear()
                run.reused, run.pending = 0, list(run.prompt)
        # Another prompt's cells are cut back to a long prefix both share (a system
        # prompt, a RAG preamble): save that prefix to disk for the next start.
        disk = cache.disk
        if (
            disk is not None
            and other
            and run.reused >= disk.min_tokens
            and len(slot.cells) > run.reused
            and llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, run.reused, -1)
        ):
            del slot.cells[run.reused :]
            try:
                cache.save_prefix(self.ctx, slot.seq, slot.cells)
            except Exception:  # an optimisation: never fail the request for it
                logger.exception("Saving a prompt prefix failed")
        slot.prompt_len = len(run.prompt)

    # ---- the decoding thread -----------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    runs = self._admit()
                    if runs:
                        break
                    self._cond.wait()  # new runs and closes notify
            self._guarded_step(runs)

    def _advance(self, run: SlotRun) -> None:
        """One step, run by the consumer of ``run`` (synchronous decoder)."""
        with self._cond:
            if self._closed:
                run.finished = True
                run._queue.put(GenerationError("the model was unloaded during the request"))
                return
            runs = self._admit()
        if runs:
            self._guarded_step(runs)

    def _guarded_step(self, runs: list[SlotRun]) -> None:
        try:
            self._step(runs)
        except Exception as exc:  # never leave a consumer waiting on a dead step
            with self._cond:
                for run in runs:
                    if not run.finished:
                        run.finished = True
                        run._queue.put(exc)

    def _admit(self) -> list[SlotRun]:
        """Under the lock: retire finished or abandoned runs, return the live ones."""
        live = []
        for slot in self._slots:
            run = slot.run
            if run is None:
                continue
            if run.finished or _abandoned(run):
                if not run.finished:
                    run.finished = True
                    run._queue.put(_DONE)
                if run.closing:
                    _close_sampler(run)
                    slot.run = None
                    slot.last_used = time.monotonic()
                    self._cond.notify_all()
                continue
            if not run.started:
                self._swap_cached(slot, run)
                # Drop whatever the slot cached beyond the reused prefix.
                if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, run.reused, -1):
                    llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
                    run.reused, run.pending = 0, list(run.prompt)
                del slot.cells[run.reused :]
                run.started = True
            live.append(run)
        return live

    def _step(self, runs: list[SlotRun]) -> None:
        """Decode one batch for ``runs`` and hand each finished row's token to its run."""
        times = self.times
        started = time.perf_counter()
        added, outputs, n_prompt = self._fill(runs)
        self.max_active = max(self.max_active, len(runs))
        self.steps += 1
        filled = time.perf_counter()
        abortable = n_prompt >= _ABORTABLE_PROMPT
        code = compute.run(lambda: self._decode(runs, abortable=abortable))
        decoded = time.perf_counter()
        times.fill += filled - started
        times.decode += decoded - filled
        times.tokens += int(self._batch.n_tokens)
        times.rows += len(outputs)
        with self._cond:
            if code != 0:
                self._fail(runs, added, code)
                return
            for slot, tokens in added:
                slot.cells.extend(tokens)
                owner = slot.run
                if owner is not None and owner.pending:
                    del owner.pending[: len(tokens)]
        for run, index in outputs:
            if not run.closing:
                self._sample(run, index)
        times.sample += time.perf_counter() - decoded
        times.steps += 1

    def _fill(
        self, runs: list[SlotRun]
    ) -> tuple[list[tuple[_Slot, list[int]]], list[tuple[SlotRun, int]], int]:
        """Put the next tokens of ``runs`` into the batch.

        Returns:
            What each slot adds, the batch rows whose logits are sampled (and for
            which run), and how many prompt tokens the batch holds.
        """
        batch = self._batch
        n = 0
        outputs: list[tuple[SlotRun, int]] = []
        added: list[tuple[_Slot, list[int]]] = []

        def add(slot: _Slot, tokens: list[int], logits_last: bool) -> None:
            nonlocal n
            start = len(slot.cells)  # each slot adds once per step
            for i, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = start + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot.seq
                batch.logits[n] = False
                n += 1
            if logits_last:
                batch.logits[n - 1] = True
            added.append((slot, tokens))

        generating = [r for r in runs if not r.pending]
        for run in generating:
            assert run.last is not None
            add(run._slot, [run.last], True)
            outputs.append((run, n - 1))
        # Prompts share what is left; while others generate, chunks stay small so
        # their next tokens are not held up by a whole batch of prompt.
        room = self._n_batch - n
        chunk = room if not generating else max(1, min(room, self._n_batch // 4))
        for run in runs:
            if not run.pending or room <= 0:
                continue
            take = min(len(run.pending), chunk, room)
            completes = take == len(run.pending)
            add(run._slot, run.pending[:take], completes)
            if completes:
                outputs.append((run, n - 1))
            room -= take
        batch.n_tokens = n
        return added, outputs, n - len(generating)

    def _decode(self, runs: list[SlotRun], *, abortable: bool) -> int:
        """``llama_decode`` the batch; llama.cpp's return code (2: aborted).

        A step that reads prompt can take seconds on a CPU: if every request in it
        is cancelled meanwhile, llama.cpp's abort callback stops it mid-way. (Not
        installed for pure generation steps: it is asked before every graph node.)
        """
        if self.governor is None:
            return self._decode_now(runs, abortable=abortable)
        with self.governor.decoding(self.ctx, llama_cpp.llama_set_n_threads):
            return self._decode_now(runs, abortable=abortable)

    def _decode_now(self, runs: list[SlotRun], *, abortable: bool) -> int:
        if not abortable:
            return int(llama_cpp.llama_decode(self.ctx, self._batch))
        callback = llama_cpp.ggml_abort_callback(lambda _data: all(map(_abandoned, runs)))
        llama_cpp.llama_set_abort_callback(self.ctx, callback, None)
        try:
            return int(llama_cpp.llama_decode(self.ctx, self._batch))
        finally:
            llama_cpp.llama_set_abort_callback(self.ctx, llama_cpp.ggml_abort_callback(), None)

    def _fail(self, runs: list[SlotRun], added: list[tuple[_Slot, list[int]]], code: int) -> None:
        """Under the lock: end ``runs`` after a failed decode and undo its partial cache."""
        aborted = code == 2 and all(map(_abandoned, runs))
        n = sum(len(tokens) for _slot, tokens in added)
        error = GenerationError(f"llama.cpp failed to decode a batch of {n} tokens (code {code})")
        for run in runs:
            run.finished = True
            run._queue.put(_DONE if aborted else error)
        for slot, _tokens in added:  # the cache may hold part of the batch
            if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, len(slot.cells), -1):
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
                slot.cells.clear()

    def _sample(self, run: SlotRun, index: int) -> None:
        """Sample ``run``'s next token from batch row ``index`` and hand it over."""
        token = run.sampler.sample(self.ctx, index)
        if run.sampler.top_logprobs is not None:  # only rows that asked pay for it
            run.logprobs.append(run.sampler.logprobs(self.ctx, index, token))
        run.sampled += 1
        run.last = token
        run._queue.put(token)
        eog = bool(llama_cpp.llama_vocab_is_eog(run.sampler.vocab, token))
        if eog or run.sampled >= run.max_tokens:
            with self._cond:
                run.finished = True
                run._queue.put(_DONE)
