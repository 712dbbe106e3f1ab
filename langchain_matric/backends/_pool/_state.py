"""One endpoint's state in a pool, and how an attempt's outcome changes it (no I/O, no clock).

Passive health: a connection failure, a connect timeout, a 5xx or a 429 before any
response data puts the endpoint in cooldown: a 429's `Retry-After` when it sent one,
else `COOLDOWN_INITIAL` seconds doubling with each failure in a row up to
`COOLDOWN_MAX`; a success ends the streak. Other failures (a 4xx, a stream cut after it
began) are counted but cool nothing: the endpoint answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_matric.errors import (
    BackendConnectionError,
    BackendHTTPError,
    BackendTimeoutError,
    MatricError,
    StreamError,
)

COOLDOWN_INITIAL = 1.0
"""Seconds of the first cooldown without `Retry-After`; doubles per failure in a row."""
COOLDOWN_MAX = 30.0
"""Longest cooldown without `Retry-After`."""
ERROR_TEXT_LIMIT = 300
"""Characters of an endpoint's last error kept for stats and the all-failed message."""


@dataclass(slots=True)
class EndpointState:
    """Counters and health of one endpoint, changed only under the pool's lock.

    Example:
        >>> state = EndpointState("http://127.0.0.1:8000/v1")
        >>> state.in_flight, state.cooling(0.0)
        (0, False)
    """

    url: str
    """The endpoint's base URL, credentials removed."""
    in_flight: int = 0
    """Requests sent and not yet finished (a stream until it is closed)."""
    requests: int = 0
    """Attempts sent to this endpoint."""
    failures: int = 0
    """Attempts that failed, before or after the response began."""
    streak: int = 0
    """Cooling failures in a row (reset by a success)."""
    cooldown_until: float = 0.0
    """Clock time until which the endpoint is skipped (when another is not)."""
    cooldown_reason: str = ""
    """Why it cools: the error that put it there."""
    last_error: str = ""
    """The last error's message (shortened), or ""."""
    latency_total: float = 0.0
    """Sum of the seconds successful attempts took to answer (the head of a stream)."""
    latency_count: int = 0
    """Successful attempts behind `latency_total`."""

    def cooling(self, now: float) -> bool:
        """Whether the endpoint is in cooldown at `now`."""
        return self.cooldown_until > now


def cooldown_seconds(error: MatricError, streak: int) -> float | None:
    """Seconds `error` cools its endpoint, or None when it does not.

    `streak` counts the cooling failures in a row, this one included.

    Example:
        >>> from langchain_matric.errors import ServerError
        >>> [cooldown_seconds(ServerError("x", status=503), n) for n in (1, 2, 3, 7)]
        [1.0, 2.0, 4.0, 30.0]
    """
    if isinstance(error, StreamError):
        return None  # the endpoint answered; the stream broke later
    if isinstance(error, BackendHTTPError):
        if error.status == 429 and error.retry_after is not None:
            return max(error.retry_after, 0.0)
        if error.status != 429 and error.status < 500:
            return None
    elif isinstance(error, BackendTimeoutError):
        if not error.is_retryable:  # first-byte / idle / total: the server is slow, not gone
            return None
    elif not isinstance(error, BackendConnectionError):
        return None
    return min(COOLDOWN_MAX, COOLDOWN_INITIAL * 2.0 ** max(streak - 1, 0))


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 3] + "..."


def record_success(state: EndpointState, seconds: float) -> None:
    """An attempt was answered after `seconds`: count it and end any cooldown streak.

    Example:
        >>> state = EndpointState("http://a", streak=3, cooldown_until=9.0)
        >>> record_success(state, 0.25)
        >>> state.streak, state.cooldown_until, state.latency_count
        (0, 0.0, 1)
    """
    state.streak = 0
    state.cooldown_until = 0.0
    state.cooldown_reason = ""
    state.latency_total += seconds
    state.latency_count += 1


def record_failure(state: EndpointState, error: BaseException, now: float) -> None:
    """An attempt failed with `error` at `now`: count it, and cool the endpoint if it should.

    Example:
        >>> from langchain_matric.errors import BackendConnectionError
        >>> state = EndpointState("http://a")
        >>> record_failure(state, BackendConnectionError("refused"), now=100.0)
        >>> state.failures, state.cooldown_until, state.cooldown_reason
        (1, 101.0, 'refused')
    """
    state.failures += 1
    state.last_error = _short(error)
    if not isinstance(error, MatricError):
        return
    seconds = cooldown_seconds(error, state.streak + 1)
    if seconds is None:
        return
    state.streak += 1
    state.cooldown_until = max(state.cooldown_until, now + seconds)
    state.cooldown_reason = state.last_error
