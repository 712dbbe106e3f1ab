"""`LocalServer`: raw HTTP/1.1 on an asyncio loop in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from langchain_matric.testing._app import App, Response
from langchain_matric.testing._render import openai_error
from langchain_matric.testing._types import Fault, RecordedRequest, Reply, ServerOptions
from langchain_matric.testing._wire import LAST_FRAME, Drop, Stall, frame, frames, head

_log = logging.getLogger("langchain_matric.testing")
_MAX_HEAD = 64 * 1024


@dataclass(slots=True)
class _Parsed:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    consumed: int
    keep_alive: bool


def _chunked_body(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked request body starting at `pos`; None while incomplete."""
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n", pos)
            while end > pos:  # trailers
                pos = end + 2
                end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            return bytes(body), end + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


def _parse(buf: bytearray) -> _Parsed | None:
    """One request from the front of `buf`; None while incomplete; ValueError if malformed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > _MAX_HEAD:
            raise ValueError("request head too large")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        decoded = _chunked_body(buf, start)
        if decoded is None:
            return None
        body, consumed = decoded
    else:
        length = int(headers.get("content-length", "0"))
        if length < 0:
            raise ValueError("negative Content-Length")
        if len(buf) < start + length:
            return None
        body, consumed = bytes(buf[start : start + length]), start + length
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return _Parsed(method.upper(), target, headers, body, consumed, keep)


def _record(parsed: _Parsed) -> RecordedRequest:
    parts = urlsplit(parsed.target)
    body: Any = None
    if parsed.body:
        with contextlib.suppress(ValueError):
            body = json.loads(parsed.body)
    return RecordedRequest(
        method=parsed.method, path=parts.path or "/", query=dict(parse_qsl(parts.query)),
        headers=parsed.headers, json=body, body=parsed.body, time=time.time(),
    )  # fmt: skip


def _framed(response: Response) -> bytes | None:
    """The whole chunked body in one piece (cached), or None if it has stalls or drops."""
    if response.framed is None:
        parts = []
        for step in response.steps or ():
            if isinstance(step, Stall | Drop):
                return None
            parts.append(frame(step if isinstance(step, bytes) else step.data))
        parts.append(LAST_FRAME)
        response.framed = b"".join(parts)
    return response.framed


class _GoneError(Exception):
    """The client went away while we were writing."""


class _Connection(asyncio.Protocol):
    """One client connection: parse requests one at a time, write their responses."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.app = server._app
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.in_response = False
        self.closing = False
        self.resume: asyncio.Future[None] | None = None
        self.continued = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._dispatch()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._connections.discard(self)
        if self.in_response and not self.closing:
            self.app.disconnected()
        self.in_response = False
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        self.resume = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)
        self.resume = None

    def abort(self) -> None:
        """Close at server shutdown (not counted as a disconnect)."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    async def _drain(self) -> None:
        if self.resume is not None:
            await self.resume
        if self.closed:
            raise _GoneError

    def _dispatch(self) -> None:
        assert self.transport is not None
        try:
            parsed = _parse(self.buffer)
        except ValueError as exc:
            body = openai_error(400, f"Malformed HTTP request: {exc}")
            self.transport.write(head(400, [], content_type="application/json",
                                      length=len(body), keep_alive=False) + body)  # fmt: skip
            self.transport.close()
            return
        if parsed is None:
            if b"100-continue" in self.buffer.lower() and not self.continued:
                self.continued = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        del self.buffer[: parsed.consumed]
        self.continued = False
        self.task = self.loop.create_task(self._serve(parsed))

    async def _serve(self, parsed: _Parsed) -> None:
        keep_alive = parsed.keep_alive
        try:
            request = _record(parsed)
            rid = self.app.record(request)
            try:
                response = self.app.handle(request)
            except Exception:  # noqa: BLE001 - any bug becomes a 500, logged
                _log.exception("LocalServer failed on %s %s", parsed.method, parsed.target)
                response = Response(500, body=openai_error(500, "LocalServer internal error"))
            keep_alive = await self._write(response, rid, keep_alive=keep_alive)
        except (_GoneError, asyncio.CancelledError):
            return
        except Exception:  # noqa: BLE001 - a bug while writing: log it and hang up
            _log.exception("LocalServer failed writing %s %s", parsed.method, parsed.target)
            keep_alive = False
        finally:
            self.task = None
        if self.closed or self.transport is None:
            return
        if not keep_alive:
            self.transport.close()
        elif self.buffer:
            self._dispatch()

    async def _write(self, response: Response, rid: str, *, keep_alive: bool) -> bool:
        """Write `response`; returns whether the connection stays open."""
        transport = self.transport
        assert transport is not None
        headers = [("x-request-id", rid), *response.headers]
        self.in_response = True
        try:
            if response.steps is None:
                return await self._write_whole(response, headers, keep_alive=keep_alive)
            steps = response.steps
            style = response.style
            at = 0
            while at < len(steps) and isinstance(step := steps[at], Stall | Drop):
                if await self._control(step):  # before the head
                    return False
                at += 1
            transport.write(
                head(response.status, headers, content_type=response.content_type,
                     length=None, keep_alive=keep_alive)
            )  # fmt: skip
            framed = _framed(response) if style.chunk_size is None and not style.delay else None
            if framed is not None:
                transport.write(framed)
                await self._drain()
                return keep_alive
            first = True
            for step in steps[at:]:
                if isinstance(step, Stall | Drop):
                    if await self._control(step):
                        return False
                    continue
                if isinstance(step, bytes):
                    if style.delay and not first:
                        await asyncio.sleep(style.delay)
                    first = False
                data = step if isinstance(step, bytes) else step.data
                for piece in frames(data, style.chunk_size):
                    transport.write(piece)
                    await self._drain()
            transport.write(LAST_FRAME)
            await self._drain()
            return keep_alive
        finally:
            self.in_response = False

    async def _control(self, step: Stall | Drop) -> bool:
        """Run a stall, or hang up for a drop (returns True)."""
        if isinstance(step, Stall):
            await asyncio.sleep(step.seconds)
            return False
        await self._drain()
        self.in_response = False
        assert self.transport is not None
        self.transport.close()
        return True

    async def _write_whole(
        self, response: Response, headers: list[tuple[str, str]], *, keep_alive: bool
    ) -> bool:
        transport = self.transport
        assert transport is not None
        body = response.body
        fault = response.fault
        stall = fault.seconds if fault is not None and fault.kind == "stall" else None
        drop = fault is not None and fault.kind == "drop"
        early = fault is not None and fault.after == 0  # before the head
        if stall is not None and early:
            await asyncio.sleep(stall)
        if drop and early:
            return not await self._control(Drop())
        transport.write(
            head(response.status, headers, content_type=response.content_type,
                 length=len(body), keep_alive=keep_alive)
        )  # fmt: skip
        if drop:
            transport.write(body[: len(body) // 2])
            return not await self._control(Drop())
        if stall is not None and not early:
            await asyncio.sleep(stall)
        size = response.style.chunk_size or max(1, len(body))
        for i in range(0, len(body), size):
            transport.write(body[i : i + size])
            await self._drain()
        return keep_alive


class LocalServer:
    """A loopback server speaking the OpenAI-compatible and the Ollama native API.

    Starts on a free ``127.0.0.1`` port in a background thread. Generation requests get
    the next scripted `Reply` (FIFO), else the server option `default_reply`, else a
    request-driven answer (see the `langchain_matric.testing` docs). Queued `Fault`s
    apply first. Every request is recorded. Options are `ServerOptions` fields, given as
    keywords or as an instance; ``server.options`` may be changed while it runs.

    Example:
        >>> import httpx
        >>> from langchain_matric.testing import LocalServer, Reply
        >>> with LocalServer() as server:
        ...     server.script(Reply(text="Hello!"))
        ...     r = httpx.post(f"{server.openai_base_url}/chat/completions",
        ...                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        ...     r.json()["choices"][0]["message"]["content"]
        'Hello!'

    Also ``server.start()`` / ``server.stop()`` and ``async with LocalServer() as server``
    (start and stop are quick blocking calls).
    """

    def __init__(
        self,
        options: ServerOptions | None = None,
        /,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **overrides: Any,
    ) -> None:
        self._app = App(replace(options or ServerOptions(), **overrides))
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[_Connection] = set()

    def __repr__(self) -> str:
        where = f"{self._host}:{self._port}" if self._port is not None else "stopped"
        return f"LocalServer({where})"

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> LocalServer:
        """Start serving; returns self. Raises RuntimeError if already running."""
        if self._thread is not None:
            raise RuntimeError("LocalServer is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="matric-local-server", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close every connection and the listener, join the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._loop = self._thread = None
        self._port = None

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                loop.create_server(lambda: _Connection(self), self._host, self._requested_port)
            )
            self._port = server.sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - re-raised by start()
            failure.append(exc)
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown(server))
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            asyncio.set_event_loop(None)

    async def _shutdown(self, server: asyncio.Server) -> None:
        server.close()
        for connection in list(self._connections):
            connection.abort()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        for _ in range(3):  # let connection_lost callbacks run
            await asyncio.sleep(0)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LocalServer:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (RuntimeError when stopped)."""
        if self._port is None:
            raise RuntimeError("LocalServer is not running: call start() or use `with`")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self._host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def ollama_base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.url

    # -- scripting ------------------------------------------------------------------

    @property
    def options(self) -> ServerOptions:
        """Server-wide options (mutable while running)."""
        return self._app.options

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next generation requests, in order."""
        with self._app.lock:
            self._app.replies.extend(replies)

    def fault(self, *faults: Fault) -> None:
        """Queue faults; each applies to its next `times` matching requests."""
        with self._app.lock:
            self._app.faults.extend([f, f.times] for f in faults)

    @property
    def queued_replies(self) -> int:
        """Scripted replies not served yet."""
        with self._app.lock:
            return len(self._app.replies)

    @property
    def queued_faults(self) -> int:
        """Faults (counting each remaining use) not applied yet."""
        with self._app.lock:
            return sum(entry[1] for entry in self._app.faults)

    def clear(self) -> None:
        """Forget queued replies and faults, recorded requests and disconnects."""
        with self._app.lock:
            self._app.replies.clear()
            self._app.faults.clear()
            self._app.requests.clear()
            self._app.disconnects = 0

    # -- observation ----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received, oldest first."""
        with self._app.lock:
            return list(self._app.requests)

    @property
    def last_request(self) -> RecordedRequest:
        """The latest request (LookupError when none)."""
        with self._app.lock:
            if not self._app.requests:
                raise LookupError("LocalServer has received no request")
            return self._app.requests[-1]

    @property
    def disconnects(self) -> int:
        """Clients that closed their connection while a response was being written."""
        with self._app.lock:
            return self._app.disconnects

    def wait_for_disconnect(self, timeout: float = 5.0, count: int = 1) -> bool:
        """Wait until `count` disconnects were seen in all; False on timeout."""
        with self._app.changed:
            return self._app.changed.wait_for(lambda: self._app.disconnects >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until `count` requests were received in all; False on timeout."""
        with self._app.changed:
            return self._app.changed.wait_for(lambda: len(self._app.requests) >= count, timeout)


def local_server_fixture(
    name: str = "local_server", *, scope: str = "function", **options: Any
) -> Any:
    """A pytest fixture yielding a started `LocalServer` (pytest imported lazily).

    Example (in ``conftest.py``)::

        from langchain_matric.testing import local_server_fixture

        local_server = local_server_fixture("local_server", embedding_dim=16)
    """
    import pytest  # noqa: PLC0415 - only for users who ask for a fixture

    def _fixture() -> Iterator[LocalServer]:
        with LocalServer(**options) as server:
            yield server

    return pytest.fixture(scope=scope, name=name)(_fixture)  # type: ignore[call-overload]
