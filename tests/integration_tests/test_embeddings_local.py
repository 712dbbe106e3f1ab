"""langchain-tests integration suites for `MatricEmbeddings` over HTTP (local server).

Pinned: langchain-tests==1.1.9.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from langchain_matric.embeddings import MatricEmbeddings
from langchain_matric.testing import LocalServer


class _LocalServerSuite(EmbeddingsIntegrationTests):
    server: LocalServer

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _local_server(cls) -> Iterator[None]:
        with LocalServer(embedding_dim=32) as server:
            cls.server = server
            yield

    @property
    def embeddings_class(self) -> type[MatricEmbeddings]:
        return MatricEmbeddings


class TestMatricEmbeddingsOpenAILocal(_LocalServerSuite):
    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "base_url": self.server.openai_base_url,
            "api_key": "sk-local",
            "model": "test-embed",
            "chunk_size": 2,
        }


class TestMatricEmbeddingsOllamaLocal(_LocalServerSuite):
    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {
            "backend": "ollama",
            "base_url": self.server.ollama_base_url,
            "model": "test-embed",
            "chunk_size": 2,
        }


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer(embedding_dim=16) as local:
        yield local


@pytest.mark.parametrize("backend", ["openai", "ollama"])
def test_batches_prefixes_and_dimensions_over_http(server: LocalServer, backend: str) -> None:
    url = server.openai_base_url if backend == "openai" else server.ollama_base_url
    embeddings = MatricEmbeddings(
        backend=backend,
        base_url=url,
        model="test-embed",
        chunk_size=3,
        max_concurrency=2,
        dimensions=8,
        document_prefix="search_document: ",
    )
    try:
        texts = [f"doc {i}" for i in range(7)]
        vectors = embeddings.embed_documents(texts)
        assert len(vectors) == 7
        assert all(len(v) == 8 for v in vectors)
        bodies = [r.json for r in server.requests]
        assert len(bodies) == 3
        sent = sorted(t for body in bodies for t in body["input"])
        assert sent == sorted(f"search_document: doc {i}" for i in range(7))
        assert all(body["dimensions"] == 8 for body in bodies)
        assert vectors[0] == embeddings.embed_documents(["doc 0"])[0]  # deterministic, in order
    finally:
        embeddings.close()


async def test_rag_pipeline_async(server: LocalServer) -> None:
    embeddings = MatricEmbeddings(
        backend="openai", base_url=server.openai_base_url, api_key="k", model="test-embed"
    )
    try:
        store = InMemoryVectorStore(embeddings)
        await store.aadd_documents([Document(page_content=t) for t in ["alpha", "beta", "gamma"]])
        found = await store.as_retriever(search_kwargs={"k": 1}).ainvoke("beta")
        assert found[0].page_content == "beta"
    finally:
        await embeddings.aclose()
