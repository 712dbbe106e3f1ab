"""The package's layers (docs/architecture.md): imports only go down, and never in a circle.

Read from the source, not from `sys.modules`: every `import` counts, including those inside
functions and under `TYPE_CHECKING`, since a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import functools
from fnmatch import fnmatchcase
from pathlib import Path

PACKAGE = "langchain_matric"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "commands and test tools",
        ("cli", "__main__", "_demo", "_probe", "testing", "testing.*", "ray", "ray.*"),
    ),
    (
        "LangChain classes",
        (
            "",  # the package's __init__
            "chat_models",
            "llms",
            "embeddings",
            "_messages",
            "_base",
            "_backend_build",
            "_streams",
            "_concurrency",
            "_tokens",
        ),
    ),
    # backends.* includes the endpoint pool, backends._pool (_state, _pick, _pool,
    # _failover, _transport): below the HTTP backends, above the transports it wraps.
    ("backends", ("backends", "backends.*")),
    ("configuration", ("config", "_config_kwargs", "_settings", "_config_load")),
    ("wire", ("sse", "ndjson", "_http", "_http.*")),
    ("leaves", ("errors", "_json", "_text", "_vectors", "_turns", "_version")),
)
"""Top to bottom; a pattern names a module relative to the package ("" is the package)."""


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name, relative to it ("" for `__init__`)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(name: str) -> int | None:
    places = [i for i, (_, patterns) in enumerate(LAYERS) for p in patterns if fnmatchcase(name, p)]
    return places[0] if len(places) == 1 else None


def resolve(absolute: str, known: set[str]) -> str | None:
    """The package module `absolute` names (or lies in), relative to the package; None
    outside it."""
    if absolute != PACKAGE and not absolute.startswith(PACKAGE + "."):
        return None
    relative = absolute.removeprefix(PACKAGE).removeprefix(".")
    while relative not in known:
        if not relative:
            return None
        relative = relative.rpartition(".")[0]
    return relative


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules `name` imports anywhere in its file (relative to the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(resolve(alias.name, known) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = [PACKAGE, *filter(None, package.split("."))]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *filter(None, [node.module])])
            else:
                module = node.module or ""
            for alias in node.names:
                # `from pkg import mod` imports the module `pkg.mod` when there is one.
                submodule = resolve(f"{module}.{alias.name}", known)
                exact = submodule == f"{module}.{alias.name}".removeprefix(PACKAGE + ".")
                found.add(submodule if exact else resolve(module, known))
    return {target for target in found if target is not None and target != name}


@functools.cache
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def show(name: str) -> str:
    return f"{PACKAGE}.{name}" if name else PACKAGE


def test_every_module_is_placed_in_one_layer() -> None:
    unplaced = [show(name) for name in modules() if layer_of(name) is None]
    assert not unplaced, (
        f"not placed in exactly one layer: {', '.join(unplaced)}. Add each to LAYERS in "
        "tests/unit_tests/test_layers.py (and to docs/architecture.md): the lowest layer "
        "whose modules are all it needs"
    )


def test_imports_go_to_the_same_or_a_lower_layer() -> None:
    upward = [
        f"{show(name)} ({LAYERS[layer_of(name) or 0][0]}) imports {show(target)} "
        f"({LAYERS[layer_of(target) or 0][0]})"
        for name, targets in sorted(graph().items())
        for target in sorted(targets)
        if (layer_of(target) or 0) < (layer_of(name) or 0)
    ]
    assert not upward, "imports must go down the layers:\n" + "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_circles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(map(show, cycle or []))


def test_the_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    module = package / "sub" / "mod.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import leaf\n"
        "from .. import errors\n"
        "import langchain_matric.config\n"
        "if TYPE_CHECKING:\n"
        "    from langchain_matric._json import dumps\n"
        "def later():\n"
        "    from ..sse import SSEDecoder\n"
    )
    known = {"", "errors", "config", "_json", "sse", "sub", "sub.leaf", "sub.mod"}
    assert imports("sub.mod", module, known) == {"sub.leaf", "errors", "config", "_json", "sse"}
    init = package / "sub" / "__init__.py"
    init.write_text("from . import leaf\nfrom .. import errors\nfrom langchain_matric import x\n")
    assert imports("sub", init, known) == {"sub.leaf", "errors", ""}


def test_a_circle_and_an_upward_import_are_found() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("_http._sync") == layer_of("sse") > layer_of("config")
    assert layer_of("backends._capabilities") == layer_of("backends")
    assert layer_of("no_such_module") is None
