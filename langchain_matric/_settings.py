"""The settings models: `InferenceConfig` and its sections, and where API keys may go.

Public through `langchain_matric.config` (see its docstring for the layering of arguments,
environment, file and defaults); `_config_kwargs` turns these models into backend
constructor arguments, and `_config_load` reads the layers for them.

Example:
    >>> from langchain_matric._settings import OllamaSettings
    >>> OllamaSettings().base_url
    'http://127.0.0.1:11434'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
)

from langchain_matric._config_load import (
    Source,
    _api_type,
    _backend,
    _code_layer,
    _config_path,
    _configuration_error,
    _env_layer,
    _file_layer,
    _flag,
    _keep_alive,
    _name,
    _optional_name,
    _optional_positive_int,
    _optional_seconds,
    _optional_url,
    _Origin,
    _positive_int,
    _redact_userinfo,
    _retries,
    _Schema,
    _secret,
    _think,
    _timeout_override,
    _url,
    _urls,
)

__all__ = [
    "DEFAULT_OLLAMA_BASE_URL",
    "DEFAULT_OPENAI_BASE_URL",
    "AzureSettings",
    "InferenceConfig",
    "OllamaSettings",
    "OpenAISettings",
    "TimeoutSettings",
]

logger = logging.getLogger("langchain_matric.config")  # the public module's name

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OLLAMA_BASE_URL = "http://127.0.0.1:11434"


_Name = Annotated[str, BeforeValidator(_name)]
_OptionalName = Annotated[str | None, BeforeValidator(_optional_name)]
_Secret = Annotated[SecretStr | None, BeforeValidator(_secret)]
_PositiveInt = Annotated[int, BeforeValidator(_positive_int)]
_Seconds = Annotated[float | None, BeforeValidator(_optional_seconds)]
_Url = Annotated[str, BeforeValidator(_url)]
_Urls = Annotated[str | tuple[str, ...], BeforeValidator(_urls)]
_OptionalUrl = Annotated[str | None, BeforeValidator(_optional_url)]
_Flag = Annotated[bool, BeforeValidator(_flag)]


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


class _Settings(BaseModel):
    """Shared behaviour: immutable, no unknown fields, provenance, no raw ValidationError."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, hide_input_in_errors=True
    )
    _sources: dict[str, tuple[Source, Any]] = PrivateAttr(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _configuration_error(exc, {}, type(self).__name__, _SCHEMA) from exc

    # Nested sections are then built by pydantic-core directly, not through this __init__
    # (as pydantic-settings does), so their errors keep their full location.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """Validate `obj`, raising `ConfigurationError` (not `ValidationError`)."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _configuration_error(exc, {}, cls.__name__, _SCHEMA) from exc

    def source(self, field: str) -> Source:
        """Where `field`'s current value came from: "default", "file", "env" or "code".

        A value changed after loading (`model_copy(update=...)`) counts as "code".
        """
        value = getattr(self, field)
        recorded = self._sources.get(field)
        if recorded is not None and recorded[1] == value:
            return recorded[0]
        default = type(self).model_fields[field].default
        if recorded is None and field not in self.model_fields_set and value == default:
            return "default"
        return "code"

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (_redact_userinfo(value) if isinstance(value, str) else value)


class OllamaSettings(_Settings):
    """Where the Ollama server is and which models it serves.

    Example:
        >>> s = OllamaSettings(base_url="http://gpu-box:11434", gen_model="llama3.1:8b")
        >>> s.embed_model, s.expected_embed_dim()
        ('nomic-embed-text', 768)
    """

    base_url: _Urls = DEFAULT_OLLAMA_BASE_URL
    """Server root, without `/api` (`OLLAMA_BASE`, else `OLLAMA_HOST`); several roots
    (comma-separated, a TOML array) make an endpoint pool."""
    embed_model: _Name = "nomic-embed-text"
    """Embedding model (`OLLAMA_EMBED_MODEL`)."""
    gen_model: _Name = "gpt-oss:20b"
    """Generation model (`OLLAMA_GEN_MODEL`)."""
    embed_dim: _PositiveInt = 768
    """Vector size of `embed_model` (`OLLAMA_EMBED_DIM`); checked only when set or default."""
    keep_alive: Annotated[str | int | float | None, BeforeValidator(_keep_alive)] = None
    """How long the server keeps the model loaded: seconds or a duration like "5m"."""
    num_ctx: Annotated[int | None, BeforeValidator(_optional_positive_int)] = None
    """Context window to request (`options.num_ctx`); None keeps the server's."""
    think: Annotated[bool | Literal["low", "medium", "high"] | None, BeforeValidator(_think)] = None
    """Reasoning switch for thinking models: true/false or "low"/"medium"/"high"."""

    def expected_embed_dim(self) -> int | None:
        """`embed_dim` when it was set or `embed_model` is the default model, else None."""
        default_model = type(self).model_fields["embed_model"].default
        return _expected_dim(self, self.embed_model, default_model)


class OpenAISettings(_Settings):
    """An OpenAI-compatible server: OpenAI, vLLM, llama.cpp, LM Studio, Ollama's /v1 ...

    Example:
        >>> s = OpenAISettings(base_url="http://127.0.0.1:8000/v1", api_key="tok")
        >>> s.api_key, s.api_key_for(None).get_secret_value()
        (SecretStr('**********'), 'tok')
    """

    base_url: _Urls = DEFAULT_OPENAI_BASE_URL
    """API root including `/v1` (`OPENAI_BASE_URL`); several (comma-separated, a TOML
    array) make an endpoint pool."""
    api_key: _Secret = None
    """Bearer token (`OPENAI_API_KEY`); see `api_key_for` for where it may be sent."""
    embed_model: _Name = "text-embedding-3-small"
    """Embedding model (`OPENAI_EMBED_MODEL`)."""
    gen_model: _Name = "gpt-4o-mini"
    """Generation model (`OPENAI_GEN_MODEL`)."""
    embed_dim: _PositiveInt = 1536
    """Vector size of `embed_model` (`OPENAI_EMBED_DIM`); checked only when set or default."""
    timeout: Annotated[float | None, BeforeValidator(_timeout_override)] = None
    """First-byte timeout in seconds (`OPENAI_TIMEOUT`); None means `timeouts.first_byte`."""
    skip_tls_verify: _Flag = False
    """Accept any TLS certificate (`OPENAI_SKIP_TLS_VERIFY`); for test servers only."""
    organization: _OptionalName = None
    """`OpenAI-Organization` header (`OPENAI_ORG_ID` or `OPENAI_ORGANIZATION`)."""
    project: _OptionalName = None
    """`OpenAI-Project` header (`OPENAI_PROJECT_ID`)."""
    api_type: Annotated[Literal["openai", "azure"], BeforeValidator(_api_type)] = "openai"
    """"azure" makes the "openai" backend use the `azure` section (`OPENAI_API_TYPE`)."""

    def expected_embed_dim(self) -> int | None:
        """`embed_dim` when it was set or `embed_model` is the default model, else None."""
        default_model = type(self).model_fields["embed_model"].default
        return _expected_dim(self, self.embed_model, default_model)

    def api_key_for(
        self, base_url_from_code: str | Sequence[str] | None = None
    ) -> SecretStr | None:
        """The key to send to `base_url_from_code` (or to `base_url` when None), or None.

        A key given in code goes anywhere. A key from the environment or the file goes
        only to OpenAI itself or to a base URL that also came from the environment or
        the file: never to a URL given in code without its own key.
        """
        return _key_for(self, "api_key", "base_url", base_url_from_code, _is_openai_url)


class AzureSettings(_Settings):
    """Azure OpenAI: used by `create_backend("azure")`, or for "openai" when `api_type="azure"`.

    Example:
        >>> s = AzureSettings(endpoint="https://me.openai.azure.com", deployment="gpt-4o")
        >>> s.api_version
        '2024-10-21'
    """

    endpoint: _OptionalUrl = None
    """Resource URL, e.g. https://NAME.openai.azure.com (`AZURE_OPENAI_ENDPOINT`)."""
    api_key: _Secret = None
    """Resource key (`AZURE_OPENAI_API_KEY`); OPENAI_API_KEY is never used for Azure."""
    api_version: _Name = "2024-10-21"
    """`api-version` query parameter (`OPENAI_API_VERSION` or `AZURE_OPENAI_API_VERSION`)."""
    deployment: _OptionalName = None
    """Chat deployment (`AZURE_OPENAI_DEPLOYMENT`); None means `openai.gen_model`."""
    embed_deployment: _OptionalName = None
    """Embedding deployment (`AZURE_OPENAI_EMBED_DEPLOYMENT`); None: `openai.embed_model`."""

    def api_key_for(self, endpoint_from_code: str | None = None) -> SecretStr | None:
        """Like `OpenAISettings.api_key_for`, for the Azure endpoint."""
        return _key_for(self, "api_key", "endpoint", endpoint_from_code, lambda _url: False)


class TimeoutSettings(_Settings):
    """Timeouts in seconds (None: no limit), shared by all backends.

    They map onto `langchain_matric._http.Timeouts`; `OPENAI_TIMEOUT` overrides
    `first_byte` for OpenAI-compatible servers.

    Example:
        >>> TimeoutSettings(total=900).model_dump()
        {'connect': 10.0, 'first_byte': 300.0, 'idle': 60.0, 'total': 900.0, 'stall': 300.0}
    """

    connect: _Seconds = 10.0
    """Opening the connection (`MATRIC_CONNECT_TIMEOUT`)."""
    first_byte: _Seconds = 300.0
    """Until the answer starts; model loads are slow (`MATRIC_FIRST_BYTE_TIMEOUT`)."""
    idle: _Seconds = 60.0
    """Longest gap between streamed chunks (`MATRIC_IDLE_TIMEOUT`)."""
    total: _Seconds = None
    """The whole call (`MATRIC_TOTAL_TIMEOUT`); none by default."""
    stall: _Seconds = 300.0
    """Streams: longest time without data, keep-alives not counted (`MATRIC_STALL_TIMEOUT`)."""


class InferenceConfig(_Settings):
    """Which backend embeds and which generates, and the settings of each.

    Build one directly (code only: no environment, no file) or with `load()`, which
    layers arguments > environment > TOML file > defaults.

    Example:
        >>> cfg = InferenceConfig.load(env={"OPENAI_GEN_MODEL": "gpt-4o"},
        ...                            default_generation="openai")
        >>> cfg.default_generation, cfg.openai.gen_model, cfg.openai.source("gen_model")
        ('openai', 'gpt-4o', 'env')
        >>> cfg.timeouts_kwargs("openai")
        {'connect': 10.0, 'first_byte': 300.0, 'idle': 60.0, 'total': None, 'stall': 300.0}
    """

    default_embedding: Annotated[Literal["ollama", "openai"], BeforeValidator(_backend)] = "ollama"
    """Backend for embeddings (`MATRIC_INFERENCE_DEFAULT_EMBEDDING`)."""
    default_generation: Annotated[Literal["ollama", "openai"], BeforeValidator(_backend)] = "ollama"
    """Backend for generation (`MATRIC_INFERENCE_DEFAULT_GENERATION`)."""
    max_retries: Annotated[int, BeforeValidator(_retries)] = 2
    """Retries after a connection error, 408, 409, 429 or 5xx (`MATRIC_MAX_RETRIES`)."""
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)
    """The `[inference.ollama]` section."""
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    """The `[inference.openai]` section."""
    azure: AzureSettings = Field(default_factory=AzureSettings)
    """The `[inference.azure]` section."""
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    """The `[inference.timeouts]` section."""

    _file: Path | None = PrivateAttr(default=None)
    _SECTIONS: ClassVar[tuple[str, ...]] = ("ollama", "openai", "azure", "timeouts")

    @property
    def config_file(self) -> Path | None:
        """The TOML file `load()` read (an absolute path), if any."""
        return self._file

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> InferenceConfig:
        """Read the file and the environment, apply `overrides`, validate.

        Args:
            path: The TOML file; default `MATRIC_CONFIG`, else `./matric.toml` if present.
                A path given here or in `MATRIC_CONFIG` must exist.
            env: The environment to read (default `os.environ`): pass a dict in tests.
            **overrides: Top-level fields, sections as dicts or settings objects
                (`openai={"base_url": ...}`) or dotted keys (`**{"openai.base_url": ...}`).

        Raises:
            ConfigurationError: A bad value, naming the variable, file key or argument.
        """
        env = os.environ if env is None else env
        layers: dict[tuple[str, ...], tuple[Any, _Origin]] = {}
        file = _config_path(path, env)
        if file is not None:
            layers.update(_file_layer(file[0], file[1], env, _SCHEMA))
        layers.update(_env_layer(env))
        layers.update(_code_layer(overrides, _SCHEMA))
        nested: dict[str, Any] = {}
        for loc, (value, _origin) in layers.items():
            target = nested
            for part in loc[:-1]:
                target = target.setdefault(part, {})
            target[loc[-1]] = value
        try:
            config = super(_Settings, cls).model_validate(nested)
        except ValidationError as exc:
            origins = {loc: origin for loc, (_v, origin) in layers.items()}
            raise _configuration_error(exc, origins, "InferenceConfig.load()", _SCHEMA) from exc
        for loc, (_value, origin) in layers.items():
            owner: _Settings = config if len(loc) == 1 else getattr(config, loc[0])
            owner._sources[loc[-1]] = (origin.source, getattr(owner, loc[-1]))
        config._file = file[0].resolve() if file is not None else None
        return config

    def timeouts_kwargs(self, backend: str | None = None) -> dict[str, float | None]:
        """Keyword arguments for `_http.Timeouts` (connect, first_byte, idle, total, stall).

        For "openai" and "azure", `openai.timeout` (when set) replaces `first_byte`.
        """
        kwargs = self.timeouts.model_dump()
        if backend in ("openai", "azure") and self.openai.timeout is not None:
            kwargs["first_byte"] = self.openai.timeout
        return kwargs


_SCHEMA = _Schema(
    root=InferenceConfig,
    sections=InferenceConfig._SECTIONS,
    section_types={
        "OllamaSettings": OllamaSettings,
        "OpenAISettings": OpenAISettings,
        "AzureSettings": AzureSettings,
        "TimeoutSettings": TimeoutSettings,
    },
    base=_Settings,
)
"""The models' shape for `_config_load`, which cannot import this module."""


# ---------------------------------------------------------------------------------------
# API keys
# ---------------------------------------------------------------------------------------


def _is_openai_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and (parts.hostname or "").lower() == "api.openai.com"


def _same_url(a: str | Sequence[str], b: str | Sequence[str]) -> bool:
    try:
        return _urls(a if isinstance(a, str) else list(a)) == _urls(
            b if isinstance(b, str) else list(b)
        )
    except ValueError:
        return False


def _key_for(
    settings: _Settings,
    key_field: str,
    url_field: str,
    url_from_code: str | Sequence[str] | None,
    trusted: Callable[[str], bool],
) -> SecretStr | None:
    key: SecretStr | None = getattr(settings, key_field)
    if key is None or settings.source(key_field) == "code":
        return key
    configured: str | Sequence[str] | None = getattr(settings, url_field)
    url_source = settings.source(url_field)
    if url_from_code is None:
        target = configured
    else:
        target = url_from_code
        if configured is None or not _same_url(url_from_code, configured):
            url_source = "code"
    targets = [target] if isinstance(target, str) else list(target or ())
    if targets and all(trusted(url) for url in targets):
        return key
    if url_source in ("env", "file", "default"):
        return key
    logger.info(
        "not sending the %s API key from the %s to %s, which was given in code; "
        "pass api_key= explicitly to send one",
        type(settings).__name__.removesuffix("Settings"),
        "environment" if settings.source(key_field) == "env" else "config file",
        ", ".join(_redact_userinfo(url) for url in targets),
    )
    return None


def _expected_dim(settings: _Settings, model: str, default_model: str) -> int | None:
    """`embed_dim` when it was set or `model` is `default_model`, else None."""
    dim: int = getattr(settings, "embed_dim")  # noqa: B009 - shared by two classes
    if settings.source("embed_dim") != "default":
        return dim
    return dim if model.removesuffix(":latest") == default_model else None
