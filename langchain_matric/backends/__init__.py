"""Backends: the protocols, value types and the OpenAI-compatible and Ollama clients.

Example:
    >>> from langchain_matric.backends import GenerationRequest, StreamingGeneration
    >>> GenerationRequest.from_prompt("hi").messages[0].content
    'hi'
"""

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

__all__ = [
    "BaseBackend",
    "ChatMessage",
    "EmbeddingBackend",
    "Generation",
    "GenerationBackend",
    "GenerationDelta",
    "GenerationOptions",
    "GenerationRequest",
    "InferenceBackend",
    "StreamingGeneration",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]
