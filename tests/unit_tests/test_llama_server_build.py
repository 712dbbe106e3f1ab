"""Where the live suite finds llama.cpp's `llama-server`, and when it builds one.

The build itself (6-13 minutes on 2 cores) runs once per machine from `./run test`; these tests
cover the cache key, the overrides and the errors, with no download and no compiler.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.live_tests import _llama_server as build


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MATRIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MATRIC_LLAMA_SERVER", raising=False)
    monkeypatch.setattr(build, "engine_version", lambda: "0.3.36")
    return tmp_path / "cache"


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_cache_is_keyed_by_version_and_flags(cache_dir: Path) -> None:
    path = build.cached_binary("0.3.36")
    assert path.parent.parent == cache_dir / "llama-server"
    assert path.parent.name.startswith("0.3.36-")
    assert path.name == "llama-server"
    assert build.cached_binary("0.3.37") != path


def test_the_default_cache_is_outside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MATRIC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert build.cache_root() == Path("/somewhere/cache/langchain-matric")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert build.cache_root() == Path.home() / ".cache" / "langchain-matric"
    repository = Path(__file__).resolve().parents[2]
    assert repository not in build.cached_binary("0.3.36").parents


def test_a_cached_binary_is_found_and_nothing_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build.find_binary() is None
    binary = _executable(build.cached_binary("0.3.36"))

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("built although a binary was cached")

    monkeypatch.setattr(build, "_build", no_build)
    assert build.find_binary() == binary
    assert build.ensure_binary() == binary


def test_a_missing_binary_is_built_into_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Path] = []

    def fake_build(engine: str, target: Path, *, progress: bool) -> None:
        assert engine == "0.3.36"
        built.append(_executable(target))

    monkeypatch.setattr(build, "_build", fake_build)
    assert build.ensure_binary() == build.cached_binary("0.3.36")
    assert build.ensure_binary() == build.cached_binary("0.3.36")
    assert len(built) == 1


def test_matric_llama_server_names_your_own_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = _executable(tmp_path / "bin" / "llama-server")
    monkeypatch.setenv("MATRIC_LLAMA_SERVER", str(own))
    assert build.find_binary() == own
    monkeypatch.setenv("MATRIC_LLAMA_SERVER", str(tmp_path / "nothing-here"))
    with pytest.raises(build.BuildError, match="MATRIC_LLAMA_SERVER=.*nothing-here"):
        build.find_binary()


def test_a_missing_tool_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(build.BuildError, match=r"no-such-tool not found: .*\[live\]"):
        build._tool("no-such-tool")


def test_a_failed_step_ends_with_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.sys, "executable", "/bin/false")  # `python -m pip` fails
    with pytest.raises(build.BuildError) as caught:
        build.ensure_binary()
    message = str(caught.value)
    assert message.startswith(
        "downloading the llama-cpp-python 0.3.36 sdist failed with exit code 1"
    )
    assert "$ /bin/false -m pip" in message  # the log's tail: the command that failed
    assert build.find_binary() is None


def test_a_download_without_an_sdist_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.sys, "executable", "/bin/echo")  # "succeeds", downloads nothing
    with pytest.raises(build.BuildError, match="expected one sdist from pip download"):
        build.ensure_binary()
