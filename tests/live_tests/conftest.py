"""Two real servers on a tiny generated model, for `pytest -m live`.

The session fixtures write the model (see `_tiny_gguf.py`) and start, each on a free
loopback port, and stop at the end:

- llama-cpp-python's server: `python -m llama_cpp.server --config_file ...` with the same
  GGUF under three aliases (chat, embeddings, function calling);
- llama.cpp's C++ `llama-server`, built from the same llama.cpp sources (see
  `_llama_server.py`; `./run test` builds it once), with `-t 1 -np 1 --jinja --embeddings
  --pooling mean` and a tools-aware chat template. One thread: two threads on two cores
  decode many times slower while anything else runs.

Without `llama_cpp` installed (or, for the second, without a built `llama-server`) the
live tests skip, except on CI (`CI` set), where a missing or broken build is a failure.
Tests run one at a time: llama-cpp-python interrupts a running stream when another
request arrives.

Re-record the cassettes that the default run replays (`cassettes/live/`):

    MATRIC_RECORD_LIVE=1 .venv/bin/pytest -m live tests/live_tests
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from tests.live_tests import _llama_server
from tests.live_tests._common import CHAT_MODEL, EMBED_MODEL, N_CTX, TOOLS_MODEL
from tests.live_tests._recording import RECORDING, live_recorder

START_TIMEOUT = 180.0
CPP_N_CTX = 2048  # the tools prompt alone is ~330 tokens of the tiny vocabulary


@dataclass(frozen=True)
class LiveServer:
    """The running server: its root URL and the OpenAI base URL (with `/v1`)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.live)


def _cannot_run(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"live tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _require_llama_cpp() -> None:
    missing = [m for m in ("llama_cpp", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        _cannot_run(
            f"{', '.join(missing)} not installed: `pip install -e '.[live]'` "
            "(llama-cpp-python compiles llama.cpp, ~5 min on 2 cores)"
        )


def _llama_server_binary() -> Path:
    try:
        found = _llama_server.find_binary()
    except _llama_server.BuildError as error:
        _cannot_run(str(error))
    if found is None:
        _cannot_run(
            "llama.cpp's llama-server is not built: `python -m tests.live_tests._llama_server` "
            "builds it once (6-13 min on 2 cores; `./run test` does it first)"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(model: Path, port: int) -> dict[str, object]:
    common = {"model": str(model), "n_ctx": N_CTX, "n_threads": 2, "seed": 1234, "verbose": False}
    return {
        "host": "127.0.0.1",
        "port": port,
        "models": [
            {**common, "model_alias": CHAT_MODEL},
            {**common, "model_alias": EMBED_MODEL, "embedding": True},
            {**common, "model_alias": TOOLS_MODEL, "chat_format": "chatml-function-calling"},
        ],
    }


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"{name} exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(f"{name} not ready after {START_TIMEOUT:.0f}s:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated GGUF file."""
    _require_llama_cpp()
    from tests.live_tests._tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("model") / "tiny-random-llama.gguf")


@pytest.fixture(scope="session")
def live_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """llama-cpp-python's server on a free loopback port, for the whole session."""
    workdir = tmp_path_factory.mktemp("llama-server")
    port = _free_port()
    config = workdir / "config.json"
    config.write_text(json.dumps(_config(tiny_model, port), indent=2))
    log = workdir / "server.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        _wait_ready(process, url + "/v1/models", log, "llama_cpp.server")
        yield LiveServer(url, process, log)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def cpp_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """llama.cpp's `llama-server` on a free loopback port, for the whole session."""
    from tests.live_tests._tiny_gguf import TOOLS_TEMPLATE

    binary = _llama_server_binary()
    workdir = tmp_path_factory.mktemp("cpp-server")
    template = workdir / "tools.jinja"
    template.write_text(TOOLS_TEMPLATE)
    port = _free_port()
    log = workdir / "server.log"
    url = f"http://127.0.0.1:{port}"
    command = [
        str(binary), "-m", str(tiny_model), "--alias", CHAT_MODEL,
        "--host", "127.0.0.1", "--port", str(port), "-c", str(CPP_N_CTX),
        "-t", "1", "-np", "1", "--jinja", "--chat-template-file", str(template),
        "--embeddings", "--pooling", "mean", "--no-webui",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        _wait_ready(process, url + "/health", log, "llama-server")
        yield LiveServer(url, process, log)
    finally:
        _stop(process)


def _recorded(base_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    if not RECORDING:
        yield base_url
        return
    name = re.sub(r"[^\w-]+", "_", request.node.name).strip("_") + ".yaml"
    with live_recorder(record=True).use_cassette(name):
        yield base_url


@pytest.fixture
def live_base(live_server: LiveServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """llama-cpp-python's OpenAI base URL; `MATRIC_RECORD_LIVE=1` records the test."""
    yield from _recorded(live_server.base_url, request)


@pytest.fixture
def cpp_base(cpp_server: LiveServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """llama-server's OpenAI base URL; `MATRIC_RECORD_LIVE=1` records the test."""
    yield from _recorded(cpp_server.base_url, request)
