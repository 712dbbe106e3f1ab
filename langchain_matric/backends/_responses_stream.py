"""`ResponsesStreamParser`: a Responses API event stream to deltas, with no I/O.

Events are told apart by their JSON `type` (the SSE `event:` name when it has none).
Servers differ (docs/architecture.md): every field but `type` may be absent, so an
event's item is found by `item_id` against the added item's `id` or `call_id`, then
by `output_index`, then as the last open item of that kind (llama.cpp sends no
`output_index`, and an earlier llama-server gave function-call items only a `call_id`,
which their argument deltas used as `item_id`). Finish reason and usage come from the
terminal response (`response.completed` / `response.incomplete`), parsed as a whole
answer is, reading its `status`, not the event's name (vLLM reports a length stop
inside `response.completed`). An event with a top-level `error`, an `error` event and
`response.failed` raise typed errors with `partial`; a body that ends before a terminal
event is a truncated `StreamError`; unknown events are ignored.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_matric._json import fast_loads, text_of
from langchain_matric._text import mend
from langchain_matric.backends._openai_wire import SSETextParser
from langchain_matric.backends._responses_wire import (
    finish_reason_of,
    parse_responses_response,
    part_logprobs,
    part_texts,
    raise_response_error,
)
from langchain_matric.backends._types import (
    GenerationDelta,
    ToolCallDelta,
    keep_undelivered,
)
from langchain_matric.errors import MatricError, StreamError

__all__ = ["ResponsesStreamParser"]

_TEXT = "response.output_text.delta"
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _Call:
    """A function-call item seen in the stream (added, given arguments, done)."""

    __slots__ = ("call_id", "id", "index", "open", "output_index", "sent_arguments")

    def __init__(self, item: dict[str, Any], output_index: Any, index: int) -> None:
        self.id = item.get("id")
        self.call_id = item.get("call_id")
        self.output_index = output_index
        self.index = index
        self.open = True
        self.sent_arguments = False


class ResponsesStreamParser(SSETextParser):
    r"""Responses API SSE events to `GenerationDelta`s (the `StreamParser` shape).

    Example:
        >>> parser = ResponsesStreamParser("http://127.0.0.1/v1/responses")
        >>> events = (
        ...     b'event: response.output_text.delta\n'
        ...     b'data: {"type":"response.output_text.delta","delta":"Hi"}\n\n'
        ...     b'data: {"type":"response.completed","response":{"status":"completed",'
        ...     b'"output":[],"usage":{"input_tokens":2,"output_tokens":1}}}\n\n')
        >>> [(d.text, d.finish_reason) for d in parser.feed(events)]
        [('Hi', None), ('', 'stop')]
        >>> parser.done, parser.partial
        (True, 'Hi')
    """

    def __init__(self, url: str, *, max_line_size: int = 32 * 1024 * 1024) -> None:
        super().__init__(url, max_line_size=max_line_size)
        self._reasoned = False
        self._logprobs_sent = False
        self._calls: list[_Call] = []
        self._model_sent = False
        self.done = False
        self.response_id: str | None = None
        """The response's id, from `response.created` (or a later event that has it)."""

    def feed(self, data: bytes) -> list[GenerationDelta]:
        """Consume body bytes."""
        deltas: list[GenerationDelta] = []
        try:
            name, rest = "", data
            end = data.find(b"\n")
            if end > 0 and data.startswith(b"event: ") and data.find(b"\r") < 0:  # the usual
                name, rest = data[7:end].decode("utf-8", "replace"), data[end + 1 :]
            # Whole single-line `data:` events (the first one named by that `event:` line):
            # no event objects, no line splitting. Anything else goes through `feed`.
            values = self._decoder.feed_plain(rest) if rest else None
            if values is not None:
                for value in values:
                    self._on_data(value, name, deltas)
                    if self.done:
                        break
                    name = ""
                return deltas
            for event in self._decoder.feed(data):
                self._on_data(event.data, event.event, deltas)
                if self.done:
                    break
        except MatricError as error:
            keep_undelivered(error, deltas)  # the driver yields them before the error
            raise
        return deltas

    def finish(self) -> list[GenerationDelta]:
        """Consume a clean end of the body: without a terminal event, it is truncated."""
        self._decoder.flush()
        if not self.done:
            msg = (
                f"stream from {self._url} ended before response.completed: the answer is "
                f"truncated ({len(self.partial)} characters kept)"
            )
            raise StreamError(msg, partial=self.partial)
        return []

    # -- events --------------------------------------------------------------------------

    def _on_data(self, data: str | bytes, name: str, deltas: list[GenerationDelta]) -> None:
        if not data:
            if name == "error":
                said = {"error": "the server sent `event: error`"}
                raise_response_error(said, self._url, partial=self.partial)
            return
        if data == b"[DONE]" or data == "[DONE]":  # noqa: PLR1714 - bytes or str
            return
        try:
            obj = fast_loads(data)
        except ValueError:
            obj = self._lenient_loads(data)
        if not isinstance(obj, dict):
            line = text_of(data)[:200]
            msg = f"unexpected data line from {self._url}: {line!r}"
            raise StreamError(msg, partial=self.partial, line=line)
        kind = obj.get("type") or name
        if kind != _TEXT or "error" in obj:
            self._on_event(obj, kind, name, deltas)
            return
        # The hot path: one text delta, inline (a method call per event costs more).
        text = obj.get("delta")
        logprobs = obj.get("logprobs")  # `[]` unless asked for
        if logprobs:
            self._logprobs_sent = True
        if isinstance(text, str) and text:
            if self._joiner is not None:
                text = self._joiner.feed(text)  # half a pair waits for the next delta
            self._pieces.append(text)
            deltas.append(GenerationDelta(text, logprobs=logprobs or None))
        elif logprobs:
            deltas.append(GenerationDelta(logprobs=logprobs))

    def _on_event(
        self, obj: dict[str, Any], kind: Any, name: str, deltas: list[GenerationDelta]
    ) -> None:
        """Every event but a text delta: errors, reasoning, items, calls, the end."""
        if obj.get("error") or kind == "error" or name == "error" or obj.get("object") == "error":
            if not (obj.get("error") or obj.get("object") == "error"):  # an `error` event
                obj = {**obj, "type": "error"} if "message" in obj else {"error": obj}
            raise_response_error(obj, self._url, partial=self.partial)
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            text = obj.get("delta")
            if isinstance(text, str) and text:
                self._reasoned = True
                deltas.append(GenerationDelta("", text if self._joiner is None else mend(text)))
        elif kind == "response.function_call_arguments.delta":
            self._on_arguments(obj, deltas)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            self._on_item(obj, deltas, done=kind == "response.output_item.done")
        elif kind == "response.function_call_arguments.done":
            call = self._find(obj)
            arguments = obj.get("arguments")
            if call is not None and not call.sent_arguments and isinstance(arguments, str):
                self._send_arguments(call, arguments, deltas)
        elif kind in _TERMINAL:
            self._on_terminal(obj, deltas)
        elif kind in ("response.created", "response.in_progress"):
            response = obj.get("response")
            if not isinstance(response, dict):
                return
            if self.response_id is None and isinstance(response.get("id"), str):
                self.response_id = response["id"] or None
            model = response.get("model")
            if model and not self._model_sent:
                self._model_sent = True
                deltas.append(GenerationDelta(model=model))

    def _find(self, obj: dict[str, Any]) -> _Call | None:
        """The function call an event is about: `item_id`, `output_index`, last open."""
        calls = self._calls
        item_id = obj.get("item_id")
        if item_id is not None:
            for call in calls:
                if item_id in (call.id, call.call_id):
                    return call
        output_index = obj.get("output_index")
        if output_index is not None:
            for call in calls:
                if call.output_index == output_index:
                    return call
        for call in reversed(calls):
            if call.open:
                return call
        return None

    def _on_item(self, obj: dict[str, Any], deltas: list[GenerationDelta], *, done: bool) -> None:
        item = obj.get("item")
        if not isinstance(item, dict):
            return
        kind = item.get("type")
        if kind == "function_call":
            call = None
            if done:
                ident = item.get("id") or item.get("call_id")
                call = self._find({"item_id": ident, "output_index": obj.get("output_index")})
            if call is None:
                call = _Call(item, obj.get("output_index"), len(self._calls))
                self._calls.append(call)
                call_id = call.call_id or call.id or f"call_{call.index}"
                name = item.get("name") or ""
                deltas.append(
                    GenerationDelta(tool_call_deltas=(ToolCallDelta(call.index, call_id, name),))
                )
            arguments = item.get("arguments")
            if isinstance(arguments, str) and arguments and not call.sent_arguments:
                self._send_arguments(call, arguments, deltas)
            if done:
                call.open = False
        elif done and kind == "message":
            parts = item.get("content")
            text = "" if self._pieces else "".join(part_texts(parts, ("output_text", "text")))
            logprobs = None if self._logprobs_sent else part_logprobs(parts)
            if text:  # a server that sent the item but no text deltas
                self._pieces.append(text)
            if logprobs:  # ... or no logprobs on them
                self._logprobs_sent = True
            if text or logprobs:
                deltas.append(GenerationDelta(text=text, logprobs=logprobs or None))
        elif done and kind == "reasoning" and not self._reasoned:
            found = part_texts(item.get("content"), ("reasoning_text", "text"))
            text = "".join(found or part_texts(item.get("summary"), ("summary_text",)))
            if text:
                self._reasoned = True
                deltas.append(GenerationDelta(reasoning=text))

    def _on_arguments(self, obj: dict[str, Any], deltas: list[GenerationDelta]) -> None:
        piece = obj.get("delta")
        if not isinstance(piece, str):
            piece = json.dumps(piece) if piece is not None else ""
        if not piece:
            return
        call = self._find(obj)
        if call is None:
            msg = (
                f"stream from {self._url} sent function-call arguments for an item it never "
                f"announced (item_id={obj.get('item_id')!r})"
            )
            raise StreamError(msg, partial=self.partial)
        self._send_arguments(call, piece, deltas)

    @staticmethod
    def _send_arguments(call: _Call, piece: str, deltas: list[GenerationDelta]) -> None:
        call.sent_arguments = True
        delta = ToolCallDelta(call.index, None, None, piece)
        deltas.append(GenerationDelta(tool_call_deltas=(delta,)))

    def _on_terminal(self, obj: dict[str, Any], deltas: list[GenerationDelta]) -> None:
        response = obj.get("response")
        if not isinstance(response, dict):
            msg = f"stream from {self._url} sent {obj.get('type')} without its response"
            raise StreamError(msg, partial=self.partial)
        if obj.get("type") == "response.failed" and response.get("status") != "failed":
            response = {**response, "status": "failed"}
        raise_response_error(response, self._url, partial=self.partial)
        if not isinstance(response.get("output"), list):
            response = {**response, "output": []}
        whole = parse_responses_response(response, self._url)
        self.response_id = whole.response_id or self.response_id
        # What the events did not carry (a server that sends only items or only the end).
        if whole.text and not self._pieces:
            self._pieces.append(whole.text)
            deltas.append(GenerationDelta(text=whole.text))
        if whole.reasoning and not self._reasoned:
            deltas.append(GenerationDelta(reasoning=whole.reasoning))
        if whole.logprobs and not self._logprobs_sent:  # only in the items, not the deltas
            self._logprobs_sent = True
            deltas.append(GenerationDelta(logprobs=whole.logprobs))
        if whole.tool_calls and not self._calls:
            for index, call in enumerate(whole.tool_calls):
                delta = ToolCallDelta(index, call.id, call.name, call.arguments)
                deltas.append(GenerationDelta(tool_call_deltas=(delta,)))
                self._calls.append(_Call({"call_id": call.id}, None, index))
        held = self._joiner.flush() if self._joiner is not None else ""  # half a pair, at the end
        if held:
            self._pieces.append(held)
            deltas.append(GenerationDelta(text=held))
        finish = finish_reason_of(response, called_tools=bool(self._calls))
        model = None if self._model_sent else whole.model
        self._model_sent = True
        deltas.append(
            GenerationDelta(
                finish_reason=finish, usage=whole.usage, model=model, response_id=self.response_id
            )
        )
        self.done = True
