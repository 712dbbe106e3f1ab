"""The backend protocols and `BaseBackend`, the defaults a custom backend builds on.

Streaming is optional: a backend that can stream *also* implements
`StreamingGeneration`; callers detect it with `isinstance` and may still find
`supports_streaming` False at runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Protocol, Self, overload, runtime_checkable

from langchain_matric.backends._types import (
    Generation,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
)

__all__ = [
    "BaseBackend",
    "EmbeddingBackend",
    "GenerationBackend",
    "InferenceBackend",
    "StreamingGeneration",
    "as_request",
]


def as_request(
    request: GenerationRequest | str, options: GenerationOptions | None = None
) -> GenerationRequest:
    """Normalise a prompt string (one user turn) or a request to a `GenerationRequest`."""
    if isinstance(request, GenerationRequest):
        if options is not None:
            request.options = options
        return request
    if not isinstance(request, str):  # guards untyped callers
        msg = f"expected a GenerationRequest or a prompt string, got {type(request).__name__}"  # type: ignore[unreachable]
        raise TypeError(msg)
    return GenerationRequest.from_prompt(request, options=options)


@runtime_checkable
class GenerationBackend(Protocol):
    """Produces whole answers."""

    @property
    def model_name(self) -> str:
        """The generation model requests use unless they name another."""
        ...

    def generate(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> Generation:
        """Generate one whole answer."""
        ...

    async def agenerate(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> Generation:
        """Async `generate`."""
        ...


@runtime_checkable
class EmbeddingBackend(Protocol):
    """Turns texts into vectors."""

    @property
    def model_name(self) -> str:
        """The model name (for an embedding-only backend, the embedding model)."""
        ...

    @property
    def dimension(self) -> int | None:
        """The vector size, when known before the first call."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in input order."""
        ...

    async def aembed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """Async `embed_texts`."""
        ...


@runtime_checkable
class StreamingGeneration(Protocol):
    """Optional: a backend that can stream an answer piece by piece."""

    supports_streaming: bool
    """False when streaming is configured off or the server turned out not to stream."""

    def generate_stream(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> Iterator[GenerationDelta]:
        """Yield the answer as deltas; the last carries finish_reason and usage."""
        ...

    def agenerate_stream(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> AsyncIterator[GenerationDelta]:
        """Async `generate_stream`."""
        ...


@runtime_checkable
class InferenceBackend(GenerationBackend, EmbeddingBackend, Protocol):
    """Both halves, plus health checks and resource management."""

    def health_check(self) -> bool:
        """True when the server answers its model-list endpoint."""
        ...

    async def ahealth_check(self) -> bool:
        """Async `health_check`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    async def aclose(self) -> None:
        """Release connections (async side)."""
        ...


class ClosingContext:
    """`with` / `async with` for an object with `close()` and `aclose()`: closes on exit."""

    def close(self) -> None:
        """Release resources."""

    async def aclose(self) -> None:
        """Release resources (async side)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class BaseBackend(ClosingContext):
    """Defaults for a backend: a custom one overrides only what it has.

    Override `_generate` for generation and `embed_texts` (plus `dimension`) for
    embeddings; async methods default to running the sync ones in a worker thread.
    Add `generate_stream`/`agenerate_stream` (see `StreamingGeneration`) to stream.

    Example:
        >>> class Echo(BaseBackend):
        ...     model_name = "echo"
        ...     def _generate(self, request):
        ...         return Generation(text=request.messages[-1].content, finish_reason="stop")
        >>> Echo().generate("hello").text
        'hello'
        >>> Echo().generate_with_system("be terse", "hi").text
        'hi'
    """

    model_name: str = ""

    @property
    def dimension(self) -> int | None:
        """The vector size, when known before the first call."""
        return None

    # -- generation -------------------------------------------------------------------

    def _generate(self, request: GenerationRequest) -> Generation:
        msg = f"{type(self).__name__} does not implement generation (override _generate)"
        raise NotImplementedError(msg)

    async def _agenerate(self, request: GenerationRequest) -> Generation:
        return await asyncio.to_thread(self._generate, request)

    @overload
    def generate(self, request: GenerationRequest) -> Generation: ...
    @overload
    def generate(self, request: str, *, options: GenerationOptions | None = None) -> Generation: ...
    def generate(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> Generation:
        """Generate one whole answer for a request, or for a prompt as one user turn."""
        return self._generate(as_request(request, options))

    @overload
    async def agenerate(self, request: GenerationRequest) -> Generation: ...
    @overload
    async def agenerate(
        self, request: str, *, options: GenerationOptions | None = None
    ) -> Generation: ...
    async def agenerate(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> Generation:
        """Async `generate`."""
        return await self._agenerate(as_request(request, options))

    def generate_with_system(
        self, system: str, prompt: str, *, options: GenerationOptions | None = None
    ) -> Generation:
        """Generate an answer to `prompt` under a system message."""
        return self._generate(GenerationRequest.from_prompt(prompt, system=system, options=options))

    async def agenerate_with_system(
        self, system: str, prompt: str, *, options: GenerationOptions | None = None
    ) -> Generation:
        """Async `generate_with_system`."""
        return await self._agenerate(
            GenerationRequest.from_prompt(prompt, system=system, options=options)
        )

    # -- embeddings -------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in input order."""
        msg = f"{type(self).__name__} does not implement embeddings (override embed_texts)"
        raise NotImplementedError(msg)

    async def aembed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """Async `embed_texts` (a worker thread unless overridden)."""
        return await asyncio.to_thread(self.embed_texts, list(texts))

    # -- health and resources -----------------------------------------------------------

    def health_check(self) -> bool:
        """True when the backend can serve requests (always, unless overridden)."""
        return True

    async def ahealth_check(self) -> bool:
        """Async `health_check`."""
        return await asyncio.to_thread(self.health_check)

    def close(self) -> None:
        """Release resources (nothing, unless overridden)."""

    async def aclose(self) -> None:
        """Release resources (async side)."""
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r})"
