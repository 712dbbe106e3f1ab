"""Public value types of the loopback server: replies, faults, options, recorded requests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

LineEnding = Literal["\n", "\r\n", "\r"]
ReasoningField = Literal["reasoning_content", "reasoning"]
Base64Mode = Literal["support", "reject", "ignore"]
ResponsesShape = Literal["openai", "vllm", "llamacpp"]
ErrorStyle = Literal["openai", "vllm", "event", "event_no_data", "llamacpp", "ollama"]
FaultKind = Literal[
    "status",
    "drop",
    "stall",
    "end_early",
    "no_terminator",
    "inject",
    "invalid_json",
    "stream_error",
    "huge_line",
    "non_streaming",
    "empty",
]

_GARBAGE = b"\x00\xff\xfe garbage \x80\x81 not an event \r\n\r\n"


@dataclass(frozen=True, slots=True)
class ToolCallSpec:
    """A tool call in a scripted `Reply`.

    `arguments` is a mapping (sent as JSON text to OpenAI clients and as an object to
    Ollama clients) or a string sent verbatim (to script malformed arguments). `id`
    defaults to ``call_<n>``.

    Example:
        >>> ToolCallSpec("get_weather", {"city": "Oslo"}, id="call_1").name
        'get_weather'
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as JSON text."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), ensure_ascii=False)

    def arguments_object(self) -> Any:
        """The arguments as a JSON value (a string that is not JSON stays a string)."""
        if isinstance(self.arguments, str):
            try:
                return json.loads(self.arguments)
            except ValueError:
                return self.arguments
        return dict(self.arguments)


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer to a generation request (chat or completion, either protocol).

    `text` and `reasoning` are a string (streamed one word per delta) or a sequence of
    strings (one delta each, exactly as given). Wire fields left as None take the
    server's options (`ServerOptions`).

    Example:
        >>> from langchain_matric.testing import LocalServer, Reply, ToolCallSpec
        >>> with LocalServer() as server:
        ...     server.script(
        ...         Reply(text="Hello!", reasoning="hmm", usage=(5, 2), chunk_size=1),
        ...         Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"})]),
        ...     )
    """

    text: str | Sequence[str] = ""
    reasoning: str | Sequence[str] | None = None
    tool_calls: Sequence[ToolCallSpec] = ()
    finish_reason: str | None = None
    """Default: "tool_calls" when there are tool calls, else "stop" (Ollama: always "stop"
    unless "length")."""
    usage: tuple[int, int] | None = None
    """(prompt tokens, completion tokens); None counts words."""
    model: str | None = None
    """Default: the model named in the request."""
    chunk_size: int | None = None
    line_ending: LineEnding | None = None
    ping_every: int | None = None
    delay: float | None = None
    reasoning_field: ReasoningField | None = None
    repeat_tool_call_ids: bool | None = None
    responses_shape: ResponsesShape | None = None
    cached_tokens: int | None = None
    """Input tokens reported as served from the prompt cache (None: the prompt's words
    shared with the previous request's, on `/v1/responses` and `/v1/chat/completions`;
    0 for `ServerOptions.default_reply` on the chat API, whose answers are pre-built)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A queued misbehaviour, applied to the next `times` matching requests.

    `Fault(status=...)` answers with that status, `body` and `headers` instead of the
    real response (body default: an error JSON in the endpoint's protocol). The class
    methods build in-stream faults; they apply to the reply served to that request
    (scripted or request-driven) and consume it. `after` counts protocol events (SSE
    events / NDJSON lines, the terminator included) sent before the fault fires; for
    `drop` and `stall`, ``after=0`` acts before the response head (no response at all /
    a first-byte stall). On a whole (non-streamed) response only `drop` (``after>=1``:
    the head and half the body) and `stall` (``after>=1``: between head and body) apply.
    `path` restricts the fault to one request path (e.g. "/v1/chat/completions").

    Example:
        >>> from langchain_matric.testing import Fault, LocalServer
        >>> with LocalServer() as server:
        ...     server.fault(Fault(status=429, headers={"Retry-After": "1"}, times=2))
        ...     server.fault(Fault.drop(after=3, path="/v1/chat/completions"))
    """

    kind: FaultKind = "status"
    status: int = 500
    body: str | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    times: int = 1
    path: str | None = None
    after: int = 0
    seconds: float = 0.0
    data: bytes = b""
    style: ErrorStyle | None = None
    """In-stream error shape; None: "openai" for SSE streams, "ollama" for NDJSON."""
    message: str = "the server failed while generating"
    code: int | str | None = None
    size: int = 600 * 1024

    def __post_init__(self) -> None:
        if self.times < 1:
            msg = f"Fault.times must be >= 1, got {self.times}"
            raise ValueError(msg)
        if self.after < 0:
            msg = f"Fault.after must be >= 0, got {self.after}"
            raise ValueError(msg)

    @classmethod
    def drop(cls, after: int = 1, *, times: int = 1, path: str | None = None) -> Fault:
        """Close the connection after `after` events, without the terminating chunk.

        ``after=0``: close before sending anything (the client sees no response).
        """
        return cls("drop", after=after, times=times, path=path)

    @classmethod
    def stall(
        cls, seconds: float, after: int = 1, *, times: int = 1, path: str | None = None
    ) -> Fault:
        """Sleep `seconds` after `after` events, then go on (ends early on stop/disconnect).

        ``after=0``: sleep before the response head (a first-byte stall).
        """
        return cls("stall", after=after, seconds=seconds, times=times, path=path)

    @classmethod
    def end_early(cls, after: int = 1, *, times: int = 1, path: str | None = None) -> Fault:
        """End the body cleanly after `after` events: no finish reason, no terminator."""
        return cls("end_early", after=after, times=times, path=path)

    @classmethod
    def no_terminator(cls, *, times: int = 1, path: str | None = None) -> Fault:
        """Send everything but ``data: [DONE]`` (OpenAI) or the ``done: true`` line (Ollama)."""
        return cls("no_terminator", times=times, path=path)

    @classmethod
    def inject(
        cls, data: bytes = _GARBAGE, after: int = 1, *, times: int = 1, path: str | None = None
    ) -> Fault:
        """Send raw `data` as one extra chunk frame after `after` events (default: garbage)."""
        return cls("inject", after=after, data=data, times=times, path=path)

    @classmethod
    def invalid_json(cls, after: int = 1, *, times: int = 1, path: str | None = None) -> Fault:
        """Send one event / line whose JSON is broken after `after` events."""
        return cls("invalid_json", after=after, times=times, path=path)

    @classmethod
    def stream_error(
        cls,
        style: ErrorStyle | None = None,
        after: int = 1,
        *,
        message: str = "the server failed while generating",
        code: int | str | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> Fault:
        """Send an in-stream error after `after` events, then end the body cleanly.

        Styles (None: "openai" for SSE, "ollama" for NDJSON): "openai" ``data: {"error":
        {...}}``; "vllm" ``data: {"object": "error", ...}``; "event" ``event: error`` +
        data; "event_no_data" a bare ``event: error`` block; "llamacpp" a bare ``error:
        {...}`` line; "ollama" an ``{"error": "..."}`` line. On ``/v1/responses``: None or
        "openai" an ``error`` event, "event" ``response.failed``, "llamacpp" a bare
        ``data: {"error": ...}``, "vllm" ``data: {"object": "error", ...}``.
        """
        return cls(
            "stream_error", after=after, style=style, message=message, code=code,
            times=times, path=path,
        )  # fmt: skip

    @classmethod
    def huge_line(
        cls, size: int = 600 * 1024, after: int = 1, *, times: int = 1, path: str | None = None
    ) -> Fault:
        """Insert one content delta of `size` characters ("x") after `after` events."""
        return cls("huge_line", after=after, size=size, times=times, path=path)

    @classmethod
    def non_streaming(cls, *, times: int = 1, path: str | None = None) -> Fault:
        """Answer a stream request with the whole JSON body (``application/json``)."""
        return cls("non_streaming", times=times, path=path)

    @classmethod
    def empty(cls, *, times: int = 1, path: str | None = None) -> Fault:
        """Answer 200 with the stream content type and an empty body."""
        return cls("empty", times=times, path=path)


@dataclass(slots=True)
class ServerOptions:
    r"""Server-wide behaviour of a `LocalServer`; mutable while it runs (``server.options``).

    Example:
        >>> from langchain_matric.testing import LocalServer
        >>> with LocalServer(embedding_dim=8, chunk_size=1) as server:
        ...     server.options.line_ending = "\r\n"
    """

    models: Sequence[str] = ("test-model", "test-embed")
    """Listed by ``/v1/models`` and ``/api/tags``."""
    strict_models: bool = False
    """Answer 404 (model not found) for a model not in `models`."""
    api_key: str | None = None
    """When set, ``/v1`` requests need ``Authorization: Bearer <api_key>`` (else 401)."""
    embedding_dim: int = 768
    """Default embedding size; a request's ``dimensions`` overrides it."""
    embed_max_chars: int = 8192
    """Longer embedding input: 400 (OpenAI; Ollama with ``truncate: false``) or cut."""
    context_chars: int | None = None
    """Total prompt characters above which a generation request gets a 400 overflow."""
    base64_embeddings: Base64Mode = "support"
    """``encoding_format: "base64"``: "support" it, "reject" with 400, or "ignore" (floats)."""
    reasoning: bool = False
    """Request-driven replies reason even when the request does not ask (``think``)."""
    default_reply: Reply | None = None
    """Served (repeatedly, pre-built) when the script queue is empty, instead of the
    request-driven model."""
    ollama_tool_call_ids: bool = True
    """Newer Ollama sends an ``id`` per tool call; False emulates older versions."""
    ollama_version: str = "0.12.6"
    tokenizer: bool = False
    """Serve vLLM's `POST /tokenize` (one token per word or mark); off: it answers 404."""
    chunk_size: int | None = None
    """Split every event's bytes into HTTP chunk frames of this many bytes (>= 1)."""
    line_ending: LineEnding = "\n"
    """SSE line ending; NDJSON uses "\\r\\n" when this is "\\r\\n", else "\\n"."""
    ping_every: int = 0
    """A ``: ping`` comment (SSE) or blank line (NDJSON) before every N-th event; 0 = never."""
    delay: float = 0.0
    """Seconds to wait before each event."""
    reasoning_field: ReasoningField = "reasoning_content"
    """OpenAI delta/message field carrying reasoning."""
    repeat_tool_call_ids: bool = False
    """Repeat id, type and name in every OpenAI tool-call delta (some servers do)."""
    responses_shape: ResponsesShape = "openai"
    """How ``/v1/responses`` streams look: "openai", "vllm" or "llamacpp" (no
    ``output_index``, function calls known by ``call_id`` only)."""
    max_n: int | None = None
    """Answer 400 to a chat or completion request asking for more than this many choices
    (``n``); llama.cpp's server takes 1. None: any ``n``."""
    service_tier: str | None = "default"
    """``service_tier`` of OpenAI answers (None: not sent)."""
    context_length: int = 8192
    """The models' context size, as each server reports it: Ollama's ``/api/show``
    (``model_info``), llama.cpp's ``/props`` (``n_ctx``) and vLLM's ``max_model_len`` in
    ``/v1/models``."""
    max_model_len: bool = True
    """List ``max_model_len`` in ``/v1/models`` (vLLM does; llama.cpp does not, so a
    client finds the size in ``/props``)."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the server received (see `LocalServer.requests`).

    Example:
        >>> req = RecordedRequest("POST", "/v1/embeddings", {}, {"content-type": "a/b"},
        ...                       {"input": "hi"}, b'{"input": "hi"}', 0.0)
        >>> req.json["input"], req.headers["content-type"]
        ('hi', 'a/b')
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    json: Any
    """The parsed JSON body, or None (no body or not JSON)."""
    body: bytes
    time: float
    """``time.time()`` when the request was complete."""

    @property
    def stream(self) -> bool:
        """Whether the request asked to stream (Ollama streams when ``stream`` is absent)."""
        body = self.json if isinstance(self.json, dict) else {}
        return bool(body.get("stream", self.path.startswith("/api/")))
