"""Which pools a request may use, and in which order to walk their blocks (pure; no I/O).

Follows libcalico-go's `ipam.go` (`determinePools`, `filterPoolsByUse`), `pools.go`
(`SelectsNode`, `SelectsNamespace`) and `ipam_block_reader_writer.go`
(`randomBlockGenerator`, `determineSeed`):

- Only enabled pools of the request's IP version count, sorted by name.
- Pools named in the request (by CIDR or name) are used as given, ignoring their selectors; one
  that does not exist or is disabled is an error.
- Otherwise a pool qualifies when its `assignmentMode` is Automatic, its `nodeSelector` matches
  the Node's labels and its `namespaceSelector` matches the namespace's labels.
- Then the pool must allow the intended use (`allowedUses`: Workload, Tunnel).
- A node walks a pool's blocks from a pseudo-random starting block derived from its name (FNV-1
  32-bit hash of the hostname as the seed; Python's generator, not Go's, so the exact block
  differs from Calico's), wrapping around, so that nodes spread over the pool and one node
  keeps choosing the same area. Pools of single-address blocks use a time-based seed.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tortie.ipam.block import IPAddress, Network, ReservedCIDRs
from tortie.ipam.errors import IPAMError, NoMatchingPool

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "Pool",
    "block_generator",
    "determine_pools",
    "fnv1_32",
    "pool_for_ip",
    "random_block_generator",
    "reservations_from",
    "resolve_requested",
]

DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
DEFAULT_ALLOWED_USES = ("Workload", "Tunnel")
_TRIVIAL_SELECTORS = ("", "all()")


@dataclass(frozen=True)
class Pool:
    """The parts of an IPPool that IPAM needs."""

    name: str
    cidr: Network
    block_size: int
    disabled: bool = False
    node_selector: str = ""
    namespace_selector: str = ""
    allowed_uses: tuple[str, ...] = DEFAULT_ALLOWED_USES
    assignment_mode: str = "Automatic"
    vxlan_mode: str = "Never"
    ipip_mode: str = "Never"

    @classmethod
    def from_resource(cls, res: Any) -> Pool:
        """Build from an `IPPool` resource (as the ResourceClient returns it)."""
        spec = res.spec
        net = ipaddress.ip_network(spec.cidr, strict=False)
        return cls(
            name=res.name,
            cidr=net,
            block_size=spec.block_size or DEFAULT_BLOCK_SIZE[net.version],
            disabled=bool(spec.disabled),
            node_selector=(spec.node_selector or "").strip(),
            namespace_selector=(spec.namespace_selector or "").strip(),
            allowed_uses=tuple(spec.allowed_uses or DEFAULT_ALLOWED_USES),
            assignment_mode=spec.assignment_mode or "Automatic",
            vxlan_mode=spec.vxlan_mode or "Never",
            ipip_mode=spec.ipip_mode or "Never",
        )

    @property
    def version(self) -> int:
        return self.cidr.version

    @property
    def num_blocks(self) -> int:
        return 1 << max(0, self.block_size - self.cidr.prefixlen)

    @property
    def needs_node_labels(self) -> bool:
        return self.node_selector not in _TRIVIAL_SELECTORS

    def selects_node(self, labels: dict[str, str]) -> bool:
        return _matches(self.node_selector, labels, self.name, "nodeSelector")

    def selects_namespace(self, labels: dict[str, str] | None) -> bool:
        return _matches(self.namespace_selector, labels or {}, self.name, "namespaceSelector")

    def allows(self, use: str) -> bool:
        return use in self.allowed_uses

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.cidr.version and ip in self.cidr

    def block_for(self, ip: IPAddress) -> Network:
        return ipaddress.ip_network(f"{ip}/{self.block_size}", strict=False)


def _matches(selector: str, labels: dict[str, str], pool: str, field: str) -> bool:
    if selector in _TRIVIAL_SELECTORS:
        return True
    from tortie.selector import SelectorError, parse_cached

    try:
        return parse_cached(selector).matches(labels)
    except SelectorError as exc:
        raise IPAMError(f"IP pool {pool} has an invalid {field} {selector!r}: {exc}") from None


def reservations_from(resources: Iterable[Any]) -> ReservedCIDRs:
    """The reserved CIDRs of IPReservation resources (bare addresses count as /32 or /128)."""
    nets: list[Network] = []
    for res in resources:
        for text in res.spec.reserved_cidrs or ():
            text = text.strip()
            if not text:
                continue
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                continue  # validation keeps these out; ignore rather than fail every request
    return ReservedCIDRs(nets)


def pool_for_ip(pools: Iterable[Pool], ip: IPAddress) -> Pool | None:
    for pool in pools:
        if pool.contains(ip):
            return pool
    return None


def resolve_requested(
    requested: Sequence[str], enabled: Sequence[Pool], version: int
) -> list[Pool]:
    """The enabled pools named in a request, by CIDR or by name; raise for unknown ones."""
    by_cidr = {str(p.cidr): p for p in enabled}
    by_name = {p.name: p for p in enabled}
    out: list[Pool] = []
    for item in requested:
        text = item.strip()
        pool: Pool | None
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            pool = by_name.get(text)
        else:
            if net.version != version:
                raise IPAMError(
                    f"the IPv{version} pool list contains an IPv{net.version} pool ({text})"
                )
            pool = by_cidr.get(str(net))
        if pool is None:
            raise NoMatchingPool(
                f"the given pool ({text}) does not exist, or is not enabled: check "
                "`tortiectl get ippools -o wide`"
            )
        if pool not in out:
            out.append(pool)
    return out


def determine_pools(
    pools: Sequence[Pool],
    *,
    version: int,
    requested: Sequence[str],
    node: str,
    node_labels: dict[str, str] | None,
    namespace_labels: dict[str, str] | None,
    use: str,
) -> tuple[list[Pool], list[Pool]]:
    """Return (the pools this request may allocate from, the enabled pools selecting the node).

    `node_labels` is None when the Node resource does not exist; that is only an error when a
    pool's nodeSelector actually needs the labels.
    """
    enabled = sorted(
        (p for p in pools if p.version == version and not p.disabled), key=lambda p: p.name
    )
    if not enabled:
        raise NoMatchingPool(
            f"no enabled IPv{version} IP pool: create one (tortiectl apply -f pool.yaml) or "
            "enable an existing one"
        )
    if requested:
        chosen = resolve_requested(requested, enabled, version)
        selecting = chosen
    else:

        def selects(pool: Pool) -> bool:
            if pool.needs_node_labels and node_labels is None:
                raise NoMatchingPool(
                    f"node {node} does not exist, so IP pool {pool.name}'s nodeSelector "
                    f"{pool.node_selector!r} cannot be evaluated: create the Node resource "
                    "(tortie-node does) before assigning addresses"
                )
            return pool.selects_node(node_labels or {})

        selecting = [p for p in enabled if selects(p)]
        chosen = [
            p
            for p in selecting
            if p.assignment_mode == "Automatic" and p.selects_namespace(namespace_labels)
        ]
        if not chosen:
            raise NoMatchingPool(
                f"no IPv{version} pool matches node {node}: check the pools' nodeSelector, "
                "namespaceSelector and assignmentMode (tortiectl get ippools -o yaml)"
            )
    allowed = [p for p in chosen if p.allows(use)]
    if not allowed:
        names = ", ".join(p.name for p in chosen)
        raise NoMatchingPool(
            f"no IPv{version} pool for node {node} allows use {use} (pools considered: {names}): "
            f"add {use} to a pool's allowedUses"
        )
    return allowed, selecting


# ---------------------------------------------------------------------------------------------
# Walking a pool's blocks


def fnv1_32(data: bytes) -> int:
    """FNV-1 32-bit hash (Go's `hash/fnv.New32`), used to seed a node's block order."""
    h = 0x811C9DC5
    for b in data:
        h = (h * 0x01000193) & 0xFFFFFFFF
        h ^= b
    return h


def random_block_generator(pool: Pool, hostname: str) -> Iterator[Network]:
    """Every block of the pool once, from a host-dependent starting block, wrapping around."""
    n = pool.num_blocks
    if n == 0:
        return
    max_len = 32 if pool.version == 4 else 128
    seed = time.time_ns() if pool.block_size == max_len else fnv1_32(hostname.encode())
    start = random.Random(seed).randrange(n)
    base = int(pool.cidr.network_address)
    step = 1 << ((max_len) - pool.block_size)
    cls = ipaddress.IPv4Network if pool.version == 4 else ipaddress.IPv6Network
    for i in range(n):
        idx = (start + i) % n
        yield cls((base + idx * step, pool.block_size))


def block_generator(pool: Pool, cidr: Network) -> Iterator[Network]:
    """The pool's blocks inside `cidr` (which must be at least one block big), in order."""
    if cidr.prefixlen > pool.block_size:
        raise IPAMError(
            f"the requested CIDR ({cidr}) is smaller than one /{pool.block_size} block of pool "
            f"{pool.name}"
        )
    yield from cidr.subnets(new_prefix=pool.block_size)  # type: ignore[misc]
