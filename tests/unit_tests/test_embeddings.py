"""`MatricEmbeddings`: langchain-tests' unit suite, batching, concurrency, checks, prefixes."""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import ValidationError

from langchain_matric._turns import current_turn
from langchain_matric.embeddings import MatricEmbeddings
from langchain_matric.errors import EmbeddingDimensionError, ServerError
from tests.unit_tests._matric_fakes import FakeEmbeddingBackend, PlainBackend, vector_for

# -- langchain-tests (pinned: langchain-tests==1.1.9) --------------------------------------


class TestMatricEmbeddingsFakeBackendUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[MatricEmbeddings]:
        return MatricEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"backend": FakeEmbeddingBackend()}


def _transports_ready() -> bool:
    try:
        from langchain_matric._http import AsyncTransport, SyncTransport  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _transports_ready(), reason="transports not available yet")
class TestMatricEmbeddingsOpenAIUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[MatricEmbeddings]:
        return MatricEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "bge-m3"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"MATRIC_INFERENCE_DEFAULT_EMBEDDING": "openai", "OPENAI_API_KEY": "sk-env"},
            {"model": "text-embedding-3-small", "dimensions": 256},
            {"model": "text-embedding-3-small", "dimensions": 256},
        )


@pytest.mark.skipif(not _transports_ready(), reason="transports not available yet")
class TestMatricEmbeddingsOllamaUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[MatricEmbeddings]:
        return MatricEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"backend": "ollama", "base_url": "http://127.0.0.1:9", "model": "nomic-embed-text"}


# -- behaviour ----------------------------------------------------------------------------


TEXTS = [f"text number {i}" for i in range(10)]


def test_embed_documents_in_order_with_batches_by_count() -> None:
    backend = FakeEmbeddingBackend()
    embeddings = MatricEmbeddings(backend=backend, chunk_size=3)
    assert embeddings.embed_documents(TEXTS) == [vector_for(t, 6) for t in TEXTS]
    assert sorted(len(b) for b in backend.batches) == [1, 3, 3, 3]


def test_batches_respect_the_character_budget() -> None:
    backend = FakeEmbeddingBackend()
    texts = ["a" * 40, "b" * 40, "c" * 40, "d" * 200, "e" * 10]
    embeddings = MatricEmbeddings(
        backend=backend, chunk_size=100, max_batch_chars=100, max_concurrency=1
    )
    vectors = embeddings.embed_documents(texts)
    assert [v[0] for v in vectors] == [40.0, 40.0, 40.0, 200.0, 10.0]
    # A text over the budget still goes, alone and whole.
    assert [[len(t) for t in b] for b in backend.batches] == [[40, 40], [40], [200], [10]]


def _greedy_batches(texts: list[str], size: int, budget: int) -> list[list[str]]:
    """The batching rule, one text at a time: what `_batches` must cut."""
    batches: list[list[str]] = []
    current: list[str] = []
    for text in texts:
        if current and (len(current) >= size or sum(map(len, current)) + len(text) > budget):
            batches.append(current)
            current = []
        current.append(text)
    return [*batches, current] if current else batches


@given(
    texts=st.lists(st.text(min_size=1, max_size=12), max_size=40),
    size=st.integers(min_value=1, max_value=8),
    budget=st.integers(min_value=1, max_value=40),
)
def test_batches_cut_as_the_one_text_at_a_time_rule(
    texts: list[str], size: int, budget: int
) -> None:
    embeddings = MatricEmbeddings(
        backend=FakeEmbeddingBackend(), chunk_size=size, max_batch_chars=budget
    )
    assert embeddings._batches(texts) == _greedy_batches(texts, size, budget)


def test_empty_input_sends_nothing() -> None:
    backend = FakeEmbeddingBackend()
    embeddings = MatricEmbeddings(backend=backend)
    assert embeddings.embed_documents([]) == []
    assert backend.batches == []


async def test_async_empty_input_sends_nothing() -> None:
    backend = FakeEmbeddingBackend()
    assert await MatricEmbeddings(backend=backend).aembed_documents([]) == []
    assert backend.batches == []


def test_batches_run_concurrently() -> None:
    backend = FakeEmbeddingBackend(barrier=3)  # opens only with 3 batches in flight at once
    embeddings = MatricEmbeddings(backend=backend, chunk_size=2, max_concurrency=3)
    assert embeddings.embed_documents(TEXTS[:6]) == [vector_for(t, 6) for t in TEXTS[:6]]
    assert backend.max_in_flight == 3


def test_concurrency_is_bounded() -> None:
    backend = FakeEmbeddingBackend()
    MatricEmbeddings(backend=backend, chunk_size=1, max_concurrency=2).embed_documents(TEXTS)
    assert backend.max_in_flight <= 2
    assert len(backend.batches) == 10


async def test_async_batches_run_concurrently_in_order() -> None:
    backend = FakeEmbeddingBackend(barrier=4)
    embeddings = MatricEmbeddings(backend=backend, chunk_size=1, max_concurrency=4)
    vectors = await embeddings.aembed_documents(TEXTS[:4])
    assert vectors == [vector_for(t, 6) for t in TEXTS[:4]]
    assert backend.max_in_flight == 4


async def test_async_concurrency_is_bounded() -> None:
    backend = FakeEmbeddingBackend()
    await MatricEmbeddings(backend=backend, chunk_size=1, max_concurrency=3).aembed_documents(TEXTS)
    assert backend.max_in_flight == 3


def test_prefixes() -> None:
    backend = FakeEmbeddingBackend()
    embeddings = MatricEmbeddings(
        backend=backend, query_prefix="search_query: ", document_prefix="search_document: "
    )
    embeddings.embed_documents(["a"])
    embeddings.embed_query("b")
    assert backend.batches == [["search_document: a"], ["search_query: b"]]


async def test_async_query_and_prefix() -> None:
    backend = FakeEmbeddingBackend()
    vector = await MatricEmbeddings(backend=backend, query_prefix="q: ").aembed_query("b")
    assert vector == vector_for("q: b", 6)


def test_dimension_is_checked_on_the_first_batch() -> None:
    backend = FakeEmbeddingBackend(wrong_dim=5)
    embeddings = MatricEmbeddings(backend=backend, dimensions=6, max_concurrency=1, chunk_size=2)
    with pytest.raises(EmbeddingDimensionError, match=r"5-dimensional.*dimensions=6"):
        embeddings.embed_documents(TEXTS)
    assert len(backend.batches) == 1


def test_vector_count_is_checked() -> None:
    class Short(FakeEmbeddingBackend):
        def embed_texts(self, texts: Any) -> list[list[float]]:
            return super().embed_texts(texts)[:-1]

    with pytest.raises(EmbeddingDimensionError, match="1 vectors for 2 texts"):
        MatricEmbeddings(backend=Short()).embed_documents(["a", "b"])


def test_errors_keep_their_type() -> None:
    class Failing(FakeEmbeddingBackend):
        def embed_texts(self, texts: Any) -> list[list[float]]:
            raise ServerError("boom", status=503)

    with pytest.raises(ServerError):
        MatricEmbeddings(backend=Failing(), chunk_size=1).embed_documents(["a", "b", "c"])


def test_plain_custom_backend_works() -> None:
    embeddings = MatricEmbeddings(backend=PlainBackend())
    assert embeddings.embed_query("x") == vector_for("x", 4)


async def test_plain_custom_backend_works_async() -> None:
    embeddings = MatricEmbeddings(backend=PlainBackend())
    assert await embeddings.aembed_documents(["x"]) == [vector_for("x", 4)]


def test_progress_bar_needs_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ValidationError, match=r"pip install 'langchain-matric\[progress\]'"):
        MatricEmbeddings(backend=FakeEmbeddingBackend(), show_progress_bar=True)


class _FakeBar:
    instances: ClassVar[list[_FakeBar]] = []

    def __init__(self, total: int, **kwargs: Any) -> None:
        self.total = total
        self.n = 0
        self.closed = False
        _FakeBar.instances.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_tqdm(monkeypatch: pytest.MonkeyPatch) -> type[_FakeBar]:
    package = types.ModuleType("tqdm")
    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = _FakeBar  # type: ignore[attr-defined]
    package.auto = auto  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tqdm", package)
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    _FakeBar.instances = []
    return _FakeBar


def test_progress_bar_counts_texts(fake_tqdm: type[_FakeBar]) -> None:
    embeddings = MatricEmbeddings(
        backend=FakeEmbeddingBackend(), chunk_size=3, show_progress_bar=True
    )
    embeddings.embed_documents(TEXTS)
    (bar,) = fake_tqdm.instances
    assert (bar.total, bar.n, bar.closed) == (10, 10, True)


async def test_progress_bar_async(fake_tqdm: type[_FakeBar]) -> None:
    embeddings = MatricEmbeddings(
        backend=FakeEmbeddingBackend(), chunk_size=4, show_progress_bar=True
    )
    await embeddings.aembed_documents(TEXTS)
    (bar,) = fake_tqdm.instances
    assert (bar.n, bar.closed) == (10, True)


@pytest.mark.parametrize(
    "field", ["chunk_size", "max_batch_chars", "max_concurrency", "dimensions"]
)
def test_counts_must_be_positive(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        MatricEmbeddings(backend=FakeEmbeddingBackend(), **{field: 0})


def test_rag_with_in_memory_vector_store() -> None:
    embeddings = MatricEmbeddings(backend=FakeEmbeddingBackend())
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document(page_content=t) for t in ["apple", "banana bread", "cherry"]])
    found = store.as_retriever(search_kwargs={"k": 1}).invoke("apple")
    assert found[0].page_content == "apple"


def test_same_object_under_two_asyncio_runs() -> None:
    embeddings = MatricEmbeddings(backend=FakeEmbeddingBackend(), chunk_size=2)
    first = asyncio.run(embeddings.aembed_documents(TEXTS[:3]))
    second = asyncio.run(embeddings.aembed_documents(TEXTS[:3]))
    assert first == second == [vector_for(t, 6) for t in TEXTS[:3]]


def test_sync_batches_of_one_call_share_one_turn() -> None:
    # The HTTP backends read and parse each answer in the call's turn (`taking_turns`; the
    # reading itself is tested in test_http.py), so that threads parsing large answers do
    # not trade the GIL at every read.
    turns: list[object] = []

    class Recording(FakeEmbeddingBackend):
        def embed_texts(self, texts: Any) -> list[list[float]]:
            turns.append(current_turn())
            return super().embed_texts(texts)

    embeddings = MatricEmbeddings(backend=Recording(), chunk_size=2, max_concurrency=3)
    assert embeddings.embed_documents(TEXTS) == [vector_for(t, 6) for t in TEXTS]
    assert len(turns) == 5 and turns[0] is not None and all(t is turns[0] for t in turns)
    assert current_turn() is None  # only for the call
