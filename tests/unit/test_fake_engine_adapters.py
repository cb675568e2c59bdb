"""Every adapter serves through its ``engine`` field; users test chains and agents on FakeEngine."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from langchain_core.load import dumpd, dumps
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.tools import FunctionTool

from local_llm_integrations import ChatLocal
from local_llm_integrations.langchain import LocalEmbeddings
from local_llm_integrations.langchain import LocalLLM as LangChainLLM
from local_llm_integrations.llama_index import LocalEmbedding
from local_llm_integrations.llama_index import LocalLLM as IndexLLM
from local_llm_runtime.testing import FakeEngine, FakeResponse

ADAPTERS: dict[str, type[Any]] = {
    "ChatLocal": ChatLocal,
    "LangChainLLM": LangChainLLM,
    "LocalEmbeddings": LocalEmbeddings,
    "IndexLLM": IndexLLM,
    "LocalEmbedding": LocalEmbedding,
}


def _use(adapter: Any) -> None:
    if isinstance(adapter, ChatLocal | LangChainLLM):
        adapter.invoke("hi")
    elif isinstance(adapter, LocalEmbeddings):
        adapter.embed_query("hi")
    elif isinstance(adapter, IndexLLM):
        adapter.complete("hi")
    else:
        adapter.get_query_embedding("hi")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_engine_field_serves_every_call(name: str) -> None:
    engine = FakeEngine(["answer"], cycle=True)
    adapter = ADAPTERS[name](model="some-model", engine=engine)
    assert adapter.engine is engine
    _use(adapter)
    assert [r.model for r in engine.requests] == ["some-model"]


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_engine_is_not_serialized(name: str) -> None:
    adapter = ADAPTERS[name](model="some-model", engine=FakeEngine())
    dumped = adapter.model_dump()
    assert "engine" not in dumped and dumped["model"] == "some-model"
    assert "FakeEngine" not in repr(adapter) and "FakeEngine" not in adapter.model_dump_json()
    if hasattr(adapter, "to_dict"):  # LlamaIndex
        data = adapter.to_dict()
        assert "engine" not in data
        again = type(adapter).from_dict(data)
        assert again.engine is None and again.model == "some-model"
    else:  # LangChain: dumpd/dumps and the LangSmith identifying params
        assert "FakeEngine" not in json.dumps(dumpd(adapter)) and "FakeEngine" not in dumps(adapter)
        if hasattr(adapter, "_identifying_params"):
            assert "engine" not in adapter._identifying_params


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_non_engine_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="EngineProtocol"):
        ADAPTERS[name](model="m", engine="not an engine")


def test_construction_imports_no_backend() -> None:
    code = (
        "import sys\n"
        "from local_llm_integrations import ChatLocal\n"
        "from local_llm_integrations.langchain import LocalEmbeddings, LocalLLM\n"
        "from local_llm_integrations.llama_index import LocalEmbedding, LocalLLM as I\n"
        "for cls in (ChatLocal, LocalLLM, LocalEmbeddings, I, LocalEmbedding):\n"
        "    assert cls(model='qwen2.5:7b').engine is None\n"
        "print(sorted(m for m in sys.modules if m.startswith(('llama_cpp', 'local_llm_runtime.llama'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- what users do: test their chains and agents without a model ---------------------


def test_langchain_prompt_model_parser_chain() -> None:
    engine = FakeEngine(["Paris is the capital of France."])
    llm = ChatLocal(model="qwen2.5:7b", engine=engine, temperature=0)
    chain = (
        ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "Capital of {x}?")])
        | llm
        | StrOutputParser()
    )
    tokens = list(chain.stream({"x": "France"}))
    assert "".join(tokens) == "Paris is the capital of France."
    assert len(tokens) > 3  # streamed token by token
    request = engine.last_request
    assert request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert request.options == {"temperature": 0}
    with pytest.raises(RuntimeError, match="no response left"):
        chain.invoke({"x": "Spain"})


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def test_langchain_tool_calling_loop() -> None:
    engine = FakeEngine(
        [FakeEngine.tool_call("get_weather", {"city": "Paris"}), "It is sunny in Paris."]
    )
    llm = ChatLocal(model="m", engine=engine).bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("Weather in Paris?")]
    reply = llm.invoke(messages)
    assert isinstance(reply, AIMessage)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert reply.usage_metadata is not None and reply.usage_metadata["input_tokens"] > 0
    messages += [reply, ToolMessage(get_weather.invoke(reply.tool_calls[0]["args"]),
                                    tool_call_id=reply.tool_calls[0]["id"])]  # fmt: skip
    assert llm.invoke(messages).content == "It is sunny in Paris."
    sent = engine.last_request.messages or []
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[-1]["content"] == "Sunny in Paris"
    assert (engine.last_request.tools or [])[0]["function"]["name"] == "get_weather"


def test_langchain_invalid_scripted_arguments_are_invalid_tool_calls() -> None:
    engine = FakeEngine([FakeEngine.tool_call("get_weather", {"town": "Paris"})])
    reply = ChatLocal(model="m", engine=engine).bind_tools([get_weather]).invoke("Weather?")
    assert isinstance(reply, AIMessage) and reply.tool_calls == []
    assert reply.invalid_tool_calls[0]["name"] == "get_weather"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_llama_index_predict_and_call() -> None:
    engine = FakeEngine([FakeEngine.tool_call("add", {"a": 1, "b": 2})])
    llm = IndexLLM(model="m", engine=engine)
    output = llm.predict_and_call([FunctionTool.from_defaults(fn=add)], user_msg="1+2?")
    assert output.response == "3"
    assert engine.last_request.tool_choice == "auto"


async def test_llama_index_function_agent() -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    engine = FakeEngine(
        [
            FakeResponse(reasoning="I should add.", tool_calls=[_call("add", a=20, b=22)]),
            "The answer is 42.",
        ]
    )
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(fn=add)], llm=IndexLLM(model="m", engine=engine)
    )
    response = await agent.run(user_msg="What is 20 + 22?")
    assert str(response) == "The answer is 42."
    assert [c.tool_name for c in response.tool_calls] == ["add"]
    assert response.tool_calls[0].tool_output.raw_output == 42
    last = engine.last_request.messages or []
    assert any(m["role"] == "tool" and m["content"] == "42" for m in last)
    assert engine.remaining == 0


def _call(name: str, **arguments: Any) -> Any:
    from local_llm_runtime.testing import FakeToolCall

    return FakeToolCall(name, arguments)


def test_rag_retrieval_with_fake_embeddings() -> None:
    from llama_index.core import Document, VectorStoreIndex

    engine = FakeEngine(["Rusty."])
    index = VectorStoreIndex.from_documents(
        [
            Document(text="The maintenance robot on Halcyon-7 is called Rusty."),
            Document(text="Bread is baked in an oven at high temperature."),
        ],
        embed_model=LocalEmbedding(model="emb", engine=engine),
    )
    engine_answer = index.as_query_engine(
        llm=IndexLLM(model="m", engine=engine), similarity_top_k=1
    ).query("What is the maintenance robot called?")
    assert str(engine_answer) == "Rusty."
    assert "Halcyon-7" in engine_answer.source_nodes[0].node.get_content()
    prompt = (engine.last_request.messages or [])[-1]["content"]
    assert "Halcyon-7" in prompt and "oven" not in prompt
    store = LocalEmbeddings(model="emb", engine=engine)
    assert store.embed_query("robot") == store.embed_query("robot")


def test_chat_message_roles_reach_the_engine() -> None:
    engine = FakeEngine(["ok"])
    IndexLLM(model="m", engine=engine).chat([ChatMessage(role="user", content="Hi")])
    assert engine.last_request.method == "chat_stream"


class _PicklableEngine(FakeEngine):
    """A FakeEngine that pickles (a real backend may: a remote client holding only a URL)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_PicklableEngine, ((["again"],)))


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_pickling_never_changes_the_original(name: str, caplog: pytest.LogCaptureFixture) -> None:
    import pickle

    engine = FakeEngine(["answer"], cycle=True)  # holds locks: cannot be pickled
    adapter = ADAPTERS[name](model="some-model", engine=engine)
    _use(adapter)  # caches (LlamaIndex's model info) hold the engine too
    copy = pickle.loads(pickle.dumps(adapter))
    assert adapter.engine is engine  # LlamaIndex's own __getstate__ deleted it here
    _use(adapter)
    assert copy.engine is None and copy.model == "some-model"  # the process-wide engine
    assert "engine (FakeEngine) cannot be pickled" in caplog.text
    kept = pickle.loads(pickle.dumps(ADAPTERS[name](model="m", engine=_PicklableEngine([]))))
    assert isinstance(kept.engine, _PicklableEngine)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
@pytest.mark.parametrize("bad", [FakeEngine, object(), "fake", 42])
def test_engine_must_be_an_engine_instance(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match="engine must be an engine instance"):
        ADAPTERS[name](model="some-model", engine=bad)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_engine_is_not_in_the_json_schema(name: str) -> None:
    cls = ADAPTERS[name]
    if cls in (ChatLocal, LangChainLLM):  # LangChain's own callable fields have no schema
        properties = cls.model_json_schema(mode="serialization")["properties"]
    else:
        properties = cls.model_json_schema()["properties"]
    assert "engine" not in properties and "model" in properties


@pytest.mark.parametrize("name", ["ChatLocal", "LangChainLLM", "IndexLLM"])
@pytest.mark.parametrize(
    "options",
    [{"temperature": True}, {"num_ctx": False}, {"seed": True}, {"keep_alive": [1]}],
)
def test_constructor_options_follow_the_runtime_rules(name: str, options: dict[str, Any]) -> None:
    from local_llm_runtime import InvalidOptionError

    engine = FakeEngine(["x"], cycle=True)
    with pytest.raises(InvalidOptionError):  # as per call: pydantic would have made True 1
        ADAPTERS[name](model="m", engine=engine, **options)
    if name != "IndexLLM":
        with pytest.raises(InvalidOptionError):
            ADAPTERS[name](model="m", engine=engine).invoke("hi", **options)


@pytest.mark.parametrize("name", ["ChatLocal", "LangChainLLM", "IndexLLM"])
def test_a_stop_string_is_one_stop_sequence(name: str) -> None:
    engine = FakeEngine(["x"], cycle=True)
    adapter = ADAPTERS[name](model="m", engine=engine, stop="\n")
    _use(adapter)
    assert engine.requests[-1].options["stop"] == ["\n"]


def test_one_option_under_two_names_is_refused() -> None:
    from local_llm_runtime import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="same option; pass only one"):
        ChatLocal(model="m", max_tokens=2, num_predict=3)
    assert ChatLocal(model="m", max_tokens=3, num_predict=3).num_predict == 3


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_assigning_the_engine_is_checked(name: str) -> None:
    adapter = ADAPTERS[name](model="some-model")
    engine = FakeEngine(["answer"], cycle=True)
    adapter.engine = engine
    _use(adapter)
    assert engine.requests
    with pytest.raises(ValueError, match="engine must be an engine instance"):
        adapter.engine = 42
    with pytest.raises(AttributeError, match="set the public field"):
        adapter._engine = engine  # 0.1's private attribute: never silently ignored
    assert adapter.engine is engine
