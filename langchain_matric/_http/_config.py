"""Transport settings: timeouts, retry policy, `HTTPConfig`, URL/header redaction, TLS and proxy.

Everything here is I/O-free and shared by the httpx (sync) and aiohttp (async) stacks, so both
get identical settings: one `ssl.SSLContext`, one resolved proxy, the same pool limits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import random
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote_plus, urlsplit, urlunsplit

from langchain_matric._version import __version__
from langchain_matric.errors import ConfigurationError

logger = logging.getLogger("langchain_matric")

KEEPALIVE_EXPIRY = 4.0
"""Seconds an idle pooled connection is kept (urllib3 pool, aiohttp keepalive_timeout).

Below uvicorn's 5 s keep-alive (vLLM, llama-cpp-python, LiteLLM), so the client drops a
connection before such a server closes it; a server closing sooner (gunicorn: 2 s) is met
by the reconnect-once rule (docs/architecture.md)."""

MAX_HEADER_LINE = 65536
"""Bytes of one response header line accepted by default (both stacks): large gateway
cookies and CSP headers exceed aiohttp's own 8,190."""
MAX_HEADER_LINES = 256
"""Response header lines accepted by default (both stacks); http.client's own limit is 100."""

_SECRET_NAMES = frozenset(
    {"apikey", "api_key", "key", "token", "access_token", "sig", "signature", "password"}
    | {"secret", "client_secret", "auth", "authorization", "code"}
)
_SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password", "_signature")
_SECRET_HEADER_PARTS = ("auth", "key", "token", "secret", "password", "cookie", "session")
REDACTED = "***"


def is_secret_param(name: str) -> bool:
    """Whether a query parameter's value must never be shown (`api-key`, `token`, ...)."""
    norm = unquote_plus(name).strip().lower().replace("-", "_")
    return norm in _SECRET_NAMES or norm.endswith(_SECRET_SUFFIXES)


def is_secret_header(name: str) -> bool:
    """Whether a header's value must never be shown (auth, keys, tokens, cookies)."""
    lower = name.lower()
    return any(part in lower for part in _SECRET_HEADER_PARTS)


def _redact_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        pairs.append(f"{name}={REDACTED}" if eq and is_secret_param(name) else pair)
    return "&".join(pairs)


def redact_url(url: str) -> str:
    """Return `url` without `user:password@` credentials and with secret query values as `***`.

    Example:
        >>> redact_url("https://bob:pw@example.com/v1?api-key=abc&api-version=1")
        'https://example.com/v1?api-key=***&api-version=1'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query, fragment = _redact_query(parts.query), _redact_query(parts.fragment)
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


class RedactURLs(logging.Filter):
    """Redacts secret query values and credentials in the URLs a library logs.

    httpx logs every request's URL at INFO ("HTTP Request: POST http://...?api-key=..."),
    urllib3 its path and query at DEBUG; installed on their loggers, this replaces such
    URL arguments with `redact_url(url)`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_leaky(a) for a in args):
            record.args = tuple(redact_url(str(a)) if _leaky(a) else a for a in args)
        return True


def _leaky(arg: object) -> bool:
    if arg is None or isinstance(arg, int | float | bytes):
        return False
    text = str(arg)
    return ("://" in text or "?" in text) and bool(url_secrets(text))


def url_secrets(url: str) -> tuple[str, ...]:
    """The secret substrings of `url` (userinfo, secret query values), to scrub from text."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return (url,)
    found = [parts.netloc.rpartition("@")[0]] if "@" in parts.netloc else []
    for pair in f"{parts.query}&{parts.fragment}".split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and is_secret_param(name):
            found.append(value)
    return tuple(s for s in found if s)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of `headers` with the values of auth-like headers replaced by `***`."""
    return {k: REDACTED if is_secret_header(k) else v for k, v in headers.items()}


def redact_response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Response headers to show a caller: auth-like values and cookies as `***`.

    Names in lower case (both transports alike); rate-limit headers stay readable
    although their names say "tokens".

    Example:
        >>> redact_response_headers({"Set-Cookie": "s=1", "x-ratelimit-remaining-tokens": "9"})
        {'set-cookie': '***', 'x-ratelimit-remaining-tokens': '9'}
    """
    shown = {}
    for name, value in headers.items():
        lower = name.lower()
        secret = is_secret_header(lower) and not lower.startswith("x-ratelimit-")
        shown[lower] = REDACTED if secret else value
    return shown


def _check_seconds(owner: str, name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > 0 or (allow_zero and value == 0)):  # type: ignore[operator]
        return
    expected = "a number >= 0" if allow_zero else "None (no limit) or a number of seconds > 0"
    raise ConfigurationError(f"{owner}.{name} must be {expected}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The timeouts of a call, in seconds; `None` means no limit.

    Example:
        >>> Timeouts(first_byte=600, total=None).connect
        10.0
    """

    connect: float | None = 10.0
    """Establishing the TCP (and TLS) connection."""
    first_byte: float | None = 300.0
    """Sending the request and waiting for the response head (model loads are slow)."""
    idle: float | None = 60.0
    """The longest silence allowed while reading the body, between chunks."""
    total: float | None = None
    """The whole call, retries included."""
    stall: float | None = 300.0
    """Streams only: the longest time without data (text, reasoning, a tool call, the end).

    Unlike `idle`, keep-alive bytes (SSE comments, NDJSON blank lines) do not reset it, so
    a server that stalls while it keeps the connection busy still times out. 300 s, like
    `first_byte`: servers send keep-alives while they queue or prefill a long prompt. It
    is checked as bytes arrive; a connection that falls silent is bounded by `idle`.
    """

    def __post_init__(self) -> None:
        for name in ("connect", "first_byte", "idle", "total", "stall"):
            value = getattr(self, name)
            if value is not None:
                _check_seconds("Timeouts", name, value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before sending a failed request again.

    Retried: connection errors, connect timeouts, 408, 409, 429 and 5xx except 501; read
    timeouts only with `retry_read_timeouts`; a stream never once its body was handed out;
    an answer that arrived but could not be read (`ResponseParseError`) never.

    Example:
        >>> RetryPolicy(backoff_initial=1.0, jitter=0.0).delay(3, None, 0.5)
        4.0
    """

    max_retries: int = 2
    """Retries after the first attempt (0 disables retrying)."""
    backoff_initial: float = 0.5
    """Delay before the first retry; doubles each time."""
    backoff_max: float = 8.0
    """Upper bound of the exponential delay."""
    retry_after_max: float = 60.0
    """Cap on an honoured `Retry-After`."""
    jitter: float = 0.25
    """Fraction of the delay removed at random (0 = none, 1 = full jitter)."""
    retry_read_timeouts: bool = False
    """Also retry first-byte and idle timeouts (off: a slow generation would repeat)."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool):
            msg = f"RetryPolicy.max_retries must be an int, got {self.max_retries!r}"
            raise ConfigurationError(msg)
        _check_seconds("RetryPolicy", "max_retries", self.max_retries, allow_zero=True)
        for name in ("backoff_initial", "backoff_max", "retry_after_max"):
            _check_seconds("RetryPolicy", name, getattr(self, name), allow_zero=True)
        _check_seconds("RetryPolicy", "jitter", self.jitter, allow_zero=True)
        if self.jitter > 1:
            msg = f"RetryPolicy.jitter must be within [0, 1], got {self.jitter!r}"
            raise ConfigurationError(msg)

    def delay(self, attempt: int, retry_after: float | None, rand: float) -> float:
        """Seconds to wait before retry number `attempt` (1 for the first retry).

        A server's `retry_after` wins, capped at `retry_after_max`; otherwise the delay is
        `backoff_initial * 2 ** (attempt - 1)`, capped at `backoff_max`, minus up to
        `jitter` of itself (`rand` in [0, 1) picks how much).
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        base = min(self.backoff_max, self.backoff_initial * 2.0 ** max(attempt - 1, 0))
        return base * (1.0 - self.jitter * rand)


def _default_user_agent() -> str:
    return f"langchain-matric/{__version__}"


@dataclass(frozen=True, repr=False)
class HTTPConfig:
    """Everything a transport needs; validated on creation, secrets never shown.

    Example:
        >>> cfg = HTTPConfig("http://127.0.0.1:11434", headers={"Authorization": "Bearer sk-1"})
        >>> "sk-1" in repr(cfg)
        False
    """

    base_url: str
    """Server root (http or https); request paths are appended to it."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent on every request (auth included); values of auth-like headers are never shown."""
    params: Mapping[str, str] = field(default_factory=dict)
    """Query parameters sent on every request (Azure's `api-version`)."""
    timeouts: Timeouts = field(default_factory=Timeouts)
    """Connect, first-byte, idle and total timeouts."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Retry policy."""
    verify: bool | str = True
    """Check TLS certificates (True), do not (False, logged once), or a CA bundle file/dir."""
    cert: str | tuple[str, str] | None = None
    """Client certificate: a PEM file with the key, or `(cert_file, key_file)`."""
    trust_env: bool = True
    """Read proxies (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY) and SSL_CERT_FILE/DIR from the env."""
    proxy: str | None = None
    """Explicit proxy URL; wins over the environment."""
    max_connections: int = 100
    """Connection pool size."""
    max_keepalive_connections: int = 20
    """Idle connections kept for reuse (sync stack only; aiohttp keeps up to `max_connections`)."""
    user_agent: str = field(default_factory=_default_user_agent)
    """The `User-Agent` header."""
    max_header_line: int = MAX_HEADER_LINE
    """Most bytes in one response header line (and the status line), on both stacks.

    A longer one is a `ResponseParseError` naming this setting, after one request.
    Backends take it too: `OpenAIBackend(..., max_header_line=131072)`.
    """
    max_header_lines: int = MAX_HEADER_LINES
    """Most header lines in one response head, on both stacks (more: `ResponseParseError`)."""
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    """Waits between sync retries (inject in tests)."""
    asleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    """Waits between async retries (inject in tests)."""
    random: Callable[[], float] = field(default=random.random, compare=False)
    """Jitter source in [0, 1)."""

    def __post_init__(self) -> None:
        _check_http_url("base_url", self.base_url)
        if self.proxy is not None:
            _check_http_url("proxy", self.proxy)
        parts = urlsplit(self.base_url)
        if parts.fragment:
            msg = f"base_url must not contain a #fragment: {redact_url(self.base_url)!r}"
            raise ConfigurationError(msg)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))  # "?api-version=..."
        params.update(self.params)
        object.__setattr__(self, "base_url", urlunsplit(parts._replace(query="")))
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "headers", dict(self.headers))
        if self.cert is not None:
            cert: object = self.cert if isinstance(self.cert, str) else tuple(self.cert)
            if not isinstance(cert, str) and not (
                isinstance(cert, tuple) and len(cert) == 2 and all(isinstance(c, str) for c in cert)
            ):
                raise ConfigurationError(
                    f"cert must be a path or (cert_file, key_file), got {cert!r}"
                )
            object.__setattr__(self, "cert", cert)
        check_headers(self.headers)
        if not isinstance(self.timeouts, Timeouts):
            raise ConfigurationError(f"timeouts must be a Timeouts, got {type(self.timeouts)!r}")
        if not isinstance(self.retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy, got {type(self.retry)!r}")
        if isinstance(self.verify, str) and not os.path.exists(self.verify):
            raise ConfigurationError(f"verify: CA bundle {self.verify!r} does not exist")
        verify: object = self.verify  # checked at runtime: callers may not be typed
        if not isinstance(verify, bool | str):
            msg = f"verify must be a bool or a CA bundle path, got {verify!r}"
            raise ConfigurationError(msg)
        if isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int):
            msg = f"max_connections must be an int, got {self.max_connections!r}"
            raise ConfigurationError(msg)
        if self.max_connections < 1:
            raise ConfigurationError(f"max_connections must be >= 1, got {self.max_connections}")
        if not 0 <= self.max_keepalive_connections <= self.max_connections:
            raise ConfigurationError(
                "max_keepalive_connections must be within [0, max_connections], "
                f"got {self.max_keepalive_connections}"
            )
        for name in ("max_header_line", "max_header_lines"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        if self.verify is False:
            logger.warning(
                "TLS certificate verification is OFF for %s (verify=False): "
                "anyone on the network path can read and alter the traffic, API keys included.",
                redact_url(self.base_url),
            )

    def __repr__(self) -> str:
        params = {k: REDACTED if is_secret_param(k) else v for k, v in self.params.items()}
        proxy = None if self.proxy is None else redact_url(self.proxy)
        return (
            f"HTTPConfig(base_url={redact_url(self.base_url)!r}, "
            f"headers={redact_headers(self.headers)!r}, params={params!r}, "
            f"timeouts={self.timeouts!r}, retry={self.retry!r}, verify={self.verify!r}, "
            f"cert={self.cert!r}, trust_env={self.trust_env!r}, proxy={proxy!r}, "
            f"max_connections={self.max_connections}, "
            f"max_keepalive_connections={self.max_keepalive_connections}, "
            f"max_header_line={self.max_header_line}, max_header_lines={self.max_header_lines}, "
            f"user_agent={self.user_agent!r})"
        )


def _check_http_url(name: str, url: object) -> None:
    if not isinstance(url, str):
        raise ConfigurationError(f"{name} must be a string URL, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise ConfigurationError(
            f"{name} must be an http:// or https:// URL with a host, "
            f"like 'http://127.0.0.1:11434', got {redact_url(url)!r}"
        )


def check_headers(headers: Mapping[str, str]) -> None:
    """Reject header names/values that are not strings or contain CR/LF (names only in messages)."""
    for key, value in headers.items():
        if not isinstance(key, str) or not key or any(c in key for c in "\r\n:"):
            raise ConfigurationError(f"invalid header name {key!r}")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise ConfigurationError(f"header {key!r} must be a string without line breaks")


# ---------------------------------------------------------------------------------------
# Settings both stacks are built from
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What the httpx pool and the `aiohttp.ClientSession` are both created from (parity)."""

    ssl_context: ssl.SSLContext
    proxy: str | None
    max_connections: int
    max_keepalive_connections: int
    keepalive_expiry: float
    timeouts: Timeouts
    max_header_line: int = MAX_HEADER_LINE
    max_header_lines: int = MAX_HEADER_LINES


def client_settings(config: HTTPConfig) -> ClientSettings:
    """Resolve TLS and proxy settings once, for either stack."""
    return ClientSettings(
        ssl_context=ssl_context(config.verify, config.cert, trust_env=config.trust_env),
        proxy=resolve_proxy(config),
        max_connections=config.max_connections,
        max_keepalive_connections=config.max_keepalive_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY,
        timeouts=config.timeouts,
        max_header_line=config.max_header_line,
        max_header_lines=config.max_header_lines,
    )


def ssl_context(
    verify: bool | str, cert: str | tuple[str, str] | None, *, trust_env: bool
) -> ssl.SSLContext:
    """The one SSL context for these settings (cached: both stacks share the same object).

    Like httpx: `verify=True` uses SSL_CERT_FILE / SSL_CERT_DIR when `trust_env`, else certifi.
    """
    ca_file = os.environ.get("SSL_CERT_FILE") if trust_env else None
    ca_dir = os.environ.get("SSL_CERT_DIR") if trust_env else None
    return _ssl_context(verify, cert, ca_file or None, ca_dir or None)


@functools.lru_cache(maxsize=16)
def _ssl_context(
    verify: bool | str, cert: str | tuple[str, str] | None, ca_file: str | None, ca_dir: str | None
) -> ssl.SSLContext:
    import certifi  # noqa: PLC0415 - a dependency of httpx, needed only here

    try:
        if verify is False:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif isinstance(verify, str):
            is_dir = os.path.isdir(verify)
            ctx = ssl.create_default_context(
                cafile=None if is_dir else verify, capath=verify if is_dir else None
            )
        elif ca_file or ca_dir:
            ctx = ssl.create_default_context(cafile=ca_file, capath=None if ca_file else ca_dir)
        else:
            ctx = ssl.create_default_context(cafile=certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"verify: cannot load the CA certificates ({exc})") from exc
    if cert is not None:
        files = (cert,) if isinstance(cert, str) else tuple(cert)
        try:
            ctx.load_cert_chain(*files)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cert: cannot load the client certificate ({exc})") from exc
    return ctx


def resolve_proxy(config: HTTPConfig) -> str | None:
    """The proxy for `base_url`: `proxy`, else (with `trust_env`) the environment, else None.

    Resolved once per client, as httpx does, and passed explicitly to both stacks (neither
    reads the environment itself: aiohttp's `trust_env` would also read `~/.netrc`).
    """
    if config.proxy is not None:
        return config.proxy
    if not config.trust_env:
        return None
    parts = urlsplit(config.base_url)
    host = parts.hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    if urlsplit(proxy).scheme not in ("http", "https"):
        raise ConfigurationError(
            f"the proxy from the environment ({redact_url(proxy)}) is not http(s); "
            "only http and https proxies are supported: set `proxy`, NO_PROXY or trust_env=False"
        )
    return proxy
