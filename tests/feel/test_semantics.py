"""Camunda's FEEL semantics: null instead of errors, named arguments, decimals, unary tests."""

from __future__ import annotations

from typing import Any

import pytest

from servicenow_worker.feel import compile_expression

RECORDS = {
    "result": [
        {"number": "INC1", "priority": "1", "count": "7"},
        {"number": "INC2", "priority": "3"},
    ],
    "count": 2,
    "error": None,
}


def evaluate(text: str, context: dict[str, Any] | None = None) -> Any:
    return compile_expression(text).evaluate(context or RECORDS)


class TestNullSemantics:
    @pytest.mark.parametrize(
        "text",
        [
            "missing",
            "missing.deeper.still",
            "error.code",
            "result[1].missing",
            '"a" + 1',
            "1 - true",
            '"x" * 3',
            '-"x"',
            "1 / 0",
            "upper case(1)",
            "count(5)",
            'sum([1, "a"])',
            'number("12x")',
            'date("2024-13-01")',
            'substring("abc", "1")',
            '1 < "2"',
            "true > false",
            '1 = "1"',
            "not(5)",
            "5[item > 1]",
            "for x in 5 return x",
            "some x in 5 satisfies x",
            'matches("a", "(")',
        ],
    )
    def test_a_fault_gives_null(self, text: str) -> None:
        """Missing values and type mismatches give null instead of failing the job."""
        assert evaluate(text) is None

    def test_null_equals_only_null(self) -> None:
        """`=` with null is a plain boolean, so `x = null` is the null check."""
        assert evaluate("error = null") is True
        assert evaluate("missing = null") is True
        assert evaluate("count = null") is False
        assert evaluate("null != count") is True

    def test_a_condition_that_is_not_true_takes_the_else_branch(self) -> None:
        """`if null`, `if 1`, `if "true"` all take the else branch."""
        for condition in ("null", "1", '"true"', "missing", "[true]"):
            assert evaluate(f'if {condition} then "then" else "else"') == "else"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("false and missing", False),
            ("missing and false", False),
            ("true and missing", None),
            ("true or missing", True),
            ("missing or true", True),
            ("false or missing", None),
            ('"yes" or false', None),
        ],
    )
    def test_logic_is_three_valued(self, text: str, expected: bool | None) -> None:
        """`and`/`or` give a boolean when the known operands decide it, else null."""
        assert evaluate(text) is expected

    def test_a_path_over_a_list_maps_over_its_items(self) -> None:
        """`result.number` is the list of each record's number; missing entries are null."""
        assert evaluate("result.number") == ["INC1", "INC2"]
        assert evaluate("result.count") == ["7", None]


class TestFunctionsAndVariables:
    def test_a_variable_does_not_shadow_a_built_in(self) -> None:
        """A response field named `count` does not hide the function count(), as in feel-scala."""
        assert evaluate("count(result)") == 2
        assert evaluate("count") == 2

    def test_named_arguments_match_feel_scala_parameter_names(self) -> None:
        """Named arguments may come in any order; names with spaces are one name."""
        assert evaluate('substring(start position: 2, string: "abcd", length: 2)') == "bc"
        assert evaluate('string join(list: ["a", "b"], delimiter: "+")') == "a+b"
        assert evaluate("get or else(default: 1, value: null)") == 1

    def test_a_named_argument_left_out_is_null(self) -> None:
        """The smallest overload taking the given names is chosen; the rest are null."""
        assert evaluate('substring(string: "abcd", start position: 3)') == "cd"
        assert evaluate('number(from: "1.5", decimal separator: ".")') == 1.5

    def test_varargs_take_a_list_or_the_items(self) -> None:
        """max(1, 2) and max([1, 2]) are the same call; append takes items after the list."""
        assert evaluate("max(1, 5, 2)") == evaluate("max([1, 5, 2])") == 5
        assert evaluate("append([1], 2, 3)") == [1, 2, 3]
        assert evaluate("append([1], [2])") == [1, [2]]

    @pytest.mark.parametrize(
        "name",
        [
            "string length",
            "upper case",
            "lower case",
            "is defined",
            "get or else",
            "list contains",
            "distinct values",
            "index of",
            "day of week",
            "date and time",
            "years and months duration",
        ],
    )
    def test_names_with_spaces_are_recognised(self, name: str) -> None:
        """Multi-word built-in names parse as one name, even those holding `and`, `or`, `of`."""
        with pytest.raises(Exception, match="takes no 0 argument") as caught:
            compile_expression(f"{name}()")
        assert name in str(caught.value)


class TestNumbers:
    def test_decimal_arithmetic(self) -> None:
        """Numbers are decimals: 0.1 + 0.2 = 0.3 and money adds up exactly."""
        assert evaluate("0.1 + 0.2 = 0.3") is True
        assert evaluate("19.99 * 3") == 59.97
        assert evaluate("sum([0.1, 0.1, 0.1]) = 0.3") is True

    def test_division_keeps_34_significant_digits(self) -> None:
        """1/3 has feel-scala's 34 digits, so 1/3 * 3 is just below 1."""
        assert evaluate("string(1 / 3)") == "0." + "3" * 34
        assert evaluate("1 / 3 * 3 < 1") is True

    def test_string_conversion_keeps_the_scale(self) -> None:
        """string() prints a decimal as feel-scala's BigDecimal does."""
        assert evaluate("string(1.50)") == "1.50"
        assert evaluate("string(2.5 * 2)") == "5.0"
        assert evaluate("string(10 / 4)") == "2.5"


class TestUnaryTests:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('"1" in ("1", "2")', True),
            ("2 in [1..3]", True),
            ("3 in [1..3)", False),
            ("3 in > 2", True),
            ("3 in (< 1, > 2)", True),
            ("null in (1..3)", None),
            ("null in < 3", None),
            ("null in (1, 2)", False),
            ("null in [1, null]", True),
            ("5 in (? > 4)", True),
            ("5 in abs(?)", None),
            ("5 in 2 + 3", True),
            ('5 in @"2024-01-01"', None),
            ("false in (true)", False),
            ("true in 1 < 2", True),
        ],
    )
    def test_in_matches_like_feel_scala(self, text: str, expected: bool | None) -> None:
        """`in` with test lists, intervals, comparisons, `?`, values and lists."""
        assert evaluate(text) is expected

    def test_after_in_an_expression_extends_as_far_as_it_can(self) -> None:
        """`x in [1, 2] and y` is `x in ([1, 2] and y)`, as feel-scala parses it."""
        assert evaluate("1 in [1, 2] and true") is False
        assert evaluate("(1 in [1, 2]) and true") is True
        assert evaluate("1 in (1, 2) and true") is True
        assert evaluate("1 in [1..2] and true") is True
