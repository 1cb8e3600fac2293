"""The attachment operations' inputs (docs/contract.md §11): what is refused before any request,
and the settings they need."""

from typing import Any

import pytest
from pydantic import ValidationError

from servicenow_worker.errors import InputError
from servicenow_worker.inputs import InputRules, gather_inputs
from servicenow_worker.operations import parse_inputs
from servicenow_worker.settings import Settings

RULES = InputRules(
    url_template="https://{instance}.service-now.com",
    allowed_hosts=("*.service-now.com",),
    max_limit=1000,
)
BASE = {
    "instance": "dev12345",
    "authentication": {"username": "u", "password": "p"},
    "table": "incident",
}
SYS_ID = "0123456789abcdef0123456789abcdef"
REFERENCE = {
    "camunda.document.type": "camunda",
    "storeId": "in-memory",
    "documentId": "4f0c0d6e-8d4d-4a53-9f1d-0d3c1a4b7e21",
    "contentHash": "abc",
    "metadata": {"fileName": "a.pdf", "contentType": "application/pdf", "size": 3},
}


def parsed(**inputs: Any) -> Any:
    return parse_inputs(gather_inputs({}, {**BASE, **inputs}), RULES)[1]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"operation": "attach", "sysId": SYS_ID}, "document or content is required"),
        (
            {"operation": "attach", "sysId": SYS_ID, "document": REFERENCE, "content": "x"},
            "document or content is required for attach, not both",
        ),
        ({"operation": "attach", "sysId": SYS_ID, "content": "x"}, "fileName is required"),
        (
            {
                "operation": "attach",
                "sysId": SYS_ID,
                "content": "%%",
                "fileName": "a",
                "contentEncoding": "base64",
            },
            "content is not valid base64",
        ),
        (
            {
                "operation": "attach",
                "sysId": SYS_ID,
                "document": [REFERENCE, REFERENCE],
                "fileName": "a.pdf",
            },
            "fileName renames a single document only",
        ),
        (
            {
                "operation": "attach",
                "sysId": SYS_ID,
                "document": {**REFERENCE, "documentId": "../x"},
            },
            "documentId must be a document id",
        ),
        (
            {"operation": "attach", "sysId": SYS_ID, "content": "x", "fileName": "../etc/passwd"},
            "fileName must be a file name",
        ),
        (
            {
                "operation": "attach",
                "sysId": SYS_ID,
                "content": "x",
                "fileName": "a",
                "contentType": "text/plain\r\nX-Evil: 1",
            },
            "contentType must be a MIME type",
        ),
        ({"operation": "attach", "document": REFERENCE}, "sysId is required for attach"),
        (
            {"operation": "listAttachments", "sysId": SYS_ID, "query": "a=1^NQtable_name=x"},
            "query cannot hold ^NQ",
        ),
        ({"operation": "download"}, "attachmentSysId or table and sysId are required"),
        (
            {"operation": "download", "attachmentSysId": SYS_ID, "sysId": SYS_ID},
            "attachmentSysId cannot be combined with sysId",
        ),
        (
            {"operation": "download", "sysId": SYS_ID, "maxAttachments": 101},
            "maxAttachments must be an integer from 1 to 100",
        ),
        ({"operation": "deleteAttachment"}, "attachmentSysId is required for deleteAttachment"),
    ],
)
def test_refused_before_any_request(inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as raised:
        parsed(**inputs)
    assert message in raised.value.message


def test_unknown_document_type_names_it() -> None:
    with pytest.raises(InputError) as raised:
        parsed(operation="attach", sysId=SYS_ID, document={"camunda.document.type": "external"})
    assert "camunda.document.type 'external'" in raised.value.message


def test_one_document_or_a_list() -> None:
    one = parsed(operation="attach", sysId=SYS_ID, document=REFERENCE)
    assert not one.document.as_list and one.document.references[0].size == 3
    listed = parsed(operation="attach", sysId=SYS_ID, document=[REFERENCE])
    assert listed.document.as_list


def test_rest_address_gets_v2_and_must_be_a_url() -> None:
    assert Settings(camunda_rest_address="http://localhost:8080/").camunda_rest_address == (
        "http://localhost:8080/v2"
    )
    assert Settings(camunda_rest_address="https://c.example/v2").camunda_rest_address == (
        "https://c.example/v2"
    )
    with pytest.raises(ValidationError):
        Settings(camunda_rest_address="localhost:8080")
