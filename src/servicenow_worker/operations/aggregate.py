"""Count and aggregate without reading records: ServiceNow's Aggregate API (docs/contract.md §9),
`GET /api/now/stats/{table}`.

ServiceNow sends every number as a string and `result` as an object without group-by, a list
with it. The response keeps `result` as it came and adds the same numbers as numbers: `count`
and `stats` without group-by, `groups` with it, so that FEEL can compare and sum them.
"""

import re
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Final, Self

import httpx
from pydantic import BeforeValidator, Field, model_validator

from servicenow_worker.errors import InputError
from servicenow_worker.inputs import (
    DestinationInputs,
    DisplayValue,
    EncodedQuery,
    FieldList,
    Flag,
    TableName,
)
from servicenow_worker.operations.family import JobContext, OperationFamily
from servicenow_worker.servicenow import ApiCall, checked, json_body, query_string

AGGREGATES: Final = ("avg", "sum", "min", "max")
# Patterns without inline flags: the Modeler checks them with JavaScript's RegExp too.
_AGGREGATE_NAME: Final = "(count|avg|sum|min|max|COUNT|AVG|SUM|MIN|MAX)"
_FIELD: Final = "[A-Za-z0-9_.]+"
# aggregate^field^operator^number, comma-separated (GlideAggregate.addHaving)
HAVING_CLAUSE: Final = rf"{_AGGREGATE_NAME}\^{_FIELD}\^(=|!=|>|>=|<|<=)\^-?[0-9]+(\.[0-9]+)?"
HAVING_PATTERN: Final = rf"^{HAVING_CLAUSE}(,{HAVING_CLAUSE})*$"
# COUNT, AVG^field, field, each optionally ^DESC, comma-separated
ORDER_CLAUSE: Final = rf"({_AGGREGATE_NAME}(\^{_FIELD})?|{_FIELD})(\^(DESC|desc))?"
ORDER_BY_PATTERN: Final = rf"^{ORDER_CLAUSE}(,{ORDER_CLAUSE})*$"
NUMBER: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _matching(pattern: str, example: str) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise ValueError(f"must look like {example} (got {value!r})")
        return value

    return BeforeValidator(check)


class AggregateRequest(DestinationInputs):
    """The aggregate operation's validated inputs."""

    table: TableName
    query: EncodedQuery | None = None
    group_by: FieldList | None = Field(default=None, alias="groupBy")
    count: Flag = True
    avg_fields: FieldList | None = Field(default=None, alias="avgFields")
    sum_fields: FieldList | None = Field(default=None, alias="sumFields")
    min_fields: FieldList | None = Field(default=None, alias="minFields")
    max_fields: FieldList | None = Field(default=None, alias="maxFields")
    having: Annotated[str, _matching(HAVING_PATTERN, "count^priority^>^3")] | None = None
    order_by: Annotated[str, _matching(ORDER_BY_PATTERN, "COUNT^DESC or priority")] | None = Field(
        default=None, alias="orderBy"
    )
    display_value: DisplayValue | None = Field(default=None, alias="displayValue")

    @model_validator(mode="after")
    def _something_to_compute(self) -> Self:
        if not self.count and not any(self.fields(a) for a in AGGREGATES):
            raise InputError(
                "count",
                "is false and no avgFields, sumFields, minFields or maxFields is given: "
                "ask for a count or for a field to aggregate",
            )
        return self

    def fields(self, aggregate: str) -> tuple[str, ...] | None:
        """The fields of one aggregate (avg, sum, min, max)."""
        fields: tuple[str, ...] | None = getattr(self, f"{aggregate}_fields")
        return fields

    def url(self) -> str:
        params: dict[str, str] = {}
        if self.query is not None:
            params["sysparm_query"] = self.query
        if self.count:
            params["sysparm_count"] = "true"
        for aggregate in AGGREGATES:
            if fields := self.fields(aggregate):
                params[f"sysparm_{aggregate}_fields"] = ",".join(fields)
        if self.group_by:
            params["sysparm_group_by"] = ",".join(self.group_by)
        if self.having is not None:
            params["sysparm_having"] = self.having
        if self.order_by is not None:
            params["sysparm_order_by"] = self.order_by
        if self.display_value is not None:
            params["sysparm_display_value"] = self.display_value
        return f"{self.base_url}/api/now/stats/{self.table}{query_string(params)}"


@dataclass(frozen=True)
class AggregateResponse:
    """ServiceNow's answer, and its numbers as numbers (docs/contract.md §9)."""

    status: int
    result: Any
    grouped: bool
    body_bytes: int

    def as_variable(self) -> dict[str, Any]:
        variable: dict[str, Any] = {"status": self.status, "result": self.result}
        if self.grouped:
            groups = self.result if isinstance(self.result, list) else []
            variable["groups"] = [_group(g) for g in groups if isinstance(g, dict)]
        else:
            stats = self.result.get("stats") if isinstance(self.result, dict) else None
            stats = stats if isinstance(stats, dict) else {}
            variable["count"] = _number(stats.get("count"))
            variable["stats"] = _aggregates(stats)
        return variable


def _number(value: Any) -> Any:
    """A number ServiceNow sent as a string, as a number; "" as null; other text as it came."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        text = value.strip()
        return float(text) if "." in text else int(text)
    return value


def _aggregates(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        aggregate: {name: _number(v) for name, v in values.items()}
        for aggregate in AGGREGATES
        if isinstance(values := stats.get(aggregate), dict)
    }


def _group(group: dict[str, Any]) -> dict[str, Any]:
    by = [f for f in group.get("groupby_fields") or [] if isinstance(f, dict)]
    found = group.get("stats")
    stats: dict[str, Any] = found if isinstance(found, dict) else {}
    entry: dict[str, Any] = {"values": {f.get("field"): f.get("value") for f in by}}
    if any("display_value" in f for f in by):
        entry["displayValues"] = {f.get("field"): f.get("display_value") for f in by}
    if "count" in stats:
        entry["count"] = _number(stats["count"])
    return {**entry, **_aggregates(stats)}


def _answer(request: AggregateRequest, response: httpx.Response) -> AggregateResponse:
    what = f"aggregate on {request.table}"
    body = json_body(what, checked(what, response))
    return AggregateResponse(
        status=response.status_code,
        result=body["result"],
        grouped=bool(request.group_by),
        body_bytes=len(response.content),
    )


async def run(context: JobContext, request: AggregateRequest) -> AggregateResponse:
    """One Aggregate API request, retried in-process like any read."""
    call = ApiCall("GET", request.url(), f"aggregate on {request.table}", partial(_answer, request))
    return await context.servicenow.call(request, call, deadline=context.deadline)


AGGREGATE: OperationFamily[AggregateRequest] = OperationFamily(model=AggregateRequest, run=run)
