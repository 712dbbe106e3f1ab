"""Transports (`langchain_matric._http`) against a scripted loopback server, sync and async."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import gzip
import json
import logging
import pickle
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import httpx
import pytest
import urllib3

from langchain_matric._http import (
    AsyncTransport,
    HTTPConfig,
    Response,
    RetryPolicy,
    SyncTransport,
    Timeouts,
    redact_url,
)
from langchain_matric._http._async import new_session
from langchain_matric._http._config import KEEPALIVE_EXPIRY, client_settings
from langchain_matric._http._sync import new_pool
from langchain_matric._http._wire import WireTransport
from langchain_matric._turns import current_turn, taking_turns
from langchain_matric.errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendHTTPError,
    BackendTimeoutError,
    BadRequestError,
    ConfigurationError,
    RateLimitError,
    ServerError,
    StreamError,
)

STALL = 30.0  # a stalled handler waits at most this long (teardown ends it at once)

# ---------------------------------------------------------------------------------------
# A scripted loopback server
# ---------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Behaviour = Callable[["_Handler", "Loopback"], None]


def reply(status: int = 200, body: bytes | str = b"{}", **headers: str) -> Behaviour:
    data = body.encode() if isinstance(body, str) else body
    headers.setdefault("content_type", "application/json")

    def run(h: _Handler, srv: Loopback) -> None:
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name.replace("_", "-"), value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return run


def chunks(*parts: bytes, delay: float = 0.0, then: str = "end") -> Behaviour:
    """Chunked body; then "end" (clean), "drop" (close mid-body), "stall", or "forever"."""

    def write(h: _Handler, data: bytes) -> None:
        h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        h.wfile.flush()

    def run(h: _Handler, srv: Loopback) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.flush()
        for part in parts:
            srv.stop.wait(delay)
            write(h, part)
        if then == "end":
            h.wfile.write(b"0\r\n\r\n")
        elif then == "drop":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
        elif then == "stall":
            srv.stop.wait(STALL)
            h.close_connection = True
        elif then == "forever":
            try:
                while not srv.stop.is_set():
                    write(h, b"data: tick\n\n")
                    srv.stop.wait(0.02)
            except OSError:
                srv.disconnected.set()
            h.close_connection = True

    return run


def stall_head(h: _Handler, srv: Loopback) -> None:
    srv.stop.wait(STALL)
    h.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        owner = self.server.owner
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        behaviour = owner.next_behaviour(seen)
        try:
            behaviour(self, owner)
        except OSError:
            self.close_connection = True

    do_GET = do_POST = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: Loopback) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner
        self.conns: list[socket.socket] = []

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        self.conns.append(conn)
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class Loopback:
    """`script(path, *behaviours)`: each request takes the next behaviour; the last repeats."""

    scripts: dict[str, list[Behaviour]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, path: str, *behaviours: Behaviour) -> str:
        self.scripts[path] = list(behaviours)
        return path

    def next_behaviour(self, seen: Seen) -> Behaviour:
        with self.lock:
            self.seen.append(seen)
            script = self.scripts.get(seen.path.partition("?")[0]) or [reply(404, "{}")]
            return script.pop(0) if len(script) > 1 else script[0]

    def hits(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path.partition("?")[0] == path)


@contextlib.contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[tuple[Loopback, str]]:
    owner = Loopback()
    srv = _Server(owner)
    if tls is not None:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield owner, f"{'https' if tls else 'http'}://127.0.0.1:{srv.server_address[1]}"
    owner.stop.set()
    srv.shutdown()
    for conn in srv.conns:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    srv.server_close()
    thread.join()


@pytest.fixture
def server() -> Iterator[tuple[Loopback, str]]:
    with serve() as running:
        yield running


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file), made by openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
               "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
               "-addext", "subjectAltName=IP:127.0.0.1"]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[str, str]) -> Iterator[tuple[Loopback, str]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with serve(context) as running:
        yield running


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: new connections hang until they time out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.05)
    yield port
    for s in fillers:
        s.close()
    listener.close()


# ---------------------------------------------------------------------------------------
# One facade over both transports, so each scenario runs sync and async
# ---------------------------------------------------------------------------------------


class Client:
    def __init__(self, kind: str, config: HTTPConfig) -> None:
        self.kind = kind
        self.sync = SyncTransport(config)
        self.aio = AsyncTransport(config)

    async def request(self, method: str, path: str, **kw: Any) -> Response:
        if self.kind == "sync":
            return self.sync.request(method, path, **kw)
        return await self.aio.request(method, path, **kw)

    async def stream(
        self, method: str, path: str, *, take: int | None = None, **kw: Any
    ) -> list[bytes]:
        """Read the streamed body (stop after `take` chunks: leave the block early)."""
        got: list[bytes] = []
        if self.kind == "sync":
            with self.sync.stream(method, path, **kw) as response:
                assert response.status == 200
                for chunk in response.iter_bytes():
                    got.append(chunk)
                    if take is not None and len(got) >= take:
                        break
            return got
        async with self.aio.stream(method, path, **kw) as aresponse:
            assert aresponse.status == 200
            async for chunk in aresponse.aiter_bytes():
                got.append(chunk)
                if take is not None and len(got) >= take:
                    break
        return got

    async def close(self) -> None:
        self.sync.close()
        await self.aio.aclose()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_config(base_url: str, sleeps: list[float], **kw: Any) -> HTTPConfig:
    async def asleep(delay: float) -> None:
        sleeps.append(delay)

    kw.setdefault("retry", RetryPolicy(max_retries=2, jitter=0.0))
    return HTTPConfig(base_url, sleep=sleeps.append, asleep=asleep, random=lambda: 0.0, **kw)


@pytest.fixture(params=["sync", "async"])
async def connect(
    request: pytest.FixtureRequest, sleeps: list[float]
) -> AsyncIterator[Callable[..., Client]]:
    made: list[Client] = []

    def factory(base_url: str, **kw: Any) -> Client:
        made.append(Client(request.param, make_config(base_url, sleeps, **kw)))
        return made[-1]

    yield factory
    for client in made:
        await client.close()


# ---------------------------------------------------------------------------------------
# Success paths
# ---------------------------------------------------------------------------------------


async def test_json_request_sends_body_headers_and_params(server, connect) -> None:
    srv, url = server
    srv.script(
        "/v1/echo", reply(200, '{"ok": true}', content_type="application/json; charset=utf-8")
    )
    client = connect(
        url + "/v1/", params={"api-version": "2024"}, headers={"Authorization": "Bearer k"}
    )
    response = await client.request(
        "post", "/echo", json={"text": "é"}, params={"x": "1"}, headers={"X-Extra": "1"}
    )
    assert response.json() == {"ok": True}
    assert (response.status, response.content_type) == (200, "application/json")
    assert response.headers["Content-Type"].startswith("application/json")
    seen = srv.seen[0]
    assert (seen.method, seen.path) == ("POST", "/v1/echo?api-version=2024&x=1")
    assert seen.body == '{"text":"é"}'.encode()
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"].startswith("langchain-matric/")
    assert (seen.headers["authorization"], seen.headers["x-extra"]) == ("Bearer k", "1")


async def test_url_credentials_become_basic_auth(server, connect) -> None:
    srv, url = server
    srv.script("/x", reply())
    await connect(url.replace("http://", "http://bob:s%40cret@")).request("GET", "/x")
    assert srv.seen[0].headers["authorization"] == "Basic Ym9iOnNAY3JldA=="  # bob:s@cret


async def test_stream_yields_chunks(server, connect) -> None:
    srv, url = server
    srv.script("/s", chunks(b"a", b"b", b"c", delay=0.01))
    assert b"".join(await connect(url).stream("POST", "/s", json={})) == b"abc"


async def test_non_json_body_names_content_type_and_base_url(server, connect) -> None:
    srv, url = server
    srv.script("/page", reply(200, "<html>login</html>", content_type="text/html"))
    response = await connect(url).request("GET", "/page")
    with pytest.raises(BackendHTTPError) as info:
        response.json()
    assert info.value.status == 200
    assert "text/html" in str(info.value) and "<html>login</html>" in str(info.value)
    assert "base_url" in str(info.value)


# ---------------------------------------------------------------------------------------
# Status errors and retries
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_retryable_status_is_retried_max_retries_times(
    server, connect, sleeps, status
) -> None:
    srv, url = server
    srv.script("/r", reply(status, '{"error": "busy"}'))
    with pytest.raises(BackendHTTPError) as info:
        await connect(url).request("POST", "/r", json={})
    assert info.value.status == status and "busy" in str(info.value)
    assert srv.hits("/r") == 3
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 501, 302])
async def test_other_statuses_are_not_retried(server, connect, sleeps, status) -> None:
    srv, url = server
    srv.script("/r", reply(status, '{"error": "no"}', location="/elsewhere"))
    with pytest.raises(BackendHTTPError) as info:
        await connect(url).request("POST", "/r", json={}, model="m")
    assert info.value.status == status
    assert srv.hits("/r") == 1 and sleeps == []


async def test_status_maps_to_typed_error(server, connect) -> None:
    srv, url = server
    srv.script("/a", reply(401, '{"error": {"message": "bad key"}}'))
    with pytest.raises(AuthenticationError, match="bad key"):
        await connect(url).request("GET", "/a")


async def test_retry_then_success(server, connect, sleeps) -> None:
    srv, url = server
    srv.script("/r", reply(503), reply(502), reply(200, '{"n": 3}'))
    assert (await connect(url).request("GET", "/r")).json() == {"n": 3}
    assert srv.hits("/r") == 3 and len(sleeps) == 2


@pytest.mark.parametrize(("header", "expected"), [("1", 1.0), ("100", 3.0)])
async def test_retry_after_is_honoured_up_to_the_cap(
    server, connect, sleeps, header, expected
) -> None:
    srv, url = server
    srv.script("/r", reply(429, '{"error": "slow down"}', retry_after=header))
    client = connect(url, retry=RetryPolicy(max_retries=2, retry_after_max=3.0))
    with pytest.raises(RateLimitError):
        await client.request("GET", "/r")
    assert sleeps == [expected, expected]


async def test_no_retry_when_the_delay_would_pass_the_total_deadline(
    server, connect, sleeps
) -> None:
    srv, url = server
    srv.script("/r", reply(429, retry_after="50"))
    client = connect(url, timeouts=Timeouts(total=5.0), retry=RetryPolicy(retry_after_max=60))
    with pytest.raises(RateLimitError):
        await client.request("GET", "/r")
    assert srv.hits("/r") == 1 and sleeps == []


async def test_retries_are_logged_without_secrets(server, connect, caplog) -> None:
    srv, url = server
    srv.script("/r", reply(503))
    client = connect(
        url.replace("http://", "http://user:hunter2@"),
        headers={"Authorization": "Bearer sk-header"},
        params={"api-key": "sk-param"},
    )
    caplog.set_level(logging.DEBUG, logger="langchain_matric")
    with pytest.raises(ServerError) as info:
        await client.request("GET", "/r")
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert "GET" in retries[0].getMessage() and "HTTP 503" in retries[0].getMessage()
    text = caplog.text + "".join(traceback.format_exception(info.value)) + repr(client.sync)
    for secret in ("hunter2", "sk-header", "sk-param"):
        assert secret not in text
    assert "uthorization" not in caplog.text  # not even header names are logged
    assert "api-key=***" in str(info.value)


# ---------------------------------------------------------------------------------------
# Connection failures and timeouts
# ---------------------------------------------------------------------------------------


async def test_connection_refused_is_retried_then_raised(connect, closed_port, sleeps) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(BackendConnectionError) as info:
        await connect(url).request("POST", "/v1/x", json={})
    message = str(info.value)
    assert f"POST {url}/v1/x" in message and "connection refused" in message
    assert "Is the server running? Check `base_url`" in message
    assert len(sleeps) == 2
    assert info.value.__cause__ is not None


async def test_connect_timeout(connect, blackhole, sleeps) -> None:
    client = connect(f"http://127.0.0.1:{blackhole}", timeouts=Timeouts(connect=0.2))
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError) as info:
        await client.request("GET", "/x")
    assert "connect timeout (0.2 s)" in str(info.value) and "Timeouts.connect" in str(info.value)
    assert len(sleeps) == 2  # connect timeouts are retried
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("retry_reads", [False, True])
async def test_first_byte_timeout(server, connect, sleeps, retry_reads) -> None:
    srv, url = server
    srv.script("/slow", stall_head)
    retry = RetryPolicy(max_retries=2, jitter=0, retry_read_timeouts=retry_reads)
    client = connect(url, timeouts=Timeouts(first_byte=0.2), retry=retry)
    with pytest.raises(BackendTimeoutError) as info:
        await client.request("POST", "/slow", json={})
    assert "first-byte timeout (0.2 s)" in str(info.value)
    assert "Timeouts.first_byte" in str(info.value)
    assert srv.hits("/slow") == (3 if retry_reads else 1)
    assert info.value.is_retryable is retry_reads


async def test_first_byte_timeout_in_stream(server, connect) -> None:
    srv, url = server
    srv.script("/slow", stall_head)
    with pytest.raises(BackendTimeoutError, match="first-byte timeout"):
        await connect(url, timeouts=Timeouts(first_byte=0.2)).stream("GET", "/slow")


async def test_idle_timeout_while_streaming(server, connect) -> None:
    srv, url = server
    srv.script("/s", chunks(b"first", then="stall"))
    got: list[bytes] = []
    client = connect(url, timeouts=Timeouts(first_byte=30, idle=0.2))
    with pytest.raises(BackendTimeoutError) as info:
        got.extend(await client.stream("GET", "/s"))
    assert "idle timeout between body chunks (0.2 s)" in str(info.value)
    assert "Timeouts.idle" in str(info.value)
    assert srv.hits("/s") == 1


async def test_idle_timeout_while_reading_a_whole_body(server, connect) -> None:
    srv, url = server
    srv.script("/s", chunks(b"{", then="stall"))
    client = connect(url, timeouts=Timeouts(first_byte=30, idle=0.2))
    with pytest.raises(BackendTimeoutError, match="idle timeout"):
        await client.request("GET", "/s")
    assert srv.hits("/s") == 1


async def test_total_timeout_while_streaming(server, connect) -> None:
    srv, url = server
    srv.script("/s", chunks(then="forever"))
    client = connect(url, timeouts=Timeouts(idle=30, total=0.4))
    with pytest.raises(BackendTimeoutError) as info:
        await client.stream("GET", "/s")
    assert "total timeout (0.4 s)" in str(info.value) and "Timeouts.total" in str(info.value)
    assert info.value.is_retryable is False


async def test_drop_mid_stream_is_a_stream_error_and_not_retried(server, connect, sleeps) -> None:
    srv, url = server
    srv.script("/s", chunks(b"a", b"b", then="drop"))
    with pytest.raises(StreamError, match="connection lost mid-stream") as info:
        await connect(url).stream("POST", "/s", json={})
    assert info.value.partial == "" and info.value.is_retryable is False
    assert srv.hits("/s") == 1 and sleeps == []


async def test_drop_while_reading_a_whole_body_is_not_retried(server, connect, sleeps) -> None:
    """The head and part of the body arrived: the server ran the request (a generation,
    perhaps), so sending it again would run it again. A typed error after one request."""
    srv, url = server
    srv.script("/s", chunks(b'{"a":', then="drop"))
    with pytest.raises(BackendConnectionError, match="lost while reading") as info:
        await connect(url).request("GET", "/s")
    assert srv.hits("/s") == 1 and sleeps == []
    assert info.value.is_retryable is False and "Not sent again" in str(info.value)


async def test_stream_retries_only_while_opening(server, connect, sleeps) -> None:
    srv, url = server
    srv.script("/s", reply(503), chunks(b"x", b"y"))
    assert b"".join(await connect(url).stream("GET", "/s")) == b"xy"
    assert srv.hits("/s") == 2 and sleeps == [0.5]


async def test_leaving_a_stream_early_closes_the_connection(server, connect) -> None:
    srv, url = server
    srv.script("/s", chunks(then="forever"))
    got = await connect(url).stream("GET", "/s", take=1)
    assert got
    assert await asyncio.to_thread(srv.disconnected.wait, 10)


async def test_server_closing_before_answering_is_a_connection_error(server, connect) -> None:
    srv, url = server

    def hang_up(h: _Handler, _: Loopback) -> None:
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    srv.script("/x", hang_up)
    with pytest.raises(BackendConnectionError, match="closed the connection without answering"):
        await connect(url).request("GET", "/x")
    assert srv.hits("/x") == 1  # the request reached the server: not sent again


# ---------------------------------------------------------------------------------------
# Lifecycle: loops, pickling, fork
# ---------------------------------------------------------------------------------------


def test_close_is_idempotent(server) -> None:
    srv, url = server
    srv.script("/x", reply())
    transport = SyncTransport(HTTPConfig(url))
    transport.close()
    with transport:
        transport.request("GET", "/x")
    transport.close()
    assert transport._pool is None


def test_sync_transport_pickles_without_its_pool(server) -> None:
    srv, url = server
    srv.script("/x", reply(200, '{"a": 1}'))
    with SyncTransport(HTTPConfig(url, headers={"Authorization": "Bearer k"})) as transport:
        transport.request("GET", "/x")
        assert transport._pool is not None
        with pickle.loads(pickle.dumps(transport)) as clone:
            assert clone._pool is None and clone.config == transport.config
            assert clone.request("GET", "/x").json() == {"a": 1}


def test_sync_pool_is_recreated_after_fork(server) -> None:
    srv, url = server
    srv.script("/x", reply())
    transport = SyncTransport(HTTPConfig(url))
    transport.request("GET", "/x")
    parent_pool = transport._pool
    assert isinstance(parent_pool, WireTransport)
    assert len(_idle(parent_pool)) == 1
    transport._pid = -1  # as if this were a forked child
    transport.request("GET", "/x")
    assert transport._pool is not parent_pool
    assert _idle(parent_pool) == []  # closed: this process's copies dropped
    transport.close()


# ---------------------------------------------------------------------------------------
# Settings parity, TLS, redaction
# ---------------------------------------------------------------------------------------


async def test_both_stacks_get_identical_settings(tmp_path) -> None:
    config = HTTPConfig(
        "https://127.0.0.1:1",
        timeouts=Timeouts(connect=1.5, first_byte=2.5, idle=3.5, total=99.0),
        proxy="http://127.0.0.1:3128",
        max_connections=7,
        max_keepalive_connections=3,
    )
    settings = client_settings(config)
    pool = new_pool(settings)
    session = new_session(settings)
    try:
        assert session.timeout == aiohttp.ClientTimeout(
            total=99.0, connect=None, sock_connect=1.5, sock_read=2.5
        )
        assert isinstance(pool, WireTransport)
        manager = pool._manager
        assert isinstance(manager, urllib3.ProxyManager)
        assert manager.proxy is not None and manager.proxy.host == "127.0.0.1"
        kw = manager.connection_pool_kw
        assert kw["ssl_context"] is settings.ssl_context
        assert (kw["maxsize"], kw["block"]) == (7, True)  # at most 7 connections at once
        https = manager.pool_classes_by_scheme["https"]
        assert (https.keep, https.expiry) == (3, settings.keepalive_expiry)  # type: ignore[attr-defined]
        connector = session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert connector._ssl is settings.ssl_context
        assert (connector.limit, connector.limit_per_host) == (7, 0)
        assert connector._keepalive_timeout == settings.keepalive_expiry
        assert str(session._default_proxy) == "http://127.0.0.1:3128"
        assert session.trust_env is False
        assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)  # httpx side: no jar
    finally:
        pool.close()
        await session.close()


def test_sync_requests_carry_the_configured_timeouts() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions["timeout"]))
        return httpx.Response(200, json={})

    config = HTTPConfig("http://h", timeouts=Timeouts(connect=1.5, first_byte=2.5, idle=3.5))
    with SyncTransport(config, transport=httpx.MockTransport(handler)) as transport:
        transport.request("GET", "/x")
    assert seen == [{"connect": 1.5, "read": 2.5, "write": 2.5, "pool": None, "end": None}]


def test_sync_transport_keeps_no_cookies(server) -> None:
    # httpx.Client would send this cookie back; aiohttp's side has a DummyCookieJar (above).
    srv, url = server
    srv.script("/set", reply(200, "{}", **{"Set-Cookie": "session=abc; Path=/"}))
    srv.script("/next", reply())
    with SyncTransport(HTTPConfig(url)) as transport:
        transport.request("GET", "/set")
        transport.request("GET", "/next")
    [sent] = [seen.headers for seen in srv.seen if seen.path == "/next"]
    assert "cookie" not in {name.lower() for name in sent}


async def test_tls_certificate_is_checked(tls_server, connect, certificate) -> None:
    srv, url = tls_server
    srv.script("/x", reply(200, '{"tls": true}'))
    with pytest.raises(BackendConnectionError) as info:
        await connect(url).request("GET", "/x")
    assert "TLS certificate verification failed" in str(info.value)
    assert "Check `verify`" in str(info.value)
    assert (await connect(url, verify=certificate[0]).request("GET", "/x")).json() == {"tls": True}
    assert (await connect(url, verify=False).request("GET", "/x")).json() == {"tls": True}


def test_one_ssl_context_is_shared_and_verify_false_disables_checks() -> None:
    a = client_settings(HTTPConfig("https://h", verify=False)).ssl_context
    b = client_settings(HTTPConfig("https://h", verify=False)).ssl_context
    assert a is b and a.check_hostname is False


def test_proxy_from_environment_unless_bypassed(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "proxy.local:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert client_settings(HTTPConfig("https://api.x")).proxy == "http://proxy.local:3128"
    assert client_settings(HTTPConfig("https://api.x", trust_env=False)).proxy is None
    monkeypatch.setenv("NO_PROXY", "api.x")
    assert client_settings(HTTPConfig("https://api.x")).proxy is None
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.local:1080")
    with pytest.raises(ConfigurationError, match="only http and https proxies"):
        client_settings(HTTPConfig("https://other.y"))


def test_verify_false_logs_one_warning(caplog, server) -> None:
    srv, url = server
    srv.script("/x", reply())
    caplog.set_level(logging.WARNING, logger="langchain_matric")
    config = HTTPConfig(url, verify=False)
    transport = SyncTransport(config)
    transport.request("GET", "/x")
    AsyncTransport(config)
    transport.close()
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://u:p@h:1/v1?api-key=abc&x=1", "http://h:1/v1?api-key=***&x=1"),
        (
            "https://h/v1?key=a&token=b&sig=c&api_key=d&Password=e",
            "https://h/v1?key=***&token=***&sig=***&api_key=***&Password=***",
        ),
        (
            "https://h/?access_token=a&signature=b&secret=c&api-version=2",
            "https://h/?access_token=***&signature=***&secret=***&api-version=2",
        ),
        ("http://token@h/p", "http://h/p"),
        ("http://h/p", "http://h/p"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_config_repr_hides_secrets() -> None:
    config = HTTPConfig(
        "https://user:pw@h/v1",
        headers={"Authorization": "Bearer A", "api-key": "B", "X-Api-Key": "C", "X-Token": "D",
                 "Cookie": "E", "X-Trace": "visible"},
        params={"api-version": "1", "api-key": "F"},
        proxy="http://proxyuser:G@proxy:1",
    )  # fmt: skip
    text = repr(config) + repr(SyncTransport(config)) + repr(AsyncTransport(config))
    for secret in ("pw", "Bearer A", "'B'", "'C'", "'D'", "'E'", "'F'", ":G@"):
        assert secret not in text
    assert "visible" in text and "api-version" in text


def test_import_does_not_import_aiohttp() -> None:
    code = "import sys, langchain_matric._http; assert 'aiohttp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------
# Pure pieces and validation
# ---------------------------------------------------------------------------------------


def test_retry_policy_delay() -> None:
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=3.0, jitter=0.5, retry_after_max=10)
    assert [policy.delay(n, None, 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(2, None, 1.0) == 0.5  # jitter removes up to half
    assert policy.delay(1, 4.0, 0.9) == 4.0
    assert policy.delay(1, 99.0, 0.0) == 10.0


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Timeouts(connect=0), "Timeouts.connect"),
        (lambda: Timeouts(idle=-1), "Timeouts.idle"),
        (lambda: Timeouts(total=float("inf")), "Timeouts.total"),
        (lambda: Timeouts(first_byte=True), "Timeouts.first_byte"),
        (lambda: RetryPolicy(max_retries=-1), "RetryPolicy.max_retries"),
        (lambda: RetryPolicy(jitter=2), "RetryPolicy.jitter"),
        (lambda: HTTPConfig("ftp://h"), "base_url"),
        (lambda: HTTPConfig("localhost:11434"), "base_url"),
        (lambda: HTTPConfig("http://h/v1#top"), "fragment"),
        (lambda: HTTPConfig("http://h", verify="/no/such/ca.pem"), "verify"),
        (lambda: HTTPConfig("http://h", max_connections=0), "max_connections"),
        (lambda: HTTPConfig("http://h", headers={"X": "a\r\nb"}), "header 'X'"),
        (lambda: HTTPConfig("http://h", proxy="socks5://p:1"), "proxy"),
        (lambda: HTTPConfig("http://h", cert=("a", "b", "c")), "cert"),  # type: ignore[arg-type]
        (lambda: client_settings(HTTPConfig("https://h", cert="/no/such.pem")), "cert"),
    ],
)
def test_invalid_settings_name_the_setting(make: Callable[[], object], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name.replace(".", r"\.")):
        make()


def test_query_in_base_url_moves_to_params() -> None:
    config = HTTPConfig("https://h/openai?api-version=1&x=2", params={"x": "3"})
    assert (config.base_url, config.params) == ("https://h/openai", {"api-version": "1", "x": "3"})


def test_error_body_is_read_bounded() -> None:
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(1024):
            sent += 4096
            yield b'{"e":' + b" " * 4090 + b"}"

    transport = SyncTransport(
        HTTPConfig("http://h", retry=RetryPolicy(max_retries=0)),
        transport=httpx.MockTransport(lambda request: httpx.Response(500, content=body())),
    )
    with pytest.raises(ServerError) as info:
        transport.request("GET", "/x")
    assert sent <= 64 * 1024 + 4096 and len(info.value.body) <= 500
    transport.close()


def test_mock_transport_sees_one_json_encoding() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": 1})

    config = HTTPConfig("http://h/base/", params={"api-version": "v"})
    with SyncTransport(config, transport=httpx.MockTransport(handler)) as transport:
        assert transport.request("POST", "chat", json={"a": [1, 2]}).json() == {"ok": 1}
    assert str(seen[0].url) == "http://h/base/chat?api-version=v"
    assert seen[0].content == b'{"a":[1,2]}'
    assert json.loads(seen[0].content) == {"a": [1, 2]}


class _Pieces(httpx.SyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces


@pytest.mark.parametrize(
    ("headers", "make"),
    [
        ({}, lambda pieces: {"stream": _Pieces(pieces)}),  # read straight from the stream
        ({}, lambda pieces: {"content": b"".join(pieces)}),  # already read (a replay)
        ({"content-encoding": "identity"}, lambda pieces: {"stream": _Pieces(pieces)}),
    ],
)
def test_stream_hands_out_the_body_as_written(headers, make) -> None:
    pieces = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
    transport = SyncTransport(
        HTTPConfig("http://h"),
        transport=httpx.MockTransport(
            lambda r: httpx.Response(200, headers=headers, **make(pieces))
        ),
    )
    with transport.stream("POST", "/x", json={}) as response:
        chunks = list(response.iter_bytes())
    assert b"".join(chunks) == b"".join(pieces)
    if "stream" in make(pieces):  # a live body: each write arrives as its own chunk
        assert chunks == pieces
    transport.close()


def test_stream_decodes_a_compressed_body() -> None:
    body = b"".join(b'{"n": %d}\n' % i for i in range(1000))
    packed = gzip.compress(body)
    pieces = [packed[i : i + 100] for i in range(0, len(packed), 100)]
    transport = SyncTransport(
        HTTPConfig("http://h"),
        transport=httpx.MockTransport(
            lambda r: httpx.Response(
                200, headers={"content-encoding": "gzip"}, stream=_Pieces(pieces)
            )
        ),
    )
    with transport.stream("POST", "/api/generate", json={}) as response:
        assert b"".join(response.iter_bytes()) == body
    transport.close()


async def test_redirects_are_not_followed(server, connect) -> None:
    srv, url = server
    srv.script("/old", reply(307, "", Location=url + "/new"))
    srv.script("/new", reply())
    with pytest.raises(BackendHTTPError) as info:
        await connect(url, retry=RetryPolicy(max_retries=0)).request("POST", "/old", json={})
    assert info.value.status == 307
    assert srv.hits("/old") == 1 and srv.hits("/new") == 0


# -- answers read in turns (sync, one job's threads) -------------------------------------------


def _in_thread(fn: Callable[[], Any]) -> threading.Thread:
    """Run `fn` on a thread with the caller's context (as `ContextThreadPoolExecutor` does)."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(fn,), daemon=True)
    thread.start()
    return thread


def _wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def test_answers_are_awaited_together_and_read_one_at_a_time(server) -> None:
    srv, url = server
    srv.script("/e", reply(200, '{"n": 1}'), reply(200, '{"n": 2}'))
    a_inside, a_may_leave, b_inside = threading.Event(), threading.Event(), threading.Event()
    got: list[Any] = []
    with SyncTransport(HTTPConfig(url)) as transport, taking_turns():

        def first() -> None:
            with transport.request_in_turn("POST", "/e", json={}) as response:
                got.append(response.json())
                a_inside.set()
                a_may_leave.wait(5)

        def second() -> None:
            with transport.request_in_turn("POST", "/e", json={}) as response:
                got.append(response.json())
                b_inside.set()

        threads = [_in_thread(first)]
        assert a_inside.wait(5)
        threads.append(_in_thread(second))
        # B sends and waits for its answer while A holds the turn ...
        assert _wait_for(lambda: srv.hits("/e") == 2)
        # ... but reads it only once A's block is over.
        assert not b_inside.wait(0.2)
        a_may_leave.set()
        assert b_inside.wait(5)
        for thread in threads:
            thread.join(5)
    assert got == [{"n": 1}, {"n": 2}]


def _turn_is_free(turn: Any) -> bool:
    """Whether another thread could take `turn` now (an RLock is re-entrant for its owner)."""
    free: list[bool] = []

    def probe() -> None:
        took = turn.acquire(blocking=False)
        if took:
            turn.release()
        free.append(took)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join(5)
    return free == [True]


def test_the_turn_is_given_back_after_failures_retries_and_errors_in_the_block(server) -> None:
    srv, url = server
    srv.script("/drop", chunks(b'{"a":', then="drop"), reply(200, '{"ok": true}'))
    srv.script("/busy", reply(503, '{"error": "busy"}'), reply(200, '{"ok": true}'))
    srv.script("/bad", reply(400, '{"error": "no"}'))
    srv.script("/ok", reply(200, "{}"))
    config = HTTPConfig(url, sleep=lambda _: None)
    with SyncTransport(config) as transport, taking_turns():
        turn = current_turn()
        assert turn is not None
        # A body lost mid-read is an error (not sent again: it may have been processed).
        with pytest.raises(BackendConnectionError), transport.request_in_turn("GET", "/drop"):
            pass
        assert srv.hits("/drop") == 1
        assert _turn_is_free(turn)
        # A 503 is retried; the retry takes the turn again.
        with transport.request_in_turn("GET", "/busy") as response:
            assert response.json() == {"ok": True}
        assert srv.hits("/busy") == 2
        assert _turn_is_free(turn)
        with pytest.raises(BadRequestError):
            with transport.request_in_turn("GET", "/bad"):
                pass
        assert _turn_is_free(turn)
        with pytest.raises(KeyError), transport.request_in_turn("GET", "/ok"):
            raise KeyError("raised while handling the answer")
        assert _turn_is_free(turn)


def test_outside_taking_turns_request_in_turn_is_request(server) -> None:
    srv, url = server
    srv.script("/ok", reply(200, '{"x": 1}'))
    assert current_turn() is None
    with SyncTransport(HTTPConfig(url)) as transport, transport.request_in_turn("GET", "/ok") as r:
        assert r.json() == {"x": 1}


# ---------------------------------------------------------------------------------------
# The sync wire: urllib3 connection pools with httpx's limits
# ---------------------------------------------------------------------------------------


def _wire(url: str, **kw: Any) -> WireTransport:
    return WireTransport(client_settings(HTTPConfig(url, **kw)))


def _get(wire: WireTransport, url: str, **timeout: float) -> httpx.Response:
    limits = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0, **timeout}
    return wire.handle_request(httpx.Request("GET", url, extensions={"timeout": limits}))


def _idle(wire: WireTransport) -> list[Any]:
    """The open connections waiting in the wire's pools."""
    container = wire._manager.pools  # urllib3's RecentlyUsedContainer: no iteration
    keys = container.keys()
    return [c for key in keys for c in container[key].pool.queue if c is not None and c.sock]


def test_wire_keeps_at_most_max_keepalive_connections_idle(server) -> None:
    srv, url = server
    srv.script("/x", reply(200, "{}"))
    wire = _wire(url, max_connections=4, max_keepalive_connections=1)
    first, second = _get(wire, url + "/x"), _get(wire, url + "/x")  # two connections at once
    assert first.read() == second.read() == b"{}"  # read to the end: both handed back
    assert len(_idle(wire)) == 1
    wire.close()
    assert _idle(wire) == []


def test_wire_replaces_a_connection_idle_past_the_expiry(server) -> None:
    srv, url = server
    srv.script("/x", reply())
    wire = _wire(url)
    _get(wire, url + "/x").read()
    [conn] = _idle(wire)
    sock = conn.sock
    _get(wire, url + "/x").read()
    assert conn.sock is sock  # reused while fresh
    conn.matric_idle_since -= KEEPALIVE_EXPIRY + 1  # as if idle that long
    _get(wire, url + "/x").read()
    assert conn.sock is not sock and sock.fileno() == -1  # closed, and a new one made
    wire.close()


def test_wire_waits_for_a_connection_at_most_the_pool_timeout(server) -> None:
    srv, url = server
    srv.script("/s", chunks(then="forever"))
    srv.script("/x", reply(200, "{}"))
    wire = _wire(url, max_connections=1, max_keepalive_connections=1)
    held = _get(wire, url + "/s")
    started = time.monotonic()
    with pytest.raises(httpx.PoolTimeout):
        _get(wire, url + "/x", pool=0.2)
    assert 0.15 < time.monotonic() - started < 5
    next(held.iter_raw())
    held.close()  # unread to the end: its connection is closed, and the slot freed
    assert srv.disconnected.wait(10)
    assert _get(wire, url + "/x", pool=0.2).read() == b"{}"
    wire.close()


def test_wire_hands_out_each_chunk_frame_as_it_arrives(server) -> None:
    srv, url = server
    srv.script("/s", chunks(b"data: a\n\n", b"data: bb\n\n", delay=0.3))
    wire = _wire(url)
    got: list[tuple[bytes, float]] = []
    with contextlib.closing(_get(wire, url + "/s")) as response:
        got.extend((frame, time.monotonic()) for frame in response.iter_raw())
    assert [frame for frame, _ in got] == [b"data: a\n\n", b"data: bb\n\n"]
    assert got[1][1] - got[0][1] > 0.2  # the first was handed out before the second was sent
    wire.close()


async def test_http_proxy_gets_the_absolute_url_and_its_credentials(server, connect) -> None:
    proxy, proxy_url = server
    target = "http://upstream.invalid"
    proxy.script(f"{target}/v1/x", reply(200, '{"via": "proxy"}'))
    client = connect(target + "/v1", proxy=proxy_url.replace("://", "://user:p%40ss@"))
    assert (await client.request("GET", "/x")).json() == {"via": "proxy"}
    [seen] = proxy.seen
    assert seen.path == f"{target}/v1/x"
    credentials = {k.lower(): v for k, v in seen.headers.items()}["proxy-authorization"]
    assert credentials == "Basic " + base64.b64encode(b"user:p@ss").decode()


@pytest.fixture
def deaf_server() -> Iterator[str]:
    """Accepts connections and never reads from them: a large request's send stalls."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_stalled_send_is_a_first_byte_timeout(deaf_server) -> None:
    """Sync only. Async has a known gap: aiohttp arms `sock_read` once the body is written,
    so there a stalled send is bounded by `total` alone (None by default)."""
    config = HTTPConfig(
        deaf_server,
        timeouts=Timeouts(connect=5.0, first_byte=0.5),
        retry=RetryPolicy(max_retries=0),
    )
    started = time.monotonic()
    with (
        SyncTransport(config) as transport,
        pytest.raises(BackendTimeoutError, match=r"\(0\.5 s\).*Timeouts\.first_byte"),
    ):
        transport.request("POST", "/x", json={"blob": "x" * (32 << 20)})  # > socket buffers
    assert time.monotonic() - started < 4  # first_byte's 0.5 s, not connect's 5 s
