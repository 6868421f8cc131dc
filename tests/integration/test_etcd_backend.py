"""EtcdBackend against a real etcd 3.4: the Backend contract, pagination at a pinned revision,
failover, the watch stream's framing, and clear errors when etcd is down."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from backend_contract import BackendContract, collect

from tortie.datastore.backend import Compacted, Unavailable
from tortie.datastore.etcd import EtcdBackend
from tortie.lab.etcd import EtcdServer, free_port

pytestmark = pytest.mark.etcd


@pytest.fixture
def backend(etcd_backend: EtcdBackend) -> Iterator[EtcdBackend]:
    yield etcd_backend


class TestEtcdBackendContract(BackendContract):
    pass


def test_list_paginates_at_a_pinned_revision(etcd_server: EtcdServer) -> None:
    """More keys than a page; a write lands between two pages; the list must not see it."""
    backend = EtcdBackend(etcd_server.endpoint, page_size=7)
    try:
        backend.put_many([(f"/calico/page/k{i:03d}", f"v{i}".encode()) for i in range(30)])
        original_call = backend._call
        pages: list[dict[str, Any]] = []

        def call(path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
            reply = original_call(path, body, **kw)
            if path == "/v3/kv/range" and "limit" in body:
                pages.append(body)
                if len(pages) == 1:  # a concurrent writer, between page 1 and page 2
                    original_call(
                        "/v3/kv/put",
                        {"key": "L2NhbGljby9wYWdlL2swMDBh", "value": "eA=="},  # .../k000a
                        idempotent=False,
                    )
                    original_call(
                        "/v3/kv/deleterange",
                        {"key": "L2NhbGljby9wYWdlL2swMjk="},  # /calico/page/k029
                        idempotent=False,
                    )
            return reply

        backend._call = call  # type: ignore[method-assign]
        kvs, rev = backend.list("/calico/page/")
        assert len(pages) == 5  # 30 keys, 7 a page
        assert all(p.get("revision") == str(rev) for p in pages[1:])
        assert [kv.key for kv in kvs] == [f"/calico/page/k{i:03d}" for i in range(30)]
        assert [kv.value for kv in kvs] == [f"v{i}".encode() for i in range(30)]
        backend._call = original_call  # type: ignore[method-assign]
        now, rev2 = backend.list("/calico/page/")
        assert rev2 > rev
        assert "/calico/page/k000a" in {kv.key for kv in now}
        assert "/calico/page/k029" not in {kv.key for kv in now}
    finally:
        backend.close()


def test_list_of_an_old_revision_paginates_too(etcd_server: EtcdServer) -> None:
    backend = EtcdBackend(etcd_server.endpoint, page_size=4)
    try:
        rev = backend.put_many([(f"/calico/old/k{i:02d}", b"1") for i in range(10)])
        backend.delete_prefix("/calico/old/k0")
        kvs, got = backend.list("/calico/old/", rev)
        assert got == rev
        assert len(kvs) == 10
        assert len(backend.list("/calico/old/")[0]) == 0
    finally:
        backend.close()


def test_put_many_splits_into_transactions_of_128(etcd_backend: EtcdBackend) -> None:
    before = etcd_backend.current_revision()
    last = etcd_backend.put_many([(f"/calico/many/{i:04d}", b"x") for i in range(300)])
    assert last == before + 3  # 128 + 128 + 44
    kvs, _ = etcd_backend.list("/calico/many/")
    assert len(kvs) == 300


def test_unavailable_names_the_endpoint_and_the_reason() -> None:
    port = free_port()
    backend = EtcdBackend(f"http://127.0.0.1:{port}", connect_timeout=1.0)
    with pytest.raises(Unavailable) as e:
        backend.get("/calico/x")
    assert str(e.value) == f"could not reach etcd at http://127.0.0.1:{port}: connection refused"
    two = EtcdBackend([f"http://127.0.0.1:{port}", f"http://127.0.0.1:{free_port()}"])
    with pytest.raises(Unavailable, match=r"could not reach etcd at .*\(connection refused\), "):
        two.list("/calico/")


def test_fails_over_to_a_live_endpoint(etcd_server: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    backend = EtcdBackend([dead, etcd_server.endpoint])
    try:
        kv = backend.put("/calico/failover/a", b"1")
        assert backend.get("/calico/failover/a") == kv
        assert backend._preferred == 1  # sticks to the endpoint that worked
        watcher = backend.watch("/calico/failover/", kv.mod_revision)
        try:
            assert watcher.endpoint == etcd_server.endpoint
            assert [e.key for e in collect(watcher, 1)] == ["/calico/failover/a"]
        finally:
            watcher.close()
    finally:
        backend.close()


def test_writes_survive_an_etcd_restart_on_reused_connections(private_etcd: EtcdServer) -> None:
    backend = EtcdBackend(private_etcd.endpoint)
    try:
        kv = backend.put("/calico/r/a", b"1")
        private_etcd.restart()
        # The pooled keep-alive connection is dead now; the backend must reconnect quietly.
        kv2 = backend.update("/calico/r/a", b"2", kv.mod_revision)
        assert kv2.version == 2
        assert backend.get("/calico/r/a").value == b"2"
        private_etcd.stop()
        with pytest.raises(Unavailable, match="connection refused"):
            backend.get("/calico/r/a")
    finally:
        backend.close()


def test_watch_raises_unavailable_when_etcd_goes_away(private_etcd: EtcdServer) -> None:
    backend = EtcdBackend(private_etcd.endpoint)
    watcher = backend.watch("/calico/", 0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in watcher:
                pass
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    private_etcd.stop()
    t.join(15)
    backend.close()
    assert not t.is_alive()
    assert errors and isinstance(errors[0], Unavailable)
    assert private_etcd.endpoint in str(errors[0])


def test_watch_reports_compaction_under_an_open_watch(private_etcd: EtcdServer) -> None:
    """A watch that is behind (not yet synced) when history is compacted is canceled by etcd
    with compact_revision; the watcher raises Compacted with that revision."""
    backend = EtcdBackend(private_etcd.endpoint)
    try:
        first = backend.put("/calico/c/a", b"0")
        for i in range(50):
            backend.put("/calico/c/a", str(i).encode())
        # Open the watch, compact past its start before reading anything.
        rev = backend.current_revision()
        watcher = backend.watch("/calico/c/", first.mod_revision)
        backend.compact(rev)
        backend.put("/calico/c/marker", b"")
        events = []
        try:
            for batch in watcher:  # may deliver some history before the cancel, or none
                events.extend(batch)
                if any(e.key == "/calico/c/marker" for e in batch):
                    # etcd had streamed everything before the compaction: legitimate too.
                    assert [e.revision for e in events] == list(range(first.mod_revision,
                                                                      rev + 2))
                    break
        except Compacted as e:
            assert e.compact_revision == rev
        finally:
            watcher.close()
        with pytest.raises(Compacted) as e:
            backend.watch("/calico/c/", first.mod_revision)
        assert e.value.compact_revision == rev
    finally:
        backend.close()


def test_progress_notifications_are_empty_batches() -> None:
    """With a short progress-notify interval, an idle watch yields [] with a revision."""
    with EtcdServer(
        name="tortie-progress",
        extra_args=("--experimental-watch-progress-notify-interval=200ms",),
    ) as server:
        backend = EtcdBackend(server.endpoint)
        try:
            backend.put("/other/a", b"1")
            rev = backend.current_revision()
            watcher = backend.watch("/calico/idle/", 0)
            try:
                batch = next(watcher)
            finally:
                watcher.close()
            assert batch == []
            assert watcher.revision == rev
        finally:
            backend.close()


def test_watch_framing_many_events_in_one_response(etcd_backend: EtcdBackend) -> None:
    """A transaction of 100 puts arrives as one batch; values survive the base64 round trip."""
    start = etcd_backend.current_revision() + 1
    etcd_backend.put_many([(f"/calico/frame/{i:03d}", b"\n" * i) for i in range(100)])
    watcher = etcd_backend.watch("/calico/frame/", start)
    try:
        batch = next(watcher)
    finally:
        watcher.close()
    assert len(batch) == 100
    assert [e.kv.value for e in batch] == [b"\n" * i for i in range(100)]
