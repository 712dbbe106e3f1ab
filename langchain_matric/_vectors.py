"""Embedding vectors as Python lists of floats, built where the cycle collector skips them.

A batch of 512 vectors of 768 floats is 393,216 float objects in 512 lists. CPython's
cycle collector does not track floats, but it tracks the lists, and every young collection
(one per 700 new container objects) walks each item of each list it holds. A list built
full is walked in generation 0 and again in generation 1, touching all its floats, far out
of cache. On this package's 10,000 x 768 benchmark (20 ms server, one process per variant,
full collections included) the collector took 110-160 ms of a 450-570 ms call.

So `float32_lists` creates a batch's lists empty, moves them to the old generation with one
young collection while walking them costs nothing (`gc.collect(1)`: generations 0 and 1,
which the default thresholds keep to a few thousand objects), and only then fills them. The
collector's share fell to 20-30 ms a call, mostly the occasional full collection that every
long-lived object meets anyway; the call to 360-460 ms. Nothing is lost: that collection
frees whatever garbage the young generations hold, as the next automatic one would have.
The OpenAI backend lets go of the parsed answer before building (`embedding_values`, then
`vectors_of`): its dicts count as new objects until freed, and held they set off a young
collection of their own in every batch.

It is skipped where it would not pay: small batches, the collector disabled, young
generations enlarged by the application (`gc.set_threshold`) beyond what a batch saves, and
collectors whose `gc.collect(1)` means something else (3.14's incremental collector, the
free-threaded build's, PyPy's): there the lists are built full, as anywhere else.
"""

from __future__ import annotations

import gc
import sys
import sysconfig
from array import array
from collections.abc import Sequence

__all__ = ["float32_lists"]

_LITTLE_ENDIAN = sys.byteorder == "little"
_GENERATIONAL = (
    sys.implementation.name == "cpython"
    and (3, 11) <= sys.version_info[:2] <= (3, 13)
    and not sysconfig.get_config_var("Py_GIL_DISABLED")
)
"""Whether `gc.collect(1)` collects generations 0 and 1 and nothing else."""

_ITEMS_PER_YOUNG_OBJECT = 8
"""Floats a batch must hold per object the young collection may walk for it to pay."""


def float32_lists(buffers: Sequence[bytes]) -> list[list[float]]:
    """One list of floats per buffer of little-endian float32 values (OpenAI's base64 body).

    Raises:
        ValueError: A buffer's length is not a multiple of 4.

    Example:
        >>> import struct
        >>> float32_lists([struct.pack("<2f", 0.5, -2.0), struct.pack("<f", 1.0)])
        [[0.5, -2.0], [1.0]]
    """
    vectors: list[list[float]] = [[] for _ in buffers]
    if _GENERATIONAL and _worth_a_young_collection(sum(map(len, buffers)) // 4):
        gc.collect(1)  # the empty lists leave the young generations: see the module docstring
    for vector, buffer in zip(vectors, buffers, strict=True):
        floats = array("f")
        floats.frombytes(buffer)
        if not _LITTLE_ENDIAN:
            floats.byteswap()
        vector.extend(floats)
    return vectors


def _worth_a_young_collection(floats: int) -> bool:
    """Whether walking the young generations once costs less than walking `floats` twice."""
    if not gc.isenabled():
        return False
    threshold0, threshold1, _ = gc.get_threshold()
    young = threshold0 * (threshold1 + 1)  # the most objects generations 0 and 1 hold
    return threshold0 > 0 and floats >= _ITEMS_PER_YOUNG_OBJECT * young
