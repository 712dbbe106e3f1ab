"""`ChatMatric`: LangChain's chat model over any Matric backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.tool import ToolCallChunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.base import OutputParserLike
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel

from langchain_matric._backend_build import backend_label
from langchain_matric._base import ADAPTER_CONFIG, MatricGenerationBase
from langchain_matric._messages import (
    PROVIDER,
    generation_to_message,
    message_chunk,
    to_chat_messages,
    tool_call_chunks,
    whole_tool_call_chunks,
)
from langchain_matric._streams import StreamCursor, aclosing_stream, closing_stream, cut_at_stop
from langchain_matric._tokens import usage_to_dict
from langchain_matric.backends._protocols import GenerationBackend
from langchain_matric.backends._types import Generation, GenerationDelta, GenerationRequest
from langchain_matric.errors import ConfigurationError, MatricError

__all__ = ["ChatMatric"]

StructuredOutputMethod = Literal["json_schema", "function_calling", "json_mode"]
_ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool


class ChatMatric(MatricGenerationBase, BaseChatModel):
    """Chat model on an OpenAI-compatible or Ollama server.

    Tools, structured output, images, reasoning and token usage, streamed or whole.
    A backend that cannot stream still works: `.stream()` yields the whole answer
    as one chunk. Reasoning (`reasoning_content`, `reasoning`, Ollama `thinking`)
    arrives in `additional_kwargs["reasoning_content"]` and in `content_blocks`.

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
        send_reasoning: bool
            Send earlier AI turns' reasoning back to the server (off by default).
        stop: list[str] | None
            Stop sequences, merged with each call's.
        model_kwargs: dict
            Provider extras sent as they are.

    Key init args — client params:
        backend: "openai" | "ollama" | backend instance | None
            Which server API to speak; None uses the configured default.
        api: "chat" | "responses"
            With backend="openai": chat completions (default) or the Responses API.
        base_url: str | list[str] | None
            Server URL, or a list of URLs serving the same models (an endpoint pool).
        prefix_affinity: int
            With a pool: requests whose first N messages match go to one endpoint (0: off).
        api_key: SecretStr | None
            Key for OpenAI-compatible servers.
        timeout, max_retries: float | None, int | None
            Per-phase timeout in seconds and retries on transient errors.
        capabilities: "learn" | "auto" | None
            Passed to the backend built; "auto" also fills `profile` from the server.

    Instantiate:
        ```python
        from langchain_matric import ChatMatric

        model = ChatMatric(
            backend="openai",
            base_url="http://127.0.0.1:8000/v1",
            api_key="sk-local",
            model="qwen2.5",
            temperature=0,
        )
        # or: ChatMatric(backend="ollama", model="llama3.2")
        # or two replicas, a conversation's turns on the same one (its prefix cache):
        # ChatMatric(backend="openai", model="qwen2.5", prefix_affinity=1,
        #            base_url=["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"])
        ```

    Invoke:
        ```python
        messages = [("system", "Translate to French."), ("human", "I love programming.")]
        model.invoke(messages)
        ```
        ```python
        AIMessage(content="J'adore la programmation.", response_metadata={
            'model_name': 'qwen2.5', 'finish_reason': 'stop',
            'model_provider': 'matric', 'matric_backend': 'openai'},
            usage_metadata={'input_tokens': 24, 'output_tokens': 7, 'total_tokens': 31})
        ```

    Stream:
        ```python
        for chunk in model.stream(messages):
            print(chunk.text, end="", flush=True)
        ```

    Tool calling:
        ```python
        def get_weather(city: str) -> str:
            \"\"\"Get the weather in a city.\"\"\"
            return "sunny"

        model.bind_tools([get_weather], tool_choice="auto").invoke(
            "Weather in Oslo?"
        ).tool_calls
        ```
        ```python
        [{'name': 'get_weather', 'args': {'city': 'Oslo'}, 'id': 'call_1', 'type': 'tool_call'}]
        ```

    Structured output:
        ```python
        from pydantic import BaseModel

        class Joke(BaseModel):
            setup: str
            punchline: str

        model.with_structured_output(Joke).invoke("Tell me a joke about cats")
        ```

    Async:
        ```python
        await model.ainvoke(messages)
        async for chunk in model.astream(messages):
            print(chunk.text, end="")
        await model.abatch([messages, messages])
        ```
    """

    model_config = ADAPTER_CONFIG

    api: Literal["chat", "responses"] = "chat"
    """"chat": `/chat/completions`; "responses": the OpenAI Responses API (`/responses`,
    stateless: `store: false` unless `model_kwargs={"store": True}`; pass
    `previous_response_id=` per call to continue a stored response: `invoke` returns its
    id in `response_metadata["id"]`, `stream` on its last chunk; with an endpoint pool, the
    continuation goes to the endpoint that made it). With a backend instance and `api`
    not given, the backend's own `api` applies."""

    send_reasoning: bool = False
    """Send each earlier AI message's reasoning back with it (default False: dropped, as
    before). The reasoning is `additional_kwargs["reasoning_content"]`, as `ChatMatric`
    stores it, else the message's `reasoning` / `thinking` content blocks; it goes as
    `reasoning_content` on the assistant message (chat API: DeepSeek's thinking mode
    rejects tool loops without it; vLLM), as `thinking` (Ollama's native API), or as a
    `reasoning` input item before the turn (Responses API)."""

    @property
    def _llm_type(self) -> str:
        return "matric-chat"

    # -- model profile --------------------------------------------------------------------

    def _resolve_model_profile(self) -> ModelProfile | None:
        """With `capabilities="auto"` only: the profile the server reports, when created.

        Anything else makes no request here (`profile` stays None unless given); a server
        that cannot answer leaves it None too, and `load_profile()` asks again.
        """
        backend = self.backend
        if isinstance(backend, str | None):
            auto = self.capabilities == "auto"
        else:
            auto = getattr(backend, "capabilities", None) == "auto"
        if not auto:
            return None
        try:
            return self._profile_of(self._profile_backend().model_profile())
        except MatricError:
            return None

    def load_profile(self) -> ModelProfile:
        """Ask the server about the model and set `profile` from its answer (returned).

        Ollama: `POST /api/show` (context length; tools, vision, thinking capabilities).
        OpenAI-compatible servers: vLLM's `max_model_len` in `GET /models`, else
        llama.cpp's `GET /props` (`n_ctx`). The server's keys update `profile`; keys it
        does not report are kept as they were (or left out). Errors are raised as typed
        `MatricError`s.
        """
        return self._set_profile(self._profile_backend().model_profile())

    async def aload_profile(self) -> ModelProfile:
        """Async `load_profile`."""
        return self._set_profile(await self._profile_backend().amodel_profile())

    def _profile_backend(self) -> Any:
        backend = self._generation_backend()
        if not hasattr(backend, "model_profile"):
            msg = f"{backend_label(backend)} cannot report a model profile"
            raise ConfigurationError(msg)
        return backend

    def _profile_of(self, reported: Mapping[str, Any]) -> ModelProfile:
        return cast("ModelProfile", {**(self.profile or {}), **reported})

    def _set_profile(self, reported: Mapping[str, Any]) -> ModelProfile:
        self.profile = profile = self._profile_of(reported)
        return profile

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params("chat", stop, kwargs)

    # -- requests ------------------------------------------------------------------------

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> GenerationRequest:
        kwargs = dict(kwargs)
        tools = kwargs.pop("tools", None) or ()
        tool_choice = kwargs.pop("tool_choice", None)
        response_format = kwargs.pop("response_format", None)
        options, model = self._options(stop, kwargs)
        return GenerationRequest(
            messages=to_chat_messages(messages, reasoning=self.send_reasoning),
            options=options,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            model=model,
            api=self._chat_api(),
            response_headers=self.include_response_headers,
        )

    def _metadata(
        self, backend: GenerationBackend, model: str | None, finish_reason: str | None
    ) -> dict[str, Any]:
        return {
            "model_name": model or self._model_name(backend),
            "finish_reason": finish_reason,
            "model_provider": PROVIDER,
            "matric_backend": (
                self.backend if isinstance(self.backend, str) else backend_label(backend)
            ),
        }

    def _result(
        self, backend: GenerationBackend, request: GenerationRequest, generation: Generation
    ) -> ChatResult:
        generations = [
            self._chat_generation(backend, request, choice)
            for choice in (generation, *generation.alternatives)
        ]
        llm_output: dict[str, Any] = {
            "model_name": generations[0].message.response_metadata["model_name"]
        }
        if generation.usage is not None:
            llm_output["token_usage"] = usage_to_dict(generation.usage)
        if generation.metadata and "system_fingerprint" in generation.metadata:
            llm_output["system_fingerprint"] = generation.metadata["system_fingerprint"]
        return ChatResult(generations=generations, llm_output=llm_output)

    def _chat_generation(
        self, backend: GenerationBackend, request: GenerationRequest, generation: Generation
    ) -> ChatGeneration:
        """One choice as a `ChatGeneration` (cut at `stop`, metadata as ChatOpenAI names it)."""
        text = generation.text
        stop = request.options.stop
        if stop and (cut := cut_at_stop(text, stop)) is not None:
            text = text[:cut]
            generation.finish_reason = "stop"
        model = generation.model or request.model
        metadata = self._metadata(backend, model, generation.finish_reason)
        if generation.metadata:
            metadata.update(generation.metadata)
        raw = generation.raw
        if generation.response_id:  # a Responses answer: the `previous_response_id` to go on
            metadata["id"] = generation.response_id
        elif isinstance(raw, dict) and "output" in raw and isinstance(raw.get("id"), str):
            metadata["id"] = raw["id"]  # a backend that fills only `raw`
        if generation.logprobs is not None:
            metadata["logprobs"] = {"content": generation.logprobs}
        message = generation_to_message(generation, metadata, text=text)
        info = {"finish_reason": generation.finish_reason, "model_name": metadata["model_name"]}
        if generation.logprobs is not None:
            info["logprobs"] = metadata["logprobs"]
        return ChatGeneration(message=message, generation_info=info)

    def _whole_chunk(
        self, backend: GenerationBackend, request: GenerationRequest, generation: Generation
    ) -> ChatGenerationChunk:
        """A whole answer as the one chunk of a stream (backend without streaming)."""
        result = self._result(backend, request, generation)
        message = result.generations[0].message
        assert isinstance(message, AIMessage)
        chunk = message_chunk(
            str(message.content),
            generation.reasoning or "",
            whole_tool_call_chunks(generation.tool_calls),
            usage=generation.usage,
            response_metadata=dict(message.response_metadata),
            last=True,
        )
        return ChatGenerationChunk(
            message=chunk, generation_info=result.generations[0].generation_info
        )

    def _delta_chunk(
        self,
        backend: GenerationBackend,
        cursor: StreamCursor,
        delta: GenerationDelta,
        *,
        first: bool,
        default_model: str | None,
    ) -> ChatGenerationChunk | None:
        text, final = cursor.advance(delta)
        calls = tool_call_chunks(delta.tool_call_deltas) if delta.tool_call_deltas else []
        if not final:
            if not (text or delta.reasoning or calls):
                return None
            metadata: dict[str, Any] | None = {"model_provider": PROVIDER} if first else None
            if delta.logprobs is not None:  # this chunk's own entries: merging concatenates
                metadata = {**(metadata or {}), "logprobs": {"content": delta.logprobs}}
            chunk = message_chunk(text, delta.reasoning, calls, response_metadata=metadata)
            return ChatGenerationChunk(message=chunk)
        return self._final_chunk(
            backend,
            cursor,
            text,
            delta.reasoning,
            calls,
            default_model=default_model,
            logprobs=delta.logprobs,
        )

    def _final_chunk(
        self,
        backend: GenerationBackend,
        cursor: StreamCursor,
        text: str,
        reasoning: str = "",
        calls: list[ToolCallChunk] | None = None,
        *,
        default_model: str | None,
        logprobs: list[Any] | None = None,
    ) -> ChatGenerationChunk:
        metadata = self._metadata(backend, cursor.model or default_model, cursor.finish_reason)
        if cursor.metadata:  # id, system_fingerprint, service_tier, headers
            metadata.update(cursor.metadata)
        if cursor.response_id:  # a Responses stream: the `previous_response_id` to go on
            metadata["id"] = cursor.response_id
        if logprobs is not None:
            metadata["logprobs"] = {"content": logprobs}
        chunk = message_chunk(
            text, reasoning, calls or [], usage=cursor.usage, response_metadata=metadata, last=True
        )
        info = {"finish_reason": cursor.finish_reason, "model_name": metadata["model_name"]}
        return ChatGenerationChunk(message=chunk, generation_info=info)

    # -- sync ------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        backend = self._generation_backend()
        request = self._request(messages, stop, kwargs)
        return self._result(backend, request, backend.generate(request))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        backend = self._generation_backend()
        request = self._request(messages, stop, kwargs)
        source = self._stream_source(backend)
        if source is None:
            chunk = self._whole_chunk(backend, request, backend.generate(request))
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
            return
        cursor = StreamCursor(request.options.stop, None)
        first = True
        with closing_stream(source.generate_stream(request)) as deltas:
            for delta in deltas:
                piece = self._delta_chunk(
                    backend, cursor, delta, first=first, default_model=request.model
                )
                if piece is None:
                    continue
                first = False
                if run_manager:
                    run_manager.on_llm_new_token(piece.text, chunk=piece)
                yield piece
                if cursor.stopped:
                    return  # leaving the `with` closes the stream and its connection
        tail = cursor.tail()
        if tail is not None:
            chunk = self._final_chunk(backend, cursor, tail, default_model=request.model)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # -- async -----------------------------------------------------------------------------

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        backend = self._generation_backend()
        request = self._request(messages, stop, kwargs)
        return self._result(backend, request, await backend.agenerate(request))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        backend = self._generation_backend()
        request = self._request(messages, stop, kwargs)
        source = self._stream_source(backend)
        if source is None:
            chunk = self._whole_chunk(backend, request, await backend.agenerate(request))
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
            return
        cursor = StreamCursor(request.options.stop, None)
        first = True
        async with aclosing_stream(source.agenerate_stream(request)) as deltas:
            async for delta in deltas:
                piece = self._delta_chunk(
                    backend, cursor, delta, first=first, default_model=request.model
                )
                if piece is None:
                    continue
                first = False
                if run_manager:
                    await run_manager.on_llm_new_token(piece.text, chunk=piece)
                yield piece
                if cursor.stopped:
                    return
        tail = cursor.tail()
        if tail is not None:
            chunk = self._final_chunk(backend, cursor, tail, default_model=request.model)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # -- tools and structured output -------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[_ToolLike],
        *,
        tool_choice: str | bool | Mapping[str, Any] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (functions, pydantic classes, TypedDicts, JSON schemas, `BaseTool`s).

        Args:
            tools: The tools the model may call.
            tool_choice: "auto", "none", "required" ("any" and True mean "required"),
                the name of one of `tools` to force it, or an OpenAI `tool_choice` dict.
                Ollama's native API cannot force a choice (the call raises).
            strict: Ask the server to keep arguments to the schema exactly.
            **kwargs: More request parameters (e.g. `parallel_tool_calls=False`).

        Returns:
            A runnable sending the tools with every call.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        names = [tool["function"]["name"] for tool in formatted if "function" in tool]
        choice = _tool_choice(tool_choice, names)
        if choice is not None:
            kwargs["tool_choice"] = choice
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: Mapping[str, Any] | type,
        *,
        method: StructuredOutputMethod = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """A runnable answering with data shaped by `schema`.

        Args:
            schema: A pydantic class (answers are instances), a TypedDict, a JSON schema
                or an OpenAI function dict (answers are dicts).
            method: "json_schema" (the server constrains the output to the schema:
                `response_format`, Ollama's `format`), "function_calling" (the schema
                as a forced tool), or "json_mode" (any JSON object; say in the prompt
                what it should hold).
            include_raw: Return `{"raw": AIMessage, "parsed": ..., "parsing_error": ...}`
                instead of raising on unparsable output.
            strict: Ask the server for exact schema adherence.
            **kwargs: Not accepted (an error names them).

        Returns:
            A runnable that takes chat-model input.
        """
        if kwargs:
            msg = f"with_structured_output got unsupported arguments: {sorted(kwargs)}"
            raise ValueError(msg)
        pydantic_schema = isinstance(schema, type) and is_basemodel_subclass(schema)
        trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        parser: OutputParserLike[Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema, strict=strict)
            name = tool["function"]["name"]
            model: Runnable[LanguageModelInput, Any] = self.bind_tools(
                [tool], tool_choice=self._forced_choice(name), ls_structured_output_format=trace
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if pydantic_schema
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            response_format = (
                _json_schema_format(schema, strict)
                if method == "json_schema"
                else {"type": "json_object"}
            )
            model = self.bind(response_format=response_format, ls_structured_output_format=trace)
            parser = (
                PydanticOutputParser(pydantic_object=schema)
                if pydantic_schema
                else JsonOutputParser()
            )
        else:
            msg = (
                f"method={method!r} is unknown: use 'json_schema', 'function_calling' "
                "or 'json_mode'"
            )
            raise ValueError(msg)
        if not include_raw:
            return model | parser
        parse = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=model) | parse.with_fallbacks(
            [fallback], exception_key="parsing_error"
        )

    def _forced_choice(self, name: str) -> str | None:
        # Ollama's native API has no tool_choice: offer the tool and let the model call it.
        if self.backend == "ollama" or backend_label(self._generation_backend()) == "ollama":
            return None
        return name


def _tool_choice(
    choice: str | bool | Mapping[str, Any] | None, names: Sequence[str]
) -> str | Mapping[str, Any] | None:
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, Mapping):
        return choice
    if choice in ("auto", "none", "required"):
        return choice
    if choice in names:
        return {"type": "function", "function": {"name": choice}}
    msg = (
        f"tool_choice={choice!r} is neither 'auto', 'none', 'required', 'any' nor the "
        f"name of a bound tool ({', '.join(names) or 'none bound'})"
    )
    raise ValueError(msg)


def _json_schema_format(schema: Mapping[str, Any] | type, strict: bool | None) -> dict[str, Any]:
    """An OpenAI `response_format` of type json_schema for any supported schema form."""
    if isinstance(schema, Mapping) and "title" not in schema and "properties" in schema:
        name, description, parameters = "output", None, dict(schema)
    else:
        function = convert_to_openai_tool(schema, strict=strict)["function"]
        name = function["name"]
        description = function.get("description")
        parameters = function.get("parameters", {})
    spec: dict[str, Any] = {"name": name, "schema": parameters}
    if description:
        spec["description"] = description
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}
