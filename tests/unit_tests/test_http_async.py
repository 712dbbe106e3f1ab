"""AsyncTransport lifecycle: one session per event loop, closed with its loop; pickle; fork."""

from __future__ import annotations

import asyncio
import gc
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from langchain_matric._http import AsyncTransport, HTTPConfig
from tests.unit_tests.test_http import Loopback, reply, serve


@pytest.fixture
def server() -> Iterator[tuple[Loopback, str]]:
    with serve() as running:
        yield running


def test_two_asyncio_runs_on_one_transport_leave_no_warnings(server) -> None:
    srv, url = server
    srv.script("/x", reply(200, '{"n": 1}'))
    transport = AsyncTransport(HTTPConfig(url))

    async def call() -> tuple[Any, aiohttp.ClientSession]:
        response = await transport.request("GET", "/x")
        return response.json(), await transport._session()

    first = asyncio.run(call())
    second = asyncio.run(call())
    assert first[0] == second[0] == {"n": 1}
    assert first[1] is not second[1]
    assert first[1].closed and second[1].closed  # each loop closed its own session
    asyncio.run(transport.aclose())
    del first, second
    gc.collect()


async def test_aclose_is_idempotent_and_reopens_lazily(server) -> None:
    srv, url = server
    srv.script("/x", reply())
    transport = AsyncTransport(HTTPConfig(url))
    await transport.aclose()
    await transport.request("GET", "/x")
    session = await transport._session()
    await transport.aclose()
    await transport.aclose()
    assert session.closed
    async with transport:
        await transport.request("GET", "/x")
    assert srv.hits("/x") == 2


async def test_async_transport_pickles_without_its_sessions(server) -> None:
    srv, url = server
    srv.script("/x", reply(200, '{"a": 1}'))
    transport = AsyncTransport(HTTPConfig(url))
    await transport.request("GET", "/x")
    clone = pickle.loads(pickle.dumps(transport))
    assert clone._clients == {}
    assert (await clone.request("GET", "/x")).json() == {"a": 1}
    await clone.aclose()
    await transport.aclose()


async def test_async_session_is_recreated_after_fork(server) -> None:
    srv, url = server
    srv.script("/x", reply())
    transport = AsyncTransport(HTTPConfig(url))
    await transport.request("GET", "/x")
    parent_session = await transport._session()
    transport._pid = -1
    await transport.request("GET", "/x")
    assert await transport._session() is not parent_session and parent_session.closed
    await transport.aclose()


async def test_concurrent_requests_share_one_session(server) -> None:
    srv, url = server
    srv.script("/x", reply(200, '{"ok": 1}'))
    async with AsyncTransport(HTTPConfig(url)) as transport:
        results = await asyncio.gather(*(transport.request("GET", "/x") for _ in range(8)))
        assert [r.json() for r in results] == [{"ok": 1}] * 8
        assert len(transport._clients) == 1
    assert srv.hits("/x") == 8


def test_threads_with_their_own_loops_get_their_own_sessions(server) -> None:
    srv, url = server
    srv.script("/x", reply(200, '{"ok": 1}'))
    transport = AsyncTransport(HTTPConfig(url))
    barrier = threading.Barrier(2)
    sessions: list[aiohttp.ClientSession] = []
    failures: list[BaseException] = []

    async def work() -> None:
        await transport.request("GET", "/x")
        sessions.append(await transport._session())
        await asyncio.to_thread(barrier.wait, 10)  # both loops are alive at once here
        await transport.request("GET", "/x")

    def run() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sessions[0] is not sessions[1] and all(s.closed for s in sessions)
    assert srv.hits("/x") == 4
