"""Encoded-query engine for the ServiceNow Table API emulator.

Models the `sysparm_query` subset real clients send (reference A3): `^` (AND), `^OR` (OR with
the previous condition, binding tighter than AND), `^NQ` (union of query blocks), `^EQ`
(ignored), `ORDERBY`/`ORDERBYDESC`, and the operators in `_OPERATORS`, with one level of
dot-walking (`caller_id.name=Abel Tuter`).

Parsing happens in two steps so the hot path stays cheap: `parse` turns the text into terms
and is cached per distinct string; `compile_query` binds those terms to a table schema and
the record store, giving closures that `ServiceNowEmulator` caches per (table, query).
"""

from __future__ import annotations

import enum
import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._table_schema import Field, TableSchema

__all__ = ["CompiledQuery", "InvalidQueryPolicy", "compile_query", "parse"]

Record = dict[str, str]
Predicate = Callable[[Record], bool]
Getter = Callable[[Record], str]


class InvalidQueryPolicy(enum.Enum):
    """What a condition on an unknown field (or one the emulator cannot parse) does.

    IGNORE drops the condition (ServiceNow's default, so a typo can return the whole table);
    NO_ROWS makes the whole query match nothing (`glide.invalid_query.returns_no_rows=true`);
    FORBID answers 403 `Insufficient rights to query records` (instances with query ACLs).
    """

    IGNORE = "ignore"
    NO_ROWS = "no_rows"
    FORBID = "forbid"


# Longest first, so `NOT LIKE` wins over nothing and `ISNOTEMPTY` over `ISEMPTY`.
_OPERATORS: tuple[str, ...] = tuple(
    sorted(
        (
            "=",
            "!=",
            "LIKE",
            "NOT LIKE",
            "*",
            "!*",
            "STARTSWITH",
            "ENDSWITH",
            "IN",
            "NOT IN",
            "ISEMPTY",
            "ISNOTEMPTY",
            "EMPTYSTRING",
            "ANYTHING",
            "<",
            "<=",
            ">",
            ">=",
            "BETWEEN",
            "SAMEAS",
            "NSAMEAS",
        ),
        key=len,
        reverse=True,
    )
)
_FIELD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")


@dataclass(frozen=True, slots=True)
class Term:
    """One condition, `field` + `op` + `value`; `op == ""` marks a part that did not parse."""

    field: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """Blocks joined by `^NQ`; each block is a list of OR groups joined by AND."""

    blocks: tuple[tuple[tuple[Term, ...], ...], ...]
    order: tuple[tuple[str, bool], ...]  # (field, descending)


def _split(text: str) -> list[str]:
    """Split on `^`, where `^^` stands for a literal caret inside a value."""
    parts: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "^":
            if i + 1 < n and text[i + 1] == "^":
                current.append("^")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _parse_term(text: str) -> Term:
    end = 0
    while end < len(text) and text[end] in _FIELD_CHARS:
        end += 1
    name, rest = text[:end], text[end:]
    if name:
        for op in _OPERATORS:
            if rest.startswith(op):
                return Term(name, op, rest[len(op) :])
    return Term(text, "", "")


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> ParsedQuery:
    """Parse an encoded query; the result is cached because clients repeat their queries."""
    blocks: list[tuple[tuple[Term, ...], ...]] = []
    groups: list[list[Term]] = []
    order: list[tuple[str, bool]] = []
    for raw in _split(text):
        part = raw
        if part.startswith("NQ"):
            if groups:
                blocks.append(tuple(tuple(g) for g in groups))
            groups = []
            part = part[2:]
        if not part or part == "EQ":
            continue
        if part.startswith("ORDERBYDESC"):
            order.append((part[len("ORDERBYDESC") :], True))
        elif part.startswith("ORDERBY"):
            order.append((part[len("ORDERBY") :], False))
        elif part.startswith("OR") and groups:
            groups[-1].append(_parse_term(part[2:]))
        else:
            groups.append([_parse_term(part)])
    if groups:
        blocks.append(tuple(tuple(g) for g in groups))
    return ParsedQuery(tuple(blocks), tuple(order))


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """A query bound to one table: `predicate` None matches every row."""

    predicate: Predicate | None
    no_rows: bool = False
    forbidden: bool = False
    order: tuple[tuple[Callable[[Record], Any], bool], ...] = ()
    # (field, value) of a top-level `field=value` every matching row must satisfy: lets the
    # store look rows up in a hash index instead of scanning (idempotency-key lookups)
    index: tuple[str, str] | None = None

    def apply(self, rows: list[Record]) -> list[Record]:
        """Filter and sort `rows` (which it never mutates)."""
        if self.no_rows:
            return []
        predicate = self.predicate
        result = rows if predicate is None else [r for r in rows if predicate(r)]
        if self.order:
            result = list(result)
            # stable sorts applied last key first give ORDERBY a, ORDERBY b precedence
            for key, descending in reversed(self.order):
                result.sort(key=key, reverse=descending)
        return result


class _Invalid(Exception):
    """A term the policy has to decide about (unknown field, unsupported operator)."""


@dataclass(frozen=True, slots=True)
class _Resolved:
    """How to read a (possibly dot-walked) field from a record."""

    field: Field
    value: Getter  # the stored value
    display: Getter  # what LIKE, STARTSWITH and sorting see on a reference
    plain: str | None = None  # the column name when not dot-walked: lets predicates inline it


def _resolve(
    name: str,
    schema: TableSchema,
    schemas: Mapping[str, TableSchema],
    store: Mapping[str, Mapping[str, Record]],
    display_of: Callable[[str, str], str],
) -> _Resolved:
    base, _, sub = name.partition(".")
    f = schema.fields.get(base)
    if f is None:
        raise _Invalid(name)
    if not sub:
        own_value, own_display = _getters(f, base, display_of)
        return _Resolved(f, own_value, own_display, base)
    if f.reference is None or "." in sub:
        raise _Invalid(name)
    target = schemas.get(f.reference)
    if target is None or sub not in target.fields:
        raise _Invalid(name)
    target_rows = store[f.reference]
    sub_field = target.fields[sub]
    inner_value, inner_display = _getters(sub_field, sub, display_of)
    empty: Record = {}

    def value(record: Record) -> str:
        return inner_value(target_rows.get(record.get(base, ""), empty))

    def display(record: Record) -> str:
        return inner_display(target_rows.get(record.get(base, ""), empty))

    return _Resolved(sub_field, value, display)


def _getters(f: Field, name: str, display_of: Callable[[str, str], str]) -> tuple[Getter, Getter]:
    def value(record: Record) -> str:
        return record.get(name, "")

    if f.reference is None:
        return value, value
    target = f.reference

    def display(record: Record) -> str:
        return display_of(target, record.get(name, ""))

    return value, display


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compare(get: Getter, op: str, value: str, numeric: bool) -> Predicate:
    """`<`, `<=`, `>`, `>=`: numbers on number columns, text otherwise (dates sort as text);
    an empty field never compares, like SQL NULL."""
    cmp: Callable[[Any, Any], bool] = {
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
    }[op]
    target = _number(value) if numeric else None
    if target is not None:

        def numeric_pred(record: Record) -> bool:
            raw = get(record)
            got = _number(raw) if raw else None
            return got is not None and cmp(got, target)

        return numeric_pred

    def text_pred(record: Record) -> bool:
        got = get(record)
        return got != "" and cmp(got, value)

    return text_pred


_TermFactory = Callable[[_Resolved, str], Predicate]


def _like(resolved: _Resolved, value: str) -> Predicate:
    text, lowered = resolved.display, value.lower()
    return lambda r: lowered in text(r).lower()


def _not_like(resolved: _Resolved, value: str) -> Predicate:
    text, lowered = resolved.display, value.lower()
    return lambda r: lowered not in text(r).lower()


def _starts(resolved: _Resolved, value: str) -> Predicate:
    text, lowered = resolved.display, value.lower()
    return lambda r: text(r).lower().startswith(lowered)


def _ends(resolved: _Resolved, value: str) -> Predicate:
    text, lowered = resolved.display, value.lower()
    return lambda r: text(r).lower().endswith(lowered)


def _in(resolved: _Resolved, value: str) -> Predicate:
    get, members = resolved.value, frozenset(v.strip() for v in value.split(","))
    if (name := resolved.plain) is not None:
        return lambda r: r.get(name, "") in members
    return lambda r: get(r) in members


def _not_in(resolved: _Resolved, value: str) -> Predicate:
    get, members = resolved.value, frozenset(v.strip() for v in value.split(","))
    return lambda r: get(r) not in members


def _between(resolved: _Resolved, value: str) -> Predicate:
    low, sep, high = value.partition("@")
    if not sep:
        raise _Invalid(value)
    above = _compare(resolved.value, ">=", low, resolved.field.numeric)
    below = _compare(resolved.value, "<=", high, resolved.field.numeric)
    return lambda r: above(r) and below(r)


def _equals(resolved: _Resolved, value: str) -> Predicate:
    get = resolved.value
    if (name := resolved.plain) is not None:
        return lambda r: r.get(name, "") == value
    return lambda r: get(r) == value


def _not_equals(resolved: _Resolved, value: str) -> Predicate:
    get = resolved.value
    if (name := resolved.plain) is not None:
        return lambda r: r.get(name, "") != value
    return lambda r: get(r) != value


def _empty(resolved: _Resolved, value: str) -> Predicate:
    get = resolved.value
    return lambda r: get(r) == ""


def _not_empty(resolved: _Resolved, value: str) -> Predicate:
    get = resolved.value
    return lambda r: get(r) != ""


def _comparison(op: str) -> _TermFactory:
    def factory(resolved: _Resolved, value: str) -> Predicate:
        return _compare(resolved.value, op, value, resolved.field.numeric)

    return factory


# Reference fields compare on sys_id with =, IN…, but on their display value with LIKE,
# STARTSWITH and ENDSWITH (reference A3: `caller_idSTARTSWITHDon`).
_FACTORIES: Mapping[str, _TermFactory] = {
    "=": _equals,
    "!=": _not_equals,
    "LIKE": _like,
    "*": _like,
    "NOT LIKE": _not_like,
    "!*": _not_like,
    "STARTSWITH": _starts,
    "ENDSWITH": _ends,
    "IN": _in,
    "NOT IN": _not_in,
    "ISEMPTY": _empty,
    "EMPTYSTRING": _empty,
    "ISNOTEMPTY": _not_empty,
    "ANYTHING": lambda resolved, value: lambda r: True,
    "<": _comparison("<"),
    "<=": _comparison("<="),
    ">": _comparison(">"),
    ">=": _comparison(">="),
    "BETWEEN": _between,
}


@dataclass(frozen=True, slots=True)
class _Binding:
    """What compiling a query against one table needs."""

    schema: TableSchema
    schemas: Mapping[str, TableSchema]
    store: Mapping[str, Mapping[str, Record]]
    display_of: Callable[[str, str], str]

    def resolve(self, name: str) -> _Resolved:
        return _resolve(name, self.schema, self.schemas, self.store, self.display_of)


def _compile_term(term: Term, binding: _Binding) -> Predicate:
    if not term.op:
        raise _Invalid(term.field)
    resolved = binding.resolve(term.field)
    factory = _FACTORIES.get(term.op)
    if factory is not None:
        return factory(resolved, term.value)
    # SAMEAS / NSAMEAS compare against another field of the same record
    get, other = resolved.value, binding.resolve(term.value).value
    if term.op == "SAMEAS":
        return lambda r: get(r) == other(r)
    return lambda r: get(r) != other(r)


def _any(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    return lambda r: any(p(r) for p in predicates)


def _all(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    return lambda r: all(p(r) for p in predicates)


def _sort_key(resolved: _Resolved) -> Callable[[Record], Any]:
    """Numbers sort numerically (empty first), references by display value, the rest as text."""
    if resolved.field.numeric:
        get = resolved.value

        def numeric_key(record: Record) -> float:
            got = _number(get(record))
            return float("-inf") if got is None else got

        return numeric_key
    return resolved.display


def compile_query(
    parsed: ParsedQuery,
    *,
    schema: TableSchema,
    schemas: Mapping[str, TableSchema],
    store: Mapping[str, Mapping[str, Record]],
    display_of: Callable[[str, str], str],
    policy: InvalidQueryPolicy,
) -> CompiledQuery:
    """Bind a parsed query to `schema`; `display_of(table, sys_id)` names referenced records."""
    binding = _Binding(schema, schemas, store, display_of)
    index: tuple[str, str] | None = None
    block_predicates: list[Predicate] = []
    match_all = not parsed.blocks
    for block in parsed.blocks:
        group_predicates: list[Predicate] = []
        for group in block:
            terms: list[Predicate] = []
            for term in group:
                try:
                    terms.append(_compile_term(term, binding))
                except _Invalid:
                    if policy is InvalidQueryPolicy.FORBID:
                        return CompiledQuery(None, forbidden=True)
                    if policy is InvalidQueryPolicy.NO_ROWS:
                        return CompiledQuery(None, no_rows=True)
            if terms:
                group_predicates.append(_any(terms))
                term = group[0]
                if (
                    index is None
                    and len(parsed.blocks) == 1
                    and len(group) == 1
                    and term.op == "="
                    and "." not in term.field
                ):
                    index = (term.field, term.value)
        if not group_predicates:
            # every condition of this block was dropped: it matches the whole table
            match_all = True
        else:
            block_predicates.append(_all(group_predicates))
    order: list[tuple[Callable[[Record], Any], bool]] = []
    for name, descending in parsed.order:
        try:
            order.append((_sort_key(binding.resolve(name)), descending))
        except _Invalid:
            continue  # ServiceNow ignores ORDERBY on an unknown field
    if match_all:
        return CompiledQuery(None, order=tuple(order))
    return CompiledQuery(_any(block_predicates), order=tuple(order), index=index)
