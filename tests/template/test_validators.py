"""Camunda's own validators: validateZeebe on every template, bpmnlint (Camunda 8.8 rules) on every
example. Errors and warnings both fail; the negative cases show the tools really look."""

import json
from pathlib import Path

import pytest

from .conftest import EXAMPLES, HERE, ROOT, TEMPLATE_FILE, TEMPLATES, run_node, run_node_json

VALIDATE = HERE / "validate_templates.mjs"
BPMNLINT = ROOT / "node_modules" / "bpmnlint" / "bin" / "bpmnlint.js"


def template_files() -> list[Path]:
    return sorted(TEMPLATES.glob("*.json"))


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.bpmn"))


def test_there_is_something_to_check() -> None:
    """The template and at least one example exist (an empty glob would pass vacuously)."""
    assert TEMPLATE_FILE in template_files()
    assert example_files()


@pytest.mark.parametrize("path", template_files(), ids=lambda p: p.name)
def test_validate_zeebe_reports_no_error_and_no_warning(path: Path) -> None:
    """@bpmn-io/element-templates-validator's validateZeebe accepts the template without a word."""
    report = run_node_json(VALIDATE, path)
    results = report["files"][str(path)]
    for result in results:
        assert result["errors"] == [], json.dumps(result["errors"], indent=2)
        assert result["warnings"] == [], json.dumps(result["warnings"], indent=2)
        assert result["valid"] is True


def test_validate_zeebe_reports_errors_and_deprecations(tmp_path: Path) -> None:
    """The runner passes on what the validator finds: an error, and a deprecation warning."""
    template = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**template, "version": "one"}))
    deprecated = tmp_path / "deprecated.json"
    query = next(p for p in template["properties"] if p.get("id") == "query")
    query["optional"] = True  # optional zeebe:input is deprecated for Camunda 8.8+
    deprecated.write_text(json.dumps(template))
    report = run_node_json(VALIDATE, broken, deprecated)["files"]
    assert report[str(broken)][0]["valid"] is False
    assert report[str(broken)][0]["errors"]
    assert report[str(deprecated)][0]["errors"] == []
    assert "deprecated" in json.dumps(report[str(deprecated)][0]["warnings"])


def lint(*paths: Path) -> tuple[int, str]:
    done = run_node(BPMNLINT, "--max-warnings", "0", *paths)
    return done.returncode, done.stdout + done.stderr


def test_bpmnlint_config_is_camunda_8_8() -> None:
    """.bpmnlintrc extends the plugin's camunda-cloud-8-8 rules, which this plugin version has."""
    config = json.loads((ROOT / ".bpmnlintrc").read_text(encoding="utf-8"))
    assert "plugin:camunda-compat/camunda-cloud-8-8" in config["extends"]
    assert config["moddleExtensions"] == {"zeebe": "zeebe-bpmn-moddle/resources/zeebe.json"}
    plugin = run_node(
        "-e",
        "const p = require('bpmnlint-plugin-camunda-compat');"
        "console.log(JSON.stringify(Object.keys(p.configs['camunda-cloud-8-8'].rules)))",
    )
    assert plugin.returncode == 0, plugin.stderr
    assert {"implementation", "io-mapping", "feel", "secrets"} <= set(json.loads(plugin.stdout))


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_bpmnlint_reports_nothing(path: Path) -> None:
    """bpmnlint with the Camunda 8.8 rules finds no error and no warning in the example."""
    code, output = lint(path)
    assert code == 0, output
    assert "problem" not in output, output


def test_bpmnlint_finds_a_broken_task(tmp_path: Path) -> None:
    """The lint really runs the Camunda rules: a service task without a job type is an error."""
    example = example_files()[0]
    broken = tmp_path / "broken.bpmn"
    broken.write_text(example.read_text(encoding="utf-8").replace('type="servicenow:1"', 'type=""'))
    code, output = lint(broken)
    assert code == 1
    assert "must have property <type>" in output
