"""In-memory backends for the adapter tests: scripted answers, recorded requests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from langchain_matric.backends import (
    BaseBackend,
    Generation,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from langchain_matric.backends._protocols import as_request


@dataclass
class Reply:
    """What the fake server answers: the whole answer plus how to stream it."""

    text: str = ""
    reasoning: str = ""
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str = "stop"
    usage: Usage | None = field(default_factory=lambda: Usage(3, 5))
    model: str | None = "fake-model-0001"
    piece: int = 3
    """Characters per streamed text delta."""


def echo(request: GenerationRequest) -> Reply:
    """Default script: echo the last message (or the raw prompt)."""
    if request.prompt is not None:
        return Reply(text=f"echo: {request.prompt}")
    return Reply(text=f"echo: {request.messages[-1].content}")


def echo_in(piece: int) -> Callable[[GenerationRequest], Reply]:
    """`echo`, streamed `piece` characters per delta."""

    def script(request: GenerationRequest) -> Reply:
        reply = echo(request)
        reply.piece = piece
        return reply

    return script


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _honour_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    hits = [i for s in stop or () if (i := text.find(s)) >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class ScriptedBackend(BaseBackend):
    """A `GenerationBackend` + `StreamingGeneration` answering from a script.

    `script` is a list of replies (served in order; the last repeats) or a function of
    the request. `honour_stop=False` plays a server that ignores `stop`.
    """

    def __init__(
        self,
        script: Sequence[Reply] | Callable[[GenerationRequest], Reply] = echo,
        *,
        model_name: str = "fake-model",
        supports_streaming: bool = True,
        honour_stop: bool = True,
        barrier: int = 0,
    ) -> None:
        self.model_name = model_name
        self.supports_streaming = supports_streaming
        self.honour_stop = honour_stop
        self._script = script
        self.requests: list[GenerationRequest] = []
        self.stream_calls = 0
        self.closed_early = 0
        self.deltas_sent = 0
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._barrier = threading.Barrier(barrier, timeout=30) if barrier else None
        self._abarrier_parties = barrier
        self._abarrier: asyncio.Barrier | None = None

    # -- scripting ---------------------------------------------------------------------------

    def _reply(self, request: GenerationRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            index = len(self.requests) - 1
        if callable(self._script):
            return self._script(request)
        return self._script[min(index, len(self._script) - 1)]

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _text(self, reply: Reply, request: GenerationRequest) -> tuple[str, str]:
        if self.honour_stop:
            text, cut = _honour_stop(reply.text, request.options.stop)
            return text, "stop" if cut else reply.finish_reason
        return reply.text, reply.finish_reason

    def _deltas(self, request: GenerationRequest) -> list[GenerationDelta]:
        reply = self._reply(request)
        text, finish = self._text(reply, request)
        deltas = [GenerationDelta(reasoning=p) for p in _pieces(reply.reasoning, reply.piece)]
        deltas += [GenerationDelta(text=p) for p in _pieces(text, reply.piece)]
        for index, call in enumerate(reply.tool_calls):
            half = len(call.arguments) // 2
            deltas.append(
                GenerationDelta(
                    tool_call_deltas=(
                        ToolCallDelta(index, call.id, call.name, call.arguments[:half]),
                    )
                )
            )
            deltas.append(
                GenerationDelta(
                    tool_call_deltas=(ToolCallDelta(index, arguments=call.arguments[half:]),)
                )
            )
        deltas.append(GenerationDelta(finish_reason=finish, usage=reply.usage))
        if reply.model:
            first = deltas[0]
            deltas[0] = GenerationDelta(
                first.text,
                first.reasoning,
                first.tool_call_deltas,
                first.finish_reason,
                first.usage,
                reply.model,
            )
        return deltas

    # -- generation ------------------------------------------------------------------------

    def _generate(self, request: GenerationRequest) -> Generation:
        self._enter()
        try:
            if self._barrier is not None:
                self._barrier.wait()
            reply = self._reply(request)
            text, finish = self._text(reply, request)
            return Generation(
                text=text,
                reasoning=reply.reasoning or None,
                tool_calls=list(reply.tool_calls),
                finish_reason=finish,
                usage=reply.usage,
                model=reply.model,
            )
        finally:
            self._leave()

    async def _agenerate(self, request: GenerationRequest) -> Generation:
        self._enter()
        try:
            if self._abarrier_parties:
                if self._abarrier is None:
                    self._abarrier = asyncio.Barrier(self._abarrier_parties)
                await asyncio.wait_for(self._abarrier.wait(), 30)
            await asyncio.sleep(0)
            reply = self._reply(request)
            text, finish = self._text(reply, request)
            return Generation(
                text=text,
                reasoning=reply.reasoning or None,
                tool_calls=list(reply.tool_calls),
                finish_reason=finish,
                usage=reply.usage,
                model=reply.model,
            )
        finally:
            self._leave()

    def generate_stream(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> Iterator[GenerationDelta]:
        request = as_request(request, options)
        self.stream_calls += 1
        deltas = self._deltas(request)
        sent = 0
        try:
            for delta in deltas:
                sent += 1
                self.deltas_sent += 1
                yield delta
        finally:
            if sent < len(deltas):
                self.closed_early += 1

    async def agenerate_stream(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> AsyncIterator[GenerationDelta]:
        request = as_request(request, options)
        self.stream_calls += 1
        deltas = self._deltas(request)
        sent = 0
        try:
            for delta in deltas:
                await asyncio.sleep(0)
                sent += 1
                self.deltas_sent += 1
                yield delta
        finally:
            if sent < len(deltas):
                self.closed_early += 1


class PlainBackend(BaseBackend):
    """A custom backend with only `_generate` and `embed_texts`: no streaming at all."""

    model_name = "plain-model"

    def __init__(self, reply: Reply | None = None, dimension: int = 4) -> None:
        self.reply = reply or Reply(text="plain answer", reasoning="", model=None)
        self.requests: list[GenerationRequest] = []
        self.batches: list[list[str]] = []
        self._dim = dimension

    def _generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        r = self.reply
        return Generation(
            text=r.text,
            reasoning=r.reasoning or None,
            tool_calls=list(r.tool_calls),
            finish_reason=r.finish_reason,
            usage=r.usage,
            model=r.model,
        )

    @property
    def dimension(self) -> int | None:
        return self._dim

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        return [vector_for(t, self._dim) for t in texts]


def vector_for(text: str, dim: int) -> list[float]:
    """A deterministic vector for `text`."""
    base = float(sum(map(ord, text)) % 997)
    return [float(len(text))] + [base + i for i in range(dim - 1)]


class FakeEmbeddingBackend(BaseBackend):
    """Embeddings with real async methods, recorded batches and optional concurrency gates."""

    model_name = "fake-embed"
    embed_model = "fake-embed"

    def __init__(self, dim: int = 6, *, barrier: int = 0, wrong_dim: int | None = None) -> None:
        self._dim = dim
        self.wrong_dim = wrong_dim
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._barrier = threading.Barrier(barrier, timeout=30) if barrier else None
        self._parties = barrier
        self._abarrier: asyncio.Barrier | None = None

    @property
    def dimension(self) -> int | None:
        return self._dim

    def _vectors(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            self.batches.append(list(texts))
        dim = self.wrong_dim or self._dim
        return [vector_for(t, dim) for t in texts]

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._barrier is not None:
                self._barrier.wait()
            return self._vectors(texts)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def aembed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._parties:
                if self._abarrier is None:
                    self._abarrier = asyncio.Barrier(self._parties)
                await asyncio.wait_for(self._abarrier.wait(), 30)
            await asyncio.sleep(0)
            return self._vectors(texts)
        finally:
            self.in_flight -= 1
