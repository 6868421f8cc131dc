"""Node: a host running tortie-node, with its BGP addresses, tunnel addresses and orchestrators.

Fields and JSON names follow libcalico-go's ``apis/internalapi/node.go`` (the Node is not in the
public API package but calicoctl manages it as ``projectcalico.org/v3``); rules follow
``validateNodeSpec`` and the field tags there:

- ``spec.bgp`` must not be empty when present; ``ipv4Address``/``ipv6Address`` are the node's
  address with its subnet (``192.0.2.10/24``, host bits expected); ``ipv4IPIPTunnelAddr`` is an
  IPv4 address; ``routeReflectorClusterID`` is IPv4-formatted (``244.0.0.1``).
- VXLAN tunnel addresses are IPv4/IPv6 addresses and the VTEP MACs MAC addresses.
- ``addresses[].type`` is ``CalicoNodeIP``, ``InternalIP`` or ``ExternalIP``; the address is an
  IP or CIDR (calico/node writes ``CalicoNodeIP`` with its prefix length, as in ``spec.bgp``).
- ``status.wireguardPublicKey`` is a base64 WireGuard key.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tortie.api.base import ApiStruct, Ctx, Resource, join
from tortie.api.kinds.bgp import DEFAULT_AS_NUMBER
from tortie.api.kinds.common import (
    check_as_number,
    check_cidr_or_ip,
    check_ip_version,
    check_mac,
    check_name_ref,
    check_wireguard_key,
    normalise_as_number,
    parse_as_number,
)
from tortie.api.registry import Column, name_column, register
from tortie.api.validators import check_one_of

NODE_ADDRESS_TYPES = ("CalicoNodeIP", "InternalIP", "ExternalIP")


class NodeBGPSpec(ApiStruct):
    as_number: int | str | None = None
    ipv4_address: str | None = msgspec.field(default=None, name="ipv4Address")
    ipv6_address: str | None = msgspec.field(default=None, name="ipv6Address")
    ipv4_ipip_tunnel_addr: str | None = msgspec.field(default=None, name="ipv4IPIPTunnelAddr")
    route_reflector_cluster_id: str | None = msgspec.field(
        default=None, name="routeReflectorClusterID"
    )

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__struct_fields__)

    def check(self, ctx: Ctx, path: str) -> None:
        if self.is_empty():
            ctx.error(path, "spec.bgp must not be empty: give at least an address, or omit bgp")
        check_as_number(ctx, join(path, "asNumber"), self.as_number)
        check_cidr_or_ip(ctx, join(path, "ipv4Address"), self.ipv4_address, 4)
        check_cidr_or_ip(ctx, join(path, "ipv6Address"), self.ipv6_address, 6)
        check_ip_version(ctx, join(path, "ipv4IPIPTunnelAddr"), self.ipv4_ipip_tunnel_addr, 4)
        check_ip_version(
            ctx, join(path, "routeReflectorClusterID"), self.route_reflector_cluster_id, 4
        )


class OrchRef(ApiStruct):
    """The node's name in an orchestrator (``k8s``, ``libnetwork``, ``openstack``...)."""

    orchestrator: str
    node_name: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        if not self.orchestrator:
            ctx.error(join(path, "orchestrator"), "orchestrator must be given")


class NodeWireguardSpec(ApiStruct):
    interface_ipv4_address: str | None = msgspec.field(default=None, name="interfaceIPv4Address")
    interface_ipv6_address: str | None = msgspec.field(default=None, name="interfaceIPv6Address")

    def check(self, ctx: Ctx, path: str) -> None:
        check_ip_version(ctx, join(path, "interfaceIPv4Address"), self.interface_ipv4_address, 4)
        check_ip_version(ctx, join(path, "interfaceIPv6Address"), self.interface_ipv6_address, 6)


class NodeAddress(ApiStruct):
    address: str
    type: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        if not self.address:
            ctx.error(join(path, "address"), "address must be given")
        else:
            check_cidr_or_ip(ctx, join(path, "address"), self.address)
        check_one_of(ctx, join(path, "type"), self.type, NODE_ADDRESS_TYPES)


class NodeInterface(ApiStruct):
    name: str | None = None
    addresses: list[str] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        check_name_ref(ctx, join(path, "name"), self.name, "interface name")
        for i, address in enumerate(self.addresses or []):
            check_cidr_or_ip(ctx, f"{join(path, 'addresses')}[{i}]", address)


class NodeSpec(ApiStruct):
    bgp: NodeBGPSpec | None = None
    ipv4_vxlan_tunnel_addr: str | None = msgspec.field(default=None, name="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: str | None = msgspec.field(default=None, name="vxlanTunnelMACAddr")
    ipv6_vxlan_tunnel_addr: str | None = msgspec.field(default=None, name="ipv6VXLANTunnelAddr")
    vxlan_tunnel_mac_addr_v6: str | None = msgspec.field(default=None, name="vxlanTunnelMACAddrV6")
    orch_refs: list[OrchRef] | None = None
    wireguard: NodeWireguardSpec | None = None
    addresses: list[NodeAddress] | None = None
    interfaces: list[NodeInterface] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        check_ip_version(ctx, join(path, "ipv4VXLANTunnelAddr"), self.ipv4_vxlan_tunnel_addr, 4)
        check_ip_version(ctx, join(path, "ipv6VXLANTunnelAddr"), self.ipv6_vxlan_tunnel_addr, 6)
        check_mac(ctx, join(path, "vxlanTunnelMACAddr"), self.vxlan_tunnel_mac_addr)
        check_mac(ctx, join(path, "vxlanTunnelMACAddrV6"), self.vxlan_tunnel_mac_addr_v6)


class NodeStatus(ApiStruct):
    wireguard_public_key: str | None = None
    wireguard_public_key_v6: str | None = msgspec.field(default=None, name="wireguardPublicKeyV6")
    pod_cidrs: list[str] | None = msgspec.field(default=None, name="podCIDRs")

    def check(self, ctx: Ctx, path: str) -> None:
        check_wireguard_key(ctx, join(path, "wireguardPublicKey"), self.wireguard_public_key)
        check_wireguard_key(ctx, join(path, "wireguardPublicKeyV6"), self.wireguard_public_key_v6)
        for i, cidr in enumerate(self.pod_cidrs or []):
            check_cidr_or_ip(ctx, f"{join(path, 'podCIDRs')}[{i}]", cidr)


def _bgp_field(attr: str) -> Column:
    def get(r: Resource) -> str:
        bgp = r.spec.bgp  # type: ignore[attr-defined]
        return (getattr(bgp, attr, None) or "") if bgp is not None else ""

    return (attr.split("_")[0].upper(), get)


def _node_asn(r: Resource) -> str:
    """The node's AS number, or the cluster default in brackets (as calicoctl shows it)."""
    bgp = r.spec.bgp  # type: ignore[attr-defined]
    if bgp is None:
        return ""
    number = parse_as_number(bgp.as_number)
    return str(number) if number is not None else f"({DEFAULT_AS_NUMBER})"


@register(
    "nodes",
    aliases=("node", "no", "nos"),
    columns=(name_column(),),
    wide_columns=(
        name_column(),
        ("ASN", _node_asn),
        _bgp_field("ipv4_address"),
        _bgp_field("ipv6_address"),
    ),
)
class Node(Resource):
    KIND: ClassVar[str] = "Node"
    spec: NodeSpec = msgspec.field(default_factory=NodeSpec)
    status: NodeStatus | None = None

    def apply_defaults(self) -> None:
        if self.spec.bgp is not None:
            self.spec.bgp.as_number = normalise_as_number(self.spec.bgp.as_number)
