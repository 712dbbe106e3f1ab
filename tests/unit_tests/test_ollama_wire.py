"""The pure Ollama wire layer: payloads, whole responses, the NDJSON stream parser."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from langchain_matric.backends._ollama_wire import (
    TOP_LEVEL_FIELDS,
    OllamaStreamParser,
    chat_payload,
    embed_payload,
    error_from_message,
    generate_payload,
    parse_chat_response,
    parse_embed_response,
    parse_generate_response,
    too_long_input_hint,
    whole_to_deltas,
)
from langchain_matric.backends._types import (
    ChatMessage,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from langchain_matric.errors import (
    BackendHTTPError,
    ConfigurationError,
    ContextLengthExceededError,
    EmbeddingDimensionError,
    EmbeddingValueError,
    ModelNotFoundError,
    StreamError,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _chat(request: GenerationRequest, **kw: object) -> dict:
    return chat_payload(request, model="llama3.2", stream=kw.pop("stream", False), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# chat_payload
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_stream_is_always_explicit(stream: bool) -> None:
    body = chat_payload(GenerationRequest.from_prompt("hi"), model="m", stream=stream)
    assert body["stream"] is stream
    body = generate_payload(GenerationRequest(prompt="hi"), model="m", stream=stream)
    assert body["stream"] is stream


def test_minimal_chat_payload() -> None:
    body = _chat(GenerationRequest.from_prompt("Hello", system="Be brief"))
    assert body == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Hello"},
        ],
        "stream": False,
        "truncate": False,
        "shift": False,
    }


def test_every_option_maps_into_options() -> None:
    options = GenerationOptions(temperature=0.2, max_tokens=64, top_p=0.9, stop=["\n\n"], seed=7)
    body = _chat(GenerationRequest.from_prompt("x", options=options), num_ctx=8192)
    assert body["options"] == {
        "num_predict": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 7,
        "num_ctx": 8192,
    }


def test_zero_values_are_sent() -> None:
    options = GenerationOptions(temperature=0.0, seed=0)
    body = _chat(GenerationRequest.from_prompt("x", options=options))
    assert body["options"] == {"temperature": 0.0, "seed": 0}


def test_extra_splits_top_level_and_options() -> None:
    extra = {
        "top_k": 20,
        "repeat_penalty": 1.1,
        "keep_alive": "10m",
        "format": "json",
        "think": "high",
        "options": {"num_gpu": 1, "temperature": 0.5},
    }
    options = GenerationOptions(temperature=0.1, extra=extra)
    body = _chat(GenerationRequest.from_prompt("x", options=options), keep_alive="1m", think=True)
    assert body["options"] == {"temperature": 0.5, "top_k": 20, "repeat_penalty": 1.1, "num_gpu": 1}
    assert body["keep_alive"] == "10m"  # the request's extra wins over the backend default
    assert body["format"] == "json"
    assert body["think"] == "high"
    assert {"keep_alive", "format", "think", "truncate", "shift"} <= TOP_LEVEL_FIELDS


@pytest.mark.parametrize("key", ["model", "messages", "stream", "tools", "prompt", "images"])
def test_extra_reserved_keys_raise(key: str) -> None:
    options = GenerationOptions(extra={key: 1})
    with pytest.raises(ConfigurationError, match=key):
        _chat(GenerationRequest.from_prompt("x", options=options))


def test_extra_options_must_be_a_mapping() -> None:
    options = GenerationOptions(extra={"options": [1]})
    with pytest.raises(ConfigurationError, match="mapping"):
        _chat(GenerationRequest.from_prompt("x", options=options))


def test_keep_alive_think_truncate() -> None:
    req = GenerationRequest.from_prompt("x")
    body = _chat(req, keep_alive=-1, think="low", truncate=True)
    assert body["keep_alive"] == -1
    assert body["think"] == "low"
    assert body["truncate"] is True
    assert body["shift"] is True
    assert _chat(req, think=False)["think"] is False
    assert "think" not in _chat(req)
    assert "keep_alive" not in _chat(req)


@pytest.mark.parametrize("think", ["max", 1, "true"])
def test_bad_think_raises(think: object) -> None:
    with pytest.raises(ConfigurationError, match="think"):
        _chat(GenerationRequest.from_prompt("x"), think=think)
    options = GenerationOptions(extra={"think": think})
    with pytest.raises(ConfigurationError, match="think"):
        _chat(GenerationRequest.from_prompt("x", options=options))


def test_request_model_overrides() -> None:
    req = GenerationRequest.from_prompt("x")
    req.model = "qwen3"
    assert _chat(req)["model"] == "qwen3"
    gen = GenerationRequest(prompt="x", model="qwen3")
    assert generate_payload(gen, model="m", stream=False)["model"] == "qwen3"


def test_tool_conversation() -> None:
    messages = [
        ChatMessage("user", "Weather in Oslo and Rome?"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=[
                ToolCall("call_a", "get_weather", '{"city": "Oslo"}'),
                ToolCall("call_b", "get_weather", ""),
            ],
        ),
        ChatMessage("tool", "5 C", tool_call_id="call_a"),
        ChatMessage("tool", "20 C", tool_call_id="call_b", name="weather_tool"),
    ]
    body = _chat(GenerationRequest(messages=messages, tools=[WEATHER_TOOL]))
    assert body["tools"] == [WEATHER_TOOL]
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}, "id": "call_a"},
            {"function": {"name": "get_weather", "arguments": {}}, "id": "call_b"},
        ],
    }
    assert body["messages"][2] == {
        "role": "tool",
        "content": "5 C",
        "tool_name": "get_weather",  # looked up from the assistant's call
        "tool_call_id": "call_a",
    }
    assert body["messages"][3]["tool_name"] == "weather_tool"  # an explicit name wins


@pytest.mark.parametrize("arguments", ['{"city": "Oslo"', "[1, 2]", '"text"'])
def test_bad_tool_arguments_name_the_call(arguments: str) -> None:
    messages = [ChatMessage("assistant", "", tool_calls=[ToolCall("call_9", "lookup", arguments)])]
    with pytest.raises(ConfigurationError, match=r"'lookup' \(id 'call_9'\).*JSON object"):
        _chat(GenerationRequest(messages=messages))


def test_images() -> None:
    png = base64.b64encode(b"\x89PNG...").decode()
    images = [f"data:image/png;base64,{png}", "data:text/plain,hi%20there", png]
    body = _chat(GenerationRequest(messages=[ChatMessage("user", "what?", images=images)]))
    assert body["messages"][0]["images"] == [png, base64.b64encode(b"hi there").decode(), png]


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "http://x/y.jpg"])
def test_http_image_url_raises(url: str) -> None:
    req = GenerationRequest(messages=[ChatMessage("user", "what?", images=[url])])
    with pytest.raises(ConfigurationError, match="only inline images"):
        _chat(req)


def test_malformed_data_url_raises() -> None:
    req = GenerationRequest(messages=[ChatMessage("user", "?", images=["data:image/png"])])
    with pytest.raises(ConfigurationError, match="malformed data URL"):
        _chat(req)


@pytest.mark.parametrize("choice", [None, "auto"])
def test_auto_tool_choice_is_omitted(choice: str | None) -> None:
    body = _chat(_tools(choice))
    assert body["tools"] == [WEATHER_TOOL]
    assert "tool_choice" not in body


def test_none_tool_choice_drops_tools() -> None:
    body = _chat(_tools("none"))
    assert "tools" not in body
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    "choice",
    ["required", "any", "get_weather", {"type": "function", "function": {"name": "get_weather"}}],
)
def test_forced_tool_choice_raises(choice: object) -> None:
    with pytest.raises(ConfigurationError, match=r"no `tool_choice`.*/v1"):
        _chat(_tools(choice))


def _tools(choice: object) -> GenerationRequest:
    return GenerationRequest(
        messages=[ChatMessage("user", "x")],
        tools=[WEATHER_TOOL],
        tool_choice=choice,  # type: ignore[arg-type]
    )


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}, SCHEMA),
        ({"type": "json_object"}, "json"),
        (SCHEMA, SCHEMA),
    ],
)
def test_response_format_maps_to_format(response_format: dict, expected: object) -> None:
    req = GenerationRequest(messages=[ChatMessage("user", "x")], response_format=response_format)
    assert _chat(req)["format"] == expected


def test_text_response_format_sends_nothing() -> None:
    req = GenerationRequest(messages=[ChatMessage("user", "x")], response_format={"type": "text"})
    assert "format" not in _chat(req)


@pytest.mark.parametrize(
    "response_format",
    [{"type": "json_schema", "json_schema": {"name": "x"}}, {"type": "xml"}],
)
def test_bad_response_format_raises(response_format: dict) -> None:
    req = GenerationRequest(messages=[ChatMessage("user", "x")], response_format=response_format)
    with pytest.raises(ConfigurationError, match="response_format"):
        _chat(req)


# ---------------------------------------------------------------------------------------
# generate_payload, embed_payload
# ---------------------------------------------------------------------------------------


def test_generate_payload() -> None:
    png = base64.b64encode(b"img").decode()
    req = GenerationRequest(
        prompt="Once upon",
        messages=[ChatMessage("system", "You tell stories"), ChatMessage("user", "", images=[png])],
        options=GenerationOptions(max_tokens=5, extra={"raw": True}),
        response_format={"type": "json_object"},
    )
    body = generate_payload(req, model="m", stream=False, keep_alive="5m", think=True, num_ctx=4096)
    assert body == {
        "model": "m",
        "prompt": "Once upon",
        "system": "You tell stories",
        "images": [png],
        "stream": False,
        "options": {"num_predict": 5, "num_ctx": 4096},
        "format": "json",
        "keep_alive": "5m",
        "think": True,
        "truncate": False,
        "shift": False,
        "raw": True,
    }


def test_generate_payload_refuses_tools_and_messages_only() -> None:
    with pytest.raises(ConfigurationError, match="no tools"):
        generate_payload(
            GenerationRequest(prompt="x", tools=[WEATHER_TOOL]), model="m", stream=False
        )
    with pytest.raises(ConfigurationError, match="tool_choice"):
        generate_payload(
            GenerationRequest(prompt="x", tool_choice="required"), model="m", stream=True
        )
    with pytest.raises(ConfigurationError, match="prompt"):
        generate_payload(GenerationRequest.from_prompt("x"), model="m", stream=True)


def test_embed_payload() -> None:
    assert embed_payload(("a", "b"), model="e") == {
        "model": "e",
        "input": ["a", "b"],
        "truncate": False,
    }
    body = embed_payload(["a"], model="e", truncate=True, dimensions=256, keep_alive="1h")
    assert body == {
        "model": "e",
        "input": ["a"],
        "truncate": True,
        "dimensions": 256,
        "keep_alive": "1h",
    }


# ---------------------------------------------------------------------------------------
# Whole responses
# ---------------------------------------------------------------------------------------

CHAT_ANSWER = {
    "model": "gpt-oss:20b",
    "created_at": "2025-08-15T22:55:08Z",
    "message": {"role": "assistant", "content": "Hi there", "thinking": "User greets."},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 12,
    "eval_count": 4,
}


def test_parse_chat_response() -> None:
    gen = parse_chat_response(CHAT_ANSWER)
    assert gen.text == "Hi there"
    assert gen.reasoning == "User greets."
    assert gen.finish_reason == "stop"
    assert gen.usage == Usage(12, 4)
    assert gen.model == "gpt-oss:20b"
    assert gen.tool_calls == []
    assert gen.raw is CHAT_ANSWER


def test_parse_chat_response_tool_calls() -> None:
    obj = {
        "model": "m",
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_srv",
                    "function": {"name": "get_weather", "arguments": {"city": "Ås"}},
                },
                {"function": {"index": 1, "name": "get_time", "arguments": {}}},
                {"function": {"name": "noop"}},
            ],
        },
        "done": True,
        "done_reason": "stop",
    }
    gen = parse_chat_response(obj)
    assert gen.finish_reason == "tool_calls"
    assert [c.name for c in gen.tool_calls] == ["get_weather", "get_time", "noop"]
    assert gen.tool_calls[0].id == "call_srv"
    assert json.loads(gen.tool_calls[0].arguments) == {"city": "Ås"}
    assert gen.tool_calls[1].arguments == "{}"
    assert gen.tool_calls[2].arguments == "{}"
    made = [gen.tool_calls[1].id, gen.tool_calls[2].id]
    assert all(i.startswith("call_") for i in made)
    assert len(set(made)) == 2
    assert gen.usage == Usage(0, 0)  # missing counts are 0
    assert gen.reasoning is None


def test_malformed_tool_call_raises() -> None:
    obj = {"message": {"content": "", "tool_calls": [{"function": {}}]}, "done": True}
    with pytest.raises(StreamError, match="malformed tool call"):
        parse_chat_response(obj)


@pytest.mark.parametrize(
    ("reason", "expected"), [("length", "length"), ("load", "load"), (None, "stop")]
)
def test_done_reason(reason: str | None, expected: str) -> None:
    obj = {"message": {"content": "x"}, "done": True, "done_reason": reason}
    assert parse_chat_response(obj).finish_reason == expected


def test_parse_generate_response() -> None:
    obj = {
        "model": "m",
        "response": "4",
        "thinking": "2+2",
        "done": True,
        "done_reason": "length",
        "prompt_eval_count": 3,
        "eval_count": 1,
        "context": [1, 2, 3],
    }
    gen = parse_generate_response(obj)
    assert (gen.text, gen.reasoning, gen.finish_reason) == ("4", "2+2", "length")
    assert gen.usage == Usage(3, 1)


def test_error_in_whole_answer() -> None:
    with pytest.raises(BackendHTTPError, match=r"in its answer.*boom") as info:
        parse_chat_response({"error": "boom"})
    assert type(info.value) is BackendHTTPError
    assert info.value.status == 200
    with pytest.raises(ContextLengthExceededError):
        parse_chat_response({"error": "the input length exceeds the context length"})


def test_whole_to_deltas() -> None:
    obj = dict(CHAT_ANSWER)
    obj["message"] = {
        "content": "ok",
        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}],
    }
    (delta,) = whole_to_deltas(obj)
    assert delta.text == "ok"
    assert delta.finish_reason == "tool_calls"
    assert delta.usage == Usage(12, 4)
    assert delta.model == "gpt-oss:20b"
    assert delta.tool_call_deltas == (ToolCallDelta(0, "c1", "f", '{"a": 1}'),)
    with pytest.raises(BackendHTTPError, match="JSON list"):
        whole_to_deltas([1])


def test_parse_embed_response() -> None:
    obj = {"model": "e", "embeddings": [[0.5, 1, -2.0], [0, 0, 0.25]], "prompt_eval_count": 4}
    vectors = parse_embed_response(obj, 2, 3)
    assert vectors == [[0.5, 1.0, -2.0], [0.0, 0.0, 0.25]]
    assert all(type(x) is float for v in vectors for x in v)
    assert parse_embed_response(obj, 2) == vectors


@pytest.mark.parametrize(
    ("obj", "count", "dim", "match"),
    [
        ({"embeddings": [[1.0]]}, 2, None, "1 embeddings for 2"),
        ({"embeddings": [[1.0, 2.0]]}, 1, 3, "2 dimensions, expected 3"),
        ({"embeddings": [[1.0, 2.0], [1.0]]}, 2, None, "different sizes"),
        ({"embeddings": [[]]}, 1, None, "non-empty"),
    ],
)
def test_parse_embed_response_mismatch(obj: dict, count: int, dim: int | None, match: str) -> None:
    with pytest.raises(EmbeddingDimensionError, match=match):
        parse_embed_response(obj, count, dim)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(float("nan"), "NaN"), (float("-inf"), "-Infinity"), ("0.5", '"0.5"'), (None, "null")],
)
def test_parse_embed_response_refuses_what_is_not_a_finite_number(value, shown) -> None:
    """A string or null used to raise a raw ValueError / TypeError; NaN came back silently."""
    obj = {"embeddings": [[0.5, 1.0], [value, 1.0]]}
    match = f"embedding 1 from Ollama .* holds {shown} "
    with pytest.raises(EmbeddingValueError, match=match) as info:
        parse_embed_response(obj, 2)
    assert info.value.index == 1 and info.value.status == 200 and not info.value.is_retryable


@pytest.mark.parametrize("obj", [{"embedding": [1.0]}, [1.0], None])
def test_parse_embed_response_malformed(obj: object) -> None:
    with pytest.raises(BackendHTTPError, match="no `embeddings`"):
        parse_embed_response(obj, 1)


def test_parse_embed_response_error_object() -> None:
    with pytest.raises(ContextLengthExceededError):
        parse_embed_response({"error": "input exceeds maximum context length"}, 1)


def test_too_long_input_hint() -> None:
    msg = "input exceeds maximum context length"
    assert too_long_input_hint(msg, ["x" * 5000]) == (
        0,
        "the input (5,000 characters) is too long for the model",
    )
    index, hint = too_long_input_hint(msg, ["a", "b" * 10, "c"])
    assert index == 1
    assert "likely" in hint
    assert too_long_input_hint("input 2 is too long", ["a", "b" * 10, "c"])[0] == 2
    assert too_long_input_hint(msg, []) == (None, "")


# ---------------------------------------------------------------------------------------
# The stream parser
# ---------------------------------------------------------------------------------------


def _ndjson(*objs: dict) -> bytes:
    return b"".join(json.dumps(o, ensure_ascii=False).encode() + b"\n" for o in objs)


def _line(
    content: str = "", thinking: str = "", tool_calls: list | None = None, **extra: object
) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"model": "gpt-oss:20b", "created_at": "t", "message": message, "done": False, **extra}


THINKING_STREAM = _ndjson(
    _line(),
    _line(thinking="Need"),
    _line(thinking=" to ☃ think"),
    _line("Hé"),
    _line("llo — wörld"),
    _line(
        "",
        done=True,
        done_reason="stop",
        prompt_eval_count=20,
        eval_count=6,
        total_duration=123,
    ),
)

TOOL_STREAM = _ndjson(
    _line(thinking="call tools"),
    _line(
        tool_calls=[
            {"id": "call_x", "function": {"index": 0, "name": "a", "arguments": {"q": "ü"}}},
            {"function": {"index": 1, "name": "b", "arguments": {}}},
        ]
    ),
    _line(tool_calls=[{"id": "call_z", "function": {"index": 0, "name": "c", "arguments": {}}}]),
    {"model": "gpt-oss:20b", "message": {"content": ""}, "done": True, "done_reason": "stop"},
)

GENERATE_STREAM = _ndjson(
    {"model": "m", "response": "", "thinking": "hm", "done": False},
    {"model": "m", "response": "4", "done": False},
    {"model": "m", "response": "", "done": True, "done_reason": "length", "eval_count": 1},
)


def _run(chunks: list[bytes], **kw: object) -> list[GenerationDelta]:
    parser = OllamaStreamParser(**kw)  # type: ignore[arg-type]
    out: list[GenerationDelta] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.finish()
    assert parser.done
    return out


def _stable(deltas: list[GenerationDelta]) -> list[GenerationDelta]:
    """Blank the ids the parser made up (random), so two runs compare equal."""
    for delta in deltas:
        delta.tool_call_deltas = tuple(
            replace(c, id="made")
            if c.id and not c.id.startswith("call_x") and c.id != "call_z"
            else c
            for c in delta.tool_call_deltas
        )
    return deltas


def test_thinking_stream() -> None:
    deltas = _run([THINKING_STREAM])
    assert [(d.text, d.reasoning) for d in deltas] == [
        ("", "Need"),
        ("", " to ☃ think"),
        ("Hé", ""),
        ("llo — wörld", ""),
        ("", ""),
    ]
    assert deltas[0].model == "gpt-oss:20b"
    assert all(d.model is None for d in deltas[1:])
    assert [d.finish_reason for d in deltas] == [None] * 4 + ["stop"]
    assert [d.usage for d in deltas] == [None] * 4 + [Usage(20, 6)]


@pytest.mark.parametrize("stream", [THINKING_STREAM, TOOL_STREAM, GENERATE_STREAM])
def test_any_split_gives_the_same_deltas(stream: bytes) -> None:
    whole = _stable(_run([stream]))
    for cut in range(len(stream) + 1):
        assert _stable(_run([stream[:cut], stream[cut:]])) == whole, cut
    assert _stable(_run([stream[i : i + 1] for i in range(len(stream))])) == whole
    for size in (2, 3, 7):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert _stable(_run(chunks)) == whole


def test_tool_call_stream() -> None:
    deltas = _run([TOOL_STREAM])
    calls = [c for d in deltas for c in d.tool_call_deltas]
    assert [c.index for c in calls] == [0, 1, 2]
    assert [c.name for c in calls] == ["a", "b", "c"]
    assert calls[0].id == "call_x"
    assert calls[2].id == "call_z"
    assert calls[1].id is not None
    assert calls[1].id.startswith("call_")
    assert json.loads(calls[0].arguments) == {"q": "ü"}
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage == Usage(0, 0)


def test_generate_stream() -> None:
    deltas = _run([GENERATE_STREAM])
    assert [(d.text, d.reasoning) for d in deltas] == [("", "hm"), ("4", ""), ("", "")]
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage == Usage(0, 1)


def test_model_falls_back_to_requested() -> None:
    stream = b'{"message":{"content":"a"},"done":false}\n{"done":true}\n'
    deltas = _run([stream], model="llama3.2")
    assert deltas[0].model == "llama3.2"
    assert deltas[-1].finish_reason == "stop"


def test_done_line_carrying_text_and_no_newline() -> None:
    stream = b'{"model":"m","message":{"content":"all"},"done":true,"done_reason":"stop"}'
    parser = OllamaStreamParser()
    assert parser.feed(stream) == []
    (delta,) = parser.finish()
    assert (delta.text, delta.model, delta.finish_reason) == ("all", "m", "stop")
    assert delta.usage == Usage()


def test_data_after_done_is_ignored() -> None:
    parser = OllamaStreamParser()
    deltas = parser.feed(_ndjson(_line("a", done=True), _line("ignored")))
    assert [d.text for d in deltas] == ["a"]
    assert parser.done
    assert parser.feed(b'{"message":{"content":"more"}}\n') == []
    assert parser.finish() == []
    assert parser.partial == "a"


def test_end_before_done_is_a_stream_error() -> None:
    parser = OllamaStreamParser(url="http://127.0.0.1:1/api/chat")
    assert [d.text for d in parser.feed(_ndjson(_line("Hel"), _line("lo")))] == ["Hel", "lo"]
    with pytest.raises(StreamError, match="stream ended before done: true") as info:
        parser.finish()
    assert info.value.partial == "Hello"
    assert "127.0.0.1:1/api/chat" in str(info.value)


def test_empty_body_is_a_stream_error() -> None:
    with pytest.raises(StreamError, match="before done: true") as info:
        OllamaStreamParser().finish()
    assert info.value.partial == ""


def test_error_line_raises_stream_error_with_partial() -> None:
    parser = OllamaStreamParser()
    stream = _ndjson(_line("par"), _line("tial"), {"error": "an unexpected runner crash"})
    with pytest.raises(StreamError, match=r"mid-stream.*runner crash") as info:
        parser.feed(stream)
    assert type(info.value) is StreamError
    assert info.value.partial == "partial"


def test_error_line_context_overflow() -> None:
    parser = OllamaStreamParser(url="http://h/api/chat")
    parser.feed(_ndjson(_line("x")))
    with pytest.raises(ContextLengthExceededError) as info:
        parser.feed(b'{"error":"the input length exceeds the context length"}\n')
    assert info.value.status == 200
    assert info.value.partial == "x"
    assert "num_ctx" in str(info.value)
    assert "http://h/api/chat" in str(info.value)


def test_error_line_model_not_found() -> None:
    parser = OllamaStreamParser(model="llama9")
    with pytest.raises(ModelNotFoundError, match="llama9") as info:
        parser.feed(b'{"error":"model \\"llama9\\" not found, try pulling it first"}\n')
    assert info.value.status == 200


def test_error_with_nested_message() -> None:
    err = error_from_message("boom", partial="p", stream=False)
    assert type(err) is BackendHTTPError
    assert err.partial == "p"
    parser = OllamaStreamParser()
    with pytest.raises(StreamError, match="disk full"):
        parser.feed(b'{"error":{"message":"disk full"}}\n')


def test_invalid_json_line_carries_partial() -> None:
    parser = OllamaStreamParser()
    parser.feed(_ndjson(_line("ok")))
    with pytest.raises(StreamError) as info:
        parser.feed(b"{not json}\n")
    assert info.value.partial == "ok"
    parser = OllamaStreamParser()
    with pytest.raises(StreamError) as info:
        parser.feed(_ndjson(_line("same"), _line(" read")) + b"{not json}\n")
    assert info.value.partial == "same read"
    parser = OllamaStreamParser()
    parser.feed(_ndjson(_line("ok")) + b'{"trunc')
    with pytest.raises(StreamError) as info:
        parser.finish()
    assert info.value.partial == "ok"


def test_usage_and_finish_exactly_once() -> None:
    for stream in (THINKING_STREAM, TOOL_STREAM, GENERATE_STREAM):
        deltas = _run([stream[i : i + 5] for i in range(0, len(stream), 5)])
        assert sum(d.usage is not None for d in deltas) == 1
        assert sum(d.finish_reason is not None for d in deltas) == 1
        assert sum(d.model is not None for d in deltas) == 1
        assert deltas[-1].usage is not None
        ids = [c.id for d in deltas for c in d.tool_call_deltas]
        names = [c.name for d in deltas for c in d.tool_call_deltas]
        assert all(ids)  # one delta per call: id and name on it, once
        assert all(names)
