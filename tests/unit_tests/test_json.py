"""`_json.loads`: orjson's speed with `json.loads`' results."""

import json
import math

import pytest

from langchain_matric import _json


@pytest.fixture(params=["orjson", "stdlib"])
def loads(request, monkeypatch):
    if request.param == "stdlib":  # as on a platform without orjson
        monkeypatch.setattr(_json, "fast_loads", _json.stdlib_loads)
    return _json.loads


@pytest.mark.parametrize(
    "text",
    [
        '{"choices": [{"delta": {"content": "Hi é 𝄞"}}], "created": 1718000000}',
        '{"a": 1, "a": 2}',
        "[1.0000000000000002, -0.0, 1E2, null, true]",
        '"\\u0000"',
        ' {"a": 1} \r',
    ],
)
def test_same_results_as_json_loads(loads, text):
    for data in (text, text.encode()):
        assert loads(data) == json.loads(text)


def test_what_orjson_refuses_is_parsed_by_json_loads(loads):
    assert math.isnan(loads(b"[NaN]")[0])
    assert loads(b"[Infinity]") == [math.inf]
    assert loads(b'"\\ud800"') == "\ud800"


def test_invalid_utf8_is_replaced_as_the_decoders_do(loads):
    assert loads(b'{"a": "x\xffy"}') == {"a": "x\ufffdy"}


@pytest.mark.parametrize("data", [b"", b"{", b"data: 1", b"\xef\xbb\xbf{}", b"[1] [2]"])
def test_not_json_raises_value_error(loads, data):
    with pytest.raises(ValueError, match="Expecting|Extra data|Unexpected UTF-8 BOM"):
        loads(data)


def test_text_of():
    assert _json.text_of(b"a\xffb") == "a\ufffdb"
    assert _json.text_of(memoryview(b"ab")) == "ab"
    assert _json.text_of("ab") == "ab"
