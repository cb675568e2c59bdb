"""Decide how many layers to offload to the GPU (Ollama's ``num_gpu``).

Like Ollama's memory estimator, the decision is made before loading: read the
model's shape from its GGUF header, estimate what each offloaded layer costs
(weights plus its slice of the KV cache), reserve room for llama.cpp's compute
graph and a safety headroom, and offload as many layers as fit in the free
device memory. llama.cpp counts ``n_layer + 1`` layers: the repeating blocks
plus the output layer, so ``num_gpu = n_layer + 1`` means "everything".

The estimate is deliberately approximate and errs on the side of offloading
slightly too little: a failed GPU load is retried with :func:`fallback_layers`,
but an out-of-memory crash half way through a generation is worse.

Device probing never raises: :func:`probe_device_memory` returns ``None`` when
it cannot tell, and the caller falls back to the CPU.
"""

from __future__ import annotations

import math
import platform
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_llm_runtime.store.gguf_meta import GGUFInfo, read_gguf_info

__all__ = [
    "DEFAULT_HEADROOM_BYTES",
    "DeviceMemory",
    "MemoryEstimate",
    "ModelShape",
    "OffloadDecision",
    "Runner",
    "decide_offload",
    "estimate",
    "fallback_layers",
    "gpu_offload_supported",
    "human_bytes",
    "probe_device_memory",
]

MiB = 1 << 20
GiB = 1 << 30
#: Memory kept free on the device on top of the estimate (drivers, other processes).
DEFAULT_HEADROOM_BYTES = 512 * MiB
#: The smallest compute-graph reservation, whatever the model.
MIN_GRAPH_BYTES = 256 * MiB
#: llama.cpp's default logical batch (``n_batch``), which sizes the compute graph.
DEFAULT_BATCH = 512
#: Share of unified memory Metal lets the GPU use (Apple's recommended working set).
METAL_WORKING_SET = 0.75
PROBE_TIMEOUT_S = 5.0
_NVIDIA_SMI = (
    "nvidia-smi",
    "--query-gpu=name,memory.total,memory.free",
    "--format=csv,noheader,nounits",
)

#: A ``subprocess.run``-like callable (tests pass fakes).
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class DeviceMemory:
    """Memory of the accelerator llama.cpp will offload to."""

    backend: str
    """``"cuda"``, ``"metal"``, ``"vulkan"``, ``"cpu"``, ..."""
    total_bytes: int
    free_bytes: int
    name: str = ""


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a model that size its memory use, read from the GGUF header."""

    n_layer: int
    """Repeating blocks (``{arch}.block_count``)."""
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ctx_train: int
    file_bytes: int
    """Size of the model on disk, over all shards."""
    head_dim: int = 0
    """Key head size; ``0`` means ``n_embd // n_head``."""
    head_dim_v: int = 0
    """Value head size; ``0`` means the same as :attr:`head_dim`."""
    n_vocab: int = 0
    """Vocabulary size; ``0`` when unknown."""
    n_params: int = 0
    """Parameters over all shards; ``0`` when unknown."""
    arch: str = ""

    def __post_init__(self) -> None:
        if self.n_layer <= 0 or self.n_embd <= 0 or self.n_head <= 0:
            raise ValueError(
                f"implausible model shape: {self.n_layer} layers, {self.n_embd} dims, "
                f"{self.n_head} heads"
            )
        if self.head_dim <= 0:
            object.__setattr__(self, "head_dim", self.n_embd // self.n_head)
        if self.head_dim_v <= 0:
            object.__setattr__(self, "head_dim_v", self.head_dim)
        if self.n_head_kv <= 0:
            object.__setattr__(self, "n_head_kv", self.n_head)

    @classmethod
    def from_gguf(cls, paths: Sequence[Path]) -> ModelShape:
        """Read the shape of a model from its GGUF file(s).

        Args:
            paths: The model's files; all shards of a split model (the header of
                the first one holds the metadata, sizes are summed over all).

        Returns:
            The shape.

        Raises:
            InvalidModelFileError: If a file is not a readable GGUF file.
            ValueError: If the header lacks the block count, embedding length or
                head count.
        """
        if not paths:
            raise ValueError("no model files given")
        infos = [read_gguf_info(path) for path in paths]
        return cls._from_infos(infos, sum(Path(path).stat().st_size for path in paths))

    @classmethod
    def _from_infos(cls, infos: Sequence[GGUFInfo], file_bytes: int) -> ModelShape:
        meta = infos[0].metadata
        arch = str(meta.get("general.architecture", ""))
        n_layer = _int(meta.get(f"{arch}.block_count"))
        n_embd = _int(meta.get(f"{arch}.embedding_length"))
        n_head = _int(meta.get(f"{arch}.attention.head_count"))
        if not (n_layer and n_embd and n_head):
            raise ValueError(
                f"{infos[0].path}: the GGUF header lacks {arch}.block_count, "
                f"{arch}.embedding_length or {arch}.attention.head_count"
            )
        n_vocab = _int(meta.get(f"{arch}.vocab_size")) or _length(meta.get("tokenizer.ggml.tokens"))
        return cls(
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=_int(meta.get(f"{arch}.attention.head_count_kv")) or n_head,
            n_ctx_train=_int(meta.get(f"{arch}.context_length")),
            file_bytes=file_bytes,
            head_dim=_int(meta.get(f"{arch}.attention.key_length")),
            head_dim_v=_int(meta.get(f"{arch}.attention.value_length")),
            n_vocab=n_vocab,
            n_params=sum(info.parameter_count for info in infos),
            arch=arch,
        )


@dataclass(frozen=True)
class MemoryEstimate:
    """What a model needs on the device, by part (bytes)."""

    weights_per_layer_bytes: int
    """Weights of one repeating block."""
    output_layer_bytes: int
    """Weights of the output layer (the ``+1`` in ``n_layer + 1``)."""
    kv_per_layer_bytes: int
    """KV cache of one block for ``num_ctx * num_parallel`` positions."""
    graph_bytes: int
    """Compute-graph scratch buffers, reserved as soon as one layer is offloaded."""
    total_bytes: int
    """Everything on the device for a full offload (without headroom)."""
    n_layer: int

    @property
    def per_layer_bytes(self) -> int:
        """Cost of offloading one more repeating block (weights + KV)."""
        return self.weights_per_layer_bytes + self.kv_per_layer_bytes


@dataclass(frozen=True)
class OffloadDecision:
    """How many layers to offload, and why."""

    num_gpu: int
    """Layers to offload; ``n_layer + 1`` is everything including the output layer."""
    full: bool
    reason: str
    """One human line, e.g. ``"all 25 layers fit in 22.1 GiB free on CUDA (needs 1.2 GiB)"``."""
    estimate: MemoryEstimate | None = None
    device: DeviceMemory | None = None


def estimate(
    shape: ModelShape,
    *,
    num_ctx: int,
    num_parallel: int = 1,
    kv_bytes_per_elem: float = 2.0,
    n_batch: int = DEFAULT_BATCH,
) -> MemoryEstimate:
    """Estimate the device memory a model needs.

    Approximations (documented because they are not exact):

    * **Weights.** The header gives the parameter count and the file size, so the
      average bytes per parameter is ``file_bytes / n_params``. The token
      embedding (``n_vocab * n_embd`` parameters) stays in host memory in
      llama.cpp and is subtracted; the rest is spread evenly over the
      ``n_layer`` blocks. For a model with a separate output matrix this
      over-counts each block by ``output / n_layer`` (the safe direction). The
      output layer itself costs one ``n_vocab * n_embd`` matrix (a tied model
      gets a copy of the embedding on the device). Without a vocabulary size or
      parameter count, the file is split evenly into ``n_layer + 1`` layers.
    * **KV cache.** ``2 (K and V) * num_ctx * num_parallel * n_head_kv * head_dim
      * kv_bytes_per_elem`` per block (``head_dim`` averaged over K and V when
      they differ); 2 bytes per element is llama.cpp's default f16 cache.
    * **Compute graph.** Ollama's full-offload graph estimate for llama-like
      models, ``4 * n_batch * max(1 + 4 * n_embd + ctx * (1 + n_head),
      n_embd + n_vocab)`` with ``ctx = num_ctx * num_parallel``, and never less
      than 256 MiB. It grows with the context, the width and the vocabulary.

    Args:
        shape: The model.
        num_ctx: Context window per sequence.
        num_parallel: Sequences served at once (each gets ``num_ctx`` positions).
        kv_bytes_per_elem: Bytes per cached element (2 for f16, ~1.06 for q8_0).
        n_batch: Logical batch size used to size the compute graph.

    Returns:
        The estimate.

    Raises:
        ValueError: If ``num_ctx`` or ``num_parallel`` is not positive.
    """
    if num_ctx <= 0 or num_parallel <= 0:
        raise ValueError(
            f"num_ctx and num_parallel must be positive, got {num_ctx}, {num_parallel}"
        )
    n_layer = shape.n_layer
    if shape.n_vocab > 0 and shape.n_params > 0:
        bytes_per_param = shape.file_bytes / shape.n_params
        vocab_matrix = min(shape.n_vocab * shape.n_embd * bytes_per_param, shape.file_bytes / 2)
        weights_per_layer = math.ceil((shape.file_bytes - vocab_matrix) / n_layer)
        output_layer = math.ceil(vocab_matrix)
    else:
        weights_per_layer = math.ceil(shape.file_bytes / (n_layer + 1))
        output_layer = shape.file_bytes - weights_per_layer * n_layer
        output_layer = max(output_layer, 0)
    positions = num_ctx * num_parallel
    kv_per_layer = math.ceil(
        positions * shape.n_head_kv * (shape.head_dim + shape.head_dim_v) * kv_bytes_per_elem
    )
    graph = max(
        MIN_GRAPH_BYTES,
        4 * n_batch * (1 + 4 * shape.n_embd + positions * (1 + shape.n_head)),
        4 * n_batch * (shape.n_embd + shape.n_vocab),
    )
    total = n_layer * (weights_per_layer + kv_per_layer) + output_layer + graph
    return MemoryEstimate(
        weights_per_layer_bytes=weights_per_layer,
        output_layer_bytes=output_layer,
        kv_per_layer_bytes=kv_per_layer,
        graph_bytes=graph,
        total_bytes=total,
        n_layer=n_layer,
    )


def decide_offload(
    shape: ModelShape,
    *,
    num_ctx: int,
    requested: int | None,
    device: DeviceMemory | None,
    gpu_available: bool,
    headroom_bytes: int = DEFAULT_HEADROOM_BYTES,
    num_parallel: int = 1,
    kv_bytes_per_elem: float = 2.0,
) -> OffloadDecision:
    """Decide ``n_gpu_layers`` for a load.

    Args:
        shape: The model.
        num_ctx: Context window per sequence.
        requested: The user's ``num_gpu``: ``None`` or negative means automatic;
            ``0`` or more is used as given (clamped to ``n_layer + 1``).
        device: Memory of the device, from :func:`probe_device_memory`.
        gpu_available: Whether this llama.cpp build can offload at all, from
            :func:`gpu_offload_supported`.
        headroom_bytes: Memory left free on the device beyond the estimate.
        num_parallel: Sequences served at once.
        kv_bytes_per_elem: Bytes per KV-cache element.

    Returns:
        The decision, with a one-line reason.
    """
    est = estimate(
        shape, num_ctx=num_ctx, num_parallel=num_parallel, kv_bytes_per_elem=kv_bytes_per_elem
    )
    all_layers = shape.n_layer + 1
    if requested is not None and requested >= 0:
        num_gpu = min(requested, all_layers)
        reason = f"num_gpu={requested} set by the user"
        if num_gpu != requested:
            reason += f" (clamped to {all_layers}, all layers)"
        return OffloadDecision(num_gpu, num_gpu == all_layers, reason, est, device)
    if not gpu_available:
        return OffloadDecision(0, False, "CPU-only build", est, device)
    if device is None:
        return OffloadDecision(0, False, "no GPU memory information", est, device)
    free = device.free_bytes
    where = f"{human_bytes(free)} free on {_backend_name(device.backend)}"
    if est.total_bytes + headroom_bytes <= free:
        return OffloadDecision(
            all_layers,
            True,
            f"all {all_layers} layers fit in {where} (needs {human_bytes(est.total_bytes)})",
            est,
            device,
        )
    budget = free - headroom_bytes - est.graph_bytes
    layers = max(0, min(shape.n_layer, budget // est.per_layer_bytes)) if budget > 0 else 0
    if layers == 0:
        return OffloadDecision(
            0,
            False,
            f"no layer fits in {where} (one layer needs {human_bytes(est.per_layer_bytes)} "
            f"plus {human_bytes(est.graph_bytes + headroom_bytes)} reserved)",
            est,
            device,
        )
    return OffloadDecision(
        layers,
        False,
        f"{layers} of {all_layers} layers fit in {where} "
        f"(all would need {human_bytes(est.total_bytes + headroom_bytes)})",
        est,
        device,
    )


def fallback_layers(num_gpu: int, n_layer: int) -> list[int]:
    """The ``n_gpu_layers`` values to retry with after a GPU load failed.

    Halves the layer count until it reaches ``0`` (CPU only), which always ends
    the sequence. ``num_gpu`` above ``n_layer + 1`` or negative (llama.cpp's
    "all layers") counts as ``n_layer + 1``.

    Args:
        num_gpu: The layer count that failed.
        n_layer: Repeating blocks of the model.

    Returns:
        The retries, in order, without duplicates; empty when ``num_gpu`` was 0.
        For example ``fallback_layers(25, 24) == [12, 6, 3, 1, 0]``.
    """
    current = n_layer + 1 if num_gpu < 0 else min(num_gpu, n_layer + 1)
    sequence: list[int] = []
    while current > 0:
        current //= 2
        sequence.append(current)
    return sequence


def gpu_offload_supported() -> bool:
    """Whether the installed llama.cpp build can offload layers to a GPU.

    Returns:
        ``llama_cpp.llama_supports_gpu_offload()``, or ``False`` if it cannot be asked.
    """
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return False


def probe_device_memory(
    runner: Runner = subprocess.run,
    *,
    system: str | None = None,
    machine: str | None = None,
) -> DeviceMemory | None:
    """Find the GPU memory llama.cpp can offload to. Never raises.

    * Apple silicon (``Darwin`` on ``arm64``): Metal uses unified memory; the GPU
      may use about 75 % of it (Apple's recommended working set), so
      ``sysctl -n hw.memsize * 0.75`` is reported as both total and free.
    * Otherwise NVIDIA via ``nvidia-smi``. With several GPUs the one with the
      most free memory is reported (not the sum): llama.cpp splits layers over
      all visible GPUs in proportion to their free memory, so planning for the
      largest one alone never over-commits it, at the price of offloading less
      than could fit.
    * Anything else (no ``nvidia-smi``, AMD, Vulkan, a failure, a timeout after
      5 s, unreadable output): ``None``.

    Args:
        runner: A ``subprocess.run``-like callable (tests pass fakes).
        system: ``platform.system()`` override (for tests).
        machine: ``platform.machine()`` override (for tests).

    Returns:
        The device's memory, or ``None`` when it cannot be told.
    """
    try:
        system = system if system is not None else platform.system()
        machine = machine if machine is not None else platform.machine()
        if system == "Darwin" and machine in ("arm64", "aarch64"):
            return _probe_metal(runner)
        return _probe_cuda(runner)
    except Exception:
        return None


def human_bytes(size: float) -> str:
    """Format bytes in binary units ("512 B", "1.2 GiB")."""
    value = float(size)
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if abs(value) < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _run(runner: Runner, args: Sequence[str]) -> str | None:
    result = runner(
        list(args), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
    )
    if result.returncode != 0 or not isinstance(result.stdout, str):
        return None
    return result.stdout


def _probe_cuda(runner: Runner) -> DeviceMemory | None:
    output = _run(runner, _NVIDIA_SMI)
    if output is None:
        return None
    best: DeviceMemory | None = None
    for line in output.splitlines():
        parts = [part.strip() for part in line.rsplit(",", 2)]
        if len(parts) != 3:
            continue
        name, total, free = parts
        try:
            gpu = DeviceMemory("cuda", int(float(total) * MiB), int(float(free) * MiB), name)
        except ValueError:  # "[N/A]" and other noise
            continue
        if gpu.total_bytes <= 0 or gpu.free_bytes < 0:
            continue
        if best is None or gpu.free_bytes > best.free_bytes:
            best = gpu
    return best


def _probe_metal(runner: Runner) -> DeviceMemory | None:
    output = _run(runner, ("sysctl", "-n", "hw.memsize"))
    if output is None:
        return None
    memsize = int(output.strip())
    if memsize <= 0:
        return None
    usable = int(memsize * METAL_WORKING_SET)
    return DeviceMemory("metal", usable, usable, "Apple GPU (unified memory)")


def _backend_name(backend: str) -> str:
    return {"cuda": "CUDA", "metal": "Metal", "vulkan": "Vulkan", "cpu": "CPU"}.get(
        backend, backend
    )


def _int(value: Any) -> int:
    """An integer metadata value; per-layer arrays count by their largest entry."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return int(max(value))
    return 0


def _length(value: Any) -> int:
    """The length of an array metadata value (kept, or summarized by the reader)."""
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict) and isinstance(value.get("length"), int):
        return int(value["length"])
    return 0
