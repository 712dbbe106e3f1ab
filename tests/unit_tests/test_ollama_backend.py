"""`OllamaBackend` against the loopback server: every operation, sync and async."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from langchain_matric._http import Timeouts
from langchain_matric.backends import (
    ChatMessage,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
    InferenceBackend,
    StreamingGeneration,
    ToolCall,
    Usage,
)
from langchain_matric.backends._types import Generation
from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.errors import (
    BackendConnectionError,
    BackendHTTPError,
    ConfigurationError,
    ContextLengthExceededError,
    EmbeddingDimensionError,
    ModelNotFoundError,
    StreamError,
)
from langchain_matric.testing import Fault, LocalServer, Reply, ToolCallSpec

DIM = 16
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer(embedding_dim=DIM) as server:
        yield server


def _backend(server: LocalServer, **kw: Any) -> OllamaBackend:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeouts", Timeouts(connect=10, first_byte=30, idle=30))
    return OllamaBackend(server.ollama_base_url, model="test-model", embed_model="test-embed", **kw)


@pytest.fixture
async def backend(server: LocalServer) -> AsyncIterator[OllamaBackend]:
    backend = _backend(server, embed_dimension=DIM)
    yield backend
    await backend.aclose()


@pytest.fixture(params=["sync", "async"])
def sync(request: pytest.FixtureRequest) -> bool:
    return request.param == "sync"


async def generate(backend: OllamaBackend, sync: bool, request: Any) -> Generation:
    if sync:
        return backend.generate(request)
    return await backend.agenerate(request)


async def stream(backend: OllamaBackend, sync: bool, request: Any) -> list[GenerationDelta]:
    if sync:
        return list(backend.generate_stream(request))
    return [delta async for delta in backend.agenerate_stream(request)]


async def embed(backend: OllamaBackend, sync: bool, texts: list[str]) -> list[list[float]]:
    if sync:
        return backend.embed_texts(texts)
    return await backend.aembed_texts(texts)


def _joined(deltas: list[GenerationDelta]) -> str:
    return "".join(d.text for d in deltas)


def _check_stream_shape(deltas: list[GenerationDelta]) -> None:
    assert sum(d.usage is not None for d in deltas) == 1
    assert sum(d.finish_reason is not None for d in deltas) == 1
    assert deltas[-1].usage is not None
    assert deltas[-1].finish_reason is not None
    assert deltas[0].model == "test-model"
    assert all(d.model is None for d in deltas[1:])


# ---------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------


async def test_protocols_and_repr() -> None:
    backend = OllamaBackend(api_key="sk-secret-value", headers={"X-Team": "a"})
    assert isinstance(backend, InferenceBackend)
    assert isinstance(backend, StreamingGeneration)
    assert backend.supports_streaming is True
    assert backend.model_name == "gpt-oss:20b"
    assert backend.embed_model == "nomic-embed-text"
    assert backend.dimension is None
    assert repr(backend) == "OllamaBackend(base_url='http://127.0.0.1:11434', model='gpt-oss:20b')"
    assert "secret" not in repr(backend)
    assert OllamaBackend(streaming=False).supports_streaming is False


@pytest.mark.parametrize(
    ("given", "expected"),
    [("127.0.0.1:11434", "http://127.0.0.1:11434"), ("http://h:1/", "http://h:1")],
)
def test_base_url_normalised(given: str, expected: str) -> None:
    assert OllamaBackend(given).base_url == expected


@pytest.mark.parametrize("url", ["http://127.0.0.1:11434/v1", "http://h/api/"])
def test_base_url_with_api_suffix_raises(url: str) -> None:
    with pytest.raises(ConfigurationError, match="server root"):
        OllamaBackend(url)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"model": ""}, "model"),
        ({"num_ctx": 0}, "num_ctx"),
        ({"embed_dimension": -1}, "embed_dimension"),
        ({"think": "extreme"}, "think"),
    ],
)
def test_bad_arguments_raise(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        OllamaBackend(**kw)


# ---------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------


async def test_generate(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    gen = await generate(backend, sync, "hello world")
    assert gen.text == "Echo: hello world"
    assert gen.finish_reason == "stop"
    assert gen.usage == Usage(2, 3)
    assert gen.model == "test-model"
    sent = server.last_request
    assert sent.path == "/api/chat"
    assert sent.json == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "hello world"}],
        "stream": False,
        "truncate": False,
        "shift": False,
    }


async def test_generate_prompt_uses_api_generate(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    gen = await generate(backend, sync, GenerationRequest(prompt="two words"))
    assert gen.text == "Echo: two words"
    assert server.last_request.path == "/api/generate"
    assert server.last_request.json["prompt"] == "two words"
    deltas = await stream(backend, sync, GenerationRequest(prompt="two words"))
    assert _joined(deltas) == "Echo: two words"
    _check_stream_shape(deltas)


async def test_backend_switches_and_thinking(server: LocalServer, sync: bool) -> None:
    backend = _backend(server, keep_alive="10m", num_ctx=4096, think=True, truncate=True)
    try:
        options = GenerationOptions(max_tokens=2, temperature=0.0, stop=["zzz"], seed=1)
        gen = await generate(backend, sync, GenerationRequest.from_prompt("a b c", options=options))
        body = server.last_request.json
        assert body["keep_alive"] == "10m"
        assert body["think"] is True
        assert body["truncate"] is True
        assert body["shift"] is True
        assert body["options"] == {
            "num_predict": 2,
            "temperature": 0.0,
            "stop": ["zzz"],
            "seed": 1,
            "num_ctx": 4096,
        }
        assert gen.reasoning is not None
        assert gen.reasoning.startswith("Reasoning about")
        assert gen.finish_reason == "length"
        deltas = await stream(backend, sync, "think about it")
        assert "".join(d.reasoning for d in deltas).startswith("Reasoning about")
        assert _joined(deltas) == "Echo: think about it"
    finally:
        await backend.aclose()


async def test_stream(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    deltas = await stream(backend, sync, "hello there world")
    assert [d.text for d in deltas[:-1]] == ["Echo:", " hello", " there", " world"]
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage == Usage(3, 4)
    _check_stream_shape(deltas)
    assert server.last_request.json["stream"] is True


@pytest.mark.parametrize("chunk_size", [1, 3])
async def test_stream_in_tiny_chunks(
    server: LocalServer, backend: OllamaBackend, sync: bool, chunk_size: int
) -> None:
    server.options.chunk_size = chunk_size
    server.options.line_ending = "\r\n"
    server.options.ping_every = 2
    server.script(Reply(text=["Hé", "llo ☃", " wörld"], reasoning=["hm", "m"], usage=(5, 3)))
    deltas = await stream(backend, sync, "x")
    assert _joined(deltas) == "Héllo ☃ wörld"
    assert "".join(d.reasoning for d in deltas) == "hmm"
    assert deltas[-1].usage == Usage(5, 3)
    _check_stream_shape(deltas)


async def test_scripted_tool_calls(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    calls = [
        ToolCallSpec("get_weather", {"city": "Oslo"}, id="call_a"),
        ToolCallSpec("get_time", {}, id="call_b"),
    ]
    server.script(Reply(tool_calls=calls, usage=(9, 4)), Reply(tool_calls=calls))
    deltas = await stream(backend, sync, "x")
    pieces = [c for d in deltas for c in d.tool_call_deltas]
    assert [(c.index, c.id, c.name) for c in pieces] == [
        (0, "call_a", "get_weather"),
        (1, "call_b", "get_time"),
    ]
    assert json.loads(pieces[0].arguments) == {"city": "Oslo"}
    assert deltas[-1].finish_reason == "tool_calls"
    _check_stream_shape(deltas)
    gen = await generate(backend, sync, "x")
    assert gen.tool_calls == [
        ToolCall("call_a", "get_weather", '{"city": "Oslo"}'),
        ToolCall("call_b", "get_time", "{}"),
    ]
    assert gen.finish_reason == "tool_calls"


async def test_tool_call_ids_made_when_missing(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    server.options.ollama_tool_call_ids = False
    server.script(Reply(tool_calls=[ToolCallSpec("f"), ToolCallSpec("g")]))
    gen = await generate(backend, sync, "x")
    ids = [c.id for c in gen.tool_calls]
    assert all(i.startswith("call_") for i in ids)
    assert len(set(ids)) == 2


async def test_tool_round_trip(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    request = GenerationRequest(
        messages=[ChatMessage("user", "Weather in Oslo?")], tools=[WEATHER_TOOL]
    )
    gen = await generate(backend, sync, request)
    assert gen.finish_reason == "tool_calls"
    (call,) = gen.tool_calls
    assert call.name == "get_weather"
    assert json.loads(call.arguments)["city"]
    assert server.last_request.json["tools"] == [WEATHER_TOOL]
    follow_up = GenerationRequest(
        messages=[
            ChatMessage("user", "Weather in Oslo?"),
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", "5 C and rain", tool_call_id=call.id),
        ],
        tools=[WEATHER_TOOL],
    )
    deltas = await stream(backend, sync, follow_up)
    assert "5 C and rain" in _joined(deltas)
    sent = server.last_request.json["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == json.loads(call.arguments)
    assert sent[2] == {
        "role": "tool",
        "content": "5 C and rain",
        "tool_name": "get_weather",
        "tool_call_id": call.id,
    }


async def test_forced_tool_choice_raises_before_sending(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    request = GenerationRequest(
        messages=[ChatMessage("user", "x")], tools=[WEATHER_TOOL], tool_choice="required"
    )
    with pytest.raises(ConfigurationError, match="tool_choice"):
        await generate(backend, sync, request)
    with pytest.raises(ConfigurationError, match="tool_choice"):
        await stream(backend, sync, request)
    assert server.requests == []


async def test_json_schema_format(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "s": {"type": "string"}},
        "required": ["n", "s"],
    }
    request = GenerationRequest(
        messages=[ChatMessage("user", "give json")],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    gen = await generate(backend, sync, request)
    assert server.last_request.json["format"] == schema
    assert set(json.loads(gen.text)) == {"n", "s"}


async def test_image_sent_as_raw_base64(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    request = GenerationRequest(
        messages=[ChatMessage("user", "what is it?", images=["data:image/png;base64,iVBORw0K"])]
    )
    await generate(backend, sync, request)
    assert server.last_request.json["messages"][0]["images"] == ["iVBORw0K"]


# ---------------------------------------------------------------------------------------
# Stream failures
# ---------------------------------------------------------------------------------------


async def test_error_line_mid_stream(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    server.script(Reply(text=["one", " two", " three"]))
    server.fault(Fault.stream_error(after=2, message="runner crashed"))
    with pytest.raises(StreamError, match="runner crashed") as info:
        await stream(backend, sync, "x")
    assert info.value.partial == "one two"


async def test_context_error_line_mid_stream(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    server.script(Reply(text=["one", " two"]))
    message = "the input length exceeds the context length"
    server.fault(Fault.stream_error(after=1, message=message))
    with pytest.raises(ContextLengthExceededError) as info:
        await stream(backend, sync, "x")
    assert info.value.partial == "one"
    assert info.value.status == 200


@pytest.mark.parametrize(
    "fault", [Fault.end_early(after=2), Fault.no_terminator()], ids=["end_early", "no_done"]
)
async def test_end_without_done(
    server: LocalServer, backend: OllamaBackend, sync: bool, fault: Fault
) -> None:
    server.script(Reply(text=["one", " two", " three"]))
    server.fault(fault)
    with pytest.raises(StreamError, match="before done: true") as info:
        await stream(backend, sync, "x")
    assert info.value.partial.startswith("one two")


async def test_dropped_connection(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    server.script(Reply(text=["one", " two", " three"]))
    server.fault(Fault.drop(after=2))
    with pytest.raises(StreamError) as info:
        await stream(backend, sync, "x")
    assert info.value.partial == "one two"


async def test_invalid_json_line(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    server.script(Reply(text=["one", " two"]))
    server.fault(Fault.invalid_json(after=1))
    with pytest.raises(StreamError) as info:
        await stream(backend, sync, "x")
    assert info.value.partial == "one"


async def test_empty_stream_body(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    server.fault(Fault.empty())
    with pytest.raises(StreamError, match="before done: true"):
        await stream(backend, sync, "x")


async def test_huge_line(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    server.fault(Fault.huge_line(size=300_000, after=1))
    deltas = await stream(backend, sync, "a b")
    assert "x" * 300_000 in _joined(deltas)
    _check_stream_shape(deltas)


async def test_stream_answered_with_plain_json(server: LocalServer, sync: bool) -> None:
    backend = _backend(server)
    try:
        server.script(
            Reply(text="whole", reasoning="r", usage=(3, 1), tool_calls=[ToolCallSpec("f")])
        )
        server.fault(Fault.non_streaming())
        (delta,) = await stream(backend, sync, "x")
        assert (delta.text, delta.reasoning) == ("whole", "r")
        assert delta.finish_reason == "tool_calls"
        assert delta.usage == Usage(3, 1)
        assert delta.model == "test-model"
        assert [c.name for c in delta.tool_call_deltas] == ["f"]
        assert backend.supports_streaming is False  # the server ignores `stream`
    finally:
        await backend.aclose()


async def test_wrong_content_type(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    server.fault(Fault(status=200, body="<html>hi</html>", content_type="text/html", times=2))
    with pytest.raises(BackendHTTPError, match="text/html"):
        await stream(backend, sync, "x")
    with pytest.raises(BackendHTTPError):
        await generate(backend, sync, "x")


async def test_whole_answer_streamed_anyway(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    body = (
        b'{"model":"test-model","message":{"content":"a"},"done":false}\n'
        b'{"model":"test-model","message":{"content":"b"},"done":true,"eval_count":2}\n'
    )
    server.fault(Fault(status=200, body=body, content_type="application/x-ndjson"))
    gen = await generate(backend, sync, "x")
    assert (gen.text, gen.finish_reason, gen.usage) == ("ab", "stop", Usage(0, 2))


async def test_error_object_in_whole_answer(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    server.fault(Fault(status=200, body='{"error":"something broke"}'))
    with pytest.raises(BackendHTTPError, match="something broke") as info:
        await generate(backend, sync, "x")
    assert info.value.status == 200


async def test_context_overflow_status(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    server.options.context_chars = 10
    with pytest.raises(ContextLengthExceededError):
        await generate(backend, sync, "a prompt that is far too long")
    with pytest.raises(ContextLengthExceededError):
        await stream(backend, sync, "a prompt that is far too long")


async def test_model_not_found(server: LocalServer, sync: bool) -> None:
    server.options.strict_models = True
    backend = _backend(server)
    try:
        request = GenerationRequest.from_prompt("x")
        request.model = "llama9"
        with pytest.raises(ModelNotFoundError, match="llama9"):
            await generate(backend, sync, request)
        with pytest.raises(ModelNotFoundError, match="llama9"):
            await stream(backend, sync, request)
    finally:
        await backend.aclose()


async def test_early_exit_closes_the_stream(server: LocalServer, backend: OllamaBackend) -> None:
    server.script(Reply(text=[f"w{i} " for i in range(200)], delay=0.01))
    stream_iter = backend.generate_stream("x")
    assert next(stream_iter).text == "w0 "
    stream_iter.close()
    assert server.wait_for_disconnect(timeout=10)


async def test_async_early_exit_closes_the_stream(
    server: LocalServer, backend: OllamaBackend
) -> None:
    server.script(Reply(text=[f"w{i} " for i in range(200)], delay=0.01))
    agen = backend.agenerate_stream("x")
    assert (await agen.__anext__()).text == "w0 "
    await agen.aclose()  # type: ignore[attr-defined]
    # asyncio closes the socket on a later loop turn: wait without blocking the loop.
    assert await asyncio.to_thread(server.wait_for_disconnect, 10)


# ---------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------


async def test_embed(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    vectors = await embed(backend, sync, ["alpha", "beta", "alpha"])
    assert len(vectors) == 3
    assert all(len(v) == DIM for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert server.last_request.path == "/api/embed"
    assert server.last_request.json == {
        "model": "test-embed",
        "input": ["alpha", "beta", "alpha"],
        "truncate": False,
    }


async def test_embed_empty_list_sends_nothing(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    assert await embed(backend, sync, []) == []
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        await embed(backend, sync, ["a", ""])
    assert server.requests == []


async def test_embed_dimension_mismatch(server: LocalServer, sync: bool) -> None:
    backend = _backend(server, embed_dimension=8)
    try:
        with pytest.raises(EmbeddingDimensionError, match="expected 8"):
            await embed(backend, sync, ["a"])
    finally:
        await backend.aclose()


async def test_embed_sends_dimensions_when_asked(server: LocalServer, sync: bool) -> None:
    backend = _backend(server, embed_dimension=8, send_dimensions=True, keep_alive=-1)
    try:
        vectors = await embed(backend, sync, ["a"])
        assert len(vectors[0]) == 8
        assert server.last_request.json["dimensions"] == 8
        assert server.last_request.json["keep_alive"] == -1
    finally:
        await backend.aclose()


async def test_embed_too_long_names_the_input(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    server.options.embed_max_chars = 20
    with pytest.raises(ContextLengthExceededError, match=r"Input 1 .*30 characters") as info:
        await embed(backend, sync, ["short", "x" * 30, "tiny"])
    assert info.value.status == 400
    assert isinstance(info.value.__cause__, ContextLengthExceededError)
    with pytest.raises(ContextLengthExceededError, match=r"The input .*25 characters"):
        await embed(backend, sync, ["y" * 25])


async def test_embed_other_errors_pass_through(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    server.fault(Fault(status=500, body='{"error":"out of memory"}'))
    with pytest.raises(BackendHTTPError, match="out of memory") as info:
        await embed(backend, sync, ["a"])
    assert not isinstance(info.value, ContextLengthExceededError)


# ---------------------------------------------------------------------------------------
# Health and models
# ---------------------------------------------------------------------------------------


async def test_health(server: LocalServer, backend: OllamaBackend, sync: bool) -> None:
    if sync:
        assert backend.health_check() is True
        assert backend.server_version() == "0.12.6"
        assert backend.list_models() == ["test-model", "test-embed"]
    else:
        assert await backend.ahealth_check() is True
        assert await backend.aserver_version() == "0.12.6"
        assert await backend.alist_models() == ["test-model", "test-embed"]
    assert {r.path for r in server.requests} == {"/api/version", "/api/tags"}


async def test_health_false_on_error_status(
    server: LocalServer, backend: OllamaBackend, sync: bool
) -> None:
    server.fault(Fault(status=404, path="/api/tags"))
    healthy = backend.health_check() if sync else await backend.ahealth_check()
    assert healthy is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_server(sync: bool) -> None:
    backend = OllamaBackend(f"http://127.0.0.1:{_free_port()}", max_retries=0)
    try:
        healthy = backend.health_check() if sync else await backend.ahealth_check()
        assert healthy is False
        with pytest.raises(BackendConnectionError):
            await generate(backend, sync, "x")
    finally:
        await backend.aclose()


async def test_api_key_sent_as_bearer(server: LocalServer, sync: bool) -> None:
    backend = _backend(server, api_key="sk-test")
    try:
        await generate(backend, sync, "x")
        assert server.last_request.headers["authorization"] == "Bearer sk-test"
    finally:
        await backend.aclose()
