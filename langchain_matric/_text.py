r"""Text integrity: UTF-16 surrogates that JSON escapes let through, joined or replaced.

JSON may spell a character beyond U+FFFF as an escaped surrogate pair (`"\ud83d\ude00"`);
a server that streams one token per event may split the pair across two events, and a
broken one may send half a pair alone. `json.loads` hands such halves on as lone surrogates,
which no UTF-8 encoder accepts: sent back in the next turn, the text would raise
`UnicodeEncodeError`. So a split pair is joined (`SurrogateJoiner`), and every lone half
becomes U+FFFD (`mend`), as invalid UTF-8 does in the stream decoders.

orjson refuses lone surrogate escapes, so only text parsed by the standard library's
fallback can hold them: the stream parsers switch to joining when that fallback first
runs, and nothing here is on the path of an ordinary chunk.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SurrogateJoiner", "has_surrogates", "mend", "mend_json"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_HIGH_FIRST, _HIGH_LAST = "\ud800", "\udbff"


def has_surrogates(text: str) -> bool:
    """Whether `text` holds a surrogate code point (U+D800 to U+DFFF)."""
    return _SURROGATE.search(text) is not None


def mend(text: str) -> str:
    r"""`text` with adjacent surrogate pairs joined and every lone half replaced by U+FFFD.

    Example:
        >>> mend("a\ud83d\ude00b") == "a\U0001f600b"
        True
        >>> mend("x\ud800y\udc00") == "x\ufffdy\ufffd"
        True
    """
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def mend_json(obj: Any) -> Any:
    """A parsed JSON value with `mend` applied to every string (keys too)."""
    if isinstance(obj, str):
        return mend(obj)
    if isinstance(obj, list):
        return [mend_json(item) for item in obj]
    if isinstance(obj, dict):
        return {mend(key): mend_json(value) for key, value in obj.items()}
    return obj


class SurrogateJoiner:
    r"""Mends the texts of one stream in order, joining a pair split between two of them.

    A high surrogate ending a text is held back until the next text: joined with a low
    surrogate starting it, else replaced. `flush()` at the end gives what is left.

    Example:
        >>> joiner = SurrogateJoiner()
        >>> joiner.feed("smile \ud83d"), joiner.feed("\ude00!") == "\U0001f600!"
        ('smile ', True)
        >>> joiner.feed("\ud83d"), joiner.flush() == "\ufffd"
        ('', True)
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        """The mended text, less a high surrogate at its end (held for the next one)."""
        if self._held:
            text, self._held = self._held + text, ""
        if text and _HIGH_FIRST <= text[-1] <= _HIGH_LAST:
            text, self._held = text[:-1], text[-1]
        return mend(text)

    def flush(self) -> str:
        """U+FFFD for a high surrogate still held (the stream ended), else nothing."""
        held, self._held = self._held, ""
        return "\ufffd" if held else ""
