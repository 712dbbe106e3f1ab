"""Backend constructor arguments from an `InferenceConfig`.

Private to `langchain_matric.config`, which re-exports the public functions. The models
come from `_settings`, below both, so imports run one way: `config` -> this module ->
`_settings` -> `_config_load`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from langchain_matric._settings import InferenceConfig, _expected_dim
from langchain_matric.errors import ConfigurationError

BackendName = Literal["ollama", "openai", "azure"]
"""A backend `create_backend` can build; the defaults name only "ollama" or "openai"."""

BACKEND_NAMES: tuple[str, ...] = ("ollama", "openai", "azure")


def _timeouts(config: InferenceConfig, backend: str) -> Any:
    from langchain_matric._http import Timeouts  # noqa: PLC0415 - keep import light

    return Timeouts(**config.timeouts_kwargs(backend))


def ollama_backend_kwargs(config: InferenceConfig) -> dict[str, Any]:
    """Keyword arguments for `OllamaBackend(**kwargs)` from `config`."""
    s = config.ollama
    return {
        "base_url": s.base_url,
        "model": s.gen_model,
        "embed_model": s.embed_model,
        "embed_dimension": s.expected_embed_dim(),
        "timeouts": _timeouts(config, "ollama"),
        "max_retries": config.max_retries,
        "verify_tls": True,
        "keep_alive": s.keep_alive,
        "num_ctx": s.num_ctx,
        "think": s.think,
    }


def openai_backend_kwargs(config: InferenceConfig) -> dict[str, Any]:
    """Keyword arguments for `OpenAIBackend(**kwargs)` from the `openai` section."""
    s = config.openai
    return {
        "base_url": s.base_url,
        "api_key": s.api_key_for(None),
        "model": s.gen_model,
        "embed_model": s.embed_model,
        "embed_dimension": s.expected_embed_dim(),
        "timeouts": _timeouts(config, "openai"),
        "max_retries": config.max_retries,
        "verify_tls": not s.skip_tls_verify,
        "organization": s.organization,
        "project": s.project,
    }


def azure_backend_kwargs(config: InferenceConfig) -> dict[str, Any]:
    """Keyword arguments for `OpenAIBackend(**kwargs)` talking to Azure OpenAI.

    Deployments default to the `openai` section's model names; the expected vector
    size is that of `openai.embed_dim` when set, else of the default embedding model.

    Raises:
        ConfigurationError: No endpoint is configured.
    """
    az, oa = config.azure, config.openai
    if az.endpoint is None:
        msg = (
            "Azure OpenAI needs an endpoint: set AZURE_OPENAI_ENDPOINT or "
            "[inference.azure] endpoint (e.g. https://NAME.openai.azure.com)"
        )
        raise ConfigurationError(msg)
    deployment = az.deployment or oa.gen_model
    embed_deployment = az.embed_deployment or oa.embed_model
    default_embed = type(oa).model_fields["embed_model"].default
    return {
        "base_url": az.endpoint,
        "api_key": az.api_key_for(None),
        "model": deployment,
        "embed_model": embed_deployment,
        "embed_dimension": _expected_dim(oa, embed_deployment, default_embed),
        "timeouts": _timeouts(config, "azure"),
        "max_retries": config.max_retries,
        "verify_tls": not oa.skip_tls_verify,
        "azure_endpoint": az.endpoint,
        "api_version": az.api_version,
        "azure_deployment": deployment,
        "azure_embed_deployment": embed_deployment,
    }


def backend_kind(config: InferenceConfig, name: str) -> BackendName:
    """The backend `name` really means: "openai" means "azure" when `api_type="azure"`.

    Raises:
        ConfigurationError: `name` is not "ollama", "openai" or "azure" (any case).
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if key == "ollama":
        return "ollama"
    if key == "azure" or (key == "openai" and config.openai.api_type == "azure"):
        return "azure"
    if key == "openai":
        return "openai"
    valid = ", ".join(repr(n) for n in BACKEND_NAMES)
    msg = f"unknown backend {name!r}; valid names: {valid}"
    raise ConfigurationError(msg)


_KWARGS_BUILDERS: dict[str, Callable[[InferenceConfig], dict[str, Any]]] = {
    "ollama": ollama_backend_kwargs,
    "openai": openai_backend_kwargs,
    "azure": azure_backend_kwargs,
}


def backend_kwargs(
    config: InferenceConfig, name: str, **overrides: Any
) -> tuple[BackendName, dict[str, Any]]:
    """The backend kind for `name` and its constructor kwargs, with `overrides` applied.

    Overrides are constructor arguments and win, with three consequences: a `base_url`
    (Azure: `azure_endpoint`) without `api_key` gets only a key allowed to go there
    (`api_key_for`); a different `embed_model` without `embed_dimension` drops the
    expected dimension; for Azure, `model`/`embed_model` also name the deployments.

    Example:
        >>> from langchain_matric.config import InferenceConfig
        >>> cfg = InferenceConfig.load(env={"OPENAI_API_KEY": "sk-env"})
        >>> kind, kw = backend_kwargs(cfg, "openai", base_url="http://127.0.0.1:8000/v1")
        >>> kind, kw["api_key"], kw["base_url"]
        ('openai', None, 'http://127.0.0.1:8000/v1')
    """
    kind = backend_kind(config, name)
    kwargs = _KWARGS_BUILDERS[kind](config)
    merged = {**kwargs, **overrides}
    if kind == "azure":
        endpoint = overrides.get("azure_endpoint", overrides.get("base_url"))
        if endpoint is not None:
            merged["azure_endpoint"] = merged["base_url"] = endpoint
            if "api_key" not in overrides:
                merged["api_key"] = config.azure.api_key_for(endpoint)
        for given, deployment in (
            ("model", "azure_deployment"),
            ("embed_model", "azure_embed_deployment"),
        ):
            if given in overrides and deployment not in overrides:
                merged[deployment] = overrides[given]
    elif kind == "openai" and "base_url" in overrides and "api_key" not in overrides:
        merged["api_key"] = config.openai.api_key_for(overrides["base_url"])
    if (
        "embed_model" in overrides
        and "embed_dimension" not in overrides
        and overrides["embed_model"] != kwargs["embed_model"]
    ):
        merged["embed_dimension"] = None
    return kind, merged
