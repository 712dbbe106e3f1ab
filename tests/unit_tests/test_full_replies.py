"""Full replies on the chat and completions APIs: `n`, logprobs, cached and reasoning tokens,
`id` / `system_fingerprint` / `service_tier`, response headers, and vLLM's cut tool call.

Wire mapping only (no I/O); the same fields over `LocalServer` are in
`tests/integration_tests/test_full_replies.py`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from langchain_matric import errors
from langchain_matric._http import redact_response_headers
from langchain_matric.backends import GenerationOptions, GenerationRequest
from langchain_matric.backends import _ollama_wire as ollama_wire
from langchain_matric.backends import _openai_wire as wire
from langchain_matric.backends import _responses_wire as responses_wire
from langchain_matric.backends._types import GenerationDelta

URL = "http://127.0.0.1:1/v1/chat/completions"


def _entry(token: str, value: float) -> dict[str, Any]:
    return {"token": token, "logprob": value, "bytes": list(token.encode()), "top_logprobs": []}


def _request(**options: Any) -> GenerationRequest:
    return GenerationRequest.from_prompt("Hi", options=GenerationOptions(**options))


# -- requests ---------------------------------------------------------------------------


def test_chat_payload_sends_n_and_logprobs_only_when_set() -> None:
    body = wire.chat_payload(_request(), model="m", stream=False)
    assert not {"n", "logprobs", "top_logprobs"} & body.keys()
    body = wire.chat_payload(_request(n=3, logprobs=True, top_logprobs=2), model="m", stream=False)
    assert (body["n"], body["logprobs"], body["top_logprobs"]) == (3, True, 2)
    body = wire.chat_payload(_request(logprobs=False), model="m", stream=False)
    assert body["logprobs"] is False


def test_completion_payload_puts_the_alternatives_count_in_logprobs() -> None:
    def body_of(**options: Any) -> dict[str, Any]:
        request = GenerationRequest(prompt="Hi", options=GenerationOptions(**options))
        return wire.completion_payload(request, model="m", stream=False)

    assert body_of(logprobs=True)["logprobs"] == 0
    assert body_of(logprobs=True, top_logprobs=3)["logprobs"] == 3
    assert "top_logprobs" not in body_of(logprobs=True, top_logprobs=3)
    assert "logprobs" not in body_of(logprobs=False)
    assert body_of(n=2)["n"] == 2


def test_responses_api_refuses_n_clearly() -> None:
    with pytest.raises(errors.ConfigurationError, match="api='chat'"):
        responses_wire.responses_payload(_request(n=2), model="m", stream=False)
    body = responses_wire.responses_payload(_request(n=1), model="m", stream=False)
    assert "n" not in body


def test_responses_api_asks_for_logprobs_through_include() -> None:
    def body_of(**options: Any) -> dict[str, Any]:
        return responses_wire.responses_payload(_request(**options), model="m", stream=True)

    asked = body_of(logprobs=True, top_logprobs=2)
    assert asked["include"] == ["message.output_text.logprobs"]
    assert asked["top_logprobs"] == 2
    assert "logprobs" not in asked
    assert not {"include", "top_logprobs"} & body_of().keys()
    assert not {"include", "top_logprobs"} & body_of(logprobs=False).keys()
    # What the caller includes already is kept, the logprobs entry added once.
    theirs = {"include": ["reasoning.encrypted_content"]}
    assert body_of(logprobs=True, extra=theirs)["include"] == [
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    ]
    both = {"include": ["message.output_text.logprobs"]}
    assert body_of(logprobs=True, extra=both)["include"] == ["message.output_text.logprobs"]
    one = {"include": "reasoning.encrypted_content"}
    assert body_of(logprobs=True, extra=one)["include"] == [
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    ]
    with pytest.raises(errors.ConfigurationError, match="include=7: .* list of strings"):
        body_of(logprobs=True, extra={"include": 7})


def test_ollama_refuses_n_and_sends_logprobs_at_the_top_level() -> None:
    with pytest.raises(errors.ConfigurationError, match="n=2"):
        ollama_wire.chat_payload(_request(n=2), model="m", stream=False)
    body = ollama_wire.chat_payload(
        _request(logprobs=True, top_logprobs=2), model="m", stream=False
    )
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    assert "logprobs" not in body.get("options", {})


# -- whole answers ----------------------------------------------------------------------


def _chat_answer(**fields: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": "Hi there"}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    return {
        "id": "chatcmpl-7",
        "object": "chat.completion",
        "model": "m",
        "system_fingerprint": "fp_1",
        "service_tier": "default",
        "choices": [choice],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 8},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
        **fields,
    }


def test_whole_chat_answer_maps_every_field() -> None:
    obj = _chat_answer()
    entries = [_entry("Hi", -0.1), _entry(" there", -0.2)]
    obj["choices"][0]["logprobs"] = {"content": entries, "refusal": None}
    generation = wire.parse_chat_response(obj, URL)
    assert generation.usage is not None
    assert (generation.usage.cached_tokens, generation.usage.reasoning_tokens) == (8, 1)
    assert generation.logprobs == entries
    assert generation.metadata == {
        "id": "chatcmpl-7",
        "system_fingerprint": "fp_1",
        "service_tier": "default",
    }
    assert generation.alternatives == []


def test_whole_chat_answer_without_the_fields_maps_none() -> None:
    obj = _chat_answer()
    for key in ("id", "system_fingerprint", "service_tier"):
        del obj[key]
    obj["usage"] = {"prompt_tokens": 1, "completion_tokens": 1}
    generation = wire.parse_chat_response(obj, URL)
    assert generation.metadata is None
    assert generation.logprobs is None
    assert generation.usage is not None
    assert generation.usage.cached_tokens is None


def test_n_choices_become_alternatives_in_index_order() -> None:
    obj = _chat_answer()
    first = obj["choices"][0]
    obj["choices"] = [
        {**first, "index": 2, "message": {"role": "assistant", "content": "C"}},
        first,
        {**first, "index": 1, "message": {"role": "assistant", "content": "B"}},
    ]
    generation = wire.parse_chat_response(obj, URL)
    assert [g.text for g in (generation, *generation.alternatives)] == ["Hi there", "B", "C"]
    assert all(g.usage is generation.usage for g in generation.alternatives)
    assert generation.alternatives[0].metadata == generation.metadata


def test_completion_logprobs_become_chat_entries() -> None:
    obj = {
        "id": "cmpl-1",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "text": "Hi you",
                "finish_reason": "stop",
                "logprobs": {
                    "tokens": ["Hi", " you"],
                    "token_logprobs": [-0.5, -1.0],
                    "top_logprobs": [{"Hi": -0.5, "Yo": -2.0}, {" you": -1.0}],
                    "text_offset": [0, 2],
                },
            },
            {"index": 1, "text": "Yo", "finish_reason": "stop", "logprobs": None},
        ],
    }
    generation = wire.parse_completion_response(obj, URL)
    assert generation.logprobs is not None
    assert [e["token"] for e in generation.logprobs] == ["Hi", " you"]
    assert generation.logprobs[0]["top_logprobs"][1] == {
        "token": "Yo",
        "logprob": -2.0,
        "bytes": None,
    }
    assert [g.text for g in generation.alternatives] == ["Yo"]
    assert generation.metadata == {"id": "cmpl-1"}


def test_ollama_logprobs_pass_through() -> None:
    entries = [_entry("Hi", -0.1)]
    obj = {"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": True,
           "done_reason": "stop", "logprobs": entries}  # fmt: skip
    assert ollama_wire.parse_chat_response(obj).logprobs == entries


# -- vLLM's cut tool call (vllm#47963) --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ('{"city": "Os', True),
        ('{"city": "Oslo"', True),
        ('{"a": [1, 2', True),
        ('{"a": "}\\"', True),
        ("", False),
        ('{"city": "Oslo"}', False),
        ('{"a": "{[\\""}', False),
        ("not json at all", False),
    ],
)
def test_unterminated_json(text: str, cut: bool) -> None:
    assert wire.unterminated_json(text) is cut


def _cut_call_answer(arguments: str, finish: str = "tool_calls") -> dict[str, Any]:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": arguments}}  # fmt: skip
    obj = _chat_answer()
    obj["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
    obj["choices"][0]["finish_reason"] = finish
    return obj


def test_a_cut_tool_call_reported_as_tool_calls_is_a_length_stop() -> None:
    generation = wire.parse_chat_response(_cut_call_answer('{"city": "Os'), URL)
    assert generation.finish_reason == "length"
    assert generation.tool_calls[0].arguments == '{"city": "Os'  # kept as sent
    whole = wire.parse_chat_response(_cut_call_answer('{"city": "Oslo"}'), URL)
    assert whole.finish_reason == "tool_calls"
    # complete but invalid JSON is not a cut: the server's finish reason stands
    bad = wire.parse_chat_response(_cut_call_answer('{"city": Oslo}'), URL)
    assert bad.finish_reason == "tool_calls"


# -- streams ----------------------------------------------------------------------------


def _chunk(delta: dict[str, Any], *, finish: str | None = None, logprobs: Any = None) -> bytes:
    obj = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "model": "m",
        "system_fingerprint": "fp_2",
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _usage_chunk(**usage: Any) -> bytes:
    obj = {"id": "chatcmpl-9", "model": "m", "service_tier": "flex", "choices": [],
           "usage": {"prompt_tokens": 5, "completion_tokens": 2, **usage}}  # fmt: skip
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _parse(body: bytes) -> list[GenerationDelta]:
    parser = wire.OpenAIStreamParser(URL, max_line_size=1 << 20)
    deltas = parser.feed(body)
    return deltas + parser.finish()


def test_stream_logprobs_ride_on_their_own_deltas_once() -> None:
    body = (
        _chunk({"role": "assistant", "content": ""})
        + _chunk({"content": "Hi"}, logprobs={"content": [_entry("Hi", -0.1)]})
        + _chunk({"content": " you"}, logprobs={"content": [_entry(" you", -0.2)]})
        + _chunk({}, finish="stop")
        + _usage_chunk(prompt_tokens_details={"cached_tokens": 4})
        + b"data: [DONE]\n\n"
    )
    deltas = _parse(body)
    entries = [e for d in deltas for e in (d.logprobs or ())]
    assert [e["token"] for e in entries] == ["Hi", " you"]
    last = deltas[-1]
    assert last.logprobs is None
    assert last.usage is not None
    assert last.usage.cached_tokens == 4
    assert last.metadata == {
        "id": "chatcmpl-9",
        "system_fingerprint": "fp_2",
        "service_tier": "flex",
    }
    assert all(d.metadata is None for d in deltas[:-1])


def test_stream_without_logprobs_carries_none() -> None:
    body = _chunk({"content": "Hi"}) + _chunk({}, finish="stop") + b"data: [DONE]\n\n"
    assert all(d.logprobs is None for d in _parse(body))


def test_stream_cut_tool_call_is_a_length_stop() -> None:
    def call(arguments: str, first: bool) -> dict[str, Any]:
        piece: dict[str, Any] = {"index": 0, "function": {"arguments": arguments}}
        if first:
            piece.update(id="call_1", type="function")
            piece["function"]["name"] = "get_weather"
        return {"tool_calls": [piece]}

    body = (
        _chunk(call("", True))
        + _chunk(call('{"city": ', False))
        + _chunk(call('"Os', False))
        + _chunk({}, finish="tool_calls")
        + b"data: [DONE]\n\n"
    )
    assert _parse(body)[-1].finish_reason == "length"
    whole = body.replace(b'\\"Os"', b'\\"Oslo\\"}"')
    assert _parse(whole)[-1].finish_reason == "tool_calls"


# -- headers ----------------------------------------------------------------------------


def test_response_headers_are_scrubbed_but_rate_limits_stay() -> None:
    shown = redact_response_headers(
        {
            "Set-Cookie": "session=abc",
            "Authorization": "Bearer sk-1",
            "api-key": "k",
            "x-ratelimit-remaining-tokens": "99",
            "x-request-id": "req_1",
        }
    )
    assert shown == {
        "set-cookie": "***",
        "authorization": "***",
        "api-key": "***",
        "x-ratelimit-remaining-tokens": "99",
        "x-request-id": "req_1",
    }
