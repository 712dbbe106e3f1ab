"""The OpenAI-compatible wire format, with no I/O: payloads out, answers and deltas in.

Used for OpenAI, Azure OpenAI, vLLM, llama.cpp, LM Studio, LocalAI, TGI and Ollama's /v1.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, cast

from langchain_matric._json import fast_loads, loads, text_of
from langchain_matric._text import SurrogateJoiner, mend
from langchain_matric._vectors import check_values, float32_lists
from langchain_matric.backends._types import (
    ChatMessage,
    Generation,
    GenerationDelta,
    GenerationRequest,
    ToolCall,
    ToolCallDelta,
    Usage,
    keep_undelivered,
)
from langchain_matric.errors import (
    BackendHTTPError,
    EmbeddingDimensionError,
    MatricError,
    StreamError,
    error_from_response,
    message_of,
    status_for_message,
)
from langchain_matric.sse import ServerSentEvent, SSEDecoder

_pybase64: Any
try:
    import pybase64 as _pybase64
except ImportError:  # pragma: no cover - platforms without its wheels
    _pybase64 = None

TokenLimitParam = Literal["max_tokens", "max_completion_tokens"]

_TOOL_CHOICE_WORDS = {"auto": "auto", "none": "none", "required": "required", "any": "required"}


# ---------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------


def message_to_wire(message: ChatMessage) -> dict[str, Any]:
    """One `ChatMessage` as an OpenAI chat message."""
    wire: dict[str, Any] = {"role": message.role}
    if message.images:
        parts: list[dict[str, Any]] = []
        if message.content:
            parts.append({"type": "text", "text": message.content})
        parts.extend({"type": "image_url", "image_url": {"url": url}} for url in message.images)
        wire["content"] = parts
    else:
        # Never null: several servers reject `content: null` on assistant tool calls.
        wire["content"] = message.content
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.reasoning:  # DeepSeek's and vLLM's field; set only when the caller opted in
        wire["reasoning_content"] = message.reasoning
    if message.role == "tool":
        wire["tool_call_id"] = message.tool_call_id or ""
    elif message.name:
        wire["name"] = message.name
    return wire


def tool_choice_to_wire(choice: str | Mapping[str, Any] | None) -> Any:
    """Normalise a tool choice: "any" means "required"; a bare name forces that tool."""
    if choice is None or isinstance(choice, Mapping):
        return choice
    word = _TOOL_CHOICE_WORDS.get(choice)
    if word is not None:
        return word
    return {"type": "function", "function": {"name": choice}}


def _options_to_wire(request: GenerationRequest, token_limit: TokenLimitParam) -> dict[str, Any]:
    options = request.options
    body: dict[str, Any] = {}
    if options.temperature is not None:
        body["temperature"] = options.temperature
    if options.max_tokens is not None:
        body[token_limit] = options.max_tokens
    if options.top_p is not None:
        body["top_p"] = options.top_p
    if options.stop:
        body["stop"] = list(options.stop)
    if options.seed is not None:
        body["seed"] = options.seed
    if options.n is not None:
        body["n"] = options.n
    if options.logprobs is not None:
        body["logprobs"] = options.logprobs
    if options.top_logprobs is not None:
        body["top_logprobs"] = options.top_logprobs
    body.update(options.extra)
    return body


def chat_payload(
    request: GenerationRequest,
    *,
    model: str,
    stream: bool,
    token_limit: TokenLimitParam = "max_tokens",
    stream_usage: bool = True,
) -> dict[str, Any]:
    """The body of `POST /chat/completions`."""
    body: dict[str, Any] = {
        "model": request.model or model,
        "messages": [message_to_wire(m) for m in request.messages],
    }
    body.update(_options_to_wire(request, token_limit))
    if request.tools:
        body["tools"] = list(request.tools)
    if request.tool_choice is not None:
        body["tool_choice"] = tool_choice_to_wire(request.tool_choice)
    if request.response_format is not None:
        body["response_format"] = dict(request.response_format)
    _set_stream(body, stream=stream, stream_usage=stream_usage)
    return body


def completion_payload(
    request: GenerationRequest,
    *,
    model: str,
    stream: bool,
    stream_usage: bool = True,
) -> dict[str, Any]:
    """The body of `POST /completions` (base models; `request.prompt` is the raw prompt)."""
    body: dict[str, Any] = {"model": request.model or model, "prompt": request.prompt or ""}
    body.update(_options_to_wire(request, "max_tokens"))
    if body.get("logprobs") is True or "top_logprobs" in body:
        # `/completions` takes the number of alternatives in `logprobs` itself
        top = body.pop("top_logprobs", None)
        body["logprobs"] = top or 0
    elif body.get("logprobs") is False:
        del body["logprobs"]
    _set_stream(body, stream=stream, stream_usage=stream_usage)
    return body


def _set_stream(body: dict[str, Any], *, stream: bool, stream_usage: bool) -> None:
    body["stream"] = stream
    if stream and stream_usage:
        body["stream_options"] = {"include_usage": True}


def embeddings_payload(
    texts: Sequence[str], *, model: str, base64: bool, dimensions: int | None
) -> dict[str, Any]:
    """The body of `POST /embeddings`: strings only, base64 floats when the server allows."""
    body: dict[str, Any] = {"model": model, "input": list(texts)}
    if base64:
        body["encoding_format"] = "base64"
    if dimensions is not None:
        body["dimensions"] = dimensions
    return body


# ---------------------------------------------------------------------------------------
# Learning from rejections
# ---------------------------------------------------------------------------------------


def rejects_param(error: BackendHTTPError, param: str) -> bool:
    """True when a 400/422 answer says the server does not take `param`."""
    return error.status in (400, 422) and param in (error.body or str(error))


# ---------------------------------------------------------------------------------------
# Whole answers
# ---------------------------------------------------------------------------------------


def usage_from_wire(data: Any) -> Usage | None:
    """`usage` of a response or chunk, or None when absent."""
    if not isinstance(data, dict):
        return None
    details = data.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    prompt = data.get("prompt_tokens") or 0
    completion = data.get("completion_tokens") or 0
    total = data.get("total_tokens")
    return Usage(prompt, completion, total if total is not None else -1, reasoning, cached)


_METADATA_KEYS = ("id", "system_fingerprint", "service_tier")


def metadata_from_wire(obj: dict[str, Any], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """`id`, `system_fingerprint` and `service_tier` of an answer or chunk, when set.

    Example:
        >>> metadata_from_wire({"id": "chatcmpl-1", "system_fingerprint": None})
        {'id': 'chatcmpl-1'}
    """
    found = {} if into is None else into
    for key in _METADATA_KEYS:
        value = obj.get(key)
        if value is not None:
            found[key] = value
    return found


def logprob_entries(raw: Any) -> list[Any] | None:
    """A choice's `logprobs` as OpenAI's chat entries (one per token), or None.

    The chat API sends `{"content": [...]}`; `/completions` sends parallel lists
    (`tokens`, `token_logprobs`, `top_logprobs`), turned into the same entries.

    Example:
        >>> logprob_entries({"tokens": ["Hi"], "token_logprobs": [-0.5], "top_logprobs": None})
        [{'token': 'Hi', 'logprob': -0.5, 'bytes': None, 'top_logprobs': []}]
    """
    if not isinstance(raw, dict):
        return None
    content = raw.get("content")
    if isinstance(content, list):
        return content
    tokens = raw.get("tokens")
    if not isinstance(tokens, list):
        return None
    values = raw.get("token_logprobs") or [None] * len(tokens)
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    return [
        {
            "token": token,
            "logprob": value,
            "bytes": None,
            "top_logprobs": [
                {"token": t, "logprob": v, "bytes": None} for t, v in (top or {}).items()
            ],
        }
        for token, value, top in zip(tokens, values, tops, strict=False)
    ]


def unterminated_json(text: str) -> bool:
    """True when `text` is JSON cut off: an open string, object or array at its end.

    vLLM reports a tool call cut by the token limit as `finish_reason: "tool_calls"`
    with such arguments (vllm#47963); the parsers then say "length".

    Example:
        >>> unterminated_json('{"city": "Os'), unterminated_json('{"city": "Oslo"}')
        (True, False)
    """
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
    return in_string or depth > 0


def _cut_tool_call(finish: str | None, arguments: Sequence[str]) -> str | None:
    """The finish reason: "length" for a tool call the token limit cut, else `finish`."""
    if finish == "tool_calls" and any(unterminated_json(a) for a in arguments):
        return "length"
    return finish


class _Partial(Protocol):
    @property
    def partial(self) -> str: ...


def event_json(data: str | bytes, url: str, stream: _Partial) -> Any:
    """An event's JSON by the lenient parser (`_json.loads`), for what orjson refused.

    Invalid JSON is a `StreamError` quoting the line (first 200 characters) with the
    stream's text so far, read only then.

    Example:
        >>> class Stream:
        ...     partial = "Hel"
        >>> event_json(b'{"x": NaN}', "http://h/v1/chat/completions", Stream())
        {'x': nan}
    """
    try:
        return loads(data)
    except ValueError:
        line = text_of(data)[:200]
        msg = f"invalid JSON in a data line from {url}: {line!r}"
        raise StreamError(msg, partial=stream.partial, line=line) from None


def raise_body_error(obj: Any, url: str, *, partial: str = "") -> None:
    """Raise the typed error for an error object in a 200 body or a stream, if it is one.

    Shapes: OpenAI `{"error": {...}}` and `{"error": "..."}`, vLLM `{"object": "error", ...}`.
    """
    if not isinstance(obj, dict):
        return
    if "error" not in obj and obj.get("object") != "error":
        return
    said = message_of(obj) or json.dumps(obj)[:500]
    inner = obj.get("error")
    code: Any = (inner.get("code") if isinstance(inner, dict) else None) or obj.get("code")
    # A string code such as "context_length_exceeded" names the kind: classify on it too.
    hint = f"{said} ({code})" if isinstance(code, str) else said
    status = code if isinstance(code, int) and 400 <= code < 600 else status_for_message(hint)
    error = error_from_response(status, json.dumps({"error": hint}), {}, method="POST", url=url)
    error.status = 200
    error.message = f"server reported an error in its answer from {url}: {said}"
    error.args = (error.message,)
    error.partial = partial
    raise error


def _tool_calls(raw: Any) -> list[ToolCall]:
    calls = []
    for i, call in enumerate(raw or ()):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # some servers send an object
            arguments = json.dumps(arguments if arguments is not None else {})
        calls.append(ToolCall(call.get("id") or f"call_{i}", function.get("name") or "", arguments))
    return calls


def parse_chat_response(obj: Any, url: str) -> Generation:
    """A whole `chat.completion` answer: its first choice, the others (`n` > 1) after it."""
    raise_body_error(obj, url)
    _first_choice(obj, url)
    usage = usage_from_wire(obj.get("usage"))
    metadata = metadata_from_wire(obj)
    generations = [_chat_choice(choice, obj, usage, metadata) for choice in _ordered_choices(obj)]
    generations[0].alternatives = generations[1:]
    return generations[0]


def _ordered_choices(obj: dict[str, Any]) -> list[dict[str, Any]]:
    choices = [c for c in obj["choices"] if isinstance(c, dict)]
    if len(choices) > 1:
        choices.sort(key=lambda choice: choice.get("index") or 0)
    return choices


def _chat_choice(
    choice: dict[str, Any], obj: dict[str, Any], usage: Usage | None, metadata: dict[str, Any]
) -> Generation:
    message = choice.get("message") or {}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    calls = _tool_calls(message.get("tool_calls"))
    return Generation(
        text=message.get("content") or "",
        reasoning=reasoning or None,
        tool_calls=calls,
        finish_reason=_cut_tool_call(choice.get("finish_reason"), [c.arguments for c in calls]),
        usage=usage,
        model=obj.get("model"),
        raw=obj,
        logprobs=logprob_entries(choice.get("logprobs")),
        metadata=dict(metadata) if metadata else None,
    )


def parse_completion_response(obj: Any, url: str) -> Generation:
    """A whole `text_completion` answer: its first choice, the others (`n` > 1) after it."""
    raise_body_error(obj, url)
    _first_choice(obj, url)
    usage = usage_from_wire(obj.get("usage"))
    metadata = metadata_from_wire(obj)
    generations = [
        Generation(
            text=choice.get("text") or "",
            finish_reason=choice.get("finish_reason"),
            usage=usage,
            model=obj.get("model"),
            raw=obj,
            logprobs=logprob_entries(choice.get("logprobs")),
            metadata=dict(metadata) if metadata else None,
        )
        for choice in _ordered_choices(obj)
    ]
    generations[0].alternatives = generations[1:]
    return generations[0]


def _first_choice(obj: Any, url: str) -> dict[str, Any]:
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not choices or not isinstance(choices[0], dict):
        snippet = json.dumps(obj)[:500]
        msg = f"answer from {url} has no choices; is this an OpenAI-compatible server? {snippet}"
        raise BackendHTTPError(msg, status=200, body=snippet, url=url)
    choice: dict[str, Any] = choices[0]
    return choice


def generation_to_deltas(generation: Generation) -> list[GenerationDelta]:
    """A whole answer as the single delta a stream would have summed to."""
    return [
        GenerationDelta(
            text=generation.text,
            reasoning=generation.reasoning or "",
            tool_call_deltas=tuple(
                ToolCallDelta(i, c.id, c.name, c.arguments)
                for i, c in enumerate(generation.tool_calls)
            ),
            finish_reason=generation.finish_reason,
            usage=generation.usage,
            model=generation.model,
            response_id=generation.response_id,
            logprobs=generation.logprobs,
            metadata=generation.metadata,
        )
    ]


def parse_embeddings(
    obj: Any, url: str, *, expected_count: int, expected_dim: int | None
) -> list[list[float]]:
    """Vectors of an `/embeddings` answer, in input order (by `index`), base64 or floats."""
    values = embedding_values(obj, url, expected_count=expected_count)
    return vectors_of(values, url, expected_dim=expected_dim)


def embedding_values(obj: Any, url: str, *, expected_count: int) -> list[Any]:
    """The `embedding` of each item of an `/embeddings` answer, in input order (by `index`).

    Base64 strings or lists of numbers, as the server sent them; `vectors_of` decodes them.
    Two steps so that the parsed answer can be let go of before the vectors are built.
    """
    raise_body_error(obj, url)
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        snippet = json.dumps(obj)[:500]
        msg = f"answer from {url} has no `data` list of embeddings: {snippet}"
        raise BackendHTTPError(msg, status=200, body=snippet, url=url)
    if len(data) != expected_count:
        msg = f"asked {url} for {expected_count} embeddings, got {len(data)}"
        raise EmbeddingDimensionError(msg)
    ordered = sorted(data, key=lambda item: item.get("index", 0))
    return [item.get("embedding") for item in ordered]


def vectors_of(values: list[Any], url: str, *, expected_dim: int | None) -> list[list[float]]:
    """Vectors from `embedding_values`, each the same size (`expected_dim` when given)."""
    if all(isinstance(value, str) for value in values):
        # float32 encodes NaN and infinities too: checked as the lists are built
        vectors = float32_lists([b64decode(value) for value in values], source=url)
    else:
        vectors = [_vector(value, i, url) for i, value in enumerate(values)]
    check_dimensions(vectors, expected_dim, url)
    return vectors


def check_dimensions(vectors: list[list[float]], expected: int | None, url: str) -> None:
    """Raise `EmbeddingDimensionError` unless every vector has the expected size."""
    sizes = {len(v) for v in vectors}
    if expected is not None and sizes - {expected}:
        msg = (
            f"{url} returned vectors of size {sorted(sizes)}, expected {expected}; "
            "set `embed_dimension` to the model's size (or None to accept any)"
        )
        raise EmbeddingDimensionError(msg)
    if len(sizes) > 1:
        msg = f"{url} returned vectors of different sizes {sorted(sizes)} in one answer"
        raise EmbeddingDimensionError(msg)


def _vector(embedding: Any, index: int, url: str) -> list[float]:
    """One vector of an answer mixing base64 and float lists (or holding something else)."""
    if isinstance(embedding, str):
        vector = float32_lists([b64decode(embedding)])[0]
    elif isinstance(embedding, list):
        vector = embedding  # numbers as parsed; float("1.5") would take a string for one
    else:
        vector = None
    if vector is not None:
        check_values((vector,), url, url=url, first=index)
        return vector if vector is not embedding else list(map(float, embedding))
    shown = json.dumps(embedding)[:200]
    msg = f"embedding {index} from {url} is neither a list of numbers nor base64: {shown}"
    raise BackendHTTPError(msg, status=200, body=shown, url=url)


def b64decode(text: str) -> bytes:
    """Base64 to bytes: SIMD pybase64 where installed (~10x the standard library on a vector).

    Strict first; text with anything besides the alphabet is decoded leniently, as
    `base64.b64decode` does (characters outside the alphabet are skipped).
    """
    if _pybase64 is not None:
        try:  # not contextlib.suppress: one object less per vector, one GC pass less per 700
            return cast("bytes", _pybase64.b64decode(text, validate=True))
        except ValueError:
            pass
    return base64.b64decode(text)


def answered_base64(obj: Any) -> bool | None:
    """Whether an embeddings answer carried base64 strings (None when it had no vectors)."""
    try:
        return isinstance(obj["data"][0]["embedding"], str)
    except (KeyError, IndexError, TypeError):
        return None


# ---------------------------------------------------------------------------------------
# Server quirks
# ---------------------------------------------------------------------------------------


class EmptyStreamError(StreamError):
    """A stream that ended cleanly with no event at all: nothing reached the caller."""


# ---------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------


def surface_error_fields(name: str, value: str) -> ServerSentEvent | None:
    """`SSEDecoder`'s `on_ignored` hook: the error fields the spec would drop, as events.

    llama.cpp's C++ server writes a bare `error: {...}` line; some servers send an
    `event: error` block with no data. The spec drops both; we must not.

    Example:
        >>> surface_error_fields("error", '{"message": "boom"}').event
        'error'
    """
    if name == "error":
        return ServerSentEvent(event="error", data=value)
    if name == "event" and value == "error":
        return ServerSentEvent(event="error")
    return None


class SSETextParser:
    """What the SSE stream parsers share: the decoder, the text so far, and mending it.

    Text is kept as received until an event's JSON needs the lenient parser (a lone
    surrogate escape, invalid UTF-8: see `_json`); from then on this stream's text is
    joined and mended (`_text`), and `_joining` lets a subclass switch to its slower path.

    Example:
        >>> parser = SSETextParser("http://127.0.0.1/v1/x", max_line_size=1024)
        >>> parser._pieces.append("Hi")
        >>> parser._lenient_loads(b'{"score": NaN}'), parser.partial  # orjson refuses NaN
        ({'score': nan}, 'Hi')
    """

    def __init__(self, url: str, *, max_line_size: int) -> None:
        self._decoder = SSEDecoder(max_line_size=max_line_size, on_ignored=surface_error_fields)
        self._url = url
        self._pieces: list[str] = []
        self._joiner: SurrogateJoiner | None = None
        """Set once text may hold surrogates (see `_lenient_loads`)."""

    @property
    def partial(self) -> str:
        """Text received so far (lone surrogate halves mended; a held one left out)."""
        text = "".join(self._pieces)
        return text if self._joiner is None else mend(text)

    def _lenient_loads(self, data: str | bytes) -> Any:
        """What orjson refused: NaN, invalid UTF-8, lone surrogate escapes (see `_json`)."""
        obj = event_json(data, self._url, self)
        if self._joiner is None:
            self._joiner = SurrogateJoiner()
            self._joining()
        return obj

    def _joining(self) -> None:
        """Called once, when this stream's text starts to be joined and mended."""


class OpenAIStreamParser(SSETextParser):
    """SSE chat or completion chunks to deltas, with OpenAI's stream semantics.

    `[DONE]` ends the stream, and so does a clean end once `finish_reason` arrived. The
    finish delta is held until the usage chunk (`choices: []`) or `[DONE]`, so that
    finish_reason and usage arrive together, once.
    """

    def __init__(self, url: str, *, completions: bool = False, max_line_size: int) -> None:
        super().__init__(url, max_line_size=max_line_size)
        self._completions = completions
        self._model_sent = False
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._final_sent = False
        self._ids_seen: set[int] = set()
        self._names_seen: set[int] = set()
        self._arguments: dict[int, list[str]] = {}
        """Each tool call's argument pieces, to tell a call the token limit cut."""
        self._metadata: dict[str, Any] = {}
        self.done = False
        self.empty = True
        """True until the first event: a clean end while still empty is `EmptyStreamError`."""

    def feed(self, data: bytes) -> list[GenerationDelta]:
        """Consume body bytes."""
        deltas: list[GenerationDelta] = []
        try:
            values = self._decoder.feed_plain(data)
            if values is not None:  # only `data:` events: no event objects, no text decoding
                for value in values:
                    if value == b"[DONE]":
                        self._on_done(deltas)
                        break
                    self._on_data(value, deltas)
                return deltas
            for event in self._decoder.feed(data):
                self._on_event(event, deltas)
                if self.done:
                    break
        except MatricError as error:
            keep_undelivered(error, deltas)  # the driver yields them before the error
            raise
        return deltas

    def finish(self) -> list[GenerationDelta]:
        """Consume a clean end of the body."""
        deltas: list[GenerationDelta] = []
        for event in self._decoder.flush():
            self._on_event(event, deltas)
        if not self.done:
            if self.empty:
                msg = (
                    f"stream from {self._url} answered 200 with an empty body (llama-cpp-python "
                    "does this when a request fails before its first token)"
                )
                raise EmptyStreamError(msg)
            if self._finish is None:
                msg = (
                    f"stream from {self._url} ended before `data: [DONE]` and without a "
                    f"finish_reason: the answer is truncated ({len(self.partial)} characters kept)"
                )
                raise StreamError(msg, partial=self.partial)
            self._emit_final(deltas)
            self.done = True
        return deltas

    def _on_event(self, event: ServerSentEvent, deltas: list[GenerationDelta]) -> None:
        if event.event == "error":
            self.empty = False
            self._raise_error(event.data)
        if event.data == "[DONE]":
            self._on_done(deltas)
        else:
            self._on_data(event.data, deltas)

    def _on_done(self, deltas: list[GenerationDelta]) -> None:
        self.empty = False
        self._emit_final(deltas)
        self.done = True

    def _on_data(self, data: str | bytes, deltas: list[GenerationDelta]) -> None:
        """One event's data other than `[DONE]`: text from `feed`, UTF-8 from `feed_plain`."""
        self.empty = False
        if not data:
            return
        try:
            obj = fast_loads(data)
        except ValueError:
            obj = self._lenient_loads(data)
        if not isinstance(obj, dict):
            line = text_of(data)[:200]
            msg = f"unexpected data line from {self._url}: {line!r}"
            raise StreamError(msg, partial=self.partial, line=line)
        if "error" in obj or obj.get("object") == "error":
            raise_body_error(obj, self._url, partial=self.partial)
        usage = obj.get("usage")
        if usage:
            self._usage = usage_from_wire(usage)
        choices = obj.get("choices")
        if choices:
            delta = self._choice_delta(choices[0], obj)
            if delta is not None:
                deltas.append(delta)
        elif usage and self._finish is not None:
            metadata_from_wire(obj, self._metadata)  # e.g. a service tier said only here
            self._emit_final(deltas)  # the usage chunk: last before [DONE]

    def _joining(self) -> None:
        """From now on every choice's text goes through the joiner (this stream only)."""
        self._choice_delta = self._joined_choice_delta  # type: ignore[method-assign]

    def _joined_choice_delta(
        self, choice: dict[str, Any], obj: dict[str, Any]
    ) -> GenerationDelta | None:
        """`_choice_delta`, its text passed through the joiner (this stream only)."""
        delta = OpenAIStreamParser._choice_delta(self, choice, obj)
        if delta is not None and self._joiner is not None:
            if delta.text:
                delta.text = self._pieces[-1] = self._joiner.feed(delta.text)
            if delta.reasoning:
                delta.reasoning = mend(delta.reasoning)
        return delta

    def _choice_delta(self, choice: dict[str, Any], obj: dict[str, Any]) -> GenerationDelta | None:
        if choice.get("index", 0) != 0:
            return None  # one choice (n=1) only
        finish = choice.get("finish_reason")
        if finish:
            self._finish = finish
        tool_deltas: tuple[ToolCallDelta, ...] = ()
        if self._completions:
            text, reasoning = choice.get("text") or "", ""
        else:
            wire = choice.get("delta") or {}
            text = wire.get("content") or ""
            reasoning = wire.get("reasoning_content") or wire.get("reasoning") or ""
            raw_calls = wire.get("tool_calls")
            if raw_calls:
                tool_deltas = self._tool_deltas(raw_calls)
        model = None
        if not self._model_sent:
            model = obj.get("model")
            metadata_from_wire(obj, self._metadata)
            self._model_sent = True
        elif not (text or reasoning or tool_deltas):
            return None
        if text:
            self._pieces.append(text)
        logprobs = choice.get("logprobs")
        if logprobs:
            entries = logprob_entries(logprobs)
            if entries:
                return GenerationDelta(
                    text, reasoning, tool_deltas, None, None, model, logprobs=entries
                )
        return GenerationDelta(text, reasoning, tool_deltas, None, None, model)

    def _tool_deltas(self, raw_calls: list[dict[str, Any]]) -> tuple[ToolCallDelta, ...]:
        out = []
        for position, call in enumerate(raw_calls):
            index = call.get("index", position)
            function = call.get("function") or {}
            call_id = call.get("id")
            name = function.get("name")
            # Some servers repeat id and name in every delta: keep only the first.
            if call_id and index not in self._ids_seen:
                self._ids_seen.add(index)
            else:
                call_id = None
            if name and index not in self._names_seen:
                self._names_seen.add(index)
            else:
                name = None
            arguments = function.get("arguments") or ""
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            self._arguments.setdefault(index, []).append(arguments)
            out.append(ToolCallDelta(index, call_id, name, arguments))
        return tuple(out)

    def _emit_final(self, deltas: list[GenerationDelta]) -> None:
        if self._final_sent:
            return
        self._final_sent = True
        text = "" if self._joiner is None else self._joiner.flush()  # half a pair, at the end
        if text:
            self._pieces.append(text)
        finish = self._finish or "stop"
        if self._arguments:
            finish = (
                _cut_tool_call(finish, ["".join(p) for p in self._arguments.values()]) or finish
            )
        deltas.append(
            GenerationDelta(
                text,
                finish_reason=finish,
                usage=self._usage,
                metadata=self._metadata or None,
            )
        )

    def _raise_error(self, data: str) -> None:
        try:
            obj = json.loads(data) if data else {"error": "the server sent `event: error`"}
        except ValueError:
            obj = {"error": data}
        if not isinstance(obj, dict):
            obj = {"error": data}
        if "error" not in obj and obj.get("object") != "error":
            obj = {"error": obj}
        raise_body_error(obj, self._url, partial=self.partial)
