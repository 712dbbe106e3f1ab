"""Embedding values: every element a finite number, on both APIs and both stacks.

The server's raw answers come from `tests.faultserver`, so NaN and Infinity arrive as the
JavaScript literals a server writes (or as float32 bit patterns in base64).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

import pytest

from langchain_matric._http import RetryPolicy
from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.errors import EmbeddingValueError
from tests.faultserver import FaultServer, ok

from .conftest import embed

TEXTS = ["zero", "one", "two"]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def _b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def openai_floats(vectors: list[str]) -> bytes:
    """An /embeddings answer whose vectors are written as given (JSON array texts)."""
    items = ",".join(f'{{"index": {i}, "embedding": {v}}}' for i, v in enumerate(vectors))
    return f'{{"object": "list", "data": [{items}]}}'.encode()


def openai_base64(vectors: list[list[float]]) -> bytes:
    data = [{"index": i, "embedding": _b64(v)} for i, v in enumerate(vectors)]
    return json.dumps({"object": "list", "data": data}).encode()


def ollama(vectors: list[str]) -> bytes:
    return f'{{"model": "e", "embeddings": [{",".join(vectors)}]}}'.encode()


BAD = {  # the second text's vector, as the server writes it
    "NaN": "[0.5, NaN]",
    "Infinity": "[0.5, Infinity]",
    "-Infinity": "[-Infinity, 0.5]",
    "a string": '[0.5, "0.25"]',
    "null": "[0.5, null]",
}


def backend(api: str, server: FaultServer) -> OpenAIBackend | OllamaBackend:
    retry = RetryPolicy(max_retries=2)
    if api == "openai":
        return OpenAIBackend(base_url=server.url + "/v1", api_key="k", embed_model="e", retry=retry)
    return OllamaBackend(server.url, embed_model="e", retry=retry)


@pytest.mark.parametrize("api", ["openai", "ollama"])
@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
async def test_a_vector_element_that_is_not_a_finite_number_is_a_typed_error(
    server: FaultServer, sync: bool, api: str, bad: str
) -> None:
    vectors = ["[0.5, 1.0]", bad, "[1.0, 2.0]"]
    server.play([ok(openai_floats(vectors) if api == "openai" else ollama(vectors))])
    client = backend(api, server)
    try:
        with pytest.raises(EmbeddingValueError, match="embedding 1 ") as info:
            await embed(client, sync, TEXTS)
    finally:
        client.close()
        await client.aclose()
    assert info.value.index == 1 and not info.value.is_retryable
    assert len(server.received) == 1  # answered: never sent again


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
async def test_a_base64_vector_holding_nan_or_infinity_is_a_typed_error(
    server: FaultServer, sync: bool, value: float
) -> None:
    server.play([ok(openai_base64([[0.5], [1.0], [value]]))])
    client = backend("openai", server)
    try:
        with pytest.raises(EmbeddingValueError, match="embedding 2 .* at position 0") as info:
            await embed(client, sync, TEXTS)
    finally:
        client.close()
        await client.aclose()
    assert info.value.index == 2 and len(server.received) == 1


@pytest.mark.parametrize("api", ["openai", "ollama"])
async def test_finite_vectors_pass(server: FaultServer, sync: bool, api: str) -> None:
    vectors = ["[0.5, 1]", "[-2.5e-3, 0]", "[1e38, -1e38]"]
    server.play([ok(openai_floats(vectors) if api == "openai" else ollama(vectors))])
    client = backend(api, server)
    try:
        got = await embed(client, sync, TEXTS)
    finally:
        client.close()
        await client.aclose()
    assert got == [[0.5, 1.0], [-2.5e-3, 0.0], [1e38, -1e38]]
