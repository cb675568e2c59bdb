"""The llama-cpp-python contract this runtime needs, checked once before the first load.

The runtime calls llama.cpp's C API directly through ``llama_cpp`` (the sampler
chain, the batched decoder, the log callback). Those functions change between
binding releases: ``llama_sampler_init_penalties`` took four arguments from
0.3.6 to 0.3.34 and five (``n_vocab`` first) from 0.3.35; ``llama_model_is_hybrid``
appeared in 0.3.17. An older install that still satisfies a loose pin fails on
every generation with a ctypes ``ArgumentError``; instead, the first load checks
the whole contract and raises :class:`~local_llm_runtime.errors.LlamaBindingError`
naming the version to install.

:data:`REQUIRED` lists every ``llama_cpp`` attribute the runtime uses (a unit
test keeps it in step with the source): the number of C arguments for
functions, ``None`` for types and callback factories that only need to exist.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping
from types import ModuleType

from local_llm_runtime.errors import LlamaBindingError

__all__ = ["MINIMUM_VERSION", "REQUIRED", "check", "check_module"]

MINIMUM_VERSION = "0.3.35"
"""The oldest llama-cpp-python whose C API matches :data:`REQUIRED` (also in pyproject.toml)."""

REQUIRED: Mapping[str, int | None] = {
    "llama_adapter_lora_free": 1,
    "llama_adapter_lora_init": 2,
    "llama_batch_free": 1,
    "llama_batch_init": 3,
    "llama_decode": 2,
    "llama_free": 1,
    "llama_get_embeddings_ith": 2,
    "llama_get_embeddings_seq": 2,
    "llama_get_logits_ith": 2,
    "llama_get_memory": 1,
    "llama_init_from_model": 2,
    "llama_log_set": 2,
    "llama_memory_seq_rm": 4,
    "llama_model_default_params": 0,
    "llama_model_is_hybrid": 1,
    "llama_model_is_recurrent": 1,
    "llama_pooling_type": 1,
    "llama_print_system_info": 0,
    "llama_sampler_accept": 2,
    "llama_sampler_apply": 2,
    "llama_sampler_chain_add": 2,
    "llama_sampler_chain_default_params": 0,
    "llama_sampler_chain_init": 1,
    "llama_sampler_free": 1,
    "llama_sampler_init_dist": 1,
    "llama_sampler_init_grammar": 3,
    "llama_sampler_init_greedy": 0,
    "llama_sampler_init_min_p": 2,
    "llama_sampler_init_penalties": 5,
    "llama_sampler_init_temp": 1,
    "llama_sampler_init_top_k": 1,
    "llama_sampler_init_top_p": 2,
    "llama_sampler_init_typical": 2,
    "llama_sampler_sample": 3,
    "llama_set_abort_callback": 3,
    "llama_set_adapters_lora": 4,
    "llama_supports_gpu_offload": 0,
    "llama_vocab_bos": 1,
    "llama_vocab_eos": 1,
    "llama_vocab_get_add_bos": 1,
    "llama_vocab_get_add_eos": 1,
    "llama_vocab_get_add_sep": 1,
    "llama_vocab_get_attr": 2,
    "llama_vocab_get_text": 2,
    "llama_vocab_is_eog": 2,
    "llama_vocab_n_tokens": 1,
    "llama_vocab_sep": 1,
    # types and callback factories
    "ggml_abort_callback": None,
    "llama_adapter_lora_p_ctypes": None,
    "llama_context_params": None,
    "llama_model_params": None,
    "llama_log_callback": None,
    "llama_token_data": None,
    "llama_token_data_array": None,
}

_C_FUNCTION: type = ctypes.CFUNCTYPE(None).__mro__[1]  # ctypes._CFuncPtr, not exported
_checked = threading.Event()
_lock = threading.Lock()


def _problems(module: ModuleType) -> list[str]:
    problems = []
    for name, arity in REQUIRED.items():
        attr = getattr(module, name, None)
        if attr is None:
            problems.append(f"{name} is missing")
            continue
        if arity is None:
            continue
        argtypes = getattr(attr, "argtypes", None)
        if not isinstance(attr, _C_FUNCTION) or argtypes is None:
            problems.append(f"{name} is not a C function")
        elif len(argtypes) != arity:
            problems.append(f"{name} takes {len(argtypes)} arguments, not {arity}")
    params = getattr(module, "llama_model_params", None)
    fields = {field[0] for field in getattr(params, "_fields_", [])}
    if params is not None and "use_extra_bufts" not in fields:  # repack.py sets it
        problems.append("llama_model_params has no use_extra_bufts field")
    return problems


def check_module(module: ModuleType) -> None:
    """Check one ``llama_cpp`` module against :data:`REQUIRED`.

    Args:
        module: The binding module (``llama_cpp``), or a stand-in in tests.

    Raises:
        LlamaBindingError: If a function is missing or takes another number of
            arguments; the message names the installed version and the one to install.
    """
    problems = _problems(module)
    if problems:
        version = getattr(module, "__version__", "unknown")
        raise LlamaBindingError(
            f"llama-cpp-python {version} does not match this runtime "
            f"({'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''}); "
            f"install llama-cpp-python>={MINIMUM_VERSION},<0.4 "
            f"(pip install -U 'llama-cpp-python>={MINIMUM_VERSION},<0.4')."
        )


def check() -> None:
    """Check the installed binding once per process (later calls return at once).

    Raises:
        LlamaBindingError: See :func:`check_module`.
    """
    if _checked.is_set():
        return
    with _lock:
        if not _checked.is_set():
            import llama_cpp

            check_module(llama_cpp)
            _checked.set()
