"""The llama-cpp-python contract: checked against the installed binding and a crippled copy."""

from __future__ import annotations

import ctypes
import re
import types
from pathlib import Path

import llama_cpp
import pytest

from local_llm_runtime import LlamaBindingError, ModelLoadError
from local_llm_runtime.llama import binding

ROOT = Path(__file__).resolve().parents[2]


def _copy_of_binding() -> types.ModuleType:
    fake = types.ModuleType("llama_cpp")
    for name in binding.REQUIRED:
        setattr(fake, name, getattr(llama_cpp, name))
    fake.__version__ = "0.3.16"  # type: ignore[attr-defined]
    return fake


def test_installed_binding_satisfies_the_contract() -> None:
    binding.check_module(llama_cpp)
    binding.check()


def test_missing_function_names_it_and_the_version_to_install() -> None:
    fake = _copy_of_binding()
    del fake.llama_model_is_hybrid
    with pytest.raises(LlamaBindingError) as info:
        binding.check_module(fake)
    message = str(info.value)
    assert "llama_model_is_hybrid is missing" in message
    assert "llama-cpp-python 0.3.16" in message
    assert f">={binding.MINIMUM_VERSION},<0.4" in message
    assert isinstance(info.value, ModelLoadError) and isinstance(info.value, RuntimeError)


def test_old_four_argument_penalties_is_rejected() -> None:
    fake = _copy_of_binding()
    old = ctypes.CDLL(None).labs  # any C function, given the 0.3.6-0.3.34 signature
    old.argtypes = [ctypes.c_int32, ctypes.c_float, ctypes.c_float, ctypes.c_float]
    fake.llama_sampler_init_penalties = old  # type: ignore[attr-defined]
    with pytest.raises(
        LlamaBindingError, match="llama_sampler_init_penalties takes 4 arguments, not 5"
    ):
        binding.check_module(fake)


def test_contract_lists_every_llama_cpp_attribute_the_runtime_uses() -> None:
    used: set[str] = set()
    for path in (ROOT / "runtime" / "local_llm_runtime").glob("*.py"):
        used |= set(re.findall(r"\bllama_cpp\.((?:llama|ggml)_[a-z0-9_]+)\b", path.read_text()))
    used.discard("llama_grammar")  # a submodule (json_schema_to_gbnf), not the C API
    used.discard("llama_cpp")  # the binding submodule itself (repack.py wraps one of its functions)
    assert used <= set(binding.REQUIRED), sorted(used - set(binding.REQUIRED))


def test_dependency_floor_matches_the_contract() -> None:
    pins = re.findall(r'"(llama-cpp-python[^"]*)"', (ROOT / "pyproject.toml").read_text())
    assert pins[0] == f"llama-cpp-python>={binding.MINIMUM_VERSION},<0.4"
