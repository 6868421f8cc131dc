"""The allocation block: libcalico-go's `AllocationBlock` and the pure logic on it (no I/O).

A block is one block-sized CIDR of a pool (a /26 by default), stored at
`/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26` as JSON, exactly as libcalico-go writes it
(`lib/backend/model/block.go`):

    {"cidr": "10.65.0.0/26", "affinity": "host:node1",
     "allocations": [0, null, 1, ...],        # per ordinal: index into attributes, or null
     "unallocated": [3, 4, ..., 1],            # free ordinals, in the order they will be used
     "attributes": [{"handle_id": "net1.abc", "secondary": {"node": "node1", ...}}, ...],
     "sequenceNumber": 1712345678901234567, "sequenceNumberForAllocation": {"0": ...},
     "deleted": false}

plus `affinityClaimTime` (RFC 3339) when the block was claimed by a node, as newer Calico does.

What lives here, following `lib/ipam/ipam_block.go`:

- `auto_assign`: take free ordinals from the *front* of `unallocated`, skipping reserved
  addresses (they stay where they are), and point them at one shared attribute entry.
- `assign`: take one given address.
- `release` / `release_by_handle`: free ordinals and append them to the *end* of
  `unallocated`, so a freed address is reused last (FIFO), never immediately; attribute entries
  nobody references any more are deleted and the indexes compacted.
- sequence numbers: every write bumps the block's `sequenceNumber`; each allocation records
  the number it was made at, so a release based on stale information (`ipam release
  --from-report`) can be refused.

The IP-address filter for IPReservations (`AddressFilter`, `ReservedCIDRs`) is here too: the
block consults it, and it is pure.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tortie.ipam.errors import IPAMError

__all__ = [
    "NO_RESERVATIONS",
    "WINDOWS_RESERVED_HANDLE",
    "AddressFilter",
    "AffinityMismatch",
    "AllocationAttribute",
    "AllocationBlock",
    "AlreadyAssigned",
    "BlockError",
    "IPAddress",
    "Network",
    "ReleaseConflict",
    "ReleaseOptions",
    "ReservedCIDRs",
    "block_cidr_for",
    "sanitize_handle",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Handle of the addresses Calico pre-allocates in blocks owned by Windows nodes.
WINDOWS_RESERVED_HANDLE = "windows-reserved-ipam-handle"


class BlockError(IPAMError):
    """A block operation is not possible (an IPAMError, so none escapes unexplained)."""


class AffinityMismatch(BlockError):
    """Strict affinity is on and the block does not belong to this host."""


class AlreadyAssigned(BlockError):
    def __init__(self, ip: IPAddress, handle: str | None) -> None:
        super().__init__(f"IP {ip} is already assigned")
        self.ip = ip
        self.handle = handle


class ReleaseConflict(BlockError):
    """A release named a handle or sequence number that no longer matches the allocation."""


def sanitize_handle(handle: str) -> str:
    """Drop anything after a carriage return, as libcalico-go does for old malformed handles."""
    return handle.split("\r", 1)[0]


def block_cidr_for(ip: IPAddress, block_size: int) -> Network:
    """The block (of `block_size` prefix length) that holds `ip`."""
    return ipaddress.ip_network(f"{ip}/{block_size}", strict=False)


# ---------------------------------------------------------------------------------------------
# Reservations (IPReservation resources): addresses auto-assignment must never hand out.


class AddressFilter(Protocol):
    def matches_ip(self, ip: IPAddress) -> bool: ...

    def matches_whole_cidr(self, net: Network) -> bool: ...

    def matches_some(self, net: Network) -> bool: ...


class _NoReservations:
    def matches_ip(self, ip: IPAddress) -> bool:
        return False

    def matches_whole_cidr(self, net: Network) -> bool:
        return False

    def matches_some(self, net: Network) -> bool:
        return False


NO_RESERVATIONS: AddressFilter = _NoReservations()


class ReservedCIDRs:
    """The reserved CIDRs of every IPReservation (libcalico-go's `cidrSliceFilter`)."""

    def __init__(self, cidrs: Iterable[Network]) -> None:
        # Largest first, dropping any CIDR inside another: the rest are disjoint.
        nets = sorted(set(cidrs), key=lambda n: (n.version, n.prefixlen))
        kept: list[Network] = []
        for net in nets:
            if not any(k.version == net.version and net.subnet_of(k) for k in kept):  # type: ignore[arg-type]
                kept.append(net)
        self.cidrs = kept

    def __bool__(self) -> bool:
        return bool(self.cidrs)

    def matches_ip(self, ip: IPAddress) -> bool:
        return any(ip in c for c in self.cidrs)

    def matches_some(self, net: Network) -> bool:
        return any(c.version == net.version and c.overlaps(net) for c in self.cidrs)  # type: ignore[arg-type]

    def matches_whole_cidr(self, net: Network) -> bool:
        covered = 0
        for c in self.cidrs:
            if c.version != net.version:
                continue
            if net.subnet_of(c):  # type: ignore[arg-type]
                return True
            if c.subnet_of(net):  # type: ignore[arg-type]
                covered += c.num_addresses
        return covered == net.num_addresses


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReleaseOptions:
    """One address to release; with `handle` / `sequence_number` the release is refused when
    the allocation no longer matches them (libcalico-go's `ReleaseOptions`)."""

    address: str
    handle: str | None = None
    sequence_number: int | None = None


@dataclass(slots=True)
class AllocationAttribute:
    """libcalico-go's `AllocationAttribute`: the handle and the free-form attributes."""

    handle_id: str | None = None
    secondary: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"handle_id": self.handle_id, "secondary": self.secondary}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AllocationAttribute:
        secondary = data.get("secondary")
        return cls(data.get("handle_id"), dict(secondary) if secondary is not None else None)


@dataclass
class AllocationBlock:
    """One allocation block (see the module docstring for the JSON)."""

    cidr: Network
    affinity: str | None = None
    allocations: list[int | None] = field(default_factory=list)
    unallocated: list[int] = field(default_factory=list)
    attributes: list[AllocationAttribute] = field(default_factory=list)
    sequence_number: int = 0
    sequence_number_for_allocation: dict[str, int] = field(default_factory=dict)
    deleted: bool = False
    affinity_claim_time: str | None = None
    #: Fields we do not interpret (e.g. the deprecated `hostAffinity`), written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    # -- construction and JSON -----------------------------------------------------------------

    @classmethod
    def new(
        cls,
        cidr: Network | str,
        affinity: str | None = None,
        *,
        claim_time: str | None = None,
        sequence_number: int | None = None,
    ) -> AllocationBlock:
        """An empty block: every ordinal free, in order. Like Calico, the sequence number starts
        at the current time in nanoseconds, so a deleted and recreated block never repeats one."""
        net = ipaddress.ip_network(cidr) if isinstance(cidr, str) else cidr
        n = net.num_addresses
        return cls(
            cidr=net,
            affinity=affinity,
            allocations=[None] * n,
            unallocated=list(range(n)),
            sequence_number=time.time_ns() if sequence_number is None else sequence_number,
            affinity_claim_time=claim_time,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> AllocationBlock:
        data = json.loads(raw)
        net = ipaddress.ip_network(data["cidr"])
        n = net.num_addresses
        allocations = data.get("allocations")
        if allocations is None:
            allocations = [None] * n
        extra = {
            k: v
            for k, v in data.items()
            if k
            not in (
                "cidr", "affinity", "affinityClaimTime", "allocations", "unallocated",
                "attributes", "sequenceNumber", "sequenceNumberForAllocation", "deleted",
            )
        }
        return cls(
            cidr=net,
            affinity=data.get("affinity"),
            allocations=list(allocations),
            unallocated=list(data.get("unallocated") or ()),
            attributes=[AllocationAttribute.from_json(a) for a in data.get("attributes") or ()],
            sequence_number=int(data.get("sequenceNumber") or 0),
            sequence_number_for_allocation={
                str(k): int(v) for k, v in (data.get("sequenceNumberForAllocation") or {}).items()
            },
            deleted=bool(data.get("deleted", False)),
            affinity_claim_time=data.get("affinityClaimTime"),
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cidr": str(self.cidr), "affinity": self.affinity}
        if self.affinity_claim_time:
            out["affinityClaimTime"] = self.affinity_claim_time
        out["allocations"] = self.allocations
        out["unallocated"] = self.unallocated
        out["attributes"] = [a.to_json() for a in self.attributes]
        out["sequenceNumber"] = self.sequence_number
        out["sequenceNumberForAllocation"] = self.sequence_number_for_allocation
        out["deleted"] = self.deleted
        out.update(self.extra)
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    # -- geometry ------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.cidr.version

    @property
    def num_addresses(self) -> int:
        return len(self.allocations)

    def ordinal(self, ip: IPAddress | str) -> int:
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        ordinal = int(addr) - int(self.cidr.network_address)
        if addr.version != self.cidr.version or not 0 <= ordinal < self.num_addresses:
            raise BlockError(f"IP {addr} is not in block {self.cidr}")
        return ordinal

    def ip_at(self, ordinal: int) -> IPAddress:
        return self.cidr.network_address + ordinal

    # -- affinity ------------------------------------------------------------------------------

    @property
    def host(self) -> str | None:
        """The node this block is affine to (`affinity: "host:<node>"`), or None."""
        if self.affinity and self.affinity.startswith("host:"):
            return self.affinity[5:]
        return None

    def affine_to(self, host: str) -> bool:
        return self.affinity == f"host:{host}"

    def _check_affinity(self, host: str, affinity_check: bool) -> None:
        if not affinity_check:
            return
        if self.affinity is None:
            raise AffinityMismatch(
                f"block {self.cidr} has no affinity and strict affinity is enabled"
            )
        if not self.affine_to(host):
            raise AffinityMismatch(
                f"block {self.cidr} is affine to {self.affinity}, not host:{host}, and strict "
                "affinity is enabled"
            )

    # -- queries -------------------------------------------------------------------------------

    def is_empty(self) -> bool:
        """No address in use (Windows' pre-reserved addresses do not count), as Calico."""
        for idx in self.allocations:
            if idx is None:
                continue
            handle = self.attributes[idx].handle_id if idx < len(self.attributes) else None
            if handle is None or handle.lower() != WINDOWS_RESERVED_HANDLE:
                return False
        return True

    def in_use_count(self) -> int:
        return sum(1 for a in self.allocations if a is not None)

    def in_use_ips(self) -> list[IPAddress]:
        return [self.ip_at(o) for o, a in enumerate(self.allocations) if a is not None]

    def num_free(self, reserved: AddressFilter = NO_RESERVATIONS) -> int:
        """Free addresses auto-assignment could hand out (reserved ones excluded)."""
        if reserved.matches_whole_cidr(self.cidr):
            return 0
        if reserved.matches_some(self.cidr):
            return sum(1 for o in self.unallocated if not reserved.matches_ip(self.ip_at(o)))
        return len(self.unallocated)

    def attributes_for(self, ip: IPAddress | str) -> AllocationAttribute | None:
        """The allocation's attribute entry, or None when the address is free."""
        idx = self.allocations[self.ordinal(ip)]
        if idx is None:
            return None
        if idx >= len(self.attributes):
            return AllocationAttribute()
        attr = self.attributes[idx]
        handle = sanitize_handle(attr.handle_id) if attr.handle_id is not None else None
        return AllocationAttribute(handle, attr.secondary)

    def _indexes_for_handle(self, handle: str) -> set[int]:
        return {
            i
            for i, a in enumerate(self.attributes)
            if a.handle_id is not None and sanitize_handle(a.handle_id) == handle
        }

    def ips_by_handle(self, handle: str) -> list[IPAddress]:
        wanted = self._indexes_for_handle(handle)
        if not wanted:
            return []
        return [self.ip_at(o) for o, a in enumerate(self.allocations) if a in wanted]

    def sequence_number_for(self, ordinal: int) -> int:
        return self.sequence_number_for_allocation.get(str(ordinal), 0)

    # -- changes -------------------------------------------------------------------------------

    def _attribute_index(self, handle: str | None, attrs: dict[str, str] | None) -> int:
        wanted = AllocationAttribute(handle, dict(attrs) if attrs is not None else None)
        for i, existing in enumerate(self.attributes):
            if existing == wanted:
                return i
        self.attributes.append(wanted)
        return len(self.attributes) - 1

    def auto_assign(
        self,
        num: int,
        handle: str | None,
        attrs: dict[str, str] | None,
        *,
        host: str,
        affinity_check: bool,
        reserved: AddressFilter = NO_RESERVATIONS,
    ) -> list[IPAddress]:
        """Allocate up to `num` addresses from the front of the free list; return them.

        Reserved addresses are skipped and keep their place in the free list. With
        `affinity_check` (strict affinity) the block must be affine to `host`.
        """
        self._check_affinity(host, affinity_check)
        if num <= 0:
            return []
        check_reserved = reserved.matches_some(self.cidr)
        taken: list[IPAddress] = []
        keep: list[int] = []
        attr_index: int | None = None
        for pos, ordinal in enumerate(self.unallocated):
            if len(taken) >= num:
                keep.extend(self.unallocated[pos:])
                break
            addr = self.ip_at(ordinal)
            if check_reserved and reserved.matches_ip(addr):
                keep.append(ordinal)
                continue
            if attr_index is None:
                attr_index = self._attribute_index(handle, attrs)
            self.allocations[ordinal] = attr_index
            self.sequence_number_for_allocation[str(ordinal)] = self.sequence_number
            taken.append(addr)
        self.unallocated = keep
        return taken

    def assign(
        self,
        ip: IPAddress | str,
        handle: str | None,
        attrs: dict[str, str] | None,
        *,
        host: str,
        affinity_check: bool,
    ) -> None:
        """Allocate one given address; raise AlreadyAssigned if it is taken."""
        self._check_affinity(host, affinity_check)
        ordinal = self.ordinal(ip)
        current = self.allocations[ordinal]
        if current is not None:
            held = self.attributes[current].handle_id if current < len(self.attributes) else None
            raise AlreadyAssigned(self.ip_at(ordinal), held)
        self.allocations[ordinal] = self._attribute_index(handle, attrs)
        self.sequence_number_for_allocation[str(ordinal)] = self.sequence_number
        try:
            self.unallocated.remove(ordinal)
        except ValueError:
            pass  # inconsistent block (not in the free list): taking it is still right

    def release(
        self, options: Sequence[ReleaseOptions]
    ) -> tuple[list[IPAddress], dict[str, int]]:
        """Free the given addresses; return (those that were not allocated, count per handle).

        A handle or sequence number in the options that no longer matches the allocation makes
        the whole release fail (ReleaseConflict) and changes nothing, as libcalico-go does.
        """
        unallocated: list[IPAddress] = []
        counts: dict[str, int] = {}
        ordinals: list[int] = []
        seen: set[int] = set()
        for opt in options:
            ordinal = self.ordinal(opt.address)
            if ordinal in seen:
                continue
            seen.add(ordinal)
            idx = self.allocations[ordinal]
            if (
                opt.sequence_number is not None
                and opt.sequence_number != self.sequence_number_for(ordinal)
            ):
                raise ReleaseConflict(
                    f"IP {self.ip_at(ordinal)} was reassigned since it was reported (sequence "
                    f"number {self.sequence_number_for(ordinal)}, report says "
                    f"{opt.sequence_number}): generate a new report"
                )
            if idx is None:
                unallocated.append(self.ip_at(ordinal))
                continue
            held = self.attributes[idx].handle_id if idx < len(self.attributes) else None
            held = sanitize_handle(held) if held is not None else ""
            if opt.handle and held != opt.handle:
                raise ReleaseConflict(
                    f"IP {self.ip_at(ordinal)} now belongs to handle {held or '<none>'}, not "
                    f"{opt.handle}: generate a new report"
                )
            ordinals.append(ordinal)
            if held:
                counts[held] = counts.get(held, 0) + 1
        self._free(ordinals)
        return unallocated, counts

    def release_by_handle(self, handle: str, sequence_number: int | None = None) -> int:
        """Free every address held by `handle`; return how many were freed."""
        wanted = self._indexes_for_handle(handle)
        if not wanted:
            return 0
        ordinals = [
            o
            for o, a in enumerate(self.allocations)
            if a in wanted
            and (sequence_number is None or self.sequence_number_for(o) == sequence_number)
        ]
        self._free(ordinals)
        return len(ordinals)

    def _free(self, ordinals: list[int]) -> None:
        if not ordinals:
            return
        released: dict[int, int] = {}
        for o in ordinals:
            idx = self.allocations[o]
            if idx is not None:
                released[idx] = released.get(idx, 0) + 1
        refs: dict[int, int] = {}
        for a in self.allocations:
            if a is not None:
                refs[a] = refs.get(a, 0) + 1
        dead = {idx for idx, n in released.items() if refs.get(idx) == n}
        for o in ordinals:
            self.allocations[o] = None
            self.unallocated.append(o)
            self.sequence_number_for_allocation.pop(str(o), None)
        if dead:
            self._delete_attributes(dead)

    def _delete_attributes(self, dead: set[int]) -> None:
        """Drop attribute entries and renumber the allocations that point past them."""
        new_index: dict[int, int] = {}
        kept: list[AllocationAttribute] = []
        for i, attr in enumerate(self.attributes):
            if i in dead:
                continue
            new_index[i] = len(kept)
            kept.append(attr)
        self.attributes = kept
        self.allocations = [
            new_index.get(a) if a is not None else None for a in self.allocations
        ]
