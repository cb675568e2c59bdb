"""Sampled tokens' log-probabilities, from the decoder's ids to the runtime's types.

The decoding thread computes each logprob row's numbers (:meth:`Sampler.logprobs`,
ids only: cheap, no text); the request's own thread turns them into
:class:`~local_llm_runtime.types.TokenLogprob` here, with each token's text and
bytes, and hands them to a :class:`~local_llm_runtime.logprobs.LogprobCarrier`,
which attaches them to the chunks that show their text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import llama_cpp

from local_llm_runtime.logprobs import LogprobCarrier, token_text
from local_llm_runtime.types import TokenLogprob, TopLogprob

if TYPE_CHECKING:
    from local_llm_runtime.llama.batching import SlotRun

__all__ = ["tokens_with_logprobs"]


def tokens_with_logprobs(
    llm: llama_cpp.Llama, run: SlotRun, carrier: LogprobCarrier
) -> Iterator[int]:
    """``run``'s tokens; each one's :class:`TokenLogprob` goes to ``carrier`` before it.

    The end-of-generation token is not reported (it is no content, as with OpenAI).
    Token texts are the tokens' pieces with special tokens written out
    (``<|im_end|>`` as an alternative reads as such).
    """
    vocab = llm._model.vocab
    pieces: dict[int, tuple[str, tuple[int, ...]]] = {}

    def piece(token: int) -> tuple[str, tuple[int, ...]]:
        found = pieces.get(token)
        if found is None:
            raw = llm.detokenize([token], special=True)
            found = pieces[token] = (token_text(raw), tuple(raw))
        return found

    for token in run:
        logprob, top = run.logprobs.popleft()
        if not llama_cpp.llama_vocab_is_eog(vocab, token):
            text, raw = piece(token)
            alternatives = tuple(
                TopLogprob(token=piece(i)[0], logprob=value, bytes=piece(i)[1]) for i, value in top
            )
            carrier.add(TokenLogprob(text, logprob, raw, alternatives))
        yield token
