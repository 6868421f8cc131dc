"""Resource-level CRUD over a Backend: the one way components read and write v3 resources.

It maps a Resource to its libcalico-go key, stores the canonical JSON (without the
``resourceVersion``, which is the etcd mod revision and is filled in on read), sets ``uid`` and
``creationTimestamp`` on create, and checks ``resourceVersion`` on update and delete (optimistic
concurrency). Reads decode without re-validating (what is stored was validated on the way in),
so listing thousands of resources stays cheap.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from tortie.datastore import keys
from tortie.datastore.backend import KV, Backend, KeyExists, KeyNotFound, RevisionConflict

if TYPE_CHECKING:
    from tortie.api import KindInfo, Resource


class ResourceError(Exception):
    """A resource operation failed; the message names the resource, as calicoctl does."""


class ResourceNotFound(ResourceError):
    pass


class ResourceExists(ResourceError):
    pass


class ResourceConflict(ResourceError):
    pass


class ResourceDataError(ResourceError):
    """Stored data that cannot be decoded as its kind."""


def ref(kind: str, name: str, namespace: str | None = None) -> str:
    return f"{kind}({namespace}/{name})" if namespace else f"{kind}({name})"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Listing:
    items: list[Resource]
    revision: int


class ResourceClient:
    """CRUD for v3 resources over any Backend (etcd or memory)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # --- encoding ---------------------------------------------------------------------------
    @staticmethod
    def key_for(resource: Resource) -> str:
        ns = resource.metadata.namespace if resource.NAMESPACED else None
        return keys.resource_key(resource.KIND, resource.name, ns)

    @staticmethod
    def encode(resource: Resource) -> bytes:
        data = resource.to_dict()
        data["metadata"].pop("resourceVersion", None)
        return json.dumps(data, separators=(",", ":")).encode()

    @staticmethod
    def decode(info: KindInfo, kv: KV) -> Resource:
        try:
            res = msgspec.json.decode(kv.value, type=info.cls)
        except msgspec.DecodeError as exc:
            raise ResourceDataError(
                f"stored value at {kv.key} is not a valid {info.kind}: {exc}"
            ) from None
        res.kind = info.kind
        res.metadata.resource_version = str(kv.mod_revision)
        return res

    # --- operations ---------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: str | None = None) -> Resource:
        info = _info(kind)
        ns = namespace if info.namespaced else None
        try:
            kv = self.backend.get(keys.resource_key(info.kind, name, ns))
        except KeyNotFound:
            raise ResourceNotFound(f"resource does not exist: {ref(info.kind, name, ns)}") from None
        return self.decode(info, kv)

    def list(self, kind: str, namespace: str | None = None) -> Listing:
        """All resources of ``kind`` (in ``namespace``, or in all namespaces when None)."""
        info = _info(kind)
        prefix = keys.resource_prefix(info.kind, namespace if info.namespaced else None)
        kvs, revision = self.backend.list(prefix)
        return Listing([self.decode(info, kv) for kv in kvs], revision)

    def create(self, resource: Resource) -> Resource:
        res = resource.copy()
        res.metadata.resource_version = None
        res.metadata.uid = str(uuid.uuid4())
        res.metadata.creation_timestamp = _now()
        try:
            kv = self.backend.create(self.key_for(res), self.encode(res))
        except KeyExists:
            raise ResourceExists(f"resource already exists: {res.ref}") from None
        res.metadata.resource_version = str(kv.mod_revision)
        return res

    def update(self, resource: Resource) -> Resource:
        """Replace a resource. With a ``resourceVersion`` the write only succeeds if it is
        still current; without one it overwrites whatever is there (as calicoctl replace does).
        ``uid`` and ``creationTimestamp`` are kept from the stored resource."""
        res = resource.copy()
        key = self.key_for(res)
        try:
            current = self.decode(_info(res.KIND), self.backend.get(key))
        except KeyNotFound:
            raise ResourceNotFound(f"resource does not exist: {res.ref}") from None
        expect = res.metadata.resource_version or current.metadata.resource_version
        res.metadata.uid = current.metadata.uid
        res.metadata.creation_timestamp = current.metadata.creation_timestamp
        res.metadata.resource_version = None
        try:
            kv = self.backend.update(key, self.encode(res), int(expect or 0))
        except RevisionConflict:
            raise ResourceConflict(
                f"update conflict: {res.ref} was modified (resourceVersion {expect} is stale); "
                "get it again and retry"
            ) from None
        except KeyNotFound:
            raise ResourceNotFound(f"resource does not exist: {res.ref}") from None
        res.metadata.resource_version = str(kv.mod_revision)
        return res

    def apply(self, resource: Resource) -> tuple[Resource, bool]:
        """Create or update; returns the stored resource and whether it was created."""
        for _ in range(5):
            try:
                return self.create(resource), True
            except ResourceExists:
                pass
            try:
                return self.update(resource), False
            except ResourceNotFound:
                continue  # deleted between our create and update: try again
        raise ResourceConflict(f"could not apply {resource.ref}: it keeps changing")

    def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        resource_version: str | None = None,
    ) -> Resource:
        info = _info(kind)
        ns = namespace if info.namespaced else None
        key = keys.resource_key(info.kind, name, ns)
        try:
            current = self.decode(info, self.backend.get(key))
            expect = int(resource_version) if resource_version else current_revision(current)
            self.backend.delete(key, expect)
        except KeyNotFound:
            raise ResourceNotFound(f"resource does not exist: {ref(info.kind, name, ns)}") from None
        except RevisionConflict:
            raise ResourceConflict(
                f"delete conflict: {ref(info.kind, name, ns)} was modified "
                f"(resourceVersion {resource_version} is stale)"
            ) from None
        return current


def current_revision(resource: Resource) -> int:
    return int(resource.metadata.resource_version or 0)


def _info(kind: str) -> KindInfo:
    from tortie.api import lookup

    info = lookup(kind)
    if info is None:
        raise ResourceError(f"unknown resource kind {kind!r}")
    return info
