"""Memory a GGUF model needs and memory the machine has: pure estimates, probes that never raise.

Shared by the in-process backend (:mod:`local_llm_runtime.llama.gpu` decides how many
layers to offload) and the store (``:auto`` quantization chooses the largest file that
fits, :mod:`local_llm_runtime.store.auto_quant`). Nothing here imports ``llama_cpp``:

* :class:`ModelShape` (from a GGUF header) and :func:`estimate` -- weights, KV cache and
  compute graph of a model, as Ollama's memory estimator counts them;
* :func:`probe_device_memory` -- free GPU memory (``nvidia-smi``, Apple unified memory);
* :func:`probe_host_memory` -- RAM a new process may use (``MemAvailable``, capped by the
  cgroup's ``memory.max``);
* :func:`llama_build_offloads` -- whether the installed llama.cpp build has a GPU
  backend, from its files (without importing it).
"""

from __future__ import annotations

import importlib.util
import math
import os
import platform
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_llm_runtime.store.gguf_meta import GGUFInfo, read_gguf_info

__all__ = [
    "DEFAULT_HEADROOM_BYTES",
    "KV_BYTES_PER_ELEM",
    "DeviceMemory",
    "HostMemory",
    "MemoryEstimate",
    "ModelShape",
    "Runner",
    "backend_name",
    "estimate",
    "human_bytes",
    "llama_build_offloads",
    "probe_device_memory",
    "probe_host_memory",
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
#: Bytes per cached KV element by ``LOCAL_LLM_KV_CACHE_TYPE`` (q8_0: 32 values in 34 bytes;
#: q4_0: in 18).
KV_BYTES_PER_ELEM: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


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
    def from_metadata(cls, metadata: Mapping[str, Any], file_bytes: int) -> ModelShape:
        """The shape from header metadata alone (a remote file's first bytes).

        Without the tensor infos the parameter count is unknown (``n_params = 0``), so
        :func:`estimate` counts the whole file as weights on the device (the safe side).

        Raises:
            ValueError: If the metadata lacks the block count, width or head count.
        """
        info = GGUFInfo(Path("header"), 3, dict(metadata), 0, 0)
        return cls._from_infos([info], file_bytes)

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


def backend_name(backend: str) -> str:
    """Display name of a backend (``cuda`` -> ``CUDA``)."""
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


@dataclass(frozen=True)
class HostMemory:
    """RAM a new allocation may use, from the kernel's view and the container's limit."""

    total_bytes: int
    available_bytes: int
    """``MemAvailable`` (what can be allocated without swapping), lowered to the room
    left under the cgroup's limit when that is smaller."""
    source: str
    """Where the figure came from: ``"MemAvailable"`` or ``"cgroup memory.max"``."""


_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number (~2**63)


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text("ascii", errors="replace")
    except OSError:
        return None


def _meminfo_kib(text: str, key: str) -> int | None:
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == key:
            parts = rest.split()
            if parts and parts[0].isdigit():
                return int(parts[0]) * 1024
    return None


def _cgroup_room(read: Callable[[str], str | None]) -> int | None:
    """Bytes left under the cgroup's memory limit (v2, else v1); ``None`` without a limit."""
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit_text = (read(limit_path) or "").strip()
        if not limit_text.isdigit():  # missing, or "max" (no limit)
            continue
        limit = int(limit_text)
        if limit >= _UNLIMITED:
            continue
        usage_text = (read(usage_path) or "").strip()
        usage = int(usage_text) if usage_text.isdigit() else 0
        return max(0, limit - usage)
    return None


def probe_host_memory(read: Callable[[str], str | None] = _read_text) -> HostMemory | None:
    """The RAM this process could still allocate. Never raises.

    Linux: ``MemAvailable`` of ``/proc/meminfo`` (the kernel's estimate of what can be
    allocated without swapping: free memory plus reclaimable caches), lowered to the
    room left under the cgroup limit (``memory.max - memory.current`` on cgroup v2,
    ``memory.limit_in_bytes - memory.usage_in_bytes`` on v1) inside a container.
    Elsewhere: ``sysconf(SC_AVPHYS_PAGES)`` where the platform has it, else ``None``.

    Args:
        read: Reads a text file, ``None`` when absent (tests pass fakes).

    Returns:
        The memory, or ``None`` when it cannot be told.
    """
    try:
        meminfo = read("/proc/meminfo")
        if meminfo:
            total = _meminfo_kib(meminfo, "MemTotal")
            available = _meminfo_kib(meminfo, "MemAvailable")
            if available is None:
                available = _meminfo_kib(meminfo, "MemFree")
            if total and available is not None:
                room = _cgroup_room(read)
                if room is not None and room < available:
                    return HostMemory(total, room, "cgroup memory.max")
                return HostMemory(total, available, "MemAvailable")
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page = os.sysconf("SC_PAGE_SIZE")
        total_pages = os.sysconf("SC_PHYS_PAGES")
        if pages > 0 and page > 0:
            return HostMemory(total_pages * page, pages * page, "sysconf")
    except (OSError, ValueError, AttributeError):
        return None
    return None


#: File names of llama.cpp's GPU backends (``libggml-cuda.so``, ``ggml-metal.dll``, ...).
_GPU_BACKEND_LIBS = ("ggml-cuda", "ggml-metal", "ggml-vulkan", "ggml-hip", "ggml-sycl", "ggml-musa")


def llama_build_offloads() -> bool | None:
    """Whether the installed llama-cpp-python has a GPU backend, without importing it.

    The build ships its backends as libraries next to the bindings
    (``llama_cpp/lib/libggml-cpu.so``, ``libggml-cuda.so``, ``libggml-metal.dylib``):
    a GPU library there means layers can be offloaded. (The backend's own answer,
    ``llama_supports_gpu_offload()``, needs ``llama_cpp`` imported, which the store may
    not do.)

    Returns:
        ``True``/``False``, or ``None`` when llama-cpp-python or its library folder is
        not found (a remote-only install, an unusual layout).
    """
    try:
        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or not spec.origin:
            return None
        lib = Path(spec.origin).parent / "lib"
        if not lib.is_dir():
            return None
        names = [entry.name.lower() for entry in lib.iterdir()]
    except (OSError, ImportError, ValueError):
        return None
    return any(marker in name for name in names for marker in _GPU_BACKEND_LIBS)
