"""The pool's one retry loop: per attempt, an endpoint; on failure, another at once.

A retryable failure before any data reached the caller (connection failure, connect
timeout, 408, 409, 429, 5xx but 501: the error's `is_retryable`) is tried again on an
endpoint this call has not tried and that is not cooling, without waiting; only when no
such endpoint is left does the loop wait the `RetryPolicy` delay (`Retry-After` honoured)
before the next attempt, as a single transport would. `max_retries + 1` attempts in all;
never after data reached the caller (streams fail over only while opening).

A request pinned to one endpoint (`Attempts.pinned`: it continues a stored Responses API
answer that endpoint made) never fails over: its attempts all go there, retried after the
`RetryPolicy` delay as a single transport's would be, and its final error says which
endpoint it was pinned to and why no other one was tried.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from langchain_matric._http import RetryPolicy
from langchain_matric._http._config import logger
from langchain_matric.backends._pool._pool import EndpointPool
from langchain_matric.errors import BackendConnectionError, BackendHTTPError, MatricError

T = TypeVar("T")


def should_fail_over(error: MatricError, data_sent: bool) -> bool:
    """Whether `error` may be tried again on another endpoint.

    Example:
        >>> from langchain_matric.errors import BadRequestError, ServerError
        >>> should_fail_over(ServerError("x", status=503), data_sent=False)
        True
        >>> should_fail_over(ServerError("x", status=503), data_sent=True)
        False
        >>> should_fail_over(BadRequestError("x", status=400), data_sent=False)
        False
    """
    if data_sent or not error.is_retryable:
        return False
    if isinstance(error, BackendHTTPError) and 400 <= error.status < 500:
        return error.status in (408, 409, 429)
    return True


@dataclass(slots=True)
class Attempts:
    """One call's attempts: what each endpoint last failed with, and what comes next."""

    pool: EndpointPool
    policy: RetryPolicy
    rand: Callable[[], float]
    total: float | None
    key: int | None = None
    pinned: tuple[int, str] | None = None
    """The endpoint every attempt must go to, and the response id that pins it."""
    started: float = field(default=0.0)
    number: int = 0
    tried: set[int] = field(default_factory=set)
    errors: dict[int, MatricError] = field(default_factory=dict)

    def next_wait(self, index: int, error: MatricError) -> float | None:
        """Seconds to wait (0: at once) after the attempt on `index` failed, or None.

        None: give up (the caller raises `final_error`).
        """
        self.tried.add(index)
        self.errors[index] = error
        if not should_fail_over(error, data_sent=False) or self.number >= self.policy.max_retries:
            return None
        self.number += 1
        if self.pinned is None and self.pool.has_fresh(self.tried):
            wait = 0.0
        else:  # every endpoint tried or cooling: back off, then any may go again
            retry_after = error.retry_after if isinstance(error, BackendHTTPError) else None
            wait = self.policy.delay(self.number, retry_after, self.rand())
            self.tried.clear()
        if self.total is not None and self.pool.clock() + wait - self.started >= self.total:
            return None
        where = self.pool.urls[index]
        logger.info(
            "%s failed (%s); attempt %d of %d in %.2f s",
            where,
            _reason(error),
            self.number + 1,
            self.policy.max_retries + 1,
            wait,
        )
        return wait

    def acquire(self) -> int:
        """The endpoint of the next attempt, leased (`EndpointPool.acquire`)."""
        if self.pinned is None:
            return self.pool.acquire(self.tried, self.key)
        index, response_id = self.pinned
        return self.pool.acquire_pinned(index, response_id, first=self.number == 0)

    def final_error(self, error: MatricError) -> MatricError:
        """The error to raise: the last one, or one naming every endpoint when all failed.

        A pinned request's error that would have failed over says where it was pinned.
        """
        if self.pinned is not None:
            if should_fail_over(error, data_sent=False):
                _say_pinned(error, self.pool.urls[self.pinned[0]], self.pinned[1])
            return error
        if len(self.pool.urls) < 2 or len(self.errors) < len(self.pool.urls):
            return error
        if not should_fail_over(error, data_sent=False):
            return error
        return all_failed(self.pool.urls, [self.errors[i] for i in range(len(self.pool.urls))])


def _say_pinned(error: MatricError, url: str, response_id: str) -> None:
    """Add to `error` that its request was pinned to `url`, and why."""
    note = (
        f" (previous_response_id {response_id!r} was made by {url}: no other endpoint was "
        "tried, a stored response is known only to the endpoint that made it)"
    )
    if note not in error.message:
        error.message += note
        error.args = (error.message,)


def _reason(error: MatricError) -> str:
    if isinstance(error, BackendHTTPError):  # its message quotes the server: not in logs
        return f"HTTP {error.status}"
    return type(error).__name__


def all_failed(urls: Sequence[str], errors: Sequence[MatricError]) -> BackendConnectionError:
    """The error for a pool whose every endpoint failed: each URL and its last error.

    Example:
        >>> from langchain_matric.errors import ServerError
        >>> print(all_failed(["http://a/v1", "http://b/v1"],
        ...                  [BackendConnectionError("refused"), ServerError("503 x", status=503)]))
        all 2 endpoints failed: http://a/v1: refused; http://b/v1: 503 x
    """
    parts = "; ".join(f"{url}: {_short(error)}" for url, error in zip(urls, errors, strict=True))
    error = BackendConnectionError(f"all {len(urls)} endpoints failed: {parts}")
    error.is_retryable = False  # the pool already retried
    return error


def _short(error: MatricError) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:297] + "..."


def run_sync(
    attempts: Attempts, attempt: Callable[[int], T], sleep: Callable[[float], None]
) -> tuple[int, T]:
    """Run `attempt(endpoint)` until one succeeds; returns the endpoint, still leased."""
    attempts.started = attempts.pool.clock()
    while True:
        index = attempts.acquire()
        began = time.perf_counter()
        try:
            result = attempt(index)
        except MatricError as error:
            attempts.pool.release(index, error)
            wait = attempts.next_wait(index, error)
            if wait is None:
                final = attempts.final_error(error)
                if final is error:
                    raise
                raise final from error
            if wait:
                sleep(wait)
            continue
        except BaseException:
            attempts.pool.release(index, None)
            raise
        attempts.pool.answered(index, time.perf_counter() - began)
        return index, result


async def run_async(
    attempts: Attempts,
    attempt: Callable[[int], Awaitable[T]],
    asleep: Callable[[float], Awaitable[None]],
) -> tuple[int, T]:
    """Async `run_sync`."""
    attempts.started = attempts.pool.clock()
    while True:
        index = attempts.acquire()
        began = time.perf_counter()
        try:
            result = await attempt(index)
        except MatricError as error:
            attempts.pool.release(index, error)
            wait = attempts.next_wait(index, error)
            if wait is None:
                final = attempts.final_error(error)
                if final is error:
                    raise
                raise final from error
            if wait:
                await asleep(wait)
            continue
        except BaseException:
            attempts.pool.release(index, None)
            raise
        attempts.pool.answered(index, time.perf_counter() - began)
        return index, result
