"""`EndpointPool`: the endpoints' states under one lock, leases, and `endpoint_stats()`.

Counts stay in this process (each process, and each unpickled copy, starts from zero),
as every client's connections do. So do the pins of stored Responses API answers
(`pin`, `pinned`): which endpoint made each response id, the last `PIN_LIMIT` of them.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_matric.backends._pool._pick import pick
from langchain_matric.backends._pool._state import EndpointState, record_failure, record_success
from langchain_matric.errors import BackendConnectionError

PIN_LIMIT = 4096
"""Response ids a pool remembers the endpoint of (least recently used forgotten first).

An id is a few dozen bytes: 4096 pins cost well under a megabyte. A conversation that
goes on after 4096 newer stored responses were made through the same pool routes as an
unknown id would (its endpoint may then not know it)."""


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """One endpoint's figures, as `endpoint_stats()` reports them.

    Example:
        >>> EndpointStats(requests=3, failures=1, in_flight=0, cooldown=0.0,
        ...               cooldown_reason="", last_error="", latency=0.12).requests
        3
    """

    requests: int
    """Attempts sent to the endpoint."""
    failures: int
    """Attempts that failed (before or after the response began)."""
    in_flight: int
    """Requests sent and not yet finished (a stream until it is closed)."""
    cooldown: float
    """Seconds of cooldown left (0.0: the endpoint is picked as usual)."""
    cooldown_reason: str
    """The error that put it in cooldown, or ""."""
    last_error: str
    """The last error's message (shortened), or ""."""
    latency: float | None
    """Mean seconds successful attempts took to answer (a stream: its head), or None."""


class EndpointPool:
    """The endpoints of one backend, picked least-outstanding with passive health.

    `clock` gives the time cooldowns are measured in (monotonic seconds; a fake one in
    tests). `prefix_affinity` > 0 sends requests whose first that-many messages match to
    the same healthy endpoint (`affinity_key`).

    Example:
        >>> pool = EndpointPool(["http://a/v1", "http://b/v1"])
        >>> first = pool.acquire(); second = pool.acquire()
        >>> (first, second), pool.endpoint_stats()["http://b/v1"].in_flight
        ((0, 1), 1)
        >>> pool.release(first, None); pool.release(second, None)
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        prefix_affinity: int = 0,
    ) -> None:
        self.urls = tuple(urls)
        self.clock = clock
        self.prefix_affinity = prefix_affinity
        self._setup()

    def _setup(self) -> None:
        self._states = [EndpointState(url) for url in self.urls]
        self._next = 0
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._pins: OrderedDict[str, int] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"urls": self.urls, "clock": self.clock, "prefix_affinity": self.prefix_affinity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def __repr__(self) -> str:
        return f"EndpointPool({list(self.urls)!r})"

    def _locked(self) -> threading.Lock:
        if self._pid != os.getpid():  # forked: the parent's lock may be held for ever
            pins = self._pins  # the ids are still the endpoints' own: keep them
            self._setup()
            self._pins = OrderedDict(pins)
        return self._lock

    def acquire(self, avoid: Collection[int] = (), key: int | None = None) -> int:
        """Pick an endpoint and count a request in flight on it; `release` it later."""
        with self._locked():
            index = pick(self._states, self.clock(), self._next, avoid=avoid, key=key)
            self._next += 1
            state = self._states[index]
            state.in_flight += 1
            state.requests += 1
        return index

    def acquire_pinned(self, index: int, response_id: str, *, first: bool) -> int:
        """Count a request in flight on `index`, the endpoint that made `response_id`.

        No pick: a stored response is known only to the endpoint that made it. On the
        call's `first` attempt, a cooling endpoint raises `BackendConnectionError` naming
        it and why no other endpoint is tried (later attempts are the call's own retries).
        """
        with self._locked():
            state = self._states[index]
            now = self.clock()
            if first and state.cooling(now):
                left = state.cooldown_until - now
                msg = (
                    f"previous_response_id {response_id!r} was made by {state.url}, which is "
                    f"cooling down ({left:.1f} s left) after: {state.cooldown_reason}; no "
                    "other endpoint was tried: a stored response is known only to the "
                    "endpoint that made it"
                )
                raise BackendConnectionError(msg)
            state.in_flight += 1
            state.requests += 1
        return index

    def pin(self, response_id: str, index: int) -> None:
        """Remember that the endpoint `index` made the response `response_id`.

        Requests continuing it (`previous_response_id`) then go there (`pinned`). The
        last `PIN_LIMIT` ids are kept.

        Example:
            >>> pool = EndpointPool(["http://a/v1", "http://b/v1"])
            >>> pool.pin("resp_1", 1)
            >>> pool.pinned({"previous_response_id": "resp_1"}), pool.pinned({"input": []})
            ((1, 'resp_1'), None)
        """
        with self._locked():
            pins = self._pins
            pins[response_id] = index
            pins.move_to_end(response_id)
            if len(pins) > PIN_LIMIT:
                pins.popitem(last=False)

    def pinned(self, payload: Any) -> tuple[int, str] | None:
        """The endpoint a request body must go to, with its `previous_response_id`, or None.

        None for a body that continues no response, or one this pool did not make (made
        by another process, or forgotten): that request is routed as usual.
        """
        if not self._pins or not isinstance(payload, dict):
            return None
        response_id = payload.get("previous_response_id")
        if not isinstance(response_id, str):
            return None
        with self._locked():
            index = self._pins.get(response_id)
            if index is None:
                return None
            self._pins.move_to_end(response_id)
        return index, response_id

    def answered(self, index: int, seconds: float) -> None:
        """The attempt on `index` was answered (2xx head) after `seconds`; still in flight."""
        with self._locked():
            record_success(self._states[index], seconds)

    def release(self, index: int, error: BaseException | None) -> None:
        """The request on `index` is over: with `error` when it failed."""
        with self._locked():
            state = self._states[index]
            state.in_flight = max(state.in_flight - 1, 0)
            if error is not None:
                record_failure(state, error, self.clock())

    def has_fresh(self, tried: Collection[int]) -> bool:
        """Whether an endpoint not in `tried` and not cooling is left."""
        with self._locked():
            now = self.clock()
            return any(
                i not in tried and not state.cooling(now) for i, state in enumerate(self._states)
            )

    def affinity_key(self, payload: Any) -> int | None:
        """The affinity key of a request body (its first messages), or None.

        Example:
            >>> pool = EndpointPool(["http://a", "http://b"], prefix_affinity=1)
            >>> k1 = pool.affinity_key({"messages": [{"role": "system", "content": "S"}, 1]})
            >>> k1 == pool.affinity_key({"messages": [{"role": "system", "content": "S"}, 2]})
            True
        """
        if not self.prefix_affinity or not isinstance(payload, dict):
            return None
        messages = payload.get("messages", payload.get("input"))
        if not isinstance(messages, list) or not messages or isinstance(messages[0], str):
            return None  # no messages (an embeddings batch's `input` is texts, no prefix)
        head = messages[: self.prefix_affinity]
        text = json.dumps(head, sort_keys=True, separators=(",", ":"), default=str)
        return zlib.crc32(text.encode())

    def endpoint_stats(self) -> dict[str, EndpointStats]:
        """Each endpoint's figures, keyed by its URL (credentials removed)."""
        with self._locked():
            now = self.clock()
            return {
                s.url: EndpointStats(
                    requests=s.requests,
                    failures=s.failures,
                    in_flight=s.in_flight,
                    cooldown=max(s.cooldown_until - now, 0.0),
                    cooldown_reason=s.cooldown_reason if s.cooling(now) else "",
                    last_error=s.last_error,
                    latency=s.latency_total / s.latency_count if s.latency_count else None,
                )
                for s in self._states
            }
