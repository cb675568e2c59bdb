"""Retries, typed errors, cancellation and the async path, over recorded answers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable

import httpx
import pytest

from local_llm_runtime.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    InvalidOptionError,
    ServerUnavailableError,
)
from local_llm_runtime.remote import RemoteEngine
from local_llm_runtime.settings import RemoteSettings
from local_llm_runtime.types import TextDelta

URL = "http://gpu-box:8000/v1"
USER = [{"role": "user", "content": "Hi"}]
KEY = "sk-very-secret-123"
MODELS = {"object": "list", "data": [{"id": "m", "max_model_len": 8192}]}


def sse(*events: dict[str, object]) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


ANSWER = sse(
    {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
)


def engine_with(
    handler: Callable[[httpx.Request], httpx.Response], **fields: object
) -> RemoteEngine:
    remote = RemoteSettings(base_url=URL, **fields)  # type: ignore[arg-type]
    engine = RemoteEngine(
        remote=remote,
        transport=httpx.MockTransport(handler),
        async_transport=httpx.MockTransport(handler),
    )
    engine.http.sleep = slept.append  # type: ignore[assignment]

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    engine.http.asleep = asleep
    return engine


slept: list[float] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    slept.clear()


def serving(chat: Callable[[int], httpx.Response]) -> Callable[[httpx.Request], httpx.Response]:
    calls = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=MODELS)
        calls[0] += 1
        return chat(calls[0])

    return handler


def ok() -> httpx.Response:
    return httpx.Response(200, content=ANSWER, headers={"content-type": "text/event-stream"})


def test_503_then_success_is_retried_with_backoff() -> None:
    engine = engine_with(serving(lambda n: httpx.Response(503) if n < 3 else ok()))
    result = engine.chat("m", USER)
    assert result.text == "Hello" and result.usage.total_tokens == 5
    assert slept == [0.5, 1.0]


def test_429_honours_retry_after() -> None:
    def chat(n: int) -> httpx.Response:
        if n == 1:
            return httpx.Response(429, headers={"Retry-After": "3"}, json={"error": "slow"})
        return ok()

    assert engine_with(serving(chat)).chat("m", USER).text == "Hello"
    assert slept == [3.0]


def test_connection_errors_retried_then_typed_error() -> None:
    attempts = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        attempts[0] += 1
        raise httpx.ConnectError("connection refused", request=request)

    engine = engine_with(handler, max_retries=3)
    with pytest.raises(ServerUnavailableError, match=r"gpu-box:8000/v1/models.*4 attempts"):
        engine.chat("m", USER)
    assert attempts[0] == 4 and len(slept) == 3
    assert isinstance(ServerUnavailableError("x", url=""), ConnectionError)


def test_503_forever_is_server_unavailable() -> None:
    engine = engine_with(serving(lambda n: httpx.Response(503, json={"error": "overloaded"})))
    with pytest.raises(ServerUnavailableError, match=r"overloaded.*3 attempts"):
        engine.chat("m", USER)


def test_401_is_authentication_error_without_the_key() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(401, json={"error": {"message": "Invalid API key"}})

    engine = engine_with(handler, api_key=KEY)
    with pytest.raises(AuthenticationError, match="Invalid API key") as caught:
        engine.chat("m", USER)
    assert seen[0] == f"Bearer {KEY}"
    for text in (str(caught.value), repr(engine), repr(engine.http), repr(engine.remote)):
        assert KEY not in text


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"error": {"message": "This model's maximum context length is 2048 tokens. "
                         "However, you requested 3000 tokens (2900 in the messages, 100 in "
                         "the completion)."}}, ContextLengthExceededError),
        (400, {"error": {"message": "the request exceeds the available context size",
                         "type": "exceed_context_size_error", "n_prompt_tokens": 5000,
                         "n_ctx": 4096}}, ContextLengthExceededError),
        (400, {"error": {"message": "temperature must be <= 2"}}, InvalidOptionError),
        (422, {"detail": "bad field"}, InvalidOptionError),
    ],
)  # fmt: skip
def test_error_mapping(status: int, body: dict[str, object], kind: type[Exception]) -> None:
    engine = engine_with(serving(lambda n: httpx.Response(status, json=body)))
    with pytest.raises(kind) as caught:
        engine.chat("m", USER)
    if isinstance(caught.value, ContextLengthExceededError):
        assert caught.value.prompt_tokens in (2900, 5000) and caught.value.num_ctx in (2048, 4096)


class Tracked(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that records whether the client closed it."""

    def __init__(self) -> None:
        self.closed = False

    def events(self) -> list[bytes]:
        one = {"choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}
        return [f"data: {json.dumps(one)}\n\n".encode()] * 1000

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from self.events()

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for event in self.events():
            yield event

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def test_closing_a_stream_closes_the_response() -> None:
    body = Tracked()
    engine = engine_with(
        serving(
            lambda n: httpx.Response(
                200, stream=body, headers={"content-type": "text/event-stream"}
            )
        )
    )
    with engine.chat_stream("m", USER) as stream:
        assert isinstance(next(stream), TextDelta)
    assert body.closed


def test_cancel_event_ends_with_cancelled() -> None:
    body = Tracked()
    engine = engine_with(
        serving(
            lambda n: httpx.Response(
                200, stream=body, headers={"content-type": "text/event-stream"}
            )
        )
    )
    cancel = threading.Event()
    chunks = []
    with engine.chat_stream("m", USER, cancel=cancel) as stream:
        for chunk in stream:
            chunks.append(chunk)
            cancel.set()
    assert chunks[-1].finish_reason == "cancelled"  # type: ignore[union-attr]
    assert body.closed


def test_async_path_uses_no_thread_and_aclose_closes_the_response() -> None:
    body = Tracked()
    engine = engine_with(
        serving(
            lambda n: httpx.Response(
                200, stream=body, headers={"content-type": "text/event-stream"}
            )
        )
    )

    async def main() -> int:
        before = threading.active_count()
        stream = engine.achat_stream("m", USER)
        count = 0
        async for chunk in stream:
            count += isinstance(chunk, TextDelta)
            assert threading.active_count() == before
            if count == 3:
                break
        await stream.aclose()
        return count

    assert asyncio.run(main()) == 3
    assert body.closed


def test_async_retry_and_result() -> None:
    engine = engine_with(serving(lambda n: httpx.Response(503) if n < 2 else ok()))
    assert asyncio.run(engine.achat("m", USER)).text == "Hello"
    assert slept == [0.5]
    assert engine.model_info("m").context_length == 8192  # vLLM's max_model_len


def test_construction_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_LLM_BASE_URL", raising=False)
    with pytest.raises(InvalidOptionError, match="LOCAL_LLM_BASE_URL"):
        RemoteEngine()
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", "http://nowhere.invalid:1/v1")
    assert RemoteEngine().remote.base_url.endswith("/v1")  # no I/O at construction


def test_async_calls_from_several_event_loops_each_get_a_client() -> None:
    # One engine is shared by every adapter; callers may run ainvoke under several
    # asyncio.run calls: a client whose connections belong to the first (closed) loop
    # fails in the next.
    from local_llm_runtime.testing import FakeEngine
    from tests.support.server import ServerThread, make_app

    with ServerThread(make_app(FakeEngine(responses=["Hello!"], cycle=True))) as server:
        remote = RemoteSettings(base_url=server.url + "/v1", model_map={"m": "m"})
        engine = RemoteEngine(remote=remote)
        messages = [{"role": "user", "content": "hi"}]
        for _ in range(3):
            assert asyncio.run(engine.achat("m", messages)).text == "Hello!"
