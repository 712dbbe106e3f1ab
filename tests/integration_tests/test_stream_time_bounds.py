"""Time bounds of a body: `Timeouts.stall`, `total` on every read, the end after `[DONE]`.

Keep-alive bytes (SSE comments, NDJSON blank lines) are not data, so they do not reset
the stall timeout; a server that trickles bytes faster than `idle` still meets `total`;
and a server that keeps the body open after `[DONE]` / `"done": true` costs the
connection, not the caller's time. The raw fault server plays each answer as a script of
(delay, bytes) frames, one HTTP chunk each (or a `Content-Length` body).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence

import pytest

from langchain_matric._http import Timeouts as HTTPTimeouts
from langchain_matric.backends import (
    GenerationRequest,
    OllamaBackend,
    OpenAIBackend,
    RetryPolicy,
    Timeouts,
)
from langchain_matric.errors import BackendTimeoutError, StreamError, StreamTimeoutError
from tests.faultserver import HANG, Action, FaultServer, Pause, head

from .conftest import generate, stream

Frame = tuple[float, bytes]
STALL = 0.4


def answer(
    content_type: str, frames: Sequence[Frame], *, hold: bool = False, chunked: bool = True
) -> list[Action]:
    """The fault server's script for one answer: `frames` sent with their delays."""
    if chunked:
        actions: list[Action] = [head(content_type=content_type, transfer_encoding="chunked")]
    else:
        length = sum(len(data) for _, data in frames)
        actions = [head(content_type=content_type, content_length=length)]
    for delay, data in frames:
        if delay:
            actions.append(Pause(delay))
        actions.append(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
    if chunked:
        actions.append(HANG if hold else b"0\r\n\r\n")
    return actions


def _sse(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _ndjson(text: str, done: bool = False) -> bytes:
    line = {"model": "m", "message": {"role": "assistant", "content": text}, "done": done}
    if done:
        line["done_reason"] = "stop"
    return json.dumps(line).encode() + b"\n"


PROTOCOLS = {
    "openai": ("text/event-stream", _sse, b": ping\n\n"),
    "ollama": ("application/x-ndjson", _ndjson, b"\n"),
}


@pytest.fixture(params=sorted(PROTOCOLS))
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _backend(
    protocol: str, url: str, stall: float | None, total: float | None = None
) -> OpenAIBackend | OllamaBackend:
    timeouts = Timeouts(idle=5, stall=stall, total=total)
    if protocol == "openai":
        return OpenAIBackend(
            url + "/v1", api_key="sk-test", model="m", timeouts=timeouts, max_retries=0
        )
    return OllamaBackend(url, model="m", timeouts=timeouts, max_retries=0)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


async def _next_call_is_served(protocol: str, server: FaultServer, backend, sync: bool) -> None:
    """A call after the failed one gets its own answer, on a new connection."""
    content_type, data, _ = PROTOCOLS[protocol]
    server.play(answer(content_type, [(0, data("ok")), *_finish(protocol)]))
    deltas = await stream(backend, sync, GenerationRequest.from_prompt("again"))
    assert "".join(d.text for d in deltas) == "ok"
    assert [r.connection for r in server.received] == [0, 1]


def _finish(protocol: str) -> list[Frame]:
    if protocol == "openai":
        return [(0, _sse(finish="stop")), (0, b"data: [DONE]\n\n")]
    return [(0, _ndjson("", done=True))]


async def test_keepalives_without_data_time_out(protocol: str, server, sync: bool) -> None:
    content_type, data, keepalive = PROTOCOLS[protocol]
    frames = [(0, data("Hel")), *[(0.05, keepalive)] * 100]  # 5 s of keep-alives
    server.play(answer(content_type, frames))
    backend = _backend(protocol, server.url, STALL)
    start = time.monotonic()
    with pytest.raises(StreamTimeoutError) as caught:
        await stream(backend, sync, GenerationRequest.from_prompt("hi"))
    elapsed = time.monotonic() - start
    assert STALL <= elapsed < STALL + 0.5
    error = caught.value
    assert isinstance(error, StreamError)
    assert isinstance(error, BackendTimeoutError)
    assert not error.is_retryable
    assert error.partial == "Hel"
    assert "stall timeout (0.4 s)" in str(error)
    assert "Timeouts.stall" in str(error)
    await _next_call_is_served(protocol, server, backend, sync)
    await backend.aclose()


async def test_data_resets_the_stall_timer(protocol: str, server, sync: bool) -> None:
    content_type, data, keepalive = PROTOCOLS[protocol]
    # 1.2 s in all, three times the stall timeout, with data every 0.25 s
    frames = [(0, data("a"))]
    for _ in range(4):
        frames += [(0.1, keepalive), (0.1, keepalive), (0.05, data("b"))]
    server.play(answer(content_type, [*frames, *_finish(protocol)]))
    backend = _backend(protocol, server.url, STALL)
    deltas = await stream(backend, sync, GenerationRequest.from_prompt("hi"))
    await backend.aclose()
    assert "".join(d.text for d in deltas) == "abbbb"
    assert deltas[-1].finish_reason == "stop"


async def test_no_stall_limit(protocol: str, server, sync: bool) -> None:
    content_type, data, keepalive = PROTOCOLS[protocol]
    frames = [(0, data("a")), *[(0.05, keepalive)] * 20, *_finish(protocol)]  # 1 s idle
    server.play(answer(content_type, frames))
    backend = _backend(protocol, server.url, None)
    deltas = await stream(backend, sync, GenerationRequest.from_prompt("hi"))
    await backend.aclose()
    assert "".join(d.text for d in deltas) == "a"


async def test_a_body_held_open_after_the_terminator(protocol: str, server, sync: bool) -> None:
    """The loop ends within 0.5 s of the terminator; the held connection is not kept."""
    content_type, data, _ = PROTOCOLS[protocol]
    server.play(answer(content_type, [(0, data("a")), *_finish(protocol)], hold=True))
    backend = _backend(protocol, server.url, STALL)
    start = time.monotonic()
    deltas = await stream(backend, sync, GenerationRequest.from_prompt("hi"))
    elapsed = time.monotonic() - start
    assert "".join(d.text for d in deltas) == "a"
    assert deltas[-1].finish_reason == "stop"
    assert elapsed < 0.5
    await _next_call_is_served(protocol, server, backend, sync)
    await backend.aclose()


TOTAL = 0.5
ANSWERS = {
    "openai": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]},
    "ollama": {"model": "m", "message": {"role": "assistant", "content": "hi"}, "done": True},
}


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_total_bounds_a_trickled_answer(
    protocol: str, server, sync: bool, chunked: bool
) -> None:
    """A whole answer sent a byte every 20 ms (never idle): `total` still ends the call."""
    body = json.dumps(ANSWERS[protocol]).encode() + b" " * 200
    frames = [(0.02, body[i : i + 1]) for i in range(len(body))]
    server.play(answer("application/json", frames, chunked=chunked))
    backend = _backend(protocol, server.url, None, total=TOTAL)
    request = GenerationRequest.from_prompt("hi")
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match=r"total timeout \(0.5 s\)"):
        await generate(backend, sync, request)
    elapsed = time.monotonic() - start
    await backend.aclose()
    assert TOTAL <= elapsed < TOTAL + 0.5
    assert len(server.received) == 1  # a total timeout is not retried


async def test_total_after_data_is_a_stream_timeout(protocol: str, server, sync: bool) -> None:
    """Data every 50 ms, no end: `total` ends it; text was delivered, so a StreamError."""
    content_type, data, _ = PROTOCOLS[protocol]
    server.play(answer(content_type, [(0.05, data("a")) for _ in range(100)]))
    backend = _backend(protocol, server.url, None, total=TOTAL)
    start = time.monotonic()
    with pytest.raises(StreamTimeoutError, match=r"total timeout \(0.5 s\)") as caught:
        await stream(backend, sync, GenerationRequest.from_prompt("hi"))
    elapsed = time.monotonic() - start
    await backend.aclose()
    assert TOTAL <= elapsed < TOTAL + 0.5
    assert caught.value.partial.startswith("aaaa")
    assert not caught.value.is_retryable


def test_timeouts_and_retry_policy_are_public() -> None:
    from langchain_matric._http import RetryPolicy as HTTPRetryPolicy

    assert Timeouts is HTTPTimeouts
    assert RetryPolicy is HTTPRetryPolicy
    assert Timeouts().stall == 300.0
    with pytest.raises(ValueError, match="stall"):
        Timeouts(stall=-1)
