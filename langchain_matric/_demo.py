"""`matric demo`: a streamed chain, embeddings and retrieval, and a tool call.

Runs on the configured default backend; when it cannot be reached (or lacks the model),
it says so in one line and runs against the built-in local server instead, whose model
is a deterministic stand-in (it echoes). Needs numpy for `InMemoryVectorStore`: the
`examples` extra, which `./run demo` installs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_matric._http import Timeouts
from langchain_matric.backends import InferenceBackend, create_backend
from langchain_matric.chat_models import ChatMatric
from langchain_matric.config import InferenceConfig
from langchain_matric.embeddings import MatricEmbeddings

DOCUMENTS = [
    "Matric streams Server-Sent Events from OpenAI-compatible servers.",
    "Ollama's native API streams newline-delimited JSON objects.",
    "Embeddings turn text into vectors; similar texts get nearby vectors.",
    "A retriever returns the documents closest to a question.",
    "Agents call tools, read the results and then answer.",
]
QUESTION = "How does Ollama's native API stream its answers?"
MAX_TOKENS = 1024  # reasoning models (gpt-oss) think first: leave room for the answer
STAND_IN_NOTE = (
    "About the answers: the built-in server's model is a deterministic stand-in, not a\n"
    'language model. It answers "Echo: <your last message>" ("Result: ..." after a tool\n'
    "result), calls a tool with arguments read off the question and the tool's schema, and\n"
    "embeds a text by hashing its words, so texts sharing words land close together.\n"
    "For real answers point OLLAMA_BASE at an Ollama server (OLLAMA_GEN_MODEL and\n"
    "OLLAMA_EMBED_MODEL naming models it serves), or OPENAI_BASE_URL at an OpenAI-compatible\n"
    "one with MATRIC_INFERENCE_DEFAULT_GENERATION=openai and\n"
    "MATRIC_INFERENCE_DEFAULT_EMBEDDING=openai: the demo needs both backends to answer."
)
MISSING_NUMPY = (
    "the demo's retrieval step needs numpy (langchain-core's InMemoryVectorStore): "
    "pip install 'langchain-matric[examples]', or run ./run demo from a clone"
)


@tool
def get_weather(city: str) -> str:
    """Return the current weather for a city."""
    return f"It is 21 degrees and sunny in {city}."


@dataclass
class Target:
    """Where the demo runs: backends for generation and embeddings, and a label."""

    generation: InferenceBackend
    embedding: InferenceBackend
    label: str
    stand_in: bool = False
    """True on the built-in local server, whose model echoes."""


def _reachable(kind: str, config: InferenceConfig, purpose: str) -> tuple[bool, str]:
    """Probe a backend once, quickly: is it up, and does it serve the model."""
    timeouts = Timeouts(connect=3, first_byte=10)
    probe = create_backend(kind, max_retries=0, timeouts=timeouts)
    urls = getattr(probe, "base_urls", ())
    if len(urls) > 1:  # an endpoint pool: up if any endpoint answers (one attempt each)
        probe.close()
        probe = create_backend(kind, max_retries=len(urls) - 1, timeouts=timeouts)
    model = probe.model_name if purpose == "generation" else getattr(probe, "embed_model", "")
    where = ", ".join(urls) if len(urls) > 1 else getattr(probe, "base_url", kind)
    try:
        models = probe.list_models() if hasattr(probe, "list_models") else []
    except Exception as error:  # noqa: BLE001 - any failure means "use the local server"
        return False, f"{kind} at {where} is not reachable ({type(error).__name__})"
    finally:
        probe.close()
    if models and not _served(model, models):
        return False, f"{kind} at {where} does not serve {purpose} model {model!r}"
    return True, ""


def _served(model: str, models: list[str]) -> bool:
    return model in models or f"{model}:latest" in models


@contextlib.contextmanager
def choose_target(out: TextIO) -> Iterator[Target]:
    """The configured backends, or the local server when they are unreachable."""
    config = InferenceConfig.load()
    gen_kind, emb_kind = config.default_generation, config.default_embedding
    gen_ok, why = _reachable(gen_kind, config, "generation")
    emb_ok, why_emb = _reachable(emb_kind, config, "embedding") if gen_ok else (False, "")
    if gen_ok and emb_ok:
        generation, embedding = create_backend(gen_kind), create_backend(emb_kind)
        try:
            yield Target(generation, embedding, f"{gen_kind} ({generation.model_name})")
        finally:
            generation.close()
            embedding.close()
        return
    from langchain_matric.testing import LocalServer  # noqa: PLC0415 - only for the fallback

    print(f"{why or why_emb}; using the built-in local server instead.", file=out)
    with LocalServer(embedding_dim=64) as server:
        base = server.ollama_base_url if gen_kind == "ollama" else server.openai_base_url
        local = create_backend(
            gen_kind, base_url=base, model="test-model", embed_model="test-embed"
        )
        try:
            label = f"the built-in local server at {base} ({gen_kind} protocol)"
            yield Target(local, local, label, stand_in=True)
        finally:
            local.close()


def _stream_chain(chat: ChatMatric, out: TextIO) -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer in two short sentences."), ("human", "{question}")]
    )
    chain = prompt | chat
    total: AIMessageChunk | None = None
    print("  answer: ", end="", file=out)
    for chunk in chain.stream({"question": "What is Server-Sent Events streaming?"}):
        assert isinstance(chunk, AIMessageChunk)
        print(chunk.text, end="", flush=True, file=out)
        total = chunk if total is None else total + chunk
    print(file=out)
    if (
        total is not None
        and not total.text
        and total.response_metadata.get("finish_reason") == ("length")
    ):
        print(
            f"(the model spent its {MAX_TOKENS}-token budget thinking; raise max_tokens)",
            file=out,
        )


def _retrieve_and_answer(chat: ChatMatric, embeddings: MatricEmbeddings, out: TextIO) -> None:
    store = InMemoryVectorStore(embeddings)
    store.add_texts(DOCUMENTS)
    docs = store.as_retriever(search_kwargs={"k": 2}).invoke(QUESTION)
    print(f"Embedded {len(DOCUMENTS)} documents. Question: {QUESTION}", file=out)
    for doc in docs:
        print(f"  retrieved: {doc.page_content}", file=out)
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer from this context only:\n{context}"),
            ("human", "{question}"),
        ]
    )
    chain = prompt | chat | StrOutputParser()
    context = "\n".join(d.page_content for d in docs)
    print("  answer: ", end="", file=out)
    for text in chain.stream({"context": context, "question": QUESTION}):
        print(text, end="", flush=True, file=out)
    print(file=out)


def _tool_call(chat: ChatMatric, out: TextIO) -> None:
    messages: list[BaseMessage] = [HumanMessage("What is the weather in Oslo? Use get_weather.")]
    reply = chat.bind_tools([get_weather]).invoke(messages)
    if not reply.tool_calls:
        print(f"The model answered without a tool call: {reply.text}", file=out)
        return
    messages.append(reply)
    for call in reply.tool_calls:
        result = get_weather.invoke(call["args"])
        print(f"  {call['name']}({call['args']}) -> {result}", file=out)
        messages.append(ToolMessage(result, tool_call_id=call["id"] or "", name=call["name"]))
    print(f"  answer: {chat.invoke(messages).text}", file=out)


def run_demo(out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the main job; return the process exit code.

    Example:
        >>> import io
        >>> run_demo(io.StringIO())  # doctest: +SKIP
        0
    """
    if importlib.util.find_spec("numpy") is None:
        print(f"matric demo: {MISSING_NUMPY}", file=err)
        return 1
    with choose_target(out) as target:
        print(f"== langchain-matric demo on {target.label}", file=out)
        if target.stand_in:
            print(STAND_IN_NOTE, file=out)
        chat = ChatMatric(backend=target.generation, max_tokens=MAX_TOKENS, temperature=0)
        embeddings = MatricEmbeddings(backend=target.embedding)
        sections: list[tuple[str, str, Any]] = [
            (
                "1. A chain, streamed token by token",
                "prompt | ChatMatric, read with .stream(): each piece prints as it arrives",
                lambda: _stream_chain(chat, out),
            ),
            (
                "2. Embeddings, retrieval and a grounded answer",
                "MatricEmbeddings fills an InMemoryVectorStore, its retriever picks the two\n"
                "closest documents, and the chat model answers from them",
                lambda: _retrieve_and_answer(chat, embeddings, out),
            ),
            (
                "3. A tool call",
                "ChatMatric.bind_tools([get_weather]): the model asks for the tool, the demo\n"
                "runs it and sends the result back for the final answer",
                lambda: _tool_call(chat, out),
            ),
        ]
        for title, what, step in sections:
            print(f"\n{title}\n({what})", file=out, flush=True)
            step()
        print(f"\nDone: all three steps ran on {target.label}.", file=out)
    return 0
