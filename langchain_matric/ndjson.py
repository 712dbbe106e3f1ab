"""Incremental newline-delimited JSON decoder (Ollama's streaming format).

Bytes in, objects out, no I/O. Lines end at LF only: U+0085 and U+2028 inside JSON
strings are content. Blank lines and a CR before the LF are tolerated. Each read is scanned
once (only its new bytes), so a very long line costs linear time.
"""

from __future__ import annotations

from typing import Any

from langchain_matric._json import fast_loads, stdlib_loads, text_of
from langchain_matric.errors import ConfigurationError, StreamError

__all__ = ["DEFAULT_MAX_LINE_SIZE", "NDJSONDecoder", "NDJSONError"]

DEFAULT_MAX_LINE_SIZE = 32 * 1024 * 1024
"""Longest line accepted, in bytes (32 MiB)."""

_QUOTE = 200


class NDJSONError(StreamError):
    """A line is not a JSON object, or is longer than `max_line_size`; `line` quotes it."""


class NDJSONDecoder:
    r"""Turn the bytes of an NDJSON stream into one dict per line.

    Lines are decoded as UTF-8 with replacement (as Go's JSON encoder would have written
    them). `flush()` parses a last line that lacks its newline.

    Example:
        >>> decoder = NDJSONDecoder()
        >>> decoder.feed(b'{"response": "Hi"}\n{"done"')
        [{'response': 'Hi'}]
        >>> decoder.feed(b": false}\r\n\n")
        [{'done': False}]
        >>> decoder.feed(b'{"done": true}')
        []
        >>> decoder.flush()
        [{'done': True}]
    """

    __slots__ = ("_buf", "_max", "lenient")

    def __init__(self, max_line_size: int = DEFAULT_MAX_LINE_SIZE) -> None:
        if max_line_size < 1:
            raise ConfigurationError(f"max_line_size must be >= 1, got {max_line_size!r}")
        self._max = max_line_size
        self._buf = bytearray()  # the unterminated last line; never holds b"\n"
        self.lenient = False
        """True once a line needed the standard library's parser (orjson refused it: NaN,
        invalid UTF-8, a lone surrogate escape); its strings may hold lone surrogates."""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Decode one read; return the objects of the lines it completed (raises `NDJSONError`)."""
        buf = self._buf
        end = data.rfind(b"\n") + 1
        if not end:
            buf += data
            if len(buf) > self._max:
                raise self._too_long(buf)
            return []
        # Inline twin of the split in sse.py: a shared helper cost 3% of decode time.
        block: bytes | bytearray
        if not buf:
            block = data[:end]
            buf += data[end:]
        elif end == len(data):  # the read ends a line (usual: servers flush whole lines)
            buf += data
            block, self._buf = buf, bytearray()
            buf = self._buf
        else:
            buf += data
            block = buf[: len(buf) - len(data) + end]
            del buf[: len(block)]
        if len(block) > self._max or len(buf) > self._max:
            for line in [*block.split(b"\n"), buf]:
                if len(line) > self._max:
                    raise self._too_long(line)
        lines = block.split(b"\n")
        lines.pop()  # the empty piece after the last newline
        return self._parse(lines)

    def feed_line(self, data: bytes) -> dict[str, Any] | None:
        r"""The fast path for the usual read: exactly one whole line holding a JSON object.

        With no partial line pending, parse `data` if it is one LF-terminated line and
        return its object, as `feed(data)` would in a one-item list. Otherwise (several or
        partial lines, a blank or invalid line, a non-object, a line over the limit) return
        None and consume nothing: pass the read to `feed`, which also words any error.

        Example:
            >>> decoder = NDJSONDecoder()
            >>> decoder.feed_line(b'{"response": "Hi", "done": false}\n')
            {'response': 'Hi', 'done': False}
            >>> decoder.feed_line(b'{"response": "Hi"}\n{"done"') is None
            True
        """
        last = len(data) - 1
        if self._buf or data.find(b"\n") != last or last > self._max:
            return None
        try:
            obj = fast_loads(data)
        except ValueError:
            return None
        return obj if type(obj) is dict else None

    def flush(self) -> list[dict[str, Any]]:
        """End of stream: parse a last line that lacks its newline; the decoder is then reset."""
        if not self._buf:
            return []
        line = bytes(self._buf)
        self._buf = bytearray()
        return self._parse([line])

    def _parse(self, lines: list[bytes] | list[bytearray]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for line in lines:
            try:  # straight from the bytes; invalid UTF-8 is replaced, as a text decoder would
                try:
                    obj = fast_loads(line)
                except ValueError:
                    obj = stdlib_loads(line)
                    self.lenient = True
            except (ValueError, RecursionError) as exc:
                text = text_of(line)
                if not text or text.isspace():  # a blank line (or a lone CR)
                    continue
                raise self._invalid(f"invalid JSON ({exc})", text) from exc
            if type(obj) is not dict:
                raise self._invalid(f"expected a JSON object, got {type(obj).__name__}", line)
            out.append(obj)
        return out

    def _invalid(self, what: str, line: str | bytes | bytearray) -> NDJSONError:
        self._buf = bytearray()
        head = text_of(line[: _QUOTE * 4])[:_QUOTE]
        return NDJSONError(f"NDJSON stream: {what} in line {head!r}", line=head)

    def _too_long(self, line: bytes | bytearray) -> NDJSONError:
        self._buf = bytearray()
        head = bytes(line[:_QUOTE]).decode("utf-8", "replace")
        return NDJSONError(
            f"NDJSON line of at least {len(line):,} bytes exceeds max_line_size "
            f"({self._max:,} bytes); if the server really sends such lines, raise it: "
            f"NDJSONDecoder(max_line_size=...). The line starts {head!r}",
            line=head,
        )
