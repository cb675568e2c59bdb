"""A fully local LlamaIndex agent with two tools.

``FunctionAgent`` (llama_index.core.agent.workflow) drives ``LocalLLM``: the
model's own chat template renders the tools, the runtime parses the model's
tool calls, the agent runs them and feeds the results back. Events are printed
as they stream. Models whose template cannot render tools get a ``ReActAgent``.

Usage::

    python examples/llama_index_agent.py [MODEL] [TASK]

``MODEL`` (or ``$LOCAL_LLM_MODEL``) defaults to ``qwen2.5-coder:0.5b``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from llama_index.core.agent.workflow import (
    AgentStream,
    FunctionAgent,
    ReActAgent,
    ToolCall,
    ToolCallResult,
)

from local_llm_integrations.llama_index import LocalLLM

MODEL = (
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LOCAL_LLM_MODEL", "qwen2.5-coder:0.5b")
)
TASK = sys.argv[2] if len(sys.argv) > 2 else "What is the weather in Oslo right now?"

WEATHER = {"oslo": ("light snow", -3), "lisbon": ("sunny", 19), "cairo": ("clear", 27)}


def get_weather(city: str) -> str:
    """Get the current weather and temperature (Celsius) of a city."""
    sky, celsius = WEATHER.get(city.strip().lower(), ("cloudy", 12))
    return f"{city}: {sky}, {celsius} degrees Celsius"


def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from degrees Celsius to degrees Fahrenheit."""
    return round(celsius * 9 / 5 + 32, 1)


async def main() -> None:
    llm = LocalLLM(model=MODEL, temperature=0, num_predict=128)
    tools = [get_weather, celsius_to_fahrenheit]
    system = "You are a helpful assistant. Use the tools to answer, then reply in one sentence."
    agent: FunctionAgent | ReActAgent
    if llm.metadata.is_function_calling_model:
        agent = FunctionAgent(tools=tools, llm=llm, system_prompt=system)
    else:
        agent = ReActAgent(tools=tools, llm=llm, system_prompt=system)
    print(f"{type(agent).__name__} on {MODEL}\nTask: {TASK}")

    handler = agent.run(user_msg=TASK, max_iterations=6)
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            print(f"  tool {event.tool_name}({event.tool_kwargs}) -> {event.tool_output.content}")
        elif isinstance(event, ToolCall):
            continue
        elif isinstance(event, AgentStream) and event.thinking_delta:
            print(event.thinking_delta, end="", flush=True)
    result = await handler
    print(f"Answer: {result}")


if __name__ == "__main__":
    asyncio.run(main())
