"""What a lab looks like: namespaces, fabric subnets, addresses and names, as plain data.

`plan(lab_id, nodes, topology)` is a pure function: it decides every name and address, and the
result (`LabPlan`) goes unchanged into the lab's state file. `cluster.py` turns it into
namespaces and links.

Fabrics (all addresses live inside the lab's namespaces only; labs never see each other):

- ``flat``: one L2 segment, a bridge in the fabric namespace (``tl<id>-fabric``) with a veth to
  every node and to etcd. Subnet 172.31.0.0/24: the bridge itself has .1 (the nodes' default
  gateway: proxy ARP for 169.254.1.1 only answers when a node has a route to it, and packets
  sent there go nowhere), etcd .2, node *i* .10+i.
- ``two-subnets``: two bridges in the fabric namespace, 172.31.1.0/24 and 172.31.2.0/24,
  joined by a router namespace (``tl<id>-router``, .1 on both, forwarding on) that is every
  node's default gateway. The first half of the nodes (rounded up) is on subnet A, the rest on
  B; etcd sits on subnet A at .2. The router is also where an external BGP peer will live.

Names: namespaces are ``tl<id>-<role>`` (``tl<id>-node1``, ``tl<id>-etcd``); fabric-side veths
and bridges carry the lab id too (``br<id>``, ``<id>n1``). Inside its own namespace a node's
fabric interface is ``eth0``, like a real host's, so interface-based IP autodetection works.
Each node gets a workload range (10.65.<i>.0/24 by default) for the lab's simple allocator and
for `Lab.static_routes`.
"""

from __future__ import annotations

import ipaddress
import re

import msgspec

__all__ = [
    "TOPOLOGIES",
    "EtcdPlan",
    "LabPlan",
    "NodePlan",
    "RouterPlan",
    "SubnetPlan",
    "node_names",
    "plan",
    "valid_lab_id",
]

TOPOLOGIES = ("flat", "two-subnets")
LAB_ID_RE = re.compile(r"^[a-z0-9]{1,6}$")
NODE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
ETCD_CLIENT_PORT = 2379


class SubnetPlan(msgspec.Struct, frozen=True):
    """One L2 segment of the fabric: a bridge in the fabric namespace."""

    name: str  # "a", "b" (flat: "a")
    cidr: str  # 172.31.0.0/24
    bridge: str  # bridge name inside the fabric namespace
    gateway: str  # the nodes' default gateway on this subnet (bridge or router address)


class NodePlan(msgspec.Struct, frozen=True):
    name: str  # the Calico node name (Node resource name)
    index: int  # 1-based
    netns: str
    subnet: str  # SubnetPlan.name
    ip: str  # fabric address, no prefix
    prefix_len: int
    gateway: str
    fabric_if: str  # interface name inside the node namespace
    fabric_peer: str  # its veth peer on the bridge, inside the fabric namespace
    workload_cidr: str  # this node's workload range for the simple allocator

    @property
    def cidr(self) -> str:
        """The fabric address with its prefix, as Node spec.bgp.ipv4Address wants it."""
        return f"{self.ip}/{self.prefix_len}"


class EtcdPlan(msgspec.Struct, frozen=True):
    netns: str
    subnet: str
    ip: str
    prefix_len: int
    gateway: str | None  # None on the flat fabric (everything is on-link)
    fabric_peer: str
    port: int = ETCD_CLIENT_PORT

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.port}"


class RouterPlan(msgspec.Struct, frozen=True):
    """The router between subnets; `links` maps subnet name -> (interface, peer, ip/prefix)."""

    netns: str
    links: dict[str, tuple[str, str, str]]


class LabPlan(msgspec.Struct, frozen=True):
    lab_id: str
    topology: str
    fabric_netns: str
    subnets: list[SubnetPlan]
    etcd: EtcdPlan
    nodes: list[NodePlan]
    router: RouterPlan | None = None
    bridge_ip: str | None = None  # flat: the bridge's own address/prefix (the gateway)

    @property
    def namespaces(self) -> list[str]:
        """Infrastructure namespaces, in creation order (workloads come and go separately)."""
        names = [self.fabric_netns, self.etcd.netns]
        if self.router:
            names.append(self.router.netns)
        names.extend(n.netns for n in self.nodes)
        return names

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def valid_lab_id(lab_id: str) -> bool:
    return bool(LAB_ID_RE.match(lab_id))


def node_names(nodes: int | list[str] | tuple[str, ...]) -> list[str]:
    names = [f"node{i}" for i in range(1, nodes + 1)] if isinstance(nodes, int) else list(nodes)
    if not names:
        raise ValueError("a lab needs at least one node")
    if len(names) > 200:
        raise ValueError("at most 200 nodes per lab")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate node names in {names}")
    for n in names:
        if not NODE_NAME_RE.match(n) or n in ("etcd", "router", "fabric"):
            raise ValueError(
                f"invalid node name {n!r}: lower-case letters, digits and '-', at most 32 "
                "characters, not etcd/router/fabric"
            )
    return names


def plan(
    lab_id: str,
    nodes: int | list[str] | tuple[str, ...] = 2,
    topology: str = "flat",
    *,
    fabric_cidr: str = "172.31.0.0/16",
    workload_cidr: str = "10.65.0.0/16",
    workload_prefix: int = 24,
) -> LabPlan:
    """Decide every name and address of a lab (see the module docstring)."""
    if not valid_lab_id(lab_id):
        raise ValueError(f"invalid lab id {lab_id!r}: 1-6 lower-case letters or digits")
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}: choose one of {', '.join(TOPOLOGIES)}")
    names = node_names(nodes)
    fabric = ipaddress.ip_network(fabric_cidr)
    if fabric.version != 4 or fabric.prefixlen > 22:
        raise ValueError(f"fabric_cidr {fabric_cidr} must be an IPv4 /22 or larger")
    subnets_24 = list(fabric.subnets(new_prefix=24))
    pods = list(ipaddress.ip_network(workload_cidr).subnets(new_prefix=workload_prefix))
    if len(pods) < len(names):
        raise ValueError(f"workload_cidr {workload_cidr} has too few /{workload_prefix} ranges")

    ns = f"tl{lab_id}-"
    fabric_ns = ns + "fabric"
    router: RouterPlan | None = None
    bridge_ip: str | None = None
    if topology == "flat":
        net = subnets_24[0]
        gw = str(net[1])
        subnets = [SubnetPlan("a", str(net), f"br{lab_id}", gw)]
        bridge_ip = f"{gw}/24"
        placement = ["a"] * len(names)
    else:
        subnets = []
        links: dict[str, tuple[str, str, str]] = {}
        for name, net in zip(("a", "b"), subnets_24[1:3], strict=True):
            gw = str(net[1])
            subnets.append(SubnetPlan(name, str(net), f"br{lab_id}{name}", gw))
            links[name] = (f"eth-{name}", f"{lab_id}r{name}", f"{gw}/24")
        router = RouterPlan(ns + "router", links)
        half = (len(names) + 1) // 2
        placement = ["a"] * half + ["b"] * (len(names) - half)

    by_name = {s.name: s for s in subnets}
    a = by_name["a"]
    a_net = ipaddress.ip_network(a.cidr)
    etcd = EtcdPlan(
        netns=ns + "etcd",
        subnet="a",
        ip=str(a_net[2]),
        prefix_len=24,
        gateway=None if topology == "flat" else a.gateway,
        fabric_peer=f"{lab_id}etcd",
    )
    node_plans = []
    next_host = {"a": 10, "b": 10}
    for i, (name, sub) in enumerate(zip(names, placement, strict=True), start=1):
        net = ipaddress.ip_network(by_name[sub].cidr)
        next_host[sub] += 1
        if next_host[sub] >= net.num_addresses - 1:
            raise ValueError(f"too many nodes for subnet {net}")
        node_plans.append(
            NodePlan(
                name=name,
                index=i,
                netns=ns + name,
                subnet=sub,
                ip=str(net[next_host[sub]]),
                prefix_len=net.prefixlen,
                gateway=by_name[sub].gateway,
                fabric_if="eth0",
                fabric_peer=f"{lab_id}n{i}",
                workload_cidr=str(pods[i - 1]),
            )
        )
    return LabPlan(
        lab_id=lab_id,
        topology=topology,
        fabric_netns=fabric_ns,
        subnets=subnets,
        etcd=etcd,
        nodes=node_plans,
        router=router,
        bridge_ip=bridge_ip,
    )
