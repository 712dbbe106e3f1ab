"""What every HTTP backend shares: transports, stream driving, content-type fallbacks.

A backend supplies I/O-free *stream parsers* (bytes in, `GenerationDelta`s out); this
module feeds them from the sync or async transport, so the per-chunk loop is written
once for each side and stays a few lines long.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, cast

from langchain_matric._http import (
    AsyncStreamResponse,
    AsyncTransport,
    HTTPConfig,
    RetryPolicy,
    StreamResponse,
    SyncTransport,
    Timeouts,
    redact_url,
)
from langchain_matric.backends._pool import (
    EndpointPool,
    EndpointStats,
    PoolAsyncTransport,
    PoolSyncTransport,
    build_pool_transports,
)
from langchain_matric.backends._protocols import BaseBackend
from langchain_matric.backends._types import GenerationDelta, take_undelivered
from langchain_matric.errors import (
    BackendHTTPError,
    ConfigurationError,
    MatricError,
    StreamError,
    StreamTimeoutError,
    after_data,
    message_of,
)

if TYPE_CHECKING:
    from langchain_matric.backends._capabilities import ProbeReport

Capabilities = Literal["learn", "auto"]
""""learn": adapt to what the server rejects as it happens; "auto": probe it first."""

__all__ = [
    "HTTPBackend",
    "JSONBodyParser",
    "StreamParser",
    "WrongContentTypeParser",
    "check_model_name",
    "wrong_content_type",
]

DEFAULT_MAX_LINE_SIZE = 32 * 1024 * 1024
"""Largest SSE or NDJSON line accepted (32 MiB): a guard against unbounded memory."""


_KEEPALIVE = 20
"""Idle connections kept for reuse by default (at most `max_connections`)."""

_HTTP_OPTIONS = frozenset(
    {"sleep", "asleep", "random", "user_agent", "max_keepalive_connections"}
    | {"max_header_line", "max_header_lines"}
)
"""Further `HTTPConfig` fields a backend passes through (the header limits; others for tests)."""


def check_model_name(owner: str, field: str, value: object, example: str) -> None:
    """Refuse a missing, empty or blank model name (a server would pick its own default).

    Example:
        >>> check_model_name("OllamaBackend", "model", "llama3.2", "gpt-oss:20b")  # fine
        >>> check_model_name("OllamaBackend", "model", " ", "llama3.2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        langchain_matric.errors.ConfigurationError: OllamaBackend: model=' ' is not a model...
    """
    if not isinstance(value, str) or not value.strip():
        msg = (
            f"{owner}: {field}={value!r} is not a model name: pass one the server serves "
            f"(e.g. {field}={example!r})"
        )
        raise ConfigurationError(msg)


class StreamParser(Protocol):
    """Turns a streamed body into deltas, with no I/O of its own."""

    @property
    def partial(self) -> str:
        """Text received so far."""
        ...

    @property
    def done(self) -> bool:
        """True once the terminator arrived; reading can stop."""
        ...

    def feed(self, data: bytes) -> list[GenerationDelta]:
        """Consume a piece of the body."""
        ...

    def finish(self) -> list[GenerationDelta]:
        """Consume the clean end of the body; raise `StreamError` if it came too early."""
        ...


class JSONBodyParser:
    """For a stream request answered with one plain JSON body: one whole delta."""

    def __init__(self, to_deltas: Callable[[Any], list[GenerationDelta]], url: str) -> None:
        self._to_deltas = to_deltas
        self._url = url
        self._body = bytearray()
        self.done = False
        self.partial = ""
        self.response_id: str | None = None
        """The answer's Responses API id, once parsed (None for other APIs)."""

    def feed(self, data: bytes) -> list[GenerationDelta]:
        self._body += data
        return []

    def finish(self) -> list[GenerationDelta]:
        text = self._body.decode("utf-8", "replace")
        try:
            obj = json.loads(text)
        except ValueError:
            msg = f"server answered {self._url} with invalid JSON: {text[:200]!r}"
            raise StreamError(msg, line=text[:200]) from None
        if isinstance(obj, dict) and obj.get("error"):  # a Responses body has `error: null`
            said = message_of(obj) or text[:500]
            msg = f"server reported an error for {self._url}: {said}"
            raise BackendHTTPError(msg, status=200, body=text[:500], url=self._url)
        self.done = True
        deltas = self._to_deltas(obj)
        self.response_id = deltas[-1].response_id if deltas else None
        return deltas


def wrong_content_type(content_type: str, body: bytes, url: str, expected: str) -> BackendHTTPError:
    """The error for a 2xx answer in a format we cannot read (e.g. an HTML page)."""
    text = body.decode("utf-8", "replace")[:500]
    msg = (
        f"server answered {url} with {content_type or 'no content type'} where {expected} "
        f"was expected; is `base_url` pointing at the inference API? Body starts: {text!r}"
    )
    return BackendHTTPError(msg, status=200, body=text, url=url)


class WrongContentTypeParser:
    """For a 2xx body in a format we cannot read: collects its start, then raises."""

    _HEAD = 2048

    def __init__(self, content_type: str, url: str, expected: str) -> None:
        self._content_type = content_type
        self._url = url
        self._expected = expected
        self._head = bytearray()
        self.partial = ""
        self.done = False

    def feed(self, data: bytes) -> list[GenerationDelta]:
        self._head += data[: self._HEAD - len(self._head)]
        return self.finish() if len(self._head) >= self._HEAD else []

    def finish(self) -> list[GenerationDelta]:
        raise wrong_content_type(self._content_type, bytes(self._head), self._url, self._expected)


def _locate(error: MatricError, url: str) -> None:
    """Make sure a mid-stream error names the stream (decoder errors know no URL)."""
    if url not in error.message:
        error.message = f"{error.message} (stream from {url})"
        error.args = (error.message,)


_DRAIN_SECONDS = 0.25
"""How long each side waits for a body's end after its terminator (then closes)."""
_DRAIN_LIMIT = 16 * 1024
"""Most bytes read after a stream's terminator (normally just the chunked end, 5 bytes)."""


def _stalled(stall: float, parser: StreamParser) -> StreamTimeoutError:
    return StreamTimeoutError(
        f"the stream sent no data for longer than the stall timeout ({stall:g} s), only "
        "keep-alive comments or blank lines; the server may be stuck or overloaded. "
        "Raise `Timeouts.stall` (None = no limit).",
        partial=parser.partial,
    )


def _drain(response: StreamResponse) -> None:
    """Read the rest of a body after its terminator, so the connection can be reused.

    Servers end the body right after `[DONE]` / `"done": true`; reading that end instead
    of closing mid-body hands the keep-alive connection back to the pool (a new TCP
    connection per request otherwise). Nothing read is parsed; bounded in bytes and, each
    read, in time (`_DRAIN_SECONDS`); a failure only costs the connection.
    """
    response.limit_reads(_DRAIN_SECONDS)
    size = 0
    with contextlib.suppress(MatricError):
        for data in response.iter_bytes():
            size += len(data)
            if size > _DRAIN_LIMIT:
                return


async def _adrain(chunks: AsyncIterator[bytes]) -> None:
    """Async `_drain`, within `_DRAIN_SECONDS` in all.

    A server that keeps the body open after its terminator then costs the connection, not
    the caller's time.
    """
    size = 0
    with contextlib.suppress(MatricError, TimeoutError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for data in chunks:
                size += len(data)
                if size > _DRAIN_LIMIT:
                    return


class HTTPBackend(BaseBackend):
    """Base of the HTTP backends: owns one sync and one async transport.

    Subclasses build payloads and parsers; `_drive` and `_adrive` run a parser over a
    streamed response and fill `partial` into any error raised mid-stream.
    """

    supports_streaming: bool

    def __init__(
        self,
        *,
        base_url: str | Sequence[str],
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        max_retries: int = 2,
        retry: RetryPolicy | None = None,
        verify_tls: bool | str = True,
        client_cert: str | tuple[str, str] | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        max_connections: int = 100,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        streaming: bool = True,
        capabilities: Capabilities = "learn",
        http_transport: Any = None,
        prefix_affinity: int = 0,
        clock: Callable[[], float] | None = None,
        **http_options: Any,
    ) -> None:
        urls = pool_urls(base_url)
        if capabilities not in ("learn", "auto"):
            msg = f"capabilities={capabilities!r}: use 'learn' (the default) or 'auto'"
            raise ConfigurationError(msg)
        unknown = set(http_options) - _HTTP_OPTIONS
        if unknown:
            msg = (
                f"unknown argument(s) {sorted(unknown)} for {type(self).__name__}; "
                f"transport options are {sorted(_HTTP_OPTIONS)}"
            )
            raise ConfigurationError(msg)
        policy = retry or RetryPolicy(max_retries=max_retries)
        if isinstance(max_connections, int):  # a pool smaller than the default keep-alive
            http_options.setdefault(  # count must not be a configuration error
                "max_keepalive_connections", min(_KEEPALIVE, max_connections)
            )
        self._config = HTTPConfig(
            base_url=urls[0] if urls else cast("str", base_url),
            headers=dict(headers or {}),
            params=dict(params or {}),
            timeouts=timeouts or Timeouts(),
            retry=policy,
            verify=verify_tls,
            cert=client_cert,
            trust_env=trust_env,
            proxy=proxy,
            max_connections=max_connections,
            **http_options,
        )
        self._sync: SyncTransport | PoolSyncTransport
        self._async: AsyncTransport | PoolAsyncTransport
        self._pool: EndpointPool | None = None
        if urls is None:  # one URL: the transports as they are, nothing in between
            self._sync = SyncTransport(self._config, transport=http_transport)
            self._async = AsyncTransport(self._config)
        else:
            self._sync, self._async = build_pool_transports(
                self._config, urls, transport=http_transport, clock=clock,
                prefix_affinity=prefix_affinity,
            )  # fmt: skip
            self._pool = self._sync.pool
        self.max_line_size = max_line_size
        self.supports_streaming = streaming
        self.capabilities = capabilities
        self.capability_report: ProbeReport | None = None
        """What the probe found, with `capabilities="auto"` (after the first request)."""
        self._probed = capabilities != "auto"
        self._probe_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The server's base URL, without credentials; for a pool, its first endpoint's.

        The first endpoint is the one `capabilities="auto"` probes and `count_tokens`
        asks; `base_urls` lists them all.
        """
        return redact_url(self._config.base_url)

    @property
    def base_urls(self) -> tuple[str, ...]:
        """Every endpoint's base URL, without credentials (one for a single URL)."""
        return (self.base_url,) if self._pool is None else self._pool.urls

    def endpoint_stats(self) -> dict[str, EndpointStats]:
        """Each endpoint's requests, failures, in flight, cooldown and latency, by URL.

        URLs are shown without credentials. A backend given one URL (a string) keeps no
        counts and returns `{}`; a list of one URL is a pool of one.

        Example:
            >>> from langchain_matric.backends import OpenAIBackend
            >>> backend = OpenAIBackend(["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"])
            >>> stats = backend.endpoint_stats()
            >>> list(stats), stats["http://127.0.0.1:8001/v1"].requests
            (['http://127.0.0.1:8001/v1', 'http://127.0.0.1:8002/v1'], 0)
        """
        return {} if self._pool is None else self._pool.endpoint_stats()

    # -- capabilities="auto" ----------------------------------------------------------------

    _probe_api: ClassVar[Literal["openai", "ollama"]]

    def _ready(self) -> None:
        """With `capabilities="auto"`: probe the server once, before the first request.

        The checks are `matric probe`'s own (`CAPABILITY_CHECKS`), so the probe's report
        and the backend's behaviour never disagree. An unreachable server is probed
        again on the next call; the call itself then fails as usual.
        """
        if self._probed:
            return
        with self._probe_lock:
            if not self._probed:  # another thread may have probed while we waited
                self._probe()

    def _probe(self) -> None:
        # Imported here: only backends with capabilities="auto" load the checks.
        from langchain_matric.backends._capabilities import (  # noqa: PLC0415
            CAPABILITY_CHECKS,
            probe_capabilities,
        )

        report = probe_capabilities(
            self._config.base_url,
            backend=self._probe_api,
            model=self.model_name,
            embed_model=getattr(self, "embed_model", None),
            checks=CAPABILITY_CHECKS,
            headers=self._config.headers,
            verify=self._config.verify,
            timeout=self._config.timeouts.first_byte or 300.0,
        )
        if report.openai_compatible or report.ollama_native:  # the server answered
            self._apply_capabilities(report)
            self.capability_report = report
            self._probed = True

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_probe_lock"]  # locks don't pickle; the transports drop their clients
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._probe_lock = threading.Lock()

    async def _aready(self) -> None:
        if not self._probed:
            await asyncio.to_thread(self._ready)

    def _apply_capabilities(self, report: ProbeReport) -> None:
        """Configure the backend from a probe report (subclasses add their own)."""
        if report.streaming is not None:
            self.supports_streaming = report.streaming != "none"

    # -- stream driving (the hot loop) ---------------------------------------------------

    def _stall_limit(self, parser: StreamParser) -> float | None:
        """`Timeouts.stall` for a real stream; None for a whole JSON or HTML body."""
        if isinstance(parser, JSONBodyParser | WrongContentTypeParser):
            return None
        return self._config.timeouts.stall

    def _drive(self, parser: StreamParser, response: StreamResponse) -> Iterator[GenerationDelta]:
        stall = self._stall_limit(parser)
        last_data = time.monotonic()
        delivered = False
        try:
            for data in response.iter_bytes():
                deltas = parser.feed(data)
                if deltas:
                    delivered = True
                    if stall is not None:
                        last_data = time.monotonic()
                    yield from deltas
                elif stall is not None and time.monotonic() - last_data > stall:
                    raise _stalled(stall, parser)
                if parser.done:
                    _drain(response)
                    return
            yield from parser.finish()
        except MatricError as error:
            if not error.partial:
                error.partial = parser.partial
            undelivered = take_undelivered(error)  # decoded in the failing read: deliver first
            if delivered or undelivered or error.partial:
                after_data(error)  # a StreamError too, never sent again
            _locate(error, response.url)
            yield from undelivered
            raise

    async def _adrive(
        self, parser: StreamParser, response: AsyncStreamResponse
    ) -> AsyncIterator[GenerationDelta]:
        stall = self._stall_limit(parser)
        last_data = time.monotonic()
        delivered = False
        try:
            async for data in response.aiter_bytes():
                deltas = parser.feed(data)
                if deltas:
                    delivered = True
                    if stall is not None:
                        last_data = time.monotonic()
                    for delta in deltas:
                        yield delta
                elif stall is not None and time.monotonic() - last_data > stall:
                    raise _stalled(stall, parser)
                if parser.done:
                    await _adrain(response.aiter_bytes())
                    return
            for delta in parser.finish():
                yield delta
        except MatricError as error:
            if not error.partial:
                error.partial = parser.partial
            undelivered = take_undelivered(error)  # decoded in the failing read: deliver first
            if delivered or undelivered or error.partial:
                after_data(error)  # a StreamError too, never sent again
            _locate(error, response.url)
            for delta in undelivered:
                yield delta
            raise

    # -- resources -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync connection pool (the async one closes with `aclose`)."""
        self._sync.close()

    async def aclose(self) -> None:
        """Close both connection pools."""
        await self._async.aclose()
        self._sync.close()

    def __repr__(self) -> str:
        shown: object = self.base_url if self._pool is None else list(self._pool.urls)
        return f"{type(self).__name__}(base_url={shown!r}, model={self.model_name!r})"


def pool_urls(base_url: object) -> list[str] | None:
    """The endpoints of a `base_url` given as a list (or tuple), or None for one string.

    Example:
        >>> pool_urls("http://a:1/v1") is None, pool_urls(["http://a:1/v1", "http://b:1/v1"])
        (True, ['http://a:1/v1', 'http://b:1/v1'])
    """
    if isinstance(base_url, str):
        return None
    if not isinstance(base_url, list | tuple) or not all(isinstance(u, str) for u in base_url):
        msg = f"base_url must be a URL or a list of URLs, got {base_url!r}"
        raise ConfigurationError(msg)
    if not base_url:
        msg = "base_url=[]: an endpoint pool needs at least one URL"
        raise ConfigurationError(msg)
    return list(base_url)
