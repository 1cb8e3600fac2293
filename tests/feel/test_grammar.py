"""The grammar file: shipped with the package, LALR(1) with only the intended conflicts."""

from __future__ import annotations

import logging
from importlib.resources import files
from itertools import pairwise

import pytest
from lark import Lark, logger

from servicenow_worker.feel._parser import EXPECTED_CONFLICTS
from servicenow_worker.feel._registry import FUNCTIONS


def test_the_grammar_is_package_data() -> None:
    """_grammar.lark sits inside the package, so the wheel (hatchling) ships it."""
    assert files("servicenow_worker.feel").joinpath("_grammar.lark").is_file()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_only_the_intended_shift_reduce_conflicts() -> None:
    """Lark resolves each conflict as shift; only the greedy `in` and `else` ones may exist."""
    grammar = files("servicenow_worker.feel").joinpath("_grammar.lark").read_text("utf-8")
    collect, level = _Collect(), logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    try:
        Lark(grammar, parser="lalr", debug=True)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    lines = collect.messages
    conflicts = {
        line.split()[4].rstrip(":") + " " + after.strip().lstrip("* ").strip("<>")
        for line, after in pairwise(lines)
        if line.startswith("Shift/Reduce conflict")
    }
    assert conflicts == EXPECTED_CONFLICTS
    assert not any("Reduce/Reduce" in line for line in lines)


@pytest.mark.parametrize("name", sorted(n for n in FUNCTIONS if " " in n))
def test_every_function_name_with_spaces_is_one_token(name: str) -> None:
    """Each registered multi-word name is read as one function name by the tokenizer."""
    from servicenow_worker.feel._ast import Call
    from servicenow_worker.feel._parser import parse

    node = parse(f"{name}(1)")
    assert isinstance(node, Call)
    assert node.name == name
