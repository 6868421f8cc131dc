"""The etcd key layout must match libcalico-go byte for byte."""

from __future__ import annotations

import pytest

from tortie.datastore import keys


@pytest.mark.parametrize(
    ("kind", "plural", "namespaced"),
    [
        ("GlobalNetworkPolicy", "globalnetworkpolicies", False),
        ("NetworkPolicy", "networkpolicies", True),
        ("StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies", False),
        ("StagedNetworkPolicy", "stagednetworkpolicies", True),
        ("StagedKubernetesNetworkPolicy", "stagedkubernetesnetworkpolicies", True),
        ("Tier", "tiers", False),
        ("Profile", "profiles", False),
        ("HostEndpoint", "hostendpoints", False),
        ("WorkloadEndpoint", "workloadendpoints", True),
        ("IPPool", "ippools", False),
        ("IPReservation", "ipreservations", False),
        ("IPAMConfiguration", "ipamconfigurations", False),
        ("BGPConfiguration", "bgpconfigurations", False),
        ("BGPPeer", "bgppeers", False),
        ("BGPFilter", "bgpfilters", False),
        ("FelixConfiguration", "felixconfigurations", False),
        ("ClusterInformation", "clusterinformations", False),
        ("Node", "nodes", False),
        ("NetworkSet", "networksets", True),
        ("GlobalNetworkSet", "globalnetworksets", False),
        ("KubeControllersConfiguration", "kubecontrollersconfigurations", False),
    ],
)
def test_kinds_table(kind: str, plural: str, namespaced: bool) -> None:
    info = keys.KINDS[kind]
    assert (info.plural, info.namespaced) == (plural, namespaced)
    ns = "ns1" if namespaced else None
    key = keys.resource_key(kind, "res-1", ns)
    base = "/calico/resources/v3/projectcalico.org/"
    assert key == (f"{base}{plural}/ns1/res-1" if namespaced else f"{base}{plural}/res-1")
    assert keys.parse_resource_key(key) == (kind, ns, "res-1")
    assert key.startswith(keys.resource_prefix(kind))
    if namespaced:
        assert key.startswith(keys.resource_prefix(kind, "ns1"))


def test_examples_from_the_architecture() -> None:
    assert (
        keys.resource_key("GlobalNetworkPolicy", "allow-all")
        == "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/allow-all"
    )
    assert (
        keys.resource_key("NetworkPolicy", "web", "prod")
        == "/calico/resources/v3/projectcalico.org/networkpolicies/prod/web"
    )
    assert keys.block_key("10.0.0.0/26") == "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26"
    assert keys.handle_key("k8s-pod-network.abc") == "/calico/ipam/v2/handle/k8s-pod-network.abc"
    assert (
        keys.host_affinity_key("node-1", "10.0.0.64/26")
        == "/calico/ipam/v2/host/node-1/ipv4/block/10.0.0.64-26"
    )
    assert keys.ipam_config_key() == "/calico/ipam/v2/config"


def test_kind_lookup_is_case_insensitive_and_accepts_plurals() -> None:
    assert keys.kind_info("ippool").kind == "IPPool"
    assert keys.kind_info("ippools").kind == "IPPool"
    assert keys.kind_info("BGPFILTER").plural == "bgpfilters"
    with pytest.raises(ValueError, match="unknown resource kind"):
        keys.kind_info("Pod")


def test_resource_key_checks_namespace_and_names() -> None:
    with pytest.raises(ValueError, match="namespace is required"):
        keys.resource_key("NetworkPolicy", "p")
    with pytest.raises(ValueError, match="not namespaced"):
        keys.resource_key("IPPool", "p", "ns")
    with pytest.raises(ValueError, match="must not contain"):
        keys.resource_key("IPPool", "a/b")
    with pytest.raises(ValueError, match="must not be empty"):
        keys.resource_key("IPPool", "")
    with pytest.raises(ValueError, match="not namespaced"):
        keys.resource_prefix("IPPool", "ns")


def test_resource_prefix_does_not_match_longer_plurals() -> None:
    # "networkpolicies/" must not be a prefix of "networkpolicies2/..." or of a namespace "ab"
    # when listing namespace "a".
    assert keys.resource_prefix("NetworkPolicy") == (
        "/calico/resources/v3/projectcalico.org/networkpolicies/"
    )
    assert keys.resource_prefix("NetworkPolicy", "a").endswith("/networkpolicies/a/")


@pytest.mark.parametrize(
    "bad",
    [
        "/calico/resources/v3/projectcalico.org/ippools",
        "/calico/resources/v3/projectcalico.org/ippools/a/b",
        "/calico/resources/v3/projectcalico.org/networkpolicies/ns",
        "/calico/resources/v3/projectcalico.org/pods/a",
        "/calico/resources/v3/example.org/ippools/a",
        "/calico/ipam/v2/config",
    ],
)
def test_parse_resource_key_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        keys.parse_resource_key(bad)


def test_parse_resource_key_unescapes_like_libcalico() -> None:
    key = "/calico/resources/v3/projectcalico.org/workloadendpoints/ns/a%2fb%25c"
    assert keys.parse_resource_key(key) == ("WorkloadEndpoint", "ns", "a/b%c")


def test_ipam_keys_round_trip() -> None:
    assert keys.parse_block_key(keys.block_key("10.0.0.0/26")) == keys.BlockKey("10.0.0.0/26", 4)
    v6 = keys.block_key("fd00:1::/122")
    assert v6 == "/calico/ipam/v2/assignment/ipv6/block/fd00:1::-122"
    assert keys.parse_block_key(v6) == keys.BlockKey("fd00:1::/122", 6)
    assert keys.parse_handle_key(keys.handle_key("h1")) == keys.HandleKey("h1")
    aff = keys.host_affinity_key("node-1", "fd00:1::40/122")
    assert aff == "/calico/ipam/v2/host/node-1/ipv6/block/fd00:1::40-122"
    assert keys.parse_host_affinity_key(aff) == keys.HostAffinityKey("node-1", "fd00:1::40/122", 6)
    assert keys.block_prefix(4) == "/calico/ipam/v2/assignment/ipv4/block/"
    assert keys.host_affinity_prefix("node-1", 4) == "/calico/ipam/v2/host/node-1/ipv4/block/"
    assert keys.block_key("10.0.0.0/26").startswith(keys.block_prefix())
    assert aff.startswith(keys.host_affinity_prefix("node-1"))


@pytest.mark.parametrize(
    ("fn", "bad"),
    [
        (keys.parse_block_key, "/calico/ipam/v2/assignment/ipv4/block/10.0.0.1-26"),  # host bits
        (keys.parse_block_key, "/calico/ipam/v2/assignment/ipv6/block/10.0.0.0-26"),
        (keys.parse_block_key, "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0"),
        (keys.parse_handle_key, "/calico/ipam/v2/handle/"),
        (keys.parse_handle_key, "/calico/ipam/v2/handle/a/b"),
        (keys.parse_host_affinity_key, "/calico/ipam/v2/host/n/ipv4/block"),
        (keys.parse_host_affinity_key, "/calico/ipam/v2/host//ipv4/block/10.0.0.0-26"),
    ],
)
def test_ipam_parsers_reject(fn: object, bad: str) -> None:
    with pytest.raises(ValueError):
        fn(bad)  # type: ignore[operator]


def test_block_key_rejects_host_bits() -> None:
    with pytest.raises(ValueError, match="invalid block CIDR"):
        keys.block_key("10.0.0.1/26")


def test_felix_status_keys() -> None:
    assert keys.felix_status_key("node-1") == "/calico/felix/v2/no-region/host/node-1/status"
    assert (
        keys.felix_last_status_key("node-1")
        == "/calico/felix/v2/no-region/host/node-1/last_reported_status"
    )
    wep = keys.workload_endpoint_status_key("node-1", "k8s", "ns/pod", "eth0")
    assert wep == "/calico/felix/v2/no-region/host/node-1/workload/k8s/ns%2fpod/endpoint/eth0"
    assert keys.parse_status_key(wep) == keys.StatusKey(
        "workload", "node-1", "no-region", "k8s", "ns/pod", "eth0"
    )
    assert keys.parse_status_key(keys.felix_status_key("n", region="r1")) == keys.StatusKey(
        "status", "n", "r1"
    )
    hep = keys.host_endpoint_status_key("node-1", "eth0")
    assert hep == "/calico/felix/v1/host/node-1/endpoint/eth0"
    assert keys.parse_status_key(hep) == keys.StatusKey("hostendpoint", "node-1", endpoint="eth0")
    with pytest.raises(ValueError):
        keys.parse_status_key("/calico/felix/v2/no-region/host/node-1/other")
