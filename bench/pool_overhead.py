"""What an endpoint pool costs when it is not needed: one URL given as a string (the
plain transports) against the same URL as a one-endpoint pool, per request and per
streamed chunk, on `bench.server` (its own process).

    python -m bench.pool_overhead [--reps 7] [--requests 300] [--tokens 20000]

Run it on an older checkout too (PYTHONPATH) to compare the single-URL path before and
after: the pool case is skipped where `base_url` takes no list. Cases are interleaved,
the order rotated each repetition, after one untimed warm-up each; medians reported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from langchain_matric.backends import GenerationRequest, OpenAIBackend

HERE = Path(__file__).resolve().parent


def _server() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.server", "--latency-ms", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
    )
    assert proc.stdout is not None
    _, fast, _slow = proc.stdout.readline().split()
    return proc, int(fast)


def main() -> None:
    """Measure and print the table (µs per chunk, µs per request)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=20000)
    args = parser.parse_args()
    proc, port = _server()
    url = f"http://127.0.0.1:{port}/v1"
    backends = {"plain base_url": OpenAIBackend(url, model="bench")}
    try:
        backends["one-endpoint pool"] = OpenAIBackend([url], model="bench")
    except Exception as error:  # an older version takes no list
        print(f"(no pool case: {type(error).__name__})")
    stream_request = GenerationRequest.from_prompt("hi")
    long_model, short_model = f"bench-n{args.tokens}", "bench-n1"

    def stream_case(backend: OpenAIBackend) -> float:
        backend.model_name = long_model
        start = time.perf_counter()
        count = sum(1 for _ in backend.generate_stream(stream_request))
        assert count >= args.tokens
        return (time.perf_counter() - start) / args.tokens * 1e6

    def request_case(backend: OpenAIBackend) -> float:
        backend.model_name = short_model
        start = time.perf_counter()
        for _ in range(args.requests):
            backend.generate(stream_request)
        return (time.perf_counter() - start) / args.requests * 1e6

    cases: list[tuple[str, Callable[[], float]]] = []
    for name, backend in backends.items():
        cases.append((f"stream, µs/chunk: {name}", lambda b=backend: stream_case(b)))
        cases.append((f"request, µs/request: {name}", lambda b=backend: request_case(b)))
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    try:
        for _, fn in cases:
            fn()  # warm-up
        for rep in range(args.reps):
            order = cases[rep % len(cases) :] + cases[: rep % len(cases)]
            for name, fn in order:
                times[name].append(fn())
    finally:
        for backend in backends.values():
            backend.close()
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    for name, values in times.items():
        print(f"{name:45s} median {statistics.median(values):8.2f}  min {min(values):8.2f}")


if __name__ == "__main__":
    main()
