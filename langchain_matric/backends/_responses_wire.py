"""The OpenAI Responses API wire format, with no I/O: payloads out, whole answers in.

`POST {base}/responses` (OpenAI, vLLM, Ollama's /v1, llama.cpp's `llama-server`, LM
Studio), mapped to and from the same `GenerationRequest` / `Generation` types as the
chat-completions wire (`_openai_wire`), so every adapter feature works unchanged. The
stream parser is in `_responses_stream`. Where each piece lives: docs/architecture.md.

What the API lacks is not sent: `seed`, `stop` (the adapters cut at a stop sequence
client-side, as they do when a chat server ignores one) and `logit_bias`; `n` > 1 is a
`ConfigurationError`. Requests are stateless (`store: false`) unless `store` or
`previous_response_id` is passed as a provider extra.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_matric.backends._openai_wire import raise_body_error
from langchain_matric.backends._types import (
    ChatMessage,
    Generation,
    GenerationRequest,
    ToolCall,
    Usage,
)
from langchain_matric.errors import BackendHTTPError, ConfigurationError

__all__ = [
    "finish_reason_of",
    "input_items",
    "parse_responses_response",
    "raise_response_error",
    "reasoning_item",
    "responses_payload",
    "responses_tool",
    "responses_tool_choice",
    "text_format",
    "usage_from_responses",
]

_TOOL_CHOICE_WORDS = {"auto": "auto", "none": "none", "required": "required", "any": "required"}
_CODE_STATUS = {
    "rate_limit_exceeded": 429,
    "invalid_prompt": 400,
    "context_length_exceeded": 400,
}
"""Error codes of failed responses and `error` events, as the HTTP status they stand for
(others, such as "server_error", are classified by their message: a context overflow
reported as a server error is still a `ContextLengthExceededError`)."""
_NOT_SENT = frozenset({"seed", "stop", "logit_bias", "n"})
"""Provider extras the Responses API has no field for (`n` is checked first)."""


# ---------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------


def input_items(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """A conversation as Responses `input` items.

    Every message is a `{"type": "message", ...}` item (llama.cpp rejects the short form
    without `type`); an assistant's tool calls are `function_call` items after its text
    (an assistant turn with no text sends only those), a tool result is a
    `function_call_output`.

    Example:
        >>> from langchain_matric.backends import ChatMessage, ToolCall
        >>> call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
        >>> items = input_items([ChatMessage("user", "Weather?"),
        ...                      ChatMessage("assistant", tool_calls=[call]),
        ...                      ChatMessage("tool", "sunny", tool_call_id="call_1")])
        >>> [item["type"] for item in items]
        ['message', 'function_call', 'function_call_output']
        >>> items[0]["content"]
        [{'type': 'input_text', 'text': 'Weather?'}]
    """
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.role
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id or "",
                    "output": message.content,
                }
            )
            continue
        if role == "assistant":
            if message.reasoning:  # set only when the caller opted in
                items.append(reasoning_item(message.reasoning))
            if message.content or not message.tool_calls:
                part = {"type": "output_text", "text": message.content, "annotations": []}
                items.append({"type": "message", "role": "assistant", "content": [part]})
            items.extend(
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
                for c in message.tool_calls
            )
            continue
        content: list[dict[str, Any]] = []
        if message.content or not message.images:
            content.append({"type": "input_text", "text": message.content})
        content.extend(
            {"type": "input_image", "image_url": url, "detail": "auto"} for url in message.images
        )
        items.append({"type": "message", "role": role, "content": content})
    return items


def reasoning_item(text: str) -> dict[str, Any]:
    """An earlier turn's reasoning as an input `reasoning` item.

    The text goes in `content[0].text` (llama.cpp reads it there; vLLM answers with this
    shape), with an empty `summary` (a field the API requires).

    Example:
        >>> reasoning_item("2+2")["content"]
        [{'type': 'reasoning_text', 'text': '2+2'}]
    """
    return {
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def responses_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A chat-completions tool as a flat Responses function tool (others pass as given).

    Example:
        >>> responses_tool({"type": "function", "function": {"name": "f", "parameters": {}}})
        {'type': 'function', 'name': 'f', 'parameters': {}}
    """
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, Mapping):
        return dict(tool)
    flat: dict[str, Any] = {"type": "function", "name": function.get("name", "")}
    for key in ("description", "parameters", "strict"):
        if key in function:
            flat[key] = function[key]
    return flat


def responses_tool_choice(choice: str | Mapping[str, Any] | None) -> Any:
    """A tool choice as the Responses API names it: "any" is "required", a name forces it.

    Example:
        >>> responses_tool_choice("get_weather")
        {'type': 'function', 'name': 'get_weather'}
        >>> responses_tool_choice({"type": "function", "function": {"name": "f"}})
        {'type': 'function', 'name': 'f'}
    """
    if choice is None:
        return None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if choice.get("type") == "function" and isinstance(function, Mapping):
            return {"type": "function", "name": function.get("name", "")}
        return dict(choice)
    word = _TOOL_CHOICE_WORDS.get(choice)
    return word if word is not None else {"type": "function", "name": choice}


def text_format(response_format: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A chat `response_format` as the Responses `text.format` (None: plain text).

    Example:
        >>> text_format({"type": "json_schema",
        ...              "json_schema": {"name": "P", "schema": {"type": "object"}}})
        {'type': 'json_schema', 'name': 'P', 'schema': {'type': 'object'}}
        >>> text_format({"type": "json_object"})
        {'type': 'json_object'}
    """
    if response_format is None:
        return None
    kind = response_format.get("type")
    spec = response_format.get("json_schema")
    if kind == "json_schema" and isinstance(spec, Mapping):
        out: dict[str, Any] = {"type": "json_schema", "name": spec.get("name", "response")}
        for key in ("description", "schema", "strict"):
            if key in spec:
                out[key] = spec[key]
        return out
    if kind == "text":
        return None
    return dict(response_format)


LOGPROBS = "message.output_text.logprobs"
"""The `include` entry that asks for the output text's logprobs."""


def responses_payload(request: GenerationRequest, *, model: str, stream: bool) -> dict[str, Any]:
    """The body of `POST /responses` for a chat request.

    Example:
        >>> body = responses_payload(GenerationRequest.from_prompt("Hi"), model="m", stream=True)
        >>> body["model"], body["store"], body["stream"], body["input"][0]["role"]
        ('m', False, True, 'user')
    """
    options = request.options
    extra = dict(options.extra)
    n = options.n if options.n is not None else extra.get("n")
    if n is not None and n != 1:
        msg = (
            f"n={n!r}: the Responses API returns one answer per request; use api='chat' "
            "for several choices, or send separate requests"
        )
        raise ConfigurationError(msg)
    body: dict[str, Any] = {"model": request.model or model, "input": input_items(request.messages)}
    if options.temperature is not None:
        body["temperature"] = options.temperature
    if options.top_p is not None:
        body["top_p"] = options.top_p
    if options.max_tokens is not None:
        body["max_output_tokens"] = options.max_tokens
    effort = extra.pop("reasoning_effort", None)
    if effort is not None and "reasoning" not in extra:
        body["reasoning"] = {"effort": effort}
    if request.tools:
        body["tools"] = [responses_tool(tool) for tool in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = responses_tool_choice(request.tool_choice)
    fmt = text_format(request.response_format)
    if fmt is not None:
        body["text"] = {"format": fmt}
    if options.logprobs:  # asked for through `include`; alternatives through `top_logprobs`
        theirs = extra.pop("include", None)
        if isinstance(theirs, str):
            theirs = [theirs]
        elif theirs is not None and not isinstance(theirs, (list, tuple)):
            msg = f"include={theirs!r}: the Responses API takes a list of strings"
            raise ConfigurationError(msg)
        include = list(theirs or ())
        body["include"] = include if LOGPROBS in include else [*include, LOGPROBS]
    if options.top_logprobs is not None:
        body["top_logprobs"] = options.top_logprobs
    body.update((k, v) for k, v in extra.items() if k not in _NOT_SENT)
    body.setdefault("store", False)
    body["stream"] = stream
    return body


# ---------------------------------------------------------------------------------------
# Whole answers
# ---------------------------------------------------------------------------------------


def usage_from_responses(data: Any) -> Usage | None:
    """`usage` of a response: cached input and reasoning output tokens included.

    Example:
        >>> usage_from_responses({"input_tokens": 9, "output_tokens": 3, "total_tokens": 12,
        ...                       "input_tokens_details": {"cached_tokens": 4}})
        Usage(input_tokens=9, output_tokens=3, total_tokens=12, reasoning_tokens=None, cached_tokens=4)
    """  # noqa: E501
    if not isinstance(data, dict):
        return None
    inputs = data.get("input_tokens_details")
    outputs = data.get("output_tokens_details")
    cached = inputs.get("cached_tokens") if isinstance(inputs, dict) else None
    reasoning = outputs.get("reasoning_tokens") if isinstance(outputs, dict) else None
    total = data.get("total_tokens")
    return Usage(
        data.get("input_tokens") or 0,
        data.get("output_tokens") or 0,
        total if isinstance(total, int) else -1,
        reasoning if isinstance(reasoning, int) else None,
        cached if isinstance(cached, int) else None,
    )


def finish_reason_of(response: Mapping[str, Any], *, called_tools: bool) -> str:
    """The chat-style finish reason of a response, from `status` and `incomplete_details`.

    Example:
        >>> finish_reason_of({"status": "completed"}, called_tools=True)
        'tool_calls'
        >>> finish_reason_of({"status": "incomplete",
        ...                   "incomplete_details": {"reason": "max_output_tokens"}},
        ...                  called_tools=False)
        'length'
    """
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    if response.get("status") == "incomplete" or reason:
        if reason in (None, "max_output_tokens", "max_tokens", "length"):
            return "length"
        return str(reason)
    return "tool_calls" if called_tools else "stop"


def raise_response_error(response: Any, url: str, *, partial: str = "") -> None:
    """Raise the typed error of a failed response or an error object, if it is one.

    Shapes: a response with `status: "failed"` and its `error`; a top-level non-null
    `error` (OpenAI, llama.cpp's bare `{"error": ...}`); an `error` event (`{"type":
    "error", "code", "message"}`); vLLM's `{"object": "error", ...}`.
    """
    if not isinstance(response, dict):
        return
    error = response.get("error")
    if error:
        if isinstance(error, dict) and error.get("code") in _CODE_STATUS:
            error = {**error, "code": _CODE_STATUS[error["code"]]}
        raise_body_error({"error": error}, url, partial=partial)
    if response.get("type") == "error" or response.get("object") == "error":
        code = response.get("code")
        inner = {
            "message": response.get("message") or "error",
            "code": _CODE_STATUS.get(str(code), code),
        }
        raise_body_error({"error": inner}, url, partial=partial)
    if response.get("status") == "failed":
        raise_body_error({"error": "the response failed"}, url, partial=partial)


def parse_responses_response(obj: Any, url: str) -> Generation:
    """A whole Responses answer: text, reasoning, tool calls, finish reason and usage.

    Reasoning is the reasoning item's text (`content`), else its `summary`. A response
    that failed raises its typed error.

    Example:
        >>> answer = parse_responses_response({"status": "completed", "model": "m", "output": [
        ...     {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]}, "u")
        >>> answer.text, answer.finish_reason, answer.model
        ('Hi', 'stop', 'm')
    """
    raise_response_error(obj, url)
    output = obj.get("output") if isinstance(obj, dict) else None
    if not isinstance(output, list):
        snippet = json.dumps(obj)[:500]
        msg = f"answer from {url} has no `output` list; does the server speak /responses? {snippet}"
        raise BackendHTTPError(msg, status=200, body=snippet, url=url)
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    logprobs: list[Any] = []
    for item in output:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            text.extend(part_texts(item.get("content"), ("output_text", "text")))
            logprobs.extend(part_logprobs(item.get("content")))
        elif kind == "reasoning":
            found = part_texts(item.get("content"), ("reasoning_text", "text"))
            reasoning.extend(found or part_texts(item.get("summary"), ("summary_text",)))
        elif kind == "function_call":
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments if arguments is not None else {})
            call_id = item.get("call_id") or item.get("id") or f"call_{len(calls)}"
            calls.append(ToolCall(str(call_id), str(item.get("name") or ""), arguments))
    return Generation(
        text="".join(text),
        reasoning="".join(reasoning) or None,
        tool_calls=calls,
        finish_reason=finish_reason_of(obj, called_tools=bool(calls)),
        usage=usage_from_responses(obj.get("usage")),
        model=obj.get("model"),
        raw=obj,
        response_id=obj["id"] if isinstance(obj.get("id"), str) and obj["id"] else None,
        logprobs=logprobs or None,
    )


def part_logprobs(parts: Any) -> list[Any]:
    """The `logprobs` entries of each `output_text` part, in order (the chat API's shape).

    Example:
        >>> part_logprobs([{"type": "output_text", "text": "Hi",
        ...                 "logprobs": [{"token": "Hi", "logprob": -0.1}]}])
        [{'token': 'Hi', 'logprob': -0.1}]
    """
    if not isinstance(parts, list):
        return []
    return [
        entry
        for p in parts
        if isinstance(p, dict) and p.get("type") == "output_text"
        for entry in (p.get("logprobs") or ())
    ]


def part_texts(parts: Any, kinds: tuple[str, ...]) -> list[str]:
    """The `text` of each content part of one of `kinds`.

    Example:
        >>> part_texts([{"type": "output_text", "text": "a"}, {"type": "refusal"}],
        ...            ("output_text",))
        ['a']
    """
    if not isinstance(parts, list):
        return []
    return [
        p["text"]
        for p in parts
        if isinstance(p, dict) and p.get("type") in kinds and isinstance(p.get("text"), str)
    ]
