"""The Backend contract, as tests every backend must pass (memory and etcd alike).

Subclass `BackendContract` in a test module that provides a `backend` fixture.
"""

from __future__ import annotations

import threading

import pytest

from tortie.datastore.backend import (
    Backend,
    Compacted,
    EventType,
    KeyExists,
    KeyNotFound,
    RevisionConflict,
    WatchEvent,
)

P = "/calico/contract/"


def collect(watcher: object, n: int, timeout: float = 10.0) -> list[WatchEvent]:
    """Read events from a watcher until `n` arrived (in a thread, with a deadline)."""
    got: list[WatchEvent] = []
    done = threading.Event()

    def run() -> None:
        try:
            for batch in watcher:  # type: ignore[attr-defined]
                got.extend(batch)
                if len(got) >= n:
                    break
        finally:
            done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    if not done.wait(timeout):
        watcher.close()  # type: ignore[attr-defined]
        t.join(5)
        raise AssertionError(f"only {len(got)} of {n} watch events within {timeout}s: {got}")
    return got


class BackendContract:
    def test_is_a_backend(self, backend: Backend) -> None:
        assert isinstance(backend, Backend)

    def test_create_and_get(self, backend: Backend) -> None:
        kv = backend.create(P + "a", b'{"x": 1}')
        assert kv.key == P + "a"
        assert kv.value == b'{"x": 1}'
        assert kv.create_revision == kv.mod_revision
        assert kv.version == 1
        assert backend.get(P + "a") == kv

    def test_get_missing_raises(self, backend: Backend) -> None:
        with pytest.raises(KeyNotFound) as e:
            backend.get(P + "missing")
        assert e.value.key == P + "missing"

    def test_create_existing_raises_key_exists(self, backend: Backend) -> None:
        first = backend.create(P + "a", b"1")
        with pytest.raises(KeyExists) as e:
            backend.create(P + "a", b"2")
        assert e.value.current == first
        assert backend.get(P + "a").value == b"1"

    def test_update_checks_revision(self, backend: Backend) -> None:
        kv1 = backend.create(P + "a", b"1")
        kv2 = backend.update(P + "a", b"2", kv1.mod_revision)
        assert kv2.value == b"2"
        assert kv2.mod_revision > kv1.mod_revision
        assert kv2.create_revision == kv1.create_revision
        assert kv2.version == 2
        assert backend.get(P + "a") == kv2
        with pytest.raises(RevisionConflict) as e:
            backend.update(P + "a", b"3", kv1.mod_revision)  # stale
        assert e.value.current_revision == kv2.mod_revision
        assert e.value.expected == kv1.mod_revision
        assert backend.get(P + "a").value == b"2"

    def test_update_without_revision_needs_existing_key(self, backend: Backend) -> None:
        with pytest.raises(KeyNotFound):
            backend.update(P + "nope", b"1", None)
        with pytest.raises(KeyNotFound):
            backend.update(P + "nope", b"1", 5)
        backend.create(P + "a", b"1")
        assert backend.update(P + "a", b"2", None).version == 2

    def test_put_is_unconditional(self, backend: Backend) -> None:
        kv1 = backend.put(P + "a", b"1")
        kv2 = backend.put(P + "a", b"2")
        assert (kv1.version, kv2.version) == (1, 2)
        assert kv2.create_revision == kv1.create_revision
        assert backend.get(P + "a") == kv2

    def test_delete(self, backend: Backend) -> None:
        kv = backend.create(P + "a", b"1")
        prev = backend.delete(P + "a")
        assert prev == kv
        with pytest.raises(KeyNotFound):
            backend.get(P + "a")
        assert backend.delete(P + "a") is None  # idempotent without a revision

    def test_delete_checks_revision(self, backend: Backend) -> None:
        kv1 = backend.create(P + "a", b"1")
        kv2 = backend.update(P + "a", b"2", kv1.mod_revision)
        with pytest.raises(RevisionConflict) as e:
            backend.delete(P + "a", kv1.mod_revision)
        assert e.value.current_revision == kv2.mod_revision
        assert backend.get(P + "a") == kv2
        assert backend.delete(P + "a", kv2.mod_revision) == kv2
        with pytest.raises(KeyNotFound):
            backend.delete(P + "a", kv2.mod_revision)

    def test_delete_prefix_stops_at_the_prefix(self, backend: Backend) -> None:
        for k in ("a/1", "a/2", "a/3/x", "ab", "b"):
            backend.put(P + k, b"v")
        assert backend.delete_prefix(P + "a/") == 3
        assert [kv.key for kv in backend.list(P)[0]] == [P + "ab", P + "b"]
        assert backend.delete_prefix(P + "a/") == 0

    def test_list_is_sorted_snapshot_with_revision(self, backend: Backend) -> None:
        for k in ("c", "a", "b"):
            backend.put(P + k, k.encode())
        backend.put("/calico/contract-other", b"not under the prefix")
        kvs, rev = backend.list(P)
        assert [kv.key for kv in kvs] == [P + "a", P + "b", P + "c"]
        assert rev == backend.current_revision()
        assert rev >= max(kv.mod_revision for kv in kvs)
        assert backend.list(P + "zzz") == ([], rev)

    def test_list_at_an_old_revision(self, backend: Backend) -> None:
        backend.put(P + "a", b"1")
        backend.put(P + "b", b"1")
        _, rev = backend.list(P)
        backend.put(P + "a", b"2")
        backend.delete(P + "b")
        backend.put(P + "c", b"1")
        old, rev2 = backend.list(P, rev)
        assert rev2 == rev
        assert [(kv.key, kv.value) for kv in old] == [(P + "a", b"1"), (P + "b", b"1")]
        new, _ = backend.list(P)
        assert [(kv.key, kv.value) for kv in new] == [(P + "a", b"2"), (P + "c", b"1")]

    def test_put_many_writes_all_keys(self, backend: Backend) -> None:
        rev = backend.put_many([(f"{P}m{i:03d}", str(i).encode()) for i in range(100)])
        kvs, _ = backend.list(P)
        assert len(kvs) == 100
        assert {kv.mod_revision for kv in kvs} == {rev}  # up to 128 keys: one transaction
        assert backend.put_many([]) == 0

    def test_unicode_keys_and_binary_values(self, backend: Backend) -> None:
        key = P + "näme-✓"
        backend.put(key, bytes(range(256)))
        assert backend.get(key).value == bytes(range(256))
        assert [kv.key for kv in backend.list(P)[0]] == [key]

    def test_current_revision_grows_with_writes(self, backend: Backend) -> None:
        r1 = backend.current_revision()
        kv = backend.put(P + "a", b"1")
        assert kv.mod_revision == r1 + 1 == backend.current_revision()

    def test_watch_replays_history_then_follows(self, backend: Backend) -> None:
        kv1 = backend.create(P + "a", b"1")
        backend.update(P + "a", b"2", kv1.mod_revision)
        backend.put("/calico/elsewhere", b"x")
        backend.delete(P + "a")
        watcher = backend.watch(P, kv1.mod_revision)
        try:
            backend.put(P + "b", b"live")
            events = collect(watcher, 4)
        finally:
            watcher.close()
        assert [(e.type, e.key) for e in events] == [
            (EventType.PUT, P + "a"),
            (EventType.PUT, P + "a"),
            (EventType.DELETE, P + "a"),
            (EventType.PUT, P + "b"),
        ]
        revs = [e.revision for e in events]
        assert revs == sorted(revs) and revs[0] == kv1.mod_revision
        assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
        assert events[2].prev_kv is not None and events[2].prev_kv.value == b"2"
        assert events[2].kv.value == b""
        assert events[3].kv.value == b"live"
        assert watcher.revision >= events[3].revision

    def test_watch_from_now(self, backend: Backend) -> None:
        backend.put(P + "old", b"1")
        watcher = backend.watch(P, 0)
        try:
            backend.put(P + "new", b"1")
            events = collect(watcher, 1)
        finally:
            watcher.close()
        assert [e.key for e in events] == [P + "new"]

    def test_watch_close_unblocks_iteration(self, backend: Backend) -> None:
        watcher = backend.watch(P, 0)
        finished = threading.Event()

        def run() -> None:
            for _ in watcher:
                pass
            finished.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        watcher.close()
        t.join(5)
        assert finished.is_set()

    def test_compaction(self, backend: Backend) -> None:
        kv = backend.put(P + "a", b"1")
        backend.put(P + "a", b"2")
        backend.put(P + "b", b"1")
        current = backend.current_revision()
        backend.compact(current)
        with pytest.raises(Compacted):
            backend.list(P, kv.mod_revision)
        with pytest.raises(Compacted) as e:
            backend.watch(P, kv.mod_revision)
        assert e.value.compact_revision in (None, current)
        with pytest.raises(Compacted):
            backend.compact(current)
        # Watching from the compaction revision itself is still allowed.
        watcher = backend.watch(P, current)
        try:
            events = collect(watcher, 1)
        finally:
            watcher.close()
        assert events[0].revision == current
        assert [kv.key for kv in backend.list(P)[0]] == [P + "a", P + "b"]

    def test_concurrent_compare_and_swap_loses_no_increment(self, backend: Backend) -> None:
        backend.create(P + "counter", b"0")
        threads, per_thread = 4, 25
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(per_thread):
                    while True:
                        kv = backend.get(P + "counter")
                        try:
                            backend.update(
                                P + "counter", str(int(kv.value) + 1).encode(), kv.mod_revision
                            )
                            break
                        except RevisionConflict:
                            continue
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errors
        assert int(backend.get(P + "counter").value) == threads * per_thread
