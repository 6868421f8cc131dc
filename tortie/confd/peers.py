"""Which BGP sessions a node has: Calico confd's peering rules, as a pure function.

`peerings(snapshot, node)` returns the sessions of ``node``, each a `Peering`:

- **Node-to-node mesh** (``Mesh_<ip>``) when ``nodeToNodeMeshEnabled`` (default true) and this
  node is not a route reflector: every other node with an address of the family, except route
  reflectors (nodes with ``routeReflectorClusterID``).
- **Global peers** (``Global_<ip>``): BGPPeers with neither ``node`` nor ``nodeSelector`` apply
  to every node; their remote end is ``peerIP`` (+``asNumber``) or every node matching
  ``peerSelector`` (with that node's own AS and listen port).
- **Node-specific peers** (``Node_<ip>``): BGPPeers whose ``node``/``nodeSelector`` selects this
  node. A node-specific peering to an address that already has a global one is dropped.
- **Reverse peerings**: a BGPPeer also makes the nodes it points at (``peerSelector``, or the
  node owning ``peerIP`` with the same AS) peer back with the nodes it selects
  (``node``/``nodeSelector``, or every node), as node-specific peers. An explicit peering of
  the same address and port wins. This is what makes route reflectors peer with their clients
  and with each other (RR-to-RR meshing) from one ``peerSelector`` BGPPeer.

Names get a ``_port_<n>`` suffix when the remote port is not the default. BGPPeers are taken
in name order, so the result never depends on watch order. A node never peers with itself.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tortie.api.kinds.bgp import DEFAULT_AS_NUMBER
from tortie.api.kinds.common import parse_as_number, split_ip_port
from tortie.confd.model import Snapshot
from tortie.selector import SelectorError, parse_cached

__all__ = ["NodeInfo", "Peering", "cluster_nodes", "global_config", "node_config", "peerings"]

log = logging.getLogger("tortie.confd")

GLOBAL_CONFIG = "default"


@dataclass(frozen=True)
class NodeInfo:
    """A node as BGP sees it: addresses (without prefix), AS, route-reflector cluster."""

    name: str
    labels: dict[str, str]
    ipv4: str | None
    ipv4_network: str | None
    ipv6: str | None
    ipv6_network: str | None
    as_number: int
    rr_cluster_id: str | None
    listen_port: int | None

    def ip(self, version: int) -> str | None:
        return self.ipv4 if version == 4 else self.ipv6

    def network(self, version: int) -> str | None:
        return self.ipv4_network if version == 4 else self.ipv6_network


@dataclass(frozen=True)
class Peering:
    """One BGP session of the local node (see the module docstring for the kinds)."""

    kind: str  # "mesh", "global" or "node"
    version: int
    ip: str
    port: int | None
    as_number: int
    peer_node: str | None = None  # the remote Calico node, when it is one
    rr_cluster_id: str | None = None  # the remote node's route-reflector cluster
    calico_node: bool = False
    bgp_peer: Any = None  # the BGPPeer resource it came from (None for the mesh)
    notes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        prefix = {"mesh": "Mesh", "global": "Global", "node": "Node"}[self.kind]
        sep = "." if self.version == 4 else ":"
        name = f"{prefix}_{self.ip.replace(sep, '_')}"
        return f"{name}_port_{self.port}" if self.port and self.kind != "mesh" else name


# --- the cluster as BGP sees it -----------------------------------------------------------------


def global_config(snap: Snapshot) -> Any:
    """The cluster-wide BGPConfiguration spec (defaults when there is none)."""
    from tortie.api.kinds.bgp import BGPConfigurationSpec

    res = snap.bgp_configs.get(GLOBAL_CONFIG)
    return res.spec if res is not None else BGPConfigurationSpec()


def node_config(snap: Snapshot, node: str) -> Any:
    """The ``node.<name>`` BGPConfiguration spec, or None."""
    res = snap.bgp_configs.get(f"node.{node}")
    return res.spec if res is not None else None


def _address(value: str | None, version: int) -> tuple[str | None, str | None]:
    """(address, network) of a ``spec.bgp`` address written as ``ip`` or ``ip/len``."""
    if not value:
        return None, None
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        return None, None
    if iface.version != version:
        return None, None
    return str(iface.ip), str(iface.network) if "/" in value else None


def cluster_nodes(snap: Snapshot) -> dict[str, NodeInfo]:
    """Every node with its effective BGP settings, by name."""
    glob = global_config(snap)
    default_as = glob.effective_as_number()
    out: dict[str, NodeInfo] = {}
    for name, res in snap.nodes.items():
        bgp = res.spec.bgp
        v4, v4net = _address(bgp.ipv4_address if bgp else None, 4)
        v6, v6net = _address(bgp.ipv6_address if bgp else None, 6)
        own_as = parse_as_number(bgp.as_number) if bgp else None
        ncfg = node_config(snap, name)
        port = (ncfg.listen_port if ncfg is not None else None) or glob.listen_port
        out[name] = NodeInfo(
            name=name,
            labels=dict(res.labels),
            ipv4=v4,
            ipv4_network=v4net,
            ipv6=v6,
            ipv6_network=v6net,
            as_number=own_as if own_as is not None else default_as,
            rr_cluster_id=(bgp.route_reflector_cluster_id or None) if bgp else None,
            listen_port=port or None,
        )
    return out


def _matching(nodes: dict[str, NodeInfo], selector: str, what: str) -> list[str]:
    try:
        sel = parse_cached(selector)
    except SelectorError as exc:  # validated on the way in; never fatal here
        log.warning("ignoring %s %r: %s", what, selector, exc)
        return []
    return sorted(n for n, info in nodes.items() if sel.matches(info.labels))


def _versions(ip: str) -> int:
    return ipaddress.ip_address(ip).version


# --- the peering computation ---------------------------------------------------------------------


def peerings(snap: Snapshot, node: str) -> list[Peering]:
    """The BGP sessions of ``node`` for both IP families, sorted by protocol name."""
    nodes = cluster_nodes(snap)
    me = nodes.get(node)
    if me is None:
        return []
    glob = global_config(snap)
    out: dict[tuple[int, str, int | None], Peering] = {}
    global_keys: set[tuple[int, str, int | None]] = set()

    def emit(p: Peering, is_global: bool = False) -> None:
        key = (p.version, p.ip, p.port)
        if key in out:
            return  # an earlier (explicit, or global) peering of the same address wins
        if p.ip == me.ip(p.version):
            return  # never peer with ourselves
        out[key] = p
        if is_global:
            global_keys.add(key)

    # Node-to-node mesh candidates; added last, for nodes no explicit peering reaches (two
    # sessions to one address would fight over the same TCP connection).
    mesh: list[Peering] = []
    if me.rr_cluster_id is None and glob.mesh_enabled():
        for other in sorted(nodes.values(), key=lambda n: n.name):
            if other.name == node or other.rr_cluster_id is not None:
                continue
            for version in (4, 6):
                ip = other.ip(version)
                if ip and me.ip(version) and ip != me.ip(version):
                    mesh.append(
                        Peering(
                            "mesh",
                            version,
                            ip,
                            other.listen_port,
                            other.as_number,
                            peer_node=other.name,
                            calico_node=True,
                        )
                    )
    mesh_keys = {(p.version, p.ip): p for p in mesh}

    bgp_peers = [snap.peers[name] for name in sorted(snap.peers)]
    node_ips = {ip: n for n in nodes.values() for ip in (n.ipv4, n.ipv6) if ip}

    # Forward peerings: the global pass, then the node-specific pass.
    for global_pass in (True, False):
        for res in bgp_peers:
            spec = res.spec
            is_global = not spec.node and not spec.node_selector
            if is_global != global_pass:
                continue
            if not is_global and node not in _local_nodes(nodes, spec, res.name):
                continue
            for p in _remote_ends(nodes, node_ips, glob, res, (4, 6)):
                key = (p.version, p.ip, p.port)
                if not is_global and key in global_keys:
                    continue
                emit(p if is_global else _as_kind(p, "node"), is_global)

    # Reverse peerings: this node is the far end of a BGPPeer; peer back with its local nodes.
    for res in bgp_peers:
        spec = res.spec
        versions: tuple[int, ...]
        if spec.peer_selector:
            far = _matching(nodes, spec.peer_selector, f"BGPPeer {res.name} peerSelector")
            versions = (4, 6)
        else:
            parsed = split_ip_port(spec.peer_ip or "")
            if parsed is None:
                continue
            far = _nodes_with_ip_port_as(nodes, glob, parsed[0], spec.as_number, parsed[1])
            versions = (_versions(parsed[0]),)
        if node not in far:
            continue
        if spec.node_selector:
            near = _matching(nodes, spec.node_selector, f"BGPPeer {res.name} nodeSelector")
        elif spec.node:
            near = [spec.node] if spec.node in nodes else []
        else:
            near = sorted(nodes)
        for name in near:
            for p in _node_as_peers(nodes[name], versions, res):
                key = (p.version, p.ip, p.port)
                if key not in global_keys:
                    emit(_as_kind(p, "node"))

    # Mesh sessions go to nodes that no explicit peering already reaches.
    for (version, ip), p in mesh_keys.items():
        if not any(k[0] == version and k[1] == ip for k in out):
            emit(p)
    return sorted(out.values(), key=lambda p: (p.version, p.name))


def _as_kind(p: Peering, kind: str) -> Peering:
    return Peering(
        kind,
        p.version,
        p.ip,
        p.port,
        p.as_number,
        p.peer_node,
        p.rr_cluster_id,
        p.calico_node,
        p.bgp_peer,
        p.notes,
    )


def _local_nodes(nodes: dict[str, NodeInfo], spec: Any, name: str) -> list[str]:
    if spec.node_selector:
        return _matching(nodes, spec.node_selector, f"BGPPeer {name} nodeSelector")
    return [spec.node] if spec.node else []


def _node_as_peers(info: NodeInfo, versions: Iterable[int], res: Any) -> list[Peering]:
    return [
        Peering(
            "node",
            v,
            ip,
            info.listen_port,
            info.as_number,
            peer_node=info.name,
            rr_cluster_id=info.rr_cluster_id,
            calico_node=True,
            bgp_peer=res,
        )
        for v in versions
        if (ip := info.ip(v))
    ]


def _remote_ends(
    nodes: dict[str, NodeInfo],
    node_ips: dict[str, NodeInfo],
    glob: Any,
    res: Any,
    versions: tuple[int, ...],
) -> list[Peering]:
    """The far ends of a BGPPeer: its ``peerSelector`` nodes, or its ``peerIP``."""
    spec = res.spec
    if spec.peer_selector:
        out: list[Peering] = []
        for name in _matching(nodes, spec.peer_selector, f"BGPPeer {res.name} peerSelector"):
            out.extend(_node_as_peers(nodes[name], versions, res))
        return out
    parsed = split_ip_port(spec.peer_ip or "")
    if parsed is None:
        if spec.peer_ip or not spec.local_workload_selector:
            log.warning("BGPPeer %s: no usable peerIP or peerSelector; skipped", res.name)
        return []
    ip, port = parsed
    ip = str(ipaddress.ip_address(ip))
    as_number = parse_as_number(spec.as_number)
    owner = node_ips.get(ip)
    if port is None and owner is not None:
        matches = _nodes_with_ip_port_as(nodes, glob, ip, spec.as_number, None)
        if matches:
            port = nodes[matches[0]].listen_port
    if not as_number:
        log.warning("BGPPeer %s: peerIP %s has no asNumber; skipped", res.name, ip)
        return []
    return [
        Peering(
            "global",
            _versions(ip),
            ip,
            port,
            as_number,
            peer_node=owner.name if owner else None,
            rr_cluster_id=owner.rr_cluster_id if owner else None,
            calico_node=owner is not None,
            bgp_peer=res,
        )
    ]


def _nodes_with_ip_port_as(
    nodes: dict[str, NodeInfo], glob: Any, ip: str, as_value: Any, port: int | None
) -> list[str]:
    """Nodes that are the peer ``ip`` (+AS, +port when given) of a BGPPeer."""
    want_as = parse_as_number(as_value) or glob.effective_as_number() or DEFAULT_AS_NUMBER
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        return []
    out = []
    for name, info in sorted(nodes.items()):
        if ip not in (info.ipv4, info.ipv6) or info.as_number != want_as:
            continue
        if port is not None and (info.listen_port or 179) != port:
            continue
        out.append(name)
    return out
