"""HTTP conformance of both stacks against raw scripted bytes (`tests.faultserver`).

Every scenario runs on the sync stack (httpx over urllib3) and the async one (aiohttp)
from the same raw script; the differential tests expect the same outcome from both.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from langchain_matric._http import AsyncTransport, HTTPConfig, RetryPolicy, SyncTransport, Timeouts
from langchain_matric._http._wire import MAX_INTERIM_RESPONSES
from langchain_matric.errors import BackendConnectionError, MatricError, ResponseParseError
from tests.faultserver import CLOSE, HANG, Action, FaultServer, Pause, chunked, head, interim, ok


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


class Stack:
    """One transport of either stack, called alike: `await stack.request(...)`."""

    def __init__(self, kind: str, config: HTTPConfig) -> None:
        self.kind = kind
        self.sync = SyncTransport(config)
        self.aio = AsyncTransport(config)

    async def request(self, path: str = "/v1/x", **kw: Any) -> Any:
        """POST, the whole answer's JSON."""
        kw.setdefault("json", {"q": 1})
        if self.kind == "sync":
            return self.sync.request("POST", path, **kw).json()
        return (await self.aio.request("POST", path, **kw)).json()

    async def stream(self, path: str = "/v1/s", **kw: Any) -> bytes:
        """POST, the streamed body joined."""
        kw.setdefault("json", {"q": 1})
        if self.kind == "sync":
            with self.sync.stream("POST", path, **kw) as response:
                return b"".join(response.iter_bytes())
        async with self.aio.stream("POST", path, **kw) as aresponse:
            return b"".join([chunk async for chunk in aresponse.aiter_bytes()])

    async def close(self) -> None:
        self.sync.close()
        await self.aio.aclose()


@pytest.fixture(params=["sync", "async"])
async def stack(request: pytest.FixtureRequest, server: FaultServer) -> AsyncIterator[Stack]:
    config = HTTPConfig(
        server.url,
        timeouts=Timeouts(connect=5, first_byte=5, idle=5, total=20),
        retry=RetryPolicy(max_retries=0),
    )
    made = Stack(str(request.param), config)
    yield made
    await made.close()


@dataclass(frozen=True)
class Outcome:
    """What a caller got, comparable across stacks."""

    kind: str
    """"ok", or the error's class name."""
    value: Any = None
    """The answer (ok), or whether the error is retryable."""


async def outcome(stack: Stack, *, stream: bool = False) -> Outcome:
    try:
        if stream:
            return Outcome("ok", await stack.stream())
        return Outcome("ok", await stack.request())
    except MatricError as error:
        return Outcome(type(error).__name__, error.is_retryable)


# ---------------------------------------------------------------------------------------
# Interim responses: every 1xx but 101 is skipped; nobody gets another call's answer
# ---------------------------------------------------------------------------------------

EARLY_HINTS = interim(103, link="</style.css>; rel=preload; as=style")
INTERIMS = {
    "103 early hints": [EARLY_HINTS],
    "102 processing": [interim(102)],
    "100 continue": [interim(100)],
    "several in a row": [interim(102), EARLY_HINTS, interim(103, link="</a.js>; rel=preload")],
    "1xx without a reason phrase": [b"HTTP/1.1 103\r\nLink: </b.css>\r\n\r\n"],
    "in its own packets": [interim(102), Pause(0.05), EARLY_HINTS, Pause(0.05)],
}


@pytest.mark.parametrize("heads", INTERIMS.values(), ids=INTERIMS.keys())
async def test_interim_responses_are_skipped(
    stack: Stack, server: FaultServer, heads: list[Action]
) -> None:
    server.play([*heads, ok(b'{"answer": "A"}')])
    assert await stack.request() == {"answer": "A"}
    assert len(server.received) == 1


async def test_interim_responses_before_a_stream_are_skipped(
    stack: Stack, server: FaultServer
) -> None:
    server.play([interim(102), EARLY_HINTS, chunked(b"data: a\n\n", b"data: [DONE]\n\n")])
    assert await stack.stream() == b"data: a\n\ndata: [DONE]\n\n"


async def test_no_call_receives_another_calls_answer(stack: Stack, server: FaultServer) -> None:
    """An interim head used to be taken for the answer, leaving the answer on the pooled
    connection for the next call (sync stack): now each call gets its own, on one connection."""
    server.play(
        [EARLY_HINTS, ok(b'{"answer": "A"}')],
        [interim(102), ok(b'{"answer": "B"}')],
        [ok(b'{"answer": "C"}')],
    )
    assert await stack.request() == {"answer": "A"}
    assert await stack.request() == {"answer": "B"}
    assert await stack.stream() == b'{"answer": "C"}'
    assert [r.connection for r in server.received] == [0, 0, 0]  # reused: the test's point


@pytest.mark.parametrize("gap", [None, 0.2], ids=["in the same write", "while idle"])
async def test_bytes_after_an_answer_are_never_the_next_answer(
    stack: Stack, server: FaultServer, gap: float | None
) -> None:
    """A server that sends a second, unasked-for answer: the next call must not get it.

    Sent with the answer, the extra bytes are read with it and dropped (sync: http.client's
    buffer goes with the response) or close the connection (async: queued on it). Arriving
    while the connection is idle, they close it when it is taken from the pool (both).
    Bytes arriving in the microseconds between that check and the next answer cannot be
    told from that answer by any HTTP/1.1 client.
    """
    stale = ok(b'{"answer": "STALE"}')
    answer = ok(b'{"answer": "A"}')
    first = [answer + stale] if gap is None else [answer, Pause(gap), stale]
    server.play(first, [ok(b'{"answer": "B"}')])
    assert await stack.request() == {"answer": "A"}
    await asyncio.sleep(0.3)
    second = await outcome(stack)
    assert second.value != {"answer": "STALE"}
    assert second == Outcome("ok", {"answer": "B"})
    if gap is not None:  # the stale bytes were waiting on the pooled connection: a new one
        assert [r.connection for r in server.received] == [0, 1]


async def test_a_connection_switched_by_101_is_never_reused(
    stack: Stack, server: FaultServer
) -> None:
    upgraded = head(101, upgrade="websocket", connection="upgrade")
    server.play([upgraded], [ok(b'{"answer": "B"}')])  # it would answer on the same one
    assert (await outcome(stack)).kind == "BackendHTTPError"
    assert await stack.request() == {"answer": "B"}
    assert [r.connection for r in server.received] == [0, 1]


async def test_sync_endless_interim_heads_end_in_an_error(server: FaultServer) -> None:
    """A server sending 1xx heads forever would keep the read loop going: capped (sync)."""
    server.play([interim(102)] * (MAX_INTERIM_RESPONSES + 1) + [ok(b"{}")])
    config = HTTPConfig(server.url, retry=RetryPolicy(max_retries=0))
    with SyncTransport(config) as transport, pytest.raises(MatricError, match="interim"):
        transport.request("GET", "/x")


# ---------------------------------------------------------------------------------------
# Differential: the same raw script, the same outcome on both stacks
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Raw answers (one per request), the calls made in order, and what each call gets."""

    answers: Sequence[Sequence[Action]]
    calls: str
    """"request", "stream" or "pause" (0.3 s between calls), space-separated."""
    expect: Sequence[Outcome]
    requests: int
    """How many requests the server sees, with `max_retries=2`."""


def _retried(*answer: Action) -> list[Sequence[Action]]:
    return [answer] * 3


def _once(*answer: Action) -> list[Sequence[Action]]:
    return [[*answer, CLOSE], [ok(b'{"sent": "again"}')]]  # a second request would succeed


OK_A = Outcome("ok", {"a": 1})
UNREADABLE = Outcome("ResponseParseError", False)
GZIP = {"content_type": "application/json", "content_encoding": "gzip", "content_length": 12}
CHUNKED = {"content_type": "application/json", "transfer_encoding": "chunked"}
LINES_300 = {f"x_field_{i}": "v" for i in range(300)}
CASES = {
    "103 then the answer": Case([[EARLY_HINTS, ok(b'{"a": 1}')]], "request", [OK_A], 1),
    "102 103 then a stream": Case(
        [[interim(102), EARLY_HINTS, chunked(b"x", b"y")]], "stream", [Outcome("ok", b"xy")], 1
    ),
    # An interim head says the server has the request: closed after it, the answer was
    # cut short, not "closed without answering", and it is not sent again.
    "interim then close": Case(
        _retried(EARLY_HINTS, CLOSE), "request", [Outcome("BackendConnectionError", False)], 1
    ),
    "102 Processing then close, on a reused connection": Case(
        [[ok(b'{"a": 1}')], [interim(102), CLOSE], [ok(b'{"a": 2}')]],
        "request request",
        [OK_A, Outcome("BackendConnectionError", False)],
        2,
    ),
    "interim then 503": Case(
        _retried(EARLY_HINTS, ok(b'{"error": "busy"}', 503)),
        "request",
        [Outcome("ServerError", True)],
        3,
    ),
    "interim then 429": Case(
        _retried(interim(102), ok(b"{}", 429)), "request", [Outcome("RateLimitError", True)], 3
    ),
    "101 is final, not skipped": Case(
        [[head(101, upgrade="websocket", connection="upgrade"), HANG]],
        "request",
        [Outcome("BackendHTTPError", False)],
        1,
    ),
    "interim answers on one connection": Case(
        [[EARLY_HINTS, ok(b'{"a": 1}')], [interim(102), ok(b'{"a": 2}')]],
        "request request",
        [OK_A, Outcome("ok", {"a": 2})],
        2,
    ),
    "a stale answer on the idle connection": Case(
        [[ok(b'{"a": 1}'), Pause(0.1), ok(b'{"a": "stale"}')], [ok(b'{"a": 2}')]],
        "request pause request",
        [OK_A, Outcome("ok", {"a": 2})],
        2,
    ),
    # An answer arrived but cannot be read: a typed error after exactly one request.
    "a malformed status line": Case(_once(b"HTTP/1.1 abc OK\r\n\r\n"), "request", [UNREADABLE], 1),
    "not HTTP at all": Case(_once(b"hello there\r\n\r\n"), "request", [UNREADABLE], 1),
    "corrupt gzip": Case(_once(head(200, **GZIP), b"not gzip at!"), "request", [UNREADABLE], 1),
    "corrupt gzip, streamed": Case(
        _once(head(200, **GZIP), b"not gzip at!"), "stream", [Outcome("StreamError", False)], 1
    ),
    "a malformed chunk size": Case(
        _once(head(200, **CHUNKED), b"zz\r\nabc\r\n0\r\n\r\n"), "request", [UNREADABLE], 1
    ),
    "a malformed chunk size after the head": Case(  # async waited for `total` here
        _once(head(200, **CHUNKED), Pause(0.05), b"zz\r\nabc\r\n0\r\n\r\n"),
        "request",
        [UNREADABLE],
        1,
    ),
    "a malformed chunk size mid-stream": Case(
        _once(head(200, **CHUNKED), b"3\r\nabc\r\n", Pause(0.05), b"zz\r\nabc\r\n"),
        "stream",
        [Outcome("StreamError", False)],
        1,
    ),
    "a header line over 64 KiB": Case(
        _once(ok(b"{}", x_big="a" * 70_000)), "request", [UNREADABLE], 1
    ),
    "300 header lines": Case(_once(ok(b"{}", **LINES_300)), "request", [UNREADABLE], 1),
    # RFC 9112 6.3: a sender must not send both; ambiguous framing is a smuggling risk.
    "Content-Length with chunked": Case(
        _once(head(200, content_length=8, **CHUNKED), b'8\r\n{"a": 1}\r\n0\r\n\r\n'),
        "request",
        [UNREADABLE],
        1,
    ),
    # Within the limits both stacks share (`max_header_line`, `max_header_lines`): these
    # were pinned differences (aiohttp's 8,190-byte line, http.client's 100 lines).
    "a 10 KiB header line": Case([[ok(b'{"a": 1}', x_big="a" * 10_000)]], "request", [OK_A], 1),
    "a 64 KiB header line": Case(
        [[ok(b'{"a": 1}', x_big="a" * (65_536 - len("x-big: ")))]], "request", [OK_A], 1
    ),
    "101 header lines": Case(
        [[ok(b'{"a": 1}', **{f"x_field_{i}": "v" for i in range(101)})]], "request", [OK_A], 1
    ),
    "254 header lines and the two of `ok`": Case(
        [[ok(b'{"a": 1}', **{f"x_field_{i}": "v" for i in range(254)})]], "request", [OK_A], 1
    ),
}


async def _noop(_: float) -> None:
    return None


async def run_case(server: FaultServer, case: Case, kind: str) -> tuple[list[Outcome], int]:
    """Play `case` against one stack (retries on, no waits); what each call got, requests."""
    server.reset(*case.answers)
    config = HTTPConfig(
        server.url,
        timeouts=Timeouts(connect=5, first_byte=5, idle=5, total=20),
        retry=RetryPolicy(max_retries=2),
        sleep=lambda _: None,
        asleep=_noop,
    )
    one = Stack(kind, config)
    got: list[Outcome] = []
    try:
        for call in case.calls.split():
            if call == "pause":
                await asyncio.sleep(0.3)
            else:
                got.append(await outcome(one, stream=call == "stream"))
    finally:
        await one.close()
    return got, len(server.received)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_both_stacks_agree(server: FaultServer, case: Case) -> None:
    """The issue's differential test: one raw script, the same outcome on both stacks."""
    sync = await run_case(server, case, "sync")
    aio = await run_case(server, case, "async")
    assert sync == aio, {"sync": sync, "async": aio}
    assert sync == (list(case.expect), case.requests)


async def test_the_parse_error_names_the_parsers_reason(stack: Stack, server: FaultServer) -> None:
    server.play([b"HTTP/1.1 abc OK\r\n\r\n", CLOSE])
    with pytest.raises(ResponseParseError, match="could not be read") as info:
        await stack.request()
    assert "abc OK" in info.value.reason and "\n" not in str(info.value)
    assert info.value.status is None and not info.value.is_retryable
    server.play([head(200, **GZIP), b"not gzip at!"])
    with pytest.raises(ResponseParseError, match="gzip|decompress") as info:
        await stack.request()
    assert info.value.status == 200


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_malformed_chunk_mid_stream_keeps_what_was_delivered(
    server: FaultServer, kind: str
) -> None:
    """Through a backend: the events before the bad chunk are delivered and in `partial`."""
    from langchain_matric.backends.openai import OpenAIBackend
    from langchain_matric.errors import StreamError

    event = b'data: {"choices": [{"index": 0, "delta": {"content": "Hello"}}]}\n\n'
    frame = b"%x\r\n%s\r\n" % (len(event), event)
    sse = {"content_type": "text/event-stream", "transfer_encoding": "chunked"}
    server.play([head(200, **sse), frame, Pause(0.05), b"zz\r\n", HANG])
    backend = OpenAIBackend(
        base_url=server.url + "/v1", api_key="k", model="m", timeouts=Timeouts(total=10)
    )
    got: list[str] = []

    async def read() -> None:
        if kind == "sync":
            for delta in backend.generate_stream("go"):
                got.append(delta.text)  # noqa: PERF401 - one by one: kept up to the error
        else:
            async for adelta in backend.agenerate_stream("go"):
                got.append(adelta.text)  # noqa: PERF401 - one by one: kept up to the error

    try:
        with pytest.raises(StreamError, match="could not be read") as info:
            await read()
    finally:
        backend.close()
        await backend.aclose()
    assert "".join(got) == info.value.partial == "Hello"
    assert len(server.received) == 1


# ---------------------------------------------------------------------------------------
# Retry by evidence: a stale pooled connection is sent again at once, once
# ---------------------------------------------------------------------------------------


class Sleeps:
    """The waits a transport asked for (its `sleep` / `asleep`), never really waited."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def _no_retries(server: FaultServer, sleeps: Sleeps) -> HTTPConfig:
    return HTTPConfig(
        server.url,
        timeouts=Timeouts(connect=5, first_byte=5, idle=5, total=20),
        retry=RetryPolicy(max_retries=0),
        sleep=sleeps.sleep,
        asleep=sleeps.asleep,
    )


CLOSING = {
    # The server reads the next request on the kept-alive connection and closes it without
    # a byte of an answer: what a server whose keep-alive expired as the request came sees.
    "closed as the next request arrives": [[ok(b'{"n": 1}')], [CLOSE]],
    # Closed right after each answer (no `Connection: close`): the close is usually seen
    # before reuse, else the request meets it as above.
    "closed right after each answer": [[ok(b'{"n": 1}'), CLOSE]],
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("script", CLOSING.values(), ids=CLOSING.keys())
async def test_a_stale_pooled_connection_is_reconnected_at_once(
    server: FaultServer, kind: str, script: list[list[Action]]
) -> None:
    """20 back-to-back calls with `max_retries=0` all succeed: each request that met a
    pooled connection the server had closed is sent again on a new one, without a wait."""
    server.reset(*(script * 40))
    sleeps = Sleeps()
    stack = Stack(kind, _no_retries(server, sleeps))
    try:
        for _ in range(20):
            assert await stack.request() == {"n": 1}
    finally:
        await stack.close()
    assert sleeps.waits == []
    if len(script) == 2:  # every call after the first met a stale connection, then a new one
        assert len(server.received) == 39
        assert server.connections == 20
    else:  # each answer on its own connection; a request that met a closed one, sent again
        assert server.connections == len(server.received) >= 20


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_fresh_connection_closed_before_answering_still_fails(
    server: FaultServer, kind: str
) -> None:
    """No reconnect for a new connection: with `max_retries=0`, one request, an error."""
    server.reset([CLOSE], [ok(b'{"n": 1}')])
    sleeps = Sleeps()
    stack = Stack(kind, _no_retries(server, sleeps))
    try:
        with pytest.raises(BackendConnectionError, match="closed the connection without") as info:
            await stack.request()
    finally:
        await stack.close()
    assert len(server.received) == 1 and sleeps.waits == []
    assert "retr" not in str(info.value)  # no retry happened: the message claims none


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_stale_connection_then_a_failing_fresh_one_is_not_sent_again(
    server: FaultServer, kind: str
) -> None:
    """The reconnect is once; a new connection closed before answering is not retried.

    The fresh connection carried the request to a server that may have begun to run it:
    no evidence it was not processed, so not even `max_retries=2` sends it a third time.
    """
    server.reset([ok(b'{"n": 1}')], [CLOSE], [CLOSE], [ok(b'{"n": 2}')])
    sleeps = Sleeps()
    config = dataclasses.replace(_no_retries(server, sleeps), retry=RetryPolicy(max_retries=2))
    stack = Stack(kind, config)
    try:
        assert await stack.request() == {"n": 1}
        with pytest.raises(BackendConnectionError, match="Not sent again") as info:
            await stack.request()
    finally:
        await stack.close()
    assert not info.value.is_retryable
    assert len(server.received) == 3 and sleeps.waits == []


WORDING = {
    "503": ([ok(b'{"error": "busy"}', 503)], "ServerError"),
    "429": ([ok(b'{"error": "slow down"}', 429)], "RateLimitError"),
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("answer", "kind_of_error"), WORDING.values(), ids=WORDING.keys())
@pytest.mark.parametrize("max_retries", [0, 2])
async def test_the_message_says_whether_retries_happened(
    server: FaultServer, kind: str, answer: list[Action], kind_of_error: str, max_retries: int
) -> None:
    """No "retried" without a retry (`max_retries=0`); after retries, how many were made."""
    server.reset(*[answer] * 3)
    sleeps = Sleeps()
    config = HTTPConfig(
        server.url,
        timeouts=Timeouts(connect=5, first_byte=5, idle=5, total=20),
        retry=RetryPolicy(max_retries=max_retries),
        sleep=sleeps.sleep,
        asleep=sleeps.asleep,
    )
    stack = Stack(kind, config)
    try:
        with pytest.raises(MatricError) as info:
            await stack.request()
    finally:
        await stack.close()
    assert type(info.value).__name__ == kind_of_error
    assert len(server.received) == max_retries + 1 == len(sleeps.waits) + 1
    text = str(info.value)
    if max_retries:
        assert text.endswith("Sent 3 times (2 retries with backoff).")
    else:
        assert "retr" not in text.lower() and "Sent" not in text


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_the_header_limits_are_settings_named_in_the_error(
    server: FaultServer, kind: str
) -> None:
    """`max_header_line` / `max_header_lines` apply per transport, on both stacks alike:
    over them, a `ResponseParseError` naming the limit and the setting, after 1 request."""
    config = HTTPConfig(
        server.url, retry=RetryPolicy(max_retries=2), max_header_line=1000, max_header_lines=20
    )
    stack = Stack(kind, config)
    try:
        server.reset([ok(b"{}", x_big="a" * 1200), CLOSE], [ok(b"{}")])
        with pytest.raises(ResponseParseError, match=r"over 1,000 bytes .*`max_header_line`"):
            await stack.request()
        assert len(server.received) == 1
        server.reset([ok(b"{}", **{f"x_{i}": "v" for i in range(30)}), CLOSE], [ok(b"{}")])
        with pytest.raises(ResponseParseError, match=r"more than 20 .*`max_header_lines`"):
            await stack.request()
        assert len(server.received) == 1
    finally:
        await stack.close()
    # Raised: a 100 KiB line and 400 lines pass.
    roomy = HTTPConfig(server.url, max_header_line=200_000, max_header_lines=500)
    stack = Stack(kind, roomy)
    try:
        server.reset([ok(b'{"a": 1}', x_big="a" * 100_000, **{f"x_{i}": "v" for i in range(400)})])
        assert await stack.request() == {"a": 1}
    finally:
        await stack.close()


def test_the_sync_limits_leave_http_client_alone() -> None:
    """Per connection, never process-wide: `http.client`'s globals are untouched."""
    import http.client

    assert http.client._MAXHEADERS == 100  # type: ignore[attr-defined]
    assert http.client._MAXLINE == 65536  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "64k"])
def test_bad_header_limits_are_configuration_errors(value: object) -> None:
    from langchain_matric.errors import ConfigurationError

    for name in ("max_header_line", "max_header_lines"):
        with pytest.raises(ConfigurationError, match=name):
            HTTPConfig("http://127.0.0.1:1", **{name: value})  # type: ignore[arg-type]


def test_backends_take_the_header_limits() -> None:
    from langchain_matric.backends.ollama import OllamaBackend
    from langchain_matric.backends.openai import OpenAIBackend

    backend = OpenAIBackend(
        base_url="http://127.0.0.1:1/v1", api_key="k", model="m", max_header_line=131_072
    )
    assert backend._config.max_header_line == 131_072
    assert backend._config.max_header_lines == 256
    ollama = OllamaBackend(base_url="http://127.0.0.1:1", model="m", max_header_lines=512)
    assert ollama._config.max_header_lines == 512


# ---------------------------------------------------------------------------------------
# Async body reads: time bounds of their own, independent of aiohttp's read timer
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["request", "stream"])
async def test_async_idle_bound_holds_without_aiohttps_read_timer(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """aiohttp's read timer switched off after the head (as its parser once dropped it):
    the transport's own watchdog still ends a silent body within `idle` * 1.25."""
    from langchain_matric._http import _async

    monkeypatch.setattr(_async, "_read_idle", lambda response, idle: None)
    head_only = head(200, **CHUNKED)
    server.play([head_only, b"3\r\nabc\r\n", HANG])
    config = HTTPConfig(
        server.url,
        timeouts=Timeouts(connect=5, first_byte=30, idle=0.4, total=None),
        retry=RetryPolicy(max_retries=0),
    )
    stack = Stack("async", config)
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(MatricError, match="idle timeout") as info:
            await (stack.stream() if mode == "stream" else stack.request())
    finally:
        await stack.close()
    took = asyncio.get_running_loop().time() - started
    assert 0.4 <= took < 0.4 * 1.25 + 0.3, took
    assert not info.value.is_retryable or mode == "request"


async def test_async_total_bounds_a_trickled_body_without_aiohttps_total(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body trickled faster than `idle`, with aiohttp's own total off: the watchdog
    ends it at `total` (within 0.5 s), naming the total timeout."""
    from langchain_matric._http import _async

    real = _async.client_timeout
    monkeypatch.setattr(_async, "client_timeout", lambda timeouts, total: real(timeouts, None))
    trickle: list[Action] = [head(200, **CHUNKED)]
    for _ in range(100):
        trickle += [b"1\r\na\r\n", Pause(0.05)]
    server.play(trickle)
    config = HTTPConfig(
        server.url,
        timeouts=Timeouts(connect=5, first_byte=5, idle=1, total=0.6),
        retry=RetryPolicy(max_retries=0),
    )
    stack = Stack("async", config)
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(MatricError, match="total timeout"):
            await stack.request()
    finally:
        await stack.close()
    took = asyncio.get_running_loop().time() - started
    assert 0.6 <= took < 1.1, took
