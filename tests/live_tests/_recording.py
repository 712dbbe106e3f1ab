"""The vcrpy set-up shared by live recording and the default run's replay.

One cassette per test in `cassettes/live/`, named after the test; credentials scrubbed;
requests matched on method, path and JSON body (never host or port: the live server's
port changes every run, and a replay runs against an address nothing listens on).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import vcr

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "live"
RECORDING = os.environ.get("MATRIC_RECORD_LIVE") == "1"
REPLAY_BASE = "http://127.0.0.1:1/v1"  # nothing listens there: a replay must not connect
API_KEY = "sk-local"


def _json_body(r1: Any, r2: Any) -> None:
    b1, b2 = r1.body or b"", r2.body or b""
    assert (json.loads(b1) if b1 else None) == (json.loads(b2) if b2 else None)


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    headers = response.get("headers") or {}
    for name in list(headers):
        if name.lower() in ("date", "set-cookie"):
            del headers[name]
    return response


def live_recorder(*, record: bool) -> vcr.VCR:
    """A recorder writing (record=True) or strictly replaying `cassettes/live/`."""
    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="all" if record else "none",
        match_on=["method", "path", "json_body"],
        filter_headers=["authorization", "api-key", "x-api-key"],
        before_record_response=_scrub_response,
        decode_compressed_response=True,
    )
    recorder.register_matcher("json_body", _json_body)
    return recorder
