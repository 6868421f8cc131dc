"""IPAM consistency check (`tortiectl ipam check`): allocations against what uses them.

Follows calicoctl's `commands/ipam/check.go`: every allocation recorded in a block is compared
with the addresses actually in use, i.e. WorkloadEndpoints' `ipNetworks` and Nodes' tunnel
addresses (VXLAN, IPIP, WireGuard). It finds

- addresses allocated in IPAM but used by nothing (leaked: `tortiectl ipam release
  --from-report` releases them);
- addresses in use in an active pool but not allocated, and in use outside every active pool;
- handles that no allocation references (leaked handles) and handles that allocations name
  but that do not exist;

and, beyond calicoctl, the affinity side: affinities (`/calico/ipam/v2/host/<node>/...`) of
nodes with no Node resource, affinities whose block is missing or belongs to another node, and
blocks that have no affinity (informational while they hold addresses; a leftover when empty).

The machine-readable report is calicoctl's `Report` JSON (`version`, `clusterGUID`,
`datastoreLocked`, `clusterInformationRevision`, `clusterType`, `allocations`,
`leakedHandles`), so reports feed `ipam release --from-report` as they do in Calico.
This module reads the datastore but never writes it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from tortie.datastore import keys
from tortie.datastore.backend import Backend
from tortie.ipam.block import WINDOWS_RESERVED_HANDLE, AllocationBlock
from tortie.ipam.model import STATE_CONFIRMED, BlockAffinity

__all__ = ["Allocation", "CheckResult", "HandleInfo", "check_ipam", "normalise_ip"]


def normalise_ip(text: str) -> str:
    """An address or CIDR (`10.0.0.1/32`) as a plain canonical address."""
    return str(ipaddress.ip_interface(text.strip()).ip)


@dataclass
class Allocation:
    """One allocated address, cross-referenced (calicoctl's `Allocation`)."""

    ip: str
    block: str
    handle: str | None = None
    sequence_number: int = 0
    pod: str = ""
    namespace: str = ""
    node: str = ""
    type: str = ""
    creation_timestamp: str = ""
    in_use: bool = False
    borrowed: bool = False
    owners: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)

    def attr_string(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.attrs.items()))
        return f"Main:{self.handle or '<none>'} Extra:{extra}"

    def to_report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ip": self.ip}
        if self.handle:
            out["handle"] = self.handle
        out["sequenceNumber"] = self.sequence_number
        for key, value in (("pod", self.pod), ("namespace", self.namespace),
                           ("node", self.node), ("type", self.type),
                           ("creationTimestamp", self.creation_timestamp)):
            if value:
                out[key] = value
        out["inUse"] = self.in_use
        if self.borrowed:
            out["borrowed"] = True
        out["owners"] = self.owners or None
        return out


@dataclass(frozen=True)
class HandleInfo:
    """A handle as the report names it (calicoctl's `HandleInfo`: ID, UID, Revision)."""

    id: str
    revision: str
    uid: str | None = None

    def to_report(self) -> dict[str, Any]:
        return {"ID": self.id, "UID": self.uid, "Revision": self.revision}


@dataclass
class CheckResult:
    version: str
    cluster_guid: str = ""
    cluster_type: str = ""
    cluster_info_revision: str = ""
    datastore_locked: bool = False
    num_blocks: int = 0
    block_affinities: dict[str, str | None] = field(default_factory=dict)
    allocations: dict[str, list[Allocation]] = field(default_factory=dict)
    active_pools: list[str] = field(default_factory=list)
    node_ips: int = 0
    workload_ips: int = 0
    in_use: dict[str, list[str]] = field(default_factory=dict)
    handles: dict[str, HandleInfo] = field(default_factory=dict)
    # Problems, as calicoctl counts them.
    leaked_ips: list[str] = field(default_factory=list)
    not_in_pool_ips: list[str] = field(default_factory=list)
    unallocated_in_use_ips: list[str] = field(default_factory=list)
    leaked_handles: list[HandleInfo] = field(default_factory=list)
    good_handles: int = 0
    missing_handles: list[str] = field(default_factory=list)
    multiple_owners: list[str] = field(default_factory=list)
    # The affinity side (Tortie's additions).
    affinities_of_missing_nodes: list[tuple[str, str]] = field(default_factory=list)
    stale_affinities: list[tuple[str, str, str]] = field(default_factory=list)
    unconfirmed_affinities: list[tuple[str, str, str]] = field(default_factory=list)
    blocks_without_affinity: list[str] = field(default_factory=list)
    empty_blocks_without_affinity: list[str] = field(default_factory=list)

    @property
    def allocations_by_node(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for allocs in self.allocations.values():
            for a in allocs:
                counts[a.node] = counts.get(a.node, 0) + 1
        return counts

    @property
    def problems(self) -> int:
        """calicoctl's count (leaked IPs and handles, in-use IPs without allocation) plus the
        affinity problems: affinities of missing nodes, stale affinities, empty blocks left
        without affinity."""
        return (
            len(self.leaked_ips)
            + len(self.not_in_pool_ips)
            + len(self.unallocated_in_use_ips)
            + len(self.leaked_handles)
            + len(self.affinities_of_missing_nodes)
            + len(self.stale_affinities)
            + len(self.empty_blocks_without_affinity)
        )

    def report(self) -> dict[str, Any]:
        """calicoctl's report JSON."""
        out: dict[str, Any] = {
            "version": self.version,
            "clusterGUID": self.cluster_guid,
            "datastoreLocked": self.datastore_locked,
            "clusterInformationRevision": self.cluster_info_revision,
            "clusterType": self.cluster_type,
            "allocations": {
                ip: [a.to_report() for a in allocs]
                for ip, allocs in sorted(self.allocations.items())
            },
        }
        if self.leaked_handles:
            out["leakedHandles"] = [h.to_report() for h in self.leaked_handles]
        return out


def check_ipam(backend: Backend, resources: Any, version: str) -> CheckResult:
    """Read blocks, pools, nodes, endpoints, handles and affinities; cross-check them."""
    from tortie.datastore.client import ResourceNotFound

    result = CheckResult(version=version)
    try:
        info = resources.get("ClusterInformation", "default")
    except ResourceNotFound:
        pass
    else:
        spec = info.spec
        result.cluster_guid = spec.cluster_guid or ""
        result.cluster_type = spec.cluster_type or ""
        result.cluster_info_revision = info.metadata.resource_version or ""
        result.datastore_locked = spec.datastore_ready is False

    # Blocks and their allocations.
    kvs, _ = backend.list(keys.block_prefix())
    blocks: dict[str, AllocationBlock] = {}
    for kv in kvs:
        try:
            b = AllocationBlock.from_json(kv.value)
        except (ValueError, KeyError):
            continue
        blocks[str(b.cidr)] = b
    result.num_blocks = len(blocks)
    in_use_handles: set[str] = set()
    reserved_in_use: list[str] = []
    for cidr, b in blocks.items():
        result.block_affinities[cidr] = b.affinity
        owner = b.host or ""
        for ordinal, idx in enumerate(b.allocations):
            if idx is None:
                continue
            ip = str(b.ip_at(ordinal))
            alloc = Allocation(ip=ip, block=cidr, node=owner,
                               sequence_number=b.sequence_number_for(ordinal))
            if idx < len(b.attributes):
                attr = b.attributes[idx]
                secondary = attr.secondary or {}
                alloc.attrs = dict(secondary)
                if attr.handle_id == WINDOWS_RESERVED_HANDLE:
                    reserved_in_use.append(ip)
                elif attr.handle_id is not None:
                    alloc.handle = attr.handle_id
                    in_use_handles.add(attr.handle_id)
                alloc.node = secondary.get("node") or owner
                alloc.pod = secondary.get("pod", "")
                alloc.namespace = secondary.get("namespace", "")
                alloc.type = secondary.get("type", "")
                alloc.creation_timestamp = secondary.get("timestamp", "")
            alloc.borrowed = alloc.node != owner
            result.allocations.setdefault(ip, []).append(alloc)
        if b.affinity is None:
            if b.is_empty():
                result.empty_blocks_without_affinity.append(cidr)
            else:
                result.blocks_without_affinity.append(cidr)

    def in_use(ip: str, owner: str) -> None:
        result.in_use.setdefault(ip, []).append(owner)
        for a in result.allocations.get(ip, ()):
            a.in_use = True
            a.owners.append(owner)

    for ip in reserved_in_use:
        in_use(ip, "Reserved for Windows")

    # Pools.
    pools = resources.list("IPPool").items
    active = [ipaddress.ip_network(p.spec.cidr, strict=False) for p in pools
              if not p.spec.disabled]
    result.active_pools = [str(n) for n in active]

    # Nodes and their tunnel addresses.
    nodes = resources.list("Node").items
    node_names = {n.name for n in nodes}
    for n in nodes:
        for addr in _node_ips(n.spec):
            in_use(normalise_ip(addr), f"Node({n.name})")
            result.node_ips += 1

    # Workload endpoints.
    for w in resources.list("WorkloadEndpoint").items:
        for net in w.spec.ip_networks or ():
            in_use(normalise_ip(net), f"Workload({w.metadata.namespace}/{w.name})")
            result.workload_ips += 1

    # Handles.
    hkvs, _ = backend.list(keys.handle_prefix())
    for kv in hkvs:
        try:
            hid = keys.parse_handle_key(kv.key).handle_id
        except ValueError:
            continue
        result.handles[hid] = HandleInfo(hid, str(kv.mod_revision))

    # The findings.
    for ip in result.allocations:
        if ip not in result.in_use:
            result.leaked_ips.append(ip)
    for ip, owners in result.in_use.items():
        if len(owners) > 1:
            result.multiple_owners.append(ip)
        if ip in result.allocations:
            continue
        addr = ipaddress.ip_address(ip)
        if any(addr.version == p.version and addr in p for p in active):
            result.unallocated_in_use_ips.append(ip)
        else:
            result.not_in_pool_ips.append(ip)
    for hid, handle in result.handles.items():
        if hid in in_use_handles:
            result.good_handles += 1
        else:
            result.leaked_handles.append(handle)
    result.missing_handles = sorted(h for h in in_use_handles if h not in result.handles)
    result.leaked_ips.sort(key=_ip_order)

    # Affinities.
    akvs, _ = backend.list(keys.host_affinity_prefix())
    for kv in akvs:
        try:
            key = keys.parse_host_affinity_key(kv.key)
        except ValueError:
            continue
        if key.node not in node_names:
            result.affinities_of_missing_nodes.append((key.node, key.cidr))
        block = blocks.get(key.cidr)
        if block is None:
            result.stale_affinities.append((key.node, key.cidr, "its block does not exist"))
        elif not block.affine_to(key.node):
            result.stale_affinities.append(
                (key.node, key.cidr, f"the block's affinity is {block.affinity or 'none'}"))
        try:
            state = BlockAffinity.from_json(kv.value).state
        except ValueError:
            state = "unreadable"
        if state != STATE_CONFIRMED:
            result.unconfirmed_affinities.append((key.node, key.cidr, state))
    return result


def _ip_order(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    return addr.version, int(addr)


def _node_ips(spec: Any) -> list[str]:
    out: list[str] = []
    for addr in (spec.ipv4_vxlan_tunnel_addr, spec.ipv6_vxlan_tunnel_addr):
        if addr:
            out.append(addr)
    if spec.bgp is not None and spec.bgp.ipv4_ipip_tunnel_addr:
        out.append(spec.bgp.ipv4_ipip_tunnel_addr)
    if spec.wireguard is not None:
        for addr in (spec.wireguard.interface_ipv4_address,
                     spec.wireguard.interface_ipv6_address):
            if addr:
                out.append(addr)
    return out
