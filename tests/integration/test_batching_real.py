"""Continuous batching on the real model: concurrent requests decoded together stay apart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_llm_runtime import RuntimeSettings
from local_llm_runtime.llama.engine import Engine

QUESTIONS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Germany": "Berlin",
}


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("LOCAL_LLM_NUM_PARALLEL", "4")
    eng = Engine(RuntimeSettings.from_env())
    yield eng
    eng.pool.close()


def test_concurrent_questions_get_their_own_answers(engine: Engine, demo_model: Path) -> None:
    answers: dict[str, str] = {}
    errors: list[BaseException] = []
    gate = threading.Barrier(len(QUESTIONS))

    def ask(country: str) -> None:
        try:
            gate.wait()
            answers[country] = engine.chat(
                str(demo_model),
                [
                    {
                        "role": "user",
                        "content": f"What is the capital of {country}? Answer in one sentence.",
                    }
                ],
                options={"temperature": 0, "num_predict": 32, "num_ctx": 1024},
            ).text
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(c,)) for c in QUESTIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    (entry,) = engine.pool._entries.values()
    assert entry.batcher is not None and entry.batcher.max_active >= 2  # really batched
    for country, capital in QUESTIONS.items():
        assert capital in answers[country], (country, answers[country])
        for other in set(QUESTIONS.values()) - {capital}:
            assert other not in answers[country], (country, answers[country])
