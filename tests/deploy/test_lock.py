"""uv.lock, the versions the image and CI install (docs/dependencies.md), agrees with pyproject.toml.

`uv lock --check --offline` with an empty cache: it compares the lock with pyproject.toml's
requirements from the lock's own records, so no index is asked; a lock that no longer satisfies
pyproject.toml would need a fresh resolution, which offline and uncached cannot happen, and fails.
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def uv_lock_check(project: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    assert UV is not None, "uv is in the test extra: pip install -e '.[test]'"
    return subprocess.run(
        [UV, "lock", "--check", "--offline", "--no-config", "--cache-dir", str(cache)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def project_copy(where: Path, pyproject: str | None = None) -> Path:
    """pyproject.toml (as given) and uv.lock in a directory of their own."""
    (where / "pyproject.toml").write_text(pyproject or (ROOT / "pyproject.toml").read_text())
    shutil.copy(ROOT / "uv.lock", where / "uv.lock")
    shutil.copy(ROOT / "README.md", where / "README.md")
    return where


def test_the_lock_agrees_with_pyproject(tmp_path: Path) -> None:
    checked = uv_lock_check(ROOT, tmp_path / "cache")
    assert checked.returncode == 0, (
        "uv.lock does not agree with pyproject.toml: run scripts/lock and commit uv.lock\n"
        + checked.stderr
    )


@pytest.mark.parametrize(
    ("change", "new"),
    [
        (r'"structlog>=[^"]+"', '"structlog>=99"'),  # a range the locked version leaves
        (r'"lark>=1.2,<2",', '"lark>=1.2,<2",\n    "tomli-w>=1",'),  # a dependency added
        (r'    "lark>=1.2,<2",\n', ""),  # a dependency removed
    ],
)
def test_a_changed_pyproject_fails_the_check(tmp_path: Path, change: str, new: str) -> None:
    """The check above can fail: pyproject.toml changed and the lock not refreshed."""
    text = (ROOT / "pyproject.toml").read_text()
    changed = re.sub(change, new, text, count=1)
    assert changed != text
    (tmp_path / "project").mkdir()
    project = project_copy(tmp_path / "project", changed)
    assert uv_lock_check(project, tmp_path / "cache").returncode != 0


def test_the_image_set_is_one_version_of_each_package_with_hashes() -> None:
    """What the image installs (the runtime closure) has one version per package on every Python
    the project supports, each file with the hash uv checks it by. (The bench extra's numpy does
    differ by Python version; the image has none of it.)"""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        packages.setdefault(package["name"], []).append(package)
    [project] = packages["servicenow-worker"]
    runtime: set[str] = set()
    waiting = [dependency["name"] for dependency in project["dependencies"]]
    while waiting:
        name = waiting.pop()
        if name not in runtime:
            runtime.add(name)
            waiting += [d["name"] for p in packages[name] for d in p.get("dependencies", [])]
    assert {"pyzeebe", "grpcio", "protobuf", "httpx", "aiohttp", "uvloop"} <= runtime
    assert {name for name in runtime if len(packages[name]) > 1} == set()
    for name in runtime:
        [package] = packages[name]
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        assert files, name
        assert all(file["hash"].startswith("sha256:") for file in files), name


def test_the_uv_pins_are_the_required_version() -> None:
    """The Dockerfile's UV_VERSION and the test extra's uv are the uv pyproject.toml requires
    (uv itself refuses any other; this says which file to change)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = pyproject["tool"]["uv"]["required-version"].removeprefix("==")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG UV_VERSION={required}\n" in dockerfile
    assert f"uv=={required}" in pyproject["project"]["optional-dependencies"]["test"]
