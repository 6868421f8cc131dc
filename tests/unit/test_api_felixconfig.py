"""FelixConfiguration: every Calico field, the client's defaults and the validation rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from tortie.api import FieldError, Resource, ValidationError, load, lookup, validate
from tortie.api.kinds.felixconfig import (
    CASE_INSENSITIVE_ENUMS,
    DEFAULT_FAILSAFE_INBOUND_HOST_PORTS,
    DURATIONS,
    ENUMS,
    FELIX_DEFAULTS,
    BPFConntrackTimeouts,
    FelixConfiguration,
    FelixConfigurationSpec,
    HealthTimeoutOverride,
    ProtoPort,
    RouteTableIDRange,
    RouteTableRange,
    felix_config_scope,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# FelixConfigurationSpec's JSON names, from Calico's CRD (api/config/crd/
# projectcalico.org_felixconfigurations.yaml, generated from the Go json tags).
CALICO_FIELDS = {
    "allowIPIPPacketsFromWorkloads", "allowVXLANPacketsFromWorkloads", "awsSrcDstCheck",
    "bpfAttachType", "bpfCTLBLogFilter", "bpfConnectTimeLoadBalancing",
    "bpfConnectTimeLoadBalancingEnabled", "bpfConntrackLogLevel", "bpfConntrackMode",
    "bpfConntrackTimeouts", "bpfDSROptoutCIDRs", "bpfDataIfacePattern", "bpfDisableGROForIfaces",
    "bpfDisableUnprivileged", "bpfEnabled", "bpfEnforceRPF", "bpfExcludeCIDRsFromNAT",
    "bpfExportBufferSizeMB", "bpfExtToServiceConnmark", "bpfExternalServiceMode",
    "bpfForceTrackPacketsFromIfaces", "bpfHostConntrackBypass", "bpfHostNetworkedNATWithoutCTLB",
    "bpfIPFragTimeout", "bpfIPFragmentReassemblyEnabled", "bpfJITHardening",
    "bpfKubeProxyHealthzPort", "bpfKubeProxyIptablesCleanupEnabled", "bpfKubeProxyMinSyncPeriod",
    "bpfL3IfacePattern", "bpfLogFilters", "bpfLogLevel", "bpfMaglevMaxEndpointsPerService",
    "bpfMaglevMaxServices", "bpfMapSizeConntrack", "bpfMapSizeConntrackCleanupQueue",
    "bpfMapSizeConntrackScaling", "bpfMapSizeIPSets", "bpfMapSizeIfState",
    "bpfMapSizeNATAffinity", "bpfMapSizeNATBackend", "bpfMapSizeNATFrontend",
    "bpfMapSizePerCpuConntrack", "bpfMapSizeRoute", "bpfOverlayHostSourceIP", "bpfPSNATPorts",
    "bpfPolicyDebugEnabled", "bpfProfiling", "bpfRedirectToPeer", "cgroupV2Path",
    "chainInsertMode", "dataplaneDriver", "dataplaneWatchdogTimeout", "debugDisableLogDropping",
    "debugHost", "debugMemoryProfilePath", "debugPort", "debugSimulateCalcGraphHangAfter",
    "debugSimulateDataplaneApplyDelay", "debugSimulateDataplaneHangAfter",
    "defaultEndpointToHostAction", "deviceRouteProtocol", "deviceRouteSourceAddress",
    "deviceRouteSourceAddressIPv6", "disableConntrackInvalidCheck", "endpointReportingDelay",
    "endpointReportingEnabled", "endpointStatusPathPrefix", "externalNodesList",
    "failsafeInboundHostPorts", "failsafeOutboundHostPorts", "featureDetectOverride",
    "featureGates", "floatingIPs", "flowLogsCollectorDebugTrace", "flowLogsFlushInterval",
    "flowLogsGoldmaneServer", "flowLogsLocalReporter", "flowLogsPolicyEvaluationMode",
    "genericXDPEnabled", "goGCThreshold", "goMaxProcs", "goMemoryLimitMB", "healthEnabled",
    "healthHost", "healthPort", "healthTimeoutOverrides", "interfaceExclude", "interfacePrefix",
    "interfaceRefreshInterval", "ipForwarding", "ipipEnabled", "ipipMTU", "ipsetsRefreshInterval",
    "iptablesBackend", "iptablesFilterAllowAction", "iptablesFilterDenyAction",
    "iptablesLockProbeInterval", "iptablesMangleAllowAction", "iptablesMarkMask",
    "iptablesNATOutgoingInterfaceFilter", "iptablesPostWriteCheckInterval",
    "iptablesRefreshInterval", "ipv4ElevatedRoutePriority", "ipv4NormalRoutePriority",
    "ipv6ElevatedRoutePriority", "ipv6NormalRoutePriority", "ipv6Support", "istioAmbientMode",
    "istioDSCPMark", "kubeNodePortRanges", "liveMigrationRouteConvergenceTime",
    "localSubnetL2Reachability", "localSubnetL2ReachabilityRefreshInterval",
    "logActionRateLimit", "logActionRateLimitBurst", "logDebugFilenameRegex", "logFilePath",
    "logPrefix", "logSeverityFile", "logSeverityScreen", "logSeveritySys", "maxIpsetSize",
    "metadataAddr", "metadataPort", "mtuIfacePattern", "natOutgoingAddress",
    "natOutgoingExclusions", "natPortRange", "netlinkTimeout", "nftablesFilterAllowAction",
    "nftablesFilterDenyAction", "nftablesMangleAllowAction", "nftablesMarkMask", "nftablesMode",
    "nftablesRefreshInterval", "nodeSelector", "openstackRegion", "policySyncPathPrefix",
    "programClusterRoutes", "prometheusGoMetricsEnabled", "prometheusMetricsCAFile",
    "prometheusMetricsCertFile", "prometheusMetricsClientAuth", "prometheusMetricsEnabled",
    "prometheusMetricsHost", "prometheusMetricsKeyFile", "prometheusMetricsPort",
    "prometheusProcessMetricsEnabled", "prometheusWireGuardMetricsEnabled",
    "removeExternalRoutes", "reportingInterval", "reportingTTL", "requireMTUFile",
    "routeRefreshInterval", "routeSource", "routeSyncDisabled", "routeTableRange",
    "routeTableRanges", "serviceLoopPrevention", "sidecarAccelerationEnabled",
    "usageReportingEnabled", "usageReportingInitialDelay", "usageReportingInterval",
    "useInternalDataplaneDriver", "vxlanEnabled", "vxlanMTU", "vxlanMTUV6", "vxlanPort",
    "vxlanVNI", "windowsManageFirewallRules", "wireguardEnabled", "wireguardEnabledV6",
    "wireguardHostEncryptionEnabled", "wireguardInterfaceName", "wireguardInterfaceNameV6",
    "wireguardKeepAlive", "wireguardListeningPort", "wireguardListeningPortV6", "wireguardMTU",
    "wireguardMTUV6", "wireguardRoutingRulePriority", "wireguardThreadingEnabled",
    "workloadSourceSpoofing", "xdpEnabled", "xdpRefreshInterval",
}  # fmt: skip
# Deprecated fields still in Calico 3.31's Go types (felixconfig.go), accepted for old manifests.
CALICO_DEPRECATED = {
    "iptablesLockFilePath",
    "iptablesLockTimeout",
    "bpfKubeProxyEndpointSlicesEnabled",
}
CLIENT_DEFAULTS = {
    "floatingIPs": "Disabled",
    "bpfConnectTimeLoadBalancing": "TCP",
    "bpfHostNetworkedNATWithoutCTLB": "Enabled",
}


def doc(spec: dict[str, Any] | None, name: str = "default") -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "FelixConfiguration",
        "metadata": {"name": name},
    }
    if spec is not None:
        body["spec"] = spec
    return body


def felix(spec: dict[str, Any], name: str = "default") -> FelixConfiguration:
    res = validate(doc(spec, name))
    assert isinstance(res, FelixConfiguration)
    return res


def errors_of(spec: dict[str, Any], name: str = "default") -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        validate(doc(spec, name))
    return info.value.errors


def assert_error(spec: dict[str, Any], path: str, reason: str, name: str = "default") -> None:
    errors = errors_of(spec, name)
    assert any(e.path == path and reason in e.reason for e in errors), errors


def round_trips(res: Resource) -> None:
    first = res.to_dict()
    assert validate(first).to_dict() == first


def encode_names(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


# --- JSON names --------------------------------------------------------------------------------


def test_every_calico_field_with_its_json_name() -> None:
    ours = encode_names(FelixConfigurationSpec)
    assert ours - CALICO_DEPRECATED == CALICO_FIELDS
    assert ours.issuperset(CALICO_DEPRECATED)


def test_nested_json_names() -> None:
    assert encode_names(ProtoPort) == {"protocol", "port", "net"}
    assert encode_names(HealthTimeoutOverride) == {"name", "timeout"}
    assert encode_names(RouteTableRange) == {"min", "max"}
    assert encode_names(RouteTableIDRange) == {"min", "max"}
    assert encode_names(BPFConntrackTimeouts) == {
        "creationGracePeriod", "tcpSynSent", "tcpEstablished", "tcpFinsSeen", "tcpResetSeen",
        "udpTimeout", "genericTimeout", "icmpTimeout",
    }  # fmt: skip


def test_validation_tables_name_real_fields() -> None:
    fields = encode_names(FelixConfigurationSpec)
    assert set(ENUMS) <= fields
    assert set(CASE_INSENSITIVE_ENUMS) <= fields
    assert set(DURATIONS) <= fields
    assert set(FELIX_DEFAULTS) <= fields


# --- defaults ----------------------------------------------------------------------------------


def test_minimal_gets_calicos_client_defaults_only() -> None:
    assert felix({}).to_dict()["spec"] == CLIENT_DEFAULTS
    assert validate(doc(None)).to_dict()["spec"] == CLIENT_DEFAULTS


def test_explicit_values_are_kept() -> None:
    spec = {
        "floatingIPs": "Enabled",
        "bpfConnectTimeLoadBalancing": "Disabled",
        "bpfHostNetworkedNATWithoutCTLB": "Disabled",
    }
    assert felix(spec).to_dict()["spec"] == spec


@pytest.mark.parametrize(("enabled", "ctlb"), [(True, "Enabled"), (False, "Disabled")])
def test_deprecated_ctlb_boolean_maps_onto_the_new_fields(enabled: bool, ctlb: str) -> None:
    spec = felix({"bpfConnectTimeLoadBalancingEnabled": enabled}).to_dict()["spec"]
    assert spec["bpfConnectTimeLoadBalancing"] == ctlb
    assert spec["bpfHostNetworkedNATWithoutCTLB"] == "Disabled"
    assert spec["bpfConnectTimeLoadBalancingEnabled"] is enabled


def test_effective_values_fall_back_to_felix_defaults() -> None:
    spec = felix({"routeRefreshInterval": "30s"}).spec
    assert spec.effective("routeRefreshInterval") == "30s"
    assert spec.effective("iptablesRefreshInterval") == "180s"
    assert spec.effective("iptablesMarkMask") == 0xFFFF0000
    assert spec.effective("vxlanVNI") == 4096
    assert spec.effective("vxlanPort") == 4789
    assert spec.effective("healthPort") == 9099
    assert spec.effective("prometheusMetricsPort") == 9091
    assert spec.effective("interfacePrefix") == "cali"
    assert spec.effective("dataplaneDriver") is None
    assert spec.effective("failsafeInboundHostPorts") == list(DEFAULT_FAILSAFE_INBOUND_HOST_PORTS)
    assert [p["port"] for p in FELIX_DEFAULTS["failsafeOutboundHostPorts"]] == [
        53, 67, 179, 2379, 2380, 5473, 6443, 6666, 6667,
    ]  # fmt: skip


def test_failsafe_protocol_defaults_to_tcp_and_empty_list_is_kept() -> None:
    spec = felix(
        {"failsafeInboundHostPorts": [{"port": 22}], "failsafeOutboundHostPorts": []}
    ).to_dict()["spec"]
    assert spec["failsafeInboundHostPorts"] == [{"protocol": "TCP", "port": 22}]
    # An explicit empty list means "no failsafe ports" and must survive.
    assert spec["failsafeOutboundHostPorts"] == []


def test_hex_mark_mask_from_yaml() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {iptablesMarkMask: 0xff000000, nftablesMarkMask: 0xffff0000}
"""
    (res,) = load(text)
    assert res.spec.iptables_mark_mask == 0xFF000000  # type: ignore[attr-defined]


def test_big_spec_round_trips() -> None:
    spec = {
        "logSeverityScreen": "Debug",
        "logSeverityFile": "Warning",
        "logSeveritySys": "Error",
        "logPrefix": "%t %k %n",
        "logActionRateLimit": "10/second",
        "logActionRateLimitBurst": 20,
        "chainInsertMode": "append",
        "defaultEndpointToHostAction": "Accept",
        "iptablesBackend": "NFT",
        "iptablesMarkMask": 0xFFFF0000,
        "iptablesRefreshInterval": "1m30s",
        "iptablesLockFilePath": "/run/xtables.lock",
        "ipsetsRefreshInterval": "0",
        "routeRefreshInterval": "90s",
        "routeTableRanges": [{"min": 1, "max": 250}, {"min": 1000, "max": 2000}],
        "featureDetectOverride": "SNATFullyRandom=true,MASQFullyRandom=false,RestoreSupportsLock=",
        "featureGates": "BPFConnectTimeLoadBalancingWorkaround=enabled",
        "healthEnabled": True,
        "healthHost": "0.0.0.0",
        "healthPort": 9099,
        "healthTimeoutOverrides": [{"name": "InternalDataplaneMainLoop", "timeout": "120s"}],
        "prometheusMetricsEnabled": True,
        "prometheusMetricsHost": "192.0.2.10",
        "prometheusMetricsPort": 9091,
        "failsafeInboundHostPorts": [
            {"protocol": "TCP", "port": 22, "net": "192.0.2.0/24"},
            {"protocol": "UDP", "port": 68},
        ],
        "kubeNodePortRanges": ["30000:32767", 31000],
        "natPortRange": "32768:65535",
        "natOutgoingAddress": "192.0.2.5",
        "natOutgoingExclusions": "IPPoolsAndHostIPs",
        "deviceRouteSourceAddress": "192.0.2.6",
        "deviceRouteSourceAddressIPv6": "2001:db8::6",
        "deviceRouteProtocol": 80,
        "externalNodesList": ["198.51.100.0/24", "203.0.113.9"],
        "vxlanEnabled": True,
        "vxlanVNI": 4096,
        "vxlanPort": 4789,
        "vxlanMTU": 1410,
        "wireguardEnabled": True,
        "wireguardInterfaceName": "wg.tortie",
        "wireguardKeepAlive": "25s",
        "wireguardRoutingRulePriority": 99,
        "bpfEnabled": False,
        "bpfLogLevel": "Info",
        "bpfEnforceRPF": "strict",
        "bpfLogFilters": {"all": "tcp port 80", "eth0": "udp"},
        "bpfConntrackTimeouts": {"tcpEstablished": "1h", "tcpFinsSeen": "Auto"},
        "bpfPSNATPorts": "20000:29999",
        "bpfForceTrackPacketsFromIfaces": ["docker+"],
        "bpfExcludeCIDRsFromNAT": ["169.254.20.10/32"],
        "bpfDataIfacePattern": "^(en.*|eth.*)",
        "istioDSCPMark": "AF21",
        "openstackRegion": "region-one",
        "nodeSelector": None,
        "floatingIPs": "Disabled",
        "bpfConnectTimeLoadBalancing": "TCP",
        "bpfHostNetworkedNATWithoutCTLB": "Enabled",
    }
    del spec["nodeSelector"]
    res = felix(spec)
    assert res.to_dict()["spec"] == spec
    round_trips(res)


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", DURATIONS)
def test_durations_must_be_go_durations(field: str) -> None:
    assert_error({field: "90 seconds"}, f"spec.{field}", "invalid duration")
    felix({field: "1m30s"})


@pytest.mark.parametrize("field", sorted(ENUMS))
def test_enums_reject_other_values(field: str) -> None:
    assert_error({field: "Bogus"}, f"spec.{field}", "is not one of")
    felix({field: ENUMS[field][0]})


@pytest.mark.parametrize("field", ["logSeverityScreen", "defaultEndpointToHostAction"])
def test_validated_enums_are_case_sensitive_like_calico(field: str) -> None:
    assert_error({field: ENUMS[field][0].upper()}, f"spec.{field}", "is not one of")


@pytest.mark.parametrize("field", sorted(CASE_INSENSITIVE_ENUMS))
def test_pattern_only_enums_accept_any_case(field: str) -> None:
    value = CASE_INSENSITIVE_ENUMS[field][0]
    felix({field: value.lower()})
    felix({field: value.upper()})
    assert_error({field: "Bogus"}, f"spec.{field}", "any case")


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        ({"healthPort": 65536}, "spec.healthPort", "between 0 and 65535"),
        ({"vxlanPort": 0}, "spec.vxlanPort", "between 1 and 65535"),
        ({"vxlanVNI": 2**24}, "spec.vxlanVNI", "between 1 and 16777215"),
        ({"iptablesMarkMask": 2**32}, "spec.iptablesMarkMask", "between 0 and 4294967295"),
        ({"iptablesMarkMask": -1}, "spec.iptablesMarkMask", "between 0 and"),
        ({"wireguardRoutingRulePriority": 32766}, "spec.wireguardRoutingRulePriority", "32765"),
        ({"goGCThreshold": -2}, "spec.goGCThreshold", "between -1 and"),
        ({"logActionRateLimitBurst": 10000}, "spec.logActionRateLimitBurst", "0 and 9999"),
        ({"bpfMapSizeConntrackCleanupQueue": 0}, "spec.bpfMapSizeConntrackCleanupQueue", "1 and"),
        ({"deviceRouteProtocol": 256}, "spec.deviceRouteProtocol", "between 0 and 255"),
        ({"logDebugFilenameRegex": "(unclosed"}, "spec.logDebugFilenameRegex", "regular expr"),
        ({"mtuIfacePattern": "[a-"}, "spec.mtuIfacePattern", "regular expression"),
        ({"featureDetectOverride": "A=yes"}, "spec.featureDetectOverride", "Feature=true"),
        ({"featureGates": "A=b, C=d"}, "spec.featureGates", "comma-separated"),
        ({"logPrefix": "calico!"}, "spec.logPrefix", "letters, digits"),
        ({"logActionRateLimit": "10/week"}, "spec.logActionRateLimit", "N/unit"),
        ({"prometheusMetricsHost": "a b"}, "spec.prometheusMetricsHost", "host name or IP"),
        ({"natOutgoingAddress": "2001:db8::1"}, "spec.natOutgoingAddress", "IPv4"),
        ({"deviceRouteSourceAddress": "nope"}, "spec.deviceRouteSourceAddress", "IPv4"),
        ({"deviceRouteSourceAddressIPv6": "192.0.2.1"}, "spec.deviceRouteSourceAddressIPv6", "6"),
        ({"externalNodesList": ["2001:db8::/64"]}, "spec.externalNodesList[0]", "IPv4 CIDRs"),
        ({"externalNodesList": ["x"]}, "spec.externalNodesList[0]", "invalid CIDR"),
        ({"bpfExcludeCIDRsFromNAT": ["x/32"]}, "spec.bpfExcludeCIDRsFromNAT[0]", "invalid"),
        ({"bpfDSROptoutCIDRs": ["10.0.0.0/33"]}, "spec.bpfDSROptoutCIDRs[0]", "invalid"),
        ({"kubeNodePortRanges": ["http"]}, "spec.kubeNodePortRanges[0]", "named ports"),
        ({"kubeNodePortRanges": ["2000:1000"]}, "spec.kubeNodePortRanges[0]", "min <= max"),
        ({"kubeNodePortRanges": [1] * 8}, "spec.kubeNodePortRanges", "too long (max 7)"),
        ({"natPortRange": 0}, "spec.natPortRange", "port or port range"),
        ({"bpfPSNATPorts": "20000-29999"}, "spec.bpfPSNATPorts", "port or port range"),
        ({"wireguardInterfaceName": "wireguard.tortie0"}, "spec.wireguardInterfaceName", "1-15"),
        (
            {"iptablesNATOutgoingInterfaceFilter": "eth*"},
            "spec.iptablesNATOutgoingInterfaceFilter",
            "+ is the wildcard",
        ),
        (
            {"bpfForceTrackPacketsFromIfaces": ["docker+", "br ext"]},
            "spec.bpfForceTrackPacketsFromIfaces[1]",
            "invalid interface match",
        ),
        ({"bpfLogFilters": {"all of them": "tcp"}}, "spec.bpfLogFilters[all of them]", "all, weps"),
        ({"openstackRegion": "Region1"}, "spec.openstackRegion", "DNS label"),
        ({"openstackRegion": "r" * 47}, "spec.openstackRegion", "at most 46"),
        ({"istioDSCPMark": 64}, "spec.istioDSCPMark", "0-63"),
        ({"istioDSCPMark": "AF99"}, "spec.istioDSCPMark", "0-63"),
        (
            {"failsafeInboundHostPorts": [{"protocol": "tcp", "port": 22}]},
            "spec.failsafeInboundHostPorts[0].protocol",
            "not one of TCP, UDP, SCTP",
        ),
        (
            {"failsafeOutboundHostPorts": [{"protocol": "UDP", "port": 70000}]},
            "spec.failsafeOutboundHostPorts[0].port",
            "between 0 and 65535",
        ),
        (
            {"failsafeInboundHostPorts": [{"protocol": "TCP"}]},
            "spec.failsafeInboundHostPorts[0].port",
            "required field is missing",
        ),
        (
            {"failsafeInboundHostPorts": [{"port": 22, "net": "10.0.0.0/99"}]},
            "spec.failsafeInboundHostPorts[0].net",
            "invalid CIDR",
        ),
        (
            {"healthTimeoutOverrides": [{"name": "Main/Loop", "timeout": "1s"}]},
            "spec.healthTimeoutOverrides[0].name",
            "letters, digits",
        ),
        (
            {"healthTimeoutOverrides": [{"name": "Main", "timeout": "-1s"}]},
            "spec.healthTimeoutOverrides[0].timeout",
            "must not be negative",
        ),
        (
            {"healthTimeoutOverrides": [{"name": "Main"}]},
            "spec.healthTimeoutOverrides[0].timeout",
            "required field is missing",
        ),
        (
            {"bpfConntrackTimeouts": {"udpTimeout": "forever"}},
            "spec.bpfConntrackTimeouts.udpTimeout",
            "or Auto",
        ),
        ({"routeTableRange": {"min": 0, "max": 10}}, "spec.routeTableRange", "within 1..250"),
        ({"routeTableRange": {"min": 1, "max": 251}}, "spec.routeTableRange", "within 1..250"),
        (
            {"routeTableRange": {"min": 1, "max": 2}, "routeTableRanges": [{"min": 3, "max": 4}]},
            "spec.routeTableRange",
            "cannot both be set",
        ),
        ({"routeTableRanges": [{"min": 5, "max": 4}]}, "spec.routeTableRanges[0]", "greater"),
        ({"routeTableRanges": [{"min": 0, "max": 4}]}, "spec.routeTableRanges[0].min", "start"),
        (
            {"routeTableRanges": [{"min": 1, "max": 70000}]},
            "spec.routeTableRanges",
            "too many tables",
        ),
        ({"ipv6support": True}, "spec.ipv6support", "unknown field"),
        ({"vxlanVni": 4096}, "spec.vxlanVni", "unknown field"),
        ({"healthPort": "9099"}, "spec.healthPort", "expected an integer"),
    ],
)
def test_field_errors(spec: dict[str, Any], path: str, reason: str) -> None:
    assert_error(spec, path, reason)


def test_wide_route_table_ranges_within_the_limit() -> None:
    felix({"routeTableRanges": [{"min": 1, "max": 0xFFFF}]})


# --- names and scope ---------------------------------------------------------------------------


def test_scopes() -> None:
    assert felix_config_scope("default") == ("global", None)
    assert felix_config_scope("node.host-a.example") == ("node", "host-a.example")
    assert felix_config_scope("rack1-tuning") == ("selector", None)


@pytest.mark.parametrize("name", ["default", "node.host-a"])
def test_node_selector_not_on_default_or_per_node(name: str) -> None:
    assert_error({"nodeSelector": "rack == 'r1'"}, "spec.nodeSelector", "must not be set", name)
    felix({"logSeverityScreen": "Debug"}, name)


def test_node_selector_on_a_selector_scoped_configuration() -> None:
    res = felix({"nodeSelector": "rack == 'r1'", "bpfEnabled": True}, "rack1-tuning")
    assert res.spec.node_selector == "rack == 'r1'"
    assert_error({"nodeSelector": "rack =="}, "spec.nodeSelector", "invalid selector", "r1")


def test_name_must_be_a_valid_resource_name() -> None:
    assert_error({}, "metadata.name", "invalid name", name="Node.A")


# --- registry and examples ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias", ["felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"]
)
def test_calicoctl_names(alias: str) -> None:
    info = lookup(alias)
    assert info is not None and info.kind == "FelixConfiguration"
    assert [h for h, _ in info.columns] == ["NAME"]
    assert [h for h, _ in info.wide_columns] == ["NAME"]


def test_example_is_valid_and_round_trips() -> None:
    (res,) = load((EXAMPLES / "felixconfiguration.yaml").read_text())
    assert res.spec.iptables_mark_mask == 0xFFFF0000  # type: ignore[attr-defined]
    round_trips(res)
