"""Endpoint pools without I/O: `pick`, cooldown transitions on a fake clock, the failover
decision, `EndpointPool`'s leases and stats, and base_url lists in the configuration and
the LangChain classes (the pool's contract: docs/architecture.md, "Endpoint pools")."""

from __future__ import annotations

import pickle

import pytest

from langchain_matric import ChatMatric, MatricEmbeddings, MatricLLM
from langchain_matric._http import HTTPConfig, RetryPolicy
from langchain_matric.backends import OllamaBackend, OpenAIBackend
from langchain_matric.backends._pool import EndpointPool
from langchain_matric.backends._pool._failover import Attempts, all_failed, should_fail_over
from langchain_matric.backends._pool._pick import pick
from langchain_matric.backends._pool._state import (
    COOLDOWN_MAX,
    EndpointState,
    cooldown_seconds,
    record_failure,
    record_success,
)
from langchain_matric.config import InferenceConfig
from langchain_matric.errors import (
    BackendConnectionError,
    BackendHTTPError,
    BackendTimeoutError,
    BadRequestError,
    ConfigurationError,
    RateLimitError,
    ServerError,
    StreamError,
)
from tests.pool_support import A, B, C, Clock


def states(*in_flight: int) -> list[EndpointState]:
    return [EndpointState(f"http://e{i}", in_flight=n) for i, n in enumerate(in_flight)]


# -- pick ------------------------------------------------------------------------------


def test_ties_rotate_so_sequential_picks_alternate() -> None:
    three = states(0, 0, 0)
    assert [pick(three, 0.0, start) for start in range(6)] == [0, 1, 2, 0, 1, 2]


def test_fewest_in_flight_wins_and_ties_rotate_among_the_least_loaded() -> None:
    assert pick(states(2, 1, 3), 0.0, 0) == 1
    assert [pick(states(1, 0, 0), 0.0, s) for s in range(4)] == [1, 2, 1, 2]


def test_cooling_endpoints_are_skipped_unless_all_are() -> None:
    endpoints = states(0, 5)
    endpoints[0].cooldown_until = 10.0
    assert pick(endpoints, 5.0, 0) == 1  # busy but healthy beats idle but cooling
    assert pick(endpoints, 10.0, 0) == 0  # cooldown over
    endpoints[1].cooldown_until = 20.0
    assert pick(endpoints, 5.0, 0) == 0  # all cool: least in flight among all


def test_endpoints_tried_by_this_call_are_avoided_while_others_are_left() -> None:
    assert pick(states(0, 3, 3), 0.0, 0, avoid={0}) == 1
    assert pick(states(0, 3), 0.0, 0, avoid={0, 1}) == 0  # all tried: any


def test_an_affinity_key_sticks_to_one_healthy_endpoint_whatever_the_load() -> None:
    endpoints = states(0, 0, 0)
    chosen = pick(endpoints, 0.0, 0, key=12345)
    for start in range(5):
        endpoints[chosen].in_flight = start
        assert pick(endpoints, 0.0, start, key=12345) == chosen
    endpoints[chosen].cooldown_until = 50.0  # cooling: the key moves, the others stay
    moved = pick(endpoints, 0.0, 0, key=12345)
    assert moved != chosen
    keys = range(200)
    spread = {pick(states(0, 0, 0), 0.0, 0, key=k) for k in keys}
    assert spread == {0, 1, 2}  # keys spread over every endpoint


# -- cooldown transitions (a fake clock) ----------------------------------------------


def test_cooldown_doubles_from_one_second_to_thirty_and_a_success_resets_it() -> None:
    clock = Clock()
    state = EndpointState(A)
    lengths = []
    for _ in range(7):
        record_failure(state, ServerError("503", status=503), clock())
        lengths.append(state.cooldown_until - clock())
    assert lengths == [1.0, 2.0, 4.0, 8.0, 16.0, COOLDOWN_MAX, COOLDOWN_MAX]
    assert state.cooling(clock()) and state.cooldown_reason == "503"
    clock.now += COOLDOWN_MAX
    assert not state.cooling(clock())
    record_success(state, 0.5)
    assert (state.streak, state.cooldown_until, state.cooldown_reason) == (0, 0.0, "")
    record_failure(state, BackendConnectionError("refused"), clock())
    assert state.cooldown_until - clock() == 1.0  # the streak starts over
    assert (state.failures, state.latency_count) == (8, 1)


def test_a_429_cools_for_its_retry_after() -> None:
    state = EndpointState(A)
    error = RateLimitError("slow down", status=429, retry_after=7.0)
    record_failure(state, error, 100.0)
    assert state.cooldown_until == 107.0
    assert cooldown_seconds(RateLimitError("x", status=429), 1) == 1.0  # none sent: backoff


@pytest.mark.parametrize(
    ("error", "cools"),
    [
        (BackendConnectionError("refused"), True),
        (BackendTimeoutError("connect timeout"), True),
        (ServerError("500", status=500), True),
        (RateLimitError("429", status=429), True),
        (BadRequestError("400", status=400), False),
        (BackendHTTPError("404", status=404), False),
        (BackendHTTPError("409", status=409), False),
        (StreamError("cut mid-stream"), False),
    ],
)
def test_what_cools_an_endpoint(error: Exception, cools: bool) -> None:
    state = EndpointState(A)
    record_failure(state, error, 0.0)
    assert state.cooling(0.0) is cools
    assert state.failures == 1


def test_a_read_timeout_does_not_cool_a_slow_server() -> None:
    error = BackendTimeoutError("no first byte")
    error.is_retryable = False  # what the transports set for first-byte / idle timeouts
    assert cooldown_seconds(error, 1) is None


# -- failover decision ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BackendConnectionError("refused"), True),
        (ServerError("503", status=503), True),
        (RateLimitError("429", status=429), True),
        (BadRequestError("400", status=400), False),
        (BackendHTTPError("404", status=404), False),
        (StreamError("mid-stream"), False),
    ],
)
def test_should_fail_over(error: Exception, expected: bool) -> None:
    assert should_fail_over(error, data_sent=False) is expected  # type: ignore[arg-type]
    assert should_fail_over(error, data_sent=True) is False  # type: ignore[arg-type]


def test_408_and_409_fail_over() -> None:
    for status in (408, 409):
        error = BackendHTTPError(str(status), status=status)
        error.is_retryable = True  # as error_from_response builds them
        assert should_fail_over(error, data_sent=False)


def test_attempts_fail_over_at_once_then_back_off_when_every_endpoint_was_tried() -> None:
    clock = Clock()
    pool = EndpointPool([A, B], clock=clock)
    attempts = Attempts(pool, RetryPolicy(max_retries=3, jitter=0.0), lambda: 0.0, None)
    refused = BackendConnectionError("refused")
    pool.acquire()
    pool.release(0, refused)
    assert attempts.next_wait(0, refused) == 0.0  # B is healthy and untried: at once
    pool.acquire(attempts.tried)
    pool.release(1, refused)
    assert attempts.next_wait(1, refused) == 1.0  # both tried: the policy's backoff
    assert attempts.tried == set()  # after the wait, any endpoint may go again
    assert attempts.next_wait(0, refused) == 2.0
    assert attempts.next_wait(0, refused) is None  # max_retries + 1 attempts in all
    final = attempts.final_error(refused)
    assert isinstance(final, BackendConnectionError)
    assert str(final) == f"all 2 endpoints failed: {A}: refused; {B}: refused"


def test_max_retries_zero_means_one_attempt_and_the_error_as_it_is() -> None:
    pool = EndpointPool([A, B])
    attempts = Attempts(pool, RetryPolicy(max_retries=0), lambda: 0.0, None)
    error = ServerError("503", status=503)
    assert attempts.next_wait(0, error) is None
    assert attempts.final_error(error) is error  # B was never tried: not "all failed"


def test_the_total_timeout_stops_the_failover() -> None:
    clock = Clock()
    pool = EndpointPool([A], clock=clock)
    attempts = Attempts(pool, RetryPolicy(max_retries=5, jitter=0.0), lambda: 0.0, total=1.0)
    attempts.started = clock()
    assert attempts.next_wait(0, ServerError("x", status=503)) == 0.5
    assert attempts.next_wait(0, ServerError("x", status=503)) is None  # 1.0 s >= total


def test_all_failed_names_each_url_and_its_last_error() -> None:
    error = all_failed([A, B], [BackendConnectionError("refused"), ServerError("503", status=503)])
    assert str(error) == f"all 2 endpoints failed: {A}: refused; {B}: 503"
    assert not error.is_retryable


# -- EndpointPool ---------------------------------------------------------------------


def test_leases_count_in_flight_and_stats_report_each_endpoint() -> None:
    clock = Clock()
    pool = EndpointPool([A, B], clock=clock)
    first, second, third = pool.acquire(), pool.acquire(), pool.acquire()
    assert (first, second, third) == (0, 1, 0)
    pool.answered(first, 0.2)
    pool.release(first, None)
    pool.release(third, ServerError("boom", status=502))
    stats = pool.endpoint_stats()
    assert stats[A].requests == 2 and stats[A].failures == 1 and stats[A].in_flight == 0
    assert stats[A].cooldown == 1.0 and stats[A].cooldown_reason == "boom"
    assert stats[A].latency == pytest.approx(0.2)
    assert stats[B].in_flight == 1 and stats[B].latency is None
    clock.now += 1.5
    assert pool.endpoint_stats()[A].cooldown == 0.0
    assert pool.endpoint_stats()[A].cooldown_reason == ""


def test_a_pool_pickles_with_fresh_counts() -> None:
    pool = EndpointPool([A, B])
    pool.acquire()
    copy = pickle.loads(pickle.dumps(pool))
    assert copy.urls == (A, B)
    assert all(s.requests == 0 for s in copy.endpoint_stats().values())
    assert copy.acquire() == 0


def test_prefix_affinity_keys_on_the_first_messages() -> None:
    pool = EndpointPool([A, B], prefix_affinity=2)
    system = {"role": "system", "content": "You are terse."}
    first = {"messages": [system, {"role": "user", "content": "hi"}]}
    later = {
        "messages": [system, {"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]
    }
    other = {"messages": [system, {"role": "user", "content": "bye"}]}
    assert pool.affinity_key(first) == pool.affinity_key(later) != pool.affinity_key(other)
    assert EndpointPool([A, B]).affinity_key(first) is None  # off by default
    assert pool.affinity_key({"prompt": "no messages"}) is None
    assert pool.affinity_key({"model": "e", "input": ["a", "b"]}) is None  # embeddings: texts


# -- backends -------------------------------------------------------------------------


def test_backends_take_a_list_and_say_what_base_url_returns() -> None:
    with OpenAIBackend([f"http://me:pw@{A[7:]}", B], model="m") as backend:
        assert backend.base_url == A  # the first endpoint, credentials removed
        assert backend.base_urls == (A, B)
        assert list(backend.endpoint_stats()) == [A, B]
        assert "pw" not in repr(backend) and repr(backend).startswith("OpenAIBackend(base_url=[")
    with OllamaBackend(["127.0.0.1:11434", "http://127.0.0.1:11435/"], model="m") as ollama:
        assert ollama.base_urls == ("http://127.0.0.1:11434", "http://127.0.0.1:11435")
    with OpenAIBackend(A, model="m") as single:
        assert single.base_urls == (A,) and single.endpoint_stats() == {}


@pytest.mark.parametrize(
    ("base_url", "says"),
    [
        ([], "at least one URL"),
        ([A, A], "twice"),
        ([A, 3], "a list of URLs"),
        (["ftp://x"], "http://"),
    ],
)
def test_bad_lists_are_configuration_errors(base_url: object, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        OpenAIBackend(base_url, model="m")  # type: ignore[arg-type]


def test_ollama_refuses_a_v1_url_in_a_list() -> None:
    with pytest.raises(ConfigurationError, match="OllamaBackend adds the /api"):
        OllamaBackend(["http://127.0.0.1:11434", "http://127.0.0.1:11435/v1"])


def test_prefix_affinity_must_be_a_count() -> None:
    with pytest.raises(ConfigurationError, match="prefix_affinity"):
        OpenAIBackend([A, B], model="m", prefix_affinity=True)
    with pytest.raises(ConfigurationError, match="prefix_affinity"):
        OpenAIBackend([A, B], model="m", prefix_affinity=-1)


def test_a_pool_backend_pickles() -> None:
    backend = OpenAIBackend([A, B], model="m", api_key="sk-secret")
    copy = pickle.loads(pickle.dumps(backend))
    assert copy.base_urls == (A, B)
    assert copy.endpoint_stats()[B].requests == 0
    backend.close()
    copy.close()


def test_each_endpoint_sends_one_attempt_and_the_pool_owns_the_policy() -> None:
    backend = OpenAIBackend([A, B], model="m", max_retries=4)
    assert backend._config.retry.max_retries == 4
    assert [t.config.retry.max_retries for t in backend._sync.transports] == [0, 0]  # type: ignore[union-attr]
    assert [t.config.base_url for t in backend._async.transports] == [A, B]  # type: ignore[union-attr]
    backend.close()


# -- configuration and the LangChain classes ------------------------------------------


def test_environment_lists_are_comma_separated() -> None:
    config = InferenceConfig.load(
        env={"OPENAI_BASE_URL": f"{A}, {B}/", "OLLAMA_BASE": "http://h1:11434,http://h2:11434"}
    )
    assert config.openai.base_url == (A, B)
    assert config.ollama.base_url == ("http://h1:11434", "http://h2:11434")
    assert InferenceConfig.load(env={"OPENAI_BASE_URL": A}).openai.base_url == A


def test_toml_arrays(tmp_path) -> None:
    path = tmp_path / "matric.toml"
    path.write_text(
        f'[inference.openai]\nbase_url = ["{A}", "${{SECOND}}"]\n'
        '[inference.ollama]\nbase_url = ["http://h1:11434", "http://h2:11434"]\n'
    )
    config = InferenceConfig.load(path=path, env={"SECOND": B})
    assert config.openai.base_url == (A, B)
    assert config.ollama.base_url == ("http://h1:11434", "http://h2:11434")


def test_a_bad_url_in_a_list_is_named(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="URL 2 of 2"):
        InferenceConfig.load(env={"OPENAI_BASE_URL": f"{A},127.0.0.1:8002"})


def test_an_environment_key_goes_to_a_pool_from_the_environment_only() -> None:
    env = {"OPENAI_BASE_URL": f"{A},{B}", "OPENAI_API_KEY": "sk-env"}
    config = InferenceConfig.load(env=env)
    assert config.openai.api_key_for(None) is not None
    assert config.openai.api_key_for([A, B]) is not None  # the same pool
    assert config.openai.api_key_for([A, C]) is None  # another URL given in code


@pytest.mark.parametrize("cls", [ChatMatric, MatricLLM, MatricEmbeddings])
def test_the_langchain_classes_take_a_list_without_showing_credentials(cls: type) -> None:
    model = cls(backend="openai", base_url=[f"http://me:pw@{A[7:]}", B], model="m")
    assert model.model_dump()["base_url"] == [A, B]
    assert "pw" not in repr(model) and f"base_url={[A, B]!r}" in repr(model)
    backend = model._resolve_backend("embedding" if cls is MatricEmbeddings else "generation")
    assert backend.base_urls == (A, B)
    if cls is not MatricEmbeddings:
        assert model._identifying_params["base_url"] == [A, B]
    model.close()


def test_identifying_params_of_a_pool_from_the_configuration(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{A},{B}")
    chat = ChatMatric(backend="openai", model="m")
    assert chat._identifying_params["base_url"] == [A, B]
    chat.close()


def test_an_empty_list_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="at least one URL"):
        ChatMatric(backend="openai", base_url=[], model="m")


def test_http_config_of_a_pool_is_the_first_endpoint() -> None:
    backend = OpenAIBackend([A, B], model="m")
    assert isinstance(backend._config, HTTPConfig) and backend._config.base_url == A
    backend.close()
