"""FEEL values in Python, and the conversion to and from plain JSON-like values.

FEEL type              Python type inside the evaluator
null                   None
boolean                bool
number                 decimal.Decimal (34 significant digits, like feel-scala's BigDecimal)
string                 str
list                   list
context                dict[str, value] (keeps insertion order)
date                   datetime.date
time                   datetime.time (naive: local time; with tzinfo: time with an offset)
date and time          datetime.datetime (naive: local; aware: offset or named zone)
days and time duration datetime.timedelta
years and months dur.  YearMonthDuration

`bool` is a subclass of `int` and `datetime` of `date` in Python, so type tests here use
`type(v) is T` rather than `isinstance`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from typing import Any, Final

from servicenow_worker.feel._errors import FeelEvaluationError

# feel-scala computes with scala.math.BigDecimal, whose default MathContext is DECIMAL128:
# 34 significant digits, half-even rounding. Every operation goes through this context
# explicitly, so no thread-local decimal state matters.
NUMBER_CONTEXT: Final = Context(
    prec=34,
    rounding=ROUND_HALF_EVEN,
    Emax=6144,
    Emin=-6143,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

# Arithmetic faults that FEEL answers with null.
ARITHMETIC_ERRORS: Final = (ArithmeticError, ValueError, OverflowError)


@dataclass(frozen=True, slots=True)
class YearMonthDuration:
    """A FEEL years-and-months duration, kept as a number of months."""

    months: int

    @property
    def years_part(self) -> int:
        """Whole years, signed like the duration."""
        return _signed(abs(self.months) // 12, self.months)

    @property
    def months_part(self) -> int:
        """Months beyond the whole years, signed like the duration."""
        return _signed(abs(self.months) % 12, self.months)


def _signed(magnitude: int, sign_of: int) -> int:
    return -magnitude if sign_of < 0 else magnitude


def feel_type_name(value: Any) -> str:
    """The FEEL type name of an evaluator value, as `instance of` and messages use it."""
    kind = type(value)
    if value is None:
        return "null"
    name = _TYPE_NAMES.get(kind)
    if name is not None:
        return name
    return kind.__name__


_TYPE_NAMES: Final[dict[type, str]] = {
    Decimal: "number",
    bool: "boolean",
    str: "string",
    list: "list",
    dict: "context",
    date: "date",
    time: "time",
    datetime: "date and time",
    timedelta: "days and time duration",
    YearMonthDuration: "years and months duration",
}


def number(value: int | str) -> Decimal:
    """A FEEL number from an int or a numeric literal, rounded to 34 digits."""
    return NUMBER_CONTEXT.create_decimal(value)


def is_integral(value: Decimal) -> bool:
    """True for a finite number without a fractional part."""
    return value.is_finite() and value == value.to_integral_value()


def _comparison_kind(value: Any) -> tuple[type, bool] | None:
    """What must match for two values to be ordered: the type and, for temporals, awareness."""
    kind = type(value)
    if kind in (Decimal, str, date, timedelta, YearMonthDuration):
        return kind, False
    if kind in (datetime, time):
        return kind, value.tzinfo is not None
    return None


def compare(left: Any, right: Any) -> int | None:
    """-1, 0 or 1, or None when FEEL cannot order the two values (then `<` gives null)."""
    kind = _comparison_kind(left)
    if kind is None or kind != _comparison_kind(right):
        return None
    if type(left) is YearMonthDuration:
        return _sign(left.months, right.months)
    if type(left) is time and left.tzinfo is not None:
        return _sign(_time_instant(left), _time_instant(right))
    return _sign(left, right)


def _sign(left: Any, right: Any) -> int:
    return -1 if left < right else int(left > right)


def _time_instant(value: time) -> float:
    """Seconds since midnight UTC of a time with an offset, for ordering."""
    offset = value.utcoffset() or timedelta(0)
    seconds = value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6
    return seconds - offset.total_seconds()


def equals(left: Any, right: Any) -> bool | None:
    """FEEL `=`: null equals only null; values of different types are not comparable (None)."""
    if left is None or right is None:
        return left is None and right is None
    kind = type(left)
    if kind is not type(right):
        return None
    if kind is list:
        return _lists_equal(left, right)
    if kind is dict:
        return _contexts_equal(left, right)
    if kind in (datetime, time):
        if (left.tzinfo is None) != (right.tzinfo is None):
            return None
        return _temporal_equal(left, right)
    return bool(left == right)


def _lists_equal(left: list[Any], right: list[Any]) -> bool:
    return len(left) == len(right) and all(
        equals(a, b) is True for a, b in zip(left, right, strict=True)
    )


def _contexts_equal(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return left.keys() == right.keys() and all(equals(left[k], right[k]) is True for k in left)


def _temporal_equal(left: datetime | time, right: datetime | time) -> bool:
    # Like java.time's equals: the same wall-clock value in the same offset or zone.
    if left.tzinfo is None:
        return left == right
    return (
        left.replace(tzinfo=None) == right.replace(tzinfo=None)
        and left.utcoffset() == right.utcoffset()
        and zone_id(left) == zone_id(right)
    )


def zone_id(value: datetime | time) -> str | None:
    """The region name of a named time zone (Europe/Berlin), or None for an offset."""
    key = getattr(value.tzinfo, "key", None)
    return key if isinstance(key, str) else None


def same_value(left: Any, right: Any) -> bool:
    """Strict equality as feel-scala's `list contains` and `index of` use it: same type and value."""
    if left is None or right is None:
        return left is None and right is None
    return equals(left, right) is True


def from_json(value: Any) -> Any:
    """Convert a plain JSON-like Python value into an evaluator value (numbers to Decimal).

    A list or dict met twice (the response sits at the top and under `response`) is
    converted once.
    """
    return _from_json(value, {})


def _from_json(value: Any, seen: dict[int, Any]) -> Any:
    if value is None or type(value) in (str, bool):
        return value
    if type(value) is int:
        return _number_from_json(value)
    if type(value) is float:
        # repr() gives the shortest text that round-trips, as Java's Double.toString does.
        return _number_from_json(repr(value)) if math.isfinite(value) else None
    if isinstance(value, Mapping | list | tuple):
        known = seen.get(id(value))
        if known is None:
            known = seen[id(value)] = _container(value, seen)
        return known
    if isinstance(value, int | float | Decimal | date | time | timedelta | YearMonthDuration):
        return _from_other_scalar(value)
    raise FeelEvaluationError(f"cannot use a value of type {type(value).__name__} in FEEL")


def _number_from_json(value: int | str) -> Decimal:
    try:
        return number(value)
    except ArithmeticError:
        raise FeelEvaluationError("a number of the context is out of range") from None


def _container(value: Mapping[Any, Any] | Sequence[Any], seen: dict[int, Any]) -> Any:
    if isinstance(value, Mapping):
        return {_key(k): _from_json(v, seen) for k, v in value.items()}
    return [_from_json(v, seen) for v in value]


def _from_other_scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _number_from_json(int(value))
    if isinstance(value, float):
        return _from_json(float(value), {})
    if isinstance(value, Decimal):
        return NUMBER_CONTEXT.plus(value) if value.is_finite() else None
    return value


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise FeelEvaluationError(f"context keys must be strings, got {type(key).__name__}")
    return key


def to_json_value(value: Any) -> Any:
    """Convert an evaluator value into plain JSON-ready Python (`json.dumps` accepts the result).

    Numbers become int when integral, else float; dates, times and durations become their
    ISO-8601 text (`2024-01-01`, `10:00:00Z`, `PT3S`, `P1Y2M`).
    """
    if value is None or type(value) in (str, bool, int, float):
        return value
    if type(value) is Decimal:
        return _json_number(value)
    if type(value) is dict:
        return {k: to_json_value(v) for k, v in value.items()}
    if type(value) is list:
        return [to_json_value(v) for v in value]
    # Imported here: the temporal module depends on this one.
    from servicenow_worker.feel._temporal import format_temporal

    text = format_temporal(value)
    if text is None:
        raise FeelEvaluationError(f"cannot convert a FEEL {feel_type_name(value)} to JSON")
    return text


def _json_number(value: Decimal) -> int | float | None:
    if not value.is_finite():
        return None
    if is_integral(value):
        return int(value)
    return float(value)
