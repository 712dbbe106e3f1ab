"""`OllamaBackend`: generation, streaming and embeddings over Ollama's native API.

Payloads and parsing live in `_ollama_wire` (pure); this module only sends requests
and picks a parser for each response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from pydantic import SecretStr

from langchain_matric._http import AsyncStreamResponse, Response, StreamResponse, Timeouts
from langchain_matric.backends import _ollama_wire as wire
from langchain_matric.backends._http_backend import (
    DEFAULT_MAX_LINE_SIZE,
    HTTPBackend,
    JSONBodyParser,
    StreamParser,
    WrongContentTypeParser,
    check_model_name,
)
from langchain_matric.backends._profile import from_ollama_show
from langchain_matric.backends._protocols import as_request
from langchain_matric.backends._types import (
    Generation,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
)
from langchain_matric.errors import BackendHTTPError, ConfigurationError

__all__ = ["DEFAULT_OLLAMA_URL", "OllamaBackend"]

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"

_NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
_JSON_TYPES = frozenset({"application/json", ""})


class OllamaBackend(HTTPBackend):
    """Generation, streaming and embeddings over Ollama's native API (`/api/...`).

    Setup:
        A running Ollama (`ollama serve`) with the models pulled (`ollama pull gpt-oss:20b`,
        `ollama pull nomic-embed-text`). For Ollama's OpenAI-compatible `/v1` endpoint use
        `OpenAIBackend` instead: it is the one that supports a forced `tool_choice`.

    Key init args — models:
        model: the generation model (`/api/chat`, or `/api/generate` for a bare prompt).
        embed_model: the embedding model (`/api/embed`).
        embed_dimension: when set, every vector's size is checked against it (and sent as
            `dimensions` with `send_dimensions=True`).

    Key init args — Ollama switches:
        keep_alive: how long the model stays loaded (`"5m"`, seconds, `-1` for ever).
        num_ctx: the context window to load the model with (`options.num_ctx`).
        think: True/False, or "low"/"medium"/"high" for models with effort levels.
        truncate: False (default) makes a prompt or an embedding input longer than the
            context an error instead of silently dropping its start.

    Key init args — endpoints:
        base_url: the server root, or a list of roots serving the same models (an
            endpoint pool: least outstanding requests, cooldowns, failover;
            `endpoint_stats()`, `base_urls`); prefix_affinity: with a pool, requests
            whose first N messages match go to the same healthy endpoint.

    Key init args — client:
        timeouts, max_retries, verify_tls, headers, api_key (sent as a Bearer token, for
        a proxy or ollama.com), streaming (False: `supports_streaming` reports False),
        plus the transport settings of `HTTPBackend` (`proxy`, `client_cert`, ...).

    Instantiate:
        ```python
        from langchain_matric.backends import OllamaBackend

        backend = OllamaBackend(model="llama3.2", num_ctx=8192, keep_alive="10m")
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

    Example:
        >>> backend = OllamaBackend("http://127.0.0.1:11434", model="llama3.2")
        >>> backend
        OllamaBackend(base_url='http://127.0.0.1:11434', model='llama3.2')
        >>> backend.dimension is None, backend.supports_streaming
        (True, True)
    """

    def __init__(
        self,
        base_url: str | Sequence[str] = DEFAULT_OLLAMA_URL,
        model: str = "gpt-oss:20b",
        embed_model: str = "nomic-embed-text",
        embed_dimension: int | None = None,
        *,
        timeouts: Timeouts | None = None,
        max_retries: int = 2,
        verify_tls: bool | str = True,
        headers: Mapping[str, str] | None = None,
        api_key: str | SecretStr | None = None,
        keep_alive: str | float | None = None,
        num_ctx: int | None = None,
        think: wire.ThinkSetting = None,
        truncate: bool = False,
        send_dimensions: bool = False,
        streaming: bool = True,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        **transport: Any,
    ) -> None:
        check_model_name("OllamaBackend", "model", model, "gpt-oss:20b")
        check_model_name("OllamaBackend", "embed_model", embed_model, "nomic-embed-text")
        for name, value in (("embed_dimension", embed_dimension), ("num_ctx", num_ctx)):
            if value is not None and (isinstance(value, bool) or value <= 0):
                msg = f"{name}={value!r} must be a positive integer or None"
                raise ConfigurationError(msg)
        if think is not None:
            wire.check_think(think, "think")
        base_url = (
            _normalise_base_url(base_url)
            if isinstance(base_url, str)
            else [_normalise_base_url(u) if isinstance(u, str) else u for u in base_url]
        )
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        all_headers = {"Accept": "application/x-ndjson, application/json"}
        if key:
            all_headers["Authorization"] = f"Bearer {key}"
        all_headers.update(headers or {})
        super().__init__(
            base_url=base_url,
            headers=all_headers,
            timeouts=timeouts,
            max_retries=max_retries,
            verify_tls=verify_tls,
            streaming=streaming,
            max_line_size=max_line_size,
            **transport,
        )
        self.model_name = model
        self.embed_model = embed_model
        self.keep_alive = keep_alive
        self.num_ctx = num_ctx
        self.think = think
        self.truncate = truncate
        self._dimension = embed_dimension
        self._send_dimensions = send_dimensions

    @property
    def dimension(self) -> int | None:
        """The configured vector size (checked on every answer), or None."""
        return self._dimension

    # -- generation ----------------------------------------------------------------------

    def _payload(self, request: GenerationRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        if request.api == "responses" and request.prompt is None:
            msg = (
                "the Responses API is not part of Ollama's native API: use OpenAIBackend "
                "(backend='openai') with Ollama's /v1 URL, e.g. http://127.0.0.1:11434/v1"
            )
            raise ConfigurationError(msg)
        build, path = (
            (wire.generate_payload, "/api/generate")
            if request.prompt is not None
            else (wire.chat_payload, "/api/chat")
        )
        body = build(
            request,
            model=self.model_name,
            stream=stream,
            keep_alive=self.keep_alive,
            think=self.think,
            num_ctx=self.num_ctx,
            truncate=self.truncate,
        )
        return path, body

    def _whole(self, response: Response, model: str) -> Generation:
        if response.content_type in _NDJSON_TYPES:  # streamed despite `stream: false`
            return wire.parse_ndjson_body(response.content, model=model, url=response.url)
        return wire.parse_chat_response(response.json())

    def _parser_for(
        self, response: StreamResponse | AsyncStreamResponse, model: str
    ) -> StreamParser:
        url = response.url
        if response.content_type in _NDJSON_TYPES:
            return wire.OllamaStreamParser(model=model, url=url, max_line_size=self.max_line_size)
        if response.content_type in _JSON_TYPES:
            self.supports_streaming = False  # the server ignores `stream`: say so
            return JSONBodyParser(wire.whole_to_deltas, url)
        return WrongContentTypeParser(response.content_type, url, "application/x-ndjson")

    _probe_api = "ollama"

    def _generate(self, request: GenerationRequest) -> Generation:
        self._ready()
        path, body = self._payload(request, stream=False)
        response = self._sync.request("POST", path, json=body, model=body["model"])
        return self._whole(response, body["model"])

    async def _agenerate(self, request: GenerationRequest) -> Generation:
        await self._aready()
        path, body = self._payload(request, stream=False)
        response = await self._async.request("POST", path, json=body, model=body["model"])
        return self._whole(response, body["model"])

    def generate_stream(
        self, request: GenerationRequest | str, *, options: GenerationOptions | None = None
    ) -> Iterator[GenerationDelta]:
        """Stream an answer; the last delta carries finish_reason and usage."""
        request = as_request(request, options)
        self._ready()
        if not self.supports_streaming:  # probed: the server does not stream
            yield from wire.generation_to_deltas(self._generate(request))
            return
        path, body = self._payload(request, stream=True)
        with self._sync.stream("POST", path, json=body, model=body["model"]) as response:
            yield from self._drive(self._parser_for(response, body["model"]), response)

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
        path, body = self._payload(request, stream=True)
        async with self._async.stream("POST", path, json=body, model=body["model"]) as response:
            async for delta in self._adrive(self._parser_for(response, body["model"]), response):
                yield delta

    # -- embeddings ----------------------------------------------------------------------

    def _embed_body(self, texts: Sequence[str]) -> dict[str, Any] | None:
        if isinstance(texts, str):
            msg = "embed_texts takes a list of strings, not one string"
            raise TypeError(msg)
        if not texts:
            return None
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                msg = f"texts[{i}] is {text!r}: embeddings need non-empty strings"
                raise ValueError(msg)
        return wire.embed_payload(
            texts,
            model=self.embed_model,
            truncate=self.truncate,
            dimensions=self._dimension if self._send_dimensions else None,
            keep_alive=self.keep_alive,
        )

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in input order; `[]` for no texts (and no request).

        Raises:
            ValueError: An empty string (checked before any request).
            ContextLengthExceededError: A text is too long for the model (with
                `truncate=False`); the message names the input, or the likely one.
            EmbeddingDimensionError: Wrong vector count, or size vs `embed_dimension`.
        """
        body = self._embed_body(texts)
        if body is None:
            return []
        self._ready()
        try:
            with self._sync.request_in_turn(
                "POST", "/api/embed", json=body, model=self.embed_model
            ) as response:
                return wire.parse_embed_response(response.json(), len(texts), self._dimension)
        except BackendHTTPError as error:
            too_long = wire.embed_too_long_error(error, texts)
            if too_long is None:
                raise
            raise too_long from error

    async def aembed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """Async `embed_texts`."""
        body = self._embed_body(texts)
        if body is None:
            return []
        await self._aready()
        try:
            response = await self._async.request(
                "POST", "/api/embed", json=body, model=self.embed_model
            )
        except BackendHTTPError as error:
            too_long = wire.embed_too_long_error(error, texts)
            if too_long is None:
                raise
            raise too_long from error
        return wire.parse_embed_response(response.json(), len(texts), self._dimension)

    # -- models and health ---------------------------------------------------------------

    def list_models(self) -> list[str]:
        """The names of the models pulled on the server (`GET /api/tags`)."""
        return _model_names(self._sync.request("GET", "/api/tags").json())

    async def alist_models(self) -> list[str]:
        """Async `list_models`."""
        return _model_names((await self._async.request("GET", "/api/tags")).json())

    def model_profile(self) -> dict[str, Any]:
        """What Ollama says about the model (`POST /api/show`), as `ModelProfile` keys.

        The context length (`model_info["<arch>.context_length"]`) as `max_input_tokens`;
        `capabilities` as `text_outputs` ("completion"), `tool_calling` ("tools"),
        `image_inputs` ("vision") and `reasoning_output` ("thinking"): an embedding-only
        model has `text_outputs` False. Asked only when called: `ChatMatric` calls it with
        `capabilities="auto"` or from `load_profile()`.
        """
        body = {"model": self.model_name}
        return from_ollama_show(self._sync.request("POST", "/api/show", json=body).json())

    async def amodel_profile(self) -> dict[str, Any]:
        """Async `model_profile`."""
        body = {"model": self.model_name}
        response = await self._async.request("POST", "/api/show", json=body)
        return from_ollama_show(response.json())

    def server_version(self) -> str:
        """The server's version (`GET /api/version`), e.g. "0.12.6"."""
        return _version(self._sync.request("GET", "/api/version").json())

    async def aserver_version(self) -> str:
        """Async `server_version`."""
        return _version((await self._async.request("GET", "/api/version")).json())

    def health_check(self) -> bool:
        """True when `GET /api/version` and `GET /api/tags` both answer; never raises."""
        try:
            self.server_version()
            self.list_models()
        except Exception:  # noqa: BLE001 - a health check reports, it does not raise
            return False
        return True

    async def ahealth_check(self) -> bool:
        """Async `health_check`."""
        try:
            await self.aserver_version()
            await self.alist_models()
        except Exception:  # noqa: BLE001 - a health check reports, it does not raise
            return False
        return True


def _normalise_base_url(base_url: str) -> str:
    """Add a missing scheme (`OLLAMA_HOST` style) and refuse an OpenAI-style `/v1` root."""
    url = base_url.strip().rstrip("/")
    if url and "://" not in url:
        url = f"http://{url}"
    if url.endswith(("/v1", "/api")):
        msg = (
            f"base_url={base_url!r} ends with {url[url.rfind('/') :]!r}: OllamaBackend "
            "adds the /api/... paths itself, so pass the server root (e.g. "
            f"{DEFAULT_OLLAMA_URL!r}); for Ollama's OpenAI-compatible /v1 use OpenAIBackend"
        )
        raise ConfigurationError(msg)
    return url


def _model_names(obj: Any) -> list[str]:
    models = obj.get("models") if isinstance(obj, dict) else None
    return [str(m.get("name") or m.get("model")) for m in models or () if isinstance(m, dict)]


def _version(obj: Any) -> str:
    version = obj.get("version") if isinstance(obj, dict) else None
    if not isinstance(version, str):
        msg = f"/api/version answered without a version: {str(obj)[:200]}"
        raise BackendHTTPError(msg, status=200, body=str(obj)[:500])
    return version
