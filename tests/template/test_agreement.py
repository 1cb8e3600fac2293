"""The committed template and the worker agree, field by field: every input and header the
template writes is one the worker reads, every input the worker needs has a property, shown for
the operations that use it and required where the worker requires it, with the worker's patterns
and allowed values. The checks read the JSON file, not the generator, so they catch drift however
it comes; the drift tests below change one side and show the checks notice."""

import copy
import json
from typing import Any

import pytest

from servicenow_worker.errors import InputError
from servicenow_worker.inputs import (
    HEADER_ONLY_NAMES,
    USED_BY,
    InputRules,
    Operation,
    gather_inputs,
    parse_output_options,
)
from servicenow_worker.operations import parse_inputs
from servicenow_worker.secrets import ResolvedSecrets, SecretStore, resolve_placeholders

from .agreement import WorkerModel, binding_of, disagreements, pattern_of, properties
from .conftest import HERE, run_node_json


@pytest.fixture(name="model")
def _model() -> WorkerModel:
    return WorkerModel.from_worker()


def test_template_agrees_with_the_worker(template: dict[str, Any], model: WorkerModel) -> None:
    """No disagreement between element-templates/servicenow-connector.json and the input model."""
    assert disagreements(template, model) == []


# --- drift: one side changed, the check notices -------------------------------------------------


def test_drift_input_added_to_the_model_only(template: dict[str, Any], model: WorkerModel) -> None:
    """A new input of the worker without a property in the template is reported."""
    drifted = model.with_input("assignmentGroup", frozenset({"create", "update"}), required=False)
    assert (
        "input 'assignmentGroup', read by the worker, has no property in the template"
        in disagreements(template, drifted)
    )


def test_drift_input_added_to_the_template_only(
    template: dict[str, Any], model: WorkerModel
) -> None:
    """A property that writes an input the worker does not read is reported."""
    drifted = copy.deepcopy(template)
    drifted["properties"].append(
        {
            "id": "priority",
            "label": "Priority",
            "type": "String",
            "binding": {"type": "zeebe:input", "name": "priority"},
        }
    )
    assert (
        "property 'priority' writes input 'priority', which the worker does not read"
        in disagreements(drifted, model)
    )


def test_drift_header_on_one_side_only(template: dict[str, Any], model: WorkerModel) -> None:
    """A header on one side only is reported, either way."""
    with_header = copy.deepcopy(template)
    with_header["properties"].append(
        {
            "id": "jobTimeout",
            "type": "String",
            "binding": {"type": "zeebe:taskHeader", "key": "jobTimeout"},
        }
    )
    assert (
        "property 'jobTimeout' writes header 'jobTimeout', which the worker does not read"
        in disagreements(with_header, model)
    )
    without_header = copy.deepcopy(template)
    without_header["properties"] = [
        p for p in properties(template) if binding_of(p) != ("zeebe:taskHeader", "idempotencyField")
    ]
    assert (
        "header 'idempotencyField', read by the worker, has no property in the template"
        in disagreements(without_header, model)
    )


def test_drift_requirement(template: dict[str, Any], model: WorkerModel) -> None:
    """The worker starting to require an input (query for read) that the template leaves empty."""
    drifted = model.with_input("query", frozenset({"read"}), required=True)
    assert "read: 'query' is required by the worker but may be left empty" in disagreements(
        template, drifted
    )


def test_drift_visibility(template: dict[str, Any], model: WorkerModel) -> None:
    """The worker using fields for delete too, while the template hides it there."""
    drifted = model.with_input("fields", frozenset(model.operations), required=False)
    assert any(
        p.startswith("delete: the template hides 'fields'")
        for p in disagreements(template, drifted)
    )


def test_drift_pattern(template: dict[str, Any], model: WorkerModel) -> None:
    """A changed pattern of the model is reported."""
    drifted = WorkerModel(
        **{**model.__dict__, "patterns": {**model.patterns, "sysId": "^[0-9a-f]{32}$"}}
    )
    problems = disagreements(template, drifted)
    assert any("(sysId) checks" in p for p in problems), problems


def test_drift_authentication_type(template: dict[str, Any], model: WorkerModel) -> None:
    """An authentication type of the worker missing from the dropdown is reported."""
    drifted = WorkerModel(
        **{
            **model.__dict__,
            "authentication": {**model.authentication, "mtls": {"certificate": True}},
        }
    )
    assert any("authentication.type choices" in p for p in disagreements(template, drifted))


def test_drift_operation(template: dict[str, Any], model: WorkerModel) -> None:
    """An operation of the worker missing from the dropdown is reported."""
    drifted = WorkerModel(**{**model.__dict__, "operations": (*model.operations, "upsert")})
    assert any(p.startswith("operation choices") for p in disagreements(template, drifted))


# --- the patterns accept what the worker accepts ------------------------------------------------

# (input or header, value, the worker accepts it). Each value is checked by the template's pattern
# (with JavaScript's RegExp, as the Modeler does) and by the worker's validation.
SAMPLES: list[tuple[str, str, bool]] = [
    ("instance", "dev12345", True),
    ("instance", "acme-prod", True),
    ("instance", "https://acme.service-now.com", True),
    ("instance", "https://acme.service-now.com/", True),
    ("instance", "https://acme.service-now.com:8443", True),
    ("instance", "{{secrets.snInstance}}", True),
    ("instance", "acme.service-now.com", False),
    ("instance", "http://acme.service-now.com", False),
    ("instance", "https://acme.service-now.com/api/now", False),
    ("instance", "https://user@acme.service-now.com", False),
    ("instance", "dev_123", False),
    ("table", "incident", True),
    ("table", "x_acme_app_thing", True),
    ("table", "Requested Item [sc_req_item]", True),
    ("table", "inc ident", False),
    ("table", "../sys_user", False),
    ("table", "a" * 81, False),
    ("sysId", "46d44a5e2f0b1010a3f1a2b2c3d4e5f6", True),
    ("sysId", "global", True),
    ("sysId", "a.b-c_d", True),
    ("sysId", "...", True),
    ("sysId", ".", False),
    ("sysId", "..", False),
    ("sysId", "a/b", False),
    ("sysId", "a b", False),
    ("sysId", "a" * 256, False),
    ("fields", "number", True),
    ("fields", "number,state", True),
    ("fields", " number , caller_id.name ", True),
    ("fields", "number;state", False),
    ("fields", "a b", False),
    ("fields", "number..state", False),
    ("fields", ".number", False),
    ("limit", "1", True),
    ("limit", "100", True),
    ("limit", "10000", True),
    ("limit", "0", False),
    ("limit", "-1", False),
    ("limit", "10001", False),
    ("limit", "1.5", False),
    ("offset", "0", True),
    ("offset", "250", True),
    ("offset", "-1", False),
    ("offset", "ten", False),
    ("resultVariable", "ritm", True),
    ("resultVariable", "_x1", True),
    ("resultVariable", "1x", False),
    ("resultVariable", "a.b", False),
    ("retryBackoff", "PT30S", True),
    ("retryBackoff", "PT5M", True),
    ("retryBackoff", "PT1H30M", True),
    ("retryBackoff", "P1D", True),
    ("retryBackoff", "PT0.5S", True),
    ("retryBackoff", "30S", False),
    ("retryBackoff", "PT", False),
    ("retryBackoff", "pt30s", False),
    ("retryBackoff", "-PT1S", False),
    ("idempotencyField", "correlation_id", True),
    ("idempotencyField", "u_key_1", True),
    ("idempotencyField", "a.b", False),
    ("idempotencyField", "a-b", False),
    ("maxRecords", "1", True),
    ("maxRecords", "1000000", True),
    ("maxRecords", "0", False),
    ("maxRecords", "1000001", False),
    ("groupBy", "assignment_group", True),
    ("groupBy", "priority,state", True),
    ("groupBy", "priority state", False),
    ("avgFields", "reassignment_count", True),
    ("avgFields", "a..b", False),
    ("sumFields", "reassignment_count,priority", True),
    ("sumFields", "x;y", False),
    ("minFields", "number", True),
    ("minFields", ",", False),
    ("maxFields", "sys_updated_on", True),
    ("maxFields", "a b", False),
    ("having", "count^priority^>^3", True),
    ("having", "COUNT^state^=^1,avg^reassignment_count^>=^1.5", True),
    ("having", "count^>^3", False),
    ("having", "count^priority^~^3", False),
    ("having", "count^priority^>^three", False),
    ("orderBy", "COUNT^DESC", True),
    ("orderBy", "priority", True),
    ("orderBy", "AVG^reassignment_count,priority^desc", True),
    ("orderBy", "priority desc", False),
    ("orderBy", "COUNT^^DESC", False),
]
# A request the worker accepts, for the operation under which each input is checked.
BASE: dict[str, Any] = {
    "instance": "dev12345",
    "authentication": {"type": "basic", "username": "u", "password": "p"},
    "table": "incident",
}
OPERATION_FOR = {
    "sysId": "update",
    **{name: "aggregate" for name, users in USED_BY.items() if users == {Operation.AGGREGATE}},
}
RULES = InputRules(
    url_template="https://{instance}.service-now.com",
    allowed_hosts=("*.service-now.com",),
    # the largest SERVICENOW_MAX_LIMIT and _MAX_RECORDS: the template leaves the operator's to
    # the worker
    max_limit=10_000,
    max_records=1_000_000,
)


def worker_accepts(name: str, value: str) -> bool:
    """Does the worker take this value for this input or header (in an otherwise valid job)?"""
    try:
        if name in HEADER_ONLY_NAMES:
            parse_output_options({name: value})
            return True
        operation = value if name == "operation" else OPERATION_FOR.get(name, "read")
        raw: dict[str, Any] = {**BASE, "operation": operation}
        if operation in ("create", "update"):
            raw["payload"] = {}
        if operation in ("update", "delete"):
            raw["sysId"] = "46d44a5e2f0b1010a3f1a2b2c3d4e5f6"
        if operation == "batch":
            raw["requests"] = [{"operation": "read", "table": "incident"}]
        raw[name] = value
        gathered = gather_inputs({}, raw)
        store = SecretStore(environment={"snInstance": "dev12345"})
        resolved = {
            n: resolve_placeholders(v, store, ResolvedSecrets(), n) for n, v in gathered.items()
        }
        parse_inputs(resolved, RULES)
    except InputError:
        return False
    return True


def template_patterns(template: dict[str, Any], name: str) -> list[str]:
    """The patterns of the template's typed-in properties for one input or header."""
    return [
        pattern
        for prop in properties(template)
        if binding_of(prop)[1] == name
        and prop["type"] in ("String", "Text")
        and (pattern := pattern_of(prop)) is not None
    ]


@pytest.fixture(name="modeler_matches", scope="module")
def _modeler_matches() -> dict[tuple[str, str], bool]:
    """Every sample against every pattern of its field, with JavaScript's RegExp."""
    template = json.loads(
        (HERE.parents[1] / "element-templates" / "servicenow-connector.json").read_text()
    )
    cases = [
        (name, value, pattern)
        for name, value, _ in SAMPLES
        for pattern in template_patterns(template, name)
    ]
    matches = run_node_json(
        HERE / "match_patterns.mjs",
        stdin=json.dumps([{"pattern": p, "value": v} for _, v, p in cases]),
    )
    result: dict[tuple[str, str], bool] = {}
    for (name, value, _), matched in zip(cases, matches, strict=True):
        # With two properties for one input (required, optional) both must agree.
        result[name, value] = result.get((name, value), True) and matched
    return result


def test_every_pattern_is_sampled(template: dict[str, Any]) -> None:
    """Each input and header with a pattern in the template has samples here."""
    sampled = {name for name, _, _ in SAMPLES}
    for prop in properties(template):
        kind, name = binding_of(prop)
        if kind in ("zeebe:input", "zeebe:taskHeader") and pattern_of(prop) is not None:
            assert name in sampled, f"add samples for {name}"


@pytest.mark.parametrize(("name", "value", "accepted"), SAMPLES)
def test_pattern_agrees_with_the_worker(
    name: str, value: str, accepted: bool, modeler_matches: dict[tuple[str, str], bool]
) -> None:
    """The Modeler accepts exactly the values the worker accepts."""
    assert worker_accepts(name, value) is accepted, "the sample is wrong about the worker"
    assert modeler_matches[name, value] is accepted


def test_dropdown_and_hidden_values_pass_the_worker(template: dict[str, Any]) -> None:
    """Each value a modeler can pick, and each hidden value, is one the worker accepts."""
    for prop in properties(template):
        kind, name = binding_of(prop)
        if kind != "zeebe:input" or name.startswith("authentication.") or "." in name:
            continue
        values = [c["value"] for c in prop.get("choices", [])]
        if prop["type"] == "Hidden":
            values.append(prop["value"])
        for value in values:
            assert worker_accepts(name, value), f"{prop.get('id')}: {value!r}"


def test_defaults_pass_the_worker(template: dict[str, Any]) -> None:
    """The template's default values (retryBackoff PT30S, the first dropdown entries) are valid."""
    for prop in properties(template):
        kind, name = binding_of(prop)
        value = prop.get("value")
        if (
            kind in ("zeebe:input", "zeebe:taskHeader")
            and isinstance(value, str)
            and "." not in name
        ):
            assert worker_accepts(name, value), f"{prop.get('id')}: default {value!r}"
