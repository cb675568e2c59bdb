"""The catalog of Ollama-style names, loaded from ``catalog.json``.

The catalog is data: a family (``qwen2.5``) lists its size tags, the Hub
repository of each (and, under ``modelscope``, the ModelScope repository of each
where one exists: the fallback source), its default size and quantization, the variant words a tag
may carry (``7b-instruct``) and whether it is an embedding model. A tag is
``{size}[-{variant}...][-{quant}]``; ``latest`` is the default size. The quant
``auto`` (``qwen2.5:7b-auto``) lets the store choose by the machine's memory
(:mod:`local_llm_runtime.store.auto_quant`).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from local_llm_runtime.errors import ModelNotFoundError
from local_llm_runtime.store.names import DEFAULT_TAG, OllamaName

__all__ = ["CatalogEntry", "Family", "catalog_names", "families", "lookup", "suggest"]

QUANT_PATTERN = re.compile(r"(?:auto|i?q\d[a-z0-9_]*|f16|f32|bf16|ud-q\d[a-z0-9_]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Family:
    """One family of the catalog (``qwen2.5``)."""

    name: str
    description: str
    default_tag: str
    default_quant: str
    variants: tuple[str, ...]
    tags: dict[str, str]
    embedding: bool = False
    reasoning: bool = False
    modelscope: dict[str, str] | None = None
    """Size tag -> ModelScope repository (``None``: the family has none there)."""


@dataclass(frozen=True)
class CatalogEntry:
    """What a catalog name resolves to, before the Hub is asked anything."""

    family: str
    size: str
    repo_id: str
    quant: str
    embedding: bool
    reasoning: bool
    modelscope_repo_id: str | None = None
    """The same files on ModelScope (``org/repo``), or ``None``."""
    quant_in_tag: bool = False
    """Whether the tag named the quantization (else :attr:`quant` is the family's
    default, which ``LOCAL_LLM_QUANT`` overrides)."""


@cache
def families() -> dict[str, Family]:
    """Return the catalog's families, read once from the package data."""
    raw = json.loads(
        resources.files("local_llm_runtime.store").joinpath("catalog.json").read_text("utf-8")
    )
    out: dict[str, Family] = {}
    for name, spec in raw["families"].items():
        out[name] = Family(
            name=name,
            description=spec.get("description", ""),
            default_tag=spec["default_tag"],
            default_quant=spec["default_quant"],
            variants=tuple(spec.get("variants", ())),
            tags=dict(spec["tags"]),
            embedding=bool(spec.get("embedding", False)),
            reasoning=bool(spec.get("reasoning", False)),
            modelscope=dict(spec["modelscope"]) if "modelscope" in spec else None,
        )
    return out


def catalog_names() -> list[str]:
    """Every ``family:size`` name the catalog knows, for listings and suggestions."""
    return [f"{family.name}:{size}" for family in families().values() for size in family.tags]


def _parse_tag(family: Family, tag: str) -> tuple[str, str | None] | None:
    """Split a tag into (size, quant or ``None``); ``None`` when it does not fit the family."""
    if tag == DEFAULT_TAG:
        return family.default_tag, None
    size: str | None = None
    for candidate in sorted(family.tags, key=len, reverse=True):
        if tag == candidate or tag.startswith(candidate + "-"):
            size = candidate
            break
    if size is None:
        return None
    rest = tag[len(size) :].lstrip("-")
    quant: str | None = None
    words = rest.split("-") if rest else []
    # The quantization is the tail of the tag (it may itself contain '-', as in ud-q4_k_xl).
    for start in range(len(words)):
        tail = "-".join(words[start:])
        if QUANT_PATTERN.fullmatch(tail):
            quant = tail.upper()
            words = words[:start]
            break
    if any(word not in family.variants for word in words):
        return None
    return size, quant


def lookup(name: OllamaName) -> CatalogEntry | None:
    """Find a catalog entry for a name; ``None`` if the catalog does not know it."""
    if name.namespace is not None:
        return None
    family = families().get(name.name)
    if family is None:
        return None
    parsed = _parse_tag(family, name.tag)
    if parsed is None:
        return None
    size, quant = parsed
    return CatalogEntry(
        family=family.name,
        size=size,
        repo_id=family.tags[size],
        quant=quant or family.default_quant,
        embedding=family.embedding,
        reasoning=family.reasoning,
        modelscope_repo_id=(family.modelscope or {}).get(size),
        quant_in_tag=quant is not None,
    )


def suggest(text: str, extra: list[str] | None = None, limit: int = 3) -> list[str]:
    """Close matches for a mistyped name among catalog and store names."""
    choices = catalog_names() + [f"{f}:latest" for f in families()] + (extra or [])
    lowered = text.lower()
    if ":" not in lowered:
        lowered += ":latest"
    return difflib.get_close_matches(lowered, sorted(set(choices)), n=limit, cutoff=0.6)


def not_found(name: OllamaName, extra: list[str] | None = None) -> ModelNotFoundError:
    """Build the error for a name that neither the store nor the catalog knows."""
    family = families().get(name.name) if name.namespace is None else None
    if family is not None:
        sizes = ", ".join(family.tags)
        return ModelNotFoundError(
            f"Model '{name.key}' is not in the catalog: {name.name} comes in {sizes}.",
            suggest(name.key, extra),
        )
    return ModelNotFoundError(
        f"Model '{name.key}' not found locally or in the catalog; "
        "run 'local-llm list' to see local models, or use hf.co/{org}/{repo}.",
        suggest(name.key, extra),
    )
