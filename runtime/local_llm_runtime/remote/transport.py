"""HTTP to a remote server: one retry policy, timeouts, auth, typed errors (httpx).

:class:`Transport` holds a sync :class:`httpx.Client` and an
:class:`httpx.AsyncClient` (created on first use: construction does no I/O),
sends ``Authorization: Bearer <api_key>`` when a key is set, and applies the
same policy to both:

* connect/read timeouts from :class:`~local_llm_runtime.settings.RemoteSettings`
  (a request's own deadline shortens the read timeout);
* retries, with exponential backoff (``0.5 s * 2**attempt``, at most 8 s), on
  connection errors and on 429/502/503/504, **before any output** (a stream is
  never retried once its status line arrived); a ``Retry-After`` header (seconds
  or an HTTP date) is honoured, up to :data:`MAX_RETRY_AFTER`;
* errors as the runtime's typed errors with the server's own message
  (:func:`error_for`): 401/403 -> :class:`AuthenticationError`, 404 ->
  :class:`ModelNotFoundError` (the engine adds the models the server has),
  context-length refusals -> :class:`ContextLengthExceededError`, other 4xx ->
  :class:`InvalidOptionError`, unreachable or 5xx after the retries ->
  :class:`ServerUnavailableError` naming the URL and what to do.

The API key is only ever in the ``Authorization`` header (httpx masks it in
reprs); no message, log line or repr here contains it, and URLs are shown
without user info.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from local_llm_runtime.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    InvalidOptionError,
    LocalLLMError,
    ModelNotFoundError,
    ServerUnavailableError,
)
from local_llm_runtime.settings import RemoteSettings

__all__ = [
    "MAX_RETRY_AFTER",
    "RETRY_STATUSES",
    "Transport",
    "display_url",
    "error_for",
    "server_message",
]

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses retried before any output (busy, rate limited, gateway trouble)."""
MAX_RETRY_AFTER = 60.0
"""The longest ``Retry-After`` (seconds) honoured; longer waits are capped to it."""
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0

_RETRY_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
"""Transport failures before a status line: the request did not run, or not visibly."""

_CONTEXT_WORDS = re.compile(
    r"context (length|window|size)|maximum context|exceed_context_size|context_length_exceeded"
    r"|prompt (is )?too long|too many tokens",
    re.IGNORECASE,
)


def display_url(url: str | httpx.URL) -> str:
    """A URL fit for messages and logs: no user info, no query string."""
    parsed = httpx.URL(str(url))
    return str(parsed.copy_with(username=None, password=None, query=None))


def server_message(response: httpx.Response) -> str:
    """The server's own error message (OpenAI, Ollama, vLLM, FastAPI bodies), one line."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            message = error.get("message") or error.get("msg")
        elif error:
            message = error
        message = message or body.get("message") or body.get("detail")
    if message is None:
        message = response.text
    text = " ".join(str(message).split())
    return text[:500] or response.reason_phrase or f"HTTP {response.status_code}"


def _context_error(message: str, body: Any) -> ContextLengthExceededError:
    numbers: dict[str, int] = {}
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        for key in ("n_prompt_tokens", "n_ctx"):
            value = body["error"].get(key)
            if isinstance(value, int):
                numbers[key] = value
    patterns = {
        "n_prompt_tokens": (
            r"prompt is (\d+) tokens",
            r"(\d+) in the messages",
            r"requested (\d+) tokens",
            r"\((\d+) tokens?\)",
        ),
        "n_ctx": (
            r"context (?:window|length|size) is (\d+)",
            r"maximum context length is (\d+)",
            r"context (?:window|length|size)(?: of)? (\d+)",
        ),
    }
    for key, candidates in patterns.items():
        for pattern in candidates:
            if key in numbers:
                break
            match = re.search(pattern, message, re.IGNORECASE)
            if match:
                numbers[key] = int(match.group(1))
    error = ContextLengthExceededError(numbers.get("n_prompt_tokens", 0), numbers.get("n_ctx", 0))
    error.args = (f"{message} (the server's words); shorten the input or raise the context.",)
    return error


def error_for(response: httpx.Response, *, model: str | None = None) -> LocalLLMError:
    """The typed error for a non-2xx answer, with the server's message.

    Args:
        response: The answer (its body read).
        model: The model the request named (for the not-found message).
    """
    status = response.status_code
    message = server_message(response)
    where = display_url(response.request.url)
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if status in (401, 403):
        return AuthenticationError(
            f"The server at {where} refused the request ({status}: {message}); "
            "set the right API key (api_key= or LOCAL_LLM_API_KEY)."
        )
    if _CONTEXT_WORDS.search(message) and status < 500:
        return _context_error(message, body)
    if status == 404:
        about = f"model {model!r}" if model else "such endpoint"
        return ModelNotFoundError(f"The server at {where} has no {about} ({message}).")
    if status < 500:
        return InvalidOptionError(
            f"The server at {where} refused the request ({status}): {message}"
        )
    return ServerUnavailableError(
        f"The server at {where} failed ({status}: {message}); check its logs and health.",
        url=where,
        status=status,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


class Transport:
    """Sync and async HTTP to one server, with the retry policy of the module doc.

    Args:
        remote: Where and how (URL, key, timeouts, retries).
        transport: An httpx transport for the sync client (tests: ``httpx.MockTransport``).
        async_transport: One for the async client.
    """

    def __init__(
        self,
        remote: RemoteSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.remote = remote
        base = remote.base_url.rstrip("/")
        self.root = base[: -len("/v1")] if base.endswith("/v1") else base
        """The server's root URL (``base_url`` without a trailing ``/v1``)."""
        self._transport = transport
        self._async_transport = async_transport
        self._client: httpx.Client | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self.sleep: Callable[[float], None] = time.sleep
        self.asleep: Callable[[float], Any] = asyncio.sleep
        self.backoff_base = BACKOFF_BASE

    def __repr__(self) -> str:
        return f"Transport({display_url(self.root)!r})"

    # ---- clients ----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream, application/x-ndjson"}
        if self.remote.api_key is not None:
            headers["Authorization"] = f"Bearer {self.remote.api_key.get_secret_value()}"
        return headers

    def _timeout(self, remaining: float | None = None) -> httpx.Timeout:
        read = self.remote.read_timeout
        if remaining is not None:
            read = max(0.001, min(read, remaining))
        connect = self.remote.connect_timeout
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    @property
    def client(self) -> httpx.Client:
        """The sync client (created on first use)."""
        if self._client is None:
            self._client = httpx.Client(
                headers=self._headers(), timeout=self._timeout(), transport=self._transport
            )
        return self._client

    @property
    def aclient(self) -> httpx.AsyncClient:
        """The async client of the running event loop (one per loop, created on first use).

        An ``httpx.AsyncClient`` belongs to the loop that opened its connections; one
        engine is shared by every adapter, and LangChain/LlamaIndex callers may run
        ``ainvoke`` under several ``asyncio.run`` calls, so each loop gets its own.
        """
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = httpx.AsyncClient(
                headers=self._headers(), timeout=self._timeout(), transport=self._async_transport
            )
            self._aclients[loop] = client
        return client

    def close(self) -> None:
        """Close the sync client (async ones close with :meth:`aclose`, or with their loop)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the sync client and the running loop's async client."""
        self.close()
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def url(self, path: str) -> str:
        """The full URL of ``path`` (``/v1/...``, ``/api/...``) on this server."""
        return self.root + path

    # ---- the retry policy -------------------------------------------------------

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        after = _retry_after(response) if response is not None else None
        if after is not None:
            return after
        return float(min(BACKOFF_MAX, self.backoff_base * 2**attempt))

    def _give_up(
        self, path: str, attempts: int, exc: Exception | None, response: httpx.Response | None
    ) -> LocalLLMError:
        where = display_url(self.url(path))
        if response is not None:
            if response.status_code == 429:
                return ServerUnavailableError(
                    f"The server at {where} is rate limiting (429: {server_message(response)}) "
                    f"after {attempts} attempts; slow down or raise LOCAL_LLM_REMOTE_MAX_RETRIES.",
                    url=where,
                    status=429,
                )
            return ServerUnavailableError(
                f"The server at {where} is unavailable ({response.status_code}: "
                f"{server_message(response)}) after {attempts} attempts; check that it is "
                "running and healthy, or raise LOCAL_LLM_REMOTE_MAX_RETRIES.",
                url=where,
                status=response.status_code,
            )
        reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        return ServerUnavailableError(
            f"Could not reach the server at {where} ({reason}) after {attempts} attempts; "
            "check that it is running and that base_url / LOCAL_LLM_BASE_URL is right.",
            url=where,
        )

    def _attempts(self) -> int:
        return self.remote.max_retries + 1

    def send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        stream: bool = False,
        model: str | None = None,
        allow: tuple[int, ...] = (),
        remaining: float | None = None,
    ) -> httpx.Response:
        """Send a request with retries; the answer is 2xx (or a status in ``allow``).

        With ``stream=True`` the body is not read: iterate it, then close it.

        Raises:
            AuthenticationError, ModelNotFoundError, ContextLengthExceededError,
                InvalidOptionError, ServerUnavailableError: See :func:`error_for`.
        """
        attempts = self._attempts()
        request = self.client.build_request(
            method, self.url(path), json=body, timeout=self._timeout(remaining)
        )
        for attempt in range(attempts):
            try:
                response = self.client.send(request, stream=stream)
            except _RETRY_ERRORS as exc:
                if attempt + 1 >= attempts:
                    raise self._give_up(path, attempts, exc, None) from None
                delay = self._delay(attempt, None)
                logger.info("Retrying %s in %.1f s (%s)", display_url(request.url), delay, exc)
                self.sleep(delay)
                continue
            except httpx.TimeoutException as exc:
                raise self._timed_out(path, exc) from None
            if response.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                delay = self._delay(attempt, response)
                response.close()
                logger.info(
                    "Retrying %s in %.1f s (%d)",
                    display_url(request.url),
                    delay,
                    response.status_code,
                )
                self.sleep(delay)
                continue
            return self._checked(response, path, attempts, model, allow)
        raise AssertionError("unreachable")  # pragma: no cover

    async def asend(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        stream: bool = False,
        model: str | None = None,
        allow: tuple[int, ...] = (),
        remaining: float | None = None,
    ) -> httpx.Response:
        """Async :meth:`send` (on the async client; no thread)."""
        attempts = self._attempts()
        client = self.aclient
        request = client.build_request(
            method, self.url(path), json=body, timeout=self._timeout(remaining)
        )
        for attempt in range(attempts):
            try:
                response = await client.send(request, stream=stream)
            except _RETRY_ERRORS as exc:
                if attempt + 1 >= attempts:
                    raise self._give_up(path, attempts, exc, None) from None
                await self.asleep(self._delay(attempt, None))
                continue
            except httpx.TimeoutException as exc:
                raise self._timed_out(path, exc) from None
            if response.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                delay = self._delay(attempt, response)
                await response.aclose()
                await self.asleep(delay)
                continue
            if response.is_error and stream:
                await response.aread()
                await response.aclose()
            return self._checked(response, path, attempts, model, allow)
        raise AssertionError("unreachable")  # pragma: no cover

    def _timed_out(self, path: str, exc: Exception) -> ServerUnavailableError:
        where = display_url(self.url(path))
        return ServerUnavailableError(
            f"The server at {where} did not answer in time ({type(exc).__name__}); it may be "
            "overloaded: raise LOCAL_LLM_REMOTE_READ_TIMEOUT (now "
            f"{self.remote.read_timeout:g} s) or the request's timeout.",
            url=where,
        )

    def _checked(
        self,
        response: httpx.Response,
        path: str,
        attempts: int,
        model: str | None,
        allow: tuple[int, ...],
    ) -> httpx.Response:
        if not response.is_error or response.status_code in allow:
            return response
        if not response.is_closed:
            response.read()
            response.close()
        if response.status_code in RETRY_STATUSES:
            raise self._give_up(path, attempts, None, response)
        raise error_for(response, model=model)
