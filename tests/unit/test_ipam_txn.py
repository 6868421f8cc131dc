"""IPAM over `Backend.txn`: a block and the handles its change touches are written in one
transaction (allocation, assignment of a given address, both release paths), conflicts are
retried from the values the failed transaction returns, and the stored JSON stays
libcalico-go's."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tortie.api import load
from tortie.datastore import keys
from tortie.datastore.backend import KV, Compare, Delete, Op, Put, TxnResult, Unavailable
from tortie.datastore.client import ResourceClient
from tortie.datastore.memory import MemoryBackend
from tortie.ipam import AutoAssignArgs, IPAMClient
from tortie.ipam.block import AllocationBlock, ReleaseOptions


class RecordingBackend(MemoryBackend):
    """Records every request (name, and for txns the compares and ops); `before_txn` can make
    a foreign write just before the next transactions (a race lost), or fail them; `delay`
    makes each transaction take that long (etcd's disk sync)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.before_txn: list[Callable[[], None]] = []
        self.delay = 0.0

    def get(self, key: str) -> KV:
        self.calls.append(("get", key))
        return super().get(key)

    def list(self, prefix: str, revision: int | None = None) -> tuple[list[KV], int]:
        self.calls.append(("list", prefix))
        return super().list(prefix, revision)

    def create(self, key: str, value: bytes) -> KV:
        self.calls.append(("create", key))
        return super().create(key, value)

    def update(self, key: str, value: bytes, expect_revision: int | None) -> KV:
        self.calls.append(("update", key))
        return super().update(key, value, expect_revision)

    def delete(self, key: str, expect_revision: int | None = None) -> KV | None:
        self.calls.append(("delete", key))
        return super().delete(key, expect_revision)

    def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        if self.delay:
            time.sleep(self.delay)
        if self.before_txn:
            self.before_txn.pop(0)()
        res = super().txn(compares, ops)
        self.calls.append(("txn", (list(compares), list(ops), res.succeeded)))
        return res

    def txns(self) -> list[tuple[list[Compare], list[Op], bool]]:
        return [c[1] for c in self.calls if c[0] == "txn"]


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    b = RecordingBackend()
    yield b
    b.close()


@pytest.fixture
def rc(backend: RecordingBackend) -> ResourceClient:
    rc = ResourceClient(backend)
    for res in load("""
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.65.0.0/16, blockSize: 26}
"""):
        rc.create(res)
    IPAMClient(backend, rc).get_config()  # the IPAMConfiguration a watch then serves
    return rc


def assign(ipam: IPAMClient, handle: str, num4: int = 1) -> list[str]:
    return ipam.auto_assign(AutoAssignArgs(
        num4=num4, handle_id=handle, attrs={"node": "node1"}, hostname="node1"
    )).addresses


def stored_handle(backend: MemoryBackend, hid: str) -> dict[str, Any] | None:
    try:
        return json.loads(backend.get(keys.handle_key(hid)).value)
    except Exception:
        return None


def block_of(backend: MemoryBackend, ip: str) -> tuple[str, AllocationBlock]:
    kvs, _ = MemoryBackend.list(backend, keys.block_prefix())  # not recorded
    for kv in kvs:
        b = AllocationBlock.from_json(kv.value)
        if ipaddress.ip_address(ip) in b.cidr:
            return kv.key, b
    raise AssertionError(f"no block holds {ip}")


def test_steady_state_allocation_is_one_txn_on_block_and_handle(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    with IPAMClient(backend, rc, watch=True) as ipam:
        first = assign(ipam, "net.a")[0]
        backend.calls.clear()
        second = assign(ipam, "net.b")[0]
    bkey, block = block_of(backend, second)
    assert backend.calls[0][0] == "txn" and len(backend.calls) == 1  # one request, no read
    [(compares, ops, ok)] = backend.txns()
    assert ok
    hkey = keys.handle_key("net.b")
    assert [c.key for c in compares] == [bkey, hkey]
    assert compares[1] == Compare.absent(hkey)  # a new handle: create-if-absent
    assert [type(o) for o in ops] == [Put, Put] and [o.key for o in ops] == [bkey, hkey]
    cidr = str(block.cidr)
    # libcalico-go's handle document, byte for byte.
    assert backend.get(hkey).value == b'{"block":{"%s":1},"deleted":false}' % cidr.encode()
    assert block.attributes_for(ipaddress.ip_address(second)).handle_id == "net.b"
    assert first != second
    assert backend.get(bkey).mod_revision == backend.get(hkey).mod_revision


def test_watchers_see_block_and_handle_in_one_batch(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    with IPAMClient(backend, rc, watch=True) as ipam:
        assign(ipam, "net.a")
        watcher = backend.watch("/calico/ipam/v2/", 0)
        try:
            assign(ipam, "net.b")
            batch = next(watcher)
        finally:
            watcher.close()
    assert sorted(e.key.split("/")[4] for e in batch) == ["assignment", "handle"]
    assert len({e.revision for e in batch}) == 1


def test_an_existing_handle_costs_one_failed_txn_and_keeps_its_counts(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    with IPAMClient(backend, rc, watch=True) as ipam:
        assign(ipam, "net.a")
        # Someone else's record for the handle, in another block: the allocation assumes the
        # handle absent, the txn fails and returns it, the retry adds to it.
        backend.create(keys.handle_key("net.b"), b'{"block":{"10.65.99.0/26":2},"deleted":false}')
        backend.calls.clear()
        ip = assign(ipam, "net.b")[0]
    _, block = block_of(backend, ip)
    assert [ok for _, _, ok in backend.txns()] == [False, True]
    assert not [c for c in backend.calls if c[0] == "get"]  # the failure said it all
    assert stored_handle(backend, "net.b") == {
        "block": {"10.65.99.0/26": 2, str(block.cidr): 1}, "deleted": False
    }


def test_block_conflict_is_recomputed_from_the_returned_block(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    with IPAMClient(backend, rc, watch=True) as ipam, IPAMClient(backend, rc) as other:
        assign(ipam, "net.a")
        # Another process takes an address from the block between our read and our write.
        taken: list[str] = []
        backend.before_txn.append(lambda: taken.extend(assign(other, "net.other")))
        backend.calls.clear()
        mine = assign(ipam, "net.b")[0]
    assert taken and mine != taken[0]
    oks = [ok for _, _, ok in backend.txns()]
    assert oks[-2:] == [False, True]
    assert stored_handle(backend, "net.b") is not None
    _, block = block_of(backend, mine)
    assert stored_handle(backend, "net.b") == {"block": {str(block.cidr): 1}, "deleted": False}


def test_release_by_handle_is_one_txn_deleting_the_handle(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    ipam = IPAMClient(backend, rc)
    keep = assign(ipam, "net.keep")[0]
    ips = assign(ipam, "net.a", num4=2)
    bkey, _ = block_of(backend, ips[0])
    backend.calls.clear()
    ipam.release_by_handle("net.a")
    assert [c[0] for c in backend.calls] == ["get", "get", "txn"]  # handle, block, write
    [(compares, ops, ok)] = backend.txns()
    hkey = keys.handle_key("net.a")
    assert ok and [c.key for c in compares] == [bkey, hkey]
    assert [type(o) for o in ops] == [Put, Delete] and [o.key for o in ops] == [bkey, hkey]
    assert stored_handle(backend, "net.a") is None
    assert ipam.ips_by_handle("net.keep") == [keep]
    ipam.release_by_handle("net.a")  # idempotent


def test_release_of_addresses_decrements_each_handle_in_the_same_txn(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    ipam = IPAMClient(backend, rc)
    a = assign(ipam, "net.a", num4=2)
    b = assign(ipam, "net.b")
    bkey, block = block_of(backend, a[0])
    backend.calls.clear()
    assert ipam.release_ips([a[0], b[0], "10.65.200.1"]) == ["10.65.200.1"]
    [(_, ops, ok)] = [t for t in backend.txns() if t[1][0].key == bkey]
    assert ok
    assert [o.key for o in ops] == [bkey, keys.handle_key("net.a"), keys.handle_key("net.b")]
    assert [type(o) for o in ops] == [Put, Put, Delete]
    assert stored_handle(backend, "net.a") == {"block": {str(block.cidr): 1}, "deleted": False}
    assert stored_handle(backend, "net.b") is None
    assert ipam.ips_by_handle("net.a") == [a[1]]


def test_release_conflict_retries_from_returned_values(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    ipam = IPAMClient(backend, rc)
    a = assign(ipam, "net.a", num4=2)
    other = IPAMClient(backend, rc)

    def race() -> None:
        other.release_ips([ReleaseOptions(a[1], "net.a")])
        backend.calls.clear()

    backend.before_txn.append(race)
    ipam.release_by_handle("net.a")
    # The foreign release changed the block and the handle: the first txn fails, the retry
    # uses what it returned (no further read of the block or the handle).
    assert [c[0] for c in backend.calls if c[0] in ("get", "txn")] == ["txn", "txn"]
    assert [ok for _, _, ok in backend.txns()] == [False, True]
    assert stored_handle(backend, "net.a") is None
    _, block = block_of(backend, assign(ipam, "net.c")[0])
    assert block.in_use_count() == 1


def test_assign_ip_writes_block_and_handle_together(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    ipam = IPAMClient(backend, rc)
    ipam.assign_ip("10.65.3.7", "net.fixed", {"node": "node1"}, hostname="node1")
    bkey, block = block_of(backend, "10.65.3.7")
    [(_, ops, ok)] = [t for t in backend.txns() if t[1][0].key == bkey]
    assert ok and [o.key for o in ops] == [bkey, keys.handle_key("net.fixed")]
    assert stored_handle(backend, "net.fixed") == {
        "block": {str(block.cidr): 1}, "deleted": False
    }
    assert ipam.ips_by_handle("net.fixed") == ["10.65.3.7"]


# -- group commit: one client, concurrent requests for one host --------------------------------


def run_threads(n: int, target: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_concurrent_requests_share_transactions(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    got: dict[str, str] = {}
    with IPAMClient(backend, rc, watch=True) as ipam:
        assign(ipam, "net.warm")
        backend.calls.clear()
        backend.delay = 0.02  # etcd's disk sync: requests pile up meanwhile

        def work(i: int) -> None:
            for j in range(5):
                got[f"net.t{i}-{j}"] = assign(ipam, f"net.t{i}-{j}")[0]

        assert not run_threads(6, work)
    assert len(set(got.values())) == len(got) == 30
    for hid, ip in got.items():
        _, block = block_of(backend, ip)
        assert stored_handle(backend, hid) == {"block": {str(block.cidr): 1}, "deleted": False}
        attr = block.attributes_for(ipaddress.ip_address(ip))
        assert attr is not None and attr.handle_id == hid
    ok = [ops for _, ops, succeeded in backend.txns() if succeeded]
    assert max(len(ops) for ops in ok) > 2  # some txn carried several requests' handles
    assert len(ok) < 30


def test_one_handle_twice_is_not_batched_with_itself(
    backend: RecordingBackend, rc: ResourceClient
) -> None:
    with IPAMClient(backend, rc, watch=True) as ipam:
        assign(ipam, "net.warm")
        backend.delay = 0.02
        assert not run_threads(4, lambda i: assign(ipam, "net.same"))
        ips = ipam.ips_by_handle("net.same")
    assert len(set(ips)) == 4
    _, block = block_of(backend, ips[0])
    assert stored_handle(backend, "net.same") == {"block": {str(block.cidr): 4}, "deleted": False}


def test_a_failed_batch_fails_every_request_in_it(
    backend: RecordingBackend, rc: ResourceClient, wait_until: Callable[..., None]
) -> None:
    with IPAMClient(backend, rc, watch=True) as ipam:
        assign(ipam, "net.warm")
        in_flight = threading.Event()

        def hold_until_three_wait() -> None:
            in_flight.set()
            queue = ipam._queues[("node1", 4)]
            wait_until(lambda: len(queue.pending) == 3, message="3 queued requests")

        def fail() -> None:
            raise Unavailable("etcd went away")

        backend.before_txn = [hold_until_three_wait, fail]
        lead: list[BaseException] = []
        leader = threading.Thread(
            target=lambda: lead.extend(run_threads(1, lambda i: assign(ipam, "net.lead")))
        )
        leader.start()
        assert in_flight.wait(5)
        errors = run_threads(3, lambda i: assign(ipam, f"net.f{i}"))
        leader.join(10)
        # The three queued behind the leader's txn went together in the next one, which
        # failed: each of them gets the error; the leader's own txn went through.
        assert not lead and ipam.ips_by_handle("net.lead")
        assert len(errors) == 3 and all(isinstance(e, Unavailable) for e in errors)
        assert all(stored_handle(backend, f"net.f{i}") is None for i in range(3))
        assert assign(ipam, "net.after")
