"""Per-stream bookkeeping of the LLM and chat streams (sync and async), on the hot path.

`StreamCursor` attaches model, finish_reason, usage (and a Responses API id) exactly
once and enforces `stop` client-side (`StopScanner`, `cut_at_stop`) for servers that
ignore it; `closing_stream` / `aclosing_stream` close a backend stream (and so its
connection) when the caller stops early. Everything here runs once per chunk: keep it flat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from typing import Any, TypeVar

from langchain_matric.backends._types import GenerationDelta, Usage

__all__ = ["StopScanner", "StreamCursor", "aclosing_stream", "closing_stream", "cut_at_stop"]

T = TypeVar("T")


class StopScanner:
    r"""Cuts a text stream at the first stop sequence, for servers that ignore `stop`.

    Holds back at most `max(len(s) for s in stop) - 1` characters: just enough to
    see a stop sequence split across deltas.

    Example:
        >>> s = StopScanner(["\n\n"])
        >>> s.feed("Hello\n"), s.feed("\nWorld")
        (('Hello', False), ('', True))
    """

    __slots__ = ("_buffer", "_hold", "_stops")

    def __init__(self, stop: Sequence[str]) -> None:
        self._stops = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._buffer = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to release now, and whether a stop sequence was found."""
        if not text:
            return "", False
        buffer = self._buffer + text
        cut = cut_at_stop(buffer, self._stops)
        if cut is not None:
            self._buffer = ""
            return buffer[:cut], True
        if len(buffer) <= self._hold:
            self._buffer = buffer
            return "", False
        release = len(buffer) - self._hold
        self._buffer = buffer[release:]
        return buffer[:release], False

    def flush(self) -> str:
        """The held-back tail, at the end of a stream."""
        tail, self._buffer = self._buffer, ""
        return tail


def cut_at_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where to cut `text` at a stop sequence, or None.

    The stop sequence that *ends* first wins (what a server generating token by token
    would hit first); among those ending together, the longest. Returns its start.

    Example:
        >>> cut_at_stop("one. two.", ["two", "."])
        3
    """
    best: tuple[int, int] | None = None  # (end, start)
    for s in stop:
        if s and (start := text.find(s)) >= 0:
            candidate = (start + len(s), start)
            if best is None or candidate < best:
                best = candidate
    return None if best is None else best[1]


class StreamCursor:
    """Per-stream bookkeeping shared by the LLM and chat streams (sync and async).

    `advance(delta)` returns the text to emit and whether this delta ends the stream:
    then `finish_reason`, `usage` and `model` are ready to attach, exactly once. With
    `stop`, text is scanned client-side; at a match the stream ends with
    finish_reason "stop" and the caller must close the backend stream.

    Example:
        >>> cursor = StreamCursor(["END"], model="m")
        >>> cursor.advance(GenerationDelta(text="hi E"))  # " E" held back: "END"?
        ('hi', False)
        >>> cursor.advance(GenerationDelta(text="ND"))  # yes: the rest, and the end
        (' ', True)
        >>> cursor.finish_reason, cursor.stopped
        ('stop', True)
    """

    __slots__ = (
        "done",
        "finish_reason",
        "metadata",
        "model",
        "response_id",
        "scanner",
        "stopped",
        "usage",
    )

    def __init__(self, stop: Sequence[str] | None, model: str | None) -> None:
        self.scanner = StopScanner(stop) if stop else None
        self.model = model
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.response_id: str | None = None
        """The Responses API's id of the answer (from the last delta), or None."""
        self.metadata: dict[str, Any] | None = None
        """The last delta's `metadata` (id, system_fingerprint, service_tier, headers)."""
        self.done = False
        self.stopped = False

    def advance(self, delta: GenerationDelta) -> tuple[str, bool]:
        """Text to emit for `delta`, and whether the end metadata goes on this chunk."""
        if delta.model and not self.done:
            self.model = delta.model
        text = delta.text
        if self.scanner is not None and not self.done:
            text, matched = self.scanner.feed(text)
            if matched:
                self.stopped = self.done = True
                self.finish_reason = "stop"
                return text, True
        if self.done:
            return text, False
        if delta.finish_reason is None and delta.usage is None:
            return text, False
        if self.scanner is not None:
            text += self.scanner.flush()
        self.finish_reason = delta.finish_reason
        self.usage = delta.usage
        self.response_id = delta.response_id
        self.metadata = delta.metadata
        self.done = True
        return text, True

    def tail(self) -> str | None:
        """At a stream's end without a final delta: the held text, or None if done."""
        if self.done:
            return None
        self.done = True
        return self.scanner.flush() if self.scanner is not None else ""


def closing_stream(stream: Iterator[T]) -> AbstractContextManager[Iterator[T]]:
    """Close a backend stream on exit (early exit closes its connection).

    Example:
        >>> def numbers():
        ...     yield from range(10)
        >>> stream = numbers()
        >>> with closing_stream(stream) as it:
        ...     first = next(it)
        >>> first, list(stream)
        (0, [])
    """
    close = getattr(stream, "close", None)
    if close is None:
        return nullcontext(stream)
    return _Closing(stream, close)


class _Closing(AbstractContextManager["Iterator[Any]"]):
    def __init__(self, stream: Iterator[Any], close: Callable[[], object]) -> None:
        self._stream = stream
        self._close = close

    def __enter__(self) -> Iterator[Any]:
        return self._stream

    def __exit__(self, *exc: object) -> None:
        self._close()


def aclosing_stream(stream: AsyncIterator[T]) -> AbstractAsyncContextManager[AsyncIterator[T]]:
    """Async `closing_stream`.

    Example:
        >>> import asyncio
        >>> async def numbers():
        ...     for n in range(10):
        ...         yield n
        >>> async def first_only():
        ...     stream = numbers()
        ...     async with aclosing_stream(stream) as it:
        ...         first = await anext(it)
        ...     return first, [n async for n in stream]
        >>> asyncio.run(first_only())
        (0, [])
    """
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return nullcontext(stream)
    return _AClosing(stream, aclose)


class _AClosing(AbstractAsyncContextManager["AsyncIterator[Any]"]):
    def __init__(self, stream: AsyncIterator[Any], aclose: Callable[[], Awaitable[object]]) -> None:
        self._stream = stream
        self._aclose = aclose

    async def __aenter__(self) -> AsyncIterator[Any]:
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        await self._aclose()
