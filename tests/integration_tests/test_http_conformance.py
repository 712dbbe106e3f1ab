"""HTTP conformance of both stacks against raw scripted bytes (`tests.faultserver`).

Every scenario runs on the sync stack (httpx over urllib3) and the async one (aiohttp)
from the same raw script; the differential tests expect the same outcome from both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from langchain_matric._http import AsyncTransport, HTTPConfig, RetryPolicy, SyncTransport, Timeouts
from langchain_matric._http._wire import MAX_INTERIM_RESPONSES
from langchain_matric.errors import MatricError
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


@pytest.mark.parametrize("gap", [0.0, 0.2], ids=["same packet", "while idle"])
async def test_bytes_after_an_answer_are_never_the_next_answer(
    stack: Stack, server: FaultServer, gap: float
) -> None:
    """A server that sends a second, unasked-for answer: the next call must not get it."""
    server.play(
        [ok(b'{"answer": "A"}'), Pause(gap), ok(b'{"answer": "STALE"}')],
        [ok(b'{"answer": "B"}')],
    )
    assert await stack.request() == {"answer": "A"}
    if gap:
        await asyncio.sleep(gap + 0.1)
    second = await outcome(stack)
    assert second.value != {"answer": "STALE"}
    assert second == Outcome("ok", {"answer": "B"})
    if gap:  # the stale bytes were waiting on the pooled connection: a new one was made
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


OK_A = Outcome("ok", {"a": 1})
CASES = {
    "103 then the answer": Case([[EARLY_HINTS, ok(b'{"a": 1}')]], "request", [OK_A]),
    "102 103 then a stream": Case(
        [[interim(102), EARLY_HINTS, chunked(b"x", b"y")]], "stream", [Outcome("ok", b"xy")]
    ),
    "interim then close": Case(
        [[EARLY_HINTS, CLOSE]], "request", [Outcome("BackendConnectionError", True)]
    ),
    "interim then 503": Case(
        [[EARLY_HINTS, ok(b'{"error": "busy"}', 503)]], "request", [Outcome("ServerError", True)]
    ),
    "interim then 429": Case(
        [[interim(102), ok(b"{}", 429)]], "request", [Outcome("RateLimitError", True)]
    ),
    "101 is final, not skipped": Case(
        [[head(101, upgrade="websocket", connection="upgrade"), HANG]],
        "request",
        [Outcome("BackendHTTPError", False)],
    ),
    "interim answers on one connection": Case(
        [[EARLY_HINTS, ok(b'{"a": 1}')], [interim(102), ok(b'{"a": 2}')]],
        "request request",
        [OK_A, Outcome("ok", {"a": 2})],
    ),
    "a stale answer on the idle connection": Case(
        [[ok(b'{"a": 1}'), Pause(0.1), ok(b'{"a": "stale"}')], [ok(b'{"a": 2}')]],
        "request pause request",
        [OK_A, Outcome("ok", {"a": 2})],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_both_stacks_agree(server: FaultServer, case: Case) -> None:
    """The issue's differential test: one raw script, the same outcome on both stacks."""
    seen: dict[str, tuple[list[Outcome], int]] = {}
    for kind in ("sync", "async"):
        server.reset(*case.answers)
        config = HTTPConfig(
            server.url,
            timeouts=Timeouts(connect=5, first_byte=5, idle=5, total=20),
            retry=RetryPolicy(max_retries=0),
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
        seen[kind] = (got, len(server.received))
    assert seen["sync"] == seen["async"], seen
    assert seen["sync"] == (list(case.expect), len(case.answers))
