"""Packaging contract: import boundaries and the pinned public API."""

from __future__ import annotations

import subprocess
import sys

import local_llm_runtime


def _fresh(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return result.stdout.strip()


def test_runtime_imports_no_framework() -> None:
    out = _fresh(
        "import sys, local_llm_runtime, local_llm_runtime.cli.main, local_llm_runtime.store.library;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'langchain', 'llama_index', 'local_llm_integrations')))"
    )
    assert out == "[]"


def test_integrations_package_imports_without_frameworks() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('langchain_core', 'llama_index'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import local_llm_integrations\n"
        "print('ok')\n"
    )
    assert _fresh(code) == "ok"


def test_public_api_is_pinned() -> None:
    assert sorted(local_llm_runtime.__all__) == sorted(
        [
            "AuthenticationError", "ChatResult", "ChecksumMismatchError", "Chunk",
            "ContextLengthExceededError", "DownloadError", "Engine", "EngineProtocol", "FileRef", "FinalChunk",
            "InsufficientMemoryError",
            "GenerationError",
            "LlamaBindingError", "LlamaEngine", "ModelInfo",
            "HubRef", "InvalidModelFileError", "InvalidModelNameError", "InvalidOptionError",
            "InvalidToolCallError", "LocalLLMError", "LocalModel", "ModelExistsError", "ModelLibrary", "ModelLoadError",
            "ModelNotFoundError", "ModelfileError", "ModelRecord", "ModelRef", "OfflineError", "OllamaName",
            "QuantizationNotFoundError", "ReasoningDelta", "RequestTimeoutError", "RunningModel",
            "RuntimeSettings", "StoreError", "StreamReclaimedError", "TemplateError", "TextDelta", "Timings", "ToolCallDelta",
            "TokenLogprob", "TopLogprob", "UnknownOptionError", "Usage",
            "__version__", "copy", "create", "default_engine", "list_models", "parse_ref", "ps",
            "pull", "remove", "resolve", "show", "unload",
        ]
    )  # fmt: skip
    for name in local_llm_runtime.__all__:
        assert hasattr(local_llm_runtime, name), name


def test_errors_inherit_matching_builtins() -> None:
    from local_llm_runtime import errors as e

    pairs = [
        (e.InvalidModelNameError, ValueError), (e.ModelNotFoundError, LookupError),
        (e.ModelExistsError, FileExistsError), (e.InvalidOptionError, ValueError),
        (e.InvalidModelFileError, ValueError), (e.DownloadError, ConnectionError),
        (e.OfflineError, ConnectionError), (e.AuthenticationError, PermissionError),
        (e.ChecksumMismatchError, ValueError), (e.StoreError, OSError),
        (e.ModelLoadError, RuntimeError), (e.ContextLengthExceededError, ValueError),
        (e.GenerationError, RuntimeError),
        (e.LlamaBindingError, RuntimeError),
        (e.TemplateError, ValueError), (e.ModelfileError, ValueError),
        (e.RequestTimeoutError, TimeoutError), (e.StreamReclaimedError, RuntimeError),
        (e.UnknownOptionError, ValueError), (e.UnknownOptionError, TypeError),
        (e.InsufficientMemoryError, MemoryError),
    ]  # fmt: skip
    for error, builtin in pairs:
        assert issubclass(error, e.LocalLLMError)
        assert issubclass(error, builtin)


def test_cli_entry_point_has_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local_llm_runtime", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("pull", "list", "show", "rm", "cp", "create", "run"):
        assert command in result.stdout


def test_ci_runs_the_readme_commands() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2
    for command in commands:
        assert command in ci
