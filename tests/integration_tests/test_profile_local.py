"""`ChatMatric.profile` from what the local server says, only when asked.

`capabilities="auto"` fills it when the model is created; `load_profile()` /
`aload_profile()` fill it on demand; a default instance sends no request for it.
"""

from __future__ import annotations

from typing import Any

import pytest

from langchain_matric import ChatMatric
from langchain_matric.backends import OllamaBackend, OpenAIBackend
from langchain_matric.testing import Fault, LocalServer, ServerOptions

PROFILE_PATHS = {"/api/show", "/props", "/v1/models"}

OLLAMA_PROFILE = {
    "max_input_tokens": 2048,
    "text_outputs": True,
    "tool_calling": True,
    "image_inputs": False,
    "reasoning_output": True,
}


def make(server: LocalServer, backend: str, **kw: Any) -> ChatMatric:
    url = server.ollama_base_url if backend == "ollama" else server.openai_base_url
    return ChatMatric(backend=backend, base_url=url, model="test-model", **kw)


@pytest.fixture
def vllm() -> Any:
    with LocalServer(ServerOptions(context_length=2048)) as running:
        yield running


@pytest.fixture
def llamacpp() -> Any:
    with LocalServer(ServerOptions(context_length=2048, max_model_len=False)) as running:
        yield running


@pytest.mark.parametrize("backend", ["openai", "ollama"])
def test_a_default_instance_asks_nothing(vllm: LocalServer, backend: str) -> None:
    chat = make(vllm, backend)
    assert chat.profile is None
    assert vllm.requests == []
    chat.invoke("hi")
    list(chat.stream("hi"))
    chat.close()
    assert not PROFILE_PATHS & {r.path for r in vllm.requests}
    assert chat.profile is None


def test_auto_fills_from_ollama_show(vllm: LocalServer) -> None:
    chat = make(vllm, "ollama", capabilities="auto")
    assert chat.profile == OLLAMA_PROFILE
    assert [(r.path, r.json) for r in vllm.requests] == [("/api/show", {"model": "test-model"})]
    chat.close()


def test_auto_fills_from_vllm_max_model_len(vllm: LocalServer) -> None:
    chat = make(vllm, "openai", capabilities="auto")
    assert chat.profile == {"max_input_tokens": 2048}
    assert [r.path for r in vllm.requests] == ["/v1/models"]
    chat.close()


def test_auto_fills_from_llamacpp_props(llamacpp: LocalServer) -> None:
    chat = make(llamacpp, "openai", capabilities="auto")
    assert chat.profile == {"max_input_tokens": 2048, "image_inputs": False}
    assert [r.path for r in llamacpp.requests] == ["/v1/models", "/props"]
    assert chat.invoke("hi").content == "Echo: hi"  # the backend's own probe still runs
    chat.close()


def test_a_server_without_props_gives_an_empty_profile(llamacpp: LocalServer) -> None:
    llamacpp.fault(Fault(status=404, path="/props", body="Not Found"))
    chat = make(llamacpp, "openai")
    assert chat.load_profile() == {}
    chat.close()


def test_auto_with_an_unreachable_server_leaves_none() -> None:
    with LocalServer() as server:
        url = server.openai_base_url
    chat = ChatMatric(backend="openai", base_url=url, model="m", capabilities="auto", max_retries=0)
    assert chat.profile is None
    chat.close()


@pytest.mark.parametrize("backend", ["openai", "ollama"])
async def test_explicit_load_sync_and_async(vllm: LocalServer, backend: str) -> None:
    chat = make(vllm, backend, profile={"structured_output": True})
    expected = OLLAMA_PROFILE if backend == "ollama" else {"max_input_tokens": 2048}
    assert chat.load_profile() == {"structured_output": True, **expected}
    assert chat.profile == {"structured_output": True, **expected}
    assert await chat.aload_profile() == {"structured_output": True, **expected}
    await chat.aclose()
    chat.close()


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_backend_instance_with_auto(vllm: LocalServer, kind: str) -> None:
    backend: OpenAIBackend | OllamaBackend
    if kind == "ollama":
        backend = OllamaBackend(
            base_url=vllm.ollama_base_url, model="test-model", capabilities="auto"
        )
    else:
        backend = OpenAIBackend(
            base_url=vllm.openai_base_url, model="test-model", capabilities="auto"
        )
    chat = ChatMatric(backend=backend)
    assert chat.profile is not None
    assert chat.profile["max_input_tokens"] == 2048
    backend.close()
