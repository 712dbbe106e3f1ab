"""Issue 6's fault matrix: every misbehaving-server case, table-driven.

Each row runs for both protocols (OpenAI-compatible SSE, Ollama NDJSON), sync and
async, at three layers: the backend (`generate_stream`), `ChatMatric.stream` and
`MatricLLM.stream`. Outcomes are asserted exactly: the error class, what its message
names, the requests the server saw, the text delivered before the error and the error's
`partial`. Retry waits go through an injected sleep; the few real-time assertions have
wide margins.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk

from langchain_matric import errors
from langchain_matric._http import RetryPolicy, Timeouts
from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.chat_models import ChatMatric
from langchain_matric.errors import server_message
from langchain_matric.llms import MatricLLM
from langchain_matric.testing import Fault, LocalServer, Reply

from .conftest import Sleeps, generate

KEY = "sk-matrix-SECRET-4242"
WORDS = ["alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta "]
TEXT = "".join(WORDS)
PROTOCOLS = ["openai", "ollama"]
LAYERS = ["backend", "chat", "llm"]
PATH = {"openai": "/v1/chat/completions", "ollama": "/api/chat"}
LEAD = {"openai": 1, "ollama": 0}
"""Events before the first text: OpenAI opens with a role-only chunk."""


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=LAYERS)
def layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_backend(
    protocol: str,
    base_url: str,
    sleeps: Sleeps | None = None,
    **kw: Any,
) -> OpenAIBackend | OllamaBackend:
    """A backend with a recognisable key and (optionally) recorded retry waits."""
    if sleeps is not None:
        kw.setdefault("sleep", sleeps)
        kw.setdefault("asleep", sleeps.asleep)
    kw.setdefault("model", "test-model")
    if protocol == "openai":
        return OpenAIBackend(base_url=base_url, api_key=KEY, **kw)
    return OllamaBackend(base_url, api_key=KEY, **kw)


def backend_for(
    protocol: str, server: LocalServer, sleeps: Sleeps | None = None, **kw: Any
) -> OpenAIBackend | OllamaBackend:
    url = server.openai_base_url if protocol == "openai" else server.ollama_base_url
    return make_backend(protocol, url, sleeps, **kw)


@dataclass
class Outcome:
    """What a caller saw: the text pieces delivered, then the error (if any)."""

    pieces: list[str] = field(default_factory=list)
    error: BaseException | None = None
    last_piece_at: float = 0.0
    ended_at: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _piece(layer: str, item: Any) -> str:
    if layer == "backend":
        return str(item.text)
    if layer == "chat":
        assert isinstance(item, AIMessageChunk)
        return str(item.content)
    return str(item)


def _source(layer: str, backend: Any, sync: bool, prompt: str) -> Any:
    """The stream a caller iterates at `layer`."""
    if layer == "backend":
        return backend.generate_stream(prompt) if sync else backend.agenerate_stream(prompt)
    adapter = ChatMatric(backend=backend) if layer == "chat" else MatricLLM(backend=backend)
    return adapter.stream(prompt) if sync else adapter.astream(prompt)


async def consume(
    layer: str,
    backend: Any,
    sync: bool,
    prompt: str = "go",
    *,
    on_piece: Callable[[Outcome], bool] | None = None,
) -> Outcome:
    """Iterate a stream to its end (or until `on_piece` returns True), catching errors."""
    out = Outcome()

    def record(item: Any) -> bool:
        text = _piece(layer, item)
        if text:
            out.pieces.append(text)
            out.last_piece_at = time.monotonic()
        return on_piece is not None and on_piece(out)

    try:
        if sync:
            for item in _source(layer, backend, True, prompt):
                if record(item):
                    break
        else:
            async for item in _source(layer, backend, False, prompt):
                if record(item):
                    break
    except errors.MatricError as error:
        out.error = error
    out.ended_at = time.monotonic()
    return out


def posts(server: LocalServer, protocol: str) -> int:
    return sum(1 for r in server.requests if r.path == PATH[protocol])


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- opening the request: retries, status errors -------------------------------------------


async def test_connection_refused(protocol, layer, sync, sleeps) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}" + ("/v1" if protocol == "openai" else "")
    with make_backend(protocol, url, sleeps, max_retries=2) as backend:
        out = await consume(layer, backend, sync)
    assert isinstance(out.error, errors.BackendConnectionError)
    assert f"127.0.0.1:{port}" in str(out.error)
    assert "refused" in str(out.error)
    assert KEY not in str(out.error)
    assert out.pieces == []
    # max_retries=2: two waits, exponential backoff (0.5 s then 1 s, less up to 25 % jitter)
    assert len(sleeps) == 2
    assert 0.375 <= sleeps[0] <= 0.5 < 0.75 <= sleeps[1] <= 1.0


async def test_429_retry_after_then_success(server, protocol, layer, sync, sleeps) -> None:
    server.script(Reply(text=WORDS))
    server.fault(Fault(status=429, headers={"Retry-After": "1"}, path=PATH[protocol]))
    with backend_for(protocol, server, sleeps) as backend:
        out = await consume(layer, backend, sync)
    assert out.error is None
    assert out.text == TEXT
    assert sleeps == [1.0]  # Retry-After honoured exactly
    assert posts(server, protocol) == 2


async def test_429_retry_after_really_waits(server, protocol, sync) -> None:
    server.fault(Fault(status=429, headers={"Retry-After": "1"}, path=PATH[protocol]))
    with backend_for(protocol, server) as backend:  # the real clock
        started = time.monotonic()
        out = await consume("backend", backend, sync, "hi there")
    assert out.error is None
    assert out.text == "Echo: hi there"
    assert 1.0 <= time.monotonic() - started < 30
    assert posts(server, protocol) == 2


async def test_503_three_times_is_a_server_error(server, protocol, layer, sync, sleeps) -> None:
    server.fault(Fault(status=503, body="overloaded, try later", times=3, path=PATH[protocol]))
    with backend_for(protocol, server, sleeps, max_retries=2) as backend:
        out = await consume(layer, backend, sync)
    assert type(out.error) is errors.ServerError
    assert out.error.status == 503
    assert "overloaded, try later" in str(out.error)
    assert PATH[protocol] in str(out.error)
    assert posts(server, protocol) == 3
    assert len(sleeps) == 2
    assert server.queued_faults == 0


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, errors.AuthenticationError), (403, errors.PermissionDeniedError)],
)
async def test_auth_errors(server, protocol, layer, sync, sleeps, status, cls) -> None:
    body = f'{{"error": {{"message": "key {KEY} is not valid here"}}}}'  # a server echoing it
    server.fault(Fault(status=status, body=body, times=3, path=PATH[protocol]))
    with backend_for(protocol, server, sleeps) as backend:
        out = await consume(layer, backend, sync)
    assert type(out.error) is cls
    assert out.error.status == status
    assert PATH[protocol] in str(out.error)
    assert posts(server, protocol) == 1  # never retried
    assert sleeps == []
    sent = server.last_request.headers["authorization"]
    assert sent == f"Bearer {KEY}"
    assert KEY not in str(out.error), "the key leaked into the message"


async def test_unknown_model(server, protocol, layer, sync) -> None:
    server.options.strict_models = True
    with backend_for(protocol, server, model="no-such-model") as backend:
        out = await consume(layer, backend, sync)
    assert type(out.error) is errors.ModelNotFoundError
    said = server_message(out.error.body)
    assert "no-such-model" in said
    assert said in str(out.error)
    assert posts(server, protocol) == 1


async def test_context_too_long(server, protocol, layer, sync) -> None:
    server.options.context_chars = 10
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync, "a prompt far longer than ten characters")
    assert type(out.error) is errors.ContextLengthExceededError
    said = server_message(out.error.body)
    assert said
    assert said in str(out.error)
    assert posts(server, protocol) == 1


# -- mid-stream faults: nothing delivered is lost ------------------------------------------


async def test_connection_dropped_after_3_chunks(server, protocol, layer, sync, sleeps) -> None:
    server.script(Reply(text=WORDS))
    server.fault(Fault.drop(after=LEAD[protocol] + 3))
    with backend_for(protocol, server, sleeps) as backend:
        out = await consume(layer, backend, sync)
    assert type(out.error) is errors.StreamError
    assert out.pieces == WORDS[:3]  # the 3 chunks were delivered...
    assert out.error.partial == "".join(WORDS[:3])  # ...and are kept in the error
    assert "connection lost mid-stream" in str(out.error)
    assert PATH[protocol] in str(out.error)
    assert posts(server, protocol) == 1  # no retry once data reached the caller
    assert sleeps == []


async def test_stream_ends_early(server, protocol, layer, sync) -> None:
    server.script(Reply(text=WORDS))
    server.fault(Fault.end_early(after=LEAD[protocol] + 3))
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync)
    assert type(out.error) is errors.StreamError
    assert out.pieces == WORDS[:3]
    assert out.error.partial == "".join(WORDS[:3])
    assert PATH[protocol] in str(out.error)
    assert posts(server, protocol) == 1


async def test_stream_without_terminator(server, protocol, layer, sync) -> None:
    """No `[DONE]` / `done: true`.

    OpenAI: a clean end after the finish_reason is a complete answer (vLLM and others
    omit `[DONE]`). Ollama: the `done` line carries the finish, so the answer is
    truncated.
    """
    server.script(Reply(text=WORDS))
    server.fault(Fault.no_terminator())
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync)
    assert out.text == TEXT
    if protocol == "openai":
        assert out.error is None
    else:
        assert type(out.error) is errors.StreamError
        assert "done: true" in str(out.error)
        assert out.error.partial == TEXT


async def test_empty_stream(server, protocol, layer, sync) -> None:
    """200 with an empty body. OpenAI: nothing reached the caller, so it asks again
    without streaming (llama-cpp-python answers a failed stream this way); Ollama: a
    truncated stream."""
    server.fault(Fault.empty())
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync)
    if protocol == "openai":
        assert out.error is None
        assert out.pieces == ["Echo: go"]  # one whole chunk
        assert [r.stream for r in server.requests] == [True, False]
    else:
        assert type(out.error) is errors.StreamError
        assert out.pieces == []
        assert out.error.partial == ""
        assert posts(server, protocol) == 1


IN_STREAM_ERRORS = [
    ("openai", "openai"),  # data: {"error": {...}}
    ("openai", "vllm"),  # data: {"object": "error", ...}
    ("openai", "event"),  # event: error + data
    ("openai", "event_no_data"),  # a bare event: error block
    ("openai", "llamacpp"),  # a bare error: {...} line
    ("ollama", "ollama"),  # {"error": "..."} line
]


@pytest.mark.parametrize(("protocol", "style"), IN_STREAM_ERRORS)
async def test_in_stream_error(server, protocol, style, layer, sync) -> None:
    server.script(Reply(text=WORDS))
    server.fault(Fault.stream_error(style, after=LEAD[protocol] + 2, message="GPU fell over"))
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync)
    assert isinstance(out.error, errors.ServerError | errors.StreamError)
    if style != "event_no_data":  # that one carries no message at all
        assert "GPU fell over" in str(out.error)
    assert PATH[protocol] in str(out.error)
    assert out.pieces == WORDS[:2]
    assert out.error.partial == "".join(WORDS[:2])
    assert posts(server, protocol) == 1
    # A 5xx-style error (a gateway's, LiteLLM's) after text reached the caller: a partial
    # stream is never sent again, so the error must not say it may be.
    assert out.error.is_retryable is False


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_in_stream_context_overflow_is_typed(server, protocol, layer, sync) -> None:
    server.script(Reply(text=WORDS))
    message = "the prompt exceeds the maximum context length of 8 tokens"
    server.fault(Fault.stream_error(after=LEAD[protocol] + 1, message=message))
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync)
    # still a ContextLengthExceededError (LangChain's ContextOverflowError), and, as text
    # had reached the caller, a StreamError too: never retried
    assert type(out.error) is errors.ContextLengthExceededErrorInStream  # type: ignore[attr-defined]
    assert isinstance(out.error, errors.ContextLengthExceededError)
    assert isinstance(out.error, errors.StreamError)
    assert not out.error.is_retryable
    assert message in str(out.error)
    assert out.error.partial == WORDS[0] == out.text


async def test_stall_mid_stream_is_an_idle_timeout(server, protocol, layer, sync) -> None:
    idle = 0.5
    server.script(Reply(text=WORDS))
    server.fault(Fault.stall(30, after=LEAD[protocol] + 2))
    timeouts = Timeouts(connect=5, first_byte=10, idle=idle)
    with backend_for(protocol, server, timeouts=timeouts) as backend:
        out = await consume(layer, backend, sync)
    # a timeout, and a StreamError: text had reached the caller
    assert type(out.error) is errors.StreamTimeoutError
    assert isinstance(out.error, errors.BackendTimeoutError)
    assert not out.error.is_retryable
    assert "idle timeout" in str(out.error)
    assert "0.5 s" in str(out.error)
    assert "Timeouts.idle" in str(out.error)
    assert out.pieces == WORDS[:2]
    assert out.error.partial == "".join(WORDS[:2])
    # within timeout + 1 s of the last chunk (the stall starts right after it)
    assert idle * 0.8 <= out.ended_at - out.last_piece_at <= idle + 1.0
    assert posts(server, protocol) == 1  # read timeouts of a generation are not retried


async def test_stall_before_the_head_is_a_first_byte_timeout(server, protocol, sync) -> None:
    server.fault(Fault.stall(30, after=0, path=PATH[protocol]))
    timeouts = Timeouts(connect=5, first_byte=0.5, idle=10)
    with backend_for(protocol, server, timeouts=timeouts) as backend:
        started = time.monotonic()
        out = await consume("backend", backend, sync)
    assert type(out.error) is errors.BackendTimeoutError
    assert "first-byte timeout (0.5 s)" in str(out.error)
    assert time.monotonic() - started <= 0.5 + 1.0
    assert posts(server, protocol) == 1


def _garbage_fault(protocol: str) -> Fault:
    if protocol == "openai":  # garbage inside a data line (SSE ignores lines of no field)
        return Fault.inject(b"data: \x00\xff\xfe garbage \x80\x81" + b"#" * 400 + b"\n\n", after=2)
    return Fault.inject(b"\x00\xff\xfe garbage \x80\x81" + b"#" * 400 + b"\n", after=2)


@pytest.mark.parametrize("kind", ["garbage", "invalid_json"])
async def test_garbage_and_invalid_json(server, protocol, layer, sync, kind) -> None:
    server.script(Reply(text=WORDS))
    fault = _garbage_fault(protocol) if kind == "garbage" else Fault.invalid_json(after=2)
    server.fault(fault)
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync)
    assert isinstance(out.error, errors.StreamError)
    line = out.error.line
    assert line is not None
    assert 0 < len(line) <= 200  # the offending line, first 200 characters
    assert repr(line)[1:40] in str(out.error)
    assert ("garbage" if kind == "garbage" else "unterminated") in line
    assert PATH[protocol] in str(out.error)
    assert "#" * 200 not in str(out.error)
    expected = WORDS[: 2 - LEAD[protocol]]
    assert out.pieces == expected
    assert out.error.partial == "".join(expected)


async def test_600_kib_line(server, protocol, layer, sync) -> None:
    server.fault(Fault.huge_line(size=600 * 1024))
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync, "after")
    assert out.error is None
    assert "x" * (600 * 1024) in out.text
    assert out.text.replace("x" * (600 * 1024), "", 1) == "Echo: after"


async def test_line_over_the_maximum(server, protocol, layer, sync) -> None:
    server.fault(Fault.huge_line(size=600 * 1024, after=LEAD[protocol] + 1))
    server.script(Reply(text=WORDS))
    with backend_for(protocol, server, max_line_size=64 * 1024) as backend:
        out = await consume(layer, backend, sync)
    assert isinstance(out.error, errors.StreamError)
    assert "max_line_size (65,536 bytes)" in str(out.error)
    assert out.error.partial == out.text
    # The chunk before the long line is delivered when it arrived in an earlier read (it
    # always does over httpx); an SSE decoder that fails a read drops that read's events.
    assert out.text in ("", WORDS[0])
    if sync or protocol == "ollama":
        assert out.text == WORDS[0]


async def test_html_answer(server, protocol, layer, sync) -> None:
    page = "<html><body>Please sign in to continue</body></html>"
    server.fault(Fault(status=200, body=page, content_type="text/html", times=2))
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync)
        assert type(out.error) is errors.BackendHTTPError
        assert "text/html" in str(out.error)
        assert "<html><body>Please sign in" in str(out.error)
        assert out.pieces == []
        # the non-streaming path says the same
        with pytest.raises(errors.BackendHTTPError, match="Please sign in"):
            await generate(backend, sync, "x")
        await backend.aclose()


async def test_stream_answered_with_plain_json(server, protocol, layer, sync) -> None:
    server.script(Reply(text=WORDS))
    server.fault(Fault.non_streaming())
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync)
    assert out.error is None
    assert out.pieces == [TEXT]  # one whole chunk


# -- the caller leaves early ---------------------------------------------------------------


def _slow_reply() -> Reply:
    return Reply(text=[f"w{i} " for i in range(60)], delay=0.05)  # ~3 s of streaming


async def _then_usable(layer: str, backend: Any, sync: bool) -> None:
    again = await consume(layer, backend, sync, "still there")
    assert again.error is None
    assert again.text == "Echo: still there"


async def test_break_after_2_chunks(server, protocol, layer, sync) -> None:
    server.script(_slow_reply())
    with backend_for(protocol, server) as backend:
        out = await consume(layer, backend, sync, on_piece=lambda o: len(o.pieces) == 2)
        assert out.error is None
        assert out.pieces == ["w0 ", "w1 "]
        seen = await asyncio.to_thread(server.wait_for_disconnect, 10)
        assert seen, "the server never saw the client go away"
        assert time.monotonic() - out.ended_at < 1.0 + 0.5  # 1 s, plus the polling slack
        await _then_usable(layer, backend, sync)
        await backend.aclose()
    assert posts(server, protocol) == 2


async def test_cancel_the_task_after_2_chunks(server, protocol, layer) -> None:
    server.script(_slow_reply())
    two = asyncio.Event()
    pieces: list[str] = []

    async def reader(backend: Any) -> None:
        async for item in _source(layer, backend, False, "go"):
            text = _piece(layer, item)
            if text:
                pieces.append(text)
            if len(pieces) == 2:
                two.set()

    with backend_for(protocol, server) as backend:
        task = asyncio.create_task(reader(backend))
        await asyncio.wait_for(two.wait(), 10)
        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(server.wait_for_disconnect, 10)
        assert time.monotonic() - cancelled_at < 1.5
        assert pieces[:2] == ["w0 ", "w1 "]
        await _then_usable(layer, backend, False)
        await backend.aclose()


# -- limits: configurable, and reachable from backends and adapters -------------------------


async def test_retry_after_is_capped(server, protocol, sync, sleeps) -> None:
    server.fault(Fault(status=429, headers={"Retry-After": "120"}, path=PATH[protocol]))
    retry = RetryPolicy(max_retries=1, retry_after_max=5.0)
    with backend_for(protocol, server, sleeps, retry=retry) as backend:
        out = await consume("backend", backend, sync, "capped")
    assert out.text == "Echo: capped"
    assert sleeps == [5.0]


async def test_backoff_is_exponential_and_capped(server, protocol, sync, sleeps) -> None:
    server.fault(Fault(status=503, times=4, path=PATH[protocol]))
    retry = RetryPolicy(max_retries=4, backoff_initial=1.0, backoff_max=1.5, jitter=0.0)
    with backend_for(protocol, server, sleeps, retry=retry) as backend:
        out = await consume("backend", backend, sync, "backoff")
    assert out.text == "Echo: backoff"
    assert sleeps == [1.0, 1.5, 1.5, 1.5]
    assert posts(server, protocol) == 5


async def test_total_timeout(server, protocol, sync) -> None:
    server.script(Reply(text=[f"w{i} " for i in range(100)], delay=0.05))  # ~5 s in all
    timeouts = Timeouts(connect=5, first_byte=5, idle=5, total=0.6)
    with backend_for(protocol, server, timeouts=timeouts) as backend:
        started = time.monotonic()
        out = await consume("backend", backend, sync)
    assert type(out.error) is errors.StreamTimeoutError  # text had reached the caller
    assert "total timeout (0.6 s)" in str(out.error)
    assert out.pieces
    assert out.error.partial == out.text
    assert time.monotonic() - started <= 0.6 + 1.5


async def test_pool_size_is_configurable(server, protocol) -> None:
    server.script(*[Reply(text=["a ", "b "], delay=0.2) for _ in range(6)])
    with backend_for(protocol, server, max_connections=2) as backend:
        assert backend._config.max_connections == 2
        assert backend._config.max_keepalive_connections == 2  # clamped, not an error

        async def one() -> str:
            return (await consume("backend", backend, False)).text

        assert await asyncio.gather(*[one() for _ in range(6)]) == ["a b "] * 6
        await backend.aclose()
    # two at a time: the six requests arrive in three waves of two
    times = sorted(r.time for r in server.requests)
    assert times[2] - times[0] >= 0.15
    assert times[4] - times[2] >= 0.15


@pytest.mark.parametrize("cls", [ChatMatric, MatricLLM])
async def test_adapter_limits_reach_the_backend(server, protocol, sync, cls) -> None:
    """`timeout` and `max_retries` fields configure the backend the adapter builds."""
    url = server.openai_base_url if protocol == "openai" else server.ollama_base_url
    model = cls(backend=protocol, base_url=url, api_key=KEY, model="test-model",
                timeout=0.5, max_retries=0)  # fmt: skip
    server.fault(Fault(status=503, path=PATH[protocol]))
    assert type((await consume_adapter(model, sync)).error) is errors.ServerError
    assert posts(server, protocol) == 1  # max_retries=0
    server.script(Reply(text=WORDS))
    server.fault(Fault.stall(30, after=LEAD[protocol] + 1))
    out = await consume_adapter(model, sync)
    assert type(out.error) is errors.StreamTimeoutError  # text reached the caller first
    assert "idle timeout" in str(out.error)
    assert "(0.5 s)" in str(out.error)
    assert out.text == WORDS[0] == out.error.partial
    await model.aclose()


async def consume_adapter(model: Any, sync: bool) -> Outcome:
    out = Outcome()

    def add(chunk: Any) -> None:
        text = _piece("chat", chunk) if isinstance(chunk, AIMessageChunk) else str(chunk)
        if text:
            out.pieces.append(text)

    try:
        if sync:
            for chunk in model.stream("go"):
                add(chunk)
        else:
            async for chunk in model.astream("go"):
                add(chunk)
    except errors.MatricError as error:
        out.error = error
    return out
