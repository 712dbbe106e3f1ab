"""Ray Data and endpoint pools, in one run: three groups, each written as a markdown table.

    python -m bench.ray_pool [--only a,b,c] [--reps 5] [--out FILE]

- (a) `langchain_matric.ray.embed` against Ray's own `HttpRequestProcessorConfig`
  (`ray.data.llm`, plain `ray[data]`) on the same `/v1/embeddings` server and actor
  count: rows/s; target ours / Ray's >= 2. A local cluster on 127.0.0.1.
- (b) `ChatMatric.stream` of a long answer with `base_url=[url]` (a one-endpoint pool)
  against `base_url=url`: seconds; target pool / plain <= 1.05.
- (c) two endpoints, one answering 10x slower (10 ms and 100 ms before each answer),
  8 requests in flight (8 async workers, each sending its next request when its last
  returns): median request latency, against a pool of two fast endpoints. Least
  outstanding is our pool; round robin is emulated by alternating two single-URL
  backends (no pool: each request goes to the next backend in turn). Target: least
  outstanding / two fast <= 1.3; round robin shown for contrast.

Servers are `bench.server` processes (loopback). Cases of a group are interleaved, the
order rotated every repetition, after one untimed warm-up each; ratios are paired (the
same repetition), medians over repetitions. Needs Ray only for (a).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from langchain_matric import ChatMatric, MatricEmbeddings
from langchain_matric.backends import GenerationRequest, OpenAIBackend

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def bench_server(latency_ms: float) -> Iterator[tuple[str, str]]:
    """`bench.server` in its own process: its (fast, delayed) `/v1` URLs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.server", "--latency-ms", str(latency_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        _, fast, slow = proc.stdout.readline().split()
        yield f"http://127.0.0.1:{fast}/v1", f"http://127.0.0.1:{slow}/v1"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def interleave(cases: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Every case once per repetition, the order rotated; one warm-up each first."""
    for fn in cases.values():
        fn()
    names = list(cases)
    out: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(cases[name]())
    return out


def paired(values: dict[str, list[float]], case: str, base: str) -> float:
    return statistics.median(a / b for a, b in zip(values[case], values[base], strict=True))


def table(title: str, unit: str, values: dict[str, list[float]], base: str) -> str:
    """Markdown: median, min-max and the paired ratio case / `base` of each case."""
    lines = [f"### {title}", "", f"| case | median {unit} | min-max | paired ratio to {base} |"]
    lines.append("|---|---:|---:|---:|")
    for name, v in values.items():
        ratio = paired(values, name, base)
        lines.append(
            f"| {name} | {statistics.median(v):.4g} | {min(v):.4g}-{max(v):.4g} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def group_a(reps: int, rows: int, actors: int, latencies: list[float]) -> str:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a cluster on 127.0.0.1 only
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray  # only this group needs Ray

    from langchain_matric.ray import embed

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    ray.data.DataContext.get_current().enable_progress_bars = False
    texts = [{"text": f"document {i} about topic {i % 50}"} for i in range(rows)]
    tables = []
    try:
        for latency in latencies:
            with bench_server(latency) as (fast, delayed):
                values = _embed_cases(
                    ray, embed, texts, fast if latency == 0 else delayed, actors, reps
                )
            base = list(values)[1]
            title = f"(a) Ray Data embeddings, {rows} rows, server adds {latency:g} ms, rows/s"
            tables.append(table(title, "rows/s", values, base))
    finally:
        ray.shutdown()
    return "\n\n".join(tables)


def _embed_cases(
    ray: Any, embed: Any, texts: list[dict[str, str]], url: str, actors: int, reps: int
) -> dict[str, list[float]]:
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    model = MatricEmbeddings(backend="openai", base_url=url, model="bench")
    config = HttpRequestProcessorConfig(url=f"{url}/embeddings", concurrency=actors, batch_size=64)
    processor = build_processor(
        config,
        preprocess=lambda row: {"payload": {"model": "bench", "input": row["text"]}},
        postprocess=lambda row: {
            "text": row["text"],
            "embedding": row["http_response"]["data"][0]["embedding"],
        },
    )

    def run(make: Callable[[Any], Any]) -> float:
        start = time.perf_counter()
        out = make(ray.data.from_items(texts)).materialize()
        seconds = time.perf_counter() - start
        assert out.count() == len(texts)
        assert len(out.take(1)[0]["embedding"]) == 768
        return len(texts) / seconds

    cases = {
        f"ours: langchain_matric.ray.embed ({actors} actors)": lambda: run(
            lambda ds: embed(ds, model, actors=actors, batch_size=256)
        ),
        f"Ray: HttpRequestProcessorConfig (concurrency={actors})": lambda: run(processor),
    }
    return interleave(cases, reps)


def group_b(reps: int, tokens: int) -> str:
    with bench_server(0) as (url, _):
        models = {
            "plain base_url=url": ChatMatric(backend="openai", base_url=url, model="x"),
            "one-endpoint pool base_url=[url]": ChatMatric(
                backend="openai", base_url=[url], model="x"
            ),
        }

        def run(chat: ChatMatric) -> float:
            start = time.perf_counter()
            count = sum(1 for _ in chat.stream("hi", model=f"bench-n{tokens}"))
            assert count >= tokens
            return time.perf_counter() - start

        cases = {name: (lambda c=chat: run(c)) for name, chat in models.items()}
        try:
            values = interleave(cases, reps)
        finally:
            for chat in models.values():
                chat.close()
    base = next(iter(cases))
    return table(f"(b) chat stream of {tokens} chunks, seconds", "s", values, base)


async def _latencies(pick: Callable[[], OpenAIBackend], requests: int, inflight: int) -> float:
    """Median latency (ms) of `requests` calls from `inflight` closed-loop workers."""
    request = GenerationRequest.from_prompt("hi")
    todo = iter(range(requests))
    times: list[float] = []

    async def worker() -> None:
        for _ in todo:
            start = time.perf_counter()
            await pick().agenerate(request)
            times.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return statistics.median(times) * 1000


def group_c(reps: int, requests: int, inflight: int) -> str:
    with (
        bench_server(10) as (_, fast_a),
        bench_server(10) as (_, fast_b),
        bench_server(100) as (_, slow),
    ):
        two_fast = OpenAIBackend([fast_a, fast_b], model="bench")
        least = OpenAIBackend([fast_a, slow], model="bench")
        singles = [OpenAIBackend(fast_a, model="bench"), OpenAIBackend(slow, model="bench")]
        turn = iter(range(1 << 62))

        def round_robin() -> OpenAIBackend:
            return singles[next(turn) % 2]

        picks: dict[str, Callable[[], OpenAIBackend]] = {
            "two fast endpoints (pool)": lambda: two_fast,
            "fast + 10x slow: least outstanding (pool)": lambda: least,
            "fast + 10x slow: round robin (alternating backends)": round_robin,
        }
        loop = asyncio.new_event_loop()
        cases = {
            name: (lambda p=pick: loop.run_until_complete(_latencies(p, requests, inflight)))
            for name, pick in picks.items()
        }
        try:
            values = interleave(cases, reps)
        finally:
            for backend in [two_fast, least, *singles]:
                loop.run_until_complete(backend.aclose())
            loop.close()
    base = next(iter(cases))
    title = f"(c) median latency, {inflight} in flight, {requests} requests, ms"
    return table(title, "ms", values, base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="a,b,c", help="groups, e.g. b,c")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10000, help="(a) dataset rows")
    parser.add_argument(
        "--latency-ms", default="0,5", help="(a) the server's delay per answer, one table each"
    )
    parser.add_argument("--actors", type=int, default=2, help="(a) actors / concurrency")
    parser.add_argument("--tokens", type=int, default=20000, help="(b) chunks per stream")
    parser.add_argument("--requests", type=int, default=400, help="(c) requests per case")
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args()
    only = set(args.only.split(","))
    parts = ["## Ray Data and endpoint pools (`python -m bench.ray_pool`)"]
    if "b" in only:
        parts.append(group_b(args.reps, args.tokens))
    if "c" in only:
        parts.append(group_c(args.reps, args.requests, inflight=8))
    if "a" in only:
        latencies = [float(x) for x in args.latency_ms.split(",")]
        parts.append(group_a(args.reps, args.rows, args.actors, latencies))
    text = "\n\n".join(parts) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
