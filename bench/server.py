"""A fast loopback bench server for the OpenAI and Ollama wire formats (its own process).

Wire format (pinned, so every client reads exactly the same bytes):

- HTTP/1.1 keep-alive; streamed answers use `Transfer-Encoding: chunked` with **one chunk
  frame per SSE event** (`data: {...}\\n\\n`) or **per NDJSON line**; whole answers carry a
  `Content-Length`.
- Every chunk is the full JSON object a real server sends: OpenAI `chat.completion.chunk`
  (id, object, created, model, system_fingerprint, choices[index, delta, logprobs,
  finish_reason]) with a role-only first chunk, a finish chunk, a usage chunk when
  `stream_options.include_usage` is asked, then `data: [DONE]`; Ollama lines (model,
  created_at, message/response, done) ending with the `done: true` statistics line.
- `/v1/responses` streams the OpenAI Responses API's events, each an `event: <type>` line
  and a `data:` line in one frame: created, in_progress, output_item.added (the message),
  content_part.added, one `response.output_text.delta` per token (type, sequence_number,
  item_id, output_index, content_index, delta, logprobs, and the `obfuscation` padding
  OpenAI adds unless `stream_options.include_obfuscation` is false), output_text.done,
  content_part.done, output_item.done, then `response.completed` with the whole response
  object and its usage (no `[DONE]`: the Responses API sends none).
- Responses are pre-built once per shape (cached) and written in ~64 KiB batches of whole
  frames, with flow control; the per-request work is parsing the request head and body.

The answer's length is read from the model name: `bench-n<N>` streams N one-token chunks
(each token about 6 bytes); any other name gives 1. Embeddings return one fixed
768-dimension vector per input (base64 when `encoding_format` is "base64").

`GET /bench/requests` returns how many requests each endpoint has answered, streamed or
whole (`{"POST /v1/responses stream": 6, ...}`): the runner checks with it which endpoint
a peer really used.

Run as `python -m bench.server [--latency-ms 20]`: it listens on two 127.0.0.1 ports, the
second adding the latency before each answer, and prints `PORTS <fast> <slow>`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import struct
import sys
from collections import Counter
from typing import Any

TOKENS = [" alpha", " bravo", " delta", " gamma", " omega", " sigma", " kappa", " theta"]
"""About 6 bytes each, as in the issue's figures."""
DIM = 768
BATCH = 64 * 1024
CREATED = 1_718_000_000
_MODEL_N = re.compile(r"-n(\d+)$")

_VECTOR = [round(((i * 7919) % 1000) / 1000.0 - 0.5, 6) for i in range(DIM)]
_VECTOR_JSON = json.dumps(_VECTOR, separators=(",", ":"))
_VECTOR_B64 = json.dumps(base64.b64encode(struct.pack(f"<{DIM}f", *_VECTOR)).decode())


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _frame(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _head(status: str, content_type: str, length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{size}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()


def _batches(head: bytes, frames: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    current = [head]
    size = len(head)
    for frame in [*frames, b"0\r\n\r\n"]:
        current.append(frame)
        size += len(frame)
        if size >= BATCH:
            out.append(b"".join(current))
            current, size = [], 0
    if current:
        out.append(b"".join(current))
    return out


def _whole(content_type: str, body: bytes) -> list[bytes]:
    return [_head("200 OK", content_type, len(body)) + body]


# -- OpenAI ------------------------------------------------------------------------------


def openai_chat_stream(model: str, n: int, usage: bool) -> list[bytes]:
    base = {
        "id": "chatcmpl-B3nchS3rv3r0123456789abcdef",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_bench0001",
    }

    def event(delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj = {**base, "choices": [choice]}
        if usage:
            obj["usage"] = None
        return b"data: " + _dumps(obj) + b"\n\n"

    frames = [_frame(event({"role": "assistant", "content": "", "refusal": None}, None))]
    frames += [_frame(event({"content": TOKENS[i % len(TOKENS)]}, None)) for i in range(n)]
    frames.append(_frame(event({}, "stop")))
    if usage:
        tail = {**base, "choices": [], "usage": _openai_usage(n)}
        frames.append(_frame(b"data: " + _dumps(tail) + b"\n\n"))
    frames.append(_frame(b"data: [DONE]\n\n"))
    return _batches(_head("200 OK", "text/event-stream; charset=utf-8", None), frames)


def openai_completion_stream(model: str, n: int, usage: bool) -> list[bytes]:
    base = {
        "id": "cmpl-B3nchS3rv3r0123456789abcdef",
        "object": "text_completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_bench0001",
    }

    def event(text: str, finish: str | None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        obj = {**base, "choices": [choice]}
        if usage:
            obj["usage"] = None
        return b"data: " + _dumps(obj) + b"\n\n"

    frames = [_frame(event(TOKENS[i % len(TOKENS)], None)) for i in range(n)]
    frames.append(_frame(event("", "stop")))
    if usage:
        tail = {**base, "choices": [], "usage": _openai_usage(n)}
        frames.append(_frame(b"data: " + _dumps(tail) + b"\n\n"))
    frames.append(_frame(b"data: [DONE]\n\n"))
    return _batches(_head("200 OK", "text/event-stream; charset=utf-8", None), frames)


def _openai_usage(n: int) -> dict[str, Any]:
    return {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}


def full_text(n: int) -> str:
    """The whole text of an `n`-token answer, as every endpoint streams it."""
    return "".join(TOKENS[i % len(TOKENS)] for i in range(n))


def openai_chat_whole(model: str, n: int) -> list[bytes]:
    obj = {
        "id": "chatcmpl-B3nchS3rv3r0123456789abcdef",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_bench0001",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": full_text(n), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _openai_usage(n),
    }
    return _whole("application/json", _dumps(obj))


def openai_completion_whole(model: str, n: int) -> list[bytes]:
    obj = {
        "id": "cmpl-B3nchS3rv3r0123456789abcdef",
        "object": "text_completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_bench0001",
        "choices": [{"text": full_text(n), "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": _openai_usage(n),
    }
    return _whole("application/json", _dumps(obj))


def openai_embeddings(model: str, count: int, b64: bool) -> list[bytes]:
    vector = _VECTOR_B64 if b64 else _VECTOR_JSON
    items = ",".join(
        f'{{"object":"embedding","index":{i},"embedding":{vector}}}' for i in range(count)
    )
    body = (
        f'{{"object":"list","data":[{items}],"model":"{model}",'
        f'"usage":{{"prompt_tokens":{count * 4},"total_tokens":{count * 4}}}}}'
    ).encode()
    return _whole("application/json", body)


# -- OpenAI Responses API -----------------------------------------------------------------

RESPONSE_ID = "resp_B3nchS3rv3r0123456789abcdef0123456789abcdef01"
MESSAGE_ID = "msg_B3nchS3rv3r0123456789abcdef0123456789abcdef01"
_PAD = "Zq3xW9kL2mPv7RtB"


def _response_usage(n: int) -> dict[str, Any]:
    return {
        "input_tokens": 8,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": n,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 8 + n,
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message(n: int, done: bool) -> dict[str, Any]:
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "status": "completed" if done else "in_progress",
        "content": [_output_text(full_text(n))] if done else [],
        "role": "assistant",
    }


def _response(model: str, n: int, done: bool) -> dict[str, Any]:
    """The response object as OpenAI returns it (in progress: no output, no usage)."""
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": CREATED,
        "status": "completed" if done else "in_progress",
        "background": False,
        "completed_at": CREATED + 1 if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": model,
        "output": [_message(n, True)] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": _response_usage(n) if done else None,
        "user": None,
        "metadata": {},
    }


def openai_responses_stream(model: str, n: int, obfuscation: bool) -> list[bytes]:
    frames: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        obj = {"type": kind, "sequence_number": len(frames), **fields}
        frames.append(_frame(b"event: %s\ndata: %s\n\n" % (kind.encode(), _dumps(obj))))

    at = {"item_id": MESSAGE_ID, "output_index": 0, "content_index": 0}
    event("response.created", response=_response(model, n, False))
    event("response.in_progress", response=_response(model, n, False))
    event("response.output_item.added", output_index=0, item=_message(n, False))
    event("response.content_part.added", **at, part=_output_text(""))
    for i in range(n):
        token = TOKENS[i % len(TOKENS)]
        pad = {"obfuscation": _PAD[: 4 + i % 9]} if obfuscation else {}
        event("response.output_text.delta", **at, delta=token, logprobs=[], **pad)
    event("response.output_text.done", **at, text=full_text(n), logprobs=[])
    event("response.content_part.done", **at, part=_output_text(full_text(n)))
    event("response.output_item.done", output_index=0, item=_message(n, True))
    event("response.completed", response=_response(model, n, True))
    return _batches(_head("200 OK", "text/event-stream; charset=utf-8", None), frames)


def openai_responses_whole(model: str, n: int) -> list[bytes]:
    return _whole("application/json", _dumps(_response(model, n, True)))


# -- Ollama ------------------------------------------------------------------------------


def _stamp(i: int) -> str:
    return f"2024-06-10T12:{(i // 60_000_000) % 60:02d}:{(i // 1_000_000) % 60:02d}.{i:09d}Z"


def _ollama_stats(n: int) -> dict[str, Any]:
    return {
        "total_duration": 1_234_567_890,
        "load_duration": 12_345_678,
        "prompt_eval_count": 8,
        "prompt_eval_duration": 23_456_789,
        "eval_count": n,
        "eval_duration": 1_100_000_000,
    }


def ollama_chat(model: str, n: int, stream: bool) -> list[bytes]:
    final: dict[str, Any] = {"model": model, "created_at": _stamp(n)}
    if not stream:
        final["message"] = {"role": "assistant", "content": full_text(n)}
        final.update(done=True, done_reason="stop", **_ollama_stats(n))
        return _whole("application/json; charset=utf-8", _dumps(final))
    frames = [
        _frame(
            _dumps(
                {
                    "model": model,
                    "created_at": _stamp(i),
                    "message": {"role": "assistant", "content": TOKENS[i % len(TOKENS)]},
                    "done": False,
                }
            )
            + b"\n"
        )
        for i in range(n)
    ]
    final["message"] = {"role": "assistant", "content": ""}
    final.update(done=True, done_reason="stop", **_ollama_stats(n))
    frames.append(_frame(_dumps(final) + b"\n"))
    return _batches(_head("200 OK", "application/x-ndjson", None), frames)


def ollama_generate(model: str, n: int, stream: bool) -> list[bytes]:
    final: dict[str, Any] = {"model": model, "created_at": _stamp(n)}
    if not stream:
        final.update(response=full_text(n), done=True, done_reason="stop", **_ollama_stats(n))
        return _whole("application/json; charset=utf-8", _dumps(final))
    frames = [
        _frame(
            _dumps(
                {
                    "model": model,
                    "created_at": _stamp(i),
                    "response": TOKENS[i % len(TOKENS)],
                    "done": False,
                }
            )
            + b"\n"
        )
        for i in range(n)
    ]
    final.update(response="", done=True, done_reason="stop", **_ollama_stats(n))
    frames.append(_frame(_dumps(final) + b"\n"))
    return _batches(_head("200 OK", "application/x-ndjson", None), frames)


def ollama_embed(model: str, count: int) -> list[bytes]:
    vectors = ",".join([_VECTOR_JSON] * count)
    body = (
        f'{{"model":"{model}","embeddings":[{vectors}],"total_duration":12345678,'
        f'"load_duration":1234,"prompt_eval_count":{count * 4}}}'
    ).encode()
    return _whole("application/json; charset=utf-8", body)


# -- routing -----------------------------------------------------------------------------

_CACHE: dict[tuple[Any, ...], list[bytes]] = {}
REQUESTS: Counter[str] = Counter()
"""Requests answered, by "POST <path> stream|whole" (served at `GET /bench/requests`)."""


def _count(model: str) -> int:
    match = _MODEL_N.search(model)
    return int(match.group(1)) if match else 1


def answer(path: str, body: bytes) -> list[bytes]:
    """The pre-built response batches for one request (cached by shape)."""
    try:
        request = json.loads(body) if body else {}
    except ValueError:
        request = {}
    model = str(request.get("model") or "bench")
    n = _count(model)
    embed = path.endswith(("/embeddings", "/api/embed"))
    if embed:
        stream = False
    elif path.startswith("/api/"):
        stream = request.get("stream", True) is not False
    else:
        stream = bool(request.get("stream"))
    REQUESTS[f"POST {path} {'stream' if stream else 'whole'}"] += 1
    if embed:
        texts = request.get("input")
        count = len(texts) if isinstance(texts, list) else 1
        if path.endswith("/api/embed"):
            key: tuple[Any, ...] = ("embed", model, count)
            build = lambda: ollama_embed(model, count)  # noqa: E731
        else:
            b64 = request.get("encoding_format") == "base64"
            key = ("embeddings", model, count, b64)
            build = lambda: openai_embeddings(model, count, b64)  # noqa: E731
    elif path.endswith("/responses"):
        options = request.get("stream_options") or {}
        obfuscation = options.get("include_obfuscation") is not False
        key = ("responses", model, n, stream, obfuscation)
        if stream:
            build = lambda: openai_responses_stream(model, n, obfuscation)  # noqa: E731
        else:
            build = lambda: openai_responses_whole(model, n)  # noqa: E731
    elif path.startswith("/api/"):
        kind = "chat" if path == "/api/chat" else "generate"
        key = (kind, model, n, stream)
        fn = ollama_chat if kind == "chat" else ollama_generate
        build = lambda: fn(model, n, stream)  # noqa: E731
    else:
        chat = path.endswith("/chat/completions")
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        key = ("chat" if chat else "completion", model, n, stream, usage)
        if stream:
            sfn = openai_chat_stream if chat else openai_completion_stream
            build = lambda: sfn(model, n, usage)  # noqa: E731
        else:
            wfn = openai_chat_whole if chat else openai_completion_whole
            build = lambda: wfn(model, n)  # noqa: E731
    batches = _CACHE.get(key)
    if batches is None:
        batches = _CACHE[key] = build()
    return batches


_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n"
    b'{"error":"not found"}'
)
_KNOWN = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/api/chat",
    "/api/generate",
    "/api/embed",
}


class BenchProtocol(asyncio.Protocol):
    """One connection: parse requests, write pre-built batches with flow control."""

    def __init__(self, latency: float) -> None:
        self._latency = latency
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._next()

    def _next(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        path = target.split("?", 1)[0]
        self._busy = True
        asyncio.get_running_loop().create_task(self._respond(method, path, body))

    async def _respond(self, method: str, path: str, body: bytes) -> None:
        if method == "POST" and path in _KNOWN:
            batches = answer(path, body)
        elif method == "GET" and path == "/bench/requests":
            batches = _whole("application/json", _dumps(REQUESTS))
        else:
            batches = [_NOT_FOUND]
        if self._latency:
            await asyncio.sleep(self._latency)
        for batch in batches:
            if self._transport is None:
                return
            if not self._can_write.is_set():
                await self._can_write.wait()
                if self._transport is None:
                    return
            self._transport.write(batch)
        self._busy = False
        if self._buffer:
            self._next()


async def serve(latency: float) -> None:
    loop = asyncio.get_running_loop()
    fast = await loop.create_server(lambda: BenchProtocol(0.0), "127.0.0.1", 0, backlog=1024)
    slow = await loop.create_server(lambda: BenchProtocol(latency), "127.0.0.1", 0, backlog=1024)
    ports = [s.sockets[0].getsockname()[1] for s in (fast, slow)]
    print(f"PORTS {ports[0]} {ports[1]}", flush=True)
    # Stop when the parent closes our stdin (or dies).
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()


def main() -> None:
    parser = argparse.ArgumentParser(description="loopback bench server")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(serve(args.latency_ms / 1000.0))


if __name__ == "__main__":
    main()
