"""Values the request-driven model puts into JSON: taken from the prompt, else from the schema.

A plausible model reads its arguments off the request, so `value_for_schema` fills a JSON
schema from `PromptValues` first and falls back to schema-derived defaults:

1. Named values: ``key=value`` or ``key: value`` in the source text (value a number, a
   quoted string, ``true``/``false`` or one word without trailing punctuation) give
   the property called ``key``.
2. Numbers: ``integer``/``number`` properties take the numbers written in the source text,
   in order, each used once (an integer property skips non-integral numbers; any
   number outside the schema bounds is skipped).
3. Strings: string properties take the quoted strings (``'...'``, ``"..."``, curly
   quotes) of the source text, then its proper names (runs of capitalised words that
   do not start a sentence, outside quotes: ``Oslo``, ``New York``), in order, each
   used once (skipping ones outside the length bounds); when none is left, a
   ``format`` example or the whole text is echoed.
4. ``enum``: the first member the text mentions (as a whole word), else the first member.

The source text is the last user message, or for a tool called with call syntax in it
(``magic_function(3)``, ``add(a=1, b=2)``) what is between the parentheses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")
_QUOTED = re.compile(r"\"([^\"\n]+)\"|(?<!\w)'([^'\n]+)'(?!\w)|“([^”\n]+)”|‘([^’\n]+)’")  # noqa: RUF001
_NAMED = re.compile(
    r"(?<![\w.])([^\W\d]\w*)\s*[=:]\s*"
    r"(\"[^\"\n]*\"|'[^'\n]*'|-?\d+(?:\.\d+)?(?!\w)|[^\s,;)]*[^\s,;).!?:'\"])"
)
_NAME = re.compile(r"[^\W\d]\w*")
_PROPER = re.compile(r"(?<![\w-])[A-Z][\w-]*(?:[ \t]+[A-Z][\w-]*)*")
_SENTENCE_START = ".!?:;\n\"'(“‘"  # noqa: RUF001

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}


def numbers_in(text: str) -> list[int | float]:
    """The numbers written in `text`, in order (``3`` -> int, ``2.5`` -> float)."""
    return [float(m) if "." in m else int(m) for m in _NUMBER.findall(text)]


def quoted_in(text: str) -> list[str]:
    """The quoted strings of `text` (straight or curly, single or double), in order."""
    return [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text)]


def quoted_names_in(text: str) -> list[str]:
    """Quoted strings of `text` that look like names (``'setup'``), in order, no repeats."""
    return list(dict.fromkeys(q for q in quoted_in(text) if _NAME.fullmatch(q)))


def proper_names_in(text: str) -> list[str]:
    """Runs of capitalised words in `text`, outside quotes, not starting a sentence.

    Example:
        >>> proper_names_in("What is the weather in New York? Use Oslo too. I said it.")
        ['New York', 'Oslo']
    """
    names = []
    text = _QUOTED.sub(" ", text)
    for match in _PROPER.finditer(text):
        words = match.group().split()
        before = text[: match.start()].rstrip()
        if not before or before[-1] in _SENTENCE_START:
            words = words[1:]
        words = [w for w in words if w != "I"]
        if words:
            names.append(" ".join(words))
    return names


def call_arguments(text: str, name: str) -> str | None:
    """What is between the parentheses of the first ``name(...)`` in `text`, or None."""
    match = re.search(rf"(?<![\w.]){re.escape(name)}\s*\(([^()]*)\)", text)
    return match.group(1) if match else None


def _scalar(raw: str) -> Any:
    """A named value's raw text as JSON: number, quoted string, boolean or the word."""
    if raw[:1] in "\"'" and len(raw) >= 2 and raw[-1] == raw[0]:
        return raw[1:-1]
    if _NUMBER.fullmatch(raw):
        return float(raw) if "." in raw else int(raw)
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return raw


@dataclass(slots=True)
class PromptValues:
    """Values offered by a prompt, consumed in order as a schema is filled.

    Example:
        >>> values = PromptValues.from_text("What is magic_function(3)?", echo="q")
        >>> value_for_schema({"type": "integer"}, "q", values=values)
        3
    """

    echo: str
    """What string properties echo when no quoted string is left."""
    mentions: str = ""
    """Text searched for ``enum`` members."""
    named: dict[str, Any] = field(default_factory=dict)
    numbers: list[int | float] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)

    @classmethod
    def from_text(cls, source: str, *, echo: str | None = None) -> PromptValues:
        """Values written in `source`; strings echo `echo` (default: `source`) when none is left."""
        named: dict[str, Any] = {}
        for match in _NAMED.finditer(source):
            named.setdefault(match.group(1), _scalar(match.group(2)))
        return cls(
            echo=source if echo is None else echo,
            mentions=source if echo is None else echo,
            named=named,
            numbers=numbers_in(source),
            strings=[*quoted_in(source), *proper_names_in(source)],
        )

    def keep_named(self, names: set[str]) -> None:
        """Keep the named values of properties in `names`; take them out of the pools."""
        self.named = {k: v for k, v in self.named.items() if k in names}
        for value in self.named.values():
            pool: list[Any] = self.strings if isinstance(value, str) else self.numbers
            if not isinstance(value, bool) and value in pool:
                pool.remove(value)

    def number(self, schema: dict[str, Any], *, integer: bool) -> int | float | None:
        """The next unused number valid for `schema`, or None."""
        for i, value in enumerate(self.numbers):
            if _fits_number(value, schema, integer=integer):
                del self.numbers[i]
                return int(value) if integer else value
        return None

    def string(self, schema: dict[str, Any]) -> str | None:
        """The next unused quoted string or proper name valid for `schema`, or None."""
        for i, value in enumerate(self.strings):
            if _fits_length(value, schema):
                del self.strings[i]
                return value
        return None

    def member(self, options: list[Any]) -> Any:
        """The first of `options` the text mentions as a whole word, else the first."""
        text = self.mentions.lower()
        for option in options:
            if isinstance(option, str) and option and _mentions(text, option.lower()):
                return option
        return options[0]


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def _bound(schema: dict[str, Any], key: str) -> float | None:
    value = schema.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _fits_number(value: float, schema: dict[str, Any], *, integer: bool) -> bool:
    if integer and value != int(value):
        return False
    low, high = _bound(schema, "minimum"), _bound(schema, "maximum")
    xlow, xhigh = _bound(schema, "exclusiveMinimum"), _bound(schema, "exclusiveMaximum")
    return not (
        (low is not None and value < low)
        or (high is not None and value > high)
        or (xlow is not None and value <= xlow)
        or (xhigh is not None and value >= xhigh)
    )


def _fits_length(value: str, schema: dict[str, Any]) -> bool:
    least, most = _count(schema.get("minLength")), _count(schema.get("maxLength"))
    return len(value) >= (least or 0) and (most is None or len(value) <= most)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def value_for_schema(schema: Any, text: str, *, values: PromptValues | None = None) -> Any:
    """A deterministic JSON value valid against a (simple) JSON schema.

    Values come from `values` (default: those written in `text`, see the module
    docstring), else from the schema: ``const``, the first ``enum`` member, a number at
    the lower bound (1 without one), ``True``, a ``format`` example or `text` for
    strings. Handles local ``$ref``, ``allOf``/``anyOf``/``oneOf`` (first non-null
    option), type lists, objects (every property) and arrays (``minItems`` items, at
    least one).

    Example:
        >>> value_for_schema({"type": "object", "properties": {"n": {"type": "integer"}}}, "x")
        {'n': 1}
    """
    if values is None:
        values = PromptValues.from_text(text)
    values.keep_named(_property_names(schema))
    return _Filler(values, schema).value(schema, 0)


def _property_names(schema: Any) -> set[str]:
    """Every property name declared anywhere in `schema` (``$defs`` included)."""
    names: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                names.update(k for k in props if isinstance(k, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


@dataclass(slots=True)
class _Filler:
    values: PromptValues
    root: Any

    def value(self, schema: Any, depth: int, name: str | None = None) -> Any:
        if not isinstance(schema, dict) or depth > 32:
            return self.values.echo or "text"
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            return self.value(merged, depth + 1, name)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.values.member(schema["enum"])
        if isinstance(schema.get("allOf"), list):
            merged = {}
            for part in schema["allOf"]:
                if isinstance(part, dict):
                    merged.update(part)
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self.value({**merged, **rest}, depth + 1, name)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                usable = [
                    o for o in options if not (isinstance(o, dict) and o.get("type") == "null")
                ]
                return self.value((usable or options)[0], depth + 1, name)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = (
                "object" if "properties" in schema else "array" if "items" in schema else "string"
            )
        return self.typed(kind, schema, depth, name)

    def typed(self, kind: Any, schema: dict[str, Any], depth: int, name: str | None) -> Any:
        named = self.values.named.get(name) if name is not None else None
        if kind == "object":
            props = schema.get("properties")
            if not isinstance(props, dict):
                return {}
            return {k: self.value(v, depth + 1, k) for k, v in props.items()}
        if kind == "array":
            count = max(1, _count(schema.get("minItems")) or 0)
            most = _count(schema.get("maxItems"))
            count = min(count, most) if most is not None else count
            return [self.value(schema.get("items", {}), depth + 1) for _ in range(count)]
        if kind in ("integer", "number"):
            integer = kind == "integer"
            if (
                isinstance(named, int | float)
                and not isinstance(named, bool)
                and _fits_number(named, schema, integer=integer)
            ):
                return int(named) if integer else named
            number = self.values.number(schema, integer=integer)
            return _default_number(schema, integer=integer) if number is None else number
        if kind == "boolean":
            return named if isinstance(named, bool) else True
        if kind == "null":
            return None
        if isinstance(named, str) and _fits_length(named, schema):
            return named
        if isinstance(named, int | float) and _fits_length(json.dumps(named), schema):
            return json.dumps(named)
        taken = self.values.string(schema)
        if taken is not None:
            return taken
        value = _FORMATS.get(str(schema.get("format")), self.values.echo or "text")
        value = value.ljust(_count(schema.get("minLength")) or 0, "x")
        most = _count(schema.get("maxLength"))
        return value[:most] if most is not None else value


def _default_number(schema: dict[str, Any], *, integer: bool) -> int | float:
    value: float = 1
    low, xlow, high = (
        _bound(schema, "minimum"),
        _bound(schema, "exclusiveMinimum"),
        _bound(schema, "maximum"),
    )
    if low is not None:
        value = low
    elif xlow is not None:
        value = xlow + 1
    if high is not None and value > high:
        value = high
    return int(value) if integer else float(value)
