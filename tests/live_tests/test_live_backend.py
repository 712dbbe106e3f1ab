"""Every `OpenAIBackend` operation against llama-cpp-python's server, sync and async.

Each test takes only the base URL, so the default run replays the same function against
its cassette (`tests/unit_tests/test_live_cassettes.py`).
"""

from __future__ import annotations

import json

import pytest

from langchain_matric.backends import ChatMessage, GenerationRequest, ToolCall
from tests.live_tests._common import (
    EMBED_DIM,
    MODELS,
    TOOLS_MODEL,
    WEATHER_TOOL,
    ask,
    backend,
    options,
    stop_word,
)

pytestmark = pytest.mark.live


def _joined(deltas: list) -> str:
    return "".join(d.text for d in deltas)


async def test_generate_sync_and_async(live_base: str) -> None:
    async with backend(live_base) as b:
        first = b.generate(ask(max_tokens=16))
        second = await b.agenerate(ask(max_tokens=16))
    assert first.text
    assert first.text == second.text  # temperature 0 + seed: deterministic
    assert first.finish_reason == "length"
    assert first.usage is not None
    assert first.usage.input_tokens > 0
    assert first.usage.output_tokens == 16
    assert first.usage.total_tokens == first.usage.input_tokens + 16


async def test_stream_equals_generate(live_base: str) -> None:
    async with backend(live_base) as b:
        whole = b.generate(ask(max_tokens=20))
        deltas = list(b.generate_stream(ask(max_tokens=20)))
        adeltas = [d async for d in b.agenerate_stream(ask(max_tokens=20))]
    for got in (deltas, adeltas):
        assert _joined(got) == whole.text
        assert [d.finish_reason for d in got if d.finish_reason] == ["length"]
        assert sum(1 for d in got if d.model) == 1
        # llama-cpp-python ignores `stream_options.include_usage`: no usage, none made up.
        assert all(d.usage is None for d in got)


async def test_stop_sequences(live_base: str) -> None:
    async with backend(live_base) as b:
        free = b.generate(ask(max_tokens=32)).text
        stop = stop_word(free)
        expected = free[: free.index(stop)]
        stopped = b.generate(ask(max_tokens=32, stop=[stop]))
        streamed = [d async for d in b.agenerate_stream(ask(max_tokens=32, stop=[stop]))]
    assert stopped.text == expected
    assert stopped.finish_reason == "stop"
    assert _joined(streamed) == expected
    assert [d.finish_reason for d in streamed if d.finish_reason] == ["stop"]


async def test_max_tokens(live_base: str) -> None:
    async with backend(live_base) as b:
        short = b.generate(ask(max_tokens=3))
        longer = await b.agenerate(ask(max_tokens=12))
    assert short.usage is not None
    assert longer.usage is not None
    assert short.usage.output_tokens == 3
    assert longer.usage.output_tokens == 12
    assert longer.text.startswith(short.text)


async def test_completions_endpoint(live_base: str) -> None:
    request = GenerationRequest(prompt="Once upon a time", options=options(max_tokens=12))
    async with backend(live_base) as b:
        whole = b.generate(request)
        awhole = await b.agenerate(request)
        deltas = list(b.generate_stream(request))
        adeltas = [d async for d in b.agenerate_stream(request)]
    assert whole.text
    assert awhole.text == whole.text
    assert whole.usage is not None
    assert whole.usage.output_tokens == 12
    assert _joined(deltas) == whole.text
    assert _joined(adeltas) == whole.text


async def test_embeddings_single_and_batch(live_base: str) -> None:
    texts = ["the sky is blue", "grass is green", "a third text"]
    async with backend(live_base) as b:
        single = b.embed_texts(texts[:1])
        batch = b.embed_texts(texts)
        abatch = await b.aembed_texts(texts)
        assert b.embed_texts([]) == []
    assert len(single) == 1
    assert [len(v) for v in batch] == [EMBED_DIM] * 3
    assert batch[0] == pytest.approx(single[0], abs=1e-4)
    for got, want in zip(abatch, batch, strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    assert batch[0] != batch[1]


async def test_health_and_models(live_base: str) -> None:
    async with backend(live_base) as b:
        assert b.health_check() is True
        assert await b.ahealth_check() is True
        assert b.list_models() == MODELS
        assert await b.alist_models() == MODELS


def _tool_request(choice: str | None = "get_weather") -> GenerationRequest:
    return GenerationRequest(
        messages=[ChatMessage("user", "What is the weather in Oslo?")],
        options=options(max_tokens=96),
        tools=[WEATHER_TOOL],
        tool_choice=choice,
    )


async def test_tool_calls(live_base: str) -> None:
    async with backend(live_base, model=TOOLS_MODEL) as b:
        whole = b.generate(_tool_request())
        deltas = list(b.generate_stream(_tool_request()))
        adeltas = [d async for d in b.agenerate_stream(_tool_request())]
    assert whole.finish_reason == "tool_calls"
    [call] = whole.tool_calls
    assert call.name == "get_weather"
    args = json.loads(call.arguments)
    assert args["city"] in ("Oslo", "Paris")
    assert isinstance(args["metric"], bool)
    for got in (deltas, adeltas):
        pieces = [t for d in got for t in d.tool_call_deltas]
        # The server repeats id and name in every delta: the backend keeps the first only.
        assert [p.name for p in pieces if p.name] == ["get_weather"]
        assert len([p.id for p in pieces if p.id]) == 1
        assert json.loads("".join(p.arguments for p in pieces)) == args
        assert [d.finish_reason for d in got if d.finish_reason] == ["tool_calls"]


async def test_tool_result_round_trip(live_base: str) -> None:
    """An assistant tool-call turn (content "" not null) and a tool answer are accepted."""
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo", "metric": true}')
    request = GenerationRequest(
        messages=[
            ChatMessage("user", "What is the weather in Oslo?"),
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", "12 degrees and rain", tool_call_id="call_1", name="get_weather"),
        ],
        options=options(max_tokens=8),
        tools=[WEATHER_TOOL],
    )
    async with backend(live_base, model=TOOLS_MODEL) as b:
        answer = b.generate(request)
        aanswer = await b.agenerate(request)
    assert answer.text
    assert aanswer.text == answer.text
    assert answer.tool_calls == []


async def test_count_tokens_by_the_server(live_base: str) -> None:
    async with backend(live_base) as b:
        sync_count = b.count_tokens("Hello world, hello tokens")
        async_count = await b.acount_tokens("Hello world, hello tokens")
    assert isinstance(sync_count, int)
    assert sync_count > 0
    assert sync_count == async_count
