import pickle

import pytest
from langchain_core import exceptions as core

from langchain_matric import errors
from langchain_matric.errors import error_from_response

URL = "http://127.0.0.1:8000/v1/chat/completions"


def _err(
    status: int, body: str = "", headers: dict[str, str] | None = None, model: str | None = None
):
    return error_from_response(
        status, body.encode(), headers or {}, method="POST", url=URL, model=model
    )


@pytest.mark.parametrize(
    ("status", "body", "cls", "core_cls", "retryable"),
    [
        (
            400,
            '{"error": {"message": "bad field"}}',
            errors.BadRequestError,
            core.ModelInvalidRequestError,
            False,
        ),
        (
            422,
            '{"detail": [{"msg": "field required"}]}',
            errors.BadRequestError,
            core.ModelInvalidRequestError,
            False,
        ),
        (
            400,
            '{"error": {"message": "This model\'s maximum context length is 8 tokens", "code": "context_length_exceeded"}}',
            errors.ContextLengthExceededError,
            core.ContextOverflowError,
            False,
        ),
        (
            401,
            '{"error": {"message": "Incorrect API key"}}',
            errors.AuthenticationError,
            core.ModelAuthenticationError,
            False,
        ),
        (
            403,
            '{"error": "forbidden"}',
            errors.PermissionDeniedError,
            core.ModelPermissionDeniedError,
            False,
        ),
        (
            404,
            '{"error": "model \\"llama9\\" not found, try pulling it first"}',
            errors.ModelNotFoundError,
            core.ModelNotFoundError,
            False,
        ),
        (404, "404 page not found", errors.BackendHTTPError, core.ModelAPIError, False),
        (429, '{"error": "slow down"}', errors.RateLimitError, core.ModelRateLimitError, True),
        (500, "Internal Server Error", errors.ServerError, core.ModelAPIError, True),
        (501, "", errors.ServerError, core.ModelAPIError, False),
        (503, '{"error": "overloaded"}', errors.ServerError, core.ModelAPIError, True),
        (
            500,
            '{"error": {"message": "2 validation errors: role"}}',
            errors.BadRequestError,
            core.ModelInvalidRequestError,
            False,
        ),
        (408, "", errors.BackendHTTPError, core.ModelAPIError, True),
        (409, "", errors.BackendHTTPError, core.ModelAPIError, True),
    ],
)
def test_status_maps_to_typed_error(status, body, cls, core_cls, retryable) -> None:
    err = _err(status, body)
    assert type(err) is cls
    assert isinstance(err, core_cls)
    assert isinstance(err, errors.MatricError)
    assert err.is_retryable is retryable
    assert err.status == status
    assert f"POST {URL}" in str(err)


def test_message_quotes_server_and_fix() -> None:
    err = _err(404, "not here")
    assert "not here" in str(err)
    assert "/v1" in str(err)
    err = _err(404, '{"error": {"message": "The model `gpt-9` does not exist"}}', model="gpt-9")
    assert isinstance(err, errors.ModelNotFoundError)
    assert "`model` ('gpt-9')" in str(err)


def test_non_json_body_quoted_to_500_chars() -> None:
    err = _err(502, "<html>" + "x" * 2000)
    assert err.body.startswith("<html>")
    assert len(err.body) == 500


def test_retry_after_and_request_id() -> None:
    err = _err(429, "{}", {"retry-after": "3", "x-request-id": "req-42"})
    assert isinstance(err, errors.RateLimitError)
    assert err.retry_after == 3.0
    assert err.request_id == "req-42"
    assert "req-42" in str(err)
    assert _err(429, "{}", {"retry-after": "soon"}).retry_after is None
    assert _err(503, "{}", {"retry-after": "4"}).retry_after == 4.0
    assert _err(500).retry_after is None
    date = _err(429, "{}", {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert date.retry_after == 0.0


ALL_ERRORS = [
    errors.ConfigurationError("bad"),
    errors.EmbeddingDimensionError("dim"),
    errors.BackendConnectionError("refused"),
    errors.BackendTimeoutError("slow"),
    errors.StreamError("cut", partial="abc", line="data: x"),
    errors.StreamTimeoutError("stalled", partial="abc"),
    _err(400, "x"),
    _err(400, "context length exceeded"),
    _err(401),
    _err(403),
    _err(404, "model not found"),
    _err(404),
    _err(429, "", {"retry-after": "1"}),
    _err(500),
    _err(501),
    errors.EmbeddingValueError("embedding 2 holds NaN", index=2, body="NaN", url="http://h/v1"),
    errors.ResponseParseError("POST /x: could not be read", reason="bad chunk", status=200),
]


def test_the_new_answer_errors_fit_the_hierarchy() -> None:
    """An unusable vector is a BackendHTTPError and a ValueError; an unreadable answer is an
    API error of its own (no status may be known); neither is retried."""
    value = errors.EmbeddingValueError("x", index=0)
    assert isinstance(value, errors.BackendHTTPError) and isinstance(value, ValueError)
    parse = errors.ResponseParseError("x", reason="r")
    assert isinstance(parse, core.ModelAPIError) and not isinstance(parse, errors.BackendHTTPError)
    assert not value.is_retryable and not parse.is_retryable


@pytest.mark.parametrize("err", ALL_ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_pickles(err: errors.MatricError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert back.__dict__ == err.__dict__
    assert back.is_retryable == err.is_retryable


NEVER_IN_A_STREAM = (
    errors.ConfigurationError,  # raised before a request
    errors.EmbeddingDimensionError,  # embeddings are not streamed
    errors.EmbeddingValueError,
)
IN_STREAM_BASES = [
    e
    for e in ALL_ERRORS
    if not isinstance(e, errors.StreamError) and not isinstance(e, NEVER_IN_A_STREAM)
]


@pytest.mark.parametrize("err", IN_STREAM_BASES, ids=lambda e: type(e).__name__)
def test_after_data_every_error_is_a_stream_error_too(err: errors.MatricError) -> None:
    """After stream data reached the caller: still its own class, and a StreamError."""
    err = pickle.loads(pickle.dumps(err))  # a copy: ALL_ERRORS is shared
    before = type(err)
    err.partial = "Hel"
    after = errors.after_data(err)
    assert after is err
    assert isinstance(err, before)
    assert isinstance(err, errors.StreamError)
    assert not err.is_retryable
    assert err.line is None
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert back.partial == "Hel"
    assert not back.is_retryable


def test_after_data_keeps_a_stream_error_as_it_is() -> None:
    err = errors.StreamError("cut", partial="a")
    assert type(errors.after_data(err)) is errors.StreamError
