"""Reasoning sent back (opt-in): `to_chat_messages(reasoning=True)` and each API's payload."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

from langchain_matric import ChatMatric
from langchain_matric._messages import reasoning_of, to_chat_messages
from langchain_matric.backends import (
    ChatMessage,
    GenerationRequest,
    ToolCall,
    _ollama_wire,
    _openai_wire,
    _responses_wire,
)

CALL = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
TURN = ChatMessage("assistant", "", tool_calls=[CALL], reasoning="needs the tool")
REQUEST = GenerationRequest(
    messages=[
        ChatMessage("user", "Weather?"),
        TURN,
        ChatMessage("tool", "sunny", tool_call_id="call_1"),
    ]
)


def test_field_defaults_off() -> None:
    assert ChatMatric(backend="openai", base_url="http://127.0.0.1:9/v1").send_reasoning is False


def test_reasoning_kept_only_when_asked() -> None:
    ai = AIMessage("4", additional_kwargs={"reasoning_content": "2+2"})
    assert to_chat_messages([HumanMessage("2+2?"), ai])[1].reasoning is None
    assert to_chat_messages([HumanMessage("2+2?"), ai], reasoning=True)[1].reasoning == "2+2"


def test_reasoning_from_blocks() -> None:
    blocks = AIMessage(
        [{"type": "thinking", "thinking": "a"}, {"type": "reasoning", "reasoning": "b"}, "x"]
    )
    assert reasoning_of(blocks) == "ab"
    assert to_chat_messages([blocks], reasoning=True)[0].content == "x"
    assert reasoning_of(AIMessage([{"type": "text", "text": "x"}])) is None


def test_chat_api_payload() -> None:
    body = _openai_wire.chat_payload(REQUEST, model="m", stream=False)
    assistant = body["messages"][1]
    assert assistant["reasoning_content"] == "needs the tool"
    assert assistant["tool_calls"][0]["id"] == "call_1"
    assert "reasoning_content" not in body["messages"][0]


def test_ollama_payload() -> None:
    body = _ollama_wire.chat_payload(REQUEST, model="m", stream=False)
    assert body["messages"][1]["thinking"] == "needs the tool"
    assert "thinking" not in body["messages"][0]


def test_responses_payload_puts_reasoning_before_the_turn() -> None:
    body = _responses_wire.responses_payload(REQUEST, model="m", stream=False)
    kinds = [item["type"] for item in body["input"]]
    assert kinds == ["message", "reasoning", "function_call", "function_call_output"]
    assert body["input"][1]["content"] == [{"type": "reasoning_text", "text": "needs the tool"}]
    assert body["input"][1]["summary"] == []


def test_nothing_extra_without_reasoning() -> None:
    plain = GenerationRequest(messages=[ChatMessage("assistant", "hi")])
    assert _openai_wire.chat_payload(plain, model="m", stream=False)["messages"] == [
        {"role": "assistant", "content": "hi"}
    ]
    assert (
        "thinking" not in _ollama_wire.chat_payload(plain, model="m", stream=False)["messages"][0]
    )
    assert [
        i["type"]
        for i in _responses_wire.responses_payload(plain, model="m", stream=False)["input"]
    ] == ["message"]
