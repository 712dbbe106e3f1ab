"""BackendSelector and create_backend, with fake backend classes."""

from __future__ import annotations

import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from langchain_matric.backends import _selector
from langchain_matric.backends._selector import BackendSelector, create_backend
from langchain_matric.config import InferenceConfig, backend_kwargs
from langchain_matric.errors import ConfigurationError


@dataclass(frozen=True)
class FakeTimeouts:
    connect: float | None = 10.0
    first_byte: float | None = 300.0
    idle: float | None = 60.0
    total: float | None = None


class FakeBackend:
    """Records its constructor arguments and how often it was closed."""

    kind = "?"

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.closed = 0
        self.aclosed = 0

    def close(self) -> None:
        self.closed += 1

    async def aclose(self) -> None:
        self.aclosed += 1


class FakeOllama(FakeBackend):
    kind = "ollama"


class FakeOpenAI(FakeBackend):
    kind = "openai"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_TYPE", "MATRIC_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name in ("MATRIC_INFERENCE_DEFAULT_GENERATION", "MATRIC_INFERENCE_DEFAULT_EMBEDDING"):
        monkeypatch.delenv(name, raising=False)
    classes = {"ollama": FakeOllama, "openai": FakeOpenAI, "azure": FakeOpenAI}
    monkeypatch.setattr(_selector, "_load_class", classes.__getitem__)
    try:
        from langchain_matric._http import Timeouts  # noqa: F401
    except ImportError:  # the transport module is not there yet: stand in for Timeouts
        fake = types.ModuleType("langchain_matric._http")
        fake.Timeouts = FakeTimeouts  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "langchain_matric._http", fake)


def load(env: dict[str, str] | None = None, **overrides: Any) -> InferenceConfig:
    return InferenceConfig.load(env=env or {}, **overrides)


def test_same_backend_for_both_kinds_is_one_instance() -> None:
    selector = BackendSelector(load())
    emb, gen = selector.embedding(), selector.generation()
    assert emb is gen
    assert isinstance(emb, FakeOllama)
    assert emb.kwargs["model"] == "gpt-oss:20b"
    assert emb.kwargs["embed_model"] == "nomic-embed-text"
    assert selector.get("OLLAMA") is emb


def test_different_backends_and_caching() -> None:
    selector = BackendSelector(load(default_generation="openai"))
    emb, gen = selector.embedding(), selector.generation()
    assert isinstance(emb, FakeOllama)
    assert isinstance(gen, FakeOpenAI)
    assert selector.generation() is gen
    assert selector.embedding() is emb
    assert repr(selector) == "BackendSelector(embedding='ollama', generation='openai')"


def test_openai_with_api_type_azure_builds_the_azure_backend() -> None:
    env = {"OPENAI_API_TYPE": "azure", "AZURE_OPENAI_ENDPOINT": "https://me.openai.azure.com"}
    selector = BackendSelector(load(env, default_generation="openai"))
    gen = selector.generation()
    assert isinstance(gen, FakeOpenAI)
    assert gen.kwargs["azure_endpoint"] == "https://me.openai.azure.com"
    assert selector.get("azure") is gen


def test_unknown_name() -> None:
    with pytest.raises(ConfigurationError, match="valid names: 'ollama', 'openai', 'azure'"):
        BackendSelector(load()).get("vllm")


def test_close_closes_each_once_and_allows_rebuilding() -> None:
    selector = BackendSelector(load(default_generation="openai"))
    emb, gen = selector.embedding(), selector.generation()
    selector.close()
    assert (emb.closed, gen.closed) == (1, 1)
    selector.close()
    assert (emb.closed, gen.closed) == (1, 1)
    assert selector.embedding() is not emb


def test_close_closes_all_even_if_one_fails() -> None:
    selector = BackendSelector(load(default_generation="openai"))
    emb, gen = selector.embedding(), selector.generation()

    def boom() -> None:
        raise RuntimeError("boom")

    emb.close = boom  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="boom"):
        selector.close()
    assert gen.closed == 1


async def test_aclose_and_async_context_manager() -> None:
    async with BackendSelector(load(default_generation="openai")) as selector:
        emb, gen = selector.embedding(), selector.generation()
    assert (emb.aclosed, gen.aclosed) == (1, 1)


async def test_aclose_closes_all_even_if_one_fails() -> None:
    selector = BackendSelector(load(default_generation="openai"))
    emb, gen = selector.embedding(), selector.generation()

    async def boom() -> None:
        raise RuntimeError("boom")

    emb.aclose = boom  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="boom"):
        await selector.aclose()
    assert gen.aclosed == 1


def test_sync_context_manager() -> None:
    with BackendSelector(load()) as selector:
        backend = selector.generation()
    assert backend.closed == 1


def test_threads_get_one_instance() -> None:
    selector = BackendSelector(load())
    seen: list[Any] = []
    threads = [
        threading.Thread(target=lambda: seen.append(selector.generation())) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in seen}) == 1


def test_selector_without_config_loads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATRIC_INFERENCE_DEFAULT_GENERATION", "openai")
    monkeypatch.setenv("OPENAI_GEN_MODEL", "from-env")
    gen = BackendSelector().generation()
    assert isinstance(gen, FakeOpenAI)
    assert gen.kwargs["model"] == "from-env"


# -- create_backend ---------------------------------------------------------------------


def test_create_backend_default_name_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(create_backend(), FakeOllama)
    assert isinstance(create_backend(load(default_generation="openai")), FakeOpenAI)
    monkeypatch.setenv("OLLAMA_GEN_MODEL", "env-model")
    backend = create_backend("ollama", num_ctx=2048)
    assert isinstance(backend, FakeOllama)
    assert backend.kwargs["model"] == "env-model"
    assert backend.kwargs["num_ctx"] == 2048
    assert create_backend("ollama", model="m").kwargs["model"] == "m"
    assert create_backend("ollama") is not create_backend("ollama")


def test_create_backend_withholds_env_key_from_a_code_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert create_backend("openai").kwargs["api_key"] == SecretStr("sk-env")
    moved = create_backend("openai", base_url="http://127.0.0.1:8000/v1")
    assert moved.kwargs["api_key"] is None
    own = create_backend("openai", base_url="http://127.0.0.1:8000/v1", api_key="tok")
    assert own.kwargs["api_key"] == "tok"
    assert create_backend("openai", base_url="https://api.openai.com/v1").kwargs[
        "api_key"
    ] == SecretStr("sk-env")


def test_create_backend_unknown_name() -> None:
    with pytest.raises(ConfigurationError, match="unknown backend 'tgi'"):
        create_backend("tgi")


# -- overrides in backend_kwargs ---------------------------------------------------------


def test_override_embed_model_drops_the_default_dimension() -> None:
    cfg = load()
    assert backend_kwargs(cfg, "openai")[1]["embed_dimension"] == 1536
    kw = backend_kwargs(cfg, "openai", embed_model="text-embedding-3-large")[1]
    assert kw["embed_dimension"] is None
    kw = backend_kwargs(cfg, "openai", embed_model="text-embedding-3-large", embed_dimension=3072)[
        1
    ]
    assert kw["embed_dimension"] == 3072
    kw = backend_kwargs(cfg, "ollama", embed_model="nomic-embed-text")[1]
    assert kw["embed_dimension"] == 768


def test_azure_overrides() -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://me.openai.azure.com",
        "AZURE_OPENAI_API_KEY": "az",
        "AZURE_OPENAI_DEPLOYMENT": "dep",
    }
    cfg = load(env)
    kind, kw = backend_kwargs(cfg, "azure", model="gpt-4o", embed_model="emb")
    assert kind == "azure"
    assert (kw["model"], kw["azure_deployment"]) == ("gpt-4o", "gpt-4o")
    assert (kw["embed_model"], kw["azure_embed_deployment"]) == ("emb", "emb")
    assert kw["api_key"] == SecretStr("az")
    _, kw = backend_kwargs(cfg, "azure", base_url="https://other.openai.azure.com")
    assert kw["azure_endpoint"] == kw["base_url"] == "https://other.openai.azure.com"
    assert kw["api_key"] is None
    _, kw = backend_kwargs(cfg, "azure", azure_endpoint="https://me.openai.azure.com/")
    assert kw["api_key"] == SecretStr("az")
    _, kw = backend_kwargs(cfg, "azure", azure_endpoint="https://x.example", api_key="k")
    assert kw["api_key"] == "k"


def test_real_classes_are_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real _load_class and _http
    for module in ("langchain_matric.backends.ollama", "langchain_matric.backends.openai"):
        pytest.importorskip(module, reason="the transport is not there yet", exc_type=ImportError)
    from langchain_matric.backends.ollama import OllamaBackend
    from langchain_matric.backends.openai import OpenAIBackend

    assert _selector._load_class("ollama") is OllamaBackend
    assert _selector._load_class("openai") is OpenAIBackend
    assert _selector._load_class("azure") is OpenAIBackend
