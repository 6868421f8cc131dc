"""IPAM on a real etcd: allocators racing on one node and on several, then a clean release."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable

import pytest

from tortie.api import load
from tortie.datastore import keys
from tortie.datastore.client import ResourceClient
from tortie.datastore.etcd import EtcdBackend
from tortie.ipam import AutoAssignArgs, IPAMClient, PoolsExhausted
from tortie.ipam.block import AllocationBlock
from tortie.ipam.check import check_ipam

pytestmark = pytest.mark.etcd


def setup_cluster(backend: EtcdBackend, cidr: str, block_size: int, nodes: list[str]) -> None:
    rc = ResourceClient(backend)
    docs = [{"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
             "metadata": {"name": "pool1"}, "spec": {"cidr": cidr, "blockSize": block_size}}]
    docs += [{"apiVersion": "projectcalico.org/v3", "kind": "Node",
              "metadata": {"name": n}, "spec": {}} for n in nodes]
    for doc in docs:
        rc.create(load(json.dumps(doc))[0])


def run_allocators(
    backend: EtcdBackend,
    work: list[tuple[str, int]],
    per_call: Callable[[int], int] = lambda i: 1,
    prefix: str = "net1",
) -> tuple[dict[str, list[str]], list[BaseException]]:
    """One thread per (node, count); each with its own IPAMClient. Returns addresses per
    handle and the errors raised."""
    got: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(work))

    def run(index: int, node: str, count: int) -> None:
        ipam = IPAMClient(backend)
        start.wait()
        try:
            for i in range(count):
                hid = f"{prefix}.{node}-{index}-{i}"
                res = ipam.auto_assign(AutoAssignArgs(
                    num4=per_call(i), handle_id=hid, hostname=node,
                    attrs={"node": node, "pod": f"p{index}-{i}", "namespace": "ns"},
                ))
                with lock:
                    got[hid] = res.addresses
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, n, c)) for i, (n, c) in enumerate(work)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return got, errors


def all_blocks(backend: EtcdBackend) -> list[AllocationBlock]:
    kvs, _ = backend.list(keys.block_prefix())
    return [AllocationBlock.from_json(kv.value) for kv in kvs]


def assert_consistent(backend: EtcdBackend, got: dict[str, list[str]]) -> None:
    """Every address once; each block's allocations are exactly the handles' addresses; every
    handle's counts match its block allocations."""
    addrs = [a for v in got.values() for a in v]
    assert len(addrs) == len(set(addrs)), "an address was handed out twice"
    owner = {a: h for h, v in got.items() for a in v}
    seen = {}
    for b in all_blocks(backend):
        for o, idx in enumerate(b.allocations):
            if idx is not None:
                seen[str(b.ip_at(o))] = b.attributes[idx].handle_id
    assert seen == owner
    hkvs, _ = backend.list(keys.handle_prefix())
    assert len(hkvs) == len(got)
    for kv in hkvs:
        hid = keys.parse_handle_key(kv.key).handle_id
        counts = json.loads(kv.value)["block"]
        assert sum(counts.values()) == len(got[hid])


def release_everything(backend: EtcdBackend, got: dict[str, list[str]]) -> None:
    ipam = IPAMClient(backend)
    threads = []
    handles = list(got)
    for part in (handles[0::3], handles[1::3], handles[2::3]):
        def run(hs: list[str] = part) -> None:
            for h in hs:
                ipam.release_by_handle(h)
        threads.append(threading.Thread(target=run))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(b.is_empty() for b in all_blocks(backend))
    assert backend.list(keys.handle_prefix())[0] == []


def assert_check_clean(backend: EtcdBackend) -> None:
    result = check_ipam(backend, ResourceClient(backend), "test")
    assert result.problems == 0, result
    assert result.leaked_ips == [] and result.leaked_handles == []
    assert result.stale_affinities == [] and result.affinities_of_missing_nodes == []


def test_three_allocators_on_one_node(etcd_backend: EtcdBackend) -> None:
    setup_cluster(etcd_backend, "10.65.0.0/16", 26, ["node1"])
    got, errors = run_allocators(etcd_backend, [("node1", 100)] * 3)
    assert not errors, errors
    assert len(got) == 300
    assert_consistent(etcd_backend, got)
    blocks = all_blocks(etcd_backend)
    assert all(b.affine_to("node1") for b in blocks)
    # 300 addresses fit in five /26 blocks; racing claims may not waste more than a couple.
    assert 5 <= len(blocks) <= 7
    affs, _ = etcd_backend.list(keys.host_affinity_prefix("node1"))
    assert {keys.parse_host_affinity_key(kv.key).cidr for kv in affs} == {
        str(b.cidr) for b in blocks}
    assert all(json.loads(kv.value)["state"] == "confirmed" for kv in affs)
    release_everything(etcd_backend, got)
    assert_check_clean(etcd_backend)


def test_three_nodes_racing(etcd_backend: EtcdBackend) -> None:
    setup_cluster(etcd_backend, "10.65.0.0/16", 26, ["node1", "node2", "node3"])
    got, errors = run_allocators(
        etcd_backend, [("node1", 100), ("node2", 100), ("node3", 100)],
        per_call=lambda i: 2 if i % 10 == 0 else 1,
    )
    assert not errors, errors
    assert_consistent(etcd_backend, got)
    # Plenty of room: nobody borrows, every address is in a block of its own node.
    by_cidr = {b.cidr: b for b in all_blocks(etcd_backend)}
    for hid, addrs in got.items():
        node = hid.split(".", 1)[1].split("-", 1)[0]
        for a in addrs:
            block = next(b for c, b in by_cidr.items() if ipaddress.ip_address(a) in c)
            assert block.affine_to(node), (a, block.affinity, node)
    release_everything(etcd_backend, got)
    assert_check_clean(etcd_backend)


def test_racing_for_the_last_addresses_of_a_small_pool(etcd_backend: EtcdBackend) -> None:
    setup_cluster(etcd_backend, "10.65.0.0/26", 28, ["node1", "node2", "node3"])
    got: dict[str, list[str]] = {}
    lock = threading.Lock()
    exhausted: list[str] = []
    errors: list[BaseException] = []

    def run(node: str) -> None:
        ipam = IPAMClient(etcd_backend)
        i = 0
        while True:
            hid = f"net1.{node}-{i}"
            try:
                res = ipam.auto_assign(AutoAssignArgs(num4=1, handle_id=hid, hostname=node,
                                                      attrs={"node": node}))
            except PoolsExhausted:
                exhausted.append(node)
                return
            except BaseException as exc:
                errors.append(exc)
                return
            with lock:
                got[hid] = res.addresses
            i += 1

    threads = [threading.Thread(target=run, args=(n,)) for n in ("node1", "node2", "node3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(exhausted) == ["node1", "node2", "node3"]
    addrs = [a for v in got.values() for a in v]
    assert len(addrs) == len(set(addrs)) == 64  # every address of the pool, each once
    assert_consistent(etcd_backend, got)
    assert len(all_blocks(etcd_backend)) == 4
    release_everything(etcd_backend, got)
    assert_check_clean(etcd_backend)


def test_release_by_handle_races_with_allocation(etcd_backend: EtcdBackend) -> None:
    setup_cluster(etcd_backend, "10.65.0.0/24", 28, ["node1"])
    ipam = IPAMClient(etcd_backend)
    first, errors = run_allocators(etcd_backend, [("node1", 40)])
    assert not errors
    stop = threading.Event()

    def releaser() -> None:
        for h in list(first):
            ipam.release_by_handle(h)
        stop.set()

    t = threading.Thread(target=releaser)
    t.start()
    more, errors = run_allocators(etcd_backend, [("node1", 40), ("node1", 40)], prefix="net2")
    t.join(timeout=60)
    assert not errors and stop.is_set()
    assert_consistent(etcd_backend, more)
    release_everything(etcd_backend, more)
    assert_check_clean(etcd_backend)
