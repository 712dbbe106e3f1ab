"""Ollama's native API on the wire: request payloads, response parsing, the stream parser.

Pure functions and one I/O-free parser; `OllamaBackend` does the HTTP. Endpoints:
`POST /api/chat` (messages), `POST /api/generate` (a bare prompt), `POST /api/embed`.

Differences from the OpenAI wire format that this module absorbs:

- Ollama streams by default, so every payload says `stream` explicitly.
- Sampling controls live in `options` (`max_tokens` becomes `num_predict`).
- Tool-call `arguments` are JSON objects, not JSON text; tool results name the tool
  (`tool_name`); there is no `tool_choice` (a forced choice raises `ConfigurationError`).
- Images are raw base64 strings: a data URL is unwrapped, an http(s) URL is refused.
- Context overflow: `truncate: false` and `shift: false` make it an error instead of a
  silent loss of the start of the conversation.
- A stream is newline-delimited JSON ending with `"done": true`; an `{"error": ...}`
  line (HTTP status 200) reports a failure mid-stream.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from langchain_matric._text import SurrogateJoiner, mend
from langchain_matric._vectors import check_values
from langchain_matric.backends._types import (
    ChatMessage,
    Generation,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
    ToolCall,
    ToolCallDelta,
    Usage,
    keep_undelivered,
)
from langchain_matric.errors import (
    BackendHTTPError,
    ConfigurationError,
    ContextLengthExceededError,
    EmbeddingDimensionError,
    MatricError,
    ModelNotFoundError,
    StreamError,
    error_from_response,
    message_of,
)
from langchain_matric.ndjson import NDJSONDecoder

__all__ = [
    "TOP_LEVEL_FIELDS",
    "OllamaStreamParser",
    "ThinkSetting",
    "chat_payload",
    "check_think",
    "embed_payload",
    "embed_too_long_error",
    "error_from_message",
    "generate_payload",
    "generation_to_deltas",
    "merge_deltas",
    "parse_chat_response",
    "parse_embed_response",
    "parse_generate_response",
    "parse_ndjson_body",
    "too_long_input_hint",
    "whole_to_deltas",
]

ThinkSetting = bool | str | None
"""Ollama's `think`: True/False, or an effort level "low" / "medium" / "high"."""

THINK_LEVELS = frozenset({"low", "medium", "high"})

TOP_LEVEL_FIELDS = frozenset(
    {
        "format",
        "keep_alive",
        "think",
        "truncate",
        "shift",
        "logprobs",
        "top_logprobs",
        "system",
        "template",
        "suffix",
        "context",
        "raw",
    }
)
"""`GenerationOptions.extra` keys that are top-level request fields rather than `options`.

The rule: a key named here goes at the top level of the request body; `"options"` (a
mapping) is merged into `options`; every other key goes into `options` (`top_k`,
`num_gpu`, `repeat_penalty`, ...). Values from `extra` win over the backend's defaults.
"""

_RESERVED_FIELDS = {
    "model": "set the backend's `model` or `GenerationRequest.model`",
    "messages": "use `GenerationRequest.messages`",
    "prompt": "use `GenerationRequest.prompt`",
    "stream": "call `generate_stream` to stream",
    "tools": "use `GenerationRequest.tools`",
    "images": "use `ChatMessage.images`",
    "input": "use `embed_texts`",
}

_FORCED_TOOL_CHOICE = (
    "Ollama's native API has no `tool_choice`: it cannot force a tool call (got "
    "tool_choice={choice!r}). Pass tool_choice='auto' (or leave it unset), or use the "
    "OpenAI-compatible backend against Ollama's /v1 endpoint, which accepts `tool_choice`."
)


# ---------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------


def chat_payload(
    request: GenerationRequest,
    *,
    model: str,
    stream: bool,
    keep_alive: str | float | None = None,
    think: ThinkSetting = None,
    num_ctx: int | None = None,
    truncate: bool = False,
) -> dict[str, Any]:
    """The body of `POST /api/chat` for a conversation.

    Args:
        request: The conversation, tools, options and response format.
        model: The model, unless `request.model` names another.
        stream: Sent explicitly: Ollama streams when `stream` is absent.
        keep_alive: How long the model stays loaded (`"5m"`, seconds, `-1`), or None.
        think: Whether (or how hard) a reasoning model thinks, or None for its default.
        num_ctx: The context window to load the model with, or None for the server's.
        truncate: False (the default) makes a prompt that overflows the context window an
            error; True lets Ollama drop the oldest messages (`truncate` and `shift`).

    Raises:
        ConfigurationError: For a forced `tool_choice`, an http(s) image URL, tool-call
            arguments that are not a JSON object, an unknown `response_format` or `think`.

    Example:
        >>> req = GenerationRequest.from_prompt("Hi", options=GenerationOptions(max_tokens=8))
        >>> body = chat_payload(req, model="llama3.2", stream=False)
        >>> body["stream"], body["options"], body["messages"][0]
        (False, {'num_predict': 8}, {'role': 'user', 'content': 'Hi'})
    """
    tools: list[Mapping[str, Any]] = list(request.tools)
    if _check_tool_choice(request.tool_choice):
        tools = []  # "none": the model must not call tools; Ollama has no switch for it
    body: dict[str, Any] = {
        "model": request.model or model,
        "messages": _messages(request.messages),
        "stream": stream,
    }
    if tools:
        body["tools"] = tools
    _common(body, request, keep_alive=keep_alive, think=think, num_ctx=num_ctx, truncate=truncate)
    return body


def generate_payload(
    request: GenerationRequest,
    *,
    model: str,
    stream: bool,
    keep_alive: str | float | None = None,
    think: ThinkSetting = None,
    num_ctx: int | None = None,
    truncate: bool = False,
) -> dict[str, Any]:
    """The body of `POST /api/generate` for a request with a bare `prompt`.

    System messages in `request.messages` become `system`; the arguments mean what they
    mean for `chat_payload`. Tools need a conversation (`/api/chat`).

    Example:
        >>> body = generate_payload(GenerationRequest(prompt="2+2="), model="m", stream=True)
        >>> body["prompt"], body["stream"], body["truncate"]
        ('2+2=', True, False)
    """
    if request.prompt is None:
        msg = "generate_payload needs `GenerationRequest.prompt`; use chat_payload for messages"
        raise ConfigurationError(msg)
    if request.tools:
        msg = (
            "tools need a conversation: Ollama's /api/generate has no tools. Send the "
            "prompt as a user message (GenerationRequest.from_prompt) instead."
        )
        raise ConfigurationError(msg)
    _check_tool_choice(request.tool_choice)
    body: dict[str, Any] = {"model": request.model or model, "prompt": request.prompt}
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    if system:
        body["system"] = system
    images = [_image(url, i) for m in request.messages for i, url in enumerate(m.images)]
    if images:
        body["images"] = images
    body["stream"] = stream
    _common(body, request, keep_alive=keep_alive, think=think, num_ctx=num_ctx, truncate=truncate)
    return body


def embed_payload(
    texts: Sequence[str],
    *,
    model: str,
    truncate: bool = False,
    dimensions: int | None = None,
    keep_alive: str | float | None = None,
) -> dict[str, Any]:
    """The body of `POST /api/embed`: one vector per string of `input`.

    `truncate=False` (the default) makes an input longer than the model's context an
    error instead of silently embedding only its start. `dimensions` is sent only when set.

    Example:
        >>> embed_payload(["a", "b"], model="nomic-embed-text")
        {'model': 'nomic-embed-text', 'input': ['a', 'b'], 'truncate': False}
    """
    body: dict[str, Any] = {"model": model, "input": list(texts), "truncate": truncate}
    if dimensions is not None:
        body["dimensions"] = dimensions
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def _common(
    body: dict[str, Any],
    request: GenerationRequest,
    *,
    keep_alive: str | float | None,
    think: ThinkSetting,
    num_ctx: int | None,
    truncate: bool,
) -> None:
    """Add options, format and the top-level switches shared by chat and generate."""
    options, top = _options(request.options, num_ctx)
    if options:
        body["options"] = options
    fmt = _format(request.response_format)
    if fmt is not None:
        body["format"] = fmt
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    if think is not None:
        body["think"] = check_think(think, "think")
    body["truncate"] = truncate
    body["shift"] = truncate
    if "think" in top:
        check_think(top["think"], "options.extra['think']")
    body.update(top)


def _options(opts: GenerationOptions, num_ctx: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `GenerationOptions` into Ollama `options` and top-level fields."""
    options: dict[str, Any] = {}
    if opts.max_tokens is not None:
        options["num_predict"] = opts.max_tokens
    if opts.temperature is not None:
        options["temperature"] = opts.temperature
    if opts.top_p is not None:
        options["top_p"] = opts.top_p
    if opts.stop is not None:
        options["stop"] = [opts.stop] if isinstance(opts.stop, str) else list(opts.stop)
    if opts.seed is not None:
        options["seed"] = opts.seed
    if num_ctx is not None:
        options["num_ctx"] = num_ctx
    top: dict[str, Any] = {}
    if opts.n is not None and opts.n != 1:
        msg = (
            f"n={opts.n!r}: Ollama's native API returns one answer per request; use "
            "backend='openai' on a server that takes `n`, or send separate requests"
        )
        raise ConfigurationError(msg)
    if opts.logprobs is not None:
        top["logprobs"] = opts.logprobs
    if opts.top_logprobs is not None:
        top["top_logprobs"] = opts.top_logprobs
    for key, value in opts.extra.items():
        if key in _RESERVED_FIELDS:
            msg = f"options.extra[{key!r}] is not allowed for Ollama: {_RESERVED_FIELDS[key]}"
            raise ConfigurationError(msg)
        if key == "options":
            if not isinstance(value, Mapping):
                msg = f"options.extra['options'] must be a mapping, got {type(value).__name__}"
                raise ConfigurationError(msg)
            options.update(value)
        elif key in TOP_LEVEL_FIELDS:
            top[key] = value
        else:
            options[key] = value
    return options, top


def _check_tool_choice(choice: str | Mapping[str, Any] | None) -> bool:
    """Return True for "none"; raise for a forced choice, which Ollama cannot honour."""
    if choice is None or choice == "auto":
        return False
    if choice == "none":
        return True
    raise ConfigurationError(_FORCED_TOOL_CHOICE.format(choice=choice))


def check_think(value: Any, where: str) -> ThinkSetting:
    """Return a valid `think` setting; `ConfigurationError` naming `where` otherwise."""
    if isinstance(value, bool) or value in THINK_LEVELS:
        return value  # type: ignore[no-any-return]
    msg = f"`{where}` must be True, False, 'low', 'medium' or 'high', got {value!r}"
    raise ConfigurationError(msg)


def _format(response_format: Mapping[str, Any] | None) -> Any:
    """Map an OpenAI `response_format` to Ollama's `format` (None: send nothing)."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            msg = (
                "response_format of type 'json_schema' needs "
                "{'json_schema': {'name': ..., 'schema': {...}}}"
            )
            raise ConfigurationError(msg)
        return dict(schema)
    if kind == "json_object":
        return "json"
    if kind == "text":
        return None
    if kind == "object":  # a bare JSON schema, as Ollama itself takes it
        return dict(response_format)
    msg = (
        f"unsupported response_format type {kind!r} for Ollama; use 'json_schema', "
        "'json_object' or 'text'"
    )
    raise ConfigurationError(msg)


def _messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool_call_id -> name, to label tool results
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.images:
            item["images"] = [_image(url, i) for i, url in enumerate(message.images)]
        if message.reasoning:  # set only when the caller opted in
            item["thinking"] = message.reasoning
        if message.tool_calls:
            item["tool_calls"] = [_tool_call(call, tool_names) for call in message.tool_calls]
        if message.role == "tool":
            name = message.name or tool_names.get(message.tool_call_id or "")
            if name:
                item["tool_name"] = name
            if message.tool_call_id:
                item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def _tool_call(call: ToolCall, tool_names: dict[str, str]) -> dict[str, Any]:
    text = call.arguments.strip() or "{}"
    try:
        arguments = json.loads(text)
    except ValueError as exc:
        msg = (
            f"tool call {call.name!r} (id {call.id!r}) has arguments that are not valid "
            f"JSON: {text[:200]!r}; Ollama needs them as a JSON object"
        )
        raise ConfigurationError(msg) from exc
    if not isinstance(arguments, dict):
        msg = (
            f"tool call {call.name!r} (id {call.id!r}) has arguments that are not a JSON "
            f"object: {text[:200]!r}; Ollama needs them as a JSON object"
        )
        raise ConfigurationError(msg)
    if call.id:
        tool_names[call.id] = call.name
    item: dict[str, Any] = {"function": {"name": call.name, "arguments": arguments}}
    if call.id:
        item["id"] = call.id
    return item


def _image(url: str, index: int) -> str:
    """Raw base64 for Ollama's `images` from a data URL (or base64 as it is)."""
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep:
            msg = f"image {index} is a malformed data URL (no comma): {url[:60]!r}"
            raise ConfigurationError(msg)
        if header.endswith(";base64"):
            return payload
        return base64.b64encode(unquote_to_bytes(payload)).decode("ascii")
    if url.startswith(("http://", "https://")):
        msg = (
            f"image {index} is a URL ({url[:80]!r}), but Ollama's native API takes only "
            "inline images: download it and pass a data URL (data:image/png;base64,...)"
        )
        raise ConfigurationError(msg)
    return url


# ---------------------------------------------------------------------------------------
# Whole responses
# ---------------------------------------------------------------------------------------


def parse_chat_response(obj: Any) -> Generation:
    """A `Generation` from a whole `/api/chat` answer (`"stream": false`).

    Example:
        >>> gen = parse_chat_response({"model": "m", "message": {"role": "assistant",
        ...     "content": "Hi"}, "done": True, "done_reason": "stop", "eval_count": 2})
        >>> gen.text, gen.finish_reason, gen.usage.output_tokens, gen.usage.input_tokens
        ('Hi', 'stop', 2, 0)
    """
    if not isinstance(obj, Mapping):
        msg = f"Ollama answered with a JSON {type(obj).__name__} where an object was expected"
        raise BackendHTTPError(msg, status=200, body=json.dumps(obj)[:500])
    _raise_if_error(obj)
    content, thinking, raw_calls = _fields(obj)
    calls = [_whole_tool_call(raw) for raw in raw_calls]
    return Generation(
        text=content,
        reasoning=thinking or None,
        tool_calls=calls,
        finish_reason=_finish_reason(obj, bool(calls)),
        usage=_usage(obj),
        model=obj.get("model"),
        raw=obj,
        logprobs=_logprobs(obj),
    )


def _logprobs(obj: Mapping[str, Any]) -> list[Any] | None:
    """Ollama's `logprobs` (`logprobs: true`): already one OpenAI-shaped entry per token."""
    entries = obj.get("logprobs")
    return entries if isinstance(entries, list) and entries else None


parse_generate_response = parse_chat_response
"""A `Generation` from a whole `/api/generate` answer (`response`, `thinking`)."""


def generation_to_deltas(generation: Generation) -> list[GenerationDelta]:
    """A whole `Generation` as the one delta of a stream (finish_reason and usage set)."""
    calls = tuple(
        ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
        for i, c in enumerate(generation.tool_calls)
    )
    delta = GenerationDelta(
        text=generation.text,
        reasoning=generation.reasoning or "",
        tool_call_deltas=calls,
        finish_reason=generation.finish_reason or "stop",
        usage=generation.usage or Usage(),
        model=generation.model,
        logprobs=generation.logprobs,
    )
    return [delta]


def whole_to_deltas(obj: Any) -> list[GenerationDelta]:
    """One delta for a stream request the server answered with one plain JSON object.

    For `JSONBodyParser`; raises like `parse_chat_response`.
    """
    return generation_to_deltas(parse_chat_response(obj))


def parse_embed_response(
    obj: Any, expected_count: int, expected_dim: int | None = None
) -> list[list[float]]:
    """The vectors of an `/api/embed` answer, checked for count and size.

    Every vector must have `expected_dim` entries when it is given, and all vectors the
    same size otherwise.

    Raises:
        EmbeddingDimensionError: Wrong number of vectors, or vectors of the wrong size.
        EmbeddingValueError: An element is not a finite number (NaN, Infinity, a string).
        BackendHTTPError: The answer has no `embeddings` list (or reports an error).

    Example:
        >>> parse_embed_response({"embeddings": [[0.5, 1]]}, 1, 2)
        [[0.5, 1.0]]
    """
    if isinstance(obj, Mapping):
        _raise_if_error(obj)
        vectors = obj.get("embeddings")
    else:
        vectors = None
    if not isinstance(vectors, list):
        shown = json.dumps(obj)[:200] if obj is not None else "null"
        msg = f"Ollama's /api/embed answer has no `embeddings` list: {shown}"
        raise BackendHTTPError(msg, status=200, body=shown)
    if len(vectors) != expected_count:
        msg = (
            f"Ollama returned {len(vectors)} embeddings for {expected_count} input texts; "
            "check that `embed_model` is an embedding model"
        )
        raise EmbeddingDimensionError(msg)
    out: list[list[float]] = []
    want = expected_dim
    for i, vector in enumerate(vectors):
        if not isinstance(vector, list) or not vector:
            msg = f"embedding {i} from Ollama is not a non-empty list of numbers"
            raise EmbeddingDimensionError(msg)
        if want is None:
            want = len(vector)
        elif len(vector) != want:
            if expected_dim is None:
                msg = f"Ollama returned vectors of different sizes ({want} and {len(vector)})"
            else:
                msg = (
                    f"embedding {i} has {len(vector)} dimensions, expected {expected_dim}; "
                    "set `embed_dimension` to the model's size (or None to skip the check)"
                )
            raise EmbeddingDimensionError(msg)
        check_values((vector,), "Ollama", first=i)  # before float(): it takes "1.5" too
        out.append(list(map(float, vector)))  # faster than a comprehension: ~9 vs 14 ns
    return out


def parse_ndjson_body(
    content: bytes, *, model: str | None = None, url: str | None = None
) -> Generation:
    r"""A `Generation` from a whole NDJSON body (a server that streamed despite `stream: false`).

    Example:
        >>> body = b'{"message":{"content":"a"}}\n{"message":{"content":"b"},"done":true}\n'
        >>> parse_ndjson_body(body).text
        'ab'
    """
    parser = OllamaStreamParser(model=model, url=url)
    deltas = parser.feed(content)
    deltas += parser.finish()
    return merge_deltas(deltas)


def merge_deltas(deltas: Sequence[GenerationDelta]) -> Generation:
    """Join a stream's deltas into one `Generation` (tool-call pieces merged by index)."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
    gen = Generation()
    for delta in deltas:
        texts.append(delta.text)
        reasoning.append(delta.reasoning)
        for piece in delta.tool_call_deltas:
            slot = calls.setdefault(piece.index, ["", "", ""])
            slot[0] = slot[0] or piece.id or ""
            slot[1] = slot[1] or piece.name or ""
            slot[2] += piece.arguments
        gen.finish_reason = delta.finish_reason or gen.finish_reason
        gen.usage = delta.usage or gen.usage
        gen.model = gen.model or delta.model
        if delta.logprobs:
            gen.logprobs = [*(gen.logprobs or ()), *delta.logprobs]
        gen.metadata = delta.metadata or gen.metadata
    gen.text = "".join(texts)
    gen.reasoning = "".join(reasoning) or None
    gen.tool_calls = [ToolCall(*calls[i]) for i in sorted(calls)]
    return gen


def embed_too_long_error(
    error: BackendHTTPError, texts: Sequence[str]
) -> ContextLengthExceededError | None:
    """For an `/api/embed` error caused by a too-long input: the same error naming the input.

    Ollama answers 400 "input exceeds maximum context length" (some versions and models
    answer 500): either is recognised by its message. Returns None for other errors.
    """
    said = message_of(_json_or_none(error.body)) or error.body or error.message
    if not isinstance(error, ContextLengthExceededError):
        probe = error_from_response(400, error.body, {}, method="POST", url=error.url or "")
        if not isinstance(probe, ContextLengthExceededError):
            return None
    _, hint = too_long_input_hint(said, texts)
    where = f" for {error.method} {error.url}" if error.method and error.url else ""
    request_id = f" (request id {error.request_id})" if error.request_id else ""
    message = (
        f"server returned {error.status}{where}: {said}{request_id}. "
        f"{hint[:1].upper()}{hint[1:]}. Shorten or split it, or pass truncate=True to let "
        "Ollama cut it to the model's context."
    )
    return ContextLengthExceededError(
        message,
        status=error.status,
        body=error.body,
        request_id=error.request_id,
        method=error.method,
        url=error.url,
    )


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


_INDEX_IN_MESSAGE = re.compile(r"\b(?:input|index|item)\s*(?:#|no\.?|number)?\s*\[?(\d+)", re.I)


def too_long_input_hint(message: str, texts: Sequence[str]) -> tuple[int | None, str]:
    """Name the input that overflowed the embedding model's context, as well as we can.

    Ollama's "input exceeds maximum context length" does not say which input: for one
    text it is that one; when the message names an index we use it; otherwise the
    longest text by characters is the likely cause (characters only estimate tokens).
    Returns the index (or None) and a sentence for the error message.

    Example:
        >>> too_long_input_hint("input exceeds maximum context length", ["a", "bbbb", "cc"])
        (1, 'input 1 (the longest, 4 characters) is the likely cause; Ollama does not say which')
    """
    if not texts:
        return None, ""
    if len(texts) == 1:
        return 0, f"the input ({len(texts[0]):,} characters) is too long for the model"
    match = _INDEX_IN_MESSAGE.search(message)
    if match and int(match.group(1)) < len(texts):
        index = int(match.group(1))
        return index, f"input {index} ({len(texts[index]):,} characters) is too long"
    index = max(range(len(texts)), key=lambda i: len(texts[i]))
    hint = (
        f"input {index} (the longest, {len(texts[index]):,} characters) is the likely "
        "cause; Ollama does not say which"
    )
    return index, hint


# ---------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------


class OllamaStreamParser:
    r"""Turns an `/api/chat` or `/api/generate` NDJSON stream into `GenerationDelta`s.

    I/O-free: feed it body bytes in any split. `model` rides on the first delta,
    `finish_reason` and `usage` on the last (the `"done": true` line), each exactly once.
    Tool calls arrive whole: each becomes one `ToolCallDelta` with its own index, id and
    name, and its arguments as JSON text. `model` (the requested model) names the model in
    error messages and stands in when the server's lines carry none; `url` goes into
    error messages. A bad line raises `NDJSONError` (a `StreamError`); `partial` is the
    text of the lines before it, even those of the same read.

    Example:
        >>> p = OllamaStreamParser()
        >>> first = p.feed(b'{"model":"m","message":{"content":"Hel"},"done":false}\n{"mes')
        >>> last = p.feed(b'sage":{"content":"lo"},"done":true,"done_reason":"stop"}\n')
        >>> [d.text for d in first + last], last[-1].finish_reason, p.done, p.partial
        (['Hel', 'lo'], 'stop', True, 'Hello')
    """

    __slots__ = (
        "_careful",
        "_decoder",
        "_joiner",
        "_model",
        "_model_sent",
        "_parts",
        "_requested",
        "_tools",
        "_url",
        "done",
    )

    def __init__(
        self,
        *,
        model: str | None = None,
        url: str | None = None,
        max_line_size: int | None = None,
    ) -> None:
        self._decoder = (
            NDJSONDecoder() if max_line_size is None else NDJSONDecoder(max_line_size=max_line_size)
        )
        self._requested = model
        self._model: str | None = None
        self._model_sent = False
        self._parts: list[str] = []
        self._tools = 0
        self._url = url
        self._joiner: SurrogateJoiner | None = None
        """Set once text may hold surrogates (`NDJSONDecoder.lenient`; see `_text`)."""
        self._careful = False
        """True once `done` or `_joiner` is set: every read takes the line-by-line path."""
        self.done = False
        """True once the `"done": true` line arrived."""

    @property
    def partial(self) -> str:
        """The answer text received so far (a held half of a surrogate pair as U+FFFD)."""
        text = "".join(self._parts)
        if self._joiner is None:
            return text
        if text and "\ud800" <= text[-1] <= "\udbff":  # held by the joiner: not delivered
            text = text[:-1]
        return mend(text)

    def feed(self, data: bytes) -> list[GenerationDelta]:
        """Consume a piece of the body; raise on an `{"error": ...}` line."""
        obj = None if self._careful else self._decoder.feed_line(data)
        if obj is not None:  # one whole line per read: the usual case
            delta = self._delta(obj)
            return [] if delta is None else [delta]
        out: list[GenerationDelta] = []
        start = 0
        # Line by line: a bad line must not swallow the good lines before it in the same
        # read (their text belongs in `partial`), and bytes after `done` are never parsed.
        try:
            while not self.done and start < len(data):
                end = data.find(b"\n", start) + 1 or len(data)
                out += self._deltas(self._decode(data[start:end], final=False))
                start = end
        except MatricError as error:
            keep_undelivered(error, self._joined(out))  # the driver yields them first
            raise
        return self._joined(out)

    def _joined(self, deltas: list[GenerationDelta]) -> list[GenerationDelta]:
        """`deltas`, their text joined and mended once the decoder had to be lenient."""
        if self._joiner is None:
            if not self._decoder.lenient:
                return deltas
            self._joiner = SurrogateJoiner()
            self._careful = True
        joiner = self._joiner
        for delta in deltas:
            if delta.text:
                delta.text = joiner.feed(delta.text)
            if delta.reasoning:
                delta.reasoning = mend(delta.reasoning)
            if delta.finish_reason is not None:
                delta.text += joiner.flush()  # half a pair left at the end
        return deltas

    def finish(self) -> list[GenerationDelta]:
        """Consume the clean end of the body; `StreamError` if `"done": true` never came."""
        deltas = [] if self.done else self._joined(self._deltas(self._decode(b"", final=True)))
        if self.done:
            return deltas
        where = self._url or "the response"
        msg = (
            f"Ollama stream ended before done: true; the server closed {where} early "
            f"({len(self.partial):,} characters of text had arrived)"
        )
        raise StreamError(msg, partial=self.partial)

    def _decode(self, data: bytes, *, final: bool) -> list[dict[str, Any]]:
        try:
            return self._decoder.flush() if final else self._decoder.feed(data)
        except MatricError as error:
            if not error.partial:
                error.partial = self.partial
            raise

    def _deltas(self, objs: list[dict[str, Any]]) -> list[GenerationDelta]:
        out: list[GenerationDelta] = []
        for obj in objs:
            delta = self._delta(obj)
            if delta is not None:
                out.append(delta)
            if self.done:
                break
        return out

    def _delta(self, obj: dict[str, Any]) -> GenerationDelta | None:
        if "error" in obj:
            raise error_from_message(
                message_of(obj) or json.dumps(obj)[:500],
                partial=self.partial,
                model=self._requested,
                url=self._url,
            )
        content, thinking, raw_calls = _fields(obj)
        calls: tuple[ToolCallDelta, ...] = ()
        if raw_calls:
            calls = tuple(self._tool_delta(raw) for raw in raw_calls)
        done = obj.get("done") is True
        if self._model is None:
            self._model = obj.get("model") or self._requested
        if not (content or thinking or calls or done):
            return None
        model = None
        if not self._model_sent:
            model, self._model_sent = self._model, True
        delta = GenerationDelta(content, thinking, calls, None, None, model)
        if "logprobs" in obj:
            delta.logprobs = _logprobs(obj)
        if content:
            self._parts.append(content)
        if done:
            self.done = self._careful = True
            delta.finish_reason = _finish_reason(obj, self._tools > 0)
            delta.usage = _usage(obj)
        return delta

    def _tool_delta(self, raw: Any) -> ToolCallDelta:
        call = _whole_tool_call(raw)
        index = self._tools
        self._tools += 1
        return ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)


def error_from_message(
    message: str,
    *,
    partial: str = "",
    model: str | None = None,
    url: str | None = None,
    stream: bool = True,
) -> MatricError:
    """The typed error for an `{"error": ...}` object in a 200 answer or stream line.

    Classified as `errors.error_from_response` would classify an HTTP error with that
    message: a context overflow gives `ContextLengthExceededError`, a missing model
    `ModelNotFoundError` (both with `status` 200). Anything else is a `StreamError` in a
    stream (`stream=True`) and a plain `BackendHTTPError` in a whole answer. Each error
    carries `partial`, the text that had arrived.

    Example:
        >>> err = error_from_message("the input length exceeds the context length")
        >>> type(err).__name__, err.status
        ('ContextLengthExceededError', 200)
    """
    where = url or "the request"
    head = f"Ollama reported an error {'mid-stream' if stream else 'in its answer'} for {where}"
    body = json.dumps({"error": message}, ensure_ascii=False)
    error: MatricError
    probe = error_from_response(400, body, {}, method="POST", url=where, model=model)
    if isinstance(probe, ContextLengthExceededError):
        error = probe
        fix = "Shorten the prompt, lower `max_tokens` or raise `num_ctx`."
    else:
        probe = error_from_response(404, body, {}, method="POST", url=where, model=model)
        if isinstance(probe, ModelNotFoundError):
            error = probe
            fix = f"Check `model` ({model!r}); `ollama pull` it first." if model else ""
        elif stream:
            error = StreamError(f"{head}: {message}", line=body[:200])
            fix = ""
        else:
            error = BackendHTTPError("", status=200, body=body[:500], url=url)
            fix = ""
    if isinstance(error, BackendHTTPError):
        error.status = 200
        error.message = f"{head}: {message}" + (f". {fix}" if fix else "")
        error.args = (error.message,)
    error.partial = partial
    return error


# ---------------------------------------------------------------------------------------
# Shared field access
# ---------------------------------------------------------------------------------------


def _fields(obj: Mapping[str, Any]) -> tuple[str, str, list[Any]]:
    """(content, thinking, tool_calls) of a chat or generate object."""
    message = obj.get("message")
    if isinstance(message, dict):
        return (
            message.get("content") or "",
            message.get("thinking") or "",
            message.get("tool_calls") or [],
        )
    return obj.get("response") or "", obj.get("thinking") or "", obj.get("tool_calls") or []


def _whole_tool_call(raw: Any) -> ToolCall:
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        msg = f"Ollama sent a malformed tool call: {json.dumps(raw)[:200]}"
        raise StreamError(msg, line=json.dumps(raw)[:200])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        text = arguments  # some proxies already send JSON text
    else:
        text = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    call_id = raw.get("id") or f"call_{uuid.uuid4().hex[:24]}"
    return ToolCall(id=call_id, name=function["name"], arguments=text)


def _finish_reason(obj: Mapping[str, Any], had_tool_calls: bool) -> str | None:
    if not obj.get("done"):
        return None
    reason = obj.get("done_reason") or "stop"
    if reason == "stop" and had_tool_calls:
        return "tool_calls"
    return str(reason)


def _usage(obj: Mapping[str, Any]) -> Usage:
    return Usage(
        input_tokens=obj.get("prompt_eval_count") or 0,
        output_tokens=obj.get("eval_count") or 0,
    )


def _raise_if_error(obj: Mapping[str, Any]) -> None:
    if "error" in obj:
        said = message_of(obj) or json.dumps(obj)[:500]
        raise error_from_message(said, model=obj.get("model"), stream=False)
