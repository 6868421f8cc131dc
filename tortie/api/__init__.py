"""The resource API: ``projectcalico.org/v3`` kinds, Calico's defaults and validation, codecs.

Public surface (other components and users build on it):

- ``load(text) -> list[Resource]``: YAML or JSON, one or many documents, List kinds.
- ``validate(obj) -> Resource``: one already-parsed document.
- ``Resource.to_dict()``: the canonical JSON-ready form with defaults applied.
- ``ValidationError`` (``.errors``: ``FieldError(path, reason)`` for every problem).
- ``lookup(name) -> KindInfo | None`` and ``all_kinds()``: the kinds, their plurals and aliases.
"""

from tortie.api.base import API_VERSION, ObjectMeta, Resource
from tortie.api.codec import dump, load, parse_documents, to_json, to_yaml, validate
from tortie.api.errors import FieldError, ValidationError
from tortie.api.registry import KindInfo, all_kinds, lookup

__all__ = [
    "API_VERSION",
    "FieldError",
    "KindInfo",
    "ObjectMeta",
    "Resource",
    "ValidationError",
    "all_kinds",
    "dump",
    "load",
    "lookup",
    "parse_documents",
    "to_json",
    "to_yaml",
    "validate",
]
