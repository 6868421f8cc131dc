"""Patches for ``tortiectl patch``: merge patches (RFC 7386, also used for "strategic")
and JSON patches (RFC 6902). Pure functions over JSON-like data."""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: mappings merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 operations add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {i}: needs 'op' and 'path'")
        kind, path = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, path, _value(op, i))
        elif kind == "remove":
            doc, _ = _remove(doc, path, op["path"])
        elif kind == "replace":
            doc, _ = _remove(doc, path, op["path"])
            doc = _add(doc, path, _value(op, i))
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise PatchError(f"operation {i}: {kind} needs 'from'")
            src = _pointer(op["from"])
            if kind == "move":
                doc, moved = _remove(doc, src, op["from"])
            else:
                moved = copy.deepcopy(_get(doc, src, op["from"]))
            doc = _add(doc, path, moved)
        elif kind == "test":
            if _get(doc, path, op["path"]) != _value(op, i):
                raise PatchError(f"operation {i}: test failed at {op['path']}")
        else:
            raise PatchError(f"operation {i}: unknown op {kind!r}")
    return doc


def _value(op: dict[str, Any], i: int) -> Any:
    if "value" not in op:
        raise PatchError(f"operation {i}: {op['op']} needs 'value'")
    return copy.deepcopy(op["value"])


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise PatchError(f"invalid JSON pointer {text!r}: must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in text[1:].split("/")]


def _get(doc: Any, path: list[str], text: str) -> Any:
    for part in path:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise PatchError(f"path {text!r} does not exist")
    return doc


def _add(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _get(doc, path[:-1], "/" + "/".join(path[:-1]))
    last = path[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(f"index {last!r} out of range")
    else:
        raise PatchError(f"cannot add below a {type(parent).__name__}")
    return doc


def _remove(doc: Any, path: list[str], text: str) -> tuple[Any, Any]:
    if not path:
        raise PatchError("cannot remove the whole document")
    parent = _get(doc, path[:-1], text)
    last = path[-1]
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return doc, parent.pop(int(last))
    raise PatchError(f"path {text!r} does not exist")
