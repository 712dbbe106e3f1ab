"""`OpenAIBackend`: any server speaking the OpenAI chat-completions API.

OpenAI, Azure OpenAI, vLLM, llama.cpp, LM Studio, LocalAI, TGI and Ollama's /v1 all
stream Server-Sent Events here. What a server turns out not to accept (`max_tokens` on
reasoning models, `stream_options`, base64 embeddings) is learned once and remembered.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

if TYPE_CHECKING:
    from langchain_matric.backends._capabilities import ProbeReport

from langchain_matric._http import (
    AsyncStreamResponse,
    Response,
    StreamResponse,
    Timeouts,
    redact_response_headers,
)
from langchain_matric.backends import _openai_wire as wire
from langchain_matric.backends import _responses_wire as responses_wire
from langchain_matric.backends._http_backend import (
    DEFAULT_MAX_LINE_SIZE,
    HTTPBackend,
    JSONBodyParser,
    StreamParser,
    WrongContentTypeParser,
    check_model_name,
)
from langchain_matric.backends._profile import from_llamacpp_props, from_openai_models
from langchain_matric.backends._protocols import as_request
from langchain_matric.backends._responses_stream import ResponsesStreamParser
from langchain_matric.backends._types import (
    Generation,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
)
from langchain_matric.errors import (
    BackendConnectionError,
    BackendHTTPError,
    BadRequestError,
    ConfigurationError,
)

__all__ = ["OpenAIBackend"]

logger = logging.getLogger("langchain_matric")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
TokenLimitSetting = Literal["auto", "max_tokens", "max_completion_tokens"]
ChatAPI = Literal["chat", "responses"]
_API_NAMES = ("chat", "responses")


class OpenAIBackend(HTTPBackend):
    """Generation, streaming and embeddings over the OpenAI-compatible API.

    Setup:
        Any server with `/v1/chat/completions`: OpenAI, vLLM, llama.cpp, LM Studio,
        LocalAI, TGI, Ollama's `/v1`; Azure OpenAI with `azure_endpoint`. With
        `api="responses"`, chat requests go to `/v1/responses` instead (OpenAI, vLLM,
        llama.cpp's `llama-server`, Ollama's `/v1`, LM Studio).

    Key init args:
        base_url: the API root, including `/v1` for most servers; or a list of such
            roots serving the same models (an endpoint pool: least outstanding
            requests, cooldowns, failover; `endpoint_stats()`, `base_urls`).
        prefix_affinity: with a pool, requests whose first N messages match go to the
            same healthy endpoint (0, the default: off).
        api_key: sent as `Authorization: Bearer` (Azure: `api-key`).
        model, embed_model: the generation and embedding models.
        api: "chat" (`/chat/completions`, the default) or "responses" (`/responses`,
            stateless: `store: false` unless a request passes `store`); a request's
            own `api` wins.
        embed_dimension: when set, every vector's size is checked against it.
        timeouts, max_retries, verify_tls, headers: transport settings.

    Instantiate:
        ```python
        from langchain_matric.backends import OpenAIBackend

        backend = OpenAIBackend(
            base_url="http://127.0.0.1:8000/v1", api_key="sk-local", model="qwen2.5"
        )
        ```

    Generate and stream:
        ```python
        print(backend.generate("Say hi").text)
        for delta in backend.generate_stream("Count to 3"):
            print(delta.text, end="")
        ```

    Embed:
        ```python
        vectors = backend.embed_texts(["a", "b"])
        ```

    The Responses API:
        ```python
        backend = OpenAIBackend(base_url="http://127.0.0.1:8000/v1", model="qwen2.5",
                                api="responses")
        print(backend.generate("Say hi").text)
        ```
    """

    generation_apis: frozenset[str] = frozenset({"chat", "completions", "responses"})
    """The APIs a request may ask for (`GenerationRequest.api`, or a prompt for completions)."""

    def __init__(
        self,
        base_url: str | Sequence[str] = DEFAULT_BASE_URL,
        api_key: str | SecretStr | None = None,
        model: str = "gpt-4o-mini",
        embed_model: str = "text-embedding-3-small",
        embed_dimension: int | None = None,
        *,
        timeouts: Timeouts | None = None,
        max_retries: int = 2,
        verify_tls: bool | str = True,
        headers: Mapping[str, str] | None = None,
        organization: str | None = None,
        project: str | None = None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        azure_deployment: str | None = None,
        azure_embed_deployment: str | None = None,
        token_limit_param: TokenLimitSetting = "auto",
        stream_usage: bool = True,
        send_dimensions: bool = False,
        streaming: bool = True,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        api: ChatAPI = "chat",
        **transport: Any,
    ) -> None:
        check_model_name("OpenAIBackend", "model", model, "gpt-4o-mini")
        if api not in _API_NAMES:
            msg = f"OpenAIBackend: api={api!r} is unknown: use 'chat' (the default) or 'responses'"
            raise ConfigurationError(msg)
        check_model_name("OpenAIBackend", "embed_model", embed_model, "text-embedding-3-small")
        if embed_dimension is not None and embed_dimension <= 0:
            msg = f"embed_dimension={embed_dimension!r} must be a positive integer or None"
            raise ConfigurationError(msg)
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        all_headers = {"Accept": "application/json, text/event-stream"}
        params: dict[str, str] = {}
        self._azure = azure_endpoint is not None
        if self._azure:
            base_url = azure_endpoint or ""
            params["api-version"] = api_version or DEFAULT_AZURE_API_VERSION
            if key:
                all_headers["api-key"] = key
        elif key:
            all_headers["Authorization"] = f"Bearer {key}"
        if organization:
            all_headers["OpenAI-Organization"] = organization
        if project:
            all_headers["OpenAI-Project"] = project
        all_headers.update(headers or {})
        super().__init__(
            base_url=base_url,
            headers=all_headers,
            params=params,
            timeouts=timeouts,
            max_retries=max_retries,
            verify_tls=verify_tls,
            streaming=streaming,
            max_line_size=max_line_size,
            **transport,
        )
        self.model_name = model
        self.embed_model = embed_model
        self._dimension = embed_dimension
        self._send_dimensions = send_dimensions
        self._chat_path = self._path(azure_deployment or model, "/chat/completions")
        self._completions_path = self._path(azure_deployment or model, "/completions")
        self._responses_path = self._path(azure_deployment or model, "/responses")
        self.api: ChatAPI = api
        self._embeddings_path = self._path(azure_embed_deployment or embed_model, "/embeddings")
        self._models_path = "/openai/models" if self._azure else "/models"
        # What the server turned out to accept; learned once, then remembered.
        self._token_limit: wire.TokenLimitParam = (
            "max_tokens" if token_limit_param == "auto" else token_limit_param
        )
        self._token_limit_auto = token_limit_param == "auto"
        self._stream_usage = stream_usage
        self._embed_base64 = True
        self._tokenize_route: str | None = None  # None: not probed yet; "": the server has none

    def _path(self, deployment: str, endpoint: str) -> str:
        return f"/openai/deployments/{deployment}{endpoint}" if self._azure else endpoint

    @property
    def dimension(self) -> int | None:
        """The configured vector size (checked on every answer), or None."""
        return self._dimension

    # -- payloads and learning -----------------------------------------------------------

    def _responses(self, request: GenerationRequest) -> bool:
        """True when `request` goes to `/responses` (a chat request on that API)."""
        return request.prompt is None and (request.api or self.api) == "responses"

    def _payload(self, request: GenerationRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        if self._responses(request):
            if self._azure:  # its Responses route and API versions differ from deployments'
                msg = (
                    "api='responses' is not supported with azure_endpoint yet: use "
                    "api='chat' (Azure's chat-completions deployments)"
                )
                raise ConfigurationError(msg)
            body = responses_wire.responses_payload(request, model=self.model_name, stream=stream)
            return self._responses_path, body
        if request.prompt is not None:
            body = wire.completion_payload(
                request, model=self.model_name, stream=stream, stream_usage=self._stream_usage
            )
            return self._completions_path, body
        body = wire.chat_payload(
            request,
            model=self.model_name,
            stream=stream,
            token_limit=self._token_limit,
            stream_usage=self._stream_usage,
        )
        return self._chat_path, body

    def _learn(self, error: BadRequestError, *, stream: bool) -> bool:
        """Adapt to a rejected parameter; True when the request should be sent again."""
        if body_path_is_responses(error):
            return False
        if (
            self._token_limit_auto
            and self._token_limit == "max_tokens"
            and wire.rejects_param(error, "max_tokens")
        ):
            self._token_limit = "max_completion_tokens"
        elif stream and self._stream_usage and wire.rejects_param(error, "stream_options"):
            self._stream_usage = False
        else:
            return False
        logger.info("%s: server rejected a parameter; adapting and retrying", self.base_url)
        return True

    def _url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def _parse(self, request: GenerationRequest, obj: Any, path: str) -> Generation:
        if self._responses(request):
            return responses_wire.parse_responses_response(obj, self._url(path))
        if request.prompt is not None:
            return wire.parse_completion_response(obj, self._url(path))
        return wire.parse_chat_response(obj, self._url(path))

    def _parser_for(
        self, request: GenerationRequest, response: StreamResponse | AsyncStreamResponse
    ) -> StreamParser:
        url = response.url
        if self._responses(request):
            if response.content_type == "text/event-stream":
                return ResponsesStreamParser(url, max_line_size=self.max_line_size)
            if response.content_type in ("application/json", ""):
                return JSONBodyParser(
                    lambda obj: wire.generation_to_deltas(
                        responses_wire.parse_responses_response(obj, url)
                    ),
                    url,
                )
            return WrongContentTypeParser(response.content_type, url, "text/event-stream")
        completions = request.prompt is not None
        if response.content_type == "text/event-stream":
            return wire.OpenAIStreamParser(
                url, completions=completions, max_line_size=self.max_line_size
            )
        if response.content_type in ("application/json", ""):

            def whole(obj: Any) -> list[GenerationDelta]:
                parse = wire.parse_completion_response if completions else wire.parse_chat_response
                return wire.generation_to_deltas(parse(obj, url))

            return JSONBodyParser(whole, url)
        return WrongContentTypeParser(response.content_type, url, "text/event-stream")

    # -- generation ----------------------------------------------------------------------

    def _pin(
        self,
        body: Mapping[str, Any],
        response_id: str | None,
        response: Response | StreamResponse | AsyncStreamResponse,
    ) -> None:
        """In a pool, send what continues `response_id` to the endpoint that made it.

        Only a response the server was allowed to keep (`store` not false) is pinned:
        a stateless one cannot be continued, and would only push others out of the
        bounded map (`EndpointPool.pin`).
        """
        if response_id and self._pool is not None and body.get("store") is not False:
            self._pool.pin(response_id, response.endpoint)

    def _generate(self, request: GenerationRequest) -> Generation:
        self._ready()
        while True:
            path, body = self._payload(request, stream=False)
            try:
                response = self._sync.request("POST", path, json=body, model=body["model"])
            except BadRequestError as error:
                if self._learn(error, stream=False):
                    continue
                raise
            except BackendHTTPError as error:
                _hint_chat_api(error)
                raise
            return self._answer(request, response, path, body)

    async def _agenerate(self, request: GenerationRequest) -> Generation:
        await self._aready()
        while True:
            path, body = self._payload(request, stream=False)
            try:
                response = await self._async.request("POST", path, json=body, model=body["model"])
            except BadRequestError as error:
                if self._learn(error, stream=False):
                    continue
                raise
            except BackendHTTPError as error:
                _hint_chat_api(error)
                raise
            return self._answer(request, response, path, body)

    def _answer(
        self, request: GenerationRequest, response: Response, path: str, body: dict[str, Any]
    ) -> Generation:
        """The `Generation` of a whole answer: parsed, headers kept if asked, its id pinned."""
        generation = self._parse(request, response.json(), path)
        if request.response_headers:
            _add_headers(generation, response.headers)
        if self._pool is not None:
            self._pin(body, generation.response_id, response)
        return generation

    def generate_stream(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> Iterator[GenerationDelta]:
        """Stream an answer; the last delta carries finish_reason and usage."""
        request = as_request(request, options)
        self._ready()
        if not self.supports_streaming:  # probed: the server does not stream
            yield from wire.generation_to_deltas(self._generate(request))
            return
        with contextlib.ExitStack() as stack:
            while True:
                path, body = self._payload(request, stream=True)
                try:
                    response = stack.enter_context(
                        self._sync.stream("POST", path, json=body, model=body["model"])
                    )
                    break
                except BadRequestError as error:
                    if not self._learn(error, stream=True):
                        raise
                except BackendHTTPError as error:
                    _hint_chat_api(error)
                    raise
            parser = self._parser_for(request, response)
            try:
                if request.response_headers:
                    yield from _with_headers(self._drive(parser, response), response.headers)
                else:
                    yield from self._drive(parser, response)
            except wire.EmptyStreamError:
                logger.info("%s: empty 200 stream; asking again without streaming", self.base_url)
            else:
                return
            finally:
                if self._pool is not None:  # also when the caller leaves early
                    self._pin(body, getattr(parser, "response_id", None), response)
        # Nothing reached the caller: the whole answer, or the server's real error. The
        # server may close the connection it ended the empty stream on: one fresh try.
        try:
            whole = self._generate(request)
        except BackendConnectionError:
            whole = self._generate(request)
        yield from wire.generation_to_deltas(whole)

    async def agenerate_stream(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> AsyncIterator[GenerationDelta]:
        """Async `generate_stream`."""
        request = as_request(request, options)
        await self._aready()
        if not self.supports_streaming:  # probed: the server does not stream
            for delta in wire.generation_to_deltas(await self._agenerate(request)):
                yield delta
            return
        async with contextlib.AsyncExitStack() as stack:
            while True:
                path, body = self._payload(request, stream=True)
                try:
                    response = await stack.enter_async_context(
                        self._async.stream("POST", path, json=body, model=body["model"])
                    )
                    break
                except BadRequestError as error:
                    if not self._learn(error, stream=True):
                        raise
                except BackendHTTPError as error:
                    _hint_chat_api(error)
                    raise
            parser = self._parser_for(request, response)
            try:
                async for delta in self._adrive(parser, response):
                    if request.response_headers and delta.finish_reason is not None:
                        _put_headers(delta, response.headers)
                    yield delta
            except wire.EmptyStreamError:
                logger.info("%s: empty 200 stream; asking again without streaming", self.base_url)
            else:
                return
            finally:
                if self._pool is not None:  # also when the caller leaves early
                    self._pin(body, getattr(parser, "response_id", None), response)
        try:
            whole = await self._agenerate(request)
        except BackendConnectionError:
            whole = await self._agenerate(request)
        for delta in wire.generation_to_deltas(whole):
            yield delta

    # -- embeddings ----------------------------------------------------------------------

    def _embed_body(self, texts: Sequence[str]) -> dict[str, Any] | None:
        if not texts:
            return None
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                msg = f"texts[{i}] is {text!r}: embeddings need non-empty strings"
                raise ValueError(msg)
        dims = self._dimension if self._send_dimensions else None
        return wire.embeddings_payload(
            texts, model=self.embed_model, base64=self._embed_base64, dimensions=dims
        )

    def _embed_learn(self, error: BackendHTTPError) -> bool:
        if self._embed_base64 and (
            wire.rejects_param(error, "base64") or wire.rejects_param(error, "encoding_format")
        ):
            self._embed_base64 = False
            return True
        return False

    def _vectors(self, response: Response, count: int) -> list[list[float]]:
        url = self._url(self._embeddings_path)
        # The parsed answer is let go of here, before the vectors are built: see _vectors.py.
        values = wire.embedding_values(response.json(), url, expected_count=count)
        if values and not isinstance(values[0], str):
            self._embed_base64 = False  # it answers floats anyway: stop asking
        return wire.vectors_of(values, url, expected_dim=self._dimension)

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in input order; `[]` for no texts (and no request)."""
        if texts:
            self._ready()
        while (body := self._embed_body(texts)) is not None:
            try:
                with self._sync.request_in_turn(
                    "POST", self._embeddings_path, json=body, model=self.embed_model
                ) as response:
                    return self._vectors(response, len(texts))
            except BadRequestError as error:
                if self._embed_learn(error):
                    continue
                raise
        return []

    async def aembed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """Async `embed_texts`."""
        if texts:
            await self._aready()
        while (body := self._embed_body(texts)) is not None:
            try:
                response = await self._async.request(
                    "POST", self._embeddings_path, json=body, model=self.embed_model
                )
            except BadRequestError as error:
                if self._embed_learn(error):
                    continue
                raise
            return self._vectors(response, len(texts))
        return []

    # -- capabilities ------------------------------------------------------------------------

    _probe_api = "openai"

    def _apply_capabilities(self, report: ProbeReport) -> None:
        super()._apply_capabilities(report)
        if report.stream_usage is False:
            self._stream_usage = False  # not sent (or rejected): stop asking
        if report.embeddings_base64 is not None:
            self._embed_base64 = report.embeddings_base64

    # -- tokenizer -----------------------------------------------------------------------

    def _tokenize_calls(self, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Tokenizer routes at the server root, the remembered one first (or only)."""
        if self._tokenize_route == "":
            return
        root = self._config.base_url.rstrip("/").removesuffix("/v1")
        body = {"model": self.model_name, "prompt": text, "content": text, "input": text}
        routes = [self._tokenize_route] if self._tokenize_route else list(_TOKENIZE_ROUTES)
        for route in routes:
            yield route, {"url": root + route, "body": body}

    def _tokenize_result(self, route: str, obj: Any) -> int | None:
        count = _token_count(obj)
        if count is not None:
            self._tokenize_route = route
        return count

    def count_tokens(self, text: str) -> int | None:
        """Tokens in `text` by the server's own tokenizer; None when it has none.

        Tries `POST /tokenize` (vLLM, llama.cpp) and `POST /extras/tokenize/count`
        (llama-cpp-python) at the server root; which one answers, or that none does, is
        remembered, so a server without a tokenizer is asked once.
        """
        for route, call in self._tokenize_calls(text):
            try:
                response = self._sync.request("POST", call["url"], json=call["body"])
            except BackendHTTPError as error:
                if error.status >= 500:
                    raise
                continue
            count = self._tokenize_result(route, response.json())
            if count is not None:
                return count
        self._tokenize_route = ""
        return None

    async def acount_tokens(self, text: str) -> int | None:
        """Async `count_tokens`."""
        for route, call in self._tokenize_calls(text):
            try:
                response = await self._async.request("POST", call["url"], json=call["body"])
            except BackendHTTPError as error:
                if error.status >= 500:
                    raise
                continue
            count = self._tokenize_result(route, response.json())
            if count is not None:
                return count
        self._tokenize_route = ""
        return None

    # -- model profile -------------------------------------------------------------------

    def model_profile(self) -> dict[str, Any]:
        """What the server says about the model, as langchain-core `ModelProfile` keys.

        `GET /models` first: vLLM lists each model's `max_model_len` (`max_input_tokens`).
        Without it, `GET /props` at the server root: llama.cpp's context size
        (`default_generation_settings.n_ctx`) and vision modality; a server without
        `/props` (4xx) adds nothing. Keys the server does not report are left out. Asked
        only when called: `ChatMatric` calls it with `capabilities="auto"` or from
        `load_profile()`.
        """
        listed = self._sync.request("GET", self._models_path).json()
        profile = from_openai_models(listed, self.model_name)
        if "max_input_tokens" in profile or self._azure:
            return profile
        try:
            props = self._sync.request("GET", self._props_url()).json()
        except BackendHTTPError as error:
            if error.status >= 500:
                raise
            return profile
        return {**from_llamacpp_props(props), **profile}

    async def amodel_profile(self) -> dict[str, Any]:
        """Async `model_profile`."""
        listed = (await self._async.request("GET", self._models_path)).json()
        profile = from_openai_models(listed, self.model_name)
        if "max_input_tokens" in profile or self._azure:
            return profile
        try:
            props = (await self._async.request("GET", self._props_url())).json()
        except BackendHTTPError as error:
            if error.status >= 500:
                raise
            return profile
        return {**from_llamacpp_props(props), **profile}

    def _props_url(self) -> str:
        return self._config.base_url.rstrip("/").removesuffix("/v1") + "/props"

    # -- health --------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """The model ids the server lists (`GET /models`)."""
        return _model_ids(self._sync.request("GET", self._models_path).json())

    async def alist_models(self) -> list[str]:
        """Async `list_models`."""
        return _model_ids((await self._async.request("GET", self._models_path)).json())

    def health_check(self) -> bool:
        """True when `GET /models` answers; never raises."""
        try:
            self.list_models()
        except Exception:  # noqa: BLE001 - a health check reports, it does not raise
            return False
        return True

    async def ahealth_check(self) -> bool:
        """Async `health_check`."""
        try:
            await self.alist_models()
        except Exception:  # noqa: BLE001 - a health check reports, it does not raise
            return False
        return True


_TOKENIZE_ROUTES = ("/tokenize", "/extras/tokenize/count")


def body_path_is_responses(error: BadRequestError) -> bool:
    """True for an error from `/responses`: nothing there is learned (no `max_tokens`)."""
    return bool(error.url) and str(error.url).endswith("/responses")


def _hint_chat_api(error: BackendHTTPError) -> None:
    """Say, in a 404 from `/responses`, that the server may only speak chat completions."""
    if error.status != 404 or not str(error.url or "").endswith("/responses"):
        return
    hint = (
        " The server has no Responses API at this URL: use api='chat' "
        "(/chat/completions), or check `base_url`."
    )
    if hint not in error.message:
        error.message += hint
        error.args = (error.message,)


def _token_count(obj: Any) -> int | None:
    """`count`, or the length of `tokens`, from a tokenizer answer."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("count"), int):
        return int(obj["count"])
    tokens = obj.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def _model_ids(obj: Any) -> list[str]:
    data = obj.get("data") if isinstance(obj, dict) else None
    return [str(m.get("id")) for m in data or () if isinstance(m, dict)]


def _add_headers(generation: Generation, headers: Mapping[str, str]) -> None:
    """`include_response_headers`: the headers, scrubbed, in the answer's metadata."""
    shown = redact_response_headers(headers)
    generation.metadata = {**(generation.metadata or {}), "headers": shown}
    for other in generation.alternatives:
        other.metadata = {**(other.metadata or {}), "headers": shown}


def _put_headers(delta: GenerationDelta, headers: Mapping[str, str]) -> None:
    delta.metadata = {**(delta.metadata or {}), "headers": redact_response_headers(headers)}


def _with_headers(
    deltas: Iterator[GenerationDelta], headers: Mapping[str, str]
) -> Iterator[GenerationDelta]:
    """The stream with the headers on its last delta (only when they were asked for)."""
    for delta in deltas:
        if delta.finish_reason is not None:
            _put_headers(delta, headers)
        yield delta
