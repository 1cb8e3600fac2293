""".ci/container-engine-script: how `.ci/run` finds the script that sets up a container engine,
relative to the clone and never at a fixed machine path; and what it says when there is none."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FINDER = Path(".ci") / "container-engine-script"
ENGINE = Path("shared") / "tools" / "container-engine.sh"


def git(*arguments: str, cwd: Path) -> None:
    subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True)


def clone_with_finder(where: Path, origin: str | None = None) -> Path:
    """A git repository at `where` holding the finder, with `origin` as its remote."""
    (where / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / FINDER, where / FINDER)
    git("init", "-q", cwd=where)
    if origin is not None:
        git("remote", "add", "origin", origin, cwd=where)
    return where


def engine_script(under: Path) -> Path:
    script = under / ENGINE
    script.parent.mkdir(parents=True)
    script.write_text("#!/usr/bin/env bash\n")
    return script


def find(clone: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CONTAINER_ENGINE_SCRIPT"}
    # No engine answers: the finder must not depend on one.
    environment |= {"DOCKER_HOST": "unix:///nonexistent", **env}
    return subprocess.run(
        ["bash", str(clone / FINDER)],
        cwd="/",
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_found_in_a_parent_of_the_clone(tmp_path: Path) -> None:
    """CI's layout: a fresh clone with shared/ beside it (or higher up)."""
    script = engine_script(tmp_path)
    clone = clone_with_finder(tmp_path / "work" / "main")
    found = find(clone)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).resolve() == script.resolve()


def test_found_above_a_local_origin(tmp_path: Path) -> None:
    """A clone in a temporary directory, made with `git clone <local path>`: found from origin."""
    script = engine_script(tmp_path / "home")
    origin = tmp_path / "home" / "main"
    origin.mkdir()
    for url in (str(origin), f"file://{origin}"):
        clone = clone_with_finder(tmp_path / "elsewhere" / url.replace("/", "_"), origin=url)
        found = find(clone)
        assert found.returncode == 0, found.stderr
        assert Path(found.stdout.strip()).resolve() == script.resolve()


def test_the_variable_comes_first(tmp_path: Path) -> None:
    engine_script(tmp_path)
    chosen = tmp_path / "mine.sh"
    chosen.write_text("#!/usr/bin/env bash\n")
    clone = clone_with_finder(tmp_path / "main")
    found = find(clone, CONTAINER_ENGINE_SCRIPT=str(chosen))
    assert (found.returncode, found.stdout.strip()) == (0, str(chosen))
    missing = find(clone, CONTAINER_ENGINE_SCRIPT=str(tmp_path / "nope.sh"))
    assert missing.returncode == 1
    assert "CONTAINER_ENGINE_SCRIPT" in missing.stderr and "nope.sh" in missing.stderr


@pytest.mark.parametrize("origin", [None, "https://example.invalid/servicenow-worker.git"])
def test_none_found_says_what_is_needed(tmp_path: Path, origin: str | None) -> None:
    clone = clone_with_finder(tmp_path / "main", origin=origin)
    found = find(clone)
    assert found.returncode == 1
    assert found.stdout == ""
    assert "CONTAINER_ENGINE_SCRIPT" in found.stderr and "Docker" in found.stderr


def test_ci_run_names_no_machine_path() -> None:
    """The CI script and its finder name no absolute path of one machine."""
    for path in (ROOT / ".ci" / "run", ROOT / FINDER):
        text = path.read_text()
        assert "/work/" not in text, path
