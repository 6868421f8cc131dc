"""Policy kinds: GlobalNetworkPolicy, NetworkPolicy, staged variants, Profile, Tier rules."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tortie.api import FieldError, ValidationError, load, lookup, validate
from tortie.api.kinds.policy import (
    GlobalNetworkPolicy,
    NetworkPolicy,
    StagedKubernetesNetworkPolicy,
    default_types,
)

API = "projectcalico.org/v3"


def gnp(spec: dict[str, Any] | None = None, name: str = "p1", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name, **meta}, "spec": spec or {}}


def np_(spec: dict[str, Any] | None = None, name: str = "p1",
        namespace: str | None = "default", kind: str = "NetworkPolicy") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec or {}}


def rule(**fields: Any) -> dict[str, Any]:
    return {"action": "Allow", **fields}


def ingress(*rules: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"ingress": list(rules), **spec}


def errors(doc: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        validate(doc)
    return info.value.errors


def assert_error(doc: dict[str, Any], path: str, fragment: str) -> None:
    found = errors(doc)
    assert any(e.path == path and fragment in e.reason for e in found), found


def ok(doc: dict[str, Any]) -> Any:
    return validate(doc)


# --- defaults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({}, ["Ingress"]),
        (ingress(rule()), ["Ingress"]),
        ({"egress": [rule()]}, ["Egress"]),
        ({"ingress": [rule()], "egress": [rule()]}, ["Ingress", "Egress"]),
        ({"egress": [rule()], "types": ["Ingress"]}, ["Ingress"]),
        ({"types": []}, ["Ingress"]),
    ],
)
def test_types_default_as_calico(spec: dict[str, Any], types: list[str]) -> None:
    assert ok(gnp(spec)).spec.types == types
    assert ok(np_(spec)).spec.types == types


def test_default_types_function() -> None:
    assert default_types(None, None) == ["Ingress"]
    assert default_types([1], []) == ["Ingress"]
    assert default_types([], [1]) == ["Egress"]
    assert default_types([1], [1]) == ["Ingress", "Egress"]


def test_tier_defaults_to_default_and_labels_policy() -> None:
    r = ok(gnp({}, labels={"team": "db"}))
    assert r.spec.tier == "default"
    assert r.metadata.labels == {"team": "db", "projectcalico.org/tier": "default"}
    r = ok(np_({"tier": "security"}))
    assert r.spec.tier == "security"
    assert r.metadata.labels["projectcalico.org/tier"] == "security"


def test_empty_tier_means_default() -> None:
    assert ok(gnp({"tier": ""})).spec.tier == "default"


def test_zero_values_are_omitted_like_go() -> None:
    r = ok(gnp({"doNotTrack": False, "selector": "", "ingress": [rule(source={})],
                "egress": [], "performanceHints": []}))
    spec = r.to_dict()["spec"]
    assert spec == {"tier": "default", "types": ["Ingress"], "ingress": [{"action": "Allow"}]}


def test_protocol_and_ports_written_back_as_calico() -> None:
    r = ok(gnp(ingress(rule(protocol="6", destination={"ports": ["80", "90:90", "1:2", "web"]}),
                       rule(notProtocol="17"))))
    out = r.to_dict()["spec"]["ingress"]
    assert out[0]["protocol"] == 6
    assert out[0]["destination"]["ports"] == [80, 90, "1:2", "web"]
    assert out[1]["notProtocol"] == 17


def test_order_written_as_integer_when_integral() -> None:
    assert ok(gnp({"order": 100})).to_dict()["spec"]["order"] == 100
    assert ok(gnp({"order": 10.5})).to_dict()["spec"]["order"] == 10.5


def test_round_trip_is_stable() -> None:
    doc = gnp({
        "order": 10, "selector": "role == 'db'", "namespaceSelector": "env == 'prod'",
        "serviceAccountSelector": "sa == 'x'", "applyOnForward": True, "preDNAT": True,
        "performanceHints": ["AssumeNeededOnEveryNode"],
        "ingress": [rule(protocol="TCP", ipVersion=4, source={
            "nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"], "selector": "a == 'b'",
            "notSelector": "c == 'd'", "namespaceSelector": "global()",
            "ports": [1, "2:3", "named"], "notPorts": [9],
            "serviceAccounts": {"names": ["x"], "selector": "k == 'v'"}},
            http={"methods": ["GET"], "paths": [{"exact": "/a"}, {"prefix": "/b"}]},
            metadata={"annotations": {"owner": "me"}}),
            {"action": "Deny", "protocol": "ICMPv6", "icmp": {"type": 1, "code": 0},
             "notICMP": {"type": 2}, "ipVersion": 6}],
    })
    first = ok(doc).to_dict()
    second = validate(copy.deepcopy(first)).to_dict()
    assert first == second
    assert first["spec"]["preDNAT"] is True
    assert first["spec"]["ingress"][1]["notICMP"] == {"type": 2}


def test_yaml_and_json_input_agree() -> None:
    yaml_text = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: dev}
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80, "8000:8080"]}
"""
    (from_yaml,) = load(yaml_text)
    (from_json,) = load(json.dumps(from_yaml.to_dict()))
    assert isinstance(from_yaml, NetworkPolicy)
    assert from_yaml.to_dict() == from_json.to_dict()


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["allow-dns", "a", "web.allow-dns", "a1.b2"])
def test_policy_names_accepted(name: str) -> None:
    ok(gnp(name=name))
    ok(np_(name=name))


def test_policy_name_needs_no_tier_prefix() -> None:
    r = ok(np_({"tier": "security"}, name="allow-dns"))
    assert r.name == "allow-dns"
    assert ok(gnp({"tier": "security"}, name="other.allow")).name == "other.allow"


@pytest.mark.parametrize("name", ["Upper", "a.b.c", "-a", "a_b", "a..b"])
def test_policy_names_rejected(name: str) -> None:
    assert_error(gnp(name=name), "metadata.name", "invalid policy name")
    assert_error(np_(name=name), "metadata.name", "invalid policy name")


def test_kubernetes_policy_names_only_for_namespaced_policy() -> None:
    ok(np_(name="knp.default.allow.web"))
    ok(np_(name="ossg.default.sg-1"))
    assert_error(gnp(name="knp.default.allow.web"), "metadata.name", "at most one '.'")


def test_policy_name_length() -> None:
    assert_error(np_(name="a" * 254), "metadata.name", "too long by 1")


def test_policy_name_required() -> None:
    assert_error(gnp(name=""), "metadata.name", "name is required")


def test_namespaced_policy_needs_namespace() -> None:
    assert_error(np_(namespace=None), "metadata.namespace", "namespace is required")
    assert_error(np_(namespace="Bad_NS"), "metadata.namespace", "DNS-1123 label")


# --- rules: action, protocol, ports -------------------------------------------------------------


def test_action_required_and_checked() -> None:
    assert_error(gnp(ingress({})), "spec.ingress[0].action", "required field is missing")
    assert_error(gnp(ingress(rule(action="allow"))), "spec.ingress[0].action",
                 "must be one of Allow, Deny, Log, Pass")


@pytest.mark.parametrize("proto", ["TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite", 1, 255,
                                   "132"])
def test_protocols_accepted(proto: int | str) -> None:
    ok(gnp(ingress(rule(protocol=proto), rule(notProtocol=proto))))


@pytest.mark.parametrize(
    ("proto", "fragment"),
    [("tcp", "case-sensitive, use 'TCP'"), ("icmpv6", "use 'ICMPv6'"), ("GRE", "must be one of"),
     (0, "protocol number 0 is invalid"), (256, "must be 1-255"), ("300", "must be 1-255")],
)
def test_protocols_rejected(proto: int | str, fragment: str) -> None:
    assert_error(gnp(ingress(rule(protocol=proto))), "spec.ingress[0].protocol", fragment)
    assert_error(gnp(ingress(rule(notProtocol=proto))), "spec.ingress[0].notProtocol", fragment)


@pytest.mark.parametrize("proto", ["TCP", "UDP", "SCTP", 6, 17, 132, "6"])
def test_ports_allowed_with_port_protocols(proto: int | str) -> None:
    ok(gnp(ingress(rule(protocol=proto, source={"ports": [1]}, destination={"notPorts": [2]}))))


@pytest.mark.parametrize("proto", [None, "ICMP", "UDPLite", 47])
def test_ports_need_tcp_udp_or_sctp(proto: int | str | None) -> None:
    r = rule(destination={"ports": [80]}, source={"notPorts": [81]})
    if proto is not None:
        r["protocol"] = proto
    found = errors(gnp(ingress(r)))
    paths = {e.path for e in found if "must set protocol to TCP, UDP or SCTP" in e.reason}
    assert paths == {"spec.ingress[0].destination.ports", "spec.ingress[0].source.notPorts"}


def test_not_protocol_does_not_allow_ports() -> None:
    assert_error(gnp(ingress(rule(notProtocol="TCP", destination={"ports": [80]}))),
                 "spec.ingress[0].destination.ports", "protocol is not set")


def test_reversed_port_range() -> None:
    doc = gnp(ingress(rule(protocol="TCP", destination={"ports": [80, "90:80"]})))
    found = errors(doc)
    assert [str(e) for e in found] == [
        "spec.ingress[0].destination.ports[1]: port range 90:80 is reversed: the minimum must "
        "come first"
    ]


@pytest.mark.parametrize(
    ("port", "fragment"),
    [(0, "port 0 is out of range"), (65536, "port 65536 is out of range"),
     ("0:10", "port 0 in range 0:10"), ("1:70000", "port 70000 in range"),
     ("Web", "invalid port name 'Web'"), ("a--b", "must not contain '--'"),
     ("123456789abcdefg", "1-15 characters"), ("a b", "expected a number, a range"),
     ("80-90", "must contain at least one letter"),
     (True, "expected an integer | a string, got a boolean")],
)
def test_bad_ports(port: Any, fragment: str) -> None:
    assert_error(gnp(ingress(rule(protocol="UDP", source={"notPorts": [port]}))),
                 "spec.ingress[0].source.notPorts[0]", fragment)


def test_good_ports() -> None:
    ok(gnp(ingress(rule(protocol="TCP", destination={"ports": [1, 65535, "1:65535", "http",
                                                               "my-port-2"]}))))


def test_at_most_50_ports() -> None:
    ok(gnp(ingress(rule(protocol="TCP", destination={"ports": list(range(1, 51))}))))
    assert_error(gnp(ingress(rule(protocol="TCP", destination={"ports": list(range(1, 52))}))),
                 "spec.ingress[0].destination.ports", "too many items: 51 (at most 50)")


# --- ICMP and ipVersion ----------------------------------------------------------------------


def test_icmp_ranges_and_code_needs_type() -> None:
    ok(gnp(ingress(rule(protocol="ICMP", icmp={"type": 254, "code": 255}))))
    assert_error(gnp(ingress(rule(protocol="ICMP", icmp={"type": 255}))),
                 "spec.ingress[0].icmp.type", "out of range [0, 254]")
    assert_error(gnp(ingress(rule(protocol="ICMP", icmp={"type": 3, "code": 256}))),
                 "spec.ingress[0].icmp.code", "out of range [0, 255]")
    assert_error(gnp(ingress(rule(protocol="ICMP", icmp={"code": 1}))),
                 "spec.ingress[0].icmp.code", "ICMP code specified without an ICMP type")
    assert_error(gnp(ingress(rule(protocol="ICMP", notICMP={"code": 1}))),
                 "spec.ingress[0].notICMP.code", "without an ICMP type")


@pytest.mark.parametrize("proto", ["ICMP", "ICMPv6", 1, 58])
def test_icmp_fields_with_icmp_protocols(proto: int | str) -> None:
    ok(gnp(ingress(rule(protocol=proto, icmp={"type": 8}))))


@pytest.mark.parametrize("proto", [None, "TCP", 17])
def test_icmp_fields_need_icmp_protocol(proto: int | str | None) -> None:
    r = rule(icmp={"type": 8})
    if proto is not None:
        r["protocol"] = proto
    assert_error(gnp(ingress(r)), "spec.ingress[0].icmp", "must set protocol to ICMP or ICMPv6")


def test_ip_version_values() -> None:
    ok(gnp(ingress(rule(ipVersion=4), rule(ipVersion=6))))
    assert_error(gnp(ingress(rule(ipVersion=5))), "spec.ingress[0].ipVersion", "must be 4 or 6")


def test_ip_version_consistent_with_icmp() -> None:
    ok(gnp(ingress(rule(protocol="ICMP", ipVersion=4), rule(protocol="ICMPv6", ipVersion=6))))
    assert_error(gnp(ingress(rule(protocol="ICMP", ipVersion=6))), "spec.ingress[0].ipVersion",
                 "protocol ICMP requires ipVersion 4")
    assert_error(gnp(ingress(rule(notProtocol="ICMPv6", ipVersion=4))),
                 "spec.ingress[0].ipVersion", "protocol ICMPv6 requires ipVersion 6")
    assert_error(gnp(ingress(rule(protocol=58, ipVersion=4))), "spec.ingress[0].ipVersion",
                 "ICMPv6 requires ipVersion 6")


# --- nets ------------------------------------------------------------------------------------


def test_nets_must_be_masked_cidrs() -> None:
    ok(gnp(ingress(rule(source={"nets": ["10.0.0.0/8", "10.1.2.3/32"]}))))
    assert_error(gnp(ingress(rule(source={"nets": ["10.0.0.1/8"]}))),
                 "spec.ingress[0].source.nets[0]", "did you mean '10.0.0.0/8'")
    assert_error(gnp(ingress(rule(destination={"notNets": ["10.0.0.1"]}))),
                 "spec.ingress[0].destination.notNets[0]", "expected a network with a prefix")
    assert_error(gnp(ingress(rule(source={"nets": ["10.0.0.0/33"]}))),
                 "spec.ingress[0].source.nets[0]", "invalid CIDR")


def test_nets_unique_and_limited() -> None:
    assert_error(gnp(ingress(rule(source={"nets": ["10.0.0.0/8", "10.0.0.0/8"]}))),
                 "spec.ingress[0].source.nets[1]", "duplicate value")
    nets = [f"10.{i // 256}.{i % 256}.0/24" for i in range(257)]
    assert_error(gnp(ingress(rule(source={"nets": nets}))), "spec.ingress[0].source.nets",
                 "at most 256")


def test_nets_ip_version_consistency() -> None:
    ok(gnp(ingress(rule(ipVersion=6, source={"nets": ["fd00::/8"]},
                        destination={"notNets": ["fd00:1::/64"]}))))
    assert_error(gnp(ingress(rule(ipVersion=6, source={"nets": ["10.0.0.0/8"]}))),
                 "spec.ingress[0].source.nets", "rule ipVersion is 6 but nets holds IPv4")
    assert_error(gnp(ingress(rule(source={"nets": ["10.0.0.0/8"]},
                                  destination={"nets": ["fd00::/8"]}))),
                 "spec.ingress[0].destination.nets", "both IPv4 and IPv6")
    assert_error(gnp(ingress(rule(source={"nets": ["10.0.0.0/8", "fd00::/8"]}))),
                 "spec.ingress[0].source.nets", "both IPv4 and IPv6")


# --- selectors -------------------------------------------------------------------------------


def test_invalid_selectors_name_their_field() -> None:
    assert_error(gnp({"selector": "a =="}), "spec.selector", "invalid selector")
    assert_error(gnp(ingress(rule(source={"notSelector": "has("}))),
                 "spec.ingress[0].source.notSelector", "invalid selector")
    assert_error(gnp(ingress(rule(destination={"serviceAccounts": {"selector": "x ="}}))),
                 "spec.ingress[0].destination.serviceAccounts.selector", "invalid selector")


def test_global_only_in_rule_namespace_selector() -> None:
    ok(gnp(ingress(rule(source={"namespaceSelector": "global()", "selector": "a == 'b'"}))))
    ok(np_(ingress(rule(source={"namespaceSelector": " global() "}))))
    assert_error(gnp(ingress(rule(source={"selector": "global()"}))),
                 "spec.ingress[0].source.selector", "can only be used in an EntityRule")
    assert_error(gnp(ingress(rule(source={"namespaceSelector": "global() && a == 'b'"}))),
                 "spec.ingress[0].source.namespaceSelector", "cannot be combined")
    assert_error(gnp({"selector": "global()"}), "spec.selector", "namespaceSelector")
    assert_error(gnp({"namespaceSelector": "global()"}), "spec.namespaceSelector",
                 "can only be used in an EntityRule")
    assert_error(np_({"serviceAccountSelector": "global()"}), "spec.serviceAccountSelector",
                 "can only be used in an EntityRule")


def test_selector_length_limits() -> None:
    long = "a == '" + "x" * 1020 + "'"
    assert_error(gnp({"selector": long}), "spec.selector", "at most 1024")
    assert_error(np_(ingress(rule(source={"selector": long}))),
                 "spec.ingress[0].source.selector", "at most 1024")
    ok(np_({"selector": long}))  # Calico sets no limit on a NetworkPolicy's own selector


# --- services, service accounts, HTTP, metadata ------------------------------------------------


def test_service_matches() -> None:
    ok(np_({"egress": [rule(destination={"services": {"name": "db"}})],
            "ingress": [rule(source={"services": {"name": "web", "namespace": "dev"}})]}))
    base = {"egress": [rule(protocol="TCP", destination={"services": {"name": "db"},
                                                         "ports": [80]})]}
    assert_error(np_(base), "spec.egress[0].destination.ports", "cannot specify ports with a")
    for extra, fragment in [
        ({"selector": "a == 'b'"}, "selector/notSelector and services"),
        ({"namespaceSelector": "a == 'b'"}, "namespaceSelector and services"),
        ({"nets": ["10.0.0.0/8"]}, "nets/notNets and services"),
        ({"serviceAccounts": {"names": ["x"]}}, "serviceAccounts and services"),
    ]:
        doc = np_({"egress": [rule(destination={"services": {"name": "db"}, **extra})]})
        assert_error(doc, "spec.egress[0].destination.services", fragment)
    assert_error(np_({"egress": [rule(destination={"services": {"namespace": "x"}})]}),
                 "spec.egress[0].destination.services.name", "must name a service")
    assert_error(np_({"egress": [rule(destination={"services": {"name": "Bad_Name"}})]}),
                 "spec.egress[0].destination.services.name", "invalid name")


def test_services_only_on_the_remote_side() -> None:
    assert_error(np_({"egress": [rule(source={"services": {"name": "a"}})]}),
                 "spec.egress[0].source.services", "not allowed in an egress rule's source")
    assert_error(np_(ingress(rule(destination={"services": {"name": "a"}}))),
                 "spec.ingress[0].destination.services", "ingress rule's destination")


def test_global_policy_services_need_a_namespace() -> None:
    assert_error(gnp({"egress": [rule(destination={"services": {"name": "db"}})]}),
                 "spec.egress[0].destination.services.namespace", "must specify a namespace")
    assert_error(gnp(ingress(rule(source={"services": {"name": "db"}}))),
                 "spec.ingress[0].source.services.namespace", "must specify a namespace")
    ok(gnp(ingress(rule(source={"services": {"name": "db", "namespace": "prod"}}))))


def test_service_account_names_unique() -> None:
    assert_error(gnp(ingress(rule(source={"serviceAccounts": {"names": ["a", "a"]}}))),
                 "spec.ingress[0].source.serviceAccounts.names[1]", "duplicate value")


def test_http_match() -> None:
    ok(gnp(ingress(rule(protocol="TCP", http={"methods": ["GET", "PUT"],
                                              "paths": [{"exact": "/x"}, {"prefix": "/y/"}]}))))
    ok(gnp(ingress(rule(protocol=6, http={"methods": ["GET"]}))))
    ok(gnp(ingress(rule(http={"methods": ["GET"]}))))
    assert_error(gnp(ingress(rule(protocol="UDP", http={"methods": ["GET"]}))),
                 "spec.ingress[0].protocol", "HTTP match must have protocol TCP")
    assert_error(gnp(ingress({"action": "Deny", "http": {"methods": ["GET"]}})),
                 "spec.ingress[0].http", "only valid on Allow rules")
    assert_error(gnp({"egress": [rule(http={"methods": ["GET"]})]}), "spec.egress[0].http",
                 "not allowed in egress rules")
    assert_error(gnp(ingress(rule(http={"methods": ["GET", "GET"]}))),
                 "spec.ingress[0].http.methods[1]", "duplicate value 'GET'")
    assert_error(gnp(ingress(rule(http={"paths": [{"exact": "/a", "prefix": "/b"}]}))),
                 "spec.ingress[0].http.paths[0]", "not both")
    assert_error(gnp(ingress(rule(http={"paths": [{}]}))), "spec.ingress[0].http.paths[0]",
                 "one of 'exact' or 'prefix'")
    assert_error(gnp(ingress(rule(http={"paths": [{"prefix": "/a?b"}]}))),
                 "spec.ingress[0].http.paths[0].prefix", "must start with '/'")
    assert_error(gnp(ingress(rule(http={"methods": [str(i) for i in range(21)]}))),
                 "spec.ingress[0].http.methods", "at most 20")


def test_rule_metadata_annotations() -> None:
    ok(gnp(ingress(rule(metadata={"annotations": {"example.com/owner": "team a"}}))))
    assert_error(gnp(ingress(rule(metadata={"annotations": {"bad key!": "x"}}))),
                 "spec.ingress[0].metadata.annotations[bad key!]", "invalid annotation key")
    big = {"k": "x" * (256 * 1024)}
    assert_error(gnp(ingress(rule(metadata={"annotations": big}))),
                 "spec.ingress[0].metadata.annotations", "too large by 1 bytes")


# --- policy-level rules ---------------------------------------------------------------------


def test_do_not_track_pre_dnat_apply_on_forward() -> None:
    ok(gnp({"preDNAT": True, "applyOnForward": True, "ingress": [rule()]}))
    ok(gnp({"doNotTrack": True, "applyOnForward": True, "egress": [rule()]}))
    assert_error(gnp({"doNotTrack": True, "preDNAT": True, "applyOnForward": True}),
                 "spec.preDNAT", "cannot both be true")
    assert_error(gnp({"preDNAT": True, "applyOnForward": True, "egress": [rule()]}),
                 "spec.egress", "preDNAT policy cannot have egress rules")
    assert_error(gnp({"preDNAT": True, "applyOnForward": True, "types": ["Ingress", "Egress"]}),
                 "spec.types", "cannot have the 'Egress' type")
    assert_error(gnp({"doNotTrack": True}), "spec.applyOnForward",
                 "must be true when preDNAT or doNotTrack")
    assert_error(gnp({"preDNAT": True, "applyOnForward": False}), "spec.applyOnForward",
                 "must be true")


def test_namespaced_policy_has_no_host_fields() -> None:
    for field in ("doNotTrack", "preDNAT", "applyOnForward", "namespaceSelector"):
        assert_error(np_({field: True}), f"spec.{field}", "unknown field")


def test_types_checked() -> None:
    assert_error(gnp({"types": ["ingress"]}), "spec.types[0]", "must be Ingress or Egress")
    assert_error(gnp({"types": ["Ingress", "Ingress"]}), "spec.types",
                 "'Ingress' type specified more than once")


def test_performance_hints() -> None:
    ok(gnp({"performanceHints": ["AssumeNeededOnEveryNode"]}))
    assert_error(gnp({"performanceHints": ["Fast"]}), "spec.performanceHints[0]",
                 "not one of AssumeNeededOnEveryNode")
    assert_error(np_({"performanceHints": ["AssumeNeededOnEveryNode"] * 2}),
                 "spec.performanceHints[1]", "duplicate value")


def test_tier_field_is_a_name() -> None:
    assert_error(gnp({"tier": "Bad_Tier"}), "spec.tier", "invalid name")


def test_order_must_be_finite() -> None:
    assert_error(gnp({"order": float("nan")}), "spec.order", "finite")


def test_rule_count_limit_on_global_policy_and_profile() -> None:
    many = [rule()] * 1025
    assert_error(gnp({"ingress": many}), "spec.ingress", "too many items: 1025 (at most 1024)")
    ok(gnp({"egress": [rule()] * 1024}))
    assert_error({"apiVersion": API, "kind": "Profile", "metadata": {"name": "p"},
                  "spec": {"egress": many}}, "spec.egress", "at most 1024")
    ok(np_({"ingress": many}))  # Calico sets no limit on a NetworkPolicy's rules


def test_unknown_fields_rejected_with_path() -> None:
    assert_error(gnp(ingress(rule(bogus=1))), "spec.ingress[0].bogus", "unknown field")
    assert_error(gnp(ingress(rule(notIcmp={"type": 1}))), "spec.ingress[0].notIcmp",
                 "unknown field")
    assert_error(gnp(ingress(rule(source={"port": [1]}))), "spec.ingress[0].source.port",
                 "unknown field")
    assert_error(gnp({"predNAT": True}), "spec.predNAT", "unknown field")


def test_type_errors_have_paths() -> None:
    found = errors(gnp(ingress(rule(ipVersion="four"))))
    assert found[0].path == "spec.ingress[0].ipVersion"
    assert "expected" in found[0].reason


def test_every_error_is_reported() -> None:
    doc = gnp({"selector": "bad ==", "types": ["x"],
               "ingress": [rule(action="nope", protocol="tcp")]})
    assert {e.path for e in errors(doc)} == {
        "spec.selector", "spec.types[0]", "spec.ingress[0].action", "spec.ingress[0].protocol"}


# --- staged policies ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["StagedGlobalNetworkPolicy", "StagedNetworkPolicy"])
def test_staged_action_defaults_to_set(kind: str) -> None:
    r = ok(np_(ingress(rule()), kind=kind))
    assert r.spec.staged_action == "Set"
    assert r.spec.types == ["Ingress"]
    assert r.spec.tier == "default"
    assert r.metadata.labels == {"projectcalico.org/tier": "default"}


@pytest.mark.parametrize("kind", ["StagedGlobalNetworkPolicy", "StagedNetworkPolicy"])
def test_staged_actions(kind: str) -> None:
    for action in ("Set", "Learn", "Ignore"):
        assert ok(np_({"stagedAction": action}, kind=kind)).spec.staged_action == action
    assert_error(np_({"stagedAction": "set"}, kind=kind), "spec.stagedAction",
                 "not one of Set, Delete, Learn, Ignore")


@pytest.mark.parametrize("kind", ["StagedGlobalNetworkPolicy", "StagedNetworkPolicy"])
def test_staged_delete_keeps_only_the_tier(kind: str) -> None:
    r = ok(np_({"stagedAction": "Delete", "tier": "security"}, kind=kind))
    assert r.spec.types is None
    assert r.to_dict()["spec"] == {"stagedAction": "Delete", "tier": "security"}
    assert_error(np_({"stagedAction": "Delete", "selector": "a == 'b'", "ingress": [rule()]},
                     kind=kind), "spec", "remove selector, ingress")


def test_staged_policies_validated_like_enforced_ones() -> None:
    assert_error(np_({"doNotTrack": True}, kind="StagedGlobalNetworkPolicy"),
                 "spec.applyOnForward", "must be true")
    assert_error(np_(ingress(rule(protocol="tcp")), kind="StagedNetworkPolicy"),
                 "spec.ingress[0].protocol", "case-sensitive")
    assert_error(np_(namespace=None, kind="StagedNetworkPolicy"), "metadata.namespace",
                 "required")
    ok(np_(namespace=None, kind="StagedGlobalNetworkPolicy"))


# --- StagedKubernetesNetworkPolicy ------------------------------------------------------------


def sknp(spec: dict[str, Any]) -> dict[str, Any]:
    return np_(spec, kind="StagedKubernetesNetworkPolicy", namespace="dev")


def test_sknp_valid_and_defaults() -> None:
    r = ok(sknp({
        "podSelector": {"matchLabels": {"role": "db"},
                        "matchExpressions": [{"key": "tier", "operator": "In",
                                              "values": ["a", "b"]},
                                             {"key": "canary", "operator": "DoesNotExist"}]},
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {}},
                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                     "ports": [{"protocol": "TCP", "port": 80, "endPort": 90},
                               {"port": "http"}, {"protocol": "UDP", "port": "53"}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/8"}}]}],
        "policyTypes": ["Ingress", "Egress"],
    }))
    assert isinstance(r, StagedKubernetesNetworkPolicy)
    assert r.spec.staged_action == "Set"
    out = r.to_dict()["spec"]
    assert out["ingress"][0]["ports"][2]["port"] == 53
    assert out["ingress"][0]["from"][1]["ipBlock"]["except"] == ["10.1.0.0/16"]
    info = lookup("sknp")
    assert info is not None
    assert dict(info.wide_columns)["PODSELECTOR"](r) == "role=db,tier in (a,b),!canary"


def test_sknp_pod_selector_always_written() -> None:
    assert ok(sknp({})).to_dict()["spec"] == {"podSelector": {}, "stagedAction": "Set"}


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}},
         "spec.podSelector.matchExpressions[0].operator", "not one of In, NotIn"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
         "spec.podSelector.matchExpressions[0].values", "needs at least one value"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",
                                                "values": ["x"]}]}},
         "spec.podSelector.matchExpressions[0].values", "takes no values"),
        ({"podSelector": {"matchLabels": {"a": "b c"}}}, "spec.podSelector.matchLabels[a]",
         "invalid label value"),
        ({"ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]", "must set podSelector"),
        ({"ingress": [{"from": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
         "spec.ingress[0].from[0]", "ipBlock cannot be combined"),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]},
         "spec.egress[0].to[0].ipBlock.except[0]", "strict subset"),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "nope"}}]}]},
         "spec.egress[0].to[0].ipBlock.cidr", "invalid CIDR"),
        ({"ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "spec.ingress[0].ports[0].protocol",
         "not one of TCP, UDP, SCTP"),
        ({"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
         "spec.ingress[0].ports[0].endPort", "needs a numeric port"),
        ({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
         "spec.ingress[0].ports[0].endPort", "must not be less than port 90"),
        ({"ingress": [{"ports": [{"port": 70000}]}]}, "spec.ingress[0].ports[0].port",
         "out of range"),
        ({"ingress": [{"ports": [{"port": "Http"}]}]}, "spec.ingress[0].ports[0].port",
         "invalid port name"),
        ({"policyTypes": ["Egress", "Egress"]}, "spec.policyTypes", "more than once"),
        ({"stagedAction": "Delete", "podSelector": {"matchLabels": {"a": "b"}}}, "spec",
         "remove podSelector"),
        ({"ingress": [{"form": []}]}, "spec.ingress[0].form", "unknown field"),
    ],
)
def test_sknp_invalid(spec: dict[str, Any], path: str, fragment: str) -> None:
    assert_error(sknp(spec), path, fragment)


def test_sknp_delete_with_empty_spec() -> None:
    assert ok(sknp({"stagedAction": "Delete"})).spec.staged_action == "Delete"


# --- Profile ---------------------------------------------------------------------------------


def profile(spec: dict[str, Any], name: str = "backend") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Profile", "metadata": {"name": name}, "spec": spec}


def test_profile_valid_round_trip() -> None:
    r = ok(profile({"labelsToApply": {"tier": "backend"},
                    "ingress": [rule(source={"selector": "tier == 'frontend'"})],
                    "egress": [rule()]}))
    assert r.to_dict()["spec"]["labelsToApply"] == {"tier": "backend"}
    assert validate(r.to_dict()).to_dict() == r.to_dict()
    ok(profile({}, name="kns.default"))


def test_profile_errors() -> None:
    assert_error(profile({"labelsToApply": {"bad key": "x"}}), "spec.labelsToApply[bad key]",
                 "invalid label key")
    assert_error(profile({"egress": [rule(protocol="tcp")]}), "spec.egress[0].protocol",
                 "case-sensitive")
    assert_error(profile({"types": ["Ingress"]}), "spec.types", "unknown field")
    assert_error(profile({}, name="Backend"), "metadata.name", "invalid name")


# --- Tier rules ------------------------------------------------------------------------------


def tier(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Tier", "metadata": {"name": name}, "spec": spec or {}}


def test_tier_names_and_builtin_tiers() -> None:
    assert ok(tier("default")).spec.order == 1_000_000
    admin = ok(tier("kube-admin"))
    assert (admin.spec.order, admin.spec.default_action) == (1000, "Pass")
    assert ok(tier("kube-baseline")).spec.order == 10_000_000
    assert ok(tier("security", {"order": 5})).spec.default_action == "Deny"
    assert_error(tier("a.b"), "metadata.name", "no '.'")
    assert_error(tier("a" * 64), "metadata.name", "at most 63")
    assert_error(tier("default", {"order": 5}), "spec.order", "must be 1000000")
    assert_error(tier("default", {"defaultAction": "Pass"}), "spec.defaultAction", "must be Deny")
    assert_error(tier("kube-admin", {"defaultAction": "Deny"}), "spec.defaultAction",
                 "must be Pass")


# --- registry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "kind"),
    [("gnp", "GlobalNetworkPolicy"), ("GNPS", "GlobalNetworkPolicy"),
     ("globalnetworkpolicies", "GlobalNetworkPolicy"), ("policy", "NetworkPolicy"),
     ("policies", "NetworkPolicy"), ("np", "NetworkPolicy"), ("pol", "NetworkPolicy"),
     ("sgnp", "StagedGlobalNetworkPolicy"), ("snp", "StagedNetworkPolicy"),
     ("stagedpolicy", "StagedNetworkPolicy"), ("sknp", "StagedKubernetesNetworkPolicy"),
     ("skpol", "StagedKubernetesNetworkPolicy"), ("pro", "Profile"), ("profiles", "Profile")],
)
def test_kind_names(alias: str, kind: str) -> None:
    info = lookup(alias)
    assert info is not None and info.kind == kind


def test_namespaced_flags() -> None:
    flags = {k: lookup(k).namespaced for k in (  # type: ignore[union-attr]
        "GlobalNetworkPolicy", "NetworkPolicy", "StagedGlobalNetworkPolicy",
        "StagedNetworkPolicy", "StagedKubernetesNetworkPolicy", "Profile")}
    assert flags == {"GlobalNetworkPolicy": False, "NetworkPolicy": True,
                     "StagedGlobalNetworkPolicy": False, "StagedNetworkPolicy": True,
                     "StagedKubernetesNetworkPolicy": True, "Profile": False}


def test_table_columns_as_calicoctl() -> None:
    r = ok(np_({"order": 100, "selector": "app == 'web'", "tier": "security"}))
    info = lookup("networkpolicy")
    assert info is not None
    assert [(h, f(r)) for h, f in info.columns] == [("NAME", "p1"), ("TIER", "security")]
    assert [(h, f(r)) for h, f in info.wide_columns] == [
        ("NAME", "p1"), ("TIER", "security"), ("ORDER", "100"), ("SELECTOR", "app == 'web'")]
    g = ok(gnp({"order": 2.5}))
    info = lookup("gnp")
    assert info is not None
    assert [h for h, _ in info.columns] == ["NAME"]
    assert [(h, f(g)) for h, f in info.wide_columns] == [
        ("NAME", "p1"), ("ORDER", "2.5"), ("SELECTOR", "")]
    p = ok(profile({"labelsToApply": {"b": "2", "a": "1"}}))
    info = lookup("profile")
    assert info is not None
    assert [(h, f(p)) for h, f in info.wide_columns] == [("NAME", "backend"),
                                                          ("LABELS", "a=1,b=2")]


def test_resource_classes() -> None:
    assert isinstance(ok(gnp()), GlobalNetworkPolicy)
    assert ok(np_()).ref == "NetworkPolicy(default/p1)"
