"""A `langchain.agents.create_agent` agent driven by `ChatMatric` over HTTP, for both backends.

The local server's request-driven model calls the tool the user names, with the
arguments written in the message, and answers in text once the tool result is back, so
the agent runs the full loop: model -> tool -> model -> final answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from langchain_matric.chat_models import ChatMatric
from langchain_matric.testing import LocalServer


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@pytest.fixture(params=["openai", "ollama"])
async def chat(request: pytest.FixtureRequest, server: LocalServer) -> AsyncIterator[ChatMatric]:
    base_url = server.openai_base_url if request.param == "openai" else server.ollama_base_url
    model = ChatMatric(backend=request.param, base_url=base_url, model="test-model", api_key="k")
    yield model
    model.close()
    await model.aclose()


QUESTION = "What is multiply(6, 7)? Use the tool."


def _check_run(messages: list[Any]) -> None:
    """human -> AI tool call -> tool result -> AI final answer."""
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    call_message, result, final = messages[1], messages[2], messages[3]
    assert [(c["name"], c["args"]) for c in call_message.tool_calls] == [
        ("multiply", {"a": 6, "b": 7})
    ]
    assert result.content == "42"
    assert result.tool_call_id == call_message.tool_calls[0]["id"]
    assert not final.tool_calls
    assert final.text == "Result: 42"
    assert final.response_metadata["model_provider"] == "matric"


def _check_requests(server: LocalServer) -> None:
    """Two model calls went over HTTP; the second carried the tool result back."""
    generation = [r for r in server.requests if r.path.endswith(("/chat/completions", "/chat"))]
    assert len(generation) == 2
    assert all(r.json["tools"] for r in generation)
    last = generation[-1].json["messages"][-1]
    assert last["role"] == "tool"
    assert last["content"] == "42"
    if generation[-1].path.startswith("/api/"):
        assert last["tool_name"] == "multiply"  # Ollama names the tool a result answers
    else:
        assert last["tool_call_id"] == generation[-1].json["messages"][-2]["tool_calls"][0]["id"]


def test_agent_calls_the_tool_and_answers(chat: ChatMatric, server: LocalServer) -> None:
    agent = create_agent(chat, tools=[multiply, shout], system_prompt="You are helpful.")
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    _check_run(state["messages"])
    _check_requests(server)
    assert server.requests[0].json["messages"][0] == {
        "role": "system",
        "content": "You are helpful.",
    }


async def test_agent_async_and_streamed(chat: ChatMatric, server: LocalServer) -> None:
    agent = create_agent(chat, tools=[multiply, shout])
    state = await agent.ainvoke({"messages": [HumanMessage(QUESTION)]})
    _check_run(state["messages"])
    server.clear()
    steps = [step async for step in agent.astream({"messages": [("user", QUESTION)]})]
    assert [next(iter(step)) for step in steps] == ["model", "tools", "model"]
    assert steps[-1]["model"]["messages"][-1].text == "Result: 42"
    _check_requests(server)


def test_agent_picks_the_named_tool_with_string_arguments(chat: ChatMatric) -> None:
    agent = create_agent(chat, tools=[multiply, shout])
    state = agent.invoke({"messages": [HumanMessage("Please shout 'hello agents'.")]})
    messages = state["messages"]
    assert messages[1].tool_calls[0]["name"] == "shout"
    assert messages[1].tool_calls[0]["args"] == {"text": "hello agents"}
    assert messages[-1].text == "Result: HELLO AGENTS"
