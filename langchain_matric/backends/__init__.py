"""Backends: the protocols, value types and the OpenAI-compatible and Ollama clients.

Example:
    >>> from langchain_matric.backends import GenerationRequest, StreamingGeneration
    >>> GenerationRequest.from_prompt("hi").messages[0].content
    'hi'
"""

from typing import TYPE_CHECKING, Any

from langchain_matric.backends._protocols import (
    BaseBackend,
    EmbeddingBackend,
    GenerationBackend,
    InferenceBackend,
    StreamingGeneration,
)
from langchain_matric.backends._types import (
    ChatMessage,
    Generation,
    GenerationDelta,
    GenerationOptions,
    GenerationRequest,
    ToolCall,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from langchain_matric._http import RetryPolicy, Timeouts
    from langchain_matric.backends._selector import BackendSelector, create_backend
    from langchain_matric.backends.ollama import OllamaBackend
    from langchain_matric.backends.openai import OpenAIBackend

__all__ = [
    "BackendSelector",
    "BaseBackend",
    "ChatMessage",
    "EmbeddingBackend",
    "Generation",
    "GenerationBackend",
    "GenerationDelta",
    "GenerationOptions",
    "GenerationRequest",
    "InferenceBackend",
    "OllamaBackend",
    "OpenAIBackend",
    "RetryPolicy",
    "StreamingGeneration",
    "Timeouts",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "create_backend",
]

_LAZY = {
    "BackendSelector": "langchain_matric.backends._selector",
    "create_backend": "langchain_matric.backends._selector",
    "OllamaBackend": "langchain_matric.backends.ollama",
    "OpenAIBackend": "langchain_matric.backends.openai",
    "RetryPolicy": "langchain_matric._http",
    "Timeouts": "langchain_matric._http",
}


def __getattr__(name: str) -> Any:
    # The HTTP backends load httpx on first use only.
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'langchain_matric.backends' has no attribute {name!r}"
        raise AttributeError(msg)
    from importlib import import_module  # noqa: PLC0415

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
