r"""Model-family traits, as one table keyed by GGUF metadata.

What differs between model families and is not written in the GGUF file in a
form llama.cpp uses -- the tags of a reasoning block, the task prefixes an
embedding model was trained with -- lives here, as data, and every other module
asks :func:`traits_for` instead of branching on family names.

How to add a family: append a :class:`Family` row to :data:`FAMILIES` (before the
generic rows) that matches it by ``architectures`` (GGUF ``general.architecture``)
and/or ``template_markers`` (text of ``tokenizer.chat_template``, for traits the
architecture does not tell, as a Qwen2 finetune that reasons), and set the traits
it has. Each trait comes from the first matching row that sets it. Add the row to
the table-driven test in ``tests/unit/test_families.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["FAMILIES", "Family", "FamilyTraits", "traits_for"]

_NOMIC_PREFIXES = MappingProxyType({"query": "search_query: ", "document": "search_document: "})


@dataclass(frozen=True)
class Family:
    """One row of the table: which models it matches and the traits they share.

    A row matches a model when its ``general.architecture`` is one of
    :attr:`architectures` (any architecture when empty) and its chat template
    contains one of :attr:`template_markers` (any template when empty).
    """

    name: str
    """A name for messages and tests (``nomic-embed``)."""
    architectures: tuple[str, ...] = ()
    """GGUF ``general.architecture`` values."""
    template_markers: tuple[str, ...] = ()
    """Text of ``tokenizer.chat_template`` that identifies the family."""
    think_tags: tuple[str, str] | None = None
    """``(open, close)`` of the reasoning block the model writes before its answer."""
    embedding_prefixes: Mapping[str, str] | None = None
    """Task (``query``/``document``) -> the prefix the embedding model was trained with."""

    def matches(self, architecture: str, template: str) -> bool:
        """Whether a model of this architecture and chat template text is of this family."""
        if self.architectures and architecture not in self.architectures:
            return False
        return not self.template_markers or any(m in template for m in self.template_markers)


@dataclass(frozen=True)
class FamilyTraits:
    """The traits of one model, each from the first matching row that sets it."""

    families: tuple[str, ...] = ()
    """Names of the rows that matched, in table order."""
    think_tags: tuple[str, str] | None = None
    """``(open, close)`` reasoning tags; ``None``: the model does not reason in tags."""
    embedding_prefixes: Mapping[str, str] = field(default_factory=dict)
    """Task -> prefix; empty when the model has no such convention."""


FAMILIES: list[Family] = [
    Family(
        "nomic-embed",  # nomic-embed-text v1/v1.5 and v2-moe
        architectures=("nomic-bert", "nomic-bert-moe"),
        embedding_prefixes=_NOMIC_PREFIXES,
    ),
    Family(
        "think-tags",  # DeepSeek-R1 (and its Qwen/Llama distills), Qwen3, QwQ
        template_markers=("<think>",),
        think_tags=("<think>", "</think>"),
    ),
]
"""The table, most specific rows first (see the module docstring)."""


def traits_for(
    metadata: Mapping[str, Any] | None = None, *, template: str | None = None
) -> FamilyTraits:
    """Look a model up in :data:`FAMILIES`.

    Args:
        metadata: GGUF metadata (``general.architecture``; ``tokenizer.chat_template``
            when ``template`` is not given).
        template: The chat template text in use (the ChatML fallback for a model
            without one); defaults to the metadata's ``tokenizer.chat_template``.

    Returns:
        The model's traits (empty ones when no row matches).
    """
    meta = metadata or {}
    architecture = str(meta.get("general.architecture") or "")
    if template is None:
        source = meta.get("tokenizer.chat_template")
        template = source if isinstance(source, str) else ""
    names: list[str] = []
    think: tuple[str, str] | None = None
    prefixes: Mapping[str, str] | None = None
    for family in FAMILIES:
        if not family.matches(architecture, template):
            continue
        names.append(family.name)
        think = think or family.think_tags
        prefixes = prefixes if prefixes is not None else family.embedding_prefixes
    return FamilyTraits(tuple(names), think, dict(prefixes or {}))
