"""The sync transport: httpx's interface over urllib3's connections (`_wire`).

Timeouts: `connect` -> connecting; `first_byte` -> the read timeout for sending the request
and until the head; `idle` -> the read timeout for the body, set after the head arrived
by updating the request's `timeout` extension (the wire reads it when body iteration
starts, as httpcore does); `total` -> a deadline that clamps each of those and is checked
between body chunks.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import os
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any

import httpx
from urllib3.exceptions import InvalidChunkLength

from langchain_matric._http._common import (
    ERROR_BODY_LIMIT,
    Call,
    Deadline,
    Response,
    StreamResponse,
    TimeoutName,
    build_call,
    causes,
    config_secrets,
    connection_error,
    gave_up,
    parse_error,
    prepare,
    retry_delay,
    safe_cause,
    status_error,
    stream_error,
    timeout_error,
)
from langchain_matric._http._config import (
    ClientSettings,
    HTTPConfig,
    RedactURLs,
    client_settings,
)
from langchain_matric._http._wire import AnswerCutShort, HeadTooLarge, WireTransport
from langchain_matric._turns import current_turn
from langchain_matric.errors import BackendHTTPError, MatricError

for _name in ("httpx", "urllib3.connectionpool"):  # each logs every URL, `?api-key=` too
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, RedactURLs) for f in _logger.filters):
        _logger.addFilter(RedactURLs())


def new_pool(settings: ClientSettings) -> httpx.BaseTransport:
    """The connection pool for these settings (see `new_session` for aiohttp's)."""
    return WireTransport(settings)


@functools.lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """A call's URL, parsed once: a backend sends to a handful of URLs again and again."""
    return httpx.URL(url)


_ACCEPT_ENCODING = {"accept-encoding": "gzip, deflate"}
"""Asked by default, as httpx.Client and aiohttp do (httpx decodes both)."""


def _body(response: httpx.Response) -> Iterable[bytes]:
    """The body's chunks as they arrive, read from the transport's stream when it can be.

    `iter_bytes()` passes each chunk through a content decoder and two re-chunkers, which
    for an unencoded body change nothing and cost about a fifth of a 20,000-event stream's
    client time (bench/RESULTS.md). Encoded (gzip, br, ...) or already-read bodies, such as
    a replayed recording, go through `iter_bytes()`.
    """
    stream = response.stream
    if (
        isinstance(stream, httpx.SyncByteStream)
        and not response.is_stream_consumed
        and response.headers.get("content-encoding", "identity") == "identity"
    ):
        return stream
    return response.iter_bytes()


class _Phase:
    """Which timeout names apply to the current attempt, and where it is."""

    __slots__ = ("connect", "deadline", "first_byte", "idle", "in_body", "status", "streaming")

    def __init__(
        self, connect: TimeoutName, first_byte: TimeoutName, streaming: bool, deadline: Deadline
    ) -> None:
        self.connect = connect
        self.first_byte = first_byte
        self.deadline = deadline
        self.idle: TimeoutName = "idle"
        self.in_body = False
        self.status: int | None = None
        self.streaming = streaming


_NOT_UNREADABLE = (
    http.client.RemoteDisconnected,  # closed before answering
    http.client.IncompleteRead,  # closed before the end of the body
    http.client.ImproperConnectionState,  # the client's own state: no answer read
    AnswerCutShort,  # closed after an interim head
)


def unreadable(exc: BaseException) -> str | None:
    """The parser's reason, if `exc` says an answer arrived but could not be parsed or decoded.

    A closed connection (nothing, or not all, arrived) is no such case: `None`.
    """
    for err in causes(exc):
        if isinstance(err, httpx.DecodingError):  # gzip, deflate, ...
            return f"content decoding failed: {err}"
        if isinstance(err, HeadTooLarge):  # its text names the limit and the setting
            return str(err)
        if isinstance(err, InvalidChunkLength):  # before IncompleteRead, one of its bases
            return f"invalid chunk size line {err.length!r}"
        if isinstance(err, http.client.HTTPException) and not isinstance(
            err, _NOT_UNREADABLE
        ):  # a malformed status line or head, a header over the limits
            return f"{type(err).__name__}: {err}"
    return None


class SyncTransport:
    """HTTP for the sync code paths: a connection pool (`WireTransport`), created lazily.

    Requests go straight to the pool, an `httpx.BaseTransport`, not through an
    `httpx.Client` (a `transport=` given instead is used the same way): we
    build every URL and header ourselves, never follow redirects and keep no cookies, and
    the client's per-request machinery for those (URL and header merging, the auth and
    redirect loops, the cookie jar) cost about 0.3 ms a request (bench, case b). The pool
    is recreated after `os.fork()` and left out of pickles; `close()` may be called any
    number of times (a later call opens a new pool).

    Example:
        >>> transport = SyncTransport(HTTPConfig("http://127.0.0.1:11434"))
        >>> transport.request("GET", "/api/tags").json()  # doctest: +SKIP
        {'models': [...]}
        >>> with transport.stream("POST", "/api/chat", json={...}) as response:  # doctest: +SKIP
        ...     for chunk in response.iter_bytes(): ...
        >>> transport.close()
    """

    def __init__(self, config: HTTPConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self._setup(config, transport)

    def _setup(self, config: HTTPConfig, transport: httpx.BaseTransport | None) -> None:
        self.config = config
        self._injected = transport
        self._base = prepare(config)
        self._secrets = config_secrets(config, self._base[1])
        self._pool: httpx.BaseTransport | None = None
        self._proxy: str | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "transport": self._injected}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(state["config"], state["transport"])

    def __repr__(self) -> str:
        return f"SyncTransport({self.config!r})"

    def __enter__(self) -> SyncTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections (idempotent)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _get_pool(self) -> httpx.BaseTransport:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        if self._pid != os.getpid():  # forked: the parent's lock may be held forever
            self._lock = threading.Lock()
        with self._lock:
            if self._pool is not None and self._pid != os.getpid():
                # Inherited from the parent: closing drops only this process's copies of
                # the sockets (nothing is sent), then this process gets its own pool.
                self._pool.close()
                self._pool = None
            if self._pool is None:
                if self._injected is not None:
                    self._pool = self._injected
                else:
                    settings = client_settings(self.config)
                    self._proxy = settings.proxy
                    self._pool = new_pool(settings)
                self._pid = os.getpid()
            return self._pool

    def request(
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
        response, _ = self._send(call, Deadline(self.config.timeouts.total), stream=False)
        return Response(response.status_code, response.headers, response.content, call)

    @contextlib.contextmanager
    def request_in_turn(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> Iterator[Response]:
        """`request()`, whose body is read, and handed to the block, in this job's turn.

        Inside `taking_turns()` the turn is taken once the head has arrived (so waiting
        for answers overlaps) and held until the block ends; elsewhere this is `request()`.
        """
        call = build_call(
            self.config, self._base, method, path,
            json=json, params=params, extra_headers=headers, model=model,
        )  # fmt: skip
        turn = current_turn()
        deadline = Deadline(self.config.timeouts.total)
        response, _ = self._send(call, deadline, stream=False, turn=turn)
        try:
            yield Response(response.status_code, response.headers, response.content, call)
        finally:
            if turn is not None:
                turn.release()

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> Iterator[StreamResponse]:
        """Open a 2xx response and hand out its body as it arrives.

        Retries happen only while opening. Leaving the block early closes the connection,
        so the server sees the client go away.
        """
        call = build_call(
            self.config, self._base, method, path,
            json=json, params=params, extra_headers=headers, model=model,
        )  # fmt: skip
        deadline = Deadline(self.config.timeouts.total)
        response, phase = self._send(call, deadline, stream=True)
        chunks = self._chunks(response, call, phase, deadline)
        limit_reads = getattr(response.stream, "limit_reads", None)  # the wire's body has it
        try:
            yield StreamResponse(response.status_code, response.headers, call, chunks, limit_reads)
        finally:
            chunks.close()
            response.close()

    def _send(
        self, call: Call, deadline: Deadline, *, stream: bool, turn: threading.RLock | None = None
    ) -> tuple[httpx.Response, _Phase]:
        """Send `call` until it succeeds or may not be retried; with `turn`, return holding it."""
        attempt = 0
        while True:
            try:
                return self._attempt(call, deadline, stream=stream, turn=turn)
            except MatricError as error:
                delay = retry_delay(error, attempt, call, self.config, deadline)
                if delay is None:
                    gave_up(error, attempt)
                    raise
                self.config.sleep(delay)
                attempt += 1

    def _attempt(
        self, call: Call, deadline: Deadline, *, stream: bool, turn: threading.RLock | None
    ) -> tuple[httpx.Response, _Phase]:
        pool = self._get_pool()
        timeouts = self.config.timeouts
        connect, connect_name = deadline.clamp(timeouts.connect, "connect")
        first_byte, first_byte_name = deadline.clamp(timeouts.first_byte, "first_byte")
        phase = _Phase(connect_name, first_byte_name, stream, deadline)
        with self._errors(call, phase):
            deadline.check(call, self.config)
            timeout = {
                "connect": connect,
                "read": first_byte,
                "write": first_byte,
                "pool": deadline.remaining(),
                "end": deadline.end,  # the wire bounds every body read by it
            }
            request = httpx.Request(
                call.method,
                _parsed(call.url),
                headers={**_ACCEPT_ENCODING, **call.headers},
                content=call.body,
                extensions={"timeout": timeout},
            )
            response = pool.handle_request(request)
            response.request = request
        phase.status = response.status_code
        try:
            idle, phase.idle = deadline.clamp(timeouts.idle, "idle")
            phase.in_body = True
            # From here on, body reads wait at most `idle`: the wire takes the read timeout
            # from this dict when the body iteration starts.
            timeout["read"] = idle
            error = None if response.is_success else self._status_error(response, call)
            if error is None and not stream:
                if turn is not None:
                    turn.acquire()
                try:
                    with self._errors(call, phase):
                        response.read()
                    deadline.check(call, self.config)
                except BaseException:
                    if turn is not None:
                        turn.release()
                    raise
        except BaseException:
            response.close()
            raise
        if error is not None:
            raise error
        return response, phase

    def _chunks(
        self, response: httpx.Response, call: Call, phase: _Phase, deadline: Deadline
    ) -> Generator[bytes, None, None]:
        body = _body(response)
        with self._errors(call, phase):
            if deadline.end is None:
                yield from body
                return
            for chunk in body:
                deadline.check(call, self.config)
                yield chunk

    def _status_error(self, response: httpx.Response, call: Call) -> BackendHTTPError:
        body = bytearray()
        with contextlib.suppress(httpx.HTTPError):  # keep what arrived
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= ERROR_BODY_LIMIT:
                    break
        response.close()
        return status_error(call, response.status_code, body, response.headers, self._secrets)

    @contextlib.contextmanager
    def _errors(self, call: Call, phase: _Phase) -> Iterator[None]:
        """Translate httpx exceptions into ours: the one place this stack does."""
        try:
            yield
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                name = phase.connect
            elif isinstance(exc, httpx.PoolTimeout) or phase.deadline.expired():
                name = "total"
            else:
                name = phase.idle if phase.in_body else phase.first_byte
            raise timeout_error(call, name, self.config) from safe_cause(exc, call)
        except httpx.ProxyError as exc:
            raise connection_error(call, "proxy", exc, self._proxy) from safe_cause(exc, call)
        except httpx.ConnectError as exc:
            raise connection_error(call, "connect", exc) from safe_cause(exc, call)
        except httpx.HTTPError as exc:
            error: MatricError
            reason = unreadable(exc)
            if phase.in_body and phase.streaming:
                error = stream_error(call, exc, reason)
            elif reason is not None:
                error = parse_error(call, reason, phase.status)
            elif not phase.in_body and not any(isinstance(e, AnswerCutShort) for e in causes(exc)):
                error = connection_error(call, "no_answer", exc)
            else:
                error = connection_error(call, "lost", exc)
            raise error from safe_cause(exc, call)
