"""Weight repacking (llama.cpp's "extra buffer types"), and when to turn it off.

llama.cpp's CPU backend can keep some weights in extra buffer types: repacked
layouts for faster matrix products (``REPACK``) and, on Intel CPUs with AMX,
an AMX buffer. The AMX buffer type crashes the process (SIGSEGV in
``llama_decode``) with some models and builds -- see llama.cpp issues #11115
and #20824; measured here with Qwen2.5-Coder-0.5B Q4_K_M on a Sapphire Rapids
VM: every request with a chat prompt crashed, and with extra buffers off the
same request answered correctly. llama.cpp's ``--no-repack`` turns them off
(``llama_model_params.use_extra_bufts = false``); llama-cpp-python has no
argument for it, so :func:`model_params` sets the field while a model loads.

Policy (``LOCAL_LLM_REPACK``): ``1`` keeps extra buffers, ``0`` turns them off,
unset (the default) turns them off only when the CPU backend reports AMX.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import llama_cpp
import llama_cpp.llama_cpp as _binding

__all__ = ["amx_available", "like_the_runtime", "model_params", "use_extra_buffers"]

_USE_EXTRA_BUFTS: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "local_llm_use_extra_bufts", default=None
)
_HOOK_ATTR = "_local_llm_hook"


@functools.cache
def amx_available() -> bool:
    """Whether llama.cpp's CPU backend was built with, and detected, Intel AMX."""
    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return "AMX_INT8 = 1" in text


def use_extra_buffers(setting: bool | None) -> bool:
    """The effective choice: the setting when given, else off exactly when AMX is present."""
    return setting if setting is not None else not amx_available()


def _install_hook() -> None:
    """Wrap ``llama_model_default_params`` once so a load can override one field.

    ``Llama.__init__`` builds its parameters from this function; the wrapper
    changes ``use_extra_bufts`` only inside :func:`model_params` (a context
    variable, so other threads' and other libraries' loads are untouched).
    """
    original: Callable[[], Any] = _binding.llama_model_default_params
    if getattr(original, _HOOK_ATTR, False):
        return

    def default_params() -> Any:
        params = original()
        value = _USE_EXTRA_BUFTS.get()
        if value is not None:
            params.use_extra_bufts = value
        return params

    setattr(default_params, _HOOK_ATTR, True)
    _binding.llama_model_default_params = default_params


@contextmanager
def model_params(*, use_extra_bufts: bool) -> Iterator[None]:
    """Load models in this block with ``use_extra_bufts`` set as given (this thread only)."""
    _install_hook()
    token = _USE_EXTRA_BUFTS.set(use_extra_bufts)
    try:
        yield
    finally:
        _USE_EXTRA_BUFTS.reset(token)


@contextmanager
def like_the_runtime() -> Iterator[None]:
    """Load models in this block (this thread) with the runtime's choice.

    For code that builds ``llama_cpp.Llama`` itself next to the runtime -- the
    benchmarks' raw baselines and their LangChain/LlamaIndex peers, tests -- so
    they load the same way (and do not crash where AMX buffers do).
    """
    from local_llm_runtime.settings import RuntimeSettings

    with model_params(use_extra_bufts=use_extra_buffers(RuntimeSettings.from_env().repack)):
        yield
