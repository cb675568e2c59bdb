"""LoRA adapters applied to a loaded model (a Modelfile's ``ADAPTER``).

llama.cpp keeps an adapter's matrices beside the base weights and adds
``scale * alpha / rank * B(A x)`` to every product with an adapted weight, in
each context the adapter is set on (``llama_set_adapters_lora``); the weights
themselves are unchanged, so the model stays memory-mapped. Every context of an
instance that decodes must have the adapters set: the ``Llama``'s own context
and, with ``num_parallel > 1``, the batched context of its
:class:`~local_llm_runtime.llama.batching.BatchDecoder`. Ollama's ``ADAPTER`` has
no scale: each adapter is applied at :data:`SCALE`.

Weight repacking (:mod:`~local_llm_runtime.llama.repack`) is left as the settings
choose: for a weight in an extra buffer type (``AMX``, ``CPU_REPACK``) llama.cpp puts
the adapter's matrices in a plain CPU buffer (it logs "cannot use buft ..., fallback
to CPU") and computes ``B(A x)`` as a product of its own beside the repacked one.
Measured on a Q4_0 model on an AMX CPU with ``LOCAL_LLM_REPACK=1``: every adapter
tensor went to the CPU buffer; decoding there crashes with or without an adapter (the
AMX crash ``repack.py`` describes, hence its default). ``tests/unit/test_lora.py``
checks a Q4_0 model under the runtime's own repack choice.

The adapters are freed with the model: :func:`apply_adapters` registers their
release on the ``Llama``'s own exit stack, which ``Llama.close()`` unwinds last in,
first out -- adapters before the context and the model they belong to, as
llama-cpp-python does for its own ``lora_path``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import llama_cpp

__all__ = ["SCALE", "AdapterError", "apply_adapters"]

SCALE = 1.0
"""The scale of every adapter (Ollama's ``ADAPTER`` has none; llama.cpp's default)."""


class AdapterError(RuntimeError):
    """llama.cpp could not load or set an adapter (the message names the file)."""


def apply_adapters(llm: llama_cpp.Llama, contexts: Sequence[Any], paths: Sequence[str]) -> None:
    """Load the LoRA adapters in ``paths`` onto ``llm``'s model and set them on ``contexts``.

    Args:
        llm: The loaded model; the adapters are freed when it is closed.
        contexts: Every ``llama_context`` of this instance that decodes (a context
            listed twice is set once: llama.cpp only changes what differs).
        paths: Adapter GGUF files, applied in this order, each at :data:`SCALE`.

    Raises:
        AdapterError: llama.cpp refused an adapter (wrong base model, not a LoRA
            GGUF, out of memory); the caller closes ``llm``.
    """
    if not paths:
        return
    model = llm._model.model
    handles: list[Any] = []

    def free() -> None:
        while handles:
            llama_cpp.llama_adapter_lora_free(handles.pop())

    llm._stack.callback(free)  # runs in close(), before the context and the model are freed
    for path in paths:
        handle = llama_cpp.llama_adapter_lora_init(model, path.encode("utf-8"))
        if not handle:
            raise AdapterError(
                f"llama.cpp could not load the LoRA adapter {path}; check that it is a LoRA "
                "adapter GGUF (convert_lora_to_gguf.py) made for this base model"
            )
        handles.append(handle)
    count = len(handles)
    array = (llama_cpp.llama_adapter_lora_p_ctypes * count)(*handles)
    scales = (ctypes.c_float * count)(*([SCALE] * count))
    for ctx in contexts:
        if llama_cpp.llama_set_adapters_lora(ctx, array, count, scales) != 0:
            raise AdapterError(
                f"llama.cpp could not set the LoRA adapter(s) {', '.join(paths)} on a context"
            )
