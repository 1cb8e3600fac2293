"""The committed element template is what `python -m servicenow_worker.template` generates, and
the generator refuses a model and a presentation that do not fit together."""

from pathlib import Path
from typing import Any

import pytest

from servicenow_worker import template as generator
from servicenow_worker.inputs import Operation

from .conftest import TEMPLATE_FILE


def test_committed_template_is_generated() -> None:
    """element-templates/servicenow-connector.json equals the generator's output, byte for byte."""
    committed = TEMPLATE_FILE.read_text(encoding="utf-8")
    assert committed == generator.render(), (
        "the committed template is stale: run `.venv/bin/python -m servicenow_worker.template`"
    )


def test_check_command_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check exits 1 with a diff when the file differs, 0 once the command wrote it."""
    path = tmp_path / "servicenow-connector.json"
    path.write_text(TEMPLATE_FILE.read_text(encoding="utf-8").replace("Sys ID", "Sys Id"))
    assert generator.main(["--check", "--output", str(path)]) == 1
    assert "is stale" in capsys.readouterr().err
    assert generator.main(["--output", str(path)]) == 0
    assert generator.main(["--check", "--output", str(path)]) == 0


def test_version_and_id_are_stable() -> None:
    """The id is the template's identity in BPMN files; the version is an integer."""
    built = generator.build_template()
    assert built["id"] == "servicenow-worker.ServiceNow.v1"
    assert isinstance(built["version"], int)


def test_refuses_a_model_input_without_a_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new input in the model stops the generator until the template shows it."""
    monkeypatch.setattr(generator, "INPUT_NAMES", (*generator.INPUT_NAMES, "assignmentGroup"))
    monkeypatch.setattr(
        generator, "USED_BY", {**generator.USED_BY, "assignmentGroup": frozenset(Operation)}
    )
    with pytest.raises(generator.TemplateError, match="input 'assignmentGroup' of the model"):
        generator.build_template()


def test_refuses_a_look_for_an_input_the_worker_does_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A field in the template that the worker would ignore stops the generator."""
    look = generator.INPUT_LOOKS["query"]
    monkeypatch.setattr(generator, "INPUT_LOOKS", {**generator.INPUT_LOOKS, "priority": look})
    with pytest.raises(generator.TemplateError, match="'priority', which the worker does not read"):
        generator.build_template()


def test_refuses_a_header_without_a_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new header of the model (such as jobTimeout) needs its entry in HEADER_LOOKS."""
    monkeypatch.setattr(
        generator, "HEADER_ONLY_NAMES", (*generator.HEADER_ONLY_NAMES, "jobTimeout")
    )
    with pytest.raises(generator.TemplateError, match="header 'jobTimeout' of the model"):
        generator.build_template()


def test_refuses_an_authentication_type_without_a_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new authentication type of the model needs its dropdown label and field looks."""
    types = generator.authentication_types()

    def with_mtls() -> dict[str, Any]:
        return {**types, "mtls": types["basic"]}

    monkeypatch.setattr(generator, "authentication_types", with_mtls)
    with pytest.raises(generator.TemplateError, match="authentication type 'mtls' has no look"):
        generator.build_template()


def test_one_entry_adds_an_authentication_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the model's new type and one AUTHENTICATION_LOOKS entry, the dropdown and fields appear."""
    types = generator.authentication_types()
    monkeypatch.setattr(
        generator, "authentication_types", lambda: {**types, "mtls": types["basic"]}
    )
    monkeypatch.setattr(
        generator,
        "AUTHENTICATION_LOOKS",
        {
            **generator.AUTHENTICATION_LOOKS,
            "mtls": generator.AuthenticationLook(
                label="Mutual TLS", fields=generator.AUTHENTICATION_LOOKS["basic"].fields
            ),
        },
    )
    built = generator.build_template()
    dropdown = next(p for p in built["properties"] if p.get("id") == "authenticationType")
    assert {"name": "Mutual TLS", "value": "mtls"} in dropdown["choices"]
    shown = [
        p["binding"]["name"]
        for p in built["properties"]
        if p.get("condition") == {"property": "authenticationType", "equals": "mtls"}
    ]
    assert shown == ["authentication.username", "authentication.password"]


def test_limit_pattern_covers_one_to_the_ceiling() -> None:
    """The page-size pattern accepts exactly 1 to the largest SERVICENOW_MAX_LIMIT (10000)."""
    import re

    pattern = re.compile(generator.limit_pattern(10_000))
    accepted = [n for n in range(0, 10_002) if pattern.search(str(n))]
    assert accepted == list(range(1, 10_001))
    assert generator.limit_ceiling() == 10_000
    with pytest.raises(generator.TemplateError):
        generator.limit_pattern(5_000)


def test_command_names_the_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When model and presentation do not fit, the command says why and exits 2."""
    monkeypatch.setattr(
        generator, "HEADER_ONLY_NAMES", (*generator.HEADER_ONLY_NAMES, "jobTimeout")
    )
    assert generator.main(["--check", "--output", str(tmp_path / "t.json")]) == 2
    assert "header 'jobTimeout' of the model has no look" in capsys.readouterr().err
