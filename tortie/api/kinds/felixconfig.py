"""FelixConfiguration: every field of Calico's ``projectcalico.org/v3`` FelixConfigurationSpec.

Names, types and rules follow ``api/pkg/apis/projectcalico/v3/felixconfig.go``, its CRD
(patterns, enums, ranges) and libcalico-go's ``validateFelixConfigSpec``; the defaults in
``FELIX_DEFAULTS`` are Felix's own (``felix/config/config_params.go``), applied by the agent, not
written into the resource. Unset fields mean "Felix's default", so everything is optional.

Which resource applies where (by name):

- ``default``: the cluster-wide settings;
- ``node.<nodename>``: overrides for one node;
- any other name with ``spec.nodeSelector``: overrides for the selected nodes (Calico 3.32+);
  ``nodeSelector`` is not allowed on ``default`` or ``node.*``.

Calico's client fills in three fields on every write (``clientv3/felixconfig.go``):
``floatingIPs: Disabled``, ``bpfConnectTimeLoadBalancing: TCP`` and
``bpfHostNetworkedNATWithoutCTLB: Enabled``, and maps the deprecated
``bpfConnectTimeLoadBalancingEnabled`` onto those two. So does ``apply_defaults``.

The enum spellings are Calico's: exact case where libcalico-go validates them (``Info``,
``Drop``, ``Accept``...), any case where only the CRD pattern does (``chainInsertMode``,
``bpfEnforceRPF``, ``bpfMapSizeConntrackScaling``, ``routeSource``).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, ClassVar

import msgspec

from tortie.api.base import ApiStruct, Ctx, Resource, join, struct_fields
from tortie.api.kinds.common import (
    DEFAULT_NAME,
    ENABLED_DISABLED,
    LOG_LEVELS,
    MAX_UINT32,
    check_cidr_or_ip,
    check_iface_filter,
    check_int_range,
    check_interface_name,
    check_ip_version,
    check_port_range,
    check_regexp,
    parse_network,
)
from tortie.api.registry import name_column, register
from tortie.api.validators import (
    check_duration,
    check_one_of,
    check_selector,
    is_dns1123_label,
)

# --- defaults ----------------------------------------------------------------------------------

DEFAULT_FAILSAFE_INBOUND_HOST_PORTS: tuple[dict[str, Any], ...] = (
    {"protocol": "TCP", "port": 22},
    {"protocol": "UDP", "port": 68},
    {"protocol": "TCP", "port": 179},
    {"protocol": "TCP", "port": 2379},
    {"protocol": "TCP", "port": 2380},
    {"protocol": "TCP", "port": 5473},
    {"protocol": "TCP", "port": 6443},
    {"protocol": "TCP", "port": 6666},
    {"protocol": "TCP", "port": 6667},
)
"""ssh, DHCP, BGP, etcd, Typha and the Kubernetes API stay reachable whatever the policy."""

DEFAULT_FAILSAFE_OUTBOUND_HOST_PORTS: tuple[dict[str, Any], ...] = (
    {"protocol": "UDP", "port": 53},
    {"protocol": "UDP", "port": 67},
    {"protocol": "TCP", "port": 179},
    {"protocol": "TCP", "port": 2379},
    {"protocol": "TCP", "port": 2380},
    {"protocol": "TCP", "port": 5473},
    {"protocol": "TCP", "port": 6443},
    {"protocol": "TCP", "port": 6666},
    {"protocol": "TCP", "port": 6667},
)
"""DNS, DHCP, BGP, etcd, Typha and the Kubernetes API stay reachable whatever the policy."""

FELIX_DEFAULTS: dict[str, Any] = {
    # Process and logging.
    "logFilePath": "/var/log/calico/felix.log",
    "logSeverityFile": "Info",
    "logSeverityScreen": "Info",
    "logSeveritySys": "Info",
    "logPrefix": "calico-packet",
    "logActionRateLimitBurst": 5,
    "healthEnabled": False,
    "healthHost": "localhost",
    "healthPort": 9099,
    "prometheusMetricsEnabled": False,
    "prometheusMetricsPort": 9091,
    "prometheusGoMetricsEnabled": True,
    "prometheusProcessMetricsEnabled": True,
    "prometheusWireGuardMetricsEnabled": True,
    "reportingInterval": "30s",
    "reportingTTL": "90s",
    "usageReportingEnabled": True,
    "usageReportingInitialDelay": "300s",
    "usageReportingInterval": "86400s",
    # Dataplane: common.
    "ipv6Support": True,
    "interfacePrefix": "cali",
    "interfaceExclude": "kube-ipvs0",
    "interfaceRefreshInterval": "90s",
    "routeRefreshInterval": "90s",
    "deviceRouteProtocol": 3,
    "removeExternalRoutes": True,
    "programClusterRoutes": "Disabled",
    "ipForwarding": "Enabled",
    "netlinkTimeout": "10s",
    "defaultEndpointToHostAction": "Drop",
    "failsafeInboundHostPorts": list(DEFAULT_FAILSAFE_INBOUND_HOST_PORTS),
    "failsafeOutboundHostPorts": list(DEFAULT_FAILSAFE_OUTBOUND_HOST_PORTS),
    "kubeNodePortRanges": ["30000:32767"],
    "natOutgoingExclusions": "IPPoolsOnly",
    "serviceLoopPrevention": "Drop",
    "workloadSourceSpoofing": "Disabled",
    "floatingIPs": "Disabled",
    "metadataAddr": "127.0.0.1",
    "metadataPort": 8775,
    "endpointReportingEnabled": False,
    "endpointReportingDelay": "1s",
    "endpointStatusPathPrefix": "/var/run/calico",
    "awsSrcDstCheck": "DoNothing",
    # Dataplane: iptables and ipsets.
    "iptablesBackend": "Auto",
    "chainInsertMode": "Insert",
    "iptablesMarkMask": 0xFFFF0000,
    "iptablesRefreshInterval": "180s",
    "iptablesPostWriteCheckInterval": "5s",
    "iptablesLockProbeInterval": "50ms",
    "iptablesFilterAllowAction": "Accept",
    "iptablesMangleAllowAction": "Accept",
    "iptablesFilterDenyAction": "Drop",
    "ipsetsRefreshInterval": "90s",
    "maxIpsetSize": 1048576,
    "xdpEnabled": True,
    "xdpRefreshInterval": "90s",
    # Dataplane: nftables.
    "nftablesMode": "Auto",
    "nftablesMarkMask": 0xFFFF0000,
    "nftablesRefreshInterval": "90s",
    "nftablesFilterAllowAction": "Accept",
    "nftablesMangleAllowAction": "Accept",
    "nftablesFilterDenyAction": "Drop",
    # Overlays.
    "vxlanPort": 4789,
    "vxlanVNI": 4096,
    "vxlanMTU": 0,
    "vxlanMTUV6": 0,
    "ipipMTU": 0,
    "allowVXLANPacketsFromWorkloads": False,
    "allowIPIPPacketsFromWorkloads": False,
    "wireguardEnabled": False,
    "wireguardEnabledV6": False,
    "wireguardListeningPort": 51820,
    "wireguardListeningPortV6": 51821,
    "wireguardRoutingRulePriority": 99,
    "wireguardInterfaceName": "wireguard.cali",
    "wireguardInterfaceNameV6": "wg-v6.cali",
    "wireguardMTU": 0,
    "wireguardMTUV6": 0,
    "wireguardKeepAlive": "0s",
    # eBPF.
    "bpfEnabled": False,
    "bpfLogLevel": "Off",
    "bpfConnectTimeLoadBalancing": "TCP",
    "bpfHostNetworkedNATWithoutCTLB": "Enabled",
    "bpfExternalServiceMode": "Tunnel",
    "bpfKubeProxyMinSyncPeriod": "1s",
    "bpfKubeProxyHealthzPort": 10256,
    "bpfPSNATPorts": "20000:29999",
    "bpfEnforceRPF": "Loose",
    "bpfForceTrackPacketsFromIfaces": ["docker+"],
    # Go runtime.
    "goGCThreshold": 40,
    "goMemoryLimitMB": -1,
    "goMaxProcs": -1,
}

# --- enumerations, ranges and patterns (by JSON name) -----------------------------------------

ENUMS: dict[str, tuple[str, ...]] = {
    "logSeverityFile": LOG_LEVELS,
    "logSeverityScreen": LOG_LEVELS,
    "logSeveritySys": LOG_LEVELS,
    "iptablesBackend": ("Legacy", "NFT", "Auto"),
    "defaultEndpointToHostAction": ("Drop", "Accept", "Return"),
    "iptablesFilterAllowAction": ("Accept", "Return"),
    "iptablesMangleAllowAction": ("Accept", "Return"),
    "iptablesFilterDenyAction": ("Drop", "Reject"),
    "nftablesFilterAllowAction": ("Accept", "Return"),
    "nftablesMangleAllowAction": ("Accept", "Return"),
    "nftablesFilterDenyAction": ("Drop", "Reject"),
    "nftablesMode": ("Disabled", "Enabled", "Auto"),
    "natOutgoingExclusions": ("IPPoolsOnly", "IPPoolsAndHostIPs"),
    "programClusterRoutes": ENABLED_DISABLED,
    "ipForwarding": ENABLED_DISABLED,
    "floatingIPs": ENABLED_DISABLED,
    "windowsManageFirewallRules": ENABLED_DISABLED,
    "istioAmbientMode": ENABLED_DISABLED,
    "awsSrcDstCheck": ("DoNothing", "Enable", "Disable"),
    "serviceLoopPrevention": ("Drop", "Reject", "Disabled"),
    "workloadSourceSpoofing": ("Disabled", "Any"),
    "flowLogsLocalReporter": ("Disabled", "Enabled"),
    "flowLogsPolicyEvaluationMode": ("None", "Continuous"),
    "localSubnetL2Reachability": ("Disabled", "PodsAndLoadBalancers"),
    "bpfLogLevel": ("Debug", "Info", "Off"),
    "bpfConntrackLogLevel": ("Off", "Debug"),
    "bpfConntrackMode": ("Auto", "Userspace", "BPFProgram"),
    "bpfConnectTimeLoadBalancing": ("TCP", "Enabled", "Disabled"),
    "bpfHostNetworkedNATWithoutCTLB": ENABLED_DISABLED,
    "bpfExternalServiceMode": ("Tunnel", "DSR"),
    "bpfRedirectToPeer": ("Enabled", "Disabled", "L2Only"),
    "bpfProfiling": ENABLED_DISABLED,
    "bpfAttachType": ("TC", "TCX"),
    "bpfJITHardening": ("Auto", "Strict"),
    "bpfOverlayHostSourceIP": ("TunnelAddress", "HostAddress"),
}
# Validated only by a case-insensitive CRD pattern in Calico: any case is accepted.
CASE_INSENSITIVE_ENUMS: dict[str, tuple[str, ...]] = {
    "chainInsertMode": ("Insert", "Append"),
    "bpfEnforceRPF": ("Disabled", "Strict", "Loose"),
    "bpfMapSizeConntrackScaling": ("Disabled", "DoubleIfFull"),
    "routeSource": ("WorkloadIPs", "CalicoIPAM"),
}
DURATIONS: tuple[str, ...] = (
    "dataplaneWatchdogTimeout",
    "routeRefreshInterval",
    "interfaceRefreshInterval",
    "iptablesRefreshInterval",
    "iptablesPostWriteCheckInterval",
    "iptablesLockTimeout",
    "iptablesLockProbeInterval",
    "ipsetsRefreshInterval",
    "xdpRefreshInterval",
    "netlinkTimeout",
    "reportingInterval",
    "reportingTTL",
    "endpointReportingDelay",
    "usageReportingInitialDelay",
    "usageReportingInterval",
    "debugSimulateCalcGraphHangAfter",
    "debugSimulateDataplaneHangAfter",
    "debugSimulateDataplaneApplyDelay",
    "nftablesRefreshInterval",
    "bpfKubeProxyMinSyncPeriod",
    "bpfIPFragTimeout",
    "flowLogsFlushInterval",
    "wireguardKeepAlive",
    "liveMigrationRouteConvergenceTime",
    "localSubnetL2ReachabilityRefreshInterval",
)
INT_RANGES: dict[str, tuple[int, int]] = {
    "healthPort": (0, 65535),
    "prometheusMetricsPort": (0, 65535),
    "metadataPort": (0, 65535),
    "debugPort": (0, 65535),
    "vxlanPort": (1, 65535),
    "vxlanVNI": (1, 2**24 - 1),
    "wireguardListeningPort": (1, 65535),
    "wireguardListeningPortV6": (1, 65535),
    "bpfKubeProxyHealthzPort": (0, 65535),
    "wireguardRoutingRulePriority": (1, 32765),
    "iptablesMarkMask": (0, MAX_UINT32),
    "nftablesMarkMask": (0, MAX_UINT32),
    "bpfExtToServiceConnmark": (0, MAX_UINT32),
    "deviceRouteProtocol": (0, 255),
    "logActionRateLimitBurst": (0, 9999),
    "bpfMapSizeConntrackCleanupQueue": (1, 2**31 - 1),
    "goGCThreshold": (-1, 2**31 - 1),
    "goMemoryLimitMB": (-1, 2**31 - 1),
    "goMaxProcs": (-1, 2**31 - 1),
}
REGEXPS: tuple[str, ...] = (
    "logDebugFilenameRegex",
    "bpfDataIfacePattern",
    "bpfL3IfacePattern",
    "bpfDisableGROForIfaces",
    "mtuIfacePattern",
)
PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "featureDetectOverride": (
        re.compile(r"^([a-zA-Z0-9-_]+=(true|false|),)*([a-zA-Z0-9-_]+=(true|false|))?$"),
        "a comma-separated list of Feature=true|false| with no spaces, e.g. "
        '"SNATFullyRandom=true,MASQFullyRandom=false"',
    ),
    "featureGates": (
        re.compile(r"^([a-zA-Z0-9-_]+=([^=]+),)*([a-zA-Z0-9-_]+=([^=]+))?$"),
        'a comma-separated list of Feature=value with no spaces, e.g. "Feature=enabled"',
    ),
    "logPrefix": (
        re.compile(r"^([a-zA-Z0-9%: /_-])*$"),
        "letters, digits, spaces and % : / _ - only (%t tier, %k kind, %n name, %p namespace/name)",
    ),
    "logActionRateLimit": (
        re.compile(r"^[1-9]\d{0,3}/(?:second|minute|hour|day)$"),
        'N/unit with N 1-9999 and unit second, minute, hour or day, e.g. "10/second"',
    ),
    "prometheusMetricsHost": (
        re.compile(r"^[a-zA-Z0-9:._+-]{1,64}$"),
        "a host name or IP address of at most 64 characters",
    ),
}
_CONNTRACK_TIMEOUT = re.compile(r"^(([0-9]*(\.[0-9]*)?(ms|s|h|m|us)+)+|Auto)$")
_HEALTH_TIMEOUT_NAME = re.compile(r"^[a-zA-Z0-9_ -]+$")
_BPF_LOG_FILTER_KEY = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
PROTO_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_NODE_PORT_RANGES = 7
MAX_ROUTE_TABLES = 0xFFFF
OPENSTACK_REGION_MAX = 63 - len("openstack-region-")
DSCP_NAMES = (
    "DF", "EF", "CS0", "CS1", "CS2", "CS3", "CS4", "CS5", "CS6", "CS7",
    "AF11", "AF12", "AF13", "AF21", "AF22", "AF23",
    "AF31", "AF32", "AF33", "AF41", "AF42", "AF43",
)  # fmt: skip


# --- nested types ------------------------------------------------------------------------------


class ProtoPort(ApiStruct):
    """A failsafe port: protocol (TCP, UDP or SCTP; TCP when unset), port and optional CIDR."""

    port: int
    protocol: str | None = None
    net: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        check_one_of(ctx, join(path, "protocol"), self.protocol, PROTO_PORT_PROTOCOLS)
        check_int_range(ctx, join(path, "port"), self.port, 0, 65535)
        check_cidr_or_ip(ctx, join(path, "net"), self.net or None)


class HealthTimeoutOverride(ApiStruct):
    name: str
    timeout: str

    def check(self, ctx: Ctx, path: str) -> None:
        if not _HEALTH_TIMEOUT_NAME.match(self.name):
            ctx.error(
                join(path, "name"),
                f"invalid name {self.name!r}: letters, digits, space, _ and - only",
            )
        if self.timeout.startswith("-"):
            ctx.error(join(path, "timeout"), "the timeout must not be negative")
        else:
            check_duration(ctx, join(path, "timeout"), self.timeout)


class RouteTableRange(ApiStruct):
    """Deprecated single range of route table indices; must lie within 1-250."""

    min: int
    max: int

    def check(self, ctx: Ctx, path: str) -> None:
        if not 1 <= self.min <= self.max <= 250:
            ctx.error(path, "must be a range of route table indices within 1..250")


class RouteTableIDRange(ApiStruct):
    min: int
    max: int

    def check(self, ctx: Ctx, path: str) -> None:
        if self.min > self.max:
            ctx.error(path, "min must not be greater than max")
        if self.min < 1:
            ctx.error(join(path, "min"), "route table indices start at 1")
        if self.max > MAX_UINT32:
            ctx.error(join(path, "max"), f"the highest route table index is {MAX_UINT32}")


class BPFConntrackTimeouts(ApiStruct):
    """eBPF conntrack timers; each a duration, or ``Auto`` for the kernel's own value."""

    creation_grace_period: str | None = None
    tcp_syn_sent: str | None = None
    tcp_established: str | None = None
    tcp_fins_seen: str | None = None
    tcp_reset_seen: str | None = None
    udp_timeout: str | None = msgspec.field(default=None, name="udpTimeout")
    generic_timeout: str | None = None
    icmp_timeout: str | None = msgspec.field(default=None, name="icmpTimeout")

    def check(self, ctx: Ctx, path: str) -> None:
        for field in struct_fields(self):
            value = getattr(self, field.name)
            if value is not None and not _CONNTRACK_TIMEOUT.match(value):
                ctx.error(
                    join(path, field.encode_name),
                    f"invalid timeout {value!r}: a duration such as 30s or 1h, or Auto",
                )


# --- the spec ----------------------------------------------------------------------------------


def _f(name: str) -> Any:
    """An optional field whose JSON name is not the plain camelCase of its attribute."""
    return msgspec.field(default=None, name=name)


class FelixConfigurationSpec(ApiStruct):
    # Process: dataplane driver, feature detection.
    use_internal_dataplane_driver: bool | None = None
    dataplane_driver: str | None = None
    dataplane_watchdog_timeout: str | None = None
    feature_detect_override: str | None = None
    feature_gates: str | None = None
    # Process: logging.
    log_file_path: str | None = None
    log_severity_file: str | None = None
    log_severity_screen: str | None = None
    log_severity_sys: str | None = None
    log_debug_filename_regex: str | None = None
    log_prefix: str | None = None
    log_action_rate_limit: str | None = None
    log_action_rate_limit_burst: int | None = None
    # Process: health, Prometheus, status reporting.
    health_enabled: bool | None = None
    health_host: str | None = None
    health_port: int | None = None
    health_timeout_overrides: list[HealthTimeoutOverride] | None = None
    prometheus_metrics_enabled: bool | None = None
    prometheus_metrics_host: str | None = None
    prometheus_metrics_port: int | None = None
    prometheus_go_metrics_enabled: bool | None = None
    prometheus_process_metrics_enabled: bool | None = None
    prometheus_wire_guard_metrics_enabled: bool | None = _f("prometheusWireGuardMetricsEnabled")
    prometheus_metrics_ca_file: str | None = _f("prometheusMetricsCAFile")
    prometheus_metrics_cert_file: str | None = None
    prometheus_metrics_key_file: str | None = None
    prometheus_metrics_client_auth: str | None = None
    reporting_interval: str | None = None
    reporting_ttl: str | None = _f("reportingTTL")
    endpoint_reporting_enabled: bool | None = None
    endpoint_reporting_delay: str | None = None
    endpoint_status_path_prefix: str | None = None
    usage_reporting_enabled: bool | None = None
    usage_reporting_initial_delay: str | None = None
    usage_reporting_interval: str | None = None
    # Process: Go runtime.
    go_gc_threshold: int | None = _f("goGCThreshold")
    go_memory_limit_mb: int | None = _f("goMemoryLimitMB")
    go_max_procs: int | None = None
    # Process: debugging.
    debug_memory_profile_path: str | None = None
    debug_disable_log_dropping: bool | None = None
    debug_simulate_calc_graph_hang_after: str | None = None
    debug_simulate_dataplane_hang_after: str | None = None
    debug_simulate_dataplane_apply_delay: str | None = None
    debug_host: str | None = None
    debug_port: int | None = None
    # Dataplane: common.
    ipv6_support: bool | None = _f("ipv6Support")
    interface_prefix: str | None = None
    interface_exclude: str | None = None
    interface_refresh_interval: str | None = None
    route_refresh_interval: str | None = None
    route_source: str | None = None
    route_table_range: RouteTableRange | None = None
    route_table_ranges: list[RouteTableIDRange] | None = None
    route_sync_disabled: bool | None = None
    device_route_source_address: str | None = None
    device_route_source_address_ipv6: str | None = _f("deviceRouteSourceAddressIPv6")
    device_route_protocol: int | None = None
    remove_external_routes: bool | None = None
    program_cluster_routes: str | None = None
    ip_forwarding: str | None = _f("ipForwarding")
    ipv4_elevated_route_priority: int | None = _f("ipv4ElevatedRoutePriority")
    ipv4_normal_route_priority: int | None = _f("ipv4NormalRoutePriority")
    ipv6_elevated_route_priority: int | None = _f("ipv6ElevatedRoutePriority")
    ipv6_normal_route_priority: int | None = _f("ipv6NormalRoutePriority")
    live_migration_route_convergence_time: str | None = None
    netlink_timeout: str | None = None
    default_endpoint_to_host_action: str | None = None
    failsafe_inbound_host_ports: list[ProtoPort] | None = None
    failsafe_outbound_host_ports: list[ProtoPort] | None = None
    kube_node_port_ranges: list[int | str] | None = None
    nat_port_range: int | str | None = None
    nat_outgoing_address: str | None = None
    nat_outgoing_exclusions: str | None = None
    external_nodes_cidr_list: list[str] | None = _f("externalNodesList")
    disable_conntrack_invalid_check: bool | None = None
    service_loop_prevention: str | None = None
    workload_source_spoofing: str | None = None
    mtu_iface_pattern: str | None = _f("mtuIfacePattern")
    require_mtu_file: bool | None = _f("requireMTUFile")
    floating_ips: str | None = _f("floatingIPs")
    local_subnet_l2_reachability: str | None = _f("localSubnetL2Reachability")
    local_subnet_l2_reachability_refresh_interval: str | None = _f(
        "localSubnetL2ReachabilityRefreshInterval"
    )
    policy_sync_path_prefix: str | None = None
    sidecar_acceleration_enabled: bool | None = None
    cgroup_v2_path: str | None = _f("cgroupV2Path")
    aws_src_dst_check: str | None = None
    node_selector: str | None = None
    # Dataplane: iptables, ipsets and XDP.
    iptables_backend: str | None = None
    chain_insert_mode: str | None = None
    iptables_mark_mask: int | None = None
    iptables_refresh_interval: str | None = None
    iptables_post_write_check_interval: str | None = None
    iptables_lock_file_path: str | None = None
    iptables_lock_timeout: str | None = None
    iptables_lock_probe_interval: str | None = None
    iptables_filter_allow_action: str | None = None
    iptables_mangle_allow_action: str | None = None
    iptables_filter_deny_action: str | None = None
    iptables_nat_outgoing_interface_filter: str | None = _f("iptablesNATOutgoingInterfaceFilter")
    ipsets_refresh_interval: str | None = None
    max_ipset_size: int | None = None
    xdp_enabled: bool | None = None
    xdp_refresh_interval: str | None = None
    generic_xdp_enabled: bool | None = _f("genericXDPEnabled")
    # Dataplane: nftables.
    nftables_mode: str | None = None
    nftables_refresh_interval: str | None = None
    nftables_filter_allow_action: str | None = None
    nftables_mangle_allow_action: str | None = None
    nftables_filter_deny_action: str | None = None
    nftables_mark_mask: int | None = None
    # Dataplane: OpenStack.
    metadata_addr: str | None = None
    metadata_port: int | None = None
    openstack_region: str | None = None
    # Overlays: IPIP, VXLAN, WireGuard.
    ipip_enabled: bool | None = None
    ipip_mtu: int | None = _f("ipipMTU")
    vxlan_enabled: bool | None = None
    vxlan_mtu: int | None = _f("vxlanMTU")
    vxlan_mtu_v6: int | None = _f("vxlanMTUV6")
    vxlan_port: int | None = None
    vxlan_vni: int | None = _f("vxlanVNI")
    allow_vxlan_packets_from_workloads: bool | None = _f("allowVXLANPacketsFromWorkloads")
    allow_ipip_packets_from_workloads: bool | None = _f("allowIPIPPacketsFromWorkloads")
    wireguard_enabled: bool | None = None
    wireguard_enabled_v6: bool | None = _f("wireguardEnabledV6")
    wireguard_threading_enabled: bool | None = None
    wireguard_listening_port: int | None = None
    wireguard_listening_port_v6: int | None = _f("wireguardListeningPortV6")
    wireguard_routing_rule_priority: int | None = None
    wireguard_interface_name: str | None = None
    wireguard_interface_name_v6: str | None = _f("wireguardInterfaceNameV6")
    wireguard_mtu: int | None = _f("wireguardMTU")
    wireguard_mtu_v6: int | None = _f("wireguardMTUV6")
    wireguard_host_encryption_enabled: bool | None = None
    wireguard_persistent_keep_alive: str | None = _f("wireguardKeepAlive")
    # Dataplane: eBPF.
    bpf_enabled: bool | None = None
    bpf_disable_unprivileged: bool | None = None
    bpf_log_level: str | None = None
    bpf_log_filters: dict[str, str] | None = None
    bpf_ctlb_log_filter: str | None = _f("bpfCTLBLogFilter")
    bpf_conntrack_log_level: str | None = None
    bpf_conntrack_cleanup_mode: str | None = _f("bpfConntrackMode")
    bpf_conntrack_timeouts: BPFConntrackTimeouts | None = None
    bpf_data_iface_pattern: str | None = None
    bpf_l3_iface_pattern: str | None = _f("bpfL3IfacePattern")
    bpf_connect_time_load_balancing_enabled: bool | None = None
    bpf_connect_time_load_balancing: str | None = None
    bpf_host_networked_nat_without_ctlb: str | None = _f("bpfHostNetworkedNATWithoutCTLB")
    bpf_external_service_mode: str | None = None
    bpf_dsr_optout_cidrs: list[str] | None = _f("bpfDSROptoutCIDRs")
    bpf_ext_to_service_connmark: int | None = None
    bpf_kube_proxy_iptables_cleanup_enabled: bool | None = None
    bpf_kube_proxy_min_sync_period: str | None = None
    bpf_kube_proxy_endpoint_slices_enabled: bool | None = None
    bpf_kube_proxy_healthz_port: int | None = None
    bpf_psnat_ports: int | str | None = _f("bpfPSNATPorts")
    bpf_map_size_nat_frontend: int | None = _f("bpfMapSizeNATFrontend")
    bpf_map_size_nat_backend: int | None = _f("bpfMapSizeNATBackend")
    bpf_map_size_nat_affinity: int | None = _f("bpfMapSizeNATAffinity")
    bpf_map_size_route: int | None = None
    bpf_map_size_conntrack: int | None = None
    bpf_map_size_per_cpu_conntrack: int | None = _f("bpfMapSizePerCpuConntrack")
    bpf_map_size_conntrack_scaling: str | None = None
    bpf_map_size_conntrack_cleanup_queue: int | None = None
    bpf_map_size_ip_sets: int | None = _f("bpfMapSizeIPSets")
    bpf_map_size_if_state: int | None = None
    bpf_host_conntrack_bypass: bool | None = None
    bpf_enforce_rpf: str | None = _f("bpfEnforceRPF")
    bpf_policy_debug_enabled: bool | None = None
    bpf_force_track_packets_from_ifaces: list[str] | None = None
    bpf_disable_gro_for_ifaces: str | None = _f("bpfDisableGROForIfaces")
    bpf_exclude_cidrs_from_nat: list[str] | None = _f("bpfExcludeCIDRsFromNAT")
    bpf_export_buffer_size_mb: int | None = _f("bpfExportBufferSizeMB")
    bpf_redirect_to_peer: str | None = None
    bpf_profiling: str | None = None
    bpf_attach_type: str | None = None
    bpf_jit_hardening: str | None = _f("bpfJITHardening")
    bpf_ip_frag_timeout: str | None = _f("bpfIPFragTimeout")
    bpf_ip_fragment_reassembly_enabled: bool | None = _f("bpfIPFragmentReassemblyEnabled")
    bpf_maglev_max_endpoints_per_service: int | None = None
    bpf_maglev_max_services: int | None = None
    bpf_overlay_host_source_ip: str | None = _f("bpfOverlayHostSourceIP")
    # Flow logs.
    flow_logs_flush_interval: str | None = None
    flow_logs_collector_debug_trace: bool | None = None
    flow_logs_goldmane_server: str | None = None
    flow_logs_local_reporter: str | None = None
    flow_logs_policy_evaluation_mode: str | None = None
    # Istio and Windows.
    istio_ambient_mode: str | None = None
    istio_dscp_mark: int | str | None = _f("istioDSCPMark")
    windows_manage_firewall_rules: str | None = None

    # --- the values in effect -------------------------------------------------------------
    def get(self, json_name: str) -> Any:
        """The field's value as set here (``None`` when unset), looked up by its JSON name."""
        return getattr(self, _attr_by_json()[json_name])

    def effective(self, json_name: str) -> Any:
        """The field's value, or Felix's default when unset (``None`` if it has none)."""
        value = self.get(json_name)
        return FELIX_DEFAULTS.get(json_name) if value is None else value

    # --- validation -------------------------------------------------------------------------
    def check(self, ctx: Ctx, path: str) -> None:
        for name, allowed in ENUMS.items():
            check_one_of(ctx, join(path, name), self.get(name), allowed)
        for name, allowed in CASE_INSENSITIVE_ENUMS.items():
            value = self.get(name)
            if value and value.lower() not in {a.lower() for a in allowed}:
                ctx.error(
                    join(path, name),
                    f"{value!r} is not one of {', '.join(allowed)} (any case)",
                )
        for name in DURATIONS:
            check_duration(ctx, join(path, name), self.get(name))
        for name, (lo, hi) in INT_RANGES.items():
            check_int_range(ctx, join(path, name), self.get(name), lo, hi)
        for name in REGEXPS:
            check_regexp(ctx, join(path, name), self.get(name))
        for name, (pattern, expected) in PATTERNS.items():
            value = self.get(name)
            if value is not None and not pattern.match(value):
                ctx.error(join(path, name), f"invalid value {value!r}: expected {expected}")
        self._check_addresses(ctx, path)
        self._check_ports(ctx, path)
        self._check_interfaces(ctx, path)
        self._check_route_tables(ctx, path)
        self._check_scope(ctx, path)
        region = self.openstack_region
        if region and (len(region) > OPENSTACK_REGION_MAX or not is_dns1123_label(region)):
            ctx.error(
                join(path, "openstackRegion"),
                f"invalid region {region!r}: a DNS label (lower case alphanumerics and '-') of "
                f"at most {OPENSTACK_REGION_MAX} characters",
            )
        mark = self.istio_dscp_mark
        if mark is not None and not (
            (isinstance(mark, int) and 0 <= mark <= 63) or mark in DSCP_NAMES
        ):
            ctx.error(
                join(path, "istioDSCPMark"),
                f"invalid DSCP value {mark!r}: a number 0-63 or a name such as EF or AF21",
            )

    def _check_addresses(self, ctx: Ctx, path: str) -> None:
        check_ip_version(ctx, join(path, "natOutgoingAddress"), self.nat_outgoing_address, 4)
        check_ip_version(
            ctx, join(path, "deviceRouteSourceAddress"), self.device_route_source_address, 4
        )
        check_ip_version(
            ctx,
            join(path, "deviceRouteSourceAddressIPv6"),
            self.device_route_source_address_ipv6,
            6,
        )
        for i, cidr in enumerate(self.external_nodes_cidr_list or []):
            where = f"{join(path, 'externalNodesList')}[{i}]"
            net = parse_network(cidr)
            if net is None:
                ctx.error(where, f"invalid CIDR {cidr!r}")
            elif net.version != 4:
                ctx.error(where, f"{cidr!r} is IPv6: externalNodesList takes IPv4 CIDRs only")
        for name, cidrs in (
            ("bpfExcludeCIDRsFromNAT", self.bpf_exclude_cidrs_from_nat),
            ("bpfDSROptoutCIDRs", self.bpf_dsr_optout_cidrs),
        ):
            for i, cidr in enumerate(cidrs or []):
                check_cidr_or_ip(ctx, f"{join(path, name)}[{i}]", cidr)

    def _check_ports(self, ctx: Ctx, path: str) -> None:
        ranges = self.kube_node_port_ranges
        if ranges is not None:
            where = join(path, "kubeNodePortRanges")
            if len(ranges) > MAX_NODE_PORT_RANGES:
                ctx.error(where, f"node port ranges list is too long (max {MAX_NODE_PORT_RANGES})")
            for i, value in enumerate(ranges):
                check_port_range(ctx, f"{where}[{i}]", value)
        check_port_range(ctx, join(path, "natPortRange"), self.nat_port_range)
        check_port_range(ctx, join(path, "bpfPSNATPorts"), self.bpf_psnat_ports)

    def _check_interfaces(self, ctx: Ctx, path: str) -> None:
        check_interface_name(
            ctx, join(path, "wireguardInterfaceName"), self.wireguard_interface_name
        )
        check_interface_name(
            ctx, join(path, "wireguardInterfaceNameV6"), self.wireguard_interface_name_v6
        )
        check_iface_filter(
            ctx,
            join(path, "iptablesNATOutgoingInterfaceFilter"),
            self.iptables_nat_outgoing_interface_filter,
        )
        for i, iface in enumerate(self.bpf_force_track_packets_from_ifaces or []):
            check_iface_filter(ctx, f"{join(path, 'bpfForceTrackPacketsFromIfaces')}[{i}]", iface)
        for key in self.bpf_log_filters or {}:
            if not _BPF_LOG_FILTER_KEY.match(key):
                ctx.error(
                    f"{join(path, 'bpfLogFilters')}[{key}]",
                    f"invalid interface {key!r}: an interface name, all, weps or heps",
                )

    def _check_route_tables(self, ctx: Ctx, path: str) -> None:
        if self.route_table_range is not None and self.route_table_ranges is not None:
            ctx.error(
                join(path, "routeTableRange"),
                "routeTableRange and routeTableRanges cannot both be set (routeTableRange is "
                "deprecated: use routeTableRanges)",
            )
        total = sum(r.max - r.min + 1 for r in self.route_table_ranges or [])
        if total > MAX_ROUTE_TABLES:
            ctx.error(
                join(path, "routeTableRanges"),
                f"targets too many tables ({total}; at most {MAX_ROUTE_TABLES})",
            )

    def _check_scope(self, ctx: Ctx, path: str) -> None:
        if self.node_selector is None:
            return
        where = join(path, "nodeSelector")
        scope, _ = felix_config_scope(ctx.resource.name)
        if scope != "selector":
            ctx.error(
                where,
                "nodeSelector must not be set on the 'default' or per-node ('node.*') "
                "FelixConfiguration",
            )
        elif len(self.node_selector) > 1024:
            ctx.error(where, "too long: at most 1024 characters")
        else:
            check_selector(ctx, where, self.node_selector)


@cache
def _attr_by_json() -> dict[str, str]:
    return {f.encode_name: f.name for f in struct_fields(FelixConfigurationSpec)}


def felix_config_scope(name: str) -> tuple[str, str | None]:
    """Where a FelixConfiguration applies: ``("global", None)``, ``("node", <nodename>)`` or
    ``("selector", None)`` (the nodes its ``nodeSelector`` selects)."""
    if name == DEFAULT_NAME:
        return "global", None
    if name.startswith("node."):
        return "node", name[len("node.") :]
    return "selector", None


@register(
    "felixconfigurations",
    aliases=("felixconfiguration", "felixconfig", "felixconfigs"),
    columns=(name_column(),),
)
class FelixConfiguration(Resource):
    KIND: ClassVar[str] = "FelixConfiguration"
    spec: FelixConfigurationSpec = msgspec.field(default_factory=FelixConfigurationSpec)

    def apply_defaults(self) -> None:
        spec = self.spec
        if spec.floating_ips is None:
            spec.floating_ips = "Disabled"
        if spec.bpf_connect_time_load_balancing is None:
            spec.bpf_connect_time_load_balancing = "TCP"
        if spec.bpf_host_networked_nat_without_ctlb is None:
            spec.bpf_host_networked_nat_without_ctlb = "Enabled"
        if spec.bpf_connect_time_load_balancing_enabled is not None:
            # The deprecated boolean wins, as in Calico's client.
            spec.bpf_host_networked_nat_without_ctlb = "Disabled"
            spec.bpf_connect_time_load_balancing = (
                "Enabled" if spec.bpf_connect_time_load_balancing_enabled else "Disabled"
            )
        for ports in (spec.failsafe_inbound_host_ports, spec.failsafe_outbound_host_ports):
            for port in ports or []:
                if not port.protocol:
                    port.protocol = "TCP"
