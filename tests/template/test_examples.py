"""The example processes: each service task is the committed template applied as the Modeler does
it, and what it carries passes the worker's own input validation.

The dry run walks each process along its sequence flows. A task's input mappings are evaluated as
Zeebe would: a static source is a string, an `=` source is FEEL, evaluated with the worker's own
FEEL evaluator against the process variables so far (the documented start variables, then what the
tasks before it produced with a representative ServiceNow answer). Secrets resolve from dummy
values. The inputs then go through `gather_inputs`, the operation's own model (the registry's
`parse_inputs`) and `parse_output_options`; the answer through `outcome.for_response`, as in the
worker.
"""

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from servicenow_worker import change_cursor, feel, outcome
from servicenow_worker.errors import ServiceNowRejected, TooManyRecords
from servicenow_worker.inputs import (
    InputRules,
    Operation,
    gather_inputs,
    parse_output_options,
)
from servicenow_worker.operations import Answer, parse_inputs
from servicenow_worker.operations.aggregate import AggregateRequest, AggregateResponse
from servicenow_worker.operations.batch import BatchRequest, BatchResponse
from servicenow_worker.operations.changes import ChangesResponse
from servicenow_worker.secrets import (
    PLACEHOLDER,
    ResolvedSecrets,
    SecretStore,
    resolve_placeholders,
)
from servicenow_worker.servicenow import TableResponse

from .agreement import active_properties, binding_of, pattern_of, properties
from .conftest import EXAMPLES

NS = {
    "bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL",
    "zeebe": "http://camunda.org/schema/zeebe/1.0",
}
ZEEBE = "{http://camunda.org/schema/zeebe/1.0}"
# What each example is started with (its documentation says so too).
START_VARIABLES: dict[str, dict[str, Any]] = {
    "servicenow-round-trip": {"employeeName": "Abel Tuter"},
    "servicenow-open-incidents": {},
    "servicenow-p1-by-group": {},
    "servicenow-p1-incident-feed": {},
    "servicenow-p1-incident-handler": {
        "incident": {"sys_id": "0123456789abcdef0123456789abcdef", "number": "INC0010001"}
    },
}
# Inputs whose FEEL is null on a first run, by design: the feed's first call has no cursor yet
# (it then starts from now). Any other null is a mistake in the example.
NULL_ON_FIRST_RUN: dict[str, set[str]] = {"servicenow-p1-incident-feed": {"cursor"}}
RULES = InputRules(
    url_template="https://{instance}.service-now.com",
    allowed_hosts=("*.service-now.com",),
    max_limit=1000,
)
SYS_ID = "0123456789abcdef0123456789abcdef"


@dataclass
class Task:
    process: str
    id: str
    name: str
    attributes: dict[str, str]
    task_definition: dict[str, str]
    inputs: list[tuple[str, str | None]]
    headers: dict[str, str]
    zeebe_properties: dict[str, str]
    error_codes: list[str] = field(default_factory=list)  # of the error boundary events


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.bpmn"))


def read_process(path: Path) -> tuple[str, list[Task]]:
    """The process id and its service tasks in the order of the sequence flows."""
    root = ET.parse(path).getroot()
    process = root.find("bpmn:process", NS)
    assert process is not None, f"{path.name} has no process"
    errors = {e.get("id"): e.get("errorCode") for e in root.findall("bpmn:error", NS)}
    boundary_codes: dict[str, list[str]] = {}
    for event in process.findall("bpmn:boundaryEvent", NS):
        definition = event.find("bpmn:errorEventDefinition", NS)
        if definition is not None:
            code = errors.get(definition.get("errorRef"))
            boundary_codes.setdefault(event.get("attachedToRef", ""), []).append(code or "")
    tasks = {
        element.get("id", ""): _task(process.get("id", ""), element, boundary_codes)
        for element in process.findall("bpmn:serviceTask", NS)
    }
    return process.get("id", ""), [tasks[i] for i in _flow_order(process) if i in tasks]


def _task(process: str, element: ET.Element, boundary: dict[str, list[str]]) -> Task:
    extension = element.find("bpmn:extensionElements", NS)
    assert extension is not None
    definition = extension.find("zeebe:taskDefinition", NS)
    return Task(
        process=process,
        id=element.get("id", ""),
        name=element.get("name", ""),
        attributes={
            k.removeprefix(ZEEBE): v for k, v in element.attrib.items() if k.startswith(ZEEBE)
        },
        task_definition=dict(definition.attrib) if definition is not None else {},
        inputs=[
            (i.get("target", ""), i.get("source"))
            for i in extension.findall("zeebe:ioMapping/zeebe:input", NS)
        ],
        headers={
            h.get("key", ""): h.get("value", "")
            for h in extension.findall("zeebe:taskHeaders/zeebe:header", NS)
        },
        zeebe_properties={
            p.get("name", ""): p.get("value", "")
            for p in extension.findall("zeebe:properties/zeebe:property", NS)
        },
        error_codes=boundary.get(element.get("id", ""), []),
    )


def _flow_order(process: ET.Element) -> list[str]:
    """Element ids breadth-first from the start events along the sequence flows."""
    targets: dict[str, list[str]] = {}
    for flow in process.findall("bpmn:sequenceFlow", NS):
        targets.setdefault(flow.get("sourceRef", ""), []).append(flow.get("targetRef", ""))
    order = [e.get("id", "") for e in process.findall("bpmn:startEvent", NS)]
    for element_id in order:
        for target in targets.get(element_id, []):
            if target not in order:
                order.append(target)
    return order


def all_tasks() -> list[Task]:
    return [task for path in example_files() for task in read_process(path)[1]]


def task_id(task: Task) -> str:
    return f"{task.process}:{task.id}"


# --- the template, applied as the Modeler applies it -------------------------------------------


def value_of(task: Task, prop: dict[str, Any]) -> str | None:
    kind, name = binding_of(prop)
    if kind == "zeebe:input":
        sources = [source for target, source in task.inputs if target == name]
        return sources[0] if sources else None
    if kind == "zeebe:taskHeader":
        return task.headers.get(name)
    if kind == "zeebe:property":
        return task.zeebe_properties.get(name)
    return task.task_definition.get(name)


def dropdown_state(task: Task, template: dict[str, Any]) -> dict[str, Any]:
    return {
        prop["id"]: value_of(task, prop)
        for prop in properties(template)
        if prop.get("type") == "Dropdown"
    }


def test_there_are_templated_tasks() -> None:
    """The examples hold service tasks (an empty list would pass every test below)."""
    assert len(all_tasks()) >= 4


def test_every_example_declares_its_start_variables() -> None:
    """A new example names what it is started with, here and in its documentation."""
    for path in example_files():
        process, _ = read_process(path)
        assert process in START_VARIABLES, f"add the start variables of {process} to this test"
        text = path.read_text(encoding="utf-8")
        for name in START_VARIABLES[process]:
            assert name in text


@pytest.mark.parametrize("task", all_tasks(), ids=task_id)
def test_task_carries_the_template_id_and_version(task: Task, template: dict[str, Any]) -> None:
    """modelerTemplate, modelerTemplateVersion and the icon are those of the committed template."""
    assert task.attributes.get("modelerTemplate") == template["id"]
    assert task.attributes.get("modelerTemplateVersion") == str(template["version"])
    assert task.attributes.get("modelerTemplateIcon") == template["icon"]["contents"]


@pytest.mark.parametrize("task", all_tasks(), ids=task_id)
def test_task_is_the_template_applied(task: Task, template: dict[str, Any]) -> None:
    """Exactly the inputs of the active properties, valid values, no header the template lacks."""
    active = active_properties(template, dropdown_state(task, template))
    wanted_inputs = [binding_of(p)[1] for p in active if binding_of(p)[0] == "zeebe:input"]
    assert sorted(target for target, _ in task.inputs) == sorted(wanted_inputs)
    header_keys = {binding_of(p)[1] for p in active if binding_of(p)[0] == "zeebe:taskHeader"}
    assert set(task.headers) <= header_keys
    zeebe_properties = {binding_of(p)[1] for p in active if binding_of(p)[0] == "zeebe:property"}
    assert set(task.zeebe_properties) == zeebe_properties
    for prop in active:
        problem = constraint_problem(prop, value_of(task, prop))
        assert problem is None, f"{task.id}: {prop.get('id', binding_of(prop))}: {problem}"


def constraint_problem(prop: dict[str, Any], value: str | None) -> str | None:
    """What the Modeler's properties panel would say about this value (None: nothing)."""
    kind = prop["type"]
    if kind == "Hidden":
        return (
            None
            if value == prop["value"]
            else f"is {value!r}, the template fixes {prop['value']!r}"
        )
    if kind == "Dropdown":
        choices = [c["value"] for c in prop["choices"]]
        return None if value in choices else f"{value!r} is not one of {choices}"
    if kind == "Boolean":
        return None if value in ("=true", "=false") else f"{value!r} is not =true or =false"
    text = value or ""
    constraints = prop.get("constraints", {})
    if constraints.get("notEmpty") and not text.strip():
        return "must not be empty"
    is_feel = text.strip().startswith("=")
    if prop.get("feel") == "required" and text and not is_feel:
        return "must be a FEEL expression (=…)"
    pattern = pattern_of(prop)
    if pattern and not (prop.get("feel") and is_feel) and not re.search(pattern, text):
        return f"{text!r} does not match {pattern}"
    return None


# --- the dry run through the worker's validation -----------------------------------------------


def dry_run(path: Path) -> Iterator[tuple[Task, Any, dict[str, Any]]]:
    """Each task's validated inputs and the process variables after it, in flow order."""
    process, tasks = read_process(path)
    scope: dict[str, Any] = dict(START_VARIABLES[process])
    for task in tasks:
        variables = job_variables(task, scope)
        gathered = gather_inputs(task.headers, variables)
        store = SecretStore(environment=dummy_secrets(task))
        used = ResolvedSecrets()
        resolved = {n: resolve_placeholders(v, store, used, n) for n, v in gathered.items()}
        _, request = parse_inputs(resolved, RULES)
        options = parse_output_options(task.headers)
        answer = representative_answer(request)
        done = outcome.for_response(answer, options, max_bytes=3_000_000, job_retries=3)
        assert isinstance(done, outcome.Complete), f"{task.id}: {done}"
        scope.update(done.variables)
        yield task, request, scope


def job_variables(task: Task, scope: dict[str, Any]) -> dict[str, Any]:
    """The job's variables as Zeebe makes them from the input mappings (dotted targets nest)."""
    variables: dict[str, Any] = {}
    for target, source in task.inputs:
        value: Any = None
        if source is not None and source.startswith("="):
            value = feel.compile_expression(source).evaluate(scope)
            assert value is not None or target in NULL_ON_FIRST_RUN.get(task.process, ()), (
                f"{task.id}: {target} = {source} gives null in {sorted(scope)}"
            )
        elif source is not None:
            value = source
        *parents, leaf = target.split(".")
        node = variables
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return variables


def dummy_secrets(task: Task) -> dict[str, str]:
    text = " ".join(str(s) for _, s in task.inputs) + " ".join(task.headers.values())
    return {name: f"dummy-{name}" for name in PLACEHOLDER.findall(text)}


def representative_answer(request: Any) -> Answer:
    record = {"sys_id": SYS_ID, "number": "RITM0010001", "state": "1", "short_description": "x"}
    if isinstance(request, AggregateRequest):
        by = (request.group_by or ("x",))[0]
        group = {"stats": {"count": "2"}, "groupby_fields": [{"field": by, "value": "Network"}]}
        grouped = bool(request.group_by)
        result = [group] if grouped else {"stats": {"count": "2"}}
        return AggregateResponse(status=200, result=result, grouped=grouped, body_bytes=100)
    if isinstance(request, BatchRequest):
        return BatchResponse(results=[{"status": 200, "result": record}], body_bytes=100)
    match request.operation:
        case Operation.CHANGES:
            position = change_cursor.Position("2026-01-31 08:00:00", SYS_ID)
            cursor = change_cursor.encode(position, request.table, request.query)
            return ChangesResponse(status=200, result=[record], cursor=cursor, has_more=False)
        case Operation.CREATE:
            return TableResponse(status=201, result=record)
        case Operation.READ if request.sys_id is None:
            return TableResponse(status=200, result=[record], is_list=True, total_count=1)
        case Operation.DELETE:
            return TableResponse(status=204, result=None)
        case _:
            return TableResponse(status=200, result=record)


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_tasks_pass_the_workers_input_validation(path: Path) -> None:
    """Every task of the example gives the worker a valid request (an InputError fails here)."""
    runs = list(dry_run(path))
    assert runs, f"{path.name} has no service task on its flow"
    for task, request, _ in runs:
        operation = dict(task.inputs)["operation"]
        assert request.operation.value == operation, task.id


def test_round_trip_reads_updates_and_deletes_what_it_created() -> None:
    """The round trip's later tasks address the record the create returned."""
    runs = {
        task.id: request for task, request, _ in dry_run(EXAMPLES / "servicenow-round-trip.bpmn")
    }
    assert [r.operation for r in runs.values()] == [
        Operation.CREATE,
        Operation.READ,
        Operation.UPDATE,
        Operation.DELETE,
    ]
    assert {r.sys_id for r in runs.values() if r.operation is not Operation.CREATE} == {SYS_ID}
    assert runs["CreateRequestedItem"].table == "sc_req_item"


def test_the_feed_carries_its_cursor_and_hands_each_incident_to_the_handler() -> None:
    """The feed's changes call takes the cursor variable it leaves for the next call, and the
    call activity runs the handler once per record of the result."""
    path = EXAMPLES / "servicenow-p1-incident-feed.bpmn"
    [(task, request, scope)] = list(dry_run(path))
    assert request.operation is Operation.CHANGES
    assert dict(task.inputs)["cursor"] == "=cursor"
    assert scope["cursor"] and scope["incidents"] and scope["moreWaiting"] is False
    root = ET.parse(path).getroot()
    loop = root.find(".//bpmn:callActivity/bpmn:multiInstanceLoopCharacteristics", NS)
    assert loop is not None
    characteristics = loop.find("bpmn:extensionElements/zeebe:loopCharacteristics", NS)
    assert characteristics is not None
    assert characteristics.get("inputCollection") == "=incidents"
    called = root.find(".//zeebe:calledElement", NS)
    assert called is not None
    handler, _ = read_process(EXAMPLES / f"{called.get('processId')}.bpmn")
    assert handler == called.get("processId")


@pytest.mark.parametrize("task", [t for t in all_tasks() if t.error_codes], ids=task_id)
def test_error_boundary_events_can_be_reached(task: Task) -> None:
    """A failure the task can meet (a 404, too many records) makes its errorExpression throw
    the code each of its boundary events catches."""
    options = parse_output_options(task.headers)
    failures = [
        ServiceNowRejected(404, "No Record found", variables={}),
        TooManyRecords("the query matches 6000 records, more than maxRecords 5000"),
    ]
    thrown = set()
    for failure in failures:
        result = outcome.for_error(failure, job_retries=3, options=options, retry_after_cap=3600)
        if isinstance(result, outcome.ThrowError):
            thrown.add(result.code)
    assert set(task.error_codes) <= thrown
