"""Population expressions over a dataset's label columns: `Male & ~Eyeglasses`, `Male and (Goatee or No_Beard)`.

A population names who may enter a domain (training) or an evaluation set. The grammar is
small: column names, `~`/`not`, `&`/`and`, `|`/`or` and parentheses; an empty expression
is everyone. Parsing checks the syntax (at config load); `select` checks the column names
against the manifest (at the first stage that has one), each with one line naming the problem.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

_TOKEN = re.compile(r"\s*(?:(?P<op>[()~&|])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))")
_WORD_OPS = {"not": "~", "and": "&", "or": "|"}


class PopulationError(ValueError):
    """A population expression that cannot be parsed or names an unknown column."""


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Not:
    operand: "Node"


@dataclass(frozen=True)
class BinOp:
    op: str  # "&" or "|"
    left: "Node"
    right: "Node"


Node = Union[Column, Not, BinOp, None]  # None: everyone


def parse_population(expr: str) -> Node:
    """Parse an expression; raises PopulationError naming the position of a syntax error."""
    tokens = _tokenize(expr)
    if not tokens:
        return None
    node, pos = _parse_or(tokens, 0, expr)
    if pos != len(tokens):
        raise PopulationError(f"population '{expr}': unexpected '{tokens[pos]}' after a complete expression")
    return node


def columns_of(node: Node) -> set[str]:
    """The column names an expression reads."""
    if node is None:
        return set()
    if isinstance(node, Column):
        return {node.name}
    if isinstance(node, Not):
        return columns_of(node.operand)
    return columns_of(node.left) | columns_of(node.right)


def select(expr: str, labels: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """(n,) bool: the rows in the population described by `expr`.

    Args:
        expr: the expression ("" = everyone).
        labels: column -> (n,) 0/1 array (a manifest's labels); names match case-insensitively.
        n: the number of rows.
    """
    node = parse_population(expr)
    by_lower = {c.lower(): c for c in labels}
    for name in sorted(columns_of(node)):
        if name.lower() not in by_lower:
            hint = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
            suggestion = f"; did you mean '{by_lower[hint[0]]}'?" if hint else f" (has {sorted(labels)})"
            raise PopulationError(f"population '{expr}': no label column '{name}'{suggestion}")
    return _evaluate(node, {k.lower(): np.asarray(v).astype(bool) for k, v in labels.items()}, n)


def _evaluate(node: Node, labels: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    if node is None:
        return np.ones(n, dtype=bool)
    if isinstance(node, Column):
        return labels[node.name.lower()]
    if isinstance(node, Not):
        return ~_evaluate(node.operand, labels, n)
    left, right = _evaluate(node.left, labels, n), _evaluate(node.right, labels, n)
    return left & right if node.op == "&" else left | right


def _tokenize(expr: str) -> list[str]:
    tokens, pos = [], 0
    text = expr.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise PopulationError(f"population '{expr}': cannot read '{text[pos:].strip()}' "
                                  "(use column names, ~ & | ( ) or not/and/or)")
        word = m.group("word")
        tokens.append(_WORD_OPS.get(word.lower(), word) if word else m.group("op"))
        pos = m.end()
    return tokens


def _parse_or(tokens: list[str], pos: int, expr: str) -> tuple[Node, int]:
    left, pos = _parse_and(tokens, pos, expr)
    while pos < len(tokens) and tokens[pos] == "|":
        right, pos = _parse_and(tokens, pos + 1, expr)
        left = BinOp("|", left, right)
    return left, pos


def _parse_and(tokens: list[str], pos: int, expr: str) -> tuple[Node, int]:
    left, pos = _parse_unary(tokens, pos, expr)
    while pos < len(tokens) and tokens[pos] == "&":
        right, pos = _parse_unary(tokens, pos + 1, expr)
        left = BinOp("&", left, right)
    return left, pos


def _parse_unary(tokens: list[str], pos: int, expr: str) -> tuple[Node, int]:
    if pos >= len(tokens):
        raise PopulationError(f"population '{expr}': ends where a column name was expected")
    tok = tokens[pos]
    if tok == "~":
        operand, pos = _parse_unary(tokens, pos + 1, expr)
        return Not(operand), pos
    if tok == "(":
        node, pos = _parse_or(tokens, pos + 1, expr)
        if pos >= len(tokens) or tokens[pos] != ")":
            raise PopulationError(f"population '{expr}': missing ')'")
        return node, pos + 1
    if tok in {")", "&", "|"}:
        raise PopulationError(f"population '{expr}': unexpected '{tok}' where a column name was expected")
    return Column(tok), pos + 1
