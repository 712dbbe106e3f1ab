"""`prefix_affinity` on `ChatMatric` and `MatricLLM`: validated, carried to the backend
they build, in the backend cache key and `_identifying_params`; refused with a backend
instance and on `MatricEmbeddings` (docs/architecture.md, "Endpoint pools")."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from langchain_matric import ChatMatric, MatricEmbeddings, MatricLLM
from langchain_matric.backends import OpenAIBackend

A, B = "http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"

CLASSES = [ChatMatric, MatricLLM]


def refusal(cls: type, **kwargs: Any) -> str:
    with pytest.raises(ValidationError) as info:
        cls(**kwargs)
    [error] = info.value.errors()
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


@pytest.mark.parametrize("cls", CLASSES)
def test_it_reaches_the_pool_of_the_backend_built(cls: type) -> None:
    model = cls(backend="openai", base_url=[A, B], model="m", prefix_affinity=2)
    backend = model._generation_backend()
    assert backend._pool is not None and backend._pool.prefix_affinity == 2
    ollama = cls(backend="ollama", base_url=["http://127.0.0.1:1", "http://127.0.0.1:2"])
    assert ollama._generation_backend()._pool.prefix_affinity == 0  # off by default
    model.close()


@pytest.mark.parametrize("cls", CLASSES)
def test_one_url_ignores_it(cls: type) -> None:
    backend = cls(backend="openai", base_url=A, model="m", prefix_affinity=1)._generation_backend()
    assert backend._pool is None and backend.endpoint_stats() == {}


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("value", [-1, True, 1.5, "2", None])
def test_anything_but_a_count_is_refused_with_the_fix(cls: type, value: object) -> None:
    message = refusal(cls, backend="openai", prefix_affinity=value)
    assert message.startswith(
        f"prefix_affinity: Value error, prefix_affinity={value!r} must be a number of "
        "leading messages, 0 or more (0: off; e.g. prefix_affinity=1"
    )


@pytest.mark.parametrize("cls", CLASSES)
def test_identifying_params_show_it_when_set(cls: type) -> None:
    on = cls(backend="openai", base_url=[A, B], model="m", prefix_affinity=1)
    off = cls(backend="openai", base_url=[A, B], model="m")
    assert on._identifying_params["prefix_affinity"] == 1
    assert "prefix_affinity" not in off._identifying_params


def test_a_copy_with_another_affinity_gets_its_own_backend() -> None:
    model = ChatMatric(backend="openai", base_url=[A, B], model="m")
    same = model.model_copy()
    other = model.model_copy(update={"prefix_affinity": 3})
    assert same._generation_backend() is model._generation_backend()
    assert other._generation_backend() is not model._generation_backend()
    assert other._generation_backend()._pool.prefix_affinity == 3
    model.close()
    other.close()


@pytest.mark.parametrize("cls", CLASSES)
def test_with_a_backend_instance_configure_the_instance(cls: type) -> None:
    with OpenAIBackend([A, B], model="m") as backend:
        message = refusal(cls, backend=backend, prefix_affinity=1)
        assert "prefix_affinity cannot be combined with a backend instance" in message
        assert cls(backend=backend, prefix_affinity=0).prefix_affinity == 0


def test_embeddings_have_no_prefix_affinity() -> None:
    # An embeddings batch has no conversation whose prefix a replica could cache.
    assert "prefix_affinity" in refusal(MatricEmbeddings, prefix_affinity=1)


def test_it_round_trips_through_a_dump() -> None:
    model = ChatMatric(backend="openai", base_url=[A, B], model="m", prefix_affinity=2)
    assert ChatMatric(**model.model_dump(exclude_none=True)).prefix_affinity == 2
