"""`ChatMatric`: langchain-tests' unit suite plus messages, streams, tools, structured output."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from langchain_matric._messages import to_chat_messages
from langchain_matric.backends import ToolCall, Usage
from langchain_matric.chat_models import ChatMatric
from tests.unit_tests._matric_fakes import PlainBackend, Reply, ScriptedBackend, echo_in

# -- langchain-tests (pinned: langchain-tests==1.1.9) --------------------------------------


class TestChatMatricFakeBackendUnit(ChatModelUnitTests):
    """The standard unit suite with an in-memory backend instance."""

    @property
    def chat_model_class(self) -> type[ChatMatric]:
        return ChatMatric

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": ScriptedBackend(), "model": "fake-model"}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # api_key, timeout and max_retries configure a backend the adapter builds; with
        # an instance they are a configuration error (see test_adapter).
        params = super().standard_chat_model_params
        for key in ("api_key", "timeout", "max_retries"):
            params.pop(key)
        return params

    @property
    def model_override_value(self) -> str:
        return "fake-model-2"


def _transports_ready() -> bool:
    try:
        from langchain_matric._http import AsyncTransport, SyncTransport  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _transports_ready(), reason="transports not available yet")
class TestChatMatricOpenAIUnit(ChatModelUnitTests):
    """The standard unit suite with the OpenAI-compatible backend (never contacted)."""

    @property
    def chat_model_class(self) -> type[ChatMatric]:
        return ChatMatric

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "qwen2.5"}

    @property
    def model_override_value(self) -> str:
        return "llama3.2"

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"MATRIC_INFERENCE_DEFAULT_GENERATION": "openai", "OPENAI_API_KEY": "sk-env"},
            {"model": "gpt-4o-mini"},
            {"model": "gpt-4o-mini"},
        )


@pytest.mark.skipif(not _transports_ready(), reason="transports not available yet")
class TestChatMatricOllamaUnit(ChatModelUnitTests):
    """The standard unit suite with Ollama's native backend (never contacted)."""

    @property
    def chat_model_class(self) -> type[ChatMatric]:
        return ChatMatric

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": "ollama", "base_url": "http://127.0.0.1:9", "model": "llama3.2"}

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def model_override_value(self) -> str:
        return "qwen3"


# -- messages -----------------------------------------------------------------------------


def test_messages_to_backend_messages() -> None:
    converted = to_chat_messages(
        [
            SystemMessage("be brief"),
            HumanMessage("hi", name="ann"),
            AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1"}]),
            ToolMessage("2", tool_call_id="c1"),
            AIMessage("two", additional_kwargs={"reasoning_content": "not sent back"}),
            ChatMessage(role="developer", content="dev note"),
        ]
    )
    assert [(m.role, m.content) for m in converted] == [
        ("system", "be brief"),
        ("user", "hi"),
        ("assistant", ""),
        ("tool", "2"),
        ("assistant", "two"),
        ("system", "dev note"),
    ]
    assert converted[1].name == "ann"
    assert list(converted[2].tool_calls) == [ToolCall("c1", "add", '{"a": 1}')]
    assert converted[3].tool_call_id == "c1"
    assert converted[3].name == "add"  # taken from the assistant call (Ollama's tool_name)


def test_images_in_every_block_format_become_urls() -> None:
    message = HumanMessage(
        content=[
            {"type": "text", "text": "what is"},
            "in these?",
            {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
            {"type": "image_url", "image_url": "https://x/b.png"},
            {"type": "image", "url": "https://x/c.png"},
            {"type": "image", "base64": "QUJD", "mime_type": "image/jpeg"},
            {"type": "image", "source_type": "base64", "data": "REVG", "mime_type": "image/png"},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/gif", "data": "R0"},
            },
        ]
    )
    (converted,) = to_chat_messages([message])
    assert converted.content == "what is\nin these?"
    assert list(converted.images) == [
        "https://x/a.png",
        "https://x/b.png",
        "https://x/c.png",
        "data:image/jpeg;base64,QUJD",
        "data:image/png;base64,REVG",
        "data:image/gif;base64,R0",
    ]


def test_unsupported_content_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'file' is not supported"):
        to_chat_messages([HumanMessage(content=[{"type": "file", "url": "https://x/a.pdf"}])])
    with pytest.raises(ValueError, match="cannot send a FunctionMessage"):
        to_chat_messages([FunctionMessage(content="x", name="f")])
    with pytest.raises(ValueError, match="no URL"):
        to_chat_messages([HumanMessage(content=[{"type": "image"}])])


def test_v1_assistant_content_keeps_text_only() -> None:
    message = AIMessage(
        content=[
            {"type": "reasoning", "reasoning": "r"},
            {"type": "text", "text": "answer"},
            {"type": "tool_call", "name": "f", "args": {}, "id": "c9"},
        ],
        tool_calls=[{"name": "f", "args": {}, "id": "c9"}],
    )
    (converted,) = to_chat_messages([message])
    assert converted.content == "answer"
    assert list(converted.tool_calls) == [ToolCall("c9", "f", "{}")]


# -- invoke -------------------------------------------------------------------------------


REASONED = Reply(text="Paris.", reasoning="The capital is Paris.", usage=Usage(10, 4, 14, 2))


def test_invoke_metadata_usage_and_reasoning() -> None:
    chat = ChatMatric(backend=ScriptedBackend([REASONED]), temperature=0)
    message = chat.invoke([("system", "s"), ("human", "capital of France?")])
    assert message.content == "Paris."
    assert message.additional_kwargs["reasoning_content"] == "The capital is Paris."
    assert message.usage_metadata == {
        "input_tokens": 10,
        "output_tokens": 4,
        "total_tokens": 14,
        "output_token_details": {"reasoning": 2},
    }
    meta = message.response_metadata
    assert meta["model_name"] == "fake-model-0001"
    assert meta["finish_reason"] == "stop"
    assert meta["model_provider"] == "matric"
    assert meta["matric_backend"] == "ScriptedBackend"
    assert message.content_blocks[0] == {"type": "reasoning", "reasoning": "The capital is Paris."}
    assert message.content_blocks[1] == {"type": "text", "text": "Paris."}


def test_invoke_tool_calls_and_invalid_arguments() -> None:
    calls = [ToolCall("c1", "add", '{"a": 1, "b": 2}'), ToolCall("c2", "f", "{not json")]
    chat = ChatMatric(
        backend=ScriptedBackend([Reply(tool_calls=calls, finish_reason="tool_calls")])
    )
    message = chat.invoke("add")
    assert message.content == ""
    assert message.tool_calls == [
        {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}
    ]
    assert message.invalid_tool_calls[0]["id"] == "c2"
    assert message.response_metadata["finish_reason"] == "tool_calls"


def test_request_carries_tools_format_and_options() -> None:
    backend = ScriptedBackend()
    chat = ChatMatric(backend=backend, stop=["A"], seed=5)
    chat.invoke("x", stop=["B"], response_format={"type": "json_object"}, model="m9")
    request = backend.requests[0]
    assert request.options.stop == ["A", "B"]
    assert request.options.seed == 5
    assert request.response_format == {"type": "json_object"}
    assert request.model == "m9"
    assert request.tools == ()


async def test_ainvoke_uses_the_async_backend() -> None:
    backend = ScriptedBackend([REASONED])
    message = await ChatMatric(backend=backend).ainvoke("q")
    assert message.content == "Paris."
    assert message.usage_metadata["total_tokens"] == 14


# -- stream -------------------------------------------------------------------------------


TOOL_REPLY = Reply(
    text="Let me add.",
    reasoning="use the tool",
    tool_calls=[ToolCall("c1", "add", '{"a": 1, "b": 2}'), ToolCall("c2", "mul", '{"x": 3}')],
    finish_reason="tool_calls",
    usage=Usage(20, 9),
    piece=4,
)


def _check_stream(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    assert len(chunks) > 3
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    with_usage = [c for c in chunks if c.usage_metadata]
    assert with_usage == [chunks[-1]]
    assert [c for c in chunks if "finish_reason" in c.response_metadata] == [chunks[-1]]
    assert chunks[-1].chunk_position == "last"
    assert chunks[0].response_metadata.get("model_provider") == "matric"
    for index in (0, 1):
        named = [
            tc for c in chunks for tc in c.tool_call_chunks if tc["index"] == index and tc["name"]
        ]
        assert len(named) == 1  # name and id on the first delta of each index only
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == "Let me add."
    assert merged.additional_kwargs["reasoning_content"] == "use the tool"
    assert merged.tool_calls == [
        {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"},
        {"name": "mul", "args": {"x": 3}, "id": "c2", "type": "tool_call"},
    ]
    assert merged.usage_metadata == {"input_tokens": 20, "output_tokens": 9, "total_tokens": 29}
    meta = merged.response_metadata
    assert meta["finish_reason"] == "tool_calls"
    assert meta["model_name"] == "fake-model-0001"
    assert meta["model_provider"] == "matric"
    assert meta["matric_backend"] == "ScriptedBackend"
    blocks = merged.content_blocks
    assert blocks[0] == {"type": "reasoning", "reasoning": "use the tool"}
    assert {"type": "text", "text": "Let me add."} in blocks
    return merged


def test_stream_chunks_tools_usage_and_metadata_once() -> None:
    chat = ChatMatric(backend=ScriptedBackend([TOOL_REPLY]))
    _check_stream(list(chat.stream("add and multiply")))


async def test_astream_chunks_tools_usage_and_metadata_once() -> None:
    chat = ChatMatric(backend=ScriptedBackend([TOOL_REPLY]))
    _check_stream([c async for c in chat.astream("add and multiply")])


def test_invoke_and_stream_agree() -> None:
    chat = ChatMatric(backend=ScriptedBackend([TOOL_REPLY]))
    merged = _check_stream(list(chat.stream("q")))
    whole = chat.invoke("q")
    assert whole.content == merged.content
    assert whole.tool_calls == merged.tool_calls
    assert whole.additional_kwargs == merged.additional_kwargs
    assert whole.usage_metadata == merged.usage_metadata


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_streaming_true_invoke_goes_through_the_stream() -> None:
    backend = ScriptedBackend([Reply(text="one two three", piece=4)])
    recorder = TokenRecorder()
    message = ChatMatric(backend=backend, streaming=True).invoke(
        "q", config={"callbacks": [recorder]}
    )
    assert message.content == "one two three"
    assert backend.stream_calls == 1
    assert "".join(recorder.tokens) == "one two three"
    assert message.response_metadata["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "make",
    [
        lambda: ChatMatric(
            backend=PlainBackend(
                Reply(text="whole", reasoning="r", tool_calls=[ToolCall("c1", "f", "{}")])
            )
        ),
        lambda: ChatMatric(
            backend=ScriptedBackend(
                [Reply(text="whole", reasoning="r", tool_calls=[ToolCall("c1", "f", "{}")])],
                supports_streaming=False,
            )
        ),
    ],
    ids=["no-stream-protocol", "supports_streaming-false"],
)
def test_fallback_streams_one_chunk_with_full_metadata(make: Any) -> None:
    (chunk,) = list(make().stream("q"))
    assert chunk.content == "whole"
    assert chunk.additional_kwargs == {"reasoning_content": "r"}
    assert chunk.tool_calls == [{"name": "f", "args": {}, "id": "c1", "type": "tool_call"}]
    assert chunk.usage_metadata == {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}
    assert chunk.response_metadata["finish_reason"] == "stop"
    assert chunk.response_metadata["model_provider"] == "matric"
    assert chunk.chunk_position == "last"


async def test_async_fallback_streams_one_chunk() -> None:
    chat = ChatMatric(backend=PlainBackend())
    chunks = [c async for c in chat.astream("q")]
    assert [c.content for c in chunks] == ["plain answer"]
    assert chunks[0].usage_metadata is not None


def test_disable_streaming_uses_invoke() -> None:
    backend = ScriptedBackend()
    (chunk,) = list(ChatMatric(backend=backend, disable_streaming=True).stream("q"))
    assert chunk.content == "echo: q"
    assert backend.stream_calls == 0


@pytest.mark.parametrize("piece", [1, 3, 50])
def test_stream_stop_enforced_client_side(piece: int) -> None:
    backend = ScriptedBackend([Reply(text="alpha STOP beta", piece=piece)], honour_stop=False)
    chunks = list(ChatMatric(backend=backend).stream("q", stop=["STOP"]))
    assert "".join(str(c.content) for c in chunks) == "alpha "
    assert chunks[-1].response_metadata["finish_reason"] == "stop"
    assert backend.closed_early == 1


def test_invoke_cuts_at_an_ignored_stop() -> None:
    backend = ScriptedBackend([Reply(text="alpha STOP beta")], honour_stop=False)
    message = ChatMatric(backend=backend, stop=["STOP"]).invoke("q")
    assert message.content == "alpha "
    assert message.response_metadata["finish_reason"] == "stop"


def test_output_version_v1_stream_and_invoke() -> None:
    chat = ChatMatric(backend=ScriptedBackend([TOOL_REPLY]), output_version="v1")
    merged = None
    for chunk in chat.stream("q"):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    types = [b["type"] for b in merged.content]
    assert types[0] == "reasoning"
    assert "text" in types
    assert [tc["name"] for tc in merged.tool_calls] == ["add", "mul"]
    whole = chat.invoke("q")
    assert [b["type"] for b in whole.content][:2] == ["reasoning", "text"]


async def test_astream_events_show_token_events() -> None:
    chat = ChatMatric(backend=ScriptedBackend(echo_in(2)))
    events = [e async for e in chat.astream_events("hello", version="v2")]
    tokens = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert "".join(tokens) == "echo: hello"
    assert len(tokens) > 2


def test_lcel_chain_streams_and_batches() -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{q}")])
    chain = prompt | ChatMatric(backend=ScriptedBackend(echo_in(3))) | StrOutputParser()
    pieces = list(chain.stream({"q": "owls"}))
    assert "".join(pieces) == "echo: owls"
    assert len(pieces) > 1
    assert chain.batch([{"q": "a"}, {"q": "b"}]) == ["echo: a", "echo: b"]


def test_same_object_under_two_asyncio_runs() -> None:
    chat = ChatMatric(backend=ScriptedBackend())

    async def once(q: str) -> tuple[str, str]:
        streamed = "".join([str(c.content) async for c in chat.astream(q)])
        return str((await chat.ainvoke(q)).content), streamed

    assert asyncio.run(once("a")) == ("echo: a", "echo: a")
    assert asyncio.run(once("b")) == ("echo: b", "echo: b")


def test_trim_messages_counts_tokens_offline() -> None:
    from langchain_core.messages import trim_messages

    chat = ChatMatric(backend=ScriptedBackend())
    history = [SystemMessage("system prompt")] + [
        HumanMessage(f"message number {i} " * 5) for i in range(20)
    ]
    trimmed = trim_messages(
        history, max_tokens=60, token_counter=chat, strategy="last", include_system=True
    )
    assert trimmed[0] == history[0]
    assert 1 < len(trimmed) < len(history)
    assert chat.get_num_tokens_from_messages(trimmed) <= 60


# -- tools --------------------------------------------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Person(BaseModel):
    """A person."""

    name: str = Field(description="the name")
    age: int


class PersonDict(TypedDict):
    """A person."""

    name: str
    age: int


PERSON_SCHEMA = {
    "title": "Person",
    "description": "A person.",
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (None, None),
        (False, None),
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("any", "required"),
        (True, "required"),
        ("add", {"type": "function", "function": {"name": "add"}}),
        (
            {"type": "function", "function": {"name": "add"}},
            {"type": "function", "function": {"name": "add"}},
        ),
    ],
)
def test_bind_tools_maps_tool_choice(choice: Any, sent: Any) -> None:
    backend = ScriptedBackend()
    ChatMatric(backend=backend).bind_tools([add], tool_choice=choice).invoke("q")
    request = backend.requests[0]
    assert request.tool_choice == sent
    assert request.tools[0]["function"]["name"] == "add"
    assert request.tools[0]["function"]["parameters"]["required"] == ["a", "b"]


def test_bind_tools_unknown_choice_is_an_error() -> None:
    with pytest.raises(ValueError, match="tool_choice='nope'"):
        ChatMatric(backend=ScriptedBackend()).bind_tools([add], tool_choice="nope")


def test_bind_tools_accepts_every_tool_form_and_extras() -> None:
    backend = ScriptedBackend()

    def multiply(x: int, y: int) -> int:
        """Multiply two integers."""
        return x * y

    tools = [add, multiply, Person, PersonDict, PERSON_SCHEMA]
    bound = ChatMatric(backend=backend).bind_tools(tools, strict=True, parallel_tool_calls=False)
    bound.invoke("q")
    request = backend.requests[0]
    assert [t["function"]["name"] for t in request.tools] == [
        "add",
        "multiply",
        "Person",
        "PersonDict",
        "Person",
    ]
    assert request.tools[0]["function"]["strict"] is True
    assert request.options.extra == {"parallel_tool_calls": False}


# -- structured output --------------------------------------------------------------------


def _json_reply(request: Any) -> Reply:
    if request.tools:
        name = request.tools[0]["function"]["name"]
        return Reply(
            tool_calls=[ToolCall("c1", name, '{"name": "Ann", "age": 7}')],
            finish_reason="tool_calls",
        )
    return Reply(text='{"name": "Ann", "age": 7}')


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
@pytest.mark.parametrize(
    "schema", [Person, PersonDict, PERSON_SCHEMA], ids=["pydantic", "typeddict", "json"]
)
def test_with_structured_output(method: str, schema: Any) -> None:
    backend = ScriptedBackend(_json_reply)
    structured = ChatMatric(backend=backend).with_structured_output(schema, method=method)
    result = structured.invoke("who?")
    expected = Person(name="Ann", age=7) if schema is Person else {"name": "Ann", "age": 7}
    assert result == expected
    request = backend.requests[0]
    if method == "json_schema":
        fmt = request.response_format
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["name"] in ("Person", "PersonDict")
        assert set(fmt["json_schema"]["schema"]["properties"]) == {"name", "age"}
    elif method == "json_mode":
        assert request.response_format == {"type": "json_object"}
    else:
        assert request.tool_choice == {
            "type": "function",
            "function": {"name": request.tools[0]["function"]["name"]},
        }


async def test_with_structured_output_async_and_streamed() -> None:
    structured = ChatMatric(backend=ScriptedBackend(_json_reply)).with_structured_output(Person)
    assert await structured.ainvoke("who?") == Person(name="Ann", age=7)
    streamed = list(
        ChatMatric(backend=ScriptedBackend(_json_reply))
        .with_structured_output(PERSON_SCHEMA, method="json_schema")
        .stream("who?")
    )
    assert streamed[-1] == {"name": "Ann", "age": 7}


def test_with_structured_output_strict_and_schema_without_title() -> None:
    backend = ScriptedBackend(_json_reply)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    ChatMatric(backend=backend).with_structured_output(schema, strict=True).invoke("q")
    spec = backend.requests[0].response_format["json_schema"]
    assert spec["name"] == "output"
    assert spec["strict"] is True


def test_with_structured_output_include_raw() -> None:
    good = ChatMatric(backend=ScriptedBackend(_json_reply)).with_structured_output(
        Person, include_raw=True
    )
    out = good.invoke("q")
    assert out["parsed"] == Person(name="Ann", age=7)
    assert out["parsing_error"] is None
    assert isinstance(out["raw"], AIMessage)
    bad = ChatMatric(backend=ScriptedBackend([Reply(text="not json")])).with_structured_output(
        Person, include_raw=True
    )
    out = bad.invoke("q")
    assert out["parsed"] is None
    assert out["parsing_error"] is not None
    assert out["raw"].content == "not json"


def test_with_structured_output_rejects_unknown_arguments() -> None:
    chat = ChatMatric(backend=ScriptedBackend())
    with pytest.raises(ValueError, match="method='xml'"):
        chat.with_structured_output(Person, method="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported arguments"):
        chat.with_structured_output(Person, flavour="x")


def test_ollama_function_calling_does_not_force_a_choice() -> None:
    if not _transports_ready():
        pytest.skip("transports not available yet")
    chat = ChatMatric(backend="ollama", base_url="http://127.0.0.1:9", model="m")
    binding = chat.with_structured_output(Person, method="function_calling").first  # type: ignore[attr-defined]
    assert "tool_choice" not in binding.kwargs
    chat.close()


def test_parsed_arguments_are_json() -> None:
    args = json.loads(
        to_chat_messages(
            [AIMessage("", tool_calls=[{"name": "f", "args": {"q": "ü"}, "id": "1"}])]
        )[0]
        .tool_calls[0]
        .arguments
    )
    assert args == {"q": "ü"}
