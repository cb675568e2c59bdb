"""Structured output through the runtime's grammar: schema in, validated model out.

``LocalLLM.structured_predict`` passes the pydantic model's JSON schema to the
engine as ``format``; llama.cpp then samples only tokens the schema allows, so
the answer parses. Streams yield partial objects as the JSON grows
(LlamaIndex's ``FlexibleModel`` while required fields are still missing).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any

from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.bridge.pydantic import ValidationError
from llama_index.core.llms.utils import parse_partial_json
from llama_index.core.program.utils import FlexibleModel, create_flexible_model
from llama_index.core.types import Model

__all__ = ["aparse_stream", "parse_output", "parse_stream", "partial_object", "schema_of"]


def schema_of(output_cls: type[Model]) -> dict[str, Any]:
    """The JSON schema handed to the runtime as ``format``."""
    return output_cls.model_json_schema()


def parse_output(output_cls: type[Model], response: ChatResponse) -> Model:
    """Validate the (grammar-constrained) answer as ``output_cls``.

    Raises:
        ValueError: If the answer is not a valid instance (in practice: it was
            cut short by ``num_predict`` or a stop sequence).
    """
    text = response.message.content or ""
    try:
        return output_cls.model_validate_json(text)
    except ValueError as exc:
        finish = (response.raw or {}).get("finish_reason")
        hint = " (cut short by num_predict; raise it)" if finish == "length" else ""
        raise ValueError(
            f"The model's answer is not a valid {output_cls.__name__}{hint}: {text[:200]!r}"
        ) from exc


def partial_object(output_cls: type[Model], text: str) -> Model | FlexibleModel | None:
    """Parse a JSON prefix into the model, or a flexible copy while fields are missing.

    Returns:
        ``None`` when nothing can be parsed yet.
    """
    try:
        data = parse_partial_json(text)
    except ValueError:
        return None
    try:
        return output_cls.model_validate(data)
    except ValidationError:
        return create_flexible_model(output_cls).model_validate(data)


def parse_stream(
    output_cls: type[Model], responses: Iterator[ChatResponse]
) -> Generator[Model | FlexibleModel, None, None]:
    """Yield partial objects as the JSON streams in, then the validated object."""
    last: ChatResponse | None = None
    for response in responses:
        last = response
        partial = partial_object(output_cls, response.message.content or "")
        if response.delta and partial is not None:
            yield partial
    if last is not None:
        yield parse_output(output_cls, last)


async def aparse_stream(
    output_cls: type[Model], responses: AsyncIterator[ChatResponse]
) -> AsyncGenerator[Model | FlexibleModel, None]:
    """Async :func:`parse_stream`."""
    last: ChatResponse | None = None
    async for response in responses:
        last = response
        partial = partial_object(output_cls, response.message.content or "")
        if response.delta and partial is not None:
            yield partial
    if last is not None:
        yield parse_output(output_cls, last)
