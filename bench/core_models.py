"""langchain-core's own per-chunk cost: models that stream a constant, with no I/O at all.

`CoreLLM` / `CoreChat` build one `GenerationChunk` / `AIMessageChunk` per event and call
`on_llm_new_token`, with a native `_astream`, exactly what any integration must do at the
least. Measured through the public `.stream()` / `.astream()`, they give the cost no
integration can avoid (callbacks, run tracking, core's chunk merging).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import LLM, BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
    GenerationChunk,
)

TOKEN = " alpha"


class CoreLLM(LLM):
    """Streams `n` chunks of `TOKEN`."""

    n: int = 1

    @property
    def _llm_type(self) -> str:
        return "core-bench-llm"

    def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **kw: Any) -> str:
        return TOKEN * self.n

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        for _ in range(self.n):
            chunk = GenerationChunk(text=TOKEN)
            if run_manager:
                run_manager.on_llm_new_token(TOKEN, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        for _ in range(self.n):
            chunk = GenerationChunk(text=TOKEN)
            if run_manager:
                await run_manager.on_llm_new_token(TOKEN, chunk=chunk)
            yield chunk


class CoreChat(BaseChatModel):
    """Streams `n` chunks of `TOKEN`."""

    n: int = 1

    @property
    def _llm_type(self) -> str:
        return "core-bench-chat"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=TOKEN * self.n))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for _ in range(self.n):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=TOKEN))
            if run_manager:
                run_manager.on_llm_new_token(TOKEN, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for _ in range(self.n):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=TOKEN))
            if run_manager:
                await run_manager.on_llm_new_token(TOKEN, chunk=chunk)
            yield chunk


def _text(obj: Any) -> str:
    """The token text of one OpenAI, Responses API or Ollama stream object ("" for the rest)."""
    kind = obj.get("type")
    if kind is not None:  # a Responses API event
        return obj.get("delta") or "" if kind == "response.output_text.delta" else ""
    choices = obj.get("choices")
    if choices:
        choice = choices[0]
        return choice.get("text") or (choice.get("delta") or {}).get("content") or ""
    message = obj.get("message")
    return (message or {}).get("content") or obj.get("response") or ""


class FusedLLM(LLM):
    """The least an integration can do: the raw floor and core's cost in one loop.

    `_stream` reads the bench server with the floor client (httpx `iter_lines` +
    `json.loads`) and yields one `GenerationChunk` per token, as `CoreLLM` does.
    """

    source: Any
    """A floor client from `bench.clients` (has `.stream()` yielding parsed objects)."""

    @property
    def _llm_type(self) -> str:
        return "fused-bench-llm"

    def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **kw: Any) -> str:
        return "".join(_text(obj) for obj in self.source.stream())

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        for obj in self.source.stream():
            text = _text(obj)
            if text:
                chunk = GenerationChunk(text=text)
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk


class FusedChat(BaseChatModel):
    """`FusedLLM` for chat: one `AIMessageChunk` per token read by the floor client."""

    source: Any

    @property
    def _llm_type(self) -> str:
        return "fused-bench-chat"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = "".join(_text(obj) for obj in self.source.stream())
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for obj in self.source.stream():
            text = _text(obj)
            if text:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
