"""`matric probe` against llama-cpp-python's server (not recorded: it measures time)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from langchain_matric import cli
from langchain_matric._probe import probe
from tests.live_tests._common import CHAT_MODEL, EMBED_DIM, EMBED_MODEL, MODELS
from tests.live_tests._recording import API_KEY

if TYPE_CHECKING:
    from tests.live_tests.conftest import LiveServer

pytestmark = pytest.mark.live


def test_probe_finds_the_quirks(live_server: LiveServer) -> None:
    report = probe(live_server.base_url, api_key=API_KEY, runs=3)
    assert report.api == "openai"  # auto: no Ollama native API here
    assert report.openai_compatible is True
    assert report.ollama_native is False
    assert report.models == MODELS
    assert report.model == CHAT_MODEL
    assert report.streaming == "sse"
    assert report.stream_usage is False  # `stream_options` is ignored, not rejected
    assert report.embed_model == EMBED_MODEL
    assert report.embedding_dimension == EMBED_DIM
    assert report.embeddings_base64 is False  # `encoding_format` ignored: floats come back
    assert report.tool_calls is True  # a forced tool choice is grammar-constrained
    assert report.unknown_model_served is True  # answered by the default model
    assert report.runs == 3
    assert report.ttft_ms is not None
    assert report.tokens_per_second is not None
    assert report.tokens_per_second > 0


def test_probe_cli(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["probe", "--base-url", live_server.base_url, "--backend", "openai", "--runs", "1"]
    assert cli.main([*argv, "--model", CHAT_MODEL, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["streaming"] == "sse"
    assert data["unknown_model_served"] is True


def test_probe_cli_hints_at_v1_on_the_root(
    live_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's root is no OpenAI base URL (its API is under /v1): no "yes", a hint."""
    argv = ["probe", "--base-url", live_server.url, "--backend", "openai", "--json"]
    assert cli.main(argv) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["openai_compatible"] is False
    assert data["api"] is None
    assert any(f"--base-url {live_server.base_url}" in note for note in data["notes"])
