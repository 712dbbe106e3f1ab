"""examples/ray_rag.py runs as is: two LocalServers, a local Ray cluster on 127.0.0.1.

A subprocess with a time bound; skipped where Ray Data is not installed (`./run test`
installs the `ray` extra, so it runs in CI).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(  # checked without importing Ray in this process
    importlib.util.find_spec("ray") is None, reason='needs Ray Data: pip install -e ".[ray]"'
)

ROOT = Path(__file__).resolve().parents[2]


def test_ray_rag_example_runs() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # the driver and its actors import this checkout
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)  # never join a cluster that happens to be running
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ray_rag.py")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "stored 100 of 100 documents" in lines
    answers = [line for line in lines if " -> " in line]
    assert len(answers) == 3
    assert all("-> Echo: Context: Note " in line for line in answers), answers
    assert "Unclosed" not in done.stdout + done.stderr
