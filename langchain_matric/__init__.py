"""langchain-matric: LangChain on OpenAI-compatible and Ollama servers via one small layer.

Example:
    >>> from langchain_matric import ChatMatric
    >>> chat = ChatMatric(backend="ollama", model="llama3.2")  # no network until first use
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from langchain_matric._version import __version__

if TYPE_CHECKING:
    from langchain_matric.chat_models import ChatMatric
    from langchain_matric.embeddings import MatricEmbeddings
    from langchain_matric.llms import MatricLLM

__all__ = ["ChatMatric", "MatricEmbeddings", "MatricLLM", "__version__"]

_LAZY = {
    "ChatMatric": "langchain_matric.chat_models",
    "MatricEmbeddings": "langchain_matric.embeddings",
    "MatricLLM": "langchain_matric.llms",
}


def __getattr__(name: str) -> Any:
    # Each class loads its module on first use, so `import langchain_matric` stays cheap.
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'langchain_matric' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
