"""Text integrity end to end, on both stacks and both protocols, from raw server bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from langchain_matric._http import RetryPolicy
from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.backends.openai import OpenAIBackend
from tests.faultserver import FaultServer, chunked, ok

from .conftest import generate, joined, stream

SMILE = "\U0001f600"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


@pytest.fixture(params=["openai", "ollama"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def backend(protocol: str, server: FaultServer) -> Any:
    retry = RetryPolicy(max_retries=0)
    if protocol == "openai":
        return OpenAIBackend(base_url=server.url + "/v1", api_key="k", model="m", retry=retry)
    return OllamaBackend(server.url, model="m", retry=retry)


def streamed(protocol: str, escaped: list[str]) -> bytes:
    """A chunked streaming answer, one event (or line) per escaped text, then the end."""
    if protocol == "openai":
        events = [
            b'data: {"choices": [{"index": 0, "delta": {"content": "%s"}}]}\n\n' % e.encode()
            for e in escaped
        ]
        events += [
            b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n',
            b"data: [DONE]\n\n",
        ]
        return chunked(*events, content_type="text/event-stream")
    lines = [b'{"message": {"content": "%s"}, "done": false}\n' % e.encode() for e in escaped]
    lines.append(b'{"message": {"content": ""}, "done": true, "done_reason": "stop"}\n')
    return chunked(*lines, content_type="application/x-ndjson")


def whole(protocol: str, text: bytes) -> bytes:
    """A non-streamed answer whose content is `text`, bytes as they are."""
    if protocol == "openai":
        return ok(
            b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "%s"}, '
            b'"finish_reason": "stop"}]}' % text
        )
    return ok(b'{"message": {"role": "assistant", "content": "%s"}, "done": true}' % text)


async def test_a_surrogate_pair_split_across_events_is_joined(
    server: FaultServer, sync: bool, protocol: str
) -> None:
    server.play([streamed(protocol, ["smile \\ud83d", "\\ude00 and \\udc00 alone", "\\ud800"])])
    client = backend(protocol, server)
    try:
        text = joined(await stream(client, sync, "go"))
    finally:
        client.close()
        await client.aclose()
    assert text == f"smile {SMILE} and \ufffd alone\ufffd"


async def test_a_whole_answer_with_invalid_utf8_is_replaced_not_blamed_on_base_url(
    server: FaultServer, sync: bool, protocol: str
) -> None:
    server.play([whole(protocol, b"caf\xe9 \\ud800!")])
    client = backend(protocol, server)
    try:
        answer = await generate(client, sync, "go")
    finally:
        client.close()
        await client.aclose()
    assert answer.text == "caf\ufffd \ufffd!"


async def test_sending_back_text_with_lone_surrogates_does_not_raise(
    server: FaultServer, sync: bool, protocol: str
) -> None:
    """The next turn sends the text back: lone halves go out as U+FFFD, pairs joined."""
    server.play([whole(protocol, b"fine")])
    client = backend(protocol, server)
    try:
        answer = await generate(client, sync, "half \ud800, pair \ud83d\ude00")
    finally:
        client.close()
        await client.aclose()
    assert answer.text == "fine"
    sent = json.loads(server.received[0].body)
    prompt = sent["messages"][-1]["content"] if "messages" in sent else sent["prompt"]
    assert prompt == f"half \ufffd, pair {SMILE}"
