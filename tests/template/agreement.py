"""Does an element template fit the worker? Read from the template JSON and the input model only.

Nothing here imports `servicenow_worker.template`: the checks look at the committed file the way
the Modeler does (conditions, bindings, constraints) and compare it with what the worker reads
and requires (`servicenow_worker.inputs`). `disagreements(template, model)` lists every mismatch;
the tests feed it the real pair, and pairs with one side changed, to show that it catches drift.
"""

import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from servicenow_worker import inputs
from servicenow_worker.settings import Settings

# The Modeler asks for more than the model here, on purpose (each with its reason).
MODELER_REQUIRES_MORE: Mapping[str, str] = {
    "instance": "the default SERVICENOW_URL_TEMPLATE needs it; the model allows it to be absent "
    "because an operator's URL template may not",
}
# zeebe:property bindings are not passed to the job; the template may use them for Modeler state.
MODELER_ONLY_PROPERTIES: frozenset[str] = frozenset({"tableChoice"})
# Prefixes a template pattern may put before the model's: "may be empty" and "may be FEEL".
PATTERN_PREFIXES = ("", "^$|", "^=|", "^$|^=|")


@dataclass(frozen=True)
class WorkerModel:
    """What the worker reads and requires, as plain data."""

    operations: tuple[str, ...]
    used_by: Mapping[str, frozenset[str]]
    required_for: Mapping[str, frozenset[str]]
    model_required: frozenset[str]
    header_names: frozenset[str]
    # Authentication type -> {field -> required}
    authentication: Mapping[str, Mapping[str, bool]]
    patterns: Mapping[str, str] = field(default_factory=dict)
    job_type: str = ""

    @classmethod
    def from_worker(cls) -> "WorkerModel":
        operations = tuple(inputs.OPERATION_NAMES.values())
        fields = {
            info.alias or name: info for name, info in inputs.RecordRequest.model_fields.items()
        }
        return cls(
            operations=operations,
            used_by={
                n: frozenset(inputs.OPERATION_NAMES[op] for op in ops)
                for n, ops in inputs.USED_BY.items()
            },
            required_for={
                n: frozenset(inputs.OPERATION_NAMES[op] for op in ops)
                for n, ops in inputs.REQUIRED_FOR.items()
            },
            model_required=frozenset(
                name for name in inputs.INPUT_NAMES if name in fields and fields[name].is_required()
            ),
            header_names=frozenset(inputs.HEADER_ONLY_NAMES),
            authentication=authentication_fields(),
            patterns={
                "table": inputs.TABLE_PATTERN,
                "sysId": inputs.SYS_ID_PATTERN,
                "fields": inputs.FIELDS_PATTERN,
                "resultVariable": f"^{inputs.VARIABLE_NAME.pattern}$",
            },
            job_type=Settings.model_fields["worker_job_type"].default,
        )

    def with_input(self, name: str, used_by: frozenset[str], *, required: bool) -> "WorkerModel":
        """The model with one more input (the drift tests)."""
        return replace(
            self,
            used_by={**self.used_by, name: used_by},
            required_for={**self.required_for, name: used_by} if required else self.required_for,
        )


def authentication_fields() -> dict[str, dict[str, bool]]:
    """The model's authentication types and their fields (by alias), with whether each is required."""
    annotation: Any = inputs.Authentication
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    union = get_origin(annotation) in (Union, types.UnionType)
    models: tuple[type[BaseModel], ...] = get_args(annotation) if union else (annotation,)
    found: dict[str, dict[str, bool]] = {}
    for model in models:
        (kind,) = get_args(model.model_fields["type"].annotation)
        found[kind] = {
            info.alias or name: info.is_required()
            for name, info in model.model_fields.items()
            if name != "type"
        }
    return found


# --- the template as the Modeler sees it -------------------------------------------------------


def properties(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(template["properties"])


def binding_of(prop: Mapping[str, Any]) -> tuple[str, str]:
    """(binding type, name or key or property) of a template property."""
    binding = prop["binding"]
    kind = binding["type"]
    return kind, binding.get("name") or binding.get("key") or binding.get("property") or ""


def dropdown_for(template: Mapping[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    for prop in properties(template):
        if prop.get("type") == "Dropdown" and binding_of(prop) == (kind, name):
            return prop
    return None


def condition_holds(condition: Mapping[str, Any] | None, state: Mapping[str, Any]) -> bool:
    """The Modeler's condition semantics: equals, oneOf, allMatch (isActive is not used here)."""
    if condition is None:
        return True
    if "allMatch" in condition:
        return all(condition_holds(c, state) for c in condition["allMatch"])
    value = state.get(condition["property"])
    if "equals" in condition:
        return bool(value == condition["equals"])
    if "oneOf" in condition:
        return value in condition["oneOf"]
    raise AssertionError(f"condition the tests do not understand: {condition}")


def active_properties(
    template: Mapping[str, Any], state: Mapping[str, Any]
) -> list[dict[str, Any]]:
    return [p for p in properties(template) if condition_holds(p.get("condition"), state)]


def scenarios(template: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every combination of the template's dropdown values: what a modeler can pick."""
    dropdowns = [p for p in properties(template) if p.get("type") == "Dropdown" and "id" in p]
    choices = [[c["value"] for c in p["choices"]] for p in dropdowns]
    for values in product(*choices):
        yield {p["id"]: v for p, v in zip(dropdowns, values, strict=True)}


def guarantees_value(prop: Mapping[str, Any]) -> bool:
    """Can the modeler leave this property empty? False when the Modeler insists on a value."""
    if prop.get("type") in ("Hidden", "Dropdown", "Boolean"):
        return prop.get("value") not in (None, "")
    return bool(prop.get("constraints", {}).get("notEmpty"))


def pattern_of(prop: Mapping[str, Any]) -> str | None:
    pattern = prop.get("constraints", {}).get("pattern")
    if pattern is None:
        return None
    return str(pattern if isinstance(pattern, str) else pattern["value"])


# --- the checks --------------------------------------------------------------------------------


def disagreements(template: Mapping[str, Any], model: WorkerModel) -> list[str]:
    """Every way in which the template and the worker's model do not fit; empty when they do."""
    problems: list[str] = []
    problems += _unknown_bindings(template, model)
    problems += _missing_properties(template, model)
    problems += _visibility_and_requirement(template, model)
    problems += _patterns(template, model)
    problems += _allowed_values(template, model)
    return list(dict.fromkeys(problems))  # each problem once, though many scenarios show it


def _auth_targets(model: WorkerModel) -> set[str]:
    names = {f"authentication.{f}" for fields in model.authentication.values() for f in fields}
    return names | {"authentication.type"}


def _unknown_bindings(template: Mapping[str, Any], model: WorkerModel) -> Iterator[str]:
    inputs_read = set(model.used_by) - {"authentication"}
    for prop in properties(template):
        kind, name = binding_of(prop)
        where = f"property {prop.get('id', name)!r}"
        if kind == "zeebe:input" and name not in inputs_read | _auth_targets(model):
            yield f"{where} writes input {name!r}, which the worker does not read"
        elif kind == "zeebe:taskHeader" and name not in model.header_names:
            yield f"{where} writes header {name!r}, which the worker does not read"
        elif kind == "zeebe:property" and name not in MODELER_ONLY_PROPERTIES:
            yield f"{where} writes zeebe:property {name!r}, which nobody reads"
        elif kind == "zeebe:taskDefinition" and name == "type":
            if prop.get("type") != "Hidden" or prop.get("value") != model.job_type:
                yield f"{where}: the job type must be hidden and {model.job_type!r}"
        elif kind not in (
            "zeebe:input",
            "zeebe:taskHeader",
            "zeebe:property",
            "zeebe:taskDefinition",
        ):
            yield f"{where} has binding type {kind!r}, which the worker does not know"


def _missing_properties(template: Mapping[str, Any], model: WorkerModel) -> Iterator[str]:
    bound = {binding_of(p) for p in properties(template)}
    for name in model.used_by:
        if name != "authentication" and ("zeebe:input", name) not in bound:
            yield f"input {name!r}, read by the worker, has no property in the template"
    for name in sorted(model.header_names):
        if ("zeebe:taskHeader", name) not in bound:
            yield f"header {name!r}, read by the worker, has no property in the template"
    if ("zeebe:taskDefinition", "type") not in bound:
        yield "the template does not set the job type"
    auth = dropdown_for(template, "zeebe:input", "authentication.type")
    if auth is None:
        yield "the template has no dropdown for authentication.type"


def _visibility_and_requirement(template: Mapping[str, Any], model: WorkerModel) -> Iterator[str]:
    operation = dropdown_for(template, "zeebe:input", "operation")
    auth = dropdown_for(template, "zeebe:input", "authentication.type")
    if operation is None or auth is None:
        return
    for state in scenarios(template):
        op, kind = state[operation["id"]], state[auth["id"]]
        if op not in model.operations or kind not in model.authentication:
            continue  # reported by _allowed_values
        active = active_properties(template, state)
        by_target: dict[str, list[dict[str, Any]]] = {}
        for prop in active:
            binding_kind, name = binding_of(prop)
            if binding_kind in ("zeebe:input", "zeebe:taskHeader"):
                by_target.setdefault(name, []).append(prop)
        for name, props in by_target.items():
            if len(props) > 1:
                ids = [p.get("id") for p in props]
                yield (f"{op}: properties {ids} all write {name!r} at once")
        for name, used_by in model.used_by.items():
            if name == "authentication":
                continue
            shown = name in by_target
            if shown != (op in used_by):
                verb = "shows" if shown else "hides"
                yield (
                    f"{op}: the template {verb} {name!r}, the worker uses it for {sorted(used_by)}"
                )
            if not shown:
                continue
            required = op in model.required_for.get(name, ()) or name in model.model_required
            firm = guarantees_value(by_target[name][0])
            if required and not firm:
                yield (f"{op}: {name!r} is required by the worker but may be left empty")
            if firm and not required and name not in MODELER_REQUIRES_MORE:
                kind_ = by_target[name][0].get("type")
                if kind_ in ("String", "Text"):
                    yield (
                        f"{op}: {name!r} is optional for the worker but the template requires it"
                    )
        expected_auth = {f"authentication.{f}" for f in model.authentication[kind]}
        shown_auth = {n for n in by_target if n.startswith("authentication.")} - {
            "authentication.type"
        }
        if shown_auth != expected_auth:
            yield (
                f"authentication {kind}: the template shows {sorted(shown_auth)}, the worker reads {sorted(expected_auth)}"
            )
        for field_name, required in model.authentication[kind].items():
            props = by_target.get(f"authentication.{field_name}")
            if props and guarantees_value(props[0]) != required:
                yield (f"authentication {kind}.{field_name}: required is {required} for the worker")
        for name in model.header_names:
            for prop in by_target.get(name, []):
                if prop.get("constraints", {}).get("notEmpty"):
                    yield (f"header {name!r} is optional for the worker but required here")


def _patterns(template: Mapping[str, Any], model: WorkerModel) -> Iterator[str]:
    for prop in properties(template):
        _, name = binding_of(prop)
        expected = model.patterns.get(name)
        actual = pattern_of(prop)
        if expected is None:
            continue
        if prop.get("type") in ("Hidden", "Dropdown"):
            fixed = [prop.get("value")] + [c["value"] for c in prop.get("choices", [])]
            for value in fixed:
                if value is not None and not re.search(expected, str(value)):
                    yield f"property {prop.get('id')!r} sets {name} to {value!r}, not {expected}"
            continue
        if actual is None:
            yield f"property {prop.get('id')!r} ({name}) has no pattern; the worker checks {expected}"
            continue
        prefix = actual.removesuffix(expected)
        if prefix == actual or prefix not in PATTERN_PREFIXES:
            yield f"property {prop.get('id')!r} ({name}) checks {actual}, the worker {expected}"
    for prop in properties(template):
        pattern = pattern_of(prop)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                yield f"property {prop.get('id')!r}: pattern does not compile: {error}"


def _allowed_values(template: Mapping[str, Any], model: WorkerModel) -> Iterator[str]:
    operation = dropdown_for(template, "zeebe:input", "operation")
    if operation is None:
        yield "the template has no dropdown for operation"
    elif [c["value"] for c in operation["choices"]] != list(model.operations):
        yield f"operation choices {[c['value'] for c in operation['choices']]} != {list(model.operations)}"
    display = dropdown_for(template, "zeebe:input", "displayValue")
    if display is not None and {c["value"] for c in display["choices"]} != set(
        inputs.DISPLAY_VALUES
    ):
        yield f"displayValue choices differ from the worker's {inputs.DISPLAY_VALUES}"
    auth = dropdown_for(template, "zeebe:input", "authentication.type")
    if auth is not None and {c["value"] for c in auth["choices"]} != set(model.authentication):
        yield (
            f"authentication.type choices {sorted(c['value'] for c in auth['choices'])} "
            f"!= the worker's {sorted(model.authentication)}"
        )
