import base64
import json
import struct

import pytest

from langchain_matric import errors
from langchain_matric.backends import (
    ChatMessage,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from langchain_matric.backends import _openai_wire as wire

URL = "http://127.0.0.1:9/v1/chat/completions"


# -- payloads ---------------------------------------------------------------------------


def test_chat_payload_maps_every_field() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    request = GenerationRequest(
        messages=[
            ChatMessage("system", "be brief"),
            ChatMessage("user", "look", images=["data:image/png;base64,AAAA"], name="ann"),
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", "sunny", tool_call_id="call_1", name="get_weather"),
        ],
        options=GenerationOptions(
            temperature=0.0, max_tokens=7, top_p=0.5, stop=["\n"], seed=3, extra={"logprobs": True}
        ),
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        tool_choice="any",
        response_format={"type": "json_object"},
    )
    body = wire.chat_payload(request, model="m", stream=True)
    assert body["model"] == "m"
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["messages"][1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
        "name": "ann",
    }
    assistant = body["messages"][2]
    assert assistant["content"] == ""  # never null
    assert assistant["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }
    assert body["messages"][3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 7
    assert body["top_p"] == 0.5
    assert body["stop"] == ["\n"]
    assert body["seed"] == 3
    assert body["logprobs"] is True
    assert body["tool_choice"] == "required"
    assert body["response_format"] == {"type": "json_object"}
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_chat_payload_defaults_are_omitted() -> None:
    body = wire.chat_payload(GenerationRequest.from_prompt("hi"), model="m", stream=False)
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_token_limit_param_and_request_model_override() -> None:
    request = GenerationRequest.from_prompt("hi", options=GenerationOptions(max_tokens=5))
    request.model = "other"
    body = wire.chat_payload(request, model="m", stream=False, token_limit="max_completion_tokens")
    assert body["model"] == "other"
    assert body["max_completion_tokens"] == 5
    assert "max_tokens" not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("any", "required"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
        (
            {"type": "function", "function": {"name": "x"}},
            {"type": "function", "function": {"name": "x"}},
        ),
        (None, None),
    ],
)
def test_tool_choice(choice, expected) -> None:
    assert wire.tool_choice_to_wire(choice) == expected


def test_completion_payload() -> None:
    request = GenerationRequest(prompt="Once upon", options=GenerationOptions(max_tokens=3))
    body = wire.completion_payload(request, model="base", stream=True, stream_usage=False)
    assert body == {"model": "base", "prompt": "Once upon", "max_tokens": 3, "stream": True}


# -- whole answers ----------------------------------------------------------------------


def test_parse_chat_response() -> None:
    obj = {
        "model": "m-1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "content": None,
                    "reasoning_content": "thinking",
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}},
                        {"function": {"name": "g", "arguments": {"b": 2}}},
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    gen = wire.parse_chat_response(obj, URL)
    assert gen.text == ""
    assert gen.reasoning == "thinking"
    assert gen.tool_calls == [ToolCall("c1", "f", '{"a": 1}'), ToolCall("call_1", "g", '{"b": 2}')]
    assert gen.finish_reason == "tool_calls"
    assert gen.usage == Usage(3, 4, 7, 2)
    assert gen.model == "m-1"


@pytest.mark.parametrize(
    ("body", "cls"),
    [
        ({"error": {"message": "boom", "code": 500}}, errors.ServerError),
        ({"error": "model 'x' not found"}, errors.ModelNotFoundError),
        ({"object": "error", "message": "bad", "code": 400}, errors.BadRequestError),
        (
            {"error": {"message": "too long", "code": "context_length_exceeded"}},
            errors.ContextLengthExceededError,
        ),
    ],
)
def test_error_in_a_200_body_raises_typed(body, cls) -> None:
    with pytest.raises(cls) as info:
        wire.parse_chat_response(body, URL)
    assert info.value.status == 200
    assert URL in str(info.value)


def test_answer_without_choices_is_a_clear_error() -> None:
    with pytest.raises(errors.BackendHTTPError, match="no choices"):
        wire.parse_chat_response({"hello": 1}, URL)


def _b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def test_embeddings_base64_and_floats_in_index_order() -> None:
    obj = {
        "data": [
            {"index": 1, "embedding": _b64([0.5, -1.0])},
            {"index": 0, "embedding": [0.25, 2.0]},
        ]
    }
    assert wire.parse_embeddings(obj, URL, expected_count=2, expected_dim=2) == [
        [0.25, 2.0],
        [0.5, -1.0],
    ]
    assert wire.answered_base64({"data": [{"embedding": [1.0]}]}) is False
    assert wire.answered_base64({"data": [{"embedding": "AAAA"}]}) is True
    assert wire.answered_base64({"data": []}) is None


@pytest.mark.parametrize("simd", [True, False])
def test_b64decode_as_the_standard_library(simd, monkeypatch) -> None:
    if not simd:  # as on a platform without pybase64's wheels
        monkeypatch.setattr(wire, "_pybase64", None)
    vector = struct.pack("<768f", *[i / 7 for i in range(768)])
    text = base64.b64encode(vector).decode()
    assert wire.b64decode(text) == vector
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))  # MIME-style lines
    assert wire.b64decode(wrapped) == vector == base64.b64decode(wrapped)
    assert wire.b64decode("AAAA?") == base64.b64decode("AAAA?") == b"\0\0\0"


def test_embeddings_count_and_dimension_checked() -> None:
    obj = {"data": [{"index": 0, "embedding": [1.0, 2.0]}]}
    with pytest.raises(errors.EmbeddingDimensionError, match="asked .* for 2 embeddings, got 1"):
        wire.parse_embeddings(obj, URL, expected_count=2, expected_dim=None)
    with pytest.raises(errors.EmbeddingDimensionError, match="expected 3"):
        wire.parse_embeddings(obj, URL, expected_count=1, expected_dim=3)


@pytest.mark.parametrize("embedding", [None, {"values": [1.0]}])
def test_an_embedding_that_is_not_numbers_or_base64_is_named(embedding) -> None:
    obj = {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": embedding}]}
    with pytest.raises(errors.BackendHTTPError, match="embedding 1 from .* neither a list"):
        wire.parse_embeddings(obj, URL, expected_count=2, expected_dim=None)


NOT_FINITE = {
    "NaN": (float("nan"), "NaN"),
    "Infinity": (float("inf"), "Infinity"),
    "-Infinity": (float("-inf"), "-Infinity"),
    "a string": ("x", '"x"'),
    "a number as a string": ("1.5", '"1.5"'),
    "null": (None, "null"),
    "a list": ([1.0], "[1.0]"),
}


@pytest.mark.parametrize(("value", "shown"), NOT_FINITE.values(), ids=NOT_FINITE.keys())
def test_an_element_that_is_not_a_finite_number_is_named_with_its_text(value, shown) -> None:
    obj = {"data": [{"index": 1, "embedding": [1.0, value]}, {"index": 0, "embedding": [1, 2]}]}
    with pytest.raises(errors.EmbeddingValueError) as info:
        wire.parse_embeddings(obj, URL, expected_count=2, expected_dim=None)
    assert info.value.index == 1 and info.value.status == 200 and not info.value.is_retryable
    assert f"embedding 1 from {URL} (the vector of text 1 of the request) holds {shown} " in str(
        info.value
    )
    assert "at position 1" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_base64_vector_holding_nan_or_infinity_is_refused(value) -> None:
    obj = {
        "data": [{"index": 0, "embedding": _b64([1.0])}, {"index": 1, "embedding": _b64([value])}]
    }
    with pytest.raises(errors.EmbeddingValueError, match="embedding 1 .* at position 0") as info:
        wire.parse_embeddings(obj, URL, expected_count=2, expected_dim=None)
    assert info.value.index == 1
    mixed = {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": _b64([value])}]}
    with pytest.raises(errors.EmbeddingValueError, match="embedding 1 ") as info:
        wire.parse_embeddings(mixed, URL, expected_count=2, expected_dim=None)


def test_finite_values_that_overflow_a_sum_are_accepted() -> None:
    obj = {"data": [{"index": 0, "embedding": [1e308, 1e308, -1e308]}]}
    assert wire.parse_embeddings(obj, URL, expected_count=1, expected_dim=None) == [
        [1e308, 1e308, -1e308]
    ]


def test_embedding_values_then_vectors() -> None:
    obj = {"data": [{"index": 1, "embedding": _b64([2.0])}, {"index": 0, "embedding": _b64([1.0])}]}
    values = wire.embedding_values(obj, URL, expected_count=2)
    assert values == [_b64([1.0]), _b64([2.0])]
    assert wire.vectors_of(values, URL, expected_dim=1) == [[1.0], [2.0]]
    with pytest.raises(errors.EmbeddingDimensionError, match="asked .* for 3 embeddings, got 2"):
        wire.embedding_values(obj, URL, expected_count=3)


def test_embeddings_payload() -> None:
    assert wire.embeddings_payload(["a"], model="e", base64=True, dimensions=None) == {
        "model": "e",
        "input": ["a"],
        "encoding_format": "base64",
    }
    assert wire.embeddings_payload(["a"], model="e", base64=False, dimensions=8) == {
        "model": "e",
        "input": ["a"],
        "dimensions": 8,
    }


# -- streams ----------------------------------------------------------------------------


def _chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
    obj = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}\n\n'
HAPPY = (
    _chunk({"role": "assistant", "content": ""})
    + b": ping\n\n"
    + _chunk({"reasoning_content": "hm"})
    + _chunk({"content": "Hel"})
    + _chunk({"content": "lo ✓"})
    + _chunk({}, "stop")
    + USAGE
    + b"data: [DONE]\n\n"
)


def _run(data: bytes, split: int | None = None, **kw) -> list[GenerationDelta]:
    parser = wire.OpenAIStreamParser(URL, max_line_size=1 << 20, **kw)
    out: list[GenerationDelta] = []
    pieces = [data] if split is None else [data[:split], data[split:]]
    for piece in pieces:
        out += parser.feed(piece)
        if parser.done:
            return out
    return out + parser.finish()


def _summary(deltas: list[GenerationDelta]) -> tuple:
    return (
        "".join(d.text for d in deltas),
        "".join(d.reasoning for d in deltas),
        [d.finish_reason for d in deltas if d.finish_reason],
        [d.usage for d in deltas if d.usage],
        [d.model for d in deltas if d.model],
    )


def test_stream_happy_path_usage_held_with_finish() -> None:
    deltas = _run(HAPPY)
    assert _summary(deltas) == ("Hello ✓", "hm", ["stop"], [Usage(2, 3, 5)], ["m"])
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage == Usage(2, 3, 5)


def test_stream_is_split_invariant() -> None:
    expected = _run(HAPPY)
    for split in range(len(HAPPY) + 1):
        assert _run(HAPPY, split) == expected, split


def test_clean_end_after_finish_reason_is_fine_without_done() -> None:
    data = _chunk({"content": "a"}) + _chunk({}, "length")
    assert _summary(_run(data))[2] == ["length"]


def test_clean_end_without_done_or_finish_is_truncated() -> None:
    with pytest.raises(errors.StreamError, match="truncated") as info:
        _run(_chunk({"content": "abc"}) + _chunk({"content": "def"}))
    assert info.value.partial == "abcdef"


@pytest.mark.parametrize(
    "line",
    [
        b'data: {"error": {"message": "overloaded", "code": 503}}\n\n',
        b'data: {"object": "error", "message": "overloaded", "code": 503}\n\n',
        b'event: error\ndata: {"message": "overloaded"}\n\n',
        b'error: {"message": "overloaded", "code": 503}\n\n',
    ],
)
def test_in_stream_error_shapes(line: bytes) -> None:
    with pytest.raises(errors.BackendHTTPError, match="overloaded") as info:
        _run(_chunk({"content": "par"}) + line + b"data: [DONE]\n\n")
    assert info.value.partial == "par"


def test_dataless_error_event() -> None:
    with pytest.raises(errors.BackendHTTPError, match="event: error"):
        _run(_chunk({"content": "x"}) + b"event: error\n\n")


def test_dataless_block_of_another_type_is_ignored() -> None:
    data = _chunk({"content": "x"}) + b"event: ping\n\n" + b"data: [DONE]\n\n"
    assert _summary(_run(data))[0] == "x"


def test_invalid_json_names_the_line() -> None:
    with pytest.raises(errors.StreamError, match="invalid JSON") as info:
        _run(_chunk({"content": "ok"}) + b"data: {nope\n\n")
    assert info.value.line == "{nope"
    assert info.value.partial == "ok"


def test_tool_call_id_and_name_only_on_first_delta_per_index() -> None:
    def call(index: int, args: str) -> dict:
        return {
            "tool_calls": [
                {
                    "index": index,
                    "id": f"id{index}",
                    "type": "function",
                    "function": {"name": f"f{index}", "arguments": args},
                }
            ]
        }

    data = (
        _chunk(call(0, '{"a"'))
        + _chunk(call(0, ": 1}"))
        + _chunk(call(1, "{}"))
        + _chunk({}, "tool_calls")
        + b"data: [DONE]\n\n"
    )
    tool_deltas = [t for d in _run(data) for t in d.tool_call_deltas]
    assert tool_deltas == [
        ToolCallDelta(0, "id0", "f0", '{"a"'),
        ToolCallDelta(0, None, None, ": 1}"),
        ToolCallDelta(1, "id1", "f1", "{}"),
    ]


def test_completions_stream() -> None:
    def text(t: str, finish: str | None = None) -> bytes:
        obj = {"model": "b", "choices": [{"index": 0, "text": t, "finish_reason": finish}]}
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    data = text("Once") + text(" upon", "length") + b"data: [DONE]\n\n"
    assert _summary(_run(data, completions=True)) == ("Once upon", "", ["length"], [], ["b"])


def test_usage_in_every_chunk_reported_once() -> None:
    usage = {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    data = (
        _chunk({"content": "a"}, **usage)
        + _chunk({"content": "b"}, "stop", usage={"prompt_tokens": 1, "completion_tokens": 2})
        + b"data: [DONE]\n\n"
    )
    deltas = _run(data)
    assert [d.usage for d in deltas if d.usage] == [Usage(1, 2)]
