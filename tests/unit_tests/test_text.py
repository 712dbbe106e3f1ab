"""Text integrity: surrogates joined or replaced, invalid UTF-8 replaced, requests encodable."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from langchain_matric._http import HTTPConfig
from langchain_matric._http._common import Response, build_call, encode_json, prepare
from langchain_matric._text import SurrogateJoiner, has_surrogates, mend
from langchain_matric.backends._ollama_wire import OllamaStreamParser
from langchain_matric.backends._openai_wire import OpenAIStreamParser
from langchain_matric.errors import StreamError

SMILE = "\U0001f600"
HIGH, LOW = "\\ud83d", "\\ude00"  # as JSON escapes them
URL = "http://127.0.0.1/v1/chat/completions"


def openai_event(escaped: str, finish: str | None = None) -> bytes:
    """One SSE chunk whose content is `escaped`, written into the JSON as it is."""
    delta = f'{{"content": "{escaped}"}}'
    finish_reason = "null" if finish is None else f'"{finish}"'
    choice = f'{{"index": 0, "delta": {delta}, "finish_reason": {finish_reason}}}'
    return f'data: {{"choices": [{choice}]}}\n\n'.encode()


def ollama_line(escaped: str, done: bool = False) -> bytes:
    tail = ', "done": true, "done_reason": "stop"' if done else ', "done": false'
    return f'{{"message": {{"content": "{escaped}"}}{tail}}}\n'.encode()


def openai_texts(*reads: bytes, end: bool = True) -> tuple[list[str], str]:
    parser = OpenAIStreamParser(URL, max_line_size=1 << 20)
    deltas = []
    for read in reads:
        deltas += parser.feed(read)
    if end:
        deltas += parser.finish()
    return [d.text for d in deltas if d.text], parser.partial


def ollama_texts(*reads: bytes, end: bool = True) -> tuple[list[str], str]:
    parser = OllamaStreamParser(url="http://127.0.0.1/api/chat")
    deltas = []
    for read in reads:
        deltas += parser.feed(read)
    if end:
        deltas += parser.finish()
    return [d.text for d in deltas if d.text], parser.partial


# ---------------------------------------------------------------------------------------
# Streams: a pair split across two events is joined; a lone half becomes U+FFFD
# ---------------------------------------------------------------------------------------


def test_openai_a_pair_split_across_events_is_joined() -> None:
    texts, partial = openai_texts(
        openai_event("smile " + HIGH), openai_event(LOW + "!"), openai_event("", "stop")
    )
    assert "".join(texts) == partial == f"smile {SMILE}!"
    assert not any(has_surrogates(t) for t in texts)


def test_ollama_a_pair_split_across_lines_is_joined() -> None:
    texts, partial = ollama_texts(
        ollama_line("smile " + HIGH), ollama_line(LOW + "!"), ollama_line("", done=True)
    )
    assert "".join(texts) == partial == f"smile {SMILE}!"


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
def test_a_pair_split_within_one_read_is_joined(protocol: str) -> None:
    if protocol == "openai":
        texts, _ = openai_texts(
            openai_event("a" + HIGH) + openai_event(LOW + "b") + openai_event("", "stop")
        )
    else:
        texts, _ = ollama_texts(
            ollama_line("a" + HIGH) + ollama_line(LOW + "b") + ollama_line("", done=True)
        )
    assert "".join(texts) == f"a{SMILE}b"


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
def test_lone_halves_become_replacement_characters(protocol: str) -> None:
    """A high half followed by no low half, a low half alone, a high half at the end."""
    if protocol == "openai":
        texts, partial = openai_texts(
            openai_event("x" + HIGH),
            openai_event("y"),
            openai_event(LOW + "z"),
            openai_event(HIGH),
            openai_event("", "stop"),
        )
    else:
        texts, partial = ollama_texts(
            ollama_line("x" + HIGH),
            ollama_line("y"),
            ollama_line(LOW + "z"),
            ollama_line(HIGH),
            ollama_line("", done=True),
        )
    assert "".join(texts) == "x\ufffdy\ufffdz\ufffd"
    assert partial.startswith("x\ufffdy\ufffdz")


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
def test_partial_matches_what_was_delivered_when_a_stream_breaks(protocol: str) -> None:
    if protocol == "openai":
        parser: OpenAIStreamParser | OllamaStreamParser = OpenAIStreamParser(
            URL, max_line_size=1 << 20
        )
        reads = [openai_event("a" + HIGH), openai_event(LOW + "b" + HIGH)]
    else:
        parser = OllamaStreamParser(url="http://127.0.0.1/api/chat")
        reads = [ollama_line("a" + HIGH), ollama_line(LOW + "b" + HIGH)]
    delivered = "".join(d.text for read in reads for d in parser.feed(read))
    with pytest.raises(StreamError) as info:
        parser.finish()  # no finish reason / no done: truncated
    assert delivered == info.value.partial == f"a{SMILE}b"


@given(st.text(alphabet=st.characters(min_codepoint=0x10000, max_codepoint=0x1F64F), max_size=8))
def test_astral_text_sent_one_utf16_unit_per_event_comes_back_whole(text: str) -> None:
    """Each escaped half in its own event (the worst a token-per-event server can do)."""
    escaped = json.dumps(text)[1:-1]  # ASCII: every astral character as a \\uXXXX pair
    units = [escaped[i : i + 6] for i in range(0, len(escaped), 6)]
    texts, _ = openai_texts(*(openai_event(u) for u in units), openai_event("", "stop"))
    assert "".join(texts) == text


def test_streams_without_surrogates_never_switch_to_joining() -> None:
    parser = OpenAIStreamParser(URL, max_line_size=1 << 20)
    parser.feed(openai_event("caf\\u00e9 " + SMILE))
    assert parser._joiner is None
    ollama = OllamaStreamParser()
    ollama.feed(ollama_line("caf\\u00e9 " + SMILE))
    assert ollama._joiner is None


# ---------------------------------------------------------------------------------------
# Whole answers and requests
# ---------------------------------------------------------------------------------------


def _response(content: bytes) -> Response:
    config = HTTPConfig("http://127.0.0.1:1")
    call = build_call(
        config, prepare(config), "POST", "/x", json=None, params=None,
        extra_headers=None, model=None,
    )  # fmt: skip
    return Response(200, {"content-type": "application/json"}, content, call)


def test_a_whole_answer_with_invalid_utf8_is_decoded_with_replacement() -> None:
    """It used to raise an error blaming `base_url`; the streams replace, and now so does this."""
    assert _response(b'{"text": "caf\xe9 \xff!"}').json() == {"text": "caf\ufffd \ufffd!"}


def test_a_whole_answer_with_lone_surrogate_escapes_is_mended() -> None:
    body = b'{"text": "a\\ud800b", "pair": "\\ud83d\\ude00", "k\\udc00": [NaN]}'
    got = _response(body).json()
    assert got["text"] == "a\ufffdb" and got["pair"] == SMILE
    assert list(got) == ["text", "pair", "k\ufffd"]


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("a\ud800b", "a\ufffdb"),
        ("\udc00", "\ufffd"),
        ("\ud83d\ude00", SMILE),  # two code units in a Python string: one character sent
        ("plain " + SMILE, "plain " + SMILE),
    ],
)
def test_a_request_with_lone_surrogates_encodes(text: str, sent: str) -> None:
    body = encode_json({"messages": [{"role": "user", "content": text}]})
    assert json.loads(body)["messages"][0]["content"] == sent


def test_joiner_and_mend_examples() -> None:
    joiner = SurrogateJoiner()
    assert joiner.feed("\ud83d") == "" and joiner.feed("\ude00") == SMILE
    assert joiner.feed("\ude00") == "\ufffd" and joiner.flush() == ""
    assert mend("ok") == "ok"
