"""BGP kinds: BGPConfiguration, BGPPeer and BGPFilter.

Fields, JSON names and rules follow Calico's ``projectcalico.org/v3`` API (``bgpconfig.go``,
``bgppeer.go``, ``bgpfilter.go`` and their CRDs) and libcalico-go's validation
(``validateBGPConfigurationSpec``, ``validateBGPPeerSpec``, ``validateBGPFilterRule`` and
``clientv3/bgpconfig.go`` ``ValidateDefaultOnlyFields``).

What Calico writes into a stored BGPConfiguration is only what the user gave: the global
defaults (AS 64512, node-to-node mesh on, port 179, log level Info) are applied where the
configuration is used, so they are offered here as ``effective_*`` helpers rather than written.

BGPPeer also accepts Calico Enterprise's dual-ToR fields (``failureDetectionMode``,
``restartMode``, ``birdGatewayMode``) so that such manifests load; Calico Open Source lacks them.
"""

from __future__ import annotations

import re
from typing import ClassVar

import msgspec

from tortie.api.base import ApiStruct, Ctx, Resource, join
from tortie.api.kinds.common import (
    DEFAULT_NAME,
    ENABLED_DISABLED,
    LOG_LEVELS,
    check_as_number,
    check_int_range,
    check_ip_version,
    check_name_ref,
    check_port,
    check_strict_net,
    normalise_as_number,
    parse_as_number,
    split_ip_port,
)
from tortie.api.registry import Column, name_column, register, spec_column
from tortie.api.validators import check_duration, check_one_of, check_selector, parse_ip

DEFAULT_AS_NUMBER = 64512
DEFAULT_LISTEN_PORT = 179
DEFAULT_LOG_SEVERITY = "Info"
BIND_MODES = ("None", "NodeIP")
SOURCE_ADDRESSES = ("UseNodeIP", "None")
NEXT_HOP_MODES = ("Auto", "Self", "Keep")
REVERSE_PEERING_MODES = ("Auto", "Manual")
FAILURE_DETECTION_MODES = ("None", "BFDIfDirectlyConnected")
RESTART_MODES = ("GracefulRestart", "LongLivedGracefulRestart")
BIRD_GATEWAY_MODES = ("Recursive", "DirectIfDirectlyConnected")
FILTER_ACTIONS = ("Accept", "Reject")
MATCH_OPERATORS = ("Equal", "NotEqual", "In", "NotIn")
FILTER_SOURCES = ("RemotePeers",)
MAX_SELECTOR_LENGTH = 1024
MAX_PEER_IP_LENGTH = 64

_STANDARD_COMMUNITY = re.compile(r"^(\d+):(\d+)$")
_LARGE_COMMUNITY = re.compile(r"^(\d+):(\d+):(\d+)$")
_IGNORED_INTERFACE = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}$")
_FILTER_INTERFACE = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}$")


def _check_max_length(ctx: Ctx, path: str, value: str | None, limit: int) -> bool:
    if value is None or len(value) <= limit:
        return True
    ctx.error(path, f"too long: at most {limit} characters (got {len(value)})")
    return False


# --- shared parts ------------------------------------------------------------------------------


class SecretKeySelector(ApiStruct):
    """A key of a Secret in calico/node's namespace (Kubernetes ``SecretKeySelector``)."""

    key: str
    name: str | None = None
    optional: bool | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        if not self.key:
            ctx.error(join(path, "key"), "the secret key must be given")


class BGPPassword(ApiStruct):
    secret_key_ref: SecretKeySelector | None = None


def community_problem(value: str) -> str | None:
    """Why ``value`` is not a BGP community (``aa:nn`` 16-bit parts, ``aa:nn:mm`` 32-bit)."""
    if m := _STANDARD_COMMUNITY.match(value):
        bits = 16
    elif m := _LARGE_COMMUNITY.match(value):
        bits = 32
    else:
        return "expected aa:nn (standard) or aa:nn:mm (large)"
    if any(int(part) >= 2**bits for part in m.groups()):
        kind = "standard" if bits == 16 else "large"
        return f"each part of a {kind} community must be a {bits}-bit number"
    return None


# --- BGPConfiguration --------------------------------------------------------------------------


class ServiceIPBlock(ApiStruct):
    """One CIDR of service cluster, external or LoadBalancer IPs to advertise."""

    cidr: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        check_strict_net(ctx, join(path, "cidr"), self.cidr)


class Community(ApiStruct):
    name: str | None = None
    value: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        if not self.name:
            ctx.error(join(path, "name"), "a community needs a name")
        else:
            check_name_ref(ctx, join(path, "name"), self.name, "community name")
        if not self.value:
            ctx.error(join(path, "value"), "a community needs a value (aa:nn or aa:nn:mm)")
        elif problem := community_problem(self.value):
            ctx.error(join(path, "value"), f"invalid community value {self.value!r}: {problem}")


class PrefixAdvertisement(ApiStruct):
    cidr: str | None = None
    communities: list[str] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        if not self.cidr:
            ctx.error(join(path, "cidr"), "a prefix advertisement needs a cidr")
        else:
            check_strict_net(ctx, join(path, "cidr"), self.cidr)
        if not self.communities:
            ctx.error(join(path, "communities"), "a prefix advertisement needs communities")


# Fields only the cluster-wide ("default") BGPConfiguration may set.
_DEFAULT_ONLY = (
    ("node_to_node_mesh_enabled", "nodeToNodeMeshEnabled"),
    ("as_number", "asNumber"),
    ("service_load_balancer_ips", "serviceLoadBalancerIPs"),
    ("service_external_ips", "serviceExternalIPs"),
    ("service_cluster_ips", "serviceClusterIPs"),
    ("node_mesh_password", "nodeMeshPassword"),
    ("node_mesh_max_restart_time", "nodeMeshMaxRestartTime"),
)


class BGPConfigurationSpec(ApiStruct):
    log_severity_screen: str | None = None
    node_to_node_mesh_enabled: bool | None = None
    as_number: int | str | None = None
    service_load_balancer_ips: list[ServiceIPBlock] | None = msgspec.field(
        default=None, name="serviceLoadBalancerIPs"
    )
    service_external_ips: list[ServiceIPBlock] | None = msgspec.field(
        default=None, name="serviceExternalIPs"
    )
    service_cluster_ips: list[ServiceIPBlock] | None = msgspec.field(
        default=None, name="serviceClusterIPs"
    )
    communities: list[Community] | None = None
    prefix_advertisements: list[PrefixAdvertisement] | None = None
    listen_port: int | None = None
    node_mesh_password: BGPPassword | None = None
    node_mesh_max_restart_time: str | None = None
    bind_mode: str | None = None
    ignored_interfaces: list[str] | None = None
    local_workload_peering_ipv4: str | None = msgspec.field(
        default=None, name="localWorkloadPeeringIPV4"
    )
    local_workload_peering_ipv6: str | None = msgspec.field(
        default=None, name="localWorkloadPeeringIPV6"
    )
    program_cluster_routes: str | None = None
    service_load_balancer_aggregation: str | None = None

    # --- the values in effect -------------------------------------------------------------
    def effective_as_number(self) -> int:
        """The cluster's default AS number (64512 unless set)."""
        return parse_as_number(self.as_number) or DEFAULT_AS_NUMBER

    def mesh_enabled(self) -> bool:
        return self.node_to_node_mesh_enabled is not False

    def effective_listen_port(self) -> int:
        return self.listen_port or DEFAULT_LISTEN_PORT

    # --- validation -------------------------------------------------------------------------
    def check(self, ctx: Ctx, path: str) -> None:
        check_one_of(ctx, join(path, "logSeverityScreen"), self.log_severity_screen, LOG_LEVELS)
        check_as_number(ctx, join(path, "asNumber"), self.as_number)
        check_port(ctx, join(path, "listenPort"), self.listen_port)
        check_duration(ctx, join(path, "nodeMeshMaxRestartTime"), self.node_mesh_max_restart_time)
        check_one_of(ctx, join(path, "bindMode"), self.bind_mode, BIND_MODES)
        check_one_of(
            ctx, join(path, "programClusterRoutes"), self.program_cluster_routes, ENABLED_DISABLED
        )
        check_one_of(
            ctx,
            join(path, "serviceLoadBalancerAggregation"),
            self.service_load_balancer_aggregation,
            ENABLED_DISABLED,
        )
        check_ip_version(
            ctx, join(path, "localWorkloadPeeringIPV4"), self.local_workload_peering_ipv4, 4
        )
        check_ip_version(
            ctx, join(path, "localWorkloadPeeringIPV6"), self.local_workload_peering_ipv6, 6
        )
        for i, iface in enumerate(self.ignored_interfaces or []):
            if iface == "*" or not _IGNORED_INTERFACE.match(iface):
                ctx.error(
                    f"{join(path, 'ignoredInterfaces')}[{i}]",
                    f"invalid interface name {iface!r}: 1-15 characters of a-z, A-Z, 0-9, "
                    "_ . - and * as a wildcard (but not * alone)",
                )
        self._check_communities(ctx, path)
        if self.node_to_node_mesh_enabled is False:
            for attr, field in (
                ("node_mesh_password", "nodeMeshPassword"),
                ("node_mesh_max_restart_time", "nodeMeshMaxRestartTime"),
            ):
                if getattr(self, attr) is not None:
                    ctx.error(
                        join(path, field),
                        f"{field} cannot be set when nodeToNodeMeshEnabled is false",
                    )
        if ctx.resource.name != DEFAULT_NAME:
            for attr, field in _DEFAULT_ONLY:
                if getattr(self, attr) not in (None, []):
                    ctx.error(
                        join(path, field),
                        f"{field} can only be set on the cluster-wide BGPConfiguration "
                        f"named {DEFAULT_NAME!r}",
                    )

    def _check_communities(self, ctx: Ctx, path: str) -> None:
        names = {c.name for c in self.communities or [] if c.name}
        if self.communities and not self.prefix_advertisements:
            ctx.error(
                join(path, "communities"),
                "communities are defined but not used in prefixAdvertisements",
            )
        for i, pa in enumerate(self.prefix_advertisements or []):
            for j, value in enumerate(pa.communities or []):
                if value in names:
                    continue
                if community_problem(value) is not None:
                    ctx.error(
                        f"{join(path, 'prefixAdvertisements')}[{i}].communities[{j}]",
                        f"{value!r} is neither a community value (aa:nn or aa:nn:mm) nor the "
                        "name of one of spec.communities",
                    )


def _meshenabled(r: Resource) -> str:
    value = r.spec.node_to_node_mesh_enabled  # type: ignore[attr-defined]
    return "-" if value is None else str(value).lower()


def _asnumber(r: Resource) -> str:
    value = r.spec.as_number  # type: ignore[attr-defined]
    return "-" if value is None else str(value)


_BGPCONFIG_COLUMNS: tuple[Column, ...] = (
    name_column(),
    spec_column("LOGSEVERITY", "log_severity_screen"),
    ("MESHENABLED", _meshenabled),
    ("ASNUMBER", _asnumber),
)


@register(
    "bgpconfigurations",
    aliases=("bgpconfiguration", "bgpconfig", "bgpconfigs"),
    columns=_BGPCONFIG_COLUMNS,
    wide_columns=_BGPCONFIG_COLUMNS,
)
class BGPConfiguration(Resource):
    """``default`` holds the cluster-wide settings; ``node.<nodename>`` per-node overrides."""

    KIND: ClassVar[str] = "BGPConfiguration"
    spec: BGPConfigurationSpec = msgspec.field(default_factory=BGPConfigurationSpec)

    def apply_defaults(self) -> None:
        self.spec.as_number = normalise_as_number(self.spec.as_number)


# --- BGPPeer -----------------------------------------------------------------------------------


class BGPPeerSpec(ApiStruct):
    node: str | None = None
    node_selector: str | None = None
    peer_ip: str | None = msgspec.field(default=None, name="peerIP")
    as_number: int | str | None = None
    peer_selector: str | None = None
    keep_original_next_hop: bool = False
    password: BGPPassword | None = None
    source_address: str | None = None
    max_restart_time: str | None = None
    num_allowed_local_as_numbers: int | None = msgspec.field(
        default=None, name="numAllowedLocalASNumbers"
    )
    ttl_security: int | None = None
    keepalive_time: str | None = None
    local_as_number: int | str | None = msgspec.field(default=None, name="localASNumber")
    reachable_by: str | None = None
    filters: list[str] | None = None
    local_workload_selector: str | None = None
    next_hop_mode: str | None = None
    reverse_peering: str | None = None
    # Calico Enterprise (dual ToR) extensions.
    failure_detection_mode: str | None = None
    restart_mode: str | None = None
    bird_gateway_mode: str | None = msgspec.field(default=None, name="birdGatewayMode")

    def check(self, ctx: Ctx, path: str) -> None:
        self._check_fields(ctx, path)
        self._check_combinations(ctx, path)

    def _check_fields(self, ctx: Ctx, path: str) -> None:
        if _check_max_length(ctx, join(path, "node"), self.node, 253):
            check_name_ref(ctx, join(path, "node"), self.node, "node name")
        for field, value in (
            ("nodeSelector", self.node_selector),
            ("peerSelector", self.peer_selector),
            ("localWorkloadSelector", self.local_workload_selector),
        ):
            if _check_max_length(ctx, join(path, field), value, MAX_SELECTOR_LENGTH):
                check_selector(ctx, join(path, field), value)
        if (
            self.peer_ip
            and _check_max_length(ctx, join(path, "peerIP"), self.peer_ip, MAX_PEER_IP_LENGTH)
            and split_ip_port(self.peer_ip) is None
        ):
            ctx.error(
                join(path, "peerIP"),
                f"invalid peerIP {self.peer_ip!r}: expected an IP address, optionally with a "
                "port as <IPv4>:<port> or [<IPv6>]:<port> (port 1-65535)",
            )
        check_as_number(ctx, join(path, "asNumber"), self.as_number)
        check_as_number(ctx, join(path, "localASNumber"), self.local_as_number)
        check_duration(ctx, join(path, "maxRestartTime"), self.max_restart_time)
        check_duration(ctx, join(path, "keepaliveTime"), self.keepalive_time)
        check_int_range(ctx, join(path, "ttlSecurity"), self.ttl_security, 0, 255)
        for field, value, allowed in (
            ("sourceAddress", self.source_address, SOURCE_ADDRESSES),
            ("nextHopMode", self.next_hop_mode, NEXT_HOP_MODES),
            ("reversePeering", self.reverse_peering, REVERSE_PEERING_MODES),
            ("failureDetectionMode", self.failure_detection_mode, FAILURE_DETECTION_MODES),
            ("restartMode", self.restart_mode, RESTART_MODES),
            ("birdGatewayMode", self.bird_gateway_mode, BIRD_GATEWAY_MODES),
        ):
            check_one_of(ctx, join(path, field), value, allowed)
        for i, name in enumerate(self.filters or []):
            check_name_ref(ctx, f"{join(path, 'filters')}[{i}]", name, "BGPFilter name")

    def _check_combinations(self, ctx: Ctx, path: str) -> None:
        has_as = bool(parse_as_number(self.as_number))
        if self.node and self.node_selector:
            ctx.error(join(path, "node"), "node and nodeSelector cannot both be set")
        if self.peer_ip and self.peer_selector:
            ctx.error(join(path, "peerIP"), "peerIP and peerSelector cannot both be set")
        if self.peer_selector and has_as:
            ctx.error(
                join(path, "asNumber"),
                "asNumber must be empty when peerSelector is set: each selected node's own AS "
                "number is used",
            )
        if self.local_workload_selector:
            if not has_as:
                ctx.error(join(path, "asNumber"), "asNumber is required with localWorkloadSelector")
            if self.peer_ip:
                ctx.error(
                    join(path, "peerIP"), "peerIP must be empty when localWorkloadSelector is set"
                )
            if self.peer_selector:
                ctx.error(
                    join(path, "peerSelector"),
                    "peerSelector must be empty when localWorkloadSelector is set",
                )
        if self.reachable_by:
            self._check_reachable_by(ctx, join(path, "reachableBy"))
        if self.keep_original_next_hop and self.next_hop_mode is not None:
            ctx.error(
                join(path, "keepOriginalNextHop"),
                "keepOriginalNextHop is deprecated and cannot be true when nextHopMode is set: "
                "use nextHopMode: Keep",
            )

    def _check_reachable_by(self, ctx: Ctx, where: str) -> None:
        gateway = parse_ip(self.reachable_by or "")
        if not self.peer_ip:
            ctx.error(where, "reachableBy must be empty when peerIP is empty")
        elif gateway is None:
            ctx.error(where, f"invalid reachableBy {self.reachable_by!r}: expected an IP address")
        else:
            peer = split_ip_port(self.peer_ip)
            peer_ip = parse_ip(peer[0]) if peer else None
            if peer_ip is not None and peer_ip.version != gateway.version:
                ctx.error(where, "reachableBy and peerIP must be of the same IP family")


def _peer_node(r: Resource) -> str:
    spec = r.spec  # type: ignore[attr-defined]
    return spec.node or spec.node_selector or "(global)"


def _peer_asn(r: Resource) -> str:
    return str(r.spec.as_number or 0)  # type: ignore[attr-defined]


_PEER_COLUMNS: tuple[Column, ...] = (
    name_column(),
    spec_column("PEERIP", "peer_ip"),
    ("NODE", _peer_node),
    ("ASN", _peer_asn),
)


@register(
    "bgppeers",
    aliases=("bgppeer", "bgpp", "bgpps", "bp", "bps"),
    columns=_PEER_COLUMNS,
    wide_columns=_PEER_COLUMNS,
)
class BGPPeer(Resource):
    """A BGP peering for the selected nodes (all nodes when neither node nor nodeSelector)."""

    KIND: ClassVar[str] = "BGPPeer"
    spec: BGPPeerSpec = msgspec.field(default_factory=BGPPeerSpec)

    def apply_defaults(self) -> None:
        self.spec.as_number = normalise_as_number(self.spec.as_number)
        self.spec.local_as_number = normalise_as_number(self.spec.local_as_number)


# --- BGPFilter ---------------------------------------------------------------------------------


class BGPFilterPrefixLength(ApiStruct):
    min: int | None = None
    max: int | None = None


class _BGPFilterRule(ApiStruct):
    """One rule: the routes it matches (cidr, prefixLength, source, interface) and its action."""

    action: str
    cidr: str | None = None
    prefix_length: BGPFilterPrefixLength | None = None
    source: str | None = None
    interface: str | None = None
    match_operator: str | None = None

    VERSION: ClassVar[int] = 4

    def check(self, ctx: Ctx, path: str) -> None:
        if not self.action:
            ctx.error(join(path, "action"), "action is required: Accept or Reject")
        check_one_of(ctx, join(path, "action"), self.action or None, FILTER_ACTIONS)
        check_strict_net(ctx, join(path, "cidr"), self.cidr or None, self.VERSION)
        check_one_of(ctx, join(path, "matchOperator"), self.match_operator, MATCH_OPERATORS)
        check_one_of(ctx, join(path, "source"), self.source, FILTER_SOURCES)
        if self.interface is not None and not _FILTER_INTERFACE.match(self.interface):
            ctx.error(
                join(path, "interface"),
                f"invalid interface {self.interface!r}: 1-15 characters of a-z, A-Z, 0-9, "
                "_ . - and * as a wildcard",
            )
        if self.prefix_length is not None:
            top = 32 if self.VERSION == 4 else 128
            for bound in ("min", "max"):
                check_int_range(
                    ctx,
                    join(join(path, "prefixLength"), bound),
                    getattr(self.prefix_length, bound),
                    0,
                    top,
                )
        if self.cidr and not self.match_operator:
            ctx.error(join(path, "matchOperator"), "matchOperator is required when cidr is set")
        if not self.cidr and self.match_operator:
            ctx.error(join(path, "cidr"), "cidr is required when matchOperator is set")
        if not self.cidr and self.prefix_length is not None:
            ctx.error(join(path, "cidr"), "cidr is required when prefixLength is set")


class BGPFilterRuleV4(_BGPFilterRule):
    VERSION: ClassVar[int] = 4


class BGPFilterRuleV6(_BGPFilterRule):
    VERSION: ClassVar[int] = 6


class BGPFilterSpec(ApiStruct):
    export_v4: list[BGPFilterRuleV4] | None = None
    import_v4: list[BGPFilterRuleV4] | None = None
    export_v6: list[BGPFilterRuleV6] | None = None
    import_v6: list[BGPFilterRuleV6] | None = None


def _count(*attrs: str) -> Column:
    header = "NUMEXPORT" if attrs[0].startswith("export") else "NUMIMPORT"

    def get(r: Resource) -> str:
        return str(sum(len(getattr(r.spec, a) or []) for a in attrs))  # type: ignore[attr-defined]

    return (header, get)


@register(
    "bgpfilters",
    aliases=("bgpfilter", "bgpf", "bgpfs", "bf", "bfs"),
    columns=(name_column(),),
    wide_columns=(
        name_column(),
        _count("export_v4", "export_v6"),
        _count("import_v4", "import_v6"),
    ),
)
class BGPFilter(Resource):
    """Ordered accept/reject rules for routes exported to or imported from a BGPPeer."""

    KIND: ClassVar[str] = "BGPFilter"
    spec: BGPFilterSpec = msgspec.field(default_factory=BGPFilterSpec)
