"""The Aggregate API of the ServiceNow emulator: `GET /api/now[/v1]/stats/{table}`.

What ServiceNow's REST API reference documents for it, with the shapes recorded from real
instances: `sysparm_count`, `sysparm_avg_fields`/`sum`/`min`/`max`, `sysparm_group_by` (several
fields), `sysparm_having` (`aggregate^field^operator^value`, comma-separated, filtering
groups), `sysparm_order_by` (`COUNT`, `AVG^field`, `field`, each optionally `^DESC`, ordering
groups), `sysparm_query` (or name=value pairs) and `sysparm_display_value` for the group-by
values. Without `sysparm_group_by`, `result` is an object `{"stats": {...}}`; with it, a list
of `{"stats": {...}, "groupby_fields": [{"field": ..., "value": ...}]}`. Every number is a JSON
string, as ServiceNow sends it: counts as integers, averages with four decimals ("1.2500"),
min and max as the stored value (they work on strings too); an aggregate over no values is "".

Where the reference leaves a behaviour open, the emulator picks one and says so here:
unknown field names in the field lists are dropped (as the Table API drops unknown
`sysparm_fields`); a group-by of only unknown fields answers as if ungrouped; `sysparm_having`
without a group-by is ignored; the label under `sysparm_display_value=all` is an extra
`display_value` key next to `value`; a request with neither a count nor a field list answers
`{"stats": {}}` per group. ACL-hidden rows are counted (GlideAggregate does not check row
ACLs) unless `strict_acl` is set, which answers 403 as instances from Washington DC on do
when a row of the table is not readable.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from ._rest import ApiError
from ._table_schema import Field, FieldType, TableSchema
from ._table_store import DisplayMode, Record, TableStore

__all__ = ["AGGREGATES", "stats"]

AGGREGATES = ("avg", "sum", "min", "max")
_HAVING_OPERATORS: Mapping[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True, slots=True)
class _Request:
    """The aggregate request's parameters, bound to the table's fields."""

    count: bool
    fields: Mapping[str, tuple[Field, ...]]  # aggregate → fields
    group_by: tuple[Field, ...]
    having: tuple[tuple[str, str, Callable[[float | None, float], bool], float], ...]
    order_by: tuple[tuple[str, str, bool], ...]  # (aggregate or "", field or "", descending)
    display: str
    schema: TableSchema


def stats(
    store: TableStore,
    table: str,
    params: Mapping[str, str],
    *,
    rows: list[Record],
    hidden: Collection[str],
    strict_acl: bool,
) -> object:
    """The JSON answer of a stats request over `rows` (the rows its query matched).

    Raises `ApiError` for the answers that are errors.
    """
    if strict_acl and any(sys_id in hidden for sys_id in store.rows[table]):
        raise ApiError(
            403,
            "User Not Authorized",
            "Read access to every record of the table is required to aggregate it",
        )
    request = _parse(store.schemas[table], params)
    if not request.group_by:
        return {"result": {"stats": _stats_of(request, rows)}}
    groups: dict[tuple[str, ...], list[Record]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(f.name, "") for f in request.group_by), []).append(row)
    kept = [
        (key, members)
        for key, members in sorted(
            groups.items(), key=lambda g: _values_key(request.group_by, g[0])
        )
        if all(
            compare(_measure(a, name, members), target)
            for a, name, compare, target in request.having
        )
    ]
    # stable sorts, last key first, give the first `sysparm_order_by` entry precedence
    for aggregate, name, descending in reversed(request.order_by):
        kept.sort(key=lambda g: _order_key(aggregate, name, g[1], request), reverse=descending)
    return {
        "result": [
            {
                "stats": _stats_of(request, members),
                "groupby_fields": [
                    _group_value(store, request.display, f, value)
                    for f, value in zip(request.group_by, key, strict=True)
                ],
            }
            for key, members in kept
        ]
    }


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _known(schema: TableSchema, text: str | None) -> tuple[Field, ...]:
    return tuple(schema.fields[n] for n in dict.fromkeys(_names(text)) if n in schema.fields)


def _having(clause: str) -> tuple[str, str, Callable[[float | None, float], bool], float]:
    parts = clause.split("^")
    target = _number(parts[3]) if len(parts) == 4 else None
    compare = _HAVING_OPERATORS.get(parts[2]) if len(parts) == 4 else None
    if compare is None or target is None or parts[0].lower() not in ("count", *AGGREGATES):
        raise ApiError(
            400, "Invalid having clause", f"'{clause}' is not aggregate^field^operator^number"
        )

    def holds(measured: float | None, target: float) -> bool:
        # a group with no value to aggregate never satisfies a condition, like SQL NULL
        return measured is not None and compare(measured, target)

    return parts[0].lower(), parts[1], holds, target


def _parse(schema: TableSchema, params: Mapping[str, str]) -> _Request:
    order_by = []
    for spec in _names(params.get("sysparm_order_by")):
        parts = spec.split("^")
        descending = len(parts) > 1 and parts[-1].upper() == "DESC"
        if descending:
            parts = parts[:-1]
        head = parts[0].lower()
        if head in ("count", *AGGREGATES):
            order_by.append((head, parts[1] if len(parts) > 1 else "", descending))
        elif parts[0] in schema.fields:
            order_by.append(("", parts[0], descending))
    return _Request(
        count=params.get("sysparm_count", "").lower() == "true",
        fields={a: _known(schema, params.get(f"sysparm_{a}_fields")) for a in AGGREGATES},
        group_by=_known(schema, params.get("sysparm_group_by")),
        having=tuple(_having(c) for c in _names(params.get("sysparm_having"))),
        order_by=tuple(order_by),
        display=DisplayMode.parse(params.get("sysparm_display_value")),
        schema=schema,
    )


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _numbers(rows: Iterable[Record], name: str) -> list[float]:
    return [n for r in rows if (v := r.get(name, "")) and (n := _number(v)) is not None]


def _measure(aggregate: str, name: str, rows: list[Record]) -> float | None:
    """An aggregate as a number (for having and ordering); None over no values."""
    if aggregate == "count":
        return float(len(rows))
    numbers = _numbers(rows, name)
    if not numbers:
        return None
    if aggregate == "avg":
        return sum(numbers) / len(numbers)
    if aggregate == "sum":
        return sum(numbers)
    return min(numbers) if aggregate == "min" else max(numbers)


def _aggregate_text(aggregate: str, f: Field, rows: list[Record]) -> str:
    """One aggregate as ServiceNow writes it: averages with four decimals, whole sums without,
    min and max as the stored value (so they work on strings), "" over no values."""
    if aggregate in ("min", "max") and not f.numeric:
        values = [v for r in rows if (v := r.get(f.name, ""))]
        if not values:
            return ""
        return min(values) if aggregate == "min" else max(values)
    value = _measure(aggregate, f.name, rows)
    if value is None:
        return ""
    if aggregate != "avg" and value.is_integer():
        return str(int(value))
    return f"{value:.4f}"


def _stats_of(request: _Request, rows: list[Record]) -> dict[str, object]:
    answer: dict[str, object] = {}
    if request.count:
        answer["count"] = str(len(rows))
    for aggregate in AGGREGATES:
        if request.fields[aggregate]:
            answer[aggregate] = {
                f.name: _aggregate_text(aggregate, f, rows) for f in request.fields[aggregate]
            }
    return answer


def _order_key(
    aggregate: str, name: str, rows: list[Record], request: _Request
) -> tuple[int, float | str]:
    """Groups without a value first, numbers by value, text as text."""
    if aggregate:
        measured = _measure(aggregate, name, rows)
        return (0, 0.0) if measured is None else (1, measured)
    return _value_key(request.schema.fields[name], rows[0].get(name, ""))


def _value_key(f: Field, value: str) -> tuple[int, float | str]:
    number = _number(value) if value and f.numeric else None
    if not value:
        return (0, 0.0)
    return (1, number) if number is not None else (2, value)


def _values_key(group_by: tuple[Field, ...], key: tuple[str, ...]) -> list[tuple[int, float | str]]:
    """Groups come ordered by their values, empty first, numbers numerically."""
    return [_value_key(f, value) for f, value in zip(group_by, key, strict=True)]


def _group_value(store: TableStore, display: str, f: Field, value: str) -> dict[str, str]:
    if display == DisplayMode.FALSE:
        return {"field": f.name, "value": value}
    if f.reference is not None:
        label = store.display_of(f.reference, value)
    elif f.type is FieldType.CHOICE:
        label = f.choices.get(value, value) if value else ""
    else:
        label = value
    if display == DisplayMode.TRUE:
        return {"field": f.name, "value": label}
    return {"field": f.name, "value": value, "display_value": label}
