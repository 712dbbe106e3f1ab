"""What an inference server is and what it can do: the checks behind `capabilities="auto"`.

Each check is a small request through the library's own transport, so what it reports is
what the backends will meet: which API answers (OpenAI-compatible or Ollama native), the
models, the stream format (SSE, NDJSON or none), whether stream usage comes back, the
embedding size and whether base64 embeddings are honoured, tool calls, and whether an
unknown model name is answered anyway.

A backend with `capabilities="auto"` runs `CAPABILITY_CHECKS` through `probe_capabilities`
before its first request and applies the report. `matric probe` (`langchain_matric._probe`)
runs the same checks plus stream timing, so the two never disagree.

The URL is checked as given: an OpenAI base URL must name the API root (usually `.../v1`),
exactly as `OpenAIBackend` will use it. A server root whose `/models` is missing while
`/v1/models` answers is reported as not OpenAI-compatible at that URL, with a note
saying which URL to use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from langchain_matric._http import HTTPConfig, RetryPolicy, SyncTransport, Timeouts, redact_url
from langchain_matric.backends import _openai_wire as wire
from langchain_matric.errors import BackendHTTPError, MatricError

__all__ = [
    "ALL_CHECKS",
    "CAPABILITY_CHECKS",
    "ApiKind",
    "BackendChoice",
    "Check",
    "ProbeReport",
    "Prober",
    "StreamFormat",
    "model_ids",
    "probe_capabilities",
    "split_base_url",
    "stream_format",
]

ApiKind = Literal["openai", "ollama"]
BackendChoice = Literal["openai", "ollama", "auto"]
StreamFormat = Literal["sse", "ndjson", "none"]
Check = Literal["streaming", "tool calls", "timing", "embeddings", "unknown model"]
ALL_CHECKS: tuple[Check, ...] = ("streaming", "tool calls", "timing", "embeddings", "unknown model")
CAPABILITY_CHECKS: tuple[Check, ...] = ("streaming", "embeddings")
"""What a backend with `capabilities="auto"` asks before its first request."""

UNKNOWN_MODEL = "matric-probe-no-such-model"
_PROBE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "probe_tool",
        "description": "Answer whether the probe worked.",
        "parameters": {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
        },
    },
}
_PROMPT = [{"role": "user", "content": "Say hello."}]


@dataclass
class ProbeReport:
    """What a probe found; None where a check could not tell.

    Example:
        >>> report = ProbeReport(base_url="http://127.0.0.1:8000/v1", api="openai")
        >>> report.to_dict()["api"]
        'openai'
    """

    base_url: str
    api: ApiKind | None = None
    """The API the probe used: "ollama" when the native API answers (auto), else "openai"."""
    openai_compatible: bool | None = None
    """Whether the OpenAI API answers at the URL given (with auto on a root: at the root)."""
    ollama_native: bool | None = None
    models: list[str] = field(default_factory=list)
    model: str | None = None
    """The model the generation checks used."""
    embed_model: str | None = None
    streaming: StreamFormat | None = None
    stream_usage: bool | None = None
    embedding_dimension: int | None = None
    embeddings_base64: bool | None = None
    """True when base64 was honoured, False when floats came back or it was rejected."""
    tool_calls: bool | None = None
    """True: a forced tool call came back; False: rejected; None: accepted but no call."""
    unknown_model_served: bool | None = None
    """True when a made-up model name was answered instead of rejected."""
    ttft_ms: float | None = None
    tokens_per_second: float | None = None
    runs: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data.

        Example:
            >>> ProbeReport("http://h", streaming="sse").to_dict()["streaming"]
            'sse'
        """
        return asdict(self)

    def to_table(self) -> str:
        """A readable two-column table.

        Example:
            >>> print(ProbeReport("http://h", tool_calls=True).to_table().splitlines()[0])
            server                http://h
        """
        rows = [
            ("server", self.base_url),
            ("api", _show(self.api)),
            ("openai-compatible", _show(self.openai_compatible)),
            ("ollama native", _show(self.ollama_native)),
            ("models", ", ".join(self.models) or "-"),
            ("model probed", _show(self.model)),
            ("embedding model", _show(self.embed_model)),
            ("streaming", _show(self.streaming)),
            ("stream usage", _show(self.stream_usage)),
            ("embedding dimension", _show(self.embedding_dimension)),
            ("base64 embeddings", _show(self.embeddings_base64)),
            ("tool calls", _show(self.tool_calls)),
            ("unknown model served", _show(self.unknown_model_served)),
            ("time to first token", _show(self.ttft_ms, "{:.0f} ms")),
            ("tokens per second", _show(self.tokens_per_second, "{:.1f}")),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _show(value: object, fmt: str = "{}") -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt.format(value)


# ---------------------------------------------------------------------------------------
# Pure detection
# ---------------------------------------------------------------------------------------


def stream_format(content_type: str) -> StreamFormat:
    """The stream format a response content type means.

    Example:
        >>> stream_format("text/event-stream"), stream_format("application/json")
        ('sse', 'none')
    """
    if content_type == "text/event-stream":
        return "sse"
    if content_type in ("application/x-ndjson", "application/jsonl", "application/json-lines"):
        return "ndjson"
    return "none"


def split_base_url(base_url: str) -> tuple[str, str]:
    """(server root, OpenAI base with `/v1`) for a URL given either way.

    Example:
        >>> split_base_url("http://127.0.0.1:11434")
        ('http://127.0.0.1:11434', 'http://127.0.0.1:11434/v1')
    """
    url = base_url.rstrip("/")
    if url.endswith("/v1"):
        return url[: -len("/v1")], url
    return url, url + "/v1"


def model_ids(obj: Any) -> list[str]:
    """Model names from an OpenAI `/models` or an Ollama `/api/tags` answer.

    Example:
        >>> model_ids({"data": [{"id": "a"}]}), model_ids({"models": [{"name": "b"}]})
        (['a'], ['b'])
    """
    if not isinstance(obj, dict):
        return []
    items = obj.get("data") if isinstance(obj.get("data"), list) else obj.get("models")
    names = []
    for item in items or ():
        if isinstance(item, dict):
            name = item.get("id") or item.get("name") or item.get("model")
            if name:
                names.append(str(name))
    return names


# ---------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------


class Prober:
    """The checks against one server, filling in `report`; `run` runs them in order.

    The OpenAI API is asked for at `base_url` exactly as given; the Ollama API at the
    server root (`base_url` without a trailing `/v1`). Subclasses add generation checks
    by extending `generation_checks` (`matric probe` adds stream timing).

    Example:
        >>> from langchain_matric.testing import LocalServer
        >>> with LocalServer() as server:
        ...     report = Prober(server.openai_base_url).run("openai", checks=())
        >>> report.api, report.openai_compatible, report.models
        ('openai', True, ['test-model', 'test-embed'])
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
    ) -> None:
        self.openai_base = base_url.rstrip("/")
        self.root = split_base_url(self.openai_base)[0]
        all_headers = dict(headers or {})
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        config = HTTPConfig(
            self.root,
            headers=all_headers,
            verify=verify,
            timeouts=Timeouts(connect=min(timeout, 10.0), first_byte=timeout, idle=timeout),
            retry=RetryPolicy(max_retries=0),
        )
        self.http = SyncTransport(config)
        self.api_key = api_key
        self.timeout = timeout
        self.report = ProbeReport(base_url=base_url)
        self.wrong_openai_url = False
        """True when the OpenAI API answered only under `/v1` of the root given."""

    def note(self, check: str, error: BaseException) -> None:
        """Record why `check` could not tell."""
        self.report.notes.append(f"{check}: {type(error).__name__}: {error}"[:300])

    def _v1(self, path: str) -> str:
        return self.openai_base[len(self.root) :] + path

    # -- what is it ----------------------------------------------------------------------

    def detect(self, backend: BackendChoice) -> None:
        """Which API answers, and its models; sets `report.api` (None: nothing to probe)."""
        report = self.report
        if backend in ("openai", "auto"):
            path = self._v1("/models")
            try:
                report.models = model_ids(self.http.request("GET", path).json())
                report.openai_compatible = True
            except MatricError as error:
                report.openai_compatible = False
                if not self._openai_under_v1(error):
                    self.note(f"GET {path}", error)
        if backend in ("ollama", "auto"):
            try:
                tags = model_ids(self.http.request("GET", "/api/tags").json())
                report.ollama_native = True
                report.models = tags or report.models
            except MatricError as error:
                report.ollama_native = False
                if backend == "ollama":
                    self.note("GET /api/tags", error)
        if backend == "auto":
            # A URL that names the OpenAI API (`.../v1`) says which one the user means.
            asked_v1 = self.openai_base != self.root
            if report.openai_compatible and (asked_v1 or not report.ollama_native):
                report.api = "openai"
            else:
                report.api = "ollama" if report.ollama_native else None
        elif backend == "openai":
            # Checks against a URL known to be wrong would only report its 404s.
            report.api = None if self.wrong_openai_url else "openai"
        else:
            report.api = backend

    def _openai_under_v1(self, error: MatricError) -> bool:
        """After `{url}/models` failed: note when `{url}/v1/models` answers instead."""
        if self.openai_base != self.root or getattr(error, "status", None) != 404:
            return False
        try:
            self.http.request("GET", "/v1/models")
        except MatricError:
            return False
        self.wrong_openai_url = True
        url = redact_url(self.openai_base)
        self.report.notes.append(
            f"{url}/models is 404 but {url}/v1/models answers: the OpenAI-compatible API "
            f"is at {url}/v1; to use it, pass --base-url {url}/v1 (base_url={url + '/v1'!r} "
            "in code)"
        )
        return True

    # -- generation ----------------------------------------------------------------------

    def generation_checks(self) -> tuple[tuple[Check, Callable[[str], None]], ...]:
        """The checks that generate with a model, by name, in the order they run."""
        return (("streaming", self.check_stream), ("tool calls", self.check_tools))

    def _chat_body(self, model: str, **extra: Any) -> dict[str, Any]:
        if self.report.api == "ollama":
            body: dict[str, Any] = {"model": model, "messages": _PROMPT, "stream": False}
            body["options"] = {"temperature": 0, "num_predict": 8}
        else:
            body = {"model": model, "messages": _PROMPT, "max_tokens": 8, "temperature": 0}
        body.update(extra)
        return body

    def _chat_path(self) -> str:
        return "/api/chat" if self.report.api == "ollama" else self._v1("/chat/completions")

    def _stream_once(self, model: str, body: dict[str, Any]) -> bytes:
        with self.http.stream("POST", self._chat_path(), json=body, model=model) as response:
            self.report.streaming = stream_format(response.content_type)
            return b"".join(response.iter_bytes())

    def check_stream(self, model: str) -> None:
        """The stream format, and whether usage comes with the stream."""
        report = self.report
        extra: dict[str, Any] = {"stream": True}
        if report.api == "openai":
            extra["stream_options"] = {"include_usage": True}
        body = self._chat_body(model, **extra)
        try:
            raw = self._stream_once(model, body)
        except BackendHTTPError as error:
            if "stream_options" not in body or "stream_options" not in (error.body or str(error)):
                raise
            self.note("stream_options rejected", error)
            body.pop("stream_options")
            raw = self._stream_once(model, body)
        report.stream_usage = _usage_in_stream(raw, report.streaming, report.api)

    def check_tools(self, model: str) -> None:
        """Whether a forced tool call comes back."""
        report = self.report
        choice = {"type": "function", "function": {"name": "probe_tool"}}
        extra: dict[str, Any] = {"tools": [_PROBE_TOOL]}
        if report.api == "openai":
            extra.update(tool_choice=choice, max_tokens=48)
        body = self._chat_body(model, **extra)
        try:
            answer = self.http.request("POST", self._chat_path(), json=body, model=model).json()
        except BackendHTTPError as error:
            report.tool_calls = False
            self.note("tool call", error)
            return
        if report.api == "ollama":
            message = answer.get("message") if isinstance(answer, dict) else None
        else:
            choices = answer.get("choices") if isinstance(answer, dict) else None
            message = choices[0].get("message") if choices else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        report.tool_calls = True if calls else None

    def check_unknown_model(self) -> None:
        """Whether a made-up model name is rejected (else typos go unnoticed)."""
        body = self._chat_body(UNKNOWN_MODEL)
        try:
            self.http.request("POST", self._chat_path(), json=body, model=UNKNOWN_MODEL)
        except BackendHTTPError:
            self.report.unknown_model_served = False
            return
        self.report.unknown_model_served = True
        self.report.notes.append(
            f"model {UNKNOWN_MODEL!r} was answered: check `model` names yourself, "
            "the server will not reject a typo"
        )

    # -- embeddings ----------------------------------------------------------------------

    def check_embeddings(self, candidates: list[str]) -> None:
        """The vector size and base64 support, with the first candidate model that embeds."""
        last: MatricError | None = None
        for model in candidates:
            try:
                self._embed(model)
            except MatricError as error:
                last = error
                continue
            self.report.embed_model = model
            return
        if last is not None:
            self.note("embeddings", last)

    def _embed(self, model: str) -> None:
        report = self.report
        if report.api == "ollama":
            body = {"model": model, "input": ["probe"]}
            answer = self.http.request("POST", "/api/embed", json=body, model=model).json()
            vectors = answer.get("embeddings") if isinstance(answer, dict) else None
            report.embedding_dimension = len(vectors[0]) if vectors else None
            return
        path = self._v1("/embeddings")
        body = {"model": model, "input": ["probe"], "encoding_format": "base64"}
        try:
            answer = self.http.request("POST", path, json=body, model=model).json()
        except BackendHTTPError as error:
            if error.status not in (400, 422):
                raise
            body.pop("encoding_format")
            answer = self.http.request("POST", path, json=body, model=model).json()
            report.embeddings_base64 = False
        found = wire.parse_embeddings(
            answer, self.openai_base + "/embeddings", expected_count=1, expected_dim=None
        )
        if report.embeddings_base64 is None:
            report.embeddings_base64 = bool(wire.answered_base64(answer))
        report.embedding_dimension = len(found[0])

    # -- all of it -----------------------------------------------------------------------

    def run(
        self,
        backend: BackendChoice,
        *,
        model: str | None = None,
        embed_model: str | None = None,
        checks: Collection[Check] = CAPABILITY_CHECKS,
    ) -> ProbeReport:
        """Detect the API, run `checks` (each failure only noted), close; the report."""
        report = self.report
        try:
            self.detect(backend)
            if report.api is None:
                if not self.wrong_openai_url:
                    report.notes.append("neither an OpenAI-compatible nor an Ollama API answered")
                return report
            self._run_checks(model, embed_model, checks)
        finally:
            self.http.close()
        return report

    def _run_checks(
        self, model: str | None, embed_model: str | None, checks: Collection[Check]
    ) -> None:
        report = self.report
        chosen = model or (report.models[0] if report.models else None)
        report.model = chosen
        if chosen is None:
            report.notes.append("no model listed: pass --model")
        else:
            for name, check in self.generation_checks():
                if name not in checks:
                    continue
                try:
                    check(chosen)
                except MatricError as error:
                    self.note(name, error)
        embed_candidates = [embed_model] if embed_model else []
        if not embed_candidates:
            named = [m for m in report.models if "embed" in m.lower()]
            embed_candidates = named or ([chosen] if chosen else [])
        if "embeddings" in checks:
            self.check_embeddings(embed_candidates)
        if "unknown model" in checks:
            try:
                self.check_unknown_model()
            except MatricError as error:
                self.note("unknown model", error)


def _usage_in_stream(raw: bytes, fmt: StreamFormat | None, api: ApiKind | None) -> bool:
    text = raw.decode("utf-8", "replace")
    if fmt == "none":
        try:
            obj = json.loads(text)
        except ValueError:
            return False
        return isinstance(obj, dict) and bool(obj.get("usage") or obj.get("eval_count"))
    for line in text.splitlines():
        data = line[len("data:") :].strip() if line.startswith("data:") else line.strip()
        if not data.startswith("{"):
            continue
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if isinstance(obj, dict) and (
            obj.get("usage") or (api == "ollama" and obj.get("eval_count") is not None)
        ):
            return True
    return False


def probe_capabilities(
    base_url: str,
    *,
    backend: BackendChoice = "auto",
    model: str | None = None,
    embed_model: str | None = None,
    checks: Collection[Check] = CAPABILITY_CHECKS,
    api_key: str | None = None,
    timeout: float = 120.0,
    headers: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> ProbeReport:
    """Probe the server at `base_url` (an OpenAI `/v1` URL or a server root) with `checks`.

    What a backend with `capabilities="auto"` runs before its first request. "timing" is
    `matric probe`'s own (`langchain_matric._probe.probe`) and is skipped here.

    Example:
        >>> from langchain_matric.testing import LocalServer
        >>> with LocalServer() as server:
        ...     report = probe_capabilities(server.openai_base_url, backend="openai")
        >>> report.streaming, report.stream_usage, report.embeddings_base64
        ('sse', True, True)
    """
    prober = Prober(base_url, api_key=api_key, timeout=timeout, headers=headers, verify=verify)
    return prober.run(backend, model=model, embed_model=embed_model, checks=checks)
