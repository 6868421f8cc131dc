"""BGPConfiguration, BGPPeer and BGPFilter: Calico's fields, defaults and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from tortie.api import FieldError, Resource, ValidationError, load, lookup, validate
from tortie.api.kinds.bgp import (
    BGPConfiguration,
    BGPConfigurationSpec,
    BGPFilterPrefixLength,
    BGPFilterRuleV4,
    BGPFilterRuleV6,
    BGPFilterSpec,
    BGPPeer,
    BGPPeerSpec,
    Community,
    PrefixAdvertisement,
    SecretKeySelector,
    ServiceIPBlock,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def doc(kind: str, spec: dict[str, Any] | None, name: str = "default") -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
    }
    if spec is not None:
        body["spec"] = spec
    return body


def errors_of(kind: str, spec: dict[str, Any] | None, name: str = "default") -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        validate(doc(kind, spec, name))
    return info.value.errors


def assert_error(
    kind: str, spec: dict[str, Any] | None, path: str, reason: str, name: str = "default"
) -> None:
    errors = errors_of(kind, spec, name)
    assert any(e.path == path and reason in e.reason for e in errors), errors


def round_trips(res: Resource) -> None:
    first = res.to_dict()
    assert validate(first).to_dict() == first


def encode_names(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


def peer(spec: dict[str, Any], name: str = "peer1") -> BGPPeer:
    res = validate(doc("BGPPeer", spec, name))
    assert isinstance(res, BGPPeer)
    return res


def bgpconfig(spec: dict[str, Any], name: str = "default") -> BGPConfiguration:
    res = validate(doc("BGPConfiguration", spec, name))
    assert isinstance(res, BGPConfiguration)
    return res


# --- JSON names, checked against Calico's Go json tags and CRDs -------------------------------


def test_bgpconfiguration_json_names_match_calico() -> None:
    calico = {
        "logSeverityScreen", "nodeToNodeMeshEnabled", "asNumber", "serviceLoadBalancerIPs",
        "serviceExternalIPs", "serviceClusterIPs", "communities", "prefixAdvertisements",
        "listenPort", "nodeMeshPassword", "nodeMeshMaxRestartTime", "bindMode",
        "ignoredInterfaces", "localWorkloadPeeringIPV4", "localWorkloadPeeringIPV6",
        "programClusterRoutes", "serviceLoadBalancerAggregation",
    }  # fmt: skip
    assert encode_names(BGPConfigurationSpec) == calico
    assert encode_names(ServiceIPBlock) == {"cidr"}
    assert encode_names(Community) == {"name", "value"}
    assert encode_names(PrefixAdvertisement) == {"cidr", "communities"}
    assert encode_names(SecretKeySelector) == {"name", "key", "optional"}


def test_bgppeer_json_names_match_calico() -> None:
    calico = {
        "node", "nodeSelector", "peerIP", "asNumber", "peerSelector", "keepOriginalNextHop",
        "password", "sourceAddress", "maxRestartTime", "numAllowedLocalASNumbers",
        "ttlSecurity", "keepaliveTime", "localASNumber", "reachableBy", "filters",
        "localWorkloadSelector", "nextHopMode", "reversePeering",
    }  # fmt: skip
    enterprise = {"failureDetectionMode", "restartMode", "birdGatewayMode"}
    assert encode_names(BGPPeerSpec) == calico | enterprise


def test_bgpfilter_json_names_match_calico() -> None:
    assert encode_names(BGPFilterSpec) == {"exportV4", "importV4", "exportV6", "importV6"}
    rule = {"cidr", "prefixLength", "source", "interface", "matchOperator", "action"}
    assert encode_names(BGPFilterRuleV4) == rule
    assert encode_names(BGPFilterRuleV6) == rule
    assert encode_names(BGPFilterPrefixLength) == {"min", "max"}


# --- BGPConfiguration --------------------------------------------------------------------------


def test_bgpconfiguration_minimal_stays_minimal() -> None:
    res = bgpconfig({})
    assert res.to_dict()["spec"] == {}
    # The global defaults apply where the configuration is used.
    assert res.spec.effective_as_number() == 64512
    assert res.spec.mesh_enabled() is True
    assert res.spec.effective_listen_port() == 179


def test_bgpconfiguration_full_round_trips() -> None:
    spec = {
        "logSeverityScreen": "Debug",
        "nodeToNodeMeshEnabled": True,
        "asNumber": 65001,
        "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
        "serviceExternalIPs": [{"cidr": "198.51.100.0/24"}, {"cidr": "2001:db8::/64"}],
        "serviceLoadBalancerIPs": [{"cidr": "203.0.113.7"}],
        "communities": [{"name": "big", "value": "65001:4294967295:1"}],
        "prefixAdvertisements": [{"cidr": "10.244.0.0/16", "communities": ["big", "65001:100"]}],
        "listenPort": 1179,
        "nodeMeshPassword": {"secretKeyRef": {"name": "bgp-secrets", "key": "mesh"}},
        "nodeMeshMaxRestartTime": "2m",
        "bindMode": "NodeIP",
        "ignoredInterfaces": ["docker*", "virbr0"],
        "localWorkloadPeeringIPV4": "169.254.0.179",
        "localWorkloadPeeringIPV6": "fe80::179",
        "programClusterRoutes": "Enabled",
        "serviceLoadBalancerAggregation": "Disabled",
    }
    res = bgpconfig(spec)
    assert res.to_dict()["spec"] == spec
    assert res.spec.effective_as_number() == 65001
    assert res.spec.effective_listen_port() == 1179
    round_trips(res)


@pytest.mark.parametrize(("given", "stored"), [("65001", 65001), ("1.10", 65546), (0, 0)])
def test_as_number_forms(given: Any, stored: int) -> None:
    assert bgpconfig({"asNumber": given}).spec.as_number == stored


@pytest.mark.parametrize("value", ["65536.1", "abc", -1, 4294967296, "1.2.3"])
def test_bad_as_number(value: Any) -> None:
    assert_error("BGPConfiguration", {"asNumber": value}, "spec.asNumber", "invalid AS number")


def test_mesh_disabled_has_no_mesh_password_or_restart_time() -> None:
    secret = {"secretKeyRef": {"name": "s", "key": "k"}}
    spec = {"nodeToNodeMeshEnabled": False, "nodeMeshPassword": secret}
    assert_error(
        "BGPConfiguration", spec, "spec.nodeMeshPassword", "nodeToNodeMeshEnabled is false"
    )
    spec = {"nodeToNodeMeshEnabled": False, "nodeMeshMaxRestartTime": "1m"}
    assert_error(
        "BGPConfiguration", spec, "spec.nodeMeshMaxRestartTime", "nodeToNodeMeshEnabled is false"
    )
    assert bgpconfig({"nodeToNodeMeshEnabled": False}).spec.mesh_enabled() is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nodeToNodeMeshEnabled", True),
        ("asNumber", 65000),
        ("serviceClusterIPs", [{"cidr": "10.96.0.0/12"}]),
        ("serviceExternalIPs", [{"cidr": "198.51.100.0/24"}]),
        ("serviceLoadBalancerIPs", [{"cidr": "203.0.113.0/24"}]),
        ("nodeMeshPassword", {"secretKeyRef": {"key": "k"}}),
        ("nodeMeshMaxRestartTime", "1m"),
    ],
)
def test_default_only_fields(field: str, value: Any) -> None:
    assert_error(
        "BGPConfiguration", {field: value}, f"spec.{field}", "only be set on", name="node.host-a"
    )
    assert bgpconfig({field: value}).name == "default"


def test_per_node_configuration_may_set_other_fields() -> None:
    res = bgpconfig({"logSeverityScreen": "Warning", "listenPort": 1790}, name="node.host-a")
    assert res.spec.listen_port == 1790


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        ({"logSeverityScreen": "info"}, "spec.logSeverityScreen", "not one of Trace, Debug"),
        ({"listenPort": 0}, "spec.listenPort", "between 1 and 65535"),
        ({"listenPort": 65536}, "spec.listenPort", "between 1 and 65535"),
        ({"nodeMeshMaxRestartTime": "2 minutes"}, "spec.nodeMeshMaxRestartTime", "duration"),
        ({"bindMode": "Any"}, "spec.bindMode", "not one of None, NodeIP"),
        ({"programClusterRoutes": "yes"}, "spec.programClusterRoutes", "Enabled, Disabled"),
        ({"serviceLoadBalancerAggregation": "On"}, "spec.serviceLoadBalancerAggregation", "Enab"),
        ({"localWorkloadPeeringIPV4": "fe80::1"}, "spec.localWorkloadPeeringIPV4", "IPv4"),
        ({"localWorkloadPeeringIPV6": "10.0.0.1"}, "spec.localWorkloadPeeringIPV6", "IPv6"),
        ({"ignoredInterfaces": ["*"]}, "spec.ignoredInterfaces[0]", "not * alone"),
        ({"ignoredInterfaces": ["a-very-long-interface"]}, "spec.ignoredInterfaces[0]", "1-15"),
        (
            {"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]},
            "spec.serviceClusterIPs[0].cidr",
            "host bits set",
        ),
        (
            {"serviceExternalIPs": [{"cidr": "nope"}]},
            "spec.serviceExternalIPs[0].cidr",
            "invalid network",
        ),
        (
            {"nodeMeshPassword": {"secretKeyRef": {}}},
            "spec.nodeMeshPassword.secretKeyRef.key",
            "req",
        ),
        ({"nodeToNodeMeshEnable": True}, "spec.nodeToNodeMeshEnable", "unknown field"),
    ],
)
def test_bgpconfiguration_field_errors(spec: dict[str, Any], path: str, reason: str) -> None:
    assert_error("BGPConfiguration", spec, path, reason)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("65536:1", "16-bit"),
        ("1:2:4294967296", "32-bit"),
        ("100", "expected aa:nn"),
        ("a:b", "expected aa:nn"),
    ],
)
def test_community_values(value: str, reason: str) -> None:
    spec = {
        "communities": [{"name": "c", "value": value}],
        "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["c"]}],
    }
    assert_error("BGPConfiguration", spec, "spec.communities[0].value", reason)


def test_community_needs_name_and_value() -> None:
    spec = {
        "communities": [{"value": "1:1"}, {"name": "Bad_Name", "value": "1:1"}, {"name": "x"}],
        "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["1:1"]}],
    }
    errors = errors_of("BGPConfiguration", spec)
    paths = {e.path for e in errors}
    assert {"spec.communities[0].name", "spec.communities[1].name"} <= paths
    assert "spec.communities[2].value" in paths


def test_communities_must_be_used() -> None:
    spec = {"communities": [{"name": "c", "value": "1:1"}]}
    assert_error("BGPConfiguration", spec, "spec.communities", "not used in prefixAdvertisements")


def test_prefix_advertisement_communities_are_values_or_defined_names() -> None:
    spec = {
        "communities": [{"name": "c", "value": "1:1"}],
        "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["c", "2:2", "undefined"]}],
    }
    assert_error(
        "BGPConfiguration",
        spec,
        "spec.prefixAdvertisements[0].communities[2]",
        "nor the name of one of spec.communities",
    )


def test_prefix_advertisement_needs_cidr_and_communities() -> None:
    errors = errors_of("BGPConfiguration", {"prefixAdvertisements": [{}]})
    assert {e.path for e in errors} == {
        "spec.prefixAdvertisements[0].cidr",
        "spec.prefixAdvertisements[0].communities",
    }


# --- BGPPeer -----------------------------------------------------------------------------------


def test_peer_minimal_and_global() -> None:
    res = peer({"peerIP": "192.0.2.1", "asNumber": 64513})
    assert res.to_dict()["spec"] == {"peerIP": "192.0.2.1", "asNumber": 64513}
    round_trips(res)


def test_peer_full_round_trips() -> None:
    spec = {
        "nodeSelector": "rack == 'r1'",
        "peerIP": "[2001:db8::1]:1179",
        "asNumber": 64513,
        "keepOriginalNextHop": True,
        "password": {"secretKeyRef": {"name": "bgp", "key": "tor", "optional": False}},
        "sourceAddress": "None",
        "maxRestartTime": "3m",
        "numAllowedLocalASNumbers": 2,
        "ttlSecurity": 1,
        "keepaliveTime": "20s",
        "localASNumber": 64600,
        "reachableBy": "2001:db8::fe",
        "filters": ["export-pods", "import-dc"],
        "reversePeering": "Manual",
        "failureDetectionMode": "BFDIfDirectlyConnected",
        "restartMode": "LongLivedGracefulRestart",
        "birdGatewayMode": "DirectIfDirectlyConnected",
    }
    res = peer(spec)
    assert res.to_dict()["spec"] == spec
    round_trips(res)


def test_peer_with_peer_selector_and_route_reflector_style() -> None:
    res = peer({"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"})
    assert res.spec.peer_selector == "route-reflector == 'true'"


@pytest.mark.parametrize(
    "peer_ip", ["192.0.2.1", "192.0.2.1:179", "2001:db8::1", "[2001:db8::1]:179", "[::1]:65535"]
)
def test_peer_ip_forms(peer_ip: str) -> None:
    assert peer({"peerIP": peer_ip}).spec.peer_ip == peer_ip


@pytest.mark.parametrize(
    "peer_ip",
    [
        "192.0.2.1:0",
        "192.0.2.1:65536",
        "192.0.2.300:170",
        "192.0.2.1:",
        ":8552",
        "[2001:db8::]:98956",
        "[2001:db8::]:",
        "[]:8552",
        "[2001:db8::FFFFF]:170",
        "peer.example",
    ],
)
def test_bad_peer_ips(peer_ip: str) -> None:
    assert_error("BGPPeer", {"peerIP": peer_ip}, "spec.peerIP", "invalid peerIP", name="p")


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        ({"node": "n1", "nodeSelector": "all()"}, "spec.node", "cannot both be set"),
        (
            {"peerIP": "192.0.2.1", "peerSelector": "all()"},
            "spec.peerIP",
            "peerIP and peerSelector cannot both be set",
        ),
        ({"peerSelector": "all()", "asNumber": 64512}, "spec.asNumber", "must be empty"),
        ({"localWorkloadSelector": "app == 'bgp'"}, "spec.asNumber", "required with local"),
        (
            {"localWorkloadSelector": "all()", "asNumber": 65000, "peerIP": "192.0.2.1"},
            "spec.peerIP",
            "must be empty when localWorkloadSelector",
        ),
        (
            {"localWorkloadSelector": "all()", "asNumber": 65000, "peerSelector": "all()"},
            "spec.peerSelector",
            "must be empty when localWorkloadSelector",
        ),
        ({"reachableBy": "192.0.2.254"}, "spec.reachableBy", "empty when peerIP is empty"),
        (
            {"peerIP": "192.0.2.1", "reachableBy": "2001:db8::1"},
            "spec.reachableBy",
            "same IP family",
        ),
        (
            {"peerIP": "[2001:db8::1]:179", "reachableBy": "192.0.2.1"},
            "spec.reachableBy",
            "same IP family",
        ),
        ({"peerIP": "192.0.2.1", "reachableBy": "gw"}, "spec.reachableBy", "expected an IP"),
        (
            {"keepOriginalNextHop": True, "nextHopMode": "Self"},
            "spec.keepOriginalNextHop",
            "use nextHopMode: Keep",
        ),
        ({"node": "Node_1"}, "spec.node", "invalid node name"),
        ({"node": "n" * 254}, "spec.node", "at most 253"),
        ({"nodeSelector": "a =="}, "spec.nodeSelector", "invalid selector"),
        ({"peerSelector": "a == 'x"}, "spec.peerSelector", "invalid selector"),
        ({"nodeSelector": "a == 'b' && " * 100 + "all()"}, "spec.nodeSelector", "at most 1024"),
        ({"sourceAddress": "NodeIP"}, "spec.sourceAddress", "not one of UseNodeIP, None"),
        ({"nextHopMode": "keep"}, "spec.nextHopMode", "not one of Auto, Self, Keep"),
        ({"reversePeering": "Off"}, "spec.reversePeering", "not one of Auto, Manual"),
        ({"failureDetectionMode": "BFD"}, "spec.failureDetectionMode", "not one of None"),
        ({"restartMode": "Graceful"}, "spec.restartMode", "not one of GracefulRestart"),
        ({"birdGatewayMode": "Direct"}, "spec.birdGatewayMode", "not one of Recursive"),
        ({"maxRestartTime": "120"}, "spec.maxRestartTime", "invalid duration"),
        ({"keepaliveTime": "soon"}, "spec.keepaliveTime", "invalid duration"),
        ({"ttlSecurity": 256}, "spec.ttlSecurity", "between 0 and 255"),
        ({"localASNumber": "x"}, "spec.localASNumber", "invalid AS number"),
        ({"filters": ["Bad Filter"]}, "spec.filters[0]", "invalid BGPFilter name"),
        ({"password": {"secretKeyRef": {"name": "s"}}}, "spec.password.secretKeyRef.key", "req"),
        ({"peerIp": "192.0.2.1"}, "spec.peerIp", "unknown field"),
    ],
)
def test_peer_errors(spec: dict[str, Any], path: str, reason: str) -> None:
    assert_error("BGPPeer", spec, path, reason, name="p")


def test_peer_as_numbers_are_normalised() -> None:
    res = peer({"peerIP": "192.0.2.1", "asNumber": "1.1", "localASNumber": "64600"})
    assert res.to_dict()["spec"]["asNumber"] == 65537
    assert res.to_dict()["spec"]["localASNumber"] == 64600


def test_peer_with_local_workload_selector() -> None:
    res = peer({"localWorkloadSelector": "app == 'bgp-speaker'", "asNumber": 65010})
    assert res.spec.local_workload_selector == "app == 'bgp-speaker'"


# --- BGPFilter ---------------------------------------------------------------------------------


def test_filter_full_round_trips() -> None:
    spec = {
        "exportV4": [
            {"action": "Accept", "matchOperator": "In", "cidr": "10.244.0.0/16"},
            {"action": "Reject", "source": "RemotePeers"},
        ],
        "importV4": [
            {
                "action": "Accept",
                "matchOperator": "NotIn",
                "cidr": "198.51.100.0/24",
                "prefixLength": {"min": 24, "max": 32},
                "interface": "eth*",
            }
        ],
        "exportV6": [{"action": "Accept", "matchOperator": "Equal", "cidr": "2001:db8::/32"}],
        "importV6": [{"action": "Reject", "interface": "*"}],
    }
    res = validate(doc("BGPFilter", spec, "f1"))
    assert res.to_dict()["spec"] == spec
    round_trips(res)


@pytest.mark.parametrize(
    ("rule", "path", "reason"),
    [
        ({}, "exportV4[0].action", "required field is missing"),
        ({"action": ""}, "exportV4[0].action", "action is required"),
        ({"action": "Allow"}, "exportV4[0].action", "not one of Accept, Reject"),
        ({"action": "Accept", "cidr": "10.0.0.0/8"}, "exportV4[0].matchOperator", "required"),
        ({"action": "Accept", "matchOperator": "In"}, "exportV4[0].cidr", "required when match"),
        (
            {"action": "Accept", "prefixLength": {"min": 8}},
            "exportV4[0].cidr",
            "required when prefixLength",
        ),
        (
            {"action": "Accept", "matchOperator": "In", "cidr": "10.0.0.1/8"},
            "exportV4[0].cidr",
            "host bits set",
        ),
        (
            {"action": "Accept", "matchOperator": "In", "cidr": "2001:db8::/32"},
            "exportV4[0].cidr",
            "invalid IPv4 network",
        ),
        (
            {"action": "Accept", "matchOperator": "Contains", "cidr": "10.0.0.0/8"},
            "exportV4[0].matchOperator",
            "not one of Equal, NotEqual, In, NotIn",
        ),
        (
            {"action": "Accept", "cidr": "10.0.0.0/8", "matchOperator": "In",
             "prefixLength": {"max": 33}},
            "exportV4[0].prefixLength.max",
            "between 0 and 32",
        ),
        ({"action": "Accept", "source": "Peers"}, "exportV4[0].source", "not one of RemotePeers"),
        ({"action": "Accept", "interface": "eth 0"}, "exportV4[0].interface", "invalid interface"),
        ({"action": "Accept", "Action": "Reject"}, "exportV4[0].Action", "unknown field"),
    ],
)  # fmt: skip
def test_filter_v4_rule_errors(rule: dict[str, Any], path: str, reason: str) -> None:
    assert_error("BGPFilter", {"exportV4": [rule]}, f"spec.{path}", reason, name="f1")


def test_filter_v6_rules_use_v6_limits() -> None:
    rule = {
        "action": "Accept",
        "matchOperator": "In",
        "cidr": "2001:db8::/32",
        "prefixLength": {"min": 48, "max": 128},
    }
    validate(doc("BGPFilter", {"importV6": [rule]}, "f1"))
    bad = {**rule, "prefixLength": {"max": 129}}
    assert_error(
        "BGPFilter",
        {"importV6": [bad]},
        "spec.importV6[0].prefixLength.max",
        "between 0 and 128",
        name="f1",
    )
    assert_error(
        "BGPFilter",
        {"importV6": [{**rule, "cidr": "10.0.0.0/8"}]},
        "spec.importV6[0].cidr",
        "invalid IPv6 network",
        name="f1",
    )


# --- registry: names and columns ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "kind"),
    [
        ("bgpconfig", "BGPConfiguration"),
        ("bgpconfigs", "BGPConfiguration"),
        ("bgpconfigurations", "BGPConfiguration"),
        ("bgppeer", "BGPPeer"),
        ("bgppeers", "BGPPeer"),
        ("bgpp", "BGPPeer"),
        ("bgpps", "BGPPeer"),
        ("bp", "BGPPeer"),
        ("bps", "BGPPeer"),
        ("bgpfilter", "BGPFilter"),
        ("bgpfilters", "BGPFilter"),
        ("bgpf", "BGPFilter"),
        ("bf", "BGPFilter"),
    ],
)
def test_calicoctl_names(alias: str, kind: str) -> None:
    info = lookup(alias)
    assert info is not None and info.kind == kind


def _row(alias: str, res: Resource, wide: bool = False) -> list[tuple[str, str]]:
    info = lookup(alias)
    assert info is not None
    cols = info.wide_columns if wide else info.columns
    return [(h, get(res)) for h, get in cols]


def test_bgppeer_columns() -> None:
    assert _row("bgppeer", peer({"peerIP": "192.0.2.1", "asNumber": 64513, "node": "n1"})) == [
        ("NAME", "peer1"),
        ("PEERIP", "192.0.2.1"),
        ("NODE", "n1"),
        ("ASN", "64513"),
    ]
    assert _row("bgppeer", peer({"peerIP": "192.0.2.1"}))[2] == ("NODE", "(global)")
    selected = peer({"nodeSelector": "rack == 'r1'", "peerSelector": "rr == 'true'"})
    assert _row("bgppeer", selected)[2:] == [("NODE", "rack == 'r1'"), ("ASN", "0")]


def test_bgpconfig_columns() -> None:
    assert _row("bgpconfig", bgpconfig({})) == [
        ("NAME", "default"),
        ("LOGSEVERITY", ""),
        ("MESHENABLED", "-"),
        ("ASNUMBER", "-"),
    ]
    full = bgpconfig({"logSeverityScreen": "Info", "nodeToNodeMeshEnabled": False, "asNumber": 1})
    assert [v for _, v in _row("bgpconfig", full)] == ["default", "Info", "false", "1"]


def test_bgpfilter_columns() -> None:
    res = validate(
        doc(
            "BGPFilter",
            {"exportV4": [{"action": "Reject"}], "exportV6": [{"action": "Reject"}]},
            "f1",
        )
    )
    assert _row("bgpfilter", res) == [("NAME", "f1")]
    assert _row("bgpfilter", res, wide=True) == [
        ("NAME", "f1"),
        ("NUMEXPORT", "2"),
        ("NUMIMPORT", "0"),
    ]


# --- examples ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bgpconfiguration", "bgppeer", "bgpfilter"])
def test_examples_are_valid_and_round_trip(name: str) -> None:
    (res,) = load((EXAMPLES / f"{name}.yaml").read_text())
    round_trips(res)
