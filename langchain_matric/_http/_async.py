"""The async transport, on aiohttp (imported on first use, never at module import).

Timeouts: `connect` -> `ClientTimeout.sock_connect`; `first_byte` -> `sock_read` until the
head; `idle` -> the connection's read timeout, switched after the head through
`ResponseHandler.read_timeout` + `start_timeout()` (aiohttp re-arms that timer on every
received packet); `total` -> `ClientTimeout.total` = the time left of the call's deadline
(aiohttp enforces it while the body is read, too).

An aiohttp session belongs to its event loop: each loop gets its own, and each session is
closed by its loop's shutdown (see `_close_with_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from langchain_matric._http._common import (
    ERROR_BODY_LIMIT,
    AsyncStreamResponse,
    Call,
    Deadline,
    Response,
    TimeoutName,
    build_call,
    config_secrets,
    connection_error,
    gave_up,
    head_too_large,
    parse_error,
    prepare,
    retry_delay,
    safe_cause,
    status_error,
    stream_error,
    timeout_error,
)
from langchain_matric._http._config import ClientSettings, HTTPConfig, Timeouts, client_settings
from langchain_matric.errors import BackendHTTPError, MatricError

if TYPE_CHECKING:
    import aiohttp


def client_timeout(timeouts: Timeouts, total: float | None) -> aiohttp.ClientTimeout:
    """Build aiohttp timeouts, all explicit (its own default `total` of 300 s must never apply)."""
    import aiohttp  # noqa: PLC0415 - lazy by design

    return aiohttp.ClientTimeout(
        total=total, connect=None, sock_connect=timeouts.connect, sock_read=timeouts.first_byte
    )


@functools.cache
def _connector_class() -> type[aiohttp.TCPConnector]:
    """The connector: aiohttp's, never reusing a pooled connection with unread response bytes.

    aiohttp keeps reading a pooled connection while it is idle, so the bytes a server sends
    there (a second, unasked-for answer) are parsed and queued on it, and the next request
    on that connection would be handed them as its answer. Such a connection is closed when
    taken from the pool instead (`should_close`: queued messages, a body begun, an error),
    as urllib3 does on the sync stack.

    Its connections' protocol also hands a parser error that arrives after the head (a
    malformed chunk size) to the body being read: aiohttp sets it on the connection only,
    and drops the read timer, so the body read waited for `total` (or forever without it).

    Made once, on first use (aiohttp is imported lazily).
    """
    import aiohttp  # noqa: PLC0415 - lazy by design
    from aiohttp.client_proto import ResponseHandler  # noqa: PLC0415
    from aiohttp.http_exceptions import HttpProcessingError  # noqa: PLC0415

    class Handler(ResponseHandler):
        def set_exception(self, exc: BaseException, *args: Any, **kw: Any) -> None:
            payload = getattr(self, "_payload", None)
            super().set_exception(exc, *args, **kw)
            if (
                isinstance(exc, HttpProcessingError)  # the parser's: not a lost connection
                and payload is not None
                and not payload.is_eof()
                and payload.exception() is None
            ):
                payload.set_exception(aiohttp.ClientPayloadError(exc.message), exc)

        async def read(self) -> Any:  # each head (once per answer, interim ones too)
            item = await super().read()
            if 100 <= item[0].code < 200:  # an interim head: the request was received
                _INTERIM.set(True)
            return item

    class FreshConnector(aiohttp.TCPConnector):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            factory = getattr(self, "_factory", None)
            if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
                made = functools.partial(Handler, *factory.args, **factory.keywords)
                self._factory = cast("functools.partial[ResponseHandler]", made)

        async def _get(self, key: Any, *args: Any, **kw: Any) -> Any:
            idle = getattr(self, "_conns", {}).get(key)
            if idle:
                fresh = _FRESH.get()
                for item in [item for item in idle if fresh or item[0].should_close]:
                    idle.remove(item)
                    item[0].close()
            conn = await super()._get(key, *args, **kw)
            if conn is not None:
                _REUSED.set(True)
            return conn

    return FreshConnector


_REUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("matric_reused", default=False)
"""Whether the current attempt's connection came from the pool (set by the connector)."""
_FRESH: contextvars.ContextVar[bool] = contextvars.ContextVar("matric_fresh", default=False)
"""Set for the reconnect after a stale pooled connection: the pool's idle ones are closed."""
_INTERIM: contextvars.ContextVar[bool] = contextvars.ContextVar("matric_interim", default=False)
"""Whether the current attempt received an interim (1xx) head: an answer had begun."""


def new_session(settings: ClientSettings) -> aiohttp.ClientSession:
    """An `aiohttp.ClientSession` with exactly these settings (see `new_client` for httpx)."""
    import aiohttp  # noqa: PLC0415 - lazy by design

    connector = _connector_class()(
        ssl=settings.ssl_context,
        limit=settings.max_connections,
        limit_per_host=0,
        keepalive_timeout=settings.keepalive_expiry,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=client_timeout(settings.timeouts, settings.timeouts.total),
        proxy=settings.proxy,
        trust_env=False,  # the environment was read once, by client_settings()
        cookie_jar=aiohttp.DummyCookieJar(),  # stateless, as the httpx side (no client, no jar)
        # The head's limits, as the sync wire's (aiohttp's own: 8,190 bytes, 128 lines).
        max_line_size=settings.max_header_line,
        max_field_size=settings.max_header_line,
        max_headers=settings.max_header_lines,
    )
    # aiohttp silently resends an idempotent request once when any connection, fresh or
    # reused, drops before the answer; the transport resends any method once, only for a
    # reused connection (`AsyncTransport._send`), as the sync stack does: turn aiohttp's
    # off for identical attempts on both stacks. A private flag, hence the guard.
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Hold `session` until its event loop shuts down, then close it there.

    Once advanced, this generator is tracked by the running loop; `asyncio.run()` and
    `asyncio.Runner` finalise such generators (`loop.shutdown_asyncgens()`) while the loop
    still runs, so the session closes cleanly: no "Unclosed client session/connector" or
    "unclosed transport" ResourceWarning after the loop is gone.
    """
    try:
        yield
    finally:
        await session.close()


_LOOP_WATCHERS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, set[AsyncGenerator[None, None]]
] = weakref.WeakKeyDictionary()
"""Strong references from each loop to its sessions' watchers. Without them, a transport
garbage-collected (e.g. in a reference cycle) while its loop runs would take the watcher
with it: the session's `__del__` ("Unclosed client session") runs before the finaliser's
scheduled close. With them, the session lives until its loop shuts down, as documented."""


@dataclass(slots=True)
class _LoopClient:
    session: aiohttp.ClientSession
    watcher: AsyncGenerator[None, None]


def _read_idle(response: aiohttp.ClientResponse, idle: float | None) -> None:
    """After the head: bound the gaps between body chunks by `idle`, not `first_byte`.

    `sock_read` (here the first-byte timeout) lives on the connection's `ResponseHandler`,
    which re-arms its timer with `read_timeout` on every packet; set it and re-arm now.
    """
    connection = response.connection
    protocol = None if connection is None else connection.protocol
    if protocol is not None and not response.content.is_eof():
        protocol.read_timeout = idle
        protocol.start_timeout()


class _Watchdog:
    """A body's time bounds, independent of aiohttp's read timer and parser.

    aiohttp bounds body reads by its connection's read timer, which its parser may drop (a
    parser error after the head once left a read waiting forever). This timer, one per
    response, wakes every quarter of `idle` (and at the deadline): it ends the caller's
    pending read with the idle timeout when no byte arrived for `idle` while the caller
    waited (a caller busy elsewhere is not the server's silence), and with the total
    timeout at `end`. It counts bytes as aiohttp's reader already does (`total_bytes`):
    nothing is added per chunk. An idle stall is met within `idle` * 1.25.
    """

    __slots__ = ("_content", "_end", "_handle", "_idle", "_loop", "_quiet_since", "_seen")

    def __init__(self, content: Any, idle: float | None, end: float | None) -> None:
        self._content = content
        self._idle = idle
        self._end = end
        self._loop = asyncio.get_running_loop()
        self._seen = content.total_bytes
        self._quiet_since = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._arm(self._quiet_since)

    def _arm(self, now: float) -> None:
        wait = float("inf") if self._idle is None else self._idle / 4
        if self._end is not None:
            wait = min(wait, self._end - now)
        if wait != float("inf"):
            self._handle = self._loop.call_later(max(wait, 0.0), self._check)

    def _check(self) -> None:
        import aiohttp  # noqa: PLC0415 - loaded by now

        content = self._content
        if content.is_eof() or content.exception() is not None:
            return
        now = time.monotonic()
        if self._end is not None and now >= self._end:
            content.set_exception(TimeoutError("the total timeout expired reading the body"))
            return
        seen = content.total_bytes
        if seen != self._seen or getattr(content, "_waiter", None) is None:
            self._seen, self._quiet_since = seen, now  # bytes came, or nobody is waiting
        elif self._idle is not None and now - self._quiet_since >= self._idle:
            content.set_exception(aiohttp.ServerTimeoutError("no body bytes within idle"))
            return
        self._arm(now)

    def cancel(self) -> None:
        """Stop watching (the body was read, or the response is closed)."""
        if self._handle is not None:
            self._handle.cancel()


class _Phase:
    __slots__ = ("in_body", "stale", "status", "streaming", "watchdog")

    def __init__(self, streaming: bool) -> None:
        self.in_body = False
        self.stale = False
        """A reused connection failed before any byte of an answer (sent again at once)."""
        self.watchdog: _Watchdog | None = None
        self.status: int | None = None
        self.streaming = streaming


def unreadable(exc: BaseException, in_body: bool) -> str | None:
    """The parser's reason, if `exc` says an answer arrived but could not be parsed or decoded.

    aiohttp raises `ClientResponseError` for a head its parser refused (a malformed status
    line or framing, a header over its limits) and `ClientPayloadError` for a body it could
    not decode or de-chunk, or that a closed connection cut short ("not completed"), which
    is no such case: `None`.
    """
    import aiohttp  # noqa: PLC0415 - lazy by design

    if isinstance(exc, aiohttp.ClientResponseError) and not in_body:
        return exc.message
    if isinstance(exc, aiohttp.ClientPayloadError) and "not completed" not in str(exc):
        cause = exc.__cause__
        return getattr(cause, "message", None) or str(cause or exc)
    return None


def _head_limits(reason: str, config: HTTPConfig) -> str:
    """The reason aiohttp gives for a head over the limits, named as the sync wire names it."""
    if reason.startswith("Got more than "):  # LineTooLong: the status line or a field line
        return head_too_large("line", config.max_header_line)
    if "Too many headers" in reason:
        return head_too_large("lines", config.max_header_lines)
    return reason


class AsyncTransport:
    """HTTP for the async code paths: one `aiohttp.ClientSession` per event loop, made lazily.

    Sessions are left out of pickles and recreated after `os.fork()`. A session made under
    one `asyncio.run()` is closed when that loop shuts down; the next loop gets a new one.

    Example:
        >>> transport = AsyncTransport(HTTPConfig("http://127.0.0.1:11434"))
        >>> async def main():  # doctest: +SKIP
        ...     tags = (await transport.request("GET", "/api/tags")).json()
        ...     async with transport.stream("POST", "/api/chat", json={...}) as response:
        ...         async for chunk in response.aiter_bytes(): ...
        ...     await transport.aclose()
    """

    def __init__(self, config: HTTPConfig) -> None:
        self._setup(config)

    def _setup(self, config: HTTPConfig) -> None:
        self.config = config
        self._base = prepare(config)
        self._secrets = config_secrets(config, self._base[1])
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._proxy: str | None = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(state["config"])

    def __repr__(self) -> str:
        return f"AsyncTransport({self.config!r})"

    async def __aenter__(self) -> AsyncTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close this loop's session (idempotent); other running loops close their own."""
        loop = asyncio.get_running_loop()
        await self._drop(lambda key: key is loop or key.is_closed())

    async def _drop(self, which: Callable[[asyncio.AbstractEventLoop], bool]) -> None:
        for key in [k for k in list(self._clients) if which(k)]:  # list(): other threads
            entry = self._clients.pop(key, None)  # may use this transport with their loops
            if entry is not None:
                await entry.watcher.aclose()  # closes its session
                _LOOP_WATCHERS.get(key, set()).discard(entry.watcher)

    async def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            await self._forget_parent(loop)
        entry = self._clients.get(loop)
        if entry is not None and not entry.session.closed:
            return entry.session
        settings = client_settings(self.config)
        self._proxy = settings.proxy
        session = new_session(settings)
        watcher = _close_with_loop(session)
        await anext(watcher)  # now tracked by this loop, which will finalise it
        _LOOP_WATCHERS.setdefault(loop, set()).add(watcher)
        self._clients[loop] = _LoopClient(session, watcher)
        if entry is not None:
            await entry.watcher.aclose()
            _LOOP_WATCHERS[loop].discard(entry.watcher)
        # Loops closed without shutdown_asyncgens() (not asyncio.run): best effort.
        await self._drop(lambda key: key.is_closed())
        return session

    async def _forget_parent(self, loop: asyncio.AbstractEventLoop) -> None:
        """After `fork()` the sessions are the parent's: drop our copies of their sockets.

        Aborting (no TLS close_notify) leaves the parent's connections intact.
        """
        self._pid = os.getpid()
        clients, self._clients = self._clients, {}
        for key, entry in clients.items():
            connector = entry.session.connector
            entry.session.detach()
            if key is loop or key.is_closed():
                if connector is not None:
                    await connector.close(abort_ssl=True)
                await entry.watcher.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> Response:
        """Send a request and read the whole 2xx response (errors raise typed exceptions)."""
        call = build_call(
            self.config, self._base, method, path,
            json=json, params=params, extra_headers=headers, model=model,
        )  # fmt: skip
        response, content, _ = await self._send(call, Deadline(self.config.timeouts.total), True)
        return Response(response.status, response.headers, content, call)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AsyncStreamResponse]:
        """Open a 2xx response and hand out its body as it arrives.

        Retries happen only while opening. Leaving the block early closes the connection
        (`response.close()`, not `release()`), so the server sees the client go away.
        """
        call = build_call(
            self.config, self._base, method, path,
            json=json, params=params, extra_headers=headers, model=model,
        )  # fmt: skip
        response, _, phase = await self._send(call, Deadline(self.config.timeouts.total), False)
        chunks = self._chunks(response, call, phase)
        try:
            yield AsyncStreamResponse(response.status, response.headers, call, chunks)
        finally:
            if phase.watchdog is not None:
                phase.watchdog.cancel()
            await chunks.aclose()
            response.close()

    async def _send(
        self, call: Call, deadline: Deadline, read: bool
    ) -> tuple[aiohttp.ClientResponse, bytes, _Phase]:
        attempt = 0
        reconnected = False
        while True:
            phase = _Phase(streaming=not read)
            fresh = _FRESH.set(reconnected)
            try:
                return await self._attempt(call, deadline, phase)
            except MatricError as error:
                if phase.stale and not reconnected:
                    # The server closed a pooled connection as it was reused, before any
                    # byte of an answer: not processed. Sent again at once on a new
                    # connection, once, outside the retry policy (as curl and httpx do; the
                    # sync wire does the same).
                    reconnected = True
                    continue
                delay = retry_delay(error, attempt, call, self.config, deadline)
                if delay is None:
                    gave_up(error, attempt)
                    raise
                await self.config.asleep(delay)
                attempt += 1
            finally:
                _FRESH.reset(fresh)

    async def _attempt(
        self, call: Call, deadline: Deadline, phase: _Phase
    ) -> tuple[aiohttp.ClientResponse, bytes, _Phase]:
        from yarl import URL  # noqa: PLC0415 - lazy, with aiohttp

        session = await self._session()
        read = not phase.streaming
        _REUSED.set(False)
        _INTERIM.set(False)
        with self._errors(call, phase):
            deadline.check(call, self.config)
            response = await session.request(
                call.method,
                URL(call.url, encoded=True),  # already encoded by build_url: send as is
                data=call.body,
                headers=call.headers,
                allow_redirects=False,
                timeout=client_timeout(self.config.timeouts, deadline.remaining()),
            )
        try:
            phase.in_body = True
            phase.status = response.status
            _read_idle(response, self.config.timeouts.idle)
            ok = 200 <= response.status < 300
            error = None if ok else await self._status_error(response, call)
            content = b""
            if ok and not response.content.is_eof():
                idle, end = self.config.timeouts.idle, deadline.end
                if idle is not None or end is not None:
                    phase.watchdog = _Watchdog(response.content, idle, end)
            if ok and read:
                with self._errors(call, phase):
                    content = await response.read()
                if phase.watchdog is not None:
                    phase.watchdog.cancel()
        except BaseException:
            if phase.watchdog is not None:
                phase.watchdog.cancel()
            response.close()
            raise
        if error is not None:
            raise error
        return response, content, phase

    async def _chunks(
        self, response: aiohttp.ClientResponse, call: Call, phase: _Phase
    ) -> AsyncGenerator[bytes, None]:
        with self._errors(call, phase):
            async for chunk in response.content.iter_any():
                yield chunk

    async def _status_error(self, response: aiohttp.ClientResponse, call: Call) -> BackendHTTPError:
        import aiohttp  # noqa: PLC0415 - lazy by design

        body = bytearray()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):  # keep what arrived
            while len(body) < ERROR_BODY_LIMIT:
                chunk = await response.content.read(ERROR_BODY_LIMIT - len(body))
                if not chunk:
                    break
                body += chunk
        response.close()
        return status_error(call, response.status, body, response.headers, self._secrets)

    @contextlib.contextmanager
    def _errors(self, call: Call, phase: _Phase) -> Iterator[None]:
        """Translate aiohttp exceptions into ours: the one place this stack does."""
        import aiohttp  # noqa: PLC0415 - lazy by design

        _NOTHING_ARRIVED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)  # noqa: N806

        try:
            yield
        except aiohttp.ConnectionTimeoutError as exc:
            raise timeout_error(call, "connect", self.config) from safe_cause(exc, call)
        except aiohttp.ServerTimeoutError as exc:  # sock_read
            name: TimeoutName = "idle" if phase.in_body else "first_byte"
            raise timeout_error(call, name, self.config) from safe_cause(exc, call)
        except TimeoutError as exc:  # ClientTimeout.total
            raise timeout_error(call, "total", self.config) from safe_cause(exc, call)
        except (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError) as exc:
            raise connection_error(call, "proxy", exc, self._proxy) from safe_cause(exc, call)
        except aiohttp.ClientConnectorError as exc:
            raise connection_error(call, "connect", exc) from safe_cause(exc, call)
        except aiohttp.ClientError as exc:
            error: MatricError
            reason = unreadable(exc, phase.in_body)
            if reason is not None and not phase.in_body:
                reason = _head_limits(reason, self.config)
            if phase.in_body and phase.streaming:
                error = stream_error(call, exc, reason)
            elif reason is not None:
                error = parse_error(call, reason, phase.status)
            elif not phase.in_body and not _INTERIM.get():
                error = connection_error(call, "no_answer", exc)
                phase.stale = _REUSED.get() and isinstance(exc, _NOTHING_ARRIVED)
            else:
                error = connection_error(call, "lost", exc)
            raise error from safe_cause(exc, call)
