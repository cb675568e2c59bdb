"""FakeEngine: a scripted EngineProtocol (text, reasoning, tool calls, usage, limits, recording)."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from local_llm_runtime import InvalidOptionError, ModelInfo, ModelNotFoundError
from local_llm_runtime.errors import RequestTimeoutError
from local_llm_runtime.interface import EngineProtocol
from local_llm_runtime.streams import AsyncChunkStream, ChunkStream
from local_llm_runtime.testing import (
    FakeEngine,
    FakeEngineError,
    FakeResponse,
    FakeToolCall,
    fake_tokens,
)
from local_llm_runtime.types import (
    FinalChunk,
    ReasoningDelta,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
)

HI = [{"role": "user", "content": "Hi"}]
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
ROOT = Path(__file__).resolve().parents[2]


def test_it_implements_the_interface() -> None:
    engine: EngineProtocol = FakeEngine(["x"])
    assert isinstance(engine, EngineProtocol)


def test_mypy_accepts_it_as_the_interface(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "from local_llm_runtime.interface import EngineProtocol\n"
        "from local_llm_runtime.testing import FakeEngine\n"
        "engine: EngineProtocol = FakeEngine(responses=['Hello'])\n"
        "wrong: EngineProtocol = object()\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={"MYPYPATH": str(ROOT / "runtime"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "snippet.py:4:" in errors[0], result.stdout  # only `object()`


def test_tokens_are_lossless_and_several() -> None:
    for text in ["Hello, world!", "  two  spaces ", "", "naïve café\n\nend", "a+b=c"]:
        assert "".join(fake_tokens(text)) == text
    assert fake_tokens("Hello, world") == ["Hello", ",", " world"]


def test_text_streams_token_by_token_and_ends_with_one_final() -> None:
    engine = FakeEngine(["Hello, world! How are you?"])
    with engine.chat_stream("m", HI) as stream:
        assert isinstance(stream, ChunkStream)
        chunks = list(stream)
    assert [type(c) for c in chunks].count(FinalChunk) == 1 and isinstance(chunks[-1], FinalChunk)
    texts = [c.text for c in chunks if isinstance(c, TextDelta)]
    assert "".join(texts) == "Hello, world! How are you?" and len(texts) == 8
    final = chunks[-1]
    assert final.finish_reason == "stop" and final.model == "m"
    assert final.usage == Usage(
        prompt_tokens=engine.count_chat_tokens("m", HI), completion_tokens=8
    )
    assert final.timings.sampled_tokens == 8


def test_reasoning_tool_calls_and_scripted_usage() -> None:
    engine = FakeEngine(
        [
            FakeResponse(text="4", reasoning="2+2 is 4", usage=Usage(10, 3)),
            FakeEngine.tool_call("add", {"a": 1, "b": 2}, text="Let me add."),
            FakeResponse(tool_calls=[FakeToolCall("add", {"a": "x", "b": 2}, id="c9")]),
            FakeResponse(text="cut", finish_reason="length"),
        ]
    )
    first = engine.chat("m", HI)
    assert (first.text, first.reasoning, first.usage) == ("4", "2+2 is 4", Usage(10, 3))
    second = engine.chat("m", HI, tools=[ADD])
    assert second.text == "Let me add."
    assert [(c.id, c.name, c.arguments) for c in second.tool_calls] == [
        ("call_0", "add", {"a": 1, "b": 2})
    ]
    assert second.finish_reason == "tool_calls"
    third = engine.chat("m", HI, tools=[ADD])
    assert third.tool_calls == [] and third.invalid_tool_calls[0].id == "c9"
    assert "integer" in (third.invalid_tool_calls[0].error or "")
    assert engine.chat("m", HI).finish_reason == "length"


def test_reasoning_modes() -> None:
    engine = FakeEngine([FakeResponse(text="4", reasoning="think")], cycle=True)
    assert engine.chat("m", HI, reasoning="hide").reasoning == ""
    inline = engine.chat("m", HI, reasoning="inline")
    assert (inline.text, inline.reasoning) == ("<think>think</think>4", "")
    assert engine.generate("m", "x", raw=True).text == "<think>think</think>4"


def test_chunk_lists_replay_as_given() -> None:
    final = FinalChunk("stop", Usage(5, 2), Timings(0.1, 0, 0.2, 0.3, 5, 2), "other")
    chunks = [
        ReasoningDelta("r"),
        TextDelta("ab"),
        ToolCallDelta(0, "i", "add", {"a": 1, "b": 2}),
        final,
    ]
    engine = FakeEngine([chunks])
    got = list(engine.chat_stream("m", HI, tools=[ADD]))
    assert got[:3] == chunks[:3]
    assert got[3] == FinalChunk("stop", Usage(5, 2), final.timings, "m")
    with pytest.raises(ValueError, match="FinalChunk"):
        FakeEngine([[final, TextDelta("late")]])
    with pytest.raises(TypeError, match="not a chunk"):
        FakeEngine([["text"]])  # type: ignore[list-item]


def test_tool_calls_need_offered_tools() -> None:
    engine = FakeEngine([FakeEngine.tool_call("add", {})], cycle=True)
    with pytest.raises(FakeEngineError, match="offers none"):
        engine.chat("m", HI)
    with pytest.raises(FakeEngineError, match="offers none"):
        engine.chat("m", HI, tools=[ADD], tool_choice="none")
    with pytest.raises(FakeEngineError, match="'add' but the request offers mul"):
        engine.chat("m", HI, tools=[{**ADD, "function": {**ADD["function"], "name": "mul"}}])


def test_parallel_tool_calls_false_keeps_the_first() -> None:
    calls = [FakeToolCall("add", {"a": 1, "b": 2}), FakeToolCall("add", {"a": 3, "b": 4})]
    engine = FakeEngine([FakeResponse(tool_calls=calls)], cycle=True)
    assert len(engine.chat("m", HI, tools=[ADD]).tool_calls) == 2
    assert len(engine.chat("m", HI, tools=[ADD], parallel_tool_calls=False).tool_calls) == 1


def test_stop_and_num_predict() -> None:
    engine = FakeEngine(["one two three four"], cycle=True)
    stopped = engine.chat("m", HI, options={"stop": ["thr", "zz"]})
    assert (stopped.text, stopped.finish_reason) == ("one two ", "stop")
    short = engine.chat("m", HI, options={"num_predict": 2})
    assert (short.text, short.finish_reason, short.usage.completion_tokens) == (
        "one two", "length", 2,
    )  # fmt: skip
    both = engine.chat("m", HI, options={"num_predict": 3, "stop": ["two"]})
    assert (both.text, both.finish_reason) == ("one ", "stop")
    calls = FakeEngine([FakeEngine.tool_call("add", {"a": 1, "b": 2}, text="ok")])
    cut = calls.chat("m", HI, tools=[ADD], options={"num_predict": 3})
    assert (cut.text, cut.tool_calls, cut.finish_reason) == ("ok", [], "length")
    with pytest.raises(InvalidOptionError):
        engine.chat("m", HI, options={"top_p": 3.0})


def test_cancel_close_and_timeout() -> None:
    cancel = threading.Event()
    cancel.set()
    engine = FakeEngine(["a b c"] * 3, chunk_delay=0.0)
    final = list(engine.chat_stream("m", HI, cancel=cancel))[-1]
    assert isinstance(final, FinalChunk) and final.finish_reason == "cancelled"
    stream = engine.chat_stream("m", HI)
    assert next(stream) == TextDelta("a") and engine.open_streams == 1
    stream.close()
    assert engine.open_streams == 0 and list(stream) == []
    slow = FakeEngine([" word" * 100], chunk_delay=0.05)
    with pytest.raises(RequestTimeoutError), slow.chat_stream("m", HI, timeout=0.01) as timed:
        list(timed)


def test_exhaustion_and_cycle() -> None:
    engine = FakeEngine(["only"])
    assert engine.chat("m", HI).text == "only" and engine.remaining == 0
    with pytest.raises(
        FakeEngineError, match=r"no response left for request #2 \(chat, model 'm'\)"
    ):
        engine.chat("m", HI)
    cycling = FakeEngine(["a", "b"], cycle=True)
    assert [cycling.generate("m", "x").text for _ in range(3)] == ["a", "b", "a"]
    engine.add_responses(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"), engine.chat_stream("m", HI) as stream:
        next(stream)


def test_requests_are_recorded() -> None:
    engine = FakeEngine(["x"], cycle=True)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    engine.chat(
        "m", messages, tools=[ADD], tool_choice="add", format={"type": "object"},
        options={"temperature": 0.5}, keep_alive="1m", timeout=9.0,
    )  # fmt: skip
    messages[1]["content"] = "changed later"
    request = engine.last_request
    assert request.method == "chat" and request.model == "m"
    assert request.messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
    ]
    assert (request.tools, request.tool_choice, request.format) == (
        [ADD],
        "add",
        {"type": "object"},
    )
    assert (request.options, request.keep_alive, request.timeout) == (
        {"temperature": 0.5},
        "1m",
        9.0,
    )
    assert request.response == "x"
    engine.generate_stream("m", "P", system="S", raw=False).close()
    assert (engine.last_request.method, engine.last_request.prompt) == ("generate_stream", "P")
    engine.embed("e", ["a"], task="query")
    assert (engine.last_request.method, engine.last_request.texts) == ("embed", ["a"])
    assert [r.method for r in engine.requests] == ["chat", "generate_stream", "embed"]


async def test_async_streams() -> None:
    engine = FakeEngine(["Hello there", "Done"])
    stream = engine.achat_stream("m", HI)
    assert isinstance(stream, AsyncChunkStream)
    async with stream:
        chunks = [c async for c in stream]
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "Hello there"
    assert (await engine.agenerate("m", "x")).text == "Done"
    assert [r.method for r in engine.requests] == ["achat_stream", "agenerate"]
    assert await engine.aembed("e", ["a"]) == engine.embed("e", ["a"])


def test_embeddings_are_deterministic_normalized_bags_of_words() -> None:
    engine = FakeEngine(dimension=16)
    a, b, c, d = engine.embed("e", ["the robot Rusty", "the robot Rusty", "Rusty robot", "bread"])
    assert a == b and len(a) == 16 and math.isclose(sum(x * x for x in a), 1.0)
    assert sum(x * y for x, y in zip(a, c, strict=True)) > sum(
        x * y for x, y in zip(a, d, strict=True)
    )
    raw = engine.embed("e", ["one two"], normalize=False)[0]
    assert not math.isclose(sum(x * x for x in raw), 1.0)
    assert engine.embed("e", [""])[0] != [0.0] * 16
    assert FakeEngine(dimension=16).embed("other", ["bread"])[0] == d  # any engine, any process
    with pytest.raises(InvalidOptionError):
        engine.embed("e", "one string")  # type: ignore[arg-type]


def test_tokens_models_and_pool_control() -> None:
    engine = FakeEngine()
    assert engine.tokenize("m", "Hello world") == engine.tokenize("m", "Hello world")
    assert len(engine.tokenize("m", "Hello, world")) == 3
    info = engine.model_info("anything")
    assert (info.kind, info.supports_tools, info.context_window()) == ("chat", True, 4096)
    engine.preload("m", options={"num_ctx": 512})
    engine.embed("e", ["x"])
    assert sorted((p.name, p.embedding, p.num_ctx) for p in engine.ps()) == [
        ("e", True, 4096), ("m", False, 512),
    ]  # fmt: skip
    assert engine.unload("m") == 1 and engine.unload() == 1 and engine.ps() == []
    only = FakeEngine(["x"], models={"qwen": ModelInfo("qwen", "chat", ("completion",))})
    with pytest.raises(ModelNotFoundError, match="qwen"):
        only.model_info("qwen2")
    with pytest.raises(ModelNotFoundError):
        only.chat("nope", HI)
    assert only.chat("qwen", HI).text == "x"


def test_no_llama_cpp_is_imported() -> None:
    code = (
        "import sys; from local_llm_runtime.testing import FakeEngine;"
        "FakeEngine(['x']).chat('m', [{'role': 'user', 'content': 'hi'}]);"
        "print(sorted(m for m in sys.modules if m.startswith(('llama_cpp', 'local_llm_runtime.llama'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_threads_share_one_script() -> None:
    engine = FakeEngine([str(i) for i in range(20)])
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(engine.chat("m", HI).text))
        for _ in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=int) == [str(i) for i in range(20)]


def test_async_run_closes_streams() -> None:
    engine = FakeEngine(["a b c"])
    assert asyncio.run(engine.achat("m", HI)).text == "a b c" and engine.open_streams == 0
