"""The one place where environment variables become typed settings.

Settings are read when :meth:`RuntimeSettings.from_env` is called, not at import
time, so a test (or an application) can change the environment and see the new
values. Hugging Face variables are read here too and handed to
``huggingface_hub`` explicitly, because the library itself freezes them when it
is first imported.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from local_llm_runtime.errors import InvalidOptionError

__all__ = [
    "DEFAULT_HF_ENDPOINT",
    "DEFAULT_HOST",
    "DEFAULT_MODELSCOPE_ENDPOINT",
    "KV_CACHE_TYPES",
    "RemoteDialect",
    "RemoteSettings",
    "RuntimeSettings",
    "ServerSettings",
    "parse_duration",
    "parse_host",
]

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_HOST = "127.0.0.1:11434"
DEFAULT_MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"
"""ModelScope's site, as the ``modelscope`` SDK's default ``MODELSCOPE_DOMAIN``."""
SOURCES = ("hf", "modelscope")
"""Model sources a catalog name can be pulled from (``LOCAL_LLM_SOURCE``)."""
"""Where ``local-llm serve`` listens and ``local-llm ps``/``stop`` connect: Ollama's default."""
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)")


def _finite_duration(value: object, seconds: float) -> float:
    if not math.isfinite(seconds):
        raise InvalidOptionError(
            f"Invalid duration {value!r}: use a finite number of seconds, or -1 for forever."
        )
    return seconds


def parse_duration(value: str | float | int) -> float:
    """Parse an Ollama-style duration into seconds.

    Accepts numbers (seconds) and Go-style strings such as ``"5m"``, ``"1h30m"``,
    ``"250ms"``, ``"0"`` or ``"-1"``. A negative value means "forever".

    Args:
        value: The duration to parse.

    Returns:
        The duration in seconds (negative for "forever").

    Raises:
        InvalidOptionError: If the value is not a duration.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidOptionError(f"Invalid duration {value!r}: use seconds or a string like '5m'.")
    if isinstance(value, int | float):
        return _finite_duration(value, float(value))
    text = value.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _finite_duration(value, seconds)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidOptionError(
            f"Invalid duration {value!r}: use seconds or a string like '5m', '1h' or '-1'."
        )
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(number) * scale[unit] for number, unit in parts)


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")
"""Element types of the KV cache (``LOCAL_LLM_KV_CACHE_TYPE``), as Ollama's."""

KvCacheType = Literal["f16", "q8_0", "q4_0"]


def _kv_cache_type(env: Mapping[str, str]) -> KvCacheType:
    raw = (env.get("LOCAL_LLM_KV_CACHE_TYPE") or "f16").strip().lower()
    if raw not in KV_CACHE_TYPES:
        raise InvalidOptionError(
            f"LOCAL_LLM_KV_CACHE_TYPE={raw!r} is not one of {', '.join(KV_CACHE_TYPES)}."
        )
    return raw  # type: ignore[return-value]


def _tristate(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise InvalidOptionError(f"{name}={raw!r}: use 1/true/on or 0/false/off.")


def _int_at_least(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    """The integer in ``env[name]`` (``default`` when unset or blank), at least ``minimum``."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidOptionError(f"{name}={raw!r} is not an integer.") from None
    if value < minimum:
        bound = "0 (off) or more" if minimum == 0 else f"at least {minimum}"
        raise InvalidOptionError(f"{name}={raw!r} must be {bound}.")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    return _int_at_least(env, name, default, 1)


def _non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    return _int_at_least(env, name, default, 0)


def _modelscope_endpoint(env: Mapping[str, str]) -> str:
    """``MODELSCOPE_DOMAIN`` as the SDK reads it: a bare host gets ``https://``."""
    raw = (env.get("MODELSCOPE_DOMAIN") or "").strip().rstrip("/")
    if not raw:
        return DEFAULT_MODELSCOPE_ENDPOINT
    if raw.lower().startswith(("http://", "https://")):
        return raw
    if "/" in raw or any(c.isspace() for c in raw):
        raise InvalidOptionError(
            f"MODELSCOPE_DOMAIN={raw!r}: give a host (www.modelscope.cn) or a URL (https://host)."
        )
    return "https://" + raw


def _source(env: Mapping[str, str]) -> Literal["hf", "modelscope"]:
    raw = (env.get("LOCAL_LLM_SOURCE") or "hf").strip().lower()
    if raw not in SOURCES:
        raise InvalidOptionError(f"LOCAL_LLM_SOURCE={raw!r} is not one of {', '.join(SOURCES)}.")
    return raw  # type: ignore[return-value]


_QUANT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,38}[A-Za-z0-9])?")


def _quant(env: Mapping[str, str]) -> str | None:
    """``LOCAL_LLM_QUANT``: a quantization name (``q5_k_m``) or ``auto``, upper-cased."""
    raw = (env.get("LOCAL_LLM_QUANT") or "").strip()
    if not raw:
        return None
    if not _QUANT_NAME.fullmatch(raw):
        raise InvalidOptionError(
            f"LOCAL_LLM_QUANT={raw!r} is not a quantization name: use one like Q4_K_M, "
            "Q8_0, or auto (the largest that fits this machine's memory)."
        )
    return raw.upper()


class RuntimeSettings(BaseModel):
    """Typed view of the environment the runtime depends on."""

    model_config = ConfigDict(frozen=True)

    home: Path
    """Runtime state: the model store (names, aliases, custom models) and imported
    files. ``LOCAL_LLM_HOME``; defaults to the user's data directory."""

    keep_alive: float = 300.0
    """Seconds a loaded model stays in memory after its last request
    (``LOCAL_LLM_KEEP_ALIVE``; ``0`` unloads at once, negative keeps it forever)."""

    max_loaded_models: int = Field(default=3, ge=1)
    """How many models may be loaded at once before the least recently used idle
    one is unloaded (``LOCAL_LLM_MAX_LOADED_MODELS``)."""

    num_parallel: int = Field(default=1, ge=1)
    """Requests decoded together per loaded model (``LOCAL_LLM_NUM_PARALLEL``)."""

    cache_ram: int = Field(default=0, ge=0)
    """MiB of RAM for saved prompt states (``LOCAL_LLM_CACHE_RAM``, as llama-server's
    ``--cache-ram``): with more conversations than slots, each keeps its prefix; ``0``
    disables it (the default: a restored state continues with other batch shapes than a full
    prefill, so greedy answers could depend on what ran before; opt in with e.g. 1024).
    Shared by every loaded model; a model's states go when it is unloaded."""

    cache_disk: int = Field(default=0, ge=0)
    """MiB of disk for long shared prompt prefixes saved under :attr:`slot_save_path`
    (``LOCAL_LLM_CACHE_DISK``; least recently used files go first; ``0``, the default,
    disables it: opt in with e.g. 1024)."""

    slot_save_path: Path | None = None
    """Where shared prompt prefixes are saved, one folder per model (``LOCAL_LLM_SLOT_SAVE_PATH``,
    as llama-server's ``--slot-save-path``); ``None``: ``slots`` under :attr:`home`."""

    slot_save_min: int = Field(default=512, ge=1)
    """Shortest shared prefix (tokens) saved to disk (``LOCAL_LLM_SLOT_SAVE_MIN``)."""

    flash_attention: bool | None = None
    """Use llama.cpp's flash attention (``LOCAL_LLM_FLASH_ATTENTION``); unset: off,
    unless a quantized KV cache needs it."""

    kv_cache_type: KvCacheType = "f16"
    """Element type of the KV cache (``LOCAL_LLM_KV_CACHE_TYPE``): ``q8_0`` halves its
    memory, ``q4_0`` quarters it; both turn flash attention on (llama.cpp needs it)."""

    repack: bool | None = None
    """Keep llama.cpp's extra CPU buffer types (weight repacking, AMX) (``LOCAL_LLM_REPACK``);
    unset: on, except on CPUs with AMX, whose buffer type crashes llama.cpp
    (see :mod:`local_llm_runtime.llama.repack`)."""

    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    """Base URL of the Hugging Face Hub (``HF_ENDPOINT``)."""

    hf_offline: bool = False
    """Never touch the network (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""

    hf_token: SecretStr | None = None
    """Token for gated or private repositories (``HF_TOKEN``); never printed."""

    hf_cache: Path
    """The standard Hugging Face cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""

    stream_idle_timeout: float = Field(default=10.0, gt=0)
    """Seconds a stream may go unread while holding its model before a request waiting for
    that model cancels it and takes the model (``LOCAL_LLM_STREAM_IDLE_TIMEOUT``)."""

    hf_token_path: Path | None = None
    """Where ``hf auth login`` saves its token (``HF_TOKEN_PATH``, else ``$HF_HOME/token``);
    read when ``HF_TOKEN`` is unset."""

    progress_bars: bool = True
    """Show download progress (off when ``HF_HUB_DISABLE_PROGRESS_BARS`` is set)."""

    modelscope_endpoint: str = DEFAULT_MODELSCOPE_ENDPOINT
    """Base URL of ModelScope (``MODELSCOPE_DOMAIN``, as the ``modelscope`` SDK reads it: a
    bare host such as ``www.modelscope.cn`` gets ``https://``; a URL is used as it is)."""

    modelscope_token: SecretStr | None = None
    """ModelScope access token for private repositories (``MODELSCOPE_API_TOKEN``, as the
    SDK); sent as the SDK sends it (the ``m_session_id`` cookie); never printed."""

    source: Literal["hf", "modelscope"] = "hf"
    """The source a catalog name is pulled from first (``LOCAL_LLM_SOURCE``: ``hf`` or
    ``modelscope``); the other one is the fallback when the first cannot be reached."""
    quant: str | None = None
    """Quantization pulled when a name gives none (``LOCAL_LLM_QUANT``, upper case:
    ``Q8_0``, or ``AUTO`` for the largest that fits this machine's memory); ``None``: the
    catalog family's default, ``Q4_K_M`` for ``hf.co/`` references."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Read the settings from environment variables.

        Args:
            env: The environment to read; ``os.environ`` when omitted.

        Returns:
            The settings.
        """
        env = os.environ if env is None else env
        home_raw = env.get("LOCAL_LLM_HOME")
        home = (
            Path(home_raw).expanduser()
            if home_raw
            else Path(platformdirs.user_data_dir("local-llm", appauthor=False))
        )
        hf_home = env.get("HF_HOME")
        if hf_home:
            base = Path(hf_home).expanduser()
        else:
            xdg = env.get("XDG_CACHE_HOME")
            base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface"
        hf_cache_raw = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
        hf_cache = Path(hf_cache_raw).expanduser() if hf_cache_raw else base / "hub"
        token_path_raw = env.get("HF_TOKEN_PATH")
        hf_token_path = Path(token_path_raw).expanduser() if token_path_raw else base / "token"
        token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")
        ms_token = (env.get("MODELSCOPE_API_TOKEN") or "").strip()
        keep_alive_raw = env.get("LOCAL_LLM_KEEP_ALIVE")
        keep_alive = 300.0
        if keep_alive_raw:
            try:
                keep_alive = parse_duration(keep_alive_raw)
            except InvalidOptionError as exc:
                raise InvalidOptionError(f"LOCAL_LLM_KEEP_ALIVE: {exc}") from None
        progress_raw = env.get("HF_HUB_DISABLE_PROGRESS_BARS")
        slot_raw = env.get("LOCAL_LLM_SLOT_SAVE_PATH")
        idle_raw = env.get("LOCAL_LLM_STREAM_IDLE_TIMEOUT")
        stream_idle = 10.0
        if idle_raw:
            try:
                stream_idle = parse_duration(idle_raw)
            except InvalidOptionError as exc:
                raise InvalidOptionError(f"LOCAL_LLM_STREAM_IDLE_TIMEOUT: {exc}") from None
            if stream_idle <= 0:
                raise InvalidOptionError("LOCAL_LLM_STREAM_IDLE_TIMEOUT must be positive.")
        return cls(
            home=home,
            keep_alive=keep_alive,
            max_loaded_models=_positive_int(env, "LOCAL_LLM_MAX_LOADED_MODELS", 3),
            num_parallel=_positive_int(env, "LOCAL_LLM_NUM_PARALLEL", 1),
            cache_ram=_non_negative_int(env, "LOCAL_LLM_CACHE_RAM", 0),
            cache_disk=_non_negative_int(env, "LOCAL_LLM_CACHE_DISK", 0),
            slot_save_path=Path(slot_raw).expanduser() if slot_raw else home / "slots",
            slot_save_min=_positive_int(env, "LOCAL_LLM_SLOT_SAVE_MIN", 512),
            flash_attention=_tristate(env, "LOCAL_LLM_FLASH_ATTENTION"),
            kv_cache_type=_kv_cache_type(env),
            repack=_tristate(env, "LOCAL_LLM_REPACK"),
            hf_endpoint=(env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/"),
            hf_offline=_is_true(env.get("HF_HUB_OFFLINE"))
            or _is_true(env.get("TRANSFORMERS_OFFLINE")),
            hf_token=SecretStr(token) if token else None,
            hf_cache=hf_cache,
            hf_token_path=hf_token_path,
            progress_bars=not _is_true(progress_raw),
            stream_idle_timeout=stream_idle,
            modelscope_endpoint=_modelscope_endpoint(env),
            modelscope_token=SecretStr(ms_token) if ms_token else None,
            source=_source(env),
            quant=_quant(env),
        )

    def token_value(self) -> str | None:
        """Return the raw token for an HTTP call (never log the result)."""
        return self.hf_token.get_secret_value() if self.hf_token else None


def parse_host(value: str | None) -> tuple[str, int]:
    """Split ``LOCAL_LLM_HOST`` into a host and a port, as Ollama reads ``OLLAMA_HOST``.

    Accepted: ``host``, ``host:port``, ``:port``, ``[::1]:port`` and any of these
    after ``http://``; the host defaults to ``127.0.0.1`` and the port to
    ``11434`` (``80``/``443`` for a bare ``http://``/``https://`` URL without one).

    Raises:
        InvalidOptionError: If the value is not such an address (the message names
            ``LOCAL_LLM_HOST``).
    """
    text = (value or "").strip() or DEFAULT_HOST
    default_port = 11434
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in ("http", "https"):
            raise InvalidOptionError(
                f"LOCAL_LLM_HOST={value!r}: use http://HOST:PORT or HOST:PORT."
            )
        default_port = 443 if scheme.lower() == "https" else 80
        text = rest
    text = text.split("/", 1)[0]
    match = re.fullmatch(
        r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\s\[\]]*))(?::(?P<port>\d*))?", text
    )
    if match is None:
        raise InvalidOptionError(f"LOCAL_LLM_HOST={value!r} is not HOST:PORT (e.g. 0.0.0.0:11434).")
    host = match["v6"] or match["host"] or "127.0.0.1"
    port_text = match["port"]
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise InvalidOptionError(f"LOCAL_LLM_HOST={value!r}: the port must be 1-65535.")
    return host, port


class ServerSettings(BaseModel):
    """What ``local-llm serve`` reads from the environment (Ollama's server variables).

    Read with :meth:`from_env` when the server starts, never at import time.
    """

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    """Interface to listen on (``LOCAL_LLM_HOST``, like ``OLLAMA_HOST``)."""

    port: int = Field(default=11434, ge=1, le=65535)
    """TCP port (``LOCAL_LLM_HOST``); 11434 is Ollama's, so clients work unchanged."""

    origins: tuple[str, ...] = ()
    """Extra browser origins allowed by CORS (``LOCAL_LLM_ORIGINS``, comma-separated,
    like ``OLLAMA_ORIGINS``; ``*`` allows any). Loopback origins are always allowed."""

    api_key: SecretStr | None = None
    """When set (``LOCAL_LLM_API_KEY``), every request needs ``Authorization: Bearer <key>``;
    compared in constant time, never logged."""

    max_queue: int = Field(default=512, ge=0)
    """Requests that may wait for a model beyond those being decoded
    (``LOCAL_LLM_MAX_QUEUE``, like ``OLLAMA_MAX_QUEUE``, default 512); more get 503."""

    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest request body accepted (``LOCAL_LLM_MAX_BODY``, bytes, default 32 MiB); 413 beyond."""

    @property
    def loopback(self) -> bool:
        """Whether the server listens on a loopback address only."""
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    @property
    def url(self) -> str:
        """The base URL a client on this machine uses (``http://127.0.0.1:11434``)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)  # noqa: S104
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        """Read ``LOCAL_LLM_HOST``, ``_ORIGINS``, ``_API_KEY``, ``_MAX_QUEUE``, ``_MAX_BODY``.

        Raises:
            InvalidOptionError: For a malformed value (the message names the variable).
        """
        env = os.environ if env is None else env
        host, port = parse_host(env.get("LOCAL_LLM_HOST"))
        origins = tuple(
            o.strip() for o in (env.get("LOCAL_LLM_ORIGINS") or "").split(",") if o.strip()
        )
        key = (env.get("LOCAL_LLM_API_KEY") or "").strip()
        max_queue_raw = (env.get("LOCAL_LLM_MAX_QUEUE") or "").strip()
        try:
            max_queue = int(max_queue_raw) if max_queue_raw else 512
        except ValueError:
            raise InvalidOptionError(
                f"LOCAL_LLM_MAX_QUEUE={max_queue_raw!r} is not an integer."
            ) from None
        if max_queue < 0:
            raise InvalidOptionError(f"LOCAL_LLM_MAX_QUEUE={max_queue_raw!r} must be 0 or more.")
        return cls(
            host=host,
            port=port,
            origins=origins,
            api_key=SecretStr(key) if key else None,
            max_queue=max_queue,
            max_body_bytes=_positive_int(env, "LOCAL_LLM_MAX_BODY", 32 * 1024 * 1024),
        )


RemoteDialect = Literal["auto", "openai", "ollama"]


def _model_map(raw: str | None) -> dict[str, str]:
    """``LOCAL_LLM_MODEL_MAP``: ``local=served,local2=served2`` or a JSON object."""
    if raw is None or not raw.strip():
        return {}
    text = raw.strip()
    if text.startswith("{"):
        import json

        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidOptionError(f"LOCAL_LLM_MODEL_MAP is not valid JSON: {exc.msg}.") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise InvalidOptionError("LOCAL_LLM_MODEL_MAP must map names to names (strings).")
        return dict(data)
    out: dict[str, str] = {}
    for pair in text.split(","):
        local, sep, served = pair.partition("=")
        if not sep or not local.strip() or not served.strip():
            raise InvalidOptionError(
                f"LOCAL_LLM_MODEL_MAP entry {pair.strip()!r} is not LOCAL=SERVED "
                "(e.g. qwen2.5:7b=Qwen/Qwen2.5-7B-Instruct)."
            )
        out[local.strip()] = served.strip()
    return out


_ENDPOINT = re.compile(
    r"(/v1)?/(chat/completions|completions|embeddings|models)$"
    r"|/api/(chat|generate|embed|embeddings|tags|show|version|ps)$"
)
"""An endpoint path pasted after the server's URL (``.../v1/chat/completions``)."""
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def masked_url(url: str) -> str:
    """``url`` with any user info (``user:password@``) replaced by ``***@``, for messages."""
    return _USERINFO.sub(r"\1***@", url)


def check_base_url(value: str) -> str:
    """A remote server's URL, normalised: no trailing ``/``, no pasted endpoint path.

    ``http://host:8000/v1/chat/completions`` -> ``http://host:8000/v1``;
    ``http://host:11434/api/chat`` -> ``http://host:11434``.

    Raises:
        InvalidOptionError: Not an http(s) URL, or one with user info (a credential in
            the URL would be shown in reprs, logs and serialized adapters: use ``api_key``).
            The message never contains the user info.
    """
    value = value.strip()
    if not re.match(r"https?://[^/\s]+\S*$", value, re.IGNORECASE):
        raise InvalidOptionError(
            f"{masked_url(value)!r} is not an http(s) URL (e.g. http://gpu-box:8000/v1)."
        )
    if _USERINFO.match(value):
        raise InvalidOptionError(
            f"{masked_url(value)!r} has credentials in it; remove 'user:password@' and pass "
            "the key as api_key= (LOCAL_LLM_API_KEY), sent as a bearer token and never shown."
        )
    value = value.rstrip("/")
    if "?" not in value and "#" not in value:
        match = _ENDPOINT.search(value)
        path_at = value.find("/", value.index("://") + 3)
        if match and path_at != -1 and match.start() >= path_at:
            ending = match.group(0)
            value = value[: match.start()] + ("/v1" if ending.startswith("/v1") else "")
    return value.rstrip("/")


class RemoteSettings(BaseModel):
    """Where the remote backend sends requests (an OpenAI-compatible or Ollama server).

    Set per adapter (``base_url=``, ``api_key=``) or for the whole process through
    the environment (:meth:`from_env`); without a base URL nothing is remote.
    """

    # A rejected base_url may hold credentials: errors never echo the input.
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    base_url: str
    """The server's URL, e.g. ``http://gpu-box:8000/v1`` (vLLM, llama-server) or
    ``http://host:11434`` (Ollama, ``local-llm serve``) (``LOCAL_LLM_BASE_URL``)."""

    api_key: SecretStr | None = None
    """Sent as ``Authorization: Bearer`` (``LOCAL_LLM_API_KEY``); never logged."""

    dialect: RemoteDialect = "auto"
    """``openai`` (``/v1/...``), ``ollama`` (``/api/...``) or ``auto``: detected once
    from the URL and the server (``LOCAL_LLM_REMOTE_DIALECT``)."""

    model_map: dict[str, str] = Field(default_factory=dict)
    """Local name -> the name the server serves (``LOCAL_LLM_MODEL_MAP``:
    ``qwen2.5:7b=Qwen/Qwen2.5-7B-Instruct,...`` or a JSON object)."""

    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to establish a connection (``LOCAL_LLM_REMOTE_CONNECT_TIMEOUT``)."""

    read_timeout: float = Field(default=600.0, gt=0)
    """Seconds to wait for the next bytes of a response (``LOCAL_LLM_REMOTE_READ_TIMEOUT``)."""

    max_retries: int = Field(default=2, ge=0)
    """Retries, with exponential backoff, on connection errors, 429 and 503, before any
    output was received (``LOCAL_LLM_REMOTE_MAX_RETRIES``)."""

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_base_url(value)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, masked_url(value) if name == "base_url" else value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RemoteSettings | None:
        """The environment's remote settings; ``None`` when ``LOCAL_LLM_BASE_URL`` is unset.

        Raises:
            InvalidOptionError: For a malformed value (the message names the variable).
        """
        env = os.environ if env is None else env
        base_url = (env.get("LOCAL_LLM_BASE_URL") or "").strip()
        if not base_url:
            return None
        try:
            base_url = check_base_url(base_url)
        except InvalidOptionError as exc:
            raise InvalidOptionError(f"LOCAL_LLM_BASE_URL: {exc}") from None
        dialect = (env.get("LOCAL_LLM_REMOTE_DIALECT") or "auto").strip().lower()
        if dialect not in ("auto", "openai", "ollama"):
            raise InvalidOptionError(
                f"LOCAL_LLM_REMOTE_DIALECT={dialect!r} is not one of auto, openai, ollama."
            )
        key = (env.get("LOCAL_LLM_API_KEY") or "").strip()
        timeouts: dict[str, float] = {}
        for name, var in (
            ("connect_timeout", "LOCAL_LLM_REMOTE_CONNECT_TIMEOUT"),
            ("read_timeout", "LOCAL_LLM_REMOTE_READ_TIMEOUT"),
        ):
            raw = env.get(var)
            if raw and raw.strip():
                try:
                    seconds = parse_duration(raw)
                except InvalidOptionError as exc:
                    raise InvalidOptionError(f"{var}: {exc}") from None
                if seconds <= 0:
                    raise InvalidOptionError(f"{var} must be positive.")
                timeouts[name] = seconds
        retries_raw = (env.get("LOCAL_LLM_REMOTE_MAX_RETRIES") or "").strip()
        try:
            retries = int(retries_raw) if retries_raw else 2
        except ValueError:
            raise InvalidOptionError(
                f"LOCAL_LLM_REMOTE_MAX_RETRIES={retries_raw!r} is not an integer."
            ) from None
        return cls(
            base_url=base_url.rstrip("/"),
            api_key=SecretStr(key) if key else None,
            dialect=dialect,  # type: ignore[arg-type]
            model_map=_model_map(env.get("LOCAL_LLM_MODEL_MAP")),
            max_retries=max(0, retries),
            **timeouts,
        )
