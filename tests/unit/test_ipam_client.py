"""IPAMClient on the memory backend: Calico's allocation rules, one at a time."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable, Sequence

import pytest

from tortie.api import load
from tortie.datastore import keys
from tortie.datastore.backend import KV, Compare, Op, TxnResult
from tortie.datastore.client import ResourceClient
from tortie.datastore.memory import MemoryBackend
from tortie.ipam import (
    AddressInUse,
    AddressNotAssigned,
    AutoAssignArgs,
    BlockLimitReached,
    IPAMClient,
    IPAMError,
    NoMatchingPool,
    NotInPool,
    PoolsExhausted,
)
from tortie.ipam.block import AllocationBlock, ReleaseOptions
from tortie.ipam.model import IPAMConfig, IPAMHandle


@pytest.fixture
def rc(memory_backend: MemoryBackend) -> ResourceClient:
    return ResourceClient(memory_backend)


@pytest.fixture
def ipam(memory_backend: MemoryBackend, rc: ResourceClient) -> IPAMClient:
    return IPAMClient(memory_backend, rc)


def apply(rc: ResourceClient, text: str) -> None:
    for res in load(text):
        rc.apply(res)


def pool(rc: ResourceClient, name: str, cidr: str, **spec: object) -> None:
    fields = {"cidr": cidr, **spec}
    rc.apply(load(json.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": name}, "spec": fields,
    }))[0])


def node(rc: ResourceClient, name: str, **labels: str) -> None:
    rc.apply(load(json.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "Node",
        "metadata": {"name": name, "labels": labels}, "spec": {},
    }))[0])


def assign(ipam: IPAMClient, host: str = "node1", handle: str = "net1.c1", num4: int = 1,
           **kw: object) -> list[str]:
    res = ipam.auto_assign(AutoAssignArgs(
        num4=num4, handle_id=handle, attrs={"node": host}, hostname=host, **kw  # type: ignore[arg-type]
    ))
    return res.addresses


def blocks(backend: MemoryBackend) -> dict[str, AllocationBlock]:
    kvs, _ = backend.list(keys.block_prefix())
    return {str(b.cidr): b for b in (AllocationBlock.from_json(kv.value) for kv in kvs)}


def handle(backend: MemoryBackend, hid: str) -> IPAMHandle | None:
    try:
        return IPAMHandle.from_json(hid, backend.get(keys.handle_key(hid)).value)
    except Exception:
        return None


def affinities(backend: MemoryBackend, host: str) -> dict[str, str]:
    kvs, _ = backend.list(keys.host_affinity_prefix(host))
    return {keys.parse_host_affinity_key(kv.key).cidr: json.loads(kv.value)["state"]
            for kv in kvs}


# ---------------------------------------------------------------------------------------------


def test_first_allocation_claims_a_block_for_the_node(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "p1", "10.65.0.0/16")
    res = ipam.auto_assign(AutoAssignArgs(num4=1, handle_id="net1.c1",
                                          attrs={"node": "node1", "pod": "p"},
                                          hostname="node1"))
    [iface] = res.ipv4
    assert isinstance(iface, ipaddress.IPv4Interface) and iface.network.prefixlen == 26
    assert res.ipv6 == []
    [(cidr, block)] = blocks(memory_backend).items()
    assert block.affinity == "host:node1" and block.affinity_claim_time
    assert iface.ip in block.cidr and iface.network == block.cidr
    assert affinities(memory_backend, "node1") == {cidr: "confirmed"}
    assert handle(memory_backend, "net1.c1").block == {cidr: 1}  # type: ignore[union-attr]
    attrs, hid = ipam.get_assignment_attributes(str(iface.ip))
    assert attrs == {"node": "node1", "pod": "p"} and hid == "net1.c1"
    assert ipam.ips_by_handle("net1.c1") == [str(iface.ip)]


def test_node_fills_its_block_then_claims_another(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "p1", "10.65.0.0/24", blockSize=30)
    got = [assign(ipam, handle=f"h{i}")[0] for i in range(10)]
    assert len(set(got)) == 10
    bs = blocks(memory_backend)
    assert len(bs) == 3 and all(b.affine_to("node1") for b in bs.values())
    assert sorted(b.in_use_count() for b in bs.values()) == [2, 4, 4]
    # A node walks the pool from its own starting block, contiguously.
    assert len(affinities(memory_backend, "node1")) == 3


def test_several_addresses_in_one_request_span_blocks(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "p1", "10.65.0.0/24", blockSize=30)
    got = assign(ipam, num4=6)
    assert len(set(got)) == 6
    assert handle(memory_backend, "net1.c1").total() == 6  # type: ignore[union-attr]
    assert sorted(ipam.ips_by_handle("net1.c1")) == sorted(got)


def test_borrowing_from_another_nodes_block(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "p1", "10.65.0.0/29", blockSize=30)  # two blocks of four
    assign(ipam, "node1", "a", num4=5)  # node1 owns both blocks, 3 left in the second
    assert set(blocks(memory_backend)) == {"10.65.0.0/30", "10.65.0.4/30"}
    got = assign(ipam, "node2", "b", num4=2)
    assert len(got) == 2
    for addr in got:
        b = next(b for b in blocks(memory_backend).values()
                 if ipaddress.ip_address(addr) in b.cidr)
        assert b.affine_to("node1")  # borrowed: the block stays node1's
    assert affinities(memory_backend, "node2") == {}
    attrs, _ = ipam.get_assignment_attributes(got[0])
    assert attrs["node"] == "node2"


def test_strict_affinity_forbids_borrowing(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "p1", "10.65.0.0/29", blockSize=30)
    ipam.set_config(strict_affinity=True)
    assign(ipam, "node1", "a", num4=5)
    with pytest.raises(PoolsExhausted) as exc:
        assign(ipam, "node2", "b")
    assert "strict affinity" in str(exc.value)
    assert handle(memory_backend, "b") is None
    # node1 can still use its own free addresses.
    assert len(assign(ipam, "node1", "c", num4=3)) == 3


def test_pool_exhausted_is_all_or_nothing(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "p1", "10.65.0.0/30", blockSize=30)
    with pytest.raises(PoolsExhausted) as exc:
        assign(ipam, num4=5)
    assert "found 4" in str(exc.value) and "p1" in str(exc.value)
    assert all(b.in_use_count() == 0 for b in blocks(memory_backend).values())
    assert handle(memory_backend, "net1.c1") is None


def test_max_blocks_per_host_from_the_request(
    ipam: IPAMClient, rc: ResourceClient
) -> None:
    pool(rc, "p1", "10.65.0.0/24", blockSize=30)
    assign(ipam, handle="a", num4=4, max_blocks_per_host=1)
    with pytest.raises(BlockLimitReached) as exc:
        assign(ipam, handle="b", max_blocks_per_host=1)
    assert "maxBlocksPerHost" in str(exc.value) and "1 block" in str(exc.value)
    assert len(assign(ipam, handle="c", max_blocks_per_host=2)) == 1


def test_max_blocks_per_host_from_the_config_needs_strict_affinity(
    ipam: IPAMClient, rc: ResourceClient
) -> None:
    pool(rc, "p1", "10.65.0.0/24", blockSize=30)
    with pytest.raises(IPAMError, match="requires strictAffinity"):
        ipam.set_config(max_blocks_per_host=2)
    cfg = ipam.set_config(strict_affinity=True, max_blocks_per_host=2)
    assert cfg.max_blocks_per_host == 2 and cfg.strict_affinity
    assign(ipam, handle="a", num4=8)
    with pytest.raises(BlockLimitReached):
        assign(ipam, handle="b")
    # The stricter of request and config wins.
    with pytest.raises(BlockLimitReached):
        assign(ipam, handle="c", max_blocks_per_host=5)


def test_config_is_kept_as_libcalico_go_record_and_resource(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    cfg = ipam.get_config()
    assert (cfg.strict_affinity, cfg.auto_allocate_blocks, cfg.max_blocks_per_host) == (
        False, True, 0)
    # First use writes Calico's default, both as the v2 record and as the resource.
    assert memory_backend.get(keys.ipam_config_key()).value == b'{"auto_allocate_blocks":true}'
    assert rc.get("IPAMConfiguration", "default").spec.auto_allocate_blocks is True  # type: ignore[attr-defined]
    ipam.set_config(strict_affinity=True)
    assert json.loads(memory_backend.get(keys.ipam_config_key()).value) == {
        "strict_affinity": True, "auto_allocate_blocks": True}
    with pytest.raises(IPAMError, match="cannot disable both"):
        ipam.set_config(strict_affinity=False, auto_allocate_blocks=False)
    # A user's resource wins.
    apply(rc, "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\n"
              "metadata: {name: default}\nspec: {strictAffinity: false}\n")
    assert ipam.get_config().strict_affinity is False


def test_reserved_addresses_are_never_auto_assigned(
    ipam: IPAMClient, rc: ResourceClient
) -> None:
    pool(rc, "p1", "10.65.0.0/28", blockSize=29)
    apply(rc, "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\n"
              "spec:\n  reservedCIDRs: [10.65.0.0/29, 10.65.0.9, 10.65.0.10/31]\n")
    got = assign(ipam, num4=5)
    assert sorted(got, key=ipaddress.ip_address) == [
        "10.65.0.8", "10.65.0.12", "10.65.0.13", "10.65.0.14", "10.65.0.15"]
    with pytest.raises(PoolsExhausted):
        assign(ipam, handle="more")
    # A specific request may still take a reserved address, as in Calico.
    ipam.assign_ip("10.65.0.9", "pinned", {"node": "node1"}, "node1")


def test_disabled_pools_are_not_used(ipam: IPAMClient, rc: ResourceClient) -> None:
    pool(rc, "off", "10.65.0.0/16", disabled=True)
    with pytest.raises(NoMatchingPool, match="no enabled IPv4 IP pool"):
        assign(ipam)
    pool(rc, "on", "10.66.0.0/16")
    assert assign(ipam)[0].startswith("10.66.")
    with pytest.raises(NoMatchingPool, match=r"the given pool \(10.65.0.0/16\) does not exist"):
        assign(ipam, handle="x", ipv4_pools=["10.65.0.0/16"])


def test_requested_pools_by_cidr_or_name(ipam: IPAMClient, rc: ResourceClient) -> None:
    pool(rc, "a", "10.65.0.0/16")
    pool(rc, "b", "10.66.0.0/16", nodeSelector="nothing == 'here'")
    assert assign(ipam, handle="x", ipv4_pools=["b"])[0].startswith("10.66.")  # selector ignored
    assert assign(ipam, handle="y", ipv4_pools=["10.65.0.0/16"])[0].startswith("10.65.")
    with pytest.raises(IPAMError, match="IPv6 pool"):
        assign(ipam, handle="z", ipv4_pools=["fd00::/64"])


def test_node_selector(ipam: IPAMClient, rc: ResourceClient) -> None:
    pool(rc, "zone-a", "10.65.0.0/16", nodeSelector="zone == 'a'")
    pool(rc, "zone-b", "10.66.0.0/16", nodeSelector="zone == 'b'")
    node(rc, "node1", zone="a")
    node(rc, "node2", zone="b")
    node(rc, "node3", zone="c")
    assert assign(ipam, "node1", "h1")[0].startswith("10.65.")
    assert assign(ipam, "node2", "h2")[0].startswith("10.66.")
    with pytest.raises(NoMatchingPool, match="no IPv4 pool matches node node3: check the pools' "
                                             "nodeSelector"):
        assign(ipam, "node3", "h3")
    with pytest.raises(NoMatchingPool, match="node node4 does not exist"):
        assign(ipam, "node4", "h4")


def test_relabelled_node_gives_up_its_empty_blocks(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "zone-a", "10.65.0.0/16", nodeSelector="zone == 'a'")
    pool(rc, "zone-b", "10.66.0.0/16", nodeSelector="zone == 'b'")
    node(rc, "node1", zone="a")
    first = assign(ipam, "node1", "h1")[0]
    ipam.release_ips([first])
    node(rc, "node1", zone="b")
    assert assign(ipam, "node1", "h2")[0].startswith("10.66.")
    assert all(c.startswith("10.66.") for c in affinities(memory_backend, "node1"))
    assert not any(c.startswith("10.65.") for c in blocks(memory_backend))


def test_namespace_selector(ipam: IPAMClient, rc: ResourceClient) -> None:
    pool(rc, "prod", "10.65.0.0/16", namespaceSelector="env == 'prod'")
    pool(rc, "any", "10.66.0.0/16")
    assert assign(ipam, handle="a", namespace_labels={"env": "prod"})[0].startswith(
        ("10.65.", "10.66."))
    got = assign(ipam, handle="b", namespace_labels={"env": "dev"})
    assert got[0].startswith("10.66.")


def test_allowed_uses(ipam: IPAMClient, rc: ResourceClient) -> None:
    pool(rc, "tunnels", "10.65.0.0/16", allowedUses=["Tunnel"], vxlanMode="Always")
    with pytest.raises(NoMatchingPool, match="allows use Workload"):
        assign(ipam)
    assert assign(ipam, handle="t", intended_use="Tunnel")[0].startswith("10.65.")
    with pytest.raises(IPAMError, match="intended use"):
        assign(ipam, handle="u", intended_use="Bogus")


def test_release_by_handle_is_idempotent(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "p1", "10.65.0.0/16")
    pool(rc, "p6", "fd00:65::/112")
    res = ipam.auto_assign(AutoAssignArgs(num4=2, num6=1, handle_id="net1.c1",
                                          hostname="node1"))
    assert len(res.addresses) == 3
    assert handle(memory_backend, "net1.c1").total() == 3  # type: ignore[union-attr]
    ipam.release_by_handle("net1.c1")
    assert handle(memory_backend, "net1.c1") is None
    assert ipam.ips_by_handle("net1.c1") == []
    assert all(b.is_empty() and b.affine_to("node1") for b in blocks(memory_backend).values())
    ipam.release_by_handle("net1.c1")  # again: nothing to do, no error
    ipam.release_by_handle("never-existed")


def test_release_ips(ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend) -> None:
    pool(rc, "p1", "10.65.0.0/16")
    a, b = assign(ipam, num4=2)
    assert ipam.release_ips([a, "10.65.200.1", "192.0.2.1"]) == ["10.65.200.1", "192.0.2.1"]
    assert handle(memory_backend, "net1.c1").total() == 1  # type: ignore[union-attr]
    with pytest.raises(AddressNotAssigned):
        ipam.get_assignment_attributes(a)
    assert ipam.release_ips([a]) == [a]
    # With a handle that no longer matches, nothing is released.
    with pytest.raises(IPAMError, match="now belongs to handle"):
        ipam.release_ips([ReleaseOptions(b, handle="someone-else")])
    assert ipam.release_ips([ReleaseOptions(b, handle="net1.c1")]) == []
    assert handle(memory_backend, "net1.c1") is None
    with pytest.raises(IPAMError, match="invalid IP"):
        ipam.release_ips(["not-an-ip"])


def test_released_addresses_are_reused_last(ipam: IPAMClient, rc: ResourceClient) -> None:
    pool(rc, "p1", "10.65.0.0/16")
    a, b, c = assign(ipam, num4=3)
    ipam.release_ips([a])
    d = assign(ipam, handle="next")[0]
    assert d not in (a, b, c)
    assert ipaddress.ip_address(d) == ipaddress.ip_address(c) + 1


def test_specific_address(ipam: IPAMClient, rc: ResourceClient,
                          memory_backend: MemoryBackend) -> None:
    pool(rc, "p1", "10.65.0.0/16")
    ipam.assign_ip("10.65.3.7", "net1.pinned", {"node": "node1"}, "node1")
    bs = blocks(memory_backend)
    assert bs["10.65.3.0/26"].affine_to("node1")  # the block was claimed for the node
    assert affinities(memory_backend, "node1") == {"10.65.3.0/26": "confirmed"}
    assert handle(memory_backend, "net1.pinned").block == {"10.65.3.0/26": 1}  # type: ignore[union-attr]
    with pytest.raises(AddressInUse, match=r"IP 10.65.3.7 is already assigned \(handle "
                                           r"net1.pinned\)"):
        ipam.assign_ip("10.65.3.7", "net1.other", None, "node1")
    assert handle(memory_backend, "net1.other") is None
    with pytest.raises(NotInPool, match="not in any enabled IP pool"):
        ipam.assign_ip("192.0.2.1", "x", None, "node1")
    # An address in another node's block: allowed unless strict affinity.
    ipam.assign_ip("10.65.3.8", "net2.b", {"node": "node2"}, "node2")
    ipam.set_config(strict_affinity=True)
    with pytest.raises(IPAMError, match="strict affinity"):
        ipam.assign_ip("10.65.3.9", "net2.c", {"node": "node2"}, "node2")


def test_tunnel_address(ipam: IPAMClient, rc: ResourceClient,
                        memory_backend: MemoryBackend) -> None:
    pool(rc, "plain", "10.66.0.0/16")
    node(rc, "node1")
    with pytest.raises(NoMatchingPool, match="vxlanMode Always or CrossSubnet"):
        ipam.assign_tunnel_address("node1", "vxlan")
    pool(rc, "vx", "10.65.0.0/16", vxlanMode="Always")
    addr = ipam.assign_tunnel_address("node1", "vxlan")
    assert addr.startswith("10.65.")
    assert ipam.assign_tunnel_address("node1", "vxlan") == addr  # idempotent
    assert ipam.ips_by_handle("vxlan-tunnel-addr-node1") == [addr]
    attrs, hid = ipam.get_assignment_attributes(addr)
    assert hid == "vxlan-tunnel-addr-node1"
    assert attrs == {"node": "node1", "type": "vxlanTunnelAddress"}
    assert rc.get("Node", "node1").spec.ipv4_vxlan_tunnel_addr == addr  # type: ignore[attr-defined]
    wg = ipam.assign_tunnel_address("node1", "wireguard", update_node=False)
    assert wg != addr
    assert rc.get("Node", "node1").spec.wireguard is None  # type: ignore[attr-defined]
    with pytest.raises(IPAMError, match="unknown tunnel kind"):
        ipam.assign_tunnel_address("node1", "gre")


def test_ipv6(ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend) -> None:
    pool(rc, "p6", "fd00:65::/64")
    res = ipam.auto_assign(AutoAssignArgs(num6=2, handle_id="h", hostname="node1"))
    assert res.ipv4 == [] and len(res.ipv6) == 2
    assert all(isinstance(i, ipaddress.IPv6Interface) and i.network.prefixlen == 122
               for i in res.ipv6)
    [cidr] = blocks(memory_backend)
    assert keys.block_key(cidr).startswith("/calico/ipam/v2/assignment/ipv6/block/fd00:65:")
    assert list(affinities(memory_backend, "node1")) == [cidr]


def test_dual_stack_failure_releases_the_ipv4_part(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "p1", "10.65.0.0/16")
    with pytest.raises(NoMatchingPool, match="IPv6"):
        ipam.auto_assign(AutoAssignArgs(num4=1, num6=1, handle_id="h", hostname="node1"))
    assert all(b.is_empty() for b in blocks(memory_backend).values())
    assert handle(memory_backend, "h") is None


def test_empty_block_of_another_node_is_reclaimed_when_nothing_else_is_left(
    memory_backend: MemoryBackend, rc: ResourceClient
) -> None:
    pool(rc, "p1", "10.65.0.0/29", blockSize=30)
    ipam = IPAMClient(memory_backend, rc, empty_block_reclaim_age=0)
    ipam.set_config(strict_affinity=True)
    a = assign(ipam, "node1", "a", num4=8)
    ipam.release_ips(a[4:])  # empty node1's second block (its first is still full)
    got = assign(ipam, "node2", "b")
    assert len(got) == 1
    owners = {c: b.affinity for c, b in blocks(memory_backend).items()}
    assert sorted(owners.values()) == ["host:node1", "host:node2"]
    assert len(affinities(memory_backend, "node1")) == 1
    # With the default reclaim age, a freshly claimed empty block is left to its node.
    slow = IPAMClient(memory_backend, rc)
    ipam.release_ips(got)
    with pytest.raises(PoolsExhausted):
        assign(slow, "node3", "c")


def test_release_affinities(ipam: IPAMClient, rc: ResourceClient,
                            memory_backend: MemoryBackend) -> None:
    pool(rc, "p1", "10.65.0.0/24", blockSize=30)
    used = assign(ipam, "node1", "a", num4=5)  # two blocks: one full, one with one address
    assign(ipam, "node1", "b", num4=4)  # fill the second and take a third block
    ipam.release_by_handle("b")
    assert len(affinities(memory_backend, "node1")) == 3
    ipam.release_host_affinities("node1")
    assert affinities(memory_backend, "node1") == {}
    bs = blocks(memory_backend)
    assert len(bs) == 2 and all(b.affinity is None for b in bs.values())  # empty one deleted
    ipam.release_ips(used)
    assert blocks(memory_backend) == {}  # empty blocks without affinity are deleted


def test_release_affinity_of_a_cidr_and_claim_affinity(
    ipam: IPAMClient, rc: ResourceClient, memory_backend: MemoryBackend
) -> None:
    pool(rc, "p1", "10.65.0.0/24", blockSize=26)
    claimed, failed = ipam.claim_affinity("10.65.0.0/25", "node1")
    assert claimed == ["10.65.0.0/26", "10.65.0.64/26"] and failed == []
    claimed, failed = ipam.claim_affinity("10.65.0.0/24", "node2")
    assert claimed == ["10.65.0.128/26", "10.65.0.192/26"]
    assert failed == ["10.65.0.0/26", "10.65.0.64/26"]
    ipam.release_affinity("10.65.0.0/26", "node1")
    assert list(affinities(memory_backend, "node1")) == ["10.65.0.64/26"]
    ipam.release_pool_affinities("p1")
    assert affinities(memory_backend, "node1") == affinities(memory_backend, "node2") == {}
    assert ipam.ensure_block("node1") in {f"10.65.0.{i}/26" for i in (0, 64, 128, 192)}


def test_ensure_block_returns_an_existing_block(ipam: IPAMClient, rc: ResourceClient) -> None:
    pool(rc, "p1", "10.65.0.0/16")
    a = assign(ipam)[0]
    cidr = ipam.ensure_block("node1")
    assert ipaddress.ip_address(a) in ipaddress.ip_network(cidr)


def test_utilization(ipam: IPAMClient, rc: ResourceClient) -> None:
    pool(rc, "p1", "10.65.0.0/24", blockSize=26)
    assign(ipam, num4=3)
    [u] = ipam.get_utilization()
    assert (u.name, str(u.cidr), u.capacity, u.in_use, u.available) == (
        "p1", "10.65.0.0/24", 256, 3, 253)
    assert [(b.capacity, b.available) for b in u.blocks] == [(64, 61)]


class ConflictingBackend(MemoryBackend):
    """Before the first N block writes (updates or transactions), someone else writes the
    block (a CAS race)."""

    def __init__(self, conflicts: int) -> None:
        super().__init__()
        self.conflicts = conflicts

    def _foreign_write(self, key: str) -> None:
        if self.conflicts and "/assignment/" in key:
            self.conflicts -= 1
            current = self.get(key)
            super().update(key, current.value, current.mod_revision)

    def update(self, key: str, value: bytes, expect_revision: int | None) -> KV:
        self._foreign_write(key)
        return super().update(key, value, expect_revision)

    def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        for op in ops:
            self._foreign_write(op.key)
        return super().txn(compares, ops)


def test_cas_conflicts_are_retried_and_handles_stay_exact() -> None:
    backend = ConflictingBackend(conflicts=0)
    rc = ResourceClient(backend)
    pool(rc, "p1", "10.65.0.0/16")
    ipam = IPAMClient(backend, rc)
    assign(ipam, handle="warm")
    backend.conflicts = 3
    got = assign(ipam, handle="h", num4=2)
    assert backend.conflicts == 0 and len(set(got)) == 2
    assert handle(backend, "h").total() == 2  # type: ignore[union-attr]
    assert sorted(ipam.ips_by_handle("h")) == sorted(got)


def test_concurrent_allocators_never_share_an_address(
    memory_backend: MemoryBackend, rc: ResourceClient
) -> None:
    pool(rc, "p1", "10.65.0.0/22", blockSize=28)
    results: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(host: str, n: int) -> None:
        client = IPAMClient(memory_backend, ResourceClient(memory_backend))
        try:
            for i in range(n):
                addrs = assign(client, host, f"{host}.{i}")
                with lock:
                    results.extend(addrs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(h, 40))
               for h in ("node1", "node1", "node2", "node3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == len(set(results)) == 160
    for b in blocks(memory_backend).values():
        assert b.host in ("node1", "node2", "node3")




def test_stale_remembered_block_full_elsewhere_keeps_handles_exact(
    memory_backend: MemoryBackend, rc: ResourceClient
) -> None:
    pool(rc, "p1", "10.65.0.0/24", blockSize=29)  # blocks of 8
    a = IPAMClient(memory_backend, rc)
    b = IPAMClient(memory_backend, rc)
    first = assign(a, handle="a0")[0]  # a remembers the block as it wrote it
    assign(b, handle="b0", num4=7)  # b fills that block behind a's back
    second = assign(a, handle="a1")[0]
    assert ipaddress.ip_address(second) not in ipaddress.ip_network(f"{first}/29",
                                                                     strict=False)
    h = handle(memory_backend, "a1")
    assert h is not None and list(h.block.values()) == [1]
    assert ipaddress.ip_address(second) in ipaddress.ip_network(next(iter(h.block)))


def test_watch_serves_pools_and_config_and_sees_changes(
    memory_backend: MemoryBackend, rc: ResourceClient, wait_until: Callable[..., None]
) -> None:
    with IPAMClient(memory_backend, rc, watch=True) as ipam:
        pool(rc, "a", "10.65.0.0/16")  # created after the watch started: still found
        assert assign(ipam, handle="h1")[0].startswith("10.65.")
        pool(rc, "b", "10.66.0.0/16")
        pool(rc, "a", "10.65.0.0/16", disabled=True)
        watch = ipam._watch
        assert watch is not None
        wait_until(lambda: [p.name for p in watch.pools() or () if not p.disabled] == ["b"],
                   message="the watch to see pool a disabled")
        assert assign(ipam, handle="h2")[0].startswith("10.66.")
        ipam.set_config(strict_affinity=True)
        wait_until(lambda: (watch.config() or IPAMConfig()).strict_affinity,
                   message="the watch to see strict affinity")
        apply(rc, "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\n"
                  "spec:\n  reservedCIDRs: [10.66.0.0/17]\n")
        probe = ipaddress.ip_address("10.66.0.1")
        wait_until(lambda: (r := watch.reservations()) is not None and r.matches_ip(probe),
                   message="the watch to see the reservation")
        got = assign(ipam, handle="h3")[0]
        assert ipaddress.ip_address(got) in ipaddress.ip_network("10.66.128.0/17")


def test_threads_sharing_one_client_on_one_node(
    memory_backend: MemoryBackend, rc: ResourceClient
) -> None:
    pool(rc, "p1", "10.65.0.0/22", blockSize=28)
    ipam = IPAMClient(memory_backend, rc, watch=True)
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(30):
                results[f"t{t}.{i}"] = assign(ipam, "node1", f"t{t}.{i}", num4=1 + i % 2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ipam.close()
    assert not errors
    addrs = [a for v in results.values() for a in v]
    assert len(addrs) == len(set(addrs)) == 180
    for hid, got in results.items():
        h = handle(memory_backend, hid)
        assert h is not None and h.total() == len(got), hid
    assert all(b.affine_to("node1") for b in blocks(memory_backend).values())


def test_handle_ids_are_checked(ipam: IPAMClient, rc: ResourceClient) -> None:
    pool(rc, "p1", "10.65.0.0/16")
    with pytest.raises(IPAMError, match="invalid handle id"):
        assign(ipam, handle="net1/abc")
    assert ipam.ips_by_handle("") == []
    ipam.release_by_handle("")
    got = ipam.auto_assign(AutoAssignArgs(num4=1, hostname="node1"))  # no handle at all
    assert ipam.release_ips(got.addresses) == []
