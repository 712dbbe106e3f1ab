"""RSS growth of one LLM while streaming, in a fresh interpreter (run by `bench.run`).

`python -m bench.rss WHO PORT N STREAMS` with WHO in ours:openai, ours:ollama,
peer:openai, peer:ollama. Prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import sys

import psutil

from bench import clients as C  # noqa: N812

SEQ_CHUNKS = 20


def main() -> None:
    who, port, n, streams = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    role, proto = who.split(":")
    make = C.our_model if role == "ours" else C.peer_model
    big, small = (
        make(proto, "llm", f"bench-n{n}", port),
        make(proto, "llm", f"bench-n{SEQ_CHUNKS}", port),
    )
    name = type(big).__name__ + f" ({proto})"
    proc = psutil.Process()
    for _ in range(3):  # warm-up: imports, pools, one full-size stream
        for _ in big.stream(C.PROMPT):
            pass
    gc.collect()
    base = peak = proc.memory_info().rss
    for i, _ in enumerate(big.stream(C.PROMPT)):
        if i % 250 == 0:
            peak = max(peak, proc.memory_info().rss)
    peak = max(peak, proc.memory_info().rss)
    warm = max(50, streams // 10)
    for _ in range(warm):
        for _ in small.stream(C.PROMPT):
            pass
    gc.collect()
    seq_base = proc.memory_info().rss
    for _ in range(streams):
        for _ in small.stream(C.PROMPT):
            pass
    gc.collect()
    seq_end = proc.memory_info().rss
    print(
        json.dumps(
            {
                "who": who,
                "name": name,
                "n": n,
                "growth_mib": (peak - base) / 2**20,
                "streams": streams,
                "seq_chunks": SEQ_CHUNKS,
                "seq_growth_mib": (seq_end - seq_base) / 2**20,
            }
        )
    )


if __name__ == "__main__":
    main()
