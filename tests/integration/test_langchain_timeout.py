"""``timeout`` raises a typed ``TimeoutError`` naming the phases (real model: it would
otherwise run for minutes), and the model is free right after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from local_llm_integrations import ChatLocal
from local_llm_runtime.errors import RequestTimeoutError


def test_timeout_raises_a_typed_error_naming_the_phases(demo_model: Path) -> None:
    warm = ChatLocal(model=str(demo_model), max_tokens=1)
    warm.invoke("hi")  # load first, so the deadline is spent generating
    llm = ChatLocal(model=str(demo_model), timeout=1.0, max_tokens=2000, temperature=0)
    with pytest.raises(RequestTimeoutError) as caught:
        llm.invoke("Write a very long story about a dragon, at least 3000 words.")
    err = caught.value
    assert isinstance(err, TimeoutError)
    assert err.phases["load"] == 0  # warm: the clock went to prompt + generation
    assert err.phases["prompt"] + err.phases["generation"] > 0
    assert "generation" in str(err) and "timed out after 1 s" in str(err)

    async def run() -> None:
        await llm.ainvoke("Write a very long story about a knight, at least 3000 words.")

    with pytest.raises(RequestTimeoutError):
        asyncio.run(run())
    assert warm.invoke("hi").response_metadata["finish_reason"] in ("length", "stop")
