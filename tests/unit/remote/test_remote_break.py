"""A demanding user against the remote backend: broken, stalled and odd servers.

A raw loopback TCP server (:class:`RawServer`) sends exactly the bytes each case
needs (a reset mid-stream, a clean close without the end marker, a stall), and
records when the client hangs up; recorded answers (``httpx.MockTransport``)
cover odd bodies. The rule under test: an answer is only passed on as complete
when the server said it was complete; everything else is a typed error.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from local_llm_runtime.errors import (
    LocalLLMError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from local_llm_runtime.remote import RemoteEngine
from local_llm_runtime.settings import RemoteSettings
from local_llm_runtime.types import FinalChunk, TextDelta

USER = [{"role": "user", "content": "Hi"}]


def ev(data: object) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def nd(data: object) -> bytes:
    return (json.dumps(data) + "\n").encode()


def chunked(piece: bytes) -> bytes:
    return f"{len(piece):x}\r\n".encode() + piece + b"\r\n"


OPENAI_PART = [
    ev({"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}),
    ev({"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]}),
]
OLLAMA_PART = [
    nd({"model": "m", "message": {"role": "assistant", "content": "Hel"}, "done": False}),
    nd({"model": "m", "message": {"role": "assistant", "content": "lo"}, "done": False}),
]
MODELS = json.dumps({"object": "list", "data": [{"id": "m"}], "models": [{"name": "m"}]}).encode()


class RawServer:
    """One-request-at-a-time HTTP/1.1 server on loopback that plays ``mode`` for generation.

    Modes: ``reset`` (two events then a TCP reset), ``eof`` (two events, then a clean
    close of a ``Connection: close`` body without the end marker), ``chunked-eof``
    (two events then the terminating chunk, no end marker), ``stall`` (two events,
    then nothing until the client hangs up).
    """

    def __init__(self, mode: str, dialect: str) -> None:
        self.mode = mode
        self.dialect = dialect
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[str] = []
        self.hung_up = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += conn.recv(65536)
            path = head.split(b" ")[1].decode()
            self.requests.append(path)
            if path.endswith(("/models", "/api/tags")):
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(MODELS)}\r\nconnection: close\r\n\r\n".encode()
                    + MODELS
                )
                return
            part = OPENAI_PART if self.dialect == "openai" else OLLAMA_PART
            ctype = b"text/event-stream" if self.dialect == "openai" else b"application/x-ndjson"
            if self.mode == "eof":
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype + b"\r\nconnection: close\r\n\r\n"
                )
                for piece in part:
                    conn.sendall(piece)
                return
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: "
                + ctype
                + b"\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for piece in part:
                conn.sendall(chunked(piece))
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if self.mode == "chunked-eof":
                conn.sendall(b"0\r\n\r\n")
                time.sleep(0.2)
                return
            # stall: wait for the client to hang up
            conn.settimeout(30)
            try:
                while conn.recv(1):
                    pass
            except OSError:
                pass
            self.hung_up.set()

    def close(self) -> None:
        self.sock.close()


def engine_for(server: RawServer, **fields: object) -> RemoteEngine:
    base = server.url + "/v1" if server.dialect == "openai" else server.url
    remote = RemoteSettings(base_url=base, dialect=server.dialect, **fields)  # type: ignore[arg-type]
    engine = RemoteEngine(remote=remote)
    engine.http.sleep = lambda s: None  # type: ignore[assignment]
    return engine


@pytest.fixture(params=["openai", "ollama"])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("mode", ["reset", "eof", "chunked-eof"])
def test_a_broken_answer_is_a_typed_error_not_a_short_answer(dialect: str, mode: str) -> None:
    server = RawServer(mode, dialect)
    try:
        engine = engine_for(server)
        with pytest.raises(ServerUnavailableError, match="incomplete"):
            engine.chat("m", USER)
        seen: list[object] = []

        def consume() -> None:
            with engine.chat_stream("m", USER) as stream:
                seen.extend(stream)

        with pytest.raises(ServerUnavailableError, match="incomplete"):
            consume()
        assert [c.text for c in seen if isinstance(c, TextDelta)] == ["Hel", "lo"]
        assert not any(isinstance(c, FinalChunk) for c in seen)
        with pytest.raises(ServerUnavailableError, match="incomplete"):
            asyncio.run(engine.achat("m", USER))
        # Output had started: never sent twice.
        generation = [p for p in server.requests if not p.endswith(("/models", "/api/tags"))]
        assert len(generation) == 3
    finally:
        server.close()


def test_a_stalled_stream_times_out_and_hangs_up(dialect: str) -> None:
    server = RawServer("stall", dialect)
    try:
        engine = engine_for(server, read_timeout=0.5)
        with pytest.raises(ServerUnavailableError, match="did not answer in time"):
            engine.chat("m", USER)
        assert server.hung_up.wait(10)
    finally:
        server.close()


@pytest.mark.parametrize("how", ["sync", "async"])
def test_the_request_timeout_is_honoured_mid_stream(dialect: str, how: str) -> None:
    server = RawServer("stall", dialect)
    try:
        engine = engine_for(server, read_timeout=60)

        def call() -> object:
            if how == "sync":
                return engine.chat("m", USER, timeout=0.5)
            return asyncio.run(engine.achat("m", USER, timeout=0.5))

        with pytest.raises(RequestTimeoutError):  # not the 60 s read timeout's error
            call()
        assert server.hung_up.wait(10)
    finally:
        server.close()


@pytest.mark.parametrize("how", ["sync", "async"])
def test_closing_a_stream_hangs_up_on_the_server(dialect: str, how: str) -> None:
    server = RawServer("stall", dialect)
    try:
        engine = engine_for(server, read_timeout=60)
        if how == "sync":
            stream = engine.chat_stream("m", USER)
            assert isinstance(next(stream), TextDelta)
            stream.close()
        else:

            async def main() -> None:
                stream = engine.achat_stream("m", USER)
                assert isinstance(await stream.__anext__(), TextDelta)
                await stream.aclose()

            asyncio.run(main())
        assert server.hung_up.wait(10)
    finally:
        server.close()


@pytest.mark.parametrize("how", ["cancel-event", "close-from-another-thread"])
def test_a_stalled_sync_stream_stops_when_cancelled_from_another_thread(
    dialect: str, how: str
) -> None:
    # The read is blocked in the socket: only hanging up ends it before the read timeout.
    server = RawServer("stall", dialect)
    try:
        engine = engine_for(server, read_timeout=60)
        if how == "cancel-event":
            cancel = threading.Event()
            threading.Timer(0.3, cancel.set).start()
            result = engine.chat("m", USER, cancel=cancel)
            # cancelled, not the 60 s read timeout's ServerUnavailableError
            assert (result.text, result.finish_reason) == ("Hello", "cancelled")
        else:
            stream = engine.chat_stream("m", USER)
            assert isinstance(next(stream), TextDelta)
            threading.Timer(0.3, stream.close).start()
            rest = list(stream)  # "lo" was sent before the stall
            assert [c.text for c in rest if isinstance(c, TextDelta)] == ["lo"]
        assert server.hung_up.wait(10)
    finally:
        server.close()


def _recorded(body: bytes, ctype: str, status: int = 200) -> RemoteEngine:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, content=MODELS)
        return httpx.Response(status, content=body, headers={"content-type": ctype})

    remote = RemoteSettings(base_url="http://gpu-box:8000/v1")
    return RemoteEngine(
        remote=remote,
        transport=httpx.MockTransport(handler),
        async_transport=httpx.MockTransport(handler),
    )


@pytest.mark.parametrize(
    ("body", "ctype", "words"),
    [
        (b"<html><body>Welcome to nginx</body></html>", "text/html", "text/html"),
        (b'{"choices": [{"message": {"content": "x"}}]}', "application/json", "application/json"),
        (b"data: {oops\n\n", "text/event-stream", "not JSON"),
        (b"data: [1, 2]\n\n", "text/event-stream", "list"),
    ],
)
def test_a_200_that_is_not_a_stream_names_what_came(body: bytes, ctype: str, words: str) -> None:
    engine = _recorded(body, ctype)
    for call in (lambda: engine.chat("m", USER), lambda: asyncio.run(engine.achat("m", USER))):
        with pytest.raises(ServerUnavailableError) as info:
            call()
        assert words in str(info.value)
        assert "broke" not in str(info.value)
        assert isinstance(info.value, LocalLLMError)


def test_finish_reason_length_is_kept() -> None:
    body = ev({"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": "length"}]})
    result = _recorded(body + b"data: [DONE]\n\n", "text/event-stream").chat("m", USER)
    assert (result.text, result.finish_reason) == ("Hel", "length")


def test_done_marker_alone_ends_an_answer() -> None:
    # A server that sends [DONE] but never a finish_reason: complete by the protocol.
    result = _recorded(OPENAI_PART[0] + b"data: [DONE]\n\n", "text/event-stream").chat("m", USER)
    assert (result.text, result.finish_reason) == ("Hel", "stop")


def test_a_finish_reason_without_done_marker_ends_an_answer() -> None:
    body = ev({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]})
    result = _recorded(body, "text/event-stream").chat("m", USER)
    assert (result.text, result.finish_reason) == ("Hi", "stop")


# ---- base_url: one rule for the adapters, RemoteSettings and LOCAL_LLM_BASE_URL ----------

SECRET = "pw-s3cret-77"
KEY = "sk-never-shown-42"


def _url_sources() -> list[Callable[[str], str]]:
    from local_llm_integrations import ChatLocal
    from local_llm_integrations.llama_index import LocalEmbedding, LocalLLM

    return [
        lambda url: RemoteSettings(base_url=url).base_url,
        lambda url: RemoteSettings.from_env({"LOCAL_LLM_BASE_URL": url}).base_url,  # type: ignore[union-attr]
        lambda url: str(ChatLocal(model="m", base_url=url).base_url),
        lambda url: str(LocalLLM(model="m", base_url=url).base_url),
        lambda url: str(LocalEmbedding(model_name="m", base_url=url).base_url),
    ]


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://h:8000/v1", "http://h:8000/v1"),
        ("http://h:8000/v1/", "http://h:8000/v1"),
        ("  http://h:8000/v1/  ", "http://h:8000/v1"),
        ("http://h:8000/v1/chat/completions", "http://h:8000/v1"),
        ("http://h:8000/v1/completions/", "http://h:8000/v1"),
        ("http://h:8000/v1/embeddings", "http://h:8000/v1"),
        ("http://h:8000/v1/models", "http://h:8000/v1"),
        ("https://gw.example/team/v1/chat/completions", "https://gw.example/team/v1"),
        ("http://h:11434/api/chat", "http://h:11434"),
        ("http://h:11434/api/generate", "http://h:11434"),
        ("http://h:11434/", "http://h:11434"),
        ("https://h", "https://h"),
    ],
)
def test_base_url_variants_reach_the_server_root(given: str, used: str) -> None:
    for source in _url_sources():
        assert source(given) == used


@pytest.mark.parametrize(
    "given",
    [
        f"http://bob:{SECRET}@h:8000/v1",
        f"https://{SECRET}@h/v1",
        f"ftp://bob:{SECRET}@h",
        f"h:8000/{SECRET}",
    ],
)
def test_a_refused_base_url_never_shows_credentials(given: str) -> None:
    for source in _url_sources():
        with pytest.raises(ValueError, match=r"http|api_key") as info:
            source(given)
        if "@" in given:
            assert SECRET not in str(info.value)


def test_a_pasted_endpoint_url_works_against_serve(dialect: str, tiny_gguf: Path) -> None:
    from local_llm_runtime.store.library import ModelLibrary
    from local_llm_runtime.testing import FakeEngine
    from tests.support.server import ServerThread, make_app

    ModelLibrary().create("tiny:1b", str(tiny_gguf))
    with ServerThread(make_app(FakeEngine(responses=["Hello!"], cycle=True))) as server:
        pasted = server.url + ("/v1/chat/completions" if dialect == "openai" else "/api/chat")
        engine = RemoteEngine(remote=RemoteSettings(base_url=pasted))
        assert engine.chat("tiny:1b", USER).text == "Hello!"
        assert engine.dialect() == dialect


def test_the_api_key_is_never_logged_or_shown(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import pickle

    from local_llm_integrations import ChatLocal

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, content=MODELS)
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    caplog.set_level(logging.DEBUG)
    remote = RemoteSettings(base_url="http://gpu-box:8000/v1", api_key=KEY)  # type: ignore[arg-type]
    engine = RemoteEngine(
        remote=remote,
        transport=httpx.MockTransport(handler),
        async_transport=httpx.MockTransport(handler),
    )
    shown: list[str] = [repr(engine), repr(engine.remote), repr(engine.http), str(remote)]
    for call in (lambda: engine.chat("m", USER), lambda: asyncio.run(engine.achat("m", USER))):
        with pytest.raises(LocalLLMError) as info:
            call()
        shown.append(str(info.value))
    chat = ChatLocal(model="m", base_url="http://gpu-box:8000/v1", api_key=KEY)
    shown += [repr(chat), str(chat.model_dump()), chat.model_dump_json(), str(chat.to_json())]
    assert pickle.loads(pickle.dumps(chat)).api_key.get_secret_value() == KEY  # type: ignore[union-attr]
    shown += [r.getMessage() for r in caplog.records]
    assert caplog.records  # httpx logged the requests
    assert not [s for s in shown if KEY in s]
