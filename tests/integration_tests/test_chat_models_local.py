"""langchain-tests integration suites for `ChatMatric` over HTTP, against the local server.

Nothing is short-circuited: each test builds a real `OpenAIBackend`/`OllamaBackend` that
talks HTTP to `langchain_matric.testing.LocalServer` in its request-driven mode.
Pinned: langchain-tests==1.1.9.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_matric.chat_models import ChatMatric
from langchain_matric.testing import LocalServer

# A 1x1 PNG: the suite downloads a picture from the internet; tests stay on 127.0.0.1.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

SERVER_PICKS_ARGUMENTS = pytest.mark.xfail(
    reason=(
        "local server: its request-driven tool arguments come from the schema bounds "
        "(-999), not from the number in the prompt (magic_function(3))"
    ),
    strict=False,
)
SERVER_JSON_MODE = pytest.mark.xfail(
    reason=(
        "local server: a json_object request gets {'echo': ...}; the keys asked for in "
        "prose ('setup', 'punchline') are not derived from the prompt"
    ),
    strict=False,
)


class _LocalServerSuite(ChatModelIntegrationTests):
    server: LocalServer

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _local_server(cls) -> Iterator[None]:
        with LocalServer() as server:
            cls.server = server
            yield

    @property
    def chat_model_class(self) -> type[ChatMatric]:
        return ChatMatric

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "test-embed"

    @pytest.fixture(autouse=True)
    def _offline_images(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The image test downloads a picture from the internet: serve a local PNG."""
        real_get = httpx.get

        def offline_get(url: str, **kwargs: Any) -> httpx.Response:
            if url.startswith("https://raw.githubusercontent.com/"):
                return httpx.Response(200, content=_PNG)
            return real_get(url, **kwargs)

        monkeypatch.setattr(httpx, "get", offline_get)

    @SERVER_PICKS_ARGUMENTS
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @SERVER_PICKS_ARGUMENTS
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @SERVER_JSON_MODE
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)


class TestChatMatricOpenAILocal(_LocalServerSuite):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "base_url": self.server.openai_base_url,
            "api_key": "sk-local",
            "model": "test-model",
        }


class TestChatMatricOllamaLocal(_LocalServerSuite):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": "ollama", "base_url": self.server.ollama_base_url, "model": "test-model"}

    @property
    def has_tool_choice(self) -> bool:
        return False

    @pytest.mark.xfail(
        reason=(
            "the suite binds tool_choice='any' even with has_tool_choice=False; Ollama's "
            "native API cannot force a tool, so ChatMatric raises ConfigurationError"
        ),
        raises=ValueError,
        strict=True,
    )
    def test_structured_few_shot_examples(self, model: BaseChatModel, my_adder_tool: Any) -> None:
        super().test_structured_few_shot_examples(model, my_adder_tool)

    @pytest.mark.xfail(
        reason=(
            "the suite forces tool_choice='any' by default; Ollama's native API cannot "
            "force a tool, so ChatMatric raises ConfigurationError"
        ),
        raises=ValueError,
        strict=True,
    )
    def test_unicode_tool_call_integration(
        self,
        model: BaseChatModel,
        *,
        tool_choice: str | None = None,  # noqa: PT028 - the suite's own signature
        force_tool_call: bool = True,  # noqa: PT028
    ) -> None:
        super().test_unicode_tool_call_integration(
            model, tool_choice=tool_choice, force_tool_call=force_tool_call
        )


def test_image_blocks_reach_both_servers_over_http() -> None:
    image = base64.b64encode(_PNG).decode()
    message = [
        {"type": "text", "text": "describe"},
        {"type": "image", "base64": image, "mime_type": "image/png"},
    ]
    with LocalServer() as server:
        for params in (
            {"backend": "openai", "base_url": server.openai_base_url, "api_key": "k"},
            {"backend": "ollama", "base_url": server.ollama_base_url},
        ):
            chat = ChatMatric(model="test-model", **params)
            try:
                chat.invoke([("human", message)])
            finally:
                chat.close()
        openai_body, ollama_body = (r.json for r in server.requests)
        parts = openai_body["messages"][0]["content"]
        assert {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{image}"},
        } in parts
        assert ollama_body["messages"][0]["images"] == [image]
