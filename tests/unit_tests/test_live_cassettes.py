"""The live suite replayed from its cassettes: the real servers' bytes, no server.

Every `test_*` function of the live modules below that takes only a base URL (`live_base`
for llama-cpp-python's server, `cpp_base` for llama.cpp's `llama-server`) is run again here against `cassettes/live/<name>.yaml` (vcrpy, record mode "none": a request not
recorded fails, and so does a recorded one left unplayed), through the same backends and
adapters as the live run. vcrpy keeps no chunk boundaries: each body reaches the decoder
in one piece. Re-record after changing a live test or a request body:

    MATRIC_RECORD_LIVE=1 .venv/bin/pytest -m live tests/live_tests
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from types import ModuleType

import pytest

from tests.live_tests import (
    test_live_backend,
    test_live_errors,
    test_live_langchain,
    test_live_llama_server,
)
from tests.live_tests._recording import API_KEY, CASSETTES, REPLAY_BASE, live_recorder

LIVE_MODULES: tuple[ModuleType, ...] = (
    test_live_backend,
    test_live_errors,
    test_live_langchain,
    test_live_llama_server,
)
BASE_URL_FIXTURES = (["live_base"], ["cpp_base"])


def _replayable() -> dict[str, Callable[[str], Awaitable[None]]]:
    return {
        name: func
        for module in LIVE_MODULES
        for name, func in vars(module).items()
        if name.startswith("test_")
        and inspect.iscoroutinefunction(func)
        and list(inspect.signature(func).parameters) in BASE_URL_FIXTURES
    }


REPLAYABLE = _replayable()


@pytest.mark.parametrize("name", sorted(REPLAYABLE))
async def test_replay(name: str) -> None:
    path = CASSETTES / f"{name}.yaml"
    assert path.exists(), (
        f"no cassette {path.name}: record it with "
        "`MATRIC_RECORD_LIVE=1 .venv/bin/pytest -m live tests/live_tests`"
    )
    with live_recorder(record=False).use_cassette(path.name) as cassette:
        await REPLAYABLE[name](REPLAY_BASE)
    assert cassette.all_played, f"{path.name}: not every recorded interaction was replayed"


def test_every_cassette_has_a_test() -> None:
    stale = sorted(p.stem for p in CASSETTES.glob("*.yaml") if p.stem not in REPLAYABLE)
    assert not stale, f"cassettes without a live test (delete or re-record): {stale}"


def test_cassettes_hold_no_secrets() -> None:
    files = sorted(CASSETTES.glob("*.yaml"))
    assert files, "no live cassettes recorded"
    for path in files:
        text = path.read_text()
        assert API_KEY not in text, path.name
        assert not re.search(r"(?im)^\s*-?\s*(authorization|api-key|x-api-key):", text), path.name
