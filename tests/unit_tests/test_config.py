"""InferenceConfig: layering, the environment, the TOML file, validation, API-key rule."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from langchain_matric import _config_load
from langchain_matric import config as config_module
from langchain_matric.config import (
    AzureSettings,
    InferenceConfig,
    OllamaSettings,
    OpenAISettings,
    TimeoutSettings,
    azure_backend_kwargs,
    backend_kwargs,
    normalize_ollama_host,
    ollama_backend_kwargs,
    openai_backend_kwargs,
    resolve_azure_api_key,
    resolve_openai_api_key,
)
from langchain_matric.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty directory: no stray ./matric.toml."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(env: dict[str, str] | None = None, path: Any = None, **overrides: Any) -> InferenceConfig:
    return InferenceConfig.load(path, env=env or {}, **overrides)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(match: str, fn: Any, *args: Any, **kwargs: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError, match=match) as info:
        fn(*args, **kwargs)
    assert not isinstance(info.value, ValidationError)
    return info.value


# -- defaults and the environment -------------------------------------------------------


def test_defaults() -> None:
    cfg = load()
    assert (cfg.default_embedding, cfg.default_generation, cfg.max_retries) == (
        "ollama",
        "ollama",
        2,
    )
    assert cfg.ollama.base_url == "http://127.0.0.1:11434"
    assert (cfg.ollama.embed_model, cfg.ollama.gen_model, cfg.ollama.embed_dim) == (
        "nomic-embed-text",
        "gpt-oss:20b",
        768,
    )
    assert cfg.openai.base_url == "https://api.openai.com/v1"
    assert cfg.openai.api_key is None
    assert (cfg.openai.embed_model, cfg.openai.gen_model, cfg.openai.embed_dim) == (
        "text-embedding-3-small",
        "gpt-4o-mini",
        1536,
    )
    assert cfg.openai.skip_tls_verify is False
    assert cfg.azure.api_version == "2024-10-21"
    assert cfg.timeouts_kwargs() == {
        "connect": 10.0,
        "first_byte": 300.0,
        "idle": 60.0,
        "total": None,
        "stall": 300.0,
    }
    assert cfg.config_file is None
    assert cfg.openai.source("base_url") == "default"


def test_constructor_and_import_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_GEN_MODEL", "from-env")
    assert InferenceConfig().openai.gen_model == "gpt-4o-mini"
    assert OpenAISettings().gen_model == "gpt-4o-mini"
    # a fresh interpreter imports the module and builds a config despite bad settings
    code = "import langchain_matric.config as c; print(c.InferenceConfig().openai.embed_dim)"
    env = {**os.environ, "MATRIC_CONFIG": "/nonexistent.toml", "OPENAI_EMBED_DIM": "abc"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1536"


def test_load_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_GEN_MODEL", "from-env")
    assert InferenceConfig.load().openai.gen_model == "from-env"


ENV_CASES = [
    ("MATRIC_INFERENCE_DEFAULT_EMBEDDING", "OpenAI", ("default_embedding",), "openai"),
    ("MATRIC_INFERENCE_DEFAULT_GENERATION", " OPENAI ", ("default_generation",), "openai"),
    ("MATRIC_MAX_RETRIES", "0", ("max_retries",), 0),
    ("MATRIC_CONNECT_TIMEOUT", "2.5", ("timeouts", "connect"), 2.5),
    ("MATRIC_FIRST_BYTE_TIMEOUT", "900", ("timeouts", "first_byte"), 900.0),
    ("MATRIC_IDLE_TIMEOUT", "None", ("timeouts", "idle"), None),
    ("MATRIC_TOTAL_TIMEOUT", "3600", ("timeouts", "total"), 3600.0),
    ("MATRIC_STALL_TIMEOUT", "120", ("timeouts", "stall"), 120.0),
    ("OLLAMA_BASE", "http://gpu:11434/", ("ollama", "base_url"), "http://gpu:11434"),
    ("OLLAMA_HOST", "gpu", ("ollama", "base_url"), "http://gpu:11434"),
    ("OLLAMA_EMBED_MODEL", "bge-m3", ("ollama", "embed_model"), "bge-m3"),
    ("OLLAMA_GEN_MODEL", "llama3.1", ("ollama", "gen_model"), "llama3.1"),
    ("OLLAMA_EMBED_DIM", "1024", ("ollama", "embed_dim"), 1024),
    (
        "OPENAI_BASE_URL",
        "http://127.0.0.1:8000/v1",
        ("openai", "base_url"),
        "http://127.0.0.1:8000/v1",
    ),
    ("OPENAI_EMBED_MODEL", "e5", ("openai", "embed_model"), "e5"),
    ("OPENAI_GEN_MODEL", "qwen", ("openai", "gen_model"), "qwen"),
    ("OPENAI_EMBED_DIM", "384", ("openai", "embed_dim"), 384),
    ("OPENAI_TIMEOUT", "600", ("openai", "timeout"), 600.0),
    ("OPENAI_SKIP_TLS_VERIFY", "YES", ("openai", "skip_tls_verify"), True),
    ("OPENAI_ORG_ID", "org-1", ("openai", "organization"), "org-1"),
    ("OPENAI_ORGANIZATION", "org-2", ("openai", "organization"), "org-2"),
    ("OPENAI_PROJECT_ID", "proj", ("openai", "project"), "proj"),
    ("OPENAI_API_TYPE", "Azure", ("openai", "api_type"), "azure"),
    (
        "AZURE_OPENAI_ENDPOINT",
        "https://me.openai.azure.com/",
        ("azure", "endpoint"),
        "https://me.openai.azure.com",
    ),
    ("OPENAI_API_VERSION", "2025-01-01", ("azure", "api_version"), "2025-01-01"),
    ("AZURE_OPENAI_API_VERSION", "2025-02-02", ("azure", "api_version"), "2025-02-02"),
    ("AZURE_OPENAI_DEPLOYMENT", "chat", ("azure", "deployment"), "chat"),
    ("AZURE_OPENAI_EMBED_DEPLOYMENT", "emb", ("azure", "embed_deployment"), "emb"),
]


@pytest.mark.parametrize(
    ("var", "raw", "loc", "expected"), ENV_CASES, ids=[c[0] for c in ENV_CASES]
)
def test_each_variable(var: str, raw: str, loc: tuple[str, ...], expected: Any) -> None:
    cfg = load({var: raw})
    owner = cfg if len(loc) == 1 else getattr(cfg, loc[0])
    assert getattr(owner, loc[-1]) == expected
    assert owner.source(loc[-1]) == "env"


def test_every_documented_variable_is_tested_and_in_the_docstring() -> None:
    names = {name for _loc, names in _config_load._ENV_VARS for name in names}
    tested = {c[0] for c in ENV_CASES} | {"OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"}
    assert names == tested
    doc = config_module.__doc__ or ""
    for name in [*names, "MATRIC_CONFIG"]:
        assert name in doc


def test_secret_variables() -> None:
    cfg = load({"OPENAI_API_KEY": " sk-o\n", "AZURE_OPENAI_API_KEY": "az"})
    assert cfg.openai.api_key == SecretStr("sk-o")
    assert cfg.azure.api_key == SecretStr("az")


def test_first_listed_variable_wins_and_empty_means_unset() -> None:
    env = {"OPENAI_ORG_ID": "a", "OPENAI_ORGANIZATION": "b", "OLLAMA_BASE": "http://x:1"}
    env |= {"OLLAMA_HOST": "y", "OPENAI_API_VERSION": "v1", "AZURE_OPENAI_API_VERSION": "v2"}
    cfg = load(env)
    assert (cfg.openai.organization, cfg.ollama.base_url, cfg.azure.api_version) == (
        "a",
        "http://x:1",
        "v1",
    )
    cfg = load({"OPENAI_ORG_ID": "  ", "OPENAI_ORGANIZATION": "b", "OPENAI_GEN_MODEL": ""})
    assert cfg.openai.organization == "b"
    assert cfg.openai.gen_model == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("myhost", "http://myhost:11434"),
        ("0.0.0.0:11434", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        (":8080", "http://127.0.0.1:8080"),
        ("::", "http://[::1]:11434"),
        ("::1", "http://[::1]:11434"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("10.0.0.5", "http://10.0.0.5:11434"),
        ("https://ollama.example.com", "https://ollama.example.com"),
        ("http://box:80/", "http://box:80"),
        ("box:11434/ollama", "http://box:11434/ollama"),
    ],
)
def test_ollama_host_leniency(host: str, url: str) -> None:
    assert normalize_ollama_host(host) == url
    assert load({"OLLAMA_HOST": host}).ollama.base_url == url


@pytest.mark.parametrize("host", ["box:port", "box:70000", "ftp://box"])
def test_bad_ollama_host(host: str) -> None:
    config_error("OLLAMA_HOST=", load, {"OLLAMA_HOST": host})


# -- validation messages ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OPENAI_EMBED_DIM": "abc"},
            "OPENAI_EMBED_DIM='abc': must be a positive integer; "
            "set it to the model's vector size, e.g. 1536",
        ),
        ({"OLLAMA_EMBED_DIM": "0"}, "OLLAMA_EMBED_DIM='0': must be a positive integer; .*768"),
        ({"OLLAMA_EMBED_DIM": "true"}, "OLLAMA_EMBED_DIM='true': must be a positive integer"),
        (
            {"MATRIC_CONNECT_TIMEOUT": "0"},
            "MATRIC_CONNECT_TIMEOUT='0': must be a number of seconds > 0",
        ),
        ({"MATRIC_IDLE_TIMEOUT": "-1"}, "MATRIC_IDLE_TIMEOUT='-1': must be .* > 0"),
        ({"MATRIC_TOTAL_TIMEOUT": "inf"}, "MATRIC_TOTAL_TIMEOUT='inf'"),
        ({"OPENAI_TIMEOUT": "none"}, "OPENAI_TIMEOUT='none': must be a number of seconds > 0"),
        ({"MATRIC_MAX_RETRIES": "-1"}, "MATRIC_MAX_RETRIES='-1': must be a whole number >= 0"),
        ({"MATRIC_MAX_RETRIES": "2.5"}, "MATRIC_MAX_RETRIES='2.5'"),
        (
            {"MATRIC_INFERENCE_DEFAULT_EMBEDDING": "vllm"},
            "MATRIC_INFERENCE_DEFAULT_EMBEDDING='vllm': unknown backend; "
            "valid names: 'ollama', 'openai'",
        ),
        ({"OPENAI_SKIP_TLS_VERIFY": "on"}, "OPENAI_SKIP_TLS_VERIFY='on': must be true or false"),
        ({"OPENAI_SKIP_TLS_VERIFY": "2"}, "OPENAI_SKIP_TLS_VERIFY='2'"),
        (
            {"OPENAI_BASE_URL": "localhost:8000/v1"},
            "OPENAI_BASE_URL='localhost:8000/v1': has no scheme; write it as 'http://localhost:8000/v1'",
        ),
        ({"OLLAMA_BASE": "127.0.0.1:11434"}, "OLLAMA_BASE='127.0.0.1:11434': has no scheme"),
        ({"OPENAI_BASE_URL": "ftp://x/v1"}, "must be an http:// or https:// URL, not ftp://"),
        ({"OPENAI_BASE_URL": "http://x:99999"}, "invalid port"),
        ({"OPENAI_BASE_URL": "http:///v1"}, "has no host"),
        ({"OPENAI_BASE_URL": "http://x/v1?key=1"}, "query or fragment"),
        ({"AZURE_OPENAI_ENDPOINT": "me.openai.azure.com"}, "AZURE_OPENAI_ENDPOINT=.*no scheme"),
        (
            {"OPENAI_API_TYPE": "anthropic"},
            "OPENAI_API_TYPE='anthropic': must be 'openai' or 'azure'",
        ),
    ],
)
def test_bad_variable_names_itself(env: dict[str, str], message: str) -> None:
    config_error(message, load, env)


def test_several_bad_values_are_all_reported() -> None:
    err = config_error(
        "invalid configuration", load, {"OPENAI_EMBED_DIM": "x", "MATRIC_IDLE_TIMEOUT": "0"}
    )
    assert "OPENAI_EMBED_DIM='x'" in str(err)
    assert "MATRIC_IDLE_TIMEOUT='0'" in str(err)


def test_errors_never_show_a_secret() -> None:
    err = config_error("api_key", load, openai={"api_key": 12345})
    assert "12345" not in str(err)
    err = config_error("api_key", OpenAISettings, api_key=["sk-secret"])
    assert "sk-secret" not in str(err)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: OpenAISettings(embed_dim="x"),
            r"OpenAISettings: embed_dim='x': must be a positive integer; .*1536",
        ),
        (
            lambda: InferenceConfig(openai={"timeout": 0}),
            r"InferenceConfig: openai.timeout=0: must be",
        ),
        (lambda: InferenceConfig(default_generation="tgi"), "valid names: 'ollama', 'openai'"),
        (
            lambda: OllamaSettings(embed_modle="x"),
            "embed_modle=.*unknown setting; valid names: base_url",
        ),
        (
            lambda: InferenceConfig(openai={"foo": 1}),
            "openai.foo=1: unknown setting; valid names: base_url",
        ),
        (
            lambda: InferenceConfig(bogus=1),
            "bogus=1: unknown setting; valid names: default_embedding",
        ),
        (lambda: TimeoutSettings(connect=-3), "connect=-3: must be"),
        (
            lambda: OllamaSettings.model_validate({"num_ctx": 0}),
            "num_ctx=0: must be a positive integer",
        ),
        (lambda: OllamaSettings(think="extreme"), "must be true, false, 'low', 'medium' or 'high'"),
        (lambda: OllamaSettings(keep_alive="forever"), "duration like '5m'"),
        (lambda: OllamaSettings(gen_model=""), "non-empty"),
        (lambda: OllamaSettings(gen_model=3), "must be a string"),
    ],
)
def test_constructors_raise_configuration_error(make: Any, message: str) -> None:
    config_error(message, make)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5m", "5m"), ("1h30m", "1h30m"), ("-1", -1), ("300", 300), ("2.5", 2.5), (-1, -1), (0, 0)],
)
def test_keep_alive(value: Any, expected: Any) -> None:
    assert OllamaSettings(keep_alive=value).keep_alive == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), ("false", False), ("HIGH", "high"), ("low", "low"), (None, None)],
)
def test_think(value: Any, expected: Any) -> None:
    assert OllamaSettings(think=value).think == expected


# -- the TOML file ----------------------------------------------------------------------

FILE = """
[other_app]
anything = "${NOT_SET_AND_IGNORED}"

[inference]
default_embedding = "openai"
max_retries = 5

[inference.ollama]
base_url = "http://gpu:11434"
keep_alive = "10m"
num_ctx = 8192
think = "low"

[inference.openai]
base_url = "${VLLM_URL}"
api_key = "${VLLM_KEY:-none-needed}"
gen_model = "model-$${literal}"
skip_tls_verify = true
timeout = 120

[inference.azure]
endpoint = "https://me.openai.azure.com"

[inference.timeouts]
connect = 3
total = "none"
"""


def test_default_file_in_current_directory(tmp_path: Path) -> None:
    write(tmp_path / "matric.toml", FILE)
    cfg = load({"VLLM_URL": "http://127.0.0.1:8000/v1"})
    assert cfg.config_file == tmp_path.resolve() / "matric.toml"
    assert cfg.default_embedding == "openai"
    assert cfg.max_retries == 5
    assert (cfg.ollama.base_url, cfg.ollama.keep_alive, cfg.ollama.num_ctx, cfg.ollama.think) == (
        "http://gpu:11434",
        "10m",
        8192,
        "low",
    )
    assert cfg.openai.base_url == "http://127.0.0.1:8000/v1"
    assert cfg.openai.api_key == SecretStr("none-needed")
    assert cfg.openai.gen_model == "model-${literal}"
    assert cfg.openai.skip_tls_verify is True
    assert cfg.azure.endpoint == "https://me.openai.azure.com"
    assert cfg.timeouts_kwargs("openai") == {
        "connect": 3.0,
        "first_byte": 120.0,
        "idle": 60.0,
        "total": None,
        "stall": 300.0,
    }
    assert cfg.timeouts_kwargs("ollama")["first_byte"] == 300.0
    assert cfg.openai.source("base_url") == "file"
    assert cfg.source("max_retries") == "file"


def test_matric_config_and_explicit_path(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    write(tmp_path / "matric.toml", '[inference]\ndefault_generation = "openai"\n')
    via_env = write(sub / "a.toml", '[inference.ollama]\ngen_model = "from-env-path"\n')
    explicit = write(sub / "b.toml", '[inference.ollama]\ngen_model = "from-arg"\n')
    cfg = load({"MATRIC_CONFIG": str(via_env)})
    assert (cfg.ollama.gen_model, cfg.default_generation) == ("from-env-path", "ollama")
    cfg = load({"MATRIC_CONFIG": str(via_env)}, path=explicit)
    assert cfg.ollama.gen_model == "from-arg"
    assert cfg.config_file == explicit.resolve()


def test_missing_files(tmp_path: Path) -> None:
    assert load().config_file is None  # no ./matric.toml: fine
    config_error(
        "'nope.toml' \\(MATRIC_CONFIG\\) does not exist", load, {"MATRIC_CONFIG": "nope.toml"}
    )
    config_error("does not exist", load, path=tmp_path / "missing.toml")
    config_error("is not a file", load, path=tmp_path)


def test_priority_code_over_env_over_file_over_default(tmp_path: Path) -> None:
    write(
        tmp_path / "matric.toml",
        '[inference.openai]\ngen_model = "file"\nembed_model = "file"\nembed_dim = 10\n',
    )
    env = {"OPENAI_GEN_MODEL": "env", "OPENAI_EMBED_MODEL": "env"}
    cfg = load(env, openai={"gen_model": "code"})
    s = cfg.openai
    assert (s.gen_model, s.embed_model, s.embed_dim, s.project) == ("code", "env", 10, None)
    assert [s.source(f) for f in ("gen_model", "embed_model", "embed_dim", "project")] == [
        "code",
        "env",
        "file",
        "default",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[inference.openai]\ntimeout = -3\n",
            r"^matric.toml: \[inference.openai\] timeout = -3: must be a number of seconds > 0$",
        ),
        (
            '[inference.openai]\nembed_dim = "abc"\n',
            r'\[inference.openai\] embed_dim = "abc": must be a positive integer; set it',
        ),
        (
            "[inference.openai]\ntimeot = 3\n",
            r"\[inference.openai\] timeot: unknown key; valid keys: base_url",
        ),
        (
            '[inference]\ndefault_embeding = "openai"\n',
            r"\[inference\] default_embeding: unknown key; valid keys: default_embedding",
        ),
        (
            '[inference]\ndefault_generation = "vllm"\n',
            r"\[inference\] default_generation = \"vllm\": unknown backend; valid names",
        ),
        ("[inference]\nopenai = 3\n", r"\[inference\] openai must be a table"),
        ("inference = 3\n", "inference must be a table"),
        (
            'default_generation = "openai"\n',
            "'default_generation' belongs in the \\[inference\\] table",
        ),
        (
            '[inference.openai]\napi_key = "${UNSET_KEY}"\n',
            r"\[inference.openai\] api_key: environment variable UNSET_KEY is not set",
        ),
        (
            '[inference.openai]\nbase_url = "${BROKEN"\n',
            r"\[inference.openai\] base_url: malformed",
        ),
        (
            '[inference.openai]\nskip_tls_verify = "maybe"\n',
            r'skip_tls_verify = "maybe": must be true or false',
        ),
        ('[inference.openai]\nbase_url = "localhost:8000"\n', "has no scheme"),
        ("[inference.timeouts]\nidle = 0\n", r"\[inference.timeouts\] idle = 0: must be"),
        (
            "[inference]\nmax_retries = true\n",
            r"\[inference\] max_retries = true: must be a whole number",
        ),
        ("[inference\n", "matric.toml: not valid TOML"),
    ],
)
def test_file_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "matric.toml", text)
    config_error(message, load)


def test_file_without_inference_table_is_fine(tmp_path: Path) -> None:
    write(tmp_path / "matric.toml", "[database]\nurl = 'x'\n")
    assert load().openai.gen_model == "gpt-4o-mini"


def test_interpolation_default_applies_to_empty_variable(tmp_path: Path) -> None:
    write(tmp_path / "matric.toml", '[inference.ollama]\ngen_model = "${M:-dflt}-${N}"\n')
    assert load({"M": "", "N": "x"}).ollama.gen_model == "dflt-x"
    assert load({"M": "m", "N": ""}).ollama.gen_model == "m-"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "matric.toml", "")

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    config_error("matric.toml: cannot read the config file: Permission denied", load, path=path)


# -- code overrides ---------------------------------------------------------------------


def test_overrides_nested_dotted_and_objects() -> None:
    cfg = load(
        openai={"base_url": "http://a:1/v1"},
        **{"ollama.gen_model": "m", "timeouts.total": 30},
        azure=AzureSettings(deployment="d"),
        default_embedding="openai",
        max_retries="4",
        timeouts=None,
    )
    assert cfg.openai.base_url == "http://a:1/v1"
    assert cfg.ollama.gen_model == "m"
    assert cfg.timeouts.total == 30.0
    assert cfg.azure.deployment == "d"
    assert cfg.azure.api_version == "2024-10-21"
    assert (cfg.default_embedding, cfg.max_retries) == ("openai", 4)
    assert cfg.openai.source("base_url") == "code"


def test_settings_object_override_keeps_lower_layers_for_unset_fields() -> None:
    cfg = load({"OPENAI_GEN_MODEL": "env"}, openai=OpenAISettings(embed_model="code"))
    assert (cfg.openai.gen_model, cfg.openai.embed_model) == ("env", "code")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"opnai": {}}, "unknown setting 'opnai'; valid names: default_embedding"),
        ({"openai.bse_url": "x"}, "unknown setting 'openai.bse_url'; valid names: base_url"),
        ({"openai": {"bse_url": "x"}}, "unknown setting 'openai.bse_url'"),
        ({"foo.default_embedding": "x"}, "unknown setting 'foo.default_embedding'"),
        ({"openai.base_url.x": "x"}, "unknown setting"),
        ({"openai": 3}, "openai must be a dict or a settings object, got int"),
        (
            {"openai": {"embed_dim": "x"}},
            "^argument openai.embed_dim='x': must be a positive integer; set it",
        ),
        ({"timeouts.connect": 0}, "^argument timeouts.connect=0: must be"),
    ],
)
def test_bad_overrides(overrides: dict[str, Any], message: str) -> None:
    config_error(message, load, **overrides)


# -- immutability, repr, pickling, provenance -------------------------------------------


def test_repr_hides_secrets() -> None:
    cfg = load(
        {"OPENAI_API_KEY": "sk-very-secret", "AZURE_OPENAI_API_KEY": "az-secret"},
        openai={"base_url": "https://user:hunter2@proxy/v1"},
    )
    for text in (repr(cfg), str(cfg), repr(cfg.openai)):
        assert "sk-very-secret" not in text
        assert "az-secret" not in text
        assert "hunter2" not in text
    assert "user:***@proxy" in repr(cfg)


def test_frozen_and_picklable() -> None:
    cfg = load({"OPENAI_API_KEY": "sk"})
    with pytest.raises(ValidationError):
        cfg.openai.base_url = "http://evil"  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg
    assert again.openai.source("api_key") == "env"


def test_provenance_follows_the_value() -> None:
    cfg = load({"OPENAI_BASE_URL": "http://env:1/v1", "OPENAI_API_KEY": "sk"})
    assert cfg.openai.source("base_url") == "env"
    assert cfg.model_copy().openai.source("base_url") == "env"
    moved = cfg.openai.model_copy(update={"base_url": "http://evil/v1"})
    assert moved.source("base_url") == "code"
    assert moved.api_key_for(None) is None
    assert OpenAISettings(base_url="http://x/v1").source("base_url") == "code"
    assert OpenAISettings(gen_model="gpt-4o-mini").source("gen_model") == "code"
    assert OpenAISettings().source("gen_model") == "default"


# -- the API-key rule -------------------------------------------------------------------


KEY = SecretStr("sk-env")


@pytest.mark.parametrize(
    ("env", "overrides", "explicit_key", "explicit_url", "expected"),
    [
        # explicit key: always, wherever it goes; "" means deliberately none
        ({"OPENAI_API_KEY": "sk-env"}, {}, "sk-code", "http://x/v1", SecretStr("sk-code")),
        ({"OPENAI_API_KEY": "sk-env"}, {}, SecretStr("sk-code"), None, SecretStr("sk-code")),
        ({"OPENAI_API_KEY": "sk-env"}, {}, "", None, None),
        # no key anywhere
        ({}, {}, None, None, None),
        ({}, {}, None, "http://x/v1", None),
        # env key to the default OpenAI URL, or to OpenAI named in code
        ({"OPENAI_API_KEY": "sk-env"}, {}, None, None, KEY),
        ({"OPENAI_API_KEY": "sk-env"}, {}, None, "https://api.openai.com/v1/", KEY),
        ({"OPENAI_API_KEY": "sk-env"}, {}, None, "https://API.openai.com/v1", KEY),
        ({"OPENAI_API_KEY": "sk-env"}, {}, None, "http://api.openai.com/v1", None),
        # env key with an env base URL: to it, also when code repeats it
        (
            {"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": "http://vllm:8000/v1"},
            {},
            None,
            None,
            KEY,
        ),
        (
            {"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": "http://vllm:8000/v1"},
            {},
            None,
            "http://vllm:8000/v1/",
            KEY,
        ),
        # ...but never to another URL given in code
        (
            {"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": "http://vllm:8000/v1"},
            {},
            None,
            "http://other/v1",
            None,
        ),
        ({"OPENAI_API_KEY": "sk-env"}, {}, None, "http://127.0.0.1:8000/v1", None),
        ({"OPENAI_API_KEY": "sk-env"}, {}, None, "not a url", None),
        # env key with a base URL passed to load() in code: withheld
        (
            {"OPENAI_API_KEY": "sk-env"},
            {"openai": {"base_url": "http://proxy/v1"}},
            None,
            None,
            None,
        ),
        # key given in code to load(): goes anywhere
        (
            {},
            {"openai": {"api_key": "sk-code", "base_url": "http://proxy/v1"}},
            None,
            None,
            SecretStr("sk-code"),
        ),
        ({}, {"openai.api_key": "sk-code"}, None, "http://elsewhere/v1", SecretStr("sk-code")),
    ],
)
def test_openai_key_rule(env, overrides, explicit_key, explicit_url, expected) -> None:
    cfg = load(env, **overrides)
    assert resolve_openai_api_key(explicit_key, explicit_url, cfg) == expected


def test_file_key_and_file_url_count_as_configured(tmp_path: Path) -> None:
    write(
        tmp_path / "matric.toml",
        '[inference.openai]\nbase_url = "http://vllm/v1"\napi_key = "${K}"\n',
    )
    cfg = load({"K": "sk-file"})
    assert cfg.openai.api_key_for(None) == SecretStr("sk-file")
    assert cfg.openai.api_key_for("http://vllm/v1") == SecretStr("sk-file")
    assert cfg.openai.api_key_for("http://other/v1") is None
    # an env key may go to a file URL and vice versa: both are configuration
    cfg = load({"K": "sk-file", "OPENAI_BASE_URL": "http://env-url/v1"})
    assert cfg.openai.api_key_for(None) == SecretStr("sk-file")


def test_withheld_key_is_logged_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    cfg = load({"OPENAI_API_KEY": "sk-env"})
    with caplog.at_level(logging.INFO, logger="langchain_matric.config"):
        assert cfg.openai.api_key_for("http://u:pw@other/v1") is None
    assert "not sending the OpenAI API key from the environment" in caplog.text
    assert "sk-env" not in caplog.text
    assert "pw" not in caplog.text


def test_resolve_without_config_loads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-env")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://me.openai.azure.com")
    assert resolve_openai_api_key(None, None) == KEY
    assert resolve_azure_api_key(None, None) == SecretStr("az-env")


@pytest.mark.parametrize(
    ("env", "explicit_key", "explicit_endpoint", "expected"),
    [
        ({"AZURE_OPENAI_API_KEY": "az"}, "k", "https://x", SecretStr("k")),
        (
            {"AZURE_OPENAI_API_KEY": "az", "AZURE_OPENAI_ENDPOINT": "https://me.openai.azure.com"},
            None,
            None,
            SecretStr("az"),
        ),
        (
            {"AZURE_OPENAI_API_KEY": "az", "AZURE_OPENAI_ENDPOINT": "https://me.openai.azure.com"},
            None,
            "https://me.openai.azure.com/",
            SecretStr("az"),
        ),
        (
            {"AZURE_OPENAI_API_KEY": "az", "AZURE_OPENAI_ENDPOINT": "https://me.openai.azure.com"},
            None,
            "https://evil.example",
            None,
        ),
        ({"AZURE_OPENAI_API_KEY": "az"}, None, "https://me.openai.azure.com", None),
        ({"OPENAI_API_KEY": "sk"}, None, None, None),  # the OpenAI key never goes to Azure
    ],
)
def test_azure_key_rule(env, explicit_key, explicit_endpoint, expected) -> None:
    assert resolve_azure_api_key(explicit_key, explicit_endpoint, load(env)) == expected


# -- expected embedding dimensions ------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "env", "expected"),
    [
        ("openai", {}, 1536),
        ("openai", {"OPENAI_EMBED_MODEL": "text-embedding-3-small"}, 1536),
        ("openai", {"OPENAI_EMBED_MODEL": "text-embedding-3-large"}, None),
        (
            "openai",
            {"OPENAI_EMBED_MODEL": "text-embedding-3-large", "OPENAI_EMBED_DIM": "3072"},
            3072,
        ),
        ("openai", {"OPENAI_EMBED_DIM": "512"}, 512),
        ("ollama", {}, 768),
        ("ollama", {"OLLAMA_EMBED_MODEL": "nomic-embed-text:latest"}, 768),
        ("ollama", {"OLLAMA_EMBED_MODEL": "bge-m3"}, None),
        ("ollama", {"OLLAMA_EMBED_MODEL": "bge-m3", "OLLAMA_EMBED_DIM": "1024"}, 1024),
    ],
)
def test_expected_embed_dim(section: str, env: dict[str, str], expected: int | None) -> None:
    assert getattr(load(env), section).expected_embed_dim() == expected


def test_expected_embed_dim_set_in_code() -> None:
    assert OllamaSettings(embed_model="bge-m3", embed_dim=1024).expected_embed_dim() == 1024
    assert OllamaSettings(embed_model="bge-m3").expected_embed_dim() is None


# -- backend constructor arguments ------------------------------------------------------


@dataclass(frozen=True)
class FakeTimeouts:
    connect: float | None = 10.0
    first_byte: float | None = 300.0
    idle: float | None = 60.0
    total: float | None = None


@pytest.fixture
def timeouts_cls(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The real `_http.Timeouts`, or a stand-in while that module is not there yet."""
    try:
        from langchain_matric._http import Timeouts
    except ImportError:
        fake = types.ModuleType("langchain_matric._http")
        fake.Timeouts = FakeTimeouts  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "langchain_matric._http", fake)
        return FakeTimeouts
    return Timeouts


def test_ollama_kwargs(timeouts_cls: Any) -> None:
    cfg = load(
        {"OLLAMA_HOST": "gpu", "OLLAMA_GEN_MODEL": "g", "MATRIC_MAX_RETRIES": "5"},
        ollama={"keep_alive": "5m", "num_ctx": 4096, "think": "high"},
    )
    kwargs = ollama_backend_kwargs(cfg)
    assert kwargs == {
        "base_url": "http://gpu:11434",
        "model": "g",
        "embed_model": "nomic-embed-text",
        "embed_dimension": 768,
        "timeouts": timeouts_cls(connect=10.0, first_byte=300.0, idle=60.0, total=None),
        "max_retries": 5,
        "verify_tls": True,
        "keep_alive": "5m",
        "num_ctx": 4096,
        "think": "high",
    }
    assert backend_kwargs(cfg, "Ollama") == ("ollama", kwargs)


def test_openai_kwargs(timeouts_cls: Any) -> None:
    env = {
        "OPENAI_BASE_URL": "http://vllm:8000/v1",
        "OPENAI_API_KEY": "sk",
        "OPENAI_EMBED_MODEL": "e5",
        "OPENAI_TIMEOUT": "42",
        "OPENAI_SKIP_TLS_VERIFY": "1",
        "OPENAI_ORG_ID": "org",
        "OPENAI_PROJECT_ID": "proj",
        "MATRIC_TOTAL_TIMEOUT": "900",
    }
    kwargs = openai_backend_kwargs(load(env))
    assert kwargs == {
        "base_url": "http://vllm:8000/v1",
        "api_key": SecretStr("sk"),
        "model": "gpt-4o-mini",
        "embed_model": "e5",
        "embed_dimension": None,
        "timeouts": timeouts_cls(connect=10.0, first_byte=42.0, idle=60.0, total=900.0),
        "max_retries": 2,
        "verify_tls": False,
        "organization": "org",
        "project": "proj",
    }
    assert backend_kwargs(load(env), "openai") == ("openai", kwargs)


def test_openai_kwargs_withhold_env_key_from_code_url(timeouts_cls: Any) -> None:
    cfg = load({"OPENAI_API_KEY": "sk"}, openai={"base_url": "http://proxy/v1"})
    assert openai_backend_kwargs(cfg)["api_key"] is None


def test_azure_kwargs(timeouts_cls: Any) -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://me.openai.azure.com",
        "AZURE_OPENAI_API_KEY": "az",
        "AZURE_OPENAI_DEPLOYMENT": "chat-dep",
        "OPENAI_API_TYPE": "azure",
    }
    cfg = load(env)
    kwargs = azure_backend_kwargs(cfg)
    assert kwargs == {
        "base_url": "https://me.openai.azure.com",
        "api_key": SecretStr("az"),
        "model": "chat-dep",
        "embed_model": "text-embedding-3-small",
        "embed_dimension": 1536,
        "timeouts": timeouts_cls(),
        "max_retries": 2,
        "verify_tls": True,
        "azure_endpoint": "https://me.openai.azure.com",
        "api_version": "2024-10-21",
        "azure_deployment": "chat-dep",
        "azure_embed_deployment": "text-embedding-3-small",
    }
    assert backend_kwargs(cfg, "openai") == ("azure", kwargs)  # api_type = azure
    assert backend_kwargs(cfg, "azure") == ("azure", kwargs)
    custom = load(env | {"AZURE_OPENAI_EMBED_DEPLOYMENT": "my-embedder"})
    assert azure_backend_kwargs(custom)["embed_dimension"] is None
    sized = load(env | {"AZURE_OPENAI_EMBED_DEPLOYMENT": "my-embedder", "OPENAI_EMBED_DIM": "256"})
    assert azure_backend_kwargs(sized)["embed_dimension"] == 256


def test_azure_needs_an_endpoint(timeouts_cls: Any) -> None:
    config_error("AZURE_OPENAI_ENDPOINT", azure_backend_kwargs, load())
    config_error(
        "AZURE_OPENAI_ENDPOINT", backend_kwargs, load({"OPENAI_API_TYPE": "azure"}), "openai"
    )


def test_unknown_backend_name_lists_valid_names() -> None:
    config_error(
        "unknown backend 'vllm'; valid names: 'ollama', 'openai', 'azure'",
        backend_kwargs,
        load(),
        "vllm",
    )
