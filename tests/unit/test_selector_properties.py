"""Property tests for tortie.selector (hypothesis).

* parse(str(s)) is s: same canonical form, same matches, for random ASTs;
* the compiled matcher agrees with the AST interpreter (the oracle) on random
  selectors and label sets;
* the tokenizer/parser accept exactly what a plain model of Calico's algorithm
  accepts (char-by-char tokenizer, then token-list parser, written here from
  Calico's behaviour as documented in ARCHITECTURE.md §5 and libcalico-go), and
  produce the same canonical form, on random selector-like text.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tortie.selector import Selector, SelectorError, parse
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

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Small alphabets so that random labels often hit the selector's keys and values.
KEYS = ["a", "b", "in", "has", "x.y/z-_1"]
VALUES = ["", "v", "vw", "wv", "w", "'", '"', "a b", "é"]

keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
label_sets = st.dictionaries(keys, values, max_size=5)


def _leaf() -> st.SearchStrategy[Node]:
    value_nodes = st.sampled_from(
        [LabelEq, LabelNe, LabelContains, LabelStartsWith, LabelEndsWith]
    ).flatmap(lambda cls: st.builds(cls, keys, values))
    set_nodes = st.sampled_from([LabelIn, LabelNotIn]).flatmap(
        lambda cls: st.builds(cls, keys, st.lists(values, max_size=4).map(tuple))
    )
    return st.one_of(
        value_nodes, set_nodes, st.builds(Has, keys), st.just(All()), st.just(Global())
    )


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    groups = st.lists(children, min_size=2, max_size=4).map(tuple)
    # No Not directly inside a Not: "!!x" re-parses as x (Calico collapses "!"s).
    negatable = children.filter(lambda n: not isinstance(n, Not))
    return st.one_of(st.builds(And, groups), st.builds(Or, groups), st.builds(Not, negatable))


ast_nodes: st.SearchStrategy[Node] = st.recursive(_leaf(), _extend, max_leaves=12)


@SETTINGS
@given(ast_nodes, st.lists(label_sets, min_size=1, max_size=8))
def test_round_trip_through_canonical_form(root: Node, label_list: list[dict[str, str]]) -> None:
    sel = Selector(root)
    again = parse(str(sel))
    assert str(again) == str(sel)
    assert again == sel
    assert again.unique_id == sel.unique_id
    assert again.root == root
    for labels in label_list:
        assert again.matches(labels) == sel.matches(labels)


@SETTINGS
@given(ast_nodes, st.lists(label_sets, min_size=1, max_size=8))
def test_compiled_matcher_agrees_with_interpreter(
    root: Node, label_list: list[dict[str, str]]
) -> None:
    sel = Selector(root)
    for labels in label_list:
        assert sel.matches(labels) is sel.evaluate_slow(labels)
        assert sel.matches(labels) is root.evaluate(labels)


# ---------------------------------------------------------------------------
# A plain model of Calico's tokenizer and parser, producing canonical text.

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")


def _model_tokenize(text: str) -> list[tuple[str, str]] | None:
    tokens: list[tuple[str, str]] = []
    rest = text
    while True:
        rest = rest.lstrip(" \t")
        if not rest:
            tokens.append(("EOF", ""))
            return tokens
        after_label = bool(tokens) and tokens[-1][0] == "LABEL"
        first = rest[0]
        two = rest[:2]
        if first in "(){},":
            tokens.append((first, ""))
            rest = rest[1:]
        elif first in "\"'":
            end = rest.find(first, 1)
            if end < 0:
                return None
            tokens.append(("STR", rest[1:end]))
            rest = rest[end + 1 :]
        elif two in ("==", "!=", "&&", "||"):
            tokens.append((two, ""))
            rest = rest[2:]
        elif first == "!":
            tokens.append(("!", ""))
            rest = rest[1:]
        elif first in "=&|":
            return None
        elif after_label:
            for words, kind in (
                (["contains"], "contains"),
                (["starts", "with"], "starts with"),
                (["ends", "with"], "ends with"),
                (["not", "in"], "not in"),
                (["in"], "in"),
            ):
                remainder = rest
                ok = True
                for word in words:
                    if not remainder.startswith(word):
                        ok = False
                        break
                    remainder = remainder[len(word) :]
                    if len(words) > 1:  # two-word operators skip whitespace after each word
                        remainder = remainder.lstrip(" \t")
                if ok and (not remainder or remainder[0] not in _KEY_CHARS):
                    tokens.append((kind, ""))
                    rest = remainder
                    break
            else:
                return None
        elif rest.startswith(("has(", "all(", "global(")):
            word = rest[: rest.index("(")]
            rest = rest[len(word) + 1 :].lstrip(" \t")
            key = ""
            if word == "has":
                while rest and rest[0] in _KEY_CHARS:
                    key += rest[0]
                    rest = rest[1:]
                if not key or len(key) > 512:
                    return None
                rest = rest.lstrip(" \t")
            if not rest.startswith(")"):
                return None
            rest = rest[1:]
            tokens.append((word, key))
        elif first in _KEY_CHARS:
            key = ""
            while rest and rest[0] in _KEY_CHARS:
                key += rest[0]
                rest = rest[1:]
            if len(key) > 512:
                return None
            tokens.append(("LABEL", key))
        else:
            return None


def _q(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


def _model_parse(text: str) -> str | None:
    """Canonical text of ``text`` per the model, or None if Calico rejects it."""
    tokens = _model_tokenize(text)
    if tokens is None:
        return None
    if tokens[0][0] == "EOF":
        return "all()"
    pos = 0

    def op_expr() -> str | None:
        nonlocal pos
        negated = False
        while tokens[pos][0] == "!":
            negated = not negated
            pos += 1
        kind, value = tokens[pos]
        out: str | None
        if kind == "has":
            out = f"has({value})"
            pos += 1
        elif kind in ("all", "global"):
            out = kind + "()"
            pos += 1
        elif kind == "LABEL":
            if len(tokens) - pos < 3:
                return None
            op = tokens[pos + 1][0]
            if op in ("==", "!=", "contains", "starts with", "ends with"):
                if tokens[pos + 2][0] != "STR":
                    return None
                out = f"{value} {op} {_q(tokens[pos + 2][1])}"
                pos += 3
            elif op in ("in", "not in"):
                if tokens[pos + 2][0] != "{":
                    return None
                pos += 3
                items: list[str] = []
                while tokens[pos][0] == "STR":
                    items.append(tokens[pos][1])
                    pos += 1
                    if tokens[pos][0] == ",":
                        pos += 1
                    else:
                        break
                if tokens[pos][0] != "}":
                    return None
                pos += 1
                out = f"{value} {op} {{" + ", ".join(_q(v) for v in sorted(set(items))) + "}"
            else:
                return None
        elif kind == "(":
            pos += 1
            out = or_expr()
            if out is None or tokens[pos][0] != ")":
                return None
            pos += 1
        else:
            return None
        return "!" + out if negated else out

    def group(sub: Callable[[], str | None], sep: str) -> str | None:
        nonlocal pos
        first = sub()
        if first is None:
            return None
        parts = [first]
        while tokens[pos][0] == sep:
            pos += 1
            part = sub()
            if part is None:
                return None
            parts.append(part)
        if len(parts) == 1:
            return parts[0]
        return "(" + f" {sep} ".join(parts) + ")"

    def and_expr() -> str | None:
        return group(op_expr, "&&")

    def or_expr() -> str | None:
        return group(and_expr, "||")

    result = or_expr()
    if result is None or tokens[pos][0] != "EOF":
        return None
    return result


FRAGMENTS = [
    "a", "b", "k8s-app", "has", "in", "not", "contains", "starts", "with", "ends",
    "all", "global", "startswith", "notin", "inx", "==", "!=", "!", "&&", "||", "&",
    "|", "=", "(", ")", "{", "}", ",", '"v"', "'w'", '""', "\"'\"", "'\"'", '"', "'",
    " ", " ", " ", "\t", "\n", "has(", "all(", "global(", "%", "é",
    'a == "v"', "has(a)", 'b in {"v", "w"}', "all()", "global()",
]  # fmt: skip

fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join)


def _render(node: Node, draw: st.DrawFn) -> str:
    """Some text Calico would parse to ``node`` (random spacing, quotes, brackets)."""

    def ws() -> str:
        return draw(st.sampled_from(["", " ", "  ", "\t"]))

    def quote(value: str) -> str:
        if '"' in value:
            return f"'{value}'"
        if "'" in value:
            return f'"{value}"'
        return draw(st.sampled_from([f'"{value}"', f"'{value}'"]))

    if isinstance(node, LabelEq | LabelNe | LabelContains | LabelStartsWith | LabelEndsWith):
        op = {
            LabelEq: ["=="],
            LabelNe: ["!="],
            LabelContains: [" contains "],
            LabelStartsWith: [" starts with ", " startswith ", " starts  with\t"],
            LabelEndsWith: [" ends with ", " endswith "],
        }[type(node)]
        text = node.key + ws() + draw(st.sampled_from(op)) + ws() + quote(node.value)
    elif isinstance(node, LabelIn | LabelNotIn):
        op = " in " if isinstance(node, LabelIn) else draw(st.sampled_from([" not in ", " notin "]))
        items: list[str] = []
        if node.values:  # all the values, some repeated, in any order
            repeats = draw(st.lists(st.sampled_from(node.values), max_size=3))
            items = draw(st.permutations([*node.values, *repeats]))
        body = ("," + ws()).join(quote(v) for v in items)
        if items and draw(st.booleans()):
            body += ","
        text = node.key + op + "{" + ws() + body + ws() + "}"
    elif isinstance(node, Has):
        text = "has(" + ws() + node.key + ws() + ")"
    elif isinstance(node, All):
        text = "all(" + ws() + ")"
    elif isinstance(node, Global):
        text = "global(" + ws() + ")"
    elif isinstance(node, Not):
        inner = _render(node.operand, draw)
        if isinstance(node.operand, And | Or) or draw(st.booleans()):
            inner = "(" + ws() + inner + ws() + ")"
        text = "!" + ws() + inner
        if draw(st.booleans()):
            text = "!!" + ws() + text
    else:
        assert isinstance(node, And | Or)
        sep = " && " if isinstance(node, And) else " || "
        parts = []
        for op in node.operands:
            part = _render(op, draw)
            # Nested groups need brackets, except an And inside an Or (precedence).
            needed = isinstance(op, Or) or (isinstance(op, And) and isinstance(node, And))
            if needed or draw(st.booleans()):
                part = "(" + ws() + part + ws() + ")"
            parts.append(part)
        text = sep.join(parts)
    return text


@st.composite
def rendered(draw: st.DrawFn) -> tuple[Node, str]:
    node = draw(ast_nodes)
    return node, _render(node, draw)


@SETTINGS
@given(rendered())
def test_any_spelling_parses_to_the_same_canonical_form(case: tuple[Node, str]) -> None:
    node, text = case
    sel = parse(text)
    assert str(sel) == node.canonical()
    assert _model_parse(text) == node.canonical()


def _check_against_model(text: str) -> None:
    expected = _model_parse(text)
    try:
        got: str | None = str(parse(text))
    except SelectorError as err:
        assert 1 <= err.column <= len(text) + 1
        got = None
    assert got == expected, text


@settings(max_examples=1500, deadline=None)
@given(fragment_text)
@example('a in {"x",}')
@example("a notin{}")
@example("a starts with x")
@example("xin {}")
@example('a in {"}" , "{"}')
@example("has( a ) && ! ! all( ) || global()")
@example('a == "x" || !(b != "y" && has(c))')
def test_accepts_exactly_what_calico_accepts(text: str) -> None:
    _check_against_model(text)


@settings(max_examples=200, deadline=None)
@given(rendered(), st.integers(min_value=0), st.sampled_from([*FRAGMENTS, ""]))
def test_mutated_selectors_agree_with_model(case: tuple[Node, str], at: int, insert: str) -> None:
    _, text = case
    at %= len(text) + 1
    for mutated in (text[:at] + insert + text[at:], text[:at] + text[at + 1 :]):
        _check_against_model(mutated)


def test_model_rejects_and_accepts_known_cases() -> None:
    # The model itself must be able to say no and yes.
    assert _model_parse("a ==") is None
    assert _model_parse("b in c") is None
    assert _model_parse("") == "all()"
    assert _model_parse('a in {"b", "a", "b",}') == 'a in {"a", "b"}'
    assert _model_parse("!(!has(a))") == "!!has(a)"
