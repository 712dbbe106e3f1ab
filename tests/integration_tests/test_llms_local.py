"""`MatricLLM` and `ChatMatric` over HTTP against the local server, both protocols.

The LLM has no langchain-tests suite: this is its integration counterpart (invoke,
stream, completions API, stop enforced client-side with the connection closed, batch,
async, LCEL), plus chat paths the standard suite does not pin down (reasoning, a
tool round trip, repeated tool-call ids, stream events, two `asyncio.run` calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.tools import tool

from langchain_matric.chat_models import ChatMatric
from langchain_matric.llms import MatricLLM
from langchain_matric.testing import LocalServer, Reply, ToolCallSpec

BACKENDS = ["openai", "ollama"]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as local:
        yield local


@pytest.fixture(autouse=True)
def _fresh(server: LocalServer) -> None:
    server.clear()


def _params(server: LocalServer, backend: str) -> dict[str, Any]:
    if backend == "openai":
        return {
            "backend": "openai",
            "base_url": server.openai_base_url,
            "api_key": "k",
            "model": "test-model",
        }
    return {"backend": "ollama", "base_url": server.ollama_base_url, "model": "test-model"}


@pytest.fixture(params=BACKENDS)
def llm(request: pytest.FixtureRequest, server: LocalServer) -> Iterator[MatricLLM]:
    model = MatricLLM(**_params(server, request.param))
    yield model
    model.close()


@pytest.fixture(params=BACKENDS)
def chat(request: pytest.FixtureRequest, server: LocalServer) -> Iterator[ChatMatric]:
    model = ChatMatric(**_params(server, request.param))
    yield model
    model.close()


def test_invoke_and_metadata(llm: MatricLLM) -> None:
    result = llm.generate(["hello there"])
    generation = result.generations[0][0]
    assert generation.text == "Echo: hello there"
    assert generation.generation_info["finish_reason"] == "stop"
    assert generation.generation_info["usage"]["output_tokens"] > 0
    assert result.llm_output["token_usage"]["total_tokens"] > 0


def test_stream_token_by_token(llm: MatricLLM) -> None:
    pieces = list(llm.stream("one two three four"))
    assert "".join(pieces) == "Echo: one two three four"
    assert len(pieces) >= 5


def test_completions_api(server: LocalServer, llm: MatricLLM) -> None:
    completions = llm.model_copy(update={"api": "completions"})
    assert completions.invoke("abc") == "Echo: abc"
    path = server.requests[-1].path
    assert path.endswith(("/completions", "/api/generate"))
    assert not path.endswith("/chat/completions")


def test_stop_sent_to_the_server(server: LocalServer, llm: MatricLLM) -> None:
    assert llm.invoke("alpha beta gamma", stop=["gamma"]).rstrip() == "Echo: alpha beta"
    body = server.requests[-1].json
    sent = body.get("stop") or body.get("options", {}).get("stop")
    assert sent == ["gamma"]


def test_stop_enforced_client_side_closes_the_connection(
    server: LocalServer, llm: MatricLLM
) -> None:
    # Scripted replies ignore `stop`, like a server that does not support it.
    words = [f"w{i} " for i in range(200)]
    # 10 ms per event: the client leaves while the server is still writing.
    server.script(Reply(text=[*words[:5], "STOP ", *words[5:]], delay=0.01))
    before = server.disconnects
    pieces = list(llm.stream("go", stop=["STOP"]))
    assert "".join(pieces) == "".join(words[:5])
    assert server.wait_for_disconnect(timeout=10, count=before + 1)


def test_batch_and_lcel_chain(llm: MatricLLM) -> None:
    chain = PromptTemplate.from_template("about {x}") | llm | StrOutputParser()
    assert chain.batch([{"x": "a"}, {"x": "b"}, {"x": "c"}]) == [
        "Echo: about a",
        "Echo: about b",
        "Echo: about c",
    ]
    assert "".join(chain.stream({"x": "owls"})) == "Echo: about owls"


async def test_async_paths(llm: MatricLLM) -> None:
    assert await llm.ainvoke("hi") == "Echo: hi"
    assert "".join([p async for p in llm.astream("hi you")]) == "Echo: hi you"
    assert await llm.abatch(["a", "b"]) == ["Echo: a", "Echo: b"]


def test_same_llm_under_two_asyncio_runs(llm: MatricLLM) -> None:
    async def once(prompt: str) -> str:
        streamed = "".join([p async for p in llm.astream(prompt)])
        assert streamed == await llm.ainvoke(prompt)
        return streamed

    assert asyncio.run(once("first")) == "Echo: first"
    assert asyncio.run(once("second")) == "Echo: second"


def test_chat_reasoning_in_invoke_and_stream(server: LocalServer, chat: ChatMatric) -> None:
    reply = Reply(text="Paris.", reasoning="The capital of France is Paris.", usage=(12, 3))
    server.script(reply, reply)
    message = chat.invoke("capital?")
    assert message.additional_kwargs["reasoning_content"] == "The capital of France is Paris."
    merged: AIMessageChunk | None = None
    for chunk in chat.stream("capital?"):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert merged.content == "Paris."
    assert merged.additional_kwargs["reasoning_content"] == "The capital of France is Paris."
    assert merged.content_blocks[0]["type"] == "reasoning"
    usage = merged.usage_metadata
    assert usage is not None
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (12, 3, 15)
    assert usage == message.usage_metadata
    assert merged.response_metadata["model_provider"] == "matric"
    assert merged.response_metadata["matric_backend"] == chat.backend


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


def test_chat_tool_round_trip(chat: ChatMatric) -> None:
    bound = chat.bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("What is the weather? use get_weather")]
    first = bound.invoke(messages)
    assert [tc["name"] for tc in first.tool_calls] == ["get_weather"]
    messages.append(first)
    messages.extend(
        ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
        for call in first.tool_calls
    )
    final = bound.invoke(messages)
    assert not final.tool_calls
    assert "sunny" in str(final.content)


def test_streamed_tool_calls_name_once_even_when_repeated(
    server: LocalServer, chat: ChatMatric
) -> None:
    server.script(
        Reply(
            tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"}, id="call_a")],
            repeat_tool_call_ids=True,
        )
    )
    chunks = list(chat.bind_tools([get_weather]).stream("weather"))
    named = [tc for c in chunks for tc in c.tool_call_chunks if tc["name"]]
    assert len(named) == 1
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.tool_calls == [
        {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_a", "type": "tool_call"}
    ]
    assert merged.response_metadata["finish_reason"] == "tool_calls"


async def test_chat_astream_events_and_two_loops(chat: ChatMatric) -> None:
    events = [e async for e in chat.astream_events("a b c", version="v2")]
    tokens = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert "".join(tokens) == "Echo: a b c"


def test_same_chat_under_two_asyncio_runs(chat: ChatMatric) -> None:
    async def once(q: str) -> str:
        return str((await chat.ainvoke(q)).content)

    assert asyncio.run(once("x")) == "Echo: x"
    assert asyncio.run(once("y")) == "Echo: y"
