"""Unit tests for tortie.selector: matching, errors, canonical forms, IDs, API helpers.

Expected canonical forms and unique IDs marked "Calico" are the values in
libcalico-go's own tests (lib/selector/parser/parser_test.go); the others follow
from Calico's String() rules (lib/selector/parser/ast.go) and MakeUniqueID
(lib/hash/unique_id.go).
"""

from __future__ import annotations

import pickle

import pytest

from tortie.selector import (
    ALL,
    NAMESPACE_LABEL,
    Selector,
    SelectorError,
    is_valid,
    label_keys,
    namespace_scoped,
    parse,
    parse_cached,
)
from tortie.selector import compile as selector_compile
from tortie.selector.ast import And, Has, LabelEq, LabelIn, Node, Not
from tortie.selector.parser import make_unique_id
from tortie.selector.tokenizer import is_label_key

Labels = dict[str, str]

# ---------------------------------------------------------------------------
# Matching: (selector, [labels that match], [labels that do not match])

MATCH_TABLE: list[tuple[str, list[Labels], list[Labels]]] = [
    # == : false when absent
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "b"}, {"a": ""}]),
    ("a == ''", [{"a": ""}], [{}, {"a": "x"}]),
    # != : TRUE when absent
    ('a != "b"', [{}, {"a": "c"}, {"c": "b"}, {"a": ""}], [{"a": "b"}]),
    # in : false when absent, and always for {}
    ('a in {"x", "y"}', [{"a": "x"}, {"a": "y"}], [{}, {"a": "z"}, {"b": "x"}, {"a": "xy"}]),
    ('a in {"x"}', [{"a": "x"}], [{}, {"a": "y"}]),
    ("a in {}", [], [{}, {"a": ""}, {"a": "x"}]),
    ('a in {"\'", \'"\', "c"}', [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    # not in : TRUE when absent, and always for {}
    ('a not in {"x", "y"}', [{}, {"a": "z"}, {"b": "x"}], [{"a": "x"}, {"a": "y"}]),
    ('a not in {"x"}', [{}, {"a": "y"}], [{"a": "x"}]),
    ("a not in {}", [{}, {"a": ""}, {"a": "x"}], []),
    # has
    ("has(a)", [{"a": ""}, {"a": "x", "b": "y"}], [{}, {"b": "a"}]),
    ("!has(a)", [{}, {"b": "a"}], [{"a": ""}, {"a": "x"}]),
    # contains / starts with / ends with : false when absent (even for "")
    ('a contains "b"', [{"a": "b"}, {"a": "abc"}], [{}, {"a": "x"}, {"b": "b"}, {"a": ""}]),
    ('a contains ""', [{"a": ""}, {"a": "x"}], [{}, {"b": ""}]),
    ('a starts with "ab"', [{"a": "ab"}, {"a": "abc"}], [{}, {"a": "xab"}, {"a": "a"}]),
    ('a starts with ""', [{"a": ""}, {"a": "x"}], [{}]),
    ('a ends with "bc"', [{"a": "bc"}, {"a": "abc"}], [{}, {"a": "bcx"}, {"a": "c"}]),
    ('a ends with ""', [{"a": ""}, {"a": "x"}], [{}]),
    # all() / global() / empty
    ("all()", [{}, {"a": "b"}], []),
    ("global()", [{}, {"a": "b"}], []),
    ("", [{}, {"a": "b"}], []),
    (" \t ", [{}, {"a": "b"}], []),
    ("!all()", [], [{}, {"a": "b"}]),
    # negation of each absent-label rule
    ('!a == "b"', [{}, {"a": "c"}], [{"a": "b"}]),
    ('!a != "b"', [{"a": "b"}], [{}, {"a": "c"}]),
    ('!a in {"x"}', [{}, {"a": "y"}], [{"a": "x"}]),
    ('!a not in {"x"}', [{"a": "x"}], [{}, {"a": "y"}]),
    ('!a contains "x"', [{}, {"a": "y"}], [{"a": "x"}]),
    # stacked negation collapses
    ("!!has(a)", [{"a": "x"}], [{}]),
    ("!!!has(a)", [{}], [{"a": "x"}]),
    ("! !! has(a)", [{}], [{"a": "x"}]),
    # && / || and precedence: && binds tighter than ||
    ('a == "1" && b == "2"', [{"a": "1", "b": "2"}], [{}, {"a": "1"}, {"b": "2"}]),
    ('a == "1" || b == "2"', [{"a": "1"}, {"b": "2"}, {"a": "1", "b": "2"}], [{}, {"a": "2"}]),
    (
        'a == "1" || b == "2" && c == "3"',
        [{"a": "1"}, {"b": "2", "c": "3"}],
        [{"b": "2"}, {"c": "3"}, {}],
    ),
    (
        '(a == "1" || b == "2") && c == "3"',
        [{"a": "1", "c": "3"}, {"b": "2", "c": "3"}],
        [{"a": "1"}, {"b": "2"}, {"c": "3"}],
    ),
    # ! binds to the next term only
    ('!a == "1" && b == "2"', [{"b": "2"}, {"a": "0", "b": "2"}], [{"a": "1", "b": "2"}, {}]),
    ('!(a == "1" && b == "2")', [{}, {"a": "1"}, {"a": "1", "b": "0"}], [{"a": "1", "b": "2"}]),
    ("!(!has(a) || has(b))", [{"a": "a"}], [{}, {"a": "a", "b": "b"}, {"b": "b"}]),
    # nesting
    (
        '((a == "1" || (b != "2" && has(c))) && !(d in {"x", "y"}))',
        [{"a": "1"}, {"c": ""}, {"a": "1", "d": "z"}],
        [{}, {"a": "1", "d": "x"}, {"b": "2", "c": ""}],
    ),
    # quotes
    ("a == '\"'", [{"a": '"'}], [{"a": "'"}]),
    ('a == "\'"', [{"a": "'"}], [{"a": '"'}]),
    # keys with every allowed character, and words that are operators elsewhere
    (
        'calico/k8s_NS-.1/role == "x" && has(projectcalico.org/namespace)',
        [{"calico/k8s_NS-.1/role": "x", "projectcalico.org/namespace": "ns"}],
        [{"calico/k8s_NS-.1/role": "x"}],
    ),
    ('contains contains "contains"', [{"contains": "xcontainsx"}], [{"contains": "x"}]),
    ('has == "x" && all == "y" && in in {"z"}', [{"has": "x", "all": "y", "in": "z"}], [{}]),
    # whitespace and spelling variants Calico accepts
    ('a startswith"x" && b endswith "y"', [{"a": "xa", "b": "by"}], [{"a": "ax", "b": "by"}]),
    ('a notin{"x",} && b in {}', [], [{}, {"b": "x"}]),
    ('a  not \t in  {"x"}', [{}, {"a": "y"}], [{"a": "x"}]),
    ("has( a )&&all( )&&global(\t)", [{"a": ""}], [{}]),
]


@pytest.mark.parametrize(("text", "matching", "non_matching"), MATCH_TABLE)
def test_matches_table(text: str, matching: list[Labels], non_matching: list[Labels]) -> None:
    sel = parse(text)
    for labels in matching:
        assert sel.matches(labels) is True, (text, labels)
        assert sel.evaluate_slow(labels) is True, (text, labels)
    for labels in non_matching:
        assert sel.matches(labels) is False, (text, labels)
        assert sel.evaluate_slow(labels) is False, (text, labels)
    # The canonical form means the same thing.
    again = parse(str(sel))
    for labels in matching:
        assert again.matches(labels)
    for labels in non_matching:
        assert not again.matches(labels)


def test_matches_accepts_any_mapping() -> None:
    from types import MappingProxyType

    sel = parse('a == "b" && has(c) && d contains "x"')
    assert sel.matches(MappingProxyType({"a": "b", "c": "", "d": "axb"}))
    assert not sel.matches(MappingProxyType({"a": "b"}))


# ---------------------------------------------------------------------------
# Errors: (text, 1-based column, reason)

ERROR_TABLE: list[tuple[str, int, str]] = [
    ("a == ", 6, "expected a quoted string"),
    ("b == b", 6, "expected a quoted string"),
    ("b contains b", 12, "expected a quoted string"),
    ("b starts with b", 15, "expected a quoted string"),
    ("'b1' == b", 1, "expected a label key, has(), all(), global(), '!' or '('"),
    ("b", 2, "expected an operator"),
    ("a b", 3, "expected an operator"),
    ("a intent", 3, "expected an operator"),
    ("!", 2, "expected a label key"),
    ('foo == "bar" &', 14, "expected '&&'"),
    ('foo == "bar" |', 14, "expected '||'"),
    ("foo != ||", 8, "expected a quoted string"),
    ('foo in {"", ||', 13, "expected a quoted string or '}'"),
    ('foo in ""', 8, "expected '{'"),
    ('a in {"a" "b"}', 11, "expected ',' or '}'"),
    ("a in {,}", 7, "expected a quoted string or '}'"),
    ('a in {"a",,}', 11, "expected a quoted string or '}'"),
    ('"FOO', 1, 'unterminated string: expected a closing "'),
    ("\"FOO'", 1, 'unterminated string: expected a closing "'),
    ("'FOO", 1, "unterminated string: expected a closing '"),
    ('a == "b', 6, 'unterminated string: expected a closing "'),
    ("(", 2, "expected a label key"),
    ('(a == "foo"', 12, "expected '&&', '||' or ')'"),
    (")", 1, "expected a label key"),
    ("()", 2, "expected a label key"),
    ("%", 1, "expected a label key"),
    ('a == "b" && %', 13, "expected a label key"),
    ('a == "b" || %', 13, "expected a label key"),
    ("a ", 3, "expected an operator"),
    ("has(foo) &&", 12, "expected a label key"),
    ('a == "b" c', 10, "expected '&&', '||' or the end of the selector"),
    ('has(a) b == "c"', 8, "expected '&&', '||' or the end of the selector"),
    ('a == "b") || (c == "d"', 9, "expected '&&', '||' or the end of the selector"),
    ('a = "b"', 3, "expected '=='"),
    ("has()", 5, "expected a label key in has()"),
    ("has(a b)", 7, "expected ')' to close has("),
    ("has(a", 6, "expected ')' to close has("),
    ("all(x)", 5, "expected ')' to close all("),
    ("global(", 8, "expected ')' to close global("),
    ("has (a)", 5, "expected an operator"),
    ('a\n== "b"', 2, "expected an operator"),  # only space and tab are whitespace
    ('a ==\r"b"', 5, "expected a quoted string"),
    ("x" * 513 + ' == "a"', 1, "label key longer than 512 characters"),
    ("has(" + "x" * 513 + ")", 5, "label key longer than 512 characters"),
    ('a == "b" && (c in {"d"} || e startswith x)', 41, "expected a quoted string"),
]


@pytest.mark.parametrize(("text", "column", "reason"), ERROR_TABLE)
def test_parse_errors(text: str, column: int, reason: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.selector == text
    assert err.column == column, str(err)
    assert err.reason.startswith(reason), str(err)
    assert f": column {column}: " in str(err)
    assert not is_valid(text)


def test_error_message_format() -> None:
    with pytest.raises(SelectorError) as info:
        parse("a == ")
    assert str(info.value) == 'selector "a == " : column 6: expected a quoted string'


def test_error_pickles() -> None:
    with pytest.raises(SelectorError) as info:
        parse("a == ")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.selector, copy.column, copy.reason) == ("a == ", 6, "expected a quoted string")


def test_label_key_of_512_chars_is_fine() -> None:
    key = "k" * 512
    assert parse(f'{key} == "v" || has({key})').matches({key: "v"})


def test_is_label_key() -> None:
    assert is_label_key("projectcalico.org/namespace")
    assert is_label_key("k" * 512)
    assert not is_label_key("k" * 513)
    assert not is_label_key("")
    assert not is_label_key("a b")
    assert not is_label_key("é")


def test_non_str_rejected() -> None:
    with pytest.raises(TypeError):
        parse(None)  # type: ignore[arg-type]
    assert not is_valid(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Canonical forms

CANONICAL_TABLE: list[tuple[str, str]] = [
    # Calico
    ("", "all()"),
    (" all() ", "all()"),
    (" (all() )", "all()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'),
    ('a == "\'"', 'a == "\'"'),
    ("a == '\"'", "a == '\"'"),
    ("a contains '\"'", "a contains '\"'"),
    ('a contains "\'"', 'a contains "\'"'),
    ("a startswith '\"'", "a starts with '\"'"),
    ('a endswith "\'"', 'a ends with "\'"'),
    ("a!='\"'", "a != '\"'"),
    ('a in {"d"}', 'a in {"d"}'),
    ('a in {"a", "b"}', 'a in {"a", "b"}'),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}'),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}'),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}'),
    ("k == 'v' && x == 'y'", '(k == "v" && x == "y")'),
    ("k == 'v' || has(x)", '(k == "v" || has(x))'),
    ("!(k == 'v')", '!k == "v"'),
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})',
    ),
    # Derived from Calico's rules
    ("global()", "global()"),
    ("a in {}", "a in {}"),
    ("a not in { }", "a not in {}"),
    ("a notin{'x','a',\"x\",}", 'a not in {"a", "x"}'),
    ("a in {'\"', \"'\"}", "a in {'\"', \"'\"}"),  # per-item quoting
    ('a in {"b", "B", "_", "é", "1"}', 'a in {"1", "B", "_", "b", "é"}'),  # byte order
    ('a == "1" && b == "2" && c == "3"', '(a == "1" && b == "2" && c == "3")'),
    ('(a == "1" && b == "2") && c == "3"', '((a == "1" && b == "2") && c == "3")'),
    ('a == "1" || b == "2" && c == "3"', '(a == "1" || (b == "2" && c == "3"))'),
    ("!!has(a)", "has(a)"),
    ("!!!has(a)", "!has(a)"),
    ("!(!has(a))", "!!has(a)"),  # Calico keeps a Not inside a bracketed Not
    ("((has(a)))", "has(a)"),
    ("\thas(a)\t", "has(a)"),
    ("a starts  with 'x' || b ends\twith 'y'", '(a starts with "x" || b ends with "y")'),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL_TABLE)
def test_canonical_form(text: str, canonical: str) -> None:
    sel = parse(text)
    assert str(sel) == canonical
    assert repr(sel) == f"Selector({canonical!r})"


def test_canonical_form_is_a_fixed_point() -> None:
    for text, canonical in CANONICAL_TABLE:
        if "!!" in canonical:
            continue  # "!!x" re-parses as x (the stacked "!"s collapse), as in Calico
        assert str(parse(canonical)) == canonical, text


# ---------------------------------------------------------------------------
# Unique IDs

UNIQUE_ID_TABLE: list[tuple[str, str]] = [
    # Calico's test values
    ("", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" all() ", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" (all() )", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    ("! (has( b)||! has(a ))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
    ('! (a == "b"&&! c != "d")', "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
]


@pytest.mark.parametrize(("text", "unique_id"), UNIQUE_ID_TABLE)
def test_unique_id(text: str, unique_id: str) -> None:
    sel = parse(text)
    assert sel.unique_id == unique_id
    assert sel.unique_id == sel.unique_id
    assert parse(str(sel)).unique_id == unique_id


def test_unique_id_hashes_prefixed_canonical_form() -> None:
    import base64
    import hashlib

    digest = hashlib.sha224(b"s:global()").digest()
    expected = "s:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert parse("global()").unique_id == expected
    assert make_unique_id("all()") == ALL.unique_id
    assert len(ALL.unique_id) == 2 + 38  # 28 bytes, unpadded base64
    assert "=" not in parse('a == "ü"').unique_id


def test_equal_selectors_share_an_id() -> None:
    a = parse("a == 'x' && b in {'2', '1', '2'}")
    b = parse('(a=="x")&&(b in {"1","2"})')
    assert a == b
    assert hash(a) == hash(b)
    assert a.unique_id == b.unique_id
    assert {a, b} == {a}
    assert a != parse('a == "x"')
    assert a != str(a)


# ---------------------------------------------------------------------------
# API helpers


def test_all_constant() -> None:
    assert isinstance(ALL, Selector)
    assert str(ALL) == "all()"
    assert parse("") == ALL
    assert ALL.matches({}) and ALL.matches({"a": "b"})
    assert not ALL.is_global


def test_global() -> None:
    sel = parse(" global( ) ")
    assert sel.is_global
    assert sel.matches({}) and sel.matches({"a": "b"})
    assert sel != ALL
    assert not parse("!global()").is_global
    assert not parse("global() && has(a)").is_global
    assert not parse("has(a)").is_global


def test_root_is_the_ast() -> None:
    sel = parse('a == "b" && !has(c)')
    assert sel.root == And((LabelEq("a", "b"), Not(Has("c"))))
    assert Selector(sel.root) == sel


def test_is_valid() -> None:
    assert is_valid("")
    assert is_valid('a in {"x",}')
    assert not is_valid("a ==")
    assert not is_valid("a == 'x") and not is_valid("a == 'x")  # not cached as valid


def test_parse_cached() -> None:
    parse_cached.cache_clear()
    first = parse_cached('x == "1"')
    assert parse_cached('x == "1"') is first
    assert parse('x == "1"') is not first
    assert parse_cached.cache_info().maxsize >= 10_000
    with pytest.raises(SelectorError):
        parse_cached("x ==")


def test_label_keys() -> None:
    sel = parse(
        'a == "1" || !has(b) && (c in {} || d not in {"x"}) && e != "" '
        '&& f contains "x" && g starts with "y" && h ends with "z" && a == "2"'
    )
    assert label_keys(sel) == frozenset("abcdefgh")
    assert label_keys("all()") == frozenset()
    assert label_keys("global()") == frozenset()
    assert label_keys('k == "v"') == frozenset({"k"})


def test_namespace_scoped() -> None:
    ns = "prod-1"
    assert str(namespace_scoped("", ns)) == f'{NAMESPACE_LABEL} == "prod-1"'
    assert str(namespace_scoped("  ", ns)) == f'{NAMESPACE_LABEL} == "prod-1"'
    assert str(namespace_scoped("has(a)", ns)) == f'(has(a) && {NAMESPACE_LABEL} == "prod-1")'
    assert str(namespace_scoped("all()", ns)) == f'(all() && {NAMESPACE_LABEL} == "prod-1")'
    # As Calico's "(<sel>) && ..." does, an And selector nests; an Or stays grouped.
    assert str(namespace_scoped("a == 'x' && b == 'y'", ns)) == (
        f'((a == "x" && b == "y") && {NAMESPACE_LABEL} == "prod-1")'
    )
    assert str(namespace_scoped("a == 'x' || b == 'y'", ns)) == (
        f'((a == "x" || b == "y") && {NAMESPACE_LABEL} == "prod-1")'
    )
    sel = namespace_scoped("role == 'db'", ns)
    assert sel.matches({"role": "db", NAMESPACE_LABEL: ns})
    assert not sel.matches({"role": "db", NAMESPACE_LABEL: "other"})
    assert not sel.matches({"role": "db"})
    # The same as parsing the text Calico builds.
    calico_text = f"(role == 'db') && {NAMESPACE_LABEL} == '{ns}'"
    assert sel == parse(calico_text)
    assert sel.unique_id == parse(calico_text).unique_id
    # The selector cannot break out of its brackets.
    with pytest.raises(SelectorError):
        namespace_scoped('a == "x") || (b == "y"', ns)


def test_selector_pickles_and_copies() -> None:
    import copy

    for text in ['a == "b" && b in {"x", "y"}', "!(!has(a))", "all()"]:
        sel = parse(text)
        for clone in (pickle.loads(pickle.dumps(sel)), copy.deepcopy(sel)):
            assert clone == sel
            assert str(clone) == str(sel)
            assert clone.matches({"a": "b", "b": "x"}) == sel.matches({"a": "b", "b": "x"})


# ---------------------------------------------------------------------------
# Compilation


def test_values_cannot_inject_code() -> None:
    nasty = [
        "'); import os; ('",
        '"); __import__("os").system("false"); ("',
        "\\' or True or \\'",
        "\n__import__('os')\n",
        "{labels}",
        "_c0",
    ]
    for value in nasty:
        q = "'" if '"' in value else '"'
        for op in ("==", "!=", "contains", "starts with", "ends with"):
            sel = parse(f"a {op} {q}{value}{q}")
            assert sel.matches({"a": value}) == sel.evaluate_slow({"a": value})
            assert sel.matches({"a": "x"}) == sel.evaluate_slow({"a": "x"})
        sel = parse(f"a in {{{q}{value}{q}, 'z'}}")
        assert sel.matches({"a": value}) and not sel.matches({"a": "x"})
    source, constants = selector_compile.generate(parse('a == "zzz" && has(b)').root)
    assert "zzz" not in source and "zzz" in constants


def test_same_shape_shares_code() -> None:
    a = parse('a == "1" && b in {"x", "y"}')
    b = parse('c == "2" && d in {"p", "q"}')
    assert a.matches.__code__ is b.matches.__code__  # type: ignore[attr-defined]
    assert a.matches({"a": "1", "b": "x"}) and not b.matches({"a": "1", "b": "x"})


def test_matcher_has_no_builtins() -> None:
    sel = parse('a == "1"')
    assert sel.matches.__globals__ == {"__builtins__": {}}  # type: ignore[attr-defined]


def test_deep_nesting_falls_back_to_interpreter() -> None:
    depth = 150
    text = "(" * depth + 'a == "1" || !has(b)' + ")" * depth
    sel = parse(text)
    assert sel.matches({"a": "1"}) and sel.matches({}) and not sel.matches({"b": ""})
    # A deep chain of And/Not nodes beyond Python's parser limits still works.
    root: Node = LabelIn("k", ("v",))
    for i in range(220):  # over the 200 brackets Python's parser allows
        root = Not(And((Has(f"h{i}"), root)))
    deep = Selector(root)
    assert deep.matches == root.evaluate
    assert deep.matches({"k": "v"}) == root.evaluate({"k": "v"})
    assert deep.matches({"h0": "", "k": "v"}) == root.evaluate({"h0": "", "k": "v"})


def test_too_deep_to_parse_is_an_error_not_a_crash() -> None:
    text = "(" * 5000 + "has(a)" + ")" * 5000
    with pytest.raises(SelectorError) as info:
        parse(text)
    assert "nested too deeply" in str(info.value)
