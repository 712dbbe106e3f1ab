"""SSEDecoder against the WHATWG "event stream interpretation" rules.

Every fixture is also fed split at every byte offset and one byte at a time; hypothesis
compares random streams and random splits with a literal reference reading of the spec.
"""

import re
import time

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from langchain_matric.errors import ConfigurationError, StreamError
from langchain_matric.sse import DEFAULT_MAX_LINE_SIZE, ServerSentEvent, SSEDecoder, SSEError

E = ServerSentEvent
BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def decode(pieces, **kwargs):
    decoder = SSEDecoder(**kwargs)
    events = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.flush()


def every_split(stream):
    yield [stream]
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]
    yield [stream[i : i + 1] for i in range(len(stream))]


def check(stream, expected, **kwargs):
    """The events of `stream` are `expected`, however the bytes are split."""
    for pieces in every_split(stream):
        assert decode(pieces, **kwargs) == expected, pieces


def reference(stream, on_ignored=None):
    """The spec read literally: decode the whole stream, then interpret line by line."""
    if stream.startswith(BOM):
        stream = stream[3:]
    text = stream.decode("utf-8", "replace")
    lines, pos = [], 0
    for match in re.finditer("\r\n|\r|\n", text):
        lines.append(text[pos : match.start()])
        pos = match.end()
    # text[pos:] is an unterminated line: discarded at the end of the stream.
    events, data, event_type, last_id, retry = [], "", "", "", None
    for line in lines:
        if line == "":
            if data == "":
                if event_type and on_ignored and (extra := on_ignored("event", event_type)):
                    events.append(extra)
            else:
                data = data.removesuffix("\n")
                events.append(E(event_type or "message", data, last_id or None, retry))
            data, event_type, retry = "", "", None
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
        else:
            name, value = line, ""
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
        elif on_ignored and (extra := on_ignored(name, value)):
            events.append(extra)
    return events


# ---------------------------------------------------------------------------------------
# One test per rule
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_each_line_ending(eol):
    stream = b"event: a" + eol + b"data: 1" + eol + b"data: 2" + eol + eol + b"data: 3" + eol + eol
    check(stream, [E("a", "1\n2"), E("message", "3")])


def test_mixed_line_endings():
    check(b"data: 1\r\ndata: 2\rdata: 3\n\r\ndata: 4\r\r", [E(data="1\n2\n3"), E(data="4")])


def test_lf_cr_is_two_line_endings():
    check(b"data: 1\n\rdata: 2\n\n", [E(data="1"), E(data="2")])


def test_crlf_split_across_feeds_is_one_line_ending():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"") == []  # an empty read in between keeps the pending CR
    assert decoder.feed(b"\n\r") == [E(data="a\nb")]
    assert decoder.feed(b"\n") == []


def test_cr_at_the_very_end_ends_the_line():
    assert decode([b"data: a\r\r"]) == [E(data="a")]


def test_leading_bom_stripped():
    check(BOM + b"data: x\n\n", [E(data="x")])


def test_bom_split_across_feeds():
    for pieces in (
        [BOM[:1], BOM[1:2], BOM[2:] + b"data: x\n\n"],
        [BOM[:2], BOM[2:], b"data: x\n\n"],
    ):
        assert decode(pieces) == [E(data="x")]


def test_only_one_bom_stripped():
    seen = []
    events = decode([BOM + BOM + b"data: x\n\n"], on_ignored=lambda n, v: seen.append((n, v)))
    assert events == []
    assert seen == [("\ufeffdata", "x")]


def test_bom_after_the_start_is_content():
    check(b"data: a\n" + BOM + b"data: b\n\n", [E(data="a")])
    check(b"data: " + BOM + b"x\n\n", [E(data="\ufeffx")])


def test_partial_bom_is_not_a_bom():
    check(b"\xef\xbbdata: x\n\n", [])
    check(b"\xef\xbb\ndata: x\n\n", [E(data="x")])


def test_bom_expected_again_after_flush():
    decoder = SSEDecoder()
    assert decoder.feed(BOM + b"data: 1\n\n") == [E(data="1")]
    decoder.flush()
    assert decoder.feed(BOM + b"data: 2\n\n") == [E(data="2")]


def test_comments_ignored():
    check(b": hello\n:\n:data: x\ndata: 1\n: between\n\n", [E(data="1")])


def test_comment_only_block_fires_nothing():
    check(b": keep-alive\n\n: keep-alive\n\n", [])


def test_field_without_colon():
    check(b"data\n\n", [E(data="")])
    check(b"event\ndata: x\n\n", [E(data="x")])
    check(b"id: 1\nid\ndata: x\n\n", [E(data="x", id=None)])


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b"data:x", "x"),
        (b"data: x", "x"),
        (b"data:  x", " x"),
        (b"data:\tx", "\tx"),
        (b"data: x ", "x "),
        (b"data: a:b", "a:b"),
        (b"data::", ":"),
    ],
)
def test_one_space_after_colon_removed(line, value):
    check(line + b"\n\n", [E(data=value)])


def test_space_before_colon_is_part_of_the_name():
    check(b"data : x\n\n", [])


def test_multi_line_data():
    check(b"data: a\ndata: b\ndata\ndata: c\n\n", [E(data="a\nb\n\nc")])


def test_only_the_final_newline_removed():
    check(b"data\ndata\n\n", [E(data="\n")])
    check(b"data:\n\n", [E(data="")])


def test_blank_line_with_empty_data_buffer_does_not_dispatch():
    check(b"\n\n\n", [])
    check(b"event: a\n\n", [])
    check(b"retry: 10\n\n", [])


def test_event_type_reset_after_dispatch():
    check(b"event: a\ndata: 1\n\ndata: 2\n\n", [E("a", "1"), E("message", "2")])


def test_event_type_reset_when_block_discarded():
    check(b"event: a\n\ndata: 2\n\n", [E("message", "2")])


def test_last_event_type_wins_and_empty_means_message():
    check(b"event: a\nevent: b\ndata: 1\n\n", [E("b", "1")])
    check(b"event: a\nevent:\ndata: 1\n\n", [E("message", "1")])


def test_id_carries_over_to_later_events():
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\n"
    check(stream, [E(data="a", id="1"), E(data="b", id="1"), E(data="c", id="2")])


def test_id_set_in_the_block_applies_to_its_own_event():
    check(b"data: a\nid: 7\n\n", [E(data="a", id="7")])


def test_id_with_nul_ignored():
    check(b"id: 1\n\nid: a\x00b\ndata: x\n\n", [E(data="x", id="1")])


def test_nul_elsewhere_is_content():
    check(b"data: a\x00b\n\n", [E(data="a\x00b")])


def test_empty_id_resets():
    check(b"id: 1\ndata: a\n\nid:\ndata: b\n\n", [E(data="a", id="1"), E(data="b", id=None)])
    check(b"id: 1\ndata: a\n\nid\ndata: b\n\n", [E(data="a", id="1"), E(data="b", id=None)])


def test_last_event_id_survives_flush_like_a_reconnection():
    decoder = SSEDecoder()
    decoder.feed(b"id: 5\n\nid: x\x00\n")
    decoder.flush()
    assert decoder.feed(b"data: a\n\n") == [E(data="a", id="5")]


@pytest.mark.parametrize("value", [b"1000", b"0", b"007", b"99999999999999999999999"])
def test_retry_ascii_digits(value):
    check(b"retry: " + value + b"\ndata: x\n\n", [E(data="x", retry=int(value))])


@pytest.mark.parametrize(
    "value",
    [b"", b" 1", b"1 ", b"+1", b"-1", b"1.5", b"1e3", b"1_000", b"0x10", b"abc",
     "١٢".encode(), "²".encode(), "\uff11".encode()],
)  # fmt: skip
def test_retry_invalid_ignored(value):
    check(b"retry: 5\nretry: " + value + b"\ndata: x\n\n", [E(data="x", retry=5)])


def test_retry_beyond_int_digit_limit_ignored():
    assert decode([b"retry: " + b"9" * 10_000 + b"\ndata: x\n\n"]) == [E(data="x")]


def test_retry_belongs_to_its_own_block():
    stream = b"retry: 5\nretry: 7\ndata: a\n\ndata: b\n\nretry: 9\n\ndata: c\n\n"
    check(stream, [E(data="a", retry=7), E(data="b"), E(data="c")])


@pytest.mark.parametrize(
    "tail", [b"data: b", b"data: b\n", b"data: b\r", b"data: b\ndata: c\r\n", b"event: x\n"]
)
def test_unterminated_last_event_discarded_at_flush(tail):
    check(b"data: a\n\n" + tail, [E(data="a")])


def test_flush_returns_nothing_and_resets():
    decoder = SSEDecoder()
    assert decoder.feed(b"event: x\ndata: a\n") == []
    assert decoder.flush() == []
    assert decoder.feed(b"data: b\n\n") == [E(data="b")]


def test_unknown_fields_and_case_ignored():
    check(b"foo: bar\nData: no\nEVENT: no\ndata: x\n\n", [E(data="x")])


def test_hook_sees_ignored_fields_in_order():
    seen = []
    stream = (
        b": comment\n:\n"  # comments are not fields: not reported
        b"foo: 1\nid: a\x00\nretry: x\ndata: d\nbar\n\n"  # unknown, id with NUL, bad retry
        b"event: ping\n\n"  # data-less block with a type
        b"\n"  # data-less block without a type: not reported
        b"event: e\ndata: y\n\n"  # dispatched: not reported
        b"baz: 2\n"
    )
    for pieces in every_split(stream):
        seen.clear()
        decode(pieces, on_ignored=lambda n, v: seen.append((n, v)))
        assert seen == [
            ("foo", "1"), ("id", "a\x00"), ("retry", "x"), ("bar", ""), ("event", "ping"),
            ("baz", "2"),
        ]  # fmt: skip


def _surface_errors(name, value):
    if name == "error":
        return E("error", value)
    if name == "event":
        return E(value, "")
    return None


def test_hook_event_inserted_in_stream_order():
    stream = (
        b"data: 1\n\n"
        b'error: {"message": "boom"}\n\n'  # llama.cpp's bare error line
        b"data: 2\n"
        b"other: ignored\n"
        b"event: error\n\n"  # dispatched normally: the hook is not asked
        b"event: error\n\n"  # no data: the hook turns it into an event
        b"data: 3\n\n"
    )
    expected = [
        E(data="1"),
        E("error", '{"message": "boom"}'),
        E("error", "2"),
        E("error", ""),
        E(data="3"),
    ]
    check(stream, expected, on_ignored=_surface_errors)
    assert reference(stream, _surface_errors) == expected


def test_hook_error_line_reported_before_the_block_dispatches():
    check(b'data: a\nerror: {"e": 1}\n\n', [E("error", '{"e": 1}'), E(data="a")],
          on_ignored=_surface_errors)  # fmt: skip


def test_hook_not_called_for_unterminated_line():
    seen = []
    decode([b"data: a\n\nerror: x"], on_ignored=lambda n, v: seen.append(n))
    assert seen == []


def test_utf8_split_across_feeds():
    check("data: héllo €𝄞 — ok\n\n".encode(), [E(data="héllo €𝄞 — ok")])
    check("événement: x\nevent: ünï\ndata: ✓\n\n".encode(), [E("ünï", "✓")])


def test_invalid_utf8_replaced():
    check(b"data: \xff\xfe a\xe2\x82\ndata: \xf0\x9f\n\n", [E(data="\ufffd\ufffd a\ufffd\n\ufffd")])
    check(b"\xffdata: x\ndata: y\n\n", [E(data="y")])


def test_line_separators_other_than_cr_lf_are_content():
    value = "a\u2028b\u0085c\u000bd\u000ce\u001cf"
    check(f"data: {value}\n\n".encode(), [E(data=value)])


# ---------------------------------------------------------------------------------------
# Line size limit
# ---------------------------------------------------------------------------------------


def test_default_limit_allows_16_mib_lines():
    assert 16 * 1024 * 1024 + len("data: ") <= DEFAULT_MAX_LINE_SIZE


def test_line_at_the_limit_accepted():
    check(b"data: 1234\r\n\r\n", [E(data="1234")], max_line_size=10)


@pytest.mark.parametrize(
    "stream", [b"data: 12345\n\n", b"data: 12345", b"data: 1\n\ndata: 12345\r"]
)
def test_line_over_the_limit_raises_however_split(stream):
    for pieces in every_split(stream):
        with pytest.raises(SSEError, match=r"max_line_size \(10 bytes\)") as info:
            decode(pieces, max_line_size=10)
        assert isinstance(info.value, StreamError)
        assert "SSEDecoder(max_line_size=...)" in str(info.value)
        assert info.value.line.startswith("data: 1")


def test_limit_checked_while_accumulating():
    decoder = SSEDecoder(max_line_size=1000)
    decoder.feed(b"data: ")
    for _ in range(99):
        decoder.feed(b"x" * 10)
        assert len(decoder._buf) <= 1000
    with pytest.raises(SSEError):
        decoder.feed(b"x" * 10)
    assert len(decoder._buf) == 0  # the buffer is released


def test_long_data_line_fast_path_matches_spec():
    value = "é" * 50_000 + "\x00x"
    for prefix, sep in ((b"data:", b"\r\n"), (b"data: ", b"\r"), (b"data:  ", b"\n")):
        stream = b"id: 3\n" + prefix + value.encode() + sep + b"data: y" + sep + sep + b"data: z"
        want = [E(data=(" " if prefix == b"data:  " else "") + value + "\ny", id="3")]
        for size in (1, 1460, 65_537, len(stream)):
            assert decode([stream[i : i + size] for i in range(0, len(stream), size)]) == want


def test_long_line_fast_path_keeps_pending_crlf():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: " + b"x" * 70_000) == []
    assert decoder.feed(b"\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []  # completes the CRLF: not a blank line
    assert decoder.feed(b"data: y\n\n") == [E(data="x" * 70_000 + "\ny")]


def test_long_line_fast_path_respects_the_limit():
    decoder = SSEDecoder(max_line_size=100_000)
    decoder.feed(b"data: " + b"x" * 99_990)
    with pytest.raises(SSEError):
        decoder.feed(b"x" * 10 + b"\n\n")


def test_invalid_limit():
    with pytest.raises(ConfigurationError, match="max_line_size"):
        SSEDecoder(max_line_size=0)


class _CountingBytes(bytes):
    """Bytes that count how many bytes the decoder's searches cover."""

    scanned = 0

    def find(self, *args):
        type(self).scanned += len(self)
        return super().find(*args)

    def rfind(self, *args):
        type(self).scanned += len(self)
        return super().rfind(*args)


@pytest.mark.parametrize("payload", [b"x", "é".encode()])
def test_16_mib_line_in_tcp_sized_reads_is_linear(payload):
    size = 16 * 1024 * 1024
    stream = b"id: 1\ndata: " + payload * (size // len(payload)) + b"\n\n"
    reads = [_CountingBytes(stream[i : i + 1460]) for i in range(0, len(stream), 1460)]
    _CountingBytes.scanned = 0
    decoder = SSEDecoder()
    start = time.monotonic()
    events = [event for read in reads for event in decoder.feed(read)]
    assert time.monotonic() - start < 20  # a smoke test: quadratic work would take minutes
    assert len(events) == 1
    assert len(events[0].data.encode()) == size
    assert _CountingBytes.scanned <= 2 * len(stream) + 3 * 1460  # each read searched twice


# ---------------------------------------------------------------------------------------
# WHATWG examples
# ---------------------------------------------------------------------------------------


def test_spec_example_stock_ticker():
    check(b"data: YHOO\ndata: +2\ndata: 10\n\n", [E(data="YHOO\n+2\n10")])


def test_spec_example_four_blocks():
    stream = (
        b": test stream\n\n"
        b"data: first event\nid: 1\n\n"
        b"data:second event\nid\n\n"
        b"data:  third event\n\n"
    )
    check(stream, [E(data="first event", id="1"), E(data="second event"), E(data=" third event")])


def test_spec_example_empty_data_and_discarded_last_block():
    check(b"data\n\ndata\ndata\n\ndata:", [E(data=""), E(data="\n")])


def test_spec_example_two_identical_events():
    check(b"data:test\n\ndata: test\n\n", [E(data="test"), E(data="test")])


def test_spec_example_event_types():
    stream = (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
    )
    check(stream, [E("add", "73857293"), E("remove", "2153"), E("add", "113411")])


def test_openai_style_stream():
    stream = (
        b'data: {"choices":[{"delta":{"content":"Hi"}}]}\r\n\r\n'
        b": OPENROUTER PROCESSING\r\n\r\n"
        b'data: {"choices":[{"delta":{"content":" there"}}]}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    check(
        stream,
        [
            E(data='{"choices":[{"delta":{"content":"Hi"}}]}'),
            E(data='{"choices":[{"delta":{"content":" there"}}]}'),
            E(data="[DONE]"),
        ],
    )


def test_event_is_frozen_and_slotted():
    event = E(data="x")
    with pytest.raises(AttributeError):
        event.data = "y"
    assert not hasattr(event, "__dict__")
    assert event == E("message", "x", None, None)
    assert hash(event) == hash(E("message", "x", None, None))


def test_decoded_event_behaves_like_a_constructed_one():
    [event] = decode([b"event: a\nid: 1\nretry: 2\ndata: x\n\n"])
    assert event == E("a", "x", "1", 2)
    assert repr(event) == "ServerSentEvent(event='a', data='x', id='1', retry=2)"
    with pytest.raises(AttributeError):
        event.data = "y"


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

_NAMES = st.sampled_from(["data", "event", "id", "retry", "error", "foo", "", "dat", "ev:ent"])
_VALUES = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.from_regex(r"[0-9]{1,4}", fullmatch=True),
    st.sampled_from(["", " ", "x\x00", "[DONE]", '{"a": 1}', "\ufeff", "é€𝄞"]),
)
_EOLS = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def _lines(draw):
    kind = draw(st.sampled_from(["field", "field", "field", "blank", "comment", "bare"]))
    eol = draw(_EOLS)
    if kind == "blank":
        return eol
    if kind == "comment":
        return ":" + draw(_VALUES) + eol
    if kind == "bare":
        return draw(_NAMES).replace(":", "") + eol
    sep = draw(st.sampled_from([":", ": ", ":  "]))
    return draw(_NAMES) + sep + draw(_VALUES) + eol


@st.composite
def _streams(draw):
    text = "".join(draw(st.lists(_lines(), max_size=25)))
    raw = text.encode()
    if draw(st.booleans()):
        raw = BOM + raw
    return raw + draw(st.sampled_from([b"", b"data: tail", b"\r"]))


@st.composite
def _split(draw, stream):
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def _collect(pieces, max_line_size=DEFAULT_MAX_LINE_SIZE):
    """Events until the end or the first SSEError; also checks the buffer stays bounded."""
    decoder = SSEDecoder(max_line_size=max_line_size, on_ignored=_surface_errors)
    events = []
    try:
        for piece in pieces:
            events += decoder.feed(piece)
            assert len(decoder._buf) <= max(max_line_size, 2)  # 2: a BOM may be pending
    except SSEError:
        return events, True
    return events + decoder.flush(), False


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_random_splits_match_the_spec(data):
    stream = data.draw(_streams())
    pieces = data.draw(_split(stream))
    expected = reference(stream, _surface_errors)
    assert _collect([stream]) == (expected, False)
    assert _collect(pieces) == (expected, False)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_arbitrary_bytes(data):
    alphabet = st.sampled_from([b"\n", b"\r", b":", b" ", b"data", b"event", b"id", b"\x00",
                                b"\xef", b"\xbb", b"\xbf", b"\xe2\x82", b"\xff", b"1"])  # fmt: skip
    stream = data.draw(st.one_of(st.binary(max_size=200), st.lists(alphabet).map(b"".join)))
    max_line_size = data.draw(st.sampled_from([1, 3, 8, 64, DEFAULT_MAX_LINE_SIZE]))
    pieces = data.draw(_split(stream))
    full = reference(stream, _surface_errors)
    whole, whole_raised = _collect([stream], max_line_size)
    split, split_raised = _collect(pieces, max_line_size)
    bytewise, bytewise_raised = _collect([bytes([b]) for b in stream], max_line_size)
    assert whole_raised == split_raised == bytewise_raised
    if whole_raised:  # events before the error are a prefix of the unlimited decoding
        for events in (whole, split, bytewise):
            assert events == full[: len(events)]
    else:
        assert whole == split == bytewise == full


# ---------------------------------------------------------------------------------------
# The fast path: feed_plain
# ---------------------------------------------------------------------------------------


def _between_events():
    decoder = SSEDecoder()
    assert decoder.feed(b": first read\n\n") == []
    return decoder


@pytest.mark.parametrize(
    ("read", "values"),
    [
        (b'data: {"a": 1}\n\n', [b'{"a": 1}']),
        (b"data:x\n\n", [b"x"]),
        (b"data:  x\n\n", [b" x"]),
        (b"data:\n\n", [b""]),
        (b"data: a\n\ndata: [DONE]\n\n", [b"a", b"[DONE]"]),
        (b"data: \xff\n\n", [b"\xff"]),  # decoded (with replacement) by the caller
    ],
)
def test_feed_plain_takes_whole_data_only_events(read, values):
    decoder = _between_events()
    assert decoder.feed_plain(read) == values
    expected = decode([b": first read\n\n", read])
    assert [E(data=value.decode("utf-8", "replace")) for value in values] == expected


@pytest.mark.parametrize(
    "read",
    [
        b"data: a\n",  # no blank line yet
        b"data: a\n\ndata: b",  # a partial event after a whole one
        b"data: a\r\n\r\n",  # CR line ends
        b"data: a\rb\n\n",  # a CR inside is a line end
        b"data: a\ndata: b\n\n",  # two data lines
        b"event: delta\ndata: a\n\n",
        b"id: 1\ndata: a\n\n",
        b": keep-alive\n\n",
        b"data: a\n\n\n",  # an extra blank line
        b"\ndata: a\n\n",
        b"dat: a\n\n",
        b"",
    ],
)
def test_feed_plain_declines_everything_else(read):
    assert _between_events().feed_plain(read) is None


def test_feed_plain_declines_while_an_event_or_line_is_open():
    assert SSEDecoder().feed_plain(b"data: a\n\n") is None  # the first read: a BOM may come
    for opening in [b"data: open", b"data: open\n", b"event: x\n", b"retry: 5\n", b"data: x\r"]:
        decoder = _between_events()
        decoder.feed(opening)
        assert decoder.feed_plain(b"data: a\n\n") is None, opening
    decoder = _between_events()
    decoder.feed(b"data: whole\n\n")
    assert decoder.feed_plain(b"data: a\n\n") == [b"a"]


def test_feed_plain_respects_the_line_limit():
    decoder = SSEDecoder(max_line_size=8)
    decoder.feed(b":\n\n")
    assert decoder.feed_plain(b"data: 12\n\n") == [b"12"]
    assert decoder.feed_plain(b"data: 123\n\n") is None
    with pytest.raises(SSEError):
        decoder.feed(b"data: 123\n\n")


_PLAIN_EVENTS = st.builds(
    lambda sep, value: f"data{sep}{value}\n\n",
    st.sampled_from([":", ": "]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12),
)


@st.composite
def _mostly_plain_reads(draw):
    """Reads cut mostly at event boundaries, as servers write, with other lines mixed in."""
    parts = [p.encode() for p in draw(st.lists(st.one_of(_PLAIN_EVENTS, _lines()), max_size=25))]
    if draw(st.booleans()):
        parts.insert(0, BOM)
    reads, i = [], 0
    while i < len(parts):
        n = draw(st.integers(1, 3))
        reads.append(b"".join(parts[i : i + n]))
        i += n
    if draw(st.booleans()):  # and some reads cut anywhere
        stream = b"".join(reads)
        reads = draw(_split(stream)) if draw(st.booleans()) else reads
    return reads


@settings(max_examples=400, deadline=None)
@given(_mostly_plain_reads())
def test_property_feed_plain_then_feed_matches_the_spec(reads):
    decoder = SSEDecoder(on_ignored=_surface_errors)
    events = []
    for read in reads:
        values = decoder.feed_plain(read)
        if values is None:
            events += decoder.feed(read)
        else:
            event("feed_plain took a read")
            last_id = decoder._last_id or None
            events += [E("message", v.decode("utf-8", "replace"), last_id) for v in values]
    events += decoder.flush()
    assert events == reference(b"".join(reads), _surface_errors)
