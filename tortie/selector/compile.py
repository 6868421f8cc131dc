"""Selector compiler: turns a selector AST into one plain Python function.

Owns the code generation behind ``Selector.matches``. A selector becomes a single
expression over the ``labels`` mapping, e.g. ``role == "db" && env in {"prod",
"staging"} && !has(debug)`` becomes::

    lambda labels, _c0, _c1, _c2, _c3, _c4: (
        labels.get(_c0) == _c1 and labels.get(_c2) in _c3 and _c4 not in labels)

with ``("role", "db", "env", frozenset({"prod", "staging"}), "debug")`` bound as the
defaults of ``_c0`` ... ``_c4``.

Injection safety: the generated source never contains text from the selector.
Label keys, values and sets only ever travel as bound default values; the source
holds generated names, operators and the literals ``True``, ``False`` and ``''``, and runs
with no builtins.

Because the source depends only on the selector's shape, code objects are cached
by source: a new selector of a known shape costs a ``FunctionType()`` call, not a
``compile()``.

Absent labels: ``labels.get(k)`` is ``None`` when ``k`` is absent, so ``==``/``in``
are false and ``!=``/``not in`` true, as Calico wants; ``contains``/``starts with``/
``ends with`` read ``labels.get(k, "")`` and, for an empty operand (which every
present value satisfies), become ``k in labels``.

Selectors nested too deeply for Python's compiler fall back to the AST
interpreter (:meth:`Node.evaluate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from types import CodeType, FunctionType
from typing import Any

from tortie.selector.ast import (
    All,
    And,
    Global,
    Has,
    LabelContains,
    LabelEndsWith,
    LabelEq,
    LabelIn,
    LabelNe,
    LabelNotIn,
    LabelStartsWith,
    Node,
    Not,
    Or,
)

Matcher = Callable[[Mapping[str, str]], bool]
"""A compiled selector: ``matcher(labels) -> bool``."""

_NO_BUILTINS: dict[str, Any] = {"__builtins__": {}}


def match_everything(labels: Mapping[str, str]) -> bool:
    """The matcher of ``all()`` and ``global()``."""
    return True


class _Generator:
    """Builds the expression source for one AST, collecting its constants."""

    __slots__ = ("constants",)

    def __init__(self) -> None:
        self.constants: list[object] = []

    def const(self, value: object) -> str:
        """Bind ``value`` as the next constant; return its parameter name."""
        constants = self.constants
        constants.append(value)
        return f"_c{len(constants) - 1}"

    def expr(self, node: Node) -> str:
        """Python source for ``node``.

        Comparisons bind tighter than ``not``/``and``/``or``, and ``not x`` tighter
        than ``and``/``or``, so only nested ``and``/``or`` groups need (and get)
        brackets.
        """
        emit = _EMITTERS.get(type(node))
        if emit is None:
            raise TypeError(f"not a selector node: {node!r}")
        return emit(self, node)

    def eq(self, node: LabelEq) -> str:
        return f"labels.get({self.const(node.key)}) == {self.const(node.value)}"

    def ne(self, node: LabelNe) -> str:
        return f"labels.get({self.const(node.key)}) != {self.const(node.value)}"

    def has(self, node: Has) -> str:
        return f"{self.const(node.key)} in labels"

    def and_(self, node: And) -> str:
        return "(" + " and ".join([self.expr(op) for op in node.operands]) + ")"

    def or_(self, node: Or) -> str:
        return "(" + " or ".join([self.expr(op) for op in node.operands]) + ")"

    def not_(self, node: Not) -> str:
        inner = node.operand
        if type(inner) is Has:
            return f"{self.const(inner.key)} not in labels"
        return "not " + self.expr(inner)

    def in_(self, node: LabelIn) -> str:
        values = node.values
        if not values:
            return "False"  # nothing is in the empty set
        key = self.const(node.key)
        if len(values) == 1:
            return f"labels.get({key}) == {self.const(values[0])}"
        return f"labels.get({key}) in {self.const(frozenset(values))}"

    def not_in(self, node: LabelNotIn) -> str:
        values = node.values
        if not values:
            return "True"  # everything (even an absent label) is not in the empty set
        key = self.const(node.key)
        if len(values) == 1:
            return f"labels.get({key}) != {self.const(values[0])}"
        return f"labels.get({key}) not in {self.const(frozenset(values))}"

    def contains(self, node: LabelContains) -> str:
        if not node.value:
            return self.has(Has(node.key))  # every present value contains ""
        value = self.const(node.value)
        return f"{value} in labels.get({self.const(node.key)}, '')"

    def starts_with(self, node: LabelStartsWith) -> str:
        if not node.value:
            return self.has(Has(node.key))
        key = self.const(node.key)
        return f"labels.get({key}, '').startswith({self.const(node.value)})"

    def ends_with(self, node: LabelEndsWith) -> str:
        if not node.value:
            return self.has(Has(node.key))
        key = self.const(node.key)
        return f"labels.get({key}, '').endswith({self.const(node.value)})"

    def true(self, node: Node) -> str:
        return "True"


_EMITTERS: dict[type[Node], Callable[[_Generator, Any], str]] = {
    LabelEq: _Generator.eq,
    LabelNe: _Generator.ne,
    Has: _Generator.has,
    And: _Generator.and_,
    Or: _Generator.or_,
    Not: _Generator.not_,
    LabelIn: _Generator.in_,
    LabelNotIn: _Generator.not_in,
    LabelContains: _Generator.contains,
    LabelStartsWith: _Generator.starts_with,
    LabelEndsWith: _Generator.ends_with,
    All: _Generator.true,
    Global: _Generator.true,
}


def generate(root: Node) -> tuple[str, list[object]]:
    """Return ``(source, constants)`` for ``root``.

    The source is ``lambda labels, _c0, _c1, ...: <expression>``; the constants are
    bound as the defaults of ``_c0``, ``_c1``, ... (fast local loads, and no
    second scope for ``compile()`` to build).
    """
    gen = _Generator()
    body = gen.expr(root)
    params = "".join(f", _c{i}" for i in range(len(gen.constants)))
    return f"lambda labels{params}: {body}", gen.constants


@lru_cache(maxsize=4096)
def _code(source: str) -> CodeType:
    """The code object of the generated lambda (cached: one compile per shape)."""
    module_code = compile(source, "<selector>", "eval", dont_inherit=True)
    for const in module_code.co_consts:
        if isinstance(const, CodeType):
            return const
    raise AssertionError("generated source holds no lambda")  # pragma: no cover


def compile_matcher(root: Node) -> Matcher:
    """Compile ``root`` into a function ``labels -> bool``.

    The function's extra parameters (``_c0``, ...) hold its constants; callers
    pass only ``labels``.
    """
    if isinstance(root, All | Global):
        return match_everything
    try:
        source, constants = generate(root)
        code = _code(source)
    except (SyntaxError, RecursionError, MemoryError):
        # Too deep for Python's parser/compiler (or for the generator's recursion).
        return root.evaluate
    matcher: Matcher = FunctionType(code, _NO_BUILTINS, "selector_matcher", tuple(constants))
    return matcher
