"""Log-probabilities on the real model: a confident answer, whole-character bytes, a grammar."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.types import TokenLogprob

GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0, "seed": 1, "logprobs": True}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


def _well_formed(items: list[TokenLogprob], text: str, k: int) -> None:
    assert items
    for item in items:
        assert item.logprob <= 0.0 and len(item.top_logprobs) == k
        values = [t.logprob for t in item.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
        assert item.logprob <= values[0] + 1e-6  # nothing beats the most likely token
    # every answer token, in order: their bytes are the answer (as the engine decodes them)
    assert b"".join(bytes(t.bytes) for t in items).decode("utf-8", errors="replace") == text


def test_a_confident_greedy_answer(engine: Engine, demo_model: Path) -> None:
    messages = [{"role": "user", "content": "What is the capital of France? One word."}]
    options = {**GREEDY, "top_logprobs": 5, "num_predict": 6}
    result = engine.chat(str(demo_model), messages, options=options)
    _well_formed(result.logprobs, result.text, 5)
    first = result.logprobs[0]
    assert "Paris" in first.token and first.top_logprobs[0].token == first.token  # greedy: top-1
    assert first.logprob > math.log(0.5)


def test_chinese_tokens_keep_their_bytes(engine: Engine, demo_model: Path) -> None:
    messages = [{"role": "user", "content": "用中文写一句关于春天的话。"}]
    options = {**GREEDY, "top_logprobs": 2, "num_predict": 24}
    result = engine.chat(str(demo_model), messages, options=options)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in result.text)
    _well_formed(result.logprobs, result.text, 2)
    for item in result.logprobs:
        try:
            assert item.token == bytes(item.bytes).decode("utf-8")
        except UnicodeDecodeError:  # part of a character: written as \\xNN, bytes exact
            assert "\\x" in item.token


def test_a_grammar_constrained_answer_reports_raw_logprobs(
    engine: Engine, demo_model: Path
) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    messages = [{"role": "user", "content": "Is water wet? Answer as JSON."}]
    options = {**GREEDY, "top_logprobs": 3, "num_predict": 16}
    result = engine.chat(str(demo_model), messages, format=schema, options=options)
    assert "ok" in json.loads(result.text)
    _well_formed(result.logprobs, result.text, 3)
