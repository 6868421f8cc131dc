"""In-memory `Backend` with etcd's semantics, for unit tests of the layers above.

It keeps one global revision counter, per-key create/mod revisions and versions, and the full
history of changes since the last compaction, so `list(prefix, revision)` reads old snapshots,
`watch(prefix, R)` replays history from R and then follows live writes, and asking for a
compacted revision raises `Compacted`, exactly as the etcd backend does. Conditional writes
and `txn` are atomic (one lock); a txn's writes share one revision, and a watcher gets them in
one batch, in op order, as etcd delivers them. It is thread-safe; watchers block on a
condition variable.

Deliberate differences from etcd: there is no size limit on a transaction and no leases.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence

from tortie.datastore.backend import (
    KV,
    Compacted,
    Compare,
    DatastoreError,
    Delete,
    EventType,
    KeyExists,
    KeyNotFound,
    Op,
    Put,
    RevisionConflict,
    TxnResult,
    Unavailable,
    WatchEvent,
)

__all__ = ["MemoryBackend", "MemoryWatcher"]


class MemoryBackend:
    """A thread-safe, revisioned, in-memory key/value store (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._revision = 1  # etcd starts at revision 1 with an empty store
        self._compact_revision = 0
        self._data: dict[str, KV] = {}
        # Every change since the last compaction, in revision order (several per revision
        # when a put_many wrote many keys at once).
        self._history: list[WatchEvent] = []
        self._history_revs: list[int] = []
        self._closed = False
        self._watchers: set[MemoryWatcher] = set()
        # Tests can set this to make every call raise Unavailable (an "etcd is down" switch).
        self.unavailable = False

    # -- helpers (call with the lock held) ----------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise DatastoreError("backend is closed")
        if self.unavailable:
            raise Unavailable("could not reach the datastore: memory backend marked unavailable")

    def _record(self, event: WatchEvent) -> None:
        self._history.append(event)
        self._history_revs.append(event.kv.mod_revision)

    def _write(self, key: str, value: bytes, rev: int) -> KV:
        prev = self._data.get(key)
        kv = KV(
            key=key,
            value=bytes(value),
            mod_revision=rev,
            create_revision=prev.create_revision if prev else rev,
            version=prev.version + 1 if prev else 1,
        )
        self._data[key] = kv
        self._record(WatchEvent(EventType.PUT, kv, prev))
        return kv

    def _remove(self, key: str, rev: int) -> KV:
        prev = self._data.pop(key)
        tomb = KV(key=key, value=b"", mod_revision=rev, create_revision=0, version=0)
        self._record(WatchEvent(EventType.DELETE, tomb, prev))
        return prev

    def _commit(self) -> None:
        self._cond.notify_all()

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> KV:
        with self._cond:
            self._check()
            kv = self._data.get(key)
            if kv is None:
                raise KeyNotFound(key)
            return kv

    def list(self, prefix: str, revision: int | None = None) -> tuple[list[KV], int]:
        with self._cond:
            self._check()
            if revision is None or revision == 0 or revision >= self._revision:
                if revision is not None and revision > self._revision:
                    raise DatastoreError(
                        f"required revision {revision} is a future revision "
                        f"(current {self._revision})"
                    )
                kvs = [kv for k, kv in self._data.items() if k.startswith(prefix)]
                kvs.sort(key=lambda kv: kv.key)
                return kvs, self._revision
            if revision < self._compact_revision:
                raise Compacted(self._compact_revision)
            # Rebuild the snapshot at `revision` by undoing later history.
            snap = {k: kv for k, kv in self._data.items() if k.startswith(prefix)}
            start = bisect.bisect_right(self._history_revs, revision)
            for event in reversed(self._history[start:]):
                key = event.kv.key
                if not key.startswith(prefix):
                    continue
                if event.prev_kv is None:
                    snap.pop(key, None)
                else:
                    snap[key] = event.prev_kv
            kvs = sorted(snap.values(), key=lambda kv: kv.key)
            return kvs, revision

    def current_revision(self) -> int:
        with self._cond:
            self._check()
            return self._revision

    # -- writes --------------------------------------------------------------------------------

    def create(self, key: str, value: bytes) -> KV:
        with self._cond:
            self._check()
            if key in self._data:
                raise KeyExists(key, self._data[key])
            self._revision += 1
            kv = self._write(key, value, self._revision)
            self._commit()
            return kv

    def update(self, key: str, value: bytes, expect_revision: int | None) -> KV:
        with self._cond:
            self._check()
            cur = self._data.get(key)
            if cur is None:
                raise KeyNotFound(key)
            if expect_revision is not None and cur.mod_revision != expect_revision:
                raise RevisionConflict(key, expect_revision, cur.mod_revision)
            self._revision += 1
            kv = self._write(key, value, self._revision)
            self._commit()
            return kv

    def put(self, key: str, value: bytes) -> KV:
        with self._cond:
            self._check()
            self._revision += 1
            kv = self._write(key, value, self._revision)
            self._commit()
            return kv

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> int:
        items = list(items)
        if not items:
            return 0
        with self._cond:
            self._check()
            if len({k for k, _ in items}) != len(items):
                raise DatastoreError("duplicate key in one transaction")
            self._revision += 1
            for key, value in items:
                self._write(key, value, self._revision)
            self._commit()
            return self._revision

    def delete(self, key: str, expect_revision: int | None = None) -> KV | None:
        with self._cond:
            self._check()
            cur = self._data.get(key)
            if cur is None:
                if expect_revision is not None:
                    raise KeyNotFound(key)
                return None
            if expect_revision is not None and cur.mod_revision != expect_revision:
                raise RevisionConflict(key, expect_revision, cur.mod_revision)
            self._revision += 1
            prev = self._remove(key, self._revision)
            self._commit()
            return prev

    def delete_prefix(self, prefix: str) -> int:
        with self._cond:
            self._check()
            keys = sorted(k for k in self._data if k.startswith(prefix))
            if not keys:
                return 0
            self._revision += 1
            for key in keys:
                self._remove(key, self._revision)
            self._commit()
            return len(keys)

    def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        for op in ops:
            if not isinstance(op, Put | Delete):
                raise TypeError(f"not a txn operation: {op!r}")
        keys = [op.key for op in ops]
        if len(set(keys)) != len(keys):
            raise DatastoreError("duplicate key given in txn request")
        with self._cond:
            self._check()
            if not all(c.holds_for(self._data.get(c.key)) for c in compares):
                current = {c.key: self._data.get(c.key) for c in compares}
                return TxnResult(False, self._revision, current)
            if not any(isinstance(op, Put) or op.key in self._data for op in ops):
                return TxnResult(True, self._revision)  # nothing changes: no new revision
            self._revision += 1
            for op in ops:
                if isinstance(op, Put):
                    self._write(op.key, op.value, self._revision)
                elif op.key in self._data:
                    self._remove(op.key, self._revision)
            self._commit()
            return TxnResult(True, self._revision)

    def compact(self, revision: int) -> None:
        with self._cond:
            self._check()
            if revision <= self._compact_revision:
                raise Compacted(self._compact_revision)
            if revision > self._revision:
                raise DatastoreError(
                    f"cannot compact to future revision {revision} (current {self._revision})"
                )
            cut = bisect.bisect_left(self._history_revs, revision)
            del self._history[:cut]
            del self._history_revs[:cut]
            self._compact_revision = revision
            self._commit()

    # -- watch ---------------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> MemoryWatcher:
        with self._cond:
            self._check()
            if start_revision <= 0:
                start_revision = self._revision + 1
            if start_revision < self._compact_revision:
                raise Compacted(self._compact_revision)
            watcher = MemoryWatcher(self, prefix, start_revision)
            self._watchers.add(watcher)
            return watcher

    def close(self) -> None:
        with self._cond:
            self._closed = True
            watchers = list(self._watchers)
            self._cond.notify_all()
        for w in watchers:
            w.close()

    # Used by MemoryWatcher.
    def _next_batch(self, watcher: MemoryWatcher) -> list[WatchEvent]:
        with self._cond:
            while True:
                if watcher.closed:
                    raise StopIteration
                if self._closed:
                    raise Unavailable("memory backend closed")
                if self.unavailable:
                    raise Unavailable("watch lost: memory backend marked unavailable")
                if watcher.next_revision < self._compact_revision:
                    raise Compacted(self._compact_revision)
                start = bisect.bisect_left(self._history_revs, watcher.next_revision)
                if start < len(self._history):
                    batch = [
                        e for e in self._history[start:] if e.kv.key.startswith(watcher.prefix)
                    ]
                    watcher.next_revision = self._revision + 1
                    watcher.revision = self._revision
                    if batch:
                        return batch
                self._cond.wait()


class MemoryWatcher:
    """A watch on a MemoryBackend (see `tortie.datastore.backend.Watcher`)."""

    def __init__(self, backend: MemoryBackend, prefix: str, start_revision: int) -> None:
        self._backend = backend
        self.prefix = prefix
        self.next_revision = start_revision
        self.revision = start_revision - 1
        self.closed = False

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        return self

    def __next__(self) -> list[WatchEvent]:
        return self._backend._next_batch(self)

    def close(self) -> None:
        with self._backend._cond:
            self.closed = True
            self._backend._watchers.discard(self)
            self._backend._cond.notify_all()
