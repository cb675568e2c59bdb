"""Which engine serves an adapter: in-process, the environment's server, or its own ``base_url``.

The rules (``backends.default_engine``, ``backends.remote_engine``,
``_options.RemoteFields``), for every adapter class:

* without ``LOCAL_LLM_BASE_URL`` and ``base_url``, nothing changes (in-process llama.cpp);
* ``LOCAL_LLM_BASE_URL`` makes the process-wide engine remote;
* ``base_url=`` selects the remote engine of that server for one instance;
* one remote engine per configuration, shared by every adapter configured alike;
* ``engine`` and ``base_url`` together are refused; the key is never shown or serialized;
* construction does no I/O; pickling and copying keep the configuration.

The end-to-end checks send real requests over loopback to ``local-llm serve``
(the app over a ``FakeEngine``).
"""

from __future__ import annotations

import copy
import json
import pickle
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.load import dumpd, dumps
from pydantic import SecretStr, ValidationError

from local_llm_integrations.langchain import ChatLocal, LocalEmbeddings
from local_llm_integrations.langchain import LocalLLM as LangChainLLM
from local_llm_integrations.llama_index import LocalEmbedding
from local_llm_integrations.llama_index import LocalLLM as LlamaIndexLLM
from local_llm_runtime import backends
from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.remote import RemoteEngine
from local_llm_runtime.testing import FakeEngine
from tests.support.server import ServerThread, make_app

ADAPTERS: list[type[Any]] = [
    ChatLocal,
    LangChainLLM,
    LocalEmbeddings,
    LlamaIndexLLM,
    LocalEmbedding,
]
ADAPTER_IDS = [f"{cls.__module__.split('.')[1]}.{cls.__name__}" for cls in ADAPTERS]
SECRET = "sk-very-secret-0123456789"
REMOTE_VARS = (
    "LOCAL_LLM_BASE_URL",
    "LOCAL_LLM_API_KEY",
    "LOCAL_LLM_REMOTE_DIALECT",
    "LOCAL_LLM_MODEL_MAP",
    "LOCAL_LLM_REMOTE_CONNECT_TIMEOUT",
    "LOCAL_LLM_REMOTE_READ_TIMEOUT",
    "LOCAL_LLM_REMOTE_MAX_RETRIES",
)


def closed_url() -> str:
    """A loopback URL nobody listens on (a request there fails at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(autouse=True)
def fresh_selection(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No remote variable set, no process-wide engine chosen yet; both restored after."""
    for var in REMOTE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(backends, "_default", None)
    monkeypatch.setattr(backends, "_remote_engines", {})
    yield
    for engine in backends._remote_engines.values():
        engine.close()  # type: ignore[attr-defined]


# ---- the process-wide engine ---------------------------------------------------------


def test_without_base_url_the_default_engine_is_in_process() -> None:
    engine = backends.default_engine()
    assert type(engine).__name__ == "LlamaEngine"
    assert backends.default_engine() is engine
    assert backends._remote_engines == {}


def test_local_llm_base_url_makes_the_default_engine_remote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = closed_url()
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", url + "/")
    monkeypatch.setenv("LOCAL_LLM_API_KEY", SECRET)
    monkeypatch.setenv("LOCAL_LLM_MODEL_MAP", "qwen2.5:7b=Qwen/Qwen2.5-7B-Instruct")
    engine = backends.default_engine()
    assert isinstance(engine, RemoteEngine)
    assert engine.remote.base_url == url
    assert engine.remote.api_key is not None
    assert engine.remote.api_key.get_secret_value() == SECRET
    assert engine.remote.model_map == {"qwen2.5:7b": "Qwen/Qwen2.5-7B-Instruct"}
    assert backends.default_engine() is engine
    # an adapter naming the same server shares it (and the environment's key)
    assert ChatLocal(model="m", base_url=url).serving_engine() is engine
    assert SECRET not in repr(engine)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LOCAL_LLM_BASE_URL", "gpu-box:8000"),
        ("LOCAL_LLM_REMOTE_DIALECT", "grpc"),
        ("LOCAL_LLM_REMOTE_MAX_RETRIES", "many"),
        ("LOCAL_LLM_REMOTE_READ_TIMEOUT", "soon"),
    ],
)
def test_a_malformed_variable_is_named_when_the_engine_is_chosen(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv(var, value)
    adapter = ChatLocal(model="m")  # construction reads no variable
    with pytest.raises(InvalidOptionError, match=var):
        adapter.serving_engine()
    assert backends._default is None  # nothing half-made is kept


def test_create_engine_remote_needs_a_url() -> None:
    with pytest.raises(InvalidOptionError, match="LOCAL_LLM_BASE_URL"):
        backends.create_engine("remote")
    assert "remote" in backends.BACKENDS


def test_create_engine_remote_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    engine = backends.create_engine("remote")
    assert isinstance(engine, RemoteEngine)
    assert engine.remote.base_url == "http://127.0.0.1:9/v1"


# ---- per instance ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", ADAPTERS, ids=ADAPTER_IDS)
def test_base_url_overrides_the_environment_per_instance(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env_url, own_url = closed_url(), "http://127.0.0.1:9/v1"
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", env_url)
    monkeypatch.setenv("LOCAL_LLM_API_KEY", "env-key")
    monkeypatch.setenv("LOCAL_LLM_REMOTE_READ_TIMEOUT", "7s")
    adapter = cls(model="m", base_url=own_url + "/")
    assert adapter.base_url == own_url
    engine = adapter.serving_engine()
    assert isinstance(engine, RemoteEngine)
    assert engine.remote.base_url == own_url
    assert engine.remote.read_timeout == 7.0  # the other settings: from the environment
    assert engine.remote.api_key is None  # the environment's key is for its own server only
    assert engine is not backends.default_engine()
    assert cls(model="m").serving_engine() is backends.default_engine()


@pytest.mark.parametrize("cls", ADAPTERS, ids=ADAPTER_IDS)
def test_without_base_url_an_adapter_uses_the_process_wide_engine(cls: type[Any]) -> None:
    adapter = cls(model="m")
    assert adapter.base_url is None and adapter.api_key is None
    assert adapter.serving_engine() is backends.default_engine()
    assert backends._remote_engines == {}


@pytest.mark.parametrize("cls", ADAPTERS, ids=ADAPTER_IDS)
def test_an_explicit_engine_still_wins(cls: type[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    fake = FakeEngine()
    assert cls(model="m", engine=fake).serving_engine() is fake


def test_one_engine_per_configuration_shared_across_adapters() -> None:
    url, other = "http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"
    engines = [cls(model="m", base_url=url, api_key=SECRET).serving_engine() for cls in ADAPTERS]
    assert all(engine is engines[0] for engine in engines)
    assert (
        ChatLocal(model="other", base_url=url + "/", api_key=SECRET).serving_engine()
        is (engines[0])
    )
    assert len(backends._remote_engines) == 1
    # another key, no key, another server: another engine each
    distinct = {
        id(engines[0]),
        id(ChatLocal(model="m", base_url=url, api_key="other-key").serving_engine()),
        id(ChatLocal(model="m", base_url=url).serving_engine()),
        id(ChatLocal(model="m", base_url=other, api_key=SECRET).serving_engine()),
    }
    assert len(distinct) == 4
    assert SECRET not in repr(backends._remote_engines.values())


def test_the_cache_key_includes_the_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/v1"
    first = ChatLocal(model="m", base_url=url).serving_engine()
    monkeypatch.setenv("LOCAL_LLM_MODEL_MAP", "m=served-m")
    second = ChatLocal(model="m", base_url=url).serving_engine()
    assert second is not first
    assert isinstance(second, RemoteEngine) and second.remote.model_map == {"m": "served-m"}


@pytest.mark.parametrize(
    ("env", "base_url", "api_key", "sent"),
    [
        ({}, "http://a:1/v1", None, None),
        ({}, "http://a:1/v1", "k", "k"),
        ({"LOCAL_LLM_BASE_URL": "http://a:1/v1", "LOCAL_LLM_API_KEY": "e"}, "http://a:1/v1/", None, "e"),
        ({"LOCAL_LLM_BASE_URL": "http://a:1/v1", "LOCAL_LLM_API_KEY": "e"}, "http://a:1/v1", "k", "k"),
        ({"LOCAL_LLM_BASE_URL": "http://a:1/v1", "LOCAL_LLM_API_KEY": "e"}, "http://b:1/v1", None, None),
    ],
)  # fmt: skip
def test_which_key_is_sent(
    env: dict[str, str], base_url: str, api_key: str | None, sent: str | None
) -> None:
    remote = backends.remote_settings_for(
        base_url, SecretStr(api_key) if api_key else None, env=env
    )
    assert remote.base_url == base_url.rstrip("/")
    assert (remote.api_key.get_secret_value() if remote.api_key else None) == sent


# ---- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ADAPTERS, ids=ADAPTER_IDS)
def test_engine_and_base_url_together_are_refused(cls: type[Any]) -> None:
    with pytest.raises(ValidationError, match="pass only one of them"):
        cls(model="m", engine=FakeEngine(), base_url="http://127.0.0.1:9/v1")
    remote = cls(model="m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="pass only one of them"):
        remote.engine = FakeEngine()
    local = cls(model="m", engine=FakeEngine())
    with pytest.raises(ValueError, match="pass only one of them"):
        local.base_url = "http://127.0.0.1:9/v1"
    local.engine = None
    local.base_url = "http://127.0.0.1:9/v1"  # one at a time is fine
    assert isinstance(local.serving_engine(), RemoteEngine)


@pytest.mark.parametrize("cls", ADAPTERS, ids=ADAPTER_IDS)
@pytest.mark.parametrize("bad", ["gpu-box:8000", "ftp://host/v1", "http://", "http:// host/v1"])
def test_a_base_url_that_is_not_http_is_refused(cls: type[Any], bad: str) -> None:
    with pytest.raises(ValidationError, match="http\\(s\\) URL"):
        cls(model="m", base_url=bad)


# ---- secrets, I/O, copies ---------------------------------------------------------------


def _serializations(adapter: Any) -> dict[str, str]:
    forms = {
        "repr": repr(adapter),
        "str": str(adapter),
        "model_dump": str(adapter.model_dump()),
        "model_dump_json": adapter.model_dump_json(),
    }
    if hasattr(adapter, "to_json") and hasattr(adapter, "lc_secrets"):
        forms["langchain dumps"] = dumps(adapter)
        forms["langchain dumpd"] = json.dumps(dumpd(adapter), default=str)
        forms["_identifying_params"] = str(adapter._identifying_params)
    if hasattr(adapter, "to_dict"):
        forms["llama_index to_dict"] = str(adapter.to_dict())
        forms["llama_index to_json"] = adapter.to_json()
    return forms


@pytest.mark.parametrize("cls", ADAPTERS, ids=ADAPTER_IDS)
def test_the_api_key_is_never_shown_or_serialized(cls: type[Any]) -> None:
    adapter = cls(model="m", base_url="http://127.0.0.1:9/v1", api_key=SECRET)
    assert isinstance(adapter.api_key, SecretStr)
    assert adapter.api_key.get_secret_value() == SECRET
    for form, text in _serializations(adapter).items():
        assert SECRET not in text, form
    engine = adapter.serving_engine()
    assert SECRET not in repr(engine) and SECRET not in str(vars(engine))


def test_langchain_serialization_refers_to_the_variable() -> None:
    chat = ChatLocal(model="m", base_url="http://127.0.0.1:9/v1", api_key=SECRET)
    assert chat.lc_secrets == {"api_key": "LOCAL_LLM_API_KEY"}
    assert chat._identifying_params["base_url"] == "http://127.0.0.1:9/v1"
    assert "base_url" not in ChatLocal(model="m")._identifying_params  # cache keys unchanged


@pytest.mark.parametrize("cls", ADAPTERS, ids=ADAPTER_IDS)
def test_construction_does_no_io(cls: type[Any]) -> None:
    cls(model="m", base_url=closed_url(), api_key=SECRET)  # nobody listens: no error yet
    assert backends._remote_engines == {}  # not even an engine was made


@pytest.mark.parametrize("cls", ADAPTERS, ids=ADAPTER_IDS)
@pytest.mark.parametrize(
    "duplicate",
    [pickle.loads, copy.copy, copy.deepcopy, lambda a: a.model_copy()],
    ids=["pickle", "copy", "deepcopy", "model_copy"],
)
def test_copies_keep_the_remote_configuration(
    cls: type[Any], duplicate: Callable[[Any], Any]
) -> None:
    adapter = cls(model="m", base_url="http://127.0.0.1:9/v1", api_key=SECRET)
    engine = adapter.serving_engine()
    source = pickle.dumps(adapter) if duplicate is pickle.loads else adapter
    clone = duplicate(source)
    assert clone.base_url == "http://127.0.0.1:9/v1"
    assert clone.api_key.get_secret_value() == SECRET
    assert clone.serving_engine() is engine  # the process's engine of that configuration


# ---- end to end over loopback ----------------------------------------------------------


@pytest.fixture(scope="module")
def serve() -> Iterator[ServerThread]:
    """``local-llm serve`` over a FakeEngine answering "From the server." on loopback."""
    engine = FakeEngine(responses=["From the server."], cycle=True)
    with ServerThread(make_app(engine)) as server:
        yield server


@pytest.mark.parametrize("suffix", ["/v1", ""], ids=["openai", "ollama"])
def test_base_url_sends_the_requests_to_that_server(
    serve: ServerThread, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_LLM_MODEL_MAP", "m=m")  # the fake serves any name
    chat = ChatLocal(model="m", base_url=serve.url + suffix)
    assert chat.invoke("hi").content == "From the server."
    assert LocalEmbeddings(model="m", base_url=serve.url + suffix).embed_query("hi")
    expected = "ollama" if suffix == "" else "openai"
    engine = chat.serving_engine()
    assert isinstance(engine, RemoteEngine) and engine.dialect() == expected


def test_local_llm_base_url_sends_every_adapter_to_the_server(
    serve: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", serve.url + "/v1")
    monkeypatch.setenv("LOCAL_LLM_MODEL_MAP", "m=m")
    assert ChatLocal(model="m").invoke("hi").content == "From the server."
    assert LlamaIndexLLM(model="m").complete("hi").text == "From the server."
    assert len(LocalEmbedding(model="m").get_text_embedding_batch(["a", "b"])) == 2
    assert len(backends._remote_engines) == 1  # all three shared one engine
