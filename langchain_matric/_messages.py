"""LangChain messages to and from the backend's server-neutral types.

Inbound: `BaseMessage` -> `ChatMessage` (text, images as URLs, tool calls with JSON
arguments, tool results with their call id and tool name). Outbound: `Generation` ->
`AIMessage` and `GenerationDelta` -> `AIMessageChunk`, with reasoning in
`additional_kwargs["reasoning_content"]` and `model_provider: "matric"`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.messages import ChatMessage as LCChatMessage
from langchain_core.messages import ToolCall as LCToolCall
from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call

from langchain_matric.backends._types import (
    ChatMessage,
    Generation,
    Role,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "PROVIDER",
    "generation_to_message",
    "parse_tool_calls",
    "reasoning_of",
    "to_chat_messages",
    "tool_call_chunks",
    "usage_metadata",
]

PROVIDER = "matric"
"""`response_metadata["model_provider"]`: not "openai", whose translator drops reasoning."""

_ROLES: Mapping[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "tool": "tool",
}
# Blocks an assistant message may carry that the server does not need back.
_SKIPPED_AI_BLOCKS = frozenset(
    {
        "reasoning",
        "thinking",
        "redacted_thinking",
        "tool_call",
        "tool_call_chunk",
        "invalid_tool_call",
        "tool_use",
        "server_tool_call",
        "server_tool_call_chunk",
        "server_tool_result",
        "non_standard",
    }
)


# -- inbound -------------------------------------------------------------------------


def to_chat_messages(
    messages: Sequence[BaseMessage], *, reasoning: bool = False
) -> list[ChatMessage]:
    """Convert a LangChain conversation to backend messages.

    Tool messages without a `name` take the tool's name from the assistant call with
    the same id (Ollama's native API needs it). Assistant messages always carry a
    string `content` (`""` with tool calls, never null). With `reasoning=True` an AI
    message's reasoning (`additional_kwargs["reasoning_content"]`, else its reasoning or
    thinking content blocks) rides along in `ChatMessage.reasoning`; otherwise it is
    dropped.

    Example:
        >>> from langchain_core.messages import HumanMessage, SystemMessage
        >>> [m.role for m in to_chat_messages([SystemMessage("be brief"), HumanMessage("hi")])]
        ['system', 'user']
    """
    out: list[ChatMessage] = []
    tool_names: dict[str, str] = {}
    for message in messages:
        role = _role_of(message)
        if role == "assistant":
            text, _ = _content_parts(message.content, role)
            calls = _assistant_tool_calls(message, len(tool_names))
            tool_names.update((call.id, call.name) for call in calls)
            thought = reasoning_of(message) if reasoning else None
            out.append(
                ChatMessage(
                    "assistant", text, tool_calls=calls, name=message.name, reasoning=thought
                )
            )
        elif role == "tool":
            text, images = _content_parts(message.content, role)
            call_id = str(getattr(message, "tool_call_id", "") or "")
            name = message.name or tool_names.get(call_id)
            out.append(ChatMessage("tool", text, tool_call_id=call_id, name=name, images=images))
        else:
            text, images = _content_parts(message.content, role)
            out.append(ChatMessage(role, text, name=message.name, images=images))
    return out


def reasoning_of(message: BaseMessage) -> str | None:
    """An AI message's reasoning, None if it has none.

    `additional_kwargs["reasoning_content"]` (as `ChatMatric` stores it), else the text of
    its `reasoning` / `thinking` content blocks.

    Example:
        >>> reasoning_of(AIMessage("4", additional_kwargs={"reasoning_content": "2+2"}))
        '2+2'
        >>> reasoning_of(AIMessage([{"type": "reasoning", "reasoning": "hm"}, "4"]))
        'hm'
        >>> reasoning_of(AIMessage("4")) is None
        True
    """
    stored = message.additional_kwargs.get("reasoning_content")
    if isinstance(stored, str) and stored:
        return stored
    if isinstance(message.content, str):
        return None
    parts: list[str] = []
    for block in message.content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        text = block.get(kind) if kind in ("reasoning", "thinking") else None
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts) or None


def _role_of(message: BaseMessage) -> Role:
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, LCChatMessage) and message.role in _ROLES:
        return _ROLES[message.role]
    kind = getattr(message, "role", None) or message.type
    msg = (
        f"ChatMatric cannot send a {type(message).__name__} (role {kind!r}): use system, "
        "human, AI or tool messages"
    )
    raise ValueError(msg)


def _assistant_tool_calls(message: BaseMessage, offset: int) -> list[ToolCall]:
    if not isinstance(message, AIMessage):  # a generic ChatMessage(role="assistant")
        return []
    calls: list[ToolCall] = []
    for i, call in enumerate(message.tool_calls):
        arguments = json.dumps(call["args"], ensure_ascii=False)
        calls.append(ToolCall(call.get("id") or f"call_{offset + i}", call["name"], arguments))
    for i, bad in enumerate(message.invalid_tool_calls, start=len(calls)):
        call_id = bad.get("id") or f"call_{offset + i}"
        calls.append(ToolCall(call_id, bad.get("name") or "", bad.get("args") or ""))
    return calls


def _content_parts(content: str | list[str | dict[Any, Any]], role: Role) -> tuple[str, list[str]]:
    """The text (parts joined by newlines) and image URLs of a message's content."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind in ("image_url", "image"):
            images.append(_image_url(block))
        elif role == "assistant" and kind in _SKIPPED_AI_BLOCKS:
            continue
        else:
            msg = (
                f"content block of type {kind!r} is not supported in a {role} message: "
                "ChatMatric sends text and images"
            )
            raise ValueError(msg)
    return "\n".join(texts), images


def _image_url(block: Mapping[str, Any]) -> str:
    """An http(s) or data URL for an image block in any LangChain or OpenAI format."""
    if block.get("type") == "image_url":
        value = block.get("image_url")
        url = value.get("url") if isinstance(value, Mapping) else value
        if isinstance(url, str) and url:
            return url
    else:
        source = block.get("source")
        if isinstance(source, Mapping):  # Anthropic style
            if source.get("type") == "url" and source.get("url"):
                return str(source["url"])
            if source.get("data"):
                mime = source.get("media_type") or "image/png"
                return f"data:{mime};base64,{source['data']}"
        if block.get("url"):
            return str(block["url"])
        data = block.get("base64") or (
            block.get("data") if block.get("source_type") == "base64" else None
        )
        if data:
            mime = block.get("mime_type") or "image/png"
            return f"data:{mime};base64,{data}"
    msg = f"image block has no URL or base64 data: {dict(block)!r:.200}"
    raise ValueError(msg)


# -- outbound ------------------------------------------------------------------------


def usage_metadata(usage: Usage) -> UsageMetadata:
    """LangChain's `usage_metadata` for a backend `Usage`."""
    meta = UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )
    if usage.reasoning_tokens is not None:
        meta["output_token_details"] = {"reasoning": usage.reasoning_tokens}
    if usage.cached_tokens is not None:
        meta["input_token_details"] = {"cache_read": usage.cached_tokens}
    return meta


def parse_tool_calls(calls: Iterable[ToolCall]) -> tuple[list[LCToolCall], list[InvalidToolCall]]:
    """Parse complete tool calls; arguments that are not a JSON object become invalid calls."""
    valid: list[LCToolCall] = []
    invalid: list[InvalidToolCall] = []
    for call in calls:
        raw = {"id": call.id, "function": {"name": call.name, "arguments": call.arguments}}
        try:
            parsed = parse_tool_call(raw, return_id=True)
        except OutputParserException as error:
            invalid.append(make_invalid_tool_call(raw, str(error)))
            continue
        if parsed is None or not isinstance(parsed.get("args"), dict):
            error_text = f"arguments of {call.name!r} are not a JSON object"
            invalid.append(make_invalid_tool_call(raw, error_text))
            continue
        valid.append(LCToolCall(name=call.name, args=parsed["args"], id=call.id, type="tool_call"))
    return valid, invalid


def generation_to_message(
    generation: Generation, response_metadata: dict[str, Any], *, text: str | None = None
) -> AIMessage:
    """A whole answer as an `AIMessage` (`text` overrides the answer's text, e.g. cut at stop)."""
    valid, invalid = parse_tool_calls(generation.tool_calls)
    return AIMessage(
        content=generation.text if text is None else text,
        additional_kwargs=(
            {"reasoning_content": generation.reasoning} if generation.reasoning else {}
        ),
        tool_calls=valid,
        invalid_tool_calls=invalid,
        usage_metadata=usage_metadata(generation.usage) if generation.usage else None,
        response_metadata=response_metadata,
    )


def tool_call_chunks(deltas: Sequence[ToolCallDelta]) -> list[ToolCallChunk]:
    """Streamed tool-call pieces as LangChain chunks (name and id on the first only)."""
    return [tool_call_chunk(name=d.name, args=d.arguments, id=d.id, index=d.index) for d in deltas]


def whole_tool_call_chunks(calls: Sequence[ToolCall]) -> list[ToolCallChunk]:
    """Complete tool calls as one chunk each (for a backend that does not stream)."""
    return [
        tool_call_chunk(name=call.name, args=call.arguments, id=call.id, index=i)
        for i, call in enumerate(calls)
    ]


def message_chunk(
    text: str,
    reasoning: str,
    chunks: list[ToolCallChunk],
    *,
    usage: Usage | None = None,
    response_metadata: dict[str, Any] | None = None,
    last: bool = False,
) -> AIMessageChunk:
    """One `AIMessageChunk` (the per-delta object of a chat stream).

    Only fields that differ from their defaults are passed: pydantic validates every
    field given, and a plain text delta then costs about half as much.
    """
    fields: dict[str, Any] = {}
    if reasoning:
        fields["additional_kwargs"] = {"reasoning_content": reasoning}
    if chunks:
        fields["tool_call_chunks"] = chunks
    if usage is not None:
        fields["usage_metadata"] = usage_metadata(usage)
    if response_metadata:
        fields["response_metadata"] = response_metadata
    if last:
        fields["chunk_position"] = "last"
    return AIMessageChunk(content=text, **fields)
