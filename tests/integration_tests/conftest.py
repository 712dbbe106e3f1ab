"""Shared fixtures: a loopback server per test, and helpers that run sync or async."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from langchain_matric.backends import Generation, GenerationDelta
from langchain_matric.testing import LocalServer


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture
def servers() -> Iterator[list[LocalServer]]:
    """Three loopback servers, e.g. for an endpoint pool."""
    with LocalServer() as first, LocalServer() as second, LocalServer() as third:
        yield [first, second, third]


@pytest.fixture(params=[True, False], ids=["sync", "async"])
def sync(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


class Sleeps(list[float]):
    """Records retry waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


async def generate(backend: Any, sync: bool, request: Any) -> Generation:
    if sync:
        return backend.generate(request)  # type: ignore[no-any-return]
    return await backend.agenerate(request)  # type: ignore[no-any-return]


async def stream(backend: Any, sync: bool, request: Any) -> list[GenerationDelta]:
    if sync:
        return list(backend.generate_stream(request))
    return [delta async for delta in backend.agenerate_stream(request)]


async def embed(backend: Any, sync: bool, texts: list[str]) -> list[list[float]]:
    if sync:
        return backend.embed_texts(texts)  # type: ignore[no-any-return]
    return await backend.aembed_texts(texts)  # type: ignore[no-any-return]


async def health(backend: Any, sync: bool) -> bool:
    if sync:
        return backend.health_check()  # type: ignore[no-any-return]
    return await backend.ahealth_check()  # type: ignore[no-any-return]


def joined(deltas: list[GenerationDelta]) -> str:
    return "".join(d.text for d in deltas)
