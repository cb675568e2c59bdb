"""Log-probabilities: the numbers (checked against our own log-softmax of llama.cpp's
logits), the option rules, how they ride on chunks, and the real engine on the tiny GGUF.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.errors import InvalidOptionError
from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.llama.sampling import token_logprobs
from local_llm_runtime.logprobs import LegacyLogprobs, LogprobCarrier, token_text
from local_llm_runtime.options import parse_params, validate_options
from local_llm_runtime.testing import FakeEngine, FakeResponse, fake_logprobs, fake_tokens
from local_llm_runtime.types import (
    ChatResult,
    FinalChunk,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
    aggregate,
)

PROMPT = "the world is a hello and"
GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0, "seed": 1}
"""Greedy on the raw logits (no penalty), whole prompt evaluated (seeded: no prefix reuse)."""


# ---- the numbers ----------------------------------------------------------------------------


def _log_softmax(row: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Our own reference: float64, the textbook formula."""
    row = row.astype(np.float64)
    return row - (row.max() + math.log(float(np.exp(row - row.max()).sum())))


def _reference_rows(path: Path, prompt: str, steps: int) -> list[np.ndarray[Any, Any]]:
    """Logits rows of a greedy continuation, straight from llama.cpp (not the engine)."""
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=256, n_threads=1, logits_all=True, verbose=False
    )
    try:
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        llm.eval(tokens)
        rows = []
        for _ in range(steps):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            assert row.any()  # llama.cpp's logits, not an empty buffer
            rows.append(row)
            llm.eval([int(np.argmax(row))])
        return rows
    finally:
        llm.close()


@pytest.fixture(scope="module")
def reference(tiny_gguf: Path) -> list[np.ndarray[Any, Any]]:
    return _reference_rows(tiny_gguf, PROMPT, 8)


def test_token_logprobs_is_the_log_softmax_of_the_logits(
    reference: list[np.ndarray[Any, Any]],
) -> None:
    for row in reference:
        expected = _log_softmax(row)
        n = row.shape[0]
        worst = int(np.argmin(row))  # far outside any top-k
        chosen, everything = token_logprobs(row, worst, n)
        assert chosen == pytest.approx(expected[worst], abs=1e-5)
        assert len(everything) == n
        assert sum(math.exp(v) for _i, v in everything) == pytest.approx(1.0, abs=1e-5)
        values = [v for _i, v in everything]
        assert values == sorted(values, reverse=True) and max(values) <= 0.0
        for i, v in everything:
            assert v == pytest.approx(expected[i], abs=1e-5)
        chosen, top = token_logprobs(row, worst, 5)
        assert [i for i, _v in top] == [int(i) for i in np.argsort(-expected, kind="stable")[:5]]
        assert worst not in [i for i, _v in top] and chosen < top[-1][1]
        assert token_logprobs(row, worst, 0) == (chosen, [])


def test_token_logprobs_of_a_peaked_row_never_exceed_zero() -> None:
    row = np.full(1000, -30.0, dtype=np.float32)
    row[7] = 40.0
    chosen, top = token_logprobs(row, 7, 3)
    assert chosen == 0.0 and top[0] == (7, 0.0)
    assert top[1][1] == pytest.approx(-70.0, abs=1e-3) == top[2][1]


def test_token_text_keeps_the_bytes_of_half_characters() -> None:
    assert token_text("é".encode()) == "é"
    assert token_text(b"\xc3") == "\\xc3"
    assert token_text(b" hello") == " hello"


# ---- the option rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"logprobs": True, "top_logprobs": 21}, "between 0 and 20"),
        ({"logprobs": True, "top_logprobs": -1}, "between 0 and 20"),
        ({"top_logprobs": 2}, "needs logprobs=true"),
        ({"logprobs": False, "top_logprobs": 2}, "needs logprobs=true"),
        ({"logprobs": "sure"}, "true or false"),
        ({"logprobs": 1}, "true or false"),
    ],
)
def test_invalid_logprob_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        validate_options(options)
    with pytest.raises(InvalidOptionError, match=message):
        FakeEngine(responses=["x"]).chat("m", [{"role": "user", "content": "hi"}], options=options)


def test_valid_logprob_options() -> None:
    assert validate_options({"logprobs": True, "top_logprobs": 20}) == {
        "logprobs": True,
        "top_logprobs": 20,
    }
    assert validate_options({"top_logprobs": 0}) == {"top_logprobs": 0}  # 0 asks for nothing
    assert parse_params(["logprobs=true", "top_logprobs=3"]) == {
        "logprobs": True,
        "top_logprobs": 3,
    }
    with pytest.raises(InvalidOptionError, match="needs logprobs=true"):
        parse_params(["top_logprobs=3"])


def test_the_engine_refuses_them_before_any_load(tiny_gguf: Path) -> None:
    engine = Engine()
    with pytest.raises(InvalidOptionError, match="top_logprobs"):
        engine.chat(
            str(tiny_gguf), [{"role": "user", "content": "hi"}], options={"top_logprobs": 3}
        )
    assert engine.ps() == []


# ---- chunks ---------------------------------------------------------------------------------


def _item(token: str, logprob: float = -0.5) -> TokenLogprob:
    return TokenLogprob(token, logprob, tuple(token.encode()), (TopLogprob(token, logprob),))


def test_the_carrier_attaches_held_back_tokens_to_the_text_that_shows_them() -> None:
    carrier = LogprobCarrier()
    carrier.add(_item("Hel"))
    assert carrier.attach(ReasoningDelta("")) == ReasoningDelta("", (_item("Hel"),))
    carrier.add(_item("a"))
    carrier.add(_item("b"))  # held back (a possible stop sequence), then shown together
    assert carrier.attach(TextDelta("ab")).logprobs == (_item("a"), _item("b"))
    carrier.add(_item("<tool_call>"))
    call = ToolCallDelta(0, "c", "f", {})
    assert carrier.attach(call) is call  # markup is no content: dropped
    assert carrier.attach(TextDelta("x")).logprobs == ()
    hidden = LogprobCarrier(hide_reasoning=True)
    hidden.add(_item("think"))
    hidden.add(_item("answer"))
    out = list(hidden.chunks([ReasoningDelta("think"), TextDelta("answer")]))
    assert out == [TextDelta("answer")]  # hidden reasoning took its tokens along


def test_aggregate_collects_answer_and_reasoning_tokens_apart() -> None:
    result = aggregate(
        [
            ReasoningDelta("r", (_item("r"),)),
            TextDelta("a", (_item("a"),)),
            TextDelta("b", (_item("b"),)),
        ]
    )
    assert result.logprobs == [_item("a"), _item("b")]
    assert result.reasoning_logprobs == [_item("r")]
    assert ChatResult().logprobs == []


def test_legacy_offsets_count_characters_across_chunks() -> None:
    legacy = LegacyLogprobs()
    e_acute = "é".encode()
    first = legacy.object(
        [
            TokenLogprob("ab", -0.1, b"ab"),
            TokenLogprob("\\xc3", -0.2, e_acute[:1]),  # half of é
        ]
    )
    second = legacy.object(
        [TokenLogprob("\\xa9", -0.3, e_acute[1:]), TokenLogprob("c", -0.4, b"c")]
    )
    assert first["text_offset"] == [0, 2] and second["text_offset"] == [2, 3]
    assert first["tokens"] == ["ab", "\\xc3"] and first["token_logprobs"] == [-0.1, -0.2]
    assert first["top_logprobs"][0] == {"ab": -0.1}  # the generated token is always there


# ---- FakeEngine -----------------------------------------------------------------------------


def test_fake_engine_gives_deterministic_logprobs_when_asked() -> None:
    engine = FakeEngine(
        responses=["Hello, world", FakeResponse(text="ok", reasoning="hmm"), "Hello, world"]
    )
    options = {"logprobs": True, "top_logprobs": 3}
    result = engine.chat("m", [{"role": "user", "content": "hi"}], options=options)
    assert [t.token for t in result.logprobs] == fake_tokens("Hello, world")
    assert result.logprobs == list(fake_logprobs("Hello, world", 3))
    for item in result.logprobs:
        values = [t.logprob for t in item.top_logprobs]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert item.top_logprobs[0].token == item.token and item.logprob < 0
        assert sum(math.exp(v) for v in values) < 1
    thought = engine.chat("m", [{"role": "user", "content": "hi"}], options=options)
    assert [t.token for t in thought.reasoning_logprobs] == ["hmm"]
    plain = engine.chat("m", [{"role": "user", "content": "hi"}])
    assert plain.logprobs == []


# ---- the real engine on the tiny GGUF -------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


def _check_against_reference(
    items: list[TokenLogprob], rows: list[np.ndarray[Any, Any]], llm_vocab: Any, k: int
) -> int:
    """Compare the engine's tokens with our log-softmax of llama.cpp's own rows; steps checked."""
    checked = 0
    for item, row in zip(items, rows, strict=False):
        expected = _log_softmax(row)
        order = np.argsort(-expected, kind="stable")
        best = int(order[0])
        assert item.bytes == tuple(llm_vocab(best))  # greedy: the generated token is the top-1
        assert item.logprob == pytest.approx(expected[best], abs=1e-4)
        assert len(item.top_logprobs) == k
        assert item.top_logprobs[0].bytes == item.bytes
        for top, i in zip(item.top_logprobs, order[:k], strict=True):
            assert top.logprob == pytest.approx(expected[int(i)], abs=1e-4)
        checked += 1
        if expected[order[0]] - expected[order[1]] < 1e-3:
            break  # a near tie: the engine's numerics may pick the other one from here
    return checked


def _pieces(path: Path) -> Any:
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return lambda token: llm.detokenize([token], special=True)


def test_engine_logprobs_match_our_log_softmax(
    engine: Engine, tiny_gguf: Path, reference: list[np.ndarray[Any, Any]]
) -> None:
    options = {**GREEDY, "num_predict": 8, "logprobs": True, "top_logprobs": 5}
    result = engine.generate(str(tiny_gguf), PROMPT, raw=True, options=options)
    assert result.logprobs, result
    for item in result.logprobs:
        assert item.logprob <= 0.0
        values = [t.logprob for t in item.top_logprobs]
        assert len(values) == 5 and values == sorted(values, reverse=True)
        assert all(v <= 0.0 for v in values)
        assert item.token == token_text(bytes(item.bytes))
    assert _check_against_reference(result.logprobs, reference, _pieces(tiny_gguf), 5) >= 2
    assert len(result.logprobs) <= result.usage.completion_tokens


def test_the_sampled_tokens_logprob_comes_without_alternatives(
    engine: Engine, tiny_gguf: Path
) -> None:
    messages = [{"role": "user", "content": "hello world"}]
    options = {"temperature": 1.5, "seed": 3, "num_predict": 16, "logprobs": True}
    result = engine.chat(str(tiny_gguf), messages, options=options)
    assert result.logprobs and all(not t.top_logprobs for t in result.logprobs)
    assert all(t.logprob <= 0.0 for t in result.logprobs)
    # every answer token is there, in order: their bytes are the answer
    shown = b"".join(bytes(t.bytes) for t in result.logprobs).decode("utf-8", "replace")
    if "<" not in shown:  # (a control token's piece reads as its markup, not as answer text)
        assert shown == result.text
    # sampled at temperature 1.5, a token is sometimes not the most likely one: its own
    # logprob is reported all the same (compare with the top-1 of the same request)
    ranked = engine.chat(str(tiny_gguf), messages, options={**options, "top_logprobs": 1}).logprobs
    assert [t.bytes for t in ranked] == [t.bytes for t in result.logprobs]
    assert any(t.top_logprobs[0].logprob > t.logprob for t in ranked)
    plain = engine.chat(str(tiny_gguf), messages, options={"seed": 3, "num_predict": 4})
    assert plain.logprobs == []


def test_streamed_chunks_carry_their_own_tokens(engine: Engine, tiny_gguf: Path) -> None:
    options = {**GREEDY, "num_predict": 12, "logprobs": True, "top_logprobs": 2}
    with engine.generate_stream(str(tiny_gguf), PROMPT, raw=True, options=options) as stream:
        chunks = list(stream)
    whole = engine.generate(str(tiny_gguf), PROMPT, raw=True, options=options)
    texts = [c for c in chunks if isinstance(c, TextDelta)]
    assert [t for c in texts for t in c.logprobs] == whole.logprobs
    assert any(len(c.logprobs) == 1 for c in texts)
    assert isinstance(chunks[-1], FinalChunk)


@pytest.fixture
def parallel_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", "2")
    eng = Engine(RuntimeSettings.from_env())
    yield eng
    eng.pool.close()


def test_batched_with_a_plain_request_gives_the_same_logprobs_as_alone(
    parallel_engine: Engine, tiny_gguf: Path
) -> None:
    engine, path = parallel_engine, str(tiny_gguf)
    options = {**GREEDY, "num_predict": 10, "logprobs": True, "top_logprobs": 3}
    alone = engine.generate(path, PROMPT, raw=True, options=options)
    started = threading.Event()
    plain: list[Any] = []

    def other() -> None:  # a long generation without logprobs in the other slot
        opts = {"temperature": 0.0, "seed": 2, "num_predict": 200}
        with engine.chat_stream(path, [{"role": "user", "content": "a world"}], options=opts) as s:
            for chunk in s:
                started.set()
                plain.append(chunk)

    thread = threading.Thread(target=other)
    thread.start()
    assert started.wait(60)
    batched = engine.generate(path, PROMPT, raw=True, options=options)
    thread.join(120)
    (entry,) = engine.pool._entries.values()
    assert entry.batcher is not None and entry.batcher.max_active == 2  # decoded together
    assert [t.bytes for t in batched.logprobs] == [t.bytes for t in alone.logprobs]
    for a, b in zip(alone.logprobs, batched.logprobs, strict=True):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4)
        assert [t.bytes for t in b.top_logprobs] == [t.bytes for t in a.top_logprobs]
        for ta, tb in zip(a.top_logprobs, b.top_logprobs, strict=True):
            assert tb.logprob == pytest.approx(ta.logprob, abs=1e-4)
    assert all(not c.logprobs for c in plain if isinstance(c, TextDelta | ReasoningDelta))
