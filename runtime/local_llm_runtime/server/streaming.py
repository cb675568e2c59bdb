"""Request bodies in, NDJSON/SSE streams and whole JSON out, with disconnects handled.

* :func:`parse_body` reads a JSON body whatever its ``Content-Type`` (``curl -d``
  sends ``application/x-www-form-urlencoded``, as the Ollama docs' examples do)
  and validates it with a pydantic model: 400 naming the field otherwise.
* :func:`stream_response` primes the wire stream (so an unknown model or a bad
  option is a 404/400 status, not a broken 200), then frames the rest as NDJSON
  (Ollama) or Server-Sent Events (OpenAI). An error after the first object
  becomes one error object in the stream, as both servers do.
* A client that disconnects cancels its generation within a token (Starlette's
  ``StreamingResponse`` cancels the body task; before the first object and for
  whole responses :func:`until_disconnect` watches the connection) and the
  ticket is released, so the slot goes to the next request.
"""

from __future__ import annotations

import json
import re
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from typing import Any, Literal, TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from local_llm_runtime.server.errors import HTTPError, error_body, status_of
from local_llm_runtime.server.state import Ticket

__all__ = [
    "ClientDisconnected",
    "collect",
    "describe_errors",
    "dumps",
    "nests_deeper",
    "parse_body",
    "stream_response",
    "until_disconnect",
    "validation_message",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away before the response was ready."""


def dumps(obj: Any) -> str:
    """Compact JSON as both servers send it (UTF-8 kept, no spaces)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


_UNION_TAG = re.compile(r"[A-Z][A-Za-z0-9]*|str|int|float|bool|none|bytes|.*\[.*")
"""How pydantic names the member of a union in an error's ``loc`` (``str``,
``list[str]``, ``literal['','json']``, a model's class name): not a field of the request."""


def _field_path(loc: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(p for p in loc if not (isinstance(p, str) and _UNION_TAG.fullmatch(p)))


def _should_be(message: str) -> str:
    message = message.removeprefix("Input should be ").removeprefix("Value error, ")
    message = re.sub(r" or instance of \w+$", "", message)
    message = message.replace("a valid dictionary", "an object").replace("a valid list", "an array")
    return message.replace("a valid integer", "an integer").replace("a valid ", "a ")


def describe_errors(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """One line naming the first bad field, and that field's dotted path.

    A field of several types (a union) fails once per type; its errors are one
    message ("should be a string, or an array"), and the path names the field
    only, never pydantic's names of the union's members.
    """
    if not errors:
        return "invalid request body", None
    first = errors[0]
    path = _field_path(first.get("loc", ()))
    same = [e for e in errors if _field_path(e.get("loc", ())) == path]
    where = ".".join(str(part) for part in path)
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    elif len(same) > 1 or path != tuple(first.get("loc", ())):
        alternatives = dict.fromkeys(_should_be(str(e.get("msg", ""))) for e in same)
        message = "should be " + ", or ".join(alternatives)
    else:
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    others = len({_field_path(e.get("loc", ())) for e in errors} - {path})
    more = f" (and {others} more)" if others else ""
    return (f"{where}: {message}{more}" if where else f"{message}{more}"), where or None


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """One line naming the first bad field, and that field's dotted path."""
    return describe_errors(exc.errors(include_url=False))


async def parse_body(request: Request, model: type[M]) -> M:
    """The request's JSON body validated as ``model``.

    Raises:
        HTTPError: 400 for an empty body, invalid UTF-8, malformed JSON or a
            field of the wrong type/name (the message names it).
    """
    raw = await request.body()
    if not raw.strip():
        raise HTTPError(400, "missing request body: send a JSON object")
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # a leading BOM is tolerated
    except UnicodeDecodeError:
        raise HTTPError(400, "the request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise HTTPError(400, f"invalid JSON in the request body: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise HTTPError(400, _TOO_DEEP) from None
    if not isinstance(data, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    if nests_deeper(data, MAX_JSON_DEPTH):
        raise HTTPError(400, _TOO_DEEP)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise HTTPError(400, message, param=param) from None
    except RecursionError:
        raise HTTPError(400, _TOO_DEEP) from None


MAX_JSON_DEPTH = 64
"""Deepest nesting of objects/arrays a request body may have.

Everything downstream that walks a request's JSON recursively (tool schemas,
``format`` schemas to grammars, chat templates rendering tool-call arguments,
argument validation) then stays far from Python's recursion limit, where it
would fail with a 500; real requests nest a few levels (OpenAI's structured
outputs allow 5 levels of schema nesting).
"""

_TOO_DEEP = (
    f"the request body's JSON nests more than {MAX_JSON_DEPTH} levels deep "
    "(objects and arrays); flatten it"
)


def nests_deeper(data: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``data`` (decoded JSON) has containers nested more than ``limit`` deep.

    Also checked on JSON sent inside a string (tool-call ``arguments``), which
    the engine decodes and walks as the body's own JSON.
    """
    level: list[Any] = [data] if isinstance(data, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nxt: list[Any] = []
        for item in level:
            values = item.values() if isinstance(item, dict) else item
            nxt.extend(v for v in values if isinstance(v, dict | list))
        level = nxt
    return False


async def until_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` unless the client disconnects first.

    The request's body must have been read (the watcher reads the connection's
    next messages). An error of ``awaitable`` is raised as itself, not wrapped in
    the task group's ``ExceptionGroup`` (an unknown model stays a 404).

    Raises:
        ClientDisconnected: The client went away (``awaitable`` was cancelled).
        Exception: Whatever ``awaitable`` raised.
    """
    result: list[T] = []
    failure: list[Exception] = []

    async def watch(scope: anyio.CancelScope) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return

    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope)
        try:
            result.append(await awaitable)
        except Exception as exc:  # raised below, outside the group, as itself
            failure.append(exc)
        group.cancel_scope.cancel()
    if failure:
        raise failure[0]
    if not result:  # the watcher cancelled the awaitable
        raise ClientDisconnected
    return result[0]


Framing = Literal["ndjson", "sse"]
_MEDIA = {"ndjson": "application/x-ndjson", "sse": "text/event-stream"}


def _frame(framing: Framing, obj: Any) -> str:
    if framing == "sse":
        return f"data: {obj if isinstance(obj, str) else dumps(obj)}\n\n"
    return dumps(obj) + "\n"


async def stream_response(
    request: Request,
    ticket: Ticket,
    objects: AsyncIterator[Any],
    *,
    framing: Framing,
    close: Callable[[], Awaitable[None]] | None = None,
    trailer: str | None = None,
) -> Response:
    """Stream ``objects`` (JSON-ready dicts) as NDJSON or SSE.

    Args:
        request: The request (watched for a disconnect until the first object).
        ticket: Released when the stream ends, however it ends.
        objects: The wire objects; its first one is awaited here, so errors before
            it become an HTTP status.
        framing: ``ndjson`` (Ollama) or ``sse`` (OpenAI, ``data: {...}``).
        close: Called when the stream ends (closes the engine stream).
        trailer: A last SSE payload sent after a normal end (``[DONE]``).

    Raises:
        ClientDisconnected: The client left before the first object.
    """
    finished = False

    async def finish() -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        ticket.cancel.set()  # a no-op after a normal end; stops the engine otherwise
        # Shielded: on a disconnect this runs in a cancelled task, and an unshielded
        # await would be cancelled at once, leaving the engine stream open.
        with anyio.CancelScope(shield=True):
            try:
                aclose = getattr(objects, "aclose", None)
                if aclose is not None:  # the route's generator: its own cleanup runs now
                    await aclose()
                if close is not None:
                    await close()
            finally:
                ticket.release()

    try:
        first = await until_disconnect(request, anext(objects))
    except StopAsyncIteration:
        first = None
    except BaseException:
        await finish()
        raise

    async def body() -> AsyncGenerator[str, None]:
        try:
            if first is not None:
                yield _frame(framing, first)
            async for obj in objects:
                yield _frame(framing, obj)
        except Exception as exc:  # after the status line: an error object in the stream
            status, code = status_of(exc)
            message = str(exc) if status < 500 or isinstance(exc, HTTPError) else _public(exc)
            yield _frame(framing, error_body(request.url.path, status, message, code=code))
            return
        finally:
            await finish()
        if trailer is not None and framing == "sse":
            yield _frame(framing, trailer)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return _ClosingStream(body(), finish, media_type=_MEDIA[framing], headers=headers)


class _ClosingStream(StreamingResponse):
    """A StreamingResponse that always closes its body and runs ``finish``.

    Starlette stops iterating the body when the client disconnects, but leaves
    the generator suspended (closed only when garbage-collected) or never
    started (the client left before the first chunk was sent), so the ticket
    and the engine stream would stay held; here they are released at once.
    """

    def __init__(
        self,
        content: AsyncGenerator[str, None],
        finish: Callable[[], Awaitable[None]],
        *,
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._content = content
        self._finish = finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._content.aclose()
                await self._finish()


def _public(exc: BaseException) -> str:
    """The message of a server-side error, safe to send (no trace, no internals)."""
    from local_llm_runtime.errors import LocalLLMError

    return str(exc) if isinstance(exc, LocalLLMError) else "internal server error"


async def collect(request: Request, ticket: Ticket, awaitable: Awaitable[T]) -> T:
    """Await a whole (non-streamed) result; a disconnect cancels it; the ticket is released."""
    try:
        return await until_disconnect(request, awaitable)
    finally:
        ticket.cancel.set()
        ticket.release()
