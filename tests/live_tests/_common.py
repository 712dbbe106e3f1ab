"""Names and helpers shared by the live tests and their cassette replay."""

from __future__ import annotations

from typing import Any

from langchain_matric.backends import GenerationOptions, GenerationRequest
from langchain_matric.backends.openai import OpenAIBackend
from tests.live_tests._recording import API_KEY

CHAT_MODEL = "tiny-chat"
EMBED_MODEL = "tiny-embed"
TOOLS_MODEL = "tiny-tools"
MODELS = [CHAT_MODEL, EMBED_MODEL, TOOLS_MODEL]
N_CTX = 512
EMBED_DIM = 64
SEED = 7

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        # Enums and booleans only: grammar-constrained random weights still close the JSON.
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Oslo", "Paris"]},
                "metric": {"type": "boolean"},
            },
            "required": ["city", "metric"],
        },
    },
}


def backend(base_url: str, model: str = CHAT_MODEL, **kwargs: Any) -> OpenAIBackend:
    """An `OpenAIBackend` on the live (or replayed) server."""
    kwargs.setdefault("max_retries", 0)
    return OpenAIBackend(
        base_url=base_url, api_key=API_KEY, model=model, embed_model=EMBED_MODEL, **kwargs
    )


def options(max_tokens: int = 24, **kwargs: Any) -> GenerationOptions:
    """Deterministic options: temperature 0, a seed, and always `max_tokens`."""
    return GenerationOptions(temperature=0.0, seed=SEED, max_tokens=max_tokens, **kwargs)


def ask(prompt: str = "Tell me a story.", **kwargs: Any) -> GenerationRequest:
    """A one-turn chat request with deterministic options."""
    return GenerationRequest.from_prompt(prompt, system="Be brief.", options=options(**kwargs))


def stop_word(text: str) -> str:
    """Three characters from inside `text`, free of spaces at either end, to stop on."""
    for start in range(6, len(text) - 3):
        piece = text[start : start + 3]
        if piece.strip() == piece:
            return piece
    msg = f"no stop word in {text!r}"
    raise AssertionError(msg)


def long_prompt() -> str:
    """A prompt well past the server's context window."""
    return " ".join(f"word{i}" for i in range(N_CTX * 2))
