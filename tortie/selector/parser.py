"""Selector parser and the :class:`Selector` object.

Owns the grammar of Calico's selector language (libcalico-go
``lib/selector/parser``), the :class:`Selector` value that other components hold
(canonical text, unique ID, compiled matcher) and the helpers built on it:
:func:`parse_cached`, :func:`is_valid`, :func:`label_keys`, :func:`namespace_scoped`.

Grammar, as Calico's recursive-descent parser has it::

    selector  := <empty> | or_expr            (empty or blank means all())
    or_expr   := and_expr ("||" and_expr)*    (one operand: no Or node)
    and_expr  := operation ("&&" operation)*  (one operand: no And node)
    operation := "!"* term                    (the "!"s collapse: an odd count
                                               gives one Not, an even count none)
    term      := has(k) | all() | global() | "(" or_expr ")"
               | k ("==" | "!=" | "contains" | "starts with" | "ends with") string
               | k ("in" | "not in") "{" [string ("," string)* [","]] "}"

so ``&&`` binds tighter than ``||`` and ``!`` applies to the next term only. A set
may be empty and may end with a comma. Nested groups are not flattened:
``(a && b) && c`` stays an And inside an And, and ``!(!has(a))`` stays two Nots
(canonical ``!!has(a)``), exactly as Calico keeps them, because the canonical text
and so the unique ID depend on it.

The tokenizer delivers every ``has()``/``all()``/``global()`` and every comparison
(the last two ``term`` lines) as one ``TERM`` token holding its AST leaf; this
module handles the brackets, ``!``, ``&&`` and ``||``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Final, NoReturn

from tortie.selector.ast import (
    All,
    And,
    Global,
    Has,
    LabelEq,
    LabelIn,
    LabelNotIn,
    LabelValueNode,
    Node,
    Not,
    Or,
)
from tortie.selector.compile import Matcher, compile_matcher
from tortie.selector.tokenizer import (
    AND,
    BAD_TERM,
    EOF,
    ERROR,
    LPAREN,
    NOT,
    OR,
    RPAREN,
    TERM,
    SelectorError,
    Token,
    tokenize,
)

NAMESPACE_LABEL: Final = "projectcalico.org/namespace"
"""The label Calico gives every workload endpoint: its namespace."""

PARSE_CACHE_SIZE: Final = 20_000

_EXPECTED_TERM: Final = "expected a label key, has(), all(), global(), '!' or '('"


class _Parser:
    """Recursive descent over the token list; mirrors Calico's parser."""

    __slots__ = ("i", "text", "tokens")

    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0

    def fail(self, index: int, reason: str, want_term: bool = False) -> NoReturn:
        """Raise for the token at ``index``, where ``reason`` was expected."""
        kind, value, pos = self.tokens[index]
        if kind == BAD_TERM and want_term:
            # A comparison that breaks off midway: report the fault inside it.
            kind, value, pos = self.tokens[index + 1]
        if kind == ERROR and value:
            # The tokenizer stopped here, with a more precise message than ours.
            reason = str(value)
        raise SelectorError(self.text, pos + 1, reason)

    def parse_root(self) -> Node:
        if self.tokens[0][0] == EOF:
            return All()
        node = self.parse_or()
        if self.tokens[self.i][0] != EOF:
            self.fail(self.i, "expected '&&', '||' or the end of the selector")
        return node

    def parse_or(self) -> Node:
        node = self.parse_and()
        tokens = self.tokens
        if tokens[self.i][0] != OR:
            return node
        operands = [node]
        while tokens[self.i][0] == OR:
            self.i += 1
            operands.append(self.parse_and())
        return Or(tuple(operands))

    def parse_and(self) -> Node:
        node = self.parse_operation()
        tokens = self.tokens
        if tokens[self.i][0] != AND:
            return node
        operands = [node]
        while tokens[self.i][0] == AND:
            self.i += 1
            operands.append(self.parse_operation())
        return And(tuple(operands))

    def parse_operation(self) -> Node:
        tokens = self.tokens
        i = self.i
        negated = False
        while tokens[i][0] == NOT:
            negated = not negated
            i += 1
        kind, node, _ = tokens[i]
        if kind == TERM:
            self.i = i + 1
        elif kind == LPAREN:
            self.i = i + 1
            node = self.parse_or()
            if tokens[self.i][0] != RPAREN:
                self.fail(self.i, "expected '&&', '||' or ')'")
            self.i += 1
        else:
            self.fail(i, _EXPECTED_TERM, want_term=True)
        return Not(node) if negated else node  # type: ignore[arg-type,return-value]


def parse_node(text: str) -> Node:
    """Parse ``text`` into an AST, raising :class:`SelectorError`."""
    if not isinstance(text, str):
        raise TypeError(f"selector must be a str, not {type(text).__name__}")
    parser = _Parser(text, tokenize(text))
    try:
        return parser.parse_root()
    except RecursionError:
        raise SelectorError(text, 1, "selector is nested too deeply") from None


def make_unique_id(canonical: str) -> str:
    """Calico's ``hash.MakeUniqueID("s", canonical)``.

    ``"s:"`` + unpadded base64url of SHA-224 over the UTF-8 bytes of
    ``"s:" + canonical``.
    """
    data = ("s:" + canonical).encode("utf-8", "surrogatepass")
    digest = hashlib.sha224(data).digest()
    return "s:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Selector:
    """A parsed, compiled selector. Immutable; compare and hash by canonical text.

    * ``selector.matches(labels)`` -> bool: the compiled matcher (an attribute
      holding a plain function, so a call costs no method binding);
    * ``str(selector)``: Calico's canonical form; ``selector.unique_id``: its
      ``s:...`` ID; ``selector.root``: the AST;
    * ``selector.is_global``: the selector is exactly ``global()``;
    * ``selector.evaluate_slow(labels)``: the AST interpreter (reference semantics).

    Build one with :func:`parse` / :func:`parse_cached`, or ``Selector(root)``
    from an AST.
    """

    __slots__ = ("_hash", "_label_keys", "_text", "_unique_id", "matches", "root")

    root: Node
    matches: Matcher

    def __init__(self, root: Node) -> None:
        self.root = root
        self._text = root.canonical()
        self._hash = hash(self._text)
        self._unique_id: str | None = None
        self._label_keys: frozenset[str] | None = None
        self.matches = compile_matcher(root)

    @property
    def unique_id(self) -> str:
        """Calico's unique ID for this selector (``s:`` + base64url SHA-224)."""
        uid = self._unique_id
        if uid is None:
            uid = self._unique_id = make_unique_id(self._text)
        return uid

    @property
    def is_global(self) -> bool:
        """True if the selector is ``global()`` (as a namespaceSelector: "not namespaced")."""
        return isinstance(self.root, Global)

    def evaluate_slow(self, labels: Mapping[str, str]) -> bool:
        """Evaluate by interpreting the AST; the reference for ``matches``."""
        return self.root.evaluate(labels)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Selector({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Selector):
            return self._text == other._text
        return NotImplemented

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Selector], tuple[Node]]:
        return (Selector, (self.root,))


def parse(text: str) -> Selector:
    """Parse and compile a selector; raises :class:`SelectorError` if it is invalid."""
    return Selector(parse_node(text))


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse_cached(text: str) -> Selector:
    """:func:`parse`, memoised (valid selectors only) for hot paths."""
    return parse(text)


def is_valid(text: str) -> bool:
    """True if ``text`` is a valid selector."""
    if not isinstance(text, str):
        return False
    try:
        parse_cached(text)
    except SelectorError:
        return False
    return True


def label_keys(selector: Selector | str) -> frozenset[str]:
    """The label keys ``selector`` reads (``has(k)`` included)."""
    if isinstance(selector, str):
        selector = parse_cached(selector)
    keys = selector._label_keys
    if keys is None:
        keys = frozenset(
            node.key  # type: ignore[attr-defined]
            for node in selector.root.walk()
            if isinstance(node, LabelValueNode | LabelIn | LabelNotIn | Has)
        )
        selector._label_keys = keys
    return keys


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def namespace_scoped(selector_text: str, namespace: str) -> Selector:
    """The selector Calico gives a NetworkPolicy in ``namespace``.

    Calico (libcalico-go ``updateprocessors/networkpolicyprocessor.go``) uses
    ``projectcalico.org/namespace == '<ns>'`` for an empty selector and otherwise
    ``(<selector>) && projectcalico.org/namespace == '<ns>'``, so the canonical form
    is ``projectcalico.org/namespace == "<ns>"`` or ``(<canonical selector> &&
    projectcalico.org/namespace == "<ns>")`` (an And selector nests, it is not
    flattened).

    Differences from Calico's text splicing, both for safety: the selector is
    parsed on its own, so it cannot escape the brackets (``a == "x") || (b ==
    "y"`` raises instead of matching other namespaces), and a blank selector is
    treated like the empty one (Calico would build the unparsable ``( ) && ...``).
    """
    ns_node = LabelEq(NAMESPACE_LABEL, namespace)
    if not selector_text.strip(" \t"):
        return Selector(ns_node)
    return Selector(And((parse_cached(selector_text).root, ns_node)))


ALL: Final = parse("all()")
"""The parsed ``all()`` selector."""
