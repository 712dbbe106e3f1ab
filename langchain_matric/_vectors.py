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
import json
import sys
import sysconfig
from array import array
from collections.abc import Sequence
from math import isfinite
from typing import Any

from langchain_matric.errors import EmbeddingValueError

__all__ = ["check_values", "float32_lists", "not_a_finite_number"]

_LITTLE_ENDIAN = sys.byteorder == "little"
_GENERATIONAL = (
    sys.implementation.name == "cpython"
    and (3, 11) <= sys.version_info[:2] <= (3, 13)
    and not sysconfig.get_config_var("Py_GIL_DISABLED")
)
"""Whether `gc.collect(1)` collects generations 0 and 1 and nothing else."""

_ITEMS_PER_YOUNG_OBJECT = 8
"""Floats a batch must hold per object the young collection may walk for it to pay."""


def float32_lists(buffers: Sequence[bytes], *, source: str | None = None) -> list[list[float]]:
    """One list of floats per buffer of little-endian float32 values (OpenAI's base64 body).

    With `source` (the server's URL), the values are checked as `check_values` does, on
    the bytes first: a float32 is NaN or infinite only if its exponent bits are all ones,
    so its last (little-endian) byte is 0x7f or 0xff. Two byte searches over every fourth
    byte clear a vector (~0.02 ns a float, where summing the floats costs ~3 ns); only a
    vector with such a byte (or a value at or above 2**127) is checked float by float.

    Raises:
        ValueError: A buffer's length is not a multiple of 4.
        EmbeddingValueError: With `source`, a value is NaN or an infinity.

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
    if source is not None and any(map(_may_not_be_finite, buffers)):
        check_values(vectors, source, url=source)
    return vectors


def _may_not_be_finite(buffer: bytes) -> bool:
    """Whether a float32 buffer may hold NaN or an infinity (see `float32_lists`)."""
    high = buffer[3::4]  # each value's sign bit and top seven exponent bits
    return b"\x7f" in high or b"\xff" in high


def _worth_a_young_collection(floats: int) -> bool:
    """Whether walking the young generations once costs less than walking `floats` twice."""
    if not gc.isenabled():
        return False
    threshold0, threshold1, _ = gc.get_threshold()
    young = threshold0 * (threshold1 + 1)  # the most objects generations 0 and 1 hold
    return threshold0 > 0 and floats >= _ITEMS_PER_YOUNG_OBJECT * young


def not_a_finite_number(vectors: Sequence[Sequence[Any]]) -> tuple[int, int, Any] | None:
    """`(vector, position, value)` of the first element that is not a finite number, or None.

    NaN and +-Infinity (which JSON parsers accept and float32 can encode) poison a vector
    index; strings and nulls are no numbers at all. The check is one C-level `sum` per
    vector and one over the sums: a NaN or an infinity makes the total non-finite and a
    string or null makes `sum` raise, so only then are the elements looked at one by one
    (a total that overflowed from finite values is found clean there). Python counts
    `True` and `False` as numbers, and so does this check.

    Example:
        >>> not_a_finite_number([[0.5, 1], [2.0, float("nan")]])
        (1, 1, nan)
        >>> not_a_finite_number([[0.5, None]])
        (0, 1, None)
        >>> not_a_finite_number([[0.5, 1]]) is None
        True
    """
    try:
        if isfinite(sum(map(sum, vectors))):
            return None
    except TypeError:  # a string, null, list or object among the numbers
        pass
    for i, vector in enumerate(vectors):
        for j, value in enumerate(vector):
            if not isinstance(value, int | float) or not isfinite(value):
                return i, j, value
    return None


def check_values(
    vectors: Sequence[Sequence[Any]], source: str, *, url: str | None = None, first: int = 0
) -> None:
    """Raise `EmbeddingValueError` unless every element of every vector is a finite number.

    `source` names the server in the message (a URL, or "Ollama"); `first` is the index of
    the text of `vectors[0]` in the request.

    Example:
        >>> check_values([[0.5, 1.0]], "http://127.0.0.1:8000/v1/embeddings")
        >>> check_values([[0.5], [float("inf")]], "Ollama")
        Traceback (most recent call last):
        ...
        langchain_matric.errors.EmbeddingValueError: embedding 1 from Ollama (the vector of \
text 1 of the request) holds Infinity at position 0, where every element must be a finite \
number; a NaN or an infinity would poison a vector index
    """
    found = not_a_finite_number(vectors)
    if found is None:
        return
    index, position, value = found
    index += first
    shown = _shown(value)
    msg = (
        f"embedding {index} from {source} (the vector of text {index} of the request) holds "
        f"{shown} at position {position}, where every element must be a finite number; a NaN "
        "or an infinity would poison a vector index"
    )
    raise EmbeddingValueError(msg, index=index, body=shown, url=url)


def _shown(value: Any) -> str:
    """`value` as the answer spelt it (`json` writes NaN and Infinity as JavaScript does)."""
    try:
        return json.dumps(value)[:100]
    except (TypeError, ValueError):
        return repr(value)[:100]
