"""The contenders: raw floors, langchain-core's own cost, the peers, and langchain-matric.

Each factory returns a ready object; the runner times only the calls. Every generation
uses the model name `bench-n<N>`, which tells the bench server how many chunks to send.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import httpx
import orjson
import pybase64

PROMPT = "hi"
SSE = "sse"
NDJSON = "ndjson"


def openai_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


def ollama_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


# -- raw floors ------------------------------------------------------------------------
# The same request our classes send, read with the client library's own line iterator
# and one json.loads per data line: what any Python client must at least spend.


def floor_request(proto: str, kind: str, model: str, port: int) -> tuple[str, dict[str, Any]]:
    """URL and body of a streamed generation, as our classes send it."""
    if proto == "openai":
        base = openai_url(port)
        body: dict[str, Any] = {"model": model, "stream": True}
        body["stream_options"] = {"include_usage": True}
        if kind == "chat":
            body["messages"] = [{"role": "user", "content": PROMPT}]
            return base + "/chat/completions", body
        body["prompt"] = PROMPT
        return base + "/completions", body
    base = ollama_url(port)
    if kind == "chat":
        return base + "/api/chat", {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
        }
    return base + "/api/generate", {"model": model, "prompt": PROMPT, "stream": True}


def responses_request(model: str, port: int) -> tuple[str, dict[str, Any]]:
    """URL and body of a streamed Responses request, as `ChatMatric(api="responses")` sends it."""
    message = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": PROMPT}],
    }
    return openai_url(port) + "/responses", {
        "model": model,
        "input": [message],
        "store": False,
        "stream": True,
    }


def _events(lines: Iterator[str], sse: bool) -> Iterator[Any]:
    if sse:
        for line in lines:
            if line.startswith("data: "):
                data = line[6:]
                if data != "[DONE]":  # read on to the end: the connection is reused
                    yield json.loads(data)
    else:
        for line in lines:
            if line:
                yield json.loads(line)


async def _aevents(lines: AsyncIterator[str], sse: bool) -> AsyncIterator[Any]:
    async for line in lines:
        if sse:
            if line.startswith("data: "):
                data = line[6:]
                if data != "[DONE]":
                    yield json.loads(data)
        elif line:
            yield json.loads(line)


class HttpxFloor:
    """httpx sync `iter_lines` + `json.loads`."""

    def __init__(self, url: str, body: dict[str, Any], sse: bool) -> None:
        self.client = httpx.Client(timeout=60)
        self.url, self.body, self.sse = url, body, sse

    def stream(self) -> Iterator[Any]:
        with self.client.stream("POST", self.url, json=self.body) as response:
            response.raise_for_status()
            yield from _events(response.iter_lines(), self.sse)

    def post(self) -> Any:
        body = {**self.body, "stream": False}
        body.pop("stream_options", None)
        response = self.client.post(self.url, json=body)
        response.raise_for_status()
        return response.json()


def responses_text(floor: HttpxFloor) -> str:
    """The text of one Responses stream read by a floor client: its `output_text` deltas."""
    return "".join(
        event["delta"]
        for event in floor.stream()
        if event.get("type") == "response.output_text.delta"
    )


class HttpxAsyncFloor:
    """httpx async `aiter_lines` + `json.loads`."""

    def __init__(self, url: str, body: dict[str, Any], sse: bool) -> None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        self.client = httpx.AsyncClient(timeout=60, limits=limits)
        self.url, self.body, self.sse = url, body, sse

    async def astream(self) -> AsyncIterator[Any]:
        async with self.client.stream("POST", self.url, json=self.body) as response:
            response.raise_for_status()
            async for event in _aevents(response.aiter_lines(), self.sse):
                yield event


class AiohttpFloor:
    """aiohttp: `async for line in response.content` + `json.loads`."""

    sessions: ClassVar[list[Any]] = []
    """Every session opened, for `close_all()` at the end of the run."""

    def __init__(self, url: str, body: dict[str, Any], sse: bool) -> None:
        self.session: Any = None
        self.url, self.body, self.sse = url, body, sse

    @classmethod
    async def close_all(cls) -> None:
        while cls.sessions:
            await cls.sessions.pop().close()

    async def astream(self) -> AsyncIterator[Any]:
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                connector=aiohttp.TCPConnector(limit=100),
            )
            self.sessions.append(self.session)
        async with self.session.post(self.url, json=self.body) as response:
            response.raise_for_status()
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if self.sse:
                    if line.startswith("data: "):
                        data = line[6:]
                        if data != "[DONE]":
                            yield json.loads(data)
                elif line:
                    yield json.loads(line)


# -- models ----------------------------------------------------------------------------


def core_model(kind: str, n: int) -> Any:
    from bench.core_models import CoreChat, CoreLLM

    return CoreChat(n=n) if kind == "chat" else CoreLLM(n=n)


def peer_model(proto: str, kind: str, model: str, port: int) -> Any:
    if proto == "openai":
        if kind == "chat":
            from langchain_openai import ChatOpenAI

            return ChatOpenAI(
                model=model,
                base_url=openai_url(port),
                api_key="sk-bench",  # type: ignore[arg-type]
                stream_usage=True,
                max_retries=0,
            )
        from langchain_openai import OpenAI

        return OpenAI(model=model, base_url=openai_url(port), api_key="sk-bench", max_retries=0)  # type: ignore[arg-type]
    if kind == "chat":
        from langchain_ollama import ChatOllama

        return ChatOllama(model=model, base_url=ollama_url(port))
    from langchain_ollama import OllamaLLM

    return OllamaLLM(model=model, base_url=ollama_url(port))


def peer_responses(model: str, port: int) -> Any:
    """`ChatOpenAI` on the Responses API (`POST /v1/responses`, streamed events)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model,
        base_url=openai_url(port),
        api_key="sk-bench",  # type: ignore[arg-type]
        use_responses_api=True,
        max_retries=0,
    )


def our_responses(model: str, port: int) -> Any:
    """`ChatMatric` on the Responses API."""
    from langchain_matric import ChatMatric

    return ChatMatric(
        backend="openai",
        api="responses",
        base_url=openai_url(port),
        model=model,
        api_key="sk-bench",
    )


def our_model(proto: str, kind: str, model: str, port: int) -> Any:
    url = openai_url(port) if proto == "openai" else ollama_url(port)
    key = {"api_key": "sk-bench"} if proto == "openai" else {}
    if kind == "chat":
        from langchain_matric import ChatMatric

        return ChatMatric(backend=proto, base_url=url, model=model, **key)
    from langchain_matric import MatricLLM

    # The completions API: the same endpoint as the OpenAI / OllamaLLM peers.
    return MatricLLM(backend=proto, base_url=url, model=model, api="completions", **key)


def peer_embeddings(proto: str, port: int) -> Any:
    if proto == "openai":
        from langchain_openai import OpenAIEmbeddings

        return OpenAIEmbeddings(
            model="bench-emb",
            base_url=openai_url(port),
            api_key="sk-bench",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,
            max_retries=0,
        )
    from langchain_ollama import OllamaEmbeddings

    return OllamaEmbeddings(model="bench-emb", base_url=ollama_url(port))


def our_embeddings(proto: str, port: int) -> Any:
    from langchain_matric import MatricEmbeddings

    url = openai_url(port) if proto == "openai" else ollama_url(port)
    key = {"api_key": "sk-bench"} if proto == "openai" else {}
    return MatricEmbeddings(backend=proto, base_url=url, model="bench-emb", **key)


class EmbedFloor:
    """httpx: batches of 1,000 texts, one after another, float JSON parsed by `json.loads`."""

    def __init__(self, port: int) -> None:
        self.url = openai_url(port) + "/embeddings"
        self.client = httpx.Client(timeout=60)
        self.aclient = httpx.AsyncClient(timeout=60)

    def embed(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), 1000):
            body = {"model": "bench-emb", "input": texts[i : i + 1000]}
            data = self.client.post(self.url, json=body).json()["data"]
            out.extend(item["embedding"] for item in data)
        return out

    async def aembed(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), 1000):
            body = {"model": "bench-emb", "input": texts[i : i + 1000]}
            data = (await self.aclient.post(self.url, json=body)).json()["data"]
            out.extend(item["embedding"] for item in data)
        return out


class EmbedOutputFloor:
    """No HTTP: what any client must do with the answers once they are in memory.

    The base64 answers for the texts are fetched once (256 texts an answer); each call only
    turns them into `list[list[float]]` by the cheapest route found: orjson, pybase64, and
    `float32_lists`, which fills lists the cycle collector has already moved out of its
    young generations (without that step the collector's walks of the new lists were ~30%
    of this floor in a paired probe). Building 10,000 x 768 Python floats is most of what
    is left.
    """

    def __init__(self, port: int, texts: list[str], batch: int = 256) -> None:
        url = openai_url(port) + "/embeddings"
        with httpx.Client(timeout=60) as client:
            self.answers = [
                client.post(
                    url,
                    json={
                        "model": "bench-emb",
                        "input": texts[i : i + batch],
                        "encoding_format": "base64",
                    },
                ).content
                for i in range(0, len(texts), batch)
            ]

    def embed(self) -> list[list[float]]:
        from langchain_matric._vectors import float32_lists

        out: list[list[float]] = []
        for answer in self.answers:
            strings = [item["embedding"] for item in orjson.loads(answer)["data"]]
            out += float32_lists([pybase64.b64decode(s, validate=True) for s in strings])
        return out

    async def aembed(self) -> list[list[float]]:
        return self.embed()


def fused_model(kind: str, url: str, body: dict[str, Any], sse: bool) -> Any:
    from bench.core_models import FusedChat, FusedLLM

    source = HttpxFloor(url, body, sse)
    return FusedChat(source=source) if kind == "chat" else FusedLLM(source=source)


class WireReader:
    """Reads a response's raw bytes through one sync transport: httpx's own or our wire.

    No decoding and no LangChain: what each transport alone costs to move the bytes of a
    streamed answer (one chunk frame per event) and of whole embedding answers.
    """

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self.transport = transport

    def read(self, url: str, body: bytes, stream: bool) -> int:
        request = httpx.Request(
            "POST",
            url,
            content=body,
            headers={"content-type": "application/json"},
            extensions={"timeout": {"connect": 60, "read": 60, "write": 60, "pool": 60}},
        )
        response = self.transport.handle_request(request)
        try:
            if stream:
                return sum(len(chunk) for chunk in response.stream)
            return len(response.read())
        finally:
            response.close()


def wire_transports() -> dict[str, httpx.BaseTransport]:
    from langchain_matric._http import HTTPConfig
    from langchain_matric._http._config import client_settings
    from langchain_matric._http._wire import WireTransport

    return {
        "floor: httpx.HTTPTransport (httpcore, h11)": httpx.HTTPTransport(),
        "ours: WireTransport (urllib3)": WireTransport(
            client_settings(HTTPConfig("http://127.0.0.1"))
        ),
    }
