"""`ChatMatric(send_reasoning=True)`: earlier AI turns' reasoning goes back to the server.

A tool loop against the local server on each API: the reasoning of the turn that called
the tool rides on the next request (`reasoning_content` on the chat API, `thinking` on
Ollama's native API, a `reasoning` input item on the Responses API), and by default
nothing extra is sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from langchain_matric import ChatMatric
from langchain_matric.testing import LocalServer, Reply, ToolCallSpec

APIS = ["chat", "responses", "ollama"]


def get_weather(city: str) -> str:
    """Weather in a city."""
    return "sunny"


def make(server: LocalServer, api: str, **kw: Any) -> ChatMatric:
    if api == "ollama":
        return ChatMatric(backend="ollama", base_url=server.ollama_base_url, model="m", **kw)
    return ChatMatric(backend="openai", base_url=server.openai_base_url, model="m", api=api, **kw)


def tool_loop(server: LocalServer, model: ChatMatric) -> list[BaseMessage]:
    server.script(
        Reply(
            reasoning="Oslo needs the tool.",
            tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"})],
        ),
        Reply(text="Sunny in Oslo."),
    )
    bound = model.bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage("Weather in Oslo?")]
    first = bound.invoke(messages)
    assert isinstance(first, AIMessage)
    assert first.additional_kwargs["reasoning_content"] == "Oslo needs the tool."
    assert first.tool_calls
    messages += [first, ToolMessage("sunny", tool_call_id=first.tool_calls[0]["id"])]
    assert bound.invoke(messages).content == "Sunny in Oslo."
    return messages


def sent_assistant(server: LocalServer, api: str) -> list[dict[str, Any]]:
    body = server.requests[-1].json
    if api == "responses":
        return [i for i in body["input"] if i.get("type") in ("reasoning", "function_call")]
    return [m for m in body["messages"] if m["role"] == "assistant"]


@pytest.mark.parametrize("api", APIS)
def test_tool_loop_sends_reasoning_back(server: LocalServer, api: str) -> None:
    model = make(server, api, send_reasoning=True)
    try:
        tool_loop(server, model)
    finally:
        model.close()
    items = sent_assistant(server, api)
    if api == "chat":
        assert items[0]["reasoning_content"] == "Oslo needs the tool."
        assert items[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    elif api == "ollama":
        assert items[0]["thinking"] == "Oslo needs the tool."
    else:
        assert items[0] == {
            "type": "reasoning",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "Oslo needs the tool."}],
        }
        assert items[1]["type"] == "function_call"


@pytest.mark.parametrize("api", APIS)
def test_reasoning_not_sent_by_default(server: LocalServer, api: str) -> None:
    model = make(server, api)
    try:
        tool_loop(server, model)
    finally:
        model.close()
    raw = server.requests[-1].body.decode()
    assert "Oslo needs the tool." not in raw
    assert all(i.get("type") != "reasoning" for i in sent_assistant(server, api))


@pytest.mark.parametrize("api", APIS)
async def test_async_reasoning_blocks_sent_back(server: LocalServer, api: str) -> None:
    model = make(server, api, send_reasoning=True)
    history: list[BaseMessage] = [
        HumanMessage("2+2?"),
        AIMessage([{"type": "reasoning", "reasoning": "two and two"}, "4"]),
        HumanMessage("and 3+3?"),
    ]
    try:
        await model.ainvoke(history)
    finally:
        await model.aclose()
    raw = server.requests[-1].body.decode()
    assert "two and two" in raw
