"""`matric probe` against the loopback server (both APIs), and its pure helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from langchain_matric import cli
from langchain_matric._probe import ProbeReport, probe
from langchain_matric.backends._capabilities import model_ids, split_base_url, stream_format
from langchain_matric.chat_models import ChatMatric
from langchain_matric.errors import BackendHTTPError
from langchain_matric.testing import Fault, LocalServer


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer(embedding_dim=8) as running:
        yield running


def test_openai_probe(server: LocalServer) -> None:
    report = probe(server.openai_base_url, backend="openai", runs=2)
    assert report.api == "openai"
    assert report.openai_compatible is True
    assert report.ollama_native is None
    assert report.models == ["test-model", "test-embed"]
    assert report.model == "test-model"
    assert report.streaming == "sse"
    assert report.stream_usage is True
    assert report.embed_model == "test-embed"
    assert report.embedding_dimension == 8
    assert report.embeddings_base64 is True
    assert report.tool_calls is True
    assert report.unknown_model_served is True  # not strict: any name is answered
    assert report.runs == 2
    assert report.ttft_ms is not None
    assert report.ttft_ms >= 0


def test_ollama_probe_auto(server: LocalServer) -> None:
    report = probe(server.url, runs=1)
    assert report.api == "ollama"  # the native API answers, so auto prefers it
    assert report.openai_compatible is False  # not at the root given: under /v1
    assert any(f"--base-url {server.url}/v1" in note for note in report.notes)
    assert report.ollama_native is True
    assert report.streaming == "ndjson"
    assert report.stream_usage is True
    assert report.embedding_dimension == 8
    assert report.embeddings_base64 is None
    assert report.model in report.models


def test_auto_with_a_v1_url_means_the_openai_api(server: LocalServer) -> None:
    report = probe(server.openai_base_url, runs=1)
    assert (report.openai_compatible, report.ollama_native) == (True, True)
    assert report.api == "openai"
    assert report.streaming == "sse"


def test_openai_at_a_root_url_is_not_compatible_there(server: LocalServer) -> None:
    # ChatMatric with the root as base_url gets a 404: the probe must not say "yes".
    chat = ChatMatric(backend="openai", base_url=server.url, model="test-model", max_retries=0)
    with pytest.raises(BackendHTTPError, match="404"):
        chat.invoke("hi")
    chat.close()
    before = len(server.requests)
    report = probe(server.url + "/", backend="openai", runs=1)
    assert report.openai_compatible is False
    assert report.api is None  # nothing generated against a wrong URL
    assert (report.model, report.streaming, report.embed_model) == (None, None, None)
    [note] = report.notes
    assert f"{server.url}/models is 404 but {server.url}/v1/models answers" in note
    assert f"--base-url {server.url}/v1" in note
    assert f"base_url='{server.url}/v1'" in note
    assert [r.path for r in server.requests[before:]] == ["/models", "/v1/models"]


def test_openai_only_server_root_with_auto(server: LocalServer) -> None:
    server.fault(Fault(status=404, path="/api/tags"))  # no native Ollama API
    report = probe(server.url, runs=1)
    assert (report.openai_compatible, report.ollama_native, report.api) == (False, False, None)
    assert len(report.notes) == 1  # the hint, not "neither ... answered"
    assert f"--base-url {server.url}/v1" in report.notes[0]


def test_a_v1_url_is_checked_as_given(server: LocalServer) -> None:
    report = probe(server.openai_base_url + "/", backend="openai", runs=1, checks=())
    assert (report.api, report.openai_compatible, report.notes) == ("openai", True, [])
    assert [r.path for r in server.requests] == ["/v1/models"]


def test_unreachable_openai_still_tries_the_checks() -> None:
    # Only a 404 at a root with an API under /v1 means "wrong URL": a server without
    # /models is still probed when the user named the API.
    report = probe("http://127.0.0.1:1/v1", backend="openai", runs=1, timeout=5.0)
    assert (report.api, report.openai_compatible) == ("openai", False)


def test_strict_models_and_base64_ignored() -> None:
    with LocalServer(embedding_dim=4, strict_models=True, base64_embeddings="ignore") as server:
        report = probe(server.openai_base_url, backend="openai", model="test-model", runs=1)
    assert report.unknown_model_served is False
    assert report.embeddings_base64 is False
    assert report.embedding_dimension == 4


def test_base64_rejected() -> None:
    with LocalServer(embedding_dim=4, base64_embeddings="reject") as server:
        report = probe(server.openai_base_url, backend="openai", runs=1)
    assert report.embeddings_base64 is False
    assert report.embedding_dimension == 4


def test_nothing_answers() -> None:
    report = probe("http://127.0.0.1:1", runs=1, timeout=5.0)
    assert report.api is None
    assert report.openai_compatible is False
    assert report.ollama_native is False
    assert any("neither" in note for note in report.notes)


def test_cli_json_and_table(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["probe", "--base-url", server.openai_base_url, "--backend", "openai", "--runs", "1"]
    assert cli.main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["api"] == "openai"
    assert data["streaming"] == "sse"
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    assert "streaming" in table
    assert "sse" in table


def test_cli_root_url_for_openai(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["probe", "--base-url", server.url, "--backend", "openai", "--runs", "1"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "openai-compatible     no" in out
    assert f"to use it, pass --base-url {server.url}/v1" in out


def test_cli_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "--base-url", "http://127.0.0.1:1", "--runs", "1"]) == 1
    assert "neither" in capsys.readouterr().out


def test_helpers() -> None:
    assert stream_format("text/event-stream") == "sse"
    assert stream_format("application/x-ndjson") == "ndjson"
    assert stream_format("application/json") == "none"
    assert split_base_url("http://h:1/v1/") == ("http://h:1", "http://h:1/v1")
    assert split_base_url("http://h:1") == ("http://h:1", "http://h:1/v1")
    assert model_ids({"data": [{"id": "a"}, {"id": "b"}]}) == ["a", "b"]
    assert model_ids({"models": [{"name": "x:latest"}]}) == ["x:latest"]
    assert model_ids([]) == []
    table = ProbeReport("http://h", api="openai", tool_calls=None, notes=["n"]).to_table()
    assert "unknown" in table
    assert "note: n" in table
