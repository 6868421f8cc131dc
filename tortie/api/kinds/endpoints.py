"""Endpoint kinds: HostEndpoint (a host interface) and WorkloadEndpoint (a workload's interface).

Fields and JSON names follow Calico: ``api/pkg/apis/projectcalico/v3/hostendpoint.go`` and
``libcalico-go/lib/apis/internalapi/workloadendpoint.go``; validation follows
``libcalico-go/lib/validator/v3/validator.go`` (``validateHostEndpointSpec``,
``validateWorkloadEndpointSpec``, ``validateEndpointPort``, ``validateWorkloadEndpointPort``,
``validateIPNAT``). QoS limits are the ones libcalico-go's pod conversion enforces.

A WorkloadEndpoint's name is derived from its spec (``libcalico-go/lib/names``):
``<node>-<orchestrator>-<workload>-<endpoint>`` with every ``-`` inside a part doubled, where
the workload part is the pod for ``k8s``, the container ID for ``cni`` and ``libnetwork``
itself for ``libnetwork``. A name left empty is filled in; a name that does not match is
rejected, as libcalico-go's clientv3 does. The endpoint also gets the
``projectcalico.org/namespace`` and ``projectcalico.org/orchestrator`` labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import msgspec

from tortie.api import validators as v
from tortie.api.base import ApiStruct, Ctx, Resource, struct_fields
from tortie.api.kinds.policy import prune_empty
from tortie.api.registry import name_column, register, spec_column

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"

_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")

DSCP_NAMES = {
    "DF": 0, "EF": 46,
    "AF11": 10, "AF12": 12, "AF13": 14, "AF21": 18, "AF22": 20, "AF23": 22,
    "AF31": 26, "AF32": 28, "AF33": 30, "AF41": 34, "AF42": 36, "AF43": 38,
    "CS0": 0, "CS1": 8, "CS2": 16, "CS3": 24, "CS4": 32, "CS5": 40, "CS6": 48,
}  # fmt: skip


# --- WorkloadEndpoint names ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkloadEndpointName:
    """The four parts of a WorkloadEndpoint name.

    ``workload`` is the third part: the pod (``k8s``), the container ID (``cni``), the word
    ``libnetwork`` (``libnetwork``) or the workload (any other orchestrator).
    """

    node: str
    orchestrator: str
    workload: str
    endpoint: str


def _escape(field: str, value: str) -> str:
    if not value:
        raise ValueError(f"{field} must be set to form a WorkloadEndpoint name")
    if value.startswith("-"):
        raise ValueError(f"{field} {value!r} must not begin with '-'")
    if value.endswith("-"):
        raise ValueError(f"{field} {value!r} must not end with '-'")
    return value.replace("-", "--")


def workload_endpoint_name(node: str, orchestrator: str, workload: str, endpoint: str) -> str:
    """``<node>-<orchestrator>-<workload>-<endpoint>``, each ``-`` in a part written ``--``.

    >>> workload_endpoint_name("node-1", "k8s", "web-0", "eth0")
    'node--1-k8s-web--0-eth0'

    Raises ValueError when a part is empty or begins or ends with ``-``.
    """
    parts = (("node", node), ("orchestrator", orchestrator), ("workload", workload),
             ("endpoint", endpoint))
    return "-".join(_escape(field, value) for field, value in parts)


def _split_name(name: str) -> list[str]:
    """Split on single dashes, turning ``--`` back into ``-`` (libcalico-go's extractParts)."""
    parts: list[str] = []
    start = 0
    i = 1
    while i < len(name):
        if name[i] == "-":
            if i + 1 < len(name) and name[i + 1] == "-":
                i += 2
                continue
            parts.append(name[start:i].replace("--", "-"))
            start = i + 1
        i += 1
    parts.append(name[start:].replace("--", "-"))
    return parts


def parse_workload_endpoint_name(name: str) -> WorkloadEndpointName:
    """The inverse of :func:`workload_endpoint_name`; raises ValueError if not four parts.

    >>> parse_workload_endpoint_name("node--1-k8s-web--0-eth0")
    WorkloadEndpointName(node='node-1', orchestrator='k8s', workload='web-0', endpoint='eth0')
    """
    if not name:
        raise ValueError("cannot parse an empty WorkloadEndpoint name")
    parts = _split_name(name)
    if len(parts) != 4 or not all(parts):
        raise ValueError(
            f"cannot parse WorkloadEndpoint name {name!r}: expected "
            "<node>-<orchestrator>-<workload>-<endpoint> with '-' inside a part written '--'"
        )
    return WorkloadEndpointName(*parts)


def workload_segment(spec: WorkloadEndpointSpec) -> tuple[str, str | None]:
    """The JSON field and value that form the third part of the name, per orchestrator."""
    if spec.orchestrator == "k8s":
        return "pod", spec.pod
    if spec.orchestrator == "cni":
        return "containerID", spec.container_id
    if spec.orchestrator == "libnetwork":
        return "orchestrator", spec.orchestrator
    return "workload", spec.workload


def expected_name(spec: WorkloadEndpointSpec) -> str:
    """The name Calico requires for an endpoint with this spec; ValueError names the field."""
    wfield, wvalue = workload_segment(spec)
    parts = (("node", spec.node), ("orchestrator", spec.orchestrator), (wfield, wvalue),
             ("endpoint", spec.endpoint))
    return "-".join(_escape(field, value or "") for field, value in parts)


# --- shared ----------------------------------------------------------------------------------


def _check_port_protocol(ctx: Ctx, path: str, protocol: int | str) -> None:
    if v.check_protocol(ctx, path, protocol) and not v.protocol_supports_ports(protocol):
        ctx.error(path, f"protocol {protocol} does not support ports: use TCP, UDP or SCTP")


class EndpointPort(ApiStruct):
    """A named port of a host endpoint, usable in policy rules by name."""

    name: str
    protocol: int | str
    port: int

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_port_name(ctx, f"{path}.name", self.name)
        _check_port_protocol(ctx, f"{path}.protocol", self.protocol)
        v.check_range(ctx, f"{path}.port", self.port, 1, 65535)


# --- HostEndpoint ----------------------------------------------------------------------------


class HostEndpointSpec(ApiStruct):
    node: str | None = None
    interface_name: str | None = None
    expected_ips: list[str] | None = msgspec.field(default=None, name="expectedIPs")
    profiles: list[str] | None = None
    ports: list[EndpointPort] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        if not self.node:
            ctx.error(f"{path}.node", "node must be specified")
        v.check_name_ref(ctx, f"{path}.node", self.node)
        if not self.interface_name and not self.expected_ips:
            ctx.error(f"{path}.interfaceName",
                      "at least one of interfaceName or expectedIPs must be specified")
        v.check_interface_name(ctx, f"{path}.interfaceName", self.interface_name)
        if v.check_unique(ctx, f"{path}.expectedIPs", self.expected_ips):
            for i, ip in enumerate(self.expected_ips or []):
                v.check_ip(ctx, f"{path}.expectedIPs[{i}]", ip)
        if v.check_unique(ctx, f"{path}.profiles", self.profiles):
            for i, profile in enumerate(self.profiles or []):
                v.check_name_ref(ctx, f"{path}.profiles[{i}]", profile)


@register(
    "hostendpoints",
    aliases=("hep", "heps"),
    columns=(name_column(), spec_column("NODE", "node")),
    wide_columns=(
        name_column(),
        spec_column("NODE", "node"),
        spec_column("INTERFACE", "interface_name"),
        spec_column("IPS", "expected_ips"),
        spec_column("PROFILES", "profiles"),
    ),
)
class HostEndpoint(Resource):
    """Policy for a host's interface (by name, ``*`` for all, or by its expected IPs)."""

    KIND: ClassVar[str] = "HostEndpoint"
    spec: HostEndpointSpec = msgspec.field(default_factory=HostEndpointSpec)

    def apply_defaults(self) -> None:
        prune_empty(self.spec)
        for port in self.spec.ports or []:
            port.protocol = v.canonical_protocol(port.protocol)


# --- WorkloadEndpoint ------------------------------------------------------------------------


class WorkloadEndpointPort(ApiStruct, kw_only=True):
    """A named port and/or a host port mapping of a workload endpoint."""

    name: str | None = None
    protocol: int | str
    port: int
    host_port: int | None = None
    host_ip: str | None = msgspec.field(default=None, name="hostIP")

    def check(self, ctx: Ctx, path: str) -> None:
        if self.name:
            v.check_port_name(ctx, f"{path}.name", self.name)
        elif not self.host_port:
            ctx.error(f"{path}.name", "a port must have a name unless it has a hostPort")
        _check_port_protocol(ctx, f"{path}.protocol", self.protocol)
        v.check_range(ctx, f"{path}.port", self.port, 1, 65535)
        v.check_range(ctx, f"{path}.hostPort", self.host_port, 0, 65535)
        if self.host_ip and v.parse_ip(self.host_ip) is None:
            v.check_network(ctx, f"{path}.hostIP", self.host_ip)


class IPNAT(ApiStruct):
    """A 1:1 NAT: inbound traffic to ``externalIP`` goes to ``internalIP``."""

    internal_ip: str = msgspec.field(name="internalIP")
    external_ip: str = msgspec.field(name="externalIP")

    def check(self, ctx: Ctx, path: str) -> None:
        internal = v.check_ip(ctx, f"{path}.internalIP", self.internal_ip)
        external = v.check_ip(ctx, f"{path}.externalIP", self.external_ip)
        if internal and external:
            iv = v.parse_ip(self.internal_ip)
            ev = v.parse_ip(self.external_ip)
            if iv is not None and ev is not None and iv.version != ev.version:
                ctx.error(f"{path}.externalIP", "internalIP and externalIP must be of the same "
                          "IP version")


# Ranges (inclusive) for non-zero QoS values, as libcalico-go's pod conversion enforces them.
QOS_RANGES: dict[str, tuple[int, int]] = {
    "ingressBandwidth": (1_000, 10**15),
    "egressBandwidth": (1_000, 10**15),
    "ingressBurst": (1_000, 34_359_738_360),
    "egressBurst": (1_000, 34_359_738_360),
    "ingressPeakrate": (1_010, 1_010_000_000_000_000),
    "egressPeakrate": (1_010, 1_010_000_000_000_000),
    "ingressMinburst": (1_000, 100_000_000),
    "egressMinburst": (1_000, 100_000_000),
    "ingressPacketRate": (1, 10_000),
    "egressPacketRate": (1, 10_000),
    "ingressPacketBurst": (1, 10_000),
    "egressPacketBurst": (1, 10_000),
    "ingressMaxConnections": (1, 4_294_967_295),
    "egressMaxConnections": (1, 4_294_967_295),
}


class QoSControls(ApiStruct):
    """Bandwidth, packet-rate and connection limits, and the DSCP mark, of an endpoint."""

    ingress_bandwidth: int | None = None
    ingress_burst: int | None = None
    ingress_peakrate: int | None = None
    ingress_minburst: int | None = None
    egress_bandwidth: int | None = None
    egress_burst: int | None = None
    egress_peakrate: int | None = None
    egress_minburst: int | None = None
    ingress_packet_rate: int | None = None
    ingress_packet_burst: int | None = None
    egress_packet_rate: int | None = None
    egress_packet_burst: int | None = None
    ingress_max_connections: int | None = None
    egress_max_connections: int | None = None
    dscp: int | str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        for field in struct_fields(self):
            value = getattr(self, field.name)
            limits = QOS_RANGES.get(field.encode_name)
            if limits is None or not value:
                continue
            lo, hi = limits
            if not lo <= value <= hi:
                ctx.error(f"{path}.{field.encode_name}",
                          f"{value} is out of range: must be 0 (unset) or {lo}-{hi}")
        if isinstance(self.dscp, int) or (isinstance(self.dscp, str) and self.dscp.isdigit()):
            if int(self.dscp) > 63:
                ctx.error(f"{path}.dscp", "DSCP must be between 0 and 63")
        elif self.dscp is not None and self.dscp.strip().upper() not in DSCP_NAMES:
            ctx.error(f"{path}.dscp", f"{self.dscp!r} is not a valid DSCP value: use 0-63 or "
                      "one of DF, EF, AF11-AF43, CS0-CS6")


class WorkloadEndpointSpec(ApiStruct):
    orchestrator: str | None = None
    workload: str | None = None
    node: str | None = None
    container_id: str | None = msgspec.field(default=None, name="containerID")
    pod: str | None = None
    endpoint: str | None = None
    service_account_name: str | None = None
    ip_networks: list[str] | None = None
    ip_nats: list[IPNAT] | None = msgspec.field(default=None, name="ipNATs")
    ipv4_gateway: str | None = None
    ipv6_gateway: str | None = None
    profiles: list[str] | None = None
    interface_name: str | None = None
    mac: str | None = None
    ports: list[WorkloadEndpointPort] | None = None
    allow_spoofed_source_prefixes: list[str] | None = None
    qos_controls: QoSControls | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        for fname, value in (
            ("orchestrator", self.orchestrator),
            ("workload", self.workload),
            ("node", self.node),
            ("pod", self.pod),
            ("endpoint", self.endpoint),
            ("serviceAccountName", self.service_account_name),
        ):
            v.check_name_ref(ctx, f"{path}.{fname}", value)
        if self.container_id and not _CONTAINER_ID.match(self.container_id):
            ctx.error(f"{path}.containerID", f"invalid containerID {self.container_id!r}: "
                      "alphanumerics and '-', starting and ending with an alphanumeric")
        nets = []
        for i, text in enumerate(self.ip_networks or []):
            net = v.check_network(ctx, f"{path}.ipNetworks[{i}]", text)
            if net is None:
                continue
            if net.num_addresses != 1:
                ctx.error(f"{path}.ipNetworks[{i}]", f"{text!r} holds more than one address: "
                          "only /32 (IPv4) and /128 (IPv6) networks are supported")
            nets.append(net)
        for i, nat in enumerate(self.ip_nats or []):
            ip = v.parse_ip(nat.internal_ip)
            if ip is not None and not any(ip in n for n in nets):
                ctx.error(f"{path}.ipNATs[{i}].internalIP", f"{nat.internal_ip} is not one of "
                          "the endpoint's ipNetworks")
        if self.ipv4_gateway is not None:
            v.check_ip(ctx, f"{path}.ipv4Gateway", self.ipv4_gateway, 4)
        if self.ipv6_gateway is not None:
            v.check_ip(ctx, f"{path}.ipv6Gateway", self.ipv6_gateway, 6)
        for i, profile in enumerate(self.profiles or []):
            v.check_name_ref(ctx, f"{path}.profiles[{i}]", profile)
        if not self.interface_name:
            ctx.error(f"{path}.interfaceName", "interfaceName is required (the host side of "
                      "the workload's interface, e.g. cali0123456789a)")
        else:
            v.check_interface_name(ctx, f"{path}.interfaceName", self.interface_name)
        v.check_mac(ctx, f"{path}.mac", self.mac)
        for i, text in enumerate(self.allow_spoofed_source_prefixes or []):
            v.check_network(ctx, f"{path}.allowSpoofedSourcePrefixes[{i}]", text, masked=False)


def _workload(r: Resource) -> str:
    spec: WorkloadEndpointSpec = r.spec  # type: ignore[attr-defined]
    return spec.workload or spec.pod or ""


def _nats(r: Resource) -> str:
    spec: WorkloadEndpointSpec = r.spec  # type: ignore[attr-defined]
    return ",".join(f"{n.internal_ip}->{n.external_ip}" for n in spec.ip_nats or [])


@register(
    "workloadendpoints",
    namespaced=True,
    aliases=("wep", "weps"),
    columns=(
        ("WORKLOAD", _workload),
        spec_column("NODE", "node"),
        spec_column("NETWORKS", "ip_networks"),
        spec_column("INTERFACE", "interface_name"),
    ),
    wide_columns=(
        name_column(),
        ("WORKLOAD", _workload),
        spec_column("NODE", "node"),
        spec_column("NETWORKS", "ip_networks"),
        spec_column("INTERFACE", "interface_name"),
        spec_column("PROFILES", "profiles"),
        ("NATS", _nats),
    ),
)
class WorkloadEndpoint(Resource):
    """A workload's interface: its addresses, profiles, named ports and QoS controls."""

    KIND: ClassVar[str] = "WorkloadEndpoint"
    spec: WorkloadEndpointSpec = msgspec.field(default_factory=WorkloadEndpointSpec)

    def apply_defaults(self) -> None:
        spec = self.spec
        prune_empty(spec)
        for port in spec.ports or []:
            port.protocol = v.canonical_protocol(port.protocol)
        if not self.metadata.name:
            try:
                self.metadata.name = expected_name(spec)
            except ValueError:
                pass  # check_name reports which field is missing
        labels = dict(self.metadata.labels or {})
        if self.metadata.namespace:
            labels[NAMESPACE_LABEL] = self.metadata.namespace
        if spec.orchestrator:
            labels[ORCHESTRATOR_LABEL] = spec.orchestrator
        self.metadata.labels = labels or None

    def check_name(self, ctx: Ctx) -> None:
        v.check_namespace(ctx, "metadata.namespace", self.metadata.namespace)
        wfield, _ = workload_segment(self.spec)
        for field in ("node", "orchestrator", wfield, "endpoint"):
            try:
                _escape(field, _spec_value(self.spec, field))
            except ValueError as exc:
                ctx.error(f"spec.{field}", str(exc))
                return
        expected = expected_name(self.spec)
        if not v.check_resource_name(ctx, "metadata.name", self.metadata.name):
            return
        if self.metadata.name != expected:
            ctx.error("metadata.name", "the WorkloadEndpoint name does not match the "
                      f"identifiers in its spec: expected name {expected!r}")


def _spec_value(spec: WorkloadEndpointSpec, json_field: str) -> str:
    attr = {"containerID": "container_id"}.get(json_field, json_field)
    return getattr(spec, attr) or ""
