"""`langchain_matric.ray` on a local Ray cluster against LocalServers, loopback only.

One cluster for the module (`ray.init(num_cpus=2)`), bound to 127.0.0.1 (Ray 2.60 binds
the machine's interface address unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), with no
usage stats and no dashboard: nothing reaches outside. The actors' own output goes to
the session's worker logs, read here: every actor must say it closed its clients, and no
log may hold "Unclosed client session" or a ResourceWarning. The models are subclasses
that leave a mark when an actor has closed them (`_ray_models`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from langchain_matric import ChatMatric, MatricEmbeddings
from langchain_matric.testing import LocalServer

# tests/conftest.py sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 and RAY_USAGE_STATS_ENABLED=0
# before any module imports Ray: a local cluster on 127.0.0.1, no usage stats.
ray = pytest.importorskip("ray", reason='needs Ray Data: pip install -e ".[ray]"')
np = pytest.importorskip("numpy")

from langchain_matric.ray import embed, generate  # noqa: E402
from tests.integration_tests._ray_models import (  # noqa: E402
    MARKS_ENV,
    RAY_NOISE,
    ClosingChat,
    ClosingEmbeddings,
    ClosingLLM,
)

pytestmark = [
    pytest.mark.allow_hosts(["127.0.0.1", "::1"]),
    pytest.mark.filterwarnings(RAY_NOISE),
]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    logs: Path
    """The session's logs directory (the actors' stdout and stderr)."""
    marks: Path
    """Where the models mark that an actor closed them."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A local Ray cluster on 127.0.0.1."""
    marks = tmp_path_factory.mktemp("close-marks")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        # The actors import this checkout's package, not an installed one.
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), MARKS_ENV: str(marks)}},
    )
    try:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        ray.data.DataContext.get_current().enable_progress_bars = False
        node = ray._private.worker._global_node
        yield Cluster(Path(node.get_logs_dir_path()), marks)
    finally:
        ray.shutdown()


def _worker_logs(logs: Path) -> str:
    return "".join(
        p.read_text(errors="replace") for p in sorted(logs.glob("worker-*")) if p.is_file()
    )


def closed_cleanly(cluster: Cluster, model: str, actors: int) -> None:
    """The `actors` actors that ran `model` closed it, and no actor leaked a session."""
    deadline = time.monotonic() + 20
    while len(list(cluster.marks.glob(f"{model}.*"))) < actors and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(list(cluster.marks.glob(f"{model}.*"))) == actors, "an actor did not close"
    text = _worker_logs(cluster.logs)
    assert "Unclosed" not in text
    assert "ResourceWarning" not in text


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LocalServer, LocalServer]]:
    with (
        LocalServer(embedding_dim=16, embed_max_chars=200, context_chars=300) as a,
        LocalServer(embedding_dim=16, embed_max_chars=200, context_chars=300) as b,
    ):
        yield a, b


def test_actors_run_this_checkout(cluster: Cluster) -> None:
    @ray.remote(num_cpus=0.25)
    def where() -> str:
        import langchain_matric

        return str(langchain_matric.__file__)

    assert ray.get(where.remote()).startswith(str(ROOT / "langchain_matric"))


def test_embed_matches_embed_documents(servers: Any, cluster: Cluster) -> None:
    server = servers[0]
    texts = [f"document {i} about topic {i % 5}" for i in range(40)]
    model = ClosingEmbeddings(backend="openai", base_url=server.openai_base_url, model="embed")
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    out = embed(ds, model, actors=2, batch_size=8).materialize()
    # Blocks may finish out of order (Ray's `preserve_order` is off); rows line up.
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    expected = model.embed_documents(texts)
    model.close()
    assert [r["id"] for r in rows] == list(range(40))
    assert [r["text"] for r in rows] == texts
    assert "error" not in rows[0]
    for row, vector in zip(rows, expected, strict=True):
        got = row["embedding"]
        assert got.dtype == np.float32
        assert np.array_equal(got, np.asarray(vector, dtype=np.float32))
    assert out.schema().types[-1].shape == (16,)  # Ray's tensor type: float32, one shape
    closed_cleanly(cluster, "embed", 2)


@pytest.mark.parametrize("kind", ["chat", "llm"])
def test_generate_writes_the_reply_text(servers: Any, cluster: Cluster, kind: str) -> None:
    server = servers[0]
    cls = ClosingChat if kind == "chat" else ClosingLLM
    model = cls(backend="openai", base_url=server.openai_base_url, model=f"generate-{kind}")
    prompts = [f"question {i}" for i in range(12)]
    ds = ray.data.from_items([{"prompt": p} for p in prompts])
    rows = generate(ds, model, actors=2, batch_size=4, max_concurrency=3).take_all()
    assert sorted(r["prompt"] for r in rows) == sorted(prompts)
    assert all(r["output"] == f"Echo: {r['prompt']}" for r in rows)
    assert all(isinstance(r["output"], str) for r in rows)
    closed_cleanly(cluster, f"generate-{kind}", 2)


def test_embed_on_error_column_fails_only_the_bad_row(servers: Any, cluster: Cluster) -> None:
    server = servers[0]
    texts = [f"short text {i}" for i in range(16)]
    texts[5] = "word " * 60  # 300 characters: over the server's embed_max_chars (200)
    model = ClosingEmbeddings(backend="openai", base_url=server.openai_base_url, model="embed-col")
    ds = ray.data.from_items([{"text": t} for t in texts], override_num_blocks=1)
    rows = embed(ds, model, actors=1, batch_size=16, on_error="column").take_all()
    assert rows[5]["embedding"] is None
    assert rows[5]["error"].startswith("ContextLengthExceededError: server returned 400")
    for i, row in enumerate(rows):
        if i != 5:
            assert row["error"] is None
            assert row["embedding"].dtype == np.float32
            assert row["embedding"].shape == (16,)
    closed_cleanly(cluster, "embed-col", 1)


def test_embed_a_null_text_fails_only_its_row(servers: Any, cluster: Cluster) -> None:
    server = servers[0]
    texts: list[str | None] = [f"short text {i}" for i in range(8)]
    texts[3] = None
    model = ClosingEmbeddings(backend="openai", base_url=server.openai_base_url, model="embed-null")
    ds = ray.data.from_items([{"text": t} for t in texts], override_num_blocks=1)
    rows = embed(ds, model, actors=1, batch_size=8, on_error="column").take_all()
    assert rows[3]["embedding"] is None
    assert rows[3]["error"] == "TypeError: column 'text' holds None, not text"
    assert all(r["error"] is None and r["embedding"].shape == (16,) for r in rows if r["text"])
    closed_cleanly(cluster, "embed-null", 1)
    with pytest.raises(Exception, match="row 3 of a batch: column 'text' holds None"):
        embed(ds, model, actors=1, batch_size=8).take_all()


def test_generate_on_error_column_and_raise(servers: Any, cluster: Cluster) -> None:
    server = servers[0]
    prompts = [f"question {i}" for i in range(6)]
    prompts[2] = "long " * 100  # over the server's context_chars
    model = ClosingChat(backend="openai", base_url=server.openai_base_url, model="generate-col")
    ds = ray.data.from_items([{"prompt": p} for p in prompts], override_num_blocks=1)
    rows = generate(ds, model, actors=1, on_error="column", error_column="why").take_all()
    assert rows[2]["output"] is None
    assert rows[2]["why"].startswith("ContextLengthExceededError: ")
    assert [r["why"] for i, r in enumerate(rows) if i != 2] == [None] * 5
    assert [r["output"] for i, r in enumerate(rows) if i != 2] == [
        f"Echo: {p}" for i, p in enumerate(prompts) if i != 2
    ]
    closed_cleanly(cluster, "generate-col", 1)
    # A failed dataset's actors are killed, not shut down: no close to wait for.
    with pytest.raises(Exception, match="ContextLengthExceededError"):
        generate(ds, model, actors=1).take_all()


def test_a_pool_spreads_the_actors_over_both_servers(servers: Any, cluster: Cluster) -> None:
    a, b = servers
    before = len(a.requests), len(b.requests)
    urls = [a.openai_base_url, b.openai_base_url]
    model = ClosingEmbeddings(backend="openai", base_url=urls, model="embed-pool", chunk_size=4)
    ds = ray.data.from_items([{"text": f"text {i}"} for i in range(32)])
    rows = embed(ds, model, actors=2, batch_size=8).take_all()
    assert len(rows) == 32
    assert len(a.requests) > before[0]
    assert len(b.requests) > before[1]
    assert len(a.requests) - before[0] + len(b.requests) - before[1] == 8
    closed_cleanly(cluster, "embed-pool", 2)


def test_qps_caps_the_request_rate(servers: Any, cluster: Cluster) -> None:
    server = servers[1]
    start = len(server.requests)
    model = ClosingLLM(backend="openai", base_url=server.openai_base_url, model="generate-qps")
    ds = ray.data.from_items([{"prompt": f"q {i}"} for i in range(12)])
    generate(ds, model, actors=2, batch_size=6, qps=8).take_all()
    times = sorted(r.time for r in server.requests[start:])
    assert len(times) == 12
    # Each actor: one request at once, then one every 1/4 s: 10 waits of 1/8 s over two.
    assert times[-1] - times[0] >= 0.9 * (12 - 2) / 8, [round(t - times[0], 3) for t in times]
    closed_cleanly(cluster, "generate-qps", 2)


def test_a_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    model = MatricEmbeddings(backend="openai", base_url="http://127.0.0.1:9/v1", model="e")
    with pytest.raises(ImportError, match=r'pip install "langchain-matric\[ray\]"'):
        embed(object(), model)  # type: ignore[arg-type]
    with pytest.raises(ImportError, match=r'pip install "langchain-matric\[ray\]"'):
        generate(object(), ChatMatric(backend="openai", base_url="http://127.0.0.1:9/v1"))  # type: ignore[arg-type]


def test_import_langchain_matric_does_not_import_ray() -> None:
    import subprocess

    code = "import sys, langchain_matric, langchain_matric.ray; print('ray' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env
    )
    assert out.stdout.strip() == "False", out.stderr
