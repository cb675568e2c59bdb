"""Ollama's REST API (``/api/...``), as documented in Ollama's docs/api.md.

Generation (``/api/chat``, ``/api/generate``) and embeddings (``/api/embed``,
``/api/embeddings``) hold an admission ticket for their whole response (503 past
the queue), pass its cancel event to the engine, and stream NDJSON by default
(``stream: false``: one object). An empty ``prompt``/``messages`` loads the
model and answers ``done_reason: "load"`` (``"unload"`` with ``keep_alive: 0``),
which is how ``ollama stop`` and ``local-llm stop`` unload a model.

Model management (``tags``, ``show``, ``ps``, ``pull``, ``delete``, ``copy``,
``create``) runs the store's blocking calls in worker threads; ``pull`` streams
the download's progress objects as Ollama does. Request shapes and the
conversions live in :mod:`local_llm_runtime.server.ollama_wire` (pure).

Model names over HTTP are names, never server paths: a ``.gguf`` path is only
accepted as ``from`` of ``/api/create``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import anyio.to_thread
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from local_llm_runtime import __version__
from local_llm_runtime.errors import LocalLLMError, ModelNotFoundError
from local_llm_runtime.server import ollama_wire as wire
from local_llm_runtime.server.app import server_state
from local_llm_runtime.server.errors import HTTPError
from local_llm_runtime.server.model_names import check_model_name
from local_llm_runtime.server.state import ServerState, Ticket
from local_llm_runtime.server.streaming import collect, parse_body, stream_response
from local_llm_runtime.store.gguf_meta import read_gguf_info
from local_llm_runtime.store.hub import PullProgress
from local_llm_runtime.store.names import parse_ref
from local_llm_runtime.types import Chunk, ModelInfo

__all__ = ["router"]

logger = logging.getLogger("local_llm_runtime.server")

router = APIRouter()


@router.get("/api/version")
async def version() -> dict[str, str]:
    """``GET /api/version``: ``{"version": "..."}`` (this package's version)."""
    return {"version": __version__}


def model_name(name: str, field: str = "model") -> str:
    """A model name as clients may send it over HTTP (:func:`.model_names.check_model_name`).

    Raises:
        HTTPError: 400 naming ``field``.
    """
    try:
        return check_model_name(name)
    except ValueError as exc:
        raise HTTPError(400, f"{field}: {exc}", param=field) from None


async def _blocking(fn: Callable[[], Any]) -> Any:
    return await anyio.to_thread.run_sync(fn)


# ---- generation --------------------------------------------------------------------------------


async def _load_or_unload(
    state: ServerState, model: str, keep_alive: float | None, options: dict[str, Any], chat: bool
) -> dict[str, Any]:
    """Ollama's empty request: load the model (or unload it with ``keep_alive: 0``)."""
    started = time.perf_counter()
    if keep_alive == 0:
        await _blocking(functools.partial(state.engine.model_info, model))  # 404 if unknown
        await _blocking(functools.partial(state.engine.unload, model))
        return wire.load_response(model, chat=chat, unload=True)
    await _blocking(
        functools.partial(state.engine.preload, model, options=options, keep_alive=keep_alive)
    )
    elapsed = time.perf_counter() - started
    return wire.load_response(model, chat=chat, unload=False, load_s=elapsed, total_s=elapsed)


def _check_think(state: ServerState, model: str, think: wire.Think | None) -> None:
    if think is None or think is False:
        return
    info = state.engine.model_info(model)
    if "thinking" not in info.capabilities:
        raise HTTPError(400, f'think: "{model}" does not support thinking', param="think")


async def _respond(
    request: Request,
    ticket: Ticket,
    *,
    stream: bool,
    model: str,
    open_stream: Callable[[], AsyncIterator[Chunk]],
    whole: Callable[[], Any],
    to_wire: Callable[..., dict[str, Any] | None],
    to_whole: Callable[..., dict[str, Any]],
) -> Response:
    started = time.perf_counter()
    if not stream:
        result = await collect(request, ticket, whole())
        return JSONResponse(to_whole(model, result, total_s=time.perf_counter() - started))

    async def objects() -> AsyncGenerator[dict[str, Any], None]:
        chunks = open_stream()
        try:
            async for chunk in chunks:
                obj = to_wire(model, chunk, total_s=time.perf_counter() - started)
                if obj is not None:
                    yield obj
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    gen = objects()
    return await stream_response(request, ticket, gen, framing="ndjson", close=gen.aclose)


@router.post("/api/chat")
async def chat(request: Request) -> Response:
    """``POST /api/chat``: a chat response, NDJSON-streamed unless ``stream: false``."""
    body = await parse_body(request, wire.ChatRequest)
    wire.refuse_unsupported(body)
    state = server_state(request)
    model = model_name(body.model)
    messages = wire.to_engine_messages(body.messages)
    options = wire.engine_options(
        body.options, logprobs=body.logprobs, top_logprobs=body.top_logprobs
    )
    keep_alive = wire.keep_alive_seconds(body.keep_alive)
    fmt = wire.engine_format(body.format)
    if not messages:
        return JSONResponse(await _load_or_unload(state, model, keep_alive, options, chat=True))
    await _blocking(functools.partial(_check_think, state, model, body.think))
    ticket = state.admit()
    kwargs: dict[str, Any] = {
        "tools": body.tools or None,
        "format": fmt,
        "options": options,
        "reasoning": wire.reasoning_mode(body.think),
        "keep_alive": keep_alive,
        "cancel": ticket.cancel,
    }
    try:
        return await _respond(
            request,
            ticket,
            stream=body.stream,
            model=model,
            open_stream=lambda: state.engine.achat_stream(model, messages, **kwargs),
            whole=lambda: state.engine.achat(model, messages, **kwargs),
            to_wire=wire.chat_chunk,
            to_whole=wire.chat_response,
        )
    finally:
        if not body.stream:
            ticket.release()


@router.post("/api/generate")
async def generate(request: Request) -> Response:
    """``POST /api/generate``: a completion, NDJSON-streamed unless ``stream: false``."""
    body = await parse_body(request, wire.GenerateRequest)
    wire.refuse_unsupported(body)
    state = server_state(request)
    model = model_name(body.model)
    options = wire.engine_options(
        body.options, logprobs=body.logprobs, top_logprobs=body.top_logprobs
    )
    keep_alive = wire.keep_alive_seconds(body.keep_alive)
    fmt = wire.engine_format(body.format)
    if not body.prompt:
        return JSONResponse(await _load_or_unload(state, model, keep_alive, options, chat=False))
    await _blocking(functools.partial(_check_think, state, model, body.think))
    prompt = body.prompt
    ticket = state.admit()
    kwargs: dict[str, Any] = {
        "system": body.system,
        "raw": body.raw,
        "format": fmt,
        "options": options,
        "keep_alive": keep_alive,
        "cancel": ticket.cancel,
    }
    try:
        return await _respond(
            request,
            ticket,
            stream=body.stream,
            model=model,
            open_stream=lambda: state.engine.agenerate_stream(model, prompt, **kwargs),
            whole=lambda: state.engine.agenerate(model, prompt, **kwargs),
            to_wire=wire.generate_chunk,
            to_whole=wire.generate_response,
        )
    finally:
        if not body.stream:
            ticket.release()


# ---- embeddings --------------------------------------------------------------------------------


async def _token_counts(state: ServerState, model: str, texts: list[str]) -> list[int]:
    """Each text's tokens (the model's vocabulary only; no weights are loaded)."""

    def count() -> list[int]:
        return [len(state.engine.tokenize(model, text)) for text in texts]

    counts: list[int] = await _blocking(count)
    return counts


@router.post("/api/embed")
async def embed(request: Request) -> Response:
    """``POST /api/embed``: L2-normalized vectors, one per input, in order."""
    body = await parse_body(request, wire.EmbedRequest)
    state = server_state(request)
    model = model_name(body.model)
    options = wire.engine_options(body.options)
    keep_alive = wire.keep_alive_seconds(body.keep_alive)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    started = time.perf_counter()
    if not texts or texts == [""]:
        await _blocking(
            functools.partial(
                state.engine.preload, model, options=options, embedding=True, keep_alive=keep_alive
            )
        )
        load_s = time.perf_counter() - started
        return JSONResponse(
            {
                "model": model,
                "embeddings": [],
                "total_duration": wire.nanoseconds(load_s),
                "load_duration": wire.nanoseconds(load_s),
            }
        )
    counts = await _token_counts(state, model, texts)
    ticket = state.admit()
    # truncate: false and dimensions are the engine's own parameters (one rule for every
    # engine): an over-long input is ContextLengthExceededError (400), too many dimensions
    # an InvalidOptionError (400).
    vectors = await collect(
        request,
        ticket,
        state.engine.aembed(
            model,
            texts,
            normalize=True,
            options=options,
            keep_alive=keep_alive,
            dimensions=body.dimensions,
            truncate=body.truncate,
        ),
    )
    total = time.perf_counter() - started
    return JSONResponse(
        {
            "model": model,
            "embeddings": vectors,
            "total_duration": wire.nanoseconds(total),
            "load_duration": 0,
            "prompt_eval_count": sum(counts),
        }
    )


@router.post("/api/embeddings")
async def embeddings(request: Request) -> Response:
    """``POST /api/embeddings`` (legacy): one ``prompt``, one unnormalized ``embedding``."""
    body = await parse_body(request, wire.EmbeddingsRequest)
    state = server_state(request)
    model = model_name(body.model)
    options = wire.engine_options(body.options)
    keep_alive = wire.keep_alive_seconds(body.keep_alive)
    if not body.prompt:
        await _blocking(
            functools.partial(
                state.engine.preload, model, options=options, embedding=True, keep_alive=keep_alive
            )
        )
        return JSONResponse({"embedding": []})
    ticket = state.admit()
    vectors = await collect(
        request,
        ticket,
        state.engine.aembed(
            model, [body.prompt], normalize=False, options=options, keep_alive=keep_alive
        ),
    )
    return JSONResponse({"embedding": vectors[0]})


# ---- models ------------------------------------------------------------------------------------


def _info_or_none(state: ServerState, name: str) -> ModelInfo | None:
    try:
        return state.engine.model_info(name)
    except LocalLLMError:
        return None


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    """``GET /api/tags``: the models in the store, most recently modified first."""
    state = server_state(request)

    def listing() -> list[dict[str, Any]]:
        out = []
        for record in state.library.list():
            info = _info_or_none(state, record.name)
            out.append(
                {
                    "name": record.name,
                    "model": record.name,
                    "modified_at": wire.created_at(record.modified_at),
                    "size": record.size,
                    "digest": record.digest,
                    "details": wire.details(info),
                }
            )
        return out

    return {"models": await _blocking(listing)}


@router.post("/api/show")
async def show(request: Request) -> dict[str, Any]:
    """``POST /api/show``: details, model_info, capabilities, parameters, template, modelfile."""
    body = await parse_body(request, wire.ShowRequest)
    state = server_state(request)
    model = model_name(body.model)

    def describe() -> dict[str, Any]:
        try:
            shown: dict[str, Any] | None = state.library.show(model)
        except ModelNotFoundError:
            shown = None  # not in the store: what the engine knows (another backend)
        info = _info_or_none(state, model)
        if shown is None and info is None:
            state.engine.model_info(model)  # raises the engine's 404
        template: str | None = None
        source = model
        details = shown["details"] if shown else None
        capabilities = list(info.capabilities if info else (details or {}).get("capabilities", []))
        bound: str | None = None  # a Modelfile's TEMPLATE (replaces the GGUF's own)
        if shown:
            files = shown.get("files") or []
            bound = shown.get("template")
            if files:
                stored = shown["source"]["kind"] != "file"  # FROM its name: create reads it back
                source = shown["name"] if stored else str(files[0]["path"])
                meta = read_gguf_info(str(files[0]["path"])).metadata
                value = meta.get("tokenizer.chat_template")
                template = value if isinstance(value, str) else None
        parameters: dict[str, Any] = dict(shown["parameters"]) if shown else {}
        system = shown.get("system") if shown else None
        out: dict[str, Any] = {
            "modelfile": wire.modelfile(
                model,
                source,
                template=bound,
                system=system,
                parameters=parameters,
                messages=shown.get("messages", []) if shown else [],
                adapters=[a["path"] for a in shown.get("adapters", [])] if shown else [],
                license=shown.get("license") if shown else None,
            ),
            "parameters": wire.parameters_text(parameters),
            "template": bound or template or "",
            "details": wire.details(details if details is not None else info),
            "model_info": wire.model_info_map(details, info),
            "capabilities": capabilities,
        }
        if system:
            out["system"] = system
        if shown and shown.get("modified_at"):
            out["modified_at"] = shown["modified_at"]
        return out

    result: dict[str, Any] = await _blocking(describe)
    return result


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    """``GET /api/ps``: the models loaded now."""
    state = server_state(request)

    def running() -> list[dict[str, Any]]:
        out = []
        for model in state.engine.ps():
            record = None
            with contextlib.suppress(LocalLLMError, ValueError):
                record = state.library.store.get(model.name)
            digest = record.digest if record is not None else ""
            out.append(
                wire.running_model(model, digest=digest, info=_info_or_none(state, model.name))
            )
        return out

    return {"models": await _blocking(running)}


@router.delete("/api/delete")
async def delete(request: Request) -> Response:
    """``DELETE /api/delete``: remove a name (its files go when no other name uses them)."""
    body = await parse_body(request, wire.DeleteRequest)
    state = server_state(request)
    model = model_name(body.model)
    await _blocking(functools.partial(state.library.remove, model))
    return Response(status_code=200)


@router.post("/api/copy")
async def copy(request: Request) -> Response:
    """``POST /api/copy``: a second name for a stored model (files shared)."""
    body = await parse_body(request, wire.CopyRequest)
    state = server_state(request)
    source = model_name(body.source, "source")
    destination = model_name(body.destination, "destination")
    await _blocking(functools.partial(state.library.copy, source, destination))
    return Response(status_code=200)


async def _worker_stream(
    work: Callable[[Callable[[dict[str, Any]], None]], list[dict[str, Any]]],
) -> AsyncIterator[dict[str, Any]]:
    """Run ``work(emit)`` in a thread; yield what it emits, then what it returns.

    An error in ``work`` is raised here, after what was emitted before it. If the
    consumer goes away the thread finishes on its own (a download is not torn).
    No task group spans a ``yield``: the stream is primed in the handler's task
    and drained in the response's.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def target() -> None:
        try:
            tail = work(lambda obj: put("obj", obj))
        except Exception as exc:
            put("error", exc)
            return
        for obj in tail:
            put("obj", obj)
        put("end", None)

    threading.Thread(target=target, name="local-llm-store", daemon=True).start()
    while True:
        kind, value = await queue.get()
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value


async def _status_response(
    request: Request, stream: bool, objects: AsyncIterator[dict[str, Any]]
) -> Response:
    if stream:
        ticket = Ticket(server_state(request))  # not admitted: store work is not queued
        return await stream_response(request, ticket, objects, framing="ndjson")
    last: dict[str, Any] = {"status": "success"}
    async for obj in objects:
        last = obj
    return JSONResponse(last)


@router.post("/api/pull")
async def pull(request: Request) -> Response:
    """``POST /api/pull``: download a model, streaming Ollama's progress objects."""
    body = await parse_body(request, wire.PullRequest)
    wire.refuse_unsupported(body)
    state = server_state(request)
    model = model_name(body.model)

    def work(emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
        last: dict[str, Any] = {}

        def progress(event: PullProgress) -> None:
            obj = wire.pull_status(event)
            if obj != last:
                last.clear()
                last.update(obj)
                emit(obj)

        state.library.pull(model, progress=progress)
        return [{"status": "success"}]

    return await _status_response(request, body.stream, _worker_stream(work))


@router.post("/api/create")
async def create(request: Request) -> Response:
    """``POST /api/create``: a name from another model or a GGUF path, with system/parameters."""
    body = await parse_body(request, wire.CreateRequest)
    wire.refuse_unsupported(body)
    state = server_state(request)
    model = model_name(body.model)
    arguments = wire.create_arguments(body)
    try:
        parse_ref(arguments["source"])
    except ValueError as exc:
        raise HTTPError(400, f"from: {exc}", param="from") from None

    def work(emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
        emit({"status": "parsing modelfile"})
        record = state.library.create(model, **arguments)
        tail = [{"status": f"using existing layer sha256:{f.sha256}"} for f in record.files]
        if arguments.get("template"):
            tail.append({"status": "using template"})
        if arguments.get("system"):
            tail.append({"status": "using system prompt"})
        if arguments.get("messages"):
            tail.append({"status": "using messages"})
        if arguments.get("parameters"):
            tail.append({"status": "using parameters"})
        return [*tail, {"status": "writing manifest"}, {"status": "success"}]

    return await _status_response(request, body.stream, _worker_stream(work))
