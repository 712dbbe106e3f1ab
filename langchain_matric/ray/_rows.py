"""Rows in, rows out, without Ray or I/O: alignment, the halving retry, the error column.

`run_halving` sends a batch through an async call; when the call fails and failures
go to a column, it retries the batch in halves, down to single rows, so one bad row
(an over-long text, say) fails alone and the rest of its batch still gets answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

OnError = Literal["raise", "column"]
ON_ERROR_VALUES: tuple[OnError, ...] = ("raise", "column")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[Out]):
    """Per row, in input order: the output (None when the row failed) and the error text."""

    outputs: list[Out | None]
    errors: list[str | None]


def check_on_error(on_error: str) -> OnError:
    """`on_error` validated, with the accepted values in the error.

    Example:
        >>> check_on_error("column")
        'column'
    """
    if on_error not in ON_ERROR_VALUES:
        msg = f"on_error must be 'raise' or 'column', not {on_error!r}"
        raise ValueError(msg)
    return on_error


def error_text(error: BaseException) -> str:
    """What a failed row's error column says: the exception's type and message.

    Example:
        >>> error_text(ValueError("too long"))
        'ValueError: too long'
    """
    message = str(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def check_aligned(inputs: Sequence[object], outputs: Sequence[object]) -> None:
    """Raise unless there is exactly one output per input.

    Example:
        >>> check_aligned(["a", "b"], [1])
        Traceback (most recent call last):
        ...
        ValueError: 1 outputs for 2 inputs: the rows would no longer line up
    """
    if len(outputs) != len(inputs):
        msg = f"{len(outputs)} outputs for {len(inputs)} inputs: the rows would no longer line up"
        raise ValueError(msg)


def halves(items: Sequence[In]) -> tuple[Sequence[In], Sequence[In]]:
    """The two halves of a batch of two or more items (the first is the shorter one).

    Example:
        >>> halves([1, 2, 3])
        ([1], [2, 3])
    """
    middle = len(items) // 2
    return items[:middle], items[middle:]


async def run_halving(
    items: Sequence[In],
    call: Callable[[Sequence[In]], Awaitable[Sequence[Out]]],
    on_error: OnError,
) -> Outcome[Out]:
    """`call(items)`, one output per item; on failure, per `on_error`.

    "raise": the error propagates. "column": a failed batch is retried as two halves,
    each on its own, down to single items; an item that still fails gets a None output
    and its error's text (`error_text`). A call returning the wrong number of outputs
    fails like any other error (`check_aligned`).

    Example:
        >>> import asyncio
        >>> async def lengths(batch):
        ...     if "bad" in batch:
        ...         raise ValueError("bad text")
        ...     return [len(s) for s in batch]
        >>> outcome = asyncio.run(run_halving(["a", "bad", "ccc"], lengths, "column"))
        >>> outcome.outputs, outcome.errors
        ([1, None, 3], [None, 'ValueError: bad text', None])
    """
    if not items:
        return Outcome([], [])
    try:
        outputs = list(await call(items))
        check_aligned(items, outputs)
    except Exception as error:
        if on_error == "raise":
            raise
        if len(items) == 1:
            return Outcome([None], [error_text(error)])
        first, second = halves(items)
        left = await run_halving(first, call, on_error)
        right = await run_halving(second, call, on_error)
        return Outcome(left.outputs + right.outputs, left.errors + right.errors)
    return Outcome(list(outputs), [None] * len(outputs))


def merge(outcomes: Sequence[Outcome[Out]]) -> Outcome[Out]:
    """Outcomes of consecutive slices of a batch joined, in order.

    Example:
        >>> merge([Outcome([1], [None]), Outcome([None], ["E"])])
        Outcome(outputs=[1, None], errors=[None, 'E'])
    """
    outputs: list[Out | None] = []
    errors: list[str | None] = []
    for outcome in outcomes:
        outputs.extend(outcome.outputs)
        errors.extend(outcome.errors)
    return Outcome(outputs, errors)


def split_texts(values: Sequence[object], column: str) -> tuple[list[str], dict[int, str]]:
    """A column's texts, and the error text of each row (by index) that holds none.

    A null or a number cannot be sent as text; with on_error="column" such a row fails
    alone (`with_rejected` puts it back in place) instead of failing its whole batch.

    Example:
        >>> split_texts(["a", None, "c"], "text")
        (['a', 'c'], {1: "TypeError: column 'text' holds None, not text"})
    """
    texts: list[str] = []
    rejected: dict[int, str] = {}
    for index, value in enumerate(values):
        if isinstance(value, str):
            texts.append(value)
        else:
            rejected[index] = f"TypeError: column {column!r} holds {value!r:.80}, not text"
    return texts, rejected


def with_rejected(outcome: Outcome[Out], rejected: Mapping[int, str]) -> Outcome[Out]:
    """`outcome` of the accepted rows, with the rejected rows failed at their places.

    Example:
        >>> with_rejected(Outcome([1, 3], [None, None]), {1: "E"})
        Outcome(outputs=[1, None, 3], errors=[None, 'E', None])
    """
    if not rejected:
        return outcome
    outputs, errors = iter(outcome.outputs), iter(outcome.errors)
    total = len(outcome.outputs) + len(rejected)
    merged: Outcome[Out] = Outcome([], [])
    for index in range(total):
        if index in rejected:
            merged.outputs.append(None)
            merged.errors.append(rejected[index])
        else:
            merged.outputs.append(next(outputs))
            merged.errors.append(next(errors))
    return merged
