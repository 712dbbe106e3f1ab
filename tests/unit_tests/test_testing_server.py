"""The loopback test server: endpoints, framing, request-driven answers, faults, lifecycle."""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from langchain_matric.testing import (
    Fault,
    LocalServer,
    RecordedRequest,
    Reply,
    ServerOptions,
    ToolCallSpec,
    local_server_fixture,
)
from langchain_matric.testing._model import value_for_schema
from langchain_matric.testing._values import (
    PromptValues,
    numbers_in,
    proper_names_in,
    quoted_in,
)

USER = [{"role": "user", "content": "hello there world"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 2}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        yield srv


fixture_server = local_server_fixture("fixture_server", embedding_dim=4)


# -- helpers -----------------------------------------------------------------------


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    frames: list[bytes]
    body: bytes
    complete: bool


def parse_response(data: bytes) -> Raw:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    status = int(lines[0].split()[1])
    if headers.get("transfer-encoding") != "chunked":
        length = int(headers["content-length"])
        return Raw(status, headers, [], rest, len(rest) == length)
    frames: list[bytes] = []
    pos, complete = 0, False
    while True:
        eol = rest.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(rest[pos:eol], 16)
        if size == 0:
            complete = rest[eol:] == b"\r\n\r\n"
            break
        if len(rest) < eol + 2 + size + 2:
            break
        frames.append(rest[eol + 2 : eol + 2 + size])
        assert rest[eol + 2 + size : eol + 4 + size] == b"\r\n"
        pos = eol + 4 + size
    return Raw(status, headers, frames, b"".join(frames), complete)


def request_bytes(method: str, path: str, body: Any = None, extra: str = "") -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n{extra}\r\n"
    )
    return head.encode() + payload


def raw(server: LocalServer, method: str, path: str, body: Any = None) -> Raw:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_bytes(method, path, body, "Connection: close\r\n"))
        data = read_until_closed(sock)
    return parse_response(data)


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def sse_raw(server: LocalServer, **extra: Any) -> Raw:
    body = {"model": "m", "messages": USER, "stream": True, **extra}
    return raw(server, "POST", "/v1/chat/completions", body)


def sse_data(body: bytes, eol: bytes = b"\n") -> list[str]:
    out = []
    for block in body.split(eol + eol):
        out.extend(ln[6:].decode() for ln in block.split(eol) if ln.startswith(b"data: "))
    return out


def chat(server: LocalServer, timeout: Any = 10, **body: Any) -> httpx.Response:
    body = {"model": "test-model", "messages": USER, **body}
    return httpx.post(f"{server.openai_base_url}/chat/completions", json=body, timeout=timeout)


def stream_chunks(server: LocalServer, **body: Any) -> list[dict[str, Any]]:
    r = sse_raw(server, **body)
    data = sse_data(r.body)
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def check(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> None:
    """A tiny JSON-schema check: enough for the schemas used here."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part]
        check(value, target, root)
        return
    if "anyOf" in schema:
        errors = 0
        for option in schema["anyOf"]:
            try:
                check(value, option, root)
            except AssertionError:
                errors += 1
        assert errors < len(schema["anyOf"])
        return
    if "enum" in schema:
        assert value in schema["enum"]
    kinds = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
        "integer": int,
        "number": (int, float),
    }
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(isinstance(value, kinds[t]) for t in types), (value, schema)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in value
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props)
        for key, sub in props.items():
            if key in value:
                check(value[key], sub, root)
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0)
        for item in value:
            check(item, schema.get("items", {}), root)
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert value >= schema.get("minimum", -math.inf)
        assert value <= schema.get("maximum", math.inf)
    if isinstance(value, str):
        assert len(value) >= schema.get("minLength", 0)
        assert len(value) <= schema.get("maxLength", math.inf)


# -- lifecycle -----------------------------------------------------------------------


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "matric-local-server"]


def test_start_stop_and_addresses() -> None:
    srv = LocalServer(port=0)
    with pytest.raises(RuntimeError, match="not running"):
        _ = srv.url
    srv.start()
    try:
        assert srv.openai_base_url == f"http://127.0.0.1:{srv.port}/v1"
        assert srv.ollama_base_url == f"http://127.0.0.1:{srv.port}"
        with pytest.raises(RuntimeError, match="already running"):
            srv.start()
        assert httpx.get(f"{srv.url}/").text == "Ollama is running"
    finally:
        srv.stop()
    srv.stop()  # idempotent
    assert not _server_threads()
    assert "stopped" in repr(srv)


def test_start_fails_on_a_busy_port(server: LocalServer) -> None:
    with pytest.raises(OSError, match="in use"):
        LocalServer(port=server.port).start()
    assert len(_server_threads()) == 1


def test_stop_closes_open_keep_alive_connections() -> None:
    srv = LocalServer().start()
    client = httpx.Client()
    try:
        url = srv.url
        assert client.get(f"{url}/v1/models").status_code == 200
        srv.stop()
        assert not _server_threads()
        with pytest.raises(httpx.TransportError):
            client.get(f"{url}/api/version")
    finally:
        client.close()


async def test_async_context_manager() -> None:
    async with LocalServer(models=("a",)) as srv:
        assert srv.port > 0
    assert not _server_threads()


def test_pytest_fixture_helper(fixture_server: LocalServer) -> None:
    assert fixture_server.options.embedding_dim == 4


def test_options_instance_and_overrides() -> None:
    srv = LocalServer(ServerOptions(embedding_dim=3), api_key="k")
    assert srv.options.embedding_dim == 3
    assert srv.options.api_key == "k"


# -- OpenAI --------------------------------------------------------------------------


def test_chat_non_stream_request_driven(server: LocalServer) -> None:
    r = chat(server)
    body = r.json()
    assert r.headers["x-request-id"] == "req_1"
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Echo: hello there world",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_chat_stream_one_frame_per_event(server: LocalServer) -> None:
    r = sse_raw(server, stream_options={"include_usage": True})
    assert r.status == 200
    assert r.complete
    assert r.headers["content-type"].startswith("text/event-stream")
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in r.frames)
    assert all(f.count(b"\n\n") == 1 for f in r.frames)
    chunks = [json.loads(d) for d in sse_data(r.body)[:-1]]
    assert sse_data(r.body)[-1] == "[DONE]"
    first = chunks[0]
    assert first["object"] == "chat.completion.chunk"
    assert {"id", "created", "model", "system_fingerprint"} <= set(first)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["choices"][0]["logprobs"] is None
    assert content(chunks) == "Echo: hello there world"
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) == 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 7


def test_chat_stream_without_usage_has_no_usage_chunk(server: LocalServer) -> None:
    chunks = stream_chunks(server)
    assert all(c["choices"] for c in chunks)
    assert "usage" not in chunks[0]


def test_scripted_reply_stream(server: LocalServer) -> None:
    call = ToolCallSpec("get_weather", {"city": "Oslo", "note": "x" * 20}, id="call_A")
    server.script(Reply(text=["Hel", "lo"], reasoning="hmm ok", tool_calls=[call], model="mm"))
    chunks = stream_chunks(server)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == ["hmm", " ok"]
    assert content(chunks) == "Hello"
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "call_A",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert len(calls) > 3
    assert all(set(c) == {"index", "function"} for c in calls[1:])
    args = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(args) == {"city": "Oslo", "note": "x" * 20}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert {c["model"] for c in chunks} == {"mm"}
    assert server.queued_replies == 0


def test_scripted_reply_options(server: LocalServer) -> None:
    server.script(
        Reply(
            text="a",
            reasoning="r",
            tool_calls=[ToolCallSpec("f", {"k": "v"})],
            reasoning_field="reasoning",
            repeat_tool_call_ids=True,
        )
    )
    deltas = [c["choices"][0]["delta"] for c in stream_chunks(server)]
    assert any(d.get("reasoning") == "r" for d in deltas)
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert all(c["id"] == "call_0" and c["function"]["name"] == "f" for c in calls)


def test_scripted_reply_non_stream(server: LocalServer) -> None:
    server.script(
        Reply(
            reasoning="think",
            tool_calls=[ToolCallSpec("f", '{"bad json')],
            usage=(5, 2),
            finish_reason="tool_calls",
        )
    )
    body = chat(server).json()
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["reasoning_content"] == "think"
    assert message["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"bad json'}}
    ]
    assert body["usage"]["prompt_tokens"] == 5
    assert body["usage"]["completion_tokens"] == 2


def test_text_completions(server: LocalServer) -> None:
    url = f"{server.openai_base_url}/completions"
    body = httpx.post(url, json={"model": "m", "prompt": "one two", "max_tokens": 2}).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Echo: one"
    assert body["choices"][0]["finish_reason"] == "length"
    r = raw(
        server,
        "POST",
        "/v1/completions",
        {"model": "m", "prompt": "x", "stream": True, "stream_options": {"include_usage": True}},
    )
    data = sse_data(r.body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Echo: x"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def test_models(server: LocalServer) -> None:
    body = httpx.get(f"{server.openai_base_url}/models").json()
    assert [m["id"] for m in body["data"]] == ["test-model", "test-embed"]


def _decode_b64(value: str) -> list[float]:
    raw_bytes = base64.b64decode(value)
    return list(struct.unpack(f"<{len(raw_bytes) // 4}f", raw_bytes))


def test_embeddings_float_and_base64_agree(server: LocalServer) -> None:
    url = f"{server.openai_base_url}/embeddings"
    floats = httpx.post(url, json={"model": "e", "input": ["a", "b"]}).json()
    b64 = httpx.post(url, json={"model": "e", "input": ["a", "b"], "encoding_format": "base64"})
    assert floats["object"] == "list"
    assert floats["usage"]["prompt_tokens"] == 2
    vectors = [d["embedding"] for d in floats["data"]]
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert len(vectors[0]) == 768
    assert vectors[0] != vectors[1]
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-5)
    assert [_decode_b64(d["embedding"]) for d in b64.json()["data"]] == vectors
    again = httpx.post(url, json={"input": "a", "dimensions": 8, "encoding_format": "float"}).json()
    assert len(again["data"][0]["embedding"]) == 8


def test_embeddings_base64_reject_and_ignore(server: LocalServer) -> None:
    url = f"{server.openai_base_url}/embeddings"
    body = {"model": "e", "input": "a", "encoding_format": "base64"}
    server.options.base64_embeddings = "reject"
    r = httpx.post(url, json=body)
    assert r.status_code == 400
    assert "base64" in r.json()["error"]["message"]
    server.options.base64_embeddings = "ignore"
    assert isinstance(httpx.post(url, json=body).json()["data"][0]["embedding"], list)


def test_embeddings_too_long(server: LocalServer) -> None:
    server.options.embed_max_chars = 10
    r = httpx.post(f"{server.openai_base_url}/embeddings", json={"input": "x" * 11})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


# -- Ollama --------------------------------------------------------------------------


def test_ollama_chat_streams_by_default(server: LocalServer) -> None:
    r = raw(server, "POST", "/api/chat", {"model": "llama", "messages": USER})
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.complete
    lines = [json.loads(f) for f in r.frames]
    assert all(f.endswith(b"\n") and f.count(b"\n") == 1 for f in r.frames)
    assert "".join(x["message"]["content"] for x in lines) == "Echo: hello there world"
    last = lines[-1]
    assert last["done"] is True
    assert last["done_reason"] == "stop"
    assert last["prompt_eval_count"] == 3
    assert last["eval_count"] == 4
    assert {"total_duration", "load_duration", "eval_duration", "created_at"} <= set(last)
    assert not any(x["done"] for x in lines[:-1])


def test_ollama_chat_non_stream_thinking_and_tools(server: LocalServer) -> None:
    url = f"{server.ollama_base_url}/api/chat"
    body = {"model": "m", "messages": USER, "stream": False, "think": True, "tools": [WEATHER]}
    out = httpx.post(url, json=body).json()
    assert out["done"] is True
    assert out["message"]["thinking"] == "Reasoning about: hello there world"
    call = out["message"]["tool_calls"][0]
    assert call["id"] == "call_0"
    assert call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"] == {"city": "hello there world", "days": 2}
    server.options.ollama_tool_call_ids = False
    out = httpx.post(url, json=body).json()
    assert "id" not in out["message"]["tool_calls"][0]


def test_ollama_generate(server: LocalServer) -> None:
    r = raw(
        server,
        "POST",
        "/api/generate",
        {"model": "m", "prompt": "hi you", "options": {"num_predict": 2}},
    )
    lines = [json.loads(f) for f in r.frames]
    assert "".join(x["response"] for x in lines) == "Echo: hi"
    assert lines[-1]["done_reason"] == "length"
    assert "context" in lines[-1]
    out = httpx.post(
        f"{server.url}/api/generate", json={"model": "m", "prompt": "a", "stream": False}
    ).json()
    assert out["response"] == "Echo: a"
    assert out["done"] is True


def test_ollama_embed(server: LocalServer) -> None:
    url = f"{server.url}/api/embed"
    out = httpx.post(url, json={"model": "e", "input": ["a", "b"], "dimensions": 16}).json()
    assert out["model"] == "e"
    assert len(out["embeddings"]) == 2
    assert len(out["embeddings"][0]) == 16
    one = httpx.post(url, json={"model": "e", "input": "a", "dimensions": 16}).json()
    assert one["embeddings"][0] == out["embeddings"][0]
    server.options.embed_max_chars = 5
    r = httpx.post(url, json={"model": "e", "input": "x" * 6, "truncate": False})
    assert r.status_code == 400
    assert r.json() == {"error": "input length exceeds the context length"}
    assert httpx.post(url, json={"model": "e", "input": "x" * 6}).status_code == 200
    legacy = httpx.post(f"{server.url}/api/embeddings", json={"model": "e", "prompt": "a"})
    assert len(legacy.json()["embedding"]) == 768


def test_ollama_metadata(server: LocalServer) -> None:
    tags = httpx.get(f"{server.url}/api/tags").json()
    assert [m["name"] for m in tags["models"]] == ["test-model", "test-embed"]
    assert httpx.get(f"{server.url}/api/version").json() == {"version": "0.12.6"}
    show = httpx.post(f"{server.url}/api/show", json={"model": "test-model"}).json()
    assert "tools" in show["capabilities"]


# -- request-driven answers ----------------------------------------------------------


def _call_names(body: dict[str, Any]) -> list[str]:
    calls = body["choices"][0]["message"].get("tool_calls") or []
    return [c["function"]["name"] for c in calls]


def test_request_driven_tool_choice(server: LocalServer) -> None:
    assert _call_names(chat(server, tools=[WEATHER, TIME]).json()) == ["get_weather"]
    forced = {"type": "function", "function": {"name": "get_time"}}
    assert _call_names(chat(server, tools=[WEATHER, TIME], tool_choice=forced).json()) == [
        "get_time"
    ]
    assert _call_names(chat(server, tools=[WEATHER], tool_choice="none").json()) == []
    asking = [{"role": "user", "content": "Use get_time and get weather"}]
    both = chat(server, messages=asking, tools=[WEATHER, TIME]).json()
    assert _call_names(both) == ["get_weather", "get_time"]
    assert both["choices"][0]["finish_reason"] == "tool_calls"
    single = chat(server, messages=asking, tools=[WEATHER, TIME], parallel_tool_calls=False)
    assert _call_names(single.json()) == ["get_weather"]


def test_request_driven_after_tool_result(server: LocalServer) -> None:
    messages = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    ]
    body = chat(server, messages=messages, tools=[WEATHER]).json()
    assert body["choices"][0]["message"]["content"] == "Result: sunny"
    forced = chat(server, messages=messages, tools=[WEATHER], tool_choice="required").json()
    assert _call_names(forced) == ["get_weather"]
    args = json.loads(forced["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    check(args, WEATHER["function"]["parameters"])  # type: ignore[index]


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 3, "maxLength": 8},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "kind": {"enum": ["a", "b"]},
        "pet": {"$ref": "#/$defs/Pet"},
        "nick": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        "score": {"type": ["number", "null"], "exclusiveMinimum": 0.5},
        "when": {"type": "string", "format": "date-time"},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "kind", "pet"],
    "additionalProperties": False,
    "$defs": {
        "Pet": {"type": "object", "properties": {"legs": {"type": "integer"}}, "required": ["legs"]}
    },
}


def test_request_driven_json_schema(server: LocalServer) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "P", "schema": SCHEMA, "strict": True}}
    text = chat(server, response_format=fmt).json()["choices"][0]["message"]["content"]
    value = json.loads(text)
    check(value, SCHEMA)
    assert value["score"] == 1.5
    assert value["when"] == "2024-01-01T00:00:00Z"
    streamed = json.loads(content(stream_chunks(server, response_format=fmt)))
    assert streamed == value
    obj = chat(server, response_format={"type": "json_object"}).json()
    assert json.loads(obj["choices"][0]["message"]["content"]) == {"echo": "hello there world"}
    ollama = httpx.post(
        f"{server.url}/api/chat",
        json={"model": "m", "messages": USER, "format": SCHEMA, "stream": False},
    )
    check(json.loads(ollama.json()["message"]["content"]), SCHEMA)
    generate = httpx.post(
        f"{server.url}/api/generate",
        json={"model": "m", "prompt": "p", "format": "json", "stream": False},
    )
    assert json.loads(generate.json()["response"]) == {"echo": "p"}


def test_value_for_schema_edge_cases() -> None:
    assert value_for_schema({"const": 3}, "t") == 3
    assert (
        value_for_schema({"type": "array", "items": {"type": "integer"}, "maxItems": 0}, "") == []
    )
    assert value_for_schema({"allOf": [{"type": "integer", "maximum": 0}]}, "t") == 0
    assert value_for_schema({"type": "string", "format": "email"}, "t") == "user@example.com"
    assert value_for_schema({}, "") == "text"
    loop = {"$ref": "#"}
    assert value_for_schema(loop, "t") == "t"  # depth-limited


def _tool(tool_name: str, **props: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": props, "required": list(props)}
    return {"type": "function", "function": {"name": tool_name, "parameters": schema}}


def _args(server: LocalServer, text: str, *tools: dict[str, Any], **body: Any) -> list[Any]:
    messages = [{"role": "user", "content": text}]
    out = chat(server, messages=messages, tools=list(tools), **body).json()
    calls = out["choices"][0]["message"].get("tool_calls") or []
    return [json.loads(c["function"]["arguments"]) for c in calls]


MAGIC = _tool("magic_function", input={"type": "integer", "exclusiveMinimum": -1000})
ADD = _tool("add", a={"type": "integer"}, b={"type": "number"})


def test_request_driven_arguments_come_from_the_prompt(server: LocalServer) -> None:
    # Call syntax: only what is between the parentheses counts.
    assert _args(server, "Is it 7? What is magic_function(3)?", MAGIC) == [{"input": 3}]
    # Numbers in order; a non-integral number is skipped by an integer property.
    assert _args(server, "What is 2.5 + 4 and 6?", ADD) == [{"a": 4, "b": 2.5}]
    # Named values win, in any order; the rest fill positionally.
    assert _args(server, "Call add(b=1.5, a=2)", ADD) == [{"a": 2, "b": 1.5}]
    # No number in the text: the schema's bound (or 1).
    assert _args(server, "magic please", MAGIC) == [{"input": -999}]
    # Out-of-bounds numbers are skipped.
    bounded = _tool("pick", n={"type": "integer", "minimum": 10, "maximum": 20})
    assert _args(server, "between 5 and 12", bounded) == [{"n": 12}]


def test_request_driven_string_enum_and_boolean_arguments(server: LocalServer) -> None:
    person = _tool(
        "create_customer",
        name={"type": "string"},
        note={"type": "string", "maxLength": 3},
        unit={"enum": ["celsius", "fahrenheit"]},
        vip={"type": "boolean"},
    )
    text = "Create a customer named '你好啊集团' in fahrenheit, note \"ok\", vip: false. It's fine."
    assert _args(server, text, person) == [
        {"name": "你好啊集团", "note": "ok", "unit": "fahrenheit", "vip": False}
    ]
    # Proper names (capitalised, not starting a sentence) after the quoted strings.
    city = _tool("get_weather", city={"type": "string"}, country={"type": "string"})
    text = "What is the weather in New York? Use get_weather, 'US' please."
    assert _args(server, text, city) == [{"city": "US", "country": "New York"}]
    # No quoted string or name left: strings echo the message (cut to maxLength).
    assert _args(server, "plain words", person) == [
        {"name": "plain words", "note": "pla", "unit": "celsius", "vip": True}
    ]


def test_request_driven_tool_names_match_whole_words(server: LocalServer) -> None:
    no_args = _tool("magic_function_no_args")
    text = "What is magic_function_no_args()?"
    out = chat(server, messages=[{"role": "user", "content": text}], tools=[MAGIC, no_args])
    assert _call_names(out.json()) == ["magic_function_no_args"]


def test_request_driven_json_mode_keys_from_quoted_names(server: LocalServer) -> None:
    text = "Tell me a joke. Return JSON with 'setup' and 'punchline' keys, not 'the end'."
    messages = [{"role": "user", "content": text}]
    obj = chat(server, messages=messages, response_format={"type": "json_object"}).json()
    value = json.loads(obj["choices"][0]["message"]["content"])
    assert value == {"setup": text, "punchline": text}
    system = [{"role": "system", "content": "Answer with key 'answer'."}, *USER]
    obj = chat(server, messages=system, response_format={"type": "json_object"}).json()
    assert json.loads(obj["choices"][0]["message"]["content"]) == {"answer": "hello there world"}
    ollama = httpx.post(
        f"{server.url}/api/chat",
        json={"model": "m", "messages": messages, "format": "json", "stream": False},
    )
    assert set(json.loads(ollama.json()["message"]["content"])) == {"setup", "punchline"}


def test_request_driven_json_schema_reads_the_prompt(server: LocalServer) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "W", "schema": schema}}
    messages = [{"role": "user", "content": "Weather in 'Oslo' for 3 days"}]
    out = chat(server, messages=messages, response_format=fmt).json()
    assert json.loads(out["choices"][0]["message"]["content"]) == {"city": "Oslo", "days": 3}


def test_prompt_values_helpers() -> None:
    assert numbers_in("v1.2 3rd 4, -5 and 6.5.") == [4, -5, 6.5]
    assert proper_names_in("Hi. See Ann Lee in Oslo, 'Not Me'. I go") == ["Ann Lee", "Oslo"]
    assert quoted_in("It's 'a' and \"b c\" and “d” and ‘e’") == ["a", "b c", "d", "e"]  # noqa: RUF001
    values = PromptValues.from_text("x=1 y: 'two' z=true 4", echo="q")
    assert value_for_schema(
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer"},
                "x": {"type": "integer"},
                "y": {"type": "string"},
                "z": {"type": "boolean"},
                "s": {"type": "string"},
            },
        },
        "q",
        values=values,
    ) == {"n": 4, "x": 1, "y": "two", "z": True, "s": "q"}


def test_max_tokens_and_stop(server: LocalServer) -> None:
    body = chat(server, max_tokens=2).json()["choices"][0]
    assert body["message"]["content"] == "Echo: hello"
    assert body["finish_reason"] == "length"
    body = chat(server, stop=["there"]).json()["choices"][0]
    assert body["message"]["content"] == "Echo: hello "
    assert body["finish_reason"] == "stop"
    body = chat(server, max_completion_tokens=10, stop="zzz").json()["choices"][0]
    assert body["message"]["content"] == "Echo: hello there world"


def test_reasoning_on_request(server: LocalServer) -> None:
    message = chat(server, reasoning_effort="low").json()["choices"][0]["message"]
    assert message["reasoning_content"] == "Reasoning about: hello there world"
    server.options.reasoning = True
    assert "reasoning_content" in chat(server).json()["choices"][0]["message"]


def test_default_reply_is_reused(server: LocalServer) -> None:
    server.options.default_reply = Reply(text="cached words here")
    first, second = sse_raw(server), sse_raw(server)
    assert first.body == second.body
    assert content([json.loads(d) for d in sse_data(first.body)[:-1]]) == "cached words here"
    server.script(Reply(text="scripted"))
    assert chat(server).json()["choices"][0]["message"]["content"] == "scripted"


# -- wire controls -------------------------------------------------------------------


def _without_ids(body: bytes) -> list[Any]:
    out = []
    for d in sse_data(body):
        if d == "[DONE]":
            out.append(d)
            continue
        chunk = json.loads(d)
        chunk.pop("id"), chunk.pop("created")
        out.append(chunk)
    return out


def test_one_byte_chunks(server: LocalServer) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo wörld"}], "stream": True}
    normal = raw(server, "POST", "/v1/chat/completions", body)
    server.script(Reply(text="Echo: héllo wörld", chunk_size=1))
    tiny = raw(server, "POST", "/v1/chat/completions", body)
    assert tiny.complete
    assert all(len(f) == 1 for f in tiny.frames)
    assert len(tiny.frames) == len(tiny.body)
    assert _without_ids(tiny.body) == _without_ids(normal.body)


def test_chunk_size_applies_to_whole_bodies(server: LocalServer) -> None:
    server.options.chunk_size = 7
    r = chat(server)
    assert r.json()["choices"][0]["message"]["content"] == "Echo: hello there world"


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_line_endings(server: LocalServer, eol: str) -> None:
    server.options.line_ending = eol  # type: ignore[assignment]
    r = sse_raw(server)
    assert b"\n" not in r.body.replace(b"\r\n", b"") if eol == "\r\n" else b"\n" not in r.body
    assert all(f.endswith(eol.encode() * 2) for f in r.frames)
    data = sse_data(r.body, eol.encode())
    assert data[-1] == "[DONE]"
    assert content([json.loads(d) for d in data[:-1]]).startswith("Echo")


def test_pings(server: LocalServer) -> None:
    server.options.ping_every = 2
    r = sse_raw(server)
    pings = [f for f in r.frames if f == b": ping\n\n"]
    events = [f for f in r.frames if f.startswith(b"data: ")]
    assert len(pings) == (len(events) + 1) // 2
    assert r.frames[0] == b": ping\n\n"
    o = raw(server, "POST", "/api/chat", {"model": "m", "messages": USER})
    assert b"\n" in o.frames
    assert json.loads(o.frames[-1])["done"] is True


def test_delay_between_events(server: LocalServer) -> None:
    server.script(Reply(text=["a", "b", "c"], delay=0.05))
    start = time.monotonic()
    chunks = stream_chunks(server)
    assert time.monotonic() - start >= 0.1
    assert content(chunks) == "abc"


# -- faults --------------------------------------------------------------------------


def test_status_fault_times_then_success(server: LocalServer) -> None:
    body = '{"error": {"message": "slow down", "type": "rate_limit_error"}}'
    server.fault(Fault(status=429, headers={"Retry-After": "1"}, body=body, times=2))
    assert server.queued_faults == 2
    for _ in range(2):
        r = chat(server)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["message"] == "slow down"
    assert chat(server).status_code == 200
    assert server.queued_faults == 0


def test_status_fault_default_bodies_and_path(server: LocalServer) -> None:
    server.fault(Fault(status=503, path="/api/chat"), Fault(status=500))
    assert httpx.get(f"{server.openai_base_url}/models").status_code == 500  # 2nd: any path
    r = httpx.post(f"{server.url}/api/chat", json={"model": "m", "messages": USER})
    assert r.status_code == 503
    assert r.json() == {"error": "Injected fault: HTTP 503"}
    html = Fault(status=200, content_type="text/html", body="<html>oops</html>")
    server.fault(html)
    r = chat(server)
    assert r.headers["content-type"] == "text/html"
    assert r.text == "<html>oops</html>"
    server.fault(Fault(status=502, body="Bad gateway"))
    r = chat(server)
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("text/plain")


def test_drop_mid_stream(server: LocalServer) -> None:
    server.fault(Fault.drop(after=2))
    r = sse_raw(server)
    assert not r.complete
    assert len(r.frames) == 2
    server.fault(Fault.drop(after=1))
    with httpx.stream("POST", f"{server.url}/api/chat", json={"model": "m", "messages": USER}) as s:
        with pytest.raises(httpx.RemoteProtocolError):
            s.read()
    server.fault(Fault.drop())  # a whole body: half of it, then close
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{server.openai_base_url}/models")
    assert server.disconnects == 0  # server-side closes are not client disconnects


def test_drop_and_stall_before_the_head(server: LocalServer) -> None:
    server.fault(Fault.drop(after=0, path="/v1/models"))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        httpx.get(f"{server.openai_base_url}/models")
    assert httpx.get(f"{server.openai_base_url}/models").status_code == 200
    server.fault(Fault.stall(30, after=0))
    with pytest.raises(httpx.ReadTimeout):
        chat(server, stream=True, timeout=httpx.Timeout(5, read=0.2))
    assert server.wait_for_disconnect(timeout=5)
    server.fault(Fault.stall(0.01, after=1))
    assert chat(server).json()["choices"][0]["message"]["content"].startswith("Echo")


def test_no_terminator_and_end_early(server: LocalServer) -> None:
    server.fault(Fault.no_terminator())
    r = sse_raw(server)
    data = sse_data(r.body)
    assert r.complete
    assert "[DONE]" not in data
    assert json.loads(data[-1])["choices"][0]["finish_reason"] == "stop"
    server.fault(Fault.no_terminator(path="/api/chat"))
    o = raw(server, "POST", "/api/chat", {"model": "m", "messages": USER})
    assert o.complete
    assert not any(json.loads(f)["done"] for f in o.frames)
    server.fault(Fault.end_early(after=2))
    r = sse_raw(server)
    assert r.complete
    assert len(r.frames) == 2
    assert all(json.loads(d)["choices"][0]["finish_reason"] is None for d in sse_data(r.body))


def test_empty_and_non_streaming(server: LocalServer) -> None:
    server.fault(Fault.empty())
    r = sse_raw(server)
    assert r.status == 200
    assert r.complete
    assert r.body == b""
    assert r.headers["content-type"].startswith("text/event-stream")
    server.fault(Fault.non_streaming())
    r = raw(server, "POST", "/api/chat", {"model": "m", "messages": USER})
    assert r.headers["content-type"].startswith("application/json")
    assert json.loads(r.body)["message"]["content"] == "Echo: hello there world"


def test_garbage_invalid_json_and_huge_line(server: LocalServer) -> None:
    server.fault(Fault.inject(after=1))
    r = sse_raw(server)
    assert r.frames[1].startswith(b"\x00\xff")
    assert sse_data(r.body)[-1] == "[DONE]"
    server.fault(Fault.invalid_json(after=0))
    r = sse_raw(server)
    with pytest.raises(json.JSONDecodeError):
        json.loads(sse_data(r.body)[0])
    server.fault(Fault.huge_line(after=1))
    r = sse_raw(server)
    huge = r.frames[1]
    assert len(huge) > 600 * 1024
    assert huge.count(b"\n") == 2
    assert json.loads(huge[6:])["choices"][0]["delta"]["content"] == "x" * 600 * 1024


ERR = b'{"message":"boom","type":"server_error","param":null,"code":"c1"}'
VLLM = b'"type":"InternalServerError","param":null,"code":"c1"'


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("openai", b'data: {"error":' + ERR + b"}\n\n"),
        ("vllm", b'data: {"object":"error","message":"boom",' + VLLM + b"}\n\n"),
        ("event", b'event: error\ndata: {"error":' + ERR + b"}\n\n"),
        ("event_no_data", b"event: error\n\n"),
        ("llamacpp", b'error: {"code":"c1","message":"boom","type":"server_error"}\n\n'),
        ("ollama", b'{"error":"boom"}\n'),
    ],
)
def test_stream_error_styles(server: LocalServer, style: str, expected: bytes) -> None:
    server.fault(Fault.stream_error(style, after=2, message="boom", code="c1"))  # type: ignore[arg-type]
    r = sse_raw(server)
    assert r.status == 200
    assert r.complete
    assert r.frames[2:] == [expected]


def test_ollama_stream_error_defaults_to_ndjson(server: LocalServer) -> None:
    server.fault(Fault.stream_error(after=1))
    r = raw(server, "POST", "/api/chat", {"model": "m", "messages": USER})
    assert json.loads(r.frames[-1]) == {"error": "the server failed while generating"}


def test_stall_does_not_block_and_ends_on_stop() -> None:
    srv = LocalServer().start()
    srv.fault(Fault.stall(60, after=1))
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        sock.sendall(
            request_bytes(
                "POST", "/v1/chat/completions", {"model": "m", "messages": USER, "stream": True}
            )
        )
        seen = b""
        while b"data: " not in seen:
            seen += sock.recv(65536)
        assert chat(srv).status_code == 200  # another connection is served meanwhile
        start = time.monotonic()
        srv.stop()
        assert time.monotonic() - start < 5
        rest = read_until_closed(sock)
        assert not rest.endswith(b"0\r\n\r\n")
    finally:
        sock.close()
        srv.stop()
    assert srv.disconnects == 0


# -- recording and disconnects -------------------------------------------------------


def test_requests_are_recorded(server: LocalServer) -> None:
    before = time.time()
    httpx.post(
        f"{server.openai_base_url}/embeddings?api-version=1",
        json={"input": "a"},
        headers={"X-Test": "yes"},
    )
    httpx.get(f"{server.url}/api/tags")
    assert server.wait_for_requests(2, timeout=5)
    first, second = server.requests
    assert isinstance(first, RecordedRequest)
    assert (first.method, first.path, first.query) == (
        "POST",
        "/v1/embeddings",
        {"api-version": "1"},
    )
    assert first.headers["x-test"] == "yes"
    assert first.json == {"input": "a"}
    assert json.loads(first.body) == {"input": "a"}
    assert first.time >= before
    assert not first.stream
    assert second.json is None
    assert second.body == b""
    assert server.last_request is second
    server.clear()
    assert server.requests == []
    assert not server.wait_for_requests(1, timeout=0.01)
    with pytest.raises(LookupError):
        _ = server.last_request


def test_disconnect_is_seen(server: LocalServer) -> None:
    server.script(Reply(text=["w "] * 200, delay=0.02))
    url = f"{server.openai_base_url}/chat/completions"
    body = {"model": "m", "messages": USER, "stream": True}
    with httpx.stream("POST", url, json=body, timeout=10) as r:
        next(r.iter_raw())
    assert server.wait_for_disconnect(timeout=5)
    assert server.disconnects == 1


def test_disconnect_during_stall(server: LocalServer) -> None:
    server.fault(Fault.stall(30, after=1))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_bytes("POST", "/api/chat", {"model": "m", "messages": USER}))
        assert sock.recv(65536)
    assert server.wait_for_disconnect(timeout=5)


# -- HTTP details --------------------------------------------------------------------


def test_keep_alive_and_chunked_request_body(server: LocalServer) -> None:
    payload = json.dumps({"input": "a"}).encode()
    chunked = (
        b"POST /api/embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%b\r\n0\r\n\r\n" % (len(payload), payload)
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_bytes("GET", "/api/version") + chunked)
        data = b""
        while b"prompt_eval_count" not in data or not data.endswith(b"}"):
            data += sock.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert server.requests[1].json == {"input": "a"}


def test_http_errors(server: LocalServer) -> None:
    assert httpx.get(f"{server.url}/nope").text == "404 page not found"
    missing = httpx.get(f"{server.openai_base_url}/nope")
    assert missing.status_code == 404
    assert "error" in missing.json()
    assert httpx.get(f"{server.openai_base_url}/chat/completions").status_code == 405
    bad = httpx.post(f"{server.openai_base_url}/chat/completions", content=b"{nope")
    assert bad.status_code == 400
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"BROKEN\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


def test_api_key_strict_models_and_context(server: LocalServer) -> None:
    server.options.api_key = "sk-test"
    assert chat(server).status_code == 401
    ok = httpx.post(
        f"{server.openai_base_url}/chat/completions",
        json={"model": "test-model", "messages": USER},
        headers={"Authorization": "Bearer sk-test"},
    )
    assert ok.status_code == 200
    server.options.api_key = None
    server.options.strict_models = True
    r = chat(server, model="missing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    o = httpx.post(f"{server.url}/api/chat", json={"model": "missing", "messages": USER})
    assert o.status_code == 404
    assert "not found" in o.json()["error"]
    server.options.context_chars = 5
    r = chat(server)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


# -- full replies: n, logprobs, cached tokens, tier -------------------------------------


def test_n_choices_whole_and_streamed(server: LocalServer) -> None:
    choices = chat(server, n=3).json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    chunks = stream_chunks(server, n=2)
    by_index: dict[int, str] = {}
    finishes = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            piece = choice["delta"].get("content") or ""
            by_index[choice["index"]] = by_index.get(choice["index"], "") + piece
            if choice["finish_reason"]:
                finishes.append(choice["index"])
    assert by_index[0] == by_index[1] != ""
    assert finishes == [0, 1]


def test_max_n_refuses_like_llama_server(server: LocalServer) -> None:
    server.options.max_n = 1
    refused = chat(server, n=2)
    assert refused.status_code == 400
    assert "Only one completion choice is allowed" in refused.text
    assert chat(server, n=1).status_code == 200


def test_logprobs_one_deterministic_entry_per_word(server: LocalServer) -> None:
    whole = chat(server, logprobs=True, top_logprobs=3).json()["choices"][0]["logprobs"]
    again = chat(server, logprobs=True, top_logprobs=3).json()["choices"][0]["logprobs"]
    assert whole == again
    assert [len(e["top_logprobs"]) for e in whole["content"]] == [3] * len(whole["content"])
    streamed = [
        e
        for c in stream_chunks(server, logprobs=True, top_logprobs=3)
        for choice in c["choices"]
        for e in (choice["logprobs"] or {}).get("content", [])
    ]
    assert streamed == whole["content"]
    assert chat(server).json()["choices"][0]["logprobs"] is None


def test_cached_tokens_and_tier_on_the_chat_api(server: LocalServer) -> None:
    def ask(text: str) -> dict[str, Any]:
        messages = [{"role": "user", "content": text}]
        answer: dict[str, Any] = chat(server, messages=messages).json()
        return answer

    first = ask("one two three four")
    assert "prompt_tokens_details" not in first["usage"]
    assert first["service_tier"] == "default"
    second = ask("one two three five")
    assert second["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    server.script(Reply(text="x", cached_tokens=7))
    assert ask("other")["usage"]["prompt_tokens_details"] == {"cached_tokens": 7}
    server.options.service_tier = None
    assert "service_tier" not in ask("x")
