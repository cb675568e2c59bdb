"""Token counting on the real model: the count equals the prompt tokens of the request."""

from __future__ import annotations

from pathlib import Path

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool

from local_llm_integrations import ChatLocal
from local_llm_runtime.llama.engine import default_engine


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"Sunny in {city}"


def test_count_with_template_and_tools_matches_usage(demo_model: Path) -> None:
    llm = ChatLocal(model=str(demo_model), temperature=0, num_predict=1)
    messages = [SystemMessage("Use tools when useful."), HumanMessage("Weather in Paris?")]
    plain = llm.invoke(messages)
    assert plain.usage_metadata is not None
    assert llm.get_num_tokens_from_messages(messages) == plain.usage_metadata["input_tokens"]
    with_tools = llm.bind_tools([get_weather]).invoke(messages)
    assert with_tools.usage_metadata is not None
    counted = llm.get_num_tokens_from_messages(messages, tools=[get_weather])
    assert (
        counted == with_tools.usage_metadata["input_tokens"] > plain.usage_metadata["input_tokens"]
    )
    # the model's own tokenizer: "Hello" is Qwen 2.5's token 9707 (GPT-2 would say 15496)
    assert default_engine().tokenize(str(demo_model), "Hello") == [9707]
