"""llama.cpp's own C++ `llama-server`, built once from PyPI and cached outside the repository.

The llama-cpp-python sdist on PyPI vendors the llama.cpp sources its wheel is compiled
from. This module downloads that sdist (the version the `live` extra pins, so both live
servers run the same engine), builds the `llama-server` target alone with cmake and ninja
from their PyPI wheels, and keeps the binary in a cache keyed by the version and the build
flags; later runs find it there and build nothing.

    python -m tests.live_tests._llama_server     # build if missing, print the binary's path

Nothing here downloads at build time beyond the sdist: the web UI and TLS are off
(`LLAMA_BUILD_UI`, `LLAMA_USE_PREBUILT_UI`, `LLAMA_OPENSSL`), and the binary links
llama.cpp statically so the build tree can go. Set `MATRIC_LLAMA_SERVER` to use a binary
of your own instead, or `MATRIC_CACHE_DIR` to move the cache (default
`$XDG_CACHE_HOME/langchain-matric`, else `~/.cache/langchain-matric`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE = "llama-cpp-python"
BUILD_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
)
JOBS = max(1, os.cpu_count() or 1)


class BuildError(RuntimeError):
    """The download or the build failed; the message ends with the log's tail."""


def engine_version() -> str:
    """The llama-cpp-python version installed here (the `live` extra's pin)."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        msg = f"{PACKAGE} is not installed: `pip install -e '.[live]'` pins the version to build"
        raise BuildError(msg) from None


def cache_root() -> Path:
    """Where built binaries are kept, outside the repository."""
    if explicit := os.environ.get("MATRIC_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "langchain-matric"


def cached_binary(engine: str) -> Path:
    """The cache path of the binary for `engine`, keyed by version and build flags."""
    flags = hashlib.sha256("\n".join(BUILD_FLAGS).encode()).hexdigest()[:12]
    return cache_root() / "llama-server" / f"{engine}-{flags}" / "llama-server"


def find_binary() -> Path | None:
    """`MATRIC_LLAMA_SERVER` if set, else the cached build, else None."""
    if explicit := os.environ.get("MATRIC_LLAMA_SERVER"):
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            msg = f"MATRIC_LLAMA_SERVER={explicit} is not an executable file"
            raise BuildError(msg)
        return path
    path = cached_binary(engine_version())
    return path if os.access(path, os.X_OK) else None


def ensure_binary(progress: bool = False) -> Path:
    """The `llama-server` binary, built first if no cached one exists (6-13 min on 2 cores)."""
    if (found := find_binary()) is not None:
        return found
    target = cached_binary(engine_version())
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent.parent / ".lock"):
        if os.access(target, os.X_OK):  # built by another process while we waited
            return target
        _build(engine_version(), target, progress=progress)
    return target


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (released when the file closes)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _tool(name: str) -> str:
    """`name` from this interpreter's environment (the PyPI wheel), else from PATH."""
    here = Path(sys.executable).parent / name
    if os.access(here, os.X_OK):
        return str(here)
    if found := shutil.which(name):
        return found
    msg = f"{name} not found: `pip install -e '.[live]'` installs it from PyPI"
    raise BuildError(msg)


def _build(engine: str, target: Path, *, progress: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent.parent) as tmp:
        work = Path(tmp)
        log = work / "build.log"
        started = time.monotonic()

        def step(title: str, command: list[str]) -> None:
            if progress:
                print(f"  {title} ({time.monotonic() - started:.0f}s)", file=sys.stderr)
            with log.open("ab") as sink:
                sink.write(f"$ {' '.join(command)}\n".encode())
                sink.flush()
                done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                tail = log.read_text(errors="replace")[-4000:]
                msg = f"{title} failed with exit code {done.returncode}:\n{tail}"
                raise BuildError(msg)

        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        step(
            f"downloading the {PACKAGE} {engine} sdist",
            [*pip, "download", "--no-binary", ":all:", "--no-deps", "-d", str(work),
             f"{PACKAGE}=={engine}"],
        )  # fmt: skip
        source = _unpack(work)
        build = work / "build"
        step(
            "configuring llama.cpp",
            [_tool("cmake"), "-S", str(source), "-B", str(build), "-G", "Ninja",
             f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}", *BUILD_FLAGS],
        )  # fmt: skip
        step(
            f"compiling llama-server on {JOBS} core(s)",
            [_tool("cmake"), "--build", str(build), "--target", "llama-server", "-j", str(JOBS)],
        )
        binary = build / "bin" / "llama-server"
        step("checking the binary", [str(binary), "--version"])
        staged = work / "llama-server"
        shutil.copy2(binary, staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        if progress:
            print(f"  built in {time.monotonic() - started:.0f}s: {target}", file=sys.stderr)


def _unpack(work: Path) -> Path:
    """The llama.cpp sources from the downloaded sdist in `work`."""
    sdists = sorted(work.glob("*.tar.gz"))
    if len(sdists) != 1:
        msg = f"expected one sdist from pip download in {work}, found {len(sdists)}"
        raise BuildError(msg)
    with tarfile.open(sdists[0]) as archive:
        archive.extractall(work / "src", filter="data")
    sources = sorted((work / "src").glob("*/vendor/llama.cpp"))
    if len(sources) != 1:
        msg = f"{sdists[0].name} holds no vendor/llama.cpp: not a llama-cpp-python sdist?"
        raise BuildError(msg)
    return sources[0]


def main() -> int:
    """Build if missing and print the binary's path (`./run test` calls this first)."""
    try:
        if (found := find_binary()) is None:
            print(
                f"building llama.cpp's llama-server from the {PACKAGE} {engine_version()} "
                f"sdist (once, 6-13 min on 2 cores; cached in {cache_root()})",
                file=sys.stderr,
            )
            found = ensure_binary(progress=True)
    except BuildError as error:
        print(f"llama-server: {error}", file=sys.stderr)
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
