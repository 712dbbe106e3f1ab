"""`langchain_matric.ray`'s pure parts: the halving retry, alignment, errors, the rate cap.

They import no Ray (docs/architecture.md: Ray is imported only when `embed`/`generate`
run), so they run without the `ray` extra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from langchain_matric.errors import BadRequestError
from langchain_matric.ray._rate import TokenBucket, per_actor_qps
from langchain_matric.ray._rows import (
    Outcome,
    check_aligned,
    check_on_error,
    error_text,
    halves,
    merge,
    run_halving,
    split_texts,
    with_rejected,
)


class Embedder:
    """Fails any batch holding a text in `bad`; records every batch it was sent."""

    def __init__(self, bad: set[str]) -> None:
        self.bad = bad
        self.calls: list[list[str]] = []

    async def __call__(self, batch: Sequence[str]) -> list[int]:
        self.calls.append(list(batch))
        failing = self.bad.intersection(batch)
        if failing:
            raise BadRequestError(f"too long: {sorted(failing)[0]}", status=400)
        return [len(t) for t in batch]


async def test_a_good_batch_is_one_call() -> None:
    call = Embedder(set())
    outcome = await run_halving(["a", "bb"], call, "column")
    assert outcome == Outcome([1, 2], [None, None])
    assert call.calls == [["a", "bb"]]


async def test_column_halves_down_to_the_bad_row() -> None:
    texts = [f"t{i}" for i in range(8)]
    call = Embedder({"t5"})
    outcome = await run_halving(texts, call, "column")
    assert outcome.outputs == [2, 2, 2, 2, 2, None, 2, 2]
    assert outcome.errors[5] is not None
    assert outcome.errors[5].startswith("BadRequestError: too long: t5")
    assert [e for i, e in enumerate(outcome.errors) if i != 5] == [None] * 7
    # 8 -> 4 + 4 -> 2 + 2 -> 1 + 1, depth first: every good half answered once.
    assert call.calls == [texts, texts[:4], texts[4:], ["t4", "t5"], ["t4"], ["t5"], ["t6", "t7"]]


async def test_every_row_bad_and_an_empty_batch() -> None:
    outcome = await run_halving(["x", "y", "z"], Embedder({"x", "y", "z"}), "column")
    assert outcome.outputs == [None, None, None]
    assert all(e and e.startswith("BadRequestError") for e in outcome.errors)
    assert await run_halving([], Embedder(set()), "raise") == Outcome([], [])


async def test_raise_propagates_at_once() -> None:
    call = Embedder({"b"})
    with pytest.raises(BadRequestError, match="too long: b"):
        await run_halving(["a", "b"], call, "raise")
    assert call.calls == [["a", "b"]]


async def test_a_misaligned_answer_is_an_error() -> None:
    async def short(batch: Sequence[str]) -> list[int]:
        return [1] * (len(batch) - 1)

    outcome = await run_halving(["a", "b"], short, "column")
    assert outcome.outputs == [None, None]
    assert (
        outcome.errors
        == ["ValueError: 0 outputs for 1 inputs: the rows would no longer line up"] * 2
    )
    with pytest.raises(ValueError, match="1 outputs for 2 inputs"):
        check_aligned(["a", "b"], [1])


def test_small_helpers() -> None:
    assert halves([1, 2, 3, 4, 5]) == ([1, 2], [3, 4, 5])
    assert error_text(RuntimeError()) == "RuntimeError"
    assert merge([Outcome([1], [None]), Outcome([None, 3], ["E", None])]) == Outcome(
        [1, None, 3], [None, "E", None]
    )
    assert check_on_error("raise") == "raise"
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'column', not 'skip'"):
        check_on_error("skip")


def test_per_actor_qps() -> None:
    assert per_actor_qps(None, 3) is None
    assert per_actor_qps(9, 3) == 3.0
    for bad in (0, -1, math.inf, math.nan, "5"):
        with pytest.raises(ValueError, match="qps must be a positive number"):
            per_actor_qps(bad, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="actors must be at least 1"):
        per_actor_qps(1, 0)


def test_the_bucket_spaces_requests_at_its_rate() -> None:
    bucket = TokenBucket(rate=4.0)
    waits = [bucket.reserve(now=0.0) for _ in range(5)]
    assert waits == [0.0, 0.25, 0.5, 0.75, 1.0]
    # Idle time does not pile up tokens beyond the burst.
    assert bucket.reserve(now=10.0) == 0.0
    assert bucket.reserve(now=10.0) == 0.25


def test_the_bucket_allows_a_burst() -> None:
    bucket = TokenBucket(rate=1.0, burst=3)
    assert [bucket.reserve(now=100.0) for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_hold_delays_every_later_request() -> None:
    bucket = TokenBucket(rate=10.0)
    assert bucket.reserve(now=0.0) == 0.0
    bucket.hold(until=3.0)  # a Retry-After of 3 s
    assert bucket.reserve(now=1.0) == 2.0
    assert bucket.reserve(now=1.0) == pytest.approx(2.1)
    bucket.hold(until=0.5)  # an earlier hold changes nothing
    assert bucket.reserve(now=1.0) == pytest.approx(2.2)


def test_the_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        TokenBucket(rate=0.0)
    with pytest.raises(ValueError, match="burst must be at least 1"):
        TokenBucket(rate=1.0, burst=0)


def test_rows_without_text_are_set_aside_and_put_back_in_place():
    texts, rejected = split_texts(["a", None, "c", 3], "body")
    assert texts == ["a", "c"]
    assert rejected == {
        1: "TypeError: column 'body' holds None, not text",
        3: "TypeError: column 'body' holds 3, not text",
    }
    merged = with_rejected(Outcome([10, None], [None, "E"]), rejected)
    assert merged == Outcome([10, None, None, None], [None, rejected[1], "E", rejected[3]])
    assert with_rejected(Outcome([1], [None]), {}) == Outcome([1], [None])
