"""Generated corpus cases: arithmetic, comparisons, logic, strings and lists, with a fixed seed.

The generators keep to values both evaluators represent exactly (integers, halves), so a
difference they find is a difference in semantics, not in floating point.
"""

from __future__ import annotations

import random
from itertools import product
from typing import Any

SEED = 20240601
Case = dict[str, Any]


def generated_cases() -> list[Case]:
    """All generated cases, the same on every run."""
    rng = random.Random(SEED)
    return [
        *_arithmetic(rng, 60),
        *_comparisons(rng, 40),
        *_three_valued_logic(),
        *_strings(rng, 30),
        *_lists(rng, 40),
        *_filters(rng, 20),
    ]


def _case(kind: str, number: int, expression: str, context: Any = "none") -> Case:
    return {"id": f"gen-{kind}-{number:03d}", "expression": expression, "context": context}


def _operand(rng: random.Random) -> str:
    value = rng.choice([rng.randint(-20, 20), rng.randint(0, 40) / 2])
    text = str(int(value)) if float(value).is_integer() else str(value)
    return f"({text})" if text.startswith("-") else text


def _arithmetic_expression(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.3:
        return _operand(rng)
    operator = rng.choice(["+", "-", "*", "+", "-"])
    left = _arithmetic_expression(rng, depth - 1)
    right = _arithmetic_expression(rng, depth - 1)
    text = f"{left} {operator} {right}"
    return f"({text})" if rng.random() < 0.5 else text


def _arithmetic(rng: random.Random, count: int) -> list[Case]:
    cases = []
    for i in range(count):
        expression = _arithmetic_expression(rng, 3)
        if i % 5 == 4:
            expression = f"({expression}) / {rng.choice([1, 2, 4, 8])}"
        cases.append(_case("arith", i + 1, expression))
    return cases


def _comparisons(rng: random.Random, count: int) -> list[Case]:
    cases = []
    operators = ["=", "!=", "<", "<=", ">", ">="]
    for i in range(count):
        left, right = _operand(rng), _operand(rng)
        if i % 4 == 3:
            right = left
        if i % 8 == 7:
            expression = f"{left} between {right} and {_operand(rng)}"
        else:
            expression = f"{left} {rng.choice(operators)} {right}"
        cases.append(_case("compare", i + 1, expression))
    return cases


def _three_valued_logic() -> list[Case]:
    values = ["true", "false", "null"]
    cases = []
    for number, (a, op, b) in enumerate(product(values, ["and", "or"], values), start=1):
        cases.append(_case("logic", number, f"{a} {op} {b}"))
    for number, a in enumerate(values, start=len(cases) + 1):
        cases.append(_case("logic", number, f"not({a})"))
    for number, (a, b, c) in enumerate(product(values, repeat=3), start=len(cases) + 1):
        cases.append(_case("logic", number, f"{a} and {b} or {c}"))
    return cases


_WORDS = ["alpha", "Beta", "gamma", "INC0010001", "Printer on fire", "a b", "", "Zürich"]


def _strings(rng: random.Random, count: int) -> list[Case]:
    forms = [
        lambda w, v: f'"{w}" + "{v}"',
        lambda w, v: f'string length("{w}")',
        lambda w, v: f'upper case("{w}")',
        lambda w, v: f'lower case("{w}")',
        lambda w, v: f'contains("{w}", "{v[:2]}")',
        lambda w, v: f'starts with("{w}", "{w[:1]}")',
        lambda w, v: f'ends with("{w}", "{v[-1:]}")',
        lambda w, v: f'"{w}" = "{v}"',
        lambda w, v: f'"{w}" < "{v}"',
        lambda w, v: f'substring("{w}x", 1, {max(len(w), 1)})',
    ]
    cases = []
    for i in range(count):
        word, other = rng.choice(_WORDS), rng.choice(_WORDS)
        cases.append(_case("string", i + 1, forms[i % len(forms)](word, other)))
    return cases


def _number_list(rng: random.Random) -> list[int]:
    return [rng.randint(-9, 9) for _ in range(rng.randint(1, 6))]


def _lists(rng: random.Random, count: int) -> list[Case]:
    forms = [
        "count(xs)",
        "sum(xs)",
        "min(xs)",
        "max(xs)",
        "reverse(xs)",
        "list contains(xs, {k})",
        "index of(xs, {k})",
        "distinct values(xs)",
        "append(xs, {k})",
        "xs[{i}]",
        "sublist(xs, 1, {i})",
        "for x in xs return x * {k}",
        "some x in xs satisfies x > {k}",
        "every x in xs satisfies x > {k}",
        "{k} in xs",
        "concatenate(xs, [{k}])",
        "flatten([xs, [{k}]])",
        "mean(xs) * count(xs) = sum(xs)",
    ]
    cases = []
    for i in range(count):
        values = _number_list(rng)
        expression = forms[i % len(forms)].format(
            k=rng.randint(-5, 5), i=rng.choice([1, 2, -1, len(values)])
        )
        cases.append(_case("list", i + 1, expression, {"xs": values}))
    return cases


def _filters(rng: random.Random, count: int) -> list[Case]:
    cases = []
    for i in range(count):
        records = [
            {"id": n, "priority": rng.choice(["1", "2", "3"]), "size": rng.randint(0, 9)}
            for n in range(rng.randint(0, 5))
        ]
        condition = rng.choice(
            [
                'priority = "{p}"',
                "size > {s}",
                'size <= {s} and priority != "{p}"',
                "item.size = {s}",
            ]
        ).format(p=rng.choice(["1", "2", "3"]), s=rng.randint(0, 9))
        path = rng.choice(["", ".id", ".size"])
        cases.append(_case("filter", i + 1, f"records[{condition}]{path}", {"records": records}))
    return cases
