"""Time bounds of a stream's body: `Timeouts.stall`, and the end after the terminator.

Keep-alive bytes (SSE comments, NDJSON blank lines) are not data, so they do not reset
the stall timeout; and a server that keeps the body open after `[DONE]` / `"done": true`
costs the connection, not the caller's time. A raw loopback server answers one streamed
request with a script of (delay, bytes) frames, each sent as one HTTP chunk, then holds
the body open for `hold` seconds before its end.
"""

from __future__ import annotations

import json
import re
import socket
import threading
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

from .conftest import generate, stream

Frame = tuple[float, bytes]
STALL = 0.4


class ScriptedStream:
    """Answers each connection's first request with a chunked body played from `frames`."""

    def __init__(
        self, content_type: str, frames: Sequence[Frame], hold: float = 0, chunked: bool = True
    ) -> None:
        self.content_type = content_type
        self.frames = list(frames)
        self.hold = hold
        self.chunked = chunked
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(5)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed_early = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            received = b""
            while b"\r\n\r\n" not in received:
                received += conn.recv(65536)
            head, _, body = received.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            while length is not None and len(body) < int(length[1]):
                body += conn.recv(65536)
            if self.chunked:
                framing = "Transfer-Encoding: chunked"
            else:
                framing = f"Content-Length: {sum(len(data) for _, data in self.frames)}"
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {self.content_type}\r\n{framing}\r\n\r\n"
            try:
                conn.sendall(head.encode())
                for delay, data in self.frames:
                    time.sleep(delay)
                    conn.sendall(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
                if self.chunked and not (self.hold and _closed_within(conn, self.hold)):
                    conn.sendall(b"0\r\n\r\n")
            except OSError:  # the client gave up and closed
                self.closed_early.set()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=10)


def _closed_within(conn: socket.socket, seconds: float) -> bool:
    """Wait up to `seconds` for the client to close; True (and note when) if it did."""
    conn.settimeout(seconds)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    finally:
        conn.settimeout(5)


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
def play(protocol: str) -> Iterator[object]:
    servers: list[ScriptedStream] = []

    def start(
        frames: Sequence[Frame], hold: float = 0, content_type: str = "", chunked: bool = True
    ) -> ScriptedStream:
        content_type = content_type or PROTOCOLS[protocol][0]
        server = ScriptedStream(content_type, frames, hold, chunked)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _finish(protocol: str) -> list[Frame]:
    if protocol == "openai":
        return [(0, _sse(finish="stop")), (0, b"data: [DONE]\n\n")]
    return [(0, _ndjson("", done=True))]


async def test_keepalives_without_data_time_out(protocol: str, play, sync: bool) -> None:
    _, data, keepalive = PROTOCOLS[protocol]
    frames = [(0, data("Hel")), *[(0.05, keepalive)] * 100]  # 5 s of keep-alives
    server = play(frames)
    backend = _backend(protocol, server.url, STALL)
    start = time.monotonic()
    with pytest.raises(StreamTimeoutError) as caught:
        await stream(backend, sync, GenerationRequest.from_prompt("hi"))
    elapsed = time.monotonic() - start
    await backend.aclose()
    assert STALL <= elapsed < STALL + 0.5
    error = caught.value
    assert isinstance(error, StreamError)
    assert isinstance(error, BackendTimeoutError)
    assert not error.is_retryable
    assert error.partial == "Hel"
    assert "stall timeout (0.4 s)" in str(error)
    assert "Timeouts.stall" in str(error)
    assert server.closed_early.wait(5), "the connection was not closed"


async def test_data_resets_the_stall_timer(protocol: str, play, sync: bool) -> None:
    _, data, keepalive = PROTOCOLS[protocol]
    # 1.2 s in all, three times the stall timeout, with data every 0.25 s
    frames = [(0, data("a"))]
    for _ in range(4):
        frames += [(0.1, keepalive), (0.1, keepalive), (0.05, data("b"))]
    server = play([*frames, *_finish(protocol)])
    backend = _backend(protocol, server.url, STALL)
    deltas = await stream(backend, sync, GenerationRequest.from_prompt("hi"))
    await backend.aclose()
    assert "".join(d.text for d in deltas) == "abbbb"
    assert deltas[-1].finish_reason == "stop"


async def test_no_stall_limit(protocol: str, play, sync: bool) -> None:
    _, data, keepalive = PROTOCOLS[protocol]
    frames = [(0, data("a")), *[(0.05, keepalive)] * 20, *_finish(protocol)]  # 1 s idle
    server = play(frames)
    backend = _backend(protocol, server.url, None)
    deltas = await stream(backend, sync, GenerationRequest.from_prompt("hi"))
    await backend.aclose()
    assert "".join(d.text for d in deltas) == "a"


async def test_a_body_held_open_after_the_terminator(protocol: str, play, sync: bool) -> None:
    """The loop ends within 0.5 s of the terminator; the connection is closed, not kept."""
    _, data, _ = PROTOCOLS[protocol]
    server = play([(0, data("a")), *_finish(protocol)], hold=3)
    backend = _backend(protocol, server.url, STALL)
    start = time.monotonic()
    deltas = await stream(backend, sync, GenerationRequest.from_prompt("hi"))
    elapsed = time.monotonic() - start
    await backend.aclose()
    assert "".join(d.text for d in deltas) == "a"
    assert deltas[-1].finish_reason == "stop"
    assert elapsed < 0.5
    server.thread.join(timeout=2)
    assert not server.thread.is_alive(), "the client kept the held connection open"


TOTAL = 0.5
ANSWERS = {
    "openai": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]},
    "ollama": {"model": "m", "message": {"role": "assistant", "content": "hi"}, "done": True},
}


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_total_bounds_a_trickled_answer(
    protocol: str, play, sync: bool, chunked: bool
) -> None:
    """A whole answer sent a byte every 20 ms (never idle): `total` still ends the call."""
    body = json.dumps(ANSWERS[protocol]).encode() + b" " * 200
    server = play(
        [(0.02, body[i : i + 1]) for i in range(len(body))],
        content_type="application/json",
        chunked=chunked,
    )
    backend = _backend(protocol, server.url, None, total=TOTAL)
    request = GenerationRequest.from_prompt("hi")
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match=r"total timeout \(0.5 s\)"):
        await generate(backend, sync, request)
    elapsed = time.monotonic() - start
    await backend.aclose()
    assert TOTAL <= elapsed < TOTAL + 0.5


async def test_total_after_data_is_a_stream_timeout(protocol: str, play, sync: bool) -> None:
    """Data every 50 ms, no end: `total` ends it; text was delivered, so a StreamError."""
    _, data, _ = PROTOCOLS[protocol]
    server = play([(0.05, data("a")) for _ in range(100)])
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
