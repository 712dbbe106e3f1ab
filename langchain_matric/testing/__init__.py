"""A loopback server speaking the OpenAI-compatible and the Ollama native API, for tests.

Standard library only: raw HTTP/1.1 (keep-alive, ``Transfer-Encoding: chunked`` with one
chunk frame per SSE event / NDJSON line) on an asyncio loop in a background thread::

    from langchain_matric.testing import Fault, LocalServer, Reply, ToolCallSpec

    with LocalServer() as server:          # a free 127.0.0.1 port; stopped on exit
        server.openai_base_url             # "http://127.0.0.1:PORT/v1"
        server.ollama_base_url             # "http://127.0.0.1:PORT"
        server.script(Reply(text="Hello!", reasoning="hmm", usage=(5, 2), chunk_size=1))
        server.fault(Fault(status=429, headers={"Retry-After": "1"}, times=1))
        ...                                # point a client at it
        server.requests[-1].json           # what the client sent

Endpoints: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/responses``,
``/v1/embeddings``, ``GET /v1/models``; ``POST /api/chat``, ``/api/generate``, ``/api/embed``,
``/api/embeddings``, ``/api/show``, ``GET /api/tags``, ``/api/version`` and ``/``; and
``POST /tokenize`` (with ``options.tokenizer``), ``GET /props`` (llama.cpp's).

Which answer a generation request gets: a queued `Fault` matching its path first
(status faults replace the response; stream faults alter the reply served), then the
next scripted `Reply`, then ``options.default_reply`` (pre-built once, for benchmarks),
else the request-driven model:

1. Tools offered and ``tool_choice`` is not "none": a forced function is always called;
   with "required", or when the last message is from the user, the tools named (as whole
   words) in the last user message are called (all, in offered order; only the first
   when ``parallel_tool_calls`` is false), else the first offered tool. After a tool
   result (last message role "tool") it answers in text. Arguments fill every property
   of the tool's JSON schema (``$ref``, ``anyOf``, ``enum``, bounds handled) with values
   read off the last user message, as a model would: ``key=value`` / ``key: value`` for
   that property, numbers in order for integer/number properties (``"What is 3 + 4?"``
   -> ``{"a": 3, "b": 4}``), quoted strings then proper names (capitalised words not
   starting a sentence: ``Oslo``) in order for string properties, the ``enum`` member
   the text mentions; a call written as ``name(...)`` (``"magic_function(3)"``) is read
   between its parentheses only. Values the text does not give (or that break the
   schema's bounds) come from the schema: lower bounds, ``format`` examples, and strings
   echo the last user message.
2. Else a JSON schema (OpenAI ``response_format`` json_schema, Ollama ``format`` object)
   gives JSON valid against it, filled the same way; ``json_object`` /
   ``format: "json"`` gives an object keyed by the quoted names in the system messages
   and the last user message (``"... with 'setup' and 'punchline' keys"``), each valued
   with the last user text, or ``{"echo": <last user text>}`` without quoted names.
3. Else text ``"Echo: <last user text>"`` (``"Result: <tool contents>"`` after tool
   results), one word per streamed delta, cut at the first ``stop`` string (finish
   "stop") and to ``max_tokens`` / ``max_completion_tokens`` / ``num_predict`` words
   (finish "length").
4. Reasoning ``"Reasoning about: <text>"`` when asked (Ollama ``think``, OpenAI
   ``reasoning_effort``) or with the server option ``reasoning=True``.

Tokens are whitespace-separated words. Embeddings are deterministic unit vectors
(feature-hashed words, so texts sharing words are near; float32), ``embedding_dim``
long unless ``dimensions`` is sent.
Scripted replies are served as given (no ``stop`` / ``max_tokens`` cut).

``/v1/responses`` (the Responses API) answers by the same rules from its ``input``
items (``function_call_output`` items are tool results), ``tools``, ``tool_choice``,
``text.format``, ``max_output_tokens`` and ``reasoning.effort``. Its streams take the
shape ``options.responses_shape`` (or ``Reply.responses_shape``) names: "openai",
"vllm" or "llamacpp" (see ``_responses``). Usage reports ``cached_tokens``: the words
the prompt shares, from its start, with the previous ``/v1/responses`` prompt (or
``Reply.cached_tokens``). In-stream errors (`Fault.stream_error`) are an ``error``
event, ``response.failed`` (style "event"), llama.cpp's bare ``data: {"error": ...}``
or vLLM's error object; ``Fault.no_terminator`` drops the terminal event.
"""

from langchain_matric.testing._server import LocalServer, local_server_fixture
from langchain_matric.testing._types import (
    Fault,
    RecordedRequest,
    Reply,
    ServerOptions,
    ToolCallSpec,
)

__all__ = [
    "Fault",
    "LocalServer",
    "RecordedRequest",
    "Reply",
    "ServerOptions",
    "ToolCallSpec",
    "local_server_fixture",
]

# Reprs and docs say `langchain_matric.testing.LocalServer`. The dataclasses keep their
# own module so `typing.get_type_hints` (hypothesis, pydantic) still resolves them.
LocalServer.__module__ = __name__
local_server_fixture.__module__ = __name__
