"""Value types that cross the backend boundary.

Plain slotted dataclasses: they are built once per request or once per streamed chunk,
so they stay off pydantic. Nothing here knows about HTTP or LangChain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class Usage:
    """Token counts of one generation.

    Example:
        >>> Usage(input_tokens=12, output_tokens=3)
        Usage(input_tokens=12, output_tokens=3, total_tokens=15, reasoning_tokens=None, cached_tokens=None)
    """  # noqa: E501

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = -1
    """Defaults to input + output when the server does not say."""
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    """Input tokens the server served from its prompt cache, when it says."""

    def __post_init__(self) -> None:
        if self.total_tokens < 0:
            self.total_tokens = self.input_tokens + self.output_tokens


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A complete tool call: `arguments` is the JSON text the model produced.

    Example:
        >>> ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}').name
        'get_weather'
    """

    id: str
    name: str
    arguments: str


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call.

    `id` and `name` are set on the first delta of each `index` only, even when the
    server repeats them; `arguments` pieces concatenate to the JSON text.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class ChatMessage:
    """One message of a conversation, in a server-neutral shape.

    `images` hold data URLs (`data:image/png;base64,...`) or http(s) URLs; Ollama's
    native API accepts only the former.

    Example:
        >>> ChatMessage("user", "Hello").role
        'user'
    """

    role: Role
    content: str = ""
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str | None = None
    name: str | None = None
    """Author name for user/assistant messages; the tool's name for tool messages."""
    images: Sequence[str] = ()
    reasoning: str | None = None
    """An assistant turn's reasoning, sent back only when the caller opted in (else None)."""


@dataclass(slots=True)
class GenerationOptions:
    r"""Sampling and length controls. `None` means "the server's default".

    Example:
        >>> GenerationOptions(temperature=0.0, max_tokens=64, stop=["\\n\\n"]).max_tokens
        64
    """

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: Sequence[str] | None = None
    seed: int | None = None
    n: int | None = None
    """Choices to generate (the chat and completions APIs; None: not sent, one)."""
    logprobs: bool | None = None
    """Ask for the log probability of every output token (None: not sent)."""
    top_logprobs: int | None = None
    """Alternatives per token with their log probabilities (None: not sent)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Provider-specific fields, sent as they are (OpenAI body keys, Ollama `options`)."""


@dataclass(slots=True)
class GenerationRequest:
    """What to generate: a conversation, or a bare `prompt` for a completion endpoint.

    `tools` use the OpenAI function format (`{"type": "function", "function": {...}}`),
    which Ollama accepts too; `response_format` the OpenAI one (`{"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}}}` or `{"type": "json_object"}`).

    Example:
        >>> req = GenerationRequest.from_prompt("Say hi", system="Be brief")
        >>> [m.role for m in req.messages]
        ['system', 'user']
    """

    messages: Sequence[ChatMessage] = ()
    options: GenerationOptions = field(default_factory=GenerationOptions)
    tools: Sequence[Mapping[str, Any]] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: Mapping[str, Any] | None = None
    prompt: str | None = None
    """A raw prompt for `/completions` or Ollama `/api/generate`; `messages` stay empty."""
    model: str | None = None
    """Overrides the backend's model for this request."""
    api: Literal["chat", "responses"] | None = None
    """Which API carries a chat request: None is the backend's own choice (`api=`)."""
    response_headers: bool = False
    """Put the HTTP response headers (secrets scrubbed) in the answer's `metadata`."""

    @classmethod
    def from_prompt(
        cls,
        prompt: str,
        *,
        system: str | None = None,
        options: GenerationOptions | None = None,
    ) -> GenerationRequest:
        """A one-turn chat request: an optional system message, then the user prompt."""
        messages = [ChatMessage("system", system)] if system is not None else []
        messages.append(ChatMessage("user", prompt))
        return cls(messages=messages, options=options or GenerationOptions())


@dataclass(slots=True)
class Generation:
    """A whole answer.

    Example:
        >>> Generation(text="Hi!", finish_reason="stop").text
        'Hi!'
    """

    text: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    raw: Any = None
    """The decoded response body (or the last stream object), for what we don't map."""
    response_id: str | None = None
    """The Responses API's id of this answer (what `previous_response_id` continues)."""
    logprobs: list[Any] | None = None
    """One entry per output token (OpenAI's `logprobs.content`), when asked for."""
    metadata: dict[str, Any] | None = None
    """What the server said about the answer besides it, named as in `response_metadata`:
    `id`, `system_fingerprint`, `service_tier`, `headers` (when asked for)."""
    alternatives: list[Generation] = field(default_factory=list)
    """Choices after the first, in order, when `n` > 1 was asked for."""


@dataclass(slots=True)
class GenerationDelta:
    """A piece of a streamed answer.

    Within one stream `finish_reason` and `usage` each appear exactly once (on the last
    delta), and `model` on the first. `response_id` (the Responses API only) rides on the
    last delta too.
    """

    text: str = ""
    reasoning: str = ""
    tool_call_deltas: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    response_id: str | None = None
    logprobs: list[Any] | None = None
    """This delta's own logprob entries (each token's entry arrives once)."""
    metadata: dict[str, Any] | None = None
    """As `Generation.metadata`, on the last delta only."""


_UNDELIVERED = "_matric_undelivered"


def keep_undelivered(error: BaseException, deltas: list[GenerationDelta]) -> None:
    """Attach the deltas a parser decoded, in the same read, before it failed.

    The stream driver delivers them before raising (`take_undelivered`), so what the
    caller received always matches the error's `partial`, however reads were split.
    """
    if deltas:
        error.__dict__[_UNDELIVERED] = deltas


def take_undelivered(error: BaseException) -> list[GenerationDelta]:
    """Remove and return the deltas `keep_undelivered` attached (usually none)."""
    found: list[GenerationDelta] = error.__dict__.pop(_UNDELIVERED, None) or []
    return found
