"""Incremental Server-Sent Events decoder, exact to the WHATWG "event stream interpretation".

Bytes in, events out, no I/O: the same decoder serves the httpx and aiohttp body reads. Any
split of the bytes gives the same events. Each read is scanned once (only its new bytes);
complete lines are decoded as UTF-8 with replacement, so a character or a CRLF cut across
reads survives, and a 16 MiB line costs linear time. `feed_plain` is the fast path for reads
of whole single-line `data:` events.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from langchain_matric.errors import ConfigurationError, StreamError

__all__ = ["DEFAULT_MAX_LINE_SIZE", "SSEDecoder", "SSEError", "ServerSentEvent"]

DEFAULT_MAX_LINE_SIZE = 32 * 1024 * 1024
"""Longest line accepted, in bytes (32 MiB): twice a 16 MiB `data:` line."""

_LONG = 1 << 16  # a pending line this long, if `data:`, is finished without extra copies
_BOM = b"\xef\xbb\xbf"
_EOL = re.compile("\r\n|\r|\n")
_EOL_BYTES = re.compile(b"\r\n|\r|\n")


class SSEError(StreamError):
    """The event stream cannot be decoded: a line is longer than `max_line_size`."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    Example:
        >>> ServerSentEvent(data="hi")
        ServerSentEvent(event='message', data='hi', id=None, retry=None)
    """

    event: str = "message"
    """The event type: the block's last `event:` value, "message" when it set none."""
    data: str = ""
    """The block's `data:` values joined with newlines."""
    id: str | None = None
    """The last event ID at dispatch time (carries over from earlier blocks); None if empty."""
    retry: int | None = None
    """The last valid `retry:` value of this event's own block, in milliseconds."""


# Setting the slots directly is twice as fast as the frozen dataclass __init__, which calls
# object.__setattr__ per field; the decoder builds one event per chunk of a stream.
_SET_SLOTS = tuple(ServerSentEvent.__dict__[f].__set__ for f in ("event", "data", "id", "retry"))


OnIgnored = Callable[[str, str], ServerSentEvent | None]


class SSEDecoder:
    r"""Turn the bytes of an event stream into `ServerSentEvent`s.

    `on_ignored(name, value)` is called, in stream order, for every field the spec ignores
    (an unknown name, an `id` containing NUL, a `retry` that is not ASCII digits) and with
    `("event", type)` when a blank line discards a block that set an event type but no data.
    An event it returns is emitted at that point: this is how the OpenAI layer surfaces
    llama.cpp's bare `error: {...}` line and a data-less `event: error` block.

    Example:
        >>> decoder = SSEDecoder()
        >>> decoder.feed(b"event: delta\ndata: hel")
        []
        >>> decoder.feed(b"lo\r\n\r\n: keep-alive\n")
        [ServerSentEvent(event='delta', data='hello', id=None, retry=None)]
        >>> decoder.flush()
        []
    """

    def __init__(
        self, max_line_size: int = DEFAULT_MAX_LINE_SIZE, on_ignored: OnIgnored | None = None
    ) -> None:
        if max_line_size < 1:
            raise ConfigurationError(f"max_line_size must be >= 1, got {max_line_size!r}")
        self._max = max_line_size
        self._on_ignored = on_ignored
        self._last_id = ""
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()  # the unterminated tail of the stream; never holds CR or LF
        self._at_start = True  # a leading BOM may still arrive
        self._skip_lf = False  # the last read ended with CR: a leading LF completes a CRLF
        self._event = ""
        self._data: list[str] = []
        self._retry: int | None = None
        self._sized: tuple[list[str], int, int] | None = None  # (data, lines, chars) counted

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode one read; return the events completed by it (raises `SSEError`)."""
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == 10:
                data = data[1:]
        buf = self._buf
        if self._at_start:
            buf += data
            if len(buf) < 3 and _BOM.startswith(buf):
                return []
            self._at_start = False
            data = bytes(buf[3:] if buf.startswith(_BOM) else buf)
            buf.clear()
        end = max(data.rfind(b"\n"), cr := data.rfind(b"\r")) + 1
        if not end:
            buf += data
            if len(buf) > self._max:
                raise self._too_long(buf)
            return []
        if len(buf) > _LONG and buf.startswith(b"data:"):  # decode a long value only once
            stop = min(i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0)
            buf += data[:stop]
            if len(buf) > self._max:
                raise self._too_long(buf)
            del buf[: 6 if buf.startswith(b"data: ") else 5]
            self._data.append(buf.decode("utf-8", "replace"))
            buf.clear()
            self._check_event_size()
            self._skip_lf = data[stop] == 13
            return self.feed(data[stop + 1 :])
        # Inline twin of the split in ndjson.py: a shared helper cost 3% of decode time.
        block: bytes | bytearray
        if not buf:
            block = data[:end]
            buf += data[end:]
        elif end == len(data):  # the read ends a line (usual: servers flush whole events)
            buf += data
            block, self._buf = buf, bytearray()
            buf = self._buf
        else:
            buf += data
            block = buf[: len(buf) - len(data) + end]
            del buf[: len(block)]
        if len(block) > self._max or len(buf) > self._max:
            for line in [*_EOL_BYTES.split(block), buf]:
                if len(line) > self._max:
                    raise self._too_long(line)
        self._skip_lf = data[-1] == 13
        text = block.decode("utf-8", "replace")
        lines = text.split("\n") if cr < 0 else _EOL.split(text)
        lines.pop()  # the empty string after the last line end
        events = self._lines(lines)
        if self._data:  # an event still open across reads: bound its data too
            self._check_event_size()
        return events

    def feed_plain(self, data: bytes) -> list[bytes] | None:
        r"""The fast path for the usual read: whole events of one `data:` line each, nothing else.

        If the decoder is between events (no partial line or open block) and `data` holds
        only complete events, each a single `data:` line ended by LF, return their data
        values as undecoded UTF-8 bytes: `feed(data)` would dispatch exactly these events
        (`text_of` in `_json` decodes a value as `feed` does) and leave the same state.
        Otherwise return None and consume nothing: pass the read to `feed`. Servers flush
        one event per write, so nearly every read of a generation stream takes this path,
        which skips the line split, the text decoding and one object per event.

        Example:
            >>> decoder = SSEDecoder()
            >>> decoder.feed(b": hello\n\n")  # the first read goes through `feed` (BOM check)
            []
            >>> decoder.feed_plain(b'data: {"a": 1}\n\ndata:[DONE]\n\n')
            [b'{"a": 1}', b'[DONE]']
            >>> decoder.feed_plain(b"event: delta\ndata: x\n\n") is None
            True
        """
        end = len(data) - 2
        if (
            self._buf  # a partial line, an open block, a pending CRLF or BOM check: not between
            or self._data
            or self._event
            or self._retry is not None
            or self._skip_lf
            or self._at_start
            or end > self._max
            or data.find(b"\r") >= 0  # `find`, not `in`: that first tries the operand as an int
        ):
            return None
        first_lf = data.find(b"\n")
        if first_lf == end and data[-1] == 10 and data.startswith(b"data: "):
            return [data[6:end]]  # one event per read: the usual case
        if first_lf < 0 or not data.endswith(b"\n\n"):
            return None
        values = []
        for piece in data[:end].split(b"\n\n"):
            if not piece.startswith(b"data:") or piece.find(b"\n") >= 0:
                return None
            values.append(piece[6:] if piece[5:6] == b" " else piece[5:])
        return values

    def _check_event_size(self) -> None:
        """Raise once an open event's data exceeds `max_line_size` (each line counted once)."""
        data, sized = self._data, self._sized
        lines, chars = (sized[1], sized[2]) if sized is not None and sized[0] is data else (0, -1)
        chars += sum(len(piece) + 1 for piece in data[lines:])  # joined with "\n"
        self._sized = (data, len(data), chars)
        if chars > self._max:
            raise self._too_big(chars, data[0])

    def _too_big(self, chars: int, first: str) -> SSEError:
        self._reset()
        return SSEError(
            f"SSE event with {chars:,} characters of data (in many `data:` lines) exceeds "
            f"max_line_size ({self._max:,}); if the server really sends such events, raise "
            "it: SSEDecoder(max_line_size=...).",
            line=first[:200],
        )

    def _lines(self, lines: list[str]) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        event, data, retry, last_id = self._event, self._data, self._retry, self._last_id
        hook, max_size = self._on_ignored, self._max
        new, cls = object.__new__, ServerSentEvent
        set_event, set_data, set_id, set_retry = _SET_SLOTS
        try:
            for line in lines:
                if not line:  # blank line: dispatch the block
                    if data:
                        value = data[0] if len(data) == 1 else "\n".join(data)
                        if len(value) > max_size:  # many lines: bounded like one line
                            first, data = data[0], []
                            raise self._too_big(len(value), first)
                        ev = new(cls)
                        set_event(ev, event or "message")
                        set_data(ev, value)
                        set_id(ev, last_id or None)
                        set_retry(ev, retry)
                        out.append(ev)
                        data = []
                    elif event and hook is not None and (extra := hook("event", event)) is not None:
                        out.append(extra)
                    event, retry = "", None
                    continue
                if line.startswith("data: "):  # the hot path
                    data.append(line[6:])
                    continue
                name, _, value = line.partition(":")
                if not name:  # comment
                    continue
                if value[:1] == " ":
                    value = value[1:]
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
                elif name == "id" and "\0" not in value:
                    last_id = value
                elif name == "retry" and value.isascii() and value.isdigit():
                    with contextlib.suppress(ValueError):  # beyond int()'s digit limit: ignored
                        retry = int(value)
                elif hook is not None and (extra := hook(name, value)) is not None:
                    out.append(extra)
        finally:
            self._event, self._data, self._retry, self._last_id = event, data, retry, last_id
        return out

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: discard a block (or line) with no closing blank line, as the spec says.

        Always returns an empty list. The decoder is then ready for a new stream; the last
        event ID carries over to it, as the spec keeps it across reconnections.
        """
        self._reset()
        return []

    def _too_long(self, line: bytes | bytearray) -> SSEError:
        size, head = len(line), bytes(line[:200]).decode("utf-8", "replace")
        self._reset()
        return SSEError(
            f"SSE line of at least {size:,} bytes exceeds max_line_size ({self._max:,} bytes); "
            "if the server really sends such lines, raise it: SSEDecoder(max_line_size=...).",
            line=head,
        )
