"""The shared adapter base: fields, backend resolution, options, stream bookkeeping."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import pickle
import subprocess
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from langchain_matric._backend_build import strip_credentials
from langchain_matric._concurrency import amap_bounded, map_bounded
from langchain_matric._streams import StopScanner, StreamCursor, cut_at_stop
from langchain_matric._tokens import estimate_tokens
from langchain_matric.backends import GenerationDelta, Usage
from langchain_matric.chat_models import ChatMatric
from langchain_matric.embeddings import MatricEmbeddings
from langchain_matric.errors import ConfigurationError
from langchain_matric.llms import MatricLLM
from tests.unit_tests._matric_fakes import FakeEmbeddingBackend, PlainBackend, ScriptedBackend

LOCAL = "http://127.0.0.1:9/v1"  # never contacted: construction does no I/O

ALL_CLASSES = [MatricLLM, ChatMatric, MatricEmbeddings]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "MATRIC_CONFIG",
        "OLLAMA_HOST",
        "OLLAMA_BASE",
        "MATRIC_INFERENCE_DEFAULT_GENERATION",
        "MATRIC_INFERENCE_DEFAULT_EMBEDDING",
        "OPENAI_API_TYPE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(str(tmp_path))  # no stray ./matric.toml


def _http_ready() -> bool:
    try:
        from langchain_matric._http import AsyncTransport, SyncTransport, Timeouts  # noqa: F401
    except ImportError:
        return False
    return True


needs_http = pytest.mark.skipif(not _http_ready(), reason="transports not available yet")


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_backend_names_are_normalised(cls: type) -> None:
    assert cls(backend="OpenAI", base_url=LOCAL).backend == "openai"
    assert cls(backend=" ollama ").backend == "ollama"


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_unknown_backend_name_is_a_clear_error(cls: type) -> None:
    with pytest.raises(ValidationError, match="backend='vllm' is unknown"):
        cls(backend="vllm")


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_backend_of_wrong_type_is_rejected(cls: type) -> None:
    with pytest.raises(ValidationError, match="not int"):
        cls(backend=3)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_unknown_argument_is_rejected(cls: type) -> None:
    with pytest.raises(ValidationError, match="temprature"):
        cls(backend="openai", temprature=0.1)


@pytest.mark.parametrize("field", ["base_url", "api_key", "timeout", "max_retries"])
def test_connection_settings_cannot_be_combined_with_an_instance(field: str) -> None:
    value = {"base_url": LOCAL, "api_key": "k", "timeout": 5.0, "max_retries": 1}[field]
    with pytest.raises(ValidationError, match=f"{field} cannot be combined"):
        ChatMatric(backend=ScriptedBackend(), **{field: value})


def test_instance_without_generation_is_rejected_for_text_classes() -> None:
    with pytest.raises(ValidationError, match="cannot generate"):
        MatricLLM(backend=_EmbedOnly())


def test_instance_without_embeddings_is_rejected_for_embeddings() -> None:
    with pytest.raises(ValidationError, match="cannot embed"):
        MatricEmbeddings(backend=_GenerateOnly())


class _EmbedOnly:
    model_name = "e"
    dimension = 3

    def embed_texts(self, texts: list[str]) -> list[list[float]]:
        return [[0.0] * 3 for _ in texts]

    async def aembed_texts(self, texts: list[str]) -> list[list[float]]:
        return self.embed_texts(texts)


class _GenerateOnly:
    model_name = "g"

    def generate(self, request: object, *, options: object = None) -> object:
        raise NotImplementedError

    async def agenerate(self, request: object, *, options: object = None) -> object:
        raise NotImplementedError


@pytest.mark.parametrize("key", ["temperature", "stop", "model", "max_tokens", "tools"])
def test_model_kwargs_clash_with_named_fields_is_an_error(key: str) -> None:
    with pytest.raises(ValidationError, match=f"model_kwargs must not contain {key}"):
        MatricLLM(backend=ScriptedBackend(), model_kwargs={key: 1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, "timeout=0"),
        ({"timeout": -1.0}, "timeout=-1.0"),
        ({"max_retries": -1}, "max_retries=-1"),
        ({"max_tokens": 0}, "max_tokens=0"),
    ],
)
def test_bad_numbers_name_the_field(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ChatMatric(backend="openai", **kwargs)


# -- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MatricLLM, ChatMatric])
def test_no_secret_in_repr_params_or_traces(cls: type) -> None:
    model = cls(
        backend="openai",
        base_url="http://user:hunter2@127.0.0.1:9/v1",
        api_key="sk-very-secret",
        model="m",
    )
    assert isinstance(model.api_key, SecretStr)
    if _http_ready():
        params = model._identifying_params
        assert params["base_url"] == "http://127.0.0.1:9/v1"
        everything = repr(model) + repr(params) + repr(model._get_ls_params())
    else:
        everything = repr(model)
    for secret in ("hunter2", "sk-very-secret"):
        assert secret not in everything


def test_strip_credentials() -> None:
    assert strip_credentials("https://u:p@h.example:8443/v1?key=s#x") == "https://h.example:8443/v1"
    assert strip_credentials("http://[::1]:11434") == "http://[::1]:11434"


def test_identifying_params_for_an_instance() -> None:
    llm = MatricLLM(backend=ScriptedBackend(model_name="inst"), temperature=0.2, seed=7)
    assert llm._identifying_params == {
        "backend": "ScriptedBackend",
        "base_url": None,
        "model": "inst",
        "temperature": 0.2,
        "seed": 7,
    }
    assert MatricLLM(backend=ScriptedBackend(), model="other")._identifying_params["model"] == (
        "other"
    )


# -- options ------------------------------------------------------------------------------


def test_options_from_fields_and_call_kwargs() -> None:
    llm = ChatMatric(
        backend=ScriptedBackend(),
        temperature=0.1,
        max_tokens=10,
        top_p=0.9,
        seed=1,
        stop=["A", "B"],
        model_kwargs={"presence_penalty": 0.5, "frequency_penalty": 1.0},
        logprobs=True,
        n=2,
    )
    kwargs = {
        "temperature": 0.7,
        "model": "m2",
        "frequency_penalty": 0.0,
        "logprobs": False,
        "top_logprobs": 3,
        "stream": True,
        "top_k": 3,
    }
    options, model = llm._options(["B", "C"], kwargs)
    assert model == "m2"
    assert options.temperature == 0.7
    assert options.max_tokens == 10
    assert options.top_p == 0.9
    assert options.seed == 1
    assert options.stop == ["A", "B", "C"]
    assert (options.n, options.logprobs, options.top_logprobs) == (2, False, 3)
    assert options.extra == {"presence_penalty": 0.5, "frequency_penalty": 0.0, "top_k": 3}
    assert kwargs["top_k"] == 3  # read, not consumed


def test_options_defaults_are_none() -> None:
    options, model = MatricLLM(backend=ScriptedBackend())._options(None, {})
    assert (options.temperature, options.max_tokens, options.stop, model) == (
        None,
        None,
        None,
        None,
    )
    assert options.extra == {}


def test_ls_params_honour_call_overrides() -> None:
    chat = ChatMatric(backend=ScriptedBackend(model_name="base"), temperature=0.0, max_tokens=5)
    params = chat._get_ls_params(stop=["x"], model="override", temperature=0.5)
    assert params == {
        "ls_provider": "matric",
        "ls_model_name": "override",
        "ls_model_type": "chat",
        "ls_temperature": 0.5,
        "ls_max_tokens": 5,
        "ls_stop": ["x"],
    }
    assert MatricLLM(backend=ScriptedBackend(), stop=["s"])._get_ls_params()["ls_stop"] == ["s"]
    assert MatricLLM(backend=ScriptedBackend())._get_ls_params()["ls_model_type"] == "llm"


# -- lazy backends: copies, pickle --------------------------------------------------------


def test_instance_backend_is_used_as_is() -> None:
    backend = ScriptedBackend()
    llm = MatricLLM(backend=backend)
    assert llm._generation_backend() is backend
    assert llm.model_copy()._generation_backend() is backend


def test_pickle_and_deepcopy_with_an_instance_backend() -> None:
    llm = MatricLLM(backend=PlainBackend(), temperature=0.3)
    clone = pickle.loads(pickle.dumps(llm))
    assert clone.temperature == 0.3
    assert clone.invoke("x") == "plain answer"
    assert copy.deepcopy(llm).invoke("x") == "plain answer"


@needs_http
def test_construction_builds_nothing_and_first_use_builds_once() -> None:
    chat = ChatMatric(backend="openai", base_url=LOCAL, api_key="k", model="m")
    assert chat._backends.entries == {}
    first = chat._generation_backend()
    assert chat._generation_backend() is first
    assert type(first).__name__ == "OpenAIBackend"
    assert first.model_name == "m"
    chat.close()
    assert chat._backends.entries == {}


@needs_http
def test_copies_share_a_backend_only_with_the_same_settings() -> None:
    chat = ChatMatric(backend="openai", base_url=LOCAL, api_key="k", model="m")
    backend = chat._generation_backend()
    same = chat.model_copy()
    assert same._generation_backend() is backend
    other = chat.model_copy(update={"base_url": "http://127.0.0.1:10/v1"})
    assert other._generation_backend() is not backend
    assert other._generation_backend().base_url == "http://127.0.0.1:10/v1"
    assert chat._generation_backend() is backend  # unaffected by the copy
    chat.timeout = 5.0  # LangChain models are mutable: a new setting, a new backend
    assert chat._generation_backend() is not backend
    chat.close()


@needs_http
def test_deepcopy_and_pickle_leave_built_backends_behind() -> None:
    chat = ChatMatric(backend="ollama", base_url="http://127.0.0.1:9", model="m")
    backend = chat._generation_backend()
    deep = copy.deepcopy(chat)
    assert deep._backends.entries == {}
    assert deep._generation_backend() is not backend
    data = pickle.dumps(chat)
    assert b"OllamaBackend" not in data
    clone = pickle.loads(data)
    assert clone._backends.entries == {}
    assert clone._generation_backend().model_name == "m"
    chat.close()


@needs_http
def test_build_uses_config_and_key_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret")
    monkeypatch.setenv("MATRIC_INFERENCE_DEFAULT_GENERATION", "openai")
    # A base_url given in code without a key: the environment key must not go there.
    local = ChatMatric(base_url=LOCAL)._generation_backend()
    assert "sk-env-secret" not in repr(local._config.headers)
    assert type(local).__name__ == "OpenAIBackend"
    # The default OpenAI URL gets the environment key.
    remote = ChatMatric()._generation_backend()
    assert remote._config.headers["Authorization"] == "Bearer sk-env-secret"
    explicit = ChatMatric(base_url=LOCAL, api_key="sk-code")._generation_backend()
    assert explicit._config.headers["Authorization"] == "Bearer sk-code"


@needs_http
def test_defaults_per_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATRIC_INFERENCE_DEFAULT_GENERATION", "openai")
    monkeypatch.setenv("MATRIC_INFERENCE_DEFAULT_EMBEDDING", "ollama")
    assert type(MatricLLM()._generation_backend()).__name__ == "OpenAIBackend"
    embeddings = MatricEmbeddings(model="mxbai-embed-large")
    backend = embeddings._embedding_backend()
    assert type(backend).__name__ == "OllamaBackend"
    assert backend.embed_model == "mxbai-embed-large"
    assert backend.dimension is None  # the configured 768 belongs to another model
    sized = MatricEmbeddings(backend="openai", base_url=LOCAL, dimensions=256)
    assert sized._embedding_backend().dimension == 256


@needs_http
def test_timeout_maps_to_transport_timeouts() -> None:
    backend = ChatMatric(backend="openai", base_url=LOCAL, timeout=42.0)._generation_backend()
    timeouts = backend._config.timeouts
    assert (timeouts.connect, timeouts.first_byte, timeouts.idle) == (10.0, 42.0, 42.0)
    fast = ChatMatric(backend="openai", base_url=LOCAL, timeout=2.0)._generation_backend()
    assert fast._config.timeouts.connect == 2.0
    retries = ChatMatric(backend="openai", base_url=LOCAL, max_retries=0)._generation_backend()
    assert retries._config.retry.max_retries == 0


@needs_http
def test_build_is_thread_safe() -> None:
    chat = ChatMatric(backend="openai", base_url=LOCAL)
    seen: list[object] = []
    barrier = threading.Barrier(8, timeout=30)

    def grab() -> None:
        barrier.wait()
        seen.append(chat._generation_backend())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in seen}) == 1
    chat.close()


async def test_aclose_closes_built_backends_only() -> None:
    backend = ScriptedBackend()
    llm = MatricLLM(backend=backend)
    await llm.aclose()  # an instance belongs to the caller: nothing to do
    assert llm._generation_backend() is backend


# -- tokens -------------------------------------------------------------------------------


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("Hello, world!") == 4
    assert estimate_tokens("a" * 40) == 10
    assert 200 <= estimate_tokens("The quick brown fox jumps over the lazy dog. " * 25) <= 300


def test_get_num_tokens_is_offline_and_custom_ids_win() -> None:
    llm = MatricLLM(backend=ScriptedBackend())
    assert llm.get_num_tokens("Hello, world!") == 4
    with pytest.raises(NotImplementedError, match="custom_get_token_ids"):
        llm.get_token_ids("x")
    custom = MatricLLM(backend=ScriptedBackend(), custom_get_token_ids=lambda t: [1] * len(t))
    assert custom.get_num_tokens("abc") == 3
    assert custom.get_token_ids("ab") == [1, 1]


# -- stop scanning ------------------------------------------------------------------------


@given(
    text=st.text(alphabet="ab\n", max_size=40),
    stops=st.lists(st.text(alphabet="ab\n", min_size=1, max_size=4), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_stop_scanner_matches_whole_text_cut_for_any_split(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    scanner = StopScanner(stops)
    out: list[str] = []
    matched = False
    hold = max(len(s) for s in stops) - 1
    for piece in pieces:
        released, matched = scanner.feed(piece)
        out.append(released)
        if matched:
            break
        assert len(scanner._buffer) <= hold
    if not matched:
        out.append(scanner.flush())
    cut = cut_at_stop(text, stops)
    assert "".join(out) == (text if cut is None else text[:cut])
    assert matched == (cut is not None)


def test_stream_cursor_attaches_end_metadata_once() -> None:
    cursor = StreamCursor(None, None)
    assert cursor.advance(GenerationDelta(text="a", model="m1")) == ("a", False)
    usage = Usage(1, 2)
    assert cursor.advance(GenerationDelta(text="b", finish_reason="stop", usage=usage)) == (
        "b",
        True,
    )
    assert (cursor.model, cursor.finish_reason, cursor.usage) == ("m1", "stop", usage)
    assert cursor.advance(GenerationDelta(text="late", usage=Usage(9, 9))) == ("late", False)
    assert cursor.usage is usage
    assert cursor.tail() is None


def test_stream_cursor_stop_and_tail() -> None:
    cursor = StreamCursor(["END"], None)
    assert cursor.advance(GenerationDelta(text="abcE")) == ("ab", False)
    assert cursor.advance(GenerationDelta(text="Nxyz")) == ("cENx", False)
    assert cursor.tail() == "yz"
    stopped = StreamCursor(["END"], "m")
    assert stopped.advance(GenerationDelta(text="hello EN")) == ("hello ", False)
    assert stopped.advance(GenerationDelta(text="D and more")) == ("", True)
    assert (stopped.stopped, stopped.finish_reason, stopped.model) == (True, "stop", "m")


# -- bounded concurrency ------------------------------------------------------------------


def test_map_bounded_keeps_order_and_bounds_threads() -> None:
    lock = threading.Lock()
    active = [0, 0]

    def work(x: int) -> int:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        try:
            return x * x
        finally:
            with lock:
                active[0] -= 1

    assert map_bounded(work, list(range(20)), 3) == [x * x for x in range(20)]
    assert active[1] <= 3
    assert map_bounded(work, [], 3) == []


async def test_amap_bounded_propagates_the_error_and_cancels_the_rest() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def work(x: int) -> int:
        started.append(x)
        if x == 1:
            raise KeyError(x)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        return x

    with pytest.raises(KeyError):
        await amap_bounded(work, [0, 1, 2, 3], 2)
    assert 0 in cancelled


async def test_amap_bounded_limits_concurrency() -> None:
    active = [0, 0]

    async def work(x: int) -> int:
        active[0] += 1
        active[1] = max(active[1], active[0])
        await asyncio.sleep(0)
        active[0] -= 1
        return -x

    assert await amap_bounded(work, list(range(10)), 4) == [-x for x in range(10)]
    assert active[1] == 4


def test_embeddings_reject_model_that_an_instance_cannot_apply() -> None:
    with pytest.raises(ValidationError, match="cannot apply to a backend instance"):
        MatricEmbeddings(backend=FakeEmbeddingBackend(), model="other")
    assert MatricEmbeddings(backend=FakeEmbeddingBackend(), model="fake-embed")


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)


class _Counting(ScriptedBackend):
    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_built_backends_close_when_the_last_user_is_collected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    built: list[_Counting] = []

    def fake_build(self: object, purpose: str) -> _Counting:
        built.append(_Counting())
        return built[-1]

    monkeypatch.setattr("langchain_matric._base.MatricBase._build_backend", fake_build)
    chat = ChatMatric(backend="openai", base_url=LOCAL)
    assert chat.invoke("hi").content == "echo: hi"
    twin = chat.model_copy()  # shares the cache and so the backend
    del chat
    gc.collect()
    assert built[0].closed == 0
    assert twin.invoke("x").content == "echo: x"
    assert len(built) == 1
    del twin
    gc.collect()
    assert built[0].closed == 1


def test_serialized_form_for_tracers_has_no_secret() -> None:
    chat = ChatMatric(
        backend="openai", base_url="http://u:hunter2@127.0.0.1:9/v1", api_key="sk-secret"
    )
    text = repr(chat._serialized)
    assert "hunter2" not in text
    assert "sk-secret" not in text


def test_importing_the_classes_loads_no_transport_backend_or_config() -> None:
    # The HTTP layer, the backends, the config loader and the optional packages load on
    # first use: a fresh interpreter, so nothing imported by other tests can hide one.
    code = (
        "import json, sys; from langchain_matric import ChatMatric, MatricEmbeddings, MatricLLM; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert {"langchain_matric.chat_models", "langchain_matric.embeddings"} <= loaded
    for lazy in (
        "langchain_matric._http",
        "langchain_matric.backends.openai",
        "langchain_matric.backends.ollama",
        "langchain_matric.backends._selector",
        "langchain_matric.config",
        "aiohttp",
        "tqdm",
        "pydantic_settings",
    ):
        assert lazy not in loaded, f"{lazy} is imported with the package"


_FIRST_INSTANCES_AT_ONCE = """
import json, threading
from pydantic import ValidationError
from langchain_matric import ChatMatric, MatricEmbeddings, MatricLLM

start = threading.Barrier(24)
outcomes = []

def first_instance(cls):
    start.wait()
    try:
        cls(backend="openai", model="m", tempreature=0.5)  # misspelt: must be refused
        outcomes.append("accepted")
    except ValidationError as exc:  # refused for the misspelt argument, not anything else
        outcomes.append("refused" if "tempreature" in str(exc) else str(exc))

threads = [
    threading.Thread(target=first_instance, args=(cls,))
    for cls in (ChatMatric, MatricEmbeddings, MatricLLM)
    for _ in range(8)
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(outcomes))
"""


def test_first_instances_created_at_once_in_threads_are_all_validated() -> None:
    # With pydantic's deferred build, the classes' validators are built by the first
    # instance: threads racing to create it must all get our validator (which refuses
    # unknown arguments), never langchain-core's (which ignores them).
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_INSTANCES_AT_ONCE], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == ["refused"] * 24
