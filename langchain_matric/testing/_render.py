"""Answers rendered as the real servers send them: OpenAI chunks/bodies, Ollama lines/bodies."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langchain_matric.testing._model import Answer, Call
from langchain_matric.testing._types import Fault
from langchain_matric.testing._wire import Style, dumps, sse

_FINGERPRINT = "fp_matric"
_ARG_PIECE = 8  # characters of tool-call arguments per OpenAI delta


def openai_error(status: int, message: str, *, code: str | int | None = None) -> bytes:
    """An OpenAI-shaped error body."""
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_error"
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def ollama_error(message: str) -> bytes:
    """An Ollama-shaped error body."""
    return dumps({"error": message})


def _error_event(fault: Fault, style: Style, *, sse_stream: bool) -> bytes:
    kind = fault.style or ("openai" if sse_stream else "ollama")
    eol = style.eol
    message = fault.message
    error = {"message": message, "type": "server_error", "param": None, "code": fault.code}
    if kind == "openai":
        return sse(dumps({"error": error}), eol)
    if kind == "vllm":
        body = {"object": "error", "message": message, "type": "InternalServerError",
                "param": None, "code": fault.code or 500}  # fmt: skip
        return sse(dumps(body), eol)
    if kind == "event":
        return sse(dumps({"error": error}), eol, event=b"error")
    if kind == "event_no_data":
        return b"event: error" + eol + eol
    if kind == "llamacpp":
        body = {"code": fault.code or 500, "message": message, "type": "server_error"}
        return b"error: " + dumps(body) + eol + eol
    return ollama_error(message) + style.ndjson_eol


def _usage(answer: Answer, extras: Extras | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }
    if extras is not None and extras.cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": extras.cached_tokens}
    if answer.reasoning:
        words = len("".join(answer.reasoning).split())
        usage["completion_tokens_details"] = {"reasoning_tokens": words}
    return usage


@dataclass(frozen=True, slots=True)
class Extras:
    """What an OpenAI request asked for beyond the answer: choices, logprobs, cache hits."""

    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    cached_tokens: int = 0
    service_tier: str | None = None


_ALTERNATIVES = (" the", " a", " and", " of", " to")


def logprob_entry(token: str, position: int, top: int) -> dict[str, Any]:
    """A deterministic chat `logprobs.content` entry for one output token (a word piece).

    Example:
        >>> logprob_entry(" hi", 0, 1)["logprob"], logprob_entry(" hi", 0, 1)["top_logprobs"][0]
        (-0.1, {'token': ' hi', 'logprob': -0.1, 'bytes': [32, 104, 105]})
    """
    value = -round(0.1 * (1 + position % 5), 1)
    entry: dict[str, Any] = {"token": token, "logprob": value, "bytes": list(token.encode())}
    tops = [{"token": token, "logprob": value, "bytes": entry["bytes"]}]
    for k, alt in enumerate(_ALTERNATIVES[: max(0, top - 1)]):
        tops.append(
            {"token": alt, "logprob": round(value - 1.0 - k, 1), "bytes": list(alt.encode())}
        )
    entry["top_logprobs"] = tops[:top]
    return entry


class _Base:
    """Shared state of a renderer."""

    sse = True
    stream_content_type = "text/event-stream; charset=utf-8"

    def __init__(
        self,
        answer: Answer,
        style: Style,
        request_id: str,
        *,
        include_usage: bool = False,
        extras: Extras | None = None,
    ) -> None:
        self.answer = answer
        self.style = style
        self.request_id = request_id
        self.include_usage = include_usage
        self.extras = extras or Extras()
        self.created = int(time.time())

    def terminator(self) -> bytes | None:
        """``data: [DONE]``."""
        return sse(b"[DONE]", self.style.eol)

    def error_event(self, fault: Fault) -> bytes:
        """An in-stream error event."""
        return _error_event(fault, self.style, sse_stream=self.sse)


class OpenAIChat(_Base):
    """``/v1/chat/completions``."""

    def _prefix(self, obj: str) -> bytes:
        tier = self.extras.service_tier
        return (
            f'{{"id":"chatcmpl-{self.request_id}","object":"{obj}","created":{self.created},'
            f'"model":{json.dumps(self.answer.model)},"system_fingerprint":"{_FINGERPRINT}",'
            + (f'"service_tier":{json.dumps(tier)},' if tier is not None else "")
        ).encode()

    def _logprobs(self, pieces: list[str]) -> dict[str, Any] | None:
        extras = self.extras
        if not extras.logprobs:
            return None
        return {"content": [logprob_entry(p, i, extras.top_logprobs) for i, p in enumerate(pieces)]}

    def events(self) -> list[bytes]:
        """One SSE event per delta."""
        answer, style = self.answer, self.style
        eol = style.eol
        head = self._prefix("chat.completion.chunk") + b'"choices":[{"index":0,"delta":'
        tail = b',"logprobs":null,"finish_reason":null}]'
        tail += b',"usage":null}' if self.include_usage else b"}"

        def chunk(delta: dict[str, Any]) -> bytes:
            return sse(head + dumps(delta) + tail, eol)

        events = [chunk({"role": "assistant", "content": ""})]
        events.extend(chunk({style.reasoning_field: piece}) for piece in answer.reasoning)
        if self.extras.logprobs:
            events.extend(self._logprob_chunk(0, i, piece) for i, piece in enumerate(answer.text))
        else:
            events.extend(chunk({"content": piece}) for piece in answer.text)
        for index, call in enumerate(answer.tool_calls):
            events.extend(chunk({"tool_calls": [d]}) for d in self._call_deltas(index, call))
        finish = dumps(answer.finish_reason)
        last = head + b'{},"logprobs":null,"finish_reason":' + finish + b"}]"
        last += b',"usage":null}' if self.include_usage else b"}"
        events.append(sse(last, eol))
        for choice in range(1, self.extras.n):  # the other choices after the first, in order
            events.extend(self._logprob_chunk(choice, i, p) for i, p in enumerate(answer.text))
            other = self._choice_chunk(choice, {}, None, answer.finish_reason)
            events.append(other)
        if self.include_usage:
            usage = self._prefix("chat.completion.chunk") + b'"choices":[],"usage":'
            events.append(sse(usage + dumps(_usage(answer, self.extras)) + b"}", eol))
        return events

    def _choice_chunk(
        self, choice: int, delta: dict[str, Any], logprobs: Any, finish: str | None
    ) -> bytes:
        body = {"index": choice, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        head = self._prefix("chat.completion.chunk") + b'"choices":['
        tail = b'],"usage":null}' if self.include_usage else b"]}"
        return sse(head + dumps(body) + tail, self.style.eol)

    def _logprob_chunk(self, choice: int, position: int, piece: str) -> bytes:
        logprobs = None
        if self.extras.logprobs:
            logprobs = {"content": [logprob_entry(piece, position, self.extras.top_logprobs)]}
        return self._choice_chunk(choice, {"content": piece}, logprobs, None)

    def _call_deltas(self, index: int, call: Call) -> list[dict[str, Any]]:
        args = call.arguments
        pieces = [args[i : i + _ARG_PIECE] for i in range(0, len(args), _ARG_PIECE)]
        ident = {"index": index, "id": call.id, "type": "function"}
        deltas: list[dict[str, Any]] = [{**ident, "function": {"name": call.name, "arguments": ""}}]
        for piece in pieces:
            if self.style.repeat_tool_call_ids:
                deltas.append({**ident, "function": {"name": call.name, "arguments": piece}})
            else:
                deltas.append({"index": index, "function": {"arguments": piece}})
        return deltas

    def content_delta(self, text: str) -> bytes:
        """A content chunk."""
        head = self._prefix("chat.completion.chunk") + b'"choices":[{"index":0,"delta":'
        delta = dumps({"content": text})
        return sse(head + delta + b',"logprobs":null,"finish_reason":null}]}', self.style.eol)

    def whole(self) -> bytes:
        """The ``chat.completion`` body."""
        answer = self.answer
        text = "".join(answer.text)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if answer.tool_calls and not text else text,
        }
        if answer.reasoning:
            message[self.style.reasoning_field] = "".join(answer.reasoning)
        if answer.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in answer.tool_calls
            ]  # fmt: skip
        logprobs = self._logprobs(answer.text)
        choices = [
            {"index": i, "message": message, "logprobs": logprobs,
             "finish_reason": answer.finish_reason}
            for i in range(self.extras.n)
        ]  # fmt: skip
        rest = {"choices": choices, "usage": _usage(answer, self.extras)}
        return self._prefix("chat.completion") + dumps(rest)[1:]


class OpenAICompletion(_Base):
    """``/v1/completions`` (text completions; reasoning and tool calls are not sent)."""

    def _legacy_logprobs(self, pieces: list[str], start: int = 0) -> dict[str, Any] | None:
        if not self.extras.logprobs:
            return None
        entries = [
            logprob_entry(p, start + i, self.extras.top_logprobs) for i, p in enumerate(pieces)
        ]
        return {
            "tokens": pieces,
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [
                {t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries
            ],
            "text_offset": [sum(map(len, pieces[:i])) for i in range(len(pieces))],
        }

    def _chunk(self, text: str, finish: str | None, position: int = 0, index: int = 0) -> bytes:
        logprobs = self._legacy_logprobs([text], position) if text else None
        body = {
            "id": f"cmpl-{self.request_id}", "object": "text_completion",
            "created": self.created, "model": self.answer.model,
            "system_fingerprint": _FINGERPRINT,
            "choices": [{"text": text, "index": index, "logprobs": logprobs,
                         "finish_reason": finish}],
        }  # fmt: skip
        if self.include_usage:
            body["usage"] = None
        return sse(dumps(body), self.style.eol)

    def events(self) -> list[bytes]:
        """One SSE event per text piece, a finish chunk, the usage chunk if asked."""
        events: list[bytes] = []
        for choice in range(self.extras.n):
            events.extend(self._chunk(p, None, i, choice) for i, p in enumerate(self.answer.text))
            events.append(self._chunk("", self.answer.finish_reason, 0, choice))
        if self.include_usage:
            body = {
                "id": f"cmpl-{self.request_id}", "object": "text_completion",
                "created": self.created, "model": self.answer.model,
                "choices": [], "usage": _usage(self.answer, self.extras),
            }  # fmt: skip
            events.append(sse(dumps(body), self.style.eol))
        return events

    def content_delta(self, text: str) -> bytes:
        """A text chunk."""
        return self._chunk(text, None)

    def whole(self) -> bytes:
        """The ``text_completion`` body."""
        answer = self.answer
        return dumps({
            "id": f"cmpl-{self.request_id}", "object": "text_completion",
            "created": self.created, "model": answer.model, "system_fingerprint": _FINGERPRINT,
            "choices": [{"text": "".join(answer.text), "index": i,
                         "logprobs": self._legacy_logprobs(answer.text),
                         "finish_reason": answer.finish_reason} for i in range(self.extras.n)],
            "usage": _usage(answer, self.extras),
        })  # fmt: skip


class _Ollama(_Base):
    sse = False
    stream_content_type = "application/x-ndjson"

    def __init__(self, answer: Answer, style: Style, request_id: str) -> None:
        super().__init__(answer, style, request_id)
        now = datetime.fromtimestamp(self.created, UTC)
        self.created_at = now.strftime("%Y-%m-%dT%H:%M:%S.000000000Z")

    def terminator(self) -> bytes | None:
        """None: the last line carries ``done: true``."""
        return None

    def _line(self, obj: dict[str, Any]) -> bytes:
        return dumps({"model": self.answer.model, "created_at": self.created_at, **obj}) + (
            self.style.ndjson_eol
        )

    def _done(self) -> dict[str, Any]:
        answer = self.answer
        prompt, completion = answer.prompt_tokens, answer.completion_tokens
        return {
            "done": True,
            "done_reason": "length" if answer.finish_reason == "length" else "stop",
            "total_duration": 1_000_000 * (prompt + completion) + 500_000,
            "load_duration": 500_000,
            "prompt_eval_count": prompt,
            "prompt_eval_duration": 1_000_000 * prompt,
            "eval_count": completion,
            "eval_duration": 1_000_000 * completion,
        }

    def _tool_calls(self) -> list[dict[str, Any]]:
        calls = []
        for index, call in enumerate(self.answer.tool_calls):
            item: dict[str, Any] = {
                "function": {"index": index, "name": call.name, "arguments": call.arguments_object}
            }
            if self.style.ollama_tool_call_ids:
                item = {"id": call.id, **item}
            calls.append(item)
        return calls


class OllamaChat(_Ollama):
    """``/api/chat``."""

    def _message(self, content: str, **extra: Any) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": content, **extra}}

    def events(self) -> list[bytes]:
        """Thinking lines, content lines, one tool-call line, the ``done`` line."""
        answer = self.answer
        lines = [
            self._line({**self._message("", thinking=piece), "done": False})
            for piece in answer.reasoning
        ]
        lines.extend(self._line({**self._message(piece), "done": False}) for piece in answer.text)
        if answer.tool_calls:
            message = self._message("", tool_calls=self._tool_calls())
            lines.append(self._line({**message, "done": False}))
        lines.append(self._line({**self._message(""), **self._done()}))
        return lines

    def content_delta(self, text: str) -> bytes:
        """A content line."""
        return self._line({**self._message(text), "done": False})

    def whole(self) -> bytes:
        """The non-streaming body."""
        answer = self.answer
        extra: dict[str, Any] = {}
        if answer.reasoning:
            extra["thinking"] = "".join(answer.reasoning)
        if answer.tool_calls:
            extra["tool_calls"] = self._tool_calls()
        body = {**self._message("".join(answer.text), **extra), **self._done()}
        return self._line(body).rstrip()


class OllamaGenerate(_Ollama):
    """``/api/generate``."""

    def events(self) -> list[bytes]:
        """Thinking lines, response lines, the ``done`` line."""
        answer = self.answer
        lines = [
            self._line({"response": "", "thinking": piece, "done": False})
            for piece in answer.reasoning
        ]
        lines.extend(self._line({"response": p, "done": False}) for p in answer.text)
        lines.append(self._line({"response": "", **self._done(), "context": [1, 2, 3]}))
        return lines

    def content_delta(self, text: str) -> bytes:
        """A response line."""
        return self._line({"response": text, "done": False})

    def whole(self) -> bytes:
        """The non-streaming body."""
        answer = self.answer
        body: dict[str, Any] = {"response": "".join(answer.text)}
        if answer.reasoning:
            body["thinking"] = "".join(answer.reasoning)
        body.update(self._done())
        body["context"] = [1, 2, 3]
        return self._line(body).rstrip()
