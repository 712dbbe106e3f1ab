"""The fault matrix's cases on the Responses API (`api="responses"`, `/v1/responses`).

The same helpers and assertions as `test_fault_matrix.py`, at the three layers (backend,
`ChatMatric.stream`, `MatricLLM.stream`), sync and async, for the faults that apply to a
Responses event stream. A Responses stream opens with three events before the first text
(`response.created`, `response.in_progress`, the message's `output_item.added`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from langchain_matric import errors
from langchain_matric._http import Timeouts
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.testing import Fault, LocalServer, Reply

from .conftest import Sleeps, generate
from .test_fault_matrix import KEY, TEXT, WORDS, consume

PATH = "/v1/responses"
LEAD = 3
"""Events before the first text delta."""


@pytest.fixture(params=["backend", "chat", "llm"])
def layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["openai", "vllm", "llamacpp"])
def shaped(server: LocalServer, request: pytest.FixtureRequest) -> LocalServer:
    server.options.responses_shape = request.param
    return server


def backend_for(server: LocalServer, sleeps: Sleeps | None = None, **kw: Any) -> OpenAIBackend:
    if sleeps is not None:
        kw.setdefault("sleep", sleeps)
        kw.setdefault("asleep", sleeps.asleep)
    return OpenAIBackend(
        base_url=server.openai_base_url, api_key=KEY, model="test-model", api="responses", **kw
    )


def posts(server: LocalServer) -> int:
    return sum(1 for r in server.requests if r.path == PATH)


async def test_whole_stream_in_every_shape(shaped, layer, sync) -> None:
    shaped.script(Reply(text=WORDS))
    with backend_for(shaped) as backend:
        out = await consume(layer, backend, sync)
    assert out.error is None
    assert out.pieces == WORDS
    assert posts(shaped) == 1


async def test_429_retry_after_then_success(server, layer, sync, sleeps) -> None:
    server.script(Reply(text=WORDS))
    server.fault(Fault(status=429, headers={"Retry-After": "1"}, path=PATH))
    with backend_for(server, sleeps) as backend:
        out = await consume(layer, backend, sync)
    assert (out.error, out.text, sleeps, posts(server)) == (None, TEXT, [1.0], 2)


async def test_connection_dropped_after_3_chunks(shaped, layer, sync, sleeps) -> None:
    shaped.script(Reply(text=WORDS))
    shaped.fault(Fault.drop(after=LEAD + 3))
    with backend_for(shaped, sleeps) as backend:
        out = await consume(layer, backend, sync)
    assert type(out.error) is errors.StreamError
    assert out.pieces == WORDS[:3]
    assert out.error.partial == "".join(WORDS[:3])
    assert PATH in str(out.error)
    assert posts(shaped) == 1  # no retry once data reached the caller
    assert sleeps == []


@pytest.mark.parametrize("fault", [Fault.end_early(after=LEAD + 3), Fault.no_terminator()])
async def test_stream_without_its_terminal_event_is_truncated(shaped, layer, sync, fault) -> None:
    shaped.script(Reply(text=WORDS))
    shaped.fault(fault)
    with backend_for(shaped) as backend:
        out = await consume(layer, backend, sync)
    assert type(out.error) is errors.StreamError
    assert "truncated" in str(out.error)
    assert out.error.partial == out.text
    assert out.text == ("".join(WORDS[:3]) if fault.kind == "end_early" else TEXT)


async def test_empty_stream_is_truncated(server, layer, sync) -> None:
    server.fault(Fault.empty())
    with backend_for(server) as backend:
        out = await consume(layer, backend, sync)
    assert type(out.error) is errors.StreamError
    assert (out.pieces, out.error.partial, posts(server)) == ([], "", 1)


@pytest.mark.parametrize("style", [None, "event", "llamacpp", "vllm"])
async def test_in_stream_error(shaped, style, layer, sync) -> None:
    shaped.script(Reply(text=WORDS))
    shaped.fault(Fault.stream_error(style, after=LEAD + 2, message="GPU fell over"))
    with backend_for(shaped) as backend:
        out = await consume(layer, backend, sync)
    assert isinstance(out.error, errors.ServerError)
    assert "GPU fell over" in str(out.error)
    assert PATH in str(out.error)
    assert out.pieces == WORDS[:2]
    assert out.error.partial == "".join(WORDS[:2])
    assert posts(shaped) == 1


@pytest.mark.parametrize("style", [None, "event"])
async def test_in_stream_context_overflow_is_typed(server, style, layer, sync) -> None:
    server.script(Reply(text=WORDS))
    message = "the prompt exceeds the maximum context length of 8 tokens"
    server.fault(Fault.stream_error(style, after=LEAD + 1, message=message))
    with backend_for(server) as backend:
        out = await consume(layer, backend, sync)
    # still a ContextLengthExceededError (LangChain's ContextOverflowError), and, as text
    # had reached the caller, a StreamError too: never retried
    assert type(out.error) is errors.ContextLengthExceededErrorInStream  # type: ignore[attr-defined]
    assert isinstance(out.error, errors.ContextLengthExceededError)
    assert isinstance(out.error, errors.StreamError)
    assert not out.error.is_retryable
    assert message in str(out.error)
    assert out.error.partial == WORDS[0] == out.text


async def test_stall_mid_stream_is_an_idle_timeout(server, layer, sync) -> None:
    server.script(Reply(text=WORDS))
    server.fault(Fault.stall(30, after=LEAD + 2))
    with backend_for(server, timeouts=Timeouts(connect=5, first_byte=10, idle=0.5)) as backend:
        out = await consume(layer, backend, sync)
    # a timeout, and a StreamError: text had reached the caller
    assert type(out.error) is errors.StreamTimeoutError
    assert isinstance(out.error, errors.BackendTimeoutError)
    assert "idle timeout" in str(out.error)
    assert out.pieces == WORDS[:2]
    assert out.error.partial == "".join(WORDS[:2])
    assert posts(server) == 1


@pytest.mark.parametrize("kind", ["garbage", "invalid_json"])
async def test_garbage_and_invalid_json(server, layer, sync, kind) -> None:
    server.script(Reply(text=WORDS))
    garbage = Fault.inject(b"data: \x00\xff\xfe garbage \x80\x81" + b"#" * 400 + b"\n\n", LEAD + 1)
    server.fault(garbage if kind == "garbage" else Fault.invalid_json(after=LEAD + 1))
    with backend_for(server) as backend:
        out = await consume(layer, backend, sync)
    assert isinstance(out.error, errors.StreamError)
    line = out.error.line
    assert line is not None
    assert 0 < len(line) <= 200
    assert ("garbage" if kind == "garbage" else "unterminated") in line
    assert PATH in str(out.error)
    assert out.pieces == WORDS[:1]
    assert out.error.partial == WORDS[0]


async def test_600_kib_delta_and_a_line_over_the_maximum(server, layer, sync) -> None:
    server.fault(Fault.huge_line(size=600 * 1024, after=LEAD))
    with backend_for(server) as backend:
        out = await consume(layer, backend, sync, "after")
    assert out.error is None
    assert out.text == "x" * (600 * 1024) + "Echo: after"
    server.fault(Fault.huge_line(size=600 * 1024, after=LEAD + 1))
    server.script(Reply(text=WORDS))
    with backend_for(server, max_line_size=64 * 1024) as backend:
        out = await consume(layer, backend, sync)
    assert isinstance(out.error, errors.StreamError)
    assert "max_line_size" in str(out.error)
    assert out.error.partial == out.text


async def test_html_answer(server, layer, sync) -> None:
    page = "<html><body>Please sign in to continue</body></html>"
    server.fault(Fault(status=200, body=page, content_type="text/html", times=2))
    with backend_for(server) as backend:
        out = await consume(layer, backend, sync)
        assert type(out.error) is errors.BackendHTTPError
        assert "<html><body>Please sign in" in str(out.error)
        with pytest.raises(errors.BackendHTTPError, match="Please sign in"):
            await generate(backend, sync, "x")
        await backend.aclose()


async def test_break_after_2_chunks_then_usable(server, layer, sync) -> None:
    server.script(Reply(text=[f"w{i} " for i in range(60)], delay=0.05))
    with backend_for(server) as backend:
        out = await consume(layer, backend, sync, on_piece=lambda o: len(o.pieces) == 2)
        assert (out.error, out.pieces) == (None, ["w0 ", "w1 "])
        assert await asyncio.to_thread(server.wait_for_disconnect, 10)
        again = await consume(layer, backend, sync, "still there")
        assert (again.error, again.text) == (None, "Echo: still there")
        await backend.aclose()
    assert posts(server) == 2


async def test_the_body_is_read_to_its_end_after_the_terminal_event(server, sync) -> None:
    # Stopping at response.completed still reads the chunked end, so no response is cut
    # off and the keep-alive connection goes back to the pool.
    with backend_for(server) as backend:
        for _ in range(5):
            out = await consume("backend", backend, sync, "hi")
            assert out.text == "Echo: hi"
        await backend.aclose()
    assert server.disconnects == 0
