"""Recorded HTTP interactions, replayed with no server running.

The default run replays `cassettes/*.yaml` (record mode "none": an unrecorded request
fails). To re-record from the local server:

    MATRIC_RECORD_CASSETTES=1 ./run test tests/unit_tests/test_cassettes.py

vcrpy keeps no chunk boundaries, so a replay feeds each body to the decoders in one piece,
through the same code path as a live call; split-invariance is proven elsewhere.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import vcr

from langchain_matric._http import redact_url
from langchain_matric._http._config import is_secret_header
from langchain_matric.backends import GenerationRequest
from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.testing import LocalServer

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"
RECORDING = os.environ.get("MATRIC_RECORD_CASSETTES") == "1"
SECRET = "sk-cassette-secret-key"
REPLAY_BASE = "http://127.0.0.1:1"  # nothing listens there: a replay must not connect


def _json_body(r1: Any, r2: Any) -> None:
    b1, b2 = r1.body or b"", r2.body or b""
    assert (json.loads(b1) if b1 else None) == (json.loads(b2) if b2 else None)


def _scrub_request(request: Any) -> Any:
    """Redact credentials before recording: auth-like headers and secret query values."""
    for name in list(request.headers):
        if is_secret_header(name):
            request.headers[name] = "***"
    request.uri = redact_url(request.uri)
    return request


RECORDER = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="all" if RECORDING else "none",
    match_on=["method", "path", "query", "json_body"],
    filter_headers=["authorization", "api-key", "x-api-key"],
    before_record_request=_scrub_request,
    decode_compressed_response=True,
)
RECORDER.register_matcher("json_body", _json_body)


@pytest.fixture
def base() -> Iterator[str]:
    """The server root: a live local server while recording, an unused port in replay."""
    if not RECORDING:
        yield REPLAY_BASE
        return
    with LocalServer(embedding_dim=8) as server:
        yield server.url


@pytest.fixture
def cassette(request: pytest.FixtureRequest) -> Iterator[Any]:
    name = re.sub(r"[^\w-]+", "_", request.node.name).strip("_") + ".yaml"
    with RECORDER.use_cassette(name) as recorded:
        yield recorded
    if not RECORDING:
        assert recorded.all_played, f"{name}: not every recorded interaction was replayed"


def openai(base: str) -> OpenAIBackend:
    return OpenAIBackend(
        base_url=base + "/v1", api_key=SECRET, model="test-model", embed_model="test-embed"
    )


def ollama(base: str) -> OllamaBackend:
    return OllamaBackend(base_url=base, model="test-model", embed_model="test-embed")


BACKENDS = {"openai": openai, "ollama": ollama}


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_generate(cassette, base, kind, sync) -> None:
    request = GenerationRequest.from_prompt("recorded question", system="be brief")
    async with BACKENDS[kind](base) as backend:
        gen = backend.generate(request) if sync else await backend.agenerate(request)
    assert gen.text == "Echo: recorded question"
    assert gen.finish_reason == "stop"
    assert gen.usage is not None
    assert gen.usage.input_tokens > 0


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_stream(cassette, base, kind, sync) -> None:
    request = GenerationRequest.from_prompt("stream this answer")
    async with BACKENDS[kind](base) as backend:
        if sync:
            deltas = list(backend.generate_stream(request))
        else:
            deltas = [d async for d in backend.agenerate_stream(request)]
    assert "".join(d.text for d in deltas) == "Echo: stream this answer"
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert len([d.usage for d in deltas if d.usage]) == 1


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_embed(cassette, base, kind, sync) -> None:
    texts = ["first", "second"]
    async with BACKENDS[kind](base) as backend:
        vectors = backend.embed_texts(texts) if sync else await backend.aembed_texts(texts)
    assert [len(v) for v in vectors] == [8, 8]
    assert vectors[0] != vectors[1]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_health(cassette, base, kind) -> None:
    async with BACKENDS[kind](base) as backend:
        assert backend.health_check() is True
        assert await backend.ahealth_check() is True


def test_cassettes_hold_no_secrets() -> None:
    files = sorted(CASSETTES.glob("*.yaml"))
    assert files, "no cassettes recorded"
    for path in files:
        text = path.read_text()
        assert SECRET not in text, path.name
        assert not re.search(r"(?im)^\s*-?\s*(authorization|api-key):", text), path.name
