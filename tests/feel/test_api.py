"""The public face of servicenow_worker.feel: names, the compile cache, the JSON boundary."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

import servicenow_worker.feel as feel
from servicenow_worker.feel import (
    Expression,
    FeelEvaluationError,
    _expression,
    compile_expression,
    to_json_value,
)
from servicenow_worker.feel._values import YearMonthDuration


class TestPublicFace:
    def test_all_lists_exactly_the_public_names(self) -> None:
        """`__all__` names every public attribute of the package and nothing else."""
        public = {
            name
            for name in vars(feel)
            if not name.startswith("_") and not isinstance(getattr(feel, name), type(feel))
        }
        assert set(feel.__all__) == public

    def test_exceptions_share_one_base(self) -> None:
        """Every exception the package raises derives from FeelError."""
        assert issubclass(feel.FeelSyntaxError, feel.FeelError)
        assert issubclass(feel.FeelUnsupportedError, feel.FeelSyntaxError)
        assert issubclass(feel.FeelEvaluationError, feel.FeelError)
        assert issubclass(feel.ErrorExpressionResultError, feel.FeelError)


class TestCompileCache:
    def test_the_same_text_gives_the_same_object(self) -> None:
        """An expression is parsed and compiled once per distinct text."""
        text = "{cached: response.result.number}"
        assert compile_expression(text) is compile_expression(text)

    def test_different_texts_give_different_objects(self) -> None:
        """The cache is keyed by the exact text."""
        assert compile_expression("1 + 1") is not compile_expression("1 +  1")

    def test_evaluation_never_parses_again(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Evaluating a compiled expression runs closures only; the parser is not called."""
        expression = compile_expression("count(result[priority = p])")

        def no_parse(_text: str) -> Any:
            raise AssertionError("parsed again")

        monkeypatch.setattr(_expression, "parse", no_parse)
        records = [{"priority": "1"}, {"priority": "2"}]
        for _ in range(3):
            assert expression.evaluate({"result": records, "p": "1"}) == 1

    @pytest.mark.parametrize("text", ["=1 + 1", "= 1 + 1", "  =1 + 1", "\n= 1 + 1"])
    def test_a_leading_equals_sign_is_accepted(self, text: str) -> None:
        """The Modeler writes FEEL as `=expression`; the `=` is not part of it."""
        assert compile_expression(text).evaluate() == 2

    def test_the_expression_keeps_its_text(self) -> None:
        """`text` is the text as given, `=` included, and repr shows it."""
        expression = compile_expression("= 1")
        assert isinstance(expression, Expression)
        assert expression.text == "= 1"
        assert repr(expression) == "Expression('= 1')"


class TestJsonBoundary:
    def test_json_numbers_are_decimals_inside(self) -> None:
        """Floats from JSON compute exactly as the decimals they print as."""
        assert compile_expression("x + y = 0.3").evaluate({"x": 0.1, "y": 0.2}) is True
        assert compile_expression("x + y").evaluate({"x": 0.1, "y": 0.2}) == 0.3

    def test_integral_results_are_ints(self) -> None:
        """A whole number leaves as int, whatever its scale inside (1.0 * 2 is 2)."""
        result = compile_expression("1.0 * 2").evaluate()
        assert result == 2
        assert type(result) is int

    def test_other_numbers_are_floats(self) -> None:
        """A fraction leaves as float; 34 digits become the nearest double."""
        assert compile_expression("1 / 4").evaluate() == 0.25
        assert compile_expression("1 / 3").evaluate() == pytest.approx(1 / 3)

    def test_large_integers_stay_exact(self) -> None:
        """Integral numbers beyond a double's 53 bits are not rounded at the boundary."""
        assert compile_expression("2 ** 64 + 1").evaluate() == 2**64 + 1

    def test_booleans_stay_booleans(self) -> None:
        """A JSON true is a FEEL boolean, never the number 1."""
        assert compile_expression("b + 1").evaluate({"b": True}) is None
        assert compile_expression("b = 1").evaluate({"b": True}) is None
        assert compile_expression("b and true").evaluate({"b": True}) is True

    def test_temporal_results_are_iso_text(self) -> None:
        """Dates, times and durations leave as ISO-8601 strings json.dumps accepts."""
        result = compile_expression(
            '{d: @"2024-03-01", t: @"10:15:00Z", dt: @"2024-03-01T10:15:00+01:00",'
            ' p: @"PT90M", ym: @"P14M", zero: @"PT0S"}'
        ).evaluate()
        assert result == {
            "d": "2024-03-01",
            "t": "10:15:00Z",
            "dt": "2024-03-01T10:15:00+01:00",
            "p": "PT1H30M",
            "ym": "P1Y2M",
            "zero": "PT0S",
        }
        assert json.loads(json.dumps(result)) == result

    def test_to_json_value_converts_evaluator_values(self) -> None:
        """The boundary function handles every evaluator type, nested."""
        value = {
            "n": Decimal("2.50"),
            "i": Decimal("7"),
            "d": date(2024, 1, 2),
            "p": timedelta(seconds=3),
            "ym": YearMonthDuration(5),
            "l": [Decimal("1.5"), None, "x", True],
        }
        assert to_json_value(value) == {
            "n": 2.5,
            "i": 7,
            "d": "2024-01-02",
            "p": "PT3S",
            "ym": "P5M",
            "l": [1.5, None, "x", True],
        }

    def test_a_context_that_is_not_json_is_refused(self) -> None:
        """A value of a type JSON does not have is an error, not silently null."""
        with pytest.raises(FeelEvaluationError, match="type object"):
            compile_expression("x").evaluate({"x": object()})

    def test_a_non_finite_float_is_null(self) -> None:
        """NaN and infinity have no FEEL number; they enter as null."""
        assert compile_expression("x = null").evaluate({"x": float("nan")}) is True

    def test_no_context_means_no_variables(self) -> None:
        """evaluate() without a context: every name is null."""
        assert compile_expression("x = null").evaluate() is True
        assert compile_expression("x = null").evaluate(None) is True
