"""`MatricLLM`: the LLM counterpart of langchain-tests' chat suites, on in-memory backends.

invoke, stream, batch concurrency, async, stop (merged, sent, enforced client-side),
callbacks, usage and metadata, the non-streaming fallback, LCEL chains.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import GenerationChunk, LLMResult
from langchain_core.prompts import PromptTemplate

from langchain_matric.backends import Usage
from langchain_matric.errors import RateLimitError
from langchain_matric.llms import MatricLLM
from tests.unit_tests._matric_fakes import PlainBackend, Reply, ScriptedBackend, echo_in

TEXT = "Once upon a time.\n\nThe end."
FULL_INFO_KEYS = {"finish_reason", "model_name", "usage"}


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.chunks: list[Any] = []
        self.ends: list[LLMResult] = []
        self.invocation_params: list[dict[str, Any]] = []

    def on_llm_start(self, serialized: Any, prompts: Any, **kwargs: Any) -> None:
        self.invocation_params.append(kwargs.get("invocation_params") or {})

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)
        self.chunks.append(kwargs.get("chunk"))

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.ends.append(response)


class AsyncRecorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.chunks: list[Any] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)
        self.chunks.append(kwargs.get("chunk"))


def scripted(text: str = TEXT, **kwargs: Any) -> ScriptedBackend:
    reply_kwargs = {
        k: kwargs.pop(k) for k in ("reasoning", "usage", "model", "piece") if k in kwargs
    }
    return ScriptedBackend([Reply(text=text, **reply_kwargs)], **kwargs)


def metadata_carriers(chunks: list[GenerationChunk]) -> list[GenerationChunk]:
    return [c for c in chunks if c.generation_info and "finish_reason" in c.generation_info]


# -- invoke -------------------------------------------------------------------------------


def test_invoke_sends_one_user_turn_with_the_options() -> None:
    backend = scripted("Paris.")
    llm = MatricLLM(backend=backend, temperature=0.0, max_tokens=20, top_p=0.5, seed=3)
    assert llm.invoke("The capital of France is") == "Paris."
    (request,) = backend.requests
    assert [(m.role, m.content) for m in request.messages] == [("user", "The capital of France is")]
    assert request.prompt is None
    opts = request.options
    assert (opts.temperature, opts.max_tokens, opts.top_p, opts.seed) == (0.0, 20, 0.5, 3)
    assert backend.stream_calls == 0  # invoke does not stream


def test_completions_api_sends_the_raw_prompt() -> None:
    backend = ScriptedBackend()
    llm = MatricLLM(backend=backend, api="completions")
    assert llm.invoke("def add(a, b):") == "echo: def add(a, b):"
    assert backend.requests[0].prompt == "def add(a, b):"
    assert list(backend.requests[0].messages) == []


def test_call_kwargs_override_fields_and_reach_the_backend() -> None:
    backend = ScriptedBackend()
    llm = MatricLLM(backend=backend, temperature=0.1, model_kwargs={"repeat_penalty": 1.1})
    llm.invoke("x", temperature=0.9, model="other", top_k=5)
    request = backend.requests[0]
    assert request.model == "other"
    assert request.options.temperature == 0.9
    assert request.options.extra == {"repeat_penalty": 1.1, "top_k": 5}


def test_generate_keeps_finish_reason_model_and_usage() -> None:
    backend = scripted("ok", usage=Usage(7, 2), reasoning="thought")
    result = MatricLLM(backend=backend).generate(["a"])
    info = result.generations[0][0].generation_info
    assert info == {
        "finish_reason": "stop",
        "model_name": "fake-model-0001",
        "usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
        "reasoning_content": "thought",
    }
    assert result.llm_output == {
        "model_name": "fake-model-0001",
        "token_usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
    }


def test_model_name_falls_back_to_the_requested_model() -> None:
    backend = scripted("ok", model=None)
    llm = MatricLLM(backend=backend, model="chosen")
    assert llm.generate(["a"]).generations[0][0].generation_info["model_name"] == "chosen"


def test_backend_errors_keep_their_type() -> None:
    class Failing(PlainBackend):
        def _generate(self, request: Any) -> Any:
            raise RateLimitError("slow down", status=429, retry_after=1.0)

    llm = MatricLLM(backend=Failing())
    with pytest.raises(RateLimitError):
        llm.invoke("x")
    with pytest.raises(RateLimitError):
        list(llm.stream("x"))


# -- batch --------------------------------------------------------------------------------


def test_batch_runs_prompts_concurrently_in_order() -> None:
    # The barrier only opens when 4 calls are in flight at once: sequential runs would fail.
    backend = ScriptedBackend(barrier=4)
    llm = MatricLLM(backend=backend, max_concurrency=4)
    prompts = [f"p{i}" for i in range(4)]
    assert llm.batch(prompts) == [f"echo: p{i}" for i in range(4)]
    assert backend.max_in_flight == 4


def test_batch_concurrency_is_bounded() -> None:
    backend = ScriptedBackend()
    llm = MatricLLM(backend=backend, max_concurrency=2)
    result = llm.generate([f"p{i}" for i in range(9)])
    assert [g[0].text for g in result.generations] == [f"echo: p{i}" for i in range(9)]
    assert 1 <= backend.max_in_flight <= 2
    assert result.llm_output["token_usage"] == {
        "input_tokens": 27,
        "output_tokens": 45,
        "total_tokens": 72,
    }
    serial = ScriptedBackend()
    MatricLLM(backend=serial, max_concurrency=1).generate(["a", "b", "c"])
    assert serial.max_in_flight == 1


async def test_abatch_runs_prompts_concurrently_in_order() -> None:
    backend = ScriptedBackend(barrier=3)
    llm = MatricLLM(backend=backend, max_concurrency=3)
    assert await llm.abatch(["a", "b", "c"]) == ["echo: a", "echo: b", "echo: c"]
    assert backend.max_in_flight == 3


async def test_agenerate_concurrency_is_bounded() -> None:
    backend = ScriptedBackend()
    result = await MatricLLM(backend=backend, max_concurrency=2).agenerate(["a", "b", "c", "d"])
    assert [g[0].text for g in result.generations] == ["echo: a", "echo: b", "echo: c", "echo: d"]
    assert backend.max_in_flight == 2


# -- stream -------------------------------------------------------------------------------


def test_stream_yields_deltas_with_callbacks_per_chunk() -> None:
    backend = scripted(piece=4)
    recorder = Recorder()
    llm = MatricLLM(backend=backend)
    pieces = list(llm.stream("go", config={"callbacks": [recorder]}))
    assert "".join(pieces) == TEXT
    assert len(pieces) > 3
    assert recorder.tokens == pieces
    assert all(isinstance(c, GenerationChunk) for c in recorder.chunks)
    carriers = metadata_carriers(recorder.chunks)
    assert carriers == [recorder.chunks[-1]]  # finish_reason, model, usage: once, at the end
    assert carriers[0].generation_info == {
        "finish_reason": "stop",
        "model_name": "fake-model-0001",
        "usage": {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
    }
    (end,) = recorder.ends
    assert end.generations[0][0].text == TEXT
    assert end.generations[0][0].generation_info["finish_reason"] == "stop"
    assert backend.closed_early == 0


def test_stream_reasoning_goes_to_generation_info() -> None:
    backend = scripted("answer", reasoning="let me think")
    chunks = list(MatricLLM(backend=backend)._stream("q"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.text == "answer"
    assert merged.generation_info["reasoning_content"] == "let me think"


async def test_astream_yields_deltas_with_async_callbacks() -> None:
    backend = scripted(piece=5)
    recorder = AsyncRecorder()
    pieces = [
        p async for p in MatricLLM(backend=backend).astream("go", config={"callbacks": [recorder]})
    ]
    assert "".join(pieces) == TEXT
    assert recorder.tokens == pieces
    assert metadata_carriers(recorder.chunks) == [recorder.chunks[-1]]


def test_streaming_true_makes_invoke_use_the_stream() -> None:
    backend = scripted()
    recorder = Recorder()
    llm = MatricLLM(backend=backend, streaming=True)
    assert llm.invoke("go", config={"callbacks": [recorder]}) == TEXT
    assert backend.stream_calls == 1
    assert "".join(recorder.tokens) == TEXT
    info = recorder.ends[0].generations[0][0].generation_info
    assert set(info) >= FULL_INFO_KEYS


async def test_streaming_true_makes_ainvoke_use_the_stream() -> None:
    backend = scripted()
    assert await MatricLLM(backend=backend, streaming=True).ainvoke("go") == TEXT
    assert backend.stream_calls == 1


def test_stream_without_final_delta_still_ends_once() -> None:
    class NoFinish(ScriptedBackend):
        def _deltas(self, request: Any) -> list[Any]:
            return [d for d in super()._deltas(request) if d.finish_reason is None]

    chunks = list(MatricLLM(backend=NoFinish([Reply(text="abc")]), stop=["zz"])._stream("q"))
    assert "".join(c.text for c in chunks) == "abc"
    assert metadata_carriers(chunks) == [chunks[-1]]
    assert chunks[-1].generation_info["finish_reason"] is None


# -- non-streaming fallback ---------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: MatricLLM(backend=PlainBackend()),
        lambda: MatricLLM(
            backend=ScriptedBackend([Reply(text="plain answer")], supports_streaming=False)
        ),
        lambda: MatricLLM(
            backend=ScriptedBackend([Reply(text="plain answer")]), disable_streaming=True
        ),
    ],
    ids=["no-stream-protocol", "supports_streaming-false", "disable_streaming"],
)
def test_fallback_streams_one_chunk_with_full_metadata(make: Any) -> None:
    llm = make()
    recorder = Recorder()
    assert list(llm.stream("q", config={"callbacks": [recorder]})) == ["plain answer"]
    (chunk,) = recorder.chunks
    assert set(chunk.generation_info) >= FULL_INFO_KEYS
    assert chunk.generation_info["finish_reason"] == "stop"
    if isinstance(llm.backend, ScriptedBackend):
        assert llm.backend.stream_calls == 0


async def test_async_fallback_streams_one_chunk() -> None:
    recorder = AsyncRecorder()
    llm = MatricLLM(backend=PlainBackend())
    assert [p async for p in llm.astream("q", config={"callbacks": [recorder]})] == ["plain answer"]
    assert set(recorder.chunks[0].generation_info) >= FULL_INFO_KEYS
    assert await llm.ainvoke("q") == "plain answer"  # via asyncio.to_thread in BaseBackend


# -- stop ---------------------------------------------------------------------------------


def test_stop_per_call_and_per_instance_are_merged_and_sent() -> None:
    backend = ScriptedBackend()
    llm = MatricLLM(backend=backend, stop=["\n\n", "END"])
    llm.invoke("x", stop=["END", "###"])
    assert backend.requests[0].options.stop == ["\n\n", "END", "###"]
    recorder = Recorder()
    llm.invoke("x", config={"callbacks": [recorder]})
    assert recorder.invocation_params[0]["model"] == "fake-model"


def test_server_honouring_stop_needs_no_cut() -> None:
    backend = scripted(honour_stop=True)
    chunks = list(MatricLLM(backend=backend)._stream("q", stop=["\n\n"]))
    assert "".join(c.text for c in chunks) == "Once upon a time."
    assert backend.closed_early == 0
    assert chunks[-1].generation_info["finish_reason"] == "stop"


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 100])
def test_stop_enforced_client_side_when_the_server_ignores_it(piece: int) -> None:
    backend = scripted(piece=piece, honour_stop=False)
    recorder = Recorder()
    llm = MatricLLM(backend=backend)
    pieces = list(llm.stream("q", stop=["\n\n"], config={"callbacks": [recorder]}))
    assert "".join(pieces) == "Once upon a time."
    assert backend.closed_early == 1  # the connection is closed at the match
    carriers = metadata_carriers(recorder.chunks)
    assert carriers == [recorder.chunks[-1]]
    assert carriers[0].generation_info["finish_reason"] == "stop"
    assert carriers[0].generation_info["model_name"] == "fake-model-0001"


def test_stop_holds_back_no_more_than_needed() -> None:
    backend = ScriptedBackend([Reply(text="abcdefghij", piece=1)], honour_stop=False)
    chunks = list(MatricLLM(backend=backend)._stream("q", stop=["xyz", "q"]))
    # Longest stop is 3 characters: 2 may be held back, so text flows two deltas behind.
    texts = [c.text for c in chunks]
    assert texts[:2] == ["", "a"] or texts[0] == "a"
    assert "".join(texts) == "abcdefghij"


def test_invoke_cuts_at_a_stop_the_server_ignored() -> None:
    backend = scripted(honour_stop=False)
    result = MatricLLM(backend=backend, stop=["time"]).generate(["q"])
    generation = result.generations[0][0]
    assert generation.text == "Once upon a "
    assert generation.generation_info["finish_reason"] == "stop"


async def test_astream_stop_closes_the_async_stream() -> None:
    backend = scripted(piece=2, honour_stop=False)
    pieces = [p async for p in MatricLLM(backend=backend).astream("q", stop=[" a "])]
    assert "".join(pieces) == "Once upon"
    assert backend.closed_early == 1


# -- chains and event loops -----------------------------------------------------------------


def test_lcel_chain_streams_and_batches() -> None:
    backend = ScriptedBackend(echo_in(2))
    chain = (
        PromptTemplate.from_template("Tell me about {topic}")
        | MatricLLM(backend=backend)
        | StrOutputParser()
    )
    streamed = list(chain.stream({"topic": "owls"}))
    assert "".join(streamed) == "echo: Tell me about owls"
    assert len(streamed) > 2
    assert chain.batch([{"topic": "a"}, {"topic": "b"}]) == [
        "echo: Tell me about a",
        "echo: Tell me about b",
    ]


async def test_lcel_chain_astream_events_show_tokens() -> None:
    chain = (
        PromptTemplate.from_template("{q}")
        | MatricLLM(backend=ScriptedBackend(echo_in(3)))
        | StrOutputParser()
    )
    events = [e async for e in chain.astream_events({"q": "hello"}, version="v2")]
    tokens = [e["data"]["chunk"].text for e in events if e["event"] == "on_llm_stream"]
    assert "".join(tokens) == "echo: hello"
    assert len(tokens) > 1


def test_same_object_under_two_asyncio_runs() -> None:
    llm = MatricLLM(backend=ScriptedBackend())

    async def once(prompt: str) -> tuple[str, str]:
        streamed = "".join([p async for p in llm.astream(prompt)])
        return await llm.ainvoke(prompt), streamed

    assert asyncio.run(once("a")) == ("echo: a", "echo: a")
    assert asyncio.run(once("b")) == ("echo: b", "echo: b")


def test_llm_type_and_ls_params() -> None:
    llm = MatricLLM(backend=ScriptedBackend(), temperature=0.3, max_tokens=9, stop=["x"])
    assert llm._llm_type == "matric-llm"
    assert llm._get_ls_params(stop=["y"]) == {
        "ls_provider": "matric",
        "ls_model_name": "fake-model",
        "ls_model_type": "llm",
        "ls_temperature": 0.3,
        "ls_max_tokens": 9,
        "ls_stop": ["x", "y"],
    }
