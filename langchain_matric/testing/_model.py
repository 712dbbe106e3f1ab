"""The request-driven "model": deterministic answers from what a request contains.

Rules (also in the `langchain_matric.testing` docs):

1. Tools offered and ``tool_choice`` is not "none": a forced function is called always;
   with "required", or when the last message is from the user, the tools whose names
   appear (as whole words, ``_`` or space) in the last user message are called (in
   offered order; only the first when ``parallel_tool_calls`` is false), else the first
   offered tool. Arguments fill the tool's JSON schema with values read off the last
   user message (`langchain_matric.testing._values`): ``key=value`` / ``key: value`` for
   that property, then numbers in order for integer/number properties, quoted strings
   then proper names (``Oslo``) in order for string properties, the enum member the text
   mentions; when the message calls the tool as ``name(...)``, only what is between the
   parentheses is read. What the text does not give comes from the schema (bounds,
   ``format`` examples; strings echo the last user message).
2. Otherwise a JSON schema (``response_format.json_schema`` / Ollama ``format`` object)
   gives a JSON text valid against it, filled the same way; ``json_object`` /
   ``format: "json"`` gives an object whose keys are the quoted names (``'setup'``) of
   the system messages and the last user message, each valued with the last user
   text, or ``{"echo": <last user text>}`` when there are none.
3. Otherwise text: ``"Result: <tool message contents>"`` after tool results, else
   ``"Echo: <last user text>"``; one word per streamed delta, cut at the first ``stop``
   string (finish "stop") and to ``max_tokens`` / ``num_predict`` words (finish "length").
4. Reasoning ``"Reasoning about: <last user text>"`` when the request asks (Ollama
   ``think``, OpenAI ``reasoning_effort``) or the server option `reasoning` is on.

Tokens are whitespace-separated words. Embeddings are feature-hashed words (texts
sharing words are near), L2-normalised float32 (`embedding`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any

from langchain_matric.testing._types import Reply, ToolCallSpec
from langchain_matric.testing._values import (
    PromptValues,
    call_arguments,
    quoted_names_in,
    value_for_schema,
)

_WORD = re.compile(r"\s*\S+")


@dataclass(slots=True)
class Call:
    """One tool call of an answer."""

    id: str
    name: str
    arguments: str
    """JSON text (sent as is to OpenAI clients)."""
    arguments_object: Any
    """JSON value (sent to Ollama clients)."""


@dataclass(slots=True)
class Prompt:
    """A request reduced to what the model looks at."""

    model: str
    messages: list[tuple[str, str]] = field(default_factory=list)
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    schema: dict[str, Any] | None = None
    json_object: bool = False
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    think: bool = False

    @property
    def user_text(self) -> str:
        """The last user message (or the last message of any role)."""
        for role, text in reversed(self.messages):
            if role == "user":
                return text
        return self.messages[-1][1] if self.messages else ""

    @property
    def chars(self) -> int:
        """Total characters of all messages."""
        return sum(len(text) for _, text in self.messages)


@dataclass(slots=True)
class Answer:
    """What the model says, before it is rendered for a protocol."""

    model: str
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[Call] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 1
    completion_tokens: int = 0


def count_words(text: str) -> int:
    """Approximate token count: whitespace-separated words."""
    return len(text.split())


def split_words(text: str) -> list[str]:
    """Split into word deltas, each with its leading whitespace; joins back to `text`."""
    pieces = _WORD.findall(text)
    rest = text[sum(map(len, pieces)) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces.append(rest)
    return pieces


def content_text(content: Any) -> str:
    """Text of a message content: a string or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return "" if content is None else str(content)


def _stop_list(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str) and s]
    return []


def _tools(raw: Any) -> list[tuple[str, dict[str, Any]]]:
    tools: list[tuple[str, dict[str, Any]]] = []
    for tool in raw if isinstance(raw, list) else []:
        fn = tool.get("function", tool) if isinstance(tool, dict) else {}
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            params = fn.get("parameters")
            tools.append((fn["name"], params if isinstance(params, dict) else {}))
    return tools


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _messages(raw: Any) -> list[tuple[str, str]]:
    return [
        (str(m.get("role", "user")), content_text(m.get("content")))
        for m in (raw if isinstance(raw, list) else [])
        if isinstance(m, dict)
    ]


def openai_prompt(body: dict[str, Any], default_model: str, *, chat: bool) -> Prompt:
    """Reduce an OpenAI chat or text-completion request."""
    if chat:
        messages = _messages(body.get("messages"))
    else:
        raw = body.get("prompt", "")
        text = raw[0] if isinstance(raw, list) and raw else raw
        messages = [("user", text if isinstance(text, str) else json.dumps(text))]
    prompt = Prompt(
        model=str(body.get("model") or default_model),
        messages=messages,
        tools=_tools(body.get("tools") or body.get("functions")),
        tool_choice=body.get("tool_choice"),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        max_tokens=_int(body.get("max_completion_tokens", body.get("max_tokens"))),
        stop=_stop_list(body.get("stop")),
        think=bool(body.get("reasoning_effort")),
    )
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            prompt.schema = schema if isinstance(schema, dict) else {"type": "object"}
        elif fmt.get("type") == "json_object":
            prompt.json_object = True
    return prompt


def ollama_prompt(body: dict[str, Any], default_model: str, *, chat: bool) -> Prompt:
    """Reduce an Ollama ``/api/chat`` or ``/api/generate`` request."""
    options = body.get("options")
    if not isinstance(options, dict):
        options = {}
    if chat:
        messages = _messages(body.get("messages"))
    else:
        messages = [("user", content_text(body.get("prompt", "")))]
        if isinstance(body.get("system"), str):
            messages.insert(0, ("system", body["system"]))
    num_predict = _int(options.get("num_predict"))
    prompt = Prompt(
        model=str(body.get("model") or default_model),
        messages=messages,
        tools=_tools(body.get("tools")) if chat else [],
        max_tokens=num_predict,
        stop=_stop_list(options.get("stop")),
        think=body.get("think") not in (None, False),
    )
    fmt = body.get("format")
    if isinstance(fmt, dict):
        prompt.schema = fmt
    elif fmt == "json":
        prompt.json_object = True
    return prompt


def _chosen_tools(prompt: Prompt) -> list[str]:
    """Tool names to call under rule 1, or [] to answer otherwise."""
    if not prompt.tools or prompt.tool_choice == "none":
        return []
    choice = prompt.tool_choice
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        if isinstance(name, str):
            return [name]
    last_role = prompt.messages[-1][0] if prompt.messages else "user"
    if choice != "required" and last_role != "user":
        return []
    text = prompt.user_text.lower()
    named = [
        name
        for name, _ in prompt.tools
        if _mentions(text, name.lower()) or _mentions(text, name.lower().replace("_", " "))
    ]
    if not named:
        named = [prompt.tools[0][0]]
    return named if prompt.parallel_tool_calls else named[:1]


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def tool_arguments(name: str, schema: dict[str, Any], user: str) -> dict[str, Any]:
    """Arguments for calling tool `name`: from ``name(...)`` in `user` if there, else `user`."""
    source = call_arguments(user, name)
    values = PromptValues.from_text(user if source is None else source, echo=user)
    args = value_for_schema(schema, user, values=values)
    return args if isinstance(args, dict) else {}


def json_object(prompt: Prompt, user: str) -> dict[str, Any]:
    """A JSON-mode answer: the quoted names of the system and last user messages as keys.

    Each key gets the last user text; without quoted names the answer is ``{"echo": user}``.
    """
    texts = [text for role, text in prompt.messages if role in ("system", "developer")]
    names = quoted_names_in("\n".join([*texts, prompt.user_text]))
    return dict.fromkeys(names, user) if names else {"echo": user}


def answer(prompt: Prompt, *, reasoning: bool = False) -> Answer:
    """The request-driven answer to `prompt` (rules in this module's docstring)."""
    result = Answer(model=prompt.model, prompt_tokens=max(1, count_words(_all_text(prompt))))
    user = prompt.user_text.strip()
    if prompt.think or reasoning:
        result.reasoning = split_words(f"Reasoning about: {user}")
    names = _chosen_tools(prompt)
    schemas = dict(prompt.tools)
    if names:
        for i, name in enumerate(names):
            args = tool_arguments(name, schemas.get(name, {"type": "object"}), user)
            text = json.dumps(args, ensure_ascii=False)
            result.tool_calls.append(Call(f"call_{i}", name, text, args))
        result.finish_reason = "tool_calls"
    elif prompt.schema is not None:
        text = json.dumps(value_for_schema(prompt.schema, user), ensure_ascii=False)
        result.text = split_words(text)
    elif prompt.json_object:
        result.text = split_words(json.dumps(json_object(prompt, user), ensure_ascii=False))
    else:
        _text_answer(prompt, result, user)
    result.completion_tokens = _completion_words(result)
    return result


def _text_answer(prompt: Prompt, result: Answer, user: str) -> None:
    tail = []
    for role, content in reversed(prompt.messages):
        if role != "tool":
            break
        tail.append(content)
    text = "Result: " + "; ".join(reversed(tail)) if tail else f"Echo: {user}"
    cuts = [i for i in (text.find(s) for s in prompt.stop) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
    pieces = split_words(text)
    if prompt.max_tokens is not None and len(pieces) > prompt.max_tokens:
        pieces = pieces[: prompt.max_tokens]
        result.finish_reason = "length"
    result.text = pieces


def _all_text(prompt: Prompt) -> str:
    return " ".join(text for _, text in prompt.messages)


def _completion_words(result: Answer) -> int:
    words = count_words("".join(result.text)) + count_words("".join(result.reasoning))
    words += sum(count_words(call.arguments) for call in result.tool_calls)
    return words


def answer_from_reply(reply: Reply, prompt: Prompt) -> Answer:
    """The answer a scripted `reply` gives (served as scripted: no stop/max cut)."""
    text = split_words(reply.text) if isinstance(reply.text, str) else list(reply.text)
    reasoning: list[str] = []
    if isinstance(reply.reasoning, str):
        reasoning = split_words(reply.reasoning)
    elif reply.reasoning is not None:
        reasoning = list(reply.reasoning)
    calls = [_call(i, spec) for i, spec in enumerate(reply.tool_calls)]
    finish = reply.finish_reason or ("tool_calls" if calls else "stop")
    result = Answer(
        model=reply.model or prompt.model, text=text, reasoning=reasoning, tool_calls=calls,
        finish_reason=finish, prompt_tokens=max(1, count_words(_all_text(prompt))),
    )  # fmt: skip
    if reply.usage is not None:
        result.prompt_tokens, result.completion_tokens = reply.usage
    else:
        result.completion_tokens = _completion_words(result)
    return result


def _call(index: int, spec: ToolCallSpec) -> Call:
    return Call(
        spec.id or f"call_{index}", spec.name, spec.arguments_json(), spec.arguments_object()
    )


def embedding(text: str, dim: int) -> array[float]:
    """A deterministic unit vector of `dim` float32 values for `text`.

    Each word adds +-1 to eight hashed coordinates (feature hashing), so texts that share
    words get nearby vectors and retrieval over the local server behaves plausibly. A
    text without words gets a vector hashed from its bytes.
    """
    values = [0.0] * dim
    for word in _EMBED_WORD.findall(text.lower()):
        for index, sign in _word_features(word, dim):
            values[index] += sign
    if not any(values):
        raw = array("I", hashlib.shake_256(text.encode("utf-8", "surrogatepass")).digest(4 * dim))
        if sys.byteorder == "big":
            raw.byteswap()
        values = [u / 2147483647.5 - 1.0 for u in raw]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return array("f", [v / norm for v in values])


_EMBED_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=65536)
def _word_features(word: str, dim: int) -> tuple[tuple[int, float], ...]:
    digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=24).digest()
    return tuple(
        (int.from_bytes(digest[i : i + 3], "little") % dim, 1.0 if digest[i] & 1 else -1.0)
        for i in range(0, 24, 3)
    )


def embedding_bytes_le(vector: array[float]) -> bytes:
    """Little-endian float32 bytes of `vector` (OpenAI's base64 encoding)."""
    if sys.byteorder == "big":
        vector = array("f", vector)
        vector.byteswap()
    return vector.tobytes()
