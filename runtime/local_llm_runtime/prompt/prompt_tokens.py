"""Tokenize a rendered chat prompt so that only the template's markup becomes control tokens.

A chat template writes control tokens (``<|im_start|>``, ``<|eot_id|>``,
``[INST]``, ``<start_of_turn>``...) as text, and the prompt must be tokenized
with special-token parsing for those to become their ids. Tokenizing the whole
rendered prompt that way would also turn the same text inside a message (a user
turn, a retrieved document, a tool result) into control tokens: the message
could close its own turn and open a system turn.

:class:`PromptTokenizer` separates the two, the way Hugging Face tokenizers do:

1. :meth:`~PromptTokenizer.protect` replaces, in every user-supplied string,
   each control-token text by one placeholder character from the Supplementary
   Private Use Areas (characters already in that range are escaped first), so
   the template sees ordinary text it cannot mistake for markup;
2. the template renders;
3. :meth:`~PromptTokenizer.tokenize` splits the rendered prompt at the real
   control-token texts (longest first; they can only come from the template),
   gives each its id, restores the placeholders in the text between them and
   tokenizes that text without special-token parsing.

Only tokens that llama.cpp parses *only* with ``special=True`` are protected:
CONTROL and UNKNOWN tokens. USER_DEFINED tokens (``<tool_call>``, ``<think>``
in Qwen) are split out by llama.cpp (and by Hugging Face) even in plain text,
so content gets the same ids either way, and templates that look for them in
content (``content.split('</think>')``) keep working.

Text between two control tokens is tokenized in one piece, exactly as llama.cpp
does with ``special=True`` (each fragment separately, the SPM space prefix and
the LSTRIP/RSTRIP token attributes included), so a prompt without control-token
text in its messages gets the same ids as before.

This module is pure: the model's plain-text tokenizer is passed in as a callable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PromptTokenizer", "SpecialToken"]

_FIRST = 0xF0000
"""First placeholder character (Supplementary Private Use Area-A)."""
_ESCAPE = "\U0010fffd"
"""Marks that the next character is literal (a Private Use character of the input)."""
_MAX_SPECIALS = 0x10FFFD - _FIRST
_PRIVATE = re.compile("[\U000f0000-\U0010ffff]")
_WHITESPACE = " \t\n\v\f\r"  # C isspace(), what llama.cpp strips for LSTRIP/RSTRIP


@dataclass(frozen=True)
class SpecialToken:
    """A token that llama.cpp parses from text only with ``special=True``.

    Attributes:
        id: The token id.
        text: Its text (``<|im_end|>``).
        lstrip: Whitespace before it is dropped (llama.cpp ``LLAMA_TOKEN_ATTR_LSTRIP``).
        rstrip: Whitespace after it is dropped (``LLAMA_TOKEN_ATTR_RSTRIP``).
    """

    id: int
    text: str
    lstrip: bool = False
    rstrip: bool = False


def _trie_pattern(texts: Iterable[str]) -> str:
    """A regex that matches any of ``texts``, the longest one at each position.

    Built from a trie, so thousands of tokens (Gemma's ``<unused…>``) cost one
    walk per position rather than one try per token.
    """
    trie: dict[str, Any] = {}
    for text in texts:
        node = trie
        for char in text:
            node = node.setdefault(char, {})
        node[""] = True

    def pattern(node: Mapping[str, Any]) -> str:
        branches = [re.escape(char) + pattern(child) for char, child in node.items() if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # the text may end here: prefer the longer match, then stop
            return "(?:" + body + ")?"
        return body

    return pattern(trie)


class PromptTokenizer:
    """Tokenizes rendered prompts with control tokens only where the template put them.

    Args:
        specials: The vocabulary's CONTROL and UNKNOWN tokens (texts parsed only
            with ``special=True``). Empty texts are ignored; for a text held by
            several ids the first wins.
        plain: Tokenizes text with no special-token parsing and no BOS/EOS
            (``llm.tokenize(text.encode(), add_bos=False, special=False)``).

    Raises:
        ValueError: If there are more special tokens than placeholder characters
            (131,069).
    """

    def __init__(self, specials: Iterable[SpecialToken], plain: Callable[[str], list[int]]) -> None:
        by_text: dict[str, SpecialToken] = {}
        for token in specials:
            if token.text and token.text not in by_text:
                by_text[token.text] = token
        if len(by_text) > _MAX_SPECIALS:
            raise ValueError(f"{len(by_text)} special tokens: more than placeholders available")
        self._by_text = by_text
        self._plain = plain
        self._placeholder = {text: chr(_FIRST + i) for i, text in enumerate(by_text)}
        self._literal = {chr(_FIRST + i): text for i, text in enumerate(by_text)}
        self._pattern = re.compile(_trie_pattern(by_text)) if by_text else None
        last = chr(_FIRST + len(by_text) - 1) if by_text else None
        self._restore_pattern = re.compile(
            re.escape(_ESCAPE) + "(.)" + (f"|[{chr(_FIRST)}-{last}]" if last else ""), re.DOTALL
        )

    @property
    def specials(self) -> Mapping[str, SpecialToken]:
        """The protected tokens by text."""
        return self._by_text

    # ---- before rendering ----------------------------------------------------

    def protect(self, text: str) -> str:
        """Make ``text`` unable to produce a control token: placeholders replace their texts.

        Characters of the Supplementary Private Use Areas already in ``text`` are
        escaped, so :meth:`restore` gives back exactly ``text``.
        """
        if _PRIVATE.search(text) is not None:
            text = _PRIVATE.sub(lambda m: _ESCAPE + m.group(), text)
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self._placeholder[m.group()], text)

    def protect_value(self, value: Any) -> Any:
        """:meth:`protect` every string in ``value`` (mappings, lists, tuples; keys too)."""
        if isinstance(value, str):
            return self.protect(value)
        if isinstance(value, Mapping):
            return {
                (self.protect(k) if isinstance(k, str) else k): self.protect_value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.protect_value(v) for v in value]
        return value

    def restore(self, text: str) -> str:
        """Undo :meth:`protect`: placeholders become their literal text again."""
        if _PRIVATE.search(text) is None:
            return text
        return self._restore_pattern.sub(
            lambda m: m.group(1) if m.group(1) is not None else self._literal[m.group()], text
        )

    # ---- after rendering -----------------------------------------------------

    def tokenize(self, prompt: str, *, bos: int | None = None, eos: int | None = None) -> list[int]:
        """Token ids of a rendered prompt.

        Args:
            prompt: The rendered prompt; its message text protected with :meth:`protect`.
            bos: A token id to put first (the model's BOS when it adds one), or ``None``.
            eos: A token id to put last (models that add EOS), or ``None``.

        Returns:
            The ids: control-token texts of the template as their ids, everything
            else (message text restored to its literal form) as plain text.
        """
        out: list[int] = [] if bos is None else [bos]
        for piece in self.split(prompt):
            if isinstance(piece, int):
                out.append(piece)
            elif piece:
                out.extend(self._plain(self.restore(piece)))
        if eos is not None:
            out.append(eos)
        return out

    def split(self, prompt: str) -> list[str | int]:
        """The prompt as text fragments and control-token ids, in order.

        Whitespace next to an LSTRIP/RSTRIP token is dropped as llama.cpp does.
        """
        if self._pattern is None:
            return [prompt]
        pieces: list[str | int] = []
        start = 0
        strip_next = False
        for match in self._pattern.finditer(prompt):
            token = self._by_text[match.group()]
            text = prompt[start : match.start()]
            if strip_next:
                text = text.lstrip(_WHITESPACE)
            if token.lstrip:
                text = text.rstrip(_WHITESPACE)
            pieces += [text, token.id]
            start = match.end()
            strip_next = token.rstrip
        tail = prompt[start:]
        pieces.append(tail.lstrip(_WHITESPACE) if strip_next else tail)
        return pieces
