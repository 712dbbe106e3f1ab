"""Full replies against the local server: `n`, logprobs, cached tokens, `id`,
`system_fingerprint`, `service_tier`, response headers, and vLLM's cut tool call
(vllm#47963), through `ChatMatric` and `MatricLLM`: invoke, stream, astream and batch,
sync and async.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage

from langchain_matric import ChatMatric, MatricLLM, errors
from langchain_matric.testing import LocalServer, Reply, ToolCallSpec

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "::1"])


def chat(server: LocalServer, **kw: Any) -> ChatMatric:
    return ChatMatric(backend="openai", base_url=server.openai_base_url, model="test-model", **kw)


def llm(server: LocalServer, **kw: Any) -> MatricLLM:
    return MatricLLM(backend="openai", base_url=server.openai_base_url, model="test-model", **kw)


async def invoke(model: ChatMatric, sync: bool, text: str, **kw: Any) -> BaseMessage:
    return model.invoke(text, **kw) if sync else await model.ainvoke(text, **kw)


async def merged(model: ChatMatric, sync: bool, text: str, **kw: Any) -> AIMessageChunk:
    chunks: list[Any] = []
    if sync:
        chunks.extend(model.stream(text, **kw))
    else:
        chunks.extend([c async for c in model.astream(text, **kw)])
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert isinstance(whole, AIMessageChunk)
    return whole


def tokens(message: BaseMessage) -> list[str]:
    return [entry["token"] for entry in message.response_metadata["logprobs"]["content"]]


# -- logprobs -----------------------------------------------------------------------------


async def test_logprobs_one_entry_per_token_on_invoke(server, sync) -> None:
    model = chat(server, logprobs=True, top_logprobs=2)
    message = await invoke(model, sync, "one two three")
    assert tokens(message) == ["Echo:", " one", " two", " three"]
    first = message.response_metadata["logprobs"]["content"][0]
    assert first["logprob"] == -0.1
    assert [t["token"] for t in first["top_logprobs"]] == ["Echo:", " the"]
    sent = server.last_request.json
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)


async def test_logprobs_on_the_merged_stream_each_entry_once(server, sync) -> None:
    model = chat(server, logprobs=True)
    whole = await merged(model, sync, "one two three")
    assert whole.content == "Echo: one two three"
    assert tokens(whole) == ["Echo:", " one", " two", " three"]


async def test_logprobs_not_sent_unless_asked(server, sync) -> None:
    message = await invoke(chat(server), sync, "one two")
    assert "logprobs" not in message.response_metadata
    assert not {"logprobs", "top_logprobs", "n"} & server.last_request.json.keys()
    whole = await merged(chat(server), sync, "one two")
    assert "logprobs" not in whole.response_metadata


async def test_logprobs_on_the_responses_api(server, sync) -> None:
    model = chat(server, logprobs=True, top_logprobs=2, api="responses")
    message = await invoke(model, sync, "one two three")
    assert tokens(message) == ["Echo:", " one", " two", " three"]
    first = message.response_metadata["logprobs"]["content"][0]
    assert [t["token"] for t in first["top_logprobs"]] == ["Echo:", " the"]
    sent = server.last_request.json
    assert (sent["include"], sent["top_logprobs"]) == (["message.output_text.logprobs"], 2)
    whole = await merged(model, sync, "one two three")
    assert whole.content == "Echo: one two three"
    assert tokens(whole) == ["Echo:", " one", " two", " three"]  # each entry once
    plain = chat(server, api="responses")
    assert "logprobs" not in (await invoke(plain, sync, "one")).response_metadata
    assert not {"include", "top_logprobs"} & server.last_request.json.keys()
    assert "logprobs" not in (await merged(plain, sync, "one")).response_metadata


async def test_logprobs_per_call_kwarg(server, sync) -> None:
    message = await invoke(chat(server), sync, "one", logprobs=True)
    assert tokens(message) == ["Echo:", " one"]


async def test_llm_logprobs_in_generation_info(server, sync) -> None:
    for api in ("chat", "completions", "responses"):
        for streaming in (False, True):  # streamed: the chunks' entries merged, each once
            model = llm(server, logprobs=True, api=api, streaming=streaming)
            prompts = ["one two", "three"]
            result = model.generate(prompts) if sync else await model.agenerate(prompts)
            infos = [gens[0].generation_info or {} for gens in result.generations]
            counts = [len(i["logprobs"]["content"]) for i in infos]
            assert counts == [3, 2], (api, streaming)


# -- n ------------------------------------------------------------------------------------


async def test_n_generations_on_the_chat_api(server, sync) -> None:
    model = chat(server, n=3)
    messages = [HumanMessage("one two")]
    result = (
        model.generate([messages]) if sync else await model.agenerate([messages])
    ).generations[0]
    assert len(result) == 3
    assert {g.text for g in result} == {"Echo: one two"}
    assert server.last_request.json["n"] == 3


async def test_n_batch_on_the_llm(server, sync) -> None:
    model = llm(server, n=2)
    prompts = ["a", "b c"]
    result = model.generate(prompts) if sync else await model.agenerate(prompts)
    assert [[g.text for g in gens] for gens in result.generations] == [
        ["Echo: a", "Echo: a"],
        ["Echo: b c", "Echo: b c"],
    ]
    # the choices of one prompt share its usage, counted once
    assert result.llm_output is not None
    assert result.llm_output["token_usage"]["input_tokens"] == 3
    completions = llm(server, n=2, api="completions")
    result = completions.generate(prompts) if sync else await completions.agenerate(prompts)
    assert [len(gens) for gens in result.generations] == [2, 2]


async def test_a_server_that_refuses_n_answers_with_its_error(server, sync) -> None:
    server.options.max_n = 1
    model = chat(server, n=2)
    with pytest.raises(errors.BadRequestError, match="Only one completion choice"):
        await invoke(model, sync, "hi")
    with pytest.raises(errors.BadRequestError, match="Only one completion choice"):
        await merged(model, sync, "hi")
    # refused, not learned away: the next request asks again
    with pytest.raises(errors.BadRequestError):
        await invoke(model, sync, "hi")
    assert [r.json.get("n") for r in server.requests if r.path.endswith("completions")] == [2] * 3


async def test_n_with_the_responses_api_is_a_clear_error(server, sync) -> None:
    with pytest.raises(errors.ConfigurationError, match="api='chat'"):
        await invoke(chat(server, n=2, api="responses"), sync, "hi")
    assert server.requests == []


# -- usage, id, fingerprint, tier, headers ---------------------------------------------------


async def test_cached_tokens_on_invoke_and_stream(server, sync) -> None:
    model = chat(server)
    first = await invoke(model, sync, "a long shared prefix one")
    assert isinstance(first, AIMessage)
    assert first.usage_metadata is not None
    assert "input_token_details" not in first.usage_metadata  # nothing cached yet
    second = await invoke(model, sync, "a long shared prefix two")
    assert isinstance(second, AIMessage)
    assert second.usage_metadata is not None
    assert second.usage_metadata["input_token_details"] == {"cache_read": 4}
    whole = await merged(model, sync, "a long shared prefix three")
    assert whole.usage_metadata is not None
    assert whole.usage_metadata["input_token_details"] == {"cache_read": 4}


async def test_reasoning_tokens_on_the_chat_api(server, sync) -> None:
    server.script(Reply(text="ok", reasoning="think hard now"), Reply(text="ok", reasoning="hm"))
    message = await invoke(chat(server), sync, "hi")
    assert isinstance(message, AIMessage)
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_token_details"] == {"reasoning": 3}
    whole = await merged(chat(server), sync, "hi")
    assert whole.usage_metadata is not None
    assert whole.usage_metadata["output_token_details"] == {"reasoning": 1}


async def test_id_fingerprint_and_tier_on_invoke_and_stream(server, sync) -> None:
    message = await invoke(chat(server), sync, "hi")
    meta = message.response_metadata
    assert meta["id"].startswith("chatcmpl-")
    assert (meta["system_fingerprint"], meta["service_tier"]) == ("fp_matric", "default")
    model = chat(server)
    chunks = list(model.stream("hi")) if sync else [c async for c in model.astream("hi")]
    assert [c.response_metadata.get("id") for c in chunks][-1].startswith("chatcmpl-")
    assert all("id" not in c.response_metadata for c in chunks[:-1])
    last = chunks[-1].response_metadata
    assert (last["system_fingerprint"], last["service_tier"]) == ("fp_matric", "default")
    server.options.service_tier = None
    message = await invoke(chat(server), sync, "hi")
    assert "service_tier" not in message.response_metadata


async def test_llm_metadata_in_generation_info(server, sync) -> None:
    model = llm(server)
    result = model.generate(["hi"]) if sync else await model.agenerate(["hi"])
    info = result.generations[0][0].generation_info or {}
    assert info["id"].startswith("chatcmpl-")
    assert info["system_fingerprint"] == "fp_matric"


async def test_response_headers_only_when_asked_and_scrubbed(server, sync) -> None:
    server.options.api_key = "sk-local"
    plain = chat(server, api_key="sk-local")
    assert "headers" not in (await invoke(plain, sync, "hi")).response_metadata
    model = chat(server, api_key="sk-local", include_response_headers=True)
    headers = (await invoke(model, sync, "hi")).response_metadata["headers"]
    assert headers["x-request-id"].startswith("req_")
    assert "sk-local" not in str(headers)
    whole = await merged(model, sync, "hi")
    assert whole.response_metadata["headers"]["content-type"].startswith("text/event-stream")
    model = llm(server, api_key="sk-local", include_response_headers=True)
    result = model.generate(["hi"]) if sync else await model.agenerate(["hi"])
    assert "x-request-id" in (result.generations[0][0].generation_info or {})["headers"]


# -- vLLM's cut tool call -----------------------------------------------------------------


async def test_cut_tool_call_is_a_length_stop_with_an_invalid_call(server, sync) -> None:
    cut = Reply(tool_calls=[ToolCallSpec("get_weather", '{"city": "Os', id="call_9")])
    server.script(cut)
    message = await invoke(chat(server), sync, "weather?")
    assert isinstance(message, AIMessage)
    assert message.response_metadata["finish_reason"] == "length"
    assert message.tool_calls == []
    assert [c["args"] for c in message.invalid_tool_calls] == ['{"city": "Os']
    server.script(cut)
    whole = await merged(chat(server), sync, "weather?")
    assert whole.response_metadata["finish_reason"] == "length"
    whole_call = Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"})])
    server.script(whole_call)
    message = await invoke(chat(server), sync, "weather?")
    assert message.response_metadata["finish_reason"] == "tool_calls"
