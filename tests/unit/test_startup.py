"""Start-up: heavy imports happen on first use, and a load parses the GGUF header once.

Import checks run in a fresh interpreter (this test process has long imported
everything) and read ``sys.modules`` after the code ran; each table also has
positive rows (first use *does* import the library), so the check can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from local_llm_runtime.llama.engine import LlamaEngine
from local_llm_runtime.settings import RuntimeSettings
from local_llm_runtime.store import gguf_meta
from local_llm_runtime.store.library import ModelLibrary

HEAVY = ("llama_cpp", "huggingface_hub", "jinja2", "numpy", "httpx", "fastapi")
"""Libraries start-up must not import unless the code needs them."""


def _imported_after(code: str) -> set[str]:
    """The HEAVY top-level packages in ``sys.modules`` after ``code`` ran in a fresh interpreter."""
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_LLM_BASE_URL")}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


# (code, libraries it must NOT have imported, libraries it MUST have imported)
IMPORT_TABLE: dict[str, tuple[str, set[str], set[str]]] = {
    "runtime facade": ("import local_llm_runtime", set(HEAVY), set()),
    "facade names": (
        "from local_llm_runtime import ModelLibrary, RuntimeSettings, EngineProtocol, Usage, "
        "LocalModel, ModelRecord, parse_ref, default_engine",
        set(HEAVY),
        set(),
    ),
    "default_engine() constructed": (
        "import local_llm_runtime\n"
        "engine = local_llm_runtime.backends.default_engine()\n"
        "assert type(engine).__name__ == 'LlamaEngine'\n"
        "assert engine.ps() == [] and engine.unload() == 0",
        {"llama_cpp", "huggingface_hub", "numpy", "httpx", "fastapi"},
        set(),
    ),
    "ModelLibrary(), resolve/list of the store": (
        "from local_llm_runtime.store.library import ModelLibrary\n"
        "lib = ModelLibrary()\n"
        "lib.list()",
        set(HEAVY),
        set(),
    ),
    "langchain adapters constructed": (
        "from local_llm_integrations import ChatLocal, LocalEmbeddings\n"
        "from local_llm_integrations.langchain import LocalLLM\n"
        "ChatLocal(model='qwen2.5:0.5b', temperature=0.1)\n"
        "LocalLLM(model='qwen2.5:0.5b')\n"
        "LocalEmbeddings(model='nomic-embed-text')",
        {"llama_cpp", "huggingface_hub", "jinja2", "numpy", "fastapi"},
        set(),
    ),
    "llama_index adapters constructed": (
        # LlamaIndex itself imports numpy and jinja2: only ours are checked.
        "from local_llm_integrations.llama_index import LocalLLM, LocalEmbedding\n"
        "LocalLLM(model='qwen2.5:0.5b')\n"
        "LocalEmbedding(model='nomic-embed-text')",
        {"llama_cpp", "huggingface_hub", "fastapi"},
        set(),
    ),
    # Positive rows: first use does import them (the probe can see an import).
    "first use of the pool imports llama_cpp": (
        "import local_llm_runtime\nlocal_llm_runtime.backends.default_engine().pool",
        set(),
        {"llama_cpp"},
    ),
    "first use of the Hub client imports huggingface_hub": (
        "from local_llm_runtime.store.library import ModelLibrary\nModelLibrary().hub",
        set(),
        {"huggingface_hub"},
    ),
}


@pytest.mark.parametrize("case", sorted(IMPORT_TABLE))
def test_construction_imports_only_what_it_uses(case: str) -> None:
    code, absent, present = IMPORT_TABLE[case]
    imported = _imported_after(code)
    assert not imported & absent, f"{case}: imported {sorted(imported & absent)}"
    assert present <= imported, f"{case}: did not import {sorted(present - imported)}"


@pytest.fixture
def stored_tiny(tiny_gguf: Path) -> str:
    ModelLibrary().create("tiny", str(tiny_gguf))
    return "tiny"


CLI_TABLE: dict[str, tuple[list[str], str]] = {
    "list": (["list"], "tiny:latest"),
    "show": (["show", "tiny"], "architecture"),
    "show --json": (["show", "tiny", "--json"], '"capabilities"'),
    "--help": (["--help"], "pull"),
    "rm of an imported model": (["rm", "tiny"], "deleted"),
}


@pytest.mark.parametrize("case", sorted(CLI_TABLE))
def test_cli_store_commands_import_no_engine_nor_hub(case: str, stored_tiny: str) -> None:
    argv, expected = CLI_TABLE[case]
    code = (
        "import contextlib, io\n"
        "from local_llm_runtime.cli.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        code = main({argv!r})\n"
        "    except SystemExit as exc:\n"
        "        code = exc.code\n"
        "assert code in (0, None), code\n"
        f"assert {expected!r} in out.getvalue(), out.getvalue()"
    )
    imported = _imported_after(code)
    assert not imported & set(HEAVY), f"local-llm {' '.join(argv)} imported {sorted(imported)}"


# ---- one header parse per load ---------------------------------------------


@pytest.fixture
def count_parses(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count real header parses (cache misses) from now on; the cache starts empty."""
    calls: list[Path] = []
    real = gguf_meta._parse

    def counting(reader: gguf_meta._Reader) -> gguf_meta.GGUFInfo:
        calls.append(reader.path)
        return real(reader)

    gguf_meta._read_version.cache_clear()
    monkeypatch.setattr(gguf_meta, "_parse", counting)
    return lambda: len(calls)


def _engine() -> LlamaEngine:
    return LlamaEngine(RuntimeSettings.from_env())


@pytest.mark.parametrize("ref", ["path", "stored name"])
def test_cold_load_and_generation_parse_the_header_once(
    ref: str, tiny_gguf_factory: Callable[..., Path], count_parses: Callable[[], int]
) -> None:
    path = tiny_gguf_factory("fresh.gguf")  # a file no earlier test has validated
    model = str(path)
    if ref == "stored name":
        ModelLibrary().create("fresh", str(path))
        model = "fresh"
        # (create parsed the source file; the store serves its own copy of it)
    engine = _engine()
    before = count_parses()
    try:
        engine.generate(model, "hello", options={"num_predict": 2, "seed": 1})
        # Resolve, vocabulary, context plan, KV type, GPU offload plan, generation.
        assert count_parses() - before == 1
        engine.model_info(model)  # show's summary of the same file version
        engine.unload()
        engine.generate(model, "hello", options={"num_predict": 2, "num_ctx": 256})
        assert count_parses() - before == 1  # a reload of the same file parses nothing
    finally:
        engine.unload()


def test_a_changed_file_is_parsed_again(
    tiny_gguf_factory: Callable[..., Path], count_parses: Callable[[], int], tmp_path: Path
) -> None:
    first = tiny_gguf_factory("a.gguf")
    other = tiny_gguf_factory("b.gguf", n_ctx=256)
    target = tmp_path / "model.gguf"
    shutil.copyfile(first, target)
    before = gguf_meta.read_gguf_info(target).metadata["llama.context_length"]
    assert gguf_meta.read_gguf_info(target) is gguf_meta.read_gguf_info(target)
    assert count_parses() == 1
    os.replace(other, target)  # a new version of the file: another inode, size or mtime
    after = gguf_meta.read_gguf_info(target).metadata["llama.context_length"]
    assert count_parses() == 2
    assert (before, after) == (2048, 256)


def test_errors_are_not_cached(tmp_path: Path, count_parses: Callable[[], int]) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 40)
    for _ in range(2):
        with pytest.raises(gguf_meta.InvalidModelFileError):
            gguf_meta.read_gguf_info(path)
    assert count_parses() == 2
    missing = tmp_path / "missing.gguf"
    with pytest.raises(gguf_meta.InvalidModelFileError, match="does not exist"):
        gguf_meta.read_gguf_info(missing)


def test_vocabulary_skip_checks_lengths(tiny_gguf: Path, tmp_path: Path) -> None:
    """The fast string-array skip still rejects a string that runs past the end."""
    data = bytearray(tiny_gguf.read_bytes())
    info = gguf_meta.read_gguf_info(tiny_gguf)
    assert info.metadata["tokenizer.ggml.tokens"]["length"] > gguf_meta._KEEP_ARRAY
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key) + 4 + 4 + 8  # value type, item type, count
    for length in (len(data), 1 << 62, (1 << 64) - 1):
        bad = bytearray(data)
        bad[at : at + 8] = length.to_bytes(8, "little")
        path = tmp_path / f"bad-{length}.gguf"
        path.write_bytes(bytes(bad))
        with pytest.raises(gguf_meta.InvalidModelFileError, match="truncated"):
            gguf_meta.read_gguf_info(path)
