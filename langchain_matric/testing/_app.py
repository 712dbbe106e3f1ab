"""What the server answers: routing, endpoints, script and fault queues (no I/O)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_matric.testing import _model, _render, _responses
from langchain_matric.testing._model import Prompt
from langchain_matric.testing._types import Fault, RecordedRequest, Reply, ServerOptions
from langchain_matric.testing._wire import Step, Style, stream_steps, with_pings

JSON = "application/json; charset=utf-8"
_CACHE_MAX = 64


@dataclass(slots=True)
class Response:
    """One response to write: a whole `body`, or chunked `steps` when streaming."""

    status: int
    content_type: str = JSON
    body: bytes = b""
    steps: list[Step] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    style: Style = field(default_factory=Style)
    fault: Fault | None = None
    """An in-stream fault to apply to a whole body (drop / stall)."""
    framed: bytes | None = None
    """The framed chunked body, cached by the server for reused (default) replies."""


def _openai_path(path: str) -> bool:
    return path.startswith("/v1/")


def _error(path: str, status: int, message: str, code: str | int | None = None) -> Response:
    body = (
        _render.openai_error(status, message, code=code)
        if _openai_path(path)
        else _render.ollama_error(message)
    )
    return Response(status, body=body)


_RESPONSE_IDS = itertools.count(1)
"""`/v1/responses` ids, shared by every server of the process: unique across servers, as
real servers' ids are, so a test of an endpoint pool can tell which server made one."""


class App:
    """The server's state and request handling, shared by the loop thread and the test."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.replies: deque[Reply] = deque()
        self.faults: list[list[Any]] = []  # [fault, remaining]
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self.counter = 0
        self._ids = itertools.count(1)
        self._cache: dict[tuple[Any, ...], tuple[Reply, Response]] = {}
        self._last_words: list[str] = []  # the previous Responses prompt: the "prompt cache"
        self._routes: dict[str, tuple[str, Callable[[RecordedRequest, Fault | None], Response]]]
        self._routes = {
            "/v1/chat/completions": ("POST", self._openai_chat),
            "/v1/completions": ("POST", self._openai_completion),
            "/v1/responses": ("POST", self._openai_responses),
            "/v1/embeddings": ("POST", self._openai_embeddings),
            "/v1/models": ("GET", self._openai_models),
            "/api/chat": ("POST", self._ollama_chat),
            "/api/generate": ("POST", self._ollama_generate),
            "/api/embed": ("POST", self._ollama_embed),
            "/api/embeddings": ("POST", self._ollama_embeddings),
            "/api/tags": ("GET", self._ollama_tags),
            "/api/show": ("POST", self._ollama_show),
            "/api/version": ("GET", self._ollama_version),
            "/tokenize": ("POST", self._tokenize),
            "/props": ("GET", self._props),
            "/": ("GET", self._ollama_root),
        }

    def _model(self, index: int) -> str:
        models = self.options.models
        return str(models[index]) if models else "test-model"

    # -- queues and records (called from any thread) --------------------------------

    def record(self, request: RecordedRequest) -> str:
        """Store `request`; returns its request id."""
        with self.changed:
            self.requests.append(request)
            self.counter += 1
            self.changed.notify_all()
            return f"req_{self.counter}"

    def disconnected(self) -> None:
        """A client closed its connection while a response was being written."""
        with self.changed:
            self.disconnects += 1
            self.changed.notify_all()

    def _take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for entry in self.faults:
                fault: Fault = entry[0]
                if fault.path is None or fault.path == path:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self.faults.remove(entry)
                    return fault
        return None

    def _next_reply(self) -> Reply | None:
        with self.lock:
            if self.replies:
                return self.replies.popleft()
        return self.options.default_reply

    # -- dispatch -------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Response:
        """The response to `request`."""
        path = request.path
        route = self._routes.get(path)
        if route is None:
            if _openai_path(path):
                return _error(path, 404, f"Not found: {request.method} {path}")
            return Response(404, "text/plain; charset=utf-8", b"404 page not found")
        method, handler = route
        if request.method != method:
            return _error(path, 405, f"Method {request.method} not allowed for {path}")
        key = self.options.api_key
        if (
            key is not None
            and path.startswith("/v1/")
            and request.headers.get("authorization") != f"Bearer {key}"
        ):
            return _error(path, 401, "Incorrect API key provided.", "invalid_api_key")
        fault = self._take_fault(path)
        if fault is not None and fault.kind == "status":
            return self._status_fault(path, fault)
        if method == "POST":
            if not isinstance(request.json, dict):
                return _error(path, 400, "The request body is not a JSON object.")
            model = request.json.get("model")
            if self.options.strict_models and model not in self.options.models:
                if _openai_path(path):
                    message = f"The model `{model}` does not exist or you do not have access to it."
                    return _error(path, 404, message, "model_not_found")
                return _error(path, 404, f'model "{model}" not found, try pulling it first')
        return handler(request, fault)

    def _status_fault(self, path: str, fault: Fault) -> Response:
        body = fault.body
        if body is None:
            message = f"Injected fault: HTTP {fault.status}"
            body = _error(path, fault.status, message).body
        raw = body.encode() if isinstance(body, str) else body
        content_type = fault.content_type
        if content_type is None:
            try:
                json.loads(raw)
                content_type = JSON
            except ValueError:
                content_type = "text/plain; charset=utf-8"
        return Response(fault.status, content_type, raw, headers=list(fault.headers.items()))

    # -- generation -----------------------------------------------------------------

    def _openai_chat(self, request: RecordedRequest, fault: Fault | None) -> Response:
        return self._generate(request, fault, _render.OpenAIChat, ollama=False, chat=True)

    def _openai_completion(self, request: RecordedRequest, fault: Fault | None) -> Response:
        return self._generate(request, fault, _render.OpenAICompletion, ollama=False, chat=False)

    def _ollama_chat(self, request: RecordedRequest, fault: Fault | None) -> Response:
        return self._generate(request, fault, _render.OllamaChat, ollama=True, chat=True)

    def _ollama_generate(self, request: RecordedRequest, fault: Fault | None) -> Response:
        return self._generate(request, fault, _render.OllamaGenerate, ollama=True, chat=False)

    def _generate(
        self,
        request: RecordedRequest,
        fault: Fault | None,
        renderer_cls: Callable[..., Any],
        *,
        ollama: bool,
        chat: bool,
    ) -> Response:
        body: dict[str, Any] = request.json
        reduce = _model.ollama_prompt if ollama else _model.openai_prompt
        prompt = reduce(body, self._model(0), chat=chat)
        limit = self.options.context_chars
        if limit is not None and prompt.chars > limit:
            return _error(
                request.path, 400,
                "input length exceeds the context length" if ollama else
                f"This model's maximum context length is {limit} tokens. However, your "
                f"messages resulted in {prompt.chars} tokens.",
                code=None if ollama else "context_length_exceeded",
            )  # fmt: skip
        stream = bool(body.get("stream", ollama))
        options = body.get("stream_options")
        include_usage = (
            not ollama
            and stream
            and isinstance(options, dict)
            and bool(options.get("include_usage"))
        )
        if not ollama and (refused := self._refuse_n(request.path, body)) is not None:
            return refused
        reply = self._next_reply()
        style = Style.resolve(self.options, reply)
        extras = None if ollama else self._extras(body, prompt, reply, chat=chat)
        cache_key: tuple[Any, ...] | None = None
        if reply is not None and reply is self.options.default_reply and fault is None:
            cache_key = (
                id(reply),
                request.path,
                stream,
                include_usage,
                prompt.model,
                style,
                extras,
            )
            hit = self._cache.get(cache_key)
            if hit is not None and hit[0] is reply:
                return hit[1]
        if reply is not None:
            answer = _model.answer_from_reply(reply, prompt)
        else:
            answer = _model.answer(prompt, reasoning=self.options.reasoning)
        rid = f"{next(self._ids):x}"
        kwargs = {} if ollama else {"include_usage": include_usage, "extras": extras}
        renderer = renderer_cls(answer, style, rid, **kwargs)
        kind = fault.kind if fault is not None else None
        if not stream or kind == "non_streaming":
            response = Response(200, JSON, renderer.whole(), style=style, fault=fault)
        elif kind == "empty":
            response = Response(200, renderer.stream_content_type, steps=[], style=style)
        else:
            steps = with_pings(stream_steps(renderer, fault), renderer, style)
            response = Response(200, renderer.stream_content_type, steps=steps, style=style)
        if cache_key is not None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[cache_key] = (reply, response)  # type: ignore[assignment]
        return response

    def _refuse_n(self, path: str, body: dict[str, Any]) -> Response | None:
        """The 400 of a server that takes fewer choices than asked (`ServerOptions.max_n`)."""
        max_n = self.options.max_n
        if max_n is None or _choices(body) <= max_n:
            return None
        said = "Only one completion choice is allowed" if max_n == 1 else f"n must be <= {max_n}"
        return _error(path, 400, said)

    def _extras(
        self, body: dict[str, Any], prompt: Prompt, reply: Reply | None, *, chat: bool
    ) -> _render.Extras:
        """Choices, logprobs, cached tokens and tier of an OpenAI chat or completion answer."""
        logprobs = body.get("logprobs")
        top = body.get("top_logprobs")
        if not chat and isinstance(logprobs, int) and not isinstance(logprobs, bool):
            logprobs, top = True, logprobs  # `/completions`: the count in `logprobs`
        cached = reply.cached_tokens if reply is not None else None
        if cached is None and reply is not None and reply is self.options.default_reply:
            cached = 0  # pre-built and served again: nothing that depends on the last request
        return _render.Extras(
            n=_choices(body),
            logprobs=bool(logprobs),
            top_logprobs=top if isinstance(top, int) else 0,
            cached_tokens=self._shared_words(prompt) if cached is None else cached,
            service_tier=self.options.service_tier,
        )

    def _shared_words(self, prompt: Prompt) -> int:
        """Words this prompt shares, from its start, with the previous request's prompt.

        What a prefix cache would have kept: reported as cached input tokens.
        """
        words = " ".join(text for _, text in prompt.messages).split()
        with self.lock:
            shared = 0
            for mine, theirs in zip(words, self._last_words, strict=False):
                if mine != theirs:
                    break
                shared += 1
            self._last_words = words
        return min(shared, max(0, len(words) - 1))

    def _openai_responses(self, request: RecordedRequest, fault: Fault | None) -> Response:
        body: dict[str, Any] = request.json
        prompt = _responses.responses_prompt(body, self._model(0))
        limit = self.options.context_chars
        if limit is not None and prompt.chars > limit:
            message = (
                f"This model's maximum context length is {limit} tokens. However, your "
                f"messages resulted in {prompt.chars} tokens."
            )
            return _error(request.path, 400, message, code="context_length_exceeded")
        reply = self._next_reply()
        if reply is not None:
            answer = _model.answer_from_reply(reply, prompt)
        else:
            answer = _model.answer(prompt, reasoning=self.options.reasoning)
        shared = self._shared_words(prompt)
        cached = reply.cached_tokens if reply is not None else None
        if cached is None:
            cached = min(shared, max(0, answer.prompt_tokens - 1))
        style = Style.resolve(self.options, reply)
        rid = f"{next(_RESPONSE_IDS):x}"
        previous = body.get("previous_response_id")
        include = body.get("include")
        top = body.get("top_logprobs")
        renderer = _responses.OpenAIResponses(
            answer, style, rid, cached_tokens=cached, store=bool(body.get("store")),
            previous_response_id=previous if isinstance(previous, str) else None,
            top_logprobs=(top if isinstance(top, int) else 0)
            if isinstance(include, list) and _responses.LOGPROBS in include else None,
        )  # fmt: skip
        kind = fault.kind if fault is not None else None
        if not body.get("stream") or kind == "non_streaming":
            return Response(200, JSON, renderer.whole(), style=style, fault=fault)
        if kind == "empty":
            return Response(200, renderer.stream_content_type, steps=[], style=style)
        steps = with_pings(stream_steps(renderer, fault), renderer, style)
        return Response(200, renderer.stream_content_type, steps=steps, style=style)

    # -- embeddings -----------------------------------------------------------------

    def _dimension(self, body: dict[str, Any]) -> int | None:
        dim = body.get("dimensions")
        if dim is None:
            return self.options.embedding_dim
        if isinstance(dim, int) and not isinstance(dim, bool) and 0 < dim <= 65536:
            return dim
        return None

    def _openai_embeddings(self, request: RecordedRequest, fault: Fault | None) -> Response:
        body: dict[str, Any] = request.json
        path = request.path
        raw = body.get("input")
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            texts = raw
        elif isinstance(raw, list) and raw:
            texts = [json.dumps(t) for t in raw] if isinstance(raw[0], list) else [json.dumps(raw)]
        else:
            return _error(path, 400, "'input' must be a non-empty string or list of strings.")
        dim = self._dimension(body)
        if dim is None:
            return _error(path, 400, "'dimensions' must be a positive integer.")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return _error(path, 400, f"Invalid encoding_format {encoding!r}.")
        b64 = encoding == "base64" and self.options.base64_embeddings == "support"
        if encoding == "base64" and self.options.base64_embeddings == "reject":
            return _error(path, 400, "encoding_format 'base64' is not supported.")
        longest = max(len(t) for t in texts)
        if longest > self.options.embed_max_chars:
            message = (
                f"This model's maximum context length is {self.options.embed_max_chars} tokens, "
                f"however you requested {longest} tokens. Please reduce your prompt."
            )
            return _error(path, 400, message, "context_length_exceeded")
        data = []
        for index, text in enumerate(texts):
            vector = _model.embedding(text, dim)
            value: Any = (
                base64.b64encode(_model.embedding_bytes_le(vector)).decode()
                if b64
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": value})
        words = sum(max(1, _model.count_words(t)) for t in texts)
        model = body.get("model") or self._model(-1)
        out = {"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": words, "total_tokens": words}}  # fmt: skip
        return _json(out, fault)

    def _ollama_embed(self, request: RecordedRequest, fault: Fault | None) -> Response:
        body: dict[str, Any] = request.json
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(request.path, 400, "invalid input type")
        dim = self._dimension(body)
        if dim is None:
            return _error(request.path, 400, "dimensions must be a positive integer")
        limit = self.options.embed_max_chars
        if body.get("truncate") is False and any(len(t) > limit for t in texts):
            return _error(request.path, 400, "input length exceeds the context length")
        vectors = [_model.embedding(t[:limit], dim).tolist() for t in texts]
        words = sum(_model.count_words(t[:limit]) for t in texts)
        out = {"model": body.get("model") or self._model(-1), "embeddings": vectors,
               "total_duration": 1_000_000 + words * 10_000, "load_duration": 500_000,
               "prompt_eval_count": words}  # fmt: skip
        return _json(out, fault)

    def _ollama_embeddings(self, request: RecordedRequest, fault: Fault | None) -> Response:
        prompt = request.json.get("prompt")
        if not isinstance(prompt, str):
            return _error(request.path, 400, "invalid prompt")
        limit = self.options.embed_max_chars
        vector = _model.embedding(prompt[:limit], self.options.embedding_dim).tolist()
        return _json({"embedding": vector}, fault)

    # -- metadata -------------------------------------------------------------------

    def _openai_models(self, request: RecordedRequest, fault: Fault | None) -> Response:
        data: list[dict[str, Any]] = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "matric"}
            for m in self.options.models
        ]
        if self.options.max_model_len:  # vLLM's
            for entry in data:
                entry["max_model_len"] = self.options.context_length
        return _json({"object": "list", "data": data}, fault)

    def _props(self, request: RecordedRequest, fault: Fault | None) -> Response:
        """llama.cpp's `/props` (the fields a client reads, and a few beside them)."""
        settings = {"n_ctx": self.options.context_length, "params": {"n_predict": -1}}
        out = {"default_generation_settings": settings, "total_slots": 1,
               "model_path": f"/models/{self._model(0)}.gguf", "modalities": {"vision": False},
               "chat_template": "{{ messages }}", "build_info": "b1-matric"}  # fmt: skip
        return _json(out, fault)

    def _details(self) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "1B", "quantization_level": "Q4_K_M"}  # fmt: skip

    def _ollama_tags(self, request: RecordedRequest, fault: Fault | None) -> Response:
        models = [
            {"name": m, "model": m, "modified_at": "2024-01-01T00:00:00Z", "size": 1 << 30,
             "digest": hashlib.sha256(m.encode()).hexdigest(), "details": self._details()}
            for m in self.options.models
        ]  # fmt: skip
        return _json({"models": models}, fault)

    def _ollama_show(self, request: RecordedRequest, fault: Fault | None) -> Response:
        info = {"general.architecture": "llama",
                "llama.context_length": self.options.context_length,
                "llama.embedding_length": self.options.embedding_dim}  # fmt: skip
        out = {"modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
               "details": self._details(), "model_info": info,
               "capabilities": ["completion", "tools", "thinking", "embedding"]}  # fmt: skip
        return _json(out, fault)

    def _ollama_version(self, request: RecordedRequest, fault: Fault | None) -> Response:
        return _json({"version": self.options.ollama_version}, fault)

    def _tokenize(self, request: RecordedRequest, fault: Fault | None) -> Response:
        if not self.options.tokenizer:
            return Response(404, "text/plain; charset=utf-8", b"404 page not found")
        body = request.json if isinstance(request.json, dict) else {}
        tokens = _TOKEN.findall(str(body.get("prompt", "")))
        ids = [zlib.crc32(t.encode()) % 50000 for t in tokens]
        return _json({"count": len(ids), "max_model_len": 4096, "tokens": ids}, fault)

    def _ollama_root(self, request: RecordedRequest, fault: Fault | None) -> Response:
        return Response(200, "text/plain; charset=utf-8", b"Ollama is running", fault=fault)


_TOKEN = re.compile(r"\w+|[^\w\s]")


def _choices(body: dict[str, Any]) -> int:
    """The `n` a request asks for (1 when absent or not a positive integer)."""
    asked = body.get("n")
    return asked if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else 1


def _json(value: Any, fault: Fault | None) -> Response:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(200, JSON, body, fault=fault)
