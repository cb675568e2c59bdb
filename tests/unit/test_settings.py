"""Environment variables become typed settings in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_llm_runtime import InvalidOptionError, RuntimeSettings
from local_llm_runtime.settings import parse_duration


def test_defaults_and_overrides(tmp_path: Path) -> None:
    settings = RuntimeSettings.from_env(
        {
            "LOCAL_LLM_HOME": str(tmp_path / "h"),
            "HF_HOME": str(tmp_path / "hf"),
            "HF_ENDPOINT": "http://127.0.0.1:9/",
            "HF_HUB_OFFLINE": "1",
            "HF_TOKEN": "hf_secret_value",
            "LOCAL_LLM_KEEP_ALIVE": "10m",
            "LOCAL_LLM_MAX_LOADED_MODELS": "2",
            "LOCAL_LLM_NUM_PARALLEL": "4",
        }
    )
    assert settings.home == tmp_path / "h"
    assert settings.hf_cache == tmp_path / "hf" / "hub"
    assert settings.hf_endpoint == "http://127.0.0.1:9"
    assert settings.hf_offline is True
    assert settings.keep_alive == 600
    assert (settings.max_loaded_models, settings.num_parallel) == (2, 4)
    assert settings.token_value() == "hf_secret_value"
    assert "hf_secret_value" not in repr(settings)
    assert "hf_secret_value" not in settings.model_dump_json()


def test_hub_cache_variable_wins(tmp_path: Path) -> None:
    settings = RuntimeSettings.from_env(
        {"HF_HOME": str(tmp_path / "a"), "HF_HUB_CACHE": str(tmp_path / "b")}
    )
    assert settings.hf_cache == tmp_path / "b"
    assert RuntimeSettings.from_env({}).hf_endpoint == "https://huggingface.co"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("0", 0), ("-1", -1), (42, 42), ("90s", 90)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["five", "5x", "m5", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidOptionError):
        parse_duration(text)


def test_bad_integer_env() -> None:
    with pytest.raises(InvalidOptionError, match="LOCAL_LLM_MAX_LOADED_MODELS"):
        RuntimeSettings.from_env({"LOCAL_LLM_MAX_LOADED_MODELS": "lots"})


def test_attention_settings() -> None:
    default = RuntimeSettings.from_env({})
    assert (default.flash_attention, default.kv_cache_type) == (None, "f16")
    tuned = RuntimeSettings.from_env(
        {"LOCAL_LLM_FLASH_ATTENTION": "on", "LOCAL_LLM_KV_CACHE_TYPE": "Q8_0"}
    )
    assert (tuned.flash_attention, tuned.kv_cache_type) == (True, "q8_0")
    assert RuntimeSettings.from_env({"LOCAL_LLM_FLASH_ATTENTION": "0"}).flash_attention is False


@pytest.mark.parametrize(
    ("name", "value"),
    [("LOCAL_LLM_KV_CACHE_TYPE", "q5_1"), ("LOCAL_LLM_FLASH_ATTENTION", "maybe")],
)
def test_bad_attention_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(InvalidOptionError, match=name):
        RuntimeSettings.from_env({name: value})
