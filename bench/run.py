# ruff: noqa: E501  (report tables are long f-strings)
"""Run the whole benchmark and write `bench/RESULTS.md`.

`python -m bench [--quick] [--reps N] [--only a,r,b,b2,c,d,e,f,g,h] [--out PATH]`

Every metric group is measured interleaved: each repetition runs every case of the group
once, in an order rotated by one each repetition, after one untimed warm-up of each. The
report gives the median, min-max and the *paired* ratio (case / floor of the same
repetition, median over repetitions). The bench server runs in its own process; its CPU
share (server CPU seconds / case wall seconds, worst repetition) is reported per case.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import clients as C  # noqa: N812

HERE = Path(__file__).resolve().parent


# -- the server ------------------------------------------------------------------------


class Server:
    def __init__(self, latency_ms: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.server", "--latency-ms", str(latency_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE.parent,
        )
        assert self.proc.stdout is not None
        _, fast, slow = self.proc.stdout.readline().split()
        self.fast, self.slow = int(fast), int(slow)
        self.ps = psutil.Process(self.proc.pid)

    def requests(self) -> dict[str, int]:
        """Requests the server has answered, by "POST <path> stream|whole"."""
        url = f"http://127.0.0.1:{self.fast}/bench/requests"
        with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
            counts: dict[str, int] = json.loads(response.read())
        return counts

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


# -- measurement -----------------------------------------------------------------------


@dataclass
class Case:
    name: str
    fn: Callable[[], Any]
    """Sync callable or coroutine function; returns a float to report instead of wall time."""
    role: str = "ours"
    warm: Callable[[], Any] | None = None
    """Run for the untimed warm-up instead of `fn`: the same work, checked (see `checked`)."""
    meta: dict[str, Any] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)


@dataclass
class Group:
    title: str
    cases: list[Case]
    floor: str
    unit: str = "s"
    note: str = ""

    def case(self, name: str) -> Case:
        return next(c for c in self.cases if c.name == name)


class Runner:
    def __init__(self, server: Server, reps: int) -> None:
        self.server = server
        self.reps = reps
        self.loop = asyncio.new_event_loop()

    def _call(self, fn: Callable[[], Any]) -> Any:
        result = fn()
        if asyncio.iscoroutine(result):
            result = self.loop.run_until_complete(result)
        return result

    def measure(self, group: Group) -> Group:
        print(f"[bench] {time.strftime('%H:%M:%S')} {group.title}", flush=True)
        for case in group.cases:  # warm-up: imports, pools, server caches
            self._call(case.warm or case.fn)
        for rep in range(self.reps):
            shift = rep % len(group.cases)
            for case in group.cases[shift:] + group.cases[:shift]:
                gc.collect()
                cpu0 = self.server.cpu()
                start = time.perf_counter()
                result = self._call(case.fn)
                wall = time.perf_counter() - start
                case.server_cpu.append((self.server.cpu() - cpu0) / wall)
                case.times.append(result if isinstance(result, float) else wall)
        return group

    def close(self) -> None:
        """Finalise the loop's async generators (aiohttp sessions close there), then the loop."""
        self.loop.run_until_complete(C.AiohttpFloor.close_all())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def med(values: list[float]) -> float:
    return statistics.median(values)


def paired(a: Case, b: Case) -> float:
    return med([x / y for x, y in zip(a.times, b.times, strict=True)])


def paired_sum(a: Case, *bs: Case) -> float:
    return med([x / sum(ys) for x, *ys in zip(a.times, *(b.times for b in bs), strict=True)])


def paired_diff(a: Case, b: Case) -> float:
    return med([x - y for x, y in zip(a.times, b.times, strict=True)])


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value * 1e3:.3f} ms"
    if unit == "texts/s":
        return f"{value:,.0f}"
    return f"{value:.3f} s"


# -- workloads -------------------------------------------------------------------------


def consume(model: Any) -> Callable[[], int]:
    def run() -> int:
        n = 0
        for _ in model.stream(C.PROMPT):
            n += 1
        return n

    return run


def aconsume(model: Any) -> Callable[[], Any]:
    async def run() -> int:
        n = 0
        async for _ in model.astream(C.PROMPT):
            n += 1
        return n

    return run


def floor_consume(floor: Any) -> Callable[[], Any]:
    if hasattr(floor, "stream"):

        def run() -> int:
            return sum(1 for _ in floor.stream())

        return run

    async def arun() -> int:
        n = 0
        async for _ in floor.astream():
            n += 1
        return n

    return arun


def concurrent(make_run: Callable[[], Any], width: int) -> Callable[[], Any]:
    async def run() -> None:
        await asyncio.gather(*(make_run() for _ in range(width)))

    return run


def ttft(first: Callable[[], Any], requests: int) -> Callable[[], float]:
    """Median seconds to the first chunk over `requests` sequential requests."""

    def run() -> float:
        samples = []
        for _ in range(requests):
            start = time.perf_counter()
            iterator = first()
            next(iterator)
            samples.append(time.perf_counter() - start)
            for _ in iterator:
                pass
        return med(samples)

    return run


def latency(call: Callable[[], Any], requests: int) -> Callable[[], float]:
    def run() -> float:
        samples = []
        for _ in range(requests):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return med(samples)

    return run


# -- metric groups ---------------------------------------------------------------------

PEER = {("openai", "llm"): "OpenAI", ("openai", "chat"): "ChatOpenAI"}
PEER |= {("ollama", "llm"): "OllamaLLM", ("ollama", "chat"): "ChatOllama"}
OURS = {"llm": "MatricLLM", "chat": "ChatMatric"}


def stream_groups(srv: Server, n: int) -> list[Group]:
    model = f"bench-n{n}"
    groups = []
    for kind in ("llm", "chat"):
        for proto in ("openai", "ollama"):
            url, body = C.floor_request(proto, kind, model, srv.fast)
            sse = proto == "openai"
            peer = C.peer_model(proto, kind, model, srv.fast)
            ours = C.our_model(proto, kind, model, srv.fast)
            core = C.core_model(kind, n)
            groups.append(
                Group(
                    f"(a) {kind} .stream(), {proto}, {n:,} chunks, sync",
                    [
                        Case(
                            "floor: httpx iter_lines",
                            floor_consume(C.HttpxFloor(url, body, sse)),
                            "floor",
                        ),
                        Case(f"core {kind} cost (no I/O)", consume(core), "core"),
                        Case(
                            "fused: floor + core in one loop",
                            consume(C.fused_model(kind, url, body, sse)),
                            "core",
                        ),
                        Case(f"peer: {PEER[proto, kind]}", consume(peer), "peer"),
                        Case(f"ours: {OURS[kind]}", consume(ours), "ours"),
                    ],
                    floor="floor: httpx iter_lines",
                    note=f"{kind}|{proto}|sync",
                )
            )
            groups.append(
                Group(
                    f"(a) {kind} .astream(), {proto}, {n:,} chunks, async",
                    [
                        Case(
                            "floor: httpx async aiter_lines",
                            floor_consume(C.HttpxAsyncFloor(url, body, sse)),
                            "floor",
                        ),
                        Case(
                            "floor: aiohttp", floor_consume(C.AiohttpFloor(url, body, sse)), "floor"
                        ),
                        Case(f"core {kind} cost (no I/O)", aconsume(core), "core"),
                        Case(f"peer: {PEER[proto, kind]}", aconsume(peer), "peer"),
                        Case(f"ours: {OURS[kind]}", aconsume(ours), "ours"),
                    ],
                    floor="floor: httpx async aiter_lines",
                    note=f"{kind}|{proto}|async",
                )
            )
    return groups


RESPONSES_OURS = 'ours: ChatMatric(api="responses")'
RESPONSES_PEER = "peer: ChatOpenAI(use_responses_api=True)"


def checked(
    srv: Server, text: Callable[[], str], expected: str, endpoint: str
) -> Callable[[], str]:
    """A warm-up that reads one whole answer and checks it: exactly one request, sent to
    `endpoint` (e.g. "POST /v1/responses stream"), and the full text `expected`."""

    def run() -> str:
        before = srv.requests()
        got = text()
        after = srv.requests()
        sent = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        assert sent == {endpoint: 1}, f"expected one {endpoint} request, the server saw {sent}"
        assert got == expected, f"{len(got)} characters, expected {len(expected)}"
        return got

    return run


def chat_text(model: Any) -> Callable[[], str]:
    return lambda: "".join(chunk.text for chunk in model.stream(C.PROMPT))


def responses_groups(srv: Server, n: int) -> list[Group]:
    """(r) One streamed Responses API answer of `n` text deltas: ours, ChatOpenAI, floor, core."""
    from bench.server import full_text

    model = f"bench-n{n}"
    url, body = C.responses_request(model, srv.fast)
    floor = C.HttpxFloor(url, body, sse=True)
    peer = C.peer_responses(model, srv.fast)
    ours = C.our_responses(model, srv.fast)
    fused = C.fused_model("chat", url, body, sse=True)
    expected, endpoint = full_text(n), "POST /v1/responses stream"

    def check(text: Callable[[], str]) -> Callable[[], str]:
        return checked(srv, text, expected, endpoint)

    return [
        Group(
            f"(r) chat .stream(), OpenAI Responses API, {n:,} text deltas, sync",
            [
                Case(
                    "floor: httpx iter_lines",
                    floor_consume(floor),
                    "floor",
                    warm=check(lambda: C.responses_text(floor)),
                ),
                Case("core chat cost (no I/O)", consume(C.core_model("chat", n)), "core"),
                Case(
                    "fused: floor + core in one loop",
                    consume(fused),
                    "core",
                    warm=check(chat_text(fused)),
                ),
                Case(RESPONSES_PEER, consume(peer), "peer", warm=check(chat_text(peer))),
                Case(RESPONSES_OURS, consume(ours), "ours", warm=check(chat_text(ours))),
            ],
            floor="floor: httpx iter_lines",
            note="chat|responses|sync",
        )
    ]


def ttft_groups(srv: Server, requests: int) -> list[Group]:
    model = "bench-n1"
    groups = []
    for kind in ("llm", "chat"):
        cases = []
        for proto in ("openai", "ollama"):
            url, body = C.floor_request(proto, kind, model, srv.fast)
            floor = C.HttpxFloor(url, body, proto == "openai")
            peer = C.peer_model(proto, kind, model, srv.fast)
            ours = C.our_model(proto, kind, model, srv.fast)
            cases += [
                Case(f"floor: httpx ({proto})", ttft(floor.stream, requests), "floor"),
                Case(
                    f"peer: {PEER[proto, kind]}",
                    ttft(lambda m=peer: m.stream(C.PROMPT), requests),
                    "peer",
                ),
                Case(
                    f"ours: {OURS[kind]} ({proto})",
                    ttft(lambda m=ours: m.stream(C.PROMPT), requests),
                    "ours",
                ),
            ]
        core = C.core_model(kind, 1)
        cases.append(
            Case(
                f"core {kind} cost (no I/O)",
                ttft(lambda m=core: m.stream(C.PROMPT), requests),
                "core",
            )
        )
        groups.append(
            Group(
                f"(b) time to first token, {kind} .stream(), 1-chunk answer, median of {requests} requests",
                cases,
                floor="floor: httpx (openai)",
                unit="ms",
                note=kind,
            )
        )
    return groups


def call_groups(srv: Server, requests: int) -> list[Group]:
    model = "bench-n1"
    cases = []
    for kind in ("llm", "chat"):
        for proto in ("openai", "ollama"):
            url, body = C.floor_request(proto, kind, model, srv.fast)
            if kind == "llm":
                floor = C.HttpxFloor(url, body, proto == "openai")
                cases.append(
                    Case(
                        f"floor: httpx post ({proto} {kind})",
                        latency(floor.post, requests),
                        "floor",
                    )
                )
            peer = C.peer_model(proto, kind, model, srv.fast)
            ours = C.our_model(proto, kind, model, srv.fast)
            cases += [
                Case(
                    f"peer: {PEER[proto, kind]}.invoke",
                    latency(lambda m=peer: m.invoke(C.PROMPT), requests),
                    "peer",
                ),
                Case(
                    f"ours: {OURS[kind]}.invoke ({proto})",
                    latency(lambda m=ours: m.invoke(C.PROMPT), requests),
                    "ours",
                ),
            ]
    return [
        Group(
            f"(b2) non-streamed call latency, 1-token answer, median of {requests} requests",
            cases,
            floor="floor: httpx post (openai llm)",
            unit="ms",
        )
    ]


def concurrency_groups(srv: Server, width: int, n: int) -> list[Group]:
    model = f"bench-n{n}"
    groups = []
    for proto in ("openai", "ollama"):
        url, body = C.floor_request(proto, "chat", model, srv.fast)
        sse = proto == "openai"
        hx = C.HttpxAsyncFloor(url, body, sse)
        aio = C.AiohttpFloor(url, body, sse)
        core = C.core_model("chat", n)
        peer = C.peer_model(proto, "chat", model, srv.fast)
        ours = C.our_model(proto, "chat", model, srv.fast)
        groups.append(
            Group(
                f"(c) {width} concurrent chat .astream() x {n:,} chunks, {proto}, aggregate",
                [
                    Case(
                        "floor: httpx async aiter_lines",
                        concurrent(floor_consume(hx), width),
                        "floor",
                    ),
                    Case("floor: aiohttp", concurrent(floor_consume(aio), width), "floor"),
                    Case("core chat cost (no I/O)", concurrent(aconsume(core), width), "core"),
                    Case(f"peer: {PEER[proto, 'chat']}", concurrent(aconsume(peer), width), "peer"),
                    Case("ours: ChatMatric", concurrent(aconsume(ours), width), "ours"),
                ],
                floor="floor: httpx async aiter_lines",
                note=proto,
            )
        )
    return groups


def wire_groups(srv: Server, n: int, texts: int) -> list[Group]:
    """(h) The sync transports alone: the bytes of one stream, and of whole embedding answers."""
    readers = {name: C.WireReader(t) for name, t in C.wire_transports().items()}
    url, body = C.floor_request("openai", "chat", f"bench-n{n}", srv.fast)
    stream_body = json.dumps(body).encode()
    batch = [f"short text number {i} about a thing" for i in range(512)]
    embed_url = C.openai_url(srv.fast) + "/embeddings"
    embed_body = json.dumps(
        {"model": "bench-emb", "input": batch, "encoding_format": "base64"}
    ).encode()
    answers = -(-texts // len(batch))

    def stream(reader: C.WireReader) -> Callable[[], int]:
        return lambda: reader.read(url, stream_body, stream=True)

    def whole(reader: C.WireReader) -> Callable[[], int]:
        return lambda: sum(reader.read(embed_url, embed_body, stream=False) for _ in range(answers))

    return [
        Group(
            f"(h) sync transport alone: the raw bytes of a {n:,}-frame chat stream",
            [Case(name, stream(r), name.split(":")[0]) for name, r in readers.items()],
            floor=next(iter(readers)),
            note="stream",
        ),
        Group(
            f"(h) sync transport alone: {answers} whole embedding answer(s) of 512 vectors (base64)",
            [Case(name, whole(r), name.split(":")[0]) for name, r in readers.items()],
            floor=next(iter(readers)),
            note="whole",
        ),
    ]


OUTPUT_FLOOR = "output floor: the same answers decoded from memory, no HTTP"


def embedding_groups(srv: Server, count: int) -> list[Group]:
    texts = [f"short text number {i} about a thing" for i in range(count)]
    groups = []
    for port, label in ((srv.fast, "fast server"), (srv.slow, "server adding 20 ms per request")):
        floor = C.EmbedFloor(port)
        models = {
            "peer: OpenAIEmbeddings": C.peer_embeddings("openai", port),
            "peer: OllamaEmbeddings": C.peer_embeddings("ollama", port),
            "ours: MatricEmbeddings (openai)": C.our_embeddings("openai", port),
            "ours: MatricEmbeddings (ollama)": C.our_embeddings("ollama", port),
        }

        def rate(fn: Callable[[], Any]) -> Callable[[], float]:
            def run() -> float:
                start = time.perf_counter()
                vectors = fn()
                assert len(vectors) == count
                assert len(vectors[0]) == 768
                return count / (time.perf_counter() - start)

            return run

        def arate(fn: Callable[[], Any]) -> Callable[[], Any]:
            async def run() -> float:
                start = time.perf_counter()
                vectors = await fn()
                assert len(vectors) == count
                assert len(vectors[0]) == 768
                return count / (time.perf_counter() - start)

            return run

        sync_cases = [
            Case(
                "floor: httpx, 1,000/request, sequential",
                rate(lambda f=floor: f.embed(texts)),
                "floor",
            )
        ]
        async_cases = [
            Case(
                "floor: httpx async, 1,000/request, sequential",
                arate(lambda f=floor: f.aembed(texts)),
                "floor",
            )
        ]
        output = C.EmbedOutputFloor(port, texts)
        sync_cases.append(Case(OUTPUT_FLOOR, rate(output.embed), "floor"))
        async_cases.append(Case(OUTPUT_FLOOR, arate(output.aembed), "floor"))
        for name, model in models.items():
            role = name.split(":")[0]
            sync_cases.append(Case(name, rate(lambda m=model: m.embed_documents(texts)), role))
            async_cases.append(Case(name, arate(lambda m=model: m.aembed_documents(texts)), role))
        for mode, cases in (("sync", sync_cases), ("async", async_cases)):
            groups.append(
                Group(
                    f"(d) embeddings, {count:,} texts, dim 768, {mode}, {label} (texts/s)",
                    cases,
                    floor=cases[0].name,
                    unit="texts/s",
                    note=f"{mode}|{label}",
                )
            )
    return groups


# -- (e) import, (f) RSS, (g) decoder -----------------------------------------------------

IMPORTS = {
    "baseline: langchain_core LLM/BaseChatModel/Embeddings + httpx": (
        "from langchain_core.language_models import BaseChatModel, LLM; "
        "from langchain_core.embeddings import Embeddings; import httpx"
    ),
    "ours: from langchain_matric import ChatMatric, MatricLLM, MatricEmbeddings": (
        "from langchain_matric import ChatMatric, MatricLLM, MatricEmbeddings"
    ),
    "peer: langchain_openai ChatOpenAI, OpenAI, OpenAIEmbeddings": (
        "from langchain_openai import ChatOpenAI, OpenAI, OpenAIEmbeddings"
    ),
    "peer: langchain_ollama ChatOllama, OllamaLLM, OllamaEmbeddings": (
        "from langchain_ollama import ChatOllama, OllamaLLM, OllamaEmbeddings"
    ),
}
_IMPORT_PROBE = """
import json, sys, time
opened = []
if {audit}:
    sys.addaudithook(lambda ev, args: ev == "open" and isinstance(args[0], str)
                     and args[0].endswith((".toml", ".env", ".ini", ".cfg")) and opened.append(args[0]))
start = time.perf_counter()
{stmt}
wall = time.perf_counter() - start
# VmHWM, not ru_maxrss: the latter is inherited from the (large) parent across fork + exec.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"wall": wall, "rss_kib": hwm,
  "aiohttp": "aiohttp" in sys.modules, "tqdm": "tqdm" in sys.modules,
  "pydantic_settings": "pydantic_settings" in sys.modules,
  "config_module": "langchain_matric.config" in sys.modules, "opened": opened}}))
"""


def _probe(stmt: str, audit: bool = False) -> dict[str, Any]:
    return _probe_code(_IMPORT_PROBE.format(stmt=stmt, audit=audit))


def _probe_code(code: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=HERE.parent
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


_ADDED_PROBE = """
import json, time
{baseline}
start = time.perf_counter()
{ours}
print(json.dumps({{"added": time.perf_counter() - start}}))
"""

IMPORT_REPS_FACTOR = 3
"""A fresh interpreter spends ~1 s importing langchain-core here and paired differences
swing by +-200 ms, so the import group runs three times the repetitions of the others."""


def compile_ours() -> None:
    """Byte-compile langchain_matric, as pip does when it installs a package.

    Without it an editable checkout on a machine that sets PYTHONDONTWRITEBYTECODE (this
    one does) compiles every module from source in each fresh interpreter, ~30 ms that no
    installed copy pays; the peers and langchain-core are installed, hence compiled.
    """
    import compileall

    import langchain_matric

    compileall.compile_dir(str(Path(langchain_matric.__file__).parent), quiet=1)


def import_results(reps: int, quick: bool) -> dict[str, Any]:
    print("[bench] (e) import", flush=True)
    compile_ours()
    names = list(IMPORTS)[:2] if quick else list(IMPORTS)
    walls: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, list[float]] = {n: [] for n in names}
    added: list[float] = []
    for name in names:  # warm-up: the files into the page cache
        _probe(IMPORTS[name])
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            result = _probe(IMPORTS[name])
            walls[name].append(result["wall"])
            rss[name].append(result["rss_kib"] / 1024)
        code = _ADDED_PROBE.format(baseline=IMPORTS[names[0]], ours=IMPORTS[names[1]])
        added.append(_probe_code(code)["added"])
    check = _probe(IMPORTS[names[1]], audit=True)
    return {"walls": walls, "rss": rss, "check": check, "added": added}


def rss_results(srv: Server, n: int, streams: int, quick: bool) -> list[dict[str, Any]]:
    print("[bench] (f) RSS", flush=True)
    out = []
    whos = (
        ("ours:openai",) if quick else ("ours:openai", "ours:ollama", "peer:openai", "peer:ollama")
    )
    for who in whos:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.rss", who, str(srv.fast), str(n), str(streams)],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE.parent,
        )
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def decoder_results(size: int, reps: int) -> dict[str, list[float]]:
    print("[bench] (g) SSE decoder", flush=True)
    from bench import bench_decoders as D  # noqa: N812

    reads = D.chunks(D.big_line_stream(size))
    return D.measure({"ours: SSEDecoder": D.ours_sse, "httpx-sse 0.4.3": D.httpx_sse}, reads, reps)


# -- report ----------------------------------------------------------------------------


def group_table(group: Group) -> list[str]:
    floor = group.case(group.floor)
    higher_is_better = group.unit == "texts/s"
    head = "| case | median | min - max | vs floor (paired) | server CPU (max) |"
    lines = [f"### {group.title}", "", head, "|---|---|---|---|---|"]
    for case in group.cases:
        ratio = paired(floor, case) if higher_is_better else paired(case, floor)
        rel = "1 (floor)" if case is floor else f"{ratio:.2f}x"
        if group.unit == "ms" and case is not floor:
            rel += f" ({paired_diff(case, floor) * 1e3:+.3f} ms)"
        lines.append(
            f"| {case.name} | {fmt(med(case.times), group.unit)} | "
            f"{fmt(min(case.times), group.unit)} - {fmt(max(case.times), group.unit)} | "
            f"{rel} | {max(case.server_cpu) * 100:.0f}% |"
        )
    if higher_is_better:
        lines.append("")
        lines.append(
            "vs floor here is floor time / case time (texts/s ratio inverted: < 1 is slower)."
        )
    return [*lines, ""]


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def targets(
    groups: list[Group], imports: dict[str, Any] | None, rss: list[dict[str, Any]] | None
) -> list[str]:
    lines = ["## Targets (issue 5)", "", "| target | measured | verdict |", "|---|---|---|"]
    by_note = {g.note: g for g in groups if g.note}
    for kind in ("llm", "chat"):
        for proto in ("openai", "ollama"):
            g = by_note.get(f"{kind}|{proto}|sync")
            if g:
                ours, floor = g.case(f"ours: {OURS[kind]}"), g.case(g.floor)
                core = g.case(f"core {kind} cost (no I/O)")
                peer = g.case(f"peer: {PEER[proto, kind]}")
                r = paired_sum(ours, floor, core)
                fused = paired(ours, g.case("fused: floor + core in one loop"))
                lines.append(
                    f"| {OURS[kind]}.stream {proto} ≤ 1.2 x (floor + core) | {r:.2f}x "
                    f"({fused:.2f}x the fused floor + core loop) | {verdict(r <= 1.2)} |"
                )
                if kind == "chat" and proto == "openai":
                    rp = paired(ours, peer)
                    lines.append(
                        f"| ChatMatric.stream ≤ 1/3 of ChatOpenAI.stream | {rp:.2f}x | {verdict(rp <= 1 / 3)} |"
                    )
            g = by_note.get(f"{kind}|{proto}|async")
            if g and kind == "llm":
                ours, floor = g.case("ours: MatricLLM"), g.case(g.floor)
                r = paired(ours, floor)
                lines.append(
                    f"| MatricLLM.astream {proto} ≤ 0.8 x httpx async floor | {r:.2f}x | {verdict(r <= 0.8)} |"
                )
    g = by_note.get("chat|responses|sync")
    if g:
        ours, floor = g.case(RESPONSES_OURS), g.case(g.floor)
        r = paired_sum(ours, floor, g.case("core chat cost (no I/O)"))
        fused = paired(ours, g.case("fused: floor + core in one loop"))
        lines.append(
            f'| ChatMatric(api="responses").stream ≤ 1.2 x (floor + core) | {r:.2f}x '
            f"({fused:.2f}x the fused floor + core loop) | {verdict(r <= 1.2)} |"
        )
        rp = paired(ours, g.case(RESPONSES_PEER))
        lines.append(
            f'| ChatMatric(api="responses").stream ≤ 1/3 of ChatOpenAI(use_responses_api=True).stream | {rp:.2f}x | {verdict(rp <= 1 / 3)} |'
        )
    for proto in ("openai", "ollama"):
        g = by_note.get(proto)
        if g:
            ours, floor = g.case("ours: ChatMatric"), g.case(g.floor)
            core = g.case("core chat cost (no I/O)")
            r = paired_sum(ours, floor, core)
            lines.append(
                f"| 64x ChatMatric.astream {proto} ≤ 1.2 x (httpx async floor + core) | {r:.2f}x | {verdict(r <= 1.2)} |"
            )
            if proto == "openai":
                rp = paired(ours, g.case("peer: ChatOpenAI"))
                lines.append(
                    f"| 64x ChatMatric.astream ≤ 1/3 of ChatOpenAI | {rp:.2f}x | {verdict(rp <= 1 / 3)} |"
                )
    for kind, limit in (("llm", 0.1e-3), ("chat", 0.5e-3)):
        g = by_note.get(kind)
        if g:
            for proto in ("openai", "ollama"):
                d = paired_diff(
                    g.case(f"ours: {OURS[kind]} ({proto})"), g.case(f"floor: httpx ({proto})")
                )
                lines.append(
                    f"| TTFT {OURS[kind]} {proto} ≤ +{limit * 1e3:.1f} ms over floor | {d * 1e3:+.3f} ms | {verdict(d <= limit)} |"
                )
    for g in groups:
        if g.unit == "texts/s":
            mode, label = g.note.split("|")
            need = 1.5 if label == "fast server" else 4.0
            r = paired(g.case("ours: MatricEmbeddings (openai)"), g.case("peer: OpenAIEmbeddings"))
            lines.append(
                f"| embeddings {mode}, {label}: MatricEmbeddings ≥ {need}x OpenAIEmbeddings texts/s | {r:.2f}x | {verdict(r >= need)} |"
            )
            r = paired(g.case(OUTPUT_FLOOR), g.case("peer: OpenAIEmbeddings"))
            lines.append(
                f"| (info) ceiling of the row above: output floor vs OpenAIEmbeddings texts/s | {r:.2f}x | - |"
            )
            r = paired(g.case("ours: MatricEmbeddings (ollama)"), g.case("peer: OllamaEmbeddings"))
            lines.append(
                f"| (info) embeddings {mode}, {label}: MatricEmbeddings (ollama) vs OllamaEmbeddings texts/s | {r:.2f}x | - |"
            )
    if rss:
        for row in rss:
            if row["who"].startswith("ours"):
                lines.append(
                    f"| RSS growth ≤ 1 MiB, MatricLLM {row['who'][5:]} streaming {row['n']:,} chunks | "
                    f"{row['growth_mib']:.2f} MiB | {verdict(row['growth_mib'] <= 1.0)} |"
                )
                lines.append(
                    f"| no RSS growth over {row['streams']:,} sequential streams ({row['who'][5:]}) | "
                    f"{row['seq_growth_mib']:+.2f} MiB | {verdict(row['seq_growth_mib'] <= 0.25)} |"
                )
    if imports:
        names = list(imports["walls"])
        base, ours = imports["walls"][names[0]], imports["walls"][names[1]]
        d = med([o - b for o, b in zip(ours, base, strict=True)])
        lines.append(f"| import ≤ baseline + 80 ms | {d * 1e3:+.1f} ms | {verdict(d <= 0.080)} |")
        lines.append(
            f"| (info) the same, timed in one interpreter after the baseline's imports | "
            f"+{med(imports['added']) * 1e3:.1f} ms | - |"
        )
        c = imports["check"]
        clean = not (c["aiohttp"] or c["tqdm"] or c["opened"])
        lines.append(
            f"| aiohttp, tqdm, config files untouched at import | aiohttp={c['aiohttp']}, "
            f"tqdm={c['tqdm']}, files opened={c['opened']} | {verdict(clean)} |"
        )
    return [*lines, ""]


def report(
    args: argparse.Namespace,
    groups: list[Group],
    imports: dict[str, Any] | None,
    rss: list[dict[str, Any]] | None,
    decoder: dict[str, list[float]] | None,
    sizes: dict[str, Any],
    elapsed: float,
) -> str:
    import langchain_core
    import pydantic

    versions = [
        f"python {platform.python_version()}",
        f"langchain-core {langchain_core.__version__}",
    ]
    for dist in ("langchain-openai", "langchain-ollama", "openai", "ollama", "httpx", "aiohttp"):
        try:
            from importlib.metadata import version

            versions.append(f"{dist} {version(dist)}")
        except Exception:
            pass
    versions.append(f"pydantic {pydantic.VERSION}")
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python -m bench{' --quick' if args.quick else ''}` in {elapsed:.0f} s on "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; {', '.join(versions)}.",
        "",
        f"{args.reps} interleaved repetitions per group (every repetition runs every case once, "
        "order rotated; one untimed warm-up each). Median, min - max, and the paired ratio to "
        "the floor of the same repetition (median over repetitions). Server CPU is the bench "
        "server process's CPU time / the case's wall time (worst repetition; 100% = one core).",
        "",
        f"Wire: HTTP/1.1 chunked, one chunk frame per SSE event / NDJSON line, full OpenAI / "
        f"Ollama chunk JSON, pre-built and written in 64 KiB batches (see `bench/server.py`). "
        f"Tokens are about 6 bytes; streams are {sizes['n']:,} chunks: langchain-core's "
        "`BaseLLM.stream` is quadratic in the text length and `BaseChatModel.stream` keeps "
        "every chunk, so these figures hold for ~20,000 chunks of ~6 bytes, not for much "
        "longer answers. LLM cases use the completions API (`/v1/completions`, "
        "`/api/generate`: the endpoints of the `OpenAI` / `OllamaLLM` peers); chat cases "
        "`/v1/chat/completions` (with `stream_options.include_usage`) and `/api/chat`; the "
        "(r) cases `/v1/responses` (OpenAI's Responses API events, one per frame).",
        "",
        *(targets(groups, imports, rss)),
        "## All measurements",
        "",
    ]
    for group in groups:
        lines += group_table(group)
    if imports:
        names = list(imports["walls"])
        lines += [
            f"### (e) import in a fresh interpreter ({len(imports['walls'][names[0]])} interleaved runs)",
            "",
            "| import | wall median | min - max | vs baseline (paired) | max RSS |",
            "|---|---|---|---|---|",
        ]
        base = imports["walls"][names[0]]
        for name in names:
            w = imports["walls"][name]
            d = med([x - b for x, b in zip(w, base, strict=True)])
            lines.append(
                f"| {name} | {med(w) * 1e3:.0f} ms | {min(w) * 1e3:.0f} - {max(w) * 1e3:.0f} ms | "
                f"{d * 1e3:+.0f} ms | {med(imports['rss'][name]):.1f} MiB |"
            )
        added = imports["added"]
        lines += [
            "",
            f"Ours timed in one interpreter right after the baseline's imports (what our import "
            f"adds to them): median {med(added) * 1e3:.1f} ms, {min(added) * 1e3:.1f} - "
            f"{max(added) * 1e3:.1f} ms. Our package is byte-compiled first, as pip does on "
            "install (see `compile_ours`).",
            "",
            f"Import check (ours, audit hook on file opens): `{json.dumps(imports['check'])}`",
            "",
        ]
    if rss:
        lines += [
            "### (f) RSS growth (fresh interpreter per row)",
            "",
            "| case | one stream: peak RSS - RSS after warm-up | sequential streams: RSS end - RSS after warm-up |",
            "|---|---|---|",
        ]
        for row in rss:
            lines.append(
                f"| {row['name']} | {row['growth_mib']:.2f} MiB ({row['n']:,} chunks) | "
                f"{row['seq_growth_mib']:+.2f} MiB ({row['streams']:,} streams x {row['seq_chunks']} chunks) |"
            )
        lines.append("")
    if decoder:
        lines += [
            f"### (g) SSE decoder alone, one {sizes['big'] >> 20} MiB `data:` line in 1,460-byte reads",
            "",
            "| decoder | median | min - max |",
            "|---|---|---|",
        ]
        for name, ts in decoder.items():
            lines.append(f"| {name} | {med(ts):.3f} s | {min(ts):.3f} - {max(ts):.3f} s |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="langchain-matric benchmark")
    parser.add_argument("--quick", action="store_true", help="a smoke check in under a minute")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", default="a,r,b,b2,c,d,e,f,g,h", help="metrics to run")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 5)
    only = set(args.only.split(","))
    q = args.quick
    sizes = {
        "n": 300 if q else 20_000,
        "ttft": 5 if q else 200,
        "width": 8 if q else 64,
        "conc_n": 100 if q else 1_000,
        "embed": 200 if q else 10_000,
        "big": (1 if q else 16) * 1024 * 1024,
        "streams": 50 if q else 1_000,
    }
    started = time.perf_counter()
    srv = Server()
    try:
        runner = Runner(srv, args.reps)
        groups: list[Group] = []
        if "a" in only:
            groups += [runner.measure(g) for g in stream_groups(srv, sizes["n"])]
        if "r" in only:
            groups += [runner.measure(g) for g in responses_groups(srv, sizes["n"])]
        if "b" in only:
            groups += [runner.measure(g) for g in ttft_groups(srv, sizes["ttft"])]
        if "b2" in only:
            groups += [runner.measure(g) for g in call_groups(srv, sizes["ttft"])]
        if "c" in only:
            groups += [
                runner.measure(g) for g in concurrency_groups(srv, sizes["width"], sizes["conc_n"])
            ]
        if "d" in only:
            groups += [runner.measure(g) for g in embedding_groups(srv, sizes["embed"])]
        if "h" in only:
            groups += [runner.measure(g) for g in wire_groups(srv, sizes["n"], sizes["embed"])]
        import_reps = 1 if q else args.reps * IMPORT_REPS_FACTOR
        imports = import_results(import_reps, q) if "e" in only else None
        rss = rss_results(srv, sizes["n"], sizes["streams"], q) if "f" in only else None
        decoder = decoder_results(sizes["big"], args.reps) if "g" in only else None
        runner.close()
    finally:
        srv.close()
    text = report(args, groups, imports, rss, decoder, sizes, time.perf_counter() - started)
    Path(args.out).write_text(text + "\n")
    print(text)
    print(f"\n[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
