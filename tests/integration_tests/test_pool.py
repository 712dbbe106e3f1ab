"""Endpoint pools against several loopback servers, sync and async: routing, failover,
cooldowns, the all-failed error, stats, pickling and the LangChain classes (the pool's
contract: docs/architecture.md, "Endpoint pools")."""

from __future__ import annotations

import asyncio
import pickle
import socket
from typing import Any

import pytest

from langchain_matric import ChatMatric, MatricEmbeddings, MatricLLM
from langchain_matric.backends import OllamaBackend, OpenAIBackend
from langchain_matric.errors import (
    BackendConnectionError,
    BadRequestError,
    ServerError,
    StreamError,
)
from langchain_matric.testing import Fault, LocalServer, Reply
from tests.pool_support import Clock

from .conftest import Sleeps, embed, generate, joined, stream

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "::1"])

CHAT = "/v1/chat/completions"


def dead_url() -> str:
    """An http URL on loopback where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def posts(server: LocalServer, path: str = CHAT) -> int:
    return sum(1 for r in server.requests if r.path == path)


def pool(urls: list[str], sleeps: Sleeps | None = None, **kw: Any) -> OpenAIBackend:
    if sleeps is not None:
        kw.setdefault("sleep", sleeps)
        kw.setdefault("asleep", sleeps.asleep)
    return OpenAIBackend(urls, model="test-model", embed_model="test-embed", **kw)


def urls(servers: list[LocalServer], count: int = 2) -> list[str]:
    return [s.openai_base_url for s in servers[:count]]


async def test_sequential_calls_alternate(servers, sync) -> None:
    with pool(urls(servers)) as backend:
        for _ in range(3):
            assert (await generate(backend, sync, "hi")).text == "Echo: hi"
            assert joined(await stream(backend, sync, "yo")) == "Echo: yo"
        assert len(await embed(backend, sync, ["a", "b"])) == 2
    assert posts(servers[0]) == posts(servers[1]) == 3
    assert posts(servers[0], "/v1/embeddings") == 1
    assert posts(servers[1], "/v1/embeddings") == 0


async def test_an_endpoint_down_sends_calls_to_the_others(servers, sync, sleeps) -> None:
    down = dead_url()
    with pool([down, *urls(servers)], sleeps) as backend:
        for _ in range(4):
            assert (await generate(backend, sync, "hi")).text == "Echo: hi"
        stats = backend.endpoint_stats()
    assert sleeps == []  # failover is at once while a healthy endpoint is left
    assert posts(servers[0]) == posts(servers[1]) == 2
    assert stats[down].requests == 1 and stats[down].failures == 1  # then it cools
    assert stats[down].cooldown > 0 and "could not connect" in stats[down].cooldown_reason
    assert stats[down].last_error.startswith(f"POST {down}/chat/completions")


async def test_a_503_fails_over_before_any_data(servers, sync, sleeps) -> None:
    servers[0].fault(Fault(status=503))
    with pool(urls(servers), sleeps) as backend:
        assert joined(await stream(backend, sync, "hi")) == "Echo: hi"
        stats = backend.endpoint_stats()
    assert sleeps == []
    assert posts(servers[0]) == posts(servers[1]) == 1
    first = stats[servers[0].openai_base_url]
    assert first.failures == 1 and first.cooldown == pytest.approx(1.0, abs=0.5)
    assert stats[servers[1].openai_base_url].failures == 0


async def test_a_stream_cut_after_data_never_fails_over(servers, sync, sleeps) -> None:
    servers[0].script(Reply(text="one two three four", chunk_size=1))
    servers[0].fault(Fault.drop(after=2, path=CHAT))
    with pool(urls(servers), sleeps) as backend:
        with pytest.raises(StreamError) as caught:
            await stream(backend, sync, "hi")
        stats = backend.endpoint_stats()
    assert caught.value.partial.startswith("one")  # data reached the caller
    assert posts(servers[1]) == 0 and sleeps == []
    first = stats[servers[0].openai_base_url]
    assert (first.failures, first.in_flight, first.cooldown) == (1, 0, 0.0)  # answered: no cooldown


async def test_a_4xx_is_not_failed_over(servers, sync) -> None:
    servers[0].fault(Fault(status=400, body='{"error": {"message": "bad"}}'))
    with pool(urls(servers)) as backend, pytest.raises(BadRequestError):
        await generate(backend, sync, "hi")
    assert posts(servers[1]) == 0


async def test_max_retries_zero_means_one_attempt(servers, sync, sleeps) -> None:
    servers[0].fault(Fault(status=503))
    with pool(urls(servers), sleeps, max_retries=0) as backend, pytest.raises(ServerError):
        await generate(backend, sync, "hi")
    assert posts(servers[0]) == 1 and posts(servers[1]) == 0 and sleeps == []


async def test_a_429_cools_its_endpoint_for_retry_after(servers, sync, sleeps) -> None:
    clock = Clock()
    servers[0].fault(Fault(status=429, headers={"Retry-After": "30"}))
    with pool(urls(servers), sleeps, clock=clock) as backend:
        for _ in range(3):  # the first fails over; the next two skip the cooling endpoint
            await generate(backend, sync, "hi")
        assert backend.endpoint_stats()[servers[0].openai_base_url].cooldown == 30.0
        assert (posts(servers[0]), posts(servers[1])) == (1, 3)
        clock.now += 30.0
        await generate(backend, sync, "hi")
        await generate(backend, sync, "hi")
    assert (posts(servers[0]), posts(servers[1])) == (2, 4)
    assert sleeps == []


async def test_all_down_names_every_endpoint_and_its_last_error(servers, sync, sleeps) -> None:
    servers[1].fault(Fault(status=503, times=5, body='{"error": {"message": "overloaded"}}'))
    down = dead_url().replace("http://", "http://user:s3cret@")
    shown = down.replace("user:s3cret@", "")
    with pool([down, servers[1].openai_base_url], sleeps) as backend:
        with pytest.raises(BackendConnectionError) as caught:
            await generate(backend, sync, "hi")
        stats = backend.endpoint_stats()
    message = str(caught.value)
    assert message.startswith("all 2 endpoints failed: ")
    assert f"{shown}: POST {shown}/chat/completions: could not connect" in message
    assert f"{servers[1].openai_base_url}: server returned 503" in message
    assert "overloaded" in message and "s3cret" not in message
    assert "s3cret" not in repr(stats)
    assert len(sleeps) == 1  # max_retries=2: A, B at once, then back off before the third
    assert sum(s.requests for s in stats.values()) == 3


async def test_least_outstanding_under_concurrent_streams(servers) -> None:
    servers[0].script(Reply(text="slow one", chunk_size=1))
    with pool(urls(servers)) as backend:
        held = backend.generate_stream("hold")
        next(held)  # a stream on the first endpoint, open
        stats = backend.endpoint_stats()
        assert stats[servers[0].openai_base_url].in_flight == 1
        for _ in range(3):  # while it is open, every call goes to the other one
            backend.generate("hi")
        held.close()  # closed: no longer counted
        assert backend.endpoint_stats()[servers[0].openai_base_url].in_flight == 0
        backend.generate("hi")
    assert (posts(servers[0]), posts(servers[1])) == (2, 3)


async def test_least_outstanding_async(servers) -> None:
    servers[0].fault(Fault.stall(0.5, after=1, path=CHAT))
    with pool(urls(servers)) as backend:

        async def one() -> str:
            return joined([d async for d in backend.agenerate_stream("hi")])

        first = asyncio.create_task(one())
        await asyncio.sleep(0.1)  # the first stream stalls on endpoint 0, in flight
        assert backend.endpoint_stats()[servers[0].openai_base_url].in_flight == 1
        for _ in range(3):  # meanwhile every call goes to the other endpoint
            assert await one() == "Echo: hi"
        assert await first == "Echo: hi"
        await backend.aclose()
    assert (posts(servers[0]), posts(servers[1])) == (1, 3)


async def test_concurrent_streams_spread_and_count_until_closed(servers) -> None:
    for server in servers[:2]:
        server.fault(Fault.stall(0.4, after=1, times=2, path=CHAT))
    with pool(urls(servers)) as backend:

        async def one() -> str:
            return joined([d async for d in backend.agenerate_stream("hi")])

        tasks = [asyncio.create_task(one()) for _ in range(4)]
        await asyncio.sleep(0.2)
        assert [s.in_flight for s in backend.endpoint_stats().values()] == [2, 2]
        assert await asyncio.gather(*tasks) == ["Echo: hi"] * 4
        assert [s.in_flight for s in backend.endpoint_stats().values()] == [0, 0]
        await backend.aclose()


async def test_prefix_affinity_keeps_a_conversation_on_one_endpoint(servers, sync) -> None:
    from langchain_matric.backends import ChatMessage, GenerationRequest

    def conversation(system: str, turns: int) -> GenerationRequest:
        messages = [ChatMessage("system", system)]
        messages += [ChatMessage("user", f"turn {i}") for i in range(turns)]
        return GenerationRequest(messages=messages)

    with pool(urls(servers, 3), prefix_affinity=1) as backend:
        for turns in range(1, 5):
            await generate(backend, sync, conversation("Agent A.", turns))
        counts = [posts(s) for s in servers]
    assert sorted(counts) == [0, 0, 4]


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_chat_matric_prefix_affinity_keeps_a_conversation_on_one_endpoint(
    servers, sync, api
) -> None:
    path = CHAT if api == "chat" else "/v1/responses"
    spread = ChatMatric(backend="openai", base_url=urls(servers, 3), model="test-model", api=api)
    model = spread.model_copy(update={"prefix_affinity": 1})
    for agent in ("Agent A.", "Agent B."):
        messages: list[tuple[str, str]] = [("system", agent)]
        for turn in range(3):
            messages.append(("human", f"turn {turn}"))
            reply = model.invoke(messages) if sync else await model.ainvoke(messages)
            messages.append(("ai", str(reply.content)))
    by_agent = {
        agent: sorted(
            i for i, s in enumerate(servers) for r in s.requests
            if r.path == path and agent in r.body.decode()
        )
        for agent in ("Agent A.", "Agent B.")
    }  # fmt: skip
    assert all(len(set(found)) == 1 and len(found) == 3 for found in by_agent.values())
    for _ in range(3):  # without affinity the same conversation spreads
        spread.invoke([("system", "Agent C."), ("human", "hi")])
    assert sum(1 for s in servers if any(b"Agent C." in r.body for r in s.requests)) == 3
    for adapter in (model, spread):
        if not sync:
            await adapter.aclose()
        adapter.close()


async def test_a_pool_pickles_and_works_in_the_copy(servers, sync) -> None:
    with pool(urls(servers), api_key="sk-secret") as backend:
        await generate(backend, sync, "hi")
        copy = pickle.loads(pickle.dumps(backend))
    with copy:
        assert all(s.requests == 0 for s in copy.endpoint_stats().values())
        assert (await generate(copy, sync, "hi")).text == "Echo: hi"
        if not sync:
            await copy.aclose()
    assert posts(servers[0]) == 2  # each copy starts at the first endpoint


async def test_ollama_pool(servers, sync, sleeps) -> None:
    down = dead_url().removesuffix("/v1")
    roots = [down, servers[0].ollama_base_url, servers[1].ollama_base_url]
    with OllamaBackend(roots, model="m", embed_model="e", sleep=sleeps, asleep=sleeps.asleep) as b:
        assert joined(await stream(b, sync, "hi")) == "Echo: hi"
        assert (await generate(b, sync, "hi")).text == "Echo: hi"
        assert len(await embed(b, sync, ["x"])) == 1
    assert sleeps == []
    assert posts(servers[0], "/api/chat") + posts(servers[1], "/api/chat") == 2


@pytest.mark.parametrize("cls", [ChatMatric, MatricLLM])
async def test_the_langchain_generation_classes_over_a_pool(servers, sync, cls) -> None:
    down = dead_url()
    model = cls(backend="openai", base_url=[down, *urls(servers)], model="test-model")
    for _ in range(2):
        if sync:
            reply = model.invoke("hi")
            chunks = list(model.stream("yo"))
        else:
            reply = await model.ainvoke("hi")
            chunks = [c async for c in model.astream("yo")]
        text = reply if isinstance(reply, str) else reply.content
        assert text == "Echo: hi"
        assert "".join(c if isinstance(c, str) else c.text for c in chunks) == "Echo: yo"
    assert model._identifying_params["base_url"] == [down, *urls(servers)]
    if not sync:
        await model.aclose()
    model.close()
    assert posts(servers[0]) + posts(servers[1]) == 4


async def test_embeddings_over_a_pool(servers, sync) -> None:
    embeddings = MatricEmbeddings(
        backend="openai", base_url=urls(servers), model="test-embed", chunk_size=1
    )
    texts = [f"text {i}" for i in range(6)]
    if sync:
        vectors = embeddings.embed_documents(texts)
    else:
        vectors = await embeddings.aembed_documents(texts)
        await embeddings.aclose()
    embeddings.close()
    assert len(vectors) == 6
    assert posts(servers[0], "/v1/embeddings") > 0 and posts(servers[1], "/v1/embeddings") > 0


def test_a_pool_from_the_environment(servers, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", ",".join(urls(servers)))
    chat = ChatMatric(backend="openai", model="test-model")
    assert chat.invoke("a").content == chat.invoke("b").content.replace("b", "a")
    chat.close()
    assert posts(servers[0]) == posts(servers[1]) == 1


def test_matric_probe_checks_each_endpoint(servers, capsys) -> None:
    from langchain_matric.cli import main

    assert main(["probe", "--base-url", ",".join(urls(servers)), "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "endpoint 1 of 2:" in out and "endpoint 2 of 2:" in out
    for url in urls(servers):
        assert f"server                {url}" in out
    assert main(["probe", "--base-url", f"{urls(servers)[0]},{dead_url()}", "--runs", "1"]) == 1


def test_threads_share_one_pool(servers) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with pool(urls(servers)) as backend:

        def one(i: int) -> str:
            return joined(list(backend.generate_stream(f"q{i}")))

        with ThreadPoolExecutor(8) as workers:
            answers = list(workers.map(one, range(32)))
        stats = backend.endpoint_stats()
    assert answers == [f"Echo: q{i}" for i in range(32)]
    assert [s.in_flight for s in stats.values()] == [0, 0]
    assert sum(s.requests for s in stats.values()) == 32
    assert all(s.requests >= 8 for s in stats.values())  # spread over both
