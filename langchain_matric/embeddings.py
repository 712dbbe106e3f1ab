"""`MatricEmbeddings`: LangChain embeddings over any Matric backend."""

from __future__ import annotations

import importlib
import importlib.util
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import Field, model_validator

from langchain_matric._base import ADAPTER_CONFIG, MatricBase
from langchain_matric._concurrency import amap_bounded, map_bounded
from langchain_matric._turns import taking_turns
from langchain_matric.backends._protocols import EmbeddingBackend
from langchain_matric.errors import ConfigurationError, EmbeddingDimensionError

__all__ = ["MatricEmbeddings"]


class MatricEmbeddings(MatricBase, Embeddings):
    """Embeddings from an OpenAI-compatible or Ollama server.

    Texts go out in batches of at most `chunk_size` texts and `max_batch_chars`
    characters, up to `max_concurrency` batches at once; vectors come back in input
    order. Strings only: no client-side tokenizer, no token-id arrays.

    Setup:
        Install `langchain-matric` and point it at a server:

        ```bash
        pip install langchain-matric                # [progress] adds tqdm
        ollama pull nomic-embed-text
        ```

    Key init args — embedding params:
        model: str | None
            Embedding model; None uses the configured default.
        dimensions: int | None
            Vector size to ask for (sent only when set) and to check every vector
            against (`EmbeddingDimensionError` otherwise).
        query_prefix, document_prefix: str
            Prepended to queries and documents (e.g. "search_query: " and
            "search_document: " for nomic-embed-text).

    Key init args — client params:
        backend: "openai" | "ollama" | backend instance | None
            Which server API to speak; None uses the configured default.
        base_url, api_key, timeout, max_retries:
            Server URL, key, per-phase timeout in seconds, retries.
        chunk_size, max_batch_chars, max_concurrency: int
            Batching and parallelism.
        show_progress_bar: bool
            A tqdm progress bar over the texts (needs `tqdm`).

    Instantiate:
        ```python
        from langchain_matric import MatricEmbeddings

        embeddings = MatricEmbeddings(
            backend="ollama",
            model="nomic-embed-text",
            query_prefix="search_query: ",
            document_prefix="search_document: ",
        )
        ```

    Embed:
        ```python
        vectors = embeddings.embed_documents(["The sky is blue.", "Grass is green."])
        query = embeddings.embed_query("What colour is the sky?")
        len(vectors), len(query)
        ```
        ```python
        (2, 768)
        ```

    Async:
        ```python
        vectors = await embeddings.aembed_documents(["The sky is blue."])
        query = await embeddings.aembed_query("What colour is the sky?")
        ```
    """

    model_config = ADAPTER_CONFIG

    dimensions: int | None = Field(default=None, ge=1)
    """Vector size to request and check; None: the model's own size, unchecked."""

    chunk_size: int = Field(default=512, ge=1)
    """Most texts per request."""

    max_batch_chars: int = Field(default=100_000, ge=1)
    """Most characters per request (a longer text still goes alone, whole)."""

    max_concurrency: int = Field(default=4, ge=1)
    """Batches in flight at once."""

    query_prefix: str = ""
    """Prepended to each query (`embed_query`)."""

    document_prefix: str = ""
    """Prepended to each document (`embed_documents`)."""

    show_progress_bar: bool = False
    """Show a tqdm progress bar over the texts (install `langchain-matric[progress]`)."""

    @model_validator(mode="after")
    def _check(self) -> MatricEmbeddings:
        if self.show_progress_bar and importlib.util.find_spec("tqdm") is None:
            msg = (
                "show_progress_bar=True needs tqdm: pip install 'langchain-matric[progress]' "
                "(or pip install tqdm)"
            )
            raise ConfigurationError(msg)
        backend = self.backend
        if backend is not None and not isinstance(backend, str):
            if not isinstance(backend, EmbeddingBackend):
                msg = f"{type(backend).__name__} cannot embed: it lacks embed_texts/aembed_texts"
                raise ConfigurationError(msg)
            own = _embed_model(backend)
            if self.model is not None and self.model != own:
                msg = (
                    f"model={self.model!r} cannot apply to a backend instance embedding with "
                    f"{own!r}: set the model on the instance"
                )
                raise ConfigurationError(msg)
        return self

    def _dimensions(self) -> int | None:
        return self.dimensions

    def _embedding_backend(self) -> EmbeddingBackend:
        backend: EmbeddingBackend = self._resolve_backend("embedding")
        return backend

    # -- batching ------------------------------------------------------------------------

    def _batches(self, texts: list[str]) -> list[list[str]]:
        """Consecutive runs of at most `chunk_size` texts and `max_batch_chars` characters.

        Greedy, as a loop adding one text at a time would cut them, with the per-text
        work done in C: running character totals (`accumulate`), then one `bisect` per
        batch: ~0.5 ms instead of ~3.5 ms for 10,000 texts, all of it before the first request.
        """
        ends = list(accumulate(map(len, texts)))  # ends[i]: characters in texts[: i + 1]
        batches: list[list[str]] = []
        start, before = 0, 0  # before: characters in texts[:start]
        while start < len(texts):
            stop = min(start + self.chunk_size, len(texts))
            fits = bisect_right(ends, before + self.max_batch_chars, start, stop)
            stop = max(fits, start + 1)  # a longer text still goes, alone and whole
            batches.append(texts[start:stop])
            start, before = stop, ends[stop - 1]
        return batches

    def _check_vectors(self, batch: list[str], vectors: list[list[float]]) -> list[list[float]]:
        if len(vectors) != len(batch):
            msg = f"the server returned {len(vectors)} vectors for {len(batch)} texts"
            raise EmbeddingDimensionError(msg)
        expected = self.dimensions
        if expected is not None:
            for i, vector in enumerate(vectors):
                if len(vector) != expected:
                    msg = (
                        f"the server returned a {len(vector)}-dimensional vector (text {i} of "
                        f"its batch) where dimensions={expected} was configured; check "
                        "`dimensions` and `model`"
                    )
                    raise EmbeddingDimensionError(msg)
        return vectors

    def _progress(self, total: int) -> Any:
        if not self.show_progress_bar:
            return None
        tqdm = importlib.import_module("tqdm.auto").tqdm  # optional: imported on use
        return tqdm(total=total, unit="text", desc="Embedding")

    # -- sync ------------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        backend = self._embedding_backend()
        batches = self._batches(texts)
        bar = self._progress(len(texts))

        def run(batch: list[str]) -> list[list[float]]:
            vectors = self._check_vectors(batch, backend.embed_texts(batch))
            if bar is not None:
                bar.update(len(batch))
            return vectors

        try:
            with taking_turns():  # answers parsed one at a time: see `taking_turns`
                results = map_bounded(run, batches, self.max_concurrency)
        finally:
            if bar is not None:
                bar.close()
        return [vector for vectors in results for vector in vectors]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (with `document_prefix`), one vector per text, in order."""
        return self._embed(_prefixed(self.document_prefix, texts))

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with `query_prefix`)."""
        return self._embed([self.query_prefix + text])[0]

    # -- async -----------------------------------------------------------------------------

    async def _aembed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        backend = self._embedding_backend()
        batches = self._batches(texts)
        bar = self._progress(len(texts))

        async def run(batch: list[str]) -> list[list[float]]:
            vectors = self._check_vectors(batch, await backend.aembed_texts(batch))
            if bar is not None:
                bar.update(len(batch))
            return vectors

        try:
            results = await amap_bounded(run, batches, self.max_concurrency)
        finally:
            if bar is not None:
                bar.close()
        return [vector for vectors in results for vector in vectors]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async `embed_documents`."""
        return await self._aembed(_prefixed(self.document_prefix, texts))

    async def aembed_query(self, text: str) -> list[float]:
        """Async `embed_query`."""
        return (await self._aembed([self.query_prefix + text]))[0]


def _prefixed(prefix: str, texts: Sequence[str]) -> list[str]:
    return [prefix + text for text in texts] if prefix else list(texts)


def _embed_model(backend: object) -> str:
    name: Callable[[], str] | str | None = getattr(backend, "embed_model", None)
    if isinstance(name, str) and name:
        return name
    return str(getattr(backend, "model_name", ""))
