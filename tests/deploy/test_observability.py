"""deploy/prometheus-alerts.yaml and deploy/grafana-dashboard.json: every expression is valid
PromQL (promql-parser, a port of Prometheus's own parser: unknown functions, bad regexes and type
errors are refused), and every metric it names is one the worker exports, read from the /metrics
of a real worker that has done a job against the emulators."""

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from servicenow_emulators.table_api import Fault, ServiceNowEmulator
from servicenow_emulators.zeebe_gateway import ZeebeGatewayEmulator
from servicenow_worker.app import open_worker, start_health_server

from ..e2e.conftest import JOB_TYPE, PASSWORD, USER, job_variables, worker_settings

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus-alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
# Grafana's variables, as Grafana replaces them before the query reaches Prometheus.
GRAFANA_VARIABLES: Final = {
    "$__rate_interval": "1m",
    "$__range": "6h",
    "$job": ".*",
    "$instance": ".*",
}
# Names the alerts and dashboard may use before the worker exports them (none now: flow control,
# issue #15, exports its series since it was merged).
PENDING_FLOW_CONTROL: Final = frozenset[str]()
SEVERITIES: Final = {"critical", "warning", "info"}


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = YAML(typ="safe").load(ALERTS.read_text())["groups"][0]["rules"]
    return rules


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target, Grafana's variables replaced."""
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            query = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                query = query.replace(variable, value)
            yield panel["title"], query


def every_expression() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in alert_rules()] + list(dashboard_queries())


def metric_names(expression: str) -> set[str]:
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


@pytest.mark.parametrize(("where", "expression"), every_expression())
def test_each_expression_is_promql(where: str, expression: str) -> None:
    assert promql_parser.parse(expression) is not None, where
    assert metric_names(expression), f"{where}: names no metric"


@pytest.mark.parametrize(
    "broken",
    [
        "rates(servicenow_worker_jobs_finished_total[5m])",  # no such function
        "rate(servicenow_worker_jobs_finished_total)",  # rate needs a range
        'servicenow_worker_jobs_finished_total{outcome=~"("}',  # not a regex
        "sum by (outcome (servicenow_worker_jobs_finished_total)",  # unbalanced
    ],
)
def test_the_parser_refuses_what_prometheus_refuses(broken: str) -> None:
    """The check above can fail."""
    with pytest.raises(ValueError):  # noqa: PT011 - the parser's one error type
        promql_parser.parse(broken)


def test_each_rule_is_complete() -> None:
    """What Alertmanager and the person paged need: a name, a severity, a summary and a cause."""
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert {
        "ServiceNowWorkerIncidentsOpened",
        "ServiceNowWorkerGatewayUnreachable",
        "ServiceNowWorkerThrottled",
        "ServiceNowWorkerResultTooLarge",
    } <= set(names)
    for rule in alert_rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        if "for" in rule:
            assert promql_parser.parse_duration(rule["for"]) > timedelta(0)


def test_the_dashboard_is_well_formed() -> None:
    """Unique panel ids, every query on the dashboard's Prometheus variable, inside the grid."""
    board = dashboard()
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    variables = {variable["name"] for variable in board["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for panel in panels:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    titles = " ".join(panel["title"] for panel in panels).lower()
    for subject in ("outcome", "latency", "status", "in flight", "gateway", "throttl"):
        assert subject in titles, subject


@pytest.fixture(name="exported", scope="module")
def _exported() -> set[str]:
    """The names of every series the worker's /metrics offers, having done a create and a read
    that was retried once."""
    return asyncio.run(_scrape_a_worker())


async def _scrape_a_worker() -> set[str]:
    async with (
        ServiceNowEmulator(users={USER: PASSWORD}) as servicenow,
        ZeebeGatewayEmulator() as gateway,
    ):
        settings = worker_settings(gateway, servicenow, health_port=0, health_host="127.0.0.1")
        async with open_worker(settings) as pump:
            health = await start_health_server(settings, pump)
            assert health is not None and health.port
            running = asyncio.create_task(pump.run())
            try:
                created = gateway.create_job(
                    JOB_TYPE,
                    job_variables(operation="create", table="incident", payload={}),
                    {"resultVariable": "incident"},
                )
                [done] = await gateway.wait_for_outcomes(created, 1)
                # A read answered 503 once: retried in-process, so stamina's counter exists.
                servicenow.inject(Fault.service_unavailable(method="GET", times=1))
                read = gateway.create_job(
                    JOB_TYPE,
                    job_variables(
                        operation="read",
                        table="incident",
                        sysId=done.variables["incident"]["result"]["sys_id"],
                    ),
                    {},
                )
                await gateway.wait_for_outcomes(read, 1)
                text = await _metrics_text(health.port)
            finally:
                pump.request_stop(at_once=True)
                await running
                await health.stop()
    return exposed_names(text)


async def _metrics_text(port: int) -> str:
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return response.text


SUFFIXES: Final = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum", ""),
}


def exposed_names(text: str) -> set[str]:
    """Every series name a family offers (counters with _total, histograms with _bucket, ...),
    also for a family with no sample yet (a labelled gauge before its first destination)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def referenced() -> set[str]:
    return {name for _, expression in every_expression() for name in metric_names(expression)}


def test_each_metric_named_is_exported(exported: set[str]) -> None:
    missing = referenced() - exported - PENDING_FLOW_CONTROL
    assert missing == set(), f"named by the alerts or the dashboard, not exported: {missing}"


def test_pending_metrics_are_exported(exported: set[str]) -> None:
    """The flow-control names the rules and panels already use (see PENDING_FLOW_CONTROL)."""
    pending = (referenced() & PENDING_FLOW_CONTROL) - exported
    if pending:
        pytest.skip(f"not exported until flow control (issue #15) is merged: {sorted(pending)}")


def test_a_misspelt_metric_is_found(exported: set[str]) -> None:
    """The check above can fail: a name one letter off is not exported."""
    name = "servicenow_worker_jobs_finshed_total"
    assert metric_names(f"rate({name}[5m])") - exported == {name}


def test_the_worker_code_named_in_the_rules_exists() -> None:
    """RESULT_TOO_LARGE as the errors' code label value is the worker's own code."""
    from servicenow_worker import errors

    codes = set(re.findall(r'code="([A-Z_]+)"', ALERTS.read_text()))
    assert codes == {errors.RESULT_TOO_LARGE}
