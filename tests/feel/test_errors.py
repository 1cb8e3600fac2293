"""Faults: where a syntax error is, what is unsupported, unknown functions, evaluation errors."""

from __future__ import annotations

import pytest

from servicenow_worker.feel import (
    FeelError,
    FeelEvaluationError,
    FeelSyntaxError,
    FeelUnsupportedError,
    compile_expression,
)


class TestSyntaxErrors:
    @pytest.mark.parametrize(
        ("text", "line", "column", "fragment"),
        [
            ("1 +", 1, 4, "unexpected end of expression"),
            ("1 + * 2", 1, 5, "unexpected '*'"),
            ("1 # 2", 1, 3, "unexpected character '#'"),
            ("{a: 1,\n b: }", 2, 5, "unexpected '}'"),
            ("if x then 1", 1, 12, "unexpected end of expression"),
            ('"unterminated', 1, 1, "unexpected character '\"'"),
            ("1 = 1 = 1", 1, 7, "unexpected '='"),
            ("=1 +", 1, 5, "unexpected end of expression"),
        ],
    )
    def test_the_fault_is_located(self, text: str, line: int, column: int, fragment: str) -> None:
        """The error gives the 1-based line and column of the fault and says what it is."""
        with pytest.raises(FeelSyntaxError) as caught:
            compile_expression(text)
        error = caught.value
        assert (error.line, error.column) == (line, column)
        assert fragment in error.reason
        assert f"line {line}, column {column}" in str(error)

    def test_the_message_quotes_the_expression_with_a_caret(self) -> None:
        """The message repeats the expression and marks the fault's column."""
        with pytest.raises(FeelSyntaxError) as caught:
            compile_expression("count(xs) +")
        message = str(caught.value)
        assert "FEEL expression 'count(xs) +'" in message
        assert message.endswith("    count(xs) +\n               ^")

    def test_the_message_names_what_was_expected(self) -> None:
        """Where the choice is small, the message lists what could have come."""
        with pytest.raises(FeelSyntaxError, match=r"expected .*'then'"):
            compile_expression("if x else 1")

    @pytest.mark.parametrize("text", ["", "   ", "=", " = "])
    def test_an_empty_expression_is_a_syntax_error(self, text: str) -> None:
        """Nothing to evaluate is an error, not null."""
        with pytest.raises(FeelSyntaxError, match=r"empty FEEL expression|unexpected end"):
            compile_expression(text)

    def test_deep_parentheses_are_fine(self) -> None:
        """Parentheses only group; thousands of them still parse and evaluate."""
        assert compile_expression("(" * 2000 + "1" + ")" * 2000).evaluate() == 1

    def test_deep_nesting_is_refused_cleanly(self) -> None:
        """An absurdly deep expression fails to compile instead of crashing the worker."""
        with pytest.raises(FeelSyntaxError, match="nested too deeply"):
            compile_expression("1" + " + 1" * 1500)

    def test_a_number_out_of_range_is_a_syntax_error(self) -> None:
        """A literal beyond the exponent range of 34-digit decimals is refused when compiling."""
        with pytest.raises(FeelSyntaxError, match="number out of range"):
            compile_expression("1" + "0" * 7000)

    def test_an_invalid_temporal_literal_is_a_syntax_error(self) -> None:
        """`@"…"` is checked when compiling; its text is fixed."""
        with pytest.raises(FeelSyntaxError, match="invalid temporal literal"):
            compile_expression('@"next tuesday"')


class TestUnsupportedConstructs:
    @pytest.mark.parametrize(
        ("text", "fragment", "column"),
        [
            ("function(x) x + 1", "function definitions", 1),
            ("x.f(1)", "calling a function held by a context", 3),
            ("< 5", "the unary test `< …` can only stand right of `in`", 1),
            ("[1..5]", "the interval `[a..b]` can only stand right of `in`", 1),
            ("? + 1", "`?` (the value left of `in`) can only stand right of `in`", 1),
            ("sort([3, 1])", "'sort' is not supported: it takes a function argument", 1),
            ("1 + before(1, 2)", "'before' is not supported: range functions", 5),
        ],
    )
    def test_the_message_names_the_construct(self, text: str, fragment: str, column: int) -> None:
        """Valid FEEL outside the subset fails to compile with a message that names it."""
        with pytest.raises(FeelUnsupportedError) as caught:
            compile_expression(text)
        assert fragment in caught.value.reason
        assert caught.value.column == column


class TestUnknownFunctions:
    def test_an_unknown_function_is_an_error_with_a_suggestion(self) -> None:
        """A typo such as bmpnError fails at once and suggests the known name."""
        with pytest.raises(FeelUnsupportedError) as caught:
            compile_expression('if error != null then bmpnError("X", "y") else null')
        assert "unknown function 'bmpnError'" in caught.value.reason
        assert "did you mean 'bpmnError'" in caught.value.reason
        assert (caught.value.line, caught.value.column) == (1, 23)

    def test_an_unknown_name_with_spaces_is_one_function_name(self) -> None:
        """Words before `(` form the function name, as feel-scala reads them."""
        with pytest.raises(FeelUnsupportedError, match="unknown function 'strin length'"):
            compile_expression('strin length("abc")')

    def test_an_unreachable_branch_is_checked_too(self) -> None:
        """The check happens when compiling, so a rarely taken branch cannot hide a typo."""
        with pytest.raises(FeelUnsupportedError, match="unknown function 'jobEror'"):
            compile_expression('if false then jobEror("x") else null')

    def test_a_wrong_number_of_arguments_lists_the_signatures(self) -> None:
        """A known function called with an impossible arity names how it can be called."""
        with pytest.raises(FeelUnsupportedError) as caught:
            compile_expression('substring("abc")')
        assert "takes no 1 argument(s)" in caught.value.reason
        assert "substring(string, start position, length)" in caught.value.reason

    def test_an_unknown_parameter_name_lists_the_signatures(self) -> None:
        """A named argument must be one of the function's parameter names."""
        with pytest.raises(FeelUnsupportedError, match="takes no the parameters text"):
            compile_expression('upper case(text: "a")')


class TestEvaluationErrors:
    def test_assert_fails_the_evaluation(self) -> None:
        """assert() is the one built-in whose failure is an error, not null."""
        expression = compile_expression('assert(x, x > 0, "x must be positive")')
        assert expression.evaluate({"x": 2}) == 2
        with pytest.raises(FeelEvaluationError, match="x must be positive") as caught:
            expression.evaluate({"x": -1})
        assert "assert(x, x > 0" in str(caught.value)

    def test_a_huge_range_is_refused(self) -> None:
        """`for` over a range longer than a million items stops instead of filling memory."""
        with pytest.raises(FeelEvaluationError, match="longer than 1,000,000"):
            compile_expression("for i in 1..100000000 return i").evaluate()

    def test_a_number_out_of_range_in_the_context_is_an_error(self) -> None:
        """An integer no FEEL number can hold fails the evaluation instead of crashing."""
        with pytest.raises(FeelEvaluationError, match="out of range"):
            compile_expression("x").evaluate({"x": 10**7000})

    def test_errors_share_the_base(self) -> None:
        """A caller can catch every fault of this package as FeelError."""
        with pytest.raises(FeelError):
            compile_expression('bpmnError(1, "x")').evaluate()
