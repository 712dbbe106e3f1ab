"""Endpoint pools: one backend spread over several servers that serve the same models.

Private to the backends. `EndpointPool` keeps the per-endpoint state (`_state`) and picks
an endpoint per attempt (`_pick`); `PoolSyncTransport` / `PoolAsyncTransport`
(`_transport`) stand where a backend's single `SyncTransport` / `AsyncTransport` would,
with one transport per endpoint, and run the one retry loop (`_failover`): a failed
attempt goes to another endpoint at once, and waits the `RetryPolicy` delay only when
no healthy endpoint is left to try. See docs/architecture.md ("Endpoint pools").
"""

from langchain_matric.backends._pool._pool import EndpointPool, EndpointStats
from langchain_matric.backends._pool._transport import (
    PoolAsyncTransport,
    PoolSyncTransport,
    build_pool_transports,
)

__all__ = [
    "EndpointPool",
    "EndpointStats",
    "PoolAsyncTransport",
    "PoolSyncTransport",
    "build_pool_transports",
]
