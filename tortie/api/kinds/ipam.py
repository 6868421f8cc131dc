"""IP address management kinds: IPPool, IPReservation and IPAMConfiguration.

Defaults and rules follow libcalico-go (``clientv3/ippool.go`` ``validateAndSetDefaults`` and
``validator/v3/validator.go`` ``validateIPPoolSpec``):

- ``cidr`` is required and must be a subnet (``10.244.0.0/16``, not a bare IP); it is
  normalised to its network (``10.244.0.1/16`` is stored as ``10.244.0.0/16``), as Calico does.
- ``blockSize`` defaults to 26 (IPv4) or 122 (IPv6) and must be 20-32 or 116-128; an enabled
  pool must be at least one block big.
- ``ipipMode``/``vxlanMode`` default to ``Never``; they cannot both be enabled, and IPIP is
  IPv4 only. Pools may not overlap the link-local ranges 169.254.0.0/16 and fe80::/10 (those are
  Calico's only reserved-range rules; loopback and multicast pools are not rejected by Calico).
- ``nodeSelector`` defaults to ``all()``, ``allowedUses`` to ``[Workload, Tunnel]`` and
  ``assignmentMode`` to ``Automatic``. A ``LoadBalancer`` pool is for nothing else, uses no
  encapsulation, exports its routes and selects ``all()`` nodes.

Rules that need the other pools in the datastore (no overlapping pools; ``cidr`` and
``blockSize`` never change) are ``overlapping_pool`` and ``pool_update_errors``, for the
datastore client to call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, ClassVar

import msgspec

from tortie.api.base import ApiStruct, Ctx, Resource, join
from tortie.api.errors import FieldError
from tortie.api.kinds.common import (
    ENABLED_DISABLED,
    check_cidr_or_ip,
    check_int_range,
    check_singleton_name,
    parse_network,
)
from tortie.api.registry import Column, name_column, register, spec_column
from tortie.api.validators import check_one_of, check_selector

ENCAP_MODES = ("Never", "Always", "CrossSubnet")
ALLOWED_USES = ("Workload", "Tunnel", "LoadBalancer")
DEFAULT_ALLOWED_USES = ("Workload", "Tunnel")
ASSIGNMENT_MODES = ("Automatic", "Manual")
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
LINK_LOCAL = {
    4: ipaddress.ip_network("169.254.0.0/16"),
    6: ipaddress.ip_network("fe80::/10"),
}
MAX_BLOCKS_PER_HOST = 1_000_000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def pool_network(cidr: str | None) -> Network | None:
    """The pool's network, or None when ``cidr`` is not a subnet (Calico wants the ``/len``)."""
    if not cidr or "/" not in cidr:
        return None
    return parse_network(cidr)


def _enabled(mode: str | None) -> bool:
    return mode in ("Always", "CrossSubnet")


# --- IPPool ------------------------------------------------------------------------------------


class IPPoolStatus(ApiStruct):
    """Written by Calico's controllers (``Allocatable`` condition); kept as given."""

    conditions: list[dict[str, Any]] | None = None


class IPPoolSpec(ApiStruct):
    cidr: str
    vxlan_mode: str | None = None
    ipip_mode: str | None = None
    nat_outgoing: bool = False
    disabled: bool = False
    disable_bgp_export: bool = msgspec.field(default=False, name="disableBGPExport")
    block_size: int | None = None
    node_selector: str | None = None
    namespace_selector: str | None = None
    allowed_uses: list[str] | None = None
    assignment_mode: str | None = None

    @property
    def network(self) -> Network | None:
        return pool_network(self.cidr)

    @property
    def is_load_balancer(self) -> bool:
        return "LoadBalancer" in (self.allowed_uses or ())

    def check(self, ctx: Ctx, path: str) -> None:
        self._check_cidr(ctx, path)
        for field, mode in (("ipipMode", self.ipip_mode), ("vxlanMode", self.vxlan_mode)):
            check_one_of(ctx, join(path, field), mode, ENCAP_MODES)
        if _enabled(self.ipip_mode) and _enabled(self.vxlan_mode):
            ctx.error(
                join(path, "vxlanMode"),
                "cannot enable both VXLAN and IPIP on the same IP pool: set one of ipipMode "
                "and vxlanMode to Never",
            )
        net = self.network
        if net is not None and net.version == 6 and _enabled(self.ipip_mode):
            ctx.error(join(path, "ipipMode"), "IPIP is not supported on an IPv6 pool: use Never")
        self._check_allowed_uses(ctx, path)
        check_one_of(ctx, join(path, "assignmentMode"), self.assignment_mode, ASSIGNMENT_MODES)
        check_selector(ctx, join(path, "nodeSelector"), self.node_selector)
        check_selector(ctx, join(path, "namespaceSelector"), self.namespace_selector)

    def _check_cidr(self, ctx: Ctx, path: str) -> None:
        where = join(path, "cidr")
        if not self.cidr:
            ctx.error(where, "IP pool CIDR must be specified")
            return
        net = self.network
        if net is None:
            ctx.error(
                where,
                f"invalid pool CIDR {self.cidr!r}: expected a subnet such as 10.244.0.0/16",
            )
            return
        lo, hi = BLOCK_SIZE_RANGE[net.version]
        size = self.block_size
        if size is not None and not lo <= size <= hi:
            ctx.error(
                join(path, "blockSize"),
                f"IPv{net.version} block size must be between {lo} and {hi} (got {size})",
            )
        elif size is not None and not self.disabled and net.prefixlen > size:
            ctx.error(
                where,
                f"IP pool {net} is smaller than one /{size} block: use a pool of /{size} or "
                "larger, or a smaller blockSize",
            )
        if net.overlaps(LINK_LOCAL[net.version]):
            ctx.error(
                where,
                f"IP pool {net} overlaps the IPv{net.version} link-local range "
                f"{LINK_LOCAL[net.version]}",
            )

    def _check_allowed_uses(self, ctx: Ctx, path: str) -> None:
        where = join(path, "allowedUses")
        uses = self.allowed_uses or []
        for i, use in enumerate(uses):
            check_one_of(ctx, f"{where}[{i}]", use, ALLOWED_USES)
        if len(set(uses)) != len(uses):
            ctx.error(where, "each use may be listed only once")
        if not self.is_load_balancer:
            return
        others = [u for u in uses if u != "LoadBalancer"]
        if others:
            ctx.error(
                where,
                f"LoadBalancer cannot be used at the same time as: {', '.join(others)}",
            )
        for field, mode in (("ipipMode", self.ipip_mode), ("vxlanMode", self.vxlan_mode)):
            if _enabled(mode):
                ctx.error(join(path, field), "a LoadBalancer IP pool cannot use IPIP or VXLAN")
        if self.disable_bgp_export:
            ctx.error(
                join(path, "disableBGPExport"),
                "a LoadBalancer IP pool's routes are always exported: disableBGPExport "
                "cannot be true",
            )
        if self.node_selector not in (None, "", "all()"):
            ctx.error(
                join(path, "nodeSelector"),
                "a LoadBalancer IP pool must select all nodes: nodeSelector must be all()",
            )


def _ipip_mode(r: Resource) -> str:
    return r.spec.ipip_mode or "Never"  # type: ignore[attr-defined]


def _vxlan_mode(r: Resource) -> str:
    return r.spec.vxlan_mode or "Never"  # type: ignore[attr-defined]


_POOL_COLUMNS: tuple[Column, ...] = (
    name_column(),
    spec_column("CIDR", "cidr"),
    spec_column("SELECTOR", "node_selector"),
)
_POOL_WIDE: tuple[Column, ...] = (
    name_column(),
    spec_column("CIDR", "cidr"),
    spec_column("NAT", "nat_outgoing"),
    ("IPIPMODE", _ipip_mode),
    ("VXLANMODE", _vxlan_mode),
    spec_column("DISABLED", "disabled"),
    spec_column("DISABLEBGPEXPORT", "disable_bgp_export"),
    spec_column("SELECTOR", "node_selector"),
)


@register(
    "ippools",
    aliases=("ippool", "ipp", "ipps", "pool", "pools"),
    columns=_POOL_COLUMNS,
    wide_columns=_POOL_WIDE,
)
class IPPool(Resource, kw_only=True):
    KIND: ClassVar[str] = "IPPool"
    spec: IPPoolSpec
    status: IPPoolStatus | None = None

    def apply_defaults(self) -> None:
        spec = self.spec
        net = spec.network
        if net is not None:
            spec.cidr = str(net)
            if spec.block_size is None or spec.block_size == 0:
                spec.block_size = DEFAULT_BLOCK_SIZE[net.version]
        if not spec.node_selector:
            spec.node_selector = "all()"
        if not spec.allowed_uses:
            spec.allowed_uses = list(DEFAULT_ALLOWED_USES)
        if spec.assignment_mode is None:
            spec.assignment_mode = "Automatic"
        if not spec.ipip_mode:
            spec.ipip_mode = "Never"
        if not spec.vxlan_mode:
            spec.vxlan_mode = "Never"


def overlapping_pool(pool: IPPool, others: Iterable[IPPool]) -> IPPool | None:
    """The first of ``others`` (other than ``pool`` itself) whose CIDR overlaps ``pool``'s."""
    net = pool.spec.network
    if net is None:
        return None
    for other in others:
        other_net = other.spec.network
        if other.name == pool.name or other_net is None or other_net.version != net.version:
            continue
        if other_net.overlaps(net):
            return other
    return None


def pool_update_errors(old: IPPool, new: IPPool) -> list[FieldError]:
    """What Calico refuses when a pool is updated: its CIDR, block size or LoadBalancer use."""
    errors: list[FieldError] = []
    if old.spec.network != new.spec.network:
        errors.append(
            FieldError("spec.cidr", f"an IP pool's CIDR cannot be changed (was {old.spec.cidr})")
        )
    if old.spec.block_size != new.spec.block_size:
        errors.append(
            FieldError(
                "spec.blockSize",
                f"an IP pool's block size cannot be changed (was {old.spec.block_size})",
            )
        )
    if old.spec.is_load_balancer and any(u != "LoadBalancer" for u in new.spec.allowed_uses or ()):
        errors.append(
            FieldError(
                "spec.allowedUses",
                "an IP pool's allowed use cannot be changed from LoadBalancer to Workload or "
                "Tunnel",
            )
        )
    return errors


# --- IPReservation -----------------------------------------------------------------------------


class IPReservationSpec(ApiStruct):
    reserved_cidrs: list[str] | None = msgspec.field(default=None, name="reservedCIDRs")

    def check(self, ctx: Ctx, path: str) -> None:
        for i, cidr in enumerate(self.reserved_cidrs or []):
            check_cidr_or_ip(ctx, f"{join(path, 'reservedCIDRs')}[{i}]", cidr)


def _reserved_cidrs(r: Resource) -> str:
    text = ",".join(r.spec.reserved_cidrs or [])  # type: ignore[attr-defined]
    return text if len(text) <= 80 else text[:77] + "..."


@register(
    "ipreservations",
    aliases=("ipreservation", "reservation", "reservations"),
    columns=(name_column(),),
    wide_columns=(name_column(), ("CIDRS", _reserved_cidrs)),
)
class IPReservation(Resource):
    KIND: ClassVar[str] = "IPReservation"
    spec: IPReservationSpec = msgspec.field(default_factory=IPReservationSpec)


# --- IPAMConfiguration -------------------------------------------------------------------------


class IPAMConfigurationSpec(ApiStruct):
    strict_affinity: bool | None = None
    max_blocks_per_host: int | None = None
    auto_allocate_blocks: bool | None = None
    min_ip_reclaim_age_seconds: int | None = msgspec.field(
        default=None, name="minIPReclaimAgeSeconds"
    )
    kube_virt_vm_address_persistence: str | None = msgspec.field(
        default=None, name="kubeVirtVMAddressPersistence"
    )

    def check(self, ctx: Ctx, path: str) -> None:
        check_int_range(
            ctx, join(path, "maxBlocksPerHost"), self.max_blocks_per_host, 0, MAX_BLOCKS_PER_HOST
        )
        check_one_of(
            ctx,
            join(path, "kubeVirtVMAddressPersistence"),
            self.kube_virt_vm_address_persistence,
            ENABLED_DISABLED,
        )


@register(
    "ipamconfigurations",
    aliases=("ipamconfiguration", "ipamconfig", "ipamconfigs"),
    columns=(
        name_column(),
        spec_column("STRICTAFFINITY", "strict_affinity"),
        spec_column("AUTOALLOCATEBLOCKS", "auto_allocate_blocks"),
    ),
    wide_columns=(
        name_column(),
        spec_column("STRICTAFFINITY", "strict_affinity"),
        spec_column("AUTOALLOCATEBLOCKS", "auto_allocate_blocks"),
        spec_column("MAXBLOCKSPERHOST", "max_blocks_per_host", "0"),
    ),
)
class IPAMConfiguration(Resource):
    """Cluster-wide IPAM settings; there is one, named ``default``.

    ``strictAffinity`` and ``autoAllocateBlocks`` are always written (Calico's Go types have
    no ``omitempty`` on them), defaulting to false and true as Calico's CRD does.
    """

    KIND: ClassVar[str] = "IPAMConfiguration"
    spec: IPAMConfigurationSpec = msgspec.field(default_factory=IPAMConfigurationSpec)

    def apply_defaults(self) -> None:
        if self.spec.strict_affinity is None:
            self.spec.strict_affinity = False
        if self.spec.auto_allocate_blocks is None:
            self.spec.auto_allocate_blocks = True

    def check_name(self, ctx: Ctx) -> None:
        check_singleton_name(ctx, self)
