"""Endpoint kinds: HostEndpoint, WorkloadEndpoint and the WorkloadEndpoint name rule."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tortie.api import FieldError, ValidationError, load, lookup, validate
from tortie.api.kinds.endpoints import (
    HostEndpoint,
    WorkloadEndpoint,
    WorkloadEndpointName,
    parse_workload_endpoint_name,
    workload_endpoint_name,
)

API = "projectcalico.org/v3"


def errors(doc: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        validate(doc)
    return info.value.errors


def assert_error(doc: dict[str, Any], path: str, fragment: str) -> None:
    found = errors(doc)
    assert any(e.path == path and fragment in e.reason for e in found), found


# --- the name rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "name"),
    [
        (("node1", "k8s", "web", "eth0"), "node1-k8s-web-eth0"),
        (("node-1", "k8s", "web-0", "eth0"), "node--1-k8s-web--0-eth0"),
        (("a-b-c", "cni", "0123-abcd", "e-f"), "a--b--c-cni-0123--abcd-e--f"),
        (("n", "openstack", "vm.1", "tap-1"), "n-openstack-vm.1-tap--1"),
    ],
)
def test_name_round_trip(parts: tuple[str, str, str, str], name: str) -> None:
    assert workload_endpoint_name(*parts) == name
    assert parse_workload_endpoint_name(name) == WorkloadEndpointName(*parts)


@pytest.mark.parametrize(
    ("parts", "fragment"),
    [
        (("", "k8s", "w", "e"), "node must be set"),
        (("n", "k8s", "w", ""), "endpoint must be set"),
        (("-n", "k8s", "w", "e"), "must not begin with '-'"),
        (("n", "k8s", "w-", "e"), "workload 'w-' must not end with '-'"),
    ],
)
def test_name_parts_checked(parts: tuple[str, str, str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        workload_endpoint_name(*parts)


@pytest.mark.parametrize("name", ["", "a-b-c", "a-b-c-d-e", "a--b", "a-b--c"])
def test_unparseable_names(name: str) -> None:
    with pytest.raises(ValueError):
        parse_workload_endpoint_name(name)


# --- WorkloadEndpoint ------------------------------------------------------------------------


def wep(spec: dict[str, Any] | None = None, name: str | None = "node--1-k8s-web--0-eth0",
        namespace: str | None = "default", labels: dict[str, str] | None = None
        ) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if name is not None:
        meta["name"] = name
    if namespace is not None:
        meta["namespace"] = namespace
    if labels is not None:
        meta["labels"] = labels
    base = {"node": "node-1", "orchestrator": "k8s", "pod": "web-0", "endpoint": "eth0",
            "interfaceName": "cali0123456789a"}
    return {"apiVersion": API, "kind": "WorkloadEndpoint", "metadata": meta,
            "spec": {**base, **(spec or {})}}


def test_wep_valid_full() -> None:
    r = validate(wep({
        "containerID": "abc123", "serviceAccountName": "web",
        "ipNetworks": ["10.65.0.5/32", "fd00::5"],
        "ipNATs": [{"internalIP": "10.65.0.5", "externalIP": "172.16.0.5"}],
        "ipv4Gateway": "169.254.1.1", "ipv6Gateway": "fe80::1",
        "profiles": ["kns.default", "ksa.default.web"], "mac": "ee:ee:ee:ee:ee:ee",
        "ports": [{"name": "http", "protocol": "TCP", "port": 80},
                  {"protocol": "UDP", "port": 53, "hostPort": 5353, "hostIP": "0.0.0.0"}],
        "allowSpoofedSourcePrefixes": ["10.0.0.0/8"],
        "qosControls": {"ingressBandwidth": 1_000_000, "egressBurst": 4_294_967_296,
                        "ingressPacketRate": 100, "egressMaxConnections": 10, "dscp": "AF11"},
    }, labels={"app": "web"}))
    assert isinstance(r, WorkloadEndpoint)
    assert r.metadata.labels == {"app": "web", "projectcalico.org/namespace": "default",
                                 "projectcalico.org/orchestrator": "k8s"}
    out = r.to_dict()
    assert validate(copy.deepcopy(out)).to_dict() == out
    assert out["spec"]["ipNATs"] == [{"internalIP": "10.65.0.5", "externalIP": "172.16.0.5"}]
    assert out["spec"]["ports"][1]["hostIP"] == "0.0.0.0"


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ({"orchestrator": "k8s", "pod": "web-0"}, "node--1-k8s-web--0-eth0"),
        ({"orchestrator": "cni", "containerID": "abc-123"}, "node--1-cni-abc--123-eth0"),
        ({"orchestrator": "libnetwork"}, "node--1-libnetwork-libnetwork-eth0"),
        ({"orchestrator": "openstack", "workload": "vm-1"}, "node--1-openstack-vm--1-eth0"),
    ],
)
def test_wep_name_filled_in_per_orchestrator(spec: dict[str, Any], name: str) -> None:
    doc = wep(spec, name=None)
    if spec["orchestrator"] != "k8s":
        del doc["spec"]["pod"]
    r = validate(doc)
    assert r.name == name
    assert r.metadata.labels["projectcalico.org/orchestrator"] == spec["orchestrator"]


def test_wep_name_must_match_spec() -> None:
    assert_error(wep(name="node1-k8s-web-eth0"), "metadata.name",
                 "expected name 'node--1-k8s-web--0-eth0'")


def test_wep_name_parts_required() -> None:
    doc = wep(name=None)
    del doc["spec"]["node"]
    assert_error(doc, "spec.node", "node must be set")
    doc = wep(name=None)
    del doc["spec"]["pod"]
    assert_error(doc, "spec.pod", "pod must be set")
    assert_error(wep({"endpoint": "eth0-"}, name=None), "spec.endpoint", "must not end with")


def test_wep_namespace_required() -> None:
    assert_error(wep(namespace=None), "metadata.namespace", "namespace is required")


def test_wep_interface_name() -> None:
    doc = wep()
    del doc["spec"]["interfaceName"]
    assert_error(doc, "spec.interfaceName", "interfaceName is required")
    assert_error(wep({"interfaceName": "cali0123456789abcdef"}), "spec.interfaceName",
                 "1-15 letters")


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ({"ipNetworks": ["10.65.0.0/24"]}, "spec.ipNetworks[0]", "more than one address"),
        ({"ipNetworks": ["10.65.0.5/24"]}, "spec.ipNetworks[0]", "host bits set"),
        ({"ipNetworks": ["nope"]}, "spec.ipNetworks[0]", "invalid CIDR"),
        ({"ipNetworks": ["10.65.0.5/32"],
          "ipNATs": [{"internalIP": "10.65.0.6", "externalIP": "1.2.3.4"}]},
         "spec.ipNATs[0].internalIP", "not one of the endpoint's ipNetworks"),
        ({"ipNetworks": ["10.65.0.5/32"],
          "ipNATs": [{"internalIP": "10.65.0.5", "externalIP": "fd00::1"}]},
         "spec.ipNATs[0].externalIP", "same IP version"),
        ({"ipNATs": [{"internalIP": "10.65.0.5"}]}, "spec.ipNATs[0].externalIP",
         "required field is missing"),
        ({"ipv4Gateway": "fe80::1"}, "spec.ipv4Gateway", "not an IPv4 address"),
        ({"ipv6Gateway": "169.254.1.1"}, "spec.ipv6Gateway", "not an IPv6 address"),
        ({"mac": "ee:ee:ee"}, "spec.mac", "invalid MAC address"),
        ({"mac": "zz:ee:ee:ee:ee:ee"}, "spec.mac", "invalid MAC address"),
        ({"containerID": "-abc"}, "spec.containerID", "invalid containerID"),
        ({"serviceAccountName": "Web"}, "spec.serviceAccountName", "invalid name"),
        ({"profiles": ["Bad Profile"]}, "spec.profiles[0]", "invalid name"),
        ({"allowSpoofedSourcePrefixes": ["10.0.0.0/40"]}, "spec.allowSpoofedSourcePrefixes[0]",
         "invalid CIDR"),
        ({"ports": [{"protocol": "TCP", "port": 80}]}, "spec.ports[0].name",
         "must have a name unless it has a hostPort"),
        ({"ports": [{"name": "dns", "protocol": "ICMP", "port": 53}]}, "spec.ports[0].protocol",
         "does not support ports"),
        ({"ports": [{"name": "dns", "protocol": "udp", "port": 53}]}, "spec.ports[0].protocol",
         "case-sensitive"),
        ({"ports": [{"name": "dns", "protocol": "UDP", "port": 0}]}, "spec.ports[0].port",
         "out of range"),
        ({"ports": [{"name": "dns", "protocol": "UDP", "port": 53, "hostPort": 70000}]},
         "spec.ports[0].hostPort", "out of range"),
        ({"ports": [{"name": "DNS", "protocol": "UDP", "port": 53}]}, "spec.ports[0].name",
         "invalid port name"),
        ({"ports": [{"name": "dns", "protocol": "UDP", "port": 53, "hostIP": "x"}]},
         "spec.ports[0].hostIP", "invalid CIDR"),
        ({"ports": [{"name": "dns", "port": 53}]}, "spec.ports[0].protocol",
         "required field is missing"),
        ({"qosControls": {"ingressBandwidth": 999}}, "spec.qosControls.ingressBandwidth",
         "must be 0 (unset) or 1000-1000000000000000"),
        ({"qosControls": {"egressPacketRate": 10001}}, "spec.qosControls.egressPacketRate",
         "1-10000"),
        ({"qosControls": {"ingressMaxConnections": -1}},
         "spec.qosControls.ingressMaxConnections", "out of range"),
        ({"qosControls": {"dscp": 64}}, "spec.qosControls.dscp", "between 0 and 63"),
        ({"qosControls": {"dscp": "AF99"}}, "spec.qosControls.dscp", "not a valid DSCP"),
        ({"qosControls": {"bandwidth": 1}}, "spec.qosControls.bandwidth", "unknown field"),
        ({"ipNetwork": ["10.0.0.1/32"]}, "spec.ipNetwork", "unknown field"),
    ],
)
def test_wep_invalid(spec: dict[str, Any], path: str, fragment: str) -> None:
    assert_error(wep(spec), path, fragment)


@pytest.mark.parametrize("mac", ["ee:ee:ee:ee:ee:ee", "EE-EE-EE-EE-EE-EE", "eeee.eeee.eeee",
                                 "02:00:5e:10:00:00:00:01"])
def test_wep_macs_accepted(mac: str) -> None:
    validate(wep({"mac": mac}))


def test_wep_qos_zero_means_unset_and_dscp_forms() -> None:
    validate(wep({"qosControls": {"ingressBandwidth": 0, "dscp": 46}}))
    validate(wep({"qosControls": {"dscp": "ef"}}))


def test_wep_columns_as_calicoctl() -> None:
    r = validate(wep({"ipNetworks": ["10.65.0.5/32"], "profiles": ["a", "b"],
                      "ipNATs": [{"internalIP": "10.65.0.5", "externalIP": "1.2.3.4"}]}))
    info = lookup("wep")
    assert info is not None and info.namespaced
    assert [(h, f(r)) for h, f in info.columns] == [
        ("WORKLOAD", "web-0"), ("NODE", "node-1"), ("NETWORKS", "10.65.0.5/32"),
        ("INTERFACE", "cali0123456789a")]
    assert [h for h, _ in info.wide_columns] == [
        "NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"]
    assert dict(info.wide_columns)["PROFILES"](r) == "a,b"
    assert dict(info.wide_columns)["NATS"](r) == "10.65.0.5->1.2.3.4"


def test_wep_yaml_and_json_agree() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: dev}
spec:
  node: node1
  orchestrator: cni
  containerID: a1b2c3
  endpoint: eth0
  interfaceName: cali12345
  ipNetworks: [10.0.0.1/32]
"""
    (r,) = load(text)
    (again,) = load(json.dumps(r.to_dict()))
    assert r.name == "node1-cni-a1b2c3-eth0"
    assert r.to_dict() == again.to_dict()


# --- HostEndpoint ----------------------------------------------------------------------------


def hep(spec: dict[str, Any], name: str = "node1-eth0") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "HostEndpoint", "metadata": {"name": name},
            "spec": {"node": "node1", **spec}}


def test_hep_valid() -> None:
    r = validate(hep({"interfaceName": "eth0", "expectedIPs": ["192.168.0.1", "fd00::1"],
                      "profiles": ["backend"],
                      "ports": [{"name": "ssh", "protocol": "TCP", "port": 22},
                                {"name": "bgp", "protocol": "6", "port": 179}]}))
    assert isinstance(r, HostEndpoint)
    out = r.to_dict()
    assert out["spec"]["ports"][1]["protocol"] == 6
    assert validate(copy.deepcopy(out)).to_dict() == out
    validate(hep({"interfaceName": "*"}))
    validate(hep({"expectedIPs": ["10.0.0.1"]}))


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ({}, "spec.interfaceName", "at least one of interfaceName or expectedIPs"),
        ({"interfaceName": "eth0", "node": ""}, "spec.node", "node must be specified"),
        ({"interfaceName": "eth0", "node": "Node1"}, "spec.node", "invalid name"),
        ({"interfaceName": "eth 0"}, "spec.interfaceName", "invalid interface name"),
        ({"expectedIPs": ["10.0.0.0/24"]}, "spec.expectedIPs[0]", "invalid IP address"),
        ({"expectedIPs": ["10.0.0.1", "10.0.0.1"]}, "spec.expectedIPs[1]", "duplicate value"),
        ({"interfaceName": "eth0", "profiles": ["a", "a"]}, "spec.profiles[1]", "duplicate"),
        ({"interfaceName": "eth0", "ports": [{"protocol": "TCP", "port": 22}]},
         "spec.ports[0].name", "required field is missing"),
        ({"interfaceName": "eth0", "ports": [{"name": "ssh_", "protocol": "TCP", "port": 22}]},
         "spec.ports[0].name", "invalid port name"),
        ({"interfaceName": "eth0", "ports": [{"name": "ssh", "protocol": "tcp", "port": 22}]},
         "spec.ports[0].protocol", "case-sensitive"),
        ({"interfaceName": "eth0", "ports": [{"name": "ssh", "protocol": "TCP", "port": 0}]},
         "spec.ports[0].port", "out of range"),
        ({"interfaceName": "eth0", "ports": [{"name": "x", "protocol": "UDPLite", "port": 1}]},
         "spec.ports[0].protocol", "does not support ports"),
        ({"interface": "eth0"}, "spec.interface", "unknown field"),
    ],
)
def test_hep_invalid(spec: dict[str, Any], path: str, fragment: str) -> None:
    assert_error(hep(spec), path, fragment)


def test_hep_node_required() -> None:
    doc = hep({"interfaceName": "eth0"})
    del doc["spec"]["node"]
    assert_error(doc, "spec.node", "node must be specified")


def test_hep_is_cluster_scoped_with_calicoctl_columns() -> None:
    r = validate(hep({"interfaceName": "eth0", "expectedIPs": ["10.0.0.1", "10.0.0.2"],
                      "profiles": ["p"]}))
    info = lookup("heps")
    assert info is not None and not info.namespaced and info.kind == "HostEndpoint"
    assert [(h, f(r)) for h, f in info.columns] == [("NAME", "node1-eth0"), ("NODE", "node1")]
    assert [(h, f(r)) for h, f in info.wide_columns] == [
        ("NAME", "node1-eth0"), ("NODE", "node1"), ("INTERFACE", "eth0"),
        ("IPS", "10.0.0.1,10.0.0.2"), ("PROFILES", "p")]
