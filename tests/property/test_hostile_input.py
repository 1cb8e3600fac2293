"""Whatever a process sends, the worker builds a request to an allowed place or fails cleanly."""

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
from hypothesis import given
from hypothesis import strategies as st

from servicenow_worker.errors import InputError, ServiceNowRejected, ServiceNowUnavailable
from servicenow_worker.inputs import INPUT_NAMES, InputRules, gather_inputs, parse_record_request
from servicenow_worker.logs import job_secret_values, redact
from servicenow_worker.secrets import ResolvedSecrets, SecretStore, resolve_placeholders
from servicenow_worker.servicenow import build_url, table_response

RULES = InputRules("https://{instance}.service-now.com", ("*.service-now.com",), 1000)
PATH = re.compile(r"/api/now/table/[A-Za-z0-9_]{1,80}(/[A-Za-z0-9._%-]+)?")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=8,
)
tricky_text = (
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\r\nb",
            "%2F",
            "incident",
            "Label [incident]",
            "dev1",
            "https://x.service-now.com",
            "https://evil.com",
            "https://a.service-now.com@evil.com",
            "create",
            "READ",
            "update",
            "delete",
            "{{secrets.X}}",
            "true",
            "all",
            "100",
            "-1",
            "0",
        ]
    )
    | st.text()
)
input_values = st.one_of(json_values, tricky_text)
inputs = st.dictionaries(st.sampled_from(INPUT_NAMES), input_values, max_size=len(INPUT_NAMES))


def parse_or_refuse(headers: dict[str, Any], variables: dict[str, Any]) -> Any:
    try:
        gathered = gather_inputs(headers, variables)
        store = SecretStore({"X": 's3cr"et\n'})
        resolved = {
            k: resolve_placeholders(v, store, ResolvedSecrets(), k) for k, v in gathered.items()
        }
        return parse_record_request(resolved, RULES)
    except InputError as error:
        assert error.message
        assert "\n" not in error.field
        return None


@given(headers=inputs.map(lambda d: {k: str(v) for k, v in d.items()}), variables=inputs)
def test_any_input_gives_a_safe_url_or_an_input_error(
    headers: dict[str, Any], variables: dict[str, Any]
) -> None:
    """No path outside /api/now/table/<table>[/<sys_id>], no foreign host, no CR/LF, no crash."""
    request = parse_or_refuse(headers, variables)
    if request is None:
        return
    url = build_url(request)
    parts = urlsplit(url)
    assert parts.scheme == "https"
    assert parts.hostname is not None
    assert parts.hostname.endswith(".service-now.com")
    assert PATH.fullmatch(parts.path), parts.path
    assert "\r" not in url
    assert "\n" not in url
    assert " " not in url


@given(
    operation=st.sampled_from(["read", "update", "delete"]),
    sys_id=st.text(min_size=1),
)
def test_sys_id_is_one_path_segment(operation: str, sys_id: str) -> None:
    """A sys_id never adds a path segment, whatever it holds (a create ignores it: below)."""
    variables = {
        "instance": "dev1",
        "authentication": {"username": "u", "password": "p"},
        "operation": operation,
        "table": "incident",
        "sysId": sys_id,
        "payload": {},
    }
    request = parse_or_refuse({}, variables)
    if request is not None:
        path = urlsplit(build_url(request)).path
        assert path.count("/") == 5
        assert path.rsplit("/", 1)[1] not in {".", ".."}


@given(sys_id=st.text())
def test_a_create_posts_to_the_table_whatever_sys_id_a_variable_holds(sys_id: str) -> None:
    """A sysId left by an earlier task is not the create's input: never validated, never sent."""
    variables = {
        "instance": "dev1",
        "authentication": {"username": "u", "password": "p"},
        "operation": "create",
        "table": "incident",
        "sysId": sys_id,
        "payload": {},
    }
    request = parse_or_refuse({}, variables)
    assert request is not None
    assert urlsplit(build_url(request)).path == "/api/now/table/incident"


@given(status=st.integers(min_value=100, max_value=599))
def test_every_status_has_exactly_one_outcome(status: int) -> None:
    """Each HTTP status maps to success, a final rejection or a retryable fault."""
    request = parse_or_refuse(
        {},
        {
            "instance": "dev1",
            "authentication": {"username": "u", "password": "p"},
            "operation": "read",
            "table": "incident",
        },
    )
    response = httpx.Response(
        status, json={"result": []}, request=httpx.Request("GET", "https://x")
    )
    try:
        result = table_response(request, response)
    except ServiceNowRejected:
        assert 400 <= status < 500
        assert status not in {408, 429}
    except ServiceNowUnavailable:
        assert status in {408, 429} or status >= 500 or 300 <= status < 400
    else:
        assert 100 <= status < 300
        assert result.status == status


@given(secret=st.text(min_size=1).filter(lambda s: s.strip() == s and len(s) > 2))
def test_any_secret_is_resolved_and_redacted(secret: str) -> None:
    """Secrets with quotes, newlines and any unicode are resolved exactly and masked in logs."""
    used = ResolvedSecrets()
    value = resolve_placeholders(
        {"p": "pre {{secrets.S}} post"}, SecretStore({"S": secret}), used, "a"
    )
    assert value == {"p": f"pre {secret} post"}
    token = job_secret_values.set(frozenset(used.values))
    try:
        event = redact(None, "info", {"event": "x", "message": f"failed: {secret}!"})
    finally:
        job_secret_values.reset(token)
    assert secret not in event["message"]
