"""The engine on the real Qwen2.5-Coder-0.5B-Instruct: answers, tools, JSON, concurrency."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from local_llm_runtime.llama.engine import Engine
from local_llm_runtime.types import FinalChunk, TextDelta

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name", "maxLength": 40}},
            "required": ["city"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, ADD)}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "zip": {"type": "string", "maxLength": 10},
            },
            "required": ["city", "zip"],
        },
        "languages": {
            "type": "array",
            "items": {"type": "string", "enum": ["python", "rust", "go"]},
        },
        "nickname": {"type": "string", "maxLength": 40},
    },
    "required": ["name", "age", "address", "languages"],
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine()
    yield eng
    eng.pool.close()


@pytest.fixture(scope="module")
def model(demo_model: Path) -> str:
    return str(demo_model)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_coherent_answer(engine: Engine, model: str) -> None:
    result = engine.chat(
        model,
        user("What is the capital of France? Answer with one word."),
        options={"temperature": 0},
    )
    assert "paris" in result.text.lower()
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens > 10
    assert result.timings is not None and result.timings.generation_tokens_per_s > 1


def test_model_calls_the_obvious_tool_on_auto(engine: Engine, model: str) -> None:
    result = engine.chat(
        model,
        user("What is the weather like in Paris right now?"),
        tools=[WEATHER],
        options={"temperature": 0},
    )
    assert result.tool_calls, result.text
    call = result.tool_calls[0]
    assert call.name == "get_weather"
    assert "paris" in str(call.arguments.get("city", "")).lower()
    assert result.finish_reason == "tool_calls"


def test_tool_results_are_fed_back(engine: Engine, model: str) -> None:
    first = engine.chat(
        model,
        user("What's the weather in Oslo?"),
        tools=[WEATHER],
        tool_choice="get_weather",
        options={"temperature": 0},
    )
    call = first.tool_calls[0]
    messages = [
        *user("What's the weather in Oslo?"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": call.id,
            "name": call.name,
            "content": "Sunny, 23 degrees Celsius.",
        },
    ]
    # The 0.5B model repeats the call when it may call again (with or without AMX/repacked
    # kernels the greedy choice flips): ask it to answer, tools off, from the history alone.
    messages.append(
        {
            "role": "user",
            "content": "Using the tool result, what is the weather in Oslo? Answer in one sentence.",
        }
    )
    final = engine.chat(
        model, messages, tools=[WEATHER], tool_choice="none", options={"temperature": 0}
    )
    # What matters: the call and its result reached it through the template.
    assert "23" in final.text or "sunny" in final.text.lower()


@pytest.mark.parametrize("choice", ["required", "add"])
def test_forced_tool_calls_always_validate(engine: Engine, model: str, choice: str) -> None:
    for seed in range(20):
        result = engine.chat(
            model,
            user("Please help me with something."),
            tools=[WEATHER, ADD],
            tool_choice=choice,
            options={"temperature": 1.0, "seed": seed, "num_predict": 128},
        )
        assert result.tool_calls, (seed, result.text)
        for call in result.tool_calls:
            if choice != "required":
                assert call.name == choice
            jsonschema.validate(call.arguments, SCHEMAS[call.name])


def test_structured_output_validates_for_20_seeds(engine: Engine, model: str) -> None:
    for seed in range(20):
        result = engine.chat(
            model,
            user("Invent a software developer and describe them."),
            format=PERSON,
            options={"temperature": 1.0, "seed": seed, "num_predict": 256},
        )
        data = json.loads(result.text)
        jsonschema.validate(data, PERSON)


def test_json_mode_gives_json(engine: Engine, model: str) -> None:
    result = engine.chat(
        model,
        user("List three colors as JSON."),
        format="json",
        options={"temperature": 0, "num_predict": 128},
    )
    assert isinstance(json.loads(result.text), dict)


def test_streamed_usage_equals_non_streamed(engine: Engine, model: str) -> None:
    options = {"temperature": 0.8, "seed": 3, "num_predict": 40}
    chunks = list(engine.chat_stream(model, user("Write a haiku about the sea."), options=options))
    final = chunks[-1]
    assert isinstance(final, FinalChunk)
    whole = engine.chat(model, user("Write a haiku about the sea."), options=options)
    assert whole.usage == final.usage
    assert whole.text == "".join(c.text for c in chunks if isinstance(c, TextDelta))


def test_threads_and_tasks_on_one_model_match_sequential_runs(engine: Engine, model: str) -> None:
    options = {"temperature": 0.8, "num_predict": 12}
    thread_jobs = [
        (f"Name a fruit starting with the letter {chr(65 + i)}.", 100 + i) for i in range(40)
    ]
    task_jobs = [
        (f"Name an animal starting with the letter {chr(65 + i)}.", 200 + i) for i in range(4)
    ]

    def run(prompt: str, seed: int) -> str:
        stream = engine.chat_stream(model, user(prompt), options={**options, "seed": seed})
        return "".join(c.text for c in stream if isinstance(c, TextDelta))

    expected = {job: run(*job) for job in thread_jobs + task_jobs}
    results: dict[tuple[str, int], str] = {}
    lock = threading.Lock()

    def thread_worker(jobs: list[tuple[str, int]]) -> None:
        for job in jobs:
            text = run(*job)
            with lock:
                results[job] = text

    threads = [threading.Thread(target=thread_worker, args=(thread_jobs[i::8],)) for i in range(8)]
    for t in threads:
        t.start()

    async def tasks() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        async def one(job: tuple[str, int]) -> None:
            parts = [
                c.text
                async for c in engine.achat_stream(
                    model, user(job[0]), options={**options, "seed": job[1]}
                )
                if isinstance(c, TextDelta)
            ]
            results[job] = "".join(parts)

        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        await asyncio.gather(*(one(job) for job in task_jobs))
        stop.set()
        await tick
        elapsed = time.monotonic() - started
        assert ticks >= elapsed / 0.01 * 0.5  # the loop kept ticking the whole time
        return ticks

    asyncio.run(tasks())
    for t in threads:
        t.join(600)
    assert len(results) == len(expected)
    mismatches = {
        job: (results[job], want) for job, want in expected.items() if results[job] != want
    }
    assert not mismatches


def test_stopping_a_stream_after_three_tokens_frees_the_model(engine: Engine, model: str) -> None:
    stream = engine.chat_stream(
        model, user("Tell me a long story about a dragon."), options={"num_predict": 400}
    )
    for i, _chunk in enumerate(stream, start=1):
        if i == 3:
            break
    stream.close()  # type: ignore[attr-defined]
    result = engine.chat(model, user("Say hello."), options={"temperature": 0, "num_predict": 16})
    assert result.text.strip()
    assert result.usage.completion_tokens > 0


def test_embeddings_are_semantic(engine: Engine, model: str) -> None:
    cat, kitten, market = engine.embed(
        model, ["a small cat", "a little kitten", "the stock market crashed"]
    )

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert dot(cat, kitten) > dot(cat, market)
    assert len(cat) == 896


def test_greedy_answers_after_another_conversation(engine: Engine, model: str) -> None:
    """Greedy: fresh vs after a conversation sharing the prefix (README, "Concurrency").

    Seeded requests are exact by construction (no prefix reuse). Unseeded greedy
    ones reuse the prefix; on the CPU backend the measured texts were identical
    (0 differences in 11 cases); this pins that measurement for one case.
    """
    system = {"role": "system", "content": "You are a careful travel assistant. " * 15}
    a = [system, {"role": "user", "content": "Write a short poem about Lisbon in spring."}]
    b = [system, {"role": "user", "content": "List three museums in Paris."}]
    options = {"temperature": 0, "num_predict": 64}
    engine.unload()
    fresh = engine.chat(model, a, options=options).text
    engine.chat(model, b, options={**options, "num_predict": 4})
    after = engine.chat(model, a, options=options)
    assert after.timings is not None and after.timings.prompt_tokens < after.usage.prompt_tokens
    seeded = engine.chat(model, a, options={**options, "seed": 1})
    assert seeded.text == fresh  # exact by construction
    assert after.text == fresh  # measured on CPU; not promised by llama.cpp on every backend
