"""ChatMatric, MatricLLM and MatricEmbeddings against llama-cpp-python's server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langchain_matric import ChatMatric, MatricEmbeddings, MatricLLM
from tests.live_tests._common import (
    CHAT_MODEL,
    EMBED_DIM,
    EMBED_MODEL,
    SEED,
    TOOLS_MODEL,
    WEATHER_TOOL,
    stop_word,
)
from tests.live_tests._recording import API_KEY

pytestmark = pytest.mark.live

MESSAGES = [SystemMessage("Be brief."), HumanMessage("Tell me a story.")]


def _client(base: str) -> dict[str, Any]:
    return {"backend": "openai", "base_url": base, "api_key": API_KEY, "max_retries": 0}


def chat(base: str, **kwargs: Any) -> ChatMatric:
    params: dict[str, Any] = {"model": CHAT_MODEL, "temperature": 0.0, "seed": SEED}
    params.setdefault("max_tokens", 16)
    return ChatMatric(**_client(base), **{**params, **kwargs})


async def test_chat_invoke_and_stream(live_base: str) -> None:
    model = chat(live_base)
    whole = model.invoke(MESSAGES)
    awhole = await model.ainvoke(MESSAGES)
    chunks = list(model.stream(MESSAGES))
    achunks = [c async for c in model.astream(MESSAGES)]
    assert isinstance(whole, AIMessage)
    assert whole.content
    assert awhole.content == whole.content
    assert whole.usage_metadata is not None
    assert whole.usage_metadata["output_tokens"] == 16
    assert whole.response_metadata["finish_reason"] == "length"
    for got in (chunks, achunks):
        merged = got[0]
        for chunk in got[1:]:
            merged += chunk
        assert isinstance(merged, AIMessageChunk)
        assert merged.content == whole.content
        assert merged.response_metadata["finish_reason"] == "length"
        # The server ignores `stream_options`: no usage in streams, and none made up.
        assert merged.usage_metadata is None


async def test_chat_stop_and_max_tokens(live_base: str) -> None:
    free = str(chat(live_base, max_tokens=32).invoke(MESSAGES).content)
    stop = stop_word(free)
    stopped = chat(live_base, max_tokens=32, stop=[stop]).invoke(MESSAGES)
    astopped = await chat(live_base, max_tokens=32).ainvoke(MESSAGES, stop=[stop])
    short = await chat(live_base, max_tokens=4).ainvoke(MESSAGES)
    assert stopped.content == free[: free.index(stop)]
    assert astopped.content == stopped.content
    assert stopped.response_metadata["finish_reason"] == "stop"
    assert short.usage_metadata is not None
    assert short.usage_metadata["output_tokens"] == 4


async def test_chat_tool_calls(live_base: str) -> None:
    model = chat(live_base, model=TOOLS_MODEL, max_tokens=96).bind_tools(
        [WEATHER_TOOL], tool_choice="get_weather"
    )
    question = [HumanMessage("What is the weather in Oslo?")]
    whole = model.invoke(question)
    achunks = [c async for c in model.astream(question)]
    assert isinstance(whole, AIMessage)
    [call] = whole.tool_calls
    assert call["name"] == "get_weather"
    assert call["args"]["city"] in ("Oslo", "Paris")
    merged = achunks[0]
    for chunk in achunks[1:]:
        merged += chunk
    assert isinstance(merged, AIMessageChunk)
    assert [c["name"] for c in merged.tool_calls] == ["get_weather"]
    assert merged.tool_calls[0]["args"] == call["args"]
    # The tool-call turn goes back to the server with the tool's answer.
    follow_up = chat(live_base, model=TOOLS_MODEL, max_tokens=8).bind_tools([WEATHER_TOOL])
    answer = await follow_up.ainvoke(
        [*question, whole, ToolMessage(json.dumps({"temp": 12}), tool_call_id=call["id"])]
    )
    assert isinstance(answer, AIMessage)
    assert answer.content


async def test_llm_invoke_and_stream(live_base: str) -> None:
    llm = MatricLLM(
        **_client(live_base), model=CHAT_MODEL, temperature=0.0, seed=SEED, max_tokens=12
    )
    prompt = "Once upon a time"
    whole = llm.invoke(prompt)
    awhole = await llm.ainvoke(prompt)
    streamed = "".join(llm.stream(prompt))
    astreamed = "".join([t async for t in llm.astream(prompt)])
    assert whole
    assert awhole == whole
    assert streamed == whole
    assert astreamed == whole
    result = llm.generate([prompt])
    info = result.generations[0][0].generation_info or {}
    assert info.get("finish_reason") == "length"


async def test_embeddings_query_and_documents(live_base: str) -> None:
    embeddings = MatricEmbeddings(**_client(live_base), model=EMBED_MODEL)
    docs = ["the sky is blue", "grass is green"]
    vectors = embeddings.embed_documents(docs)
    avectors = await embeddings.aembed_documents(docs)
    query = embeddings.embed_query("the sky is blue")
    aquery = await embeddings.aembed_query("the sky is blue")
    assert [len(v) for v in vectors] == [EMBED_DIM, EMBED_DIM]
    for got, want in zip(avectors, vectors, strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    assert query == pytest.approx(vectors[0], abs=1e-4)
    assert aquery == pytest.approx(query, abs=1e-4)
