"""Pinning stored Responses API answers to their endpoint, without I/O: the bounded map,
pinned attempts (no pick, no failover, the clear errors), where the response id comes
from (whole answers, both stream parsers' ends, `StreamCursor`), and what is pinned
(docs/architecture.md, "Endpoint pools")."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from langchain_matric._http import RetryPolicy
from langchain_matric._streams import StreamCursor
from langchain_matric.backends import GenerationDelta
from langchain_matric.backends._http_backend import JSONBodyParser
from langchain_matric.backends._openai_wire import generation_to_deltas
from langchain_matric.backends._pool import EndpointPool
from langchain_matric.backends._pool import _pool as pool_module
from langchain_matric.backends._pool._failover import Attempts, run_sync
from langchain_matric.backends._responses_stream import ResponsesStreamParser
from langchain_matric.backends._responses_wire import parse_responses_response
from langchain_matric.errors import BackendConnectionError, BadRequestError, ServerError
from tests.pool_support import A, B, C, Clock


def continuing(response_id: str) -> dict[str, Any]:
    return {"model": "m", "input": [], "previous_response_id": response_id}


# -- the map ---------------------------------------------------------------------------


def test_a_pinned_id_names_its_endpoint_and_others_route_as_usual() -> None:
    pool = EndpointPool([A, B, C])
    assert pool.pinned(continuing("resp_1")) is None  # nothing pinned yet
    pool.pin("resp_1", 2)
    assert pool.pinned(continuing("resp_1")) == (2, "resp_1")
    assert pool.pinned(continuing("resp_other")) is None  # made elsewhere
    assert pool.pinned({"model": "m", "input": []}) is None  # continues nothing
    assert pool.pinned({"previous_response_id": 7}) is None
    assert pool.pinned("not a body") is None


def test_the_map_keeps_the_most_recently_used_ids(monkeypatch) -> None:
    monkeypatch.setattr(pool_module, "PIN_LIMIT", 3)
    pool = EndpointPool([A, B])
    for n in range(3):
        pool.pin(f"resp_{n}", n % 2)
    assert pool.pinned(continuing("resp_0")) == (0, "resp_0")  # used: now the newest
    pool.pin("resp_3", 1)  # over the limit: the least recently used (resp_1) goes
    assert pool.pinned(continuing("resp_1")) is None
    assert [pool.pinned(continuing(f"resp_{n}")) is not None for n in (0, 2, 3)] == [True] * 3
    assert len(pool._pins) == 3


def test_the_default_bound() -> None:
    assert pool_module.PIN_LIMIT == 4096


def test_pins_stay_in_the_process() -> None:
    pool = EndpointPool([A, B])
    pool.pin("resp_1", 1)
    copy = pickle.loads(pickle.dumps(pool))
    assert copy.pinned(continuing("resp_1")) is None  # like the counts: a fresh start


def test_a_forked_child_keeps_the_pins_and_resets_the_counts() -> None:
    pool = EndpointPool([A, B])
    pool.pin("resp_1", 1)
    pool.acquire()
    pool._pid = -1  # as in a child after fork
    assert pool.pinned(continuing("resp_1")) == (1, "resp_1")  # the ids are still B's
    assert pool.endpoint_stats()[A].in_flight == 0


# -- pinned attempts -------------------------------------------------------------------


def test_a_pinned_request_never_picks_and_ignores_load() -> None:
    pool = EndpointPool([A, B])
    pool.pin("resp_1", 0)
    pool.acquire()  # A is busy: a pick would choose B
    attempts = Attempts(pool, RetryPolicy(), lambda: 0.0, None, pinned=(0, "resp_1"))
    assert attempts.acquire() == 0
    assert pool.endpoint_stats()[A].in_flight == 2


def test_a_pinned_request_retries_its_endpoint_only_and_says_why() -> None:
    pool = EndpointPool([A, B])
    attempts = Attempts(
        pool, RetryPolicy(max_retries=2, jitter=0.0), lambda: 0.0, None, pinned=(1, "resp_9")
    )
    asked: list[int] = []
    waits: list[float] = []

    def attempt(index: int) -> None:
        asked.append(index)
        raise BackendConnectionError(f"POST {B}/responses: could not connect")

    with pytest.raises(BackendConnectionError) as caught:
        run_sync(attempts, attempt, waits.append)
    assert asked == [1, 1, 1]  # B every time, though A is healthy and idle
    assert waits == [0.5, 1.0]  # the policy's backoff, as a single URL's
    message = str(caught.value)
    assert f"previous_response_id 'resp_9' was made by {B}" in message
    assert "no other endpoint was tried" in message
    assert pool.endpoint_stats()[A].requests == 0


def test_a_cooling_pinned_endpoint_fails_before_any_request() -> None:
    clock = Clock()
    pool = EndpointPool([A, B], clock=clock)
    pool.acquire()
    pool.release(0, ServerError("503 busy", status=503))  # A cools for 1 s
    attempts = Attempts(pool, RetryPolicy(), lambda: 0.0, None, pinned=(0, "resp_1"))
    with pytest.raises(BackendConnectionError) as caught:
        run_sync(attempts, lambda i: pytest.fail("no attempt"), lambda s: None)
    message = str(caught.value)
    assert message.startswith(f"previous_response_id 'resp_1' was made by {A}, which is cooling")
    assert "1.0 s left" in message and "503 busy" in message
    assert "no other endpoint was tried" in message
    assert pool.endpoint_stats()[A].in_flight == 0 and pool.endpoint_stats()[B].requests == 0
    clock.now += 1.0  # cooled down: asked again
    assert run_sync(attempts, lambda i: "ok", lambda s: None) == (0, "ok")


def test_an_error_that_would_not_fail_over_is_left_as_it_is() -> None:
    pool = EndpointPool([A, B])
    attempts = Attempts(pool, RetryPolicy(), lambda: 0.0, None, pinned=(0, "resp_1"))
    error = BadRequestError("400 previous response not found", status=400)
    assert attempts.final_error(error) is error
    assert "was made by" not in str(error)


# -- where the id comes from -----------------------------------------------------------


def answer(response_id: str | None = "resp_7") -> dict[str, Any]:
    body: dict[str, Any] = {"status": "completed", "model": "m", "output": [
        {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]}  # fmt: skip
    if response_id is not None:
        body["id"] = response_id
    return body


def test_a_whole_answer_carries_its_id() -> None:
    generation = parse_responses_response(answer(), "u")
    assert generation.response_id == "resp_7"
    assert generation_to_deltas(generation)[-1].response_id == "resp_7"
    assert parse_responses_response(answer(None), "u").response_id is None


def test_a_stream_gives_its_id_from_created_and_on_the_last_delta() -> None:
    parser = ResponsesStreamParser("u")
    created = b'data: {"type":"response.created","response":{"id":"resp_5","model":"m"}}\n\n'
    deltas = parser.feed(created)
    assert parser.response_id == "resp_5" and deltas[-1].response_id is None
    text = b'data: {"type":"response.output_text.delta","delta":"Hi"}\n\n'
    assert [d.response_id for d in parser.feed(text)] == [None]
    end = (
        b'data: {"type":"response.completed","response":{"id":"resp_5","status":"completed",'
        b'"output":[]}}\n\n'
    )
    assert parser.feed(end)[-1].response_id == "resp_5"


def test_a_stream_without_created_takes_the_id_from_its_end() -> None:
    parser = ResponsesStreamParser("u")
    end = b'data: {"type":"response.completed","response":{"id":"resp_6","output":[]}}\n\n'
    assert parser.feed(end)[-1].response_id == "resp_6"
    assert parser.response_id == "resp_6"


def test_a_stream_answered_with_json_gives_the_id() -> None:
    parser = JSONBodyParser(
        lambda obj: generation_to_deltas(parse_responses_response(obj, "u")), "u"
    )
    parser.feed(b'{"id": "resp_8", "status": "completed", "output": [], "error": null}')
    assert parser.finish()[-1].response_id == "resp_8"
    assert parser.response_id == "resp_8"


def test_the_cursor_keeps_the_id_of_the_last_delta() -> None:
    cursor = StreamCursor(None, None)
    cursor.advance(GenerationDelta(text="Hi"))
    assert cursor.response_id is None
    cursor.advance(GenerationDelta(finish_reason="stop", response_id="resp_3"))
    assert cursor.response_id == "resp_3"


# -- what a backend pins ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "pinned"),
    [({"store": True}, True), ({}, True), ({"store": False}, False)],
    ids=["stored", "server-default", "stateless"],
)
def test_a_pool_backend_pins_what_the_server_may_keep(body, pinned) -> None:
    from langchain_matric.backends import OpenAIBackend

    class Answered:
        endpoint = 1

    with OpenAIBackend([A, B], model="m", api="responses") as backend:
        backend._pin(body, "resp_1", Answered())  # type: ignore[arg-type]
        backend._pin(body, None, Answered())  # type: ignore[arg-type]  # no id: nothing
        assert backend._pool is not None
        found = backend._pool.pinned(continuing("resp_1"))
    assert found == ((1, "resp_1") if pinned else None)
