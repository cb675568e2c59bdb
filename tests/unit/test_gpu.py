"""GPU offload planning: estimator math, offload decisions, fallbacks and device probing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from local_llm_runtime.llama.gpu import (
    DEFAULT_HEADROOM_BYTES,
    DeviceMemory,
    ModelShape,
    decide_offload,
    estimate,
    fallback_layers,
    gpu_offload_supported,
    human_bytes,
    probe_device_memory,
)
from local_llm_runtime.store.gguf_meta import read_gguf_info

MiB = 1 << 20
GiB = 1 << 30

# A hand-made model: 1 byte per parameter, 20 MiB per block, a 32000 x 1024 vocabulary.
VOCAB_MATRIX = 32000 * 1024
FILE_BYTES = 10 * 20 * MiB + VOCAB_MATRIX
SHAPE = ModelShape(
    n_layer=10,
    n_embd=1024,
    n_head=16,
    n_head_kv=4,
    n_ctx_train=4096,
    file_bytes=FILE_BYTES,
    n_vocab=32000,
    n_params=FILE_BYTES,
    arch="llama",
)
GRAPH = 256 * MiB  # the floor: the formula gives less for this shape at 4096
PER_LAYER = 20 * MiB + 4 * MiB  # weights + KV at num_ctx=4096


def cuda(free: int, total: int = 80 * GiB) -> DeviceMemory:
    return DeviceMemory("cuda", total, free, "Fake GPU")


def auto(free: int, **kwargs: Any) -> Any:
    kwargs.setdefault("num_ctx", 4096)
    return decide_offload(SHAPE, requested=None, device=cuda(free), gpu_available=True, **kwargs)


# --- shape -------------------------------------------------------------------------------


def test_shape_defaults() -> None:
    assert SHAPE.head_dim == 64  # n_embd // n_head
    assert SHAPE.head_dim_v == 64
    shape = ModelShape(
        n_layer=2, n_embd=64, n_head=4, n_head_kv=0, n_ctx_train=0, file_bytes=1, head_dim=32
    )
    assert (shape.head_dim, shape.head_dim_v, shape.n_head_kv) == (32, 32, 4)


def test_shape_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="implausible"):
        ModelShape(n_layer=0, n_embd=64, n_head=4, n_head_kv=4, n_ctx_train=0, file_bytes=1)


def test_shape_from_tiny_gguf(tiny_gguf: Path) -> None:
    shape = ModelShape.from_gguf([tiny_gguf])
    info = read_gguf_info(tiny_gguf)
    assert shape.arch == "llama"
    assert (shape.n_layer, shape.n_embd, shape.n_head, shape.n_head_kv) == (2, 64, 4, 4)
    assert (shape.head_dim, shape.head_dim_v) == (16, 16)
    assert shape.n_ctx_train == 2048
    assert shape.n_vocab == 3 + 256 + 27 + 10
    assert shape.n_params == info.parameter_count
    assert shape.file_bytes == tiny_gguf.stat().st_size


def test_shape_from_split_gguf(tiny_gguf_factory: Callable[..., Path], tiny_gguf: Path) -> None:
    first = tiny_gguf_factory(split_max_tensors=6)
    shards = sorted(first.parent.glob("*.gguf"))
    assert len(shards) > 1
    shape = ModelShape.from_gguf(shards)
    assert shape.n_layer == 2
    assert shape.file_bytes == sum(s.stat().st_size for s in shards)
    assert shape.n_params == read_gguf_info(tiny_gguf).parameter_count


def test_shape_reads_key_and_value_length(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "mla.gguf"
    writer = gguf.GGUFWriter(str(path), "deepseek2")
    writer.add_block_count(3)
    writer.add_embedding_length(256)
    writer.add_head_count(8)
    writer.add_head_count_kv([1, 2, 2])  # per-layer array: the largest counts
    writer.add_key_length(192)
    writer.add_value_length(128)
    writer.add_context_length(8192)
    writer.add_tensor("token_embd.weight", np.zeros((10, 256), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shape = ModelShape.from_gguf([path])
    assert (shape.head_dim, shape.head_dim_v, shape.n_head_kv) == (192, 128, 2)
    assert shape.n_ctx_train == 8192
    kv = estimate(shape, num_ctx=100).kv_per_layer_bytes
    assert kv == 100 * 2 * (192 + 128) * 2


def test_shape_without_required_keys(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "bare.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("x", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="embedding_length"):
        ModelShape.from_gguf([path])
    with pytest.raises(ValueError, match="no model files"):
        ModelShape.from_gguf([])


# --- estimate ----------------------------------------------------------------------------


def test_estimate_math() -> None:
    est = estimate(SHAPE, num_ctx=4096)
    assert est.weights_per_layer_bytes == 20 * MiB
    assert est.output_layer_bytes == VOCAB_MATRIX
    # 2 (K, V) * 4096 positions * 4 kv heads * 64 dims * 2 bytes
    assert est.kv_per_layer_bytes == 2 * 4096 * 4 * 64 * 2 == 4 * MiB
    assert est.graph_bytes == GRAPH
    assert est.per_layer_bytes == PER_LAYER
    assert est.total_bytes == 10 * PER_LAYER + VOCAB_MATRIX + GRAPH
    assert est.n_layer == 10


def test_estimate_kv_scales_with_parallel_and_cache_type() -> None:
    base = estimate(SHAPE, num_ctx=4096).kv_per_layer_bytes
    assert estimate(SHAPE, num_ctx=4096, num_parallel=4).kv_per_layer_bytes == 4 * base
    assert estimate(SHAPE, num_ctx=8192).kv_per_layer_bytes == 2 * base
    assert estimate(SHAPE, num_ctx=4096, kv_bytes_per_elem=1.0).kv_per_layer_bytes == base // 2


def test_estimate_graph_grows_with_context() -> None:
    ctx = 16384
    expected = 4 * 512 * (1 + 4 * 1024 + ctx * (1 + 16))
    assert expected > GRAPH
    assert estimate(SHAPE, num_ctx=ctx).graph_bytes == expected


def test_estimate_without_vocabulary_splits_file_evenly() -> None:
    shape = ModelShape(n_layer=10, n_embd=64, n_head=4, n_head_kv=4, n_ctx_train=0, file_bytes=1100)
    est = estimate(shape, num_ctx=16)
    assert est.weights_per_layer_bytes == 100
    assert est.output_layer_bytes == 100


def test_estimate_rejects_bad_context() -> None:
    with pytest.raises(ValueError, match="num_ctx"):
        estimate(SHAPE, num_ctx=0)


# --- decide_offload ----------------------------------------------------------------------


def test_plenty_of_memory_offloads_everything() -> None:
    decision = auto(22 * GiB)
    assert decision.num_gpu == 11
    assert decision.full is True
    assert decision.reason.startswith("all 11 layers fit in 22.0 GiB free on CUDA (needs ")
    assert decision.estimate is not None
    assert decision.device == cuda(22 * GiB)


def test_exact_fit_is_full() -> None:
    total = estimate(SHAPE, num_ctx=4096).total_bytes
    assert auto(total + DEFAULT_HEADROOM_BYTES).full is True
    assert auto(total + DEFAULT_HEADROOM_BYTES - 1).num_gpu == 10


def test_tight_memory_offloads_a_computed_part() -> None:
    free = DEFAULT_HEADROOM_BYTES + GRAPH + 7 * PER_LAYER + MiB
    decision = auto(free)
    assert decision.num_gpu == 7
    assert decision.full is False
    assert decision.reason.startswith("7 of 11 layers fit in ")
    assert auto(free - 2 * MiB).num_gpu == 6


def test_output_layer_only_with_all_blocks() -> None:
    # every block fits, the output layer does not
    free = DEFAULT_HEADROOM_BYTES + GRAPH + 10 * PER_LAYER + VOCAB_MATRIX // 2
    decision = auto(free)
    assert decision.num_gpu == 10
    assert decision.full is False


def test_too_little_memory_offloads_nothing() -> None:
    decision = auto(600 * MiB)
    assert decision.num_gpu == 0
    assert decision.full is False
    assert decision.reason.startswith("no layer fits in 600.0 MiB free on CUDA")
    # headroom and graph fit, one block does not
    assert auto(DEFAULT_HEADROOM_BYTES + GRAPH + PER_LAYER - 1).num_gpu == 0


def test_headroom_is_respected() -> None:
    free = DEFAULT_HEADROOM_BYTES + GRAPH + 7 * PER_LAYER + MiB
    assert auto(free, headroom_bytes=DEFAULT_HEADROOM_BYTES + 3 * PER_LAYER).num_gpu == 4


def test_bigger_context_offloads_fewer_layers() -> None:
    free = 2 * GiB
    small, big = auto(free, num_ctx=2048), auto(free, num_ctx=32768)
    assert big.num_gpu < small.num_gpu
    assert auto(free, num_ctx=4096, num_parallel=8).num_gpu < auto(free, num_ctx=4096).num_gpu


def test_no_gpu_backend_means_cpu() -> None:
    decision = decide_offload(
        SHAPE, num_ctx=4096, requested=None, device=cuda(80 * GiB), gpu_available=False
    )
    assert (decision.num_gpu, decision.full, decision.reason) == (0, False, "CPU-only build")
    decision = decide_offload(SHAPE, num_ctx=4096, requested=-1, device=None, gpu_available=True)
    assert (decision.num_gpu, decision.reason) == (0, "no GPU memory information")


@pytest.mark.parametrize(
    ("requested", "expected", "full"),
    [(0, 0, False), (5, 5, False), (11, 11, True), (999, 11, True)],
)
def test_manual_override(requested: int, expected: int, full: bool) -> None:
    # the user's choice wins even without a GPU backend or memory figures
    decision = decide_offload(
        SHAPE, num_ctx=4096, requested=requested, device=None, gpu_available=False
    )
    assert decision.num_gpu == expected
    assert decision.full is full
    assert decision.reason.startswith(f"num_gpu={requested} set by the user")
    assert ("clamped" in decision.reason) is (requested == 999)


# --- fallback_layers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_gpu", "n_layer", "expected"),
    [
        (25, 24, [12, 6, 3, 1, 0]),
        (-1, 24, [12, 6, 3, 1, 0]),
        (999, 24, [12, 6, 3, 1, 0]),
        (10, 24, [5, 2, 1, 0]),
        (81, 80, [40, 20, 10, 5, 2, 1, 0]),
        (2, 24, [1, 0]),
        (1, 24, [0]),
        (0, 24, []),
    ],
)
def test_fallback_layers(num_gpu: int, n_layer: int, expected: list[int]) -> None:
    sequence = fallback_layers(num_gpu, n_layer)
    assert sequence == expected
    assert len(set(sequence)) == len(sequence)


# --- probing -----------------------------------------------------------------------------


class FakeRunner:
    def __init__(
        self, stdout: str = "", returncode: int = 0, raises: BaseException | None = None
    ) -> None:
        self.stdout = stdout
        self.returncode = returncode
        self.raises = raises
        self.calls: list[tuple[Sequence[str], dict[str, Any]]] = []

    def __call__(self, args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((args, kwargs))
        if self.raises is not None:
            raise self.raises
        return subprocess.CompletedProcess(args, self.returncode, self.stdout, "")


def probe(runner: FakeRunner, system: str = "Linux", machine: str = "x86_64") -> Any:
    return probe_device_memory(runner, system=system, machine=machine)


def test_probe_nvidia_picks_gpu_with_most_free_memory() -> None:
    runner = FakeRunner(
        "NVIDIA A100-SXM4-80GB, 81920, 1024\nNVIDIA GeForce RTX 4090, 24564, 20000\n"
    )
    device = probe(runner)
    assert device == DeviceMemory("cuda", 24564 * MiB, 20000 * MiB, "NVIDIA GeForce RTX 4090")
    args, kwargs = runner.calls[0]
    assert list(args) == [
        "nvidia-smi",
        "--query-gpu=name,memory.total,memory.free",
        "--format=csv,noheader,nounits",
    ]
    assert kwargs["timeout"] == 5
    assert kwargs["check"] is False


def test_probe_nvidia_skips_unreadable_lines() -> None:
    device = probe(FakeRunner("Weird, GPU, [N/A], [N/A]\n\nNVIDIA H200, 143771, 140000\n"))
    assert device == DeviceMemory("cuda", 143771 * MiB, 140000 * MiB, "NVIDIA H200")


@pytest.mark.parametrize(
    "runner",
    [
        FakeRunner(raises=FileNotFoundError("nvidia-smi")),
        FakeRunner(raises=PermissionError("nvidia-smi")),
        FakeRunner(raises=subprocess.TimeoutExpired("nvidia-smi", 5)),
        FakeRunner(raises=RuntimeError("anything")),
        FakeRunner("NVIDIA-SMI has failed because it couldn't communicate with the driver.\n"),
        FakeRunner("garbage, more garbage, and more\n"),
        FakeRunner(""),
        FakeRunner("NVIDIA A100, 81920, 1024\n", returncode=9),
    ],
    ids=["missing", "denied", "timeout", "error", "driver", "garbage", "empty", "exit-code"],
)
def test_probe_never_raises(runner: FakeRunner) -> None:
    assert probe(runner) is None


def test_probe_metal_uses_three_quarters_of_unified_memory() -> None:
    runner = FakeRunner("17179869184\n")
    device = probe(runner, system="Darwin", machine="arm64")
    assert device is not None
    assert (device.backend, device.total_bytes, device.free_bytes) == ("metal", 12 * GiB, 12 * GiB)
    assert list(runner.calls[0][0]) == ["sysctl", "-n", "hw.memsize"]
    assert probe(FakeRunner("not a number\n"), system="Darwin", machine="arm64") is None


def test_probe_intel_mac_is_not_metal() -> None:
    assert probe(FakeRunner(raises=FileNotFoundError()), system="Darwin", machine="x86_64") is None


def test_gpu_offload_supported_is_a_bool() -> None:
    assert isinstance(gpu_offload_supported(), bool)


# --- formatting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (300 * MiB, "300.0 MiB"),
        (int(1.2 * GiB), "1.2 GiB"),
        (22 * GiB + 100 * MiB, "22.1 GiB"),
        (3 * 1024 * GiB, "3.0 TiB"),
    ],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text
