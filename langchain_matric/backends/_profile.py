"""Model profiles from what a server says about its model, without I/O.

A profile is a plain dict with langchain-core's `ModelProfile` keys (`max_input_tokens`,
`tool_calling`, `image_inputs`, `reasoning_output`, `text_outputs`, ...), holding only
what the server reported: a key the server says nothing about is left out, never guessed.
The backends fetch the answers (`OpenAIBackend.model_profile`, `OllamaBackend.model_profile`);
`ChatMatric` puts the result in its `profile` (docs/architecture.md).

- Ollama `POST /api/show`: `model_info["<arch>.context_length"]` and `capabilities`
  ("completion", "tools", "vision", "thinking", "embedding", "insert").
- llama.cpp `GET /props` (server root): `default_generation_settings.n_ctx` and
  `modalities.vision`.
- vLLM `GET /v1/models`: each model's `max_model_len`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["from_llamacpp_props", "from_ollama_show", "from_openai_models"]


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def from_ollama_show(obj: Any) -> dict[str, Any]:
    """A profile from Ollama's `/api/show` answer.

    Example:
        >>> from_ollama_show({"model_info": {"general.architecture": "qwen3",
        ...     "qwen3.context_length": 40960}, "capabilities": ["completion", "tools"]})
        ... # doctest: +NORMALIZE_WHITESPACE
        {'max_input_tokens': 40960, 'text_outputs': True, 'tool_calling': True,
         'image_inputs': False, 'reasoning_output': False}
    """
    profile: dict[str, Any] = {}
    if not isinstance(obj, Mapping):
        return profile
    info = obj.get("model_info")
    if isinstance(info, Mapping):
        arch = info.get("general.architecture")
        keys = [f"{arch}.context_length"] if isinstance(arch, str) else []
        keys += sorted(k for k in info if isinstance(k, str) and k.endswith(".context_length"))
        for key in keys:
            if (length := _positive_int(info.get(key))) is not None:
                profile["max_input_tokens"] = length
                break
    caps = obj.get("capabilities")
    if isinstance(caps, list):
        names = {c for c in caps if isinstance(c, str)}
        profile["text_outputs"] = "completion" in names
        profile["tool_calling"] = "tools" in names
        profile["image_inputs"] = "vision" in names
        profile["reasoning_output"] = "thinking" in names
    return profile


def from_llamacpp_props(obj: Any) -> dict[str, Any]:
    """A profile from llama.cpp's `/props` answer (its context size and modalities).

    Example:
        >>> from_llamacpp_props({"default_generation_settings": {"n_ctx": 4096},
        ...                      "modalities": {"vision": False}})
        {'max_input_tokens': 4096, 'image_inputs': False}
        >>> from_llamacpp_props({"detail": "Not Found"})
        {}
    """
    profile: dict[str, Any] = {}
    if not isinstance(obj, Mapping):
        return profile
    settings = obj.get("default_generation_settings")
    if isinstance(settings, Mapping):
        n_ctx = _positive_int(settings.get("n_ctx"))
        if n_ctx is not None:
            profile["max_input_tokens"] = n_ctx
    modalities = obj.get("modalities")
    if isinstance(modalities, Mapping) and isinstance(modalities.get("vision"), bool):
        profile["image_inputs"] = modalities["vision"]
    return profile


def from_openai_models(obj: Any, model: str | None) -> dict[str, Any]:
    """A profile from `GET /models`: vLLM's `max_model_len` for `model` (else the only model).

    Example:
        >>> body = {"data": [{"id": "qwen", "max_model_len": 32768}, {"id": "other"}]}
        >>> from_openai_models(body, "qwen")
        {'max_input_tokens': 32768}
        >>> from_openai_models(body, "other")
        {}
    """
    data = obj.get("data") if isinstance(obj, Mapping) else None
    if not isinstance(data, list):
        return {}
    entries = [e for e in data if isinstance(e, Mapping)]
    chosen = [e for e in entries if e.get("id") == model]
    if not chosen and len(entries) == 1:
        chosen = entries
    if not chosen:
        return {}
    length = _positive_int(chosen[0].get("max_model_len"))
    return {} if length is None else {"max_input_tokens": length}
