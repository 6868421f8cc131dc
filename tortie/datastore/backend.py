"""The datastore contract: the `Backend` protocol, its plain data and its errors.

Everything above the datastore (the Syncer, IPAM, tortiectl, the CNI plugin) talks to a
`Backend`: a revisioned key/value store with etcd v3 semantics.

- Every write gets a new, cluster-wide *revision* (an int that only grows). A key's
  `mod_revision` is the revision of its last write; `create_revision` the revision that created
  it; `version` counts writes since creation.
- Conditional writes (`create`, `update` with `expect_revision`, `delete` with
  `expect_revision`) are checked *inside* the store, atomically (an etcd txn compare), never by
  reading first and writing after.
- `txn(compares, ops)` is the general form: several keys' revisions compared and several
  puts and deletes applied, all or nothing, at one new revision (an etcd txn with one
  `success` branch). On failure nothing is written and the compared keys' current values come
  back, so a caller can recompute and retry without reading again.
- `list` returns a consistent snapshot at one revision, and `watch(prefix, R)` delivers every
  change after revision R-1, in order, so list-at-R + watch-from-R+1 misses nothing.
- Old history can be compacted away; asking for it raises `Compacted`, and the caller must
  relist (the Syncer does exactly that).

Keys are `str` (UTF-8 in the store); values are `bytes` (JSON for Calico resources).
This module imports nothing heavy: the CNI plugin imports it on every pod.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

__all__ = [
    "KV",
    "AuthError",
    "Backend",
    "Compacted",
    "Compare",
    "DatastoreError",
    "Delete",
    "EventType",
    "KeyExists",
    "KeyNotFound",
    "Op",
    "Put",
    "RevisionConflict",
    "TxnResult",
    "Unavailable",
    "WatchEvent",
    "Watcher",
    "prefix_range_end",
]


@dataclass(frozen=True, slots=True)
class KV:
    """One key's stored value and its revision metadata (etcd's `mvccpb.KeyValue`)."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int = 0


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watch.

    For `PUT`, `kv` is the new value. For `DELETE`, `kv.value` is empty and `kv.mod_revision`
    is the revision of the deletion; `prev_kv` (when known) is the value that was deleted.
    """

    type: EventType
    kv: KV
    prev_kv: KV | None = None

    @property
    def key(self) -> str:
        return self.kv.key

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


# ---------------------------------------------------------------------------------------------
# Transactions


@dataclass(frozen=True, slots=True)
class Compare:
    """A transaction's condition on one key, by revision.

    - `mod_revision=N` (N > 0): the key exists and was last written at revision N (the
      compare-and-swap of `update`/`delete` with `expect_revision`);
    - `mod_revision=0`: the key does not exist (etcd's `create_revision == 0` idiom: the
      condition of `create`);
    - `mod_revision=None`: the key exists, whatever its revision.

    `Compare.absent(key)` and `Compare.exists(key)` spell the last two out.
    """

    key: str
    mod_revision: int | None = None

    def __post_init__(self) -> None:
        if self.mod_revision is not None and self.mod_revision < 0:
            raise ValueError(f"compare on {self.key}: mod_revision cannot be negative")

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, 0)

    @classmethod
    def exists(cls, key: str) -> Compare:
        return cls(key, None)

    def holds_for(self, current: KV | None) -> bool:
        """Whether the condition holds when the key's current value is `current`."""
        if self.mod_revision is None:
            return current is not None
        if self.mod_revision == 0:
            return current is None
        return current is not None and current.mod_revision == self.mod_revision


@dataclass(frozen=True, slots=True)
class Put:
    """A transaction operation: write `value` at `key` (creating it or overwriting it)."""

    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """A transaction operation: delete `key` (nothing happens if it does not exist)."""

    key: str


#: One operation of a transaction.
Op: TypeAlias = Put | Delete


@dataclass(frozen=True, slots=True)
class TxnResult:
    """What `Backend.txn` did.

    `succeeded`: every compare held and every op was applied. `revision` is etcd's header
    revision: after a successful txn that changed something, the revision of all its writes
    (each put key's new `mod_revision`); otherwise the store's revision when it was checked.
    `current` is filled only on failure: for each compared key, its value at that revision
    (None when the key does not exist). It tells which compare failed and what the key holds
    now, so the caller can recompute and retry without reading again.
    """

    succeeded: bool
    revision: int
    current: Mapping[str, KV | None] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Errors


class DatastoreError(Exception):
    """Base class of every error raised by a Backend."""


class KeyNotFound(DatastoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class KeyExists(DatastoreError):
    def __init__(self, key: str, current: KV | None = None) -> None:
        super().__init__(f"key already exists: {key}")
        self.key = key
        self.current = current


class RevisionConflict(DatastoreError):
    """The key's revision is not the one the caller expected (someone else wrote it)."""

    def __init__(self, key: str, expected: int | None, current_revision: int | None) -> None:
        super().__init__(
            f"revision conflict on {key}: expected revision {expected}, "
            f"current revision is {current_revision if current_revision is not None else 'unknown'}"
        )
        self.key = key
        self.expected = expected
        self.current_revision = current_revision


class Compacted(DatastoreError):
    """The requested revision has been compacted away; relist to continue."""

    def __init__(self, compact_revision: int | None, message: str | None = None) -> None:
        super().__init__(
            message
            or (
                f"required revision has been compacted (compacted up to {compact_revision})"
                if compact_revision
                else "required revision has been compacted"
            )
        )
        self.compact_revision = compact_revision


class Unavailable(DatastoreError):
    """No endpoint could be reached (or the request's outcome is unknown). Retry later."""


class AuthError(DatastoreError):
    """Authentication failed or permission was denied."""


# ---------------------------------------------------------------------------------------------
# Protocols


@runtime_checkable
class Watcher(Protocol):
    """An open watch: iterate to get batches of events, in revision order.

    Each item is a list of WatchEvents (one etcd watch response; events of one transaction
    arrive together). An *empty* list is a progress notification: nothing changed under the
    prefix up to `revision`. `revision` is the highest revision the stream is known to be
    complete up to. Iteration raises `Compacted` if the start revision has been compacted,
    `Unavailable` if the connection is lost; it stops (StopIteration) after `close()`.
    """

    revision: int

    def __iter__(self) -> Iterator[list[WatchEvent]]: ...

    def __next__(self) -> list[WatchEvent]: ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """A revisioned key/value store with etcd v3 semantics (see the module docstring)."""

    def get(self, key: str) -> KV:
        """Return the key's current value; raise KeyNotFound."""
        ...

    def list(self, prefix: str, revision: int | None = None) -> tuple[list[KV], int]:
        """All keys under `prefix`, sorted by key, at one revision; return (kvs, revision).

        With `revision=None` the snapshot is taken at the current revision, which is returned.
        Raises Compacted if `revision` has been compacted.
        """
        ...

    def create(self, key: str, value: bytes) -> KV:
        """Write a key that must not exist; raise KeyExists."""
        ...

    def update(self, key: str, value: bytes, expect_revision: int | None) -> KV:
        """Overwrite an existing key; raise KeyNotFound, or RevisionConflict when
        `expect_revision` is given and is not the key's current mod_revision."""
        ...

    def put(self, key: str, value: bytes) -> KV:
        """Write a key unconditionally."""
        ...

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> int:
        """Write many keys unconditionally, in as few transactions as the store allows;
        return the revision of the last write (0 if `items` is empty)."""
        ...

    def delete(self, key: str, expect_revision: int | None = None) -> KV | None:
        """Delete a key; return its last value.

        Without `expect_revision`, deleting an absent key returns None (idempotent). With it,
        an absent key raises KeyNotFound and a different revision raises RevisionConflict.
        """
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; return how many were deleted."""
        ...

    def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        """If every compare holds, apply every op, atomically, at one new revision.

        Ops apply in order, each key at most once (a key twice raises DatastoreError, as etcd
        does); deleting an absent key is no change. Watchers get the txn's events together, in
        op order, all with the txn's revision. A txn that changes nothing (no ops, or only
        deletes of absent keys) does not advance the revision. A failed compare is not an
        error: the result says `succeeded=False` and carries the compared keys' current values.
        etcd limits a txn to 128 compares and 128 ops (`--max-txn-ops`).
        """
        ...

    def watch(self, prefix: str, start_revision: int) -> Watcher:
        """Watch every key under `prefix` from `start_revision` (inclusive; 0 = from now).

        Raises Compacted if `start_revision` has already been compacted.
        """
        ...

    def compact(self, revision: int) -> None:
        """Discard history before `revision`; raise Compacted if already compacted past it."""
        ...

    def current_revision(self) -> int:
        """The store's current revision."""
        ...

    def close(self) -> None:
        """Release connections; open watchers are closed too."""
        ...


def prefix_range_end(prefix: bytes) -> bytes:
    """The exclusive end of the key range holding every key that starts with `prefix`.

    This is etcd's rule: increment the last byte that is not 0xff and drop what follows; an
    empty prefix (or all 0xff) means "to the end of the keyspace", written as b"\\0".
    """
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"
