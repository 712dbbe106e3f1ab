"""What `MatricLLM`, `ChatMatric` and `MatricEmbeddings` share, written once.

- `MatricBase`: the connection fields (`backend`, `model`, `base_url`, `api_key`,
  `timeout`, `max_retries`) and backend resolution. A backend is built lazily, on the
  first call (no network at construction), and cached per construction parameters,
  so `model_copy(update=...)` with other parameters gets its own backend while an
  identical copy shares the pool; the cache never reaches `repr`, pickle or deep copies.
- `MatricGenerationBase`: the sampling fields, `GenerationOptions` built from fields
  and call kwargs in one place, `_identifying_params`, `_get_ls_params`, token
  estimates, and the per-stream bookkeeping (`StreamCursor`: model, finish_reason and
  usage exactly once, client-side `stop` enforcement).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import threading
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import pydantic
from langchain_core.language_models import LangSmithParams
from langchain_core.runnables.config import ContextThreadPoolExecutor
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

from langchain_matric.backends._protocols import (
    EmbeddingBackend,
    GenerationBackend,
    StreamingGeneration,
)
from langchain_matric.backends._types import (
    GenerationDelta,
    GenerationOptions,
    Usage,
)
from langchain_matric.errors import ConfigurationError

__all__ = [
    "ADAPTER_CONFIG",
    "BackendName",
    "MatricBase",
    "MatricGenerationBase",
    "StopScanner",
    "StreamCursor",
    "amap_bounded",
    "estimate_tokens",
    "map_bounded",
    "usage_to_dict",
]

BackendName = Literal["openai", "ollama"]
Purpose = Literal["generation", "embedding"]
T = TypeVar("T")
R = TypeVar("R")

_BACKEND_NAMES: tuple[str, ...] = ("openai", "ollama")
_BUILD_LOCK = threading.Lock()

# Call kwargs LangChain itself passes down that are not provider parameters.
_INTERNAL_KWARGS = frozenset({"stream", "ls_structured_output_format", "structured_output_format"})
# Call kwargs `_options` reads itself; the rest are provider extras.
_CONSUMED_KWARGS = frozenset(
    {"model", "temperature", "max_tokens", "top_p", "seed", "stop", *_INTERNAL_KWARGS}
)
# Named fields a `model_kwargs` key may not shadow.
_NAMED_OPTIONS = ("temperature", "max_tokens", "top_p", "stop", "seed")
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


class _BackendCache:
    """Backends an adapter built, keyed by their construction parameters.

    Shallow copies of an adapter share it (same parameters, same pool; other
    parameters, another entry); deep copies and unpickled adapters start empty. When
    the last adapter using it is garbage-collected, its backends are closed.
    """

    __slots__ = ("__weakref__", "entries")

    def __init__(self) -> None:
        self.entries: dict[Hashable, Any] = {}
        weakref.finalize(self, _close_quietly, self.entries)

    def __deepcopy__(self, memo: dict[int, Any]) -> _BackendCache:
        return _BackendCache()

    def __reduce__(self) -> tuple[type[_BackendCache], tuple[()]]:
        return (_BackendCache, ())

    def __repr__(self) -> str:
        return f"<{len(self.entries)} cached backend(s)>"

    def take(self) -> list[Any]:
        """Remove and return every cached backend (for closing)."""
        with _BUILD_LOCK:
            built = list(self.entries.values())
            self.entries.clear()
        return built


def _close_quietly(entries: dict[Hashable, Any]) -> None:
    """Close unreachable backends' connection pools (a finalizer: never raises)."""
    built = list(entries.values())
    entries.clear()
    for backend in built:
        with contextlib.suppress(Exception):  # best effort during garbage collection
            backend.close()


@functools.lru_cache(maxsize=256)
def strip_credentials(url: str) -> str:
    """`url` without userinfo and query string: safe for cache keys, traces and repr."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def backend_label(backend: object) -> str:
    """A short name for a backend: "openai", "ollama", or its class name."""
    name = type(backend).__name__
    return {"OpenAIBackend": "openai", "OllamaBackend": "ollama"}.get(name, name)


class MatricBase(BaseModel):
    """Connection fields and lazy backend resolution (shared by all three classes).

    The environment and `matric.toml` are read when a backend is first built, i.e. on
    the first call; later changes to them do not affect a backend already built.
    """

    model_config = ADAPTER_CONFIG

    backend: BackendName | GenerationBackend | EmbeddingBackend | None = None
    """"openai", "ollama", a backend instance, or None for the configured default."""

    model: str | None = None
    """Model name; None uses the configured default of the chosen backend."""

    base_url: str | None = None
    """Server URL (e.g. `http://127.0.0.1:8000/v1`); None uses the configuration."""

    api_key: SecretStr | None = None
    """API key for OpenAI-compatible servers; see the README on environment keys."""

    timeout: float | None = None
    """Seconds allowed to connect, for the first byte and between chunks; None: defaults."""

    max_retries: int | None = None
    """Retries on connection errors, 408/409/429 and 5xx; None: the backend's default (2)."""

    _backends: _BackendCache = PrivateAttr(default_factory=_BackendCache)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "base_url" and isinstance(value, str):
                yield name, strip_credentials(value)
            else:
                yield name, value

    @field_serializer("backend", when_used="json")
    def _dump_backend(self, value: object) -> str | None:
        # A backend instance is not JSON: show its (secret-free) repr.
        return value if value is None or isinstance(value, str) else repr(value)

    @field_serializer("base_url")
    def _dump_base_url(self, value: str | None) -> str | None:
        # Credentials in a URL (`user:pw@`, `?api-key=`) are secrets, like `api_key`:
        # `model_dump()` and JSON output show the URL without them.
        return strip_credentials(value) if isinstance(value, str) else value

    @field_validator("backend", mode="before")
    @classmethod
    def _check_backend(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().lower()
            if name not in _BACKEND_NAMES:
                msg = f"backend={value!r} is unknown: use 'openai', 'ollama' or a backend instance"
                raise ConfigurationError(msg)
            return name
        if value is None or isinstance(value, GenerationBackend | EmbeddingBackend):
            return value
        msg = (
            f"backend must be 'openai', 'ollama', a backend instance or None, "
            f"not {type(value).__name__}"
        )
        raise ConfigurationError(msg)

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            msg = f"timeout={value!r} must be a positive number of seconds or None"
            raise ConfigurationError(msg)
        return value

    @field_validator("max_retries")
    @classmethod
    def _check_max_retries(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            msg = f"max_retries={value!r} must be 0 or more"
            raise ConfigurationError(msg)
        return value

    @model_validator(mode="after")
    def _check_instance_settings(self) -> MatricBase:
        if self.backend is None or isinstance(self.backend, str):
            return self
        # Connection settings configure a backend the adapter builds; an instance was
        # built by the caller, so silently ignoring them would be a trap.
        given = [
            f
            for f in ("base_url", "api_key", "timeout", "max_retries")
            if f in self.model_fields_set and getattr(self, f) is not None
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
        private = cast("dict[str, _BackendCache]", self.__pydantic_private__)
        entries = private["_backends"].entries
        found = entries.get(key)
        if found is not None:
            return found
        with _BUILD_LOCK:
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
            self.base_url,
            secret,
            self.timeout,
            self.max_retries,
            self._dimensions(),
        )

    def _dimensions(self) -> int | None:
        """The vector size to request (embeddings only)."""
        return None

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
        )

    def _backend_base_url(self, backend: object) -> str | None:
        url = self.base_url if self.base_url is not None else getattr(backend, "base_url", None)
        return strip_credentials(url) if isinstance(url, str) else None

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
    """The sampling fields and request building of `MatricLLM` and `ChatMatric`."""

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

    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Provider extras sent as they are (OpenAI body keys, Ollama `options`)."""

    streaming: bool = False
    """As in langchain-core: when True, `invoke` goes through the stream (callbacks
    receive tokens)."""

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
        return cast("GenerationBackend", self._resolve_backend("generation"))

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


# -- building backends ----------------------------------------------------------------


_STREAMING_CLASSES: dict[type, bool] = {}
"""Backend classes seen so far, and whether they implement `StreamingGeneration`."""


def build_backend(
    name: str | None,
    *,
    purpose: Purpose,
    model: str | None = None,
    base_url: str | None = None,
    api_key: SecretStr | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    dimensions: int | None = None,
) -> Any:
    """Build the backend an adapter's fields describe, over the loaded configuration.

    Explicit values win over the environment and `matric.toml` (`InferenceConfig.load`);
    `name` None picks the configured default for `purpose`. An environment API key is
    sent only where `resolve_openai_api_key` allows. No network I/O happens here.
    """
    # Imported here: configuration and the HTTP stack load on the first call, not on import.
    from langchain_matric.config import InferenceConfig, backend_kwargs  # noqa: PLC0415

    config = InferenceConfig.load()
    if name is None:
        name = config.default_generation if purpose == "generation" else config.default_embedding
    overrides: dict[str, Any] = {}
    if base_url is not None:
        overrides["base_url"] = base_url
    if api_key is not None:
        overrides["api_key"] = api_key
    if model:
        overrides["model" if purpose == "generation" else "embed_model"] = model
    if dimensions is not None:
        overrides["embed_dimension"] = dimensions
        overrides["send_dimensions"] = True
    if max_retries is not None:
        overrides["max_retries"] = max_retries
    kind, kwargs = backend_kwargs(config, name, **overrides)
    if timeout is not None:
        kwargs["timeouts"] = _timeouts(timeout, kwargs.get("timeouts"))
    if kind == "ollama":
        from langchain_matric.backends.ollama import OllamaBackend  # noqa: PLC0415

        return OllamaBackend(**kwargs)
    from langchain_matric.backends.openai import OpenAIBackend  # noqa: PLC0415

    return OpenAIBackend(**kwargs)


def _timeouts(seconds: float, configured: Any) -> Any:
    """`timeout=` as transport timeouts: connect (at most), first byte and idle gap."""
    from langchain_matric._http import Timeouts  # noqa: PLC0415

    base = configured if isinstance(configured, Timeouts) else Timeouts()
    connect = seconds if base.connect is None else min(base.connect, seconds)
    return Timeouts(connect=connect, first_byte=seconds, idle=seconds, total=base.total)


# -- tokens ----------------------------------------------------------------------------

_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def estimate_tokens(text: str) -> int:
    """Estimate BPE tokens offline: ~4 characters per token, at least one per word or mark.

    English prose lands within ~20% of GPT-style tokenizers; code, numbers and
    non-Latin scripts count higher. Never downloads a tokenizer.

    Example:
        >>> estimate_tokens("Hello, world!")
        4
    """
    if not text:
        return 0
    return max(math.ceil(len(text) / 4), len(_PIECES.findall(text)))


# -- usage -----------------------------------------------------------------------------


def usage_to_dict(usage: Usage) -> dict[str, int]:
    """A `Usage` as a plain dict (`input_tokens`, `output_tokens`, `total_tokens`, ...)."""
    out = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.reasoning_tokens is not None:
        out["reasoning_tokens"] = usage.reasoning_tokens
    return out


# -- streams ---------------------------------------------------------------------------


class StopScanner:
    r"""Cuts a text stream at the first stop sequence, for servers that ignore `stop`.

    Holds back at most `max(len(s) for s in stop) - 1` characters: just enough to
    see a stop sequence split across deltas.

    Example:
        >>> s = StopScanner(["\n\n"])
        >>> s.feed("Hello\n"), s.feed("\nWorld")
        (('Hello', False), ('', True))
    """

    __slots__ = ("_buffer", "_hold", "_stops")

    def __init__(self, stop: Sequence[str]) -> None:
        self._stops = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._buffer = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to release now, and whether a stop sequence was found."""
        if not text:
            return "", False
        buffer = self._buffer + text
        cut = cut_at_stop(buffer, self._stops)
        if cut is not None:
            self._buffer = ""
            return buffer[:cut], True
        if len(buffer) <= self._hold:
            self._buffer = buffer
            return "", False
        release = len(buffer) - self._hold
        self._buffer = buffer[release:]
        return buffer[:release], False

    def flush(self) -> str:
        """The held-back tail, at the end of a stream."""
        tail, self._buffer = self._buffer, ""
        return tail


def cut_at_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where to cut `text` at a stop sequence, or None.

    The stop sequence that *ends* first wins (what a server generating token by token
    would hit first); among those ending together, the longest. Returns its start.
    """
    best: tuple[int, int] | None = None  # (end, start)
    for s in stop:
        if s and (start := text.find(s)) >= 0:
            candidate = (start + len(s), start)
            if best is None or candidate < best:
                best = candidate
    return None if best is None else best[1]


class StreamCursor:
    """Per-stream bookkeeping shared by the LLM and chat streams (sync and async).

    `advance(delta)` returns the text to emit and whether this delta ends the stream:
    then `finish_reason`, `usage` and `model` are ready to attach, exactly once. With
    `stop`, text is scanned client-side; at a match the stream ends with
    finish_reason "stop" and the caller must close the backend stream.
    """

    __slots__ = ("done", "finish_reason", "model", "scanner", "stopped", "usage")

    def __init__(self, stop: Sequence[str] | None, model: str | None) -> None:
        self.scanner = StopScanner(stop) if stop else None
        self.model = model
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.done = False
        self.stopped = False

    def advance(self, delta: GenerationDelta) -> tuple[str, bool]:
        """Text to emit for `delta`, and whether the end metadata goes on this chunk."""
        if delta.model and not self.done:
            self.model = delta.model
        text = delta.text
        if self.scanner is not None and not self.done:
            text, matched = self.scanner.feed(text)
            if matched:
                self.stopped = self.done = True
                self.finish_reason = "stop"
                return text, True
        if self.done:
            return text, False
        if delta.finish_reason is None and delta.usage is None:
            return text, False
        if self.scanner is not None:
            text += self.scanner.flush()
        self.finish_reason = delta.finish_reason
        self.usage = delta.usage
        self.done = True
        return text, True

    def tail(self) -> str | None:
        """At a stream's end without a final delta: the held text, or None if done."""
        if self.done:
            return None
        self.done = True
        return self.scanner.flush() if self.scanner is not None else ""


def closing_stream(stream: Iterator[T]) -> AbstractContextManager[Iterator[T]]:
    """Close a backend stream on exit (early exit closes its connection)."""
    close = getattr(stream, "close", None)
    if close is None:
        return nullcontext(stream)
    return _Closing(stream, close)


class _Closing(AbstractContextManager["Iterator[Any]"]):
    def __init__(self, stream: Iterator[Any], close: Callable[[], object]) -> None:
        self._stream = stream
        self._close = close

    def __enter__(self) -> Iterator[Any]:
        return self._stream

    def __exit__(self, *exc: object) -> None:
        self._close()


def aclosing_stream(stream: AsyncIterator[T]) -> AbstractAsyncContextManager[AsyncIterator[T]]:
    """Async `closing_stream`."""
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return nullcontext(stream)
    return _AClosing(stream, aclose)


class _AClosing(AbstractAsyncContextManager["AsyncIterator[Any]"]):
    def __init__(self, stream: AsyncIterator[Any], aclose: Callable[[], Awaitable[object]]) -> None:
        self._stream = stream
        self._aclose = aclose

    async def __aenter__(self) -> AsyncIterator[Any]:
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        await self._aclose()


# -- bounded concurrency ---------------------------------------------------------------


def map_bounded(fn: Callable[[T], R], items: Sequence[T], limit: int) -> list[R]:
    """`[fn(x) for x in items]` on up to `limit` threads, results in input order.

    One item runs inline; context variables (callbacks, tracing) reach each thread.
    """
    if len(items) <= 1 or limit <= 1:
        return [fn(item) for item in items]
    with ContextThreadPoolExecutor(max_workers=min(limit, len(items))) as pool:
        return list(pool.map(fn, items))


async def amap_bounded(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """Async `map_bounded`: at most `limit` awaiting at once, results in input order."""
    if len(items) <= 1:
        return [await fn(item) for item in items]
    semaphore = asyncio.Semaphore(max(1, limit))

    async def run(item: T) -> R:
        async with semaphore:
            return await fn(item)

    tasks = [asyncio.ensure_future(run(item)) for item in items]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        # The first failure propagates as it is (no ExceptionGroup); cancel the others
        # and wait for them, so nothing keeps running or goes unretrieved.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def positive_int(name: str, value: int) -> int:
    """Validate a count field (`max_concurrency`, `chunk_size`, ...)."""
    if value < 1:
        msg = f"{name}={value!r} must be a positive integer"
        raise ConfigurationError(msg)
    return value
