"""NDJSONDecoder: LF-only lines, tolerated blank lines and CRLF, flush rules, errors, limits.

Every fixture is also fed split at every byte offset and one byte at a time.
"""

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_matric.errors import ConfigurationError, StreamError
from langchain_matric.ndjson import DEFAULT_MAX_LINE_SIZE, NDJSONDecoder, NDJSONError


def decode(pieces, **kwargs):
    decoder = NDJSONDecoder(**kwargs)
    out = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out + decoder.flush()


def every_split(stream):
    yield [stream]
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]
    yield [stream[i : i + 1] for i in range(len(stream))]


def check(stream, expected, **kwargs):
    for pieces in every_split(stream):
        assert decode(pieces, **kwargs) == expected, pieces


def check_raises(stream, match, **kwargs):
    for pieces in every_split(stream):
        with pytest.raises(NDJSONError, match=match):
            decode(pieces, **kwargs)


def test_lines():
    check(b'{"a": 1}\n{"b": [1, 2]}\n', [{"a": 1}, {"b": [1, 2]}])


def test_ollama_stream():
    stream = (
        b'{"model":"llama3.2","created_at":"2024-06-10T12:00:00Z","response":"Hi","done":false}\n'
        b'{"model":"llama3.2","created_at":"2024-06-10T12:00:01Z","response":"","done":true,'
        b'"done_reason":"stop","eval_count":2}\n'
    )
    objects = decode([stream])
    assert [o["done"] for o in objects] == [False, True]
    check(stream, objects)


def test_crlf_tolerated():
    check(b'{"a": 1}\r\n{"b": 2}\r\n', [{"a": 1}, {"b": 2}])


def test_blank_lines_tolerated():
    check(b'\n\n{"a": 1}\n\r\n \t \n\n{"b": 2}\n\n', [{"a": 1}, {"b": 2}])


def test_whitespace_around_the_value_tolerated():
    check(b'  {"a": 1}  \n\t{"b": 2}\t\r\n', [{"a": 1}, {"b": 2}])


def test_cr_alone_does_not_end_a_line():
    check_raises(b'{"a": 1}\r{"b": 2}\n', r"invalid JSON \(Extra data")


@pytest.mark.parametrize(
    "char", ["\u2028", "\u2029", "\u0085", "\u00a0", "\u3000"]
)  # str.splitlines() would split at the first three (JSON forbids raw characters < U+0020)
def test_unicode_line_separators_in_strings_are_content(char):
    check(f'{{"text": "a{char}b"}}\n'.encode(), [{"text": f"a{char}b"}])


def test_raw_0x85_byte_is_not_a_separator():
    check(b'{"text": "a\x85b"}\n', [{"text": "a\ufffdb"}])


def test_utf8_split_across_feeds():
    check('{"text": "héllo €𝄞"}\n{"e": "✓"}\n'.encode(), [{"text": "héllo €𝄞"}, {"e": "✓"}])


def test_escaped_newlines_are_content():
    check(b'{"text": "a\\nb\\r\\n"}\n', [{"text": "a\nb\r\n"}])


def test_flush_parses_last_line_without_newline():
    check(b'{"a": 1}\n{"done": true}', [{"a": 1}, {"done": True}])
    check(b'{"a": 1}\n{"done": true}\r', [{"a": 1}, {"done": True}])


def test_flush_ignores_blank_tail():
    check(b'{"a": 1}\n  \r', [{"a": 1}])


def test_flush_raises_on_invalid_tail():
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a": 1}\n{"done": tr') == [{"a": 1}]
    with pytest.raises(NDJSONError, match="invalid JSON") as info:
        decoder.flush()
    assert info.value.line == '{"done": tr'


def test_flush_resets():
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a": 1}') == []
    assert decoder.flush() == [{"a": 1}]
    assert decoder.flush() == []
    assert decoder.feed(b'{"b": 2}\n') == [{"b": 2}]


def test_invalid_json_names_the_line():
    for pieces in every_split(b'{"a": 1}\n{"a": oops}\n'):
        with pytest.raises(NDJSONError) as info:
            decode(pieces)
        assert isinstance(info.value, StreamError)
        assert info.value.line == '{"a": oops}'
        assert '{"a": oops}' in str(info.value)
        assert "invalid JSON" in str(info.value)


def test_error_quotes_first_200_characters():
    line = '{"text": "' + "x" * 500 + '"'
    with pytest.raises(NDJSONError) as info:
        decode([line.encode() + b"\n"])
    assert info.value.line == line[:200]
    assert line[:200] in str(info.value)
    assert line[:201] not in str(info.value)


@pytest.mark.parametrize(
    ("line", "kind"),
    [(b"[1, 2]", "list"), (b"3", "int"), (b'"s"', "str"), (b"null", "NoneType"), (b"true", "bool")],
)
def test_non_object_line_raises(line, kind):
    check_raises(line + b"\n", f"expected a JSON object, got {kind}")
    check_raises(line, f"expected a JSON object, got {kind}")


@pytest.mark.parametrize(
    "line", [b'{"a": 1} x', b'{"a": 1}{"b": 2}', b'{"a": 1}\x0b', b"\xef\xbb\xbf{}", b"{", b"}"]
)
def test_not_exactly_one_object_raises(line):
    check_raises(line + b"\n", "invalid JSON")


def test_deep_nesting_is_our_error():
    with pytest.raises(NDJSONError, match="invalid JSON"):
        decode([b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"])


def test_nan_and_big_numbers_as_json_loads_does():
    [obj] = decode([b'{"a": NaN, "b": 1e400, "c": 12345678901234567890}\n'])
    assert obj["a"] != obj["a"]
    assert obj["b"] == float("inf")
    assert obj["c"] == 12345678901234567890


# ---------------------------------------------------------------------------------------
# Line size limit
# ---------------------------------------------------------------------------------------


def test_line_at_the_limit_accepted():
    check(b'{"a": 12}\n{"b": 3}', [{"a": 12}, {"b": 3}], max_line_size=9)


@pytest.mark.parametrize("stream", [b'{"a": 123}\n', b'{"a": 123}', b'{}\n{"a": 123}\n{}\n'])
def test_line_over_the_limit_raises_however_split(stream):
    for pieces in every_split(stream):
        with pytest.raises(NDJSONError, match=r"max_line_size \(9 bytes\)") as info:
            decode(pieces, max_line_size=9)
        assert "NDJSONDecoder(max_line_size=...)" in str(info.value)
        assert info.value.line.startswith('{"a"')


def test_limit_checked_while_accumulating():
    decoder = NDJSONDecoder(max_line_size=1000)
    decoder.feed(b'{"a": "')
    for _ in range(99):
        decoder.feed(b"x" * 10)
        assert len(decoder._buf) <= 1000
    with pytest.raises(NDJSONError):
        decoder.feed(b"x" * 10)
    assert len(decoder._buf) == 0


def test_invalid_limit():
    with pytest.raises(ConfigurationError, match="max_line_size"):
        NDJSONDecoder(max_line_size=0)


class _CountingBytes(bytes):
    scanned = 0

    def rfind(self, *args):
        type(self).scanned += len(self)
        return super().rfind(*args)


def test_16_mib_line_in_tcp_sized_reads_is_linear():
    size = 16 * 1024 * 1024
    stream = b'{"text": "' + b"x" * size + b'"}\n'
    reads = [_CountingBytes(stream[i : i + 1460]) for i in range(0, len(stream), 1460)]
    _CountingBytes.scanned = 0
    decoder = NDJSONDecoder()
    start = time.monotonic()
    objects = [obj for read in reads for obj in decoder.feed(read)]
    assert time.monotonic() - start < 20  # a smoke test: quadratic work would take minutes
    assert len(objects[0]["text"]) == size
    assert _CountingBytes.scanned == len(stream)  # each byte searched once


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

_TEXT = st.text(max_size=8)
# Integers within 64 bits: beyond them orjson (3.13 here) returns a float, where json.loads
# keeps the exact int (see test_integers_beyond_64_bits_come_back_as_floats).
_INT64 = st.integers(-(2**63), 2**64 - 1)
_JSON = st.recursive(
    st.none() | st.booleans() | _INT64 | st.floats(allow_nan=False) | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=6,
)


@st.composite
def _split(draw, stream):
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_property_random_splits(data):
    objects = data.draw(st.lists(st.dictionaries(_TEXT, _JSON, max_size=4), max_size=6))
    parts = []
    for obj in objects:
        parts.append(data.draw(st.sampled_from(["", "\n", "\r\n", " \n"])))  # blank lines
        text = json.dumps(obj, ensure_ascii=data.draw(st.booleans()))
        parts.append(text + data.draw(st.sampled_from(["\n", "\r\n", " \n"])))
    stream = "".join(parts).encode()
    if objects and data.draw(st.booleans()):
        stream = stream.rstrip(b"\r\n ")  # the last line may lack its newline
    pieces = data.draw(_split(stream))
    assert decode([stream]) == objects
    assert decode(pieces) == objects


def _collect(pieces, max_line_size, *, fast=False):
    """Objects until the end or the first NDJSONError; `fast`: try `feed_line` first."""
    decoder = NDJSONDecoder(max_line_size=max_line_size)
    out = []
    try:
        for piece in pieces:
            obj = decoder.feed_line(piece) if fast else None
            out += decoder.feed(piece) if obj is None else [obj]
            assert len(decoder._buf) <= max_line_size
        out += decoder.flush()
    except NDJSONError:
        return out, True
    return out, False


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_arbitrary_bytes(data):
    alphabet = st.sampled_from([b"\n", b"\r", b" ", b"{}", b"{", b"}", b'"a"', b":", b"1", b",",
                                b"[]", b"\xc2\x85", b"\xe2\x80\xa8", b"\x85", b"\xff"])  # fmt: skip
    stream = data.draw(st.one_of(st.binary(max_size=200), st.lists(alphabet).map(b"".join)))
    max_line_size = data.draw(st.sampled_from([1, 2, 8, 64, DEFAULT_MAX_LINE_SIZE]))
    pieces = data.draw(_split(stream))
    whole, whole_raised = _collect([stream], max_line_size)
    split, split_raised = _collect(pieces, max_line_size)
    bytewise, bytewise_raised = _collect([bytes([b]) for b in stream], max_line_size)
    assert whole_raised == split_raised == bytewise_raised
    if not whole_raised:
        assert whole == split == bytewise
    else:
        longest = max(len(events) for events in (whole, split, bytewise))
        full = next(e for e in (whole, split, bytewise) if len(e) == longest)
        for events in (whole, split, bytewise):
            assert events == full[: len(events)]


# ---------------------------------------------------------------------------------------
# The fast path: feed_line
# ---------------------------------------------------------------------------------------


def test_feed_line_takes_one_whole_object_line():
    decoder = NDJSONDecoder()
    assert decoder.feed_line(b'{"a": 1}\n') == {"a": 1}
    assert decoder.feed_line(b'{"a": "\xc3\xa9"}\r\n') == {"a": "é"}


@pytest.mark.parametrize(
    "read",
    [b'{"a": 1}', b'{"a": 1}\n{"b": 2}\n', b"\n", b"[1]\n", b"{oops}\n", b'{"a": NaN}\n', b""],
)
def test_feed_line_declines_everything_else(read):
    assert NDJSONDecoder().feed_line(read) is None


def test_feed_line_declines_while_a_line_is_pending_or_too_long():
    decoder = NDJSONDecoder(max_line_size=9)
    assert decoder.feed_line(b'{"a": 12}\n') == {"a": 12}
    assert decoder.feed_line(b'{"a": 123}\n') is None  # feed raises for it
    decoder.feed(b'{"a": 1}')  # pending: the next line completes it (and makes it invalid)
    assert decoder.feed_line(b'{"b": 2}\n') is None


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_feed_line_then_feed_matches_feed(data):
    alphabet = st.sampled_from([b"\r", b" ", b"{}", b"{", b"}", b'"a"', b":", b"1", b",", b"[]",
                                b'{"a": 1}', b"NaN", b"\xc2\x85", b"\xff"])  # fmt: skip
    lines = data.draw(st.lists(st.lists(alphabet, max_size=6).map(b"".join), max_size=8))
    reads = [line + b"\n" for line in lines]
    if data.draw(st.booleans()):  # some reads hold several lines or pieces of one
        reads = data.draw(_split(b"".join(reads)))
    max_line_size = data.draw(st.sampled_from([2, 8, DEFAULT_MAX_LINE_SIZE]))
    assert _collect(reads, max_line_size, fast=True) == _collect(reads, max_line_size)


def test_integers_beyond_64_bits_come_back_as_floats():
    """A documented limit of the fast parser: no server sends such numbers in a stream."""
    [obj] = NDJSONDecoder().feed(b'{"n": -9223372036854775809, "m": 18446744073709551615}\n')
    assert obj["m"] == 18446744073709551615
    assert obj["n"] == float(-9223372036854775809)
