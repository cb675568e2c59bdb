"""The architecture's arrows, enforced (DESIGN.md "The house").

adapters -> interface -> backends (llama/ -> llama_cpp; remote/ -> HTTP only); store/ and
prompt/ are pure and never reach a backend. Two complementary checks:

* static: the import-linter contracts in ``pyproject.toml``, one test each
  (every import, also inside functions; ``TYPE_CHECKING`` imports excluded);
* dynamic: importing the pure packages in a fresh interpreter loads no
  ``llama_cpp`` and no backend module.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

# The use case, not importlinter.cli.lint_imports: the CLI function reconfigures
# logging (dictConfig disables every existing logger, breaking later caplog tests).
configuration.configure()

ROOT = Path(__file__).resolve().parents[2]
_PYPROJECT = (ROOT / "pyproject.toml").read_text("utf-8")
CONTRACTS = re.findall(
    r'^id = "([\w-]+)"$', _PYPROJECT[_PYPROJECT.index("[tool.importlinter]") :], re.M
)


def test_every_arrow_rule_has_a_contract() -> None:
    assert set(CONTRACTS) == {
        "llama-cpp-only-in-llama",
        "pure-core",
        "adapters-on-interface",
        "cli-on-interface",
        "server-on-interface",
        "remote-without-llama",
        "prompt-without-store",
        "runtime-without-frameworks",
    }


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_contract_is_kept(
    contract: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    kept = lint_imports(limit_to_contracts=(contract,), cache_dir=None, no_logo=True)
    assert kept, capsys.readouterr().out


def test_a_broken_arrow_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The checker itself can fail: the backend does import llama_cpp.
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["local_llm_runtime"]\n'
        "include_external_packages = true\n"
        "[[tool.importlinter.contracts]]\n"
        'name = "backend without llama_cpp"\n'
        'type = "forbidden"\n'
        'source_modules = ["local_llm_runtime.llama"]\n'
        'forbidden_modules = ["llama_cpp"]\n',
        "utf-8",
    )
    monkeypatch.chdir(ROOT)
    assert not lint_imports(config_filename=str(config), cache_dir=None, no_logo=True)
    assert "local_llm_runtime.llama" in capsys.readouterr().out


PURE = [
    "local_llm_runtime",
    "local_llm_runtime.interface",
    "local_llm_runtime.backends",
    "local_llm_runtime.options",
    "local_llm_runtime.streams",
    "local_llm_runtime.testing",
    "local_llm_runtime.prompt.families",
    "local_llm_runtime.prompt.tool_syntaxes",
    "local_llm_runtime.store.library",
    "local_llm_runtime.store.hub",
    "local_llm_runtime.store.auto_quant",
    "local_llm_runtime.memory",
    "local_llm_runtime.vectors",
    "local_llm_runtime.prompt.chat_template",
    "local_llm_runtime.prompt.tool_calls",
    "local_llm_runtime.prompt.json_schema_grammar",
    "local_llm_runtime.prompt.prompt_tokens",
    "local_llm_runtime.cli",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_loads_no_backend(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m == 'llama_cpp' or m.startswith("
        "('llama_cpp.', 'local_llm_runtime.llama'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert out == "[]"
