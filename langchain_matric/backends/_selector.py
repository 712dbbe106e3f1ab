"""Build the configured backends: `BackendSelector` and `create_backend`.

The mapping from settings to constructor arguments lives in `langchain_matric.config`
(`backend_kwargs`); this module only picks the class, imports it lazily and caches
the instances it made.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, cast

from langchain_matric.backends._protocols import (
    ClosingContext,
    EmbeddingBackend,
    GenerationBackend,
    InferenceBackend,
)
from langchain_matric.config import BackendName, InferenceConfig, backend_kind, backend_kwargs

__all__ = ["BackendSelector", "create_backend"]

_CLASSES: dict[str, tuple[str, str]] = {
    "ollama": ("langchain_matric.backends.ollama", "OllamaBackend"),
    "openai": ("langchain_matric.backends.openai", "OpenAIBackend"),
    "azure": ("langchain_matric.backends.openai", "OpenAIBackend"),
}


def _load_class(kind: BackendName) -> type[Any]:
    """Import the backend class for `kind` on first use (keeps `import` light)."""
    module, attr = _CLASSES[kind]
    cls: type[Any] = getattr(importlib.import_module(module), attr)
    return cls


def create_backend(
    name_or_config: str | InferenceConfig | None = None, /, **overrides: Any
) -> InferenceBackend:
    """Build one backend from the configuration.

    Args:
        name_or_config: "ollama", "openai" or "azure" (with the loaded configuration);
            an `InferenceConfig` (its `default_generation` backend); or None (the loaded
            configuration's `default_generation` backend).
        **overrides: Constructor arguments that win over the configuration, e.g.
            `model=`, `base_url=`, `api_key=`. A `base_url` without `api_key` gets
            the configured key only if it may go there (see `resolve_openai_api_key`).

    The caller owns the backend: close it (or use it as a context manager).

    Raises:
        ConfigurationError: An unknown name or a bad configuration value.

    Example:
        ```python
        with create_backend("ollama", model="llama3.2") as backend:
            print(backend.generate("Say hi").text)
        ```
    """
    name: str
    if isinstance(name_or_config, InferenceConfig):
        config, name = name_or_config, name_or_config.default_generation
    else:
        config = InferenceConfig.load()
        name = config.default_generation if name_or_config is None else name_or_config
    kind, kwargs = backend_kwargs(config, name, **overrides)
    return cast("InferenceBackend", _load_class(kind)(**kwargs))


class BackendSelector(ClosingContext):
    """Hands out the configured embedding and generation backends, built once each.

    One instance per backend kind: when `default_embedding` and `default_generation`
    name the same backend, `embedding()` and `generation()` return the same object
    (one connection pool, both models configured on it). Instances are created on
    first use, thread-safely; `close()`/`aclose()` releases them, and a later call
    builds fresh ones.

    Example:
        ```python
        from langchain_matric.config import InferenceConfig

        config = InferenceConfig.load(default_generation="openai")
        with BackendSelector(config) as backends:
            vectors = backends.embedding().embed_texts(["hello"])   # Ollama
            answer = backends.generation().generate("Say hi")       # OpenAI
        ```
    """

    def __init__(self, config: InferenceConfig | None = None) -> None:
        self.config = InferenceConfig.load() if config is None else config
        """The configuration; `InferenceConfig.load()` when none was given."""
        self._backends: dict[BackendName, InferenceBackend] = {}
        self._lock = threading.Lock()

    def embedding(self) -> EmbeddingBackend:
        """The backend named by `config.default_embedding`."""
        return self.get(self.config.default_embedding)

    def generation(self) -> GenerationBackend:
        """The backend named by `config.default_generation`."""
        return self.get(self.config.default_generation)

    def get(self, name: str) -> InferenceBackend:
        """The backend "ollama", "openai" or "azure", built on first use."""
        kind = backend_kind(self.config, name)
        with self._lock:
            backend = self._backends.get(kind)
            if backend is None:
                _kind, kwargs = backend_kwargs(self.config, kind)
                backend = cast("InferenceBackend", _load_class(kind)(**kwargs))
                self._backends[kind] = backend
            return backend

    def _take_all(self) -> list[InferenceBackend]:
        with self._lock:
            backends = list(self._backends.values())
            self._backends.clear()
        return backends

    def close(self) -> None:
        """Close every backend built so far (all of them, even if one fails)."""
        errors: list[BaseException] = []
        for backend in self._take_all():
            try:
                backend.close()
            except Exception as exc:  # noqa: BLE001 - close the rest, then re-raise
                errors.append(exc)
        if errors:
            raise errors[0]

    async def aclose(self) -> None:
        """Async `close`."""
        errors: list[BaseException] = []
        for backend in self._take_all():
            try:
                await backend.aclose()
            except Exception as exc:  # noqa: BLE001 - close the rest, then re-raise
                errors.append(exc)
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        return (
            f"BackendSelector(embedding={self.config.default_embedding!r}, "
            f"generation={self.config.default_generation!r})"
        )
