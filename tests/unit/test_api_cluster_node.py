"""ClusterInformation, KubeControllersConfiguration and Node: fields, defaults and rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from tortie.api import FieldError, Resource, ValidationError, load, lookup, validate
from tortie.api.kinds.cluster import (
    AutoHostEndpointConfig,
    ClusterInformationSpec,
    ControllersConfig,
    HostEndpointTemplate,
    KubeControllersConfigurationSpec,
    KubeControllersConfigurationStatus,
    LoadBalancerControllerConfig,
    MigrationControllerConfig,
    NodeControllerConfig,
)
from tortie.api.kinds.node import (
    NodeAddress,
    NodeBGPSpec,
    NodeInterface,
    NodeSpec,
    NodeStatus,
    NodeWireguardSpec,
    OrchRef,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WG_KEY = "jlkVyQYooZYzI2wFfNhSZez5eWh44yfq1wKVjLvSXgY="


def doc(kind: str, spec: dict[str, Any] | None, name: str = "default") -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
    }
    if spec is not None:
        body["spec"] = spec
    return body


def errors_of(body: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        validate(body)
    return info.value.errors


def assert_error(body: dict[str, Any], path: str, reason: str) -> None:
    errors = errors_of(body)
    assert any(e.path == path and reason in e.reason for e in errors), errors


def round_trips(res: Resource) -> None:
    first = res.to_dict()
    assert validate(first).to_dict() == first


def encode_names(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


def node(spec: dict[str, Any] | None, name: str = "node-1", **extra: Any) -> dict[str, Any]:
    body = doc("Node", spec, name)
    body.update(extra)
    return body


# --- JSON names (clusterinfo.go, kubecontrollersconfig.go, internalapi/node.go) ----------------


def test_cluster_information_json_names() -> None:
    assert encode_names(ClusterInformationSpec) == {
        "clusterGUID",
        "clusterType",
        "calicoVersion",
        "datastoreReady",
        "variant",
    }


def test_kube_controllers_json_names() -> None:
    assert encode_names(KubeControllersConfigurationSpec) == {
        "logSeverityScreen",
        "healthChecks",
        "etcdV3CompactionPeriod",
        "prometheusMetricsPort",
        "controllers",
        "debugProfilePort",
    }
    assert encode_names(ControllersConfig) == {
        "node",
        "policy",
        "workloadEndpoint",
        "serviceAccount",
        "namespace",
        "loadBalancer",
        "policyMigration",
    }
    assert encode_names(NodeControllerConfig) == {
        "reconcilerPeriod",
        "syncLabels",
        "hostEndpoint",
        "leakGracePeriod",
    }
    assert encode_names(AutoHostEndpointConfig) == {
        "autoCreate",
        "createDefaultHostEndpoint",
        "templates",
    }
    assert encode_names(HostEndpointTemplate) == {
        "generateName",
        "interfaceCIDRs",
        "interfacePattern",
        "labels",
        "nodeSelector",
    }
    assert encode_names(LoadBalancerControllerConfig) == {"assignIPs"}
    assert encode_names(MigrationControllerConfig) == {"enabled"}
    assert encode_names(KubeControllersConfigurationStatus) == {
        "runningConfig",
        "environmentVars",
    }


def test_node_json_names() -> None:
    assert encode_names(NodeSpec) == {
        "bgp",
        "ipv4VXLANTunnelAddr",
        "vxlanTunnelMACAddr",
        "ipv6VXLANTunnelAddr",
        "vxlanTunnelMACAddrV6",
        "orchRefs",
        "wireguard",
        "addresses",
        "interfaces",
    }
    assert encode_names(NodeBGPSpec) == {
        "asNumber",
        "ipv4Address",
        "ipv6Address",
        "ipv4IPIPTunnelAddr",
        "routeReflectorClusterID",
    }
    assert encode_names(NodeWireguardSpec) == {"interfaceIPv4Address", "interfaceIPv6Address"}
    assert encode_names(NodeAddress) == {"address", "type"}
    assert encode_names(NodeInterface) == {"name", "addresses"}
    assert encode_names(OrchRef) == {"nodeName", "orchestrator"}
    assert encode_names(NodeStatus) == {"wireguardPublicKey", "wireguardPublicKeyV6", "podCIDRs"}


# --- ClusterInformation ------------------------------------------------------------------------


def test_cluster_information_round_trips() -> None:
    spec = {
        "clusterGUID": "6f0c2a9d4e8b4c17a5d3b2e1f0c9a8b7",
        "clusterType": "tortie,bgp",
        "calicoVersion": "v0.1.0",
        "datastoreReady": True,
        "variant": "Calico",
    }
    res = validate(doc("ClusterInformation", spec))
    assert res.to_dict()["spec"] == spec
    round_trips(res)


def test_cluster_information_must_be_named_default() -> None:
    assert_error(doc("ClusterInformation", {}, "cluster"), "metadata.name", "named 'default'")
    assert_error(doc("ClusterInformation", {"clusterGuid": "x"}), "spec.clusterGuid", "unknown")
    assert_error(
        doc("ClusterInformation", {"datastoreReady": "yes"}), "spec.datastoreReady", "a boolean"
    )


def test_cluster_information_columns() -> None:
    info = lookup("clusterinfo")
    assert info is not None and info.kind == "ClusterInformation"
    assert lookup("clusterinformations") is info
    res = validate(doc("ClusterInformation", {"clusterGUID": "abc", "datastoreReady": True}))
    assert [(h, get(res)) for h, get in info.columns] == [
        ("NAME", "default"),
        ("CLUSTERGUID", "abc"),
        ("CLUSTERTYPE", ""),
        ("CALICOVERSION", ""),
        ("DATASTOREREADY", "true"),
    ]
    assert info.wide_columns == info.columns


# --- KubeControllersConfiguration --------------------------------------------------------------


def test_kube_controllers_minimal_gets_client_defaults() -> None:
    res = validate(doc("KubeControllersConfiguration", None))
    assert res.to_dict()["spec"] == {"controllers": {}, "prometheusMetricsPort": 9094}


def test_kube_controllers_defaults_inside_controllers() -> None:
    template = {"generateName": "t", "interfaceCIDRs": ["10.0.0.0/8"]}
    spec = {
        "controllers": {"node": {"hostEndpoint": {"templates": [template]}}, "loadBalancer": {}}
    }
    out = validate(doc("KubeControllersConfiguration", spec)).to_dict()["spec"]["controllers"]
    assert out["node"]["leakGracePeriod"] == "15m"
    assert out["node"]["hostEndpoint"]["templates"][0]["nodeSelector"] == "all()"
    assert out["loadBalancer"] == {"assignIPs": "AllServices"}


def test_kube_controllers_full_round_trips() -> None:
    spec = {
        "logSeverityScreen": "Warning",
        "healthChecks": "Disabled",
        "etcdV3CompactionPeriod": "0",
        "prometheusMetricsPort": 0,
        "debugProfilePort": 6060,
        "controllers": {
            "node": {
                "reconcilerPeriod": "5m",
                "syncLabels": "Disabled",
                "leakGracePeriod": "30m",
                "hostEndpoint": {
                    "autoCreate": "Enabled",
                    "createDefaultHostEndpoint": "Disabled",
                    "templates": [
                        {
                            "generateName": "data",
                            "interfaceCIDRs": ["192.0.2.0/24"],
                            "interfacePattern": "^eth[0-9]+$",
                            "labels": {"network": "data"},
                            "nodeSelector": "has(data-plane)",
                        }
                    ],
                },
            },
            "policy": {"reconcilerPeriod": "1m"},
            "workloadEndpoint": {"reconcilerPeriod": "1m"},
            "serviceAccount": {"reconcilerPeriod": "1m"},
            "namespace": {"reconcilerPeriod": "1m"},
            "loadBalancer": {"assignIPs": "RequestedServicesOnly"},
            "policyMigration": {"enabled": "Disabled"},
        },
    }
    res = validate(doc("KubeControllersConfiguration", spec))
    assert res.to_dict()["spec"] == spec
    round_trips(res)


def test_kube_controllers_status_is_kept() -> None:
    body = doc("KubeControllersConfiguration", {"controllers": {}})
    body["status"] = {
        "runningConfig": {"controllers": {"node": {"syncLabels": "Enabled"}}},
        "environmentVars": {"ENABLED_CONTROLLERS": "node"},
    }
    out = validate(body).to_dict()
    assert out["status"]["environmentVars"] == {"ENABLED_CONTROLLERS": "node"}


def _kcc(spec: dict[str, Any]) -> dict[str, Any]:
    return doc("KubeControllersConfiguration", spec)


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        ({"logSeverityScreen": "Trace"}, "spec.logSeverityScreen", "not one of None, Debug"),
        ({"healthChecks": "On"}, "spec.healthChecks", "not one of Enabled, Disabled"),
        ({"etcdV3CompactionPeriod": "10 min"}, "spec.etcdV3CompactionPeriod", "duration"),
        ({"prometheusMetricsPort": 70000}, "spec.prometheusMetricsPort", "0 and 65535"),
        ({"debugProfilePort": -1}, "spec.debugProfilePort", "0 and 65535"),
        (
            {"controllers": {"node": {"reconcilerPeriod": "5"}}},
            "spec.controllers.node.reconcilerPeriod",
            "invalid duration",
        ),
        (
            {"controllers": {"policy": {"reconcilerPeriod": "x"}}},
            "spec.controllers.policy.reconcilerPeriod",
            "invalid duration",
        ),
        (
            {"controllers": {"node": {"syncLabels": "yes"}}},
            "spec.controllers.node.syncLabels",
            "Enabled, Disabled",
        ),
        (
            {"controllers": {"node": {"leakGracePeriod": "a while"}}},
            "spec.controllers.node.leakGracePeriod",
            "invalid duration",
        ),
        (
            {"controllers": {"node": {"hostEndpoint": {"autoCreate": "true"}}}},
            "spec.controllers.node.hostEndpoint.autoCreate",
            "Enabled, Disabled",
        ),
        (
            {"controllers": {"loadBalancer": {"assignIPs": "All"}}},
            "spec.controllers.loadBalancer.assignIPs",
            "AllServices, RequestedServicesOnly",
        ),
        (
            {"controllers": {"policyMigration": {"enabled": "yes"}}},
            "spec.controllers.policyMigration.enabled",
            "Enabled, Disabled",
        ),
        ({"controllers": {"nodes": {}}}, "spec.controllers.nodes", "unknown field"),
    ],
)
def test_kube_controllers_errors(spec: dict[str, Any], path: str, reason: str) -> None:
    assert_error(_kcc(spec), path, reason)


@pytest.mark.parametrize(
    ("template", "field", "reason"),
    [
        ({"interfaceCIDRs": ["10.0.0.0/8"]}, "generateName", "needs a generateName"),
        ({"generateName": "Bad_Name", "interfaceCIDRs": ["10.0.0.0/8"]}, "generateName", "invalid"),
        ({"generateName": "t"}, "interfaceCIDRs", "at least one of interfaceCIDRs"),
        ({"generateName": "t", "interfaceCIDRs": ["x"]}, "interfaceCIDRs[0]", "invalid CIDR"),
        ({"generateName": "t", "interfacePattern": "("}, "interfacePattern", "regular expression"),
        (
            {"generateName": "t", "interfacePattern": ".*", "nodeSelector": "a =="},
            "nodeSelector",
            "invalid selector",
        ),
        (
            {"generateName": "t", "interfacePattern": ".*", "labels": {"bad key!": "v"}},
            "labels[bad key!]",
            "invalid label key",
        ),
    ],
)  # fmt: skip
def test_host_endpoint_template_errors(template: dict[str, Any], field: str, reason: str) -> None:
    spec = {"controllers": {"node": {"hostEndpoint": {"templates": [template]}}}}
    path = f"spec.controllers.node.hostEndpoint.templates[0].{field}"
    assert_error(_kcc(spec), path, reason)


def test_host_endpoint_template_names_are_unique() -> None:
    template = {"generateName": "t", "interfacePattern": "eth0"}
    spec = {"controllers": {"node": {"hostEndpoint": {"templates": [template, template]}}}}
    assert_error(
        _kcc(spec),
        "spec.controllers.node.hostEndpoint.templates[1].generateName",
        "more than once",
    )


def test_kube_controllers_must_be_named_default() -> None:
    assert_error(
        doc("KubeControllersConfiguration", {}, "controllers"), "metadata.name", "'default'"
    )


@pytest.mark.parametrize(
    "alias",
    [
        "kubecontrollersconfiguration",
        "kubecontrollersconfigurations",
        "kubecontrollersconfig",
        "kubecontrollersconfigs",
    ],
)
def test_kube_controllers_names(alias: str) -> None:
    info = lookup(alias)
    assert info is not None and info.kind == "KubeControllersConfiguration"
    assert [h for h, _ in info.columns] == ["NAME"]


# --- Node --------------------------------------------------------------------------------------


def test_node_full_round_trips() -> None:
    spec = {
        "bgp": {
            "asNumber": 64512,
            "ipv4Address": "192.0.2.11/24",
            "ipv6Address": "2001:db8::11/64",
            "ipv4IPIPTunnelAddr": "10.244.12.1",
            "routeReflectorClusterID": "244.0.0.1",
        },
        "ipv4VXLANTunnelAddr": "10.244.12.0",
        "vxlanTunnelMACAddr": "66:2e:4c:0a:11:3f",
        "ipv6VXLANTunnelAddr": "fd00:10:244:12::",
        "vxlanTunnelMACAddrV6": "66:2e:4c:0a:11:40",
        "orchRefs": [{"nodeName": "node-1", "orchestrator": "k8s"}],
        "wireguard": {"interfaceIPv4Address": "10.244.12.2", "interfaceIPv6Address": "fd00::2"},
        "addresses": [
            {"address": "192.0.2.11/24", "type": "CalicoNodeIP"},
            {"address": "192.0.2.11", "type": "InternalIP"},
            {"address": "198.51.100.11", "type": "ExternalIP"},
        ],
        "interfaces": [{"name": "eth0", "addresses": ["192.0.2.11/24", "2001:db8::11"]}],
    }
    status = {
        "wireguardPublicKey": WG_KEY,
        "wireguardPublicKeyV6": WG_KEY,
        "podCIDRs": ["10.244.12.0/24"],
    }
    res = validate(node(spec, status=status))
    out = res.to_dict()
    assert out["spec"] == spec
    assert out["status"] == status
    round_trips(res)


def test_node_minimal_and_without_bgp() -> None:
    res = validate(node(None))
    assert res.to_dict()["spec"] == {}
    res = validate(node({"ipv4VXLANTunnelAddr": "10.244.3.0"}))
    assert res.spec.bgp is None  # type: ignore[attr-defined]


def test_node_as_number_is_normalised() -> None:
    res = validate(node({"bgp": {"ipv4Address": "192.0.2.1/24", "asNumber": "1.1"}}))
    assert res.to_dict()["spec"]["bgp"]["asNumber"] == 65537


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        ({"bgp": {}}, "spec.bgp", "must not be empty"),
        ({"bgp": {"ipv4Address": "2001:db8::1/64"}}, "spec.bgp.ipv4Address", "IPv4 CIDR"),
        ({"bgp": {"ipv6Address": "192.0.2.1/24"}}, "spec.bgp.ipv6Address", "IPv6 CIDR"),
        ({"bgp": {"ipv4Address": "192.0.2.1/33"}}, "spec.bgp.ipv4Address", "invalid IPv4 CIDR"),
        (
            {"bgp": {"ipv4Address": "192.0.2.1/24", "routeReflectorClusterID": "abcdef"}},
            "spec.bgp.routeReflectorClusterID",
            "IPv4 address",
        ),
        (
            {"bgp": {"ipv4Address": "192.0.2.1/24", "routeReflectorClusterID": "300.34.3.1"}},
            "spec.bgp.routeReflectorClusterID",
            "IPv4 address",
        ),
        (
            {"bgp": {"ipv4IPIPTunnelAddr": "10.0.0.1/32"}},
            "spec.bgp.ipv4IPIPTunnelAddr",
            "IPv4 address",
        ),
        ({"bgp": {"asNumber": "x"}}, "spec.bgp.asNumber", "invalid AS number"),
        ({"ipv4VXLANTunnelAddr": "fd00::1"}, "spec.ipv4VXLANTunnelAddr", "IPv4 address"),
        ({"ipv6VXLANTunnelAddr": "10.0.0.1"}, "spec.ipv6VXLANTunnelAddr", "IPv6 address"),
        ({"vxlanTunnelMACAddr": "66:2e:4c:0a:11"}, "spec.vxlanTunnelMACAddr", "MAC address"),
        ({"vxlanTunnelMACAddrV6": "zz:2e:4c:0a:11:3f"}, "spec.vxlanTunnelMACAddrV6", "MAC"),
        ({"orchRefs": [{"nodeName": "n"}]}, "spec.orchRefs[0].orchestrator", "required field"),
        ({"orchRefs": [{"orchestrator": ""}]}, "spec.orchRefs[0].orchestrator", "must be given"),
        ({"addresses": [{"type": "InternalIP"}]}, "spec.addresses[0].address", "required"),
        ({"addresses": [{"address": "x"}]}, "spec.addresses[0].address", "invalid CIDR"),
        (
            {"addresses": [{"address": "192.0.2.1", "type": "PublicIP"}]},
            "spec.addresses[0].type",
            "not one of CalicoNodeIP, InternalIP, ExternalIP",
        ),
        (
            {"wireguard": {"interfaceIPv4Address": "foo.bar"}},
            "spec.wireguard.interfaceIPv4Address",
            "IPv4 address",
        ),
        (
            {"interfaces": [{"name": "eth0", "addresses": ["nope"]}]},
            "spec.interfaces[0].addresses[0]",
            "invalid CIDR",
        ),
        ({"ipv4VxlanTunnelAddr": "10.0.0.1"}, "spec.ipv4VxlanTunnelAddr", "unknown field"),
        ({"bgp": {"ipv4IpipTunnelAddr": "10.0.0.1"}}, "spec.bgp.ipv4IpipTunnelAddr", "unknown"),
    ],
)
def test_node_errors(spec: dict[str, Any], path: str, reason: str) -> None:
    assert_error(node(spec), path, reason)


@pytest.mark.parametrize("mac", ["66:2e:4c:0a:11:3f", "66-2E-4C-0A-11-3F", "662e.4c0a.113f"])
def test_mac_forms(mac: str) -> None:
    validate(node({"vxlanTunnelMACAddr": mac}))


@pytest.mark.parametrize(
    ("key", "field"),
    [("foobar", "wireguardPublicKey"), ("YWJj", "wireguardPublicKeyV6")],
)
def test_bad_wireguard_keys(key: str, field: str) -> None:
    assert_error(node({}, status={field: key}), f"status.{field}", "WireGuard public key")


def test_node_name_rules() -> None:
    assert_error(node({}, name="Node_1"), "metadata.name", "invalid name")
    validate(node({}, name="node-1.example"))


@pytest.mark.parametrize("alias", ["node", "nodes", "no", "nos", "Node"])
def test_node_names(alias: str) -> None:
    info = lookup(alias)
    assert info is not None and info.kind == "Node"


def test_node_columns() -> None:
    info = lookup("node")
    assert info is not None
    assert [h for h, _ in info.columns] == ["NAME"]
    bgp = {"ipv4Address": "192.0.2.1/24", "ipv6Address": "2001:db8::1/64", "asNumber": 65001}
    with_asn = validate(node({"bgp": bgp}))
    assert [(h, get(with_asn)) for h, get in info.wide_columns] == [
        ("NAME", "node-1"),
        ("ASN", "65001"),
        ("IPV4", "192.0.2.1/24"),
        ("IPV6", "2001:db8::1/64"),
    ]
    default_asn = validate(node({"bgp": {"ipv4Address": "192.0.2.1/24"}}))
    assert [get(default_asn) for _, get in info.wide_columns] == [
        "node-1",
        "(64512)",
        "192.0.2.1/24",
        "",
    ]
    no_bgp = validate(node({}))
    assert [get(no_bgp) for _, get in info.wide_columns] == ["node-1", "", "", ""]


# --- examples ----------------------------------------------------------------------------------


def _example(name: str) -> str:
    # ClusterInformation is read-only for tortiectl, so its example sits apart from the
    # files `tortiectl apply -f examples/` writes.
    sub = "readonly/" if name == "clusterinformation" else ""
    return (EXAMPLES / f"{sub}{name}.yaml").read_text()


@pytest.mark.parametrize("name", ["clusterinformation", "kubecontrollersconfiguration", "node"])
def test_examples_are_valid_and_round_trip(name: str) -> None:
    (res,) = load(_example(name))
    round_trips(res)


def test_every_infrastructure_example_loads() -> None:
    kinds = {
        "ippool": "IPPool",
        "ipreservation": "IPReservation",
        "ipamconfiguration": "IPAMConfiguration",
        "bgpconfiguration": "BGPConfiguration",
        "bgppeer": "BGPPeer",
        "bgpfilter": "BGPFilter",
        "felixconfiguration": "FelixConfiguration",
        "clusterinformation": "ClusterInformation",
        "kubecontrollersconfiguration": "KubeControllersConfiguration",
        "node": "Node",
    }
    for name, kind in kinds.items():
        (res,) = load(_example(name))
        assert kind == res.KIND
