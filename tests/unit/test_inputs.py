"""Validation of a job's inputs (docs/contract.md §2-§3): what is accepted, and the message for what is not."""

from datetime import timedelta
from typing import Any

import pytest

from servicenow_worker.errors import InputError
from servicenow_worker.inputs import (
    INPUT_NAMES,
    USED_BY,
    InputRules,
    Operation,
    gather_inputs,
    parse_output_options,
    parse_record_request,
)

RULES = InputRules(
    url_template="https://{instance}.service-now.com",
    allowed_hosts=("*.service-now.com", "snow.acme.example"),
    max_limit=1000,
)
BASE: dict[str, Any] = {
    "instance": "dev12345",
    "authentication": {"username": "camunda", "password": "pw"},
    "operation": "create",
    "table": "incident",
    "payload": {"short_description": "disk full"},
}


def parse(**changes: Any) -> Any:
    raw = {**BASE, **changes}
    return parse_record_request({k: v for k, v in raw.items() if v is not None}, RULES)


def problem(**changes: Any) -> str:
    with pytest.raises(InputError) as caught:
        parse(**changes)
    return caught.value.message


class TestGatherInputs:
    def test_header_wins_over_variable(self) -> None:
        """A task header is fixed by the modeler and beats process data of the same name."""
        gathered = gather_inputs(
            {"table": "incident"}, {"operation": "read", "table": "sys_user", "query": "a=b"}
        )
        assert gathered == {"operation": "read", "table": "incident", "query": "a=b"}

    def test_empty_string_counts_as_absent(self) -> None:
        """An empty header falls through to the variable; an empty variable is no input."""
        gathered = gather_inputs(
            {"table": "", "operation": "read"}, {"table": "problem", "query": ""}
        )
        assert gathered == {"operation": "read", "table": "problem"}

    def test_authentication_header_is_refused(self) -> None:
        """Credentials never belong in a header, which anyone reading the BPMN sees."""
        with pytest.raises(InputError, match="authentication must come from an input mapping"):
            gather_inputs({"authentication": '{"username": "x"}'}, {})

    def test_only_known_inputs_are_gathered(self) -> None:
        """Unrelated process variables never reach the request."""
        assert gather_inputs({}, {"customer": "x", "operation": "read"}) == {"operation": "read"}

    @pytest.mark.parametrize("operation", ["create", "Read", "UPDATE", "delete"])
    def test_only_the_operations_own_inputs_are_gathered(self, operation: str) -> None:
        """An input the operation does not use is left out, from headers and variables alike."""
        every_input = {
            name: f"{name} value"
            for name in INPUT_NAMES
            if name not in {"authentication", "operation"}
        }
        own = {name for name, operations in USED_BY.items() if operation.lower() in operations} - {
            "authentication"
        }
        for headers, variables in ((every_input, {}), ({}, every_input)):
            gathered = gather_inputs(headers, {**variables, "operation": operation})
            assert set(gathered) == own

    def test_without_a_known_operation_only_the_operation_is_gathered(self) -> None:
        """Nothing is validated before the operation says what it reads."""
        assert gather_inputs({"operation": "copy"}, {"sysId": "../x", "table": "?"}) == {
            "operation": "copy"
        }
        assert gather_inputs({}, {"sysId": "../x"}) == {}


class TestRecordRequest:
    def test_operation_is_case_insensitive(self) -> None:
        """`Create` from a dropdown or a FEEL string works like `create`."""
        assert parse(operation=" Create ").operation is Operation.CREATE

    def test_label_form_of_table(self) -> None:
        """Camunda's own template writes `Requested Item [sc_req_item]`."""
        assert parse(table="Requested Item [sc_req_item]").table == "sc_req_item"

    def test_payload_as_json_string(self) -> None:
        """A payload typed into a text field arrives as a JSON string."""
        assert parse(payload='{"urgency": 2}').payload == {"urgency": 2}

    def test_empty_payload_object_is_allowed(self) -> None:
        """`{}` creates a record with defaults."""
        assert parse(payload={}).payload == {}

    def test_header_strings_become_typed_values(self) -> None:
        """Headers are strings: integers, booleans and field lists are parsed from them."""
        request = parse(
            operation="read",
            limit="25",
            offset="50",
            fields="number, state",
            displayValue="ALL",
            excludeReferenceLink="true",
        )
        assert (request.limit, request.offset, request.fields) == (25, 50, ("number", "state"))
        assert (request.display_value, request.exclude_reference_link) == ("all", True)

    def test_bare_instance_fills_url_template(self) -> None:
        """A bare name becomes https://<name>.service-now.com."""
        assert parse().base_url == "https://dev12345.service-now.com"

    def test_allowed_full_url(self) -> None:
        """A full https URL on an allowed host is used as given (trailing slash dropped)."""
        assert parse(instance="https://acme.service-now.com:8443/").base_url == (
            "https://acme.service-now.com:8443"
        )
        assert parse(instance="https://snow.acme.example").base_url == "https://snow.acme.example"

    def test_template_without_instance_ignores_instance(self) -> None:
        """An operator's fixed URL (a proxy, an emulator) receives every call."""
        rules = InputRules("http://127.0.0.1:8089", RULES.allowed_hosts, 1000)
        without = {k: v for k, v in BASE.items() if k != "instance"}
        assert parse_record_request(without, rules).base_url == "http://127.0.0.1:8089"
        with_instance = {**BASE, "instance": "dev1"}
        assert parse_record_request(with_instance, rules).base_url == "http://127.0.0.1:8089"
        with_url = {**BASE, "instance": "https://acme.service-now.com"}
        assert parse_record_request(with_url, rules).base_url == "http://127.0.0.1:8089"

    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({"operation": None}, "operation is required"),
            ({"operation": "upsert"}, "operation must be one of create, read, update, delete"),
            ({"table": "incident/../sys_user"}, "table must be a table name"),
            ({"table": "inc ident"}, "table must be a table name"),
            ({"operation": "update"}, "sysId is required for update"),
            ({"operation": "delete"}, "sysId is required for delete"),
            ({"payload": None}, "payload is required for create"),
            ({"payload": "[1, 2]"}, "payload must be a JSON object"),
            ({"payload": "{not json"}, "payload is not valid JSON"),
            ({"operation": "read", "sysId": "abc", "query": "a=b"}, "query cannot be combined"),
            ({"operation": "read", "limit": 0}, "limit must be an integer from 1 to 1000"),
            ({"operation": "read", "limit": "1001"}, "limit must be an integer from 1 to 1000"),
            ({"operation": "read", "limit": True}, "limit must be an integer"),
            ({"operation": "read", "offset": -1}, "offset must be an integer of 0 or more"),
            ({"sysId": ".."}, "sysId must be a record's sys_id"),
            ({"sysId": "a/b"}, "sysId must be a record's sys_id"),
            ({"displayValue": "maybe"}, "displayValue must be false, true or all"),
            ({"excludeReferenceLink": "yes"}, "excludeReferenceLink must be true or false"),
            ({"fields": "number,sys id"}, "fields must hold field names"),
            ({"instance": None}, "instance is required"),
            ({"instance": "https://evil.example"}, "names host evil.example, which is not allowed"),
            ({"instance": "https://service-now.com"}, "which is not allowed"),
            ({"instance": "http://dev1.service-now.com"}, "instance must be an instance name"),
            ({"instance": "https://u:p@dev1.service-now.com"}, "instance must be an instance"),
            ({"instance": "https://dev1.service-now.com/api"}, "instance must be an instance"),
            ({"instance": "https://dev1.service-now.com?x=1"}, "instance must be an instance"),
            ({"authentication": None}, "authentication is required"),
            ({"authentication": "camunda:pw"}, "authentication must be an object"),
            ({"authentication": {"username": "u"}}, "authentication.password is required"),
            ({"authentication": {"type": "ntlm"}}, "authentication has type 'ntlm'"),
        ],
    )
    def test_invalid_input_names_field_and_fix(
        self, changes: dict[str, Any], expected: str
    ) -> None:
        """Each bad input of docs/contract.md §6 gives a message that names the field."""
        assert expected in problem(**changes)

    def test_wildcard_host_does_not_match_bare_domain(self) -> None:
        """`*.service-now.com` allows subdomains only."""
        assert "not allowed" in problem(instance="https://service-now.com")


class TestOutputOptions:
    def test_defaults(self) -> None:
        """No headers: no result variable and a 30 s retry back-off."""
        options = parse_output_options({})
        assert options.result_variable is None
        assert options.retry_backoff == timedelta(seconds=30)

    def test_iso_duration_back_off(self) -> None:
        """retryBackoff is an ISO-8601 duration."""
        assert parse_output_options({"retryBackoff": "PT1M30S"}).retry_backoff == timedelta(
            seconds=90
        )

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({"retryBackoff": "30s"}, "retryBackoff must be an ISO-8601 duration"),
            ({"resultVariable": "my result"}, "resultVariable must be a process variable name"),
            ({"idempotencyField": "correlation id"}, "idempotencyField must be a field name"),
        ],
    )
    def test_invalid_header(self, headers: dict[str, str], expected: str) -> None:
        """A malformed header fails the job with a message naming it."""
        with pytest.raises(InputError, match=expected):
            parse_output_options(headers)


class TestBoundariesAndMessages:
    """The edges of each rule, and the exact message a BPMN author reads."""

    @pytest.mark.parametrize(
        ("limit", "expected"), [(1, 1), (1000, 1000), ("1000", 1000), (7.0, 7)]
    )
    def test_limit_from_one_to_the_operators_maximum(self, limit: Any, expected: int) -> None:
        assert parse(operation="read", limit=limit).limit == expected

    @pytest.mark.parametrize("limit", [[5], "abc", 7.5, "1e3"])
    def test_limit_that_is_not_an_integer(self, limit: Any) -> None:
        assert problem(operation="read", limit=limit) == (
            f"limit must be an integer from 1 to 1000 (got {limit!r})"
        )

    @pytest.mark.parametrize(("count", "expected"), [(1, 1), ("10000", 10_000)])
    def test_max_records_up_to_the_operators_ceiling(self, count: Any, expected: int) -> None:
        read_all = parse(operation="read", returnAll=True, maxRecords=count)
        assert read_all.max_records == expected

    def test_max_records_over_the_ceiling_names_the_setting(self) -> None:
        """The author learns that the ceiling is the operator's, not a ServiceNow limit."""
        assert problem(operation="read", returnAll=True, maxRecords=10_001) == (
            "maxRecords must be an integer from 1 to 10000 (got 10001; the operator's "
            "SERVICENOW_MAX_RECORDS is the ceiling)"
        )

    @pytest.mark.parametrize(("offset", "expected"), [(0, 0), ("0", 0), (1, 1)])
    def test_offset_from_zero(self, offset: Any, expected: int) -> None:
        assert parse(operation="read", offset=offset).offset == expected

    @pytest.mark.parametrize(
        ("text", "expected"), [("false", False), ("TRUE", True), (False, False)]
    )
    def test_exclude_reference_link_as_text(self, text: Any, expected: bool) -> None:
        assert parse(excludeReferenceLink=text).exclude_reference_link is expected

    def test_fields_as_a_list(self) -> None:
        assert parse(fields=["number", " state "]).fields == ("number", "state")

    @pytest.mark.parametrize("fields", [5, {"a": 1}, ["a", 5]])
    def test_fields_of_another_type(self, fields: Any) -> None:
        assert problem(fields=fields) == (
            "fields must be a comma-separated list of field names, e.g. number,state"
        )

    def test_query_of_another_type(self) -> None:
        assert problem(operation="read", query=5) == (
            "query must be an encoded query string such as active=true^priority=1"
        )

    @pytest.mark.parametrize("sys_id", [".", ".."])
    def test_sys_id_that_is_a_path_step(self, sys_id: str) -> None:
        """'.' and '..' would name the table or the API, not a record."""
        assert problem(operation="read", sysId=sys_id).startswith("sysId must be a record's sys_id")

    def test_instance_required_names_both_forms(self) -> None:
        assert problem(instance=None) == (
            "instance is required: the instance name (dev12345) or its URL "
            "(https://acme.service-now.com)"
        )

    def test_host_not_allowed_names_the_setting(self) -> None:
        assert problem(instance="https://evil.example") == (
            "instance names host evil.example, which is not allowed; the operator allows "
            "*.service-now.com, snow.acme.example (setting SERVICENOW_ALLOWED_HOSTS)"
        )

    @pytest.mark.parametrize(
        ("authentication", "expected"),
        [
            (
                {"username": "u", "password": 5},
                "authentication.password is invalid: Input should be a valid string",
            ),
            (
                {"username": "u", "password": "p", "scope": "x"},
                "authentication.scope is not used by authentication type basic (check type)",
            ),
            (
                {"type": "api-key", "apiKey": "two words"},
                "authentication.apiKey must be the key alone: printable characters without spaces",
            ),
            (
                {"type": "bearer", "token": 5},
                "authentication.token must be the token alone (a 'Bearer ' prefix is allowed): "
                "printable characters without spaces",
            ),
        ],
    )
    def test_authentication_messages(self, authentication: dict[str, Any], expected: str) -> None:
        """Which field is wrong, never its value (it is a credential)."""
        assert problem(authentication=authentication) == expected

    @pytest.mark.parametrize(("token", "sent"), [("Bearer abc", "abc"), (" abc ", "abc")])
    def test_bearer_token_forms(self, token: str, sent: str) -> None:
        request = parse(authentication={"type": "bearer", "token": token})
        assert request.authentication.token.get_secret_value() == sent
