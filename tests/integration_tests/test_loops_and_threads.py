"""One instance, many event loops and threads; copies and pickles that work over HTTP.

An async client belongs to the loop that made it, so the same object must keep working
under successive `asyncio.run` calls, from 8 threads at once (sync, and each thread with
its own loop), and after `copy`, `model_copy`, `bind`, `with_config` and pickling, even
once the original was closed: no copy may share a closed client. Pickles must also work
in another process (multiprocessing, Ray or Spark workers).
"""

from __future__ import annotations

import asyncio
import copy
import multiprocessing
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.chat_models import ChatMatric
from langchain_matric.embeddings import MatricEmbeddings
from langchain_matric.llms import MatricLLM
from langchain_matric.testing import LocalServer

PROTOCOLS = ["openai", "ollama"]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(embedding_dim=8) as running:
        yield running


def fields(protocol: str, server: LocalServer) -> dict[str, Any]:
    if protocol == "openai":
        return {
            "backend": "openai",
            "base_url": server.openai_base_url,
            "api_key": "sk-loops",
            "model": "test-model",
        }
    return {"backend": "ollama", "base_url": server.ollama_base_url, "model": "test-model"}


def backend_for(protocol: str, server: LocalServer) -> OpenAIBackend | OllamaBackend:
    if protocol == "openai":
        return OpenAIBackend(
            base_url=server.openai_base_url,
            api_key="sk-loops",
            model="test-model",
            embed_model="test-embed",
        )
    return OllamaBackend(server.ollama_base_url, model="test-model", embed_model="test-embed")


def text_of(result: Any) -> str:
    return str(getattr(result, "content", result))


def check_sync(model: Any, prompt: str) -> None:
    assert text_of(model.invoke(prompt)) == f"Echo: {prompt}"
    assert "".join(text_of(c) for c in model.stream(prompt)) == f"Echo: {prompt}"


async def check_async(model: Any, prompt: str) -> None:
    assert text_of(await model.ainvoke(prompt)) == f"Echo: {prompt}"
    assert "".join([text_of(c) async for c in model.astream(prompt)]) == f"Echo: {prompt}"


# -- event loops ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_backend_under_two_asyncio_runs(server, protocol) -> None:
    backend = backend_for(protocol, server)

    async def once(prompt: str) -> None:
        assert (await backend.agenerate(prompt)).text == f"Echo: {prompt}"
        streamed = [d.text async for d in backend.agenerate_stream(prompt)]
        assert "".join(streamed) == f"Echo: {prompt}"
        assert len(await backend.aembed_texts(["a", "b"])) == 2

    asyncio.run(once("first"))
    asyncio.run(once("second"))  # the first loop (and its session) is gone
    with backend:
        assert backend.generate("sync too").text == "Echo: sync too"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_embeddings_under_two_asyncio_runs(server, protocol) -> None:
    params = fields(protocol, server) | {"model": "test-embed"}
    embeddings = MatricEmbeddings(**params)
    first = asyncio.run(embeddings.aembed_query("hello"))
    second = asyncio.run(embeddings.aembed_query("hello"))
    assert first == second == embeddings.embed_query("hello")
    embeddings.close()


# -- threads -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ChatMatric, MatricLLM])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_instance_from_8_threads(server, protocol, cls) -> None:
    model = cls(**fields(protocol, server))

    def work(i: int) -> None:
        for j in range(5):
            check_sync(model, f"thread {i} call {j}")
        asyncio.run(check_async(model, f"thread {i} in its own loop"))  # a loop per thread

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    model.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_backend_from_8_threads(server, protocol) -> None:
    backend = backend_for(protocol, server)

    def work(i: int) -> None:
        for j in range(5):
            prompt = f"t{i} c{j}"
            assert "".join(d.text for d in backend.generate_stream(prompt)) == f"Echo: {prompt}"

        async def run() -> None:
            assert (await backend.agenerate(f"t{i}")).text == f"Echo: t{i}"

        asyncio.run(run())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    backend.close()


# -- copies --------------------------------------------------------------------------------

COPIES: dict[str, Callable[[Any], Any]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "model_copy": lambda m: m.model_copy(),
    "model_copy_update": lambda m: m.model_copy(update={"temperature": 0.5}),
    "bind": lambda m: m.bind(stop=["never-seen"]),
    "with_config": lambda m: m.with_config(tags=["copied"]),
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
}


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("cls", [ChatMatric, MatricLLM])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_copies_work_after_the_original_is_closed(server, protocol, cls, how) -> None:
    original = cls(**fields(protocol, server))
    check_sync(original, "warm up")  # the original has built (and used) its clients
    asyncio.run(check_async(original, "warm up"))
    derived = COPIES[how](original)
    original.close()  # closes only what the original built; copies rebuild or own theirs
    check_sync(derived, "from the copy")
    asyncio.run(check_async(derived, "from the copy, async"))
    check_sync(original, "the original reopens")


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_backend_copies(server, protocol, how) -> None:
    backend = backend_for(protocol, server)
    assert backend.generate("x").text == "Echo: x"
    asyncio.run(backend.agenerate("x"))
    derived = COPIES[how](backend)
    if how != "copy":  # a shallow copy shares the pools by design; the others do not
        backend.close()
    assert "".join(d.text for d in derived.generate_stream("y")) == "Echo: y"

    async def run() -> str:
        return "".join([d.text async for d in derived.agenerate_stream("z")])

    assert asyncio.run(run()) == "Echo: z"
    derived.close()
    backend.close()


@pytest.mark.parametrize("with_instance", [False, True], ids=["fields", "instance"])
def test_pickled_chat_model_in_another_process(server, with_instance) -> None:
    if with_instance:
        model = ChatMatric(backend=backend_for("openai", server))
    else:
        model = ChatMatric(**fields("openai", server))
    model.invoke("warm up")  # clients exist and must not travel
    payload = pickle.dumps(model)
    context = multiprocessing.get_context("spawn")  # fork is unsafe with threads running
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        answers = list(pool.map(_invoke_pickled, [payload, payload]))
    assert answers == ["Echo: from a worker", "Echo: from a worker"]
    if isinstance(model.backend, OpenAIBackend):
        model.backend.close()  # an instance belongs to the caller
    model.close()


def _invoke_pickled(payload: bytes) -> str:
    model = pickle.loads(payload)
    return str(model.invoke("from a worker").content)
