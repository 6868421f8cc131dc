"""The building blocks every resource kind is made of.

``ApiStruct`` is the base of every spec type: msgspec Structs with camelCase JSON names, unknown
fields forbidden and unset (None) fields omitted on output, as Go's ``omitempty`` does in Calico.
Python attribute names are snake_case; where Calico's JSON name is not plain camelCase of it
(``peerIP``, ``notICMP``), the field says so with ``msgspec.field(name=...)``.

Validation happens in three steps (see ``tortie.api.validate``): msgspec converts the parsed
document (types, required and unknown fields), the kind applies Calico's defaults, then a walk
over the whole tree calls each struct's ``check(ctx, path)`` so that every semantic error is
reported with its full field path.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, ClassVar

import msgspec

from tortie.api.errors import FieldError, ValidationError

API_GROUP = "projectcalico.org"
API_VERSION = "projectcalico.org/v3"


class Ctx:
    """Collects errors during validation; knows the resource being validated."""

    __slots__ = ("errors", "resource")

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.errors: list[FieldError] = []

    def error(self, path: str, reason: str) -> None:
        self.errors.append(FieldError(path, reason))

    def require(self, cond: bool, path: str, reason: str) -> bool:
        if not cond:
            self.error(path, reason)
        return cond


class ApiStruct(
    msgspec.Struct,
    kw_only=True,
    omit_defaults=True,
    forbid_unknown_fields=True,
    rename="camel",
):
    """Base of every API struct. Override ``check`` for semantic validation."""

    def check(self, ctx: Ctx, path: str) -> None:
        """Report semantic problems of this struct (not its children) with ``ctx.error``."""


@functools.cache
def _fields_of(cls: type) -> tuple[msgspec.structs.FieldInfo, ...]:
    return msgspec.structs.fields(cls)


def struct_fields(obj: msgspec.Struct | type) -> tuple[msgspec.structs.FieldInfo, ...]:
    """``msgspec.structs.fields``, cached per class (msgspec re-evaluates the annotations on
    every call, which made validating 1,500 resources take seconds)."""
    return _fields_of(obj if isinstance(obj, type) else type(obj))


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def walk(obj: Any, ctx: Ctx, path: str) -> None:
    """Calls ``check`` on every ApiStruct in the tree, depth first, parents before children."""
    if isinstance(obj, ApiStruct):
        obj.check(ctx, path)
        for field in struct_fields(obj):
            value = getattr(obj, field.name)
            if value is not None:
                walk(value, ctx, join(path, field.encode_name))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            if isinstance(item, ApiStruct | list | dict):
                walk(item, ctx, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for key, item in obj.items():
            if isinstance(item, ApiStruct | list | dict):
                walk(item, ctx, f"{path}[{key}]")


class ObjectMeta(ApiStruct):
    """Kubernetes-style object metadata, as Calico's v3 resources carry it."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    self_link: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[dict[str, Any]] | None = None
    finalizers: list[str] | None = None
    managed_fields: list[dict[str, Any]] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        """Label and annotation keys and values, as Calico's ``validateObjectMeta``."""
        from tortie.api.validators import check_annotations, check_labels

        check_labels(ctx, f"{path}.labels", self.labels)
        check_annotations(ctx, f"{path}.annotations", self.annotations)


# Fields the datastore owns; `--export` and `apply` of a fetched file drop them.
SERVER_SET_METADATA = (
    "uid",
    "resource_version",
    "generation",
    "creation_timestamp",
    "deletion_timestamp",
    "deletion_grace_period_seconds",
    "self_link",
    "managed_fields",
)


class Resource(ApiStruct):
    """A top-level resource: ``apiVersion``, ``kind``, ``metadata``, ``spec``.

    Each kind subclasses this, declares ``spec`` with its spec type, and is registered with
    ``tortie.api.registry.register``. Class attributes describe the kind; see ``KindInfo``.
    """

    api_version: str = msgspec.field(default=API_VERSION, name="apiVersion")
    kind: str = ""
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)

    KIND: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False

    # --- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.labels or {}

    @property
    def ref(self) -> str:
        """``Kind(ns/name)`` as calicoctl writes it in messages."""
        if self.NAMESPACED and self.metadata.namespace:
            return f"{self.KIND}({self.metadata.namespace}/{self.name})"
        return f"{self.KIND}({self.name})"

    # --- hooks for kinds --------------------------------------------------------------------
    def apply_defaults(self) -> None:
        """Fill in Calico's defaults in place (called before semantic validation)."""

    def check_name(self, ctx: Ctx) -> None:
        """Validate ``metadata.name``; kinds with other rules override this."""
        from tortie.api.validators import check_resource_name

        check_resource_name(ctx, "metadata.name", self.metadata.name)

    # --- output -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON-ready form: apiVersion, kind, metadata, spec; defaults applied."""
        body = msgspec.to_builtins(self)
        body.pop("apiVersion", None)
        body.pop("kind", None)
        out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": self.KIND}
        out["metadata"] = body.pop("metadata", {})
        out.update(body)
        return _tidy_numbers(out)

    def copy(self) -> Resource:
        return msgspec.convert(msgspec.to_builtins(self), type(self))


def _tidy_numbers(obj: Any) -> Any:
    """Writes integral floats as ints (``order: 100``, not ``100.0``), as Calico prints them."""
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, dict):
        return {k: _tidy_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tidy_numbers(v) for v in obj]
    return obj


def iter_errors(resource: Resource) -> Iterator[FieldError]:
    """Semantic validation of an already-converted resource (name, then the whole tree)."""
    ctx = Ctx(resource)
    resource.check_name(ctx)
    walk(resource, ctx, "")
    yield from ctx.errors


def raise_if_errors(errors: list[FieldError]) -> None:
    if errors:
        raise ValidationError(errors)
