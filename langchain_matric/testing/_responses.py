"""The OpenAI Responses API (`/v1/responses`): requests reduced for the model, answers rendered.

Three event shapes, as real servers send them (`Style.responses_shape`):

- "openai": `sequence_number` and `output_index` on every event, reasoning as a summary
  (`response.reasoning_summary_text.delta`), a length stop as `response.incomplete`.
- "vllm": reasoning text (`response.reasoning_text.delta`), bare hex item ids, a length
  stop as `status: "incomplete"` inside `response.completed`.
- "llamacpp": as llama.cpp's `llama-server` sends them (seen in the live suite): no
  `output_index` or `sequence_number`; function-call items with `id` (`fc_...`, the
  argument deltas' `item_id`) and `call_id`; status always `completed`, a length stop too.

Logprobs come when `include` asks for `message.output_text.logprobs` (`top_logprobs`
alternatives each): on every text delta, in the `output_text.done` event and in the part.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_matric.testing._model import Answer, Prompt, _int, _stop_list, _tools, content_text
from langchain_matric.testing._render import logprob_entry
from langchain_matric.testing._types import Fault
from langchain_matric.testing._wire import Style, dumps, sse

LOGPROBS = "message.output_text.logprobs"
"""The `include` entry that asks for the output text's logprobs."""


def responses_prompt(body: dict[str, Any], default_model: str) -> Prompt:
    """Reduce a `/v1/responses` request to what the model looks at."""
    messages: list[tuple[str, str]] = []
    if isinstance(body.get("instructions"), str):
        messages.append(("system", body["instructions"]))
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append(("user", raw))
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            messages.append((str(item.get("role", "user")), content_text(item.get("content"))))
        elif kind == "function_call":
            messages.append(("assistant", ""))
        elif kind == "function_call_output":
            messages.append(("tool", content_text(item.get("output"))))
    reasoning = body.get("reasoning")
    prompt = Prompt(
        model=str(body.get("model") or default_model),
        messages=messages,
        tools=_tools(body.get("tools")),
        tool_choice=body.get("tool_choice"),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        max_tokens=_int(body.get("max_output_tokens")),
        stop=_stop_list(body.get("stop")),
        think=isinstance(reasoning, dict) and reasoning.get("effort") not in (None, "none"),
    )
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            prompt.schema = schema if isinstance(schema, dict) else {"type": "object"}
        elif fmt.get("type") == "json_object":
            prompt.json_object = True
    return prompt


class OpenAIResponses:
    """``/v1/responses``: the whole response object, or its event stream."""

    sse = True
    stream_content_type = "text/event-stream; charset=utf-8"

    def __init__(
        self,
        answer: Answer,
        style: Style,
        request_id: str,
        *,
        cached_tokens: int = 0,
        store: bool = False,
        previous_response_id: str | None = None,
        top_logprobs: int | None = None,
    ) -> None:
        self.answer = answer
        self.top_logprobs = top_logprobs
        """None: logprobs not asked for (`include`); else the alternatives per token."""
        self.store = store
        self.previous_response_id = previous_response_id
        """Echoed in the response object, as OpenAI does (accepted, not looked up)."""
        self.style = style
        self.shape = style.responses_shape
        self.request_id = request_id
        self.cached_tokens = cached_tokens
        self.created = int(time.time())
        self._sequence = 0
        prefix = "" if self.shape == "vllm" else "msg_"
        self.message_id = f"{prefix}{request_id}m"
        self.reasoning_id = f"{'' if self.shape == 'vllm' else 'rs_'}{request_id}r"

    # -- the response object ---------------------------------------------------------

    def _call_item(self, index: int, *, done: bool) -> dict[str, Any]:
        call = self.answer.tool_calls[index]
        item: dict[str, Any] = {
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments if done else "",
            "id": f"fc_{self.request_id}_{index}",
        }
        item["status"] = "completed" if done else "in_progress"
        return item

    def _reasoning_item(self, *, done: bool) -> dict[str, Any]:
        text = "".join(self.answer.reasoning) if done else ""
        item: dict[str, Any] = {"id": self.reasoning_id, "type": "reasoning"}
        if self.shape == "openai":
            item["summary"] = [{"type": "summary_text", "text": text}] if done else []
        else:
            item["summary"] = []
            item["content"] = [{"type": "reasoning_text", "text": text}] if done else []
        return item

    def _logprobs(self, position: int, piece: str) -> list[dict[str, Any]]:
        """One piece's entries: one when asked for, none otherwise (as OpenAI sends `[]`)."""
        if self.top_logprobs is None:
            return []
        return [logprob_entry(piece, position, self.top_logprobs)]

    def _all_logprobs(self) -> list[dict[str, Any]]:
        return [e for i, p in enumerate(self.answer.text) for e in self._logprobs(i, p)]

    def _message_item(self, *, done: bool) -> dict[str, Any]:
        part: dict[str, Any] = {
            "type": "output_text",
            "text": "".join(self.answer.text),
            "annotations": [],
        }
        if self.top_logprobs is not None:
            part["logprobs"] = self._all_logprobs()
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "status": "completed" if done else "in_progress",
            "content": [part] if done else [],
        }

    def _output(self) -> list[dict[str, Any]]:
        answer = self.answer
        output = [self._reasoning_item(done=True)] if answer.reasoning else []
        if answer.text or not answer.tool_calls:
            output.append(self._message_item(done=True))
        output.extend(self._call_item(i, done=True) for i in range(len(answer.tool_calls)))
        return output

    def _usage(self) -> dict[str, Any]:
        answer = self.answer
        reasoning = len("".join(answer.reasoning).split())
        return {
            "input_tokens": answer.prompt_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": answer.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }

    def _status(self) -> str:
        if self.answer.finish_reason == "length" and self.shape != "llamacpp":
            return "incomplete"
        return "completed"

    def response(self, *, done: bool = True) -> dict[str, Any]:
        """The response object (in progress: no output or usage yet)."""
        status = self._status() if done else "in_progress"
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": f"resp_{self.request_id}",
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "model": self.answer.model,
            "output": self._output() if done else [],
            "usage": self._usage() if done else None,
            "store": self.store,
            "previous_response_id": self.previous_response_id,
        }

    def whole(self) -> bytes:
        """The non-streaming body."""
        return dumps(self.response())

    # -- events ----------------------------------------------------------------------

    def _event(self, kind: str, output_index: int | None = None, **fields: Any) -> bytes:
        obj: dict[str, Any] = {"type": kind}
        if self.shape != "llamacpp":
            obj["sequence_number"] = self._sequence
            if output_index is not None:
                obj["output_index"] = output_index
        self._sequence += 1
        obj.update(fields)
        return sse(dumps(obj), self.style.eol, event=kind.encode())

    def events(self) -> list[bytes]:
        """created, in_progress, reasoning, message, function calls, then the terminal event."""
        answer, event = self.answer, self._event
        events = [
            event("response.created", response=self.response(done=False)),
            event("response.in_progress", response=self.response(done=False)),
        ]
        index = 0
        if answer.reasoning:
            kind = (
                "response.reasoning_summary_text.delta"
                if self.shape == "openai"
                else "response.reasoning_text.delta"
            )
            rid = self.reasoning_id
            events.append(
                event("response.output_item.added", index, item=self._reasoning_item(done=False))
            )
            events.extend(event(kind, index, item_id=rid, delta=p) for p in answer.reasoning)
            events.append(
                event("response.output_item.done", index, item=self._reasoning_item(done=True))
            )
            index += 1
        if answer.text or not answer.tool_calls:
            mid = self.message_id
            events.append(
                event("response.output_item.added", index, item=self._message_item(done=False))
            )
            events.extend(
                event(
                    "response.output_text.delta",
                    index,
                    item_id=mid,
                    content_index=0,
                    delta=piece,
                    logprobs=self._logprobs(position, piece),
                )
                for position, piece in enumerate(answer.text)
            )
            done: dict[str, Any] = {"text": "".join(answer.text)}
            if self.top_logprobs is not None:
                done["logprobs"] = self._all_logprobs()
            events.append(
                event("response.output_text.done", index, item_id=mid, content_index=0, **done)
            )
            events.append(
                event("response.output_item.done", index, item=self._message_item(done=True))
            )
            index += 1
        for i, call in enumerate(answer.tool_calls):
            added = self._call_item(i, done=False)
            item_id = added.get("id", call.id)
            events.append(event("response.output_item.added", index, item=added))
            args = call.arguments
            events.extend(
                event(
                    "response.function_call_arguments.delta",
                    index,
                    item_id=item_id,
                    delta=args[k : k + 8],
                )
                for k in range(0, len(args), 8)
            )
            events.append(
                event(
                    "response.function_call_arguments.done", index, item_id=item_id, arguments=args
                )
            )
            events.append(
                event("response.output_item.done", index, item=self._call_item(i, done=True))
            )
            index += 1
        final = self.response()
        terminal = "response.completed"
        if final["status"] == "incomplete" and self.shape == "openai":
            terminal = "response.incomplete"
        events.append(event(terminal, response=final))
        return events

    def terminator(self) -> bytes | None:
        """None: the terminal event is the last of `events`."""
        return None

    def content_delta(self, text: str) -> bytes:
        """A text delta event."""
        return self._event(
            "response.output_text.delta", 0, item_id=self.message_id, content_index=0, delta=text
        )

    def error_event(self, fault: Fault) -> bytes:
        """An in-stream error in the fault's style.

        "event" is `response.failed`, "llamacpp" a bare `data: {"error": ...}`, "vllm"
        `{"object": "error", ...}`, anything else an `error` event.
        """
        code = fault.code if fault.code is not None else "server_error"
        error = {"code": code, "message": fault.message}
        if fault.style == "event":
            failed = {**self.response(done=False), "status": "failed", "error": error}
            return self._event("response.failed", response=failed)
        if fault.style == "llamacpp":
            said = {"code": fault.code or 500, "message": fault.message, "type": "server_error"}
            return sse(dumps({"error": said}), self.style.eol)
        if fault.style == "vllm":
            body: dict[str, Any] = {
                "object": "error",
                "message": fault.message,
                "type": "InternalServerError",
                "param": None,
                "code": fault.code or 500,
            }
            return sse(dumps(body), self.style.eol)
        return self._event("error", code=code, message=fault.message, param=None)
