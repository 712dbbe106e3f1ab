"""Decoder throughput: our SSE and NDJSON decoders against the usual alternatives.

Run `python -m bench.bench_decoders [--quick] [--reps N]`. Every case is fed in 1,460-byte reads
(one TCP segment), the repetitions of the contenders are interleaved, and the script prints
median / min / max seconds and the ratio ours / baseline of the medians (< 1 means faster).

- SSE: a ~3 MB OpenAI chat-completion stream (one full chunk object per event), and one
  16 MiB `data:` line. Baseline: httpx-sse 0.4.3 exactly as `EventSource.iter_sse` drives it:
  an incremental UTF-8 decoder (httpx `iter_text`), `SSELineDecoder`, then `SSEDecoder`.
- NDJSON: a ~3 MB Ollama `/api/chat` stream. Baseline: the naive loop, a bytes buffer split
  on b"\\n" with one `json.loads` per line.
"""

from __future__ import annotations

import argparse
import codecs
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from langchain_matric.ndjson import NDJSONDecoder
from langchain_matric.sse import SSEDecoder

READ = 1460
WORDS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".", "\n"]


def chunks(data: bytes, size: int = READ) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def openai_stream(target: int) -> bytes:
    parts: list[bytes] = []
    total, i = 0, 0
    while total < target:
        chunk = {
            "id": "chatcmpl-AbCdEf0123456789GhIjKlMnOpQr",
            "object": "chat.completion.chunk",
            "created": 1_718_000_000 + i // 50,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": WORDS[i % len(WORDS)]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        line = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        parts.append(line)
        total += len(line)
        i += 1
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def big_line_stream(size: int) -> bytes:
    return b"data: " + b"x" * size + b"\n\n"


def ollama_stream(target: int) -> bytes:
    parts: list[bytes] = []
    total, i = 0, 0
    while total < target:
        obj = {
            "model": "llama3.2",
            "created_at": f"2024-06-10T12:00:{i % 60:02d}.{i:09d}Z",
            "message": {"role": "assistant", "content": WORDS[i % len(WORDS)]},
            "done": False,
        }
        line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        parts.append(line)
        total += len(line)
        i += 1
    parts.append(b'{"model":"llama3.2","done":true,"done_reason":"stop","eval_count":%d}\n' % i)
    return b"".join(parts)


def ours_sse(reads: list[bytes]) -> int:
    decoder = SSEDecoder()
    n = 0
    for read in reads:
        n += len(decoder.feed(read))
    return n + len(decoder.flush())


def httpx_sse(reads: list[bytes]) -> int:
    from httpx_sse._decoders import SSEDecoder as HSSEDecoder
    from httpx_sse._decoders import SSELineDecoder

    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines, decoder = SSELineDecoder(), HSSEDecoder()
    n = 0
    for read in reads:
        for line in lines.decode(text_decoder.decode(read)):
            if decoder.decode(line.rstrip("\n")) is not None:
                n += 1
    for line in lines.decode(text_decoder.decode(b"", final=True)) + lines.flush():
        if decoder.decode(line.rstrip("\n")) is not None:
            n += 1
    return n


def ours_ndjson(reads: list[bytes]) -> int:
    decoder = NDJSONDecoder()
    n = 0
    for read in reads:
        n += len(decoder.feed(read))
    return n + len(decoder.flush())


def naive_ndjson(reads: list[bytes]) -> int:
    buf = b""
    out: list[dict[str, Any]] = []
    for read in reads:
        buf += read
        *lines, buf = buf.split(b"\n")
        out.extend(json.loads(line) for line in lines if line.strip())
    if buf.strip():
        out.append(json.loads(buf))
    return len(out)


def measure(
    contenders: dict[str, Callable[[list[bytes]], int]], reads: list[bytes], reps: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    counts = {name: fn(reads) for name, fn in contenders.items()}  # warm-up, and agreement
    if len(set(counts.values())) != 1:
        raise SystemExit(f"contenders disagree on the event count: {counts}")
    for _ in range(reps):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn(reads)
            times[name].append(time.perf_counter() - start)
    return times


def cases(quick: bool) -> Iterator[tuple[str, bytes, dict[str, Callable[[list[bytes]], int]]]]:
    size = 1_000_000 if quick else 3_000_000
    big = 4 * 1024 * 1024 if quick else 16 * 1024 * 1024
    sse = {"ours": ours_sse, "httpx-sse": httpx_sse}
    yield f"SSE OpenAI chat stream ({size / 1e6:.0f} MB)", openai_stream(size), sse
    yield f"SSE one {big >> 20} MiB data line", big_line_stream(big), sse
    ndjson = {"ours": ours_ndjson, "naive split+loads": naive_ndjson}
    yield f"NDJSON Ollama chat stream ({size / 1e6:.0f} MB)", ollama_stream(size), ndjson


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, 5 repetitions")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5 / 9)")
    args = parser.parse_args(argv)
    reps = args.reps or (5 if args.quick else 9)
    print(f"{READ}-byte reads, {reps} interleaved repetitions; seconds: median (min - max)")
    for title, stream, contenders in cases(args.quick):
        reads = chunks(stream)
        times = measure(contenders, reads, reps)
        print(f"\n{title}: {len(stream):,} bytes, {len(reads):,} reads")
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        for name, ts in times.items():
            print(f"  {name:<18} {medians[name]:.4f} ({min(ts):.4f} - {max(ts):.4f})")
        ours, *others = medians
        for other in others:
            print(f"  ratio ours / {other}: {medians[ours] / medians[other]:.2f}")


if __name__ == "__main__":
    main()
