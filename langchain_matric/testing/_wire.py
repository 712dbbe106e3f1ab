"""Bytes on the wire: SSE events, NDJSON lines, chunk frames, response heads, faults.

Everything here is I/O-free: the server turns a `Stream` into a list of `Step`s
(bytes to send as one event, a stall, a drop) and writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from langchain_matric.testing._types import Fault, Reply, ResponsesShape, ServerOptions


@dataclass(frozen=True, slots=True)
class Style:
    """Wire options resolved for one response (reply fields over server options)."""

    chunk_size: int | None = None
    eol: bytes = b"\n"
    ping_every: int = 0
    delay: float = 0.0
    reasoning_field: str = "reasoning_content"
    repeat_tool_call_ids: bool = False
    ollama_tool_call_ids: bool = True
    responses_shape: ResponsesShape = "openai"

    @classmethod
    def resolve(cls, options: ServerOptions, reply: Reply | None = None) -> Style:
        """Reply fields that are not None win over the server's options."""

        def pick(name: str) -> object:
            value = getattr(reply, name, None) if reply is not None else None
            return getattr(options, name) if value is None else value

        chunk = pick("chunk_size")
        if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
            msg = f"chunk_size must be an int >= 1 or None, got {chunk!r}"
            raise ValueError(msg)
        return cls(
            chunk_size=chunk,
            eol=str(pick("line_ending")).encode(),
            ping_every=int(pick("ping_every")),  # type: ignore[call-overload]
            delay=float(pick("delay")),  # type: ignore[arg-type]
            reasoning_field=str(pick("reasoning_field")),
            repeat_tool_call_ids=bool(pick("repeat_tool_call_ids")),
            ollama_tool_call_ids=options.ollama_tool_call_ids,
            responses_shape=pick("responses_shape"),  # type: ignore[arg-type]
        )

    @property
    def ndjson_eol(self) -> bytes:
        """NDJSON line end: CRLF when SSE uses CRLF, else LF."""
        return b"\r\n" if self.eol == b"\r\n" else b"\n"


def dumps(value: object) -> bytes:
    """Compact JSON bytes, as the real servers send."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sse(data: bytes, eol: bytes = b"\n", event: bytes | None = None) -> bytes:
    """One SSE event: an optional ``event:`` line, one ``data:`` line, a blank line."""
    head = b"event: " + event + eol if event is not None else b""
    return head + b"data: " + data + eol + eol


def frame(piece: bytes) -> bytes:
    """One HTTP/1.1 chunk frame."""
    return b"%x\r\n%b\r\n" % (len(piece), piece)


LAST_FRAME = b"0\r\n\r\n"


def head(
    status: int,
    headers: list[tuple[str, str]],
    *,
    content_type: str,
    length: int | None,
    keep_alive: bool,
) -> bytes:
    """A response head; ``length=None`` means ``Transfer-Encoding: chunked``."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Renderer(Protocol):
    """One answer in one protocol, streamed or whole (see `_render`)."""

    sse: bool
    stream_content_type: str

    def events(self) -> list[bytes]:
        """Stream events (SSE events / NDJSON lines), terminator excluded."""
        ...

    def terminator(self) -> bytes | None:
        """``data: [DONE]`` for OpenAI; None for Ollama (its last line says ``done``)."""
        ...

    def whole(self) -> bytes:
        """The non-streaming JSON body."""
        ...

    def content_delta(self, text: str) -> bytes:
        """A stream event carrying `text` as content."""
        ...

    def error_event(self, fault: Fault) -> bytes:
        """An in-stream error event in the fault's style."""
        ...


@dataclass(frozen=True, slots=True)
class Stall:
    """Sleep before the next step."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection now, without the terminating chunk."""


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes sent as one chunk frame that do not count as an event (pings, injections)."""

    data: bytes


Step = bytes | Raw | Stall | Drop


def stream_steps(renderer: Renderer, fault: Fault | None) -> list[Step]:
    """The steps of a streamed body, with an in-stream `fault` applied."""
    events: list[bytes] = renderer.events()
    terminator = renderer.terminator()
    if fault is not None and fault.kind == "no_terminator":
        if terminator is None and events:
            events.pop()  # Ollama: the last line is the `done: true` object
        return list(events)
    if terminator is not None:
        events.append(terminator)
    if fault is None:
        return list(events)
    at = min(fault.after, len(events))
    steps: list[Step] = list(events[:at])
    kind = fault.kind
    if kind == "drop":
        steps.append(Drop())
        return steps
    if kind == "end_early":
        return steps
    if kind == "stream_error":
        steps.append(renderer.error_event(fault))
        return steps
    if kind == "stall":
        steps.append(Stall(fault.seconds))
    elif kind == "inject":
        steps.append(Raw(fault.data))
    elif kind == "invalid_json":
        broken = b'{"id":"broken","choices":[{"delta":{"content":"unterminated'
        steps.append(sse(broken) if renderer.sse else broken + b"\n")
    elif kind == "huge_line":
        steps.append(renderer.content_delta("x" * fault.size))
    steps.extend(events[at:])
    return steps


def ping(renderer: Renderer, style: Style) -> bytes:
    """A keep-alive comment (SSE) or blank line (NDJSON)."""
    return b": ping" + style.eol + style.eol if renderer.sse else style.ndjson_eol


def with_pings(steps: list[Step], renderer: Renderer, style: Style) -> list[Step]:
    """Put a ping before every `style.ping_every`-th event."""
    if style.ping_every <= 0:
        return steps
    out: list[Step] = []
    count = 0
    for step in steps:
        if isinstance(step, bytes):
            if count % style.ping_every == 0:
                out.append(Raw(ping(renderer, style)))
            count += 1
        out.append(step)
    return out


def frames(data: bytes, chunk_size: int | None) -> list[bytes]:
    """Chunk frames for `data`: one, or one per `chunk_size` bytes."""
    if not data:
        return []
    if chunk_size is None or chunk_size >= len(data):
        return [frame(data)]
    return [frame(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]
