"""The sync stack's wire: an httpx transport whose connections are urllib3's.

httpx stays the interface — `httpx.Request` in, `httpx.Response` out, httpx's exception
classes out of every failure, and any `httpx.BaseTransport` may be injected instead of
this one — while urllib3 (the HTTP layer under requests and botocore, already installed
with langchain-core) moves the bytes. httpx's own transport parses HTTP/1.1 with h11, in
pure Python: on the benchmark machine 12-25 µs per chunk frame of a stream and ~4.4 ms
per 2 MB body; urllib3 reads through http.client's C-buffered reader: 2-3.5 µs per frame
and ~1 ms per 2 MB (bench/RESULTS.md, group (h)). Only HTTP/1.1 and http(s) proxies,
which is all this package uses.

Pool semantics are httpx's: at most `max_connections` connections at once (a request
waiting longer than the `pool` timeout for one fails with `httpx.PoolTimeout`), at most
`max_keepalive_connections` of them kept idle, none kept idle longer than the expiry.

Timeouts come from the request's `timeout` extension, as with httpx: `connect` bounds
connecting, `read` sending the request (urllib3 alone would send under `connect`), the wait
for the head and, read again when the body iteration starts, every read of the body (the
sync transport switches it to `idle` once the head has arrived, as it did for httpcore).
"""

from __future__ import annotations

import contextlib
import email.parser
import functools
import http.client
import time
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import httpx
import urllib3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    EmptyPoolError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import HTTPResponse

from langchain_matric._http._common import head_too_large
from langchain_matric._http._config import ClientSettings

__all__ = ["WireTransport"]

_NO_RETRY = urllib3.Retry(total=False, redirect=False)
"""What urllib3 makes of `retries=False`, made once (it logs each conversion at DEBUG)."""

_READ_SIZE = 1 << 20
"""Most bytes per read of a body without chunked framing (a read returns what has arrived)."""

MAX_INTERIM_RESPONSES = 32
"""Interim (1xx) heads skipped before one answer at most; more is a protocol error."""


class _FinalResponse(http.client.HTTPResponse):
    """http.client's response: every interim (1xx) head but `101` skipped; our head limits.

    `http.client` takes `102 Processing` or `103 Early Hints` for the answer: the caller
    would get "server returned 103" and the real answer would stay unread on a pooled
    connection, to be read as the next request's. Its header limits (100 lines of 64 KiB)
    are module globals, shared by the whole process: `begin` reads the head itself, under
    `max_header_line` / `max_header_lines` (`HTTPConfig`; the same on aiohttp's side).
    Installed per connection (`_KeptAlive._new_conn`, a subclass per pair of limits),
    never by patching the module.
    """

    max_line = 65536
    max_lines = 256

    def _read_status(self) -> tuple[str, int, str]:
        for skipped in range(MAX_INTERIM_RESPONSES + 1):
            try:
                version, status, reason = super()._read_status()  # type: ignore[misc]
            except ConnectionError as exc:
                if skipped:  # the request was received: not "closed without answering"
                    raise AnswerCutShort("the connection closed after an interim head") from exc
                raise
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            _read_fields(self.fp, self.max_line, self.max_lines)
        msg = f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses before the answer"
        raise http.client.HTTPException(msg)

    def begin(self) -> None:
        """`http.client.HTTPResponse.begin` (3.11-3.13), the head read under our limits."""
        started: Any = self.headers  # None until the head was read
        if started is not None:
            return
        version, status, reason = self._read_status()
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        lines = _read_fields(self.fp, self.max_line, self.max_lines)
        text = b"".join(lines).decode("iso-8859-1")
        parsed = email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)
        self.headers = self.msg = parsed
        coding = self.headers.get("transfer-encoding")
        self.chunked = coding is not None and coding.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None
            if self.headers.get("content-length") is not None:  # as aiohttp's parser does
                msg = "Content-Length together with chunked Transfer-Encoding: ambiguous framing"
                raise http.client.HTTPException(msg)
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            with contextlib.suppress(ValueError):
                self.length = int(length)
            if self.length is not None and self.length < 0:
                self.length = None
        if status in (204, 304) or 100 <= status < 200 or getattr(self, "_method", None) == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True

    def _check_close(self) -> bool:
        # After a `101 Switching Protocols` (never asked for) the connection speaks
        # another protocol: never pooled, whatever its `Connection` field says.
        return self.status == 101 or bool(super()._check_close())  # type: ignore[misc]


class AnswerCutShort(http.client.HTTPException):
    """The connection closed after an interim (1xx) head: an answer had begun."""


class HeadTooLarge(http.client.HTTPException):
    """A response head over `max_header_line` / `max_header_lines`; its text is the reason."""


def _read_fields(fp: Any, max_line: int, max_lines: int) -> list[bytes]:
    """A head's field lines up to its blank line (or the end of the stream), within limits."""
    lines = []
    for _ in range(max_lines + 1):
        line = fp.readline(max_line + 3)  # the line ending is not counted
        if len(line.rstrip(b"\r\n")) > max_line:
            raise HeadTooLarge(head_too_large("line", max_line))
        lines.append(line)
        if line in (b"\r\n", b"\n", b""):
            return lines
    raise HeadTooLarge(head_too_large("lines", max_lines))


class WireTransport(httpx.BaseTransport):
    """An `httpx.BaseTransport` over urllib3 connection pools, built from `ClientSettings`.

    Example:
        >>> import httpx
        >>> from langchain_matric._http import HTTPConfig
        >>> from langchain_matric._http._config import client_settings
        >>> transport = WireTransport(client_settings(HTTPConfig("http://127.0.0.1:8000")))
        >>> request = httpx.Request("GET", "http://127.0.0.1:8000/v1/models")
        >>> transport.handle_request(request).read()  # doctest: +SKIP
        b'{"object": "list", ...}'
        >>> transport.close()
    """

    def __init__(self, settings: ClientSettings) -> None:
        self._manager = _manager(settings)
        self._proxied = settings.proxy is not None
        self._pools: dict[tuple[str, str, int | None], HTTPConnectionPool] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; return once the head has arrived, the body still unread."""
        timeout = request.extensions.get("timeout", {})
        url = request.url
        options: dict[str, Any] = {
            "body": request.read() or None,
            "headers": _headers(request.headers),
            "retries": _NO_RETRY,  # retries are the sync transport's (`RetryPolicy`)
            "redirect": False,
            "assert_same_host": False,
            "preload_content": False,
            "decode_content": False,  # httpx decodes, as it does for its own transport
            "timeout": urllib3.Timeout(connect=timeout.get("connect"), read=timeout.get("read")),
            "pool_timeout": timeout.get("pool"),
        }
        with _httpx_errors():
            try:
                response = self._urlopen(request.method, url, options)
            except urllib3.exceptions.ProtocolError as exc:
                if not _stale(exc):
                    raise
                # A pooled connection the server had closed as it was reused, before any
                # byte of an answer: the request was not processed. Sent again at once on a
                # new connection, once, outside the retry policy (as curl and httpx do).
                if not self._proxied:
                    pool = self._pool(url)
                    if isinstance(pool, _KeptAlive):
                        pool.drop_idle()  # the other idle ones may be as stale
                response = self._urlopen(request.method, url, options)
        return httpx.Response(
            response.status,
            headers=list(response.headers.items()),
            stream=_Body(cast("HTTPResponse", response), timeout),
        )

    def _urlopen(self, method: str, url: httpx.URL, options: dict[str, Any]) -> Any:
        if self._proxied:  # the proxy manager adds absolute-form targets, tunnels, auth
            return self._manager.urlopen(method, str(url), **options)
        # Straight to the origin's pool: ~0.15 ms a request less than through the manager.
        return self._pool(url).urlopen(method, url.raw_path.decode("ascii"), **options)

    def _pool(self, url: httpx.URL) -> HTTPConnectionPool:
        """The origin's pool, remembered; asked of the manager again once it was closed."""
        key = (url.scheme, url.host, url.port)
        pool = self._pools.get(key)
        if pool is None or pool.pool is None:  # new origin, or closed (`close`, eviction)
            pool = self._pools[key] = self._manager.connection_from_host(
                url.host, url.port, url.scheme
            )
        return pool

    def close(self) -> None:
        """Close every pooled connection (a later request opens new ones)."""
        self._pools.clear()
        self._manager.clear()


def _headers(headers: httpx.Headers) -> dict[str, str] | urllib3.HTTPHeaderDict:
    """The request's fields for urllib3: a plain dict (cheaper), unless a name repeats."""
    items = headers.multi_items()
    fields = dict(items)
    if len(fields) == len(items):
        return fields
    repeated = urllib3.HTTPHeaderDict()
    for name, value in items:
        repeated.add(name, value)
    return repeated


class _Body(httpx.SyncByteStream):
    """A response body as it arrives: one item per chunk frame, or per read otherwise.

    Duck-typed where vcrpy's replay stub (an `http.client.HTTPResponse`, no connection,
    no chunked framing) comes through instead of urllib3's response.
    """

    def __init__(self, response: HTTPResponse, timeout: dict[str, Any]) -> None:
        self._response = response
        self._timeout = timeout

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        sock = getattr(getattr(response, "connection", None), "sock", None)
        idle = self._timeout.get("read")  # `idle` by now: see the module
        if sock is not None:
            sock.settimeout(idle)
        reads: Iterator[bytes]
        with _httpx_errors():
            if getattr(response, "chunked", False) and response.supports_chunked_reads():
                reads = response.read_chunked()  # undecoded: decode_content=False at open
            else:
                reads = iter(functools.partial(response.read1, _READ_SIZE), b"")
            end = self._timeout.get("end")
            if end is None or sock is None:
                yield from reads
            else:
                yield from _before(end, idle, sock, reads)

    def limit_reads(self, seconds: float) -> None:
        """Make every later read of this body wait at most `seconds`."""
        sock = getattr(getattr(self._response, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(seconds)

    def close(self) -> None:
        """Back to the pool when read to the end (urllib3 does that); else closed first."""
        response = self._response
        if getattr(response, "connection", None) is not None:  # still held: not read to the end
            response.close()
            response.release_conn()


def _before(end: float, idle: float | None, sock: Any, reads: Iterator[bytes]) -> Iterator[bytes]:
    """`reads`, each waiting at most until `end` (a `time.monotonic()` value) or `idle`.

    Only with a total timeout: a server that trickles bytes faster than `idle` would
    otherwise hold a read past the call's deadline. A read is one chunk frame (read whole,
    each receive bounded) or what one receive returns.
    """
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise httpx.ReadTimeout("the total timeout expired while reading the body")
        sock.settimeout(left if idle is None else min(idle, left))
        chunk = next(reads, None)
        if chunk is None:
            return
        yield chunk


_STALE = "matric_stale"
"""Set (True) on the exception of a reused connection that failed before any answer byte."""
_NOTHING_ARRIVED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
"""Failures of sending, or of reading the status line with nothing read: a server's FIN
(`http.client.RemoteDisconnected`, a `ConnectionResetError`) or RST."""


def _stale(exc: BaseException) -> bool:
    """Whether `exc` (urllib3 keeps the cause in `args`) comes from a stale pooled connection."""
    return any(getattr(err, _STALE, False) for err in exc.args if isinstance(err, BaseException))


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """urllib3's exceptions as the httpx ones they correspond to (the sync stack maps those)."""
    try:
        yield
    except EmptyPoolError as exc:
        raise httpx.PoolTimeout(str(exc)) from exc
    except NewConnectionError as exc:  # before its base class, ConnectTimeoutError
        raise httpx.ConnectError(str(exc)) from exc
    except ConnectTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc)) from exc
    except ReadTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc)) from exc
    except ProxyError as exc:
        raise httpx.ProxyError(str(exc)) from exc
    except SSLError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    except urllib3.exceptions.ProtocolError as exc:
        cause = exc.args[1] if len(exc.args) > 1 else None
        if isinstance(cause, TimeoutError):  # sending stalled: urllib3 calls it "aborted"
            raise httpx.WriteTimeout(str(exc)) from exc
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise httpx.TransportError(str(exc)) from exc


class _KeptAlive(HTTPConnectionPool):
    """A host's pool keeping at most `keep` idle connections, none idle over `expiry` s.

    It also sends each request under the read timeout (`first_byte`), as httpx's own
    transport did, where urllib3 sends under the connect timeout.
    """

    keep = 10
    expiry = 4.0

    response_class: type[_FinalResponse] = _FinalResponse

    def _new_conn(self) -> Any:
        conn: Any = super()._new_conn()
        conn.response_class = self.response_class  # this connection's only: _FinalResponse
        return conn

    def _make_request(self, conn: Any, method: str, url: str, *args: Any, **kw: Any) -> Any:
        timeout = kw.get("timeout")
        if isinstance(timeout, urllib3.Timeout):
            if conn.is_closed:  # connect now, under the connect timeout (urlopen maps errors)
                conn.timeout = timeout.connect_timeout
                conn.connect()
            # What urllib3 sends under is the "connect" timeout: make that the read one.
            read = timeout.read_timeout
            kw["timeout"] = urllib3.Timeout(connect=read, read=read)
        sock = conn.sock  # a socket that carried an answer before: a reused connection
        try:
            response = super()._make_request(conn, method, url, *args, **kw)
        except _NOTHING_ARRIVED as exc:
            if sock is not None and sock is getattr(conn, "matric_answered", None):
                setattr(exc, _STALE, True)  # see WireTransport.handle_request
            raise
        conn.matric_answered = sock
        return response

    def drop_idle(self) -> None:
        """Close the idle connections (a later request on one of them reconnects first)."""
        queue = self.pool
        if queue is None:
            return
        taken = []
        with contextlib.suppress(Exception):  # queue.Empty
            while True:
                taken.append(queue.get(block=False))
        for conn in taken:
            if conn is not None:
                conn.close()
            queue.put(conn, block=False)

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        idle_since = getattr(conn, "matric_idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > self.expiry:
            conn.close()  # reconnects when used
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None and conn.sock is not None:
            idle = self.pool.queue if self.pool is not None else ()
            if sum(1 for c in list(idle) if c is not None and c.sock is not None) >= self.keep:
                conn.close()
            conn.matric_idle_since = time.monotonic()
        super()._put_conn(conn)


class _KeptAliveTLS(_KeptAlive, HTTPSConnectionPool):
    """`_KeptAlive` for https, without urllib3's `InsecureRequestWarning` on every request.

    That warning is the only other thing `HTTPSConnectionPool._validate_conn` does;
    `verify=False` is the user's explicit choice, logged once by `HTTPConfig`.
    """

    def _validate_conn(self, conn: Any) -> None:
        HTTPConnectionPool._validate_conn(self, conn)
        if conn.is_closed:
            conn.connect()  # early, as urllib3 does, so TLS errors surface here


@functools.cache
def _pool_classes(
    keep: int, expiry: float, max_line: int, max_lines: int
) -> dict[str, type[HTTPConnectionPool]]:
    head = {"max_line": max_line, "max_lines": max_lines}
    response = type("FinalResponse", (_FinalResponse,), head)
    limits = {"keep": keep, "expiry": expiry, "response_class": response}
    return {
        "http": type("KeptAlive", (_KeptAlive,), limits),
        "https": type("KeptAliveTLS", (_KeptAliveTLS,), limits),
    }


def _manager(settings: ClientSettings) -> urllib3.PoolManager:
    pool_kw: dict[str, Any] = {
        "maxsize": settings.max_connections,
        "block": True,  # at most max_connections at once; waits up to the pool timeout
        "ssl_context": settings.ssl_context,
    }
    manager: urllib3.PoolManager
    if settings.proxy is None:
        manager = urllib3.PoolManager(**pool_kw)
    else:
        parts = urlsplit(settings.proxy)
        auth = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        manager = urllib3.ProxyManager(
            settings.proxy,
            proxy_headers=urllib3.make_headers(proxy_basic_auth=auth) if parts.username else None,
            proxy_ssl_context=settings.ssl_context if parts.scheme == "https" else None,
            **pool_kw,
        )
    manager.pool_classes_by_scheme = _pool_classes(
        settings.max_keepalive_connections,
        settings.keepalive_expiry,
        settings.max_header_line,
        settings.max_header_lines,
    )
    return manager
