"""Responses API calls over an endpoint pool: `previous_response_id` goes to the endpoint
that made the response (a stored response is known only there), sync and async, whole
and streamed, through the backend and `ChatMatric` (docs/architecture.md, "Endpoint
pools")."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage

from langchain_matric import ChatMatric
from langchain_matric.backends import GenerationOptions, GenerationRequest, OpenAIBackend
from langchain_matric.errors import BackendConnectionError, BadRequestError
from langchain_matric.testing import Fault, LocalServer
from tests.pool_support import Clock

from .conftest import generate, joined, stream

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "::1"])

RESPONSES = "/v1/responses"


def pool(servers: list[LocalServer], **kw: Any) -> OpenAIBackend:
    urls = [s.openai_base_url for s in servers]
    return OpenAIBackend(urls, model="test-model", api="responses", **kw)


def ask(text: str, **extra: Any) -> GenerationRequest:
    return GenerationRequest.from_prompt(text, options=GenerationOptions(extra=extra))


def sent(server: LocalServer) -> list[dict[str, Any]]:
    return [r.json for r in server.requests if r.path == RESPONSES]


async def first_answer(backend: OpenAIBackend, sync: bool, streamed: bool) -> str:
    if streamed:
        deltas = await stream(backend, sync, ask("hello", store=True))
        assert joined(deltas) == "Echo: hello"
        response_id = deltas[-1].response_id
    else:
        response_id = (await generate(backend, sync, ask("hello", store=True))).response_id
    assert response_id is not None and response_id.startswith("resp_")
    return response_id


def where(servers: list[LocalServer], *, previous: str) -> list[int]:
    """Which servers got a request continuing `previous`, by index."""
    return [
        i for i, s in enumerate(servers) for body in sent(s)
        if body.get("previous_response_id") == previous
    ]  # fmt: skip


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_continuation_goes_to_the_endpoint_that_made_it(servers, sync, streamed) -> None:
    with pool(servers) as backend:
        response_id = await first_answer(backend, sync, streamed)
        (made,) = [i for i, s in enumerate(servers) if sent(s)]
        for _ in range(4):  # routing alone would visit every endpoint
            if streamed:
                deltas = await stream(backend, sync, ask("more", previous_response_id=response_id))
                assert joined(deltas) == "Echo: more"
            else:
                answer = await generate(
                    backend, sync, ask("more", previous_response_id=response_id)
                )
                assert answer.text == "Echo: more"
        stats = backend.endpoint_stats()
    assert where(servers, previous=response_id) == [made] * 4
    assert stats[servers[made].openai_base_url].requests == 5
    assert all(stats[s.openai_base_url].in_flight == 0 for s in servers)


async def test_a_chain_of_continuations_stays_on_its_endpoint(servers, sync) -> None:
    with pool(servers) as backend:
        response_id = await first_answer(backend, sync, streamed=False)
        (made,) = [i for i, s in enumerate(servers) if sent(s)]
        for _ in range(3):
            answer = await generate(
                backend, sync, ask("more", store=True, previous_response_id=response_id)
            )
            assert answer.response_id not in (None, response_id)
            assert where(servers, previous=response_id) == [made]
            response_id = answer.response_id


async def test_a_stateless_answer_is_not_pinned(servers, sync) -> None:
    with pool(servers[:2]) as backend:
        response_id = (await generate(backend, sync, "hello")).response_id  # store: false
        assert (
            backend._pool is not None
            and backend._pool.pinned({"previous_response_id": response_id}) is None
        )
        for _ in range(2):
            await generate(backend, sync, ask("more", previous_response_id=response_id))
    assert sorted(where(servers, previous=response_id)) == [0, 1]  # routed as usual


async def test_an_unknown_id_is_routed_as_usual(servers, sync) -> None:
    with pool(servers[:2]) as backend:
        for _ in range(4):
            await generate(backend, sync, ask("more", previous_response_id="resp_elsewhere"))
    assert sorted(where(servers, previous="resp_elsewhere")) == [0, 0, 1, 1]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_pinned_endpoint_down_fails_clearly_and_asks_no_other(
    servers, sync, sleeps, streamed
) -> None:
    clock = Clock()
    with pool(servers, sleep=sleeps, asleep=sleeps.asleep, clock=clock) as backend:
        response_id = await first_answer(backend, sync, streamed)
        (made,) = [i for i, s in enumerate(servers) if sent(s)]
        url = servers[made].openai_base_url
        servers[made].stop()
        call = stream if streamed else generate
        with pytest.raises(BackendConnectionError) as caught:
            await call(backend, sync, ask("more", previous_response_id=response_id))
        message = str(caught.value)
        assert f"previous_response_id {response_id!r} was made by {url}" in message
        assert "no other endpoint was tried" in message and "could not connect" in message
        assert len(sleeps) == 2  # max_retries=2: its own retries, on that endpoint only
        assert backend.endpoint_stats()[url].requests == 4  # the first answer, then 3 tries
        # Now it cools: the next continuation fails at once, without a request.
        with pytest.raises(BackendConnectionError, match="cooling down") as cooling:
            await call(backend, sync, ask("more", previous_response_id=response_id))
        assert url in str(cooling.value) and "no other endpoint was tried" in str(cooling.value)
        assert backend.endpoint_stats()[url].requests == 4
        # Other requests still go to the healthy endpoints.
        assert (await generate(backend, sync, "hi")).text == "Echo: hi"
    others = [s for i, s in enumerate(servers) if i != made]
    assert all(not any("previous_response_id" in body for body in sent(s)) for s in others)
    assert sum(len(sent(s)) for s in others) == 1


async def test_a_cooling_pinned_endpoint_fails_at_once(servers, sync, sleeps) -> None:
    clock = Clock()
    with pool(servers[:2], sleep=sleeps, asleep=sleeps.asleep, clock=clock) as backend:
        response_id = await first_answer(backend, sync, streamed=False)
        (made,) = [i for i, s in enumerate(servers[:2]) if sent(s)]
        other = 1 - made
        servers[made].fault(Fault(status=503))
        servers[other].fault(Fault(status=503))
        await generate(backend, sync, "hi")  # both 503 once: both cool, the third try answers
        before = len(servers[made].requests)
        with pytest.raises(BackendConnectionError, match="cooling down"):
            await generate(backend, sync, ask("more", previous_response_id=response_id))
        assert len(servers[made].requests) == before
        clock.now += 60.0  # the cooldown is over: the endpoint is asked again
        answer = await generate(backend, sync, ask("more", previous_response_id=response_id))
        assert answer.text == "Echo: more"
    assert where(servers, previous=response_id) == [made]


async def test_a_4xx_on_the_pinned_endpoint_is_its_own(servers, sync) -> None:
    with pool(servers[:2]) as backend:
        response_id = await first_answer(backend, sync, streamed=False)
        (made,) = [i for i, s in enumerate(servers[:2]) if sent(s)]
        servers[made].fault(Fault(status=400, body='{"error": {"message": "not found"}}'))
        with pytest.raises(BadRequestError) as caught:
            await generate(backend, sync, ask("more", previous_response_id=response_id))
    assert "not found" in str(caught.value) and "was made by" not in str(caught.value)
    assert where(servers, previous=response_id) == [made]  # it answered 400: no other asked
    assert len(sent(servers[1 - made])) == 0


# -- ChatMatric --------------------------------------------------------------------------


def chat(servers: list[LocalServer], **kw: Any) -> ChatMatric:
    return ChatMatric(
        backend="openai", base_url=[s.openai_base_url for s in servers], model="test-model",
        api="responses", model_kwargs={"store": True}, **kw,
    )  # fmt: skip


def test_chat_invoke_continues_on_the_same_endpoint(servers) -> None:
    model = chat(servers)
    first = model.invoke("hello")
    response_id = first.response_metadata["id"]
    (made,) = [i for i, s in enumerate(servers) if sent(s)]
    for _ in range(3):
        model.invoke([HumanMessage("more")], previous_response_id=response_id)
    assert where(servers, previous=response_id) == [made] * 3
    model.close()


def test_chat_stream_puts_the_id_on_the_last_chunk_and_continues(servers) -> None:
    model = chat(servers)
    chunks = list(model.stream("hello"))
    assert [c.response_metadata.get("id") for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    response_id = chunks[-1].response_metadata["id"]
    assert response_id.startswith("resp_")
    (made,) = [i for i, s in enumerate(servers) if sent(s)]
    total = AIMessageChunk(content="")
    for chunk in model.stream([HumanMessage("more")], previous_response_id=response_id):
        total += chunk
    assert total.content == "Echo: more"
    assert total.response_metadata["id"] not in (None, response_id)
    assert where(servers, previous=response_id) == [made]
    model.close()


async def test_chat_astream_and_ainvoke_continue_on_the_same_endpoint(servers) -> None:
    model = chat(servers)
    chunks = [chunk async for chunk in model.astream("hello")]
    response_id = chunks[-1].response_metadata["id"]
    (made,) = [i for i, s in enumerate(servers) if sent(s)]
    answer = await model.ainvoke([HumanMessage("more")], previous_response_id=response_id)
    assert answer.content == "Echo: more"
    async for _ in model.astream([HumanMessage("again")], previous_response_id=response_id):
        pass
    assert where(servers, previous=response_id) == [made] * 2
    await model.aclose()


def test_chat_pinned_endpoint_down_names_it(servers) -> None:
    model = chat(servers, max_retries=0)
    response_id = model.invoke("hello").response_metadata["id"]
    (made,) = [i for i, s in enumerate(servers) if sent(s)]
    url = servers[made].openai_base_url
    servers[made].stop()
    with pytest.raises(BackendConnectionError) as caught:
        model.invoke([HumanMessage("more")], previous_response_id=response_id)
    assert f"was made by {url}" in str(caught.value)
    assert all(len(sent(s)) == 0 for i, s in enumerate(servers) if i != made)
    model.close()
