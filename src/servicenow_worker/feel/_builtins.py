"""FEEL built-in functions, with feel-scala's semantics (arguments of a wrong type give null)."""

from __future__ import annotations

import base64
import math
import re
import uuid
from calendar import monthrange
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Decimal,
)
from functools import cmp_to_key
from typing import Any, Final
from zoneinfo import ZoneInfo

from servicenow_worker.feel import _temporal as temporal
from servicenow_worker.feel._errors import FeelEvaluationError
from servicenow_worker.feel._registry import function, unsupported
from servicenow_worker.feel._values import (
    NUMBER_CONTEXT,
    YearMonthDuration,
    compare,
    number,
    same_value,
)

# ================================================================ helpers


def _is_number(*values: Any) -> bool:
    return all(type(v) is Decimal for v in values)


def _is_string(*values: Any) -> bool:
    return all(type(v) is str for v in values)


def _int(value: Decimal) -> int:
    """Java's `intValue`: the integer part (towards zero)."""
    return int(value)


def _index(size: int, position: Decimal) -> int:
    """0-based index of a 1-based FEEL position; negative positions count from the end."""
    index = _int(position)
    return index - 1 if index > 0 else size + index


def _from_double(value: float) -> Decimal | None:
    """A number from a double result, as feel-scala's BigDecimal.decimal(double) makes it."""
    return number(repr(value)) if math.isfinite(value) else None


def feel_string(value: Any) -> str:
    """The text `string()` gives, as feel-scala prints values."""
    kind = type(value)
    if value is None:
        return "null"
    if kind is str:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is Decimal:
        return str(value)
    if kind is list:
        return "[" + ", ".join(_nested_string(v) for v in value) + "]"
    if kind is dict:
        return "{" + ", ".join(f"{k}:{_nested_string(v)}" for k, v in value.items()) + "}"
    text = temporal.format_temporal(value)
    return text if text is not None else repr(value)


def _nested_string(value: Any) -> str:
    # Inside a list or context feel-scala quotes strings.
    return f'"{value}"' if type(value) is str else feel_string(value)


# ================================================================ boolean


@function("not", "negand")
def _not(negand: Any) -> bool | None:
    return (not negand) if type(negand) is bool else None


@function("is defined", "value")
def _is_defined(value: Any) -> bool:
    # Camunda 8.4+: null and a missing value are both "not defined".
    return value is not None


@function("get or else", "value", "default")
def _get_or_else(value: Any, default: Any) -> Any:
    return default if value is None else value


@function("assert", "value", "condition")
def _assert(value: Any, condition: Any) -> Any:
    return _assert_with_cause(value, condition, None)


@function("assert", "value", "condition", "cause")
def _assert_with_cause(value: Any, condition: Any, cause: Any) -> Any:
    if condition is True:
        return value
    message = cause if type(cause) is str else "the condition of assert() is not met"
    raise FeelEvaluationError(f"assertion failed: {message}")


# ================================================================ string

_JAVA_TRIM: Final = "".join(chr(c) for c in range(33))
_FLAGS: Final = {"s": re.DOTALL, "m": re.MULTILINE, "i": re.IGNORECASE, "x": re.VERBOSE}


def _regex(pattern: str, flags: str = "") -> re.Pattern[str] | None:
    """A compiled pattern, or None when Python's `re` cannot read it (FEEL: null)."""
    bits = 0
    for letter, bit in _FLAGS.items():
        if letter in flags:
            bits |= bit
    try:
        return re.compile(pattern, bits)
    except (re.error, OverflowError, RecursionError):
        return None


@function("substring", "string", "start position")
def _substring(string: Any, start: Any) -> str | None:
    if not (_is_string(string) and _is_number(start)):
        return None
    index = _index(len(string), start)
    return string[index:] if 0 <= index <= len(string) else None


@function("substring", "string", "start position", "length")
def _substring_length(string: Any, start: Any, length: Any) -> str | None:
    if not (_is_string(string) and _is_number(start, length)):
        return None
    index = _index(len(string), start)
    end = min(index + _int(length), len(string))
    return string[index:end] if 0 <= index <= end else None


@function("string length", "string")
def _string_length(string: Any) -> Decimal | None:
    return number(len(string)) if _is_string(string) else None


@function("upper case", "string")
def _upper_case(string: Any) -> str | None:
    return string.upper() if _is_string(string) else None


@function("lower case", "string")
def _lower_case(string: Any) -> str | None:
    return string.lower() if _is_string(string) else None


@function("substring before", "string", "match")
def _substring_before(string: Any, match: Any) -> str | None:
    if not _is_string(string, match):
        return None
    index = string.find(match)
    return string[:index] if index > 0 else ""


@function("substring after", "string", "match")
def _substring_after(string: Any, match: Any) -> str | None:
    if not _is_string(string, match):
        return None
    index = string.find(match)
    return string[index + len(match) :] if index >= 0 else ""


@function("contains", "string", "match")
def _contains(string: Any, match: Any) -> bool | None:
    return (match in string) if _is_string(string, match) else None


@function("starts with", "string", "match")
def _starts_with(string: Any, match: Any) -> bool | None:
    return string.startswith(match) if _is_string(string, match) else None


@function("ends with", "string", "match")
def _ends_with(string: Any, match: Any) -> bool | None:
    return string.endswith(match) if _is_string(string, match) else None


@function("matches", "input", "pattern")
def _matches(input_: Any, pattern: Any) -> bool | None:
    return _matches_flags(input_, pattern, "")


@function("matches", "input", "pattern", "flags")
def _matches_flags(input_: Any, pattern: Any, flags: Any) -> bool | None:
    if not _is_string(input_, pattern, flags):
        return None
    regex = _regex(pattern, flags)
    return None if regex is None else regex.search(input_) is not None


@function("replace", "input", "pattern", "replacement")
def _replace(input_: Any, pattern: Any, replacement: Any) -> str | None:
    return _replace_flags(input_, pattern, replacement, "")


@function("replace", "input", "pattern", "replacement", "flags")
def _replace_flags(input_: Any, pattern: Any, replacement: Any, flags: Any) -> str | None:
    if not _is_string(input_, pattern, replacement, flags):
        return None
    regex = _regex(pattern, flags)
    if regex is None:
        return None
    pieces = _java_replacement(replacement)
    if pieces is None:
        return None

    def expand(match: re.Match[str]) -> str:
        return "".join(p if isinstance(p, str) else (match.group(p) or "") for p in pieces)

    try:
        return regex.sub(expand, input_)
    except (IndexError, re.error):  # a group the pattern does not have
        return None


_GROUP_REFERENCE: Final = re.compile(r"\\(.)|\$(\d+)|\$\{(\w+)\}|\$", re.DOTALL)


def _java_replacement(replacement: str) -> list[str | int] | None:
    """Split a Java replacement (`$1`, `${name}`, `\\$`) into text and group references."""
    pieces: list[str | int] = []
    last = 0
    for match in _GROUP_REFERENCE.finditer(replacement):
        pieces.append(replacement[last : match.start()])
        escaped, index, name = match.groups()
        if escaped is not None:
            pieces.append(escaped)
        elif index is not None:
            pieces.append(int(index))
        elif name is not None:
            return None  # named groups: Java and Python spell them differently
        else:
            return None  # a lone `$` is an error in Java
        last = match.end()
    pieces.append(replacement[last:])
    return pieces


@function("split", "string", "delimiter")
def _split(string: Any, delimiter: Any) -> list[Any] | None:
    if not _is_string(string, delimiter):
        return None
    regex = _regex(delimiter)
    if regex is None:
        return None
    # java.util.regex.Pattern.split(input, -1): trailing empty strings kept, and a zero-width
    # match at the very start does not produce a leading empty string.
    parts: list[Any] = []
    last = 0
    for match in regex.finditer(string):
        if match.end() == 0:
            continue
        parts.append(string[last : match.start()])
        last = match.end()
    parts.append(string[last:])
    return parts


@function("extract", "input", "pattern")
def _extract(input_: Any, pattern: Any) -> list[Any] | None:
    if not _is_string(input_, pattern):
        return None
    regex = _regex(pattern)
    return None if regex is None else [m.group(0) for m in regex.finditer(input_)]


@function("trim", "string")
def _trim(string: Any) -> str | None:
    # Java's String.trim removes the characters up to U+0020, not all Unicode spaces.
    return string.strip(_JAVA_TRIM) if _is_string(string) else None


@function("is blank", "string")
def _is_blank(string: Any) -> bool | None:
    return (not string.strip()) if _is_string(string) else None


@function("uuid")
def _uuid() -> str:
    return str(uuid.uuid4())


@function("to base64", "value")
def _to_base64(value: Any) -> str | None:
    return base64.b64encode(value.encode()).decode("ascii") if _is_string(value) else None


# ================================================================ conversion


@function("string", "from")
def _string(value: Any) -> str | None:
    return None if value is None else feel_string(value)


_NUMBER_TEXT: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _parse_number(text: str) -> Decimal | None:
    """Java's `new BigDecimal(text)`: no spaces, no underscores, no NaN or Infinity."""
    return number(text) if _NUMBER_TEXT.fullmatch(text) else None


@function("number", "from")
def _number(text: Any) -> Decimal | None:
    return _parse_number(text) if _is_string(text) else None


@function("number", "from", "grouping separator")
def _number_grouping(text: Any, grouping: Any) -> Decimal | None:
    if not _is_string(text, grouping) or grouping not in (" ", ",", "."):
        return None
    return _parse_number(text.replace(grouping, ""))


@function("number", "from", "grouping separator", "decimal separator")
def _number_separators(text: Any, grouping: Any, decimal: Any) -> Decimal | None:
    groupings, decimals = (" ", ",", "."), (",", ".")
    valid = (
        (grouping in groupings and decimal in decimals and grouping != decimal)
        or (grouping is None and decimal in decimals)
        or (decimal is None and grouping in groupings)
    )
    if not _is_string(text) or not valid:
        return None
    if grouping is not None:
        text = text.replace(grouping, "")
    if decimal is not None:
        text = text.replace(decimal, ".")
    return _parse_number(text)


@function("date", "from")
def _date(value: Any) -> date | None:
    if _is_string(value):
        return temporal.parse_date(value)
    if type(value) is datetime:
        return value.date()
    return value if type(value) is date else None


@function("date", "year", "month", "day")
def _date_parts(year: Any, month: Any, day: Any) -> date | None:
    if not _is_number(year, month, day):
        return None
    try:
        return date(_int(year), _int(month), _int(day))
    except (ValueError, OverflowError):
        return None


@function("date and time", "from")
def _date_and_time(value: Any) -> datetime | None:
    return temporal.parse_date_time(value) if _is_string(value) else None


@function("date and time", "date", "time")
def _date_and_time_parts(day: Any, clock: Any) -> datetime | None:
    if type(day) not in (date, datetime):
        return None
    if type(clock) is time:
        return datetime.combine(
            day if type(day) is date else day.date(), clock, tzinfo=clock.tzinfo
        )
    if _is_string(clock) and type(day) is datetime:
        zone = temporal.parse_date_time("2000-01-01T00:00:00@" + clock)
        if zone is None or zone.tzinfo is None:
            return None
        if day.tzinfo is None:
            return day.replace(tzinfo=zone.tzinfo)
        return day.astimezone(zone.tzinfo)
    return None


@function("time", "from")
def _time(value: Any) -> time | None:
    if _is_string(value):
        return temporal.parse_time(value)
    if type(value) is datetime:
        if value.tzinfo is None:
            return value.time()
        return value.timetz() if not isinstance(value.tzinfo, ZoneInfo) else None
    if type(value) is date:
        return time(0, 0, tzinfo=UTC)
    return value if type(value) is time else None


@function("time", "hour", "minute", "second")
def _time_parts(hour: Any, minute: Any, second: Any) -> time | None:
    return _time_offset(hour, minute, second, None)


@function("time", "hour", "minute", "second", "offset")
def _time_offset(hour: Any, minute: Any, second: Any, offset: Any) -> time | None:
    if not _is_number(hour, minute, second) or type(offset) not in (timedelta, type(None)):
        return None
    micros = _int((second - _int(second)) * 1_000_000)
    zone = None if offset is None else timezone(offset)
    try:
        return time(_int(hour), _int(minute), _int(second), micros, tzinfo=zone)
    except (ValueError, OverflowError):
        return None


@function("duration", "from")
def _duration(value: Any) -> timedelta | YearMonthDuration | None:
    return temporal.parse_duration(value) if _is_string(value) else None


@function("years and months duration", "from", "to")
def _years_and_months(start: Any, end: Any) -> YearMonthDuration | None:
    if type(start) not in (date, datetime) or type(end) not in (date, datetime):
        return None
    a = start.date() if type(start) is datetime else start
    b = end.date() if type(end) is datetime else end
    months = (b.year - a.year) * 12 + b.month - a.month
    # java.time.Period.between counts only completed months.
    if months > 0 and b.day < a.day:
        months -= 1
    elif months < 0 and b.day > a.day:
        months += 1
    return YearMonthDuration(months)


@function("now")
def _now() -> datetime:
    return datetime.now(UTC)


@function("today")
def _today() -> date:
    return datetime.now(UTC).date()


_DAY_NAMES: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _as_date(value: Any) -> date | None:
    if type(value) is datetime:
        return value.date()
    return value if type(value) is date else None


@function("day of week", "date")
def _day_of_week(value: Any) -> str | None:
    day = _as_date(value)
    return None if day is None else _DAY_NAMES[day.weekday()]


@function("day of year", "date")
def _day_of_year(value: Any) -> Decimal | None:
    day = _as_date(value)
    return None if day is None else number(day.timetuple().tm_yday)


@function("week of year", "date")
def _week_of_year(value: Any) -> Decimal | None:
    day = _as_date(value)
    return None if day is None else number(day.isocalendar()[1])


@function("month of year", "date")
def _month_of_year(value: Any) -> str | None:
    day = _as_date(value)
    return None if day is None else _MONTH_NAMES[day.month - 1]


@function("last day of month", "date")
def _last_day_of_month(value: Any) -> Decimal | None:
    day = _as_date(value)
    if day is None:
        return None
    return number(monthrange(day.year, day.month)[1])


# ================================================================ numeric

_ROUNDING: Final = {
    "UP": ROUND_UP,
    "DOWN": ROUND_DOWN,
    "CEILING": ROUND_CEILING,
    "FLOOR": ROUND_FLOOR,
    "HALF_UP": ROUND_HALF_UP,
    "HALF_DOWN": ROUND_HALF_DOWN,
    "HALF_EVEN": ROUND_HALF_EVEN,
}


def _round(value: Any, scale: Any, rounding: str) -> Decimal | None:
    """Java's `setScale(scale, mode)`."""
    if not _is_number(value, scale):
        return None
    exponent = Decimal(1).scaleb(-_int(scale))
    rounded: Decimal = value.quantize(exponent, rounding=rounding, context=NUMBER_CONTEXT)
    return rounded


@function("decimal", "n", "scale")
def _decimal(value: Any, scale: Any) -> Decimal | None:
    return _round(value, scale, ROUND_HALF_EVEN)


@function("decimal", "n", "scale", "mode")
def _decimal_mode(value: Any, scale: Any, mode: Any) -> Decimal | None:
    rounding = _ROUNDING.get(mode.upper()) if _is_string(mode) else None
    return None if rounding is None else _round(value, scale, rounding)


@function("floor", "n")
def _floor(value: Any) -> Decimal | None:
    return _round(value, Decimal(0), ROUND_FLOOR)


@function("floor", "n", "scale")
def _floor_scale(value: Any, scale: Any) -> Decimal | None:
    return _round(value, scale, ROUND_FLOOR)


@function("ceiling", "n")
def _ceiling(value: Any) -> Decimal | None:
    return _round(value, Decimal(0), ROUND_CEILING)


@function("ceiling", "n", "scale")
def _ceiling_scale(value: Any, scale: Any) -> Decimal | None:
    return _round(value, scale, ROUND_CEILING)


@function("round up", "n", "scale")
def _round_up(value: Any, scale: Any) -> Decimal | None:
    return _round(value, scale, ROUND_UP)


@function("round down", "n", "scale")
def _round_down(value: Any, scale: Any) -> Decimal | None:
    return _round(value, scale, ROUND_DOWN)


@function("round half up", "n", "scale")
def _round_half_up(value: Any, scale: Any) -> Decimal | None:
    return _round(value, scale, ROUND_HALF_UP)


@function("round half down", "n", "scale")
def _round_half_down(value: Any, scale: Any) -> Decimal | None:
    return _round(value, scale, ROUND_HALF_DOWN)


@function("abs", "n")
def _abs(value: Any) -> Decimal | None:
    return NUMBER_CONTEXT.abs(value) if _is_number(value) else None


@function("modulo", "dividend", "divisor")
def _modulo(dividend: Any, divisor: Any) -> Decimal | None:
    if not _is_number(dividend, divisor):
        return None
    # feel-scala: ((dividend % divisor) + divisor) % divisor, % keeping the dividend's sign
    remainder = NUMBER_CONTEXT.remainder(dividend, divisor)
    return NUMBER_CONTEXT.remainder(NUMBER_CONTEXT.add(remainder, divisor), divisor)


@function("sqrt", "number")
def _sqrt(value: Any) -> Decimal | None:
    if not _is_number(value) or value < 0:
        return None
    return _from_double(math.sqrt(float(value)))


@function("log", "number")
def _log(value: Any) -> Decimal | None:
    return _from_double(math.log(float(value))) if _is_number(value) else None


@function("exp", "number")
def _exp(value: Any) -> Decimal | None:
    return _from_double(math.exp(float(value))) if _is_number(value) else None


@function("odd", "number")
def _odd(value: Any) -> bool | None:
    return NUMBER_CONTEXT.remainder(abs(value), Decimal(2)) == 1 if _is_number(value) else None


@function("even", "number")
def _even(value: Any) -> bool | None:
    return NUMBER_CONTEXT.remainder(value, Decimal(2)) == 0 if _is_number(value) else None


# ================================================================ list


def _numbers(values: Any) -> list[Decimal] | None:
    """The list when it is a non-empty list of numbers, else None."""
    if type(values) is not list or not values or not all(type(v) is Decimal for v in values):
        return None
    return values


def _sum(values: list[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = NUMBER_CONTEXT.add(total, value)
    return total


def _compare_known(left: Any, right: Any) -> int:
    # Only called on items `_comparable` accepted, so the order is always defined.
    return compare(left, right) or 0


_order_key: Final = cmp_to_key(_compare_known)


def _comparable(values: Any) -> list[Any] | None:
    """The list when all its items can be ordered against each other, else None."""
    if type(values) is not list or not values:
        return None
    first = values[0]
    if any(compare(first, v) is None for v in values):
        return None
    return values


@function("list contains", "list", "element")
def _list_contains(values: Any, element: Any) -> bool | None:
    if type(values) is not list:
        return None
    return any(same_value(v, element) for v in values)


@function("count", "list")
def _count(values: Any) -> Decimal | None:
    return number(len(values)) if type(values) is list else None


@function("min", "list", varargs=True)
def _min(values: Any) -> Any:
    items = _comparable(values)
    return None if items is None else min(items, key=_order_key)


@function("max", "list", varargs=True)
def _max(values: Any) -> Any:
    items = _comparable(values)
    return None if items is None else max(items, key=_order_key)


@function("sum", "list", varargs=True)
def _sum_function(values: Any) -> Decimal | None:
    items = _numbers(values)
    return None if items is None else _sum(items)


@function("product", "list", varargs=True)
def _product(values: Any) -> Decimal | None:
    items = _numbers(values)
    if items is None:
        return None
    result = Decimal(1)
    for item in items:
        result = NUMBER_CONTEXT.multiply(result, item)
    return result


@function("mean", "list", varargs=True)
def _mean(values: Any) -> Decimal | None:
    items = _numbers(values)
    return None if items is None else NUMBER_CONTEXT.divide(_sum(items), Decimal(len(items)))


@function("median", "list", varargs=True)
def _median(values: Any) -> Decimal | None:
    items = _numbers(values)
    if items is None:
        return None
    ordered = sorted(items)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    pair = NUMBER_CONTEXT.add(ordered[middle - 1], ordered[middle])
    return NUMBER_CONTEXT.divide(pair, Decimal(2))


@function("stddev", "list", varargs=True)
def _stddev(values: Any) -> Decimal | None:
    items = _numbers(values)
    if items is None or len(items) < 2:
        return None
    mean = NUMBER_CONTEXT.divide(_sum(items), Decimal(len(items)))
    squares = _sum([NUMBER_CONTEXT.power(NUMBER_CONTEXT.subtract(v, mean), 2) for v in items])
    variance = NUMBER_CONTEXT.divide(squares, Decimal(len(items) - 1))
    return _from_double(math.sqrt(float(variance)))


@function("mode", "list", varargs=True)
def _mode(values: Any) -> list[Any] | None:
    if values == []:
        return []
    items = _numbers(values)
    if items is None:
        return None
    counts: dict[Decimal, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    most = max(counts.values())
    return sorted(k for k, c in counts.items() if c == most)


def _all(values: list[Any]) -> bool | None:
    """feel-scala's `all`: false wins, then null for anything not true."""
    result: bool | None = True
    for value in values:
        if result is False:
            return False
        if result is True and type(value) is bool:
            result = value
        else:
            result = False if (result is None and value is False) else None
    return result


def _any(values: list[Any]) -> bool | None:
    """feel-scala's `any`: true wins, then null for anything not false."""
    result: bool | None = False
    for value in values:
        if result is True:
            return True
        if result is False and type(value) is bool:
            result = value
        else:
            result = True if (result is None and value is True) else None
    return result


@function("all", "list", varargs=True)
def _all_function(values: Any) -> bool | None:
    return _all(values) if type(values) is list else None


@function("any", "list", varargs=True)
def _any_function(values: Any) -> bool | None:
    return _any(values) if type(values) is list else None


def _slice(values: list[Any], start: int, end: int) -> list[Any]:
    """Scala's `slice`: bounds are clamped, never an error."""
    start = max(start, 0)
    return values[start:end] if end > start else []


@function("sublist", "list", "start")
def _sublist(values: Any, start: Any) -> list[Any] | None:
    if type(values) is not list or not _is_number(start):
        return None
    return _slice(values, _index(len(values), start), len(values))


@function("sublist", "list", "start", "length")
def _sublist_length(values: Any, start: Any, length: Any) -> list[Any] | None:
    if type(values) is not list or not _is_number(start, length):
        return None
    index = _index(len(values), start)
    return _slice(values, index, index + _int(length))


@function("append", "list", "items", varargs=True)
def _append(values: Any, items: Any) -> list[Any] | None:
    if type(values) is not list or type(items) is not list:
        return None
    return values + items


@function("concatenate", "lists", varargs=True)
def _concatenate(lists: Any) -> list[Any] | None:
    if type(lists) is not list:
        return None
    result: list[Any] = []
    for item in lists:
        if type(item) is list:
            result.extend(item)
        else:
            result.append(item)
    return result


@function("insert before", "list", "position", "newItem")
def _insert_before(values: Any, position: Any, item: Any) -> list[Any] | None:
    if type(values) is not list or not _is_number(position):
        return None
    index = max(_index(len(values), position), 0)
    return [*values[:index], item, *values[index:]]


@function("remove", "list", "position")
def _remove(values: Any, position: Any) -> list[Any] | None:
    if type(values) is not list or not _is_number(position):
        return None
    index = max(_index(len(values), position), 0)
    after = max(_index(len(values), NUMBER_CONTEXT.add(position, Decimal(1))), 0)
    return values[:index] + values[after:]


@function("reverse", "list")
def _reverse(values: Any) -> list[Any] | None:
    return values[::-1] if type(values) is list else None


@function("index of", "list", "match")
def _index_of(values: Any, match: Any) -> list[Any] | None:
    if type(values) is not list:
        return None
    return [number(i + 1) for i, v in enumerate(values) if same_value(v, match)]


def _distinct(values: list[Any]) -> list[Any]:
    result: list[Any] = []
    for value in values:
        if not any(same_value(value, seen) for seen in result):
            result.append(value)
    return result


@function("union", "lists", varargs=True)
def _union(lists: Any) -> list[Any] | None:
    joined = _concatenate(lists)
    return None if joined is None else _distinct(joined)


@function("distinct values", "list")
def _distinct_values(values: Any) -> list[Any] | None:
    return _distinct(values) if type(values) is list else None


@function("duplicate values", "list")
def _duplicate_values(values: Any) -> list[Any] | None:
    if type(values) is not list:
        return None
    return [v for v in _distinct(values) if sum(1 for other in values if same_value(v, other)) > 1]


def _flatten(values: list[Any]) -> list[Any]:
    result: list[Any] = []
    for value in values:
        if type(value) is list:
            result.extend(_flatten(value))
        else:
            result.append(value)
    return result


@function("flatten", "list")
def _flatten_function(values: Any) -> list[Any] | None:
    return _flatten(values) if type(values) is list else None


def _join(values: Any, delimiter: str = "", prefix: str = "", suffix: str = "") -> str | None:
    if type(values) is not list or not all(v is None or type(v) is str for v in values):
        return None
    return prefix + delimiter.join(v for v in values if v is not None) + suffix


@function("string join", "list")
def _string_join(values: Any) -> str | None:
    return _join(values)


@function("string join", "list", "delimiter")
def _string_join_delimiter(values: Any, delimiter: Any) -> str | None:
    if delimiter is not None and not _is_string(delimiter):
        return None
    return _join(values, delimiter or "")


@function("string join", "list", "delimiter", "prefix", "suffix")
def _string_join_all(values: Any, delimiter: Any, prefix: Any, suffix: Any) -> str | None:
    if not all(v is None or type(v) is str for v in (delimiter, prefix, suffix)):
        return None
    if (prefix is None) != (suffix is None):
        return None
    return _join(values, delimiter or "", prefix or "", suffix or "")


# ================================================================ context


@function("get value", "context", "key")
def _get_value(context: Any, key: Any) -> Any:
    if type(context) is not dict:
        return None
    if _is_string(key):
        return context.get(key)
    if type(key) is list and key and all(type(k) is str for k in key):
        value: Any = context
        for part in key:
            value = value.get(part) if type(value) is dict else None
        return value
    return None


@function("get entries", "context")
def _get_entries(context: Any) -> list[Any] | None:
    if type(context) is not dict:
        return None
    return [{"key": k, "value": v} for k, v in context.items()]


@function("context put", "context", "key", "value")
def _context_put(context: Any, key: Any, value: Any) -> dict[str, Any] | None:
    if type(context) is not dict:
        return None
    if _is_string(key):
        return {**context, key: value}
    if type(key) is list and key and all(type(k) is str for k in key):
        if len(key) == 1:
            return {**context, key[0]: value}
        inner = context.get(key[0])
        nested = _context_put(inner if type(inner) is dict else {}, key[1:], value)
        return {**context, key[0]: nested}
    return None


@function("context merge", "contexts", varargs=True)
def _context_merge(contexts: Any) -> dict[str, Any] | None:
    if type(contexts) is not list or not all(type(c) is dict for c in contexts):
        return None
    merged: dict[str, Any] = {}
    for context in contexts:
        merged.update(context)
    return merged


@function("context", "entries")
def _context(entries: Any) -> dict[str, Any] | None:
    if type(entries) is not list:
        return None
    result: dict[str, Any] = {}
    for entry in entries:
        if type(entry) is not dict or type(entry.get("key")) is not str or "value" not in entry:
            return None
        result[entry["key"]] = entry["value"]
    return result


# ================================================================ left out

unsupported(
    "it takes a function argument, and function values are not supported",
    "sort",
)
unsupported(
    "range functions are not supported",
    "before",
    "after",
    "meets",
    "met by",
    "overlaps",
    "overlaps before",
    "overlaps after",
    "finishes",
    "finished by",
    "includes",
    "during",
    "starts",
    "started by",
    "coincides",
)
unsupported("it is not deterministic", "random number")
