"""Shared helpers: paths, the committed template, and running Camunda's Node.js tools."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "element-templates"
TEMPLATE_FILE = TEMPLATES / "servicenow-connector.json"
EXAMPLES = ROOT / "examples"
HERE = Path(__file__).resolve().parent
# The packages of package.json these tests run; CI installs them with `npm ci`.
NODE_PACKAGES = (
    "@bpmn-io/element-templates-validator",
    "bpmnlint",
    "bpmnlint-plugin-camunda-compat",
    "zeebe-bpmn-moddle",
    "bpmn-moddle",
)


def node_command() -> str:
    """The node executable; the tests fail (never skip) when Node.js or node_modules is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: these checks need Node.js 20 or newer, then `npm ci`")
    missing = [
        p for p in NODE_PACKAGES if not (ROOT / "node_modules" / p / "package.json").exists()
    ]
    if missing:
        pytest.fail(f"node_modules lacks {', '.join(missing)}: run `npm ci` in {ROOT}")
    return node


def run_node(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node_command(), *map(str, args)],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_node_json(*args: str | Path, stdin: str | None = None) -> Any:
    done = run_node(*args, stdin=stdin)
    assert done.returncode == 0, f"node {' '.join(map(str, args))} failed:\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(name="template")
def _template() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    return loaded
