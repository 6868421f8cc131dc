"""Reading ``-f`` inputs (file, directory with ``-R``, or ``-``) into validated resources.

Everything is parsed and validated before anything is written, so a command either finds
every problem in its input or acts on a fully valid set: no resource is half-applied.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tortie.api import FieldError, Resource

EXTENSIONS = (".yaml", ".yml", ".json")


class InputError(Exception):
    pass


@dataclass
class Document:
    source: str  # file name (or "stdin") and document number
    resource: Resource | None = None
    errors: list[FieldError] = field(default_factory=list)
    description: str = ""


def read_sources(filename: str, recursive: bool) -> list[tuple[str, str]]:
    """(name, text) for every input file that ``-f`` names."""
    if filename == "-":
        return [("stdin", sys.stdin.read())]
    if os.path.isdir(filename):
        paths: list[str] = []
        if recursive:
            for root, dirs, files in os.walk(filename):
                dirs.sort()
                paths.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(EXTENSIONS))
        else:
            paths = [
                os.path.join(filename, f)
                for f in sorted(os.listdir(filename))
                if f.endswith(EXTENSIONS) and os.path.isfile(os.path.join(filename, f))
            ]
        if not paths:
            raise InputError(f"no .yaml, .yml or .json files in directory {filename}")
        return [(p, _read(p)) for p in paths]
    return [(filename, _read(filename))]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def describe(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "document"
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name", "<no name>")
    ns = meta.get("namespace")
    return f"{doc.get('kind', '<no kind>')}({ns + '/' if ns else ''}{name})"


def load_documents(
    sources: list[tuple[str, str]], namespace: str | None, *, skip_empty: bool = False
) -> list[Document]:
    """Parse and validate every document; namespaced kinds get ``namespace`` (or "default")."""
    from tortie.api import FieldError, ValidationError, lookup, parse_documents, validate

    out: list[Document] = []
    for name, text in sources:
        try:
            raw_docs = parse_documents(text)
        except ValidationError as exc:
            out.append(Document(name, errors=exc.errors, description=name))
            continue
        if not raw_docs and not skip_empty:
            out.append(
                Document(name, errors=[FieldError("", "no resources found")], description=name)
            )
        for i, raw in enumerate(raw_docs, start=1):
            src = f"{name} (document {i})" if len(raw_docs) > 1 else name
            doc = Document(src, description=describe(raw))
            if isinstance(raw, dict):
                info = lookup(raw["kind"]) if isinstance(raw.get("kind"), str) else None
                if info is not None and info.namespaced:
                    problem = _default_namespace(raw, namespace)
                    if problem:
                        doc.errors.append(FieldError("metadata.namespace", problem))
                        out.append(doc)
                        continue
            try:
                doc.resource = validate(raw)
            except ValidationError as exc:
                doc.errors = exc.errors
            out.append(doc)
    return out


def _default_namespace(raw: dict[str, Any], namespace: str | None) -> str | None:
    meta = raw.get("metadata")
    if meta is None:
        meta = raw["metadata"] = {}
    if not isinstance(meta, dict):
        return None  # validation reports the bad metadata
    have = meta.get("namespace")
    if not have:
        meta["namespace"] = namespace or "default"
    elif namespace and have != namespace:
        return f"namespace {have!r} in the file does not match --namespace {namespace!r}"
    return None
