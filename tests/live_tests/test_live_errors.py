"""The error cases llama-cpp-python's server really produces, as typed errors."""

from __future__ import annotations

import pytest

from langchain_matric.backends import ChatMessage, GenerationRequest
from langchain_matric.errors import BadRequestError, ContextLengthExceededError
from tests.live_tests._common import CHAT_MODEL, ask, backend, long_prompt, options

pytestmark = pytest.mark.live


async def test_context_overflow(live_base: str) -> None:
    request = ask(long_prompt(), max_tokens=8)
    async with backend(live_base) as b:
        with pytest.raises(ContextLengthExceededError) as sync_error:
            b.generate(request)
        with pytest.raises(ContextLengthExceededError):
            await b.agenerate(request)
    assert sync_error.value.status == 400
    assert "context" in str(sync_error.value)


async def test_context_overflow_streamed(live_base: str) -> None:
    request = ask(long_prompt(), max_tokens=8)
    async with backend(live_base) as b:
        with pytest.raises(ContextLengthExceededError):
            list(b.generate_stream(request))
        with pytest.raises(ContextLengthExceededError):
            [d async for d in b.agenerate_stream(request)]


async def test_bad_request(live_base: str) -> None:
    # The server rejects this in validation, but answers 500 with pydantic's report:
    request = GenerationRequest(
        messages=[ChatMessage("user", "hi")],
        options=options(max_tokens=8, extra={"top_logprobs": -1}),
    )
    async with backend(live_base) as b:
        with pytest.raises(BadRequestError) as error:
            b.generate(request)
        with pytest.raises(BadRequestError):
            await b.agenerate(request)
    assert error.value.status == 500  # the status the server sent; the class says what it is
    assert "top_logprobs" in str(error.value)
    assert "validation error" in str(error.value)


async def test_unknown_model_is_served_by_the_default(live_base: str) -> None:
    """The server answers an unknown model name with its default model, echoing the name."""
    async with backend(live_base, model="no-such-model") as b:
        answer = b.generate(ask(max_tokens=4))
    async with backend(live_base, model=CHAT_MODEL) as b:
        default = b.generate(ask(max_tokens=4))
    assert answer.text == default.text
