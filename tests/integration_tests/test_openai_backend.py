"""OpenAIBackend against the loopback server: every operation, sync and async."""

from __future__ import annotations

import json

import pytest

from langchain_matric import errors
from langchain_matric._http import Timeouts
from langchain_matric.backends import (
    GenerationOptions,
    GenerationRequest,
    StreamingGeneration,
    ToolCallDelta,
    Usage,
)
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.testing import Fault, LocalServer, Reply, ToolCallSpec

from .conftest import Sleeps, embed, generate, health, joined, stream


def make(server: LocalServer, sleeps: Sleeps | None = None, **kw) -> OpenAIBackend:
    if sleeps is not None:
        kw.setdefault("sleep", sleeps)
        kw.setdefault("asleep", sleeps.asleep)
    return OpenAIBackend(
        base_url=server.openai_base_url,
        api_key="sk-test-secret",
        model="test-model",
        embed_model="test-embed",
        **kw,
    )


def posts(server: LocalServer, path: str) -> int:
    return sum(1 for r in server.requests if r.path == path)


async def test_generate_plain(server, sync) -> None:
    with make(server) as backend:
        gen = await generate(backend, sync, "hello there")
    assert gen.text == "Echo: hello there"
    assert gen.finish_reason == "stop"
    assert gen.model == "test-model"
    assert gen.usage == Usage(2, 3, 5)
    sent = server.last_request
    assert sent.headers["authorization"] == "Bearer sk-test-secret"
    assert sent.headers["user-agent"].startswith("langchain-matric/")
    assert sent.json == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": False,
    }


async def test_generate_with_system_and_options(server, sync) -> None:
    options = GenerationOptions(temperature=0.0, max_tokens=2, seed=1, stop=["zz"])
    request = GenerationRequest.from_prompt("one two three four", system="sys", options=options)
    with make(server) as backend:
        gen = await generate(backend, sync, request)
    assert gen.finish_reason == "length"
    body = server.last_request.json
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert (body["max_tokens"], body["seed"], body["stop"]) == (2, 1, ["zz"])


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
@pytest.mark.parametrize("line_ending", ["\n", "\r\n", "\r"])
async def test_stream(server, sync, chunk_size, line_ending) -> None:
    server.script(
        Reply(
            text="Hello streaming wörld ✓",
            reasoning="hmm",
            usage=(4, 5),
            chunk_size=chunk_size,
            line_ending=line_ending,
            ping_every=2,
        )
    )
    with make(server) as backend:
        assert isinstance(backend, StreamingGeneration)
        deltas = await stream(backend, sync, "hi")
    assert joined(deltas) == "Hello streaming wörld ✓"
    assert "".join(d.reasoning for d in deltas) == "hmm"
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    usages = [d.usage for d in deltas if d.usage]
    assert [(u.input_tokens, u.output_tokens, u.total_tokens) for u in usages] == [(4, 5, 9)]
    assert [d.model for d in deltas if d.model] == ["test-model"]
    body = server.last_request.json
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_stream_tool_call_deltas_with_repeated_ids(server, sync) -> None:
    spec = ToolCallSpec("get_weather", {"city": "Oslo", "unit": "celsius"}, id="call_7")
    server.script(Reply(tool_calls=[spec], repeat_tool_call_ids=True, finish_reason="tool_calls"))
    with make(server) as backend:
        deltas = await stream(backend, sync, "weather?")
    calls = [t for d in deltas for t in d.tool_call_deltas]
    assert calls[0] == ToolCallDelta(0, "call_7", "get_weather", calls[0].arguments)
    assert all(c.id is None and c.name is None for c in calls[1:])
    assert json.loads("".join(c.arguments for c in calls)) == {"city": "Oslo", "unit": "celsius"}
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["tool_calls"]


async def test_generate_tool_calls_request_driven(server, sync) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"],
                },
            },
        }
    ]
    request = GenerationRequest.from_prompt("please add")
    request.tools = tools
    request.tool_choice = "add"
    with make(server) as backend:
        gen = await generate(backend, sync, request)
    assert [c.name for c in gen.tool_calls] == ["add"]
    assert set(json.loads(gen.tool_calls[0].arguments)) == {"a", "b"}
    assert server.last_request.json["tool_choice"] == {
        "type": "function",
        "function": {"name": "add"},
    }


async def test_completions_endpoint(server, sync) -> None:
    request = GenerationRequest(prompt="Once upon a time")
    with make(server) as backend:
        gen = await generate(backend, sync, request)
        deltas = await stream(backend, sync, request)
    assert gen.text
    assert joined(deltas) == gen.text
    assert posts(server, "/v1/completions") == 2


async def test_stream_answered_with_plain_json(server, sync) -> None:
    server.fault(Fault.non_streaming())
    with make(server) as backend:
        deltas = await stream(backend, sync, "plain please")
    assert joined(deltas) == "Echo: plain please"
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]


async def test_html_answer_is_a_clear_error(server, sync) -> None:
    server.fault(Fault(status=200, body="<html>login</html>", content_type="text/html"))
    with make(server) as backend, pytest.raises(errors.BackendHTTPError, match="text/html") as info:
        await stream(backend, sync, "x")
    assert "<html>login" in str(info.value)
    server.fault(Fault(status=200, body="<html>login</html>", content_type="text/html"))
    with make(server) as backend, pytest.raises(errors.BackendHTTPError, match="<html>login"):
        await generate(backend, sync, "x")


@pytest.mark.parametrize("base64_mode", ["support", "ignore", "reject"])
async def test_embeddings(base64_mode, sync) -> None:
    with LocalServer(base64_embeddings=base64_mode, embedding_dim=16) as server:
        with make(server, embed_dimension=16) as backend:
            first = await embed(backend, sync, ["alpha", "beta", "alpha"])
            again = await embed(backend, sync, ["alpha"])
        bodies = [r.json for r in server.requests if r.path == "/v1/embeddings"]
    assert len(first) == 3
    assert all(len(v) == 16 for v in first)
    assert first[0] == first[2] == again[0]
    assert first[0] != first[1]
    asked_base64 = [b.get("encoding_format") == "base64" for b in bodies]
    expected = {
        "support": [True, True],
        "ignore": [True, False],  # answered floats: stop asking
        "reject": [True, False, False],  # rejected: retried with floats, remembered
    }[base64_mode]
    assert asked_base64 == expected


async def test_embeddings_error_inside_a_200_answer_is_raised_not_learned(server, sync) -> None:
    # Only a 400/422 that names the parameter makes the backend drop base64 (`rejects_param`);
    # an error object in a 200 answer is raised as it is, sync and async alike (the sync side
    # parses inside its retry-on-400 block, so this guards that path).
    said = '{"error": {"message": "encoding_format base64 failed", "code": 400}}'
    server.fault(Fault(status=200, body=said))
    with make(server) as backend, pytest.raises(errors.BadRequestError, match="encoding_format"):
        await embed(backend, sync, ["a"])
    assert posts(server, "/v1/embeddings") == 1
    with make(server) as backend:
        assert len(await embed(backend, sync, ["a"])) == 1
    asked = [r.json.get("encoding_format") for r in server.requests if r.path == "/v1/embeddings"]
    assert asked == ["base64", "base64"]


async def test_embeddings_input_checks(server, sync) -> None:
    with make(server) as backend:
        assert await embed(backend, sync, []) == []
        assert server.requests == []
        with pytest.raises(ValueError, match=r"texts\[1\]"):
            await embed(backend, sync, ["a", ""])


async def test_embedding_dimension_mismatch(server, sync) -> None:
    with make(server, embed_dimension=3) as backend:
        with pytest.raises(errors.EmbeddingDimensionError, match="expected 3"):
            await embed(backend, sync, ["a"])


async def test_health(server, sync) -> None:
    with make(server) as backend:
        assert await health(backend, sync) is True
        assert "test-model" in backend.list_models()
    dead = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0)
    with dead:
        assert await health(dead, sync) is False


# -- errors and retries -------------------------------------------------------------------

CASES = [
    (400, '{"error": {"message": "bad field"}}', errors.BadRequestError, 1),
    (401, '{"error": {"message": "bad key"}}', errors.AuthenticationError, 1),
    (403, '{"error": {"message": "nope"}}', errors.PermissionDeniedError, 1),
    (
        404,
        '{"error": {"message": "The model `test-model` does not exist"}}',
        errors.ModelNotFoundError,
        1,
    ),
    (404, "404 page not found", errors.BackendHTTPError, 1),
    (
        400,
        '{"error": {"message": "maximum context length is 8 tokens"}}',
        errors.ContextLengthExceededError,
        1,
    ),
    (422, '{"detail": "field required"}', errors.BadRequestError, 1),
    (500, "Internal Server Error", errors.ServerError, 3),
    (501, "not implemented", errors.ServerError, 1),
    (503, '{"error": "overloaded"}', errors.ServerError, 3),
]


@pytest.mark.parametrize(("status", "body", "cls", "attempts"), CASES)
async def test_error_status(server, sync, sleeps, status, body, cls, attempts) -> None:
    server.fault(Fault(status=status, body=body, times=5))
    with make(server, sleeps) as backend, pytest.raises(cls) as info:
        await generate(backend, sync, "x")
    assert type(info.value) is cls
    assert info.value.status == status
    assert posts(server, "/v1/chat/completions") == attempts
    assert len(sleeps) == attempts - 1
    assert "sk-test-secret" not in str(info.value)
    assert "/v1/chat/completions" in str(info.value)


async def test_429_retry_after_then_success(server, sync, sleeps) -> None:
    server.fault(Fault(status=429, body='{"error": "slow"}', headers={"Retry-After": "1"}))
    with make(server, sleeps) as backend:
        gen = await generate(backend, sync, "hi")
    assert gen.text == "Echo: hi"
    assert sleeps == [1.0]
    assert posts(server, "/v1/chat/completions") == 2


async def test_503_retry_after_is_honoured(server, sync, sleeps) -> None:
    server.fault(Fault(status=503, body="busy", headers={"Retry-After": "2"}))
    with make(server, sleeps) as backend:
        assert (await generate(backend, sync, "hi")).text == "Echo: hi"
    assert sleeps == [2.0]


async def test_retries_for_streams_before_data_only(server, sync, sleeps) -> None:
    server.fault(Fault(status=503, body="busy"))
    with make(server, sleeps) as backend:
        assert joined(await stream(backend, sync, "hi")) == "Echo: hi"
    assert posts(server, "/v1/chat/completions") == 2
    server.fault(Fault.drop(after=3))
    with make(server, sleeps) as backend, pytest.raises(errors.StreamError) as info:
        await stream(backend, sync, "a b c d e f")
    assert info.value.partial
    assert posts(server, "/v1/chat/completions") == 3  # no retry once data arrived


async def test_connection_refused(sync, sleeps) -> None:
    backend = OpenAIBackend(
        base_url="http://127.0.0.1:9/v1", model="m", sleep=sleeps, asleep=sleeps.asleep
    )
    with backend, pytest.raises(errors.BackendConnectionError, match="127.0.0.1:9"):
        await generate(backend, sync, "x")
    assert len(sleeps) == 2


async def test_stall_is_a_timeout(server, sync) -> None:
    server.fault(Fault.stall(5, after=2))
    timeouts = Timeouts(connect=2, first_byte=5, idle=0.3)
    with make(server, timeouts=timeouts) as backend:
        with pytest.raises(errors.BackendTimeoutError, match="idle") as info:
            await stream(backend, sync, "a b c d e")
    assert info.value.partial


@pytest.mark.parametrize("style", ["openai", "vllm", "event", "event_no_data", "llamacpp"])
async def test_in_stream_errors(server, sync, style) -> None:
    server.fault(Fault.stream_error(style=style, after=2, message="kaboom"))
    with make(server) as backend, pytest.raises(errors.BackendHTTPError) as info:
        await stream(backend, sync, "a b c d e")
    if style != "event_no_data":
        assert "kaboom" in str(info.value)
    assert info.value.partial


async def test_truncated_stream_keeps_partial(server, sync) -> None:
    server.fault(Fault.end_early(after=3))
    with make(server) as backend, pytest.raises(errors.StreamError, match="truncated") as info:
        await stream(backend, sync, "a b c d e f")
    assert info.value.partial


async def test_invalid_json_line(server, sync) -> None:
    server.fault(Fault.invalid_json(after=2))
    with make(server) as backend, pytest.raises(errors.StreamError, match="invalid JSON"):
        await stream(backend, sync, "a b c d e f")


async def test_huge_line(server, sync) -> None:
    server.fault(Fault.huge_line(size=600 * 1024))
    with make(server) as backend:
        deltas = await stream(backend, sync, "x")
    assert len(joined(deltas)) >= 600 * 1024
    server.fault(Fault.huge_line(size=600 * 1024))
    with make(server, max_line_size=64 * 1024) as backend:
        with pytest.raises(errors.StreamError, match="max_line_size|longer"):
            await stream(backend, sync, "x")


async def test_learns_max_completion_tokens(sync) -> None:
    with LocalServer() as server:
        rejection = '{"error": {"message": "Unsupported parameter: \'max_tokens\' is not supported with this model. Use \'max_completion_tokens\' instead."}}'
        server.fault(Fault(status=400, body=rejection))
        request = GenerationRequest.from_prompt("hi", options=GenerationOptions(max_tokens=5))
        with make(server) as backend:
            await generate(backend, sync, request)
            await generate(backend, sync, request)
        bodies = [r.json for r in server.requests]
    assert ["max_tokens" in b for b in bodies] == [True, False, False]
    assert [b.get("max_completion_tokens") for b in bodies] == [None, 5, 5]


async def test_learns_no_stream_options(server, sync) -> None:
    server.fault(Fault(status=400, body='{"error": "unknown field stream_options"}'))
    with make(server) as backend:
        assert joined(await stream(backend, sync, "hi")) == "Echo: hi"
        await stream(backend, sync, "hi")
    assert ["stream_options" in r.json for r in server.requests] == [True, False, False]


async def test_azure_mode(server, sync) -> None:
    backend = OpenAIBackend(
        azure_endpoint=server.url,
        api_key="az-secret",
        model="gpt-4o",
        azure_deployment="chat-dep",
        api_version="2024-10-21",
    )
    with backend, pytest.raises(errors.BackendHTTPError):
        await generate(backend, sync, "x")  # the local server has no Azure routes: a 404
    sent = server.last_request
    assert sent.path == "/openai/deployments/chat-dep/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"} or "api-version=2024-10-21" in str(
        sent.query
    )
    assert sent.headers["api-key"] == "az-secret"
    assert "authorization" not in sent.headers
    assert "az-secret" not in repr(backend)


# -- the server's tokenizer ------------------------------------------------------------


async def test_count_tokens_uses_the_server_tokenizer(sync) -> None:
    from langchain_matric import MatricLLM

    with LocalServer(tokenizer=True) as server:
        with make(server) as backend:
            count = (
                backend.count_tokens("Hello, world")
                if sync
                else await backend.acount_tokens("Hello, world")
            )
            assert count == 3  # "Hello", ",", "world"
            llm = MatricLLM(backend=backend)
            assert llm.get_num_tokens("one two three four") == 4
        paths = [r.path for r in server.requests]
    assert paths == ["/tokenize", "/tokenize"]
    assert server.requests[0].json["prompt"] == "Hello, world"


async def test_count_tokens_without_a_tokenizer_asks_once(server, sync) -> None:
    from langchain_matric import ChatMatric

    with make(server) as backend:
        for _ in range(2):
            count = backend.count_tokens("x y") if sync else await backend.acount_tokens("x y")
            assert count is None
        chat = ChatMatric(backend=backend)
        assert chat.get_num_tokens("Hello, world") == 3  # the offline estimate
    assert [r.path for r in server.requests] == ["/tokenize", "/extras/tokenize/count"]


async def test_body_left_open_after_done_does_not_hold_the_caller(server, sync) -> None:
    import time

    server.fault(Fault.stall(10, after=6))  # role, 2 words, finish, usage, [DONE]; then silence
    with make(server, timeouts=Timeouts(connect=2, first_byte=5, idle=1.5)) as backend:
        started = time.perf_counter()
        deltas = await stream(backend, sync, "hi")
        elapsed = time.perf_counter() - started
    assert joined(deltas) == "Echo: hi"
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    # async: the 1 s drain deadline; sync: the idle timeout ends the drain, not an error
    assert elapsed < 6
