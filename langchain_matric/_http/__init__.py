"""Transports: httpx over urllib3's connections (sync) and aiohttp (async), one interface.

The only code that imports httpx, urllib3 or aiohttp; aiohttp is imported on first async use.
Request building, timeouts, retries with backoff, status -> typed error mapping and every
message are written once (`_common`, `_config`); `SyncTransport` (`_sync`) and
`AsyncTransport` (`_async`) are short loops around them.

Timeouts (`Timeouts`), alike on both stacks except where noted:
    connect     TCP + TLS connection                    retried
    first_byte  sending the request, until the head     not retried (unless retry_read_timeouts)
                (async: aiohttp times the wait for the head only; `total` bounds sending)
    idle        each gap while reading the body         not retried (unless retry_read_timeouts)
    total       the whole call, retries included        not retried

Example:
    >>> from langchain_matric._http import HTTPConfig, SyncTransport, Timeouts
    >>> config = HTTPConfig("http://127.0.0.1:11434", timeouts=Timeouts(first_byte=600))
    >>> with SyncTransport(config) as transport:  # doctest: +SKIP
    ...     models = transport.request("GET", "/api/tags").json()
"""

from langchain_matric._http._async import AsyncTransport
from langchain_matric._http._common import AsyncStreamResponse, Response, StreamResponse
from langchain_matric._http._config import (
    HTTPConfig,
    RetryPolicy,
    Timeouts,
    redact_headers,
    redact_response_headers,
    redact_url,
)
from langchain_matric._http._sync import SyncTransport

__all__ = [
    "AsyncStreamResponse",
    "AsyncTransport",
    "HTTPConfig",
    "Response",
    "RetryPolicy",
    "StreamResponse",
    "SyncTransport",
    "Timeouts",
    "redact_headers",
    "redact_response_headers",
    "redact_url",
]
