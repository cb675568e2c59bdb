"""What prompt preparation needs from a model's vocabulary, read once per instance.

:func:`prompt_vocab` gives the :class:`PromptVocab` of a vocabulary-only
``Llama`` (see :meth:`~local_llm_runtime.llama.pool.ModelPool.vocab`): the
model's compiled chat template, its special tokens for the plain-text
tokenizer of :mod:`~local_llm_runtime.prompt.prompt_tokens`, and its BOS/EOS rules.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import llama_cpp

from local_llm_runtime.prompt.chat_template import ChatTemplate
from local_llm_runtime.prompt.output import Request
from local_llm_runtime.prompt.prompt_tokens import PromptTokenizer, SpecialToken

__all__ = ["PromptVocab", "prompt_vocab"]


@functools.lru_cache(maxsize=32)
def _compiled_template(
    source: str | None, bos: str, eos: str, identity: tuple[tuple[str, str], ...] = ()
) -> ChatTemplate:
    return ChatTemplate(source, bos_token=bos, eos_token=eos, metadata=dict(identity))


_IDENTITY_KEYS = ("general.architecture", "general.name")
"""The metadata a chat template consults (family traits, tool syntax, warnings)."""


def _template_for(
    llm: llama_cpp.Llama, metadata: Mapping[str, Any], source: str | None = None
) -> ChatTemplate:
    """The model's chat template (or ``source`` in its place), compiled once per text."""
    if source is None:
        own = metadata.get("tokenizer.chat_template")
        source = own if isinstance(own, str) else None
    return _compiled_template(
        source,
        _token_text(llm, llm.token_bos()),
        _token_text(llm, llm.token_eos()),
        tuple((k, str(metadata[k])) for k in _IDENTITY_KEYS if k in metadata),
    )


_CONTROL_ATTRS = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN


class PromptVocab:
    """What prompt preparation needs from a vocabulary, read once per instance.

    Built from the pool's vocabulary-only instance (:meth:`ModelPool.vocab`), so
    preparing a prompt never needs the weights or the model's lock. Tokenizing
    with llama.cpp only reads the vocabulary (each call has its own buffers),
    so one instance serves every thread.
    """

    def __init__(self, llm: llama_cpp.Llama) -> None:
        # Weak: this object is the value of a WeakKeyDictionary keyed by ``llm``.
        self._llm = weakref.ref(llm)
        self.template = _template_for(llm, llm.metadata)
        vocab = llm._model.vocab
        specials = []
        for token in range(int(llama_cpp.llama_vocab_n_tokens(vocab))):
            attr = int(llama_cpp.llama_vocab_get_attr(vocab, token))
            if attr & _CONTROL_ATTRS:
                specials.append(
                    SpecialToken(
                        id=token,
                        text=llama_cpp.llama_vocab_get_text(vocab, token).decode(
                            "utf-8", errors="replace"
                        ),
                        lstrip=bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP),
                        rstrip=bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP),
                    )
                )
        self.tokenizer = PromptTokenizer(specials, self._plain)
        self.protected_template = self.template.protecting(self.tokenizer.protect_value)
        self.add_eos = bool(llama_cpp.llama_vocab_get_add_eos(vocab))
        self.n_ctx_train = int(llm._model.n_ctx_train())

    def templates(self, source: str | None = None) -> tuple[ChatTemplate, ChatTemplate]:
        """``(template, protected_template)`` for a request.

        Args:
            source: A Jinja chat template that replaces the model's own (a Modelfile's
                ``TEMPLATE``, :attr:`LocalModel.template`), compiled once per text with
                this model's BOS/EOS and identity; ``None``: the model's own.
        """
        if source is None:
            return self.template, self.protected_template
        template = _template_for(self.llm, self.llm.metadata, source)
        return template, template.protecting(self.tokenizer.protect_value)

    @property
    def llm(self) -> llama_cpp.Llama:
        """The vocabulary instance (alive while the pool keeps it)."""
        llm = self._llm()
        if llm is None:  # pragma: no cover - the pool closed it during this request
            raise RuntimeError("the model's vocabulary was closed")
        return llm

    def _plain(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def tokens(self, request: Request) -> list[int]:
        """The prompt's token ids.

        A raw prompt parses special-token text; a rendered one only the
        template's (message text is plain text).
        """
        llm = self.llm
        add_special = _add_bos(llm, request.prompt, self.template.bos_token)
        if request.raw:
            return list(
                llm.tokenize(request.prompt.encode("utf-8"), add_bos=add_special, special=True)
            )
        return self.tokenizer.tokenize(
            request.prompt,
            bos=llm.token_bos() if add_special and llm.token_bos() >= 0 else None,
            eos=llm.token_eos() if add_special and self.add_eos and llm.token_eos() >= 0 else None,
        )


_prompt_vocabs: weakref.WeakKeyDictionary[llama_cpp.Llama, PromptVocab] = (
    weakref.WeakKeyDictionary()
)
_prompt_vocabs_lock = threading.Lock()


def prompt_vocab(llm: llama_cpp.Llama) -> PromptVocab:
    """The :class:`PromptVocab` of a vocabulary instance (built on first use)."""
    with _prompt_vocabs_lock:
        found = _prompt_vocabs.get(llm)
    if found is None:
        found = PromptVocab(llm)
        with _prompt_vocabs_lock:
            found = _prompt_vocabs.setdefault(llm, found)
    return found


def _token_text(llm: llama_cpp.Llama, token: int) -> str:
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace")


def _add_bos(llm: llama_cpp.Llama, prompt: str, bos_text: str) -> bool:
    if bos_text and prompt.startswith(bos_text):
        return False
    return bool(llama_cpp.llama_vocab_get_add_bos(llm._model.vocab))
