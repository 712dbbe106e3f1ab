"""Bounded concurrency for batches: `map_bounded` on threads, `amap_bounded` on tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from langchain_core.runnables.config import ContextThreadPoolExecutor

__all__ = ["amap_bounded", "map_bounded"]

T = TypeVar("T")
R = TypeVar("R")


def map_bounded(fn: Callable[[T], R], items: Sequence[T], limit: int) -> list[R]:
    """`[fn(x) for x in items]` on up to `limit` threads, results in input order.

    One item runs inline; context variables (callbacks, tracing) reach each thread.

    Example:
        >>> map_bounded(str.upper, ["a", "b", "c"], limit=2)
        ['A', 'B', 'C']
    """
    if len(items) <= 1 or limit <= 1:
        return [fn(item) for item in items]
    with ContextThreadPoolExecutor(max_workers=min(limit, len(items))) as pool:
        return list(pool.map(fn, items))


async def amap_bounded(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """Async `map_bounded`: at most `limit` awaiting at once, results in input order.

    Example:
        >>> import asyncio
        >>> async def double(x: int) -> int:
        ...     return 2 * x
        >>> asyncio.run(amap_bounded(double, [1, 2, 3], limit=2))
        [2, 4, 6]
    """
    if len(items) <= 1:
        return [await fn(item) for item in items]
    semaphore = asyncio.Semaphore(max(1, limit))

    async def run(item: T) -> R:
        async with semaphore:
            return await fn(item)

    tasks = [asyncio.ensure_future(run(item)) for item in items]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        # The first failure propagates as it is (no ExceptionGroup); cancel the others
        # and wait for them, so nothing keeps running or goes unretrieved.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
