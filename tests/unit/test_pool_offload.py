"""The pool's GPU decision and its retry path, with fake device memory and a fake loader.

The loader is the one seam replaced here (a real GPU is not available on CI); it
records what llama.cpp would have been asked and can fail like a GPU load does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local_llm_runtime import ModelLibrary, ModelLoadError
from local_llm_runtime.llama.gpu import DeviceMemory
from local_llm_runtime.llama.loader import build_llama
from local_llm_runtime.llama.pool import LoadOptions, ModelPool

GiB = 1024**3


class RecordingLoader:
    def __init__(self, fail_above: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_above = fail_above

    def __call__(
        self, model: Any, options: LoadOptions, num_ctx: int, num_gpu: int, meta: dict[str, Any]
    ) -> Any:
        self.calls.append(num_gpu)
        if self.fail_above is not None and num_gpu > self.fail_above:
            raise ValueError("Failed to create llama_context (out of device memory)")
        return build_llama(model, options, num_ctx, 0, meta)


def _lease(pool: ModelPool, path: Path, **options: Any) -> Any:
    model = ModelLibrary().resolve(str(path))
    with pool.lease(model, LoadOptions(**options)) as (entry, _load_s, _queue_s):
        return entry


def test_auto_offloads_everything_when_it_fits(tiny_gguf: Path) -> None:
    loader = RecordingLoader()
    pool = ModelPool(
        loader=loader,
        gpu_available=True,
        device_probe=lambda: DeviceMemory("cuda", 24 * GiB, 20 * GiB, "H100"),
    )
    entry = _lease(pool, tiny_gguf)
    assert loader.calls == [3]  # 2 layers + output
    assert entry.offload.full
    (running,) = pool.ps()
    assert running.gpu_layers == 3
    assert "fit" in running.offload
    pool.close()


def test_cpu_only_build_uses_no_gpu(tiny_gguf: Path) -> None:
    loader = RecordingLoader()
    pool = ModelPool(loader=loader, gpu_available=False, device_probe=lambda: None)
    _lease(pool, tiny_gguf)
    assert loader.calls == [0]
    pool.close()


def test_manual_num_gpu_overrides(tiny_gguf: Path) -> None:
    loader = RecordingLoader()
    pool = ModelPool(
        loader=loader,
        gpu_available=True,
        device_probe=lambda: DeviceMemory("cuda", 24 * GiB, 20 * GiB),
    )
    _lease(pool, tiny_gguf, num_gpu=1)
    assert loader.calls == [1]
    pool.close()


def test_failed_gpu_load_retries_with_fewer_layers_then_cpu(tiny_gguf: Path) -> None:
    loader = RecordingLoader(fail_above=0)
    pool = ModelPool(
        loader=loader,
        gpu_available=True,
        device_probe=lambda: DeviceMemory("cuda", 24 * GiB, 20 * GiB),
    )
    entry = _lease(pool, tiny_gguf)
    assert loader.calls == [3, 1, 0]
    assert entry.offload.num_gpu == 0
    assert "retried" in entry.offload.reason
    pool.close()


def test_every_attempt_failing_is_a_typed_error(tiny_gguf: Path) -> None:
    def broken(*_args: Any) -> Any:
        raise ValueError("Failed to load model from file")

    pool = ModelPool(loader=broken, gpu_available=False)
    with pytest.raises(ModelLoadError, match="Failed to load model"):
        _lease(pool, tiny_gguf)
    assert pool.ps() == []


@pytest.mark.parametrize(
    ("env", "type_k", "flash"),
    [
        ({}, "f16", False),
        ({"LOCAL_LLM_FLASH_ATTENTION": "1"}, "f16", True),
        ({"LOCAL_LLM_KV_CACHE_TYPE": "q8_0"}, "q8_0", True),  # quantized V needs flash attention
        ({"LOCAL_LLM_KV_CACHE_TYPE": "q4_0", "LOCAL_LLM_FLASH_ATTENTION": "0"}, "q4_0", True),
    ],
)
def test_kv_cache_type_and_flash_attention_reach_llama_cpp(
    tiny_gguf_factory: Any, env: dict[str, str], type_k: str, flash: bool
) -> None:
    import llama_cpp

    from local_llm_runtime import RuntimeSettings
    from local_llm_runtime.llama.engine import Engine

    tiny_gguf = tiny_gguf_factory(n_embd=128)  # 4 heads of 32: quantizable KV blocks
    engine = Engine(RuntimeSettings.from_env(env))
    try:
        reply = engine.chat(
            str(tiny_gguf), [{"role": "user", "content": "hi"}], options={"num_predict": 4}
        )
        assert reply.usage.completion_tokens > 0
        (entry,) = engine.pool._entries.values()
        params = entry.llm.context_params
        ggml = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0,
                "q4_0": llama_cpp.GGML_TYPE_Q4_0}  # fmt: skip
        assert params.type_k == params.type_v == ggml[type_k]
        enabled = params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        assert enabled is flash
    finally:
        engine.pool.close()


def test_quantized_kv_cache_shrinks_the_offload_estimate(tiny_gguf_factory: Any) -> None:
    from local_llm_runtime import RuntimeSettings

    tiny_gguf = tiny_gguf_factory(n_embd=128)
    estimates = {}
    for kv in ("f16", "q8_0", "q4_0"):
        pool = ModelPool(
            RuntimeSettings.from_env({"LOCAL_LLM_KV_CACHE_TYPE": kv}),
            loader=RecordingLoader(),
            gpu_available=True,
            device_probe=lambda: DeviceMemory("cuda", 24 * GiB, 20 * GiB),
        )
        estimates[kv] = _lease(pool, tiny_gguf).offload.estimate.kv_per_layer_bytes
        pool.close()
    assert estimates["f16"] > estimates["q8_0"] > estimates["q4_0"] > 0
    assert estimates["q8_0"] / estimates["f16"] == pytest.approx(34 / 64)


def test_unquantizable_head_size_falls_back_to_f16(
    tiny_gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import llama_cpp

    from local_llm_runtime import RuntimeSettings
    from local_llm_runtime.llama.engine import Engine

    engine = Engine(RuntimeSettings.from_env({"LOCAL_LLM_KV_CACHE_TYPE": "q8_0"}))
    try:  # the default tiny model has heads of 16: llama.cpp would refuse a q8_0 cache
        reply = engine.chat(
            str(tiny_gguf), [{"role": "user", "content": "hi"}], options={"num_predict": 4}
        )
        assert reply.usage.completion_tokens > 0
        (entry,) = engine.pool._entries.values()
        assert entry.llm.context_params.type_k == llama_cpp.GGML_TYPE_F16
        assert "using f16" in caplog.text
    finally:
        engine.pool.close()
