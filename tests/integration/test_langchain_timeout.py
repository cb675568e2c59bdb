"""``timeout`` cancels generation within a token (real model: it would otherwise run for minutes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from local_llm_integrations import ChatLocal


def test_timeout_stops_a_long_answer(demo_model: Path) -> None:
    warm = ChatLocal(model=str(demo_model), max_tokens=1)
    warm.invoke("hi")  # load first, so the deadline covers generation only
    llm = ChatLocal(model=str(demo_model), timeout=1.0, max_tokens=2000, temperature=0)
    message = llm.invoke("Write a very long story about a dragon, at least 3000 words.")
    assert message.response_metadata["finish_reason"] == "cancelled"
    assert message.usage_metadata is not None
    assert 0 < message.usage_metadata["output_tokens"] < 2000

    async def run() -> str:
        reply = await llm.ainvoke("Write a very long story about a knight, at least 3000 words.")
        return str(reply.response_metadata["finish_reason"])

    assert asyncio.run(run()) == "cancelled"
