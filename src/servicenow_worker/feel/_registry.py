"""The table of callable functions: FEEL built-ins and the connector functions.

A function has one or more overloads, told apart by their number of parameters (positional
call) or their parameter names (named call), as in feel-scala. An implementation receives
evaluator values and returns one; it answers arguments of the wrong type with None (null).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

Impl = Callable[..., Any]
F = TypeVar("F", bound=Impl)


@dataclass(frozen=True, slots=True)
class Overload:
    """One signature of a function. With `varargs` the last parameter takes a list."""

    name: str
    params: tuple[str, ...]
    impl: Impl
    varargs: bool = False

    def signature(self) -> str:
        """`substring(string, start position)` for messages."""
        params = list(self.params)
        if self.varargs:
            params[-1] += "…"
        return f"{self.name}({', '.join(params)})"


FUNCTIONS: Final[dict[str, list[Overload]]] = {}

# Functions FEEL knows that this evaluator deliberately leaves out, with the reason.
UNSUPPORTED: Final[dict[str, str]] = {}


def function(name: str, *params: str, varargs: bool = False) -> Callable[[F], F]:
    """Register the decorated implementation as an overload of `name`."""

    def register(impl: F) -> F:
        FUNCTIONS.setdefault(name, []).append(Overload(name, params, impl, varargs))
        return impl

    return register


def unsupported(reason: str, *names: str) -> None:
    """Record functions that exist in FEEL but not here, so a call names the reason."""
    for name in names:
        UNSUPPORTED[name] = reason
