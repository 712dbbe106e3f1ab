import gc
import struct
from collections.abc import Iterator

import pytest

from langchain_matric import _vectors
from langchain_matric._vectors import float32_lists

GENERATIONAL = _vectors._GENERATIONAL
needs_generational = pytest.mark.skipif(
    not GENERATIONAL, reason="the young collection is only made with CPython 3.11-3.13's collector"
)


def _batch(count: int, dim: int = 768) -> tuple[list[bytes], list[list[float]]]:
    expected = [[(i * dim + j) / 7 for j in range(dim)] for i in range(count)]
    buffers = [struct.pack(f"<{dim}f", *vector) for vector in expected]
    # what float32 keeps of each value
    return buffers, [list(struct.unpack(f"<{dim}f", buffer)) for buffer in buffers]


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection made while the test runs."""
    made: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            made.append(info["generation"])

    gc.callbacks.append(record)
    try:
        yield made
    finally:
        gc.callbacks.remove(record)


def _young(vectors: list[list[float]]) -> int:
    """How many of `vectors` sit in the collector's generations 0 and 1."""
    ids = {id(vector) for vector in vectors}
    return sum(id(o) in ids for generation in (0, 1) for o in gc.get_objects(generation))


def test_values_and_order() -> None:
    buffers, expected = _batch(200)
    assert float32_lists(buffers) == expected
    assert float32_lists([]) == []
    assert float32_lists([b""]) == [[]]


def test_big_endian_machines_swap_bytes(monkeypatch) -> None:
    buffers, expected = _batch(3, dim=4)
    monkeypatch.setattr(_vectors, "_LITTLE_ENDIAN", False)
    swapped = [struct.pack(">4f", *struct.unpack("<4f", buffer)) for buffer in buffers]
    assert float32_lists(swapped) == expected


def test_a_buffer_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of item size"):
        float32_lists([b"\0\0\0\0", b"\0\0\0"])


@needs_generational
def test_a_big_batch_is_filled_outside_the_young_generations(collections) -> None:
    buffers, expected = _batch(100)  # 76,800 floats: above the default 61,600
    gc.collect()  # no generation-1 collection of its own for ~7,000 allocations
    collections.clear()
    vectors = float32_lists(buffers)
    assert vectors == expected
    assert 1 in collections
    assert _young(vectors) == 0


def test_without_the_step_the_lists_are_young(monkeypatch) -> None:
    # The control for the test above: built full, the lists stay where the young
    # collections walk them.
    monkeypatch.setattr(_vectors, "_GENERATIONAL", False)
    buffers = _batch(100)[0]
    gc.collect()
    vectors = float32_lists(buffers)
    assert _young(vectors) == 100


@pytest.mark.parametrize(
    ("count", "threshold", "enabled"),
    [
        (10, None, True),  # 7,680 floats: not worth a collection
        (100, (100_000, 10, 10), True),  # young generations enlarged by the application
        (100, (0, 10, 10), True),  # automatic collection off
        (100, None, False),  # gc.disable()
    ],
)
def test_no_collection_where_it_would_not_pay(count, threshold, enabled, collections) -> None:
    before, was_enabled = gc.get_threshold(), gc.isenabled()
    try:
        if threshold is not None:
            gc.set_threshold(*threshold)
        if not enabled:
            gc.disable()
        buffers, expected = _batch(count)
        gc.collect()  # counts reset: no automatic collection in the next ~700 allocations
        collections.clear()
        assert float32_lists(buffers) == expected
        assert collections == []
    finally:
        gc.set_threshold(*before)
        if was_enabled:
            gc.enable()
