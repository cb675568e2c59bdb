"""What is and is not reproducible (README, "Concurrency"), on the tiny GGUF.

A seeded request evaluates its whole prompt, so it repeats exactly whatever ran
before; an unseeded greedy request reuses the cached prompt prefix (the cost
measured in the README), which llama.cpp does not promise to be bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local_llm_runtime.llama.engine import Engine

SYSTEM = {"role": "system", "content": "the world is a hello " * 30}
A = [SYSTEM, {"role": "user", "content": "hello the world"}]
B = [SYSTEM, {"role": "user", "content": "a world of the hello"}]


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


@pytest.mark.parametrize("seed", [None, 5])
def test_which_greedy_requests_reuse_the_prompt_prefix(
    engine: Engine, tiny_gguf: Path, seed: int | None
) -> None:
    options = {"temperature": 0.0, "num_predict": 24, "seed": seed}
    fresh = engine.chat(str(tiny_gguf), A, options=options)
    assert fresh.timings is not None and fresh.timings.prompt_tokens == fresh.usage.prompt_tokens
    engine.chat(str(tiny_gguf), B, options=options)  # shares the system prompt with A
    again = engine.chat(str(tiny_gguf), A, options=options)
    assert again.timings is not None
    evaluated, total = again.timings.prompt_tokens, again.usage.prompt_tokens
    if seed is None:  # the shared prefix is reused: only A's own tokens are evaluated
        assert evaluated < total // 2
    else:  # a seed turns the reuse off: the whole prompt, hence the same numerics
        assert evaluated == total
        assert again.text == fresh.text
