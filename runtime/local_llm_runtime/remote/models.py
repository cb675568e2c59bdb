"""Local model names -> the names a server serves, from its own model list.

A server names its models its own way: vLLM ``Qwen/Qwen2.5-7B-Instruct``,
llama-server and llama_cpp.server the GGUF path (or ``--alias``), Ollama and
``local-llm serve`` ``qwen2.5:7b``. :class:`ServedNames` maps the name a caller
uses to one of those, first match wins:

1. the explicit ``model_map`` (``LOCAL_LLM_MODEL_MAP``), sent as is;
2. the same id, exactly, then case-insensitively (an Ollama name without a tag
   also as ``:latest``);
3. the catalog's repository for the name (``qwen2.5:7b`` ->
   ``Qwen/Qwen2.5-7B-Instruct-GGUF``) without ``-GGUF`` and the quantization,
   against each served id's last path part, likewise reduced
   (``Qwen/Qwen2.5-7B-Instruct``, ``qwen2.5-7b-instruct-q4_k_m.gguf``);
   a ``hf.co/org/repo`` reference or a ``.gguf`` path (its file stem) the same way.

Several matches at one step, or none, raise
:class:`~local_llm_runtime.errors.ModelNotFoundError` listing what the server
has. The list is fetched once (``/v1/models`` or ``/api/tags``) and cached;
:meth:`ServedNames.forget` drops it (a 404 refreshes it once).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import PurePath

from local_llm_runtime.errors import LocalLLMError, ModelNotFoundError
from local_llm_runtime.remote.openai_dialect import ServedModel
from local_llm_runtime.store import catalog
from local_llm_runtime.store.names import FileRef, HubRef, OllamaName, parse_ref

__all__ = ["ServedNames", "reduced"]

_QUANT_TAIL = re.compile(r"[-._](?:" + catalog.QUANT_PATTERN.pattern + r")$", re.IGNORECASE)


def reduced(model_id: str) -> str:
    """An id's comparable core: last path part, lower case, no ``.gguf``/``-GGUF``/quant."""
    core = PurePath(model_id.replace("\\", "/")).name if "/" in model_id else model_id
    core = core.lower()
    if core.endswith(".gguf"):
        core = core[: -len(".gguf")]
    core = re.sub(r"-\d{5}-of-\d{5}$", "", core)  # split GGUF shards
    if ":" in core:  # a hub reference with a quant tag
        core = core.split(":", 1)[0]
    core = _QUANT_TAIL.sub("", core)
    if core.endswith("-gguf"):
        core = core[: -len("-gguf")]
    return _QUANT_TAIL.sub("", core)


def _catalog_core(name: str) -> str | None:
    """The reduced repository id a local name stands for, or ``None``."""
    try:
        ref = parse_ref(name)
    except (LocalLLMError, ValueError):
        return None
    if isinstance(ref, OllamaName):
        entry = catalog.lookup(ref)
        return reduced(entry.repo_id) if entry is not None else None
    if isinstance(ref, HubRef):
        return reduced(ref.repo_id)
    if isinstance(ref, FileRef):
        return reduced(ref.path.name)
    return None


class ServedNames:
    """The name map of one server (thread-safe; the list is fetched by the engine).

    Args:
        model_map: Explicit local name -> served name.
    """

    def __init__(self, model_map: Mapping[str, str] | None = None) -> None:
        self.model_map = dict(model_map or {})
        self._served: list[ServedModel] | None = None
        self._lock = threading.Lock()

    @property
    def known(self) -> bool:
        """Whether the server's list has been fetched."""
        return self._served is not None

    @property
    def served(self) -> list[ServedModel]:
        """The server's models (empty before the list was fetched)."""
        return list(self._served or ())

    def names(self) -> list[str]:
        """The served ids."""
        return [m.id for m in self._served or ()]

    def set_served(self, models: Sequence[ServedModel]) -> None:
        """Store the server's list (from ``/v1/models`` or ``/api/tags``)."""
        with self._lock:
            self._served = list(models)

    def forget(self) -> None:
        """Drop the cached list (it is fetched again on the next lookup)."""
        with self._lock:
            self._served = None

    def explicit(self, name: str) -> str | None:
        """The mapped name when ``model_map`` has one."""
        return self.model_map.get(name)

    def entry(self, served_id: str) -> ServedModel | None:
        """The listed model of that id."""
        for model in self._served or ():
            if model.id == served_id:
                return model
        return None

    def resolve(self, name: str) -> str:
        """The served name for ``name`` (the list must be fetched unless mapped).

        Raises:
            ModelNotFoundError: No served model matches, or several do equally.
        """
        mapped = self.explicit(name)
        if mapped is not None:
            return mapped
        ids = self.names()
        steps: list[list[str]] = [[i for i in ids if i == name]]
        lowered = name.lower()
        variants = {lowered}
        if ":" not in name and "/" not in name:
            variants.add(lowered + ":latest")
        steps.append([i for i in ids if i.lower() in variants])
        core = _catalog_core(name)
        if core:
            steps.append([i for i in ids if reduced(i) == core])
        for matches in steps:
            unique = sorted(set(matches))
            if len(unique) == 1:
                return unique[0]
            if len(unique) > 1:
                raise ModelNotFoundError(
                    f"The name {name!r} matches several models the server has: "
                    f"{', '.join(unique)}; name one of them, or map it with model_map / "
                    "LOCAL_LLM_MODEL_MAP."
                )
        raise self.not_found(name)

    def not_found(self, name: str, detail: str = "") -> ModelNotFoundError:
        """The error for a name the server does not serve, listing what it has."""
        have = ", ".join(sorted(self.names())) or "no models"
        extra = f" ({detail})" if detail else ""
        return ModelNotFoundError(
            f"The server does not serve {name!r}{extra}; it has: {have}. Use one of these "
            "names, or map yours with model_map / LOCAL_LLM_MODEL_MAP (local=served)."
        )
