"""The FEEL evaluator against feelin (the npm FEEL interpreter) over the whole corpus.

feelin runs once per session, in one Node process fed all cases as JSON lines. A case passes
when both give the same outcome (numbers compared as doubles), or when it is listed in
differences.json with the outcomes both sides give and the reason; docs/feel.md holds the
same table. A new difference, a changed one, or a listed one that went away fails.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ._corpus import REPOSITORY, Case, agree, all_cases, feelin_outcomes, normalised, our_outcome

HERE = Path(__file__).parent
CASES = all_cases()
DIFFERENCES: dict[str, dict[str, Any]] = {
    entry["id"]: entry for entry in json.loads((HERE / "differences.json").read_text("utf-8"))
}

needs_feelin = pytest.mark.skipif(
    shutil.which("node") is None or not (REPOSITORY / "node_modules" / "feelin").is_dir(),
    reason="the differential test needs Node and the feelin package (npm ci)",
)


@pytest.fixture(scope="session", name="feelin")
def _feelin() -> dict[str, Any]:
    return feelin_outcomes(CASES)


def test_the_corpus_has_at_least_300_cases() -> None:
    """The brief asks for a corpus of at least 300 expressions with contexts."""
    assert len(CASES) >= 300
    assert len({case["id"] for case in CASES}) == len(CASES)


def _group(case: Case) -> str:
    """`lit-001` is in group `lit`, `gen-arith-001` in `gen-arith`."""
    return case["id"].rsplit("-", 1)[0]


GROUPS = sorted({_group(case) for case in CASES})


def _mismatch(case: Case, feelin: dict[str, Any]) -> str | None:
    """Why the case fails the differential check, or None when it passes."""
    ours, theirs = our_outcome(case), feelin[case["id"]]
    listed = DIFFERENCES.get(case["id"])
    where = f"{case['id']} {case['expression']!r}"
    if listed is None:
        if agree(ours, theirs):
            return None
        return f"{where}: new difference: ours {ours!r}, feelin {theirs!r}"
    if agree(ours, theirs):
        return f"{where}: listed as a difference but agrees now; remove it"
    if normalised(ours) != normalised(listed["ours"]):
        return f"{where}: our outcome changed to {ours!r}"
    if normalised(theirs) != normalised(listed["feelin"]):
        return f"{where}: feelin's outcome changed to {theirs!r}"
    return None


@needs_feelin
@pytest.mark.parametrize("group", GROUPS)
def test_agrees_with_feelin_or_is_a_listed_difference(group: str, feelin: dict[str, Any]) -> None:
    """Same outcome as feelin, or exactly the difference differences.json records.

    One test per group of cases; the message lists every case of the group that fails.
    """
    failures = [
        failure
        for case in CASES
        if _group(case) == group and (failure := _mismatch(case, feelin)) is not None
    ]
    assert not failures, "\n".join(failures)


def test_gives_the_expected_feel_scala_outcomes() -> None:
    """Hand-written cases carry the outcome feel-scala's semantics give; errors by kind.

    One test for all of them (they need no Node): the message lists every case that differs.
    """
    wrong = []
    for case in CASES:
        if "expected" not in case:
            continue
        ours, expected = our_outcome(case), case["expected"]
        is_error = isinstance(expected, dict) and "$error" in expected
        if (ours != expected) if is_error else not agree(ours, expected):
            wrong.append(f"{case['id']} {case['expression']!r}: {ours!r}, expected {expected!r}")
    assert not wrong, "\n".join(wrong)


def test_every_listed_difference_is_a_corpus_case_with_a_reason() -> None:
    """differences.json names only corpus cases, each with the expression and a reason."""
    expressions = {case["id"]: case["expression"] for case in CASES}
    for identifier, entry in DIFFERENCES.items():
        assert expressions.get(identifier) == entry["expression"], identifier
        assert len(entry["reason"]) > 20, identifier


def test_every_listed_difference_is_in_the_documentation() -> None:
    """docs/feel.md shows the same table of intended differences."""
    text = (REPOSITORY / "docs" / "feel.md").read_text("utf-8")
    undocumented = [identifier for identifier in DIFFERENCES if f"`{identifier}`" not in text]
    assert not undocumented
