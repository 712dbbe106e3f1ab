"""No leaks: many streams leave file descriptors and threads where they started.

1,000 sequential streams (sync and async, through `ChatMatric` and the backends, some
left early) and 256 concurrent async streams (a quarter cancelled midway, under a
configured pool limit) against the loopback server. The server runs in this process, so
its sockets count too: the checks wait for both ends to close. No `ResourceWarning` may
be emitted (pytest turns warnings into errors; the checks also collect garbage and look).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.chat_models import ChatMatric
from langchain_matric.testing import LocalServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")

PROTOCOLS = ["openai", "ollama"]
WORDS = " ".join(f"w{i}" for i in range(30))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def client_sockets(port: int) -> int:
    """This process's open TCP sockets whose remote end is `port` on loopback (clients').

    Exact where a count of all fds is not: the in-process server's ends of connections the
    client already closed may linger while its loop catches up.
    """
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                count += remote_port == port and fields[9] in inodes
    return count


def settle(baseline: int, timeout: float = 10.0) -> int:
    """Open fds once they are back at `baseline` (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        count = open_fds()
        if count <= baseline or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture
def resource_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield caught
        gc.collect()
    found = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert found == [], [str(w.message) for w in found]


def backend_for(protocol: str, server: LocalServer, **kw: Any) -> OpenAIBackend | OllamaBackend:
    if protocol == "openai":
        return OpenAIBackend(
            base_url=server.openai_base_url, api_key="sk-leak", model="test-model", **kw
        )
    return OllamaBackend(server.ollama_base_url, model="test-model", **kw)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_1000_sequential_streams(server, protocol, resource_warnings) -> None:
    gc.collect()
    fds, threads = open_fds(), threading.active_count()
    backend = backend_for(protocol, server)
    chat = ChatMatric(backend=backend)
    peak = 0
    for i in range(300):  # through the chat model, every 10th left after one chunk
        stream = chat.stream(f"sync {i} a b c")
        if i % 10 == 0:
            assert next(stream).content == "Echo:"
            stream.close()
        else:
            assert "".join(str(c.content) for c in stream) == f"Echo: sync {i} a b c"
        peak = max(peak, open_fds())
    for i in range(200):  # the backend itself
        assert "".join(d.text for d in backend.generate_stream(f"b{i}")) == f"Echo: b{i}"

    async def async_streams() -> None:
        for i in range(300):
            stream = chat.astream(f"async {i}")
            if i % 10 == 0:
                await anext(stream)
                await stream.aclose()
            else:
                assert "".join([str(c.content) async for c in stream]) == f"Echo: async {i}"
        for i in range(200):
            got = "".join([d.text async for d in backend.agenerate_stream(f"a{i}")])
            assert got == f"Echo: a{i}"
        await backend.aclose()

    asyncio.run(async_streams())
    assert len(server.requests) == 1000
    # Keep-alive reuses connections: sequential streams never pile up sockets.
    assert peak <= fds + 8
    backend.close()
    assert settle(fds) <= fds  # an earlier test's socket may close meanwhile
    assert threading.active_count() <= threads


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_256_concurrent_async_streams_some_cancelled(server, protocol, resource_warnings) -> None:
    server.options.delay = 0.01  # keep streams open long enough to overlap and cancel
    gc.collect()
    fds, threads = open_fds(), threading.active_count()
    limit = 32
    backend = backend_for(protocol, server, max_connections=limit)
    peak = [0]

    async def one(i: int, first: asyncio.Event) -> str:
        text = ""
        async for delta in backend.agenerate_stream(f"n{i} {WORDS}"):
            text += delta.text
            first.set()
        return text

    async def sample(done: asyncio.Event) -> None:  # the client's sockets, every 20 ms
        while not done.is_set():
            peak[0] = max(peak[0], client_sockets(server.port))
            await asyncio.sleep(0.02)

    async def main() -> list[Any]:
        done = asyncio.Event()
        sampler = asyncio.create_task(sample(done))
        firsts = [asyncio.Event() for _ in range(256)]
        tasks = [asyncio.create_task(one(i, firsts[i])) for i in range(256)]
        for i in range(0, 256, 4):  # cancel a quarter midway, once they have data
            await asyncio.wait_for(firsts[i].wait(), 30)
            tasks[i].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        done.set()
        await sampler
        await backend.aclose()
        return results

    results = asyncio.run(main())
    for i, result in enumerate(results):
        if i % 4 == 0 and isinstance(result, asyncio.CancelledError):
            continue  # (a stream may finish before its cancel lands)
        assert result == f"Echo: n{i} {WORDS}"
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) >= 32
    # The pool limit holds: never more than `limit` client sockets to the server.
    assert 0 < peak[0] <= limit
    backend.close()
    assert settle(fds) <= fds  # an earlier test's socket may close meanwhile
    assert threading.active_count() <= threads


def test_backend_collected_while_its_loop_runs(server, resource_warnings) -> None:
    """A backend dropped in a reference cycle (e.g. held by an exception's traceback) must
    not take its aiohttp session down unclosed: the loop's shutdown still closes it."""

    async def main() -> None:
        backend = backend_for("openai", server)
        await backend.agenerate("x")
        cycle: list[Any] = [backend]
        cycle.append(cycle)
        del backend, cycle
        gc.collect()  # the cycle goes while the loop still runs
        await asyncio.sleep(0.05)

    asyncio.run(main())
