"""The job's inputs (docs/contract.md §2-§3): gathered from headers and variables, then validated.

Everything a BPMN author can get wrong is caught here, before a request is built, and reported as
an `InputError` naming the field. The rules and patterns below are also what the element template
is generated from (`template.py`), so the Modeler checks the same things the worker does.

`USED_BY` is the one table of which operation reads which input: the operation is resolved first,
then only its own inputs are gathered and validated, so a variable left by an earlier task (a
`sysId` reaching a create) changes nothing. Each operation family validates with its own model
(`operations/`); the models share the destination (`DestinationInputs`) and the validators here.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from servicenow_worker import feel
from servicenow_worker.errors import InputError


class Operation(StrEnum):
    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    DELETE = "delete"
    CHANGES = "changes"
    AGGREGATE = "aggregate"
    BATCH = "batch"
    # Attachments and Camunda documents (docs/contract.md §11); names in lower case, as resolved.
    ATTACH = "attach"
    LIST_ATTACHMENTS = "listattachments"
    DOWNLOAD = "download"
    DELETE_ATTACHMENT = "deleteattachment"


ALL_OPERATIONS: Final = frozenset(Operation)
OPERATION_VALUES: Final = frozenset(op.value for op in Operation)
WRITE_OPERATIONS: Final = frozenset({Operation.CREATE, Operation.UPDATE})
LIST_OPERATIONS: Final = frozenset({Operation.READ, Operation.CHANGES})
# The Table API's operations: one request each, alone or inside a batch.
TABLE_OPERATIONS: Final = frozenset(
    {Operation.CREATE, Operation.READ, Operation.UPDATE, Operation.DELETE}
)
# The operations that return records, shaped by fields, displayValue, excludeReferenceLink.
RECORD_OUTPUT_OPERATIONS: Final = TABLE_OPERATIONS - {Operation.DELETE} | {Operation.CHANGES}
READ: Final = frozenset({Operation.READ})
AGGREGATE: Final = frozenset({Operation.AGGREGATE})
ATTACHMENT_LISTS: Final = frozenset({Operation.LIST_ATTACHMENTS, Operation.DOWNLOAD})

# Input name -> the operations that use it (others ignore it), and those that require it.
USED_BY: Final[Mapping[str, frozenset[Operation]]] = {
    "instance": ALL_OPERATIONS,
    "authentication": ALL_OPERATIONS,
    "operation": ALL_OPERATIONS,
    # a batch has no table of its own: each of its requests names one; an attachment is named
    # by its own sys_id
    "table": ALL_OPERATIONS - {Operation.BATCH, Operation.DELETE_ATTACHMENT},
    "payload": WRITE_OPERATIONS,
    "query": LIST_OPERATIONS | AGGREGATE | ATTACHMENT_LISTS,
    "sysId": frozenset({Operation.READ, Operation.UPDATE, Operation.DELETE, Operation.ATTACH})
    | ATTACHMENT_LISTS,
    "fields": RECORD_OUTPUT_OPERATIONS,
    "limit": LIST_OPERATIONS | {Operation.LIST_ATTACHMENTS},
    "offset": READ | {Operation.LIST_ATTACHMENTS},
    "cursor": frozenset({Operation.CHANGES}),
    "since": frozenset({Operation.CHANGES}),
    "displayValue": RECORD_OUTPUT_OPERATIONS | AGGREGATE,
    "excludeReferenceLink": RECORD_OUTPUT_OPERATIONS,
    "returnAll": READ,
    "maxRecords": READ,
    "groupBy": AGGREGATE,
    "count": AGGREGATE,
    "avgFields": AGGREGATE,
    "sumFields": AGGREGATE,
    "minFields": AGGREGATE,
    "maxFields": AGGREGATE,
    "having": AGGREGATE,
    "orderBy": AGGREGATE,
    "requests": frozenset({Operation.BATCH}),
    "document": frozenset({Operation.ATTACH}),
    "content": frozenset({Operation.ATTACH}),
    "fileName": frozenset({Operation.ATTACH}),
    "contentType": frozenset({Operation.ATTACH}),
    "contentEncoding": frozenset({Operation.ATTACH}),
    "attachmentSysId": frozenset({Operation.DOWNLOAD, Operation.DELETE_ATTACHMENT}),
    "maxAttachments": frozenset({Operation.DOWNLOAD}),
}
REQUIRED_FOR: Final[Mapping[str, frozenset[Operation]]] = {
    "payload": WRITE_OPERATIONS,
    "sysId": frozenset(
        {Operation.UPDATE, Operation.DELETE, Operation.ATTACH, Operation.LIST_ATTACHMENTS}
    ),
    "requests": frozenset({Operation.BATCH}),
    "attachmentSysId": frozenset({Operation.DELETE_ATTACHMENT}),
}
INPUT_NAMES: Final = tuple(USED_BY)
HEADER_ONLY_NAMES: Final = (
    "resultVariable",
    "resultExpression",
    "errorExpression",
    "retryBackoff",
    "idempotencyField",
)

TABLE_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,80}")
# "Requested Item [sc_req_item]", the form Camunda's own ServiceNow template uses.
TABLE_LABEL_FORM: Final = re.compile(r".*\[\s*([A-Za-z0-9_]{1,80})\s*\]\s*")
TABLE_PATTERN: Final = r"^([A-Za-z0-9_]{1,80}|.*\[\s*[A-Za-z0-9_]{1,80}\s*\]\s*)$"
SYS_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,255}")
SYS_ID_PATTERN: Final = r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,255}$"
INSTANCE_NAME: Final = re.compile(r"[A-Za-z0-9-]{1,63}")
FIELD_NAME: Final = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
FIELDS_PATTERN: Final = rf"^\s*{FIELD_NAME.pattern}(\s*,\s*{FIELD_NAME.pattern})*\s*$"
VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_LIMIT: Final = 100
DEFAULT_MAX_RECORDS: Final = 1000
# Operator ceilings (settings SERVICENOW_MAX_RECORDS, SERVICENOW_MAX_BATCH), docs/contract.md §9.
DEFAULT_SERVICENOW_MAX_RECORDS: Final = 10_000
DEFAULT_SERVICENOW_MAX_BATCH: Final = 200
DEFAULT_RETRY_BACKOFF: Final = timedelta(seconds=30)
DISPLAY_VALUES: Final = ("false", "true", "all")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class InputRules:
    """What the operator allows (from settings), applied while validating a job's inputs."""

    url_template: str
    allowed_hosts: tuple[str, ...]
    max_limit: int
    max_records: int = DEFAULT_SERVICENOW_MAX_RECORDS
    max_batch: int = DEFAULT_SERVICENOW_MAX_BATCH

    @property
    def needs_instance(self) -> bool:
        return "{instance}" in self.url_template


def gather_inputs(headers: Mapping[str, Any], variables: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs the job's operation reads, each from its header, else its variable.

    An empty string counts as absent. Inputs the operation does not use are left out, and with
    no known operation only `operation` itself is gathered (its validation names the problem).
    """
    if _present(headers.get("authentication")):
        raise InputError(
            "authentication",
            "must come from an input mapping (a variable), never from a task header",
        )
    operation = resolve_operation(headers, variables)
    names = [n for n in INPUT_NAMES if operation in USED_BY[n]] if operation else ["operation"]
    gathered: dict[str, Any] = {}
    for name in names:
        value = _input_value(name, headers, variables)
        if value is not None:
            gathered[name] = value
    return gathered


def resolve_operation(headers: Mapping[str, Any], variables: Mapping[str, Any]) -> Operation | None:
    """The job's operation (header first, any case), or None when it is absent or unknown."""
    value = _input_value("operation", headers, variables)
    return operation_named(value) if isinstance(value, str) else None


def operation_named(text: str) -> Operation | None:
    lowered = text.strip().lower()
    return Operation(lowered) if lowered in OPERATION_VALUES else None


# How the documentation and messages write the operations (any case is accepted).
OPERATION_NAMES: Final[Mapping[Operation, str]] = {
    **{op: op.value for op in Operation},
    Operation.LIST_ATTACHMENTS: "listAttachments",
    Operation.DELETE_ATTACHMENT: "deleteAttachment",
}


def unknown_operation(value: Any) -> str:
    return f"must be one of {', '.join(OPERATION_NAMES.values())} (got {value!r})"


def _input_value(name: str, headers: Mapping[str, Any], variables: Mapping[str, Any]) -> Any:
    for source in (headers, variables):
        value = source.get(name)
        if _present(value):
            return value
    return None


def _present(value: Any) -> bool:
    return value is not None and value != ""


class BasicAuthentication(BaseModel):
    """ServiceNow user and password, sent as HTTP basic authentication."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["basic"] = "basic"
    username: Annotated[str, Field(min_length=1)]
    password: Annotated[SecretStr, Field(min_length=1)]


# An API key or token goes into a header as it is: printable ASCII, no spaces.
HEADER_TOKEN: Final = re.compile(r"[\x21-\x7e]+")


class _OAuthClient(BaseModel):
    """An OAuth application registry entry of the instance (System OAuth > Application Registry)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    client_id: Annotated[str, Field(min_length=1, alias="clientId")]
    client_secret: Annotated[SecretStr, Field(min_length=1, alias="clientSecret")]


class OAuthClientCredentials(_OAuthClient):
    """OAuth 2.0 client credentials grant: the token acts as the registry's OAuth Application User."""

    type: Literal["oauth-client-credentials"]
    scope: str | None = None

    @field_validator("scope", mode="before")
    @classmethod
    def _empty_scope_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class OAuthPassword(_OAuthClient):
    """OAuth 2.0 password grant: the token acts as `username`; ServiceNow adds a refresh token."""

    type: Literal["oauth-password"]
    username: Annotated[str, Field(min_length=1)]
    password: Annotated[SecretStr, Field(min_length=1)]


class ApiKeyAuthentication(BaseModel):
    """A REST API key (plugin com.glide.tokenbased_auth), sent as the header `x-sn-apikey`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: Literal["api-key"]
    api_key: Annotated[SecretStr, Field(alias="apiKey")]

    @field_validator("api_key", mode="before")
    @classmethod
    def _header_value(cls, value: Any) -> Any:
        return _token_text(value, "the key alone")


class BearerAuthentication(BaseModel):
    """An access token obtained elsewhere, sent as `Authorization: Bearer <token>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["bearer"]
    token: SecretStr

    @field_validator("token", mode="before")
    @classmethod
    def _header_value(cls, value: Any) -> Any:
        if isinstance(value, str) and value[:7].lower() == "bearer ":
            value = value[7:]
        return _token_text(value, "the token alone (a 'Bearer ' prefix is allowed)")


def _token_text(value: Any, what: str) -> Any:
    # Never echo the value: it is a credential.
    if not isinstance(value, str) or not HEADER_TOKEN.fullmatch(value.strip()):
        raise ValueError(f"must be {what}: printable characters without spaces")
    return value.strip()


Authentication = Annotated[
    BasicAuthentication
    | OAuthClientCredentials
    | OAuthPassword
    | ApiKeyAuthentication
    | BearerAuthentication,
    Field(discriminator="type"),
]
AUTHENTICATION_TYPES: Final = (
    "basic",
    "oauth-client-credentials",
    "oauth-password",
    "api-key",
    "bearer",
)


class DestinationInputs(BaseModel):
    """What every operation's inputs hold: where the calls go, as whom, and the operation.

    Each operation family's model extends this one; `base_url` is resolved from `instance` and
    the operator's rules when the model is validated.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    base_url: str = ""
    instance: str | None = None
    authentication: Authentication
    operation: Operation

    @field_validator("authentication", mode="before")
    @classmethod
    def _authentication_object(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value  # validated already: the job's, for each request of its batch
        if not isinstance(value, Mapping):
            raise ValueError('must be an object such as {"type": "basic", "username": …}')
        kind = value.get("type") or "basic"
        if isinstance(kind, str):
            kind = kind.strip().lower()
        if kind not in AUTHENTICATION_TYPES:
            raise ValueError(
                f"has type {kind!r}, which is not supported; use one of "
                + ", ".join(AUTHENTICATION_TYPES)
            )
        return {**value, "type": kind}

    @field_validator("operation", mode="before")
    @classmethod
    def _operation_any_case(cls, value: Any) -> Any:
        operation = operation_named(value) if isinstance(value, str) else None
        if operation is None:
            raise ValueError(unknown_operation(value))
        return operation

    @model_validator(mode="after")
    def _required_and_destination(self, info: ValidationInfo) -> Self:
        for name, operations in REQUIRED_FOR.items():
            if self.operation in operations and getattr(self, _field_name(self, name)) is None:
                raise InputError(name, f"is required for {OPERATION_NAMES[self.operation]}")
        object.__setattr__(self, "base_url", resolve_base_url(self.instance, _rules(info)))
        return self


def _field_name(model: BaseModel, alias: str) -> str:
    for name, info in type(model).model_fields.items():
        if alias in (name, info.alias):
            return name
    raise TypeError(f"{type(model).__name__} has no input {alias}, which REQUIRED_FOR names")


def _table_name(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if TABLE_NAME.fullmatch(text):
            return text
        label_form = TABLE_LABEL_FORM.fullmatch(text)
        if label_form:
            return label_form.group(1)
    raise ValueError(
        f"must be a table name of letters, digits and _ such as incident, "
        f"or the form 'Incident [incident]' (got {value!r})"
    )


def parsed_json(value: Any) -> Any:
    """A string holding JSON (typed into a field) as what it holds; anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as error:
        raise ValueError(f"is not valid JSON: {error.args[0]}") from None


def _json_object(value: Any) -> Any:
    value = parsed_json(value)
    if not isinstance(value, dict):
        raise ValueError('must be a JSON object of record fields, e.g. {"short_description": "…"}')
    return value


def _query_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an encoded query string such as active=true^priority=1")
    return value


def _sys_id(value: Any) -> Any:
    if not isinstance(value, str) or not SYS_ID.fullmatch(value) or value in {".", ".."}:
        raise ValueError(
            f"must be a record's sys_id: letters, digits, '.', '_' or '-' (got {value!r})"
        )
    return value


def _field_list(value: Any) -> Any:
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError("must be a comma-separated list of field names, e.g. number,state")
    cleaned = tuple(name.strip() for name in names if name.strip())
    bad = [name for name in cleaned if not FIELD_NAME.fullmatch(name)]
    if bad or not cleaned:
        raise ValueError(f"must hold field names such as number or caller_id.name (got {value!r})")
    return cleaned


def counted(value: Any, ceiling: int, why: str = "") -> int:
    """A whole number from 1 to `ceiling`, as an integer input gives it (text, a number)."""
    number = _integer(value)
    if number is None or not 1 <= number <= ceiling:
        raise ValueError(f"must be an integer from 1 to {ceiling} (got {value!r}{why})")
    return number


def _page_size(value: Any, info: ValidationInfo) -> int:
    return counted(value, _rules(info).max_limit)


def _record_count(value: Any, info: ValidationInfo) -> int:
    why = "; the operator's SERVICENOW_MAX_RECORDS is the ceiling"
    return counted(value, _rules(info).max_records, why)


def _not_negative(value: Any) -> int:
    number = _integer(value)
    if number is None or number < 0:
        raise ValueError(f"must be an integer of 0 or more (got {value!r})")
    return number


def _display_value(value: Any) -> Any:
    text = str(value).lower() if isinstance(value, str | bool) else None
    if text not in DISPLAY_VALUES:
        raise ValueError(f"must be false, true or all (got {value!r})")
    return text


def _boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise ValueError(f"must be true or false (got {value!r})")


# The input types every operation's model shares: one rule each, whichever operation reads it.
TableName = Annotated[str, BeforeValidator(_table_name)]
JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object)]
EncodedQuery = Annotated[str, BeforeValidator(_query_text)]
SysId = Annotated[str, BeforeValidator(_sys_id)]
FieldList = Annotated[tuple[str, ...], BeforeValidator(_field_list)]
PageSize = Annotated[int, BeforeValidator(_page_size)]
RecordCount = Annotated[int, BeforeValidator(_record_count)]
NotNegative = Annotated[int, BeforeValidator(_not_negative)]
DisplayValue = Annotated[Literal["false", "true", "all"], BeforeValidator(_display_value)]
Flag = Annotated[bool, BeforeValidator(_boolean)]


class RecordRequest(DestinationInputs):
    """A table operation's validated inputs: everything needed to build one Table API request."""

    table: TableName
    payload: JsonObject | None = None
    query: EncodedQuery | None = None
    sys_id: SysId | None = Field(default=None, alias="sysId")
    fields: FieldList | None = None
    limit: PageSize = DEFAULT_LIMIT
    offset: NotNegative = 0
    display_value: DisplayValue | None = Field(default=None, alias="displayValue")
    exclude_reference_link: Flag | None = Field(default=None, alias="excludeReferenceLink")
    # read by query only: every page (docs/contract.md §9)
    return_all: Flag = Field(default=False, alias="returnAll")
    max_records: RecordCount = Field(default=DEFAULT_MAX_RECORDS, alias="maxRecords")

    @model_validator(mode="after")
    def _one_record_or_a_list(self, info: ValidationInfo) -> Self:
        if self.operation is Operation.READ and self.sys_id is not None:
            if self.query is not None:
                raise InputError(
                    "query",
                    "cannot be combined with sysId: give sysId for one record or query for a list",
                )
            if self.return_all:
                raise InputError(
                    "returnAll",
                    "reads every record of a query: leave sysId empty (one record has one page)",
                )
        if self.return_all and "limit" not in self.model_fields_set:
            # every page is fetched anyway: the fewest round trips the operator allows
            object.__setattr__(self, "limit", _rules(info).max_limit)
        return self


def _rules(info: ValidationInfo) -> InputRules:
    rules = info.context
    if not isinstance(rules, InputRules):
        raise TypeError("operation inputs are validated with InputRules as their context")
    return rules


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,9}\s*", value):
        return int(value)
    return None


def resolve_base_url(instance: str | None, rules: InputRules) -> str:
    """Where the calls go: the URL template, filled with a bare instance name, or an allowed URL."""
    if instance is None:
        if rules.needs_instance:
            raise InputError(
                "instance",
                "is required: the instance name (dev12345) or its URL (https://acme.service-now.com)",
            )
        return rules.url_template
    instance = instance.strip()
    if INSTANCE_NAME.fullmatch(instance):
        base_url = rules.url_template.replace("{instance}", instance.lower())
    else:
        base_url = _allowed_instance_url(instance, rules.allowed_hosts)
    return base_url if rules.needs_instance else rules.url_template


def _allowed_instance_url(instance: str, allowed_hosts: tuple[str, ...]) -> str:
    try:
        parts = urlsplit(instance)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme != "https"
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in {"", "/"}
        or parts.query
        or parts.fragment
        or not re.fullmatch(r"[a-z0-9.-]+", parts.hostname)
    ):
        raise InputError(
            "instance",
            "must be an instance name such as dev12345, or https://host[:port] with no path",
        )
    host = parts.hostname
    if not any(_host_matches(host, pattern) for pattern in allowed_hosts):
        raise InputError(
            "instance",
            f"names host {host}, which is not allowed; the operator allows {', '.join(allowed_hosts)} "
            "(setting SERVICENOW_ALLOWED_HOSTS)",
        )
    return f"https://{host}" + (f":{port}" if port is not None else "")


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


class OutputOptions(BaseModel):
    """The task headers that only headers carry (docs/contract.md §3)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    result_variable: str | None = Field(default=None, alias="resultVariable")
    result_expression: str | None = Field(default=None, alias="resultExpression")
    error_expression: str | None = Field(default=None, alias="errorExpression")
    retry_backoff: timedelta = Field(default=DEFAULT_RETRY_BACKOFF, alias="retryBackoff")
    idempotency_field: str | None = Field(default=None, alias="idempotencyField")

    @field_validator("result_variable")
    @classmethod
    def _variable_name(cls, value: str) -> str:
        if not VARIABLE_NAME.fullmatch(value):
            raise ValueError(f"must be a process variable name such as incident (got {value!r})")
        return value

    @field_validator("result_expression", "error_expression")
    @classmethod
    def _feel_expression(cls, value: str) -> str:
        # Parsed (and cached) before any request is sent: a typo must not follow a create.
        try:
            feel.compile_expression(value)
        except feel.FeelError as error:
            raise ValueError(
                f"is not a FEEL expression this worker can evaluate: {error}"
            ) from None
        return value

    @field_validator("retry_backoff", mode="before")
    @classmethod
    def _iso_duration(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value.upper().startswith("P"):
            raise ValueError(f"must be an ISO-8601 duration such as PT30S (got {value!r})")
        return value

    @field_validator("idempotency_field")
    @classmethod
    def _field_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_]+", value):
            raise ValueError(f"must be a field name such as correlation_id (got {value!r})")
        return value


def parse_output_options(headers: Mapping[str, Any]) -> OutputOptions:
    """Validate the header-only options; empty headers count as absent."""
    present = {name: headers[name] for name in HEADER_ONLY_NAMES if _present(headers.get(name))}
    return validated(OutputOptions, present, None)


def parse_record_request(raw: Mapping[str, Any], rules: InputRules) -> RecordRequest:
    """Validate gathered inputs (secrets already resolved) into a `RecordRequest`."""
    return validated(RecordRequest, raw, rules)


def validated(model: type[M], raw: Mapping[str, Any], rules: InputRules | None) -> M:
    try:
        return model.model_validate(raw, context=rules)
    except ValidationError as error:
        raise _input_error(model, error) from None


def _input_error(model: type[BaseModel], error: ValidationError) -> InputError:
    # Report the first problem only: one clear message beats a list that buries it.
    first = error.errors(include_url=False, include_input=False)[0]
    location = [str(part) for part in first["loc"]]
    tag = None
    if location[:1] == ["authentication"] and location[1:2] and location[1] in AUTHENTICATION_TYPES:
        tag = location.pop(1)  # the union's tag: authentication.clientId, not …oauth-…clientId
    field = _alias(model, location[0]) if location else "input"
    name = ".".join([field, *location[1:]])
    ctx_error = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_error, InputError):
        return ctx_error
    if first["type"] == "missing":
        return InputError(name, "is required")
    if first["type"] == "extra_forbidden" and tag is not None:
        return InputError(name, f"is not used by authentication type {tag} (check type)")
    if isinstance(ctx_error, ValueError):
        return InputError(name, str(ctx_error))
    return InputError(name, f"is invalid: {first['msg']}")


def _alias(model: type[BaseModel], field: str) -> str:
    info = model.model_fields.get(field)
    return info.alias if info is not None and info.alias else field
