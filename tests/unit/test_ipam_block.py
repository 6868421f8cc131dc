"""The allocation block's pure logic and the IPAM records' JSON (no datastore)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from tortie.ipam.block import (
    NO_RESERVATIONS,
    AffinityMismatch,
    AllocationBlock,
    AlreadyAssigned,
    BlockError,
    ReleaseConflict,
    ReleaseOptions,
    ReservedCIDRs,
    block_cidr_for,
)
from tortie.ipam.model import BlockAffinity, IPAMConfig, IPAMHandle
from tortie.ipam.pools import Pool, fnv1_32, random_block_generator

ip = ipaddress.ip_address
net = ipaddress.ip_network


def new_block(cidr: str = "10.65.0.0/26", host: str | None = "node1") -> AllocationBlock:
    return AllocationBlock.new(cidr, f"host:{host}" if host else None, sequence_number=100)


def test_new_block_has_every_ordinal_free_in_order() -> None:
    b = new_block()
    assert b.num_addresses == 64
    assert b.unallocated == list(range(64))
    assert b.allocations == [None] * 64
    assert b.host == "node1" and b.affine_to("node1") and not b.affine_to("node2")
    assert b.is_empty() and b.num_free() == 64


def test_json_is_libcalico_go_layout_and_round_trips() -> None:
    b = new_block()
    b.auto_assign(2, "net1.abc", {"node": "node1", "pod": "p"}, host="node1",
                  affinity_check=False)
    data = json.loads(b.to_json())
    assert list(data) == [
        "cidr", "affinity", "allocations", "unallocated", "attributes", "sequenceNumber",
        "sequenceNumberForAllocation", "deleted",
    ]
    assert data["cidr"] == "10.65.0.0/26"
    assert data["affinity"] == "host:node1"
    assert data["allocations"][:3] == [0, 0, None]
    assert data["unallocated"][:2] == [2, 3]
    assert data["attributes"] == [
        {"handle_id": "net1.abc", "secondary": {"node": "node1", "pod": "p"}}
    ]
    assert data["sequenceNumber"] == 100
    assert data["sequenceNumberForAllocation"] == {"0": 100, "1": 100}
    assert data["deleted"] is False
    again = AllocationBlock.from_json(b.to_json())
    assert again == b


def test_reads_go_written_blocks_with_nulls_and_unknown_fields() -> None:
    raw = json.dumps({
        "cidr": "10.65.0.0/30", "affinity": None, "allocations": [None, 0, None, None],
        "unallocated": [0, 2, 3], "attributes": None, "sequenceNumber": 7,
        "sequenceNumberForAllocation": None, "deleted": False, "hostAffinity": "old",
        "affinityClaimTime": "2024-01-01T00:00:00Z",
    })
    b = AllocationBlock.from_json(raw)
    assert b.attributes == [] and b.sequence_number_for_allocation == {}
    assert b.affinity is None and b.host is None
    assert b.affinity_claim_time == "2024-01-01T00:00:00Z"
    out = json.loads(b.to_json())
    assert out["hostAffinity"] == "old"  # kept as found
    assert out["affinityClaimTime"] == "2024-01-01T00:00:00Z"


def test_auto_assign_takes_from_the_front_and_shares_one_attribute() -> None:
    b = new_block()
    got = b.auto_assign(3, "h1", {"a": "1"}, host="node1", affinity_check=True)
    assert [str(x) for x in got] == ["10.65.0.0", "10.65.0.1", "10.65.0.2"]
    assert b.allocations[:4] == [0, 0, 0, None]
    assert len(b.attributes) == 1
    more = b.auto_assign(1, "h2", {"a": "2"}, host="node1", affinity_check=True)
    assert more == [ip("10.65.0.3")] and b.allocations[3] == 1
    same = b.auto_assign(1, "h1", {"a": "1"}, host="node1", affinity_check=True)
    assert b.allocations[4] == 0 and same == [ip("10.65.0.4")]  # existing attribute reused
    assert b.num_free() == 59 and b.in_use_count() == 5


def test_auto_assign_when_full_or_short_returns_what_there_is() -> None:
    b = new_block("10.65.0.0/30")
    assert len(b.auto_assign(10, "h", None, host="node1", affinity_check=False)) == 4
    assert b.auto_assign(1, "h", None, host="node1", affinity_check=False) == []
    assert b.num_free() == 0


def test_strict_affinity_check() -> None:
    b = new_block(host="node2")
    with pytest.raises(AffinityMismatch):
        b.auto_assign(1, "h", None, host="node1", affinity_check=True)
    assert b.auto_assign(1, "h", None, host="node1", affinity_check=False)  # borrowing
    orphan = new_block(host=None)
    with pytest.raises(AffinityMismatch):
        orphan.assign("10.65.0.9", "h", None, host="node1", affinity_check=True)


def test_reserved_addresses_are_skipped_and_keep_their_place() -> None:
    b = new_block("10.65.0.0/29")
    reserved = ReservedCIDRs([net("10.65.0.0/31"), net("10.65.0.4/32")])
    got = b.auto_assign(3, "h", None, host="node1", affinity_check=False, reserved=reserved)
    assert [str(x) for x in got] == ["10.65.0.2", "10.65.0.3", "10.65.0.5"]
    assert b.unallocated == [0, 1, 4, 6, 7]
    assert b.num_free(reserved) == 2 and b.num_free() == 5


def test_reservation_filter_whole_and_partial_cover() -> None:
    r = ReservedCIDRs([net("10.0.0.0/25"), net("10.0.0.128/25"), net("10.0.0.5/32"),
                       net("fd00::/64")])
    assert r.matches_whole_cidr(net("10.0.0.0/24"))  # covered by two halves together
    assert r.matches_whole_cidr(net("10.0.0.64/26"))
    assert not r.matches_whole_cidr(net("10.0.1.0/24"))
    assert r.matches_some(net("10.0.0.0/16")) and not r.matches_some(net("10.1.0.0/16"))
    assert r.matches_ip(ip("10.0.0.200")) and r.matches_ip(ip("fd00::1"))
    assert not r.matches_ip(ip("fd01::1"))
    assert len(r.cidrs) == 3  # the /32 inside the /25 is dropped
    assert not NO_RESERVATIONS.matches_some(net("0.0.0.0/0"))


def test_assign_specific_address() -> None:
    b = new_block()
    b.assign("10.65.0.10", "h", {"x": "y"}, host="node1", affinity_check=True)
    assert b.allocations[10] == 0 and 10 not in b.unallocated
    with pytest.raises(AlreadyAssigned) as exc:
        b.assign("10.65.0.10", "other", None, host="node1", affinity_check=False)
    assert exc.value.handle == "h"
    with pytest.raises(BlockError):
        b.assign("10.65.1.10", "h", None, host="node1", affinity_check=False)


def test_release_returns_addresses_to_the_end_fifo() -> None:
    b = new_block("10.65.0.0/29")
    b.auto_assign(3, "h", None, host="node1", affinity_check=False)
    unalloc, counts = b.release([ReleaseOptions("10.65.0.1"), ReleaseOptions("10.65.0.7")])
    assert unalloc == [ip("10.65.0.7")]
    assert counts == {"h": 1}
    assert b.unallocated == [3, 4, 5, 6, 7, 1]
    # The next allocations use the never-used ones first; the freed one comes last.
    got = b.auto_assign(6, "h2", None, host="node1", affinity_check=False)
    assert [str(x) for x in got][-1] == "10.65.0.1"


def test_release_compacts_attribute_indexes() -> None:
    b = new_block("10.65.0.0/29")
    b.auto_assign(1, "a", None, host="node1", affinity_check=False)  # .0 -> attr 0
    b.auto_assign(1, "b", None, host="node1", affinity_check=False)  # .1 -> attr 1
    b.auto_assign(1, "c", None, host="node1", affinity_check=False)  # .2 -> attr 2
    b.release([ReleaseOptions("10.65.0.0")])
    assert [a.handle_id for a in b.attributes] == ["b", "c"]
    assert b.allocations[:3] == [None, 0, 1]
    assert b.attributes_for("10.65.0.2").handle_id == "c"  # type: ignore[union-attr]
    assert b.attributes_for("10.65.0.0") is None


def test_release_checks_handle_and_sequence_number() -> None:
    b = new_block()
    b.auto_assign(1, "h", None, host="node1", affinity_check=False)
    with pytest.raises(ReleaseConflict):
        b.release([ReleaseOptions("10.65.0.0", handle="other")])
    with pytest.raises(ReleaseConflict):
        b.release([ReleaseOptions("10.65.0.0", sequence_number=99)])
    assert b.in_use_count() == 1  # nothing changed
    b.release([ReleaseOptions("10.65.0.0", handle="h", sequence_number=100)])
    assert b.is_empty() and b.sequence_number_for_allocation == {}


def test_release_by_handle_and_ips_by_handle() -> None:
    b = new_block()
    b.auto_assign(2, "h1", None, host="node1", affinity_check=False)
    b.auto_assign(1, "h2", None, host="node1", affinity_check=False)
    b.assign("10.65.0.20", "h1", {"k": "v"}, host="node1", affinity_check=False)
    assert [str(x) for x in b.ips_by_handle("h1")] == ["10.65.0.0", "10.65.0.1", "10.65.0.20"]
    assert b.release_by_handle("h1") == 3
    assert b.release_by_handle("h1") == 0
    assert [a.handle_id for a in b.attributes] == ["h2"]
    assert b.allocations[2] == 0 and b.unallocated[-3:] == [0, 1, 20]


def test_handle_with_carriage_return_is_sanitised() -> None:
    b = new_block()
    b.auto_assign(1, "h1\r\neth0", None, host="node1", affinity_check=False)
    assert b.ips_by_handle("h1") == [ip("10.65.0.0")]
    assert b.attributes_for("10.65.0.0").handle_id == "h1"  # type: ignore[union-attr]


def test_windows_reserved_addresses_do_not_make_a_block_in_use() -> None:
    b = new_block()
    b.auto_assign(1, "windows-reserved-ipam-handle", None, host="node1", affinity_check=False)
    assert b.is_empty()
    b.auto_assign(1, "pod", None, host="node1", affinity_check=False)
    assert not b.is_empty()


def test_ipv6_block() -> None:
    b = AllocationBlock.new("fd00:65::/122", "host:node1")
    assert b.num_addresses == 64
    got = b.auto_assign(2, "h", None, host="node1", affinity_check=True)
    assert [str(x) for x in got] == ["fd00:65::", "fd00:65::1"]
    assert b.ordinal("fd00:65::3f") == 63
    with pytest.raises(BlockError):
        b.ordinal("10.0.0.1")
    assert block_cidr_for(ip("fd00:65::77"), 122) == net("fd00:65::40/122")


def test_handle_record() -> None:
    h = IPAMHandle("net1.abc")
    h.increment("10.65.0.0/26", 2)
    h.increment("10.65.0.0/26", 1)
    h.increment("fd00::/122", 1)
    assert json.loads(h.to_json()) == {
        "block": {"10.65.0.0/26": 3, "fd00::/122": 1}, "deleted": False
    }
    assert h.total() == 4 and h.total(4) == 3 and h.total(6) == 1
    h.decrement("10.65.0.0/26", 3)
    h.decrement("fd00::/122", 5)  # never below zero
    assert h.empty()
    back = IPAMHandle.from_json("x", b'{"block":{"10.0.0.0/26":1},"deleted":false}')
    assert back.block == {"10.0.0.0/26": 1}


def test_affinity_and_config_records() -> None:
    assert BlockAffinity.from_json(b'{"state":"pending","deleted":false}').state == "pending"
    assert BlockAffinity.from_json(b'{"state":""}').state == "confirmed"  # very old data
    assert json.loads(BlockAffinity().to_json()) == {"state": "confirmed", "deleted": False}
    assert IPAMConfig().to_json() == b'{"auto_allocate_blocks":true}'
    cfg = IPAMConfig(strict_affinity=True, auto_allocate_blocks=False, max_blocks_per_host=4)
    assert json.loads(cfg.to_json()) == {"strict_affinity": True, "maxBlocksPerHost": 4}
    assert IPAMConfig.from_json(cfg.to_json()) == cfg
    assert IPAMConfig.from_json(b"{}") == IPAMConfig(False, False, 0)  # omitempty: false


def test_block_order_is_per_host_and_covers_the_pool() -> None:
    pool = Pool("p", net("10.65.0.0/24"), 26)
    a = list(random_block_generator(pool, "node1"))
    assert sorted(a) == [net(f"10.65.0.{i}/26") for i in (0, 64, 128, 192)]
    assert a == list(random_block_generator(pool, "node1"))  # stable per host
    # different hosts start in different places
    starts = {next(random_block_generator(pool, f"node{i}")) for i in range(20)}
    assert len(starts) > 1
    assert fnv1_32(b"") == 0x811C9DC5 and fnv1_32(b"a") == 0x050C5D7E
