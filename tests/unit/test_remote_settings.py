"""``RemoteSettings.from_env``: where the remote backend sends requests, from the environment."""

from __future__ import annotations

import pytest

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.settings import RemoteSettings


def test_no_base_url_means_nothing_is_remote() -> None:
    assert RemoteSettings.from_env({}) is None
    assert RemoteSettings.from_env({"LOCAL_LLM_API_KEY": "k"}) is None


def test_everything_from_the_environment() -> None:
    settings = RemoteSettings.from_env(
        {
            "LOCAL_LLM_BASE_URL": "http://gpu-box:8000/v1/",
            "LOCAL_LLM_API_KEY": "s3cret-key",
            "LOCAL_LLM_REMOTE_DIALECT": "OpenAI",
            "LOCAL_LLM_MODEL_MAP": "qwen2.5:7b=Qwen/Qwen2.5-7B-Instruct, llama3.2=meta/llama",
            "LOCAL_LLM_REMOTE_CONNECT_TIMEOUT": "2s",
            "LOCAL_LLM_REMOTE_READ_TIMEOUT": "5m",
            "LOCAL_LLM_REMOTE_MAX_RETRIES": "4",
        }
    )
    assert settings is not None
    assert settings.base_url == "http://gpu-box:8000/v1"
    assert settings.api_key is not None and "s3cret-key" not in repr(settings)
    assert settings.dialect == "openai"
    assert settings.model_map == {
        "qwen2.5:7b": "Qwen/Qwen2.5-7B-Instruct",
        "llama3.2": "meta/llama",
    }
    assert (settings.connect_timeout, settings.read_timeout, settings.max_retries) == (2, 300, 4)


def test_model_map_as_json() -> None:
    settings = RemoteSettings.from_env(
        {"LOCAL_LLM_BASE_URL": "http://h:1", "LOCAL_LLM_MODEL_MAP": '{"a:1": "org/A"}'}
    )
    assert settings is not None and settings.model_map == {"a:1": "org/A"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"LOCAL_LLM_BASE_URL": "gpu-box:8000"}, "LOCAL_LLM_BASE_URL"),
        ({"LOCAL_LLM_BASE_URL": "http://h", "LOCAL_LLM_REMOTE_DIALECT": "grpc"}, "LOCAL_LLM_REMOTE_DIALECT"),
        ({"LOCAL_LLM_BASE_URL": "http://h", "LOCAL_LLM_MODEL_MAP": "a"}, "LOCAL_LLM_MODEL_MAP"),
        ({"LOCAL_LLM_BASE_URL": "http://h", "LOCAL_LLM_MODEL_MAP": "{"}, "LOCAL_LLM_MODEL_MAP"),
        ({"LOCAL_LLM_BASE_URL": "http://h", "LOCAL_LLM_REMOTE_READ_TIMEOUT": "soon"}, "LOCAL_LLM_REMOTE_READ_TIMEOUT"),
        ({"LOCAL_LLM_BASE_URL": "http://h", "LOCAL_LLM_REMOTE_MAX_RETRIES": "x"}, "LOCAL_LLM_REMOTE_MAX_RETRIES"),
    ],
)  # fmt: skip
def test_malformed_values_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(InvalidOptionError, match=variable):
        RemoteSettings.from_env(env)
