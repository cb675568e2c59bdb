"""A LangGraph agent with two tools, on a task that needs two tool calls.

The graph is the classic agent loop (model -> tools -> model ... -> answer) with
one guard rail for small models: when the model asks again for calls it has
already made, the facts are in, and an answer node writes the reply from the
question and the tool results (a 0.5B model otherwise keeps calling tools).
"""

from __future__ import annotations

import json

from _model import model_name
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from local_llm_integrations import ChatLocal

INVENTORY = {"widget": 12, "gadget": 7}
PRICES = {"widget": 2.5, "gadget": 10.0}


@tool
def get_stock(item: str) -> int:
    """Return how many units of an item are in stock."""
    return INVENTORY.get(item.lower().strip(), 0)


@tool
def get_price(item: str) -> float:
    """Return the unit price of an item in euros."""
    return PRICES.get(item.lower().strip(), 0.0)


TOOLS = [get_stock, get_price]
llm = ChatLocal(model=model_name(), temperature=0, max_tokens=256)
with_tools = llm.bind_tools(TOOLS)


def _key(call: dict) -> tuple[str, str]:
    return call["name"], json.dumps(call["args"], sort_keys=True)


def agent_node(state: MessagesState) -> dict[str, list[BaseMessage]]:
    messages = state["messages"]
    reply = with_tools.invoke(messages)
    made = {_key(c) for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
    if reply.tool_calls and all(_key(c) in made for c in reply.tool_calls):
        return {"messages": [answer(messages)]}
    return {"messages": [reply]}


def answer(messages: list[BaseMessage]) -> AIMessage:
    """Reply in plain text from the question and the tool results gathered so far."""
    calls = {c["id"]: c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
    facts = "\n".join(
        dict.fromkeys(  # each distinct fact once, in order
            f"- {calls[m.tool_call_id]['name']} for {', '.join(map(str, calls[m.tool_call_id]['args'].values()))} returned {m.content}"
            for m in messages
            if isinstance(m, ToolMessage) and m.tool_call_id in calls
        )
    )
    question = next(m.content for m in messages if m.type == "human")
    reply = llm.invoke(
        [
            ("system", "You answer from the given facts and copy every number exactly."),
            ("user", f"Facts:\n{facts}\n\nQuestion: {question}"),
        ]
    )
    return AIMessage(content=reply.content)


graph = StateGraph(MessagesState)
graph.add_node("agent", agent_node)
graph.add_node("tools", ToolNode(TOOLS))
graph.add_edge(START, "agent")
graph.add_conditional_edges("agent", tools_condition)
graph.add_edge("tools", "agent")
agent = graph.compile()

if __name__ == "__main__":
    question = "How many widgets are in stock, and what does one widget cost?"
    state = agent.invoke({"messages": [("user", question)]}, {"recursion_limit": 12})
    calls = [c["name"] for m in state["messages"] if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.content for m in state["messages"] if isinstance(m, ToolMessage)]
    print("tool calls:", calls)
    print("tool results:", results)
    print("answer:", state["messages"][-1].content)
