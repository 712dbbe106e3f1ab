"""A real llama-cpp-python server on a tiny generated model, for `pytest -m live`.

The session fixture writes the model (see `_tiny_gguf.py`), starts
`python -m llama_cpp.server --config_file ...` on a free loopback port with the same GGUF
under three aliases (chat, embeddings, function calling) and stops it at the end.

Without `llama_cpp` installed the live tests skip, except on CI (`CI` set), where a
missing or broken build is a failure. Tests run one at a time: llama-cpp-python
interrupts a running stream when another request arrives.

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

import httpx
import pytest

from tests.live_tests._common import CHAT_MODEL, EMBED_MODEL, N_CTX, TOOLS_MODEL
from tests.live_tests._recording import RECORDING, live_recorder

START_TIMEOUT = 180.0


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


def _require_llama_cpp() -> None:
    missing = [m for m in ("llama_cpp", "gguf") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    reason = (
        f"{', '.join(missing)} not installed: `pip install -e '.[live]'` "
        "(llama-cpp-python compiles llama.cpp, ~5 min on 2 cores)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"live tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


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


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(url + "/v1/models", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(f"llama_cpp.server not ready after {START_TIMEOUT:.0f}s:\n{tail}")


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
        _wait_ready(process, url, log)
        yield LiveServer(url, process, log)
    finally:
        _stop(process)


@pytest.fixture
def live_base(live_server: LiveServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The OpenAI base URL; with `MATRIC_RECORD_LIVE=1` the test's traffic is recorded."""
    if not RECORDING:
        yield live_server.base_url
        return
    name = re.sub(r"[^\w-]+", "_", request.node.name).strip("_") + ".yaml"
    with live_recorder(record=True).use_cassette(name):
        yield live_server.base_url
