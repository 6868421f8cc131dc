"""The Syncer over the MemoryBackend: snapshot, in-sync, live updates, outages, compaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from syncer_helpers import CuttableBackend, Recorder

from tortie.datastore.memory import MemoryBackend
from tortie.datastore.syncer import Syncer, SyncStatus, Update

A, B = "/calico/resources/v3/projectcalico.org/ippools/", "/calico/ipam/v2/host/"


@pytest.fixture
def backend() -> Iterator[MemoryBackend]:
    b = MemoryBackend()
    yield b
    b.close()


def _all(backend: MemoryBackend) -> list:  # type: ignore[type-arg]
    return backend.list(A)[0] + backend.list(B)[0]


def test_snapshot_then_in_sync_then_live(
    backend: MemoryBackend, wait_until: Callable[..., None]
) -> None:
    for i in range(25):
        backend.put(f"{A}pool-{i}", b"p")
    backend.put(f"{B}node-1/ipv4/block/10.0.0.0-26", b"a")
    backend.put("/calico/other/x", b"not watched")
    snapshot_rev = backend.current_revision()
    rec = Recorder()
    syncer = Syncer(backend, [A, B], rec, batch_size=10).start()
    try:
        assert syncer.wait_in_sync(5)
        assert rec.statuses == [
            SyncStatus.WAIT_FOR_DATASTORE, SyncStatus.RESYNC, SyncStatus.IN_SYNC
        ]
        # The whole snapshot came before IN_SYNC, in batches of at most 10.
        assert rec.updates_before_status[-1] == 26
        assert rec.calls == 3
        assert rec.matches(_all(backend))
        kv = backend.put(f"{A}pool-0", b"changed")
        backend.delete(f"{A}pool-1")
        backend.put(f"{A}new", b"n")
        backend.put("/calico/other/y", b"ignored")
        wait_until(lambda: rec.matches(_all(backend)), 5, "live updates")
        assert Update(f"{A}pool-0", b"changed", kv.mod_revision) in rec.updates
        assert rec.updates[-2].value is None
        # Complete up to: the minimum over prefixes (B has seen nothing since the snapshot).
        assert syncer.revision == snapshot_rev
        rec.assert_clean()
    finally:
        syncer.stop()
    assert syncer._thread is not None and not syncer._thread.is_alive()


def test_overlapping_prefixes_are_not_doubled(backend: MemoryBackend) -> None:
    backend.put(f"{A}p", b"1")
    rec = Recorder()
    syncer = Syncer(backend, ["/calico/", A], rec).start()
    try:
        assert syncer.wait_in_sync(5)
        assert syncer.prefixes == ["/calico/"]
        assert len(rec.updates) == 1
    finally:
        syncer.stop()


def test_waits_for_the_datastore_then_syncs(
    backend: MemoryBackend, wait_until: Callable[..., None]
) -> None:
    backend.put(f"{A}p", b"1")
    backend.unavailable = True
    rec = Recorder()
    syncer = Syncer(backend, [A], rec, backoff_initial=0.01, backoff_max=0.05).start()
    try:
        wait_until(lambda: syncer.reconnects >= 3, 5, "retries")
        assert rec.statuses == [SyncStatus.WAIT_FOR_DATASTORE]
        backend.unavailable = False
        assert syncer.wait_in_sync(5)
        assert rec.matches(backend.list(A)[0])
    finally:
        syncer.stop()


def test_reconnect_replays_missed_changes_without_resync(
    backend: MemoryBackend, wait_until: Callable[..., None]
) -> None:
    for i in range(10):
        backend.put(f"{A}p{i}", b"1")
    cut = CuttableBackend(backend)
    rec = Recorder()
    syncer = Syncer(cut, [A], rec, backoff_initial=0.01, backoff_max=0.05).start()  # type: ignore[arg-type]
    try:
        assert syncer.wait_in_sync(5)
        cut.cut()
        backend.put(f"{A}p0", b"2")
        backend.delete(f"{A}p1")
        backend.put(f"{A}p1", b"back")  # deleted and re-created while we were away
        backend.delete(f"{A}p2")
        wait_until(lambda: syncer.reconnects >= 1, 5, "the watch to notice the cut")
        cut.restore()
        wait_until(lambda: rec.matches(backend.list(A)[0]), 5, "catching up")
        assert syncer.resyncs == 1  # history was there: no resync needed
        assert rec.count(SyncStatus.RESYNC) == 1
        rec.assert_clean()
    finally:
        syncer.stop()


def test_compaction_while_away_resyncs_with_a_diff(
    backend: MemoryBackend, wait_until: Callable[..., None]
) -> None:
    for i in range(10):
        backend.put(f"{A}p{i}", b"1")
    cut = CuttableBackend(backend)
    rec = Recorder()
    syncer = Syncer(cut, [A], rec, backoff_initial=0.01, backoff_max=0.05).start()  # type: ignore[arg-type]
    try:
        assert syncer.wait_in_sync(5)
        cut.cut()
        wait_until(lambda: syncer.reconnects >= 1, 5, "the watch to notice the cut")
        backend.put(f"{A}p0", b"2")
        backend.delete(f"{A}p1")
        backend.delete(f"{A}p2")
        backend.put(f"{A}p2", b"re-created")
        backend.put(f"{A}new", b"n")
        backend.compact(backend.current_revision())
        n_before = len(rec.updates)
        cut.restore()
        wait_until(lambda: syncer.resyncs == 2 and rec.matches(backend.list(A)[0]), 5, "resync")
        after = rec.updates[n_before:]
        # Only what changed is emitted: p0, p1 (deleted), p2 (re-created), new.
        assert sorted(u.key for u in after) == sorted(
            [f"{A}p0", f"{A}p1", f"{A}p2", f"{A}new"]
        )
        assert next(u for u in after if u.key == f"{A}p1").value is None
        assert rec.statuses[-2:] == [SyncStatus.RESYNC, SyncStatus.IN_SYNC]
        rec.assert_clean()
    finally:
        syncer.stop()


def test_a_failing_callback_stops_the_syncer(backend: MemoryBackend) -> None:
    backend.put(f"{A}p", b"1")

    class Broken(Recorder):
        def on_updates(self, updates: list[Update]) -> None:
            raise ValueError("consumer bug")

    syncer = Syncer(backend, [A], Broken()).start()
    assert syncer._thread is not None
    syncer._thread.join(5)
    assert not syncer._thread.is_alive()
    assert isinstance(syncer.error, ValueError)
    syncer.stop()


def test_stop_before_start_and_twice(backend: MemoryBackend) -> None:
    syncer = Syncer(backend, [A], Recorder())
    syncer.stop()
    syncer2 = Syncer(backend, [A], Recorder()).start()
    assert syncer2.wait_in_sync(5)
    syncer2.stop()
    syncer2.stop()
    with pytest.raises(ValueError):
        Syncer(backend, [], Recorder())
