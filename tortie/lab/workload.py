"""Workload plumbing: how a pod's namespace is wired to its node, exactly as the CNI plugin does.

Calico's Linux plumbing (ARCHITECTURE §7), which this module renders as `ip -batch` lines:

- a veth pair; the host side is ``cali`` + the first 11 hex chars of
  sha1(``<namespace>.<pod>``) (Calico's `VethNameForWorkload`), with MAC ``ee:ee:ee:ee:ee:ee``;
- in the workload: ``eth0`` with the address as a ``/32``, a link-scope route to
  ``169.254.1.1`` and the default route via it (the node answers ARP for it by proxy);
- on the node: the host side up, ``proxy_arp=1``, ``neigh/<if>/proxy_delay=0``,
  ``forwarding=1`` (``host_sysctls``; Felix owns these once it runs) and a ``/32`` route to the
  workload (``static_route``; Felix's route manager owns it later).

The WorkloadEndpoint is named as libcalico-go does: ``<node>-<orchestrator>-<pod>-<endpoint>``
with every ``-`` inside a part doubled. Its auto-labels (``projectcalico.org/namespace``,
``projectcalico.org/orchestrator``) are Felix's business, not ours.

Addresses come from an `IPAllocator`; `RangeAllocator` hands out each node's workload range in
order (IPAM replaces it later through the same two-method interface).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import msgspec

__all__ = [
    "GATEWAY",
    "HOST_MAC",
    "IPAllocator",
    "RangeAllocator",
    "Workload",
    "container_id",
    "host_sysctls",
    "node_lines",
    "veth_name",
    "wep_name",
    "workload_endpoint",
    "workload_lines",
    "workload_mac",
    "workload_netns",
]

HOST_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY = "169.254.1.1"
DNS1123_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


class Workload(msgspec.Struct, frozen=True):
    """One lab workload (a pod with one interface), as recorded in the lab's state."""

    node: str
    name: str  # the pod name
    namespace: str  # the Kubernetes namespace
    netns: str
    ip: str
    host_if: str  # the node-side veth (cali...)
    mac: str  # the workload-side eth0 MAC
    wep: str  # WorkloadEndpoint name
    static_route: bool = True

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def check_name(kind: str, value: str) -> None:
    if not DNS1123_RE.match(value):
        raise ValueError(
            f"invalid {kind} {value!r}: lower-case letters, digits, '-' and '.', at most 63"
        )


def veth_name(namespace: str, pod: str, prefix: str = "cali") -> str:
    """Calico's host-side interface name for a Kubernetes pod."""
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def wep_name(node: str, pod: str, orchestrator: str = "k8s", endpoint: str = "eth0") -> str:
    """libcalico-go's WorkloadEndpoint name: parts joined by '-', with '-' in a part as '--'."""
    return "-".join(p.replace("-", "--") for p in (node, orchestrator, pod, endpoint))


def workload_netns(lab_id: str, namespace: str, pod: str) -> str:
    # Node names cannot contain '.', so this never collides with a node's namespace.
    return f"tl{lab_id}-wl.{namespace}.{pod}"


def workload_mac(lab_id: str, namespace: str, pod: str) -> str:
    """A stable, locally administered unicast MAC for the workload's eth0."""
    digest = hashlib.sha1(f"{lab_id}/{namespace}/{pod}".encode()).digest()
    octets = [(digest[0] & 0xFC) | 0x02, *digest[1:6]]
    return ":".join(f"{o:02x}" for o in octets)


def container_id(lab_id: str, namespace: str, pod: str) -> str:
    """A stand-in for the container runtime's 64-hex container id."""
    return hashlib.sha256(f"tortie-lab/{lab_id}/{namespace}/{pod}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Rendering


def node_lines(wl: Workload) -> list[str]:
    """`ip -batch` lines run in the node namespace (the workload namespace must exist)."""
    lines = [
        f"link add {wl.host_if} type veth peer name eth0 netns {wl.netns} address {wl.mac}",
        f"link set {wl.host_if} address {HOST_MAC}",
        f"link set {wl.host_if} up",
    ]
    if wl.static_route:
        lines.append(f"route replace {wl.ip}/32 dev {wl.host_if} scope link")
    return lines


def workload_lines(wl: Workload) -> list[str]:
    """`ip -batch` lines run in the workload namespace, after `node_lines`."""
    return [
        "link set lo up",
        f"addr add {wl.ip}/32 dev eth0",
        "link set eth0 up",
        f"route add {GATEWAY} dev eth0 scope link",
        f"route add default via {GATEWAY} dev eth0",
    ]


def host_sysctls(host_if: str) -> dict[str, str]:
    """What Felix sets on a workload's host-side interface (set by the lab without Felix)."""
    return {
        f"net/ipv4/conf/{host_if}/proxy_arp": "1",
        f"net/ipv4/neigh/{host_if}/proxy_delay": "0",
        f"net/ipv4/conf/{host_if}/forwarding": "1",
    }


def workload_endpoint(
    wl: Workload,
    lab_id: str,
    labels: Mapping[str, str] | None = None,
    profiles: Iterable[str] | None = None,
    ports: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The WorkloadEndpoint document the CNI plugin would write for this workload."""
    spec: dict[str, Any] = {
        "orchestrator": "k8s",
        "node": wl.node,
        "containerID": container_id(lab_id, wl.namespace, wl.name),
        "pod": wl.name,
        "endpoint": "eth0",
        "ipNetworks": [f"{wl.ip}/32"],
        "interfaceName": wl.host_if,
        "mac": wl.mac,
        "profiles": list(profiles or []),
    }
    if ports:
        spec["ports"] = [dict(p) for p in ports]
    metadata: dict[str, Any] = {"name": wl.wep, "namespace": wl.namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": metadata,
        "spec": spec,
    }


# ---------------------------------------------------------------------------------------------
# Addresses


class IPAllocator(Protocol):
    """Where workload addresses come from (the lab's simple ranges now, Calico IPAM later)."""

    def allocate(self, node: str, handle: str, used: set[str]) -> str:
        """An unused IPv4 address for a workload on `node`; `used` holds the lab's taken ones."""
        ...

    def release(self, node: str, handle: str, ip: str) -> None: ...


class RangeAllocator:
    """Each node's workload range (from the lab plan), lowest free address first."""

    def __init__(self, ranges: Mapping[str, str]) -> None:
        self.ranges = {node: ipaddress.ip_network(cidr) for node, cidr in ranges.items()}

    def allocate(self, node: str, handle: str, used: set[str]) -> str:
        try:
            net = self.ranges[node]
        except KeyError:
            raise ValueError(f"no workload range for node {node!r}") from None
        for addr in net.hosts():
            if str(addr) not in used:
                return str(addr)
        raise ValueError(f"workload range {net} of node {node} is full")

    def release(self, node: str, handle: str, ip: str) -> None:
        """Nothing to do: the lab's state is the record of what is in use."""
