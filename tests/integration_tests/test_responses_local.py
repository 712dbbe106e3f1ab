"""The Responses API (`api="responses"`) over HTTP against the local server.

`OpenAIBackend` sync and async, streamed and whole, in the three event shapes the server
renders (OpenAI's, vLLM's and llama.cpp's: docs/architecture.md); then `ChatMatric` and
`MatricLLM` on top.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from pydantic import BaseModel

from langchain_matric import ChatMatric, MatricLLM, errors
from langchain_matric.backends import (
    ChatMessage,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
    OllamaBackend,
    ToolCall,
    Usage,
)
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.testing import Fault, LocalServer, Reply, ToolCallSpec

from .conftest import generate, joined, stream

SHAPES = ["openai", "vllm", "llamacpp"]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def make(server: LocalServer, **kw: Any) -> OpenAIBackend:
    kw.setdefault("api", "responses")
    return OpenAIBackend(base_url=server.openai_base_url, model="test-model", **kw)


def final(deltas: list[GenerationDelta]) -> GenerationDelta:
    ends = [d for d in deltas if d.finish_reason is not None or d.usage is not None]
    assert len(ends) == 1
    assert ends[0] is deltas[-1]
    return ends[0]


def calls_of(deltas: list[GenerationDelta]) -> list[tuple[str | None, str | None, str]]:
    calls: dict[int, list[Any]] = {}
    for delta in deltas:
        for piece in delta.tool_call_deltas:
            entry = calls.setdefault(piece.index, [None, None, ""])
            entry[0] = entry[0] or piece.id
            entry[1] = entry[1] or piece.name
            entry[2] += piece.arguments
    return [tuple(calls[i]) for i in sorted(calls)]  # type: ignore[misc]


async def collect(backend: Any, sync: bool, prompt: str, into: list[GenerationDelta]) -> None:
    """Stream into `into`, so that what arrived before an error stays visible."""
    if sync:
        into.extend(backend.generate_stream(prompt))
    else:
        async for delta in backend.agenerate_stream(prompt):
            into.append(delta)  # noqa: PERF401 - what arrived before an error is kept


# -- the backend -----------------------------------------------------------------------


async def test_generate_plain(server, sync) -> None:
    with make(server) as backend:
        answer = await generate(backend, sync, "hello there")
    assert answer.text == "Echo: hello there"
    assert answer.finish_reason == "stop"
    assert answer.model == "test-model"
    assert answer.usage == Usage(2, 3, 5, reasoning_tokens=0, cached_tokens=0)
    sent = server.last_request
    assert sent.path == "/v1/responses"
    assert sent.json == {
        "model": "test-model",
        "input": [
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "hello there"}]}
        ],
        "store": False,
        "stream": False,
    }  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk_size", [None, 1])
async def test_stream(server, sync, shape, chunk_size) -> None:
    server.options.responses_shape = shape
    server.options.chunk_size = chunk_size
    with make(server) as backend:
        deltas = await stream(backend, sync, "one two three")
    assert joined(deltas) == "Echo: one two three"
    assert [d.model for d in deltas if d.model] == ["test-model"]
    end = final(deltas)
    assert end.finish_reason == "stop"
    assert end.usage is not None
    assert (end.usage.input_tokens, end.usage.output_tokens) == (3, 4)
    assert server.last_request.json["stream"] is True


@pytest.mark.parametrize(("line_ending", "ping_every"), [("\r\n", 0), ("\r", 2), ("\n", 1)])
async def test_stream_wire_controls(server, sync, line_ending, ping_every) -> None:
    server.options.line_ending = line_ending
    server.options.ping_every = ping_every
    server.options.chunk_size = 7
    with make(server) as backend:
        deltas = await stream(backend, sync, "one two three")
    assert joined(deltas) == "Echo: one two three"
    assert final(deltas).finish_reason == "stop"


def test_backend_api_choice_and_request_override(server) -> None:
    with make(server, api="chat") as backend:
        backend.generate("a")
        assert server.last_request.path == "/v1/chat/completions"
        backend.generate(GenerationRequest(messages=[ChatMessage("user", "a")], api="responses"))
        assert server.last_request.path == "/v1/responses"
    with make(server) as backend:
        backend.generate(GenerationRequest(messages=[ChatMessage("user", "a")], api="chat"))
        assert server.last_request.path == "/v1/chat/completions"
        backend.generate(GenerationRequest(prompt="raw"))  # a prompt: /completions
        assert server.last_request.path == "/v1/completions"
    with pytest.raises(errors.ConfigurationError, match="'chat'.*'responses'"):
        make(server, api="completions")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("streamed", [True, False])
async def test_tool_call_round_trip(server, sync, shape, streamed) -> None:
    server.options.responses_shape = shape
    request = GenerationRequest(
        messages=[ChatMessage("user", "What is the weather in Oslo?")],
        tools=[WEATHER_TOOL],
        tool_choice="get_weather",
    )
    with make(server) as backend:
        if streamed:
            deltas = await stream(backend, sync, request)
            calls = [ToolCall(i or "", n or "", a) for i, n, a in calls_of(deltas)]
            finish = final(deltas).finish_reason
        else:
            answer = await generate(backend, sync, request)
            calls, finish = answer.tool_calls, answer.finish_reason
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("get_weather", {"city": "Oslo"})
        ]
        assert calls[0].id == "call_0"  # the call_id, in every shape
        assert finish == "tool_calls"
        sent = server.last_request.json
        assert sent["tools"] == [
            {"type": "function", "name": "get_weather", "description": "Weather in a city.",
             "parameters": WEATHER_TOOL["function"]["parameters"]}
        ]  # fmt: skip
        assert sent["tool_choice"] == {"type": "function", "name": "get_weather"}
        follow_up = GenerationRequest(
            messages=[
                *request.messages,
                ChatMessage("assistant", "", tool_calls=calls),
                ChatMessage("tool", "sunny", tool_call_id=calls[0].id),
            ],
            tools=[WEATHER_TOOL],
        )
        answer = await generate(backend, sync, follow_up)
    assert answer.text == "Result: sunny"
    assert answer.finish_reason == "stop"
    items = server.last_request.json["input"]
    assert [item["type"] for item in items] == ["message", "function_call", "function_call_output"]
    assert items[1]["call_id"] == items[2]["call_id"] == "call_0"
    assert items[2]["output"] == "sunny"


async def test_structured_output(server, sync) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    request = GenerationRequest(
        messages=[ChatMessage("user", "Meet Ann, who is 31.")],
        response_format={"type": "json_schema", "json_schema": {"name": "P", "schema": schema}},
    )
    with make(server) as backend:
        whole = await generate(backend, sync, request)
        streamed = joined(await stream(backend, sync, request))
    assert json.loads(whole.text) == json.loads(streamed) == {"name": "Ann", "age": 31}
    assert server.last_request.json["text"] == {
        "format": {"type": "json_schema", "name": "P", "schema": schema}
    }


@pytest.mark.parametrize("shape", SHAPES)
async def test_reasoning_when_asked(server, sync, shape) -> None:
    server.options.responses_shape = shape
    options = GenerationOptions(extra={"reasoning_effort": "low"})
    request = GenerationRequest.from_prompt("why", options=options)
    with make(server) as backend:
        whole = await generate(backend, sync, request)
        deltas = await stream(backend, sync, request)
    assert whole.reasoning == "".join(d.reasoning for d in deltas) == "Reasoning about: why"
    assert whole.usage is not None
    assert whole.usage.reasoning_tokens == 3
    assert server.last_request.json["reasoning"] == {"effort": "low"}


async def test_usage_reports_cached_prompt_tokens(server, sync) -> None:
    long = "a shared preamble of several words, then the question"
    with make(server) as backend:
        first = await generate(backend, sync, long + " one")
        second = final(await stream(backend, sync, long + " two"))
        server.script(Reply(text="ok", usage=(9, 1), cached_tokens=7))
        scripted = await generate(backend, sync, "anything")
    assert first.usage is not None
    assert first.usage.cached_tokens == 0
    assert second.usage is not None
    assert second.usage.cached_tokens == len(long.split())
    assert scripted.usage == Usage(9, 1, reasoning_tokens=0, cached_tokens=7)


@pytest.mark.parametrize(
    ("shape", "finish"), [("openai", "length"), ("vllm", "length"), ("llamacpp", "stop")]
)
async def test_length_finish_from_the_terminal_status(server, sync, shape, finish) -> None:
    # OpenAI: response.incomplete; vLLM: status "incomplete" inside response.completed;
    # llama.cpp reports every stop as completed.
    server.options.responses_shape = shape
    request = GenerationRequest.from_prompt(
        "one two three four", options=GenerationOptions(max_tokens=2)
    )
    with make(server) as backend:
        deltas = await stream(backend, sync, request)
        whole = await generate(backend, sync, request)
    assert joined(deltas) == whole.text == "Echo: one"
    assert final(deltas).finish_reason == whole.finish_reason == finish
    assert server.last_request.json["max_output_tokens"] == 2


async def test_stop_and_seed_are_not_sent(server, sync) -> None:
    options = GenerationOptions(stop=["three"], seed=4, temperature=0.5)
    with make(server) as backend:
        await generate(backend, sync, GenerationRequest.from_prompt("one two", options=options))
    sent = server.last_request.json
    assert "stop" not in sent
    assert "seed" not in sent
    assert sent["temperature"] == 0.5


@pytest.mark.parametrize("style", [None, "event", "llamacpp", "vllm"])
@pytest.mark.parametrize("shape", SHAPES)
async def test_in_stream_errors_are_typed_with_partial(server, sync, style, shape) -> None:
    server.options.responses_shape = shape
    server.fault(Fault.stream_error(style=style, after=5, message="kaboom", path="/v1/responses"))
    received: list[GenerationDelta] = []
    with make(server, max_retries=3) as backend, pytest.raises(errors.BackendHTTPError) as info:
        await collect(backend, sync, "one two three four five", received)
    assert "kaboom" in str(info.value)
    assert info.value.partial == joined(received) == "Echo: one"
    assert len(server.requests) == 1  # never retried after data


async def test_truncated_and_dropped_streams(server, sync) -> None:
    server.fault(Fault.no_terminator(path="/v1/responses"))
    with make(server) as backend, pytest.raises(errors.StreamError, match="truncated") as info:
        await stream(backend, sync, "one two")
    assert info.value.partial == "Echo: one two"
    server.fault(Fault.drop(after=5, path="/v1/responses"))
    with make(server) as backend, pytest.raises(errors.MatricError) as dropped:
        await stream(backend, sync, "one two three")
    assert dropped.value.partial == "Echo: one"


async def test_a_stream_answered_with_plain_json(server, sync) -> None:
    server.fault(Fault.non_streaming(path="/v1/responses"))
    with make(server) as backend:
        deltas = await stream(backend, sync, "one two")
    assert joined(deltas) == "Echo: one two"
    assert final(deltas).finish_reason == "stop"


@pytest.mark.parametrize("streamed", [True, False])
async def test_a_server_without_responses_hints_api_chat(server, sync, streamed) -> None:
    server.fault(Fault(status=404, path="/v1/responses"))
    call = stream if streamed else generate
    with make(server) as backend, pytest.raises(errors.BackendHTTPError) as info:
        await call(backend, sync, "hi")
    assert info.value.status == 404
    assert "api='chat'" in str(info.value)


async def test_n_above_one_is_refused_before_any_request(server, sync) -> None:
    request = GenerationRequest.from_prompt("hi", options=GenerationOptions(extra={"n": 2}))
    with make(server) as backend, pytest.raises(errors.ConfigurationError, match="n=2"):
        await generate(backend, sync, request)
    assert server.requests == []


async def test_azure_with_responses_is_refused_before_any_request(server, sync) -> None:
    backend = OpenAIBackend(azure_endpoint=server.url, api_key="k", model="m", api="responses")
    with backend, pytest.raises(errors.ConfigurationError, match="azure_endpoint"):
        await generate(backend, sync, "hi")
    assert server.requests == []


async def test_previous_response_id_and_store_are_opt_in(server, sync) -> None:
    options = GenerationOptions(extra={"store": True, "previous_response_id": "resp_1"})
    with make(server) as backend:
        await generate(backend, sync, GenerationRequest.from_prompt("more", options=options))
    sent = server.last_request.json
    assert (sent["store"], sent["previous_response_id"]) == (True, "resp_1")


# -- LangChain classes -----------------------------------------------------------------


def get_weather(city: str) -> str:
    """Return the weather for a city."""
    return f"Sunny in {city}."


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture
def chat(server: LocalServer) -> Any:
    model = ChatMatric(
        backend="openai", base_url=server.openai_base_url, model="test-model", api="responses"
    )
    yield model
    model.close()


def merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    return whole


def test_chat_invoke_and_stream(server, chat) -> None:
    reply = chat.invoke("Tell me a joke")
    assert reply.content == "Echo: Tell me a joke"
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata["input_token_details"] == {"cache_read": 0}
    chunks = list(chat.stream("Tell me a joke"))
    whole = merged(chunks)
    assert whole.content == "Echo: Tell me a joke"
    assert whole.response_metadata["finish_reason"] == "stop"
    assert whole.usage_metadata["input_token_details"] == {"cache_read": 3}  # same prompt again
    assert all(r.path == "/v1/responses" for r in server.requests)


async def test_chat_astream_and_ainvoke(chat) -> None:
    chunks = [chunk async for chunk in chat.astream("one two")]
    assert merged(chunks).content == "Echo: one two"
    assert (await chat.ainvoke("three")).content == "Echo: three"


def test_chat_tools_round_trip(server, chat) -> None:
    bound = chat.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Oslo?")
    reply = bound.invoke([question])
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    streamed = merged(list(bound.stream([question])))
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    call = reply.tool_calls[0]
    result = ToolMessage(get_weather.__call__(**call["args"]), tool_call_id=call["id"])
    answer = bound.invoke([question, reply, result])
    assert answer.content == "Result: Sunny in Oslo."
    types = [item["type"] for item in server.last_request.json["input"]]
    assert types == ["message", "function_call", "function_call_output"]


def test_chat_forced_tool_choice(server, chat) -> None:
    chat.bind_tools([get_weather], tool_choice="any").invoke("hello")
    assert server.last_request.json["tool_choice"] == "required"


def test_chat_structured_output(server, chat) -> None:
    assert chat.with_structured_output(Person).invoke("Meet Ann, who is 31.") == Person(
        name="Ann", age=31
    )
    assert server.last_request.json["text"]["format"]["type"] == "json_schema"
    json_mode = chat.with_structured_output(None, method="json_mode")
    assert json_mode.invoke("say 'hi'") == {"hi": "say 'hi'"}
    assert server.last_request.json["text"] == {"format": {"type": "json_object"}}


def test_chat_reasoning_in_additional_kwargs_and_blocks(chat) -> None:
    reply = chat.invoke("why", reasoning_effort="low")
    assert reply.additional_kwargs["reasoning_content"] == "Reasoning about: why"
    assert {"type": "reasoning", "reasoning": "Reasoning about: why"}.items() <= next(
        b for b in reply.content_blocks if b["type"] == "reasoning"
    ).items()
    assert reply.usage_metadata["output_token_details"] == {"reasoning": 3}
    streamed = merged(list(chat.stream("why", reasoning_effort="low")))
    assert streamed.additional_kwargs["reasoning_content"] == "Reasoning about: why"


def test_chat_stop_is_enforced_client_side(server, chat) -> None:
    assert chat.invoke("one two three", stop=["two"]).content == "Echo: one "
    assert "stop" not in server.last_request.json
    assert merged(list(chat.stream("one two three", stop=["two"]))).content == "Echo: one "


def test_chat_stream_error_keeps_partial(server, chat) -> None:
    server.fault(Fault.stream_error(style="event", after=5, message="kaboom"))
    received: list[AIMessageChunk] = []
    with pytest.raises(errors.BackendHTTPError, match="kaboom") as info:
        received.extend(chat.stream("one two three four"))
    assert info.value.partial == "".join(c.text for c in received) == "Echo: one"


def test_chat_api_follows_a_backend_instance_unless_given(server) -> None:
    with make(server) as backend:
        ChatMatric(backend=backend).invoke("a")
        assert server.last_request.path == "/v1/responses"
        ChatMatric(backend=backend, api="chat").invoke("a")
        assert server.last_request.path == "/v1/chat/completions"
    with make(server, api="chat") as backend:
        ChatMatric(backend=backend, api="responses").invoke("a")
        assert server.last_request.path == "/v1/responses"


def test_chat_responses_needs_the_openai_backend(server) -> None:
    chat = ChatMatric(backend="ollama", base_url=server.ollama_base_url, api="responses")
    with pytest.raises(errors.ConfigurationError, match="backend='openai'"):
        chat.invoke("a")
    assert server.requests == []
    chat.close()


async def test_ollama_backend_refuses_a_responses_request(server, sync) -> None:
    request = GenerationRequest(messages=[ChatMessage("user", "a")], api="responses")
    with OllamaBackend(base_url=server.ollama_base_url, model="m") as backend:
        with pytest.raises(errors.ConfigurationError, match="/v1"):
            await generate(backend, sync, request)
        with pytest.raises(errors.ConfigurationError, match="/v1"):
            await stream(backend, sync, request)
    assert server.requests == []


def test_chat_previous_response_id_per_call(server, chat) -> None:
    first = chat.invoke("hello")
    first_id = first.response_metadata["id"]
    assert first_id.startswith("resp_")  # the server's response id
    chat.invoke([HumanMessage("more")], previous_response_id=first_id)
    assert server.last_request.json["previous_response_id"] == first_id


def test_llm_on_the_responses_api(server) -> None:
    llm = MatricLLM(
        backend="openai", base_url=server.openai_base_url, model="test-model", api="responses"
    )
    try:
        assert llm.invoke("one two") == "Echo: one two"
        assert "".join(llm.stream("one two")) == "Echo: one two"
        result = llm.generate(["a b c"])
        info = result.generations[0][0].generation_info
        assert info is not None
        assert info["finish_reason"] == "stop"
        assert info["usage"]["cached_tokens"] == 0
    finally:
        llm.close()
    assert {r.path for r in server.requests} == {"/v1/responses"}
    assert server.last_request.json["input"][0]["content"] == [
        {"type": "input_text", "text": "a b c"}
    ]


async def test_llm_astream_on_the_responses_api(server) -> None:
    llm = MatricLLM(
        backend="openai", base_url=server.openai_base_url, model="test-model", api="responses"
    )
    try:
        assert "".join([t async for t in llm.astream("one two")]) == "Echo: one two"
        assert await llm.ainvoke("x") == "Echo: x"
    finally:
        await llm.aclose()
    assert server.last_request.path == "/v1/responses"


def test_tool_call_ids_from_a_scripted_reply(server, chat) -> None:
    server.options.responses_shape = "llamacpp"
    server.script(Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Rome"}, id="fc_x")]))
    chunks = list(chat.bind_tools([get_weather]).stream("weather?"))
    whole = merged(chunks)
    assert [(c["id"], c["args"]) for c in whole.tool_calls] == [("fc_x", {"city": "Rome"})]
