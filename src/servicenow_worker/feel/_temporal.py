"""Dates, times and durations: parsing, ISO-8601 formatting, arithmetic and properties.

The rules follow feel-scala (java.time underneath): a date plus a days-and-time duration moves
from the start of that day, a month added to Jan 31 gives the month's last day, durations
multiply by the integer part of a number.
"""

from __future__ import annotations

import re
from calendar import monthrange
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from servicenow_worker.feel._values import (
    ARITHMETIC_ERRORS,
    NUMBER_CONTEXT,
    YearMonthDuration,
    number,
    zone_id,
)

Temporal = date | time | datetime | timedelta | YearMonthDuration

_DATE: Final = r"(\d{4})-(\d{2})-(\d{2})"
_TIME: Final = r"(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
_ZONE: Final = r"(Z|[+-]\d{2}:\d{2}(?::\d{2})?|@[A-Za-z][A-Za-z0-9_+/-]*)?"
_DATE_RE: Final = re.compile(_DATE)
_TIME_RE: Final = re.compile(_TIME + _ZONE)
_DATE_TIME_RE: Final = re.compile(_DATE + "T" + _TIME + _ZONE)
_DURATION_RE: Final = re.compile(
    r"(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?"
    r"(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:\.(\d+))?S)?)?"
)
_MICROS_PER_SECOND: Final = 1_000_000


# ---------------------------------------------------------------- parsing


def parse_date(text: str) -> date | None:
    """`2024-01-31` as a date, or None."""
    match = _DATE_RE.fullmatch(text)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def parse_time(text: str) -> time | None:
    """`10:30:00`, `10:30:00.5Z`, `10:30:00+02:00` as a time, or None (named zones unsupported)."""
    match = _TIME_RE.fullmatch(text)
    if match is None:
        return None
    zone = _zone(match[5])
    if zone is _INVALID or isinstance(zone, ZoneInfo):
        return None
    try:
        return time(
            int(match[1]), int(match[2]), int(match[3] or 0), _micros(match[4]), tzinfo=zone
        )
    except ValueError:
        return None


def parse_date_time(text: str) -> datetime | None:
    """`2024-01-31T10:00:00[.f][Z|+01:00|@Europe/Berlin]`, or a bare date (midnight), or None."""
    day = parse_date(text)
    if day is not None:
        return datetime(day.year, day.month, day.day)
    match = _DATE_TIME_RE.fullmatch(text)
    if match is None:
        return None
    zone = _zone(match[8])
    if zone is _INVALID:
        return None
    try:
        return datetime(
            int(match[1]),
            int(match[2]),
            int(match[3]),
            int(match[4]),
            int(match[5]),
            int(match[6] or 0),
            _micros(match[7]),
            tzinfo=zone,
        )
    except ValueError:
        return None


_INVALID: Final = timezone(timedelta(0), "invalid")


def _zone(text: str | None) -> tzinfo | None:
    if not text:
        return None
    if text == "Z":
        return UTC
    if text.startswith("@"):
        try:
            return ZoneInfo(text[1:])
        except (ZoneInfoNotFoundError, ValueError):
            return _INVALID
    sign = -1 if text[0] == "-" else 1
    parts = [int(p) for p in text[1:].split(":")]
    offset = timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2] if len(parts) > 2 else 0)
    if offset > timedelta(hours=18):
        return _INVALID
    return UTC if not offset else timezone(sign * offset)


def _micros(fraction: str | None) -> int:
    """Microseconds of a `.123456789` fraction; digits past the sixth are dropped."""
    return int((fraction[1:] + "000000")[:6]) if fraction else 0


def parse_duration(text: str) -> timedelta | YearMonthDuration | None:
    """`P1Y2M` as years-and-months, `P1DT2H3M4.5S` as days-and-time, or None."""
    match = _DURATION_RE.fullmatch(text)
    if match is None or text.rstrip("-") in ("P", "PT"):
        return None
    sign = -1 if match[1] else 1
    years, months, days, hours, minutes, seconds, fraction = match.groups()[1:]
    if years or months:
        if days or hours or minutes or seconds:
            return None
        return YearMonthDuration(sign * (int(years or 0) * 12 + int(months or 0)))
    if not (days or hours or minutes or seconds):
        return None
    try:
        value = timedelta(
            days=int(days or 0),
            hours=int(hours or 0),
            minutes=int(minutes or 0),
            seconds=int(seconds or 0),
            microseconds=_micros("." + fraction if fraction else None),
        )
    except OverflowError:
        return None
    return -value if sign < 0 else value


def parse_temporal_literal(text: str) -> Temporal | None:
    """The value of `@"…"`: a duration, date and time, date or time, chosen by its form."""
    if text.startswith(("P", "-P")):
        return parse_duration(text)
    if "T" in text:
        return parse_date_time(text)
    if _DATE_RE.fullmatch(text):
        return parse_date(text)
    return parse_time(text)


# ---------------------------------------------------------------- formatting


def format_temporal(value: Any) -> str | None:
    """ISO-8601 text of a temporal value as feel-scala prints it, or None for other values."""
    kind = type(value)
    if kind is datetime:
        return _format_date_time(value)
    if kind is date:
        return str(value.isoformat())
    if kind is time:
        return _format_time(value) + _format_zone(value)
    if kind is timedelta:
        return format_day_time_duration(value)
    if kind is YearMonthDuration:
        return format_year_month_duration(value)
    return None


def _format_time(value: time | datetime) -> str:
    text = f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text


def _format_zone(value: time | datetime) -> str:
    if value.tzinfo is None:
        return ""
    zone = zone_id(value)
    if zone is not None:
        return "@" + zone
    return _format_offset(value.utcoffset() or timedelta(0))


def _format_offset(offset: timedelta) -> str:
    if not offset:
        return "Z"
    sign = "-" if offset < timedelta(0) else "+"
    seconds = abs(int(offset.total_seconds()))
    text = f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
    return text + (f":{seconds % 60:02d}" if seconds % 60 else "")


def _format_date_time(value: datetime) -> str:
    return value.date().isoformat() + "T" + _format_time(value) + _format_zone(value)


def format_day_time_duration(value: timedelta) -> str:
    """`P1DT2H3M4S` as feel-scala prints it, but zero is `PT0S` (as java.time.Duration prints
    it; feel-scala's `P0D` means the same) and a fraction of a second is kept."""
    micros = value // timedelta(microseconds=1)
    if micros == 0:
        return "PT0S"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    seconds, fraction = divmod(micros, _MICROS_PER_SECOND)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = sign + "P" + (f"{days}D" if days else "")
    time_part = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or fraction:
        fraction_text = f".{fraction:06d}".rstrip("0") if fraction else ""
        time_part += f"{seconds}{fraction_text}S"
    return text + ("T" + time_part if time_part else "")


def format_year_month_duration(value: YearMonthDuration) -> str:
    """`P1Y2M`; zero is `P0Y` as in feel-scala."""
    if value.months == 0:
        return "P0Y"
    sign = "-" if value.months < 0 else ""
    years, months = divmod(abs(value.months), 12)
    return sign + "P" + (f"{years}Y" if years else "") + (f"{months}M" if months else "")


# ---------------------------------------------------------------- arithmetic


def add(left: Any, right: Any) -> Any:
    """`left + right` for temporal operands, or None when FEEL does not define it."""
    if type(right) in (timedelta, YearMonthDuration) and type(left) not in (
        timedelta,
        YearMonthDuration,
    ):
        return _shift(left, right, 1)
    if type(left) in (timedelta, YearMonthDuration) and type(right) not in (
        timedelta,
        YearMonthDuration,
    ):
        return _shift(right, left, 1)
    if type(left) is type(right) is timedelta:
        return left + right
    if type(left) is type(right) is YearMonthDuration:
        return YearMonthDuration(left.months + right.months)
    return None


def subtract(left: Any, right: Any) -> Any:
    """`left - right` for temporal operands, or None when FEEL does not define it."""
    if type(right) in (timedelta, YearMonthDuration):
        if type(left) is type(right) is timedelta:
            return left - right
        if type(left) is type(right) is YearMonthDuration:
            return YearMonthDuration(left.months - right.months)
        return _shift(left, right, -1)
    return _between(left, right)


def _shift(value: Any, duration: timedelta | YearMonthDuration, sign: int) -> Any:
    """A date, time or date and time moved by a duration, or None."""
    kind = type(value)
    try:
        if isinstance(duration, YearMonthDuration):
            if kind in (date, datetime):
                return _add_months(value, sign * duration.months)
            return None
        delta: timedelta = duration if sign > 0 else -duration
        if kind is datetime:
            return _add_exact(value, delta)
        if kind is date:
            return (datetime(value.year, value.month, value.day) + delta).date()
        if kind is time:
            moved = datetime.combine(date(2000, 1, 1), value.replace(tzinfo=None)) + delta
            return moved.time().replace(tzinfo=value.tzinfo)
    except ARITHMETIC_ERRORS:
        return None
    return None


def _add_exact(value: datetime, delta: timedelta) -> datetime:
    # java.time adds a Duration to a zoned date-time on the instant time-line.
    if isinstance(value.tzinfo, ZoneInfo):
        return (value.astimezone(UTC) + delta).astimezone(value.tzinfo)
    return value + delta


def _add_months(value: date, months: int) -> date:
    """Move by whole months; the day is clamped to the last day of the target month."""
    index = value.year * 12 + value.month - 1 + months
    year, month = divmod(index, 12)
    day = min(value.day, monthrange(year, month + 1)[1])
    return value.replace(year=year, month=month + 1, day=day)


def _between(left: Any, right: Any) -> timedelta | None:
    """The days-and-time duration from `right` to `left`, or None."""
    kind = type(left)
    if kind is not type(right):
        return None
    if kind is date or (kind is datetime and (left.tzinfo is None) == (right.tzinfo is None)):
        difference: timedelta = left - right
        return difference
    if kind is time and (left.tzinfo is None) == (right.tzinfo is None):
        return _time_seconds(left) - _time_seconds(right)
    return None


def _time_seconds(value: time) -> timedelta:
    since_midnight = timedelta(
        hours=value.hour,
        minutes=value.minute,
        seconds=value.second,
        microseconds=value.microsecond,
    )
    return since_midnight - (value.utcoffset() or timedelta(0))


def multiply(duration: timedelta | YearMonthDuration, factor: Decimal) -> Any:
    """A duration times the integer part of a number (as feel-scala's `intValue`)."""
    whole = int(factor)
    if isinstance(duration, YearMonthDuration):
        return YearMonthDuration(duration.months * whole)
    try:
        return duration * whole
    except OverflowError:
        return None


def divide(left: Any, right: Any) -> Any:
    """Division involving durations, as feel-scala defines it, or None."""
    try:
        return _divide(left, right)
    except ARITHMETIC_ERRORS:
        return None


def _divide(left: Any, right: Any) -> Any:
    if type(left) is YearMonthDuration:
        if type(right) is Decimal and right:
            return YearMonthDuration(int(NUMBER_CONTEXT.divide(number(left.months), right)))
        if type(right) is YearMonthDuration and right.months:
            return NUMBER_CONTEXT.divide(number(left.months), number(right.months))
        return None
    if type(left) is timedelta:
        millis = left // timedelta(milliseconds=1)
        if type(right) is timedelta and right:
            # feel-scala divides the two millisecond counts as whole numbers.
            divisor = right // timedelta(milliseconds=1)
            return number(_truncated_division(millis, divisor)) if divisor else None
        if type(right) is Decimal and right:
            quotient = int(NUMBER_CONTEXT.divide(number(millis), right))
            return timedelta(milliseconds=quotient)
    return None


def _truncated_division(dividend: int, divisor: int) -> int:
    quotient = abs(dividend) // abs(divisor)
    return -quotient if (dividend < 0) != (divisor < 0) else quotient


# ---------------------------------------------------------------- properties

_MISSING: Final = object()


def property_of(value: Any, name: str) -> Any:
    """A property of a temporal value (`year`, `hours`, `time offset`…), or `_MISSING`."""
    getter = _PROPERTIES.get((type(value), name))
    return _MISSING if getter is None else getter(value)


def is_missing(value: Any) -> bool:
    """True for the marker `property_of` returns when there is no such property."""
    return value is _MISSING


def _offset(value: time | datetime) -> timedelta | None:
    return value.utcoffset() if value.tzinfo is not None else None


def _duration_part(value: timedelta, unit_seconds: int, modulo: int | None) -> Decimal:
    micros = value // timedelta(microseconds=1)
    magnitude = abs(micros) // (unit_seconds * _MICROS_PER_SECOND)
    if modulo is not None:
        magnitude %= modulo
    return number(-magnitude if micros < 0 else magnitude)


_DATE_PROPERTIES: Final[dict[str, Any]] = {
    "year": lambda v: number(v.year),
    "month": lambda v: number(v.month),
    "day": lambda v: number(v.day),
    "weekday": lambda v: number(v.isoweekday()),
}
_TIME_PROPERTIES: Final[dict[str, Any]] = {
    "hour": lambda v: number(v.hour),
    "minute": lambda v: number(v.minute),
    "second": lambda v: number(v.second),
    "time offset": _offset,
    "timezone": zone_id,
}
_PROPERTIES: Final[dict[tuple[type, str], Any]] = {
    **{(date, k): f for k, f in _DATE_PROPERTIES.items()},
    **{(datetime, k): f for k, f in {**_DATE_PROPERTIES, **_TIME_PROPERTIES}.items()},
    **{(time, k): f for k, f in _TIME_PROPERTIES.items()},
    (timedelta, "days"): lambda v: _duration_part(v, 86_400, None),
    (timedelta, "hours"): lambda v: _duration_part(v, 3600, 24),
    (timedelta, "minutes"): lambda v: _duration_part(v, 60, 60),
    (timedelta, "seconds"): lambda v: _duration_part(v, 1, 60),
    (YearMonthDuration, "years"): lambda v: number(v.years_part),
    (YearMonthDuration, "months"): lambda v: number(v.months_part),
}
