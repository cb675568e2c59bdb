"""Prompt preparation happens before the model's lock: bad requests fail at once.

A stream that holds the model (started, not exhausted) must not delay the error
of a request that could never run: a bad schema, a template that refuses the
messages, an over-long or empty prompt. Nothing is loaded for such a request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local_llm_runtime import (
    ContextLengthExceededError,
    InvalidOptionError,
    RuntimeSettings,
    TemplateError,
)
from local_llm_runtime.llama.engine import Engine
from tests.support.tiny_gguf import CHATML_TEMPLATE

REFUSING_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no bad roles') }}"
    "{% endif %}{% endfor %}" + CHATML_TEMPLATE
)
BAD_SCHEMA = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
OPTIONS = {"num_ctx": 256, "temperature": 0.0}


@pytest.fixture
def engine() -> Iterator[Engine]:
    # One slot: a started stream holds the model's only lock.
    eng = Engine(RuntimeSettings.from_env().model_copy(update={"num_parallel": 1}))
    yield eng
    eng.pool.close()


BAD_REQUESTS: dict[str, tuple[type[Exception], Callable[[Engine, str], Any]]] = {
    "bad JSON schema": (
        InvalidOptionError,
        lambda e, m: e.chat_stream(
            m, [{"role": "user", "content": "hi"}], format=BAD_SCHEMA, options=OPTIONS
        ),
    ),
    "template refuses": (
        TemplateError,
        lambda e, m: e.chat_stream(m, [{"role": "bad", "content": "hi"}], options=OPTIONS),
    ),
    "over-long prompt": (
        ContextLengthExceededError,
        lambda e, m: e.chat_stream(m, [{"role": "user", "content": "a " * 400}], options=OPTIONS),
    ),
    "empty raw prompt": (
        InvalidOptionError,
        lambda e, m: e.generate_stream(m, "", raw=True, options=OPTIONS),
    ),
    "forced call of an unknown schema": (
        InvalidOptionError,
        lambda e, m: e.chat_stream(
            m,
            [{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": BAD_SCHEMA}}],
            tool_choice="required",
            options=OPTIONS,
        ),
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_fails_while_another_stream_holds_the_model(
    engine: Engine, tiny_gguf_factory: Callable[..., Path], case: str
) -> None:
    model = str(tiny_gguf_factory(chat_template=REFUSING_TEMPLATE, add_bos=False))
    error, call = BAD_REQUESTS[case]
    holder = engine.chat_stream(
        model, [{"role": "user", "content": "hello"}], options={**OPTIONS, "num_predict": 50}
    )
    next(holder)  # the stream now holds the model's lock, suspended
    outcome: list[BaseException] = []
    done = threading.Event()

    def bad_request() -> None:
        try:
            call(engine, model)  # must raise here: no iteration, no lock
        except BaseException as exc:
            outcome.append(exc)
        done.set()

    thread = threading.Thread(target=bad_request, daemon=True)
    thread.start()
    assert done.wait(timeout=120), "the bad request waited for the model's lock"
    holder.close()
    assert len(outcome) == 1
    assert isinstance(outcome[0], error), outcome[0]


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_loads_nothing(
    engine: Engine, tiny_gguf_factory: Callable[..., Path], case: str
) -> None:
    model = str(tiny_gguf_factory(chat_template=REFUSING_TEMPLATE, add_bos=False))
    error, call = BAD_REQUESTS[case]
    with pytest.raises(error):
        call(engine, model)
    assert engine.ps() == []


def test_a_good_request_still_runs_after_preparation(
    engine: Engine, tiny_gguf_factory: Callable[..., Path]
) -> None:
    model = str(tiny_gguf_factory(chat_template=REFUSING_TEMPLATE, add_bos=False))
    stream = engine.chat_stream(
        model, [{"role": "user", "content": "hi"}], format="json", options={**OPTIONS, "seed": 1}
    )
    assert engine.ps() == []  # prepared, not yet leased
    result = list(stream)
    assert result[-1].usage.prompt_tokens == engine.count_chat_tokens(  # type: ignore[union-attr]
        model, [{"role": "user", "content": "hi"}]
    )
    assert len(engine.ps()) == 1
