"""Inference configuration: which backend serves what, where it lives, and how long to wait.

`InferenceConfig.load()` layers four sources, highest first: explicit arguments, the
environment, a TOML file, defaults. Nothing is read at import time, and building an
`InferenceConfig(...)` directly reads neither the environment nor a file. A bad value
raises `ConfigurationError` naming the variable, or the file and key.

Environment variables (an empty value counts as unset):

    Variable                             Setting                 Default
    -----------------------------------  ----------------------  --------------------------
    MATRIC_CONFIG                        (the TOML file)         ./matric.toml, if present
    MATRIC_INFERENCE_DEFAULT_EMBEDDING   default_embedding       ollama
    MATRIC_INFERENCE_DEFAULT_GENERATION  default_generation      ollama
    MATRIC_MAX_RETRIES                   max_retries             2
    MATRIC_CONNECT_TIMEOUT               timeouts.connect        10 (seconds)
    MATRIC_FIRST_BYTE_TIMEOUT            timeouts.first_byte     300
    MATRIC_IDLE_TIMEOUT                  timeouts.idle           60 (between chunks)
    MATRIC_TOTAL_TIMEOUT                 timeouts.total          none (whole call)
    MATRIC_STALL_TIMEOUT                 timeouts.stall          300 (streams: no data)
    OLLAMA_BASE                          ollama.base_url         http://127.0.0.1:11434
    OLLAMA_HOST                          ollama.base_url         (if OLLAMA_BASE is unset)
    OLLAMA_EMBED_MODEL                   ollama.embed_model      nomic-embed-text
    OLLAMA_GEN_MODEL                     ollama.gen_model        gpt-oss:20b
    OLLAMA_EMBED_DIM                     ollama.embed_dim        768
    OPENAI_BASE_URL                      openai.base_url         https://api.openai.com/v1
    OPENAI_API_KEY                       openai.api_key          none
    OPENAI_EMBED_MODEL                   openai.embed_model      text-embedding-3-small
    OPENAI_GEN_MODEL                     openai.gen_model        gpt-4o-mini
    OPENAI_EMBED_DIM                     openai.embed_dim        1536
    OPENAI_TIMEOUT                       openai.timeout          timeouts.first_byte
    OPENAI_SKIP_TLS_VERIFY               openai.skip_tls_verify  false
    OPENAI_ORG_ID, OPENAI_ORGANIZATION   openai.organization     none
    OPENAI_PROJECT_ID                    openai.project          none
    OPENAI_API_TYPE                      openai.api_type         openai (or azure)
    AZURE_OPENAI_ENDPOINT                azure.endpoint          none
    AZURE_OPENAI_API_KEY                 azure.api_key           none
    OPENAI_API_VERSION,                  azure.api_version       2024-10-21
      AZURE_OPENAI_API_VERSION
    AZURE_OPENAI_DEPLOYMENT              azure.deployment        openai.gen_model
    AZURE_OPENAI_EMBED_DEPLOYMENT        azure.embed_deployment  openai.embed_model

Where two variables are listed, the first one set wins. Booleans accept true/false,
1/0, yes/no (any case); timeouts accept ``none`` for no limit. ``OLLAMA_HOST`` follows
Ollama's own rules: ``myhost`` means ``http://myhost:11434``, and the listen-everywhere
addresses ``0.0.0.0`` and ``::`` mean this machine.

The TOML file (``matric.toml`` in the current directory, or the path in ``MATRIC_CONFIG``,
which must exist) holds an ``[inference]`` table; other top-level tables are ignored, so the
table can live in a larger application file. Strings may use ``${VAR}`` and
``${VAR:-default}`` (``$${`` is a literal ``${``); an unknown key is an error::

    [inference]
    default_embedding = "ollama"
    default_generation = "openai"
    max_retries = 3

    [inference.openai]
    base_url = "http://127.0.0.1:8000/v1"
    api_key = "${VLLM_API_KEY}"
    gen_model = "Qwen/Qwen2.5-7B-Instruct"

    [inference.ollama]
    keep_alive = "10m"
    think = "low"

    [inference.timeouts]
    first_byte = 600
    total = "none"

API keys: a key from the environment or the file is sent only to OpenAI itself or to a base
URL that also came from the environment or the file, never to a ``base_url`` given in code
without a key (`resolve_openai_api_key`).
"""

from __future__ import annotations

from pydantic import SecretStr

from langchain_matric._config_kwargs import (
    BACKEND_NAMES as BACKEND_NAMES,  # noqa: PLC0414 - explicit re-export
)
from langchain_matric._config_kwargs import (
    BackendName,
    azure_backend_kwargs,
    backend_kind,
    backend_kwargs,
    ollama_backend_kwargs,
    openai_backend_kwargs,
)
from langchain_matric._config_load import (
    Source,
)
from langchain_matric._config_load import (
    normalize_ollama_host as normalize_ollama_host,  # noqa: PLC0414 - explicit re-export
)
from langchain_matric._settings import (
    DEFAULT_OLLAMA_BASE_URL as DEFAULT_OLLAMA_BASE_URL,  # noqa: PLC0414 - explicit re-export
)
from langchain_matric._settings import (
    DEFAULT_OPENAI_BASE_URL as DEFAULT_OPENAI_BASE_URL,  # noqa: PLC0414 - explicit re-export
)
from langchain_matric._settings import (
    AzureSettings,
    InferenceConfig,
    OllamaSettings,
    OpenAISettings,
    TimeoutSettings,
)

__all__ = [
    "AzureSettings",
    "BackendName",
    "InferenceConfig",
    "OllamaSettings",
    "OpenAISettings",
    "Source",
    "TimeoutSettings",
    "azure_backend_kwargs",
    "backend_kind",
    "backend_kwargs",
    "ollama_backend_kwargs",
    "openai_backend_kwargs",
    "resolve_azure_api_key",
    "resolve_openai_api_key",
]


def _explicit_key(key: str | SecretStr | None) -> SecretStr | None:
    text = key.get_secret_value() if isinstance(key, SecretStr) else key
    return SecretStr(text) if text else None


def resolve_openai_api_key(
    explicit_key: str | SecretStr | None,
    explicit_base_url: str | None,
    config: InferenceConfig | None = None,
) -> SecretStr | None:
    """The API key an OpenAI-compatible client should send, or None.

    An explicit key always wins (an explicit empty string means "no key"). Otherwise the
    configured key (`OPENAI_API_KEY`), but only toward OpenAI itself or a base URL that
    also came from the environment or the file — not toward `explicit_base_url`.

    Example:
        >>> cfg = InferenceConfig.load(env={"OPENAI_API_KEY": "sk-env"})
        >>> resolve_openai_api_key(None, None, cfg).get_secret_value()
        'sk-env'
        >>> resolve_openai_api_key(None, "http://127.0.0.1:8000/v1", cfg) is None
        True
    """
    if explicit_key is not None:
        return _explicit_key(explicit_key)
    config = InferenceConfig.load() if config is None else config
    return config.openai.api_key_for(explicit_base_url)


def resolve_azure_api_key(
    explicit_key: str | SecretStr | None,
    explicit_endpoint: str | None,
    config: InferenceConfig | None = None,
) -> SecretStr | None:
    """`resolve_openai_api_key` for Azure: `AZURE_OPENAI_API_KEY` and the endpoint."""
    if explicit_key is not None:
        return _explicit_key(explicit_key)
    config = InferenceConfig.load() if config is None else config
    return config.azure.api_key_for(explicit_endpoint)
