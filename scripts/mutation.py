"""Mutation testing of one module: `python scripts/mutation.py <module> [--workers N]`.

Runs mutmut (the `mutation` extra) on one module of src/servicenow_worker with only the tests that
matter for it (unit, property and in-process end-to-end tests; never container tests), in its own
directory `.mutation/<module>/`, so that each module keeps its own results between runs and a
second run only re-tests what changed. docs/testing.md has the figures and the equivalent mutants.

Why a directory per module: mutmut reads its settings from the pyproject.toml of the directory it
runs in; each module gets a copy with its own `[tool.mutmut]` (what to mutate, which tests).

Tests that start the worker as a child process (tests/e2e/worker_process.py) cannot kill a mutant:
mutmut activates a mutant in the pytest process (its trampolines, imported from `mutants/src`),
while the child imports the unmutated package from the editable install and gets an environment
without mutmut's variable. mutmut only counts tests that called the mutated function in the pytest
process, so those tests are never counted; they are left out here because they only cost time.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "src/servicenow_worker"

# Module -> the tests that exercise it. A test that does not call the module costs only the
# stats run: mutmut runs, for each mutant, only the tests that called the mutated function.
# Every end-to-end test calls inputs, handler and outcome: each module gets the files that check
# what it does, so that a surviving mutant (which runs every test that calls it) costs seconds.
TESTS: dict[str, list[str]] = {
    "inputs": [
        "tests/unit/test_inputs.py",
        "tests/unit/test_operations.py",
        "tests/property",
        "tests/security/test_host_allow_list.py",
        "tests/e2e/test_unused_inputs.py",
    ],
    "servicenow": [
        "tests/unit/test_servicenow.py",
        "tests/retries",
        "tests/e2e/test_operations.py",
        "tests/e2e/test_failures.py",
        "tests/e2e/test_guarantees.py",
        "tests/e2e/test_read_all.py",
    ],
    "outcome": [
        "tests/unit/test_outcome.py",
        "tests/security/test_masking.py",
        "tests/e2e/test_expressions.py",
        "tests/e2e/test_failures.py",
    ],
    "secrets": ["tests/unit/test_secrets.py", "tests/security", "tests/e2e/test_failures.py"],
    "auth": ["tests/unit/test_auth.py", "tests/security", "tests/e2e/test_authentication.py"],
    "idempotency": [
        "tests/e2e/test_guarantees.py",
        "tests/e2e/test_batch.py",
        "tests/retries",
        "tests/unit/test_operations.py",
    ],
    "zeebe": [
        "tests/unit/test_job_pump.py",
        "tests/e2e/test_guarantees.py",
        "tests/e2e/test_failures.py",
        "tests/e2e/test_tracing.py",
        "tests/deploy/test_connection_modes.py",
        "tests/deploy/test_health_metrics.py",
    ],
    "settings": ["tests/unit", "tests/security/test_host_allow_list.py", "tests/deploy"],
    "template": ["tests/template/test_generation.py", "tests/template/test_agreement.py"],
    "operations": [
        "tests/unit/test_operations.py",
        "tests/unit/test_more_from_one_task.py",
        "tests/unit/test_attachment_inputs.py",
        "tests/e2e/test_operations.py",
        "tests/e2e/test_read_all.py",
        "tests/e2e/test_aggregate.py",
        "tests/e2e/test_batch.py",
        "tests/e2e/test_changes.py",
        "tests/e2e/test_attachments.py",
    ],
}
# Container tests need an engine and minutes each; child-process tests: see the docstring.
DESELECT = ["-m", "not container"]
# What mutmut copies into mutants/ itself, and what a test never reads.
OWN_COPIES = {"src", "tests", "pyproject.toml", ".git", ".venv", ".mutation", "mutants"}


def module_path(module: str) -> str:
    package = ROOT / PACKAGE / module
    return f"{PACKAGE}/{module}/*" if package.is_dir() else f"{PACKAGE}/{module}.py"


def prepare(module: str) -> Path:
    """`.mutation/<module>/` with src, tests and a pyproject.toml that mutates only `module`."""
    where = ROOT / ".mutation" / module
    where.mkdir(parents=True, exist_ok=True)
    for name in ("src", "tests"):
        link = where / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    tests = [t for t in TESTS[module] if (ROOT / t).exists()]
    settings = {
        "source_paths": ["src"],
        "only_mutate": [module_path(module)],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", *DESELECT],
        # gRPC (the Zeebe emulator) is not safe to fork once used: fork workers from a clean server.
        "process_isolation": "forkserver",
    }
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    tomllib.loads(pyproject)  # fail early on a broken file
    (where / "pyproject.toml").write_text(pyproject + "\n[tool.mutmut]\n" + _toml(settings))
    return where


def link_repository_files(mutants: Path) -> None:
    """Tests that read the repository's files (deploy/, docs/, the Dockerfile, node_modules) find
    them beside mutmut's copy of src/ and tests/: linked, not copied (node_modules is large).
    mutmut writes src/, tests/ and pyproject.toml itself, so those are never links."""
    mutants.mkdir(exist_ok=True)
    for entry in ROOT.iterdir():
        link = mutants / entry.name
        if entry.name in OWN_COPIES or link.exists() or link.is_symlink():
            continue
        link.symlink_to(entry)


def _toml(settings: dict[str, object]) -> str:
    lines = []
    for key, value in settings.items():
        text = (
            "[" + ", ".join(f'"{v}"' for v in value) + "]"
            if isinstance(value, list)
            else f'"{value}"'
        )
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=sorted(TESTS))
    parser.add_argument("mutants", nargs="*", help="only these (names as `--results` lists them)")
    parser.add_argument("--workers", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--results", action="store_true", help="only list surviving mutants")
    args = parser.parse_intermixed_args()
    where = prepare(args.module)
    if args.fresh:
        shutil.rmtree(where / "mutants", ignore_errors=True)
    link_repository_files(where / "mutants")
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    # Fewer Hypothesis examples: a surviving mutant runs every property test that calls it.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HYPOTHESIS_PROFILE": "mutation"}
    if not args.results:
        started = time.monotonic()
        # mutmut's progress line redraws itself; the summary below is what to read.
        code = subprocess.call(
            [mutmut, "run", "--max-children", str(args.workers), *args.mutants],
            cwd=where,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        if code != 0:
            return code
        print(f"{args.module}: {time.monotonic() - started:.0f} s with {args.workers} worker(s)")
    subprocess.check_call([mutmut, "export-cicd-stats"], cwd=where, stdout=subprocess.DEVNULL)
    stats = json.loads((where / "mutants" / "mutmut-cicd-stats.json").read_text())
    print(f"{args.module}: " + ", ".join(f"{k} {v}" for k, v in stats.items() if v))
    survivors = subprocess.run(
        [mutmut, "results"], cwd=where, env=env, capture_output=True, text=True, check=True
    ).stdout
    print(survivors, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
