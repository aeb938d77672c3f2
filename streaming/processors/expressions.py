"""Expressions in pipeline specifications: ``total >= 500``, ``price * quantity``.

Specifications are data, not code, so their expressions are parsed with `ast` and evaluated
over a whitelist: field names, literals, arithmetic, comparisons, ``and``/``or``/``not``,
``in``, ``is None``, and a few functions (``lower``, ``upper``, ``len``, ``round``, ``abs``,
``coalesce``, ``decimal``, ``regex(text, pattern)`` — the first group that matches). Anything
else is refused when the specification is loaded, naming the part.
Decimal values stay exact (a decimal column arrives as `Decimal`).
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

__all__ = ["Expression", "ExpressionError"]


class ExpressionError(ValueError):
    """An expression uses something the whitelist does not allow."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regex(text: Any, pattern: str) -> str | None:
    """The first group of the first match of ``pattern`` in ``text`` (the whole match if the
    pattern has no group); None when nothing matches."""
    if text is None:
        return None
    found = _compiled(pattern).search(str(text))
    if found is None:
        return None
    return found.group(1) if found.re.groups else found.group(0)


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lower": lambda s: None if s is None else str(s).lower(),
    "upper": lambda s: None if s is None else str(s).upper(),
    "len": len,
    "round": round,
    "abs": abs,
    "coalesce": _coalesce,
    "decimal": lambda v: None if v is None else Decimal(str(v)),
    "regex": lambda text, pattern: _regex(text, pattern),
}


def _number(value: Any) -> Any:
    return Decimal(str(value)) if isinstance(value, float) else value


class Expression:
    """One parsed expression; call it with a row (a mapping of field names to values)."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"{text!r} is not an expression: {exc.msg}") from None
        self._check(tree.body)
        self._tree = tree.body

    def _check(self, node: ast.AST) -> None:
        allowed = (
            ast.BoolOp,
            ast.And,
            ast.Or,
            ast.UnaryOp,
            ast.Not,
            ast.USub,
            ast.BinOp,
            ast.Compare,
            ast.Name,
            ast.Load,
            ast.Constant,
            ast.Call,
            ast.Tuple,
            ast.List,
            *_BINARY,
            *_COMPARE,
        )
        for child in ast.walk(node):
            if not isinstance(child, allowed):
                raise ExpressionError(f"{self.text!r}: {type(child).__name__} is not allowed")
            if isinstance(child, ast.Call) and (
                not isinstance(child.func, ast.Name) or child.func.id not in _FUNCTIONS
            ):
                raise ExpressionError(
                    f"{self.text!r}: only {', '.join(sorted(_FUNCTIONS))} can be called"
                )

    def fields(self) -> set[str]:
        """The field names the expression reads."""
        called = {c.func.id for c in ast.walk(self._tree) if isinstance(c, ast.Call)}  # type: ignore[attr-defined]
        names = {n.id for n in ast.walk(self._tree) if isinstance(n, ast.Name)}
        return names - called - {"None", "True", "False"}

    def __call__(self, row: Mapping[str, Any]) -> Any:
        return self._eval(self._tree, row)

    def _eval(self, node: ast.AST, row: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return _number(node.value)
        if isinstance(node, ast.Name):
            return row.get(node.id)
        if isinstance(node, ast.BoolOp):
            values = (self._eval(v, row) for v in node.values)
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, row)
            return (not value) if isinstance(node.op, ast.Not) else -value
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, row), self._eval(node.right, row)
            if left is None or right is None:
                return None
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, row)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comparator, row)
                if not isinstance(op, ast.Is | ast.IsNot) and (left is None or right is None):
                    return False
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Tuple | ast.List):
            return [self._eval(e, row) for e in node.elts]
        if isinstance(node, ast.Call):
            function = _FUNCTIONS[node.func.id]  # type: ignore[attr-defined]
            return function(*(self._eval(a, row) for a in node.args))
        raise ExpressionError(f"{self.text!r}: cannot evaluate {type(node).__name__}")
