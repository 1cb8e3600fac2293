"""The element template for Camunda Modeler, generated from the worker's input model.

    python -m servicenow_worker.template            # writes element-templates/servicenow-connector.json
    python -m servicenow_worker.template --check    # exit 1 when the committed file is stale

The rules come from `inputs` (which operations use and require each input, the patterns, the
allowed values), the job type and the limit ceiling from `settings`. This module adds only what a
modeler sees: labels, descriptions, groups, the list of common tables and where FEEL is offered.
An input, header or authentication field of the model without a presentation here (or the other
way round) stops the generator, so the template cannot silently drift from the worker.

Adding an authentication type is one entry in `AUTHENTICATION_LOOKS` (its dropdown label and the
look of each of its fields); adding a header is one entry in `HEADER_LOOKS`.
"""

import argparse
import difflib
import json
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin
from urllib.parse import quote

from annotated_types import Le
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from servicenow_worker.inputs import (
    DEFAULT_LIMIT,
    DEFAULT_MAX_RECORDS,
    DEFAULT_RETRY_BACKOFF,
    DISPLAY_VALUES,
    FIELDS_PATTERN,
    HEADER_ONLY_NAMES,
    INPUT_NAMES,
    INSTANCE_NAME,
    OPERATION_NAMES,
    REQUIRED_FOR,
    SYS_ID_PATTERN,
    TABLE_NAME,
    TABLE_PATTERN,
    USED_BY,
    VARIABLE_NAME,
    Authentication,
    Operation,
)
from servicenow_worker.operations import OPERATIONS
from servicenow_worker.operations.aggregate import HAVING_PATTERN, ORDER_BY_PATTERN
from servicenow_worker.operations.attachments import (
    DEFAULT_MAX_ATTACHMENTS,
    MAX_ATTACHMENTS_LIMIT,
    MEDIA_TYPE,
)
from servicenow_worker.secrets import PLACEHOLDER
from servicenow_worker.settings import Settings

SCHEMA_URL: Final = (
    "https://unpkg.com/@camunda/zeebe-element-templates-json-schema/resources/schema.json"
)
TEMPLATE_ID: Final = "servicenow-worker.ServiceNow.v1"
# Bump on every change of the generated template, so the Modeler offers the upgrade.
TEMPLATE_VERSION: Final = 4
TEMPLATE_PATH: Final = Path("element-templates/servicenow-connector.json")
DOCUMENTATION_URL: Final = (
    "https://github.com/servicenow-worker/servicenow-worker#use-it-in-camunda-modeler"
)
JOB_TYPE: Final[str] = Settings.model_fields["worker_job_type"].default
DEFAULT_RETRIES: Final = "3"

Kind = Literal["String", "Text", "Dropdown", "Boolean"]
Feel = Literal["optional", "required"]
ALL_OPERATIONS: Final = frozenset(Operation)


@dataclass(frozen=True)
class Group:
    id: str
    label: str
    tooltip: str | None = None


@dataclass(frozen=True)
class Look:
    """How one input, header or authentication field appears in the Modeler."""

    label: str
    group: str
    description: str
    kind: Kind = "String"
    feel: Feel | None = None
    placeholder: str | None = None
    value: str | bool | None = None
    # Labels of the values the model allows (Dropdown), keyed by value.
    choice_labels: Mapping[str, str] | None = None
    # Shown after the label when the value does not match the pattern ("Sys ID must be …").
    pattern_message: str | None = None
    secret: bool = False


@dataclass(frozen=True)
class HeaderLook(Look):
    # The operations whose tasks show the header; the model has no USED_BY for headers.
    operations: frozenset[Operation] = ALL_OPERATIONS


@dataclass(frozen=True)
class AuthenticationLook:
    label: str
    fields: Mapping[str, Look]


GROUPS: Final = (
    Group("instance", "ServiceNow instance"),
    Group("authentication", "Authentication"),
    Group("operation", "Operation"),
    Group("record", "Record"),
    Group("batch", "Requests", "The create, read, update and delete requests of a batch."),
    Group(
        "attachment",
        "Attachment",
        "Files between the record and Camunda documents: attach, list, download, delete.",
    ),
    Group(
        "query",
        "Query and response options",
        "What a read returns, and how records come back from create, read and update.",
    ),
    Group(
        "aggregate",
        "Counts and aggregates",
        "What the Aggregate API computes over the records the query selects.",
    ),
    Group("output", "Output mapping"),
    Group("error", "Error handling"),
    Group("retries", "Retries"),
)

# Common tables for the dropdown: (label, table name). "Other" lets the modeler type any name.
COMMON_TABLES: Final = (
    ("Incident", "incident"),
    ("Request", "sc_request"),
    ("Requested Item", "sc_req_item"),
    ("Catalog Task", "sc_task"),
    ("Change Request", "change_request"),
    ("Change Task", "change_task"),
    ("Problem", "problem"),
    ("Problem Task", "problem_task"),
    ("Task", "task"),
    ("User", "sys_user"),
    ("Group", "sys_user_group"),
    ("Configuration Item", "cmdb_ci"),
    ("Server", "cmdb_ci_server"),
    ("Knowledge Article", "kb_knowledge"),
)
OTHER_TABLE: Final = "other"
TABLE_CHOICE_ID: Final = "tableChoice"


def _field_list_look(label: str, description: str, placeholder: str) -> Look:
    return Look(
        label=label,
        group="aggregate",
        description=description + " Comma-separated.",
        placeholder=placeholder or None,
        pattern_message="must be field names separated by commas, such as priority,state.",
    )


INPUT_LOOKS: Final[Mapping[str, Look]] = {
    "instance": Look(
        label="Instance",
        group="instance",
        description=(
            "The instance name, such as <code>dev12345</code> for dev12345.service-now.com, "
            "or its URL <code>https://acme.service-now.com</code> (a host the operator allows). "
            "A secret such as <code>{{secrets.snInstance}}</code> works too."
        ),
        placeholder="dev12345",
        pattern_message=(
            "must be an instance name of letters, digits and '-' (dev12345), "
            "an https:// URL without a path, or {{secrets.NAME}}."
        ),
    ),
    "operation": Look(
        label="Operation",
        group="operation",
        description="What to do with the record.",
        kind="Dropdown",
        value=OPERATION_NAMES[Operation.CREATE],
        choice_labels={
            OPERATION_NAMES[Operation.CREATE]: "Create a record",
            OPERATION_NAMES[Operation.READ]: "Read records (one by Sys ID, or a list by query)",
            OPERATION_NAMES[Operation.UPDATE]: "Update a record",
            OPERATION_NAMES[Operation.DELETE]: "Delete a record",
            OPERATION_NAMES[
                Operation.CHANGES
            ]: "Changes since the last call (a feed with a cursor)",
            OPERATION_NAMES[Operation.AGGREGATE]: "Count and aggregate records (Aggregate API)",
            OPERATION_NAMES[Operation.BATCH]: "Several requests at once (Batch API)",
            OPERATION_NAMES[Operation.ATTACH]: "Attach documents or content to a record",
            OPERATION_NAMES[Operation.LIST_ATTACHMENTS]: "List a record's attachments",
            OPERATION_NAMES[Operation.DOWNLOAD]: "Download attachments as Camunda documents",
            OPERATION_NAMES[Operation.DELETE_ATTACHMENT]: "Delete an attachment",
        },
    ),
    "table": Look(
        label="Table name",
        group="operation",
        description=(
            "The table's name (not its label), such as <code>x_acme_app_thing</code>; "
            "the form <code>Requested Item [sc_req_item]</code> works too."
        ),
        placeholder="x_acme_app_thing",
        pattern_message=(
            "must be a table name of letters, digits and _ (x_acme_app_thing), "
            "or the form Requested Item [sc_req_item]."
        ),
    ),
    "payload": Look(
        label="Payload",
        group="record",
        description=(
            "The fields to write, as a FEEL context: "
            '<code>={short_description: "New laptop for " + employee.name, urgency: "2"}</code>. '
            "Field names are the table's column names; <code>={}</code> writes nothing."
        ),
        kind="Text",
        feel="required",
    ),
    "sysId": Look(
        label="Sys ID",
        group="record",
        description=(
            "The record's <code>sys_id</code>, usually from an earlier task: "
            "<code>=ritm.result.sys_id</code>. For a read, give a Sys ID for one record or "
            "leave it empty and give a query for a list (not both)."
        ),
        feel="optional",
        placeholder="=ritm.result.sys_id",
        pattern_message=(
            "must be a record's sys_id (letters, digits, '.', '_' or '-') "
            "or a FEEL expression such as =ritm.result.sys_id."
        ),
    ),
    "query": Look(
        label="Query",
        group="query",
        description=(
            "An encoded query, sent as written (spaces kept): "
            "<code>active=true^priority=1^ORDERBYDESCsys_created_on</code>. "
            "Empty lists every record the user may read, a page at a time. "
            "Leave it empty when you give a Sys ID. For changes, an extra condition "
            "(<code>priority=1</code>) without ORDERBY."
        ),
        feel="optional",
        placeholder="active=true^priority=1",
    ),
    "cursor": Look(
        label="Cursor",
        group="query",
        description=(
            "Where the feed stands: the <code>cursor</code> of the previous changes result, "
            "passed on unchanged: <code>=cursor</code>. Empty on the first call, which then "
            "starts at Since, or from now."
        ),
        feel="optional",
        placeholder="=cursor",
    ),
    "since": Look(
        label="Since",
        group="query",
        description=(
            "Without a cursor: hand out the changes after this instant, "
            "<code>2026-01-31T08:00:00Z</code> (UTC unless an offset is given). "
            "Empty with no cursor: start from now."
        ),
        feel="optional",
        placeholder="2026-01-31T08:00:00Z",
    ),
    "limit": Look(
        label="Page size",
        group="query",
        description=(
            f"Records per read or per changes call, {DEFAULT_LIMIT} when empty. The worker "
            "allows 1 to 1000 unless its operator changed SERVICENOW_MAX_LIMIT."
        ),
        placeholder=str(DEFAULT_LIMIT),
        pattern_message="must be a whole number from 1 to {ceiling}.",
    ),
    "offset": Look(
        label="Offset",
        group="query",
        description=(
            "Index of the first record of the page, 0 when empty. For the next page add the "
            "page size: <code>=offset + 100</code>; the result's <code>hasMore</code> says "
            "whether there is one."
        ),
        feel="optional",
        placeholder="0",
        pattern_message="must be a whole number of 0 or more, or a FEEL expression.",
    ),
    "fields": Look(
        label="Fields",
        group="query",
        description=(
            "The fields to return, comma-separated (dot-walking allowed): "
            "<code>number,short_description,caller_id.name</code>. Empty returns every field."
        ),
        placeholder="number,short_description,state",
        pattern_message="must be field names separated by commas, such as number,state.",
    ),
    "displayValue": Look(
        label="Display values",
        group="query",
        description="Whether reference and choice fields come back as stored values or as labels.",
        kind="Dropdown",
        value="false",
        choice_labels={
            "false": "Stored values (sys_ids, choice values)",
            "true": "Display values (names, choice labels)",
            "all": "Both (value and display_value per field)",
        },
    ),
    "document": Look(
        label="Documents",
        group="attachment",
        description=(
            "Camunda documents to attach, one or a list, as a FEEL expression: "
            "<code>=invoiceFiles</code> (a form's file picker gives a list). Each becomes one "
            "attachment with the document's file name and type. Or leave it empty and give "
            "content."
        ),
        feel="required",
        placeholder="=invoiceFiles",
    ),
    "content": Look(
        label="Content",
        group="attachment",
        description=(
            "Instead of documents: the file's content, as text or base64 (see encoding), "
            'such as <code>="Customer called at " + string(now())</code>. Needs a file name.'
        ),
        kind="Text",
        feel="optional",
    ),
    "fileName": Look(
        label="File name",
        group="attachment",
        description=(
            "The attachment's file name, such as <code>call-notes.txt</code>: required with "
            "content; renames a single document."
        ),
        feel="optional",
        placeholder="call-notes.txt",
        pattern_message="must be a file name without / or \\, such as invoice.pdf.",
    ),
    "contentType": Look(
        label="Content type",
        group="attachment",
        description=(
            "The MIME type, such as <code>application/pdf</code>. Empty: the document's own type; "
            "for content text/plain, or application/octet-stream with base64."
        ),
        feel="optional",
        placeholder="text/plain",
        pattern_message="must be a MIME type such as application/pdf.",
    ),
    "contentEncoding": Look(
        label="Content encoding",
        group="attachment",
        description="How the content is written: plain text (sent as UTF-8) or base64.",
        kind="Dropdown",
        value="text",
        choice_labels={"text": "Text (UTF-8)", "base64": "Base64"},
    ),
    "attachmentSysId": Look(
        label="Attachment Sys ID",
        group="attachment",
        description=(
            "The attachment's <code>sys_id</code> (from listAttachments or attach): "
            "<code>=attachments.result[1].sys_id</code>. For download, leave it empty to "
            "download every attachment of the record (Sys ID above)."
        ),
        feel="optional",
        placeholder="=attachments.result[1].sys_id",
        pattern_message=(
            "must be an attachment's sys_id or a FEEL expression such as "
            "=attachments.result[1].sys_id."
        ),
    ),
    "maxAttachments": Look(
        label="Most attachments",
        group="attachment",
        description=(
            f"Download of a whole record: at most this many files, {DEFAULT_MAX_ATTACHMENTS} "
            "when empty. More matching attachments fail the job (narrow the query) rather "
            "than drop some silently."
        ),
        placeholder=str(DEFAULT_MAX_ATTACHMENTS),
        pattern_message=f"must be a whole number from 1 to {MAX_ATTACHMENTS_LIMIT}.",
    ),
    "excludeReferenceLink": Look(
        label="Exclude reference links",
        group="query",
        description="Leave out the API link that ServiceNow adds to each reference field.",
        kind="Boolean",
        value=False,
    ),
    "returnAll": Look(
        label="Return all records",
        group="query",
        description=(
            "Read every page of the query (the page size is then the operator's largest, "
            "unless given). More matching records than Max records fails the task: never a "
            "silent cut."
        ),
        kind="Boolean",
        value=False,
    ),
    "maxRecords": Look(
        label="Max records",
        group="query",
        description=(
            f"With Return all records: the most records to read, {DEFAULT_MAX_RECORDS} when "
            "empty; the operator's SERVICENOW_MAX_RECORDS is the ceiling."
        ),
        placeholder=str(DEFAULT_MAX_RECORDS),
        pattern_message="must be a whole number from 1 to {records_ceiling}.",
    ),
    "groupBy": _field_list_look(
        "Group by",
        "One result per value of these fields: <code>assignment_group</code> or "
        "<code>priority,state</code>.",
        "assignment_group",
    ),
    "count": Look(
        label="Count records",
        group="aggregate",
        description="Count the records (of each group).",
        kind="Boolean",
        value=True,
    ),
    "avgFields": _field_list_look(
        "Average of", "Fields to average, such as <code>reassignment_count</code>.", ""
    ),
    "sumFields": _field_list_look("Sum of", "Fields to add up.", ""),
    "minFields": _field_list_look("Minimum of", "Fields whose smallest value to return.", ""),
    "maxFields": _field_list_look("Maximum of", "Fields whose largest value to return.", ""),
    "having": Look(
        label="Having",
        group="aggregate",
        description=(
            "Keep only the groups whose aggregate passes: <code>count^priority^>^3</code> "
            "(aggregate^field^operator^number, several separated by commas)."
        ),
        placeholder="count^priority^>^3",
        pattern_message="must be aggregate^field^operator^number, such as count^priority^>^3.",
    ),
    "orderBy": Look(
        label="Order groups by",
        group="aggregate",
        description=(
            "<code>COUNT^DESC</code> (largest groups first), <code>AVG^field</code>, or a "
            "group-by field; ascending unless ^DESC follows."
        ),
        placeholder="COUNT^DESC",
        pattern_message="must be COUNT, AVG^field, a field name…, each optionally ^DESC.",
    ),
    "requests": Look(
        label="Requests",
        group="batch",
        description=(
            "A FEEL list of requests, each with the inputs of one create, read, update or "
            'delete: <code>=for i in items return {operation: "create", table: '
            '"incident", payload: {short_description: i.title}}</code>. At most 200 unless '
            "the operator changed SERVICENOW_MAX_BATCH. The result holds one entry per request, "
            "in order, and <code>errorCount</code>."
        ),
        kind="Text",
        feel="required",
    ),
}

AUTHENTICATION_TYPE_LOOK: Final = Look(
    label="Type",
    group="authentication",
    description="How the worker signs in to ServiceNow.",
    kind="Dropdown",
)


def _secret_look(label: str, secret_name: str, what: str, *, secret: bool = False) -> Look:
    return Look(
        label=label,
        group="authentication",
        description=(
            f"{what} Use a secret, <code>{{{{secrets.{secret_name}}}}}</code>: the worker reads it "
            f"from its environment (SECRET_{secret_name}) or its secrets directory."
            + (" Anything else typed here is stored in the BPMN file." if secret else "")
        ),
        placeholder=f"{{{{secrets.{secret_name}}}}}",
        secret=secret,
    )


_USERNAME: Final = _secret_look("Username", "snUser", "The integration user.")
_PASSWORD: Final = _secret_look("Password", "snPwd", "The user's password.", secret=True)
_CLIENT_ID: Final = _secret_look(
    "Client ID", "snClientId", "The OAuth client of System OAuth > Application Registry."
)
_CLIENT_SECRET: Final = _secret_look(
    "Client secret", "snClientSecret", "The OAuth client's secret.", secret=True
)
AUTHENTICATION_LOOKS: Final[Mapping[str, AuthenticationLook]] = {
    "basic": AuthenticationLook(
        label="Basic (user and password)",
        fields={"username": _USERNAME, "password": _PASSWORD},
    ),
    "oauth-client-credentials": AuthenticationLook(
        label="OAuth 2.0 client credentials",
        fields={
            "clientId": _CLIENT_ID,
            "clientSecret": _CLIENT_SECRET,
            "scope": Look(
                label="Scope",
                group="authentication",
                description="Optional: the scope to ask the token for; empty asks for none.",
                placeholder="useraccount",
            ),
        },
    ),
    "oauth-password": AuthenticationLook(
        label="OAuth 2.0 password grant",
        fields={
            "clientId": _CLIENT_ID,
            "clientSecret": _CLIENT_SECRET,
            "username": _USERNAME,
            "password": _PASSWORD,
        },
    ),
    "api-key": AuthenticationLook(
        label="API key (x-sn-apikey)",
        fields={
            "apiKey": _secret_look(
                "API key",
                "snApiKey",
                "A REST API key of the instance (plugin API Key and HMAC Authentication).",
                secret=True,
            ),
        },
    ),
    "bearer": AuthenticationLook(
        label="Bearer token",
        fields={
            "token": _secret_look(
                "Token", "snToken", "An access token obtained elsewhere.", secret=True
            ),
        },
    ),
}

HEADER_LOOKS: Final[Mapping[str, HeaderLook]] = {
    "idempotencyField": HeaderLook(
        label="Idempotency field",
        group="record",
        description=(
            "Optional: a field of the table, such as <code>correlation_id</code>, that receives a "
            "key unique to this task instance. A create delivered twice then returns the record "
            "made the first time instead of inserting another."
        ),
        placeholder="correlation_id",
        pattern_message="must be a field name of letters, digits and _, such as correlation_id.",
        operations=frozenset({Operation.CREATE, Operation.BATCH}),
    ),
    "resultVariable": HeaderLook(
        label="Result variable",
        group="output",
        description=(
            "Process variable that receives the response: "
            "<code>{status, result}</code>, plus <code>count</code>, <code>totalCount</code> "
            "and <code>hasMore</code> for a read by query; <code>count</code> and "
            "<code>stats</code>, or <code>groups</code>, for an aggregate; "
            "<code>errorCount</code> for a batch."
        ),
        placeholder="ritm",
        pattern_message="must be a variable name: a letter or _, then letters, digits or _.",
    ),
    "resultExpression": HeaderLook(
        label="Result expression",
        group="output",
        description=(
            "FEEL that maps the response to process variables; it must give a context: "
            "<code>={ritmNumber: result.number, ritmSysId: result.sys_id}</code>."
        ),
        kind="Text",
        feel="required",
    ),
    "errorExpression": HeaderLook(
        label="Error expression",
        group="error",
        description=(
            "FEEL evaluated after the call, with <code>error.code</code> such as "
            '<code>"404"</code> or <code>"INVALID_INPUT"</code>: '
            '<code>=if error.code = "404" then bpmnError("NOT_FOUND", error.message) '
            "else null</code> throws a BPMN error a boundary event can catch."
        ),
        kind="Text",
        feel="required",
    ),
    "retryBackoff": HeaderLook(
        label="Retry backoff",
        group="retries",
        description=(
            "ISO-8601 duration to wait before retrying a temporary failure "
            "(429, 5xx, timeout); ServiceNow's Retry-After wins when longer."
        ),
        placeholder="PT30S",
        pattern_message="must be an ISO-8601 duration such as PT30S or PT5M.",
    ),
}

RETRIES_LOOK: Final = Look(
    label="Retries",
    group="retries",
    description="How often Zeebe hands out the job again after a temporary failure.",
    value=DEFAULT_RETRIES,
    pattern_message="must be a whole number of 0 or more.",
)

# Patterns the model names; the template checks the same (before any secret is resolved, so the
# instance may also be a secret placeholder).
SECRET_PLACEHOLDER: Final = PLACEHOLDER.pattern
INSTANCE_URL: Final = r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?"
INSTANCE_PATTERN: Final = rf"^({INSTANCE_NAME.pattern}|{INSTANCE_URL}|{SECRET_PLACEHOLDER})$"
VARIABLE_NAME_PATTERN: Final = f"^{VARIABLE_NAME.pattern}$"
# Patterns of what the model checks in code (no pattern constant to take over).
OFFSET_PATTERN: Final = r"^[0-9]{1,9}$"
IDEMPOTENCY_FIELD_PATTERN: Final = r"^[A-Za-z0-9_]+$"
DURATION_PATTERN: Final = (
    r"^P(?!$)([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?"
    r"(T(?=[0-9])([0-9]+H)?([0-9]+M)?([0-9]+([.,][0-9]+)?S)?)?$"
)
RETRIES_PATTERN: Final = r"^[0-9]+$"


def limit_ceiling(setting: str = "servicenow_max_limit") -> int:
    """The largest value any worker accepts: the upper bound of a setting (SERVICENOW_MAX_LIMIT)."""
    bounds = [m.le for m in Settings.model_fields[setting].metadata if isinstance(m, Le)]
    if len(bounds) != 1 or not isinstance(bounds[0], int):
        raise TemplateError(f"settings: {setting} needs one integer upper bound (le=…)")
    return bounds[0]


def limit_pattern(ceiling: int) -> str:
    """1 to `ceiling` (a power of ten): the template leaves the operator's own maximum to the worker."""
    digits = len(str(ceiling)) - 1
    if ceiling != 10**digits or digits < 1:
        raise TemplateError(f"the limit ceiling {ceiling} is not a power of ten")
    return rf"^([1-9][0-9]{{0,{digits - 1}}}|{ceiling})$"


PATTERNS: Final[Mapping[str, str]] = {
    "instance": INSTANCE_PATTERN,
    "table": TABLE_PATTERN,
    "sysId": SYS_ID_PATTERN,
    "limit": limit_pattern(limit_ceiling()),
    "maxRecords": limit_pattern(limit_ceiling("servicenow_max_records")),
    "offset": OFFSET_PATTERN,
    "fields": FIELDS_PATTERN,
    "groupBy": FIELDS_PATTERN,
    "avgFields": FIELDS_PATTERN,
    "sumFields": FIELDS_PATTERN,
    "minFields": FIELDS_PATTERN,
    "maxFields": FIELDS_PATTERN,
    "having": HAVING_PATTERN,
    "orderBy": ORDER_BY_PATTERN,
    "idempotencyField": IDEMPOTENCY_FIELD_PATTERN,
    "fileName": r"^[^/\\]{1,255}$",
    "contentType": f"^{MEDIA_TYPE.pattern}$",
    "attachmentSysId": SYS_ID_PATTERN,
    "maxAttachments": rf"^([1-9][0-9]?|{MAX_ATTACHMENTS_LIMIT})$",
    "resultVariable": VARIABLE_NAME_PATTERN,
    "retryBackoff": DURATION_PATTERN,
    "retries": RETRIES_PATTERN,
}
# Values the model allows, for the dropdowns.
ALLOWED_VALUES: Final[Mapping[str, tuple[str, ...]]] = {
    "operation": tuple(OPERATION_NAMES.values()),
    "displayValue": DISPLAY_VALUES,
    "contentEncoding": ("text", "base64"),
}
# Needed by the worker's default SERVICENOW_URL_TEMPLATE although the model lets it be absent.
REQUIRED_IN_MODELER: Final = frozenset({"instance"})

ICON_SVG: Final = (
    "<svg xmlns='http://www.w3.org/2000/svg' width='32' height='32' viewBox='0 0 32 32'>"
    "<rect x='1' y='1' width='30' height='30' rx='7' fill='#17695a'/>"
    "<rect x='6' y='8' width='20' height='16' rx='2' fill='#ffffff'/>"
    "<rect x='6' y='8' width='20' height='4.5' rx='2' fill='#8fe0c4'/>"
    "<path d='M6 16.5h20M6 20.5h20M13 12.5V24' stroke='#17695a' stroke-width='1.3'/>"
    "</svg>"
)
# Single quotes inside, so the data URI also fits a BPMN attribute (zeebe:modelerTemplateIcon).
ICON: Final = "data:image/svg+xml," + quote(ICON_SVG, safe=" =:/',.")


class TemplateError(Exception):
    """The model and the presentation here do not fit together."""


def build_template() -> dict[str, Any]:
    """The element template, as the JSON object the Modeler reads."""
    _check_coverage()
    properties = [
        {
            "type": "Hidden",
            "value": JOB_TYPE,
            "binding": {"type": "zeebe:taskDefinition", "property": "type"},
        },
        *_input_properties(),
        *_authentication_properties(),
        *_header_properties(),
        _property(
            "retries",
            RETRIES_LOOK,
            {"type": "zeebe:taskDefinition", "property": "retries"},
            required=True,
        ),
    ]
    group_order = {group.id: index for index, group in enumerate(GROUPS)}
    properties.sort(key=lambda prop: group_order.get(prop.get("group", ""), -1))
    return {
        "$schema": SCHEMA_URL,
        "name": "ServiceNow",
        "id": TEMPLATE_ID,
        "version": TEMPLATE_VERSION,
        "description": (
            "Create, read, update or delete records in any ServiceNow table; read every page, "
            "count and aggregate, or send several requests at once; attach Camunda documents to "
            "records and download attachments as documents"
        ),
        "keywords": [
            "servicenow",
            "itsm",
            "incident",
            "requested item",
            "table api",
            "crud",
            "aggregate",
            "batch",
            "attachment",
            "documents",
        ],
        "documentationRef": DOCUMENTATION_URL,
        "category": {"id": "connectors", "name": "Connectors"},
        "appliesTo": ["bpmn:Task"],
        "elementType": {"value": "bpmn:ServiceTask"},
        "engines": {"camunda": "^8.8"},
        "icon": {"contents": ICON},
        "groups": [_group(group) for group in GROUPS],
        "properties": properties,
    }


def render() -> str:
    """The template file's text: stable key order, two-space indent, a final newline."""
    return json.dumps(build_template(), indent=2, ensure_ascii=False) + "\n"


def _check_coverage() -> None:
    problems: list[str] = []
    for name in INPUT_NAMES:
        if name != "authentication" and name not in INPUT_LOOKS:
            problems.append(f"input {name!r} of the model has no look in INPUT_LOOKS")
    problems += [
        f"INPUT_LOOKS has {name!r}, which the worker does not read"
        for name in INPUT_LOOKS
        if name not in INPUT_NAMES
    ]
    problems += [
        f"header {name!r} of the model has no look in HEADER_LOOKS"
        for name in HEADER_ONLY_NAMES
        if name not in HEADER_LOOKS
    ]
    problems += [
        f"HEADER_LOOKS has {name!r}, which the worker does not read"
        for name in HEADER_LOOKS
        if name not in HEADER_ONLY_NAMES
    ]
    model_types = authentication_types()
    for kind, model in model_types.items():
        auth_look = AUTHENTICATION_LOOKS.get(kind)
        if auth_look is None:
            problems.append(f"authentication type {kind!r} has no look in AUTHENTICATION_LOOKS")
            continue
        fields = [name for name in model_field_names(model) if name != "type"]
        problems += [
            f"authentication field {kind}.{name} has no look"
            for name in fields
            if name not in auth_look.fields
        ]
        problems += [
            f"AUTHENTICATION_LOOKS has {kind}.{name}, which the model does not know"
            for name in auth_look.fields
            if name not in fields
        ]
    problems += [
        f"AUTHENTICATION_LOOKS has type {kind!r}, which the model does not know"
        for kind in AUTHENTICATION_LOOKS
        if kind not in model_types
    ]
    for name, look in {**INPUT_LOOKS, **HEADER_LOOKS}.items():
        if (look.pattern_message is None) != (name not in PATTERNS):
            problems.append(f"{name}: a pattern needs a pattern_message and the other way round")
        allowed = ALLOWED_VALUES.get(name)
        if look.kind == "Dropdown" and (
            allowed is None or set(look.choice_labels or {}) != set(allowed)
        ):
            problems.append(f"{name}: the dropdown's choices must be the model's {allowed}")
    problems += [
        f"common table {table!r} is not a valid table name"
        for _, table in COMMON_TABLES
        if not TABLE_NAME.fullmatch(table)
    ]
    if problems:
        raise TemplateError("; ".join(problems))


def authentication_types() -> dict[str, type[BaseModel]]:
    """The model's authentication types, by the value of their `type` field."""
    annotation: Any = Authentication
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        classes = get_args(annotation)
    else:
        classes = (annotation,)
    found: dict[str, type[BaseModel]] = {}
    for model in classes:
        (kind,) = get_args(model.model_fields["type"].annotation)
        found[kind] = model
    return found


def model_field_names(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the names a job uses: the alias where there is one."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _input_properties() -> Iterator[dict[str, Any]]:
    for name, look in INPUT_LOOKS.items():
        if name == "table":
            yield from _table_properties(look)
            continue
        used_by = USED_BY[name]
        required_for = REQUIRED_FOR.get(name, frozenset())
        if name in REQUIRED_IN_MODELER or _model_requires(name):
            required_for = used_by
        binding = {"type": "zeebe:input", "name": name}
        # One property per case: where the model requires the input, and where it is optional.
        if required_for:
            yield _property(
                name, look, binding, required=True, condition=_operations_condition(required_for)
            )
        if used_by - required_for:
            optional_id = f"{name}Optional" if required_for else name
            yield _property(
                optional_id,
                look,
                binding,
                required=False,
                condition=_operations_condition(used_by - required_for),
                pattern_name=name,
            )


def _model_requires(name: str) -> bool:
    """Whether every model that reads the input requires it (then every task shows it required)."""
    models = {OPERATIONS[operation].model for operation in USED_BY[name]}
    return all(model_field_names(model)[name].is_required() for model in models)


def _table_properties(look: Look) -> Iterator[dict[str, Any]]:
    choices = [{"name": f"{label} [{table}]", "value": table} for label, table in COMMON_TABLES]
    choices.append({"name": "Other (type its name)", "value": OTHER_TABLE})
    operations = _operations_condition(USED_BY["table"])

    def when(condition: dict[str, Any]) -> dict[str, Any]:
        return {"allMatch": [operations, condition]} if operations else condition

    yield {
        "id": TABLE_CHOICE_ID,
        "label": "Table",
        "description": "The ServiceNow table of the record. Pick Other for any other table.",
        "group": look.group,
        "type": "Dropdown",
        "value": COMMON_TABLES[0][1],
        "choices": choices,
        # Only the Modeler reads this: it remembers the choice. The worker reads `table`.
        "binding": {"type": "zeebe:property", "name": TABLE_CHOICE_ID},
        **({"condition": operations} if operations else {}),
    }
    for _, table in COMMON_TABLES:
        yield {
            "id": f"table.{table}",
            "group": look.group,
            "type": "Hidden",
            "value": table,
            "binding": {"type": "zeebe:input", "name": "table"},
            "condition": when({"property": TABLE_CHOICE_ID, "equals": table}),
        }
    yield _property(
        "table",
        look,
        {"type": "zeebe:input", "name": "table"},
        required=True,
        condition=when({"property": TABLE_CHOICE_ID, "equals": OTHER_TABLE}),
    )


def _authentication_properties() -> Iterator[dict[str, Any]]:
    models = authentication_types()
    kinds = list(AUTHENTICATION_LOOKS)
    yield _property(
        "authenticationType",
        AUTHENTICATION_TYPE_LOOK,
        {"type": "zeebe:input", "name": "authentication.type"},
        required=True,
        value=kinds[0],
        choices=[(AUTHENTICATION_LOOKS[kind].label, kind) for kind in kinds],
    )
    for kind in kinds:
        for field, look in AUTHENTICATION_LOOKS[kind].fields.items():
            yield _property(
                f"authentication.{kind}.{field}",
                look,
                {"type": "zeebe:input", "name": f"authentication.{field}"},
                required=model_field_names(models[kind])[field].is_required(),
                condition={"property": "authenticationType", "equals": kind},
            )


def _header_properties() -> Iterator[dict[str, Any]]:
    for name, look in HEADER_LOOKS.items():
        value = _iso_duration(DEFAULT_RETRY_BACKOFF) if name == "retryBackoff" else None
        yield _property(
            name,
            look,
            {"type": "zeebe:taskHeader", "key": name},
            required=False,
            optional=True,
            value=value,
            condition=_operations_condition(look.operations),
        )


def _property(
    property_id: str,
    look: Look,
    binding: dict[str, str],
    *,
    required: bool,
    optional: bool = False,
    condition: dict[str, Any] | None = None,
    value: str | bool | None = None,
    choices: Sequence[tuple[str, str]] | None = None,
    pattern_name: str | None = None,
) -> dict[str, Any]:
    prop: dict[str, Any] = {"id": property_id, "label": look.label}
    if look.description:
        prop["description"] = look.description
    prop["group"] = look.group
    prop["type"] = look.kind
    value = look.value if value is None else value
    if value is not None:
        prop["value"] = value
    if look.placeholder is not None:
        prop["placeholder"] = look.placeholder
    if look.feel is not None:
        prop["feel"] = look.feel
    if optional:
        prop["optional"] = True
    if look.secret:
        prop["secret"] = True
    if look.kind == "Dropdown":
        if choices is None:
            labels = look.choice_labels or {}
            choices = [(labels[v], v) for v in ALLOWED_VALUES[pattern_name or property_id]]
        prop["choices"] = [{"name": name, "value": v} for name, v in choices]
    constraints = _constraints(pattern_name or property_id, look, required=required)
    if constraints:
        # The schema wants an optional property to say that it may be empty.
        prop["constraints"] = {"notEmpty": False, **constraints} if optional else constraints
    prop["binding"] = binding
    if condition is not None:
        prop["condition"] = condition
    return prop


def _constraints(name: str, look: Look, *, required: bool) -> dict[str, Any]:
    constraints: dict[str, Any] = {}
    if required and look.kind in ("String", "Text"):
        constraints["notEmpty"] = True
    pattern = PATTERNS.get(name)
    if pattern is not None:
        # An empty optional field is fine, and the Modeler checks no pattern on FEEL (`=…`).
        prefix = ("" if required else "^$|") + ("^=|" if look.feel else "")
        message = (
            (look.pattern_message or "")
            .replace("{ceiling}", str(limit_ceiling()))
            .replace("{records_ceiling}", str(limit_ceiling("servicenow_max_records")))
        )
        constraints["pattern"] = {"value": prefix + pattern, "message": message}
    return constraints


def _operations_condition(operations: frozenset[Operation]) -> dict[str, Any] | None:
    if operations == ALL_OPERATIONS:
        return None
    values = [OPERATION_NAMES[op] for op in Operation if op in operations]
    if len(values) == 1:
        return {"property": "operation", "equals": values[0]}
    return {"property": "operation", "oneOf": values}


def _group(group: Group) -> dict[str, str]:
    result = {"id": group.id, "label": group.label}
    if group.tooltip:
        result["tooltip"] = group.tooltip
    return result


def _iso_duration(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    if seconds != duration.total_seconds() or seconds <= 0:
        raise TemplateError(f"cannot write {duration} as a whole-second ISO-8601 duration")
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(hours, "H"), (minutes, "M"), (seconds, "S")]
    return "PT" + "".join(f"{n}{unit}" for n, unit in parts if n)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m servicenow_worker.template",
        description="Write the Camunda Modeler element template generated from the input model.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 when the file differs from what would be generated",
    )
    parser.add_argument("--output", type=Path, default=TEMPLATE_PATH, help="%(default)s")
    args = parser.parse_args(argv)
    path: Path = args.output
    try:
        text = render()
    except TemplateError as error:
        sys.stderr.write(f"the template cannot be generated: {error}\n")
        return 2
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"{path} (committed)",
            f"{path} (generated)",
        )
        sys.stderr.writelines(diff)
        sys.stderr.write(f"{path} is stale: run python -m servicenow_worker.template\n")
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
