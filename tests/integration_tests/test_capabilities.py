"""`capabilities="auto"`: a backend probes the server once, with `matric probe`'s checks."""

from __future__ import annotations

import pytest

from langchain_matric._probe import probe
from langchain_matric.backends._capabilities import CAPABILITY_CHECKS
from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.errors import ConfigurationError
from langchain_matric.testing import Fault, LocalServer

from .conftest import embed, joined, stream


def openai_auto(server: LocalServer) -> OpenAIBackend:
    return OpenAIBackend(
        base_url=server.openai_base_url,
        api_key="sk-auto",
        model="test-model",
        embed_model="test-embed",
        capabilities="auto",
    )


def model_lists(server: LocalServer) -> int:
    return sum(1 for r in server.requests if r.path in ("/v1/models", "/api/tags"))


async def test_probe_findings_configure_the_backend(sync) -> None:
    with LocalServer(base64_embeddings="ignore") as server:
        server.fault(Fault.non_streaming(path="/v1/chat/completions"))  # the probe's stream check
        with openai_auto(server) as backend:
            assert backend.supports_streaming is True  # nothing probed before a request
            assert server.requests == []
            vectors = await embed(backend, sync, ["alpha"])
            deltas = await stream(backend, sync, "whole please")
            report = backend.capability_report
        requests = list(server.requests)
    assert report is not None
    assert (report.streaming, report.embeddings_base64) == ("none", False)
    assert backend.supports_streaming is False
    assert len(vectors[0]) == 768
    embeds = [r.json for r in requests if r.path == "/v1/embeddings"]
    assert "encoding_format" not in embeds[-1]  # base64 not asked for after the probe
    assert joined(deltas) == "Echo: whole please"
    assert requests[-1].json["stream"] is False  # streamed via one whole answer
    assert sum(1 for r in requests if r.path == "/v1/models") == 1
    assert requests[0].headers["authorization"] == "Bearer sk-auto"


async def test_streaming_server_keeps_streaming_and_is_probed_once(server, sync) -> None:
    with openai_auto(server) as backend:
        for _ in range(2):
            assert joined(await stream(backend, sync, "hi")) == "Echo: hi"
        report = backend.capability_report
    assert report is not None
    assert (report.streaming, report.stream_usage) == ("sse", True)
    assert backend.supports_streaming is True
    assert model_lists(server) == 1


async def test_ollama_auto(server, sync) -> None:
    backend = OllamaBackend(
        server.ollama_base_url, model="test-model", embed_model="test-embed", capabilities="auto"
    )
    with backend:
        assert joined(await stream(backend, sync, "hi")) == "Echo: hi"
    assert backend.capability_report is not None
    assert backend.capability_report.streaming == "ndjson"


async def test_empty_input_probes_nothing(server, sync) -> None:
    with openai_auto(server) as backend:
        assert await embed(backend, sync, []) == []
    assert server.requests == []


def test_probe_and_backend_agree(server) -> None:
    with openai_auto(server) as backend:
        backend.generate("hi")
        found = backend.capability_report
    report = probe(
        server.openai_base_url,
        backend="openai",
        model="test-model",
        embed_model="test-embed",
        checks=CAPABILITY_CHECKS,
        runs=1,
    )
    assert found is not None
    assert (found.streaming, found.stream_usage, found.embeddings_base64) == (
        report.streaming,
        report.stream_usage,
        report.embeddings_base64,
    )


def test_unreachable_server_is_probed_again_later() -> None:
    backend = OpenAIBackend(
        base_url="http://127.0.0.1:9/v1", model="m", capabilities="auto", max_retries=0
    )
    with backend, pytest.raises(Exception, match="127.0.0.1:9"):
        backend.generate("x")
    assert backend.capability_report is None


def test_bad_capabilities_value() -> None:
    with pytest.raises(ConfigurationError, match="capabilities='sometimes'"):
        OpenAIBackend(model="m", capabilities="sometimes")  # type: ignore[arg-type]
