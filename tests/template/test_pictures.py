"""The pictures of the examples in docs/examples/ are rendered from the BPMN files by
scripts/render-bpmn.mjs (not drawn by hand), and are up to date."""

from pathlib import Path

import pytest

from .conftest import EXAMPLES, ROOT, run_node

RENDER = ROOT / "scripts" / "render-bpmn.mjs"
PICTURES = ROOT / "docs" / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.bpmn")), ids=lambda p: p.name)
def test_picture_is_rendered_from_the_example(path: Path, tmp_path: Path) -> None:
    """docs/examples/<name>.svg is what the renderer makes of examples/<name>.bpmn today."""
    fresh = tmp_path / f"{path.stem}.svg"
    done = run_node(RENDER, path, fresh)
    assert done.returncode == 0, done.stderr
    committed = PICTURES / f"{path.stem}.svg"
    assert committed.exists(), f"run `node {RENDER.relative_to(ROOT)}` and commit {committed}"
    assert committed.read_text(encoding="utf-8") == fresh.read_text(encoding="utf-8"), (
        f"{committed.relative_to(ROOT)} is stale: run `node scripts/render-bpmn.mjs`"
    )
    svg = fresh.read_text(encoding="utf-8")
    assert svg.count("<rect") > 1 and "<polyline" in svg  # shapes and flows were drawn
