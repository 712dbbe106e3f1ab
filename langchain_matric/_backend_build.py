"""Building backends for the LangChain classes, and the cache of the ones they built.

A backend is built lazily, on an adapter's first call (no network at construction),
from its fields over the loaded configuration (`build_backend`), and cached per
construction parameters (`BackendCache`), so `model_copy(update=...)` with other
parameters gets its own backend while an identical copy shares the pool; the cache
never reaches `repr`, pickle or deep copies. `strip_credentials` and `backend_label` are
the secret-free names the adapters show for a URL and a backend.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Hashable
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

__all__ = [
    "BUILD_LOCK",
    "BackendCache",
    "Purpose",
    "backend_label",
    "build_backend",
    "strip_credentials",
]

Purpose = Literal["generation", "embedding"]

BUILD_LOCK = threading.Lock()
"""Held while a backend is built into, or taken out of, any adapter's cache."""


class BackendCache:
    """Backends an adapter built, keyed by their construction parameters.

    Shallow copies of an adapter share it (same parameters, same pool; other
    parameters, another entry); deep copies and unpickled adapters start empty. When
    the last adapter using it is garbage-collected, its backends are closed.

    Example:
        >>> import copy
        >>> cache = BackendCache()
        >>> cache.entries["key"] = object()
        >>> cache, copy.deepcopy(cache)
        (<1 cached backend(s)>, <0 cached backend(s)>)
    """

    __slots__ = ("__weakref__", "entries")

    def __init__(self) -> None:
        self.entries: dict[Hashable, Any] = {}
        weakref.finalize(self, _close_quietly, self.entries)

    def __deepcopy__(self, memo: dict[int, Any]) -> BackendCache:
        return BackendCache()

    def __reduce__(self) -> tuple[type[BackendCache], tuple[()]]:
        return (BackendCache, ())

    def __repr__(self) -> str:
        return f"<{len(self.entries)} cached backend(s)>"

    def take(self) -> list[Any]:
        """Remove and return every cached backend (for closing)."""
        with BUILD_LOCK:
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
    """`url` without userinfo and query string: safe for cache keys, traces and repr.

    Example:
        >>> strip_credentials("http://me:pw@127.0.0.1:8000/v1?api-key=k")
        'http://127.0.0.1:8000/v1'
    """
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
    """A short name for a backend: "openai", "ollama", or its class name.

    Example:
        >>> backend_label(object())
        'object'
    """
    name = type(backend).__name__
    return {"OpenAIBackend": "openai", "OllamaBackend": "ollama"}.get(name, name)


def build_backend(
    name: str | None,
    *,
    purpose: Purpose,
    model: str | None = None,
    base_url: str | list[str] | None = None,
    api_key: SecretStr | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    dimensions: int | None = None,
    prefix_affinity: int = 0,
    capabilities: str | None = None,
) -> Any:
    """Build the backend an adapter's fields describe, over the loaded configuration.

    Explicit values win over the environment and `matric.toml` (`InferenceConfig.load`);
    `name` None picks the configured default for `purpose`. An environment API key is
    sent only where `resolve_openai_api_key` allows. No network I/O happens here.

    Example:
        >>> backend = build_backend("ollama", purpose="generation", model="llama3.2")
        >>> type(backend).__name__, backend.model_name
        ('OllamaBackend', 'llama3.2')
        >>> backend.close()
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
    if prefix_affinity:  # a pool's routing: no configuration key, so not an override
        kwargs["prefix_affinity"] = prefix_affinity
    if capabilities is not None:  # no configuration key either
        kwargs["capabilities"] = capabilities
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
