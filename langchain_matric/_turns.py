"""Turns: one job's concurrent requests read and handle their answers one at a time.

Its own module, without httpx, so `MatricEmbeddings` can open turns without loading the
HTTP layer at import time (that happens on first use).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar

_TURN: ContextVar[threading.RLock | None] = ContextVar("langchain_matric_turn", default=None)


def current_turn() -> threading.RLock | None:
    """The lock of the enclosing `taking_turns()` block, or None outside one."""
    return _TURN.get()


@contextlib.contextmanager
def taking_turns() -> Iterator[None]:
    """Within the block, `request_in_turn()` answers are read and handled one at a time.

    For one job's concurrent requests (threads started with this context, as
    `ContextThreadPoolExecutor` does) whose answers are large and CPU-bound to parse, such
    as embeddings: the GIL runs that work one thread at a time anyway, and a thread reading
    its body (each read releasing the GIL) while another parses hands the GIL back and
    forth at every read. Through httpcore's 64 KiB reads that was ~11,000 context switches
    and ~0.1 s of CPU per 10,000 vectors of 768 floats; through urllib3's larger reads the
    turns still save 5-8% of the call (paired probe, 20 ms and fast servers). Sending and
    waiting for the answers still overlap, and the kernel keeps receiving every body while
    its thread waits for its turn.

    Example:
        >>> with taking_turns():  # doctest: +SKIP
        ...     vectors = map_bounded(backend.embed_texts, batches, 4)
    """
    token = _TURN.set(threading.RLock())
    try:
        yield
    finally:
        _TURN.reset(token)
