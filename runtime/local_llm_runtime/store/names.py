"""Parse and validate model references.

A reference is what a user types to name a model. Four forms are accepted:

* an Ollama-style name ``[namespace/]name[:tag]`` -- a catalog entry
  (``qwen2.5:7b``, ``qwen2.5:7b-instruct-q8_0``) or a name the user made with
  ``cp`` / ``create``; ``:latest`` is implied;
* a Hub reference ``hf.co/{org}/{repo}[:{QUANT}]`` (``huggingface.co/`` too);
* a ModelScope reference ``modelscope.cn/{org}/{repo}[:{QUANT}]``, the form Ollama
  accepts (``www.modelscope.cn/``, ``https://`` and the site's ``/models/`` URLs too);
* a path to a local ``.gguf`` file (``./m.gguf``, ``/models/m.gguf``, ``~/m.gguf``).

Parsing is pure: nothing here touches the file system or the network. Names
never become paths -- the store keys its records by the normalized name and
names its files by content hash -- and the grammar below rejects separators,
``..``, control characters and whitespace before anything else sees them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from local_llm_runtime.errors import InvalidModelNameError

__all__ = [
    "DEFAULT_TAG",
    "FileRef",
    "HubRef",
    "ModelRef",
    "OllamaName",
    "parse_name",
    "parse_ref",
]

DEFAULT_TAG = "latest"
MAX_REF_LENGTH = 300
_PART = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,78}[a-z0-9_])?")
_TAG = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9_])?")
_HUB_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_QUANT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,38}[A-Za-z0-9])?")
_HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")
_MODELSCOPE_PREFIXES = tuple(
    f"{scheme}{host}/"
    for scheme in ("https://", "http://", "")
    for host in ("www.modelscope.cn", "modelscope.cn")
)
MODELSCOPE_PREFIX = "modelscope.cn/"
"""How a ModelScope reference starts in a stored name (``modelscope.cn/Org/Repo:Q4_K_M``)."""
_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\", "\\")
_DEFAULT_NAMESPACE = "library"


@dataclass(frozen=True)
class OllamaName:
    """An Ollama-style name: a catalog entry or a name in the local store."""

    name: str
    """The model name, lower case (``qwen2.5``)."""
    tag: str = DEFAULT_TAG
    """The tag, lower case (``7b``, ``7b-instruct-q8_0``, ``latest``)."""
    namespace: str | None = None
    """Optional namespace (``me/assistant``); ``library/`` is dropped as Ollama does."""

    @property
    def key(self) -> str:
        """The canonical spelling, used as the store key (``qwen2.5:latest``)."""
        base = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{base}:{self.tag}"

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class HubRef:
    """A GGUF repository on a model hub, optionally with a quantization."""

    repo_id: str
    """``org/repo`` as spelled by the user (the Hub is case-insensitive)."""
    quant: str | None = None
    """Requested quantization in upper case (``Q4_K_M``); ``None`` means the default."""
    source: Literal["hf", "modelscope"] = "hf"
    """Which hub: the Hugging Face Hub (``hf.co/``) or ModelScope (``modelscope.cn/``)."""

    @property
    def key(self) -> str:
        """The canonical spelling (``hf.co/Org/Repo-GGUF:Q4_K_M``), quant defaulted later."""
        prefix = MODELSCOPE_PREFIX if self.source == "modelscope" else "hf.co/"
        return f"{prefix}{self.repo_id}" + (f":{self.quant}" if self.quant else "")

    def with_quant(self, quant: str) -> HubRef:
        """Return the same reference with an explicit quantization."""
        return HubRef(self.repo_id, quant.upper(), self.source)

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class FileRef:
    """A path to a local GGUF file, used as it is."""

    path: Path
    """The path as given, with ``~`` expanded (not resolved: no I/O while parsing)."""

    @property
    def key(self) -> str:
        """The path as text."""
        return str(self.path)

    def __str__(self) -> str:
        return self.key


ModelRef = OllamaName | HubRef | FileRef


def _check_characters(text: str) -> None:
    if not text:
        raise InvalidModelNameError("Empty model name: give a name like 'qwen2.5:7b'.")
    if len(text) > MAX_REF_LENGTH:
        raise InvalidModelNameError(
            f"Model name is {len(text)} characters long; the limit is {MAX_REF_LENGTH}."
        )
    for char in text:
        if char.isspace():
            raise InvalidModelNameError(f"Model name {text!r} contains whitespace.")
        if unicodedata.category(char)[0] == "C":
            raise InvalidModelNameError(f"Model name {text!r} contains a control character.")


def _invalid(text: str, why: str) -> InvalidModelNameError:
    return InvalidModelNameError(
        f"Invalid model name {text!r}: {why}. Use a name like 'qwen2.5:7b', "
        "'hf.co/org/repo-GGUF:Q4_K_M' or a path ending in '.gguf'."
    )


def _looks_like_path(text: str) -> bool:
    if text.startswith(_PATH_PREFIXES) or text.lower().endswith(".gguf"):
        return True
    return len(text) > 2 and text[1] == ":" and text[0].isalpha() and text[2] in "/\\"


_BLOB_NAME = re.compile(r"sha256[-:][0-9a-f]{64}")
"""A content-addressed blob's file name, as Ollama's store (``~/.ollama/models/blobs``) and
this one name GGUF files: ``ollama show --modelfile`` writes ``FROM`` such a path."""


def _parse_path(text: str) -> FileRef:
    path = Path(text).expanduser()
    if not text.lower().endswith(".gguf") and not _BLOB_NAME.fullmatch(path.name):
        raise _invalid(
            text,
            "a path must point to a '.gguf' file (or an Ollama blob, "
            ".../models/blobs/sha256-<hex>)",
        )
    return FileRef(path)


def _parse_hub(text: str, rest: str, source: Literal["hf", "modelscope"] = "hf") -> HubRef:
    hub = "ModelScope" if source == "modelscope" else "Hub"
    prefix = MODELSCOPE_PREFIX if source == "modelscope" else "hf.co/"
    repo, sep, quant = rest.partition(":")
    if sep and not quant:
        raise _invalid(text, "empty quantization after ':'")
    parts = repo.split("/")
    if len(parts) != 2:
        raise _invalid(text, f"a {hub} reference is '{prefix}{{org}}/{{repo}}[:{{QUANT}}]'")
    for part in parts:
        if not _HUB_PART.fullmatch(part) or ".." in part or "--" in part:
            raise _invalid(text, f"{part!r} is not a valid {hub} organisation or repository name")
    if not quant or quant.lower() == DEFAULT_TAG:
        return HubRef(repo, None, source)
    if not _QUANT.fullmatch(quant):
        raise _invalid(text, f"{quant!r} is not a quantization name (like Q4_K_M)")
    return HubRef(repo, quant.upper(), source)


def parse_name(text: str) -> OllamaName:
    """Parse an Ollama-style name ``[namespace/]name[:tag]``.

    This is the only form allowed for names the user creates (``cp``/``create``).

    Args:
        text: The name to parse; upper case is folded to lower case.

    Returns:
        The parsed name, with ``latest`` as the tag when none is given.

    Raises:
        InvalidModelNameError: If the text is not a valid name.
    """
    _check_characters(text)
    lowered = text.lower()
    if _looks_like_path(lowered) or lowered.startswith(_HUB_PREFIXES + _MODELSCOPE_PREFIXES):
        raise _invalid(text, "expected a plain name, not a path or a Hub reference")
    if lowered.count(":") > 1:
        raise _invalid(text, "more than one ':'")
    base, sep, tag = lowered.partition(":")
    if sep and not tag:
        raise _invalid(text, "empty tag after ':'")
    tag = tag or DEFAULT_TAG
    segments = base.split("/")
    if len(segments) > 2:
        raise _invalid(text, "only one '/' (namespace/name) is allowed")
    namespace = segments[0] if len(segments) == 2 else None
    name = segments[-1]
    for label, part in (("namespace", namespace), ("name", name)):
        if part is None:
            continue
        if not part:
            raise _invalid(text, f"empty {label}")
        if not _PART.fullmatch(part) or ".." in part:
            raise _invalid(
                text,
                f"the {label} {part!r} may only use a-z, 0-9, '.', '_' and '-', "
                "must start and end with a letter or digit, and cannot contain '..'",
            )
    if not _TAG.fullmatch(tag) or ".." in tag:
        raise _invalid(
            text,
            f"the tag {tag!r} may only use a-z, 0-9, '.', '_' and '-' and cannot contain '..'",
        )
    if namespace == _DEFAULT_NAMESPACE:
        namespace = None
    return OllamaName(name=name, tag=tag, namespace=namespace)


def parse_ref(text: str) -> ModelRef:
    """Parse any model reference.

    Args:
        text: An Ollama-style name, an ``hf.co/`` or ``modelscope.cn/`` reference or a
            ``.gguf`` path.

    Returns:
        The parsed reference. Nothing is looked up: use the store to resolve it.

    Raises:
        InvalidModelNameError: If the text is not a valid reference.
    """
    if not isinstance(text, str):
        raise InvalidModelNameError(f"A model name must be a string, not {type(text).__name__}.")
    text = text.strip()
    _check_characters(text)
    lowered = text.lower()
    for prefix in _HUB_PREFIXES:
        if lowered.startswith(prefix):
            return _parse_hub(text, text[len(prefix) :])
    for prefix in _MODELSCOPE_PREFIXES:
        if lowered.startswith(prefix):
            rest = text[len(prefix) :]
            if rest.lower().startswith("models/") and rest.partition(":")[0].count("/") == 2:
                rest = rest[len("models/") :]  # the site's page URL: modelscope.cn/models/org/repo
            return _parse_hub(text, rest, "modelscope")
    if _looks_like_path(text):
        return _parse_path(text)
    return parse_name(text)
