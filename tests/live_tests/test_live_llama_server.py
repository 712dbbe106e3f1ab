"""The backend and the LangChain classes against llama.cpp's own C++ `llama-server`.

The server most local users run (LM Studio and Ollama build on the same engine), here
from the same llama.cpp sources as llama-cpp-python's wheel, on the same tiny model. Each
test takes only the base URL, so the default run replays it from its cassette
(`tests/unit_tests/test_live_cassettes.py`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langchain_matric import ChatMatric, MatricEmbeddings, MatricLLM
from langchain_matric.errors import BadRequestError
from tests.live_tests._common import CHAT_MODEL, EMBED_DIM, SEED, WEATHER_TOOL, ask, backend
from tests.live_tests._recording import API_KEY

pytestmark = pytest.mark.live

MESSAGES = [SystemMessage("Be brief."), HumanMessage("Tell me a story.")]
QUESTION = [HumanMessage("What is the weather in Oslo?")]


def chat(base: str, **kwargs: Any) -> ChatMatric:
    """ChatMatric on the server, deterministic, 16 tokens unless told."""
    params: dict[str, Any] = {
        "backend": "openai",
        "base_url": base,
        "api_key": API_KEY,
        "max_retries": 0,
        "model": CHAT_MODEL,
        "temperature": 0.0,
        "seed": SEED,
        "max_tokens": 16,
    }
    return ChatMatric(**{**params, **kwargs})


def merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    return total


async def _all_four(model: ChatMatric, messages: list[BaseMessage]) -> list[AIMessage]:
    """invoke, ainvoke, and the merged stream and astream."""
    whole = model.invoke(messages)
    awhole = await model.ainvoke(messages)
    streamed = merged(list(model.stream(messages)))
    astreamed = merged([c async for c in model.astream(messages)])
    assert isinstance(whole, AIMessage)
    assert isinstance(awhole, AIMessage)
    return [whole, awhole, streamed, astreamed]


def _usage(message: AIMessage) -> dict[str, Any]:
    assert message.usage_metadata is not None
    return dict(message.usage_metadata)


async def test_llama_server_chat(cpp_base: str) -> None:
    replies = await _all_four(chat(cpp_base), MESSAGES)
    whole = replies[0]
    assert whole.content
    assert whole.response_metadata["finish_reason"] == "length"
    assert whole.response_metadata["id"].startswith("chatcmpl-")
    assert whole.response_metadata["system_fingerprint"].startswith("b")
    for reply in replies:
        assert reply.content == whole.content
        assert reply.response_metadata["finish_reason"] == "length"
        # llama-server honours `stream_options.include_usage`: streams carry usage too.
        assert _usage(reply)["output_tokens"] == 16
        assert _usage(reply)["input_tokens"] == _usage(whole)["input_tokens"]
    # The same prompt again: the slot's cache serves it, and the answer says so.
    assert _usage(replies[3])["input_token_details"]["cache_read"] > 0


async def test_llama_server_logprobs(cpp_base: str) -> None:
    replies = await _all_four(chat(cpp_base, logprobs=True, top_logprobs=2), MESSAGES)
    content = replies[0].response_metadata["logprobs"]["content"]
    assert len(content) == 16
    assert "".join(entry["token"] for entry in content) == replies[0].content
    for entry in content:
        assert entry["logprob"] <= 0.0
        assert len(entry["top_logprobs"]) == 2
    for reply in replies[1:]:  # each entry once on the merged streams
        again = reply.response_metadata["logprobs"]["content"]
        assert [e["token"] for e in again] == [e["token"] for e in content]
        # (a cached prompt prefix shifts the float sums in the last digits)
        assert [e["logprob"] for e in again] == pytest.approx(
            [e["logprob"] for e in content], abs=1e-4
        )
    # The Responses API here sends `logprobs: []` even when `include` asks: none made up.
    on_responses = chat(cpp_base, api="responses", logprobs=True)
    for reply in await _all_four(on_responses, MESSAGES):
        assert reply.content == replies[0].content
        assert "logprobs" not in reply.response_metadata
    # ... and refuses `top_logprobs`, which it passes on to its chat API without `logprobs`.
    with pytest.raises(BadRequestError, match="top_logprobs requires logprobs"):
        await chat(cpp_base, api="responses", logprobs=True, top_logprobs=2).ainvoke(MESSAGES)


async def test_llama_server_refuses_n(cpp_base: str) -> None:
    with pytest.raises(BadRequestError, match="Field 'n'"):
        chat(cpp_base, n=2).invoke(MESSAGES)
    with pytest.raises(BadRequestError, match="Field 'n'"):
        await chat(cpp_base, n=2).ainvoke(MESSAGES)


async def test_llama_server_chat_tool_call_round_trip(cpp_base: str) -> None:
    model = chat(cpp_base, max_tokens=200).bind_tools([WEATHER_TOOL], tool_choice="required")
    whole = model.invoke(QUESTION)
    streamed = merged([c async for c in model.astream(QUESTION)])
    assert isinstance(whole, AIMessage)
    [call] = whole.tool_calls
    assert call["name"] == "get_weather"
    assert call["args"]["city"] in ("Oslo", "Paris")
    assert isinstance(call["args"]["metric"], bool)
    assert whole.response_metadata["finish_reason"] == "tool_calls"
    assert [c["args"] for c in streamed.tool_calls] == [call["args"]]
    # The call and its result go back; no tools bound, since with this template's
    # unwrapped calls the server's parser allows no text while tools are offered.
    result = ToolMessage(json.dumps({"temp": 12}), tool_call_id=call["id"])
    answer = await chat(cpp_base, max_tokens=8).ainvoke([*QUESTION, whole, result])
    assert isinstance(answer, AIMessage)
    assert answer.content
    assert answer.tool_calls == []


async def test_llama_server_responses_text_and_stream(cpp_base: str) -> None:
    replies = await _all_four(chat(cpp_base, api="responses"), MESSAGES)
    whole = replies[0]
    on_chat = chat(cpp_base).invoke(MESSAGES)
    assert whole.content == on_chat.content  # one engine, one prompt, greedy
    assert whole.response_metadata["id"].startswith("resp_")
    for reply in replies:
        assert reply.content == whole.content
        assert _usage(reply)["output_tokens"] == 16
        # Cut by `max_output_tokens`, yet `status: "completed"` with no
        # `incomplete_details`: the finish reason is what the server says.
        assert reply.response_metadata["finish_reason"] == "stop"
    assert _usage(replies[3])["input_token_details"]["cache_read"] > 0


async def test_llama_server_responses_tool_call_round_trip(cpp_base: str) -> None:
    model = chat(cpp_base, api="responses", max_tokens=200).bind_tools(
        [WEATHER_TOOL], tool_choice="required"
    )
    whole = model.invoke(QUESTION)
    streamed = merged(list(model.stream(QUESTION)))
    assert isinstance(whole, AIMessage)
    [call] = whole.tool_calls
    assert call["name"] == "get_weather"
    assert call["args"]["city"] in ("Oslo", "Paris")
    assert [c["args"] for c in streamed.tool_calls] == [call["args"]]
    # The call and its result go back as `function_call` / `function_call_output` items.
    result = ToolMessage(json.dumps({"temp": 12}), tool_call_id=call["id"])
    answer = await chat(cpp_base, api="responses", max_tokens=8).ainvoke([*QUESTION, whole, result])
    assert isinstance(answer, AIMessage)
    assert answer.content
    assert answer.tool_calls == []


async def test_llama_server_llm_three_apis(cpp_base: str) -> None:
    texts = {}
    for api in ("chat", "completions", "responses"):
        llm = MatricLLM(
            backend="openai", base_url=cpp_base, api_key=API_KEY, max_retries=0,
            model=CHAT_MODEL, temperature=0.0, seed=SEED, max_tokens=12, api=api,
        )  # fmt: skip
        whole = llm.invoke("Once upon a time")
        assert whole
        assert "".join(llm.stream("Once upon a time")) == whole
        assert "".join([t async for t in llm.astream("Once upon a time")]) == whole
        texts[api] = whole
    assert texts["chat"] == texts["responses"]


async def test_llama_server_backend_stream_usage(cpp_base: str) -> None:
    async with backend(cpp_base) as b:
        whole = b.generate(ask(max_tokens=12))
        deltas = [d async for d in b.agenerate_stream(ask(max_tokens=12))]
    assert "".join(d.text for d in deltas) == whole.text
    [last] = [d for d in deltas if d.finish_reason]
    assert last.finish_reason == whole.finish_reason == "length"
    assert last.usage is not None
    assert whole.usage is not None
    assert last.usage.output_tokens == whole.usage.output_tokens == 12


async def test_llama_server_embeddings(cpp_base: str) -> None:
    embeddings = MatricEmbeddings(
        backend="openai", base_url=cpp_base, api_key=API_KEY, max_retries=0, model=CHAT_MODEL
    )
    docs = ["the sky is blue", "grass is green"]
    vectors = embeddings.embed_documents(docs)
    avectors = await embeddings.aembed_documents(docs)
    query = await embeddings.aembed_query("the sky is blue")
    assert [len(v) for v in vectors] == [EMBED_DIM, EMBED_DIM]
    assert vectors[0] != vectors[1]
    for got, want in zip(avectors, vectors, strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    assert query == pytest.approx(vectors[0], abs=1e-4)
