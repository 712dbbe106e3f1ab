"""Secrets stay secret: recognisable canaries, scanned for everywhere they could leak.

The API key, a credential header, `user:password@` and `?api-key=` in a base URL must
never show in `repr`/`str`/`dict()`/`model_dump()`, in what callbacks and tracers receive
(`serialized`, `invocation_params`, every kwarg), in a backend's `repr`, in log records
at DEBUG (ours and every library's), in exception messages and tracebacks, or in any
file under `cassettes/`. An `OPENAI_API_KEY` from the environment never goes to a
`base_url` given in code. TLS verification is on by default; turning it off warns once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from langchain_matric import errors
from langchain_matric._http import Timeouts
from langchain_matric._http._config import client_settings
from langchain_matric.backends.ollama import OllamaBackend
from langchain_matric.backends.openai import OpenAIBackend
from langchain_matric.chat_models import ChatMatric
from langchain_matric.embeddings import MatricEmbeddings
from langchain_matric.llms import MatricLLM
from langchain_matric.testing import Fault, LocalServer

KEY = "sk-canary-KEY-7f3a9c2d"
HEADER = "hdr-canary-TOKEN-51b2e0"
PASSWORD = "pw-canary-PASS-88d1aa"
QUERY_KEY = "q-canary-APIKEY-0e4f77"
ENV_KEY = "sk-canary-ENV-93bd01"
SECRETS = (KEY, HEADER, PASSWORD, QUERY_KEY, ENV_KEY)
CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"
PROTOCOLS = ["openai", "ollama"]


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {where}: {text[:300]!r}"


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MATRIC_CONFIG", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray matric.toml


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer(embedding_dim=8) as running:
        yield running


def secret_url(protocol: str, server: LocalServer) -> str:
    root = f"http://user:{PASSWORD}@127.0.0.1:{server.port}"
    return f"{root}/v1?api-key={QUERY_KEY}" if protocol == "openai" else f"{root}?token={QUERY_KEY}"


def backend_for(protocol: str, server: LocalServer, **kw: Any) -> OpenAIBackend | OllamaBackend:
    kw.setdefault("headers", {"X-Custom-Auth": HEADER})
    cls = OpenAIBackend if protocol == "openai" else OllamaBackend
    return cls(secret_url(protocol, server), api_key=KEY, model="test-model", **kw)


def adapter_fields(protocol: str, server: LocalServer) -> dict[str, Any]:
    return {
        "backend": protocol,
        "base_url": secret_url(protocol, server),
        "api_key": KEY,
        "model": "test-model",
    }


class Capture(BaseCallbackHandler):
    """Everything a tracer is handed at the start and end of each run."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.seen.append(repr((serialized, kwargs)))
        assert "invocation_params" in kwargs

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.seen.append(repr((serialized, kwargs)))
        assert "invocation_params" in kwargs

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.seen.append(repr((response, kwargs)))


# -- objects, callbacks, logs ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fields", "instance"])
@pytest.mark.parametrize("cls", [ChatMatric, MatricLLM])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_adapters_and_callbacks(server, protocol, cls, kind, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # root: httpx, httpcore, aiohttp and ours
    caplog.set_level(logging.DEBUG, logger="langchain_matric")
    backend = backend_for(protocol, server) if kind == "instance" else None
    model = cls(backend=backend) if backend else cls(**adapter_fields(protocol, server))
    capture = Capture()
    config: Any = {"callbacks": [capture]}

    for prompt in ("once", "twice"):  # every call, not just the first
        model.invoke(prompt, config=config)
        list(model.stream(prompt, config=config))
    model.batch(["a", "b"], config=config)

    async def run() -> None:
        await model.ainvoke("async", config=config)
        [c async for c in model.astream("async", config=config)]
        if backend is not None:
            await backend.aclose()

    asyncio.run(run())
    sent = server.last_request
    assert sent.headers["authorization"] == f"Bearer {KEY}"  # the secrets are really in use
    if kind == "instance":
        assert sent.headers["x-custom-auth"] == HEADER
    assert len(capture.seen) >= 2 * 7
    for i, seen in enumerate(capture.seen):
        assert_clean(seen, f"callback payload {i}")
    for where, text in {
        "repr": repr(model),
        "str": str(model),
        "asdict()": repr(model.asdict()),
        "model_dump()": repr(model.model_dump()),
        "model_dump_json()": model.model_dump_json(),
        "_identifying_params": repr(model._identifying_params),
        "backend repr": repr(model._generation_backend()),
    }.items():
        assert_clean(text, where)
    for record in caplog.records:
        assert_clean(f"{record.getMessage()} {record.args!r}", f"log record {record.name}")
    if backend is not None:
        backend.close()
    model.close()


def test_embeddings_object(server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    embeddings = MatricEmbeddings(**adapter_fields("openai", server) | {"model": "test-embed"})
    assert len(embeddings.embed_query("hello")) == 8
    for text in (repr(embeddings), str(embeddings), repr(embeddings.model_dump())):
        assert_clean(text, "MatricEmbeddings")
    for record in caplog.records:
        assert_clean(f"{record.getMessage()} {record.args!r}", f"log record {record.name}")
    embeddings.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_backend_internals(server, protocol) -> None:
    backend = backend_for(protocol, server)
    for name, obj in {
        "backend": backend,
        "config": backend._config,
        "sync transport": backend._sync,
        "async transport": backend._async,
    }.items():
        assert_clean(repr(obj), name)
        assert_clean(str(obj), name)
    assert_clean(backend.base_url, "base_url property")
    backend.close()


# -- errors and tracebacks -----------------------------------------------------------------


def _scan_error(error: BaseException, where: str) -> None:
    assert_clean(str(error), f"{where} message")
    assert_clean(repr(error), f"{where} repr")
    assert_clean("".join(traceback.format_exception(error)), f"{where} traceback")
    for name in ("body", "url", "partial", "line"):
        value = getattr(error, name, None)
        if isinstance(value, str):
            assert_clean(value, f"{where}.{name}")


async def _fail(backend: Any, sync: bool, stream: bool) -> BaseException:
    try:
        if stream and sync:
            list(backend.generate_stream("x"))
        elif stream:
            [d async for d in backend.agenerate_stream("x")]
        elif sync:
            backend.generate("x")
        else:
            await backend.agenerate("x")
    except errors.MatricError as error:
        return error
    raise AssertionError("no error")


def _echoing_body() -> str:
    """A server that echoes every credential it received (some proxies do)."""
    return (
        f'{{"error": {{"message": "bad key Bearer {KEY}, header {HEADER}, '
        f'url ?api-key={QUERY_KEY}"}}}}'
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("status", [400, 401, 404, 500])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_error_messages_and_tracebacks(server, protocol, status, stream, sync) -> None:
    server.fault(Fault(status=status, body=_echoing_body(), times=3))
    with backend_for(protocol, server, max_retries=0) as backend:
        error = await _fail(backend, sync, stream)
        await backend.aclose()
    assert isinstance(error, errors.BackendHTTPError)
    assert "***" in error.body  # redacted, not dropped
    _scan_error(error, f"HTTP {status}")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_network_errors_and_tracebacks(server, protocol, sync) -> None:
    port = server.port
    server.stop()  # connection refused
    dead = OpenAIBackend if protocol == "openai" else OllamaBackend
    url = f"http://user:{PASSWORD}@127.0.0.1:{port}/v1?api-key={QUERY_KEY}"
    if protocol == "ollama":
        url = f"http://user:{PASSWORD}@127.0.0.1:{port}?token={QUERY_KEY}"
    with dead(url, api_key=KEY, model="m", max_retries=0, headers={"X-Auth": HEADER}) as backend:
        error = await _fail(backend, sync, stream=True)
        await backend.aclose()
    assert isinstance(error, errors.BackendConnectionError)
    _scan_error(error, "connection refused")


@pytest.mark.parametrize("fault", ["drop", "stall"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_errors_and_tracebacks(server, protocol, fault, sync) -> None:
    server.fault(Fault.drop(after=2) if fault == "drop" else Fault.stall(10, after=2))
    timeouts = Timeouts(connect=5, first_byte=5, idle=0.3)
    with backend_for(protocol, server, timeouts=timeouts) as backend:
        error = await _fail(backend, sync, stream=True)
        await backend.aclose()
    assert isinstance(error, errors.StreamError | errors.BackendTimeoutError)
    _scan_error(error, fault)


# -- cassettes -------------------------------------------------------------------------------


def test_no_file_under_cassettes_holds_a_credential() -> None:
    files = [p for p in CASSETTES.rglob("*") if p.is_file()]
    assert files, "no cassettes found"
    bearer = re.compile(r"Bearer\s+(?!\*|<|\{)[\w.-]{8,}")
    query_key = re.compile(r"[?&](api[-_]?key|token|access_token|key)=(?!\*\*\*|&|$)", re.I)
    for path in files:
        text = path.read_text(errors="replace")
        assert_clean(text, str(path))
        assert not bearer.search(text), f"a bearer token in {path}"
        assert not query_key.search(text), f"a key in a URL in {path}"
        assert not re.search(r"(?im)^\s*-?\s*['\"]?(authorization|api-key)['\"]?\s*:", text), (
            f"an auth header in {path}"
        )


def test_a_recorded_cassette_holds_no_credential(server, tmp_path) -> None:
    from tests.unit_tests.test_cassettes import RECORDER

    path = tmp_path / "secrets.yaml"
    with RECORDER.use_cassette(str(path), record_mode="all"):
        with backend_for("openai", server) as backend:
            assert backend.generate("recorded").text == "Echo: recorded"
    assert path.exists()
    assert_clean(path.read_text(), "a freshly recorded cassette")


# -- the environment's key, TLS --------------------------------------------------------------


@pytest.mark.parametrize("cls", [ChatMatric, MatricLLM, MatricEmbeddings])
def test_env_key_not_sent_to_a_base_url_from_code(server, monkeypatch, cls) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    model_name = "test-embed" if cls is MatricEmbeddings else "test-model"
    model = cls(backend="openai", base_url=server.openai_base_url, model=model_name)
    if cls is MatricEmbeddings:
        model.embed_query("hi")
    else:
        model.invoke("hi")
    sent = server.last_request.headers
    assert "authorization" not in sent
    assert_clean(repr(sent), "request headers")
    model.close()
    # ...but an explicit key is sent, and so is the env key to an env-configured URL
    explicit = cls(backend="openai", base_url=server.openai_base_url, model=model_name, api_key="k")
    explicit.embed_query("hi") if cls is MatricEmbeddings else explicit.invoke("hi")
    assert server.last_request.headers["authorization"] == "Bearer k"
    explicit.close()
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    from_env = cls(backend="openai", model=model_name)
    from_env.embed_query("hi") if cls is MatricEmbeddings else from_env.invoke("hi")
    assert server.last_request.headers["authorization"] == f"Bearer {ENV_KEY}"
    from_env.close()


def test_backends_never_read_the_env_key(server, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    with OpenAIBackend(base_url=server.openai_base_url, model="test-model") as backend:
        backend.generate("hi")
    assert "authorization" not in server.last_request.headers


def test_tls_verification_on_by_default() -> None:
    for backend in (
        OpenAIBackend(base_url="https://example.invalid/v1", model="m"),
        OllamaBackend("https://example.invalid", model="m"),
    ):
        assert backend._config.verify is True
        context = client_settings(backend._config).ssl_context
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True


def test_tls_off_warns_exactly_once(server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    backend = OpenAIBackend(
        base_url=server.openai_base_url, api_key=KEY, model="test-model", verify_tls=False
    )
    backend.generate("one")
    list(backend.generate_stream("two"))
    asyncio.run(backend.agenerate("three"))
    backend.close()
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "TLS certificate verification is OFF" in warned[0].getMessage()
    assert warned[0].name == "langchain_matric"


def test_tls_off_from_the_environment_warns_once(server, monkeypatch, caplog) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("OPENAI_SKIP_TLS_VERIFY", "true")
    chat = ChatMatric(backend="openai", base_url=server.openai_base_url, model="test-model")
    chat.invoke("one")
    chat.invoke("two")
    list(chat.stream("three"))
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    chat.close()
