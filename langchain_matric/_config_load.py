"""Loading `InferenceConfig`: raw-value checks, the environment and TOML layers, errors.

Private to `langchain_matric.config`, which re-exports what is public. This module never
imports `config`: the models' shape comes in as a `_Schema` built there, so the import
graph stays acyclic.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr, ValidationError

from langchain_matric.errors import ConfigurationError

Source = Literal["default", "file", "env", "code"]
"""Where a setting came from: a default, the TOML file, the environment, or code."""

_OLLAMA_PORT = 11434
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_THINK_LEVELS = ("low", "medium", "high")
_GO_DURATION = re.compile(r"^-?(?:\d+(?:\.\d*)?(?:ns|us|µs|ms|s|m|h))+$")

# ---------------------------------------------------------------------------------------
# Value checks: each takes a raw value (str from the environment, TOML value, argument)
# and returns the typed value or raises ValueError with what the value must be.
# ---------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str):
        msg = "must be a string"
        raise ValueError(msg)  # noqa: TRY004 - pydantic turns only ValueError into errors
    return value.strip()


def _name(value: Any) -> str:
    text = _text(value)
    if not text:
        msg = "must be a non-empty name"
        raise ValueError(msg)
    return text


def _optional_name(value: Any) -> str | None:
    return None if value is None else (_text(value) or None)


def _secret(value: Any) -> SecretStr | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return SecretStr(_text(value)) if _text(value) else None


def _integer(value: Any, minimum: int, what: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(what)
    return value


def _positive_int(value: Any) -> int:
    return _integer(value, 1, "must be a positive integer")


def _optional_positive_int(value: Any) -> int | None:
    return None if value is None else _positive_int(value)


def _retries(value: Any) -> int:
    return _integer(value, 0, "must be a whole number >= 0")


def _seconds(value: Any) -> float:
    what = "must be a number of seconds > 0"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(what) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(what)  # noqa: TRY004 - pydantic turns only ValueError into errors
    if not math.isfinite(value) or value <= 0:
        raise ValueError(what)
    return float(value)


def _optional_seconds(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    try:
        return _seconds(value)
    except ValueError:
        msg = "must be a number of seconds > 0, or 'none' for no limit"
        raise ValueError(msg) from None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    msg = "must be true or false (also accepted: 1/0, yes/no)"
    raise ValueError(msg)


def _backend(value: Any) -> str:
    name = value.strip().lower() if isinstance(value, str) else value
    if name not in ("ollama", "openai"):
        msg = "unknown backend; valid names: 'ollama', 'openai'"
        raise ValueError(msg)
    return str(name)


def _api_type(value: Any) -> str:
    name = value.strip().lower() if isinstance(value, str) else value
    if name not in ("openai", "azure"):
        msg = "must be 'openai' or 'azure'"
        raise ValueError(msg)
    return str(name)


def _think(value: Any) -> bool | str | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _THINK_LEVELS:
            return word
        if word in _TRUE | _FALSE:
            return word in _TRUE
    msg = "must be true, false, 'low', 'medium' or 'high'"
    raise ValueError(msg)


def _keep_alive(value: Any) -> str | int | float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    if isinstance(value, str):
        text = value.strip()
        if _GO_DURATION.match(text):
            return text
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return int(number) if number.is_integer() else number
    msg = "must be seconds (a negative number keeps the model loaded) or a duration like '5m'"
    raise ValueError(msg)


def _url(value: Any) -> str:
    text = _text(value)
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        msg = f"has no scheme; write it as 'http://{text}' (or https://)"
        raise ValueError(msg)
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        msg = f"must be an http:// or https:// URL, not {parts.scheme}://"
        raise ValueError(msg)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        msg = "has an invalid port"
        raise ValueError(msg) from None
    if not parts.hostname:
        msg = "has no host"
        raise ValueError(msg)
    if parts.query or parts.fragment:
        msg = "must not contain a query or fragment"
        raise ValueError(msg)
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"), "", ""))


def _urls(value: Any) -> str | tuple[str, ...]:
    """One URL, or an endpoint pool: comma-separated (environment) or a list (TOML, code).

    Example:
        >>> _urls("http://a:1/v1"), _urls("http://a:1/v1, http://b:1/v1")
        ('http://a:1/v1', ('http://a:1/v1', 'http://b:1/v1'))
    """
    if isinstance(value, str):
        items = value.split(",")
        if len(items) == 1:
            return _url(value)
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        msg = "must be a URL or a list of URLs"
        raise ValueError(msg)  # noqa: TRY004 - pydantic turns only ValueError into errors
    if not items:
        msg = "must list at least one URL"
        raise ValueError(msg)
    urls = []
    for number, item in enumerate(items, 1):
        try:
            urls.append(_url(item))
        except ValueError as exc:
            msg = f"URL {number} of {len(items)} {exc}"
            raise ValueError(msg) from None
    return tuple(urls)


def _optional_url(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and not value.strip()) else _url(value)


def normalize_ollama_host(value: str) -> str:
    """Turn an `OLLAMA_HOST` value into a base URL, the way Ollama itself reads it.

    A missing scheme means http, a missing port (without a scheme) 11434, and the
    listen-everywhere addresses (`0.0.0.0`, `::`, empty) mean this machine.

    Example:
        >>> normalize_ollama_host("0.0.0.0:11434"), normalize_ollama_host("myhost")
        ('http://127.0.0.1:11434', 'http://myhost:11434')
    """
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    hostport, slash, path = rest.partition("/")
    try:
        ip = ipaddress.ip_address(hostport.strip("[]"))
    except ValueError:
        host, colon, port = hostport.rpartition(":")
        if not colon:
            host, port = hostport, ""
    else:  # a bare address, possibly IPv6 with colons and no port
        host, port = str(ip), ""
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a listen address, not a bind
        host = "::1" if host == "::" else "127.0.0.1"
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        msg = f"has an invalid port {port!r}"
        raise ValueError(msg)
    if not port and not sep:
        port = str(_OLLAMA_PORT)
    netloc = f"[{host}]" if ":" in host else host
    netloc = f"{netloc}:{port}" if port else netloc
    return _url(f"{scheme}://{netloc}{slash}{path}")


def _timeout_override(value: Any) -> float | None:
    return None if value is None else _seconds(value)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Schema:
    """The models' shape, given by `config` (which defines them) to the functions here."""

    root: type[BaseModel]
    """`InferenceConfig`."""
    sections: tuple[str, ...]
    """Its fields that are sections (`InferenceConfig._SECTIONS`)."""
    section_types: Mapping[str, type[BaseModel]]
    """Section classes by class name ("OllamaSettings" ...), for error messages."""
    base: type[BaseModel]
    """The settings base class: a section object passed to `load()` is an instance."""


@dataclass(frozen=True, slots=True)
class _Origin:
    source: Source
    where: str  # "OPENAI_EMBED_DIM", "matric.toml: [inference.openai] timeout", "openai.x"
    raw: Any

    def describe(self, problem: str, secret: bool) -> str:
        shown = "'***'" if secret else (_toml(self.raw) if self.source == "file" else None)
        if self.source == "file":
            return f"{self.where} = {shown}: {problem}"
        shown = shown or repr(self.raw)
        return f"{self.where}={shown}: {problem}"


_ENV_VARS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("default_embedding",), ("MATRIC_INFERENCE_DEFAULT_EMBEDDING",)),
    (("default_generation",), ("MATRIC_INFERENCE_DEFAULT_GENERATION",)),
    (("max_retries",), ("MATRIC_MAX_RETRIES",)),
    (("timeouts", "connect"), ("MATRIC_CONNECT_TIMEOUT",)),
    (("timeouts", "first_byte"), ("MATRIC_FIRST_BYTE_TIMEOUT",)),
    (("timeouts", "idle"), ("MATRIC_IDLE_TIMEOUT",)),
    (("timeouts", "total"), ("MATRIC_TOTAL_TIMEOUT",)),
    (("timeouts", "stall"), ("MATRIC_STALL_TIMEOUT",)),
    (("ollama", "base_url"), ("OLLAMA_BASE", "OLLAMA_HOST")),
    (("ollama", "embed_model"), ("OLLAMA_EMBED_MODEL",)),
    (("ollama", "gen_model"), ("OLLAMA_GEN_MODEL",)),
    (("ollama", "embed_dim"), ("OLLAMA_EMBED_DIM",)),
    (("openai", "base_url"), ("OPENAI_BASE_URL",)),
    (("openai", "api_key"), ("OPENAI_API_KEY",)),
    (("openai", "embed_model"), ("OPENAI_EMBED_MODEL",)),
    (("openai", "gen_model"), ("OPENAI_GEN_MODEL",)),
    (("openai", "embed_dim"), ("OPENAI_EMBED_DIM",)),
    (("openai", "timeout"), ("OPENAI_TIMEOUT",)),
    (("openai", "skip_tls_verify"), ("OPENAI_SKIP_TLS_VERIFY",)),
    (("openai", "organization"), ("OPENAI_ORG_ID", "OPENAI_ORGANIZATION")),
    (("openai", "project"), ("OPENAI_PROJECT_ID",)),
    (("openai", "api_type"), ("OPENAI_API_TYPE",)),
    (("azure", "endpoint"), ("AZURE_OPENAI_ENDPOINT",)),
    (("azure", "api_key"), ("AZURE_OPENAI_API_KEY",)),
    (("azure", "api_version"), ("OPENAI_API_VERSION", "AZURE_OPENAI_API_VERSION")),
    (("azure", "deployment"), ("AZURE_OPENAI_DEPLOYMENT",)),
    (("azure", "embed_deployment"), ("AZURE_OPENAI_EMBED_DEPLOYMENT",)),
)
"""(field location, variables in priority order); the module docstring's table."""

_Layer = dict[tuple[str, ...], tuple[Any, _Origin]]
_HINTS: dict[tuple[str, ...], str] = {
    ("ollama", "embed_dim"): "set it to the model's vector size, e.g. 768 for nomic-embed-text",
    ("openai", "embed_dim"): "set it to the model's vector size, e.g. 1536",
}


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for loc, names in _ENV_VARS:
        for name in names:
            raw = env.get(name)
            if raw is None or not raw.strip():
                continue
            value = raw
            if name == "OLLAMA_HOST":
                try:
                    value = normalize_ollama_host(raw)
                except ValueError as exc:
                    msg = f"OLLAMA_HOST={raw!r}: {exc}; e.g. 127.0.0.1:11434"
                    raise ConfigurationError(msg) from None
            layer[loc] = (value, _Origin("env", name, raw))
            break
    return layer


def _config_path(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[Path, str] | None:
    """The file to read and how to name it in messages, or None."""
    if path is not None:
        given, why = Path(path), "the path passed to InferenceConfig.load()"
    elif env.get("MATRIC_CONFIG", "").strip():
        given, why = Path(env["MATRIC_CONFIG"].strip()), "MATRIC_CONFIG"
    else:
        default = Path("matric.toml")
        return (default, "matric.toml") if default.is_file() else None
    if not given.is_file():
        msg = f"config file {str(given)!r} ({why}) does not exist or is not a file"
        raise ConfigurationError(msg)
    return given, str(given)


def _file_layer(path: Path, label: str, env: Mapping[str, str], schema: _Schema) -> _Layer:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        msg = f"{label}: cannot read the config file: {exc.strerror or exc}"
        raise ConfigurationError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{label}: not valid TOML: {exc}"
        raise ConfigurationError(msg) from exc
    top = _fields(schema.root)
    table = data.get("inference")
    if table is None:
        stray = sorted(set(data) & set(top))
        if stray:
            msg = f"{label}: {stray[0]!r} belongs in the [inference] table"
            raise ConfigurationError(msg)
        return {}
    if not isinstance(table, dict):
        msg = f"{label}: inference must be a table ([inference])"
        raise ConfigurationError(msg)
    layer: _Layer = {}
    for key, value in table.items():
        if key in schema.sections:
            if not isinstance(value, dict):
                msg = f"{label}: [inference] {key} must be a table ([inference.{key}])"
                raise ConfigurationError(msg)
            section_type = schema.root.model_fields[key].annotation
            keys = _fields(section_type)
            for sub, sub_value in value.items():
                where = f"{label}: [inference.{key}] {sub}"
                if sub not in keys:
                    msg = f"{where}: unknown key; valid keys: {', '.join(keys)}"
                    raise ConfigurationError(msg)
                resolved = _interpolate(sub_value, env, where)
                layer[key, sub] = (resolved, _Origin("file", where, resolved))
        elif key in top:
            where = f"{label}: [inference] {key}"
            resolved = _interpolate(value, env, where)
            layer[(key,)] = (resolved, _Origin("file", where, resolved))
        else:
            msg = f"{label}: [inference] {key}: unknown key; valid keys: {', '.join(top)}"
            raise ConfigurationError(msg)
    return layer


_REFERENCE = re.compile(r"(\$\$\{)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|(\$\{)")


def _interpolate(value: Any, env: Mapping[str, str], where: str) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in a string (or a list's strings); `$${` is `${`."""
    if isinstance(value, list):
        return [_interpolate(item, env, where) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        escaped, name, default, broken = match.groups()
        if escaped:
            return "${"
        if broken:
            msg = f"{where}: malformed ${{...}} in {value!r}; write ${{NAME}} or ${{NAME:-default}}"
            raise ConfigurationError(msg)
        found = env.get(name)
        if default is not None and not found:
            return default
        if found is None:
            msg = f"{where}: environment variable {name} is not set (used as ${{{name}}})"
            raise ConfigurationError(msg)
        return found

    return _REFERENCE.sub(substitute, value)


def _code_layer(overrides: Mapping[str, Any], schema: _Schema) -> _Layer:
    top = _fields(schema.root)
    layer: _Layer = {}

    def add(loc: tuple[str, ...], value: Any) -> None:
        valid = top
        if len(loc) == 2 and loc[0] in schema.sections:
            valid = _fields(schema.root.model_fields[loc[0]].annotation)
        if len(loc) > 2 or loc[-1] not in valid or (len(loc) == 2 and valid is top):
            msg = f"unknown setting {'.'.join(loc)!r}; valid names: {', '.join(valid)}"
            raise ConfigurationError(msg)
        layer[loc] = (value, _Origin("code", f"argument {'.'.join(loc)}", value))

    for key, value in overrides.items():
        loc = tuple(key.split("."))
        if len(loc) == 1 and key in schema.sections:
            if value is None:
                continue
            fields = value
            if isinstance(value, schema.base):
                fields = {f: getattr(value, f) for f in value.model_fields_set}
            if not isinstance(fields, Mapping):
                msg = f"{key} must be a dict or a settings object, got {type(value).__name__}"
                raise ConfigurationError(msg)
            for sub, sub_value in fields.items():
                add((key, sub), sub_value)
        else:
            add(loc, value)
    return layer


def _fields(model: Any) -> list[str]:
    return list(model.model_fields)


# ---------------------------------------------------------------------------------------
# Errors and helpers
# ---------------------------------------------------------------------------------------


def _configuration_error(
    exc: ValidationError,
    origins: Mapping[tuple[str, ...], _Origin],
    owner: str,
    schema: _Schema,
) -> ConfigurationError:
    """Turn pydantic's error into ours, naming each bad value's variable, key or argument."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        secret = loc[-1:] == ("api_key",)
        if error["type"] == "value_error":
            problem = str(error["ctx"]["error"])
        elif error["type"] == "extra_forbidden":
            parent: Any = schema.root
            if len(loc) == 2:
                parent = schema.root.model_fields[loc[0]].annotation
            elif owner != "InferenceConfig" and owner in schema.section_types:
                parent = schema.section_types[owner]
            problem = f"unknown setting; valid names: {', '.join(_fields(parent))}"
        else:
            problem = error["msg"]
        section = _SECTION_NAMES.get(owner)
        hint = _HINTS.get((section, *loc) if section else loc)
        if hint and error["type"] == "value_error":
            problem = f"{problem}; {hint}"
        origin = origins.get(loc)
        if origin is not None:
            lines.append(origin.describe(problem, secret))
        else:
            shown = "'***'" if secret else repr(error.get("input"))
            lines.append(f"{owner}: {'.'.join(loc)}={shown}: {problem}")
    if len(lines) == 1:
        return ConfigurationError(lines[0])
    return ConfigurationError("invalid configuration:\n  " + "\n  ".join(lines))


_SECTION_NAMES = {"OllamaSettings": "ollama", "OpenAISettings": "openai"}


def _redact_userinfo(value: str) -> str:
    """Hide a password in a URL's userinfo (`https://user:***@host`)."""
    if "@" not in value or "://" not in value:
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
