"""A sampler with llama.cpp's grammar fast path, and the sampling options.

llama-cpp-python puts the grammar at the head of its sampler chain, so every
generated token checks *every* vocabulary entry against the grammar (151,936
candidates for Qwen 2.5) before the usual top-k/top-p/temperature steps run.
llama.cpp's own ``common_sampler`` and Ollama's sampler avoid that: they
sample without the grammar, ask the grammar about the one chosen token, and
only when it is rejected constrain the whole vocabulary and sample again.

The result has the same distribution as constraining first — for an allowed
token ``t`` with unconstrained probability ``p(t)`` and allowed mass ``S``,
``p(t) + (1 - S) * p(t) / S = p(t) / S`` — and greedy decoding picks the same
token, but most steps of a JSON answer cost one grammar check instead of a
vocabulary-wide one.

The token loop that calls it (prefix reuse, prompt evaluation, aborts) is
:class:`~local_llm_runtime.llama.batching.BatchDecoder`, for one request as for many.
"""

from __future__ import annotations

import ctypes
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import llama_cpp
import numpy as np

from local_llm_runtime.errors import GenerationError, InvalidOptionError

__all__ = ["GreedyPick", "Sampler", "SamplingOptions", "common_prefix", "token_logprobs"]


@dataclass(frozen=True)
class SamplingOptions:
    """Per-request sampling options (Ollama names and defaults)."""

    temperature: float = 0.8
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    """Seed of the random draw; a seeded request also skips prompt-prefix reuse, so the same
    request gives the same output whatever ran before (greedy ones included)."""
    num_predict: int = -1
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    """Report each sampled token's log-probability (see :func:`token_logprobs`)."""
    top_logprobs: int = 0
    """With ``logprobs``: how many of the most likely tokens to report with it."""


class Sampler:
    """Samples one token at a time from a llama.cpp context.

    The chain is penalties → greedy (``temperature == 0``) or top-k → typical →
    top-p → min-p → temperature → dist, the order llama-cpp-python uses. A
    grammar, when given, is applied lazily as described in the module docstring.

    Args:
        llm: The loaded model (its vocabulary and context are used).
        options: Sampling options.
        seed: Seed of the random draw.
        grammar: GBNF text with a ``root`` rule, or ``None``.

    Raises:
        InvalidOptionError: If llama.cpp cannot parse ``grammar``.
    """

    def __init__(
        self,
        llm: llama_cpp.Llama,
        options: SamplingOptions,
        seed: int,
        grammar: str | None = None,
    ) -> None:
        self._chain: Any = None
        self._grammar: Any = None
        vocab = llm._model.vocab
        self.vocab: Any = vocab
        """The model's vocabulary (llama.cpp pointer)."""
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        if grammar is not None:
            self._grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, grammar.encode("utf-8"), b"root"
            )
            if not self._grammar:
                raise InvalidOptionError(
                    "The tool or output schema could not be turned into a grammar llama.cpp "
                    "accepts; simplify the JSON schema."
                )
            # One candidate buffer reused for every token; samplers sort it in place.
            self._data = (llama_cpp.llama_token_data * self._n_vocab)()
            self._view = np.ctypeslib.as_array(self._data)
            self._view["id"] = np.arange(self._n_vocab, dtype=np.int32)
            self._fresh = self._view.copy()  # ids in order, p = 0: copied back before each pick
            self._candidates = llama_cpp.llama_token_data_array(
                data=self._data, size=self._n_vocab, selected=-1, sorted=False
            )
            self._one = llama_cpp.llama_token_data(0, 0.0, 0.0)
            self._single = llama_cpp.llama_token_data_array(
                data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False
            )
        self._chain = _chain(options, seed, self._n_vocab)
        self._greedy = (
            GreedyPick(options, self._n_vocab)
            if grammar is None and options.temperature <= 0
            else None
        )
        self.rejections = 0
        """How many sampled tokens the grammar rejected (each cost a full pass)."""
        self.top_logprobs: int | None = options.top_logprobs if options.logprobs else None
        """Alternatives to report with each token's log-probability; ``None``: no logprobs."""

    def logprobs(self, ctx: Any, index: int, token: int) -> tuple[float, list[tuple[int, float]]]:
        """``token``'s log-probability at batch row ``index`` and the row's most likely tokens.

        Computed from the row's raw logits (see :func:`token_logprobs`); call it
        after :meth:`sample` (samplers never write the context's logits).
        """
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(ctx, index), shape=(self._n_vocab,)
        )
        return token_logprobs(logits, token, self.top_logprobs or 0)

    def sample(self, ctx: Any, index: int = -1) -> int:
        """Sample a token from the logits of batch row ``index`` (the last by default).

        The token is accepted: it counts for repetition penalties and advances
        the grammar.
        """
        if self._greedy is not None:  # no 151,936-entry candidate array per token
            token = self._greedy.pick(llama_cpp.llama_get_logits_ith(ctx, index))
            self._greedy.accept(token)
            return token
        if self._grammar is None:  # all in C, as llama-cpp-python does: apply + accept
            return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
        token = self._pick(logits, constrained=False)
        if self._grammar is not None:
            if not self._allowed(token):
                self.rejections += 1
                token = self._pick(logits, constrained=True)
            llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def close(self) -> None:
        """Free the llama.cpp samplers (idempotent)."""
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)  # frees the samplers it owns
            self._chain = None
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def _pick(self, logits: Any, *, constrained: bool) -> int:
        view = self._view
        view[...] = self._fresh  # one contiguous copy restores the order samplers changed
        view["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        candidates = self._candidates
        candidates.data = self._data
        candidates.size = self._n_vocab
        candidates.selected = -1
        candidates.sorted = False
        pointer = ctypes.byref(candidates)
        if constrained:
            llama_cpp.llama_sampler_apply(self._grammar, pointer)
        llama_cpp.llama_sampler_apply(self._chain, pointer)
        if not 0 <= candidates.selected < candidates.size:
            raise GenerationError("llama.cpp's sampler chain selected no token")
        return int(candidates.data[candidates.selected].id)

    def _allowed(self, token: int) -> bool:
        self._one.id = token  # type: ignore[assignment]
        self._one.logit = 1.0
        self._one.p = 0.0
        self._single.size = 1
        self._single.selected = -1
        self._single.sorted = False
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._single))
        return not math.isinf(self._one.logit)


def _greedy(row: np.ndarray[Any, Any]) -> int:
    """llama.cpp's greedy pick (``llama_sampler_greedy_apply``) of a float32 logits row.

    llama.cpp keeps ``selected = 0`` and moves it to each later entry strictly greater:
    the first highest logit, and a NaN is never picked unless it is entry 0 (no entry
    compares greater than a NaN, nor a NaN greater than any). ``argmax`` agrees except
    on NaN, where it returns the first NaN; a NaN (a model overflowing in f16, say) costs
    one more pass, only then.
    """
    index = int(row.argmax())
    if not np.isnan(row[index]):
        return index
    if np.isnan(row[0]) or np.isnan(row).all():
        return 0
    return int(np.nanargmax(row))


class GreedyPick:
    """Greedy decoding with llama.cpp's repetition penalties, on the logits row in numpy.

    Picks the token llama.cpp's ``penalties -> greedy`` chain picks, bit for bit:
    the same float32 arithmetic on the same tokens (``llama_sampler_penalties_apply``:
    the last ``repeat_last_n`` accepted tokens, a logit ``<= 0`` multiplied by
    ``repeat_penalty`` and a positive one divided, then ``count * frequency_penalty +
    presence_penalty`` subtracted; ``repeat_last_n < 0`` counts as 0, as
    ``llama_sampler_init_penalties`` clamps it) and the same tie rule (the first
    highest logit). llama.cpp builds a candidate array of the whole vocabulary per
    token and looks every candidate up in a hash map of the recent tokens (about
    1 ms per row for Qwen's 151,936 tokens); here one argmax over the row, after
    copying it and penalising at most ``repeat_last_n`` entries of the copy. The
    logits buffer itself is never written.

    Args:
        options: The request's sampling options (``temperature`` is ignored: greedy).
        n_vocab: Vocabulary size (the length of a logits row).
    """

    def __init__(self, options: SamplingOptions, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self.last_n = max(int(options.repeat_last_n), 0)
        self.repeat = np.float32(options.repeat_penalty)
        self.frequency = np.float32(options.frequency_penalty)
        self.presence = np.float32(options.presence_penalty)
        no_op = options.repeat_penalty == 1.0 and self.frequency == 0 and self.presence == 0
        self.active = self.last_n > 0 and not no_op
        self.history: deque[int] = deque(maxlen=max(self.last_n, 1))
        self._scratch = np.empty(n_vocab if self.active else 0, dtype=np.float32)

    def pick(self, logits: Any) -> int:
        """The greedy token from a ``float*`` logits row of ``n_vocab`` entries."""
        row = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        if not self.active or not self.history:
            return _greedy(row)
        ids, counts = np.unique(np.fromiter(self.history, dtype=np.int64), return_counts=True)
        scratch = self._scratch
        np.copyto(scratch, row)
        values = scratch[ids]
        values = np.where(values <= 0, values * self.repeat, values / self.repeat)
        values -= counts.astype(np.float32) * self.frequency + self.presence
        scratch[ids] = values
        return _greedy(scratch)

    def accept(self, token: int) -> None:
        """Count ``token`` for the penalties of the next picks."""
        if self.active:
            self.history.append(token)


def _chain(options: SamplingOptions, seed: int, n_vocab: int) -> Any:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    steps = [
        llama_cpp.llama_sampler_init_penalties(
            n_vocab,
            options.repeat_last_n,
            options.repeat_penalty,
            options.frequency_penalty,
            options.presence_penalty,
        )
    ]
    if options.temperature <= 0:
        steps.append(llama_cpp.llama_sampler_init_greedy())
    else:
        steps += [
            llama_cpp.llama_sampler_init_top_k(options.top_k),
            llama_cpp.llama_sampler_init_typical(options.typical_p, 1),
            llama_cpp.llama_sampler_init_top_p(options.top_p, 1),
            llama_cpp.llama_sampler_init_min_p(options.min_p, 1),
            llama_cpp.llama_sampler_init_temp(options.temperature),
            llama_cpp.llama_sampler_init_dist(seed),
        ]
    for step in steps:
        llama_cpp.llama_sampler_chain_add(chain, step)
    return chain


def token_logprobs(
    logits: np.ndarray[Any, Any], token: int, k: int
) -> tuple[float, list[tuple[int, float]]]:
    """Log-probability of ``token`` and the ``k`` most likely tokens, from one row of logits.

    The distribution is the model's own: a log-softmax of the raw logits, before
    temperature, repetition penalties, top-k/top-p/min-p and any grammar. That is
    what OpenAI's API and vLLM (``logprobs_mode="raw_logprobs"``, its default)
    report, and llama-server's ``n_probs`` without ``post_sampling_probs``: the
    numbers say how likely the model found each token, whatever the sampler then
    did. So the sampled token need not be the most likely one (temperature above
    0, penalties, a grammar), and its log-probability is reported either way.

    Args:
        logits: The row's logits, shape ``(n_vocab,)`` (a view of llama.cpp's
            buffer: it is read, never written or copied whole).
        token: The sampled token id.
        k: How many of the most likely tokens to return (0: none).

    Returns:
        ``(logprob, [(token_id, logprob), ...])``: the alternatives most likely
        first (ties by token id), natural logs, each ``<= 0``.
    """
    top = float(np.max(logits))
    # log(sum(exp(x - max))) in float64: the float32 sum over 150k terms drifts.
    log_total = top + math.log(float(np.sum(np.exp(logits - top), dtype=np.float64)))
    chosen = min(0.0, float(logits[token]) - log_total)  # rounding never makes it positive
    if k <= 0:
        return chosen, []
    k = min(k, int(logits.shape[0]))
    ids = np.argpartition(-logits, k - 1)[:k] if k < logits.shape[0] else np.arange(k)
    ranked = sorted(((float(logits[i]), int(i)) for i in ids), key=lambda p: (-p[0], p[1]))
    return chosen, [(i, min(0.0, value - log_total)) for value, i in ranked]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
