"""Every ```python block of README.md and of the docs pages listed runs as the page says.

One test per block, its id ``FILE:LINE`` (the line of the opening fence). A block runs in
a fresh namespace, in an empty temporary directory, with no ``MATRIC_*``, ``OLLAMA_*``,
``OPENAI_*`` or ``AZURE_*`` variables, connecting to loopback only, with its output
captured (and limited to `MAX_OUTPUT` characters). An HTML comment on the line right
above the opening fence says how else to run it::

    <!-- readme-test: local-server -->              names a real server: see below
    <!-- readme-test: continues -->                 runs after the block before it, in its
                                                    namespace and under its markers
    <!-- readme-test: needs=examples -->            skipped when the extra is not installed
    <!-- readme-test: continues needs=examples -->  markers combine

``local-server``: the block (with the blocks it continues) runs against a `LocalServer`.
Each real-server URL in `REAL_SERVERS` is replaced by the server's URL for that protocol,
and ``OPENAI_BASE_URL`` / ``OLLAMA_BASE`` point at it, so a backend that takes its URL
from the configuration (``MatricLLM(backend="ollama")``) reaches it too. The block fails
unless it names a real server (a URL, or a backend by name, see `PROTOCOL_NAMES`), and
unless the server received a request on every protocol the block names: a substitution
that silently did not apply fails.

A block followed by a line ``It prints:`` and a ```text block must print exactly that.

An unknown marker, a marker not directly above a python block, a python fence this file
cannot see (indented), a listed page with no python block, or a block that raises, prints
too much or leaks a resource (``filterwarnings = error``) fails the suite.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from langchain_matric.backends import OpenAIBackend
from langchain_matric.testing import LocalServer, RecordedRequest
from tests.integration_tests._ray_models import RAY_NOISE

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "::1"])

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/architecture.md", "docs/configuration.md")
"""The pages whose python blocks run; each must have at least one."""

MAX_OUTPUT = 4000
"""Characters a block (with the blocks it continues) may print."""

ENV_PREFIXES = ("MATRIC_", "OLLAMA_", "OPENAI_", "AZURE_")

REAL_SERVERS = {
    "http://127.0.0.1:8000/v1": "openai",
    "http://127.0.0.1:11434": "ollama",
}
"""URL literals of real servers the pages name -> the protocol whose LocalServer URL
replaces them."""

PROTOCOL_NAMES = {
    "openai": ('backend="openai"', "OpenAIBackend(", 'create_backend("openai"'),
    "ollama": ('backend="ollama"', "OllamaBackend(", 'create_backend("ollama"'),
}
"""Source text that names a protocol without a URL: the LocalServer must receive a request
on it (a LangChain class or `create_backend` takes the URL from the environment, which
points at the LocalServer; a backend constructed without `base_url` would not)."""

EXTRAS = {
    "examples": ("numpy", "tqdm"),
    "bench": ("httpx_sse", "langchain_openai", "langchain_ollama", "psutil"),
    "live": ("llama_cpp", "gguf"),
    "ray": ("ray",),
}
"""Extras a ``needs=`` marker may name -> the modules that show they are installed."""

OUTPUT_INTRO = "It prints:"
"""A line of its own after a python block that introduces a ```text block: the python
block's exact output (then checked)."""

MARKER = re.compile(r"^<!--\s*readme-test:(?P<body>.*?)-->\s*$")
PYTHON_FENCE = re.compile(r"^```python\s*$")
ANY_PYTHON_FENCE = re.compile(r"^\s*(```|~~~)\s*(python|py|python3|pycon)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    """One ```python block: where it is, its code and the markers above it."""

    path: str
    line: int
    """1-based line of the opening fence."""
    source: str
    markers: tuple[str, ...] = ()
    previous: Block | None = field(default=None, repr=False)
    """The python block before it in the same file."""
    prints: str | None = None
    """Its exact output, when the page shows it (see `OUTPUT_INTRO`)."""

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    def chain(self) -> list[Block]:
        """This block after the blocks it continues, first block first."""
        blocks = [self]
        while "continues" in blocks[0].markers:
            before = blocks[0].previous
            if before is None:
                msg = f"{blocks[0].id}: 'continues' on the first python block of the file"
                raise ValueError(msg)
            blocks.insert(0, before)
        return blocks


def parse_marker(line: str) -> tuple[str, ...] | None:
    """The markers of a ``<!-- readme-test: ... -->`` line, None for any other line.

    Raises:
        ValueError: An unknown marker.
    """
    match = MARKER.match(line.strip())
    if match is None:
        return None
    tokens = tuple(t for t in re.split(r"[\s,]+", match["body"]) if t)
    for token in tokens:
        if token in ("local-server", "continues"):
            continue
        if token.startswith("needs=") and token.removeprefix("needs=") in EXTRAS:
            continue
        msg = (
            f"unknown readme-test marker {token!r}: use local-server, continues or "
            f"needs=EXTRA with EXTRA one of {sorted(EXTRAS)}"
        )
        raise ValueError(msg)
    if not tokens:
        msg = "an empty readme-test marker"
        raise ValueError(msg)
    return tokens


def parse_blocks(text: str, path: str) -> list[Block]:
    """The python blocks of a markdown text, with their markers.

    Raises:
        ValueError: An unknown marker, a marker not right above a python block, or an
            unclosed fence.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    previous: Block | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        markers = parse_marker(line)
        if markers is not None:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if not PYTHON_FENCE.match(following):
                msg = f"{path}:{index + 1}: a readme-test marker not right above ```python"
                raise ValueError(msg)
        if PYTHON_FENCE.match(line):
            above = parse_marker(lines[index - 1]) if index > 0 else None
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                msg = f"{path}:{index + 1}: an unclosed ```python block"
                raise ValueError(msg)
            source = "\n".join(lines[index + 1 : end]) + "\n"
            prints = _shown_output(lines, end + 1)
            previous = Block(path, index + 1, source, above or (), previous, prints)
            blocks.append(previous)
            index = end
        index += 1
    return blocks


def _shown_output(lines: list[str], index: int) -> str | None:
    """The ```text block introduced by `OUTPUT_INTRO` at `lines[index:]` (blank lines
    skipped), or None."""
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index + 1 >= len(lines) or lines[index].strip() != OUTPUT_INTRO:
        return None
    index += 1
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index >= len(lines) or lines[index].strip() != "```text":
        msg = f"line {index + 1}: {OUTPUT_INTRO!r} not followed by a ```text block"
        raise ValueError(msg)
    end = index + 1
    while end < len(lines) and lines[end].strip() != "```":
        end += 1
    return "\n".join(lines[index + 1 : end]) + "\n"


def count_python_fences(text: str) -> int:
    """Python fences of any form, indented ones included (`parse_blocks` sees column 0)."""
    return sum(1 for line in text.splitlines() if ANY_PYTHON_FENCE.match(line))


def substitute(sources: Sequence[str], server: LocalServer) -> tuple[list[str], set[str]]:
    """The sources with real-server URLs replaced by `server`'s, and the protocols they name.

    Raises:
        ValueError: The sources name no real server: the marker does not apply.
    """
    urls = {"openai": server.openai_base_url, "ollama": server.ollama_base_url}
    protocols: set[str] = set()
    substituted = []
    for original in sources:
        source = original
        for real, protocol in REAL_SERVERS.items():
            if real in source:
                source = source.replace(real, urls[protocol])
                protocols.add(protocol)
        for protocol, names in PROTOCOL_NAMES.items():
            if any(name in source for name in names):
                protocols.add(protocol)
        leftover = [real for real in REAL_SERVERS if real in source]
        assert not leftover, f"not substituted: {leftover}"
        substituted.append(source)
    if not protocols:
        names = sorted(n for v in PROTOCOL_NAMES.values() for n in v)
        msg = f"marked local-server, but names no real server: none of {sorted(REAL_SERVERS)} nor {names}"
        raise ValueError(msg)
    return substituted, protocols


def protocols_served(requests: Iterable[RecordedRequest]) -> set[str]:
    """The protocols of the requests a LocalServer received."""
    served = set()
    for request in requests:
        if request.path.startswith("/v1/"):
            served.add("openai")
        elif request.path.startswith("/api/"):
            served.add("ollama")
    return served


def check_served(named: set[str], requests: Sequence[RecordedRequest]) -> None:
    """Fail unless the server received a request on every protocol the block names."""
    missing = named - protocols_served(requests)
    assert not missing, (
        f"the block names {sorted(named)} but the LocalServer received no request on "
        f"{sorted(missing)} (received: {[f'{r.method} {r.path}' for r in requests]}): "
        "did the substitution apply?"
    )


def missing_extras(markers: Iterable[str]) -> list[str]:
    """``needs=`` extras whose modules are not importable, with the module."""
    missing = []
    for marker in markers:
        if not marker.startswith("needs="):
            continue
        extra = marker.removeprefix("needs=")
        for module in EXTRAS[extra]:
            if importlib.util.find_spec(module) is None:
                missing.append(
                    f"the {extra!r} extra ({module} is not installed: pip install -e '.[{extra}]')"
                )
                break
    return missing


def _load(path: str) -> list[Block]:
    return parse_blocks((ROOT / path).read_text(encoding="utf-8"), path)


def _all_blocks() -> list[Block]:
    blocks: list[Block] = []
    for path in DOCUMENTS:
        with contextlib.suppress(OSError, ValueError):  # reported by the tests below
            blocks.extend(_load(path))
    return blocks


BLOCKS = _all_blocks()


@contextlib.contextmanager
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def _run(chain: list[Block], sources: list[str]) -> list[str]:
    """Run the sources in one namespace; return what each printed."""
    namespace: dict[str, object] = {"__name__": "__readme__"}
    outputs = []
    for block, source in zip(chain, sources, strict=True):
        # Padded so tracebacks show the markdown file's own line numbers.
        code = compile("\n" * block.line + source, str(ROOT / block.path), "exec")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
        outputs.append(out.getvalue())
    # What the block left open is released now, inside the test: a ResourceWarning from
    # a finaliser fails this block, not a later test.
    namespace.clear()
    gc.collect()
    return outputs


# -- the blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
@pytest.mark.filterwarnings(RAY_NOISE)  # the Ray Data example (needs=ray)
def test_block(block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chain = block.chain()
    markers = {m for b in chain for m in b.markers}
    missing = missing_extras(markers)
    if missing:
        pytest.skip(f"{block.id} needs {', '.join(missing)}")
    with _clean_environment(monkeypatch, tmp_path):
        if "local-server" not in markers:
            outputs = _run(chain, [b.source for b in chain])
        else:
            # 768: what the configuration expects of the default embedding models'
            # vectors (OLLAMA_EMBED_DIM), which the pages use.
            with LocalServer(embedding_dim=768) as server:
                monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
                monkeypatch.setenv("OLLAMA_BASE", server.ollama_base_url)
                sources, named = substitute([b.source for b in chain], server)
                outputs = _run(chain, sources)
                check_served(named, server.requests)
    printed = sum(map(len, outputs))
    assert printed <= MAX_OUTPUT, f"{block.id} printed {printed} characters"
    if block.prints is not None:
        assert outputs[-1] == block.prints, f"{block.id} does not print what the page shows"


# -- the pages and markers ----------------------------------------------------------------


@pytest.mark.parametrize("path", DOCUMENTS)
def test_page_has_python_blocks_all_seen(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    blocks = parse_blocks(text, path)  # raises on unknown or misplaced markers
    assert blocks, f"{path} has no ```python block"
    assert len(blocks) == count_python_fences(text), (
        f"{path} has python fences this test cannot run (indented, or not ```python)"
    )
    for block in blocks:
        block.chain()  # raises on 'continues' without a block before it


def test_needs_markers_name_extras_of_the_package() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    used = {m.removeprefix("needs=") for b in BLOCKS for m in b.markers if m.startswith("needs=")}
    for extra in sorted(used):
        assert extra in extras, f"needs={extra}: pyproject.toml has no extra {extra!r}"
        requirements = [r.lower().replace("_", "-") for r in extras[extra]]
        for module in EXTRAS[extra]:
            distribution = module.replace("_", "-")
            assert any(r.startswith(distribution) for r in requirements), (
                f"needs={extra}: {module} is not installed by the {extra!r} extra"
            )


def test_markers_are_parsed_strictly() -> None:
    assert parse_marker("<!-- readme-test: local-server -->") == ("local-server",)
    assert parse_marker("<!-- readme-test: continues needs=examples -->") == (
        "continues",
        "needs=examples",
    )
    assert parse_marker("<!-- a comment -->") is None
    for bad in ("<!-- readme-test: local_server -->", "<!-- readme-test: needs=nope -->"):
        with pytest.raises(ValueError, match="unknown readme-test marker"):
            parse_marker(bad)
    with pytest.raises(ValueError, match="empty"):
        parse_marker("<!-- readme-test: -->")
    with pytest.raises(ValueError, match="not right above"):
        parse_blocks("<!-- readme-test: continues -->\n\n```python\nx = 1\n```\n", "t.md")
    text = "```python\na = 1\n```\n\n<!-- readme-test: continues -->\n```python\nb = a\n```\n"
    first, second = parse_blocks(text, "t.md")
    assert (first.line, second.line, second.markers) == (1, 6, ("continues",))
    assert second.chain() == [first, second]
    with pytest.raises(ValueError, match="first python block"):
        parse_blocks("<!-- readme-test: continues -->\n```python\nb = 1\n```\n", "t.md")[0].chain()
    assert count_python_fences("  ```python\nx\n  ```\n```py\ny\n```\n") == 2
    (shown,) = parse_blocks("```python\nprint(1)\n```\n\nIt prints:\n\n```text\n1\n```\n", "t.md")
    assert shown.prints == "1\n"
    with pytest.raises(ValueError, match="not followed by a ```text block"):
        parse_blocks("```python\nprint(1)\n```\nIt prints:\n```\n1\n```\n", "t.md")


def test_substitution_applies_or_fails(server: LocalServer) -> None:
    sources, named = substitute(
        ['chat = ChatMatric(base_url="http://127.0.0.1:8000/v1")\n', "chat.invoke('hi')\n"],
        server,
    )
    assert sources == [
        f'chat = ChatMatric(base_url="{server.openai_base_url}")\n',
        "chat.invoke('hi')\n",
    ]
    assert named == {"openai"}
    sources, named = substitute(['MatricLLM(backend="ollama", model="llama3.2")\n'], server)
    assert named == {"ollama"}  # the URL comes from OLLAMA_BASE
    with pytest.raises(ValueError, match="names no real server"):
        substitute(['ChatMatric(base_url="http://example.com/v1")\n'], server)


def test_a_substitution_that_did_not_reach_the_server_fails(server: LocalServer) -> None:
    with pytest.raises(AssertionError, match="did the substitution apply"):
        check_served({"ollama"}, server.requests)
    with OpenAIBackend(base_url=server.openai_base_url, model="m") as backend:
        backend.generate("hi")
    check_served({"openai"}, server.requests)
    with pytest.raises(AssertionError, match=r"no request on \['ollama'\]"):
        check_served({"openai", "ollama"}, server.requests)
