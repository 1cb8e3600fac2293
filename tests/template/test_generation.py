"""The committed element template is what `python -m servicenow_worker.template` generates, and
the generator refuses a model and a presentation that do not fit together."""

import dataclasses
import re
import runpy
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from servicenow_worker import template as generator
from servicenow_worker.inputs import Operation, parse_output_options

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


def test_refuses_authentication_types_without_a_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """New authentication types of the model need their dropdown label and field looks: the
    message names every one of them."""
    types = generator.authentication_types()

    def with_more() -> dict[str, Any]:
        return {"mtls": types["basic"], **types, "kerberos": types["basic"]}

    monkeypatch.setattr(generator, "authentication_types", with_more)
    with pytest.raises(
        generator.TemplateError,
        match=r"^authentication type 'mtls' has no look in AUTHENTICATION_LOOKS; "
        r"authentication type 'kerberos' has no look in AUTHENTICATION_LOOKS$",
    ):
        generator.build_template()


def test_refuses_a_pattern_without_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Modeler shows the pattern's message when a value does not match: none, no template."""
    looks = {**generator.INPUT_LOOKS}
    looks["sysId"] = dataclasses.replace(looks["sysId"], pattern_message=None)
    monkeypatch.setattr(generator, "INPUT_LOOKS", looks)
    with pytest.raises(
        generator.TemplateError,
        match=r"^sysId: a pattern needs a pattern_message and the other way round$",
    ):
        generator.build_template()


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        # A value the worker accepts but the dropdown does not offer.
        ("displayValue", {"false": "Stored values", "true": "Display values"}),
        # A dropdown for an input whose values the model does not list.
        ("query", {"active=true": "Active records"}),
    ],
)
def test_refuses_a_dropdown_that_differs_from_the_model(
    monkeypatch: pytest.MonkeyPatch, name: str, labels: dict[str, str]
) -> None:
    looks = {**generator.INPUT_LOOKS}
    looks[name] = dataclasses.replace(looks[name], kind="Dropdown", choice_labels=labels)
    monkeypatch.setattr(generator, "INPUT_LOOKS", looks)
    with pytest.raises(
        generator.TemplateError, match=f"^{name}: the dropdown's choices must be the model's"
    ):
        generator.build_template()


def test_a_single_authentication_type_is_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model with one authentication type (no union) still gives its type and fields."""
    basic = generator.authentication_types()["basic"]
    monkeypatch.setattr(generator, "Authentication", basic)
    assert generator.authentication_types() == {"basic": basic}


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


@pytest.mark.parametrize("ceiling", [10, 10_000])
def test_limit_pattern_covers_one_to_the_ceiling(ceiling: int) -> None:
    """The page-size pattern accepts exactly 1 to the ceiling (10000: SERVICENOW_MAX_LIMIT's)."""
    pattern = re.compile(generator.limit_pattern(ceiling))
    accepted = [n for n in range(0, ceiling + 2) if pattern.search(str(n))]
    assert accepted == list(range(1, ceiling + 1))
    assert generator.limit_ceiling() == 10_000


@pytest.mark.parametrize("ceiling", [1, 5_000])
def test_limit_pattern_refuses_a_ceiling_it_cannot_write(ceiling: int) -> None:
    with pytest.raises(
        generator.TemplateError, match=f"the limit ceiling {ceiling} is not a power"
    ):
        generator.limit_pattern(ceiling)


def test_limit_ceiling_needs_the_settings_upper_bound() -> None:
    """A setting without `le=` gives the Modeler no ceiling: the generator names the setting."""
    with pytest.raises(
        generator.TemplateError, match="worker_job_timeout needs one integer upper bound"
    ):
        generator.limit_ceiling("worker_job_timeout")


def test_command_names_the_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When model and presentation do not fit, the command says why and exits 2."""
    monkeypatch.setattr(
        generator, "HEADER_ONLY_NAMES", (*generator.HEADER_ONLY_NAMES, "jobTimeout")
    )
    assert generator.main(["--check", "--output", str(tmp_path / "t.json")]) == 2
    assert "header 'jobTimeout' of the model has no look" in capsys.readouterr().err


def run_as_command(*args: str) -> int:
    """`python -m servicenow_worker.template ARGS`, in this process: the module runs afresh, as in
    a new interpreter, so the looks it builds at import come from the code under test too."""
    with warnings.catch_warnings():
        # runpy notes that the package already imported the module: harmless here.
        warnings.simplefilter("ignore", RuntimeWarning)
        fresh = runpy.run_module(
            "servicenow_worker.template", run_name="servicenow_worker.template"
        )
    try:
        code = fresh["main"](list(args))
    except SystemExit as exited:  # --help
        code = exited.code
    assert isinstance(code, int)
    return code


def test_check_command_passes_on_the_committed_template(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` in the repository (the default file) exits 0 and says nothing."""
    monkeypatch.chdir(TEMPLATE_FILE.parents[1])
    assert run_as_command("--check") == 0
    assert capsys.readouterr().err == ""


def test_help_describes_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--help` names the command, what it does, what --check does and the default file."""
    monkeypatch.setenv("COLUMNS", "300")  # no wrapping: whole sentences to compare
    assert run_as_command("--help") == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: python -m servicenow_worker.template [-h] [--check]")
    assert "\nWrite the Camunda Modeler element template generated from the input model.\n" in shown
    assert re.search(
        r"\n  --check +do not write; exit 1 when the file differs from what would be generated\n",
        shown,
    )
    assert re.search(r"\n  --output OUTPUT +element-templates/servicenow-connector.json\n", shown)


def test_check_command_shows_what_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The diff names both sides and shows the changed lines whole: committed, then generated."""
    path = tmp_path / "servicenow-connector.json"
    path.write_text(TEMPLATE_FILE.read_text(encoding="utf-8").replace('"Sys ID"', '"Sys Id"'))
    assert generator.main(["--check", "--output", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == [f"--- {path} (committed)", f"+++ {path} (generated)"]
    removed = [line for line in lines[2:] if line.startswith("-")]
    added = [line for line in lines[2:] if line.startswith("+")]
    assert removed and all(line.endswith('"label": "Sys Id",') for line in removed)
    assert added == [line.replace("Sys Id", "Sys ID").replace("-", "+", 1) for line in removed]
    assert lines[-1] == f"{path} is stale: run python -m servicenow_worker.template"


def test_check_command_fails_when_the_file_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file is stale too: the whole template is shown as to be added."""
    path = tmp_path / "servicenow-connector.json"
    assert generator.main(["--check", "--output", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines[2:] if line.startswith("-")] == []
    assert lines[-1] == f"{path} is stale: run python -m servicenow_worker.template"
    assert not path.exists()


def test_command_writes_into_a_new_directory(tmp_path: Path) -> None:
    """In a checkout without the directory, the command creates it and writes the template."""
    path = tmp_path / "new" / "element-templates" / "servicenow-connector.json"
    assert generator.main(["--output", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == TEMPLATE_FILE.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("backoff", "shown"),
    [
        (timedelta(seconds=30), "PT30S"),
        (timedelta(seconds=1), "PT1S"),
        (timedelta(minutes=5), "PT5M"),
        (timedelta(hours=2), "PT2H"),
        (timedelta(hours=1, minutes=1, seconds=1), "PT1H1M1S"),
        (timedelta(minutes=59, seconds=59), "PT59M59S"),
    ],
)
def test_retry_backoff_default_is_the_workers(
    monkeypatch: pytest.MonkeyPatch, backoff: timedelta, shown: str
) -> None:
    """The Modeler's default Retry backoff is the worker's default, as the worker reads it."""
    monkeypatch.setattr(generator, "DEFAULT_RETRY_BACKOFF", backoff)
    built = generator.build_template()
    (prop,) = [p for p in built["properties"] if p.get("id") == "retryBackoff"]
    assert prop["value"] == shown
    assert parse_output_options({"retryBackoff": shown}).retry_backoff == backoff


@pytest.mark.parametrize("backoff", [timedelta(0), timedelta(seconds=1.5)])
def test_retry_backoff_default_must_be_whole_seconds(
    monkeypatch: pytest.MonkeyPatch, backoff: timedelta
) -> None:
    monkeypatch.setattr(generator, "DEFAULT_RETRY_BACKOFF", backoff)
    with pytest.raises(
        generator.TemplateError,
        match=f"^cannot write {backoff} as a whole-second ISO-8601 duration$",
    ):
        generator.build_template()


def test_table_shows_for_every_task_when_every_operation_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The table's fields then depend only on the table chosen, not on the operation."""
    monkeypatch.setattr(generator, "USED_BY", {**generator.USED_BY, "table": frozenset(Operation)})
    built = generator.build_template()
    table = {
        p["id"]: p
        for p in built["properties"]
        if p["binding"].get("name") in ("table", generator.TABLE_CHOICE_ID)
    }
    assert "condition" not in table[generator.TABLE_CHOICE_ID]
    assert table["table.incident"]["condition"] == {
        "property": generator.TABLE_CHOICE_ID,
        "equals": "incident",
    }
    assert table["table"]["condition"] == {
        "property": generator.TABLE_CHOICE_ID,
        "equals": generator.OTHER_TABLE,
    }
