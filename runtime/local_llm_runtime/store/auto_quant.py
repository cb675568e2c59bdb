"""Quantization chosen by the hardware: ``qwen2.5:7b-auto``, ``hf.co/Org/Repo:auto``.

``auto`` (also ``LOCAL_LLM_QUANT=auto`` for names that give no quantization) pulls
the largest quantization of the repository whose weights, KV cache for ``num_ctx``
and compute buffers fit the memory the model will run in:

* **Where it runs.** With a GPU that llama.cpp can offload to (a GPU library in the
  llama-cpp-python build and ``nvidia-smi``/Apple unified memory reporting it), the
  free GPU memory with every layer offloaded; otherwise the available RAM
  (``MemAvailable``, capped by the container's cgroup limit). Probes are
  :mod:`local_llm_runtime.memory`'s, shared with the GPU offload decision.
* **What it needs.** :func:`local_llm_runtime.memory.estimate` over the model's shape
  read from the first bytes of the smallest candidate's GGUF header (one ``Range``
  request: block count, KV heads and head sizes are the same in every quantization):
  the file's bytes (all weights), plus llama.cpp's KV cache
  ``2 x n_layer x num_ctx x n_embd_k_gqa x bytes(type)`` (``n_embd_k_gqa = n_head_kv x
  head_dim``; f16 by default, ``LOCAL_LLM_KV_CACHE_TYPE``), times ``LOCAL_LLM_NUM_PARALLEL``,
  plus Ollama's compute-graph estimate.
* **Headroom.** 512 MiB on a GPU (as the offload decision keeps); in RAM 512 MiB or
  10 % of what is available, whichever is more (the OS, the Python process, page cache).
* **Largest.** By file size: among the quantizations that fit, the biggest file keeps
  the most precision (F16 > Q8_0 > Q6_K > Q5_K_M > Q4_K_M > ...).

The choice is printed (a log line and a progress event) and recorded as the stored
model's ``quant``, so later runs resolve offline to the same file. When nothing fits,
:class:`~local_llm_runtime.errors.InsufficientMemoryError` lists every size and the
memory, and nothing is downloaded. When the memory cannot be told, the family's
default quantization is used, with a warning.

The decision (:func:`quant_files`, :func:`needs_for`, :func:`choose_quant`) is pure;
the I/O (listing, header bytes, memory probes) is at the edge (:func:`read_shape`,
:func:`probe_budget`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from local_llm_runtime.errors import (
    InsufficientMemoryError,
    InvalidModelFileError,
    QuantizationNotFoundError,
)
from local_llm_runtime.memory import (
    DEFAULT_HEADROOM_BYTES,
    DeviceMemory,
    HostMemory,
    ModelShape,
    backend_name,
    estimate,
    human_bytes,
    llama_build_offloads,
    probe_device_memory,
    probe_host_memory,
)
from local_llm_runtime.store.gguf_meta import read_gguf_metadata_prefix

if TYPE_CHECKING:
    from local_llm_runtime.store.hub import RepoListing


class HeaderSource(Protocol):
    """Where a repository's first bytes come from: the Hub's or ModelScope's client."""

    def read_prefix(
        self,
        repo_id: str,
        revision: str,
        path: str,
        limit: int,
        *,
        enough: Callable[[bytes], bool] | None = None,
    ) -> bytes: ...


__all__ = [
    "AUTO",
    "HEADER_LIMIT",
    "MemoryBudget",
    "MemoryProbe",
    "QuantChoice",
    "QuantFile",
    "QuantNeed",
    "budget_from",
    "choose_for_listing",
    "choose_quant",
    "needs_for",
    "probe_budget",
    "quant_files",
    "read_shape",
]

logger = logging.getLogger(__name__)

AUTO = "AUTO"
"""The quantization name that asks for this module's choice (upper case, as stored)."""

HEADER_LIMIT = 64 << 20
"""The most bytes read from the start of a GGUF file for its metadata (Qwen2.5's 152k-token
vocabulary ends at 5.9 MB)."""

RAM_HEADROOM_SHARE = 0.10
"""Share of available RAM kept free (at least :data:`DEFAULT_HEADROOM_BYTES`)."""


@dataclass(frozen=True)
class QuantFile:
    """One quantization of a repository: its file(s) and their total size."""

    quant: str
    size: int
    """Bytes over all shards."""
    paths: tuple[str, ...]


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a model will run in."""

    available_bytes: int
    headroom_bytes: int
    """Kept free on top of the estimate."""
    where: str
    """Human words: ``"free GPU memory (CUDA, NVIDIA H200)"``, ``"available RAM"``."""
    gpu: bool = False

    @property
    def usable_bytes(self) -> int:
        """What a model may take: available less headroom (never negative)."""
        return max(0, self.available_bytes - self.headroom_bytes)


@dataclass(frozen=True)
class QuantNeed:
    """What one quantization needs to run with ``num_ctx`` (bytes)."""

    file: QuantFile
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int

    @property
    def total_bytes(self) -> int:
        """Weights + KV cache + compute buffers."""
        return self.weights_bytes + self.kv_bytes + self.compute_bytes

    def describe(self) -> str:
        """``"4.4 GiB weights + 224.0 MiB KV + 304.0 MiB compute"``."""
        return (
            f"{human_bytes(self.weights_bytes)} weights + {human_bytes(self.kv_bytes)} KV + "
            f"{human_bytes(self.compute_bytes)} compute"
        )


@dataclass(frozen=True)
class QuantChoice:
    """The chosen quantization and why."""

    chosen: QuantNeed
    too_big: QuantNeed | None
    """The next larger quantization, which does not fit (``None``: the largest fits)."""
    budget: MemoryBudget
    num_ctx: int

    @property
    def quant(self) -> str:
        """The chosen quantization's name (``Q5_K_M``)."""
        return self.chosen.file.quant

    @property
    def reason(self) -> str:
        """One line: what was chosen, what it needs, the memory, and what would not fit."""
        line = (
            f"auto: {self.quant} ({self.chosen.describe()} for num_ctx {self.num_ctx}) fits "
            f"{human_bytes(self.budget.usable_bytes)} of {self.budget.where} "
            f"(after {human_bytes(self.budget.headroom_bytes)} headroom)"
        )
        if self.too_big is None:
            return line + "; it is the largest quantization"
        return (
            line + f"; {self.too_big.file.quant} ({human_bytes(self.too_big.total_bytes)}) "
            "would not"
        )


# ---- pure decision --------------------------------------------------------------------------


def quant_files(sizes: Mapping[str, int]) -> list[QuantFile]:
    """Every quantization a repository listing offers, smallest first.

    Uses the store's own file matching (:func:`~local_llm_runtime.store.hub.select_files`),
    so the file chosen here is the file :meth:`HubClient.resolve` then downloads; split
    models count all their shards.

    Args:
        sizes: Repository path -> bytes (the listing).

    Returns:
        One entry per quantization with a single file or a complete shard set.
    """
    from local_llm_runtime.store.hub import available_quants, select_files

    paths = list(sizes)
    out = []
    for quant in available_quants(paths):
        try:
            chosen = select_files(paths, quant)
        except QuantizationNotFoundError:  # an incomplete shard set
            continue
        out.append(QuantFile(quant, sum(sizes[p] for p in chosen), tuple(chosen)))
    return sorted(out, key=lambda f: (f.size, f.quant))


def needs_for(
    files: Sequence[QuantFile],
    shape: ModelShape,
    *,
    num_ctx: int,
    num_parallel: int = 1,
    kv_bytes_per_elem: float = 2.0,
) -> list[QuantNeed]:
    """What each quantization needs to run with ``num_ctx`` tokens of context.

    The shape's weights are replaced by each file's size with an unknown parameter
    count, so :func:`~local_llm_runtime.memory.estimate` counts the whole file as
    weights; KV and compute do not depend on the quantization.

    Args:
        files: The candidates (:func:`quant_files`).
        shape: The model's shape (any quantization's header).
        num_ctx: Context per sequence (tokens).
        num_parallel: Sequences decoded at once (each gets ``num_ctx`` of KV cache).
        kv_bytes_per_elem: 2 for the f16 cache (see ``KV_BYTES_PER_ELEM``).

    Returns:
        One need per file, in the same order.
    """
    out = []
    for file in files:
        est = estimate(
            replace(shape, file_bytes=file.size, n_params=0),
            num_ctx=num_ctx,
            num_parallel=num_parallel,
            kv_bytes_per_elem=kv_bytes_per_elem,
        )
        out.append(
            QuantNeed(file, file.size, est.kv_per_layer_bytes * est.n_layer, est.graph_bytes)
        )
    return out


def choose_quant(
    needs: Sequence[QuantNeed], budget: MemoryBudget, *, num_ctx: int, what: str = "the model"
) -> QuantChoice:
    """The largest quantization whose need fits the budget.

    Args:
        needs: What each candidate needs (:func:`needs_for`).
        budget: The memory it will run in.
        num_ctx: The context the needs were computed for (for the message).
        what: The model's name, for the error message.

    Returns:
        The choice, with the next larger candidate that does not fit.

    Raises:
        QuantizationNotFoundError: If there are no candidates.
        InsufficientMemoryError: If none fits (the message lists each need and the
            memory).
    """
    if not needs:
        raise QuantizationNotFoundError(f"{what} has no GGUF files to choose from.")
    ordered = sorted(needs, key=lambda n: (n.file.size, n.file.quant))
    fitting = [n for n in ordered if n.total_bytes <= budget.usable_bytes]
    if not fitting:
        listed = ", ".join(f"{n.file.quant} {human_bytes(n.total_bytes)}" for n in ordered)
        smallest = ordered[0]
        raise InsufficientMemoryError(
            f"No quantization of {what} fits {human_bytes(budget.usable_bytes)} of "
            f"{budget.where} (after {human_bytes(budget.headroom_bytes)} headroom): the "
            f"smallest, {smallest.file.quant}, needs {human_bytes(smallest.total_bytes)} "
            f"({smallest.describe()} for num_ctx {num_ctx}); all: {listed}. Nothing was "
            "downloaded. Free memory, lower num_ctx, or choose a smaller model.",
            needs={n.file.quant: n.total_bytes for n in ordered},
            available=budget.usable_bytes,
        )
    chosen = fitting[-1]
    larger = [n for n in ordered if n.file.size > chosen.file.size]
    return QuantChoice(chosen, larger[0] if larger else None, budget, num_ctx)


def budget_from(
    device: DeviceMemory | None, host: HostMemory | None, *, offloads: bool | None
) -> MemoryBudget | None:
    """The memory a model will run in, from what the probes found (pure).

    A GPU counts when one is found and the llama.cpp build can offload (``offloads`` is
    not ``False``; ``None``, unknown, trusts the device); else the available RAM.

    Returns:
        The budget, or ``None`` when neither memory is known.
    """
    if device is not None and offloads is not False:
        name = f", {device.name}" if device.name else ""
        return MemoryBudget(
            device.free_bytes,
            DEFAULT_HEADROOM_BYTES,
            f"free GPU memory ({backend_name(device.backend)}{name})",
            gpu=True,
        )
    if host is None:
        return None
    headroom = max(DEFAULT_HEADROOM_BYTES, int(host.available_bytes * RAM_HEADROOM_SHARE))
    return MemoryBudget(host.available_bytes, headroom, "available RAM")


# ---- I/O at the edge ------------------------------------------------------------------------


def probe_budget() -> MemoryBudget | None:
    """Probe this machine: :func:`budget_from` over the GPU and RAM probes. Never raises."""
    try:
        return budget_from(
            probe_device_memory(), probe_host_memory(), offloads=llama_build_offloads()
        )
    except Exception:  # a probe is advice, never a reason to fail a pull
        logger.debug("memory probe failed", exc_info=True)
        return None


def read_shape(
    hub: HeaderSource, listing: RepoListing, file: QuantFile, prefix: str = "hf.co/"
) -> ModelShape:
    """The model's shape from the first bytes of ``file``'s (first) GGUF, downloaded partly.

    One ``Range`` request, read until the metadata is complete (checked at 1, 2, 4, ...
    MiB; a 150k-token vocabulary ends near 6 MB) and never past :data:`HEADER_LIMIT`.

    Raises:
        InvalidModelFileError: If the bytes are not a GGUF header with a model shape.
        DownloadError: If the Hub cannot be reached.
    """
    path = file.paths[0]
    size = listing.sizes.get(path, 0)
    limit = min(HEADER_LIMIT, size) if size else HEADER_LIMIT
    data = hub.read_prefix(
        listing.repo_id,
        listing.revision,
        path,
        limit,
        enough=lambda head: _complete_header(head, path),
    )
    try:
        metadata = read_gguf_metadata_prefix(data, path)
    except InvalidModelFileError as exc:  # bad magic, version, lengths: not the file's fault here
        raise InvalidModelFileError(
            f"The GGUF header of {path} in {prefix}{listing.repo_id} cannot be read ({exc}); "
            "name a quantization instead of auto."
        ) from None
    if metadata is None:
        raise InvalidModelFileError(
            f"The GGUF header of {path} in {prefix}{listing.repo_id} is truncated or larger "
            f"than {human_bytes(HEADER_LIMIT)}; name a quantization instead of auto."
        )
    try:
        return ModelShape.from_metadata(metadata, file.size)
    except ValueError as exc:
        raise InvalidModelFileError(
            f"{path} of {prefix}{listing.repo_id}: {exc}; name a quantization instead of auto."
        ) from None


def _complete_header(head: bytes, path: str) -> bool:
    """Whether ``head`` holds the whole metadata; a corrupt header stops the read too."""
    try:
        return read_gguf_metadata_prefix(head, path) is not None
    except InvalidModelFileError:
        return True  # no more bytes can repair it: read_shape reports it


def choose_for_listing(
    hub: HeaderSource,
    listing: RepoListing,
    *,
    budget: MemoryBudget,
    num_ctx: int | None,
    num_parallel: int,
    kv_bytes_per_elem: float,
    default_num_ctx: int,
    prefix: str = "hf.co/",
) -> QuantChoice:
    """Choose among a listing's quantizations for this budget (reads one header).

    Args:
        hub: The Hub's or ModelScope's client (for the header bytes).
        listing: The repository at one commit.
        budget: The memory.
        num_ctx: The context to plan for; ``None``: ``default_num_ctx`` capped by the
            model's trained context.
        num_parallel: Sequences decoded at once.
        kv_bytes_per_elem: Bytes per KV element.
        default_num_ctx: The runtime's default context.
        prefix: How names of this source start (``hf.co/``, ``modelscope.cn/``).

    Raises:
        QuantizationNotFoundError: No GGUF files in the repository.
        InsufficientMemoryError: Nothing fits.
    """
    files = quant_files(listing.sizes)
    what = f"{prefix}{listing.repo_id}"
    if not files:
        from local_llm_runtime.store.hub import missing_gguf_hint

        hint = missing_gguf_hint(list(listing.sizes))
        raise QuantizationNotFoundError(f"{what} has no GGUF files to choose from.{hint}")
    shape = read_shape(hub, listing, files[0], prefix)
    if num_ctx is None:
        trained = shape.n_ctx_train
        num_ctx = min(default_num_ctx, trained) if trained > 0 else default_num_ctx
    needs = needs_for(
        files,
        shape,
        num_ctx=num_ctx,
        num_parallel=num_parallel,
        kv_bytes_per_elem=kv_bytes_per_elem,
    )
    return choose_quant(needs, budget, num_ctx=num_ctx, what=what)


MemoryProbe = Callable[[], "MemoryBudget | None"]
"""What :class:`~local_llm_runtime.store.library.ModelLibrary` calls for the memory."""
