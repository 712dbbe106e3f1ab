"""The Responses API wire without I/O: payloads, whole answers and the stream parser.

The event sequences below follow what OpenAI, vLLM and llama.cpp's `llama-server` send
(docs/architecture.md: servers differ in ids, `output_index` and terminal status).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from langchain_matric import errors
from langchain_matric.backends import (
    ChatMessage,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
    ToolCall,
    Usage,
)
from langchain_matric.backends import _responses_wire as wire
from langchain_matric.backends._responses_stream import ResponsesStreamParser

URL = "http://127.0.0.1:9/v1/responses"


# -- payloads ---------------------------------------------------------------------------


def test_payload_maps_every_field() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    request = GenerationRequest(
        messages=[
            ChatMessage("system", "be brief"),
            ChatMessage("user", "look", images=["data:image/png;base64,AAAA"]),
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", "sunny", tool_call_id="call_1", name="get_weather"),
            ChatMessage("assistant", "It is sunny."),
        ],
        options=GenerationOptions(
            temperature=0.0,
            max_tokens=7,
            top_p=0.5,
            stop=["\n"],
            seed=3,
            extra={"logit_bias": {"1": 2}, "reasoning_effort": "low", "user": "u1"},
        ),
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object"},
                    "strict": True,
                },
            }
        ],
        tool_choice="any",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "P", "schema": {"type": "object"}, "strict": True},
        },
    )
    body = wire.responses_payload(request, model="m", stream=True)
    assert body["input"] == [
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "be brief"}]},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
            ],
        },
        # An assistant turn with no text sends only its function calls.
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}],
        },
    ]  # fmt: skip
    assert body["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object"},
            "strict": True,
        }
    ]
    assert body["tool_choice"] == "required"
    assert body["text"] == {
        "format": {"type": "json_schema", "name": "P", "schema": {"type": "object"}, "strict": True}
    }
    assert body["max_output_tokens"] == 7
    assert body["temperature"] == 0.0
    assert body["top_p"] == 0.5
    assert body["reasoning"] == {"effort": "low"}
    assert body["user"] == "u1"
    assert body["store"] is False
    assert body["stream"] is True
    # What the API has no field for is not sent (stop is cut client-side by the adapters).
    for absent in ("stop", "seed", "logit_bias", "max_tokens", "reasoning_effort", "messages"):
        assert absent not in body


def test_payload_is_stateless_unless_asked() -> None:
    request = GenerationRequest.from_prompt("Hi")
    assert wire.responses_payload(request, model="m", stream=False)["store"] is False
    request.options.extra = {"store": True, "previous_response_id": "resp_1"}
    body = wire.responses_payload(request, model="m", stream=False)
    assert body["store"] is True
    assert body["previous_response_id"] == "resp_1"
    request.model = "other"
    assert wire.responses_payload(request, model="m", stream=False)["model"] == "other"


@pytest.mark.parametrize("n", [2, 0])
def test_n_other_than_one_is_a_clear_error(n: int) -> None:
    request = GenerationRequest.from_prompt("Hi", options=GenerationOptions(extra={"n": n}))
    with pytest.raises(errors.ConfigurationError, match="api='chat'"):
        wire.responses_payload(request, model="m", stream=False)
    request.options.extra = {"n": 1}
    assert "n" not in wire.responses_payload(request, model="m", stream=False)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("any", "required"),
        ("get_weather", {"type": "function", "name": "get_weather"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "function", "name": "f"}),
        ({"type": "function", "name": "f"}, {"type": "function", "name": "f"}),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    assert wire.responses_tool_choice(choice) == expected


def test_text_format_and_tools_pass_what_they_do_not_know() -> None:
    assert wire.text_format({"type": "json_object"}) == {"type": "json_object"}
    assert wire.text_format({"type": "text"}) is None
    assert wire.responses_tool({"type": "web_search"}) == {"type": "web_search"}
    flat = {"type": "function", "name": "f", "parameters": {}}
    assert wire.responses_tool(flat) == flat


# -- whole answers ---------------------------------------------------------------------


def _response(output: list[Any], **fields: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": "completed", "error": None,
            "incomplete_details": None, "model": "m", "output": output, **fields}  # fmt: skip


def test_parse_whole_answer() -> None:
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }
    obj = _response(
        [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hmm"}]},
            {"type": "message", "content": [{"type": "output_text", "text": "Hi "},
                                            {"type": "refusal", "refusal": "no"},
                                            {"type": "output_text", "text": "there"}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f",
             "arguments": '{"a": 1}'},
            {"type": "function_call", "id": "fc_2", "name": "g", "arguments": {"b": 2}},
        ],
        usage=usage,
    )  # fmt: skip
    answer = wire.parse_responses_response(obj, URL)
    assert answer.text == "Hi there"
    assert answer.reasoning == "hmm"
    assert [(c.id, c.name, c.arguments) for c in answer.tool_calls] == [
        ("call_1", "f", '{"a": 1}'),
        ("fc_2", "g", '{"b": 2}'),
    ]
    assert answer.finish_reason == "tool_calls"
    assert answer.usage == Usage(10, 5, 15, reasoning_tokens=2, cached_tokens=6)
    assert answer.model == "m"
    assert answer.raw is obj


def test_reasoning_text_wins_over_its_summary() -> None:
    item = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "short"}],
            "content": [{"type": "reasoning_text", "text": "long thoughts"}]}  # fmt: skip
    assert wire.parse_responses_response(_response([item]), URL).reasoning == "long thoughts"


@pytest.mark.parametrize(
    ("status", "details", "finish"),
    [
        ("completed", None, "stop"),
        (None, None, "stop"),
        ("incomplete", {"reason": "max_output_tokens"}, "length"),
        ("incomplete", None, "length"),
        ("incomplete", {"reason": "content_filter"}, "content_filter"),
        ("completed", {"reason": "max_output_tokens"}, "length"),  # status disagrees: details win
    ],
)
def test_finish_reason_from_status(status: str | None, details: Any, finish: str) -> None:
    obj = _response([], status=status, incomplete_details=details)
    assert wire.parse_responses_response(obj, URL).finish_reason == finish


@pytest.mark.parametrize(
    ("obj", "cls"),
    [
        ({"status": "failed", "error": {"code": "server_error", "message": "boom"}, "output": []},
         errors.BackendHTTPError),
        ({"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
         errors.RateLimitError),
        ({"object": "error", "message": "context length exceeded", "code": 400},
         errors.ContextLengthExceededError),
        ({"status": "failed", "output": []}, errors.BackendHTTPError),
    ],
)  # fmt: skip
def test_failed_responses_raise_typed(obj: dict[str, Any], cls: type[Exception]) -> None:
    with pytest.raises(cls) as caught:
        wire.parse_responses_response(obj, URL)
    assert URL in str(caught.value)


def test_answer_without_output_is_a_clear_error() -> None:
    with pytest.raises(errors.BackendHTTPError, match="no `output` list"):
        wire.parse_responses_response({"choices": []}, URL)


# -- streams ---------------------------------------------------------------------------


def _sse(obj: dict[str, Any], *, named: bool = True) -> bytes:
    head = f"event: {obj['type']}\n".encode() if named and "type" in obj else b""
    return head + b"data: " + json.dumps(obj).encode() + b"\n\n"


def _stream(events: list[dict[str, Any]], *, named: bool = True) -> bytes:
    return b"".join(_sse(event, named=named) for event in events)


def _run(*pieces: bytes) -> list[GenerationDelta]:
    parser = ResponsesStreamParser(URL, max_line_size=1 << 20)
    deltas: list[GenerationDelta] = []
    for piece in pieces:
        deltas.extend(parser.feed(piece))
        if parser.done:
            return deltas
    deltas.extend(parser.finish())
    return deltas


def _text(deltas: list[GenerationDelta]) -> str:
    return "".join(d.text for d in deltas)


def _calls(deltas: list[GenerationDelta]) -> dict[int, list[Any]]:
    calls: dict[int, list[Any]] = {}
    for delta in deltas:
        for piece in delta.tool_call_deltas:
            entry = calls.setdefault(piece.index, [None, None, ""])
            if piece.id is not None:
                assert entry[0] is None, "id sent twice"
                entry[0] = piece.id
            if piece.name is not None:
                assert entry[1] is None, "name sent twice"
                entry[1] = piece.name
            entry[2] += piece.arguments
    return calls


def _final(deltas: list[GenerationDelta]) -> GenerationDelta:
    finals = [d for d in deltas if d.finish_reason is not None or d.usage is not None]
    assert len(finals) == 1
    assert finals[0] is deltas[-1]
    return finals[0]


USAGE = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 8}, "output_tokens": 9,
         "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 21}  # fmt: skip

ARGS = '{"city": "Oslo", "unit": "C"}'

OPENAI_STREAM = [
    {"type": "response.created", "sequence_number": 0,
     "response": {"id": "resp_1", "status": "in_progress", "model": "gpt-x", "output": []}},
    {"type": "response.in_progress", "sequence_number": 1,
     "response": {"id": "resp_1", "status": "in_progress", "model": "gpt-x", "output": []}},
    {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
     "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
    {"type": "response.reasoning_summary_part.added", "sequence_number": 3, "output_index": 0,
     "item_id": "rs_1", "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
    {"type": "response.reasoning_summary_text.delta", "sequence_number": 4, "output_index": 0,
     "item_id": "rs_1", "summary_index": 0, "delta": "Think"},
    {"type": "response.reasoning_summary_text.delta", "sequence_number": 5, "output_index": 0,
     "item_id": "rs_1", "summary_index": 0, "delta": "ing."},
    {"type": "response.output_item.done", "sequence_number": 6, "output_index": 0,
     "item": {"id": "rs_1", "type": "reasoning",
              "summary": [{"type": "summary_text", "text": "Thinking."}]}},
    {"type": "response.output_item.added", "sequence_number": 7, "output_index": 1,
     "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}},
    {"type": "response.output_text.delta", "sequence_number": 8, "output_index": 1,
     "item_id": "msg_1", "content_index": 0, "delta": "Héllo", "logprobs": []},
    {"type": "response.output_text.delta", "sequence_number": 9, "output_index": 1,
     "item_id": "msg_1", "content_index": 0, "delta": " wörld 🌍", "logprobs": []},
    {"type": "response.output_text.done", "sequence_number": 10, "output_index": 1,
     "item_id": "msg_1", "content_index": 0, "text": "Héllo wörld 🌍"},
    {"type": "response.output_item.done", "sequence_number": 11, "output_index": 1,
     "item": {"id": "msg_1", "type": "message", "role": "assistant",
              "content": [{"type": "output_text", "text": "Héllo wörld 🌍"}]}},
    {"type": "response.output_item.added", "sequence_number": 12, "output_index": 2,
     "item": {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "get_weather",
              "arguments": ""}},
    {"type": "response.function_call_arguments.delta", "sequence_number": 13, "output_index": 2,
     "item_id": "fc_1", "delta": ARGS[:9]},
    {"type": "response.function_call_arguments.delta", "sequence_number": 14, "output_index": 2,
     "item_id": "fc_1", "delta": ARGS[9:]},
    {"type": "response.function_call_arguments.done", "sequence_number": 15, "output_index": 2,
     "item_id": "fc_1", "arguments": ARGS},
    {"type": "response.output_item.done", "sequence_number": 16, "output_index": 2,
     "item": {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "get_weather",
              "arguments": ARGS}},
    {"type": "response.completed", "sequence_number": 17,
     "response": {"id": "resp_1", "status": "completed", "model": "gpt-x", "usage": USAGE,
                  "output": [
                      {"type": "message", "content": [{"type": "output_text",
                                                       "text": "Héllo wörld 🌍"}]},
                      {"type": "function_call", "id": "fc_1", "call_id": "call_1",
                       "name": "get_weather", "arguments": ARGS}]}},
]  # fmt: skip

VLLM_STREAM = [
    {"type": "response.created", "sequence_number": 0,
     "response": {"id": "resp_ab", "status": "in_progress", "model": "qwen", "output": []}},
    {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
     "item": {"id": "9f1c", "type": "reasoning", "summary": [], "content": []}},
    {"type": "response.reasoning_text.delta", "sequence_number": 2, "output_index": 0,
     "item_id": "9f1c", "content_index": 0, "delta": "hmm"},
    {"type": "response.output_item.added", "sequence_number": 3, "output_index": 1,
     "item": {"id": "7a2e", "type": "message", "role": "assistant", "content": []}},
    {"type": "response.output_text.delta", "sequence_number": 4, "output_index": 1,
     "item_id": "7a2e", "content_index": 0, "delta": "One two"},
    # A length stop, reported inside response.completed.
    {"type": "response.completed", "sequence_number": 5,
     "response": {"id": "resp_ab", "status": "incomplete",
                  "incomplete_details": {"reason": "max_output_tokens"}, "model": "qwen",
                  "usage": {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6},
                  "output": [{"type": "message", "content": [{"type": "output_text",
                                                              "text": "One two"}]}]}},
]  # fmt: skip

LLAMACPP_STREAM = [
    {"type": "response.created", "response": {"id": "resp_x", "status": "in_progress",
                                              "model": "tiny", "output": []}},
    {"type": "response.output_item.added",
     "item": {"id": "msg_x", "type": "message", "role": "assistant", "content": []}},
    {"type": "response.output_text.delta", "item_id": "msg_x", "delta": "Calling"},
    {"type": "response.output_item.added",
     "item": {"type": "function_call", "call_id": "fc_aa", "name": "f", "arguments": ""}},
    {"type": "response.output_item.added",
     "item": {"type": "function_call", "call_id": "fc_bb", "name": "g", "arguments": ""}},
    # Argument deltas name their item by call_id, interleaved.
    {"type": "response.function_call_arguments.delta", "item_id": "fc_aa", "delta": '{"x":'},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_bb", "delta": '{"y":'},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_aa", "delta": "1}"},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_bb", "delta": "2}"},
    {"type": "response.completed", "response": {"id": "resp_x", "status": "completed",
                                                "model": "tiny", "output": [],
                                                "usage": {"input_tokens": 4, "output_tokens": 4,
                                                          "input_tokens_details":
                                                              {"cached_tokens": 2}}}},
]  # fmt: skip


def _split_everywhere(data: bytes) -> list[list[GenerationDelta]]:
    return [_run(data[:at], data[at:]) for at in range(len(data) + 1)]


def _merged(deltas: list[GenerationDelta]) -> tuple[Any, ...]:
    return (
        _text(deltas),
        "".join(d.reasoning for d in deltas),
        _calls(deltas),
        _final(deltas).finish_reason,
        _final(deltas).usage,
        [d.model for d in deltas if d.model],
    )


@pytest.mark.parametrize("named", [True, False])
def test_openai_stream_split_at_every_byte(named: bool) -> None:
    data = _stream(OPENAI_STREAM, named=named)
    whole = _run(data)
    assert _text(whole) == "Héllo wörld 🌍"  # the joined deltas equal the completed text
    assert "".join(d.reasoning for d in whole) == "Thinking."
    assert _calls(whole) == {0: ["call_1", "get_weather", ARGS]}
    assert _final(whole).finish_reason == "tool_calls"
    assert _final(whole).usage == Usage(12, 9, 21, reasoning_tokens=3, cached_tokens=8)
    assert [d.model for d in whole if d.model] == ["gpt-x"]
    for deltas in _split_everywhere(data):
        assert _merged(deltas) == _merged(whole)


def test_vllm_length_stop_inside_completed() -> None:
    data = _stream(VLLM_STREAM)
    whole = _run(data)
    assert (_text(whole), "".join(d.reasoning for d in whole)) == ("One two", "hmm")
    assert _final(whole).finish_reason == "length"  # the status, not the event's name
    for deltas in _split_everywhere(data):
        assert _merged(deltas) == _merged(whole)


def test_llamacpp_calls_by_call_id_without_output_index() -> None:
    data = _stream(LLAMACPP_STREAM, named=False)
    whole = _run(data)
    assert _text(whole) == "Calling"
    assert _calls(whole) == {0: ["fc_aa", "f", '{"x":1}'], 1: ["fc_bb", "g", '{"y":2}']}
    assert _final(whole).finish_reason == "tool_calls"  # it called tools; output was empty
    assert _final(whole).usage == Usage(4, 4, reasoning_tokens=None, cached_tokens=2)
    for deltas in _split_everywhere(data):
        assert _merged(deltas) == _merged(whole)


def _completed(status: str = "completed", **fields: Any) -> dict[str, Any]:
    return {"type": "response.completed", "response": {"status": status, "output": [], **fields}}


@pytest.mark.parametrize("events", [OPENAI_STREAM, VLLM_STREAM, LLAMACPP_STREAM])
def test_one_event_per_read_as_servers_flush(events: list[dict[str, Any]]) -> None:
    for named in (True, False):
        reads = [_sse(event, named=named) for event in events]
        assert _merged(_run(*reads)) == _merged(_run(b"".join(reads)))


def test_the_event_name_stands_in_for_a_missing_type() -> None:
    reads = [
        b": hello\n\n",
        b'event: response.output_text.delta\ndata: {"delta": "hi"}\n\n',
        b'event: response.completed\ndata: {"response": {"status": "completed"}}\n\n',
    ]
    deltas = _run(*reads)
    assert (_text(deltas), _final(deltas).finish_reason) == ("hi", "stop")
    with pytest.raises(errors.BackendHTTPError, match="overloaded") as caught:
        _run(reads[0], reads[1], b'event: error\ndata: {"message": "overloaded"}\n\n')
    assert caught.value.partial == "hi"


def test_correlation_by_output_index_when_no_item_id() -> None:
    events = [
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "function_call", "name": "f"}},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"type": "function_call", "name": "g"}},
        {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "{}"},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "[]"},
        _completed(),
    ]  # fmt: skip
    calls = _calls(_run(_stream(events)))
    assert calls == {0: ["call_0", "f", "{}"], 1: ["call_1", "g", "[]"]}


def test_correlation_falls_back_to_the_last_open_call() -> None:
    events = [
        {"type": "response.output_item.added", "item": {"type": "function_call", "name": "f"}},
        {"type": "response.function_call_arguments.delta", "delta": '{"a":'},
        {"type": "response.function_call_arguments.delta", "item_id": "unknown", "delta": "1}"},
        {"type": "response.output_item.done", "item": {"type": "function_call", "name": "f"}},
        {"type": "response.output_item.added", "item": {"type": "function_call", "name": "g"}},
        {"type": "response.function_call_arguments.delta", "delta": "{}"},
        _completed(),
    ]  # fmt: skip
    calls = _calls(_run(_stream(events)))
    assert calls == {0: ["call_0", "f", '{"a":1}'], 1: ["call_1", "g", "{}"]}


def test_item_id_matches_the_items_id_before_output_index() -> None:
    events = [
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "function_call", "id": "fc_a", "call_id": "c_a", "name": "f"}},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"type": "function_call", "id": "fc_b", "call_id": "c_b", "name": "g"}},
        # A wrong output_index: the item_id decides.
        {"type": "response.function_call_arguments.delta", "item_id": "fc_b", "output_index": 0,
         "delta": "{}"},
        _completed(),
    ]  # fmt: skip
    assert _calls(_run(_stream(events))) == {0: ["c_a", "f", ""], 1: ["c_b", "g", "{}"]}


def test_arguments_only_in_done_events_are_sent_once() -> None:
    events = [
        {"type": "response.output_item.added", "item": {"type": "function_call", "call_id": "c",
                                                         "name": "f"}},
        {"type": "response.function_call_arguments.done", "item_id": "c", "arguments": '{"a":1}'},
        {"type": "response.output_item.done", "item": {"type": "function_call", "call_id": "c",
                                                        "name": "f", "arguments": '{"a":1}'}},
        _completed(),
    ]  # fmt: skip
    assert _calls(_run(_stream(events))) == {0: ["c", "f", '{"a":1}']}


def test_items_only_in_done_or_terminal_events() -> None:
    message = {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}
    done_only = [{"type": "response.output_item.done", "item": message}, _completed()]
    assert _text(_run(_stream(done_only))) == "Hi"
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    end_only = [_completed(output=[message, call], model="m")]
    deltas = _run(_stream(end_only))
    assert (_text(deltas), _calls(deltas), _final(deltas).finish_reason) == (
        "Hi",
        {0: ["c", "f", "{}"]},
        "tool_calls",
    )


def _lp(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}


def _logprobs(deltas: list[GenerationDelta]) -> list[str]:
    return [entry["token"] for d in deltas for entry in (d.logprobs or ())]


def test_logprobs_of_a_whole_answer_in_part_order() -> None:
    parts = [
        {"type": "output_text", "text": "Hi", "logprobs": [_lp("Hi")]},
        {"type": "refusal", "refusal": "no"},
        {"type": "output_text", "text": " there", "logprobs": [_lp(" there")]},
    ]
    answer = wire.parse_responses_response(_response([{"type": "message", "content": parts}]), URL)
    assert [e["token"] for e in answer.logprobs or ()] == ["Hi", " there"]
    empty = [
        {"type": "message", "content": [{"type": "output_text", "text": "Hi", "logprobs": []}]}
    ]
    assert wire.parse_responses_response(_response(empty), URL).logprobs is None


def test_logprobs_in_a_stream_each_entry_once() -> None:
    """On the text deltas (OpenAI); else in the done item; else in the terminal response."""
    message = {
        "type": "message",
        "content": [
            {"type": "output_text", "text": "Hi you", "logprobs": [_lp("Hi"), _lp(" you")]}
        ],
    }

    def delta(text: str, logprobs: list[Any]) -> dict[str, Any]:
        return {"type": "response.output_text.delta", "item_id": "m", "delta": text,
                "logprobs": logprobs}  # fmt: skip

    on_deltas = [delta("Hi", [_lp("Hi")]), delta(" you", [_lp(" you")])]
    done = {"type": "response.output_item.done", "item": message}
    for events in (
        [*on_deltas, done, _completed(output=[message])],
        [delta("Hi", []), delta(" you", []), done, _completed(output=[message])],
        [delta("Hi", []), delta(" you", []), _completed(output=[message])],
        [_completed(output=[message])],
    ):
        deltas = _run(_stream(events))
        assert _text(deltas) == "Hi you"
        assert _logprobs(deltas) == ["Hi", " you"]
    plain = [delta("Hi", []), _completed(output=[])]
    assert all(d.logprobs is None for d in _run(_stream(plain)))


def test_unknown_events_and_missing_fields_are_ignored() -> None:
    events = [
        {"type": "response.brand_new_event", "x": 1},
        {"type": "response.output_item.added"},
        {"type": "response.output_item.added", "item": None},
        {"type": "response.output_text.delta"},
        {"type": "response.output_text.delta", "delta": None},
        {"type": "response.reasoning_text.delta"},
        {"type": "response.function_call_arguments.delta"},
        {"type": "response.output_text.annotation.added", "annotation": {}},
        {"no_type": True},
        {"type": "response.output_text.delta", "delta": "ok"},
        _completed(),
    ]  # fmt: skip
    deltas = _run(_stream(events) + b": keep-alive\n\n")
    assert _text(deltas) == "ok"
    assert _final(deltas).finish_reason == "stop"


def test_events_after_the_terminal_one_are_not_read() -> None:
    data = _stream([{"type": "response.output_text.delta", "delta": "a"}, _completed()])
    parser = ResponsesStreamParser(URL)
    deltas = parser.feed(data + _sse({"type": "response.output_text.delta", "delta": "late"}))
    assert parser.done
    assert _text(deltas) == "a"


def test_response_incomplete_content_filter() -> None:
    end = {"type": "response.incomplete",
           "response": {"status": "incomplete", "incomplete_details": {"reason": "content_filter"},
                        "output": []}}  # fmt: skip
    deltas = _run(_stream([{"type": "response.output_text.delta", "delta": "x"}, end]))
    assert _final(deltas).finish_reason == "content_filter"


def _feed_all(
    parser: ResponsesStreamParser, pieces: list[bytes], delivered: list[GenerationDelta]
) -> None:
    for piece in pieces:
        delivered.extend(parser.feed(piece))
    parser.finish()


TEXT = {"type": "response.output_text.delta", "item_id": "m", "delta": "partial text"}


@pytest.mark.parametrize(
    ("tail", "cls"),
    [
        # OpenAI's error event
        (_sse({"type": "error", "code": "server_error", "message": "boom", "param": None}),
         errors.BackendHTTPError),
        (_sse({"type": "error", "code": "rate_limit_exceeded", "message": "Rate limit reached"}),
         errors.RateLimitError),
        # response.failed, read from the response
        (_sse({"type": "response.failed", "response": {"status": "failed", "output": [],
               "error": {"code": "server_error", "message": "engine died"}}}),
         errors.BackendHTTPError),
        # llama.cpp: a bare data line with a top-level error, and a bare `error:` line
        (b'data: {"error": {"code": 500, "message": "boom", "type": "server_error"}}\n\n',
         errors.BackendHTTPError),
        (b'error: {"code": 500, "message": "boom", "type": "server_error"}\n\n',
         errors.BackendHTTPError),
        # vLLM's error object, and an `event: error` block without data
        (b'data: {"object": "error", "message": "maximum context length", "code": 400}\n\n',
         errors.ContextLengthExceededError),
        (b"event: error\ndata: \n\n", errors.BackendHTTPError),
        (b"event: error\n\n", errors.BackendHTTPError),
        # any event with a top-level error, whatever its name
        (_sse({"type": "response.output_text.delta", "delta": "x", "error": {"message": "no"}}),
         errors.BackendHTTPError),
    ],
)  # fmt: skip
def test_error_shapes_raise_typed_with_partial(tail: bytes, cls: type[Exception]) -> None:
    data = _sse(TEXT) + tail
    for at in range(len(data) + 1):
        parser = ResponsesStreamParser(URL)
        delivered: list[GenerationDelta] = []
        with pytest.raises(cls) as caught:
            _feed_all(parser, [data[:at], data[at:]], delivered)
        error = caught.value
        assert isinstance(error, errors.MatricError)
        assert error.partial == "partial text"
        undelivered = error.__dict__.get("_matric_undelivered") or []
        assert _text(delivered + undelivered) == "partial text"


def test_a_body_that_ends_before_the_terminal_event_is_truncated() -> None:
    data = _stream(OPENAI_STREAM[:-1])
    with pytest.raises(errors.StreamError, match="truncated") as caught:
        _run(data)
    assert caught.value.partial == "Héllo wörld 🌍"
    with pytest.raises(errors.StreamError, match="truncated"):
        _run(b"")


def test_arguments_for_an_unannounced_call_are_a_stream_error() -> None:
    data = _stream([TEXT, {"type": "response.function_call_arguments.delta", "delta": "{}"}])
    with pytest.raises(errors.StreamError, match="never announced") as caught:
        _run(data)
    assert caught.value.partial == "partial text"


@pytest.mark.parametrize(
    "line",
    [b"data: {broken\n\n", b"data: [1, 2]\n\n", _sse({"type": "response.completed"})],
)
def test_malformed_events_are_stream_errors(line: bytes) -> None:
    with pytest.raises(errors.StreamError):
        _run(_sse(TEXT) + line)


def test_a_surrogate_pair_split_across_deltas_is_joined() -> None:
    events = (
        b'data: {"type":"response.output_text.delta","delta":"smile \\ud83d"}\n\n'
        b'data: {"type":"response.output_text.delta","delta":"\\ude00!"}\n\n'
        b'data: {"type":"response.output_text.delta","delta":"\\ud83d"}\n\n'
    )
    data = events + _sse(_completed())
    for at in range(len(data) + 1):
        deltas = _run(data[:at], data[at:])
        assert _text(deltas) == "smile \U0001f600!\ufffd"
        "".join(d.text for d in deltas).encode()  # valid UTF-8 all through
    with pytest.raises(errors.StreamError) as caught:
        _run(events)
    assert caught.value.partial == "smile \U0001f600!"  # the held half never arrived
