"""The main job (`matric demo`): each step shown, the fallback explained, no TTY needed."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_matric import _demo
from langchain_matric._demo import STAND_IN_NOTE, run_demo
from langchain_matric.testing import LocalServer

STEPS = ("1. A chain, streamed", "2. Embeddings, retrieval", "3. A tool call")
_CONFIG_PREFIXES = ("MATRIC_", "OLLAMA_", "OPENAI_", "AZURE_")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """No configuration but an Ollama URL on a loopback port where nothing listens."""
    for name in list(os.environ):
        if name.startswith(_CONFIG_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no matric.toml
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("OLLAMA_BASE", url)
    return url


def test_fallback_names_each_step_and_explains_the_echo(unreachable: str) -> None:
    out = io.StringIO()
    assert run_demo(out) == 0
    text = out.getvalue()
    first = text.splitlines()[0]
    assert first.startswith(f"ollama at {unreachable} is not reachable")
    assert first.endswith("using the built-in local server instead.")
    assert text.count(STAND_IN_NOTE) == 1
    positions = [text.index(step) for step in STEPS]
    assert positions == sorted(positions)
    assert "  answer: Echo: What is Server-Sent Events streaming?" in text
    assert "  retrieved: Ollama's native API streams newline-delimited JSON objects." in text
    assert "get_weather({'city': 'Oslo'}) -> It is 21 degrees and sunny in Oslo." in text
    assert text.rstrip().splitlines()[-1].startswith("Done: all three steps ran on")


def test_configured_backend_is_used_without_the_stand_in_note(
    unreachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalServer() as server:
        monkeypatch.setenv("OLLAMA_BASE", server.ollama_base_url)
        monkeypatch.setenv("OLLAMA_GEN_MODEL", "test-model")
        monkeypatch.setenv("OLLAMA_EMBED_MODEL", "test-embed")
        out = io.StringIO()
        assert run_demo(out) == 0
        paths = {request.path for request in server.requests}
    text = out.getvalue()
    assert text.startswith("== langchain-matric demo on ollama (test-model)")
    assert STAND_IN_NOTE not in text
    assert all(step in text for step in STEPS)
    assert {"/api/chat", "/api/embed"} <= paths


def test_an_endpoint_pool_from_the_environment_runs_the_demo(
    unreachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OLLAMA_BASE lists a dead endpoint first: the pool is up when any endpoint answers,
    # and the calls fail over to the live ones.
    with LocalServer() as first, LocalServer() as second:
        urls = [unreachable, first.ollama_base_url, second.ollama_base_url]
        monkeypatch.setenv("OLLAMA_BASE", ",".join(urls))
        monkeypatch.setenv("OLLAMA_GEN_MODEL", "test-model")
        monkeypatch.setenv("OLLAMA_EMBED_MODEL", "test-embed")
        out = io.StringIO()
        assert run_demo(out) == 0
        served = [len(server.requests) for server in (first, second)]
    text = out.getvalue()
    assert text.startswith("== langchain-matric demo on ollama (test-model)")
    assert STAND_IN_NOTE not in text
    assert all(step in text for step in STEPS)
    assert all(count > 0 for count in served)  # both live endpoints took calls


def test_missing_numpy_is_one_clear_line(unreachable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = _demo.importlib.util.find_spec
    monkeypatch.setattr(
        _demo.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "numpy" else real_find_spec(name, *args),
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_demo(out, err) == 1
    assert out.getvalue() == ""
    assert "pip install 'langchain-matric[examples]'" in err.getvalue()


def test_runs_with_no_tty_and_no_stdin(unreachable: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "langchain_matric", "demo"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert all(step in done.stdout for step in STEPS)
    assert done.stderr == ""
