"""A raw-socket HTTP/1.1 fault server for the tests: scripted bytes, on loopback only.

`FaultServer` accepts connections on 127.0.0.1, reads each request (head and body) and
answers it with the next *answer* of its script: a sequence of raw `bytes` to send,
`Pause`s, and at most one final `CLOSE` (send FIN), `RESET` (abort with RST) or `HANG`
(stay silent until the server stops). An answer without a final action leaves the
connection open for the next request; a request that finds the script empty is answered by
closing its connection. What arrived is recorded in `received`, with the number of the
connection each request came on (reuse is visible as two requests on one connection).

It runs its own asyncio loop in a thread, so the sync stack (which blocks its caller) and
the async stack (on the test's loop) talk to it alike, and the same script can be played
against both (the differential tests). Everything is bounded in time: each wait for a
request by `read_timeout`, a `HANG` by the server's life, and `stop()` by `stop_timeout`.

Example:
    >>> import http.client
    >>> with FaultServer() as server:
    ...     server.play([interim(102), ok(b'{"n": 1}')])
    ...     connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    ...     connection.request("GET", "/x")
    ...     status = connection.getresponse().status  # http.client takes the 102 for the answer
    ...     connection.close()
    >>> status, server.received[0].target
    (102, '/x')
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final

__all__ = [
    "CLOSE",
    "HANG",
    "RESET",
    "Action",
    "FaultServer",
    "Pause",
    "Received",
    "chunked",
    "head",
    "interim",
    "ok",
]


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait `seconds` before the next action of an answer."""

    seconds: float


class _End:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CLOSE: Final = _End("CLOSE")
"""Close the connection (FIN) once the answer's bytes are sent."""
RESET: Final = _End("RESET")
"""Abort the connection (RST: SO_LINGER 0) once the answer's bytes are sent."""
HANG: Final = _End("HANG")
"""Send nothing more and keep the connection open until the server stops."""

Action = bytes | Pause | _End


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived."""

    connection: int
    """Which connection (0, 1, ... in the order they were accepted) carried it."""
    method: str
    target: str
    headers: dict[str, str]
    """Field names in lower case (a repeated name keeps its last value)."""
    body: bytes


def head(status: int = 200, reason: str = "", **headers: str | int) -> bytes:
    """A response head (status line and fields, no body); `_` in names becomes `-`."""
    lines = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Status')}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ok(body: bytes, status: int = 200, **headers: str | int) -> bytes:
    """A whole response with a `Content-Length` (JSON unless `content_type` says otherwise)."""
    headers.setdefault("content_type", "application/json")
    return head(status, content_length=len(body), **headers) + body


def chunked(*frames: bytes, status: int = 200, **headers: str | int) -> bytes:
    """A whole response in chunked framing, one chunk per frame, then the last chunk."""
    headers.setdefault("content_type", "application/json")
    body = b"".join(b"%x\r\n%s\r\n" % (len(frame), frame) for frame in frames if frame)
    return head(status, transfer_encoding="chunked", **headers) + body + b"0\r\n\r\n"


def interim(status: int = 103, **headers: str | int) -> bytes:
    """An interim (1xx) head, e.g. `103 Early Hints` with a `Link` field."""
    return head(status, **headers)


_REASONS = {
    100: "Continue",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    500: "Internal Server Error",
}


class FaultServer:
    """A loopback server playing scripted raw answers; see the module docstring.

    Example:
        >>> with FaultServer([[ok(b"{}")]]) as server:
        ...     server.url.startswith("http://127.0.0.1:")
        True
    """

    def __init__(
        self,
        script: Iterable[Sequence[Action]] = (),
        *,
        read_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self._script: deque[tuple[Action, ...]] = deque(tuple(a) for a in script)
        self.read_timeout = read_timeout
        self.stop_timeout = stop_timeout
        self.received: list[Received] = []
        """Every request, in arrival order."""
        self.connections = 0
        """Connections accepted so far."""
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The listening port (0 until started)."""
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self._port}"

    def play(self, *answers: Sequence[Action]) -> None:
        """Append answers to the script, one per request to come."""
        with self._lock:
            self._script.extend(tuple(answer) for answer in answers)

    def reset(self, *answers: Sequence[Action]) -> None:
        """Forget what was received and the answers left; the script becomes `answers`."""
        with self._lock:
            self.received.clear()
            self._script = deque(tuple(answer) for answer in answers)

    def __enter__(self) -> FaultServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Listen on an ephemeral loopback port; return once connections are accepted."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # reported to start() or stop()
                failure.append(exc)
                ready.set()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(self.stop_timeout) or failure:
            raise RuntimeError(f"the fault server did not start: {failure}")

    def stop(self) -> None:
        """Close every connection and the listener; wait (bounded) for the thread to end."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        stopping = self._stopping
        if stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own
                loop.call_soon_threadsafe(stopping.set)
        thread.join(self.stop_timeout)
        if thread.is_alive():
            raise RuntimeError("the fault server did not stop in time")
        self._loop = self._thread = None

    async def _serve(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with self._lock:
                number = self.connections
                self.connections += 1
            task = asyncio.get_running_loop().create_task(self._connection(number, reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        abort = False
        try:
            while True:
                request = await self._request(number, reader)
                if request is None:
                    return
                with self._lock:
                    self.received.append(request)
                    answer = self._script.popleft() if self._script else (CLOSE,)
                end = await self._answer(answer, writer)
                if end is RESET:
                    abort = True
                if end is not None:
                    return
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            abort = True
        finally:
            if abort:
                _abort(writer)
            else:
                writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _request(self, number: int, reader: asyncio.StreamReader) -> Received | None:
        """The next request, or None once the client closed the connection between requests."""
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        lines = raw.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await asyncio.wait_for(reader.readline(), self.read_timeout)
                size = int(size_line.split(b";")[0], 16)
                data = await asyncio.wait_for(reader.readexactly(size + 2), self.read_timeout)
                body += data[:-2]
                if size == 0:
                    await asyncio.wait_for(reader.readuntil(b"\r\n"), self.read_timeout)
                    break
        elif length := int(headers.get("content-length", "0")):
            body = await asyncio.wait_for(reader.readexactly(length), self.read_timeout)
        return Received(number, method, target, headers, body)

    async def _answer(self, answer: Sequence[Action], writer: asyncio.StreamWriter) -> _End | None:
        assert self._stopping is not None
        for action in answer:
            if isinstance(action, bytes):
                writer.write(action)
                await writer.drain()
            elif isinstance(action, Pause):
                await asyncio.sleep(action.seconds)
            elif action is HANG:
                await self._stopping.wait()
                return CLOSE
            else:
                return action
        return None


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
