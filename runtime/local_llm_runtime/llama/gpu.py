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

from dataclasses import dataclass

from local_llm_runtime.memory import (
    DEFAULT_HEADROOM_BYTES,
    DeviceMemory,
    MemoryEstimate,
    ModelShape,
    Runner,
    backend_name,
    estimate,
    human_bytes,
    probe_device_memory,
)

# The estimates and probes live in local_llm_runtime.memory (the store's ``:auto``
# quantization uses them too, and the store may not import this backend); they are
# re-exported here for the loader and for existing callers.
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
    where = f"{human_bytes(free)} free on {backend_name(device.backend)}"
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
