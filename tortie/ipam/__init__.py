"""Calico's block IPAM: pools cut into blocks, blocks affine to nodes, compare-and-swap writes.

Public API (the CNI plugin, tortie-node and tortiectl build on exactly this):

    from tortie.ipam import IPAMClient, AutoAssignArgs, AssignResult, IPAMError, PoolsExhausted

    ipam = IPAMClient(backend)                       # any tortie.datastore Backend
    ipam = IPAMClient(backend, watch=True)           # long-lived: pools/config watched
    res = ipam.auto_assign(AutoAssignArgs(num4=1, handle_id="net1.<cid>",
                                          attrs={"node": "node1", ...}, hostname="node1"))
    res.ipv4   # [IPv4Interface("10.65.0.5/26")]: the address with its block's prefix length
    ipam.assign_ip("10.65.0.9", "net1.<cid>", attrs, "node1")
    ipam.release_ips(["10.65.0.5"])                  # -> addresses that were not allocated
    ipam.release_by_handle("net1.<cid>")             # idempotent
    ipam.assign_tunnel_address("node1", "vxlan")     # handle vxlan-tunnel-addr-node1

Modules: `block` (the allocation block and its pure logic), `model` (handles, affinities,
config records), `pools` (which pools a request may use, block order), `client` (the datastore
side: reads, claims, compare-and-swap loops), `watch` (pools, reservations and config kept in
memory for long-lived clients), `check` (consistency report for `tortiectl ipam check`),
`errors`.
"""

from tortie.ipam.block import AllocationBlock, ReleaseOptions
from tortie.ipam.client import (
    AssignResult,
    AutoAssignArgs,
    BlockUtilization,
    IPAMClient,
    PoolUtilization,
)
from tortie.ipam.errors import (
    AddressInUse,
    AddressNotAssigned,
    BlockLimitReached,
    IPAMError,
    NoMatchingPool,
    NotInPool,
    PoolsExhausted,
    TooManyConflicts,
)
from tortie.ipam.model import IPAMConfig

__all__ = [
    "AddressInUse",
    "AddressNotAssigned",
    "AllocationBlock",
    "AssignResult",
    "AutoAssignArgs",
    "BlockLimitReached",
    "BlockUtilization",
    "IPAMClient",
    "IPAMConfig",
    "IPAMError",
    "NoMatchingPool",
    "NotInPool",
    "PoolUtilization",
    "PoolsExhausted",
    "ReleaseOptions",
    "TooManyConflicts",
]
