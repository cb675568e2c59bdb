"""Loading a model file into llama.cpp: the one place a generating ``Llama`` is built.

:class:`ModelLoader` turns (file, load options) into a loaded instance: checks
the binding and the file, picks the context size, the KV cache type the model
supports and the GPU layers (from free device memory, retrying with fewer
layers when a load fails), builds the ``Llama`` under the runtime's repack
setting with llama.cpp's logs captured, and gives it its
:class:`~local_llm_runtime.llama.batching.BatchDecoder`. The pool
(:mod:`~local_llm_runtime.llama.pool`) decides *when* to load and unload; this
module decides *how*.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import llama_cpp

from local_llm_runtime.errors import InvalidModelFileError, ModelLoadError
from local_llm_runtime.llama import binding, cpu, gpu, llama_log, lora, repack, threads
from local_llm_runtime.llama.batching import BatchDecoder
from local_llm_runtime.memory import KV_BYTES_PER_ELEM
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store.gguf_meta import read_gguf_info
from local_llm_runtime.store.library import LocalModel
from local_llm_runtime.types import DEFAULT_NUM_CTX

__all__ = ["Builder", "Loaded", "LoadOptions", "ModelLoader", "build_llama", "planned_num_ctx"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """What makes two loaded instances of one file different (the pool key)."""

    num_ctx: int | None = None
    """Context window; ``None`` means min(4096, the model's trained context)."""
    num_gpu: int | None = None
    """Layers on the GPU; ``None``/-1 means decide from free device memory."""
    num_thread: int | None = None
    """CPU threads; ``None``: the physical cores for generation, every CPU for prompts."""
    num_batch: int = 512
    """Prompt batch size."""
    embedding: bool = False
    """An embedding instance (pooling on, separate KV cache)."""
    flash_attention: bool | None = None
    """Flash attention (``None``: the settings decide; see :class:`RuntimeSettings`)."""
    kv_cache_type: str | None = None
    """KV cache element type, ``f16``/``q8_0``/``q4_0`` (``None``: the settings decide)."""
    adapters: tuple[str, ...] = ()
    """LoRA adapter GGUF files applied at load, in order, at scale 1.0 (filled by the pool
    from :attr:`LocalModel.adapters <local_llm_runtime.store.library.LocalModel.adapters>`):
    the same base with other adapters, or none, is another instance."""


Builder = Callable[[LocalModel, LoadOptions, int, int, dict[str, Any]], llama_cpp.Llama]


def build_llama(
    model: LocalModel, options: LoadOptions, num_ctx: int, num_gpu: int, metadata: dict[str, Any]
) -> Any:
    """Build a ``Llama`` for generation (or embedding) with the runtime's settings.

    The default :data:`Builder`; tests inject their own to fake GPU failures.
    llama-cpp-python's own prints are silenced and llama.cpp's logs go to
    :mod:`~local_llm_runtime.llama.llama_log` (the caller captures them).
    """
    kwargs: dict[str, Any] = {
        "model_path": str(model.path),
        "n_ctx": num_ctx,
        "n_gpu_layers": num_gpu,
        "n_batch": min(options.num_batch, num_ctx),
        "verbose": True,  # logs go to our callback; False would swap process-wide fds
    }
    if options.flash_attention:
        kwargs["flash_attn"] = True
    if options.kv_cache_type and options.kv_cache_type != "f16":
        kwargs["type_k"] = kwargs["type_v"] = _GGML_TYPES[options.kv_cache_type]
    if options.num_thread:
        kwargs["n_threads"] = options.num_thread
        kwargs["n_threads_batch"] = options.num_thread
    else:  # generation: the physical cores, like llama.cpp and Ollama (not half the CPUs)
        kwargs["n_threads"] = cpu.default_threads()
    if options.embedding:
        kwargs.update(embedding=True, n_batch=num_ctx, n_ubatch=num_ctx)
        arch = metadata.get("general.architecture")
        has_pooling = f"{arch}.pooling_type" in metadata
        # Embedding models declare their pooling; causal LMs get mean pooling.
        kwargs["pooling_type"] = (
            llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
            if has_pooling
            else llama_cpp.LLAMA_POOLING_TYPE_MEAN
        )
    with llama_log.quiet_prints():  # llama-cpp-python's own prints, without swapping sys.stderr
        llm = llama_cpp.Llama(**kwargs)
    llm.verbose = False
    return llm


_GGML_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0,
               "q4_0": llama_cpp.GGML_TYPE_Q4_0}  # fmt: skip
_KV_BYTES = KV_BYTES_PER_ELEM
"""Bytes per cached element (q8_0: 32 values in 34 bytes; q4_0: in 18)."""

_SCRATCH_CTX = 64
"""Context of a batched entry's own ``Llama`` (its batched context does the work)."""


_KV_BLOCK = 32
"""Values per block of the quantized KV types; head sizes must be multiples of it."""


def _supported_kv_type(model: LocalModel, options: LoadOptions) -> LoadOptions:
    """Fall back to an f16 cache where the model's head size cannot be quantized (as Ollama)."""
    if options.kv_cache_type in (None, "f16"):
        return options
    try:
        shape = gpu.ModelShape.from_gguf(model.paths)
    except (InvalidModelFileError, KeyError, ValueError, ZeroDivisionError):
        return options  # the offload decision reports an unreadable shape
    if shape.head_dim % _KV_BLOCK == 0 and shape.head_dim_v % _KV_BLOCK == 0:
        return options
    logger.warning(
        "%s: a %s KV cache needs head sizes divisible by %d (this model: %d/%d); using f16.",
        model.name,
        options.kv_cache_type,
        _KV_BLOCK,
        shape.head_dim,
        shape.head_dim_v,
    )
    return replace(options, kv_cache_type="f16")


def planned_num_ctx(options: LoadOptions, trained_ctx: int) -> int:
    """The context a model is loaded with: ``num_ctx``, else the trained one up to 4096.

    ``num_ctx`` is capped at the trained context when that is known, as Ollama caps
    it: positions past it were never trained, and the KV cache a huge ``num_ctx``
    sizes (from a request, a stored ``create`` parameter or an adapter field) would
    fail the load or take the machine's memory. The cap is logged.

    Args:
        options: The load options (``num_ctx`` may be ``None``).
        trained_ctx: The model's trained context (``{arch}.context_length``);
            ``0`` or less when unknown.
    """
    if options.num_ctx:
        if 0 < trained_ctx < options.num_ctx:
            logger.warning(
                "num_ctx %d is more than the model's trained context; using %d",
                options.num_ctx,
                trained_ctx,
            )
            return trained_ctx
        return options.num_ctx
    trained = trained_ctx if trained_ctx > 0 else DEFAULT_NUM_CTX
    return min(DEFAULT_NUM_CTX, trained)


def _batcher(
    llm: llama_cpp.Llama, parallel: int, num_ctx: int, options: LoadOptions
) -> BatchDecoder:
    """The model's decoder; closes ``llm`` if it cannot be made (a failed load attempt).

    Without a ``num_thread`` option its thread counts follow the CPUs other
    processes leave free (:mod:`~local_llm_runtime.llama.threads`), up to the
    counts the model was built with.
    """
    try:
        params = llm.context_params
        governor = threads.governor_for(
            options.num_thread, int(params.n_threads), int(params.n_threads_batch)
        )
        return BatchDecoder(
            llm,
            n_slots=parallel,
            num_ctx=num_ctx,
            n_batch=min(options.num_batch, num_ctx),
            governor=governor,
        )
    except BaseException:
        llm.close()
        raise


def _apply_adapters(
    llm: llama_cpp.Llama, batcher: BatchDecoder | None, adapters: tuple[str, ...]
) -> None:
    """Set the LoRA adapters on every context that decodes; closes both if it cannot."""
    contexts = [llm.ctx] if batcher is None else [llm.ctx, batcher.ctx]
    try:
        lora.apply_adapters(llm, contexts, adapters)
    except BaseException:
        if batcher is not None:
            batcher.close()
        llm.close()
        raise


@dataclass(frozen=True)
class Loaded:
    """A model just loaded, and what was decided to load it."""

    llm: llama_cpp.Llama
    options: LoadOptions
    """The options it was loaded with (a KV type the model cannot take falls back to f16)."""
    num_ctx: int
    offload: gpu.OffloadDecision
    metadata: dict[str, Any]
    load_s: float
    batcher: BatchDecoder | None
    """The generation decoder: ``num_parallel`` slots, or one (``None``: an embedding instance)."""


class ModelLoader:
    """Loads model files into llama.cpp (see the module docstring).

    Args:
        settings: ``num_parallel`` and ``repack``.
        build: Builds a ``Llama`` (injectable for tests; default :func:`build_llama`).
        device_probe: Reports free GPU memory (injectable for tests).
        gpu_available: Whether this llama.cpp build can offload (injectable).
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        build: Builder | None = None,
        device_probe: Callable[[], gpu.DeviceMemory | None] | None = None,
        gpu_available: bool | None = None,
    ) -> None:
        self.settings = settings
        self.build: Builder = build or build_llama
        self._device_probe = device_probe or gpu.probe_device_memory
        self._gpu_available = gpu_available

    def load(self, model: LocalModel, options: LoadOptions) -> Loaded:
        """Load ``model``, retrying with fewer GPU layers when a load fails.

        Raises:
            BindingVersionError: llama-cpp-python lacks what the runtime needs.
            InvalidModelFileError: A file is not a readable GGUF.
            ModelLoadError: Every attempt failed (the reasons of each are named).
        """
        binding.check()  # once per process: a too-old llama-cpp-python is a typed error
        info = read_gguf_info(model.path)  # typed error for non-GGUF/truncated files
        for extra in model.paths[1:]:
            read_gguf_info(extra)
        arch = str(info.metadata.get("general.architecture", ""))
        trained = info.metadata.get(f"{arch}.context_length")
        trained_ctx = trained if isinstance(trained, int) and trained > 0 else DEFAULT_NUM_CTX
        num_ctx = planned_num_ctx(options, trained_ctx)
        options = _supported_kv_type(model, options)
        decision = self._decide_offload(model, options, num_ctx)
        attempts = [decision.num_gpu]
        if decision.num_gpu > 0:
            shape = gpu.ModelShape.from_gguf(model.paths)
            attempts += gpu.fallback_layers(decision.num_gpu, shape.n_layer)
        errors: list[str] = []
        for layers in attempts:
            try:
                llm, batcher, load_s = self._attempt(model, options, num_ctx, layers, info.metadata)
            except (ValueError, RuntimeError, OSError) as exc:
                reason = llama_log.recent_errors() or str(exc)
                if isinstance(exc, lora.AdapterError):  # which file, then llama.cpp's reason
                    reason = f"{exc}: {reason}" if reason != str(exc) else reason
                errors.append(f"{layers} GPU layers: {reason}")
                logger.warning(
                    "Loading %s with %d GPU layers failed: %s", model.name, layers, reason
                )
                continue
            if layers != decision.num_gpu:
                decision = gpu.OffloadDecision(
                    num_gpu=layers,
                    full=False,
                    reason=f"{decision.reason}; retried with {layers} layers after a failed load",
                    estimate=decision.estimate,
                    device=decision.device,
                )
            logger.info("Loaded %s (num_ctx=%d): %s", model.name, num_ctx, decision.reason)
            return Loaded(
                llm=llm,
                options=options,
                num_ctx=num_ctx,
                offload=decision,
                metadata=info.metadata,
                load_s=load_s,
                batcher=batcher,
            )
        raise ModelLoadError(
            f"llama.cpp could not load {model.name} ({model.path}): {' | '.join(errors)}"
        )

    def _attempt(
        self,
        model: LocalModel,
        options: LoadOptions,
        num_ctx: int,
        layers: int,
        metadata: dict[str, Any],
    ) -> tuple[llama_cpp.Llama, BatchDecoder | None, float]:
        """One load with ``layers`` GPU layers (llama.cpp's logs captured for the error)."""
        parallel = self.settings.num_parallel if not options.embedding else 1
        extra_bufts = repack.use_extra_buffers(self.settings.repack)
        llama_log.start_capture()
        started = time.monotonic()
        batcher: BatchDecoder | None
        with repack.model_params(use_extra_bufts=extra_bufts):
            if parallel > 1:
                # The Llama object supplies weights and vocabulary; a small
                # context of its own keeps its KV cache and buffers small.
                llm = self.build(model, options, _SCRATCH_CTX, layers, metadata)
                batcher = _batcher(llm, parallel, num_ctx, options)
            else:
                llm = self.build(model, options, num_ctx, layers, metadata)
                # One slot decodes the Llama's own context (a batch of one);
                # embedding instances are read by llama-cpp-python's embed().
                batcher = None if options.embedding else _batcher(llm, 1, num_ctx, options)
            if options.adapters:
                _apply_adapters(llm, batcher, options.adapters)
        return llm, batcher, time.monotonic() - started

    def _decide_offload(
        self, model: LocalModel, options: LoadOptions, num_ctx: int
    ) -> gpu.OffloadDecision:
        available = (
            self._gpu_available if self._gpu_available is not None else gpu.gpu_offload_supported()
        )
        requested = (
            options.num_gpu if options.num_gpu is not None and options.num_gpu >= 0 else None
        )
        try:
            shape = gpu.ModelShape.from_gguf(model.paths)
        except (InvalidModelFileError, KeyError, ValueError, ZeroDivisionError) as exc:
            raise InvalidModelFileError(
                f"{model.path}: cannot read the model's shape ({exc})."
            ) from None
        device = self._device_probe() if available and requested is None else None
        return gpu.decide_offload(
            shape,
            num_ctx=num_ctx,
            requested=requested,
            device=device,
            gpu_available=available,
            num_parallel=self.settings.num_parallel,
            kv_bytes_per_elem=_KV_BYTES[options.kv_cache_type or "f16"],
        )

    def vocab(self, model: LocalModel) -> llama_cpp.Llama:
        """A vocabulary-only instance of ``model`` (weights not loaded).

        Raises:
            InvalidModelFileError: The file is not a GGUF.
            ModelLoadError: llama.cpp could not read its vocabulary.
        """
        read_gguf_info(model.path)  # typed error for a file that is not a GGUF
        llama_log.start_capture()
        try:
            with llama_log.quiet_prints():
                llm = llama_cpp.Llama(
                    model_path=str(model.path.resolve()), vocab_only=True, verbose=True
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"llama.cpp could not read the vocabulary of {model.name}: "
                f"{llama_log.recent_errors() or exc}"
            ) from None
        llm.verbose = False
        return llm
