"""YAML and JSON in and out: documents → dicts → validated resources, and back.

Input may be YAML or JSON, one or many documents (``---``), and ``List`` kinds (``kind: List``
or ``kind: <Kind>List`` with ``items``). Timestamps stay strings (YAML would otherwise turn
``creationTimestamp`` into datetimes). YAML output sorts keys, as calicoctl's does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import yaml

from tortie.api.base import API_VERSION, Resource, iter_errors
from tortie.api.errors import FieldError, ValidationError
from tortie.api.registry import all_kinds

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _NoTimestampLoader(_Loader):  # type: ignore[misc, valid-type]
    """SafeLoader that leaves timestamps and base-60 numbers as strings.

    YAML 1.1 reads ``1000:1050`` as the sexagesimal integer 60050; calicoctl's Go YAML reads
    it as the string ``"1000:1050"`` (a port range), and so must we.
    """


# YAML 1.1's int and float patterns without their base-60 (``a:b``) forms.
_INT = re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"
)
_FLOAT = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_RESOLVER_OVERRIDES = {"tag:yaml.org,2002:int": _INT, "tag:yaml.org,2002:float": _FLOAT}

_NoTimestampLoader.yaml_implicit_resolvers = {
    ch: [
        (tag, _RESOLVER_OVERRIDES.get(tag, rx))
        for tag, rx in resolvers
        if tag != "tag:yaml.org,2002:timestamp"
    ]
    for ch, resolvers in _Loader.yaml_implicit_resolvers.items()
}


def parse_documents(text: str) -> list[Any]:
    """Every non-empty document in ``text`` (YAML or JSON), with List kinds expanded.

    Raises ValidationError (path ``""``) when the text is not YAML/JSON at all.
    """
    stripped = text.lstrip()
    docs: list[Any]
    if stripped.startswith(("{", "[")):
        try:
            parsed = json.loads(text)
            docs = parsed if isinstance(parsed, list) else [parsed]
        except json.JSONDecodeError:
            docs = _load_yaml(text)
    else:
        docs = _load_yaml(text)
    out: list[Any] = []
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, dict) and _is_list_kind(doc):
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise ValidationError.single("items", "a List's items must be a sequence")
            out.extend(items)
        else:
            out.append(doc)
    return out


def _load_yaml(text: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_NoTimestampLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError.single("", f"not valid YAML or JSON{where}: {problem}") from None


def _is_list_kind(doc: Mapping[str, Any]) -> bool:
    kind = doc.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and "items" in doc


_MSGSPEC_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<f>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<f>[^`]*)`")


def _msgspec_error(exc: msgspec.ValidationError) -> FieldError:
    m = _MSGSPEC_PATH.match(str(exc))
    assert m is not None
    msg, path = m.group("msg"), (m.group("path") or "").lstrip(".")
    if u := _UNKNOWN.match(msg):
        return FieldError(_join(path, u.group("f")), "unknown field")
    if u := _MISSING.match(msg):
        return FieldError(_join(path, u.group("f")), "required field is missing")
    msg = _TYPE_WORDS.sub(lambda t: _TYPE_NAMES[t.group(0)], msg.replace("`", ""))
    msg = msg.replace(" | nothing", "").replace("nothing | ", "")
    return FieldError(path, msg[0].lower() + msg[1:] if msg else "invalid value")


_TYPE_NAMES = {
    "float": "a number",
    "int": "an integer",
    "str": "a string",
    "bool": "a boolean",
    "null": "nothing",
    "object": "a mapping",
    "array": "a list",
}
_TYPE_WORDS = re.compile(r"\b(" + "|".join(_TYPE_NAMES) + r")\b")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate(obj: Any) -> Resource:
    """One parsed document → a validated Resource with Calico's defaults applied."""
    if not isinstance(obj, dict):
        got = type(obj).__name__
        raise ValidationError.single("", f"expected a resource (a mapping), got {got}")
    api, kind = obj.get("apiVersion"), obj.get("kind")
    errors: list[FieldError] = []
    if api != API_VERSION:
        errors.append(
            FieldError("apiVersion", f"unsupported apiVersion {api!r}: expected {API_VERSION!r}")
        )
    kinds = all_kinds()
    info = kinds.get(kind) if isinstance(kind, str) else None
    if info is None:
        errors.append(
            FieldError("kind", f"unknown kind {kind!r}: expected one of {', '.join(sorted(kinds))}")
        )
    if errors or info is None:
        raise ValidationError(errors)
    try:
        resource = msgspec.convert(obj, info.cls)
    except msgspec.ValidationError as exc:
        raise ValidationError([_msgspec_error(exc)]) from None
    resource.apply_defaults()
    problems = list(iter_errors(resource))
    if problems:
        raise ValidationError(problems)
    return resource


def load(text: str) -> list[Resource]:
    """YAML or JSON text (one or many documents, List kinds) → validated resources.

    Raises ValidationError listing every problem in every document (numbered from 1 when
    there is more than one document).
    """
    docs = parse_documents(text)
    resources: list[Resource] = []
    errors: list[FieldError] = []
    for i, doc in enumerate(docs, start=1):
        try:
            resources.append(validate(doc))
        except ValidationError as exc:
            errors.extend((exc.in_document(i) if len(docs) > 1 else exc).errors)
    if errors:
        raise ValidationError(errors)
    return resources


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=1000)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def dump(resources: Iterable[Resource], fmt: str = "yaml") -> str:
    """Resources as calicoctl prints them: one resource as itself, several as a List."""
    items = [r.to_dict() for r in resources]
    data: Any = items[0] if len(items) == 1 else {
        "apiVersion": API_VERSION,
        "kind": "List",
        "items": items,
    }
    return to_json(data) if fmt == "json" else to_yaml(data)
