"""A token bucket for one actor's request rate, and the split of `qps` over actors.

Pure: the clock is a parameter. `TokenBucket.reserve(now)` says how long the caller
waits before its request may go; `hold(until)` makes every later request wait until
then (a server's `Retry-After`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def per_actor_qps(qps: float | None, actors: int) -> float | None:
    """Each actor's share of a dataset-wide `qps` (None: no cap).

    Example:
        >>> per_actor_qps(10, 4)
        2.5
        >>> per_actor_qps(None, 4) is None
        True
    """
    if qps is None:
        return None
    if not (isinstance(qps, int | float) and math.isfinite(qps) and qps > 0):
        msg = f"qps must be a positive number of requests per second or None, not {qps!r}"
        raise ValueError(msg)
    if actors < 1:
        msg = f"actors must be at least 1, not {actors!r}"
        raise ValueError(msg)
    return float(qps) / actors


@dataclass(slots=True)
class TokenBucket:
    """`rate` requests per second on average, bursts of at most `burst`.

    Example:
        >>> bucket = TokenBucket(rate=2.0, burst=1)
        >>> [bucket.reserve(now=0.0) for _ in range(3)]  # the waits, in seconds
        [0.0, 0.5, 1.0]
        >>> bucket.hold(until=5.0)
        >>> bucket.reserve(now=1.0)
        4.0
    """

    rate: float
    burst: int = 1
    _next: float = field(default=-math.inf, repr=False)
    """When the next request may go with the bucket empty."""

    def __post_init__(self) -> None:
        if not self.rate > 0:
            msg = f"rate must be positive, not {self.rate!r}"
            raise ValueError(msg)
        if self.burst < 1:
            msg = f"burst must be at least 1, not {self.burst!r}"
            raise ValueError(msg)

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait before using it (0.0: at once)."""
        interval = 1.0 / self.rate
        # A full bucket holds `burst` tokens: the schedule never lags `now` by more.
        start = max(self._next, now - (self.burst - 1) * interval)
        self._next = start + interval
        return max(0.0, start - now)

    def hold(self, until: float) -> None:
        """No request goes before `until` (on the same clock as `reserve`'s `now`)."""
        self._next = max(self._next, until)
