"""The LangChain classes, marking when an actor closed them (for tests/integration_tests/test_ray.py).

Ray pickles the model into each actor; these subclasses pickle by reference (this module,
on the actors' PYTHONPATH) and, once `aclose` has closed the async sessions, write a
file (so does `close`, what an actor that never ran a batch calls) into the directory
named by `MARKS_ENV`: proof that the actor closed its clients
on its own loop, which no log line gives reliably at an actor's exit.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from langchain_matric import ChatMatric, MatricEmbeddings, MatricLLM

MARKS_ENV = "LANGCHAIN_MATRIC_TEST_CLOSE_MARKS"

RAY_NOISE = r"ignore::DeprecationWarning:ray\.data\.context"
"""A warnings filter for Ray's own noise, nothing of ours: Ray Data 2.60's DataContext
warns about its own deprecated settings (`use_push_based_shuffle`, `use_polars`, ...)
whenever it is copied."""


def _mark(model: str | None) -> None:
    """A file named after the model (each test uses its own name)."""
    directory = os.environ.get(MARKS_ENV)
    if directory:
        (Path(directory) / f"{model}.{os.getpid()}.{uuid.uuid4().hex}").write_text("closed")


class _MarksClose:
    """Writes a mark when closed, so a test can count the actors that closed their model."""

    def close(self) -> None:  # an actor that never got a batch opened no async session
        super().close()  # the model class's
        _mark(self.model)

    async def aclose(self) -> None:
        await super().aclose()
        _mark(self.model)


class ClosingEmbeddings(_MarksClose, MatricEmbeddings):
    pass


class ClosingChat(_MarksClose, ChatMatric):
    pass


class ClosingLLM(_MarksClose, MatricLLM):
    pass
