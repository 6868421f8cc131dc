"""The Syncer against a real etcd: snapshot and in-sync, live updates, an etcd restart, a cut
connection with missed changes, and compaction while away. Each test checks the consumer's
reconstructed map against the backend's own list and that nothing was emitted twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from syncer_helpers import CuttableBackend, Recorder

from tortie.datastore.etcd import EtcdBackend
from tortie.datastore.syncer import Syncer, SyncStatus
from tortie.lab.etcd import EtcdServer

pytestmark = pytest.mark.etcd

POOLS = "/calico/resources/v3/projectcalico.org/ippools/"
BLOCKS = "/calico/ipam/v2/assignment/"


def _everything(backend: EtcdBackend) -> list:  # type: ignore[type-arg]
    return backend.list(POOLS)[0] + backend.list(BLOCKS)[0]


@pytest.fixture
def private_backend(private_etcd: EtcdServer) -> Iterator[EtcdBackend]:
    backend = EtcdBackend(private_etcd.endpoint, timeout=5.0, connect_timeout=1.0)
    yield backend
    backend.close()


def test_snapshot_then_in_sync_then_live_updates(
    etcd_backend: EtcdBackend, wait_until: Callable[..., None]
) -> None:
    etcd_backend.put_many([(f"{POOLS}pool-{i}", b'{"cidr": "x"}') for i in range(40)])
    etcd_backend.put_many([(f"{BLOCKS}ipv4/block/10.0.{i}.0-26", b"{}") for i in range(15)])
    etcd_backend.put("/calico/felix/v2/no-region/host/n/status", b"not watched")
    rec = Recorder()
    syncer = Syncer(etcd_backend, [POOLS, BLOCKS], rec, batch_size=20).start()
    try:
        assert syncer.wait_in_sync(10)
        assert rec.statuses == [
            SyncStatus.WAIT_FOR_DATASTORE, SyncStatus.RESYNC, SyncStatus.IN_SYNC
        ]
        assert rec.updates_before_status[-1] == 55  # the snapshot, all of it, before IN_SYNC
        assert rec.matches(_everything(etcd_backend))

        kv = etcd_backend.get(f"{POOLS}pool-3")
        etcd_backend.update(f"{POOLS}pool-3", b'{"cidr": "y"}', kv.mod_revision)
        etcd_backend.delete(f"{POOLS}pool-4")
        etcd_backend.create(f"{POOLS}pool-new", b"{}")
        etcd_backend.delete_prefix(f"{BLOCKS}ipv4/block/10.0.1")  # 10.0.1.x and 10.0.10-14
        etcd_backend.put("/calico/felix/v2/no-region/host/n/status", b"still not watched")
        wait_until(lambda: rec.matches(_everything(etcd_backend)), 10, "live updates")
        assert len(rec.state) == 40 - 1 + 1 + 15 - 6
        assert rec.count(SyncStatus.IN_SYNC) == 1
        rec.assert_clean()
    finally:
        syncer.stop()


def test_survives_an_etcd_restart(
    private_etcd: EtcdServer, private_backend: EtcdBackend, wait_until: Callable[..., None]
) -> None:
    private_backend.put_many([(f"{POOLS}p{i}", b"1") for i in range(20)])
    rec = Recorder()
    syncer = Syncer(private_backend, [POOLS], rec, backoff_initial=0.05, backoff_max=0.5)
    syncer.start()
    try:
        assert syncer.wait_in_sync(10)
        # Changes right before the restart: the watch may or may not have delivered them.
        for i in range(10):
            private_backend.put(f"{POOLS}p{i}", b"2")
        private_backend.delete(f"{POOLS}p19")
        private_etcd.stop()
        wait_until(lambda: syncer.reconnects >= 1, 15, "the syncer to notice etcd is gone")
        private_etcd.start()
        private_backend.put(f"{POOLS}after-restart", b"3")
        private_backend.delete(f"{POOLS}p18")
        wait_until(lambda: rec.matches(private_backend.list(POOLS)[0]), 15, "catching up")
        assert syncer.resyncs == 1  # etcd kept its history: resumed, no resync
        assert rec.statuses[-1] is SyncStatus.IN_SYNC
        rec.assert_clean()
    finally:
        syncer.stop()


def test_missed_changes_are_replayed_after_a_cut(
    private_backend: EtcdBackend, wait_until: Callable[..., None]
) -> None:
    private_backend.put_many([(f"{POOLS}p{i}", b"1") for i in range(20)])
    cut = CuttableBackend(private_backend)
    rec = Recorder()
    syncer = Syncer(cut, [POOLS, BLOCKS], rec, backoff_initial=0.05, backoff_max=0.2)  # type: ignore[arg-type]
    syncer.start()
    try:
        assert syncer.wait_in_sync(10)
        cut.cut()
        wait_until(lambda: syncer.reconnects >= 1, 10, "the watch to notice the cut")
        for i in range(5):
            private_backend.put(f"{POOLS}p{i}", b"2")
        private_backend.delete(f"{POOLS}p5")
        private_backend.delete(f"{POOLS}p6")
        private_backend.put(f"{POOLS}p6", b"re-created")
        private_backend.put(f"{BLOCKS}ipv4/block/10.1.0.0-26", b"{}")
        cut.restore()
        wait_until(lambda: rec.matches(_everything(private_backend)), 10, "catching up")
        assert syncer.resyncs == 1
        rec.assert_clean()
    finally:
        syncer.stop()


def test_compaction_while_away_gives_a_diff_resync(
    private_backend: EtcdBackend, wait_until: Callable[..., None]
) -> None:
    private_backend.put_many([(f"{POOLS}p{i:02d}", b"1") for i in range(30)])
    cut = CuttableBackend(private_backend)
    rec = Recorder()
    syncer = Syncer(cut, [POOLS], rec, backoff_initial=0.05, backoff_max=0.2)  # type: ignore[arg-type]
    syncer.start()
    try:
        assert syncer.wait_in_sync(10)
        cut.cut()
        wait_until(lambda: syncer.reconnects >= 1, 10, "the watch to notice the cut")
        private_backend.put(f"{POOLS}p00", b"2")
        private_backend.put(f"{POOLS}p00", b"3")
        private_backend.delete(f"{POOLS}p01")
        private_backend.delete(f"{POOLS}p02")
        private_backend.put(f"{POOLS}p02", b"re-created")
        private_backend.put(f"{POOLS}new", b"n")
        private_backend.compact(private_backend.current_revision())
        seen = len(rec.updates)
        cut.restore()
        wait_until(
            lambda: syncer.resyncs == 2 and rec.matches(private_backend.list(POOLS)[0]),
            10,
            "the resync",
        )
        diff = rec.updates[seen:]
        assert sorted(u.key for u in diff) == sorted(
            f"{POOLS}{k}" for k in ("p00", "p01", "p02", "new")
        )
        assert [u.value for u in diff if u.key == f"{POOLS}p01"] == [None]
        assert rec.statuses[-2:] == [SyncStatus.RESYNC, SyncStatus.IN_SYNC]

        # And it is watching again afterwards.
        private_backend.put(f"{POOLS}later", b"l")
        wait_until(lambda: rec.matches(private_backend.list(POOLS)[0]), 10, "live after resync")
        rec.assert_clean()
    finally:
        syncer.stop()
