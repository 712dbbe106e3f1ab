"""`MatricLLM`: LangChain's text-in, text-out `LLM` over any Matric backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LLM, LangSmithParams
from langchain_core.outputs import Generation as LCGeneration
from langchain_core.outputs import GenerationChunk, LLMResult
from pydantic import Field

from langchain_matric._base import ADAPTER_CONFIG, MatricGenerationBase
from langchain_matric._concurrency import amap_bounded, map_bounded
from langchain_matric._streams import StreamCursor, aclosing_stream, closing_stream, cut_at_stop
from langchain_matric._tokens import usage_to_dict
from langchain_matric.backends._protocols import GenerationBackend
from langchain_matric.backends._types import (
    ChatMessage,
    Generation,
    GenerationDelta,
    GenerationRequest,
)

__all__ = ["MatricLLM"]


class MatricLLM(MatricGenerationBase, LLM):
    """Text completion on an OpenAI-compatible or Ollama server.

    Each prompt is sent as one user turn to the chat API (or, with
    `api="completions"`, as a raw prompt to `/completions` or Ollama's
    `/api/generate`, for base models; with `api="responses"`, to the OpenAI
    Responses API). A backend that cannot stream still works:
    `.stream()` then yields the whole answer as one chunk with the same metadata. A
    reasoning model's thinking goes to `generation_info["reasoning_content"]` (streamed
    in chunks whose text is empty), never into the text.

    Setup:
        Install `langchain-matric` and point it at a server:

        ```bash
        pip install langchain-matric
        export OLLAMA_HOST=127.0.0.1:11434     # or OPENAI_BASE_URL / OPENAI_API_KEY
        ```

    Key init args — completion params:
        model: str | None
            Model name; None uses the configured default.
        temperature: float | None
            Sampling temperature.
        max_tokens: int | None
            Maximum tokens to generate.
        top_p, seed: float | None, int | None
            Nucleus sampling and seed.
        n: int | None
            Choices per prompt: n generations (chat and completions APIs).
        logprobs, top_logprobs: bool | None, int | None
            Log probabilities of the output tokens (and alternatives), as ChatOpenAI
            returns them.
        include_response_headers: bool
            Response headers (secrets scrubbed) in the metadata.
        stop: list[str] | None
            Stop sequences, merged with each call's; enforced client-side when a
            server ignores them.
        model_kwargs: dict
            Provider extras sent as they are.

    Key init args — client params:
        backend: "openai" | "ollama" | backend instance | None
            Which server API to speak; None uses the configured default.
        base_url: str | list[str] | None
            Server URL, or a list of URLs serving the same models (an endpoint pool).
        prefix_affinity: int
            With a pool: the same prompt goes to the same endpoint (0: off). A prompt is
            one message, hashed whole: prompts that only start alike are not grouped,
            and api="completions" sends no messages (no affinity).
        api_key: SecretStr | None
            Key for OpenAI-compatible servers.
        timeout, max_retries: float | None, int | None
            Per-phase timeout in seconds and retries on transient errors.
        capabilities: "learn" | "auto" | None
            Passed to the backend built ("auto": probe the server before the first call).
        max_concurrency: int
            Prompts of one batch in flight at once.

    Instantiate:
        ```python
        from langchain_matric import MatricLLM

        llm = MatricLLM(backend="ollama", model="llama3.2", temperature=0)
        # or: MatricLLM(backend="openai", base_url="http://127.0.0.1:8000/v1",
        #               api_key="sk-local", model="qwen2.5")
        # or over two replicas, a repeated prompt always on the same one (its cache):
        # MatricLLM(backend="openai", model="qwen2.5", prefix_affinity=1,
        #           base_url=["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"])
        ```

    Invoke:
        ```python
        llm.invoke("The capital of France is")
        ```
        ```python
        ' Paris.'
        ```

    Stream:
        ```python
        for text in llm.stream("Count to three:"):
            print(text, end="", flush=True)
        ```
        ```python
        1, 2, 3.
        ```

    Batch:
        ```python
        llm.batch(["2 + 2 =", "3 + 3 ="])  # up to `max_concurrency` at once
        ```

    Async:
        ```python
        await llm.ainvoke("The capital of France is")
        async for text in llm.astream("Count to three:"):
            print(text, end="")
        await llm.abatch(["2 + 2 =", "3 + 3 ="])
        ```

    Metadata:
        ```python
        result = llm.generate(["Hi"])
        result.generations[0][0].generation_info
        # {'finish_reason': 'stop', 'model_name': 'llama3.2',
        #  'usage': {'input_tokens': 8, 'output_tokens': 9, 'total_tokens': 17}}
        result.llm_output["token_usage"]
        ```
    """

    model_config = ADAPTER_CONFIG

    api: Literal["chat", "completions", "responses"] = "chat"
    """"chat": one user turn per prompt; "completions": the raw prompt (base models);
    "responses": one user turn over the OpenAI Responses API (`/responses`, stateless)."""

    disable_streaming: bool = False
    """When True, `.stream()` yields the whole answer as one chunk."""

    max_concurrency: int = Field(default=8, ge=1)
    """How many prompts of one `generate`/`batch` call run at once."""

    @property
    def _llm_type(self) -> str:
        return "matric-llm"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params("llm", stop, kwargs)

    # -- requests ------------------------------------------------------------------------

    def _request(
        self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> GenerationRequest:
        options, model = self._options(stop, kwargs)
        headers = self.include_response_headers
        if self.api == "completions":
            return GenerationRequest(
                prompt=prompt, options=options, model=model, response_headers=headers
            )
        return GenerationRequest(
            messages=[ChatMessage("user", prompt)], options=options, model=model,
            api=self._chat_api(), response_headers=headers,
        )  # fmt: skip

    def _generation_info(
        self, backend: GenerationBackend, request: GenerationRequest, generation: Generation
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "finish_reason": generation.finish_reason,
            "model_name": generation.model or request.model or self._model_name(backend),
        }
        if generation.usage is not None:
            info["usage"] = usage_to_dict(generation.usage)
        if generation.reasoning:
            info["reasoning_content"] = generation.reasoning
        if generation.metadata:  # id, system_fingerprint, service_tier, headers
            info.update(generation.metadata)
        if generation.response_id:
            info["id"] = generation.response_id
        if generation.logprobs is not None:
            info["logprobs"] = {"content": generation.logprobs}
        return info

    def _finish(
        self, backend: GenerationBackend, request: GenerationRequest, generation: Generation
    ) -> GenerationChunk:
        """A whole answer as one chunk, cut at a stop sequence the server ignored."""
        text = generation.text
        stop = request.options.stop
        if stop and (cut := cut_at_stop(text, stop)) is not None:
            text = text[:cut]
            generation.finish_reason = "stop"
        return GenerationChunk(
            text=text, generation_info=self._generation_info(backend, request, generation)
        )

    def _choices(
        self, backend: GenerationBackend, request: GenerationRequest, generation: Generation
    ) -> list[GenerationChunk]:
        """Every choice of a whole answer (`n` > 1: more than one), each as `_finish`."""
        return [
            self._finish(backend, request, choice)
            for choice in (generation, *generation.alternatives)
        ]

    def _delta_chunk(
        self, cursor: StreamCursor, delta: GenerationDelta, default_model: str
    ) -> GenerationChunk | None:
        text, final = cursor.advance(delta)
        if not final:
            if delta.logprobs is not None:  # this chunk's own entries: merging concatenates
                info: dict[str, Any] = {"logprobs": {"content": delta.logprobs}}
                if delta.reasoning:
                    info["reasoning_content"] = delta.reasoning
                return GenerationChunk(text=text, generation_info=info)
            if not delta.reasoning:
                return GenerationChunk(text=text) if text else None
            return GenerationChunk(
                text=text, generation_info={"reasoning_content": delta.reasoning}
            )
        info = self._final_info(cursor, default_model, delta.reasoning)
        if delta.logprobs is not None:
            info["logprobs"] = {"content": delta.logprobs}
        return GenerationChunk(text=text, generation_info=info)

    @staticmethod
    def _final_info(
        cursor: StreamCursor, default_model: str, reasoning: str = ""
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "finish_reason": cursor.finish_reason,
            "model_name": cursor.model or default_model,
        }
        if cursor.usage is not None:
            info["usage"] = usage_to_dict(cursor.usage)
        if reasoning:
            info["reasoning_content"] = reasoning
        if cursor.metadata:  # id, system_fingerprint, service_tier, headers
            info.update(cursor.metadata)
        if cursor.response_id:
            info["id"] = cursor.response_id
        return info

    def _streams(self, backend: GenerationBackend) -> bool:
        return not self.disable_streaming and self._stream_source(backend) is not None

    # -- sync ------------------------------------------------------------------------------

    def _stream_request(
        self,
        backend: GenerationBackend,
        request: GenerationRequest,
        run_manager: CallbackManagerForLLMRun | None,
    ) -> Iterator[GenerationChunk]:
        source = self._stream_source(backend) if not self.disable_streaming else None
        if source is None:
            chunk = self._finish(backend, request, backend.generate(request))
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
            return
        default_model = request.model or self._model_name(backend)
        cursor = StreamCursor(request.options.stop, None)
        with closing_stream(source.generate_stream(request)) as deltas:
            for delta in deltas:
                piece = self._delta_chunk(cursor, delta, default_model)
                if piece is None:
                    continue
                if run_manager:
                    run_manager.on_llm_new_token(piece.text, chunk=piece)
                yield piece
                if cursor.stopped:
                    return  # leaving the `with` closes the stream and its connection
        tail = cursor.tail()
        if tail is not None:
            chunk = GenerationChunk(
                text=tail, generation_info=self._final_info(cursor, default_model)
            )
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _complete(
        self,
        backend: GenerationBackend,
        request: GenerationRequest,
        run_manager: CallbackManagerForLLMRun | None,
    ) -> list[GenerationChunk]:
        if self.streaming and self._streams(backend):
            whole: GenerationChunk | None = None
            for chunk in self._stream_request(backend, request, run_manager):
                whole = chunk if whole is None else whole + chunk
            return [whole or GenerationChunk(text="")]
        return self._choices(backend, request, backend.generate(request))

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        backend = self._generation_backend()
        return self._complete(backend, self._request(prompt, stop, kwargs), run_manager)[0].text

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        backend = self._generation_backend()
        requests = [self._request(prompt, stop, kwargs) for prompt in prompts]
        # LangChain hands one run manager for a whole batch: only the first prompt's
        # tokens are reported to it, so batches do not interleave in one run.
        managers = [run_manager, *[None] * (len(requests) - 1)]
        chunks = map_bounded(
            lambda pair: self._complete(backend, pair[0], pair[1]),
            list(zip(requests, managers, strict=True)),
            self.max_concurrency,
        )
        return _llm_result(chunks)

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        backend = self._generation_backend()
        yield from self._stream_request(backend, self._request(prompt, stop, kwargs), run_manager)

    # -- async -----------------------------------------------------------------------------

    async def _astream_request(
        self,
        backend: GenerationBackend,
        request: GenerationRequest,
        run_manager: AsyncCallbackManagerForLLMRun | None,
    ) -> AsyncIterator[GenerationChunk]:
        source = self._stream_source(backend) if not self.disable_streaming else None
        if source is None:
            chunk = self._finish(backend, request, await backend.agenerate(request))
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
            return
        default_model = request.model or self._model_name(backend)
        cursor = StreamCursor(request.options.stop, None)
        async with aclosing_stream(source.agenerate_stream(request)) as deltas:
            async for delta in deltas:
                piece = self._delta_chunk(cursor, delta, default_model)
                if piece is None:
                    continue
                if run_manager:
                    await run_manager.on_llm_new_token(piece.text, chunk=piece)
                yield piece
                if cursor.stopped:
                    return
        tail = cursor.tail()
        if tail is not None:
            chunk = GenerationChunk(
                text=tail, generation_info=self._final_info(cursor, default_model)
            )
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _acomplete(
        self,
        backend: GenerationBackend,
        request: GenerationRequest,
        run_manager: AsyncCallbackManagerForLLMRun | None,
    ) -> list[GenerationChunk]:
        if self.streaming and self._streams(backend):
            whole: GenerationChunk | None = None
            async for chunk in self._astream_request(backend, request, run_manager):
                whole = chunk if whole is None else whole + chunk
            return [whole or GenerationChunk(text="")]
        return self._choices(backend, request, await backend.agenerate(request))

    async def _acall(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        backend = self._generation_backend()
        request = self._request(prompt, stop, kwargs)
        return (await self._acomplete(backend, request, run_manager))[0].text

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        backend = self._generation_backend()
        requests = [self._request(prompt, stop, kwargs) for prompt in prompts]
        managers = [run_manager, *[None] * (len(requests) - 1)]
        chunks = await amap_bounded(
            lambda pair: self._acomplete(backend, pair[0], pair[1]),
            list(zip(requests, managers, strict=True)),
            self.max_concurrency,
        )
        return _llm_result(chunks)

    def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        # The request's own generator, not one that re-yields it: a layer less per chunk.
        backend = self._generation_backend()
        return self._astream_request(backend, self._request(prompt, stop, kwargs), run_manager)


def _llm_result(answers: list[list[GenerationChunk]]) -> LLMResult:
    """An `LLMResult` keeping each answer's metadata, with usage summed in `llm_output`.

    One list per prompt, one generation per choice (`n`); the choices of a prompt share
    one answer's usage, counted once.
    """
    totals: dict[str, int] = {}
    model_name: str | None = None
    for chunks in answers:
        info = chunks[0].generation_info or {}
        model_name = model_name or info.get("model_name")
        for key, value in (info.get("usage") or {}).items():
            totals[key] = totals.get(key, 0) + value
    generations = [
        [LCGeneration(text=chunk.text, generation_info=chunk.generation_info) for chunk in chunks]
        for chunks in answers
    ]
    llm_output: dict[str, Any] = {"model_name": model_name}
    if totals:
        llm_output["token_usage"] = totals
    return LLMResult(generations=generations, llm_output=llm_output)
