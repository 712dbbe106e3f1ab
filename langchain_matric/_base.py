"""The pydantic base classes of `MatricLLM`, `ChatMatric` and `MatricEmbeddings`.

- `MatricBase`: the connection fields (`backend`, `model`, `base_url`, `api_key`,
  `timeout`, `max_retries`) and backend resolution: the instance given, or one built
  lazily on the first call and cached (`_backend_build`).
- `MatricGenerationBase`: the sampling fields, `prefix_affinity` (a pool's routing),
  `GenerationOptions` built from fields and call kwargs in one place,
  `_identifying_params`, `_get_ls_params` and token counts. The per-stream bookkeeping
  is in `_streams`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal, cast

import pydantic
from langchain_core.language_models import LangSmithParams
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from langchain_matric._backend_build import (
    BUILD_LOCK,
    BackendCache,
    Purpose,
    backend_label,
    build_backend,
    strip_credentials,
)
from langchain_matric._tokens import estimate_tokens
from langchain_matric.backends._protocols import (
    EmbeddingBackend,
    GenerationBackend,
    StreamingGeneration,
)
from langchain_matric.backends._types import GenerationOptions
from langchain_matric.errors import ConfigurationError

__all__ = ["ADAPTER_CONFIG", "BackendName", "MatricBase", "MatricGenerationBase"]

BackendName = Literal["openai", "ollama"]

_BACKEND_NAMES: tuple[str, ...] = ("openai", "ollama")

# Call kwargs LangChain itself passes down that are not provider parameters.
_INTERNAL_KWARGS = frozenset({"stream", "ls_structured_output_format", "structured_output_format"})
# Call kwargs `_options` reads itself; the rest are provider extras.
_CONSUMED_KWARGS = frozenset(
    {
        "model",
        "temperature",
        "max_tokens",
        "top_p",
        "seed",
        "stop",
        "n",
        "logprobs",
        "top_logprobs",
        *_INTERNAL_KWARGS,
    }
)
# Named fields a `model_kwargs` key may not shadow.
_NAMED_OPTIONS = (
    "temperature",
    "max_tokens",
    "top_p",
    "stop",
    "seed",
    "n",
    "logprobs",
    "top_logprobs",
)
_RESERVED_KWARGS = frozenset(
    {*_NAMED_OPTIONS, "model", "messages", "prompt", "stream", "tools", "tool_choice"}
)


_REBUILD_IS_THREAD_SAFE = tuple(map(int, pydantic.VERSION.split(".")[:2])) >= (2, 14)
"""pydantic < 2.14 rebuilds a deferred class without a lock: threads creating the first
instances at once could validate with a parent's validator (pydantic#11849, #13419)."""

ADAPTER_CONFIG = ConfigDict(
    extra="forbid",
    arbitrary_types_allowed=True,
    protected_namespaces=(),
    defer_build=_REBUILD_IS_THREAD_SAFE,
)
"""Set on each public class too: the last base's config wins (core's ignores extras).

`defer_build`: pydantic builds a class's validator at its first instantiation instead of
at import (~25 ms of the package's import here; the first instance pays ~4 ms once), where
pydantic does that safely.
"""


class MatricBase(BaseModel):
    """Connection fields and lazy backend resolution (shared by all three classes).

    The environment and `matric.toml` are read when a backend is first built, i.e. on
    the first call; later changes to them do not affect a backend already built.

    Example:
        >>> from langchain_matric import MatricEmbeddings  # a MatricBase
        >>> MatricEmbeddings(backend="ollama", timeout=30).timeout
        30.0
    """

    model_config = ADAPTER_CONFIG

    backend: BackendName | GenerationBackend | EmbeddingBackend | None = None
    """"openai", "ollama", a backend instance, or None for the configured default."""

    model: str | None = None
    """Model name; None uses the configured default of the chosen backend."""

    base_url: str | list[str] | None = None
    """Server URL (e.g. `http://127.0.0.1:8000/v1`), or a list of URLs serving the same
    API and models (an endpoint pool); None uses the configuration."""

    api_key: SecretStr | None = None
    """API key for OpenAI-compatible servers; see the README on environment keys."""

    timeout: float | None = None
    """Seconds allowed to connect, for the first byte and between chunks; None: defaults."""

    max_retries: int | None = None
    """Retries on connection errors, 408/409/429 and 5xx; None: the backend's default (2)."""

    capabilities: Literal["learn", "auto"] | None = None
    """Passed to the backend built: "learn" (None: the default) adapts as the server
    rejects things, with no extra requests; "auto" probes the server once before the
    first request, and `ChatMatric` fills its `profile` from what the server says about
    the model when it is created."""

    _backends: BackendCache = PrivateAttr(default_factory=BackendCache)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "base_url" and value is not None:
                yield name, _shown_urls(value)
            else:
                yield name, value

    @field_serializer("backend", when_used="json")
    def _dump_backend(self, value: object) -> str | None:
        # A backend instance is not JSON: show its (secret-free) repr.
        return value if value is None or isinstance(value, str) else repr(value)

    @field_serializer("base_url")
    def _dump_base_url(self, value: str | list[str] | None) -> str | list[str] | None:
        # Credentials in a URL (`user:pw@`, `?api-key=`) are secrets, like `api_key`:
        # `model_dump()` and JSON output show the URL without them.
        return None if value is None else _shown_urls(value)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not value:
            msg = "base_url=[]: an endpoint pool needs at least one URL"
            raise ValueError(msg)
        return value

    @field_validator("backend", mode="before")
    @classmethod
    def _check_backend(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().lower()
            if name not in _BACKEND_NAMES:
                hint = _did_you_mean(name, _BACKEND_NAMES)
                msg = (
                    f"backend={value!r} is unknown: {hint}{'U' if hint else 'u'}se 'openai' "
                    "(any OpenAI-compatible server: vLLM, llama.cpp, LM Studio, ...), "
                    "'ollama' or a backend instance"
                )
                raise ConfigurationError(msg)
            return name
        if value is None or isinstance(value, GenerationBackend | EmbeddingBackend):
            return value
        msg = (
            f"backend must be 'openai', 'ollama', a backend instance or None, "
            f"not {type(value).__name__}"
        )
        raise ConfigurationError(msg)

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            example = "llama3.2" if "model_kwargs" in cls.model_fields else "nomic-embed-text"
            msg = (
                f"model={value!r} is empty: pass a model name the server serves (e.g. "
                f"model={example!r}), or leave model out to use the configured default"
            )
            raise ConfigurationError(msg)
        return value

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            msg = (
                f"timeout={value!r} must be a positive number of seconds (e.g. timeout=60), "
                "or None for the configured timeouts"
            )
            raise ConfigurationError(msg)
        return value

    @field_validator("max_retries")
    @classmethod
    def _check_max_retries(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            msg = f"max_retries={value!r} must be 0 or more (0: no retries), or None"
            raise ConfigurationError(msg)
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _explain_unknown_arguments(
        cls, data: Any, handler: pydantic.ValidatorFunctionWrapHandler
    ) -> Any:
        # pydantic only says "Extra inputs are not permitted": say what was probably meant.
        try:
            return handler(data)
        except pydantic.ValidationError as exc:
            raise _with_argument_hints(exc, cls) from None

    @model_validator(mode="after")
    def _check_instance_settings(self) -> MatricBase:
        if self.backend is None or isinstance(self.backend, str):
            return self
        # Connection settings configure a backend the adapter builds; an instance was
        # built by the caller, so silently ignoring them would be a trap.
        given = [
            f
            for f in (
                "base_url",
                "api_key",
                "timeout",
                "max_retries",
                "prefix_affinity",
                "capabilities",
            )
            if f in self.model_fields_set and self.__dict__.get(f) not in (None, 0)
        ]
        if given:
            names = ", ".join(given)
            msg = (
                f"{names} cannot be combined with a backend instance "
                f"({type(self.backend).__name__}): configure the instance instead"
            )
            raise ConfigurationError(msg)
        return self

    # -- backend resolution ------------------------------------------------------------

    def _resolve_backend(self, purpose: Purpose) -> Any:
        """The backend for `purpose`: the instance given, or one built (once) from settings."""
        backend = self.backend
        if backend is not None and not isinstance(backend, str):
            return backend
        key = self._backend_key(purpose)
        # Straight from pydantic's private dict: `self._backends` goes through pydantic's
        # `__getattr__` (~2.5 µs), and this runs a few times per call.
        private = cast("dict[str, BackendCache]", self.__pydantic_private__)
        entries = private["_backends"].entries
        found = entries.get(key)
        if found is not None:
            return found
        with BUILD_LOCK:
            found = entries.get(key)
            if found is None:
                found = entries[key] = self._build_backend(purpose)
        return found

    def _backend_key(self, purpose: Purpose) -> Hashable:
        secret = self.api_key.get_secret_value() if self.api_key is not None else None
        return (
            purpose,
            self.backend,
            self.model,
            tuple(self.base_url) if isinstance(self.base_url, list) else self.base_url,
            secret,
            self.timeout,
            self.max_retries,
            self._dimensions(),
            self._prefix_affinity(),
            self.capabilities,
        )

    def _dimensions(self) -> int | None:
        """The vector size to request (embeddings only)."""
        return None

    def _prefix_affinity(self) -> int:
        """Leading messages that pick a pool's endpoint (generation only; 0: off)."""
        return 0

    def _build_backend(self, purpose: Purpose) -> Any:
        return build_backend(
            self.backend if isinstance(self.backend, str) else None,
            purpose=purpose,
            model=self.model,
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
            dimensions=self._dimensions(),
            prefix_affinity=self._prefix_affinity(),
            capabilities=self.capabilities,
        )

    def _backend_base_url(self, backend: object) -> str | list[str] | None:
        """The URL (a list for an endpoint pool) for traces, credentials removed."""
        url: object = self.base_url
        if url is None:
            urls = getattr(backend, "base_urls", None)
            if isinstance(urls, tuple) and len(urls) > 1:
                url = list(urls)
            else:
                url = getattr(backend, "base_url", None)
        if isinstance(url, str):
            return strip_credentials(url)
        if isinstance(url, list) and all(isinstance(u, str) for u in url):
            return [strip_credentials(u) for u in url]
        return None

    # -- resources ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pools of backends this object built.

        A backend instance passed as `backend=` belongs to the caller and stays open.
        Shallow copies share built backends: closing one closes them for all. The next
        call builds a fresh backend.
        """
        for backend in self._backends.take():
            backend.close()

    async def aclose(self) -> None:
        """Async `close` (also closes the async connection pools)."""
        for backend in self._backends.take():
            await backend.aclose()


class MatricGenerationBase(MatricBase):
    """The sampling fields and request building of `MatricLLM` and `ChatMatric`.

    Example:
        >>> from langchain_matric import ChatMatric  # a MatricGenerationBase
        >>> chat = ChatMatric(backend="ollama", model="llama3.2", stop=["END"])
        >>> options, model = chat._options(["STOP"], {"temperature": 0.2})
        >>> options.stop, options.temperature, model
        (['END', 'STOP'], 0.2, None)
    """

    temperature: float | None = None
    """Sampling temperature; None: the server's default."""

    max_tokens: int | None = None
    """Maximum tokens to generate (sent as `max_tokens`, or `max_completion_tokens`
    where a server requires it)."""

    top_p: float | None = None
    """Nucleus sampling probability mass."""

    stop: list[str] | None = None
    """Stop sequences; merged with those of each call."""

    seed: int | None = None
    """Seed for reproducible sampling, where the server supports one."""

    n: int | None = None
    """Choices per prompt (the chat and completions APIs): `n` generations in the result.
    None: not sent. A server that takes no `n` answers with its own error
    (`BadRequestError`); `api="responses"` and Ollama's native API refuse `n` > 1. A
    stream (one message) carries the first choice."""

    logprobs: bool | None = None
    """Ask for each output token's log probability: `response_metadata["logprobs"]` is
    `{"content": [...]}`, one entry per token, as ChatOpenAI names it. None: not sent."""

    top_logprobs: int | None = None
    """Most likely alternatives per token, in each entry's `top_logprobs`. None: not sent."""

    include_response_headers: bool = False
    """Put the HTTP response headers in `response_metadata["headers"]` (rate limits,
    request ids), credentials and cookies scrubbed (OpenAI-compatible backends)."""

    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Provider extras sent as they are (OpenAI body keys, Ollama `options`)."""

    streaming: bool = False
    """As in langchain-core: when True, `invoke` goes through the stream (callbacks
    receive tokens)."""

    prefix_affinity: int = 0
    """With an endpoint pool (a `base_url` list): requests whose first N messages match go
    to the same healthy endpoint, whose prefix cache holds them (0, the default: off,
    least outstanding requests). Ignored with one URL."""

    @field_validator("prefix_affinity", mode="before")
    @classmethod
    def _check_prefix_affinity(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            msg = (
                f"prefix_affinity={value!r} must be a number of leading messages, 0 or more "
                "(0: off; e.g. prefix_affinity=1 keeps requests with the same system "
                "message on one endpoint of a pool)"
            )
            raise ConfigurationError(msg)
        return value

    def _prefix_affinity(self) -> int:
        return self.prefix_affinity

    @field_validator("max_tokens")
    @classmethod
    def _check_max_tokens(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            msg = f"max_tokens={value!r} must be a positive integer or None"
            raise ConfigurationError(msg)
        return value

    @field_validator("model_kwargs")
    @classmethod
    def _check_model_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_RESERVED_KWARGS.intersection(value))
        if clash:
            names = ", ".join(clash)
            msg = (
                f"model_kwargs must not contain {names}: pass "
                f"{'it' if len(clash) == 1 else 'them'} as named argument(s) instead"
            )
            raise ConfigurationError(msg)
        return value

    @model_validator(mode="after")
    def _check_generation_backend(self) -> MatricGenerationBase:
        backend = self.backend
        if backend is not None and not isinstance(backend, str | GenerationBackend):
            msg = f"{type(backend).__name__} cannot generate: it lacks generate/agenerate"
            raise ConfigurationError(msg)
        return self

    # -- backend -----------------------------------------------------------------------

    def _generation_backend(self) -> GenerationBackend:
        backend = self._resolve_backend("generation")
        if self.__dict__.get("api") == "responses" and "responses" not in getattr(
            backend, "generation_apis", ()
        ):
            msg = (
                f"api='responses' needs a backend that speaks the OpenAI Responses API: "
                f"backend='openai' with the server's /v1 URL (Ollama's too), not "
                f"{backend_label(backend)}"
            )
            raise ConfigurationError(msg)
        return cast("GenerationBackend", backend)

    def _chat_api(self) -> Literal["chat", "responses"] | None:
        """The API a chat request asks for: this object's `api` when set, else None.

        None leaves the choice to the backend (`OpenAIBackend(api=...)`, chat by default).
        """
        api = self.__dict__.get("api")
        if api == "responses" or (api == "chat" and "api" in self.model_fields_set):
            return cast("Literal['chat', 'responses']", api)
        return None

    @staticmethod
    def _stream_source(backend: object) -> StreamingGeneration | None:
        """The backend as a stream source, or None when it does not stream (now).

        Whether a class has the streaming methods is decided once per class (a runtime
        Protocol `isinstance` costs ~20 µs a call); `supports_streaming` is read every time.
        """
        kind = type(backend)
        has_methods = _STREAMING_CLASSES.get(kind)
        if has_methods is None:
            has_methods = _STREAMING_CLASSES[kind] = isinstance(backend, StreamingGeneration)
        if has_methods and getattr(backend, "supports_streaming", False):
            return cast("StreamingGeneration", backend)
        return None

    def _model_name(self, backend: object | None = None) -> str:
        if self.model:
            return self.model
        if backend is None:
            backend = self._generation_backend()
        return str(getattr(backend, "model_name", "") or "")

    # -- options -----------------------------------------------------------------------

    def _merged_stop(self, stop: Sequence[str] | None) -> list[str] | None:
        if not stop:
            return list(self.stop) if self.stop else None
        if not self.stop:
            return list(stop)
        return list(dict.fromkeys([*self.stop, *stop]))

    def _options(
        self, stop: Sequence[str] | None, kwargs: Mapping[str, Any]
    ) -> tuple[GenerationOptions, str | None]:
        """Options and the per-call model from the fields and a call's kwargs.

        Named options in `kwargs` override the fields; the other kwargs are provider
        extras, laid over `model_kwargs`. LangChain's own control kwargs are dropped.
        """
        extra = {k: v for k, v in kwargs.items() if k not in _CONSUMED_KWARGS}
        model = kwargs.get("model")
        options = GenerationOptions(
            temperature=kwargs.get("temperature", self.temperature),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            top_p=kwargs.get("top_p", self.top_p),
            stop=self._merged_stop(stop),
            seed=kwargs.get("seed", self.seed),
            n=kwargs.get("n", self.n),
            logprobs=kwargs.get("logprobs", self.logprobs),
            top_logprobs=kwargs.get("top_logprobs", self.top_logprobs),
            extra={**self.model_kwargs, **extra} if extra else self.model_kwargs,
        )
        return options, model if isinstance(model, str) and model else None

    # -- LangChain metadata ------------------------------------------------------------

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Cache key and trace parameters: nothing secret, also for backend instances."""
        backend = self._generation_backend()
        params: dict[str, Any] = {
            "backend": self.backend if isinstance(self.backend, str) else backend_label(backend),
            "base_url": self._backend_base_url(backend),
            "model": self._model_name(backend),
        }
        for name in _NAMED_OPTIONS:
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        if self.model_kwargs:
            params["model_kwargs"] = self.model_kwargs
        api = self.__dict__.get("api")
        if api is not None and api != "chat":
            params["api"] = api
        if self.prefix_affinity:  # how a pool routes (not what it answers), shown in traces
            params["prefix_affinity"] = self.prefix_affinity
        return params

    def _ls_params(
        self, model_type: Literal["chat", "llm"], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="matric",
            ls_model_name=model if isinstance(model, str) and model else self._model_name(),
            ls_model_type=model_type,
        )
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, int | float):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        if merged := self._merged_stop(stop):
            params["ls_stop"] = merged
        return params

    # -- tokens --------------------------------------------------------------------------

    def get_num_tokens(self, text: str) -> int:
        """Tokens in `text`: the server's own tokenizer where it has one, else an estimate.

        A `custom_get_token_ids` function, when given, counts exactly instead. A backend
        with `count_tokens` (the OpenAI-compatible one: vLLM's and llama.cpp's `/tokenize`)
        is asked; without one, or when the server has no tokenizer, `estimate_tokens`
        counts offline. Nothing is ever downloaded.
        """
        custom = getattr(self, "custom_get_token_ids", None)
        if custom is not None:
            return len(custom(text))
        counter = getattr(self._generation_backend(), "count_tokens", None)
        if counter is not None:
            counted = counter(text)
            if isinstance(counted, int):
                return counted
        return estimate_tokens(text)

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids from `custom_get_token_ids`; there is no offline tokenizer otherwise."""
        custom = getattr(self, "custom_get_token_ids", None)
        if custom is not None:
            return list(custom(text))
        msg = (
            f"{type(self).__name__} has no offline tokenizer: pass custom_get_token_ids=..., "
            "or use get_num_tokens() for an estimate"
        )
        raise NotImplementedError(msg)


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    """The closest of `choices` as a hint ("did you mean 'x'? "), or an empty string."""
    import difflib  # noqa: PLC0415 - only on errors

    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
    return f"did you mean {close[0]!r}? " if close else ""


def _with_argument_hints(exc: pydantic.ValidationError, cls: type[BaseModel]) -> Exception:
    """`exc` with each unknown argument's error saying what to pass instead."""
    errors = exc.errors()
    if not any(error["type"] == "extra_forbidden" for error in errors):
        return exc
    details: list[InitErrorDetails] = []
    for error in errors:
        detail: InitErrorDetails = {
            "type": error["type"],
            "loc": error["loc"],
            "input": error["input"],
        }
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        if error["type"] == "extra_forbidden":
            name = str(error["loc"][-1])
            fix = _did_you_mean(name, list(cls.model_fields))
            if "model_kwargs" in cls.model_fields and name not in _RESERVED_KWARGS:
                fix += f"{'A' if fix else 'a'} provider parameter goes in model_kwargs="
                fix += f"{{{name!r}: ...}}"
            else:
                fix += f"{'S' if fix else 's'}ee help({cls.__name__}) for its arguments"
            fix = fix.rstrip()
            detail["type"] = PydanticCustomError(
                "extra_forbidden",
                "{name} is not an argument of {cls}: {fix}",
                {"name": name, "cls": cls.__name__, "fix": fix},
            )
        details.append(detail)
    try:
        return pydantic.ValidationError.from_exception_data(exc.title, details)
    except (KeyError, TypeError, ValueError):  # an error type pydantic cannot rebuild
        return exc


_STREAMING_CLASSES: dict[type, bool] = {}
"""Backend classes seen so far, and whether they implement `StreamingGeneration`."""


def _shown_urls(value: str | list[str]) -> str | list[str]:
    """`base_url` as shown in repr, dumps and traces: without credentials.

    Example:
        >>> _shown_urls(["http://me:pw@127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"])
        ['http://127.0.0.1:8001/v1', 'http://127.0.0.1:8002/v1']
    """
    if isinstance(value, str):
        return strip_credentials(value)
    return [strip_credentials(url) if isinstance(url, str) else "<invalid url>" for url in value]
