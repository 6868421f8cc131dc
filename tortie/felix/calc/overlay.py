"""The overlay resolver: VXLAN tunnel endpoints and the routes to other nodes' blocks.

With VXLAN there is no BGP to tell a node where another node's workloads are, so Felix works
it out from the datastore (as Calico's VXLAN resolver and L3 route resolver do):

- every Node with a VXLAN tunnel address and MAC is a VTEP (``VXLANTunnelEndpointUpdate``);
  this node's own VTEP tells the dataplane how to configure ``vxlan.calico``;
- every block affine to *another* node (IPAM host affinities) inside a pool with
  ``vxlanMode: Always`` gets a route via that node's VTEP address (``RouteType.VXLAN``); with
  ``CrossSubnet``, a node in this node's own subnet is reached directly via its address
  (``RouteType.DIRECT``) and only nodes across a router are encapsulated.

Pure and synchronous: inputs recorded with ``on_*``, the differences emitted by ``flush``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from tortie.felix import proto

Emit = Callable[[proto.Message], None]


@dataclass(frozen=True, slots=True)
class _Node:
    ip_cidr: str | None  # e.g. "172.31.1.11/24"
    vtep_ip: str | None
    vtep_mac: str | None


@dataclass(frozen=True, slots=True)
class _Pool:
    cidr: str
    vxlan_mode: str


class OverlayResolver:
    def __init__(self, hostname: str, emit: Emit) -> None:
        self.hostname = hostname
        self._emit = emit
        self._nodes: dict[str, _Node] = {}
        self._pools: dict[str, _Pool] = {}
        self._affinities: dict[str, str] = {}  # block CIDR -> node
        self._sent_vteps: dict[str, proto.VXLANTunnelEndpointUpdate] = {}
        self._sent_routes: dict[str, proto.RouteUpdate] = {}
        self._dirty = False

    # --- inputs -------------------------------------------------------------------------
    def on_node(
        self, name: str, ip_cidr: str | None, vtep_ip: str | None, vtep_mac: str | None
    ) -> None:
        self._nodes[name] = _Node(ip_cidr, vtep_ip, vtep_mac)
        self._dirty = True

    def on_node_removed(self, name: str) -> None:
        self._nodes.pop(name, None)
        self._dirty = True

    def on_pool(self, key: str, cidr: str | None, vxlan_mode: str = "Never") -> None:
        if cidr is None:
            self._pools.pop(key, None)
        else:
            self._pools[key] = _Pool(cidr, vxlan_mode)
        self._dirty = True

    def on_affinity(self, node: str, block: str, present: bool) -> None:
        if present:
            self._affinities[block] = node
        elif self._affinities.get(block) == node:
            del self._affinities[block]
        self._dirty = True

    @property
    def vxlan_in_use(self) -> bool:
        return any(p.vxlan_mode in ("Always", "CrossSubnet") for p in self._pools.values())

    # --- output ---------------------------------------------------------------------------
    def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        vteps = {
            name: proto.VXLANTunnelEndpointUpdate(
                name, n.vtep_mac, n.vtep_ip, n.ip_cidr.split("/")[0]
            )
            for name, n in self._nodes.items()
            if n.vtep_ip and n.vtep_mac and n.ip_cidr
        }
        routes = {r.dst: r for r in self._routes(vteps)}
        for name in sorted(set(self._sent_vteps) - set(vteps)):
            del self._sent_vteps[name]
            self._emit(proto.VXLANTunnelEndpointRemove(name))
        for name, vtep in sorted(vteps.items()):
            if self._sent_vteps.get(name) != vtep:
                self._sent_vteps[name] = vtep
                self._emit(vtep)
        for dst in sorted(set(self._sent_routes) - set(routes)):
            del self._sent_routes[dst]
            self._emit(proto.RouteRemove(dst))
        for dst, route in sorted(routes.items()):
            if self._sent_routes.get(dst) != route:
                self._sent_routes[dst] = route
                self._emit(route)

    def _routes(self, vteps: dict[str, proto.VXLANTunnelEndpointUpdate]) -> list[proto.RouteUpdate]:
        me = self._nodes.get(self.hostname)
        my_net = _network(me.ip_cidr) if me and me.ip_cidr else None
        out = []
        for block, node in self._affinities.items():
            if node == self.hostname:
                continue
            pool = self._pool_of(block)
            if pool is None or pool.vxlan_mode not in ("Always", "CrossSubnet"):
                continue
            remote = self._nodes.get(node)
            if remote is None:
                continue
            remote_ip = remote.ip_cidr.split("/")[0] if remote.ip_cidr else None
            if (
                pool.vxlan_mode == "CrossSubnet"
                and my_net is not None
                and remote_ip is not None
                and ipaddress.ip_address(remote_ip) in my_net
            ):
                out.append(proto.RouteUpdate(block, proto.RouteType.DIRECT, node, remote_ip))
            elif node in vteps:
                out.append(
                    proto.RouteUpdate(block, proto.RouteType.VXLAN, node, vteps[node].ipv4_addr)
                )
        return out

    def _pool_of(self, block: str) -> _Pool | None:
        net = _network(block)
        best: _Pool | None = None
        best_len = -1
        for pool in self._pools.values():
            pnet = _network(pool.cidr)
            if (
                pnet is not None
                and net is not None
                and pnet.version == net.version
                and net.subnet_of(pnet)  # type: ignore[arg-type]
                and pnet.prefixlen > best_len
            ):
                best, best_len = pool, pnet.prefixlen
        return best


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
