"""HTTP errors: runtime errors to status codes, and each API's error body.

Every error response is JSON, never a stack trace. The body follows the API the
path belongs to:

* Ollama (``/api/...``, ``/``): ``{"error": "message"}``, as Ollama's server writes it;
* OpenAI (``/v1/...``): ``{"error": {"message", "type", "param", "code"}}``, as
  OpenAI's API documents it (``type`` ``invalid_request_error`` for 4xx).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from local_llm_runtime import errors as rt

__all__ = [
    "HTTPError",
    "QueueFullError",
    "error_response",
    "status_of",
]


class HTTPError(Exception):
    """An error with its HTTP status, raised by the routes (``param``: the request field)."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


class QueueFullError(HTTPError):
    """More requests than ``LOCAL_LLM_MAX_QUEUE`` are waiting: 503, as Ollama's ``server busy``."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            503,
            f"server busy, please try again: {limit} requests are already queued "
            "(raise LOCAL_LLM_MAX_QUEUE or LOCAL_LLM_NUM_PARALLEL)",
            code="server_busy",
        )


_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    # most specific first; (error, status, OpenAI error code)
    (rt.ModelNotFoundError, 404, "model_not_found"),
    (rt.ModelExistsError, 409, "model_exists"),
    (rt.ContextLengthExceededError, 400, "context_length_exceeded"),
    (rt.RequestTimeoutError, 504, "timeout"),
    (rt.AuthenticationError, 403, "hub_authentication"),
    (rt.OfflineError, 503, "offline"),
    (rt.DownloadError, 502, "download_failed"),
    (rt.ChecksumMismatchError, 502, "checksum_mismatch"),
    (rt.LlamaBindingError, 500, "binding"),
    (rt.ModelLoadError, 500, "model_load_failed"),
    (rt.GenerationError, 500, "generation_failed"),
    (rt.StoreError, 500, "store"),
    (rt.StreamReclaimedError, 500, "stream_reclaimed"),
    (rt.InvalidModelNameError, 400, "invalid_model_name"),
    (rt.InvalidModelFileError, 400, "invalid_model_file"),
    (rt.UnknownOptionError, 400, "unknown_option"),
    (rt.InvalidOptionError, 400, "invalid_option"),
    (rt.TemplateError, 400, "template"),
    (rt.ModelfileError, 400, "invalid_modelfile"),
    (rt.InvalidToolCallError, 400, "invalid_tool_call"),
    (rt.LocalLLMError, 500, "internal"),
)


def status_of(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and OpenAI-style error code of an error (500 for unknown ones)."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.code or _default_code(exc.status)
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal"


def _default_code(status: int) -> str:
    return {
        400: "invalid_request",
        401: "invalid_api_key",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        503: "server_busy",
    }.get(status, "internal" if status >= 500 else "invalid_request")


def is_openai_path(path: str) -> bool:
    """Whether a path belongs to the OpenAI-compatible API (``/v1/...``)."""
    return path == "/v1" or path.startswith("/v1/")


def error_body(
    path: str, status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The JSON error body the API of ``path`` uses."""
    if is_openai_path(path):
        kind = "invalid_request_error" if status < 500 else "server_error"
        if status == 401:
            kind = "authentication_error"
        return {
            "error": {
                "message": message,
                "type": kind,
                "param": param,
                "code": code or _default_code(status),
            }
        }
    return {"error": message}


def error_response(
    conn: HTTPConnection | str,
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response in the shape of the API ``conn``'s path belongs to."""
    path = conn if isinstance(conn, str) else conn.url.path
    return JSONResponse(
        error_body(path, status, message, param=param, code=code),
        status_code=status,
        headers=headers,
    )
