"""What the endpoint-pool tests share: a settable clock and three loopback endpoints."""

from __future__ import annotations

A, B, C = "http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1", "http://127.0.0.1:8003/v1"


class Clock:
    """A clock a test sets (`clock.now`), for pools' cooldowns."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
