"""OpenAI's API (``/v1/...``), as OpenAI's API reference documents it.

* ``POST /v1/chat/completions`` -- chat, SSE streaming (``data: {...}`` then
  ``data: [DONE]``), tools with an enforced ``tool_choice``, ``response_format``;
* ``POST /v1/completions`` -- a raw continuation of ``prompt`` (no chat template),
  as OpenAI's legacy endpoint, llama-server and vLLM do;
* ``POST /v1/embeddings`` -- ``float`` or ``base64`` (the ``openai`` SDK's default);
* ``GET /v1/models``, ``GET /v1/models/{id}`` -- the model store.

Which request fields are mapped, ignored or refused: :mod:`.openai_wire`.
Every generation or embedding holds an admission ticket (503 past the queue);
its cancel event stops the engine when the client leaves or the server drains.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.server.app import server_state
from local_llm_runtime.server.errors import HTTPError
from local_llm_runtime.server.openai_wire import (
    ChatChunker,
    ChatCompletionRequest,
    CompletionChunker,
    CompletionRequest,
    EmbeddingRequest,
    chat_arguments,
    chat_completion,
    completion_arguments,
    embedding_inputs,
    embedding_list,
    model_object,
    new_id,
    now,
    text_completion,
)
from local_llm_runtime.server.state import Ticket
from local_llm_runtime.server.streaming import collect, parse_body, stream_response
from local_llm_runtime.streams import AsyncChunkStream

__all__ = ["router"]

router = APIRouter(prefix="/v1")


async def _objects(
    stream: AsyncChunkStream, chunker: ChatChunker | CompletionChunker
) -> AsyncIterator[dict[str, Any]]:
    async for chunk in stream:
        for obj in chunker.convert(chunk):
            yield obj


async def _sse(
    request: Request,
    ticket: Ticket,
    open_stream: Callable[[], AsyncChunkStream],
    chunker: ChatChunker | CompletionChunker,
) -> Response:
    """Stream an engine stream as SSE chunks ending in ``data: [DONE]``; the ticket is freed."""
    try:
        stream = open_stream()
    except BaseException:
        ticket.release()
        raise
    return await stream_response(
        request,
        ticket,
        _objects(stream, chunker),
        framing="sse",
        close=stream.aclose,
        trailer="[DONE]",
    )


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``: a ``chat.completion``, or SSE ``chat.completion.chunk``s."""
    req = await parse_body(request, ChatCompletionRequest)
    args = chat_arguments(req)
    logprobs = bool(args.options.get("logprobs"))
    state = server_state(request)
    ticket = state.admit()
    kwargs: dict[str, Any] = {
        "tools": args.tools,
        "tool_choice": args.tool_choice,
        "parallel_tool_calls": args.parallel_tool_calls,
        "format": args.format,
        "options": args.options,
        "cancel": ticket.cancel,
    }
    if not req.stream:
        result = await collect(
            request, ticket, state.engine.achat(req.model, args.messages, **kwargs)
        )
        body = chat_completion(
            result, id=new_id("chatcmpl"), created=now(), model=req.model, logprobs=logprobs
        )
        return JSONResponse(body)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return await _sse(
        request,
        ticket,
        lambda: state.engine.achat_stream(req.model, args.messages, **kwargs),
        ChatChunker(model=req.model, include_usage=include_usage, logprobs=logprobs),
    )


@router.post("/completions")
async def completions(request: Request) -> Response:
    """``POST /v1/completions``: a raw continuation of ``prompt`` (``text_completion``)."""
    req = await parse_body(request, CompletionRequest)
    args = completion_arguments(req)
    logprobs = bool(args.options.get("logprobs"))
    state = server_state(request)
    ticket = state.admit()
    kwargs: dict[str, Any] = {"raw": True, "options": args.options, "cancel": ticket.cancel}
    if not req.stream:
        result = await collect(
            request, ticket, state.engine.agenerate(req.model, args.prompt, **kwargs)
        )
        body = text_completion(
            result, id=new_id("cmpl"), created=now(), model=req.model, logprobs=logprobs
        )
        return JSONResponse(body)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return await _sse(
        request,
        ticket,
        lambda: state.engine.agenerate_stream(req.model, args.prompt, **kwargs),
        CompletionChunker(model=req.model, include_usage=include_usage, logprobs=logprobs),
    )


@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``: one vector per input (``float`` lists or ``base64``)."""
    req = await parse_body(request, EmbeddingRequest)
    texts = embedding_inputs(req)
    state = server_state(request)
    engine = state.engine
    ticket = state.admit()

    async def embed() -> tuple[list[list[float]], int]:
        try:
            vectors = await engine.aembed(req.model, texts, dimensions=req.dimensions)
        except InvalidOptionError as exc:
            if req.dimensions is None:
                raise
            # the request is checked already: dimensions is more than the model's width
            raise HTTPError(
                400, f"dimensions: {exc}", param="dimensions", code="invalid_option"
            ) from None
        tokens = await anyio.to_thread.run_sync(
            lambda: sum(len(engine.tokenize(req.model, text)) for text in texts)
        )
        return vectors, tokens

    vectors, tokens = await collect(request, ticket, embed())
    body = embedding_list(
        vectors,
        model=req.model,
        prompt_tokens=tokens,
        encoding_format=req.encoding_format,
    )
    return JSONResponse(body)


async def _models(request: Request) -> list[dict[str, Any]]:
    records = await anyio.to_thread.run_sync(server_state(request).library.list)
    return [model_object(r.name, int(r.modified_at.timestamp())) for r in records]


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """``GET /v1/models``: the stored models, most recently modified first."""
    return {"object": "list", "data": await _models(request)}


@router.get("/models/{model_id:path}")
async def retrieve_model(request: Request, model_id: str) -> dict[str, Any]:
    """``GET /v1/models/{id}``: one stored model (ids hold ``/`` and ``:``); 404 otherwise."""
    models = await _models(request)
    wanted = {model_id, model_id.lower()}
    if ":" not in model_id.rsplit("/", 1)[-1]:
        wanted |= {f"{name}:latest" for name in tuple(wanted)}
    for model in models:
        if model["id"] in wanted or model["id"].lower() in wanted:
            return model
    raise HTTPError(
        404,
        f"The model '{model_id}' does not exist: see GET /v1/models, or pull it with "
        f"'local-llm pull {model_id}'.",
        param="model",
        code="model_not_found",
    )
