"""Table schemas for the ServiceNow Table API emulator.

Models the part of a ServiceNow dictionary that changes what a REST client sees: field types
(string, integer, boolean, date-time, choice with labels, reference with a target table,
journal), defaults, the `number` auto-numbering of task tables and the `sys_*` fields every
table carries. Values are always stored as strings, as ServiceNow returns them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "SYS_FIELDS",
    "Dynamic",
    "Field",
    "FieldType",
    "TableSchema",
    "builtin_tables",
    "coerce_value",
]

# ServiceNow column and table names are lower case; the encoded-query parser relies on it to
# tell a field name from the operator that follows it (`short_descriptionLIKEdisk`).
NAME_PATTERN = re.compile(r"[a-z0-9_]+")


class FieldType(enum.Enum):
    """The dictionary types the emulator distinguishes."""

    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATETIME = "glide_date_time"
    CHOICE = "choice"
    REFERENCE = "reference"
    JOURNAL = "journal"
    GUID = "GUID"


class Dynamic(enum.Enum):
    """Defaults computed at insert time rather than fixed strings."""

    NOW = "now"  # current UTC time, `YYYY-MM-DD HH:MM:SS`
    USER = "user"  # sys_id of the sys_user record of the authenticated user


@dataclass(frozen=True, slots=True)
class Field:
    """One column: its type, default, choice labels (value → label) or reference target."""

    name: str
    type: FieldType = FieldType.STRING
    default: str | Dynamic = ""
    choices: Mapping[str, str] = field(default_factory=dict)
    reference: str | None = None

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"field name {self.name!r} must match [a-z0-9_]+")
        if (self.type is FieldType.REFERENCE) != (self.reference is not None):
            raise ValueError(f"field {self.name!r}: reference fields and only they need a target")

    @property
    def numeric(self) -> bool:
        """Whether the database column is a number, which decides comparisons and sorting."""
        if self.type is FieldType.INTEGER:
            return True
        return (
            self.type is FieldType.CHOICE
            and bool(self.choices)
            and all(_is_number(value) for value in self.choices)
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def coerce_value(value: object, field_type: FieldType) -> str:
    """Turn a JSON value from a request body into the string ServiceNow stores.

    ServiceNow answers `"urgency": 3` with `"urgency": "3"`; booleans become `"true"`/`"false"`,
    null clears the field. A `{"value": …}` object (what a client copies out of a
    `display_value=all` answer) stores its `value`.
    """
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, Mapping) and "value" in value:
        return coerce_value(value["value"], field_type)
    elif isinstance(value, list):
        text = ",".join(coerce_value(item, FieldType.STRING) for item in value)
    else:
        text = str(value)
    if field_type is FieldType.BOOLEAN and text:
        return "true" if text.lower() in ("true", "1") else "false"
    return text


# Present on every table, in this order, after the table's own fields.
SYS_FIELDS: tuple[Field, ...] = (
    Field("sys_id", FieldType.GUID),
    Field("sys_class_name"),
    Field("sys_created_on", FieldType.DATETIME),
    Field("sys_created_by"),
    Field("sys_updated_on", FieldType.DATETIME),
    Field("sys_updated_by"),
    Field("sys_mod_count", FieldType.INTEGER, default="0"),
    Field("sys_tags"),
)
SYS_FIELD_NAMES = frozenset(f.name for f in SYS_FIELDS)


@dataclass(eq=False, slots=True)
class TableSchema:
    """A table: its fields in display order, the field that names a record in references,
    its `number` prefix (INC, RITM…) and the states that make a task inactive."""

    name: str
    fields: dict[str, Field]
    display_field: str
    number_prefix: str | None = None
    next_number: int = 10001
    inactive_states: frozenset[str] = frozenset()
    # incident only: priority is computed from impact and urgency by a business rule
    priority_from_impact_urgency: bool = False

    @classmethod
    def build(
        cls,
        name: str,
        fields: Iterable[Field | str],
        *,
        number_prefix: str | None = None,
        display_field: str | None = None,
        inactive_states: Iterable[str] = (),
        priority_from_impact_urgency: bool = False,
    ) -> TableSchema:
        """Build a schema; plain strings in `fields` are string fields, sys fields are added."""
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"table name {name!r} must match [a-z0-9_]+")
        own: dict[str, Field] = {}
        if number_prefix is not None:
            own["number"] = Field("number")
        for item in fields:
            f = Field(item) if isinstance(item, str) else item
            if f.name not in SYS_FIELD_NAMES:
                own[f.name] = f
        for f in SYS_FIELDS:
            own[f.name] = f
        if display_field is None:
            if number_prefix is not None:
                display_field = "number"
            elif "name" in own:
                display_field = "name"
            else:
                display_field = "sys_id"
        if display_field not in own:
            raise ValueError(f"display field {display_field!r} is not a field of {name}")
        return cls(
            name=name,
            fields=own,
            display_field=display_field,
            number_prefix=number_prefix,
            inactive_states=frozenset(inactive_states),
            priority_from_impact_urgency=priority_from_impact_urgency,
        )

    def next_number_value(self) -> str:
        """`INC0010001`, `INC0010002`…: prefix plus seven digits, as in a fresh instance."""
        assert self.number_prefix is not None
        value = f"{self.number_prefix}{self.next_number:07d}"
        self.next_number += 1
        return value


def _choice(name: str, labels: Mapping[str, str], default: str = "") -> Field:
    return Field(name, FieldType.CHOICE, default=default, choices=dict(labels))


def _ref(name: str, table: str, default: str | Dynamic = "") -> Field:
    return Field(name, FieldType.REFERENCE, default=default, reference=table)


_IMPACT = {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"}
_PRIORITY = {
    "1": "1 - Critical",
    "2": "2 - High",
    "3": "3 - Moderate",
    "4": "4 - Low",
    "5": "5 - Planning",
}
_TASK_STATE = {
    "-5": "Pending",
    "1": "Open",
    "2": "Work in Progress",
    "3": "Closed Complete",
    "4": "Closed Incomplete",
    "7": "Closed Skipped",
}


def _task_fields(state: Field) -> list[Field]:
    """Fields every task table (incident, sc_req_item, …) inherits from `task`."""
    return [
        Field("short_description"),
        Field("description"),
        state,
        Field("active", FieldType.BOOLEAN, default="true"),
        _choice("impact", _IMPACT, "3"),
        _choice("urgency", _IMPACT, "3"),
        _choice("priority", _PRIORITY, "4"),
        _ref("opened_by", "sys_user", Dynamic.USER),
        Field("opened_at", FieldType.DATETIME, default=Dynamic.NOW),
        Field("closed_at", FieldType.DATETIME),
        _ref("assigned_to", "sys_user"),
        _ref("assignment_group", "sys_user_group"),
        _ref("cmdb_ci", "cmdb_ci"),
        Field("reassignment_count", FieldType.INTEGER, default="0"),
        Field("correlation_id"),
        Field("correlation_display"),
        Field("close_notes"),
        Field("due_date", FieldType.DATETIME),
        Field("comments", FieldType.JOURNAL),
        Field("work_notes", FieldType.JOURNAL),
    ]


def builtin_tables() -> list[TableSchema]:
    """The tables a fresh emulator knows (a fresh list each call: schemas carry counters)."""
    incident_state = _choice(
        "state",
        {
            "1": "New",
            "2": "In Progress",
            "3": "On Hold",
            "6": "Resolved",
            "7": "Closed",
            "8": "Canceled",
        },
        "1",
    )
    incident = TableSchema.build(
        "incident",
        [
            *_task_fields(incident_state),
            _ref("caller_id", "sys_user"),
            Field("category", default="inquiry"),
            Field("subcategory"),
            _choice(
                "close_code",
                {
                    "Solved (Work Around)": "Solved (Work Around)",
                    "Solved (Permanently)": "Solved (Permanently)",
                    "Not Solved (Not Reproducible)": "Not Solved (Not Reproducible)",
                    "Closed/Resolved by Caller": "Closed/Resolved by Caller",
                },
            ),
            Field("resolved_at", FieldType.DATETIME),
            _ref("problem_id", "problem"),
        ],
        number_prefix="INC",
        inactive_states=("7", "8"),
        priority_from_impact_urgency=True,
    )
    ritm = TableSchema.build(
        "sc_req_item",
        [
            *_task_fields(_choice("state", _TASK_STATE, "1")),
            _ref("requested_for", "sys_user", Dynamic.USER),
            Field("cat_item"),
            Field("request"),
            Field("quantity", FieldType.INTEGER, default="1"),
            Field("stage", default="request_approved"),
            _choice(
                "approval",
                {
                    "not requested": "Not Yet Requested",
                    "requested": "Requested",
                    "approved": "Approved",
                    "rejected": "Rejected",
                },
                "not requested",
            ),
        ],
        number_prefix="RITM",
        inactive_states=("3", "4", "7"),
    )
    sctask = TableSchema.build(
        "sc_task",
        [
            *_task_fields(_choice("state", _TASK_STATE, "1")),
            _ref("request_item", "sc_req_item"),
        ],
        number_prefix="SCTASK",
        inactive_states=("3", "4", "7"),
    )
    change = TableSchema.build(
        "change_request",
        [
            *_task_fields(
                _choice(
                    "state",
                    {
                        "-5": "New",
                        "-4": "Assess",
                        "-3": "Authorize",
                        "-2": "Scheduled",
                        "-1": "Implement",
                        "0": "Review",
                        "3": "Closed",
                        "4": "Canceled",
                    },
                    "-5",
                )
            ),
            _choice("type", {"normal": "Normal", "standard": "Standard", "emergency": "Emergency"}),
            _choice("risk", {"2": "High", "3": "Moderate", "4": "Low"}, "3"),
            _ref("requested_by", "sys_user", Dynamic.USER),
            Field("start_date", FieldType.DATETIME),
            Field("end_date", FieldType.DATETIME),
            Field("justification"),
            Field("implementation_plan"),
        ],
        number_prefix="CHG",
        inactive_states=("3", "4"),
    )
    problem = TableSchema.build(
        "problem",
        [
            *_task_fields(
                _choice(
                    "state",
                    {
                        "101": "New",
                        "102": "Assess",
                        "103": "Root Cause Analysis",
                        "104": "Fix in Progress",
                        "106": "Resolved",
                        "107": "Closed",
                    },
                    "101",
                )
            ),
            Field("problem_statement"),
            Field("known_error", FieldType.BOOLEAN, default="false"),
            Field("cause_notes"),
        ],
        number_prefix="PRB",
        inactive_states=("107",),
    )
    sys_user = TableSchema.build(
        "sys_user",
        [
            Field("user_name"),
            Field("first_name"),
            Field("last_name"),
            Field("name"),
            Field("email"),
            Field("title"),
            Field("department"),
            Field("phone"),
            Field("active", FieldType.BOOLEAN, default="true"),
            _ref("manager", "sys_user"),
        ],
        display_field="name",
    )
    sys_user_group = TableSchema.build(
        "sys_user_group",
        [
            Field("name"),
            Field("description"),
            Field("email"),
            Field("active", FieldType.BOOLEAN, default="true"),
            _ref("manager", "sys_user"),
        ],
        display_field="name",
    )
    cmdb_ci = TableSchema.build(
        "cmdb_ci",
        [
            Field("name"),
            Field("short_description"),
            Field("serial_number"),
            Field("asset_tag"),
            Field("ip_address"),
            Field("fqdn"),
            Field("category"),
            _choice(
                "operational_status",
                {
                    "1": "Operational",
                    "2": "Non-Operational",
                    "3": "Repair in Progress",
                    "4": "DR Standby",
                    "5": "Ready",
                    "6": "Retired",
                },
                "1",
            ),
            _choice(
                "install_status",
                {"1": "Installed", "2": "On Order", "3": "In Maintenance", "7": "Retired"},
                "1",
            ),
            _ref("managed_by", "sys_user"),
            _ref("support_group", "sys_user_group"),
        ],
        display_field="name",
    )
    return [incident, ritm, sctask, change, problem, sys_user, sys_user_group, cmdb_ci]


# ServiceNow's default priority lookup: (impact, urgency) → priority.
PRIORITY_MATRIX: Mapping[tuple[str, str], str] = {
    ("1", "1"): "1",
    ("1", "2"): "2",
    ("2", "1"): "2",
    ("1", "3"): "3",
    ("2", "2"): "3",
    ("3", "1"): "3",
    ("2", "3"): "4",
    ("3", "2"): "4",
    ("3", "3"): "5",
}
