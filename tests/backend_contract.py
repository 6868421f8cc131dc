"""The Backend contract, as tests every backend must pass (memory and etcd alike).

Subclass `BackendContract` in a test module that provides a `backend` fixture.
"""

from __future__ import annotations

import threading

import pytest

from tortie.datastore.backend import (
    KV,
    Backend,
    Compacted,
    Compare,
    DatastoreError,
    Delete,
    EventType,
    KeyExists,
    KeyNotFound,
    Put,
    RevisionConflict,
    WatchEvent,
)

P = "/calico/contract/"


def next_batch(watcher: object, timeout: float = 10.0) -> list[WatchEvent]:
    """The next non-empty batch of a watcher (one watch response), with a deadline."""
    got: list[list[WatchEvent]] = []

    def run() -> None:
        for batch in watcher:  # type: ignore[attr-defined]
            if batch:
                got.append(batch)
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if not got:
        watcher.close()  # type: ignore[attr-defined]
        raise AssertionError(f"no watch batch within {timeout}s")
    return got[0]


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

    # -- txn ----------------------------------------------------------------------------------

    def test_txn_applies_all_ops_at_one_revision(self, backend: Backend) -> None:
        a = backend.create(P + "a", b"1")
        gone = backend.create(P + "gone", b"x")
        res = backend.txn(
            [Compare(P + "a", a.mod_revision), Compare.absent(P + "b"), Compare.exists(P + "gone")],
            [Put(P + "a", b"2"), Put(P + "b", b"new"), Delete(P + "gone")],
        )
        assert res.succeeded
        assert not res.current
        assert res.revision == backend.current_revision() == gone.mod_revision + 1
        a2 = backend.get(P + "a")
        assert (a2.value, a2.mod_revision, a2.create_revision, a2.version) == (
            b"2", res.revision, a.create_revision, 2)
        b = backend.get(P + "b")
        assert (b.value, b.mod_revision, b.create_revision, b.version) == (
            b"new", res.revision, res.revision, 1)
        with pytest.raises(KeyNotFound):
            backend.get(P + "gone")

    def test_txn_revision_compare_failing_writes_nothing(self, backend: Backend) -> None:
        a1 = backend.create(P + "a", b"1")
        a2 = backend.update(P + "a", b"2", a1.mod_revision)
        b = backend.create(P + "b", b"1")
        rev = backend.current_revision()
        res = backend.txn(
            [Compare(P + "a", a1.mod_revision), Compare(P + "b", b.mod_revision)],
            [Put(P + "a", b"3"), Put(P + "b", b"3")],
        )
        assert not res.succeeded
        assert res.revision == rev == backend.current_revision()
        assert res.current == {P + "a": a2, P + "b": b}  # both compared keys, as they are
        assert backend.get(P + "a") == a2 and backend.get(P + "b") == b

    def test_txn_absent_compare_fails_on_an_existing_key(self, backend: Backend) -> None:
        """Create-if-absent: the first txn creates the key, the second finds it."""
        first = backend.txn([Compare.absent(P + "a")], [Put(P + "a", b"mine")])
        assert first.succeeded
        second = backend.txn([Compare.absent(P + "a")], [Put(P + "a", b"theirs")])
        assert not second.succeeded
        current = second.current[P + "a"]
        assert current is not None and current.value == b"mine"
        assert current.mod_revision == current.create_revision == first.revision
        assert backend.get(P + "a").value == b"mine"

    def test_txn_exists_compare_fails_on_an_absent_key(self, backend: Backend) -> None:
        backend.create(P + "b", b"1")
        res = backend.txn(
            [Compare.exists(P + "a"), Compare.exists(P + "b")], [Put(P + "b", b"2")]
        )
        assert not res.succeeded
        assert res.current[P + "a"] is None
        assert res.current[P + "b"] == backend.get(P + "b")
        assert backend.get(P + "b").value == b"1"

    def test_txn_revision_compare_fails_on_an_absent_key(self, backend: Backend) -> None:
        kv = backend.create(P + "a", b"1")
        backend.delete(P + "a")
        res = backend.txn([Compare(P + "a", kv.mod_revision)], [Put(P + "a", b"2")])
        assert not res.succeeded and res.current == {P + "a": None}
        with pytest.raises(KeyNotFound):
            backend.get(P + "a")

    def test_txn_without_changes_keeps_the_revision(self, backend: Backend) -> None:
        kv = backend.create(P + "a", b"1")
        rev = backend.current_revision()
        only_check = backend.txn([Compare(P + "a", kv.mod_revision)], [])
        assert only_check.succeeded and only_check.revision == rev
        absent_delete = backend.txn([], [Delete(P + "nothing")])
        assert absent_delete.succeeded and absent_delete.revision == rev
        assert backend.current_revision() == rev
        assert backend.txn([], []).succeeded

    def test_txn_rejects_a_key_twice(self, backend: Backend) -> None:
        rev = backend.current_revision()
        with pytest.raises(DatastoreError, match="duplicate key"):
            backend.txn([], [Put(P + "a", b"1"), Put(P + "a", b"2")])
        with pytest.raises(DatastoreError, match="duplicate key"):
            backend.txn([], [Put(P + "a", b"1"), Delete(P + "a")])
        assert backend.current_revision() == rev

    def test_txn_events_arrive_in_one_batch(self, backend: Backend) -> None:
        old = backend.create(P + "old", b"x")
        watcher = backend.watch(P, 0)
        try:
            res = backend.txn(
                [Compare.absent(P + "b")],
                [Put(P + "b", b"1"), Delete(P + "old"), Put(P + "a", b"2"),
                 Put("/calico/elsewhere", b"3")],
            )
            assert res.succeeded
            batch = next_batch(watcher)
        finally:
            watcher.close()
        assert [(e.type, e.key) for e in batch] == [
            (EventType.PUT, P + "b"), (EventType.DELETE, P + "old"), (EventType.PUT, P + "a")
        ]
        assert {e.revision for e in batch} == {res.revision}
        assert batch[1].prev_kv == old

    def test_concurrent_txns_on_two_keys_lose_no_increment(self, backend: Backend) -> None:
        """Two counters moved together, retried from the values a failed txn returns (never
        read again): both end at the total, and every snapshot has them equal."""
        x, y = P + "x", P + "y"
        backend.put_many([(x, b"0"), (y, b"0")])
        threads, per_thread = 4, 20
        errors: list[BaseException] = []
        start: dict[str, KV | None] = {k: backend.get(k) for k in (x, y)}

        def worker() -> None:
            try:
                cur = dict(start)
                for _ in range(per_thread):
                    while True:
                        kx, ky = cur[x], cur[y]
                        assert kx is not None and ky is not None
                        n = int(kx.value) + 1
                        res = backend.txn(
                            [Compare(x, kx.mod_revision), Compare(y, ky.mod_revision)],
                            [Put(x, str(n).encode()), Put(y, str(n).encode())],
                        )
                        if res.succeeded:  # as written: the next compare proves it current
                            cur = {
                                k: KV(k, str(n).encode(), res.revision, kv.create_revision,
                                      kv.version + 1)
                                for k, kv in ((x, kx), (y, ky))
                            }
                            break
                        cur = dict(res.current)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errors
        total = str(threads * per_thread).encode()
        assert backend.get(x).value == backend.get(y).value == total
