"""Calico's selector language: parse, canonicalise, identify and match label selectors.

Public API (other components build on exactly this):

* :func:`parse` (text -> :class:`Selector`, raising :class:`SelectorError`, a
  ``ValueError`` whose message gives the 1-based column and what was expected);
* :class:`Selector`: ``matches(labels)``, ``str()`` (Calico's canonical form),
  ``unique_id`` (Calico's ``s:...`` ID), ``root`` (the AST), ``is_global``,
  equality and hashing by canonical form;
* :data:`ALL` (the parsed ``all()``), :func:`is_valid`, :func:`parse_cached`
  (memoised parse for hot paths), :func:`label_keys` (keys a selector reads) and
  :func:`namespace_scoped` (the selector of a namespaced NetworkPolicy).

Modules: :mod:`.tokenizer` (lexing, errors), :mod:`.parser` (grammar, Selector),
:mod:`.ast` (nodes, canonical text, reference interpreter), :mod:`.compile`
(code generation for ``matches``).
"""

from tortie.selector.parser import (
    ALL,
    NAMESPACE_LABEL,
    Selector,
    is_valid,
    label_keys,
    namespace_scoped,
    parse,
    parse_cached,
)
from tortie.selector.tokenizer import SelectorError

__all__ = [
    "ALL",
    "NAMESPACE_LABEL",
    "Selector",
    "SelectorError",
    "is_valid",
    "label_keys",
    "namespace_scoped",
    "parse",
    "parse_cached",
]
