"""The one exception hierarchy of langchain-matric.

Every class also subclasses the langchain-core exception with the same meaning, so
LangChain's own retry and context-overflow handling recognises ours::

    MatricError(LangChainException)
    ├── ConfigurationError(ValueError)             bad argument, variable or file key
    ├── EmbeddingDimensionError(ValueError)        wrong vector count or size
    ├── BackendConnectionError(ModelConnectionError)   refused, reset, DNS, TLS
    ├── BackendTimeoutError(ModelTimeoutError)     connect, first byte, idle or total
    ├── StreamError(ModelError)                    a stream broke after it began
    │   └── StreamTimeoutError(BackendTimeoutError)  stall, or a timeout after data
    ├── ResponseParseError(ModelAPIError)          an answer arrived but breaks HTTP
    └── BackendHTTPError(ModelAPIError)            the server answered with an error
        ├── AuthenticationError(ModelAuthenticationError)       401
        ├── PermissionDeniedError(ModelPermissionDeniedError)   403
        ├── ModelNotFoundError(core ModelNotFoundError)         404 naming the model
        ├── BadRequestError(ModelInvalidRequestError)           400, 422
        │   └── ContextLengthExceededError(ContextOverflowError)
        ├── RateLimitError(ModelRateLimitError)                 429
        ├── ServerError                                         5xx
        └── EmbeddingValueError(ValueError)     a 2xx vector element not a finite number

`error_from_response` turns a status, body and headers into the right class; it is the
only place that decides, and both transports call it. A failure after stream data reached
the caller is a `StreamError` as well as its own class (`after_data`: an in-stream
context overflow is a `ContextLengthExceededErrorInStream`, which is both).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from langchain_core import exceptions as core

__all__ = [
    "AuthenticationError",
    "BackendConnectionError",
    "BackendHTTPError",
    "BackendTimeoutError",
    "BadRequestError",
    "ConfigurationError",
    "ContextLengthExceededError",
    "EmbeddingDimensionError",
    "EmbeddingValueError",
    "MatricError",
    "ModelNotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseParseError",
    "ServerError",
    "StreamError",
    "StreamTimeoutError",
    "after_data",
    "error_from_response",
]

_BODY_QUOTE_LIMIT = 500


class MatricError(core.LangChainException):
    """Root of every error this package raises."""

    is_retryable: bool = False
    """Whether sending the same request again may succeed."""

    partial: str = ""
    """Text a stream had delivered before this error interrupted it (empty otherwise)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor arguments defeat BaseException's default pickling;
        # rebuild from the message and restore every attribute as state instead.
        return (_rebuild, (type(self), self.message), dict(self.__dict__))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[MatricError], message: str) -> MatricError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


class ConfigurationError(MatricError, ValueError):
    """A constructor argument, environment variable or config-file key is invalid."""


class EmbeddingDimensionError(MatricError, ValueError):
    """The server returned a different number of vectors, or vectors of another size."""


class BackendConnectionError(MatricError, core.ModelConnectionError):
    """The server could not be reached (refused, reset, DNS or TLS failure)."""

    is_retryable = True


class BackendTimeoutError(MatricError, core.ModelTimeoutError):
    """Connecting, the first byte, the gap between chunks or the whole call took too long."""

    is_retryable = True


class StreamError(MatricError, core.ModelError):
    """A stream failed after it began: cut off, truncated, garbled, or an in-stream error.

    `partial` holds the text that had arrived before the failure, so nothing is lost.
    Never retried: part of the answer may already have reached the caller.
    """

    is_retryable = False
    line: str | None = None
    """The offending wire line (first 200 characters), when one is to blame."""

    def __init__(self, message: str, *, partial: str = "", line: str | None = None) -> None:
        super().__init__(message)
        self.partial = partial
        """Text received before the stream failed."""
        self.line = line


class ResponseParseError(MatricError, core.ModelAPIError):
    """An answer arrived but could not be parsed or decoded, so it is not retried.

    A malformed status line, head or chunk framing, a header over the limits, a corrupt
    content encoding (gzip, deflate). Bytes of an answer arrived, so the server may well
    have processed the request: sending it again could run the same generation twice.
    `reason` holds the HTTP parser's own words.

    Example:
        >>> error = ResponseParseError("POST /x: ...", reason="invalid chunk size b'zz'")
        >>> error.reason, error.status, error.is_retryable
        ("invalid chunk size b'zz'", None, False)
    """

    is_retryable = False

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        """What the HTTP parser or decoder reported."""
        self.status = status
        """The answer's status, when its head could be read (None otherwise)."""


class StreamTimeoutError(StreamError, BackendTimeoutError):
    """A stream timed out: a stall, or the idle or total timeout after data arrived.

    Raised when no data came for `Timeouts.stall` (keep-alive bytes only), and for an
    idle or total timeout once text had reached the caller. A `StreamError` (never
    retried; `partial` keeps the text so far) and a timeout (`BackendTimeoutError`,
    core's `ModelTimeoutError`) at once.

    Example:
        >>> error = StreamTimeoutError("no data for 300 s", partial="Hel")
        >>> isinstance(error, BackendTimeoutError), error.is_retryable, error.partial
        (True, False, 'Hel')
    """


class BackendHTTPError(MatricError, core.ModelAPIError):
    """The server answered with an error status (or an error object in a stream)."""

    is_retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: str = "",
        request_id: str | None = None,
        method: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        """HTTP status code (200 for an error reported inside a stream)."""
        self.body = body
        """The response body, decoded, at most 500 characters."""
        self.request_id = request_id
        """The server's request id (`x-request-id` and similar), if it sent one."""
        self.method = method
        self.url = url
        """The request URL with credentials removed."""
        self.retry_after = retry_after
        """Seconds the server asked to wait (`Retry-After`, on 429, 503 and others)."""

    @property
    def status_code(self) -> int:
        """Alias of `status`, the name httpx and the openai SDK use."""
        return self.status


class AuthenticationError(BackendHTTPError, core.ModelAuthenticationError):
    """401: the API key is missing, wrong or expired."""


class PermissionDeniedError(BackendHTTPError, core.ModelPermissionDeniedError):
    """403: the key is valid but may not use this model or endpoint."""


class ModelNotFoundError(BackendHTTPError, core.ModelNotFoundError):
    """404 whose body names the model: the model is not served (or not pulled)."""


class BadRequestError(BackendHTTPError, core.ModelInvalidRequestError):
    """400 or 422: the server rejected the request as invalid."""


class ContextLengthExceededError(BadRequestError, core.ContextOverflowError):
    """The prompt (plus the token limit) does not fit the model's context window."""


class RateLimitError(BackendHTTPError, core.ModelRateLimitError):
    """429: too many requests; `retry_after` holds the server's wait, in seconds."""

    is_retryable = True


class ServerError(BackendHTTPError):
    """5xx: the server failed. Retried, except 501 (not implemented)."""

    is_retryable = True


class EmbeddingValueError(BackendHTTPError, ValueError):
    """A vector of an answer holds something else than a finite number (NaN, a string, ...).

    NaN, +-Infinity, a string, a null. The server answered (2xx) and processed the request,
    so it is a `BackendHTTPError` like any other unusable answer, never retried; and a
    `ValueError`, like `EmbeddingDimensionError`. `index` is the text's position in the
    request.

    Example:
        >>> error = EmbeddingValueError("embedding 3 holds NaN", index=3)
        >>> error.index, error.status, error.is_retryable
        (3, 200, False)
    """

    def __init__(self, message: str, *, index: int, status: int = 200, **kw: Any) -> None:
        super().__init__(message, status=status, **kw)
        self.index = index
        """The position of the text whose vector is invalid, in the request."""


# ---------------------------------------------------------------------------------------
# Mapping a response to an error
# ---------------------------------------------------------------------------------------

_CONTEXT_PATTERNS = re.compile(
    r"context[ _-]?length|context window|maximum context|context size|"
    r"too many tokens|prompt is too long|input (?:is )?too long|exceeds? the (?:available )?"
    r"context|longer than the model|reduce the length",
    re.IGNORECASE,
)
_MODEL_MISSING = re.compile(
    r"model.*(?:not found|does not exist|not exist|unknown|no such|try pulling)|"
    r"(?:unknown|no such|invalid) model",
    re.IGNORECASE,
)
_VALIDATION_REPORT = re.compile(r"\b\d+ validation errors?\b", re.IGNORECASE)
"""pydantic's "N validation errors" wording: a server that reports a rejected request as 5xx."""
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "apim-request-id", "x-ms-request-id")


def status_for_message(text: str, default: int = 500) -> int:
    """The HTTP status an error message implies, for errors reported inside a 200 stream.

    A context-length complaint reads as 400, a missing model as 404, anything else as
    `default`, so in-stream errors get the same classes as HTTP ones.
    """
    if _CONTEXT_PATTERNS.search(text):
        return 400
    if _MODEL_MISSING.search(text):
        return 404
    return default


def server_message(body: str) -> str:
    """Extract the server's own error message from a JSON or plain-text error body.

    Understands `{"error": {"message": ...}}` (OpenAI), `{"error": "..."}` (Ollama),
    `{"message": ...}`, `{"detail": ...}` (FastAPI, vLLM) and falls back to the start of
    the body as text.
    """
    text = body.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_BODY_QUOTE_LIMIT]
    return message_of(data) or text[:_BODY_QUOTE_LIMIT]


def message_of(data: Any) -> str | None:
    """Return the human message of a decoded JSON error object, or None."""
    if isinstance(data, str):
        return data
    if not isinstance(data, dict):
        return None
    for key in ("error", "message", "detail", "msg"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):
            inner = message_of(value)
            if inner:
                return inner
        if isinstance(value, list) and value:
            parts = [message_of(item) or json.dumps(item) for item in value]
            return "; ".join(parts)
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(
    status: int,
    body: bytes | str,
    headers: Any,
    *,
    method: str,
    url: str,
    model: str | None = None,
) -> BackendHTTPError:
    """Build (not raise) the typed error for an HTTP error answer.

    Args:
        status: The HTTP status code.
        body: The response body; only its first 500 characters are kept.
        headers: A mapping with case-insensitive `get` (httpx and aiohttp headers are).
        method: The request method, for the message.
        url: The request URL, already free of credentials.
        model: The model the request asked for, to recognise "model not found".

    Example:
        >>> err = error_from_response(429, b'{"error": "slow down"}', {"retry-after": "2"},
        ...                           method="POST", url="http://127.0.0.1/v1/chat/completions")
        >>> type(err).__name__, err.retry_after
        ('RateLimitError', 2.0)
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    quoted = text[:_BODY_QUOTE_LIMIT]
    said = server_message(text)
    request_id = next((headers.get(h) for h in _REQUEST_ID_HEADERS if headers.get(h)), None)
    where = f"{method} {url}"
    head = f"server returned {status} for {where}"
    detail = f": {said}" if said else " with an empty body"
    suffix = f" (request id {request_id})" if request_id else ""
    kw: dict[str, Any] = {
        "status": status,
        "body": quoted,
        "request_id": request_id,
        "method": method,
        "url": url,
        "retry_after": parse_retry_after(headers.get("retry-after")),
    }

    def msg(fix: str) -> str:
        return f"{head}{detail}{suffix}. {fix}".rstrip()

    if status == 401:
        return AuthenticationError(msg("Check `api_key` (or OPENAI_API_KEY)."), **kw)
    if status == 403:
        return PermissionDeniedError(msg("The key may not use this model or endpoint."), **kw)
    if status == 404:
        if said and (_MODEL_MISSING.search(said) or (model and model in said)):
            fix = f"Check `model` ({model!r})" if model else "Check `model`"
            return ModelNotFoundError(msg(f"{fix}; for Ollama, `ollama pull` it first."), **kw)
        return BackendHTTPError(
            msg("Check `base_url`: an OpenAI-compatible server usually needs the `/v1` suffix."),
            **kw,
        )
    if status in (400, 413, 422):
        if _CONTEXT_PATTERNS.search(said):
            return ContextLengthExceededError(
                msg("Shorten the prompt or lower `max_tokens`."), **kw
            )
        return BadRequestError(msg("The server rejected the request as invalid."), **kw)
    if status == 429:
        return RateLimitError(msg("Rate limited."), **kw)
    if status >= 500 and _VALIDATION_REPORT.search(said):
        # llama-cpp-python answers a request its models reject with 500 "N validation errors".
        fix = f"The server rejected the request as invalid (reported as {status})."
        return BadRequestError(msg(fix), **kw)
    if status == 501:
        error: BackendHTTPError = ServerError(
            msg("The server does not implement this endpoint."), **kw
        )
        error.is_retryable = False
        return error
    if status >= 500:
        return ServerError(msg("The server failed."), **kw)
    if status in (408, 409):
        error = BackendHTTPError(msg("Sending it again may succeed."), **kw)
        error.is_retryable = True
        return error
    return BackendHTTPError(msg(""), **kw)


# ---------------------------------------------------------------------------------------
# After data reached the caller: every failure is a StreamError too
# ---------------------------------------------------------------------------------------


def _in_stream_class(base: type[MatricError]) -> type[MatricError]:
    name = f"{base.__name__}InStream"
    cls = type(name, (StreamError, base), {"__module__": __name__, "__qualname__": name})
    cls.__doc__ = (
        f"A `{base.__name__}` raised after part of a stream had reached the caller: a "
        "`StreamError` too (never retried, `partial` kept). Made by `after_data`."
    )
    globals()[name] = cls  # importable by name, so it pickles
    return cls


_IN_STREAM: dict[type[MatricError], type[MatricError]] = {BackendTimeoutError: StreamTimeoutError}
_IN_STREAM.update(
    (base, _in_stream_class(base))
    for base in (
        BackendConnectionError,
        ResponseParseError,
        BackendHTTPError,
        AuthenticationError,
        PermissionDeniedError,
        ModelNotFoundError,
        BadRequestError,
        ContextLengthExceededError,
        RateLimitError,
        ServerError,
    )
)


def after_data(error: MatricError) -> MatricError:
    """Mark `error` as raised after stream data reached the caller; return it.

    It becomes a `StreamError` as well as what it was (a `ContextLengthExceededError`
    stays one, so LangChain's handlers still recognise it), and is never retried: part of
    the answer was already handed out.

    Example:
        >>> error = after_data(RateLimitError("slow down", status=429))
        >>> isinstance(error, StreamError), isinstance(error, RateLimitError)
        (True, True)
        >>> type(error).__name__, error.is_retryable
        ('RateLimitErrorInStream', False)
    """
    cls = _IN_STREAM.get(type(error))
    if cls is not None:
        error.__class__ = cls
    error.is_retryable = False
    return error
