"""The differential corpus: loading it, evaluating it here and with feelin, comparing outcomes.

A case is `{"id", "expression", "context", "expected"?}`; `context` is a dict or the name of
one in `contexts.json`. An outcome is the JSON value an evaluation gave, or `{"$error": kind}`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from servicenow_worker.feel import (
    FeelEvaluationError,
    FeelSyntaxError,
    FeelUnsupportedError,
    compile_expression,
)

from ._generated import generated_cases

HERE = Path(__file__).parent
REPOSITORY = HERE.parent.parent
FEELIN_SCRIPT = HERE / "feelin_eval.mjs"
Case = dict[str, Any]


@cache
def contexts() -> dict[str, dict[str, Any]]:
    """The named contexts cases refer to."""
    loaded: dict[str, dict[str, Any]] = json.loads((HERE / "contexts.json").read_text("utf-8"))
    return loaded


def all_cases() -> list[Case]:
    """Hand-written cases (corpus.jsonl) followed by the generated ones."""
    lines = (HERE / "corpus.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()] + generated_cases()


def context_of(case: Case) -> dict[str, Any]:
    context = case["context"]
    return contexts()[context] if isinstance(context, str) else context


def our_outcome(case: Case) -> Any:
    """What this package gives for the case."""
    try:
        return compile_expression(case["expression"]).evaluate(context_of(case))
    except FeelUnsupportedError:
        return {"$error": "unsupported"}
    except FeelSyntaxError:
        return {"$error": "syntax"}
    except FeelEvaluationError:
        return {"$error": "evaluation"}


def feelin_outcomes(cases: list[Case]) -> dict[str, Any]:
    """What feelin gives for each case, from one Node process for the whole batch."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    batch = "".join(
        json.dumps({"id": c["id"], "expression": c["expression"], "context": context_of(c)}) + "\n"
        for c in cases
    )
    completed = subprocess.run(
        [node, str(FEELIN_SCRIPT)],
        input=batch,
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=120,
        check=True,
    )
    outcomes: dict[str, Any] = {}
    for line in completed.stdout.splitlines():
        answer = json.loads(line)
        outcomes[answer["id"]] = answer["value"] if answer["ok"] else {"$error": "feelin"}
    return outcomes


def normalised(value: Any) -> Any:
    """Numbers as doubles (feelin computes with doubles), errors as one kind, keys unordered."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, dict):
        if "$error" in value:
            return {"$error": "error"}
        return {k: normalised(v) for k, v in value.items()}
    return value


def agree(ours: Any, theirs: Any) -> bool:
    """True when the two outcomes are the same after normalisation."""
    return bool(normalised(ours) == normalised(theirs))
