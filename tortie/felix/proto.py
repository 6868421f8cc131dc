"""The messages between Felix's calculation graph and its dataplane driver.

This is Felix's narrow waist (Calico's ``proto`` package): the calculation graph turns the
datastore into these small, immutable messages, and the dataplane driver turns them into
iptables chains, ipsets, routes and sysctls. Nothing here does I/O; everything is hashable
plain data so the dataplane can compare old and new intent cheaply.

Rules arrive already *resolved*: every selector in a rule has become the ID of an IP set
(whose members the graph keeps up to date with ``IPSet*`` messages), so rendering a policy
never needs the label index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# --- identifiers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class PolicyID:
    tier: str
    name: str  # namespaced policies: "<namespace>/<name>"

    def __str__(self) -> str:
        return f"{self.tier}/{self.name}"


@dataclass(frozen=True, slots=True, order=True)
class ProfileID:
    name: str


@dataclass(frozen=True, slots=True, order=True)
class WorkloadEndpointID:
    orchestrator: str
    workload: str  # "<namespace>/<pod>" for k8s, the workload name otherwise
    endpoint: str
    key: str  # the resource's "<namespace>/<name>", unique


@dataclass(frozen=True, slots=True, order=True)
class HostEndpointID:
    name: str


class IPSetType(Enum):
    NET = "hash:net"  # selector members: CIDRs / addresses
    IP_PORT = "hash:ip,port"  # named-port members: "10.0.0.1,tcp:8080"


# --- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortRange:
    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


@dataclass(frozen=True, slots=True)
class ICMPMatch:
    type: int
    code: int | None = None


@dataclass(frozen=True, slots=True)
class ParsedRule:
    """One policy/profile rule with selectors resolved to IP set IDs.

    Lists within one field are OR'ed (any source net), different fields are AND'ed.
    ``*_ipset_ids`` are AND'ed (selector and namespaceSelector became one combined selector
    already; serviceAccounts contribute another); ``*_named_port_ipset_ids`` are OR'ed with
    the numeric ``*_ports``.
    """

    action: str  # allow | deny | pass | log
    ip_version: int | None = None
    protocol: str | None = None  # "tcp", "udp", "icmp", "ipv6-icmp", "sctp", "udplite" or "17"
    not_protocol: str | None = None
    icmp: ICMPMatch | None = None
    not_icmp: ICMPMatch | None = None
    src_nets: tuple[str, ...] = ()
    not_src_nets: tuple[str, ...] = ()
    src_ports: tuple[PortRange, ...] = ()
    not_src_ports: tuple[PortRange, ...] = ()
    src_named_port_ipset_ids: tuple[str, ...] = ()
    not_src_named_port_ipset_ids: tuple[str, ...] = ()
    src_ipset_ids: tuple[str, ...] = ()
    not_src_ipset_ids: tuple[str, ...] = ()
    dst_nets: tuple[str, ...] = ()
    not_dst_nets: tuple[str, ...] = ()
    dst_ports: tuple[PortRange, ...] = ()
    not_dst_ports: tuple[PortRange, ...] = ()
    dst_named_port_ipset_ids: tuple[str, ...] = ()
    not_dst_named_port_ipset_ids: tuple[str, ...] = ()
    dst_ipset_ids: tuple[str, ...] = ()
    not_dst_ipset_ids: tuple[str, ...] = ()
    # A rule that can never match (e.g. an HTTP match, which iptables cannot enforce, or
    # a selector with no possible members in this IP version); rendered as nothing.
    never_matches: bool = False
    rule_id: str = ""  # stable hash of the original rule, used in comments


@dataclass(frozen=True, slots=True)
class Policy:
    inbound_rules: tuple[ParsedRule, ...] = ()
    outbound_rules: tuple[ParsedRule, ...] = ()
    untracked: bool = False  # doNotTrack
    pre_dnat: bool = False
    apply_on_forward: bool = False


@dataclass(frozen=True, slots=True)
class Profile:
    inbound_rules: tuple[ParsedRule, ...] = ()
    outbound_rules: tuple[ParsedRule, ...] = ()


@dataclass(frozen=True, slots=True)
class TierInfo:
    """The policies of one tier that apply to an endpoint, in evaluation order."""

    name: str
    default_action: str = "Deny"  # Deny | Pass
    ingress_policies: tuple[PolicyID, ...] = ()
    egress_policies: tuple[PolicyID, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    name: str  # the WorkloadEndpoint resource name
    interface_name: str
    mac: str | None = None
    ipv4_nets: tuple[str, ...] = ()  # "10.65.0.5/32"
    ipv6_nets: tuple[str, ...] = ()
    ipv4_nat: tuple[tuple[str, str], ...] = ()  # (internal, external)
    tiers: tuple[TierInfo, ...] = ()
    profile_ids: tuple[ProfileID, ...] = ()
    allow_spoofed_source_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HostEndpoint:
    name: str
    interface_name: str  # "*" = all host interfaces
    expected_ipv4_addrs: tuple[str, ...] = ()
    expected_ipv6_addrs: tuple[str, ...] = ()
    tiers: tuple[TierInfo, ...] = ()  # normal policies
    untracked_tiers: tuple[TierInfo, ...] = ()  # doNotTrack
    pre_dnat_tiers: tuple[TierInfo, ...] = ()
    forward_tiers: tuple[TierInfo, ...] = ()  # applyOnForward
    profile_ids: tuple[ProfileID, ...] = ()


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IPSetUpdate:
    """The full member list of a set (creates it, or replaces all its members)."""

    id: str
    type: IPSetType
    members: frozenset[str]


@dataclass(frozen=True, slots=True)
class IPSetDeltaUpdate:
    id: str
    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IPSetRemove:
    id: str


@dataclass(frozen=True, slots=True)
class ActivePolicyUpdate:
    id: PolicyID
    policy: Policy


@dataclass(frozen=True, slots=True)
class ActivePolicyRemove:
    id: PolicyID


@dataclass(frozen=True, slots=True)
class ActiveProfileUpdate:
    id: ProfileID
    profile: Profile


@dataclass(frozen=True, slots=True)
class ActiveProfileRemove:
    id: ProfileID


@dataclass(frozen=True, slots=True)
class WorkloadEndpointUpdate:
    id: WorkloadEndpointID
    endpoint: WorkloadEndpoint


@dataclass(frozen=True, slots=True)
class WorkloadEndpointRemove:
    id: WorkloadEndpointID


@dataclass(frozen=True, slots=True)
class HostEndpointUpdate:
    id: HostEndpointID
    endpoint: HostEndpoint


@dataclass(frozen=True, slots=True)
class HostEndpointRemove:
    id: HostEndpointID


@dataclass(frozen=True, slots=True)
class IPAMPoolUpdate:
    id: str  # the pool's CIDR
    cidr: str
    masquerade: bool
    vxlan_mode: str = "Never"
    ipip_mode: str = "Never"
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class IPAMPoolRemove:
    id: str


@dataclass(frozen=True, slots=True)
class HostMetadataUpdate:
    """Another (or this) node's addresses, for routing and VXLAN."""

    hostname: str
    ipv4_addr: str | None = None  # the node's IP (no prefix)
    ipv4_cidr: str | None = None  # with its prefix length, as in the Node resource
    ipv6_addr: str | None = None
    asnumber: str | None = None
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HostMetadataRemove:
    hostname: str


@dataclass(frozen=True, slots=True)
class VXLANTunnelEndpointUpdate:
    """A node's VTEP: its VXLAN tunnel address and MAC, and the node address the VXLAN
    packets go to (the VTEP's "parent" address)."""

    node: str
    mac: str
    ipv4_addr: str
    parent_device_ip: str


@dataclass(frozen=True, slots=True)
class VXLANTunnelEndpointRemove:
    node: str


class RouteType(Enum):
    VXLAN = "vxlan"  # encapsulated: via the remote VTEP address, dev vxlan.calico, onlink
    DIRECT = "direct"  # same subnet (CrossSubnet): via the remote node's own address


@dataclass(frozen=True, slots=True)
class RouteUpdate:
    """A route Felix programs to another node's block (overlay networking; with BGP,
    BIRD programs these instead)."""

    dst: str  # the remote block CIDR
    type: RouteType
    dst_node: str
    gateway: str  # the remote VTEP address (VXLAN) or node address (DIRECT)


@dataclass(frozen=True, slots=True)
class RouteRemove:
    dst: str


@dataclass(frozen=True, slots=True)
class ConfigUpdate:
    """The merged Felix configuration (all sources) as strings, Calico's parameter names."""

    config: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class InSync:
    """The datastore snapshot has been fully processed: cleanup of stale state is now safe."""


Message = (
    IPSetUpdate
    | IPSetDeltaUpdate
    | IPSetRemove
    | ActivePolicyUpdate
    | ActivePolicyRemove
    | ActiveProfileUpdate
    | ActiveProfileRemove
    | WorkloadEndpointUpdate
    | WorkloadEndpointRemove
    | HostEndpointUpdate
    | HostEndpointRemove
    | IPAMPoolUpdate
    | IPAMPoolRemove
    | HostMetadataUpdate
    | HostMetadataRemove
    | VXLANTunnelEndpointUpdate
    | VXLANTunnelEndpointRemove
    | RouteUpdate
    | RouteRemove
    | ConfigUpdate
    | InSync
)
