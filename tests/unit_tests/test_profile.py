"""Model profiles parsed from each server's own answer shape (`backends._profile`)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from langchain_matric import ChatMatric, MatricEmbeddings, MatricLLM
from langchain_matric.backends import OllamaBackend
from langchain_matric.backends._profile import (
    from_llamacpp_props,
    from_ollama_show,
    from_openai_models,
)

OLLAMA_SHOW = {  # Ollama 0.12 for qwen3-vl: the fields read, and some beside them
    "modelfile": "# Modelfile ...",
    "details": {"family": "qwen3vl", "parameter_size": "8.8B"},
    "model_info": {
        "general.architecture": "qwen3vl",
        "general.parameter_count": 8767123696,
        "qwen3vl.context_length": 262144,
        "qwen3vl.embedding_length": 4096,
        "qwen3vl.vision.block_count": 27,
    },
    "capabilities": ["completion", "vision", "tools", "thinking"],
}
LLAMACPP_PROPS = {  # llama-server's GET /props
    "default_generation_settings": {"n_ctx": 4096, "params": {"n_predict": -1}},
    "total_slots": 1,
    "model_path": "/models/tiny.gguf",
    "chat_template": "...",
    "modalities": {"vision": True, "audio": False},
    "build_info": "b6000-abc",
}
VLLM_MODELS = {
    "object": "list",
    "data": [
        {"id": "Qwen/Qwen3-8B", "object": "model", "owned_by": "vllm", "max_model_len": 32768},
        {"id": "lora-a", "object": "model", "parent": "Qwen/Qwen3-8B", "max_model_len": 32768},
    ],
}


def test_ollama_show() -> None:
    assert from_ollama_show(OLLAMA_SHOW) == {
        "max_input_tokens": 262144,
        "text_outputs": True,
        "tool_calling": True,
        "image_inputs": True,
        "reasoning_output": True,
    }


def test_ollama_embedding_model_has_no_text_outputs() -> None:
    show = {"model_info": {"bert.context_length": 512}, "capabilities": ["embedding"]}
    assert from_ollama_show(show) == {
        "max_input_tokens": 512,
        "text_outputs": False,
        "tool_calling": False,
        "image_inputs": False,
        "reasoning_output": False,
    }


@pytest.mark.parametrize(
    "show",
    [
        {},
        {"model_info": None, "capabilities": "tools"},
        {"model_info": {"x.context_length": "big", "y.context_length": 0}},
        [],
        None,
    ],
)
def test_ollama_show_without_usable_fields(show: object) -> None:
    assert from_ollama_show(show) == {}


def test_ollama_context_length_of_an_older_server_without_architecture() -> None:
    assert from_ollama_show({"model_info": {"llama.context_length": 8192}}) == {
        "max_input_tokens": 8192
    }


def test_llamacpp_props() -> None:
    assert from_llamacpp_props(LLAMACPP_PROPS) == {"max_input_tokens": 4096, "image_inputs": True}
    assert from_llamacpp_props({"default_generation_settings": {"n_ctx": True}}) == {}
    assert from_llamacpp_props("404 page not found") == {}


def test_vllm_models() -> None:
    assert from_openai_models(VLLM_MODELS, "lora-a") == {"max_input_tokens": 32768}
    assert from_openai_models(VLLM_MODELS, "missing") == {}
    assert from_openai_models({"data": [{"id": "only", "max_model_len": 2048}]}, None) == {
        "max_input_tokens": 2048
    }
    assert from_openai_models({"data": [{"id": "m"}]}, "m") == {}  # llama.cpp, OpenAI
    assert from_openai_models({"error": "x"}, "m") == {}


def test_default_instance_has_no_profile_and_no_capabilities() -> None:
    chat = ChatMatric(backend="openai", base_url="http://127.0.0.1:9/v1", model="m")
    assert chat.profile is None
    assert chat.capabilities is None


def test_a_given_profile_is_kept() -> None:
    chat = ChatMatric(backend="ollama", model="m", profile={"max_input_tokens": 10})
    assert chat.profile == {"max_input_tokens": 10}


@pytest.mark.parametrize("cls", [ChatMatric, MatricLLM, MatricEmbeddings])
def test_capabilities_reach_the_backend_built(cls: type) -> None:
    adapter = cls(backend="ollama", model="m", capabilities="learn")
    backend = adapter._resolve_backend("embedding" if cls is MatricEmbeddings else "generation")
    assert backend.capabilities == "learn"
    adapter.close()


def test_capabilities_with_a_backend_instance_is_refused() -> None:
    backend = OllamaBackend(model="m")
    with pytest.raises(ValidationError, match="capabilities cannot be combined"):
        ChatMatric(backend=backend, capabilities="auto")
    backend.close()
