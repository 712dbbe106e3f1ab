"""Which endpoint gets the next attempt: a pure function of the states and the time.

Least outstanding requests (counted in this process): the endpoint with the fewest
requests in flight wins; among ties, the `start`-th (modulo their number), `start`
advancing on every pick, so sequential calls alternate. Endpoints in cooldown, and those
this call already tried, are skipped unless no other is left. With an affinity `key`
(requests whose first messages match), the key's own endpoint among the candidates wins
whatever its load (rendezvous hashing: when it cools, only its keys move).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Sequence

from langchain_matric.backends._pool._state import EndpointState


def candidates(
    states: Sequence[EndpointState], now: float, avoid: Collection[int] = ()
) -> list[int]:
    """The endpoints a pick may choose from, by index.

    Untried and not cooling if any; else untried (all cool); else all.

    Example:
        >>> a, b = EndpointState("http://a", cooldown_until=5.0), EndpointState("http://b")
        >>> candidates([a, b], now=1.0), candidates([a, b], now=1.0, avoid={1})
        ([1], [0])
    """
    indices = range(len(states))
    untried = [i for i in indices if i not in avoid]
    healthy = [i for i in untried if not states[i].cooling(now)]
    return healthy or untried or list(indices)


def pick(
    states: Sequence[EndpointState],
    now: float,
    start: int,
    *,
    avoid: Collection[int] = (),
    key: int | None = None,
) -> int:
    """The index of the endpoint for the next attempt.

    Example:
        >>> a, b = EndpointState("http://a"), EndpointState("http://b")
        >>> [pick([a, b], now=0.0, start=s) for s in range(4)]  # ties rotate
        [0, 1, 0, 1]
        >>> a.in_flight = 1
        >>> pick([a, b], now=0.0, start=0)  # fewest in flight
        1
    """
    found = candidates(states, now, avoid)
    if key is not None:
        return max(found, key=lambda i: (zlib.crc32(states[i].url.encode(), key), -i))
    least = min(states[i].in_flight for i in found)
    tied = [i for i in found if states[i].in_flight == least]
    return tied[start % len(tied)]
