"""The operations registry: every operation a job may name has its family, and picks it."""

import pytest

from servicenow_worker.errors import InputError
from servicenow_worker.inputs import USED_BY, InputRules, Operation
from servicenow_worker.operations import OPERATIONS, parse_inputs

RULES = InputRules(
    url_template="https://{instance}.service-now.com", allowed_hosts=(), max_limit=1000
)
AUTH = {"username": "u", "password": "p"}


def test_every_operation_has_a_family() -> None:
    assert set(OPERATIONS) == set(Operation)


def test_every_input_a_model_requires_is_gathered_for_its_operations() -> None:
    """USED_BY is the one table of inputs: a required field outside it could never be given."""
    for operation, family in OPERATIONS.items():
        required = {
            info.alias or name
            for name, info in family.model.model_fields.items()
            if info.is_required()
        }
        assert {n for n in required if operation not in USED_BY.get(n, ())} == set()


def test_every_input_gathered_for_an_operation_is_a_field_of_its_model() -> None:
    """An input USED_BY gives an operation that its model lacks would be refused as unknown."""
    for operation, family in OPERATIONS.items():
        fields = {info.alias or name for name, info in family.model.model_fields.items()}
        gathered = {name for name, users in USED_BY.items() if operation in users}
        assert gathered - fields == set(), operation


@pytest.mark.parametrize(
    ("gathered", "message"),
    [
        ({}, "operation is required"),
        ({"operation": "copy"}, "operation must be one of create, read, update, delete"),
        ({"operation": 3}, "operation must be one of"),
    ],
)
def test_an_operation_that_is_missing_or_unknown_is_named(
    gathered: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        parse_inputs({"instance": "dev1", "authentication": AUTH, **gathered}, RULES)


def test_the_family_validates_in_any_case() -> None:
    family, inputs = parse_inputs(
        {
            "instance": "dev1",
            "authentication": AUTH,
            "operation": " Delete ",
            "table": "incident",
            "sysId": "abc",
        },
        RULES,
    )
    assert family is OPERATIONS[Operation.DELETE]
    assert (inputs.operation, inputs.base_url) == (Operation.DELETE, "https://dev1.service-now.com")
