"""Selector AST: one immutable node class per construct of Calico's selector language.

Owns the node types, their canonical rendering (exactly libcalico-go's
``Selector.String()``, see :meth:`Node.write`) and a plain recursive interpreter
(:meth:`Node.evaluate`). The interpreter is the reference semantics: the compiled
matchers of :mod:`tortie.selector.compile` are tested against it, and it is the
fallback for selectors nested too deeply for Python's compiler.

Canonical form, as Calico renders it:

* ``&&`` and ``||`` groups are always parenthesised: ``(a == "b" && has(c))``;
* ``!`` is written directly before its operand: ``!has(a)``, ``!a == "b"``,
  ``!(a == "b" || has(c))``;
* values are double-quoted unless they contain ``"``, then single-quoted;
* sets are sorted (by code point, which is UTF-8 byte order) and de-duplicated,
  written ``{"a", "b"}`` (comma and space between items, ``{}`` when empty).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass


def quote(value: str) -> str:
    """Quote a value as Calico does: double quotes, single if the value holds ``"``."""
    q = "'" if '"' in value else '"'
    return q + value + q


class Node:
    """Base of all selector AST nodes."""

    __slots__ = ()

    def write(self, out: list[str]) -> None:
        """Append this node's canonical text fragments to ``out``."""
        raise NotImplementedError

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        """Interpret this node against ``labels`` (the reference semantics)."""
        raise NotImplementedError

    def children(self) -> tuple[Node, ...]:
        """Direct sub-expressions (empty for leaves)."""
        return ()

    def canonical(self) -> str:
        """The canonical text of this (sub)expression."""
        out: list[str] = []
        self.write(out)
        return "".join(out)

    def walk(self) -> Iterator[Node]:
        """This node and all nodes below it, depth first, without recursion."""
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children()))


@dataclass(frozen=True, slots=True)
class LabelValueNode(Node):
    """Base of the ``key <op> "value"`` nodes."""

    key: str
    value: str

    OPERATOR = ""

    def write(self, out: list[str]) -> None:
        out.append(self.key)
        out.append(self.OPERATOR)
        out.append(quote(self.value))


@dataclass(frozen=True, slots=True)
class LabelEq(LabelValueNode):
    """``key == "value"``: false when the label is absent."""

    OPERATOR = " == "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        if self.key in labels:
            return labels[self.key] == self.value
        return False


@dataclass(frozen=True, slots=True)
class LabelNe(LabelValueNode):
    """``key != "value"``: TRUE when the label is absent."""

    OPERATOR = " != "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        if self.key in labels:
            return labels[self.key] != self.value
        return True


@dataclass(frozen=True, slots=True)
class LabelContains(LabelValueNode):
    """``key contains "s"``: false when the label is absent."""

    OPERATOR = " contains "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        if self.key in labels:
            return self.value in labels[self.key]
        return False


@dataclass(frozen=True, slots=True)
class LabelStartsWith(LabelValueNode):
    """``key starts with "s"``: false when the label is absent."""

    OPERATOR = " starts with "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        if self.key in labels:
            return labels[self.key].startswith(self.value)
        return False


@dataclass(frozen=True, slots=True)
class LabelEndsWith(LabelValueNode):
    """``key ends with "s"``: false when the label is absent."""

    OPERATOR = " ends with "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        if self.key in labels:
            return labels[self.key].endswith(self.value)
        return False


@dataclass(frozen=True, slots=True)
class LabelSetNode(Node):
    """Base of ``key in {...}`` and ``key not in {...}``.

    ``values`` is normalised on construction to a sorted tuple without duplicates,
    as Calico's parser does (``ConvertToStringSetInPlace``).
    """

    key: str
    values: tuple[str, ...]

    OPERATOR = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))

    def write(self, out: list[str]) -> None:
        out.append(self.key)
        out.append(self.OPERATOR)
        out.append("{")
        out.append(", ".join([quote(v) for v in self.values]))
        out.append("}")


@dataclass(frozen=True, slots=True)
class LabelIn(LabelSetNode):
    """``key in {"a", "b"}``: false when the label is absent (and always for ``{}``)."""

    OPERATOR = " in "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        if self.key in labels:
            return labels[self.key] in self.values
        return False


@dataclass(frozen=True, slots=True)
class LabelNotIn(LabelSetNode):
    """``key not in {"a", "b"}``: TRUE when the label is absent (and always for ``{}``)."""

    OPERATOR = " not in "

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        if self.key in labels:
            return labels[self.key] not in self.values
        return True


@dataclass(frozen=True, slots=True)
class Has(Node):
    """``has(key)``: the label is present, whatever its value."""

    key: str

    def write(self, out: list[str]) -> None:
        out.append("has(")
        out.append(self.key)
        out.append(")")

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels


@dataclass(frozen=True, slots=True)
class Not(Node):
    """``!operand``."""

    operand: Node

    def write(self, out: list[str]) -> None:
        out.append("!")
        self.operand.write(out)

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.evaluate(labels)

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class And(Node):
    """``(a && b && ...)``, two or more operands."""

    operands: tuple[Node, ...]

    def write(self, out: list[str]) -> None:
        _write_group(out, self.operands, " && ")

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return all(operand.evaluate(labels) for operand in self.operands)

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(frozen=True, slots=True)
class Or(Node):
    """``(a || b || ...)``, two or more operands."""

    operands: tuple[Node, ...]

    def write(self, out: list[str]) -> None:
        _write_group(out, self.operands, " || ")

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return any(operand.evaluate(labels) for operand in self.operands)

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(frozen=True, slots=True)
class All(Node):
    """``all()`` (and the empty selector): matches everything."""

    def write(self, out: list[str]) -> None:
        out.append("all()")

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Global(Node):
    """``global()``: matches everything; as a rule's namespaceSelector it means
    "non-namespaced things" (host endpoints, global network sets)."""

    def write(self, out: list[str]) -> None:
        out.append("global()")

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True


def _write_group(out: list[str], operands: tuple[Node, ...], separator: str) -> None:
    out.append("(")
    operands[0].write(out)
    for operand in operands[1:]:
        out.append(separator)
        operand.write(out)
    out.append(")")


LABEL_NODES: tuple[type[Node], ...] = (LabelValueNode, LabelSetNode, Has)
"""Node types that read a label (they all have a ``key``)."""
