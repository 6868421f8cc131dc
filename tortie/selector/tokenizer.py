"""Selector tokenizer: selector text -> a list of ``(kind, value, position)`` tokens.

Owns the lexical rules of Calico's selector language (libcalico-go
``lib/selector/tokenizer``) and :class:`SelectorError`, the error every selector
problem is reported with (it carries the 1-based column).

Lexical rules, as Calico has them:

* whitespace is only space and tab, allowed between any two of Calico's tokens;
* string literals are single- or double-quoted, with no escapes (a literal ends at
  the next matching quote);
* label keys are runs of ``[A-Za-z0-9_./-]``, at most 512 characters;
* ``has(key)``, ``all()`` and ``global()`` are single tokens; whitespace is allowed
  inside their parentheses but not between the word and ``(``;
* directly after a label key, a word must be an operator: ``contains``,
  ``starts with``, ``ends with``, ``not in`` or ``in``; the two-word operators may
  be written with any whitespace, or none, between the words (``startswith``,
  ``notin``) and every operator word must end at a word boundary.

Since Calico's grammar only ever allows a label key as the start of a comparison
(``key == "v"``, ``key in {...}``, ...), this tokenizer recognises each whole
comparison, like each ``has()``/``all()``/``global()``, as one ``TERM`` token whose
value is the AST leaf. That accepts exactly the token sequences Calico's parser
accepts, with a third of the tokens. The other tokens are ``(``, ``)``, ``!``,
``&&``, ``||`` and ``EOF``.

Where nothing valid starts, the list ends with an ``ERROR`` token instead of an
exception (its value is a message, or ``""`` when the parser's "expected ..." says
it better). A comparison that breaks off midway gives ``BAD_TERM`` at its start and
then ``ERROR`` at the fault, so the parser can report whichever problem comes
first in the text.
"""

from __future__ import annotations

import json
import re
from typing import Final

from tortie.selector.ast import (
    All,
    Global,
    Has,
    LabelContains,
    LabelEndsWith,
    LabelEq,
    LabelIn,
    LabelNe,
    LabelNotIn,
    LabelStartsWith,
    LabelValueNode,
    Node,
)

# Token kinds (plain ints: the parser compares them in its hot loop).
TERM: Final = 1
LPAREN: Final = 2
RPAREN: Final = 3
NOT: Final = 4
AND: Final = 5
OR: Final = 6
EOF: Final = 7
BAD_TERM: Final = 8
ERROR: Final = 9

# One token: (kind, value, 0-based position in the text). The value is the AST
# leaf for TERM, the message for ERROR, "" otherwise.
Token = tuple[int, "Node | str", int]

MAX_LABEL_KEY_LENGTH: Final = 512
"""Calico's limit on label keys in selectors (``tokenizer.MaxLabelLength``)."""

_K: Final = r"[A-Za-z0-9_./-]"  # one label-key character
_WS: Final = r"[ \t]*+"
_STR: Final = r"""(?:"[^"]*+"|'[^']*+')"""
_NOT_K: Final = "(?!" + _K + ")"

# Operators after a key. A word operator must end at a word boundary; for the
# two-word ones Calico skips whitespace after the last word before checking.
_VALUE_OP: Final = (
    r"==|!=|contains" + _NOT_K
    + r"|starts[ \t]*+with[ \t]*+" + _NOT_K
    + r"|ends[ \t]*+with[ \t]*+" + _NOT_K
)  # fmt: skip
_SET_OP: Final = r"not[ \t]*+in[ \t]*+" + _NOT_K + r"|in" + _NOT_K
# Calico's set literal: "{" [str ("," str)* [","]] "}" (empty and trailing comma ok).
_SET: Final = (
    r"\{" + _WS + "(?:" + _STR + _WS + "(?:," + _WS + _STR + _WS + ")*+(?:," + _WS + ")?)?\\}"
)

_TOKEN_RE: Final = re.compile(
    _WS
    + r"(?:(?P<and>&&)|(?P<or>\|\|)|(?P<not>!)|(?P<lparen>\()|(?P<rparen>\))"
    + r"|(?P<has>has\(" + _WS + "(?P<haskey>" + _K + r"*+)" + _WS + r"(?P<hasclose>\)?))"
    + r"|(?P<all>all\(" + _WS + r"(?P<allclose>\)?))"
    + r"|(?P<global>global\(" + _WS + r"(?P<globalclose>\)?))"
    + r"|(?P<cmp>(?P<key>" + _K + "++)" + _WS
    + "(?:(?P<vop>" + _VALUE_OP + ")" + _WS + r"""(?:"(?P<dq>[^"]*+)"|'(?P<sq>[^']*+)')"""
    + "|(?P<sop>" + _SET_OP + ")" + _WS + "(?P<set>" + _SET + ")))"
    + r"|(?P<eof>\Z))"
)  # fmt: skip

_SET_ITEM_RE: Final = re.compile(r""""([^"]*)"|'([^']*)'""")
_KEY_RE: Final = re.compile(_K + "+")
_OP_RE: Final = re.compile("(?P<vop>" + _VALUE_OP + ")|(?P<sop>" + _SET_OP + ")")
# The operators checking the word boundary before, not after, the trailing
# whitespace (for error messages only: "a starts with x" lacks a string, not an op).
_LOOSE_OP_RE: Final = re.compile(
    r"(?P<vop>==|!=|(?:contains|starts[ \t]*with|ends[ \t]*with)" + _NOT_K + ")"
    r"|(?P<sop>(?:not[ \t]*in|in)" + _NOT_K + ")"
)

_VALUE_NODES: Final[dict[str, type[LabelValueNode]]] = {
    "==": LabelEq,
    "!=": LabelNe,
    "c": LabelContains,
    "s": LabelStartsWith,
    "e": LabelEndsWith,
}

_SIMPLE_KINDS: Final[dict[str, int]] = {
    "and": AND,
    "or": OR,
    "not": NOT,
    "lparen": LPAREN,
    "rparen": RPAREN,
    "eof": EOF,
}

EXPECTED_OPERATOR: Final = (
    "expected an operator (==, !=, in, not in, contains, starts with, ends with)"
)
KEY_TOO_LONG: Final = f"label key longer than {MAX_LABEL_KEY_LENGTH} characters"


class SelectorError(ValueError):
    """A selector that does not parse.

    ``str(err)`` reads ``selector "<text>" : column <n>: <reason>``; the parts are
    also available as ``.selector``, ``.column`` (1-based) and ``.reason``.
    """

    selector: str
    column: int
    reason: str

    def __init__(self, selector: str, column: int, reason: str) -> None:
        self.selector = selector
        self.column = column
        self.reason = reason
        quoted = json.dumps(selector, ensure_ascii=False)
        super().__init__(f"selector {quoted} : column {column}: {reason}")

    def __reduce__(self) -> tuple[type[SelectorError], tuple[str, int, str]]:
        return (SelectorError, (self.selector, self.column, self.reason))


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an ``EOF`` or an ``ERROR`` token."""
    tokens: list[Token] = []
    append = tokens.append
    match = _TOKEN_RE.match
    simple = _SIMPLE_KINDS
    pos = 0
    while True:
        m = match(text, pos)
        if m is None:
            _append_error(tokens, text, pos)
            return tokens
        group: str = m.lastgroup  # type: ignore[assignment]
        start = m.start(group)
        pos = m.end()
        if group == "cmp":
            key = m.group("key")
            if len(key) > MAX_LABEL_KEY_LENGTH:
                append((BAD_TERM, "", start))
                append((ERROR, KEY_TOO_LONG, start))
                return tokens
            append((TERM, _comparison(m, key), start))
            continue
        kind = simple.get(group)
        if kind is not None:
            append((kind, "", start))
            if kind == EOF:
                return tokens
            continue
        # has( / all( / global(
        close = m.group(group + "close")
        if group == "has":
            key = m.group("haskey")
            if not key or len(key) > MAX_LABEL_KEY_LENGTH:
                append((BAD_TERM, "", start))
                reason = KEY_TOO_LONG if key else "expected a label key in has()"
                append((ERROR, reason, m.start("haskey")))
                return tokens
            node: Node = Has(key)
        else:
            node = All() if group == "all" else Global()
        if not close:
            append((BAD_TERM, "", start))
            append((ERROR, f"expected ')' to close {group}(", m.start(group + "close")))
            return tokens
        append((TERM, node, start))


def _comparison(m: re.Match[str], key: str) -> Node:
    """The AST leaf for a matched ``key <op> <literal>``."""
    vop = m.group("vop")
    if vop is not None:
        value = m.group("dq")
        if value is None:
            value = m.group("sq")
        # "==" / "!=" are themselves; words are told apart by their first letter.
        return _VALUE_NODES[vop if vop[0] in "=!" else vop[0]](key, value)
    values = tuple(a or b for a, b in _SET_ITEM_RE.findall(m.group("set")))
    if m.group("sop")[0] == "i":
        return LabelIn(key, values)
    return LabelNotIn(key, values)


# ---------------------------------------------------------------------------
# Error diagnosis (slow path; only runs on invalid input)


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t":
        pos += 1
    return pos


def _append_error(tokens: list[Token], text: str, pos: int) -> None:
    """Append the token(s) describing why nothing valid starts at ``pos``."""
    pos = _skip_ws(text, pos)
    char = text[pos]
    if _KEY_RE.match(char):
        # A label key: find where the comparison it starts goes wrong.
        tokens.append((BAD_TERM, "", pos))
        fault, reason = _diagnose_comparison(text, pos)
        tokens.append((ERROR, reason, fault))
    elif char in "\"'" and text.find(char, pos + 1) < 0:
        tokens.append((ERROR, f"unterminated string: expected a closing {char}", pos))
    elif char == "&":
        tokens.append((ERROR, "expected '&&'", pos))
    elif char == "|":
        tokens.append((ERROR, "expected '||'", pos))
    else:
        # Let the parser say what it expected here.
        tokens.append((ERROR, "", pos))


def _diagnose_string(text: str, pos: int, expected: str) -> tuple[int, str | None]:
    """Check for a string literal at ``pos``: (position after it, None) or a fault."""
    char = text[pos : pos + 1]
    if char in ('"', "'"):
        end = text.find(char, pos + 1)
        if end < 0:
            return pos, f"unterminated string: expected a closing {char}"
        return end + 1, None
    return pos, expected


def _diagnose_comparison(text: str, pos: int) -> tuple[int, str]:
    """Position and reason of the fault in the comparison starting at ``pos``."""
    key = _KEY_RE.match(text, pos)
    assert key is not None
    if len(key.group()) > MAX_LABEL_KEY_LENGTH:
        return pos, KEY_TOO_LONG
    pos = _skip_ws(text, key.end())
    op = _OP_RE.match(text, pos) or _LOOSE_OP_RE.match(text, pos)
    if op is None:
        if text.startswith("=", pos):
            return pos, "expected '=='"
        return pos, EXPECTED_OPERATOR
    pos = _skip_ws(text, op.end())
    if op.group("vop") is not None:
        pos, reason = _diagnose_string(text, pos, "expected a quoted string")
        return pos, reason or "unexpected error"  # pragma: no cover - regex would match
    if not text.startswith("{", pos):
        return pos, "expected '{'"
    pos = _skip_ws(text, pos + 1)
    expected = "expected a quoted string or '}'"
    while True:
        after, reason = _diagnose_string(text, pos, expected)
        if reason is not None:
            if reason.startswith("unterminated") or not text.startswith("}", pos):
                return pos, reason
            return pos, "unexpected error"  # pragma: no cover - regex would match
        pos = _skip_ws(text, after)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
            continue
        if text.startswith("}", pos):
            return pos, "unexpected error"  # pragma: no cover - regex would match
        return pos, "expected ',' or '}'"


def is_label_key(key: str) -> bool:
    """True if ``key`` is usable as a label key in a selector."""
    return len(key) <= MAX_LABEL_KEY_LENGTH and _KEY_RE.fullmatch(key) is not None
