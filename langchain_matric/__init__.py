"""langchain-matric: LangChain on OpenAI-compatible and Ollama servers via one small layer."""

__version__ = "0.1.0"

__all__ = ["__version__"]
