"""Mistakes a newcomer makes on the first line: each refused with the field and the fix.

The LangChain classes raise pydantic's `ValidationError` (LangChain's convention); the
backends and the configuration raise `ConfigurationError`.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from langchain_matric.backends import OllamaBackend, OpenAIBackend
from langchain_matric.chat_models import ChatMatric
from langchain_matric.config import OllamaSettings
from langchain_matric.embeddings import MatricEmbeddings
from langchain_matric.errors import ConfigurationError
from langchain_matric.llms import MatricLLM

ALL_CLASSES = [ChatMatric, MatricLLM, MatricEmbeddings]


def refusal(cls: type, **kwargs: Any) -> str:
    """The one error message of constructing `cls(**kwargs)`."""
    with pytest.raises(ValidationError) as info:
        cls(**kwargs)
    [error] = info.value.errors()
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


@pytest.mark.parametrize("cls", ALL_CLASSES)
@pytest.mark.parametrize("model", ["", "   ", "\t"])
def test_an_empty_model_is_refused(cls: type, model: str) -> None:
    # It used to run with the configured default model, silently.
    message = refusal(cls, backend="ollama", model=model)
    assert message.startswith(f"model: Value error, model={model!r} is empty: pass a model name")
    assert "or leave model out to use the configured default" in message


def test_the_empty_model_fix_names_a_model_of_the_right_kind() -> None:
    assert "model='llama3.2'" in refusal(ChatMatric, model="")
    assert "model='nomic-embed-text'" in refusal(MatricEmbeddings, model="")


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_a_misspelt_backend_gets_a_suggestion(cls: type) -> None:
    message = refusal(cls, backend="olama")
    assert message == (
        "backend: Value error, backend='olama' is unknown: did you mean 'ollama'? Use 'openai' "
        "(any OpenAI-compatible server: vLLM, llama.cpp, LM Studio, ...), 'ollama' or a "
        "backend instance"
    )


def test_a_server_name_as_backend_points_at_openai() -> None:
    message = refusal(ChatMatric, backend="vllm")
    assert "did you mean" not in message
    assert "use 'openai' (any OpenAI-compatible server: vLLM" in message


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_a_negative_timeout_names_the_fix(cls: type) -> None:
    assert refusal(cls, timeout=-1) == (
        "timeout: Value error, timeout=-1.0 must be a positive number of seconds "
        "(e.g. timeout=60), or None for the configured timeouts"
    )


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_negative_retries_name_the_fix(cls: type) -> None:
    assert refusal(cls, max_retries=-1) == (
        "max_retries: Value error, max_retries=-1 must be 0 or more (0: no retries), or None"
    )


@pytest.mark.parametrize("cls", [ChatMatric, MatricLLM])
def test_an_unknown_keyword_gets_a_suggestion_and_model_kwargs(cls: type) -> None:
    name = cls.__name__
    assert refusal(cls, tempreture=0.2) == (
        f"tempreture: tempreture is not an argument of {name}: did you mean 'temperature'? "
        "A provider parameter goes in model_kwargs={'tempreture': ...}"
    )
    assert refusal(cls, mirostat=2) == (
        f"mirostat: mirostat is not an argument of {name}: a provider parameter goes in "
        "model_kwargs={'mirostat': ...}"
    )


def test_a_reserved_keyword_is_not_sent_to_model_kwargs() -> None:
    assert refusal(ChatMatric, stream=True) == (
        "stream: stream is not an argument of ChatMatric: did you mean 'streaming'? "
        "See help(ChatMatric) for its arguments"
    )


def test_an_unknown_keyword_of_the_embeddings() -> None:
    assert refusal(MatricEmbeddings, modle="nomic-embed-text") == (
        "modle: modle is not an argument of MatricEmbeddings: did you mean 'model'? "
        "See help(MatricEmbeddings) for its arguments"
    )


def test_every_mistake_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        ChatMatric(temperature="hot", tempreture=0.2)
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [
        (("temperature",), "float_parsing"),
        (("tempreture",), "extra_forbidden"),
    ]


@pytest.mark.parametrize(
    ("backend", "default"), [(OpenAIBackend, "gpt-4o-mini"), (OllamaBackend, "gpt-oss:20b")]
)
@pytest.mark.parametrize("model", ["", "  ", None])
def test_backends_refuse_an_empty_model(backend: type, default: str, model: str | None) -> None:
    with pytest.raises(ConfigurationError) as info:
        backend(model=model)
    assert str(info.value) == (
        f"{backend.__name__}: model={model!r} is not a model name: pass one the server serves "
        f"(e.g. model={default!r})"
    )


@pytest.mark.parametrize("backend", [OpenAIBackend, OllamaBackend])
@pytest.mark.parametrize("embed_model", ["", " "])
def test_backends_refuse_an_empty_embed_model(backend: type, embed_model: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"embed_model={embed_model!r} is not a model"):
        backend(model="m", embed_model=embed_model)


def test_configuration_refuses_an_empty_model_name() -> None:
    with pytest.raises(ConfigurationError, match="gen_model='': must be a non-empty name"):
        OllamaSettings(gen_model="")
