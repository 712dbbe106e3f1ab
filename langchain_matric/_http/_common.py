"""Pure pieces both stacks share: request building, responses, deadlines, errors, retries.

The sync (httpx) and async (aiohttp) transports are short loops around these functions, so
URLs, headers, retry decisions, delays and every error message are written once.
"""

from __future__ import annotations

import base64
import json as jsonlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from langchain_matric._http._config import (
    REDACTED,
    HTTPConfig,
    check_headers,
    is_secret_header,
    is_secret_param,
    logger,
    redact_url,
    url_secrets,
)
from langchain_matric._json import fast_loads, text_of
from langchain_matric._text import mend, mend_json
from langchain_matric.errors import (
    BackendConnectionError,
    BackendHTTPError,
    BackendTimeoutError,
    MatricError,
    ResponseParseError,
    StreamError,
    error_from_response,
)

ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an error response body read before giving up on the rest."""

TimeoutName = Literal["connect", "first_byte", "idle", "total"]

# ---------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One logical request (all its attempts): what to send and how to name it in messages."""

    method: str
    url: str
    redacted: str
    headers: dict[str, str]
    body: bytes | None
    model: str | None

    @property
    def where(self) -> str:
        """`METHOD url`, credentials removed."""
        return f"{self.method} {self.redacted}"


def prepare(config: HTTPConfig) -> tuple[str, dict[str, str]]:
    """The base URL without userinfo, and the headers of every request (names lower-cased).

    `user:password@` in `base_url` becomes a Basic `Authorization` header unless one is
    configured, so credentials never travel in (or get logged from) a URL on either stack.
    """
    headers = {"user-agent": config.user_agent}
    headers.update({k.lower(): v for k, v in config.headers.items()})
    parts = urlsplit(config.base_url)
    if "@" not in parts.netloc:
        return config.base_url, headers
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    headers.setdefault("authorization", f"Basic {token}")
    return urlunsplit(parts._replace(netloc=host)), headers


def build_url(base_url: str, path: str, params: Mapping[str, str]) -> str:
    """`base_url` + `path` (a `/` added between if missing) + the encoded `params`.

    An absolute `path` (`http://...`) is used as it is: for the few routes a server keeps
    outside its API root, such as `/tokenize` beside `/v1`.
    """
    url = base_url.rstrip("/")
    if path.startswith(("http://", "https://")):
        url = path
    elif path:
        url += path if path.startswith("/") else f"/{path}"
    if params:
        url += ("&" if "?" in url else "?") + urlencode(params)
    return url


def encode_json(payload: Any) -> bytes:
    r"""Serialise a JSON body once: compact, UTF-8.

    Text holding lone surrogates (a `"\ud800"` escape in an earlier answer, sent back in
    the next turn) cannot be UTF-8: those become U+FFFD (pairs are joined), never a raw
    `UnicodeEncodeError`.

    Example:
        >>> encode_json({"content": "a\ud800b"}) == '{"content":"a\ufffdb"}'.encode()
        True
    """
    text = jsonlib.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return mend(text).encode()


def build_call(
    config: HTTPConfig,
    base: tuple[str, dict[str, str]],
    method: str,
    path: str,
    *,
    json: Any,
    params: Mapping[str, str] | None,
    extra_headers: Mapping[str, str] | None,
    model: str | None,
) -> Call:
    """Build a `Call` from `prepare(config)` and one call's arguments."""
    base_url, headers = base
    merged = {**config.params, **params} if params else config.params
    url = build_url(base_url, path, merged)
    body = None if json is None else encode_json(json)
    if extra_headers or body is not None:
        headers = dict(headers)
        if body is not None:
            headers["content-type"] = "application/json"
        if extra_headers:
            check_headers(extra_headers)
            headers.update({k.lower(): v for k, v in extra_headers.items()})
    return Call(method.upper(), url, redact_url(url), headers, body, model)


class Deadline:
    """The `total` timeout of one call, shared by its attempts."""

    __slots__ = ("end", "total")

    def __init__(self, total: float | None) -> None:
        self.total = total
        self.end = None if total is None else time.monotonic() + total

    def remaining(self) -> float | None:
        """Seconds left (may be <= 0), or None without a total timeout."""
        return None if self.end is None else self.end - time.monotonic()

    def clamp(self, value: float | None, name: TimeoutName) -> tuple[float | None, TimeoutName]:
        """`value` limited to the time left, and the name of whichever limit is tighter."""
        left = self.remaining()
        if left is None or (value is not None and value <= left):
            return value, name
        return max(left, 0.001), "total"

    def expired(self) -> bool:
        """True once the deadline has passed (never without a total timeout)."""
        return self.end is not None and time.monotonic() >= self.end

    def check(self, call: Call, config: HTTPConfig) -> None:
        """Raise the total timeout error once the deadline has passed."""
        if self.expired():
            raise timeout_error(call, "total", config)


# ---------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------


def _content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").partition(";")[0].strip().lower()


class _Head:
    __slots__ = ("_method", "content_type", "endpoint", "headers", "status", "url")

    endpoint: int
    """In an endpoint pool, the index of the endpoint that answered (set by the pool's
    transport; unset, and never read, for a single URL: that path pays nothing for it)."""

    def __init__(self, status: int, headers: Mapping[str, str], call: Call) -> None:
        self.status = status
        """HTTP status code (2xx)."""
        self.headers = headers
        """Response headers (case-insensitive)."""
        self.content_type = _content_type(headers)
        """Media type, lower case, without parameters (`application/json`)."""
        self.url = call.redacted
        """The request URL, credentials removed."""
        self._method = call.method

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status} {self._method} {self.url}>"


class Response(_Head):
    """A whole 2xx response.

    Example:
        >>> config = HTTPConfig("http://h")
        >>> call = build_call(config, prepare(config), "GET", "/x", json=None, params=None,
        ...                   extra_headers=None, model=None)
        >>> Response(200, {"content-type": "application/json"}, b'{"a": 1}', call).json()
        {'a': 1}
    """

    __slots__ = ("content",)

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes, call: Call) -> None:
        super().__init__(status, headers, call)
        self.content = content
        """The body."""

    def json(self) -> Any:
        """The body decoded as JSON; a non-JSON body raises `BackendHTTPError` quoting it."""
        try:
            return fast_loads(self.content)
        except ValueError:
            pass
        try:  # what orjson refuses: a BOM, UTF-16, NaN, lone surrogates... (see `_json`)
            try:
                obj = jsonlib.loads(self.content)
            except UnicodeDecodeError:  # invalid UTF-8: replaced, as the stream decoders do
                obj = jsonlib.loads(text_of(self.content))
            return mend_json(obj)  # lone surrogate escapes become U+FFFD (see `_text`)
        except ValueError as exc:
            text = self.content.decode("utf-8", "replace")
            kind = self.content_type or "no Content-Type"
            message = (
                f"{self._method} {self.url} answered {self.status} with {kind} where JSON was "
                f"expected ({exc}): {text[:500]!r}. Check `base_url`: it may point at a web "
                "page or a proxy rather than the API (OpenAI-compatible servers usually need "
                "the `/v1` suffix)."
            )
            raise BackendHTTPError(
                message, status=self.status, body=text[:500], method=self._method, url=self.url
            ) from None


class StreamResponse(_Head):
    """An open 2xx streaming response; read it inside `SyncTransport.stream(...)`.

    Example:
        >>> with transport.stream("POST", "/v1/chat", json=body) as response:  # doctest: +SKIP
        ...     for chunk in response.iter_bytes():
        ...         decoder.feed(chunk)
    """

    __slots__ = ("_chunks", "_limit_reads")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        call: Call,
        chunks: Iterator[bytes],
        limit_reads: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(status, headers, call)
        self._chunks = chunks
        self._limit_reads = limit_reads

    def iter_bytes(self) -> Iterator[bytes]:
        """Raw (decompressed) body chunks as they arrive."""
        return self._chunks

    def limit_reads(self, seconds: float) -> None:
        """From now on each read of the body waits at most `seconds` (not `idle`).

        For reading the rest of a body whose content already ended (a stream's
        terminator): a server that keeps it open then costs the connection, not the
        caller's time. A transport that cannot bound its reads ignores it.
        """
        if self._limit_reads is not None:
            self._limit_reads(seconds)


class AsyncStreamResponse(_Head):
    """An open 2xx streaming response; read it inside `AsyncTransport.stream(...)`.

    Example:
        >>> async with transport.stream("POST", "/api/chat", json=body) as resp:  # doctest: +SKIP
        ...     async for chunk in resp.aiter_bytes():
        ...         decoder.feed(chunk)
    """

    __slots__ = ("_chunks",)

    def __init__(
        self, status: int, headers: Mapping[str, str], call: Call, chunks: AsyncIterator[bytes]
    ) -> None:
        super().__init__(status, headers, call)
        self._chunks = chunks

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Raw (decompressed) body chunks as they arrive."""
        return self._chunks


# ---------------------------------------------------------------------------------------
# Errors (both stacks translate foreign exceptions into these, in one place each)
# ---------------------------------------------------------------------------------------

_TIMEOUT_TEXT: dict[TimeoutName, tuple[str, str]] = {
    "connect": (
        "could not connect within the connect timeout",
        "Is the server running and reachable? Check `base_url`, or raise",
    ),
    "first_byte": (
        "no response arrived within the first-byte timeout",
        "The model may be loading or the server busy; raise",
    ),
    "idle": (
        "the server sent nothing for longer than the idle timeout between body chunks",
        "The server may be stuck or overloaded; raise",
    ),
    "total": ("the call took longer than the total timeout", "Raise"),
}


def timeout_error(call: Call, name: TimeoutName, config: HTTPConfig) -> BackendTimeoutError:
    """The error for an expired timeout, naming it, its value and the setting to change."""
    value = getattr(config.timeouts, name)
    what, fix = _TIMEOUT_TEXT[name]
    error = BackendTimeoutError(
        f"{call.where}: {what} ({value:g} s). {fix} `Timeouts.{name}` (None = no limit)."
    )
    if name == "total" or (name != "connect" and not config.retry.retry_read_timeouts):
        error.is_retryable = False  # retrying would likely time out again
    return error


ConnectionProblem = Literal["connect", "proxy", "no_answer", "lost"]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe(exc: BaseException, call: Call) -> str:
    """A short, secret-free description of a network failure."""
    for err in _chain(exc):  # aiohttp's wrappers subclass the ssl errors without their fields
        if isinstance(err, ssl.SSLCertVerificationError) and getattr(err, "verify_message", None):
            return f"TLS certificate verification failed: {err.verify_message}"
        if isinstance(err, ssl.SSLError) and getattr(err, "reason", None):
            return f"TLS error: {err.reason}"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, socket.gaierror):
            return f"cannot resolve the host name ({err.strerror})"
        if isinstance(err, ConnectionResetError):
            return "connection reset by peer"
    text = str(exc)
    text = scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, call)
    return f"TLS error: {text}" if any(isinstance(e, ssl.SSLError) for e in _chain(exc)) else text


def scrub(text: str, call: Call) -> str:
    """`text` with the call's URL secrets replaced by `***`."""
    for secret in url_secrets(call.url):
        text = text.replace(secret, REDACTED)
    return text


def config_secrets(config: HTTPConfig, headers: Mapping[str, str]) -> tuple[str, ...]:
    """What an error message must never quote, longest first.

    The values of auth-like `headers` (and their tokens, e.g. after `Bearer`) and of
    secret query parameters.
    """
    found: set[str] = set()
    for name, value in headers.items():
        if is_secret_header(name) and value:
            found.add(value)
            found.update(part for part in value.split() if len(part) >= 8)
    found.update(v for k, v in config.params.items() if v and is_secret_param(k))
    return tuple(sorted(found, key=len, reverse=True))


def status_error(
    call: Call, status: int, body: bytes | bytearray, headers: Any, secrets: tuple[str, ...]
) -> BackendHTTPError:
    """The typed error for an error answer (both stacks): classified, then scrubbed."""
    error = error_from_response(
        status,
        bytes(body[:ERROR_BODY_LIMIT]),
        headers,
        method=call.method,
        url=call.redacted,
        model=call.model,
    )
    return scrub_error(error, secrets)


def scrub_error(error: BackendHTTPError, secrets: tuple[str, ...]) -> BackendHTTPError:
    """Replace `secrets` in an error's message and quoted body: servers may echo the key."""
    for secret in secrets:
        if secret in error.message or secret in error.body:
            error.message = error.message.replace(secret, REDACTED)
            error.args = (error.message,)
            error.body = error.body.replace(secret, REDACTED)
    return error


def safe_cause(exc: BaseException, call: Call) -> BaseException | None:
    """`exc` to chain as the cause, or None when its text would reveal a URL secret."""
    text = f"{exc} {exc.args!r}"
    return None if any(s in text for s in url_secrets(call.url)) else exc


def connection_error(
    call: Call, problem: ConnectionProblem, exc: BaseException, proxy: str | None = None
) -> MatricError:
    """The error for a connection that failed, was refused, or was lost.

    Whether it is sent again follows the evidence that the request was not processed
    (docs/architecture.md, Retries): `connect`, `proxy`: nothing was sent; retried by the
    policy. `no_answer`: sent, then closed before any byte of an answer. On a reused
    connection the transport has already sent it again once, at once (the server closed the
    connection as the request came, before reading it); on a new one, or when that second
    send fails too, the request reached a server that may have begun to run it: not sent
    again. `lost`: an answer had begun (a head, an interim head, part of a body): never
    sent again.
    """
    detail = describe(exc, call)
    if problem == "proxy":
        via = redact_url(proxy) if proxy else "the proxy"
        return BackendConnectionError(
            f"{call.where}: could not connect through {via} ({detail}). "
            "Check `proxy`, HTTP(S)_PROXY / NO_PROXY, or set trust_env=False."
        )
    if problem == "no_answer":
        error = BackendConnectionError(
            f"{call.where}: the server closed the connection without answering ({detail}). "
            "Not sent again: the request reached the server, which may have begun to run it. "
            "Is it restarting or overloaded? Check `base_url`."
        )
        error.is_retryable = False  # no evidence that the request was not processed
        return error
    if problem == "lost":
        error = BackendConnectionError(
            f"{call.where}: the connection was lost while reading the response ({detail}). "
            "Not sent again: the server may have processed the request."
        )
        error.is_retryable = False  # an answer had begun: the request was processed
        return error
    if detail.startswith("TLS"):
        return BackendConnectionError(
            f"{call.where}: could not connect: {detail}. Check `verify` (a CA bundle path, "
            "or SSL_CERT_FILE) and `cert`, or use http:// if the server does not speak TLS."
        )
    return BackendConnectionError(
        f"{call.where}: could not connect ({detail}). Is the server running? Check `base_url`."
    )


def _one_line(reason: str, call: Call) -> str:
    """A parser's reason on one line, without caret markers, shortened, secrets scrubbed."""
    parts = (part.strip() for part in reason.splitlines())
    text = " ".join(part for part in parts if part and part != "^")
    return scrub(text if len(text) <= 200 else text[:199] + "…", call)


def head_too_large(which: Literal["line", "lines"], limit: int) -> str:
    """The reason for a response head over a limit, naming the setting (both stacks).

    Example:
        >>> head_too_large("line", 65536)
        'a response header line over 65,536 bytes (raise `max_header_line`)'
    """
    if which == "line":
        return f"a response header line over {limit:,} bytes (raise `max_header_line`)"
    return f"more than {limit} response header lines (raise `max_header_lines`)"


def parse_error(call: Call, reason: str, status: int | None = None) -> ResponseParseError:
    """The error for an answer that arrived but could not be parsed or decoded (not retried).

    `reason` is the parser's own, on one line and shortened (a parser may quote a whole
    oversized header).
    """
    reason = _one_line(reason, call)
    return ResponseParseError(
        f"{call.where}: an answer arrived but could not be read ({reason}). Not sent again: "
        "the server may have processed the request. A proxy or gateway in between may have "
        "altered the answer.",
        reason=reason,
        status=status,
    )


def stream_error(call: Call, exc: BaseException, unreadable: str | None = None) -> StreamError:
    """The error for a streamed body that ended uncleanly (never retried).

    `unreadable`: the parser's reason, when the body arrived but could not be read.
    """
    if unreadable is not None:
        reason = _one_line(unreadable, call)
        return StreamError(
            f"{call.where}: the stream could not be read ({reason}); the answer is incomplete."
        )
    return StreamError(
        f"{call.where}: connection lost mid-stream ({describe(exc, call)}); "
        "the answer is incomplete."
    )


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, its causes and contexts, and the exceptions among their `args`, each once.

    urllib3 puts the underlying error in `args` (`ProtocolError("Connection aborted.", e)`).
    """
    seen: set[int] = set()
    stack = [exc]
    while stack:
        err = stack.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        linked = (err.__cause__, err.__context__, *err.args)
        stack.extend(e for e in linked if isinstance(e, BaseException))


# ---------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------


def _reason(error: MatricError, call: Call) -> str:
    if isinstance(error, BackendHTTPError):  # its message quotes the server: keep it out of logs
        return f"HTTP {error.status}"
    return str(error).removeprefix(f"{call.where}: ").split(". ", 1)[0]


def retry_delay(
    error: MatricError, attempt: int, call: Call, config: HTTPConfig, deadline: Deadline
) -> float | None:
    """Seconds to wait before sending `call` again after `error`, or None to give up.

    `attempt` counts retries already made. Logs the retry (method, redacted URL, reason,
    delay; never headers).
    """
    policy = config.retry
    if not error.is_retryable or attempt >= policy.max_retries:
        return None
    retry_after = error.retry_after if isinstance(error, BackendHTTPError) else None
    delay = policy.delay(attempt + 1, retry_after, config.random())
    left = deadline.remaining()
    if left is not None and delay >= left:
        return None
    logger.info(
        "%s failed (%s); retry %d of %d in %.2f s",
        call.where,
        _reason(error, call),
        attempt + 1,
        policy.max_retries,
        delay,
    )
    return delay


def gave_up(error: MatricError, attempt: int) -> MatricError:
    """`error` as raised when no retry follows: its message says how many retries were made.

    Error messages never claim a retry by themselves (with `max_retries=0`, or for an error
    that is not retried, none happened); after `attempt` retries, the count is added.

    Example:
        >>> from langchain_matric.errors import BackendConnectionError
        >>> str(gave_up(BackendConnectionError("GET http://h/x: connection refused."), 2))
        'GET http://h/x: connection refused. Sent 3 times (2 retries with backoff).'
    """
    if attempt > 0:
        retries = "1 retry" if attempt == 1 else f"{attempt} retries"
        error.message = f"{error.message} Sent {attempt + 1} times ({retries} with backoff)."
        error.args = (error.message,)
    return error
