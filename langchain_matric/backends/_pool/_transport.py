"""Pool transports: `SyncTransport` / `AsyncTransport`'s interface over one per endpoint.

Each endpoint's transport sends one attempt (its `RetryPolicy.max_retries` is 0); the
pool's loop (`_failover`) picks the endpoint of every attempt and owns the retries, so
there is one retry policy, not two loops. A lease is held from the pick until the
response is read (`request`) or the stream is closed (`stream`). Every response carries
the index of the endpoint that answered (`endpoint`), so a backend can pin a stored
Responses API answer's id there (`EndpointPool.pin`); a request body whose
`previous_response_id` is pinned goes to that endpoint only (`_failover`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from langchain_matric._http import (
    AsyncStreamResponse,
    AsyncTransport,
    HTTPConfig,
    Response,
    StreamResponse,
    SyncTransport,
    redact_url,
)
from langchain_matric.backends._pool._failover import Attempts, run_async, run_sync
from langchain_matric.backends._pool._pool import EndpointPool
from langchain_matric.errors import ConfigurationError, MatricError


def build_pool_transports(
    config: HTTPConfig,
    urls: Sequence[str],
    *,
    transport: Any = None,
    clock: Callable[[], float] | None = None,
    prefix_affinity: int = 0,
) -> tuple[PoolSyncTransport, PoolAsyncTransport]:
    """The sync and async pool transports for `urls`, sharing one `EndpointPool`.

    `config` is the first endpoint's (its retry policy is the pool's); every endpoint
    gets a copy with its own URL and no retries of its own.

    Example:
        >>> config = HTTPConfig("http://127.0.0.1:8001/v1")
        >>> sync, _ = build_pool_transports(config, [config.base_url, "http://127.0.0.1:8002/v1"])
        >>> sync.pool
        EndpointPool(['http://127.0.0.1:8001/v1', 'http://127.0.0.1:8002/v1'])
    """
    shown = [redact_url(url) for url in urls]
    if len(set(shown)) != len(shown):
        msg = f"base_url lists an endpoint twice: {shown}"
        raise ConfigurationError(msg)
    if isinstance(prefix_affinity, bool) or not isinstance(prefix_affinity, int):
        msg = f"prefix_affinity must be an int (leading messages), got {prefix_affinity!r}"
        raise ConfigurationError(msg)
    if prefix_affinity < 0:
        msg = f"prefix_affinity must be >= 0, got {prefix_affinity}"
        raise ConfigurationError(msg)
    single = dataclasses.replace(config.retry, max_retries=0)
    configs = [dataclasses.replace(config, base_url=url, retry=single) for url in urls]
    kwargs: dict[str, Any] = {"prefix_affinity": prefix_affinity}
    if clock is not None:
        kwargs["clock"] = clock
    pool = EndpointPool(shown, **kwargs)
    sync = PoolSyncTransport(config, pool, [SyncTransport(c, transport=transport) for c in configs])
    return sync, PoolAsyncTransport(config, pool, [AsyncTransport(c) for c in configs])


_T = TypeVar("_T", SyncTransport, AsyncTransport)


class _PoolTransport(Generic[_T]):
    """What both pool transports hold: the settings, the pool, one transport per endpoint."""

    def __init__(self, config: HTTPConfig, pool: EndpointPool, transports: Sequence[_T]) -> None:
        self.config = config
        """The pool's settings (the first endpoint's URL; its retry policy is the pool's)."""
        self.pool = pool
        self.transports: list[_T] = list(transports)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.pool.urls)!r})"

    def _attempts(self, json: Any) -> Attempts:
        """One call's attempts: pinned when `json` continues a response this pool made."""
        pool, config = self.pool, self.config
        pinned = pool.pinned(json)
        key = pool.affinity_key(json) if pool.prefix_affinity and pinned is None else None
        return Attempts(
            pool, config.retry, config.random, config.timeouts.total, key=key, pinned=pinned
        )


class PoolSyncTransport(_PoolTransport[SyncTransport]):
    """`SyncTransport`'s `request`, `request_in_turn`, `stream` and `close` over a pool."""

    def close(self) -> None:
        """Close every endpoint's connections (idempotent)."""
        for transport in self.transports:
            transport.close()

    def request(self, method: str, path: str, *, json: Any = None, **kw: Any) -> Response:
        """`SyncTransport.request` on the endpoint the pool picks (failing over)."""
        index, response = run_sync(
            self._attempts(json),
            lambda i: self.transports[i].request(method, path, json=json, **kw),
            self.config.sleep,
        )
        self.pool.release(index, None)
        response.endpoint = index
        return response

    @contextlib.contextmanager
    def request_in_turn(
        self, method: str, path: str, *, json: Any = None, **kw: Any
    ) -> Iterator[Response]:
        """`SyncTransport.request_in_turn` on the endpoint the pool picks (failing over)."""
        with contextlib.ExitStack() as stack:
            index, response = run_sync(
                self._attempts(json),
                lambda i: stack.enter_context(
                    self.transports[i].request_in_turn(method, path, json=json, **kw)
                ),
                self.config.sleep,
            )
            response.endpoint = index
            try:
                yield response
            finally:
                self.pool.release(index, None)

    @contextlib.contextmanager
    def stream(
        self, method: str, path: str, *, json: Any = None, **kw: Any
    ) -> Iterator[StreamResponse]:
        """`SyncTransport.stream` on the endpoint the pool picks.

        Fails over only while opening; the stream counts in flight until it is closed.
        """
        with contextlib.ExitStack() as stack:
            index, response = run_sync(
                self._attempts(json),
                lambda i: stack.enter_context(
                    self.transports[i].stream(method, path, json=json, **kw)
                ),
                self.config.sleep,
            )
            response.endpoint = index
            failure: MatricError | None = None
            try:
                yield response
            except MatricError as error:
                failure = error
                raise
            finally:
                self.pool.release(index, failure)


class PoolAsyncTransport(_PoolTransport[AsyncTransport]):
    """`AsyncTransport`'s `request`, `stream` and `aclose` over a pool."""

    async def aclose(self) -> None:
        """Close this loop's sessions of every endpoint (idempotent)."""
        for transport in self.transports:
            await transport.aclose()

    async def request(self, method: str, path: str, *, json: Any = None, **kw: Any) -> Response:
        """`AsyncTransport.request` on the endpoint the pool picks (failing over)."""
        index, response = await run_async(
            self._attempts(json),
            lambda i: self.transports[i].request(method, path, json=json, **kw),
            self.config.asleep,
        )
        self.pool.release(index, None)
        response.endpoint = index
        return response

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, *, json: Any = None, **kw: Any
    ) -> AsyncIterator[AsyncStreamResponse]:
        """`AsyncTransport.stream` on the endpoint the pool picks (see the sync one)."""
        async with contextlib.AsyncExitStack() as stack:

            async def attempt(i: int) -> AsyncStreamResponse:
                return await stack.enter_async_context(
                    self.transports[i].stream(method, path, json=json, **kw)
                )

            index, response = await run_async(self._attempts(json), attempt, self.config.asleep)
            response.endpoint = index
            failure: MatricError | None = None
            try:
                yield response
            except MatricError as error:
                failure = error
                raise
            finally:
                self.pool.release(index, failure)
