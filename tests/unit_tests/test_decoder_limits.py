"""Memory stays bounded by the configured maximum, for events as well as lines.

`test_sse.py` and `test_ndjson.py` fuzz both decoders with arbitrary bytes and splits
and bound the line buffer; this adds what they leave open: an SSE event made of many
short `data:` lines and no blank line (each line under the limit) must not grow without
bound either, and must fail the same way however the bytes are split.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_matric.ndjson import NDJSONDecoder, NDJSONError
from langchain_matric.sse import SSEDecoder, SSEError

MAX = 64


def _pending(decoder: SSEDecoder) -> int:
    """Bytes/characters the decoder holds for the line and the event still open."""
    return len(decoder._buf) + sum(len(piece) + 1 for piece in decoder._data)


def _run(pieces: list[bytes]) -> tuple[list[str], bool]:
    decoder = SSEDecoder(max_line_size=MAX)
    events: list[str] = []
    try:
        for piece in pieces:
            events += [e.data for e in decoder.feed(piece)]
            assert _pending(decoder) <= 2 * MAX + 2  # an open line plus an open event
    except SSEError:
        return events, True
    return events + [e.data for e in decoder.flush()], False


@st.composite
def _split(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


_LINE = st.one_of(
    st.text("abc", min_size=0, max_size=30).map(lambda t: f"data: {t}\n"),
    st.just("\n"),
    st.just(": ping\n"),
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_many_data_lines_are_bounded_however_split(data: st.DataObject) -> None:
    stream = "".join(data.draw(st.lists(_LINE, max_size=60))).encode()
    pieces = data.draw(_split(stream))
    whole, whole_raised = _run([stream])
    split, split_raised = _run(pieces)
    bytewise, bytewise_raised = _run([bytes([b]) for b in stream])
    assert whole_raised == split_raised == bytewise_raised
    longest = max((len(e) for e in whole + split + bytewise), default=0)
    assert longest <= MAX
    if whole_raised:  # the events before the error are a prefix of the others'
        shortest = min((whole, split, bytewise), key=len)
        for events in (whole, split, bytewise):
            assert events[: len(shortest)] == shortest
    else:
        assert whole == split == bytewise


def test_an_endless_event_is_an_error_not_a_leak() -> None:
    decoder = SSEDecoder(max_line_size=1000)

    def endless() -> None:
        for _ in range(10_000):  # 170,000 characters of data in one event
            decoder.feed(b"data: 0123456789\n")
            assert _pending(decoder) <= 1000 + 1

    with pytest.raises(SSEError, match=r"max_line_size \(1,000\)") as info:
        endless()
    assert info.value.line == "0123456789"


def test_an_event_at_the_limit_is_accepted() -> None:
    decoder = SSEDecoder(max_line_size=21)
    # "0123456789\n0123456789" is 21 characters: allowed, in one read or many
    assert [e.data for e in decoder.feed(b"data: 0123456789\ndata: 0123456789\n\n")] == [
        "0123456789\n0123456789"
    ]
    for piece in (b"data: 0123456789\n", b"data: 0123456789\n", b"\n"):
        events = decoder.feed(piece)
    assert [e.data for e in events] == ["0123456789\n0123456789"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.data())
def test_ndjson_memory_bounded_by_the_maximum(stream: bytes, data: st.DataObject) -> None:
    decoder = NDJSONDecoder(max_line_size=MAX)
    try:
        for piece in data.draw(_split(stream)):
            decoder.feed(piece)
            assert len(decoder._buf) <= MAX
        decoder.flush()
    except NDJSONError:
        pass
