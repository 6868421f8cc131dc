"""tortie-node start-up on the memory backend: the Node, conflicts, pools, cluster defaults,
and the VXLAN tunnel address."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_node_autodetect import FakeHost
from tortie.api import validate
from tortie.datastore.client import ResourceClient, ResourceNotFound
from tortie.datastore.memory import MemoryBackend
from tortie.node.autodetect import Interface
from tortie.node.config import NodeConfig
from tortie.node.startup import (
    StartupError,
    default_ipv4_pool,
    determine_node_name,
    ensure_cluster_information,
    generate_ula_prefix,
    run_startup,
)
from tortie.node.tunnel import TunnelAddressManager, vtep_mac

HOST = FakeHost(
    [
        Interface.of("lo", "127.0.0.1/8"),
        Interface.of("eth0", "172.31.0.11/24", "fd00:31::11/64"),
    ]
)


@pytest.fixture
def client() -> ResourceClient:
    return ResourceClient(MemoryBackend())


def config(tmp_path: Path, **env: str) -> NodeConfig:
    base = {
        "NODENAME": "node1",
        "CALICO_NODENAME_FILE": str(tmp_path / "lib" / "nodename"),
        "TORTIE_RUN_DIR": str(tmp_path / "run"),
        "TORTIE_LOG_DIR": str(tmp_path / "log"),
        "CONFD_CONFIG_DIR": str(tmp_path / "bird"),
    }
    base.update(env)
    return NodeConfig.from_env(base)


def start(client: ResourceClient, tmp_path: Path, host: FakeHost = HOST, **env: str) -> Any:
    return run_startup(config(tmp_path, **env), client, host, ipv6_supported=lambda _: False)


def apply(client: ResourceClient, kind: str, name: str, spec: dict[str, Any], **meta: Any) -> Any:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name, **meta}}
    doc["spec"] = spec
    return client.apply(validate(doc))[0]


def test_new_node(client: ResourceClient, tmp_path: Path) -> None:
    result = start(client, tmp_path, AS="65001")
    assert result.created and result.node_name == "node1"
    node = client.get("Node", "node1").to_dict()
    assert node["spec"] == {"bgp": {"ipv4Address": "172.31.0.11/24", "asNumber": 65001}}
    assert (tmp_path / "lib" / "nodename").read_text() == "node1"
    assert (tmp_path / "run").is_dir() and (tmp_path / "bird").is_dir()


def test_existing_node_keeps_its_labels_and_fields(client: ResourceClient, tmp_path: Path) -> None:
    apply(
        client,
        "Node",
        "node1",
        {
            "bgp": {"ipv4Address": "172.31.0.11/24", "routeReflectorClusterID": "244.0.0.1"},
            "ipv4VXLANTunnelAddr": "10.0.0.1",
        },
        labels={"rack": "r1"},
    )
    result = start(client, tmp_path, AS="65002")
    assert not result.created
    node = client.get("Node", "node1")
    assert node.labels == {"rack": "r1"}
    spec = node.to_dict()["spec"]
    assert spec["bgp"] == {
        "ipv4Address": "172.31.0.11/24",
        "asNumber": 65002,
        "routeReflectorClusterID": "244.0.0.1",
    }
    assert spec["ipv4VXLANTunnelAddr"] == "10.0.0.1"


def test_existing_address_is_kept_unless_autodetect(client: ResourceClient, tmp_path: Path) -> None:
    apply(client, "Node", "node1", {"bgp": {"ipv4Address": "10.9.9.9/24"}})
    start(client, tmp_path)  # IP unset and the Node has one: kept (a warning, not on the host)
    assert client.get("Node", "node1").spec.bgp.ipv4_address == "10.9.9.9/24"  # type: ignore[attr-defined]
    start(client, tmp_path, IP="autodetect", IP_AUTODETECTION_METHOD="interface=eth0")
    assert client.get("Node", "node1").spec.bgp.ipv4_address == "172.31.0.11/24"  # type: ignore[attr-defined]


def test_explicit_addresses(client: ResourceClient, tmp_path: Path) -> None:
    start(client, tmp_path, IP="172.31.0.11", IP6="autodetect")
    node = client.get("Node", "node1").to_dict()["spec"]
    assert node["bgp"] == {"ipv4Address": "172.31.0.11/24", "ipv6Address": "fd00:31::11/64"}
    # An explicit address also records the host's interfaces, as calico/node does.
    assert node["interfaces"] == [{"name": "eth0", "addresses": ["172.31.0.11", "fd00:31::11"]}]


def test_ipv6_only(client: ResourceClient, tmp_path: Path) -> None:
    start(client, tmp_path, IP="none", IP6="fd00:31::11")
    assert client.get("Node", "node1").to_dict()["spec"]["bgp"] == {"ipv6Address": "fd00:31::11/64"}


def test_no_address_at_all_is_fatal(client: ResourceClient, tmp_path: Path) -> None:
    bare = FakeHost([Interface.of("lo", "127.0.0.1/8")])
    with pytest.raises(StartupError, match="failed to autodetect an IPv4 address"):
        start(client, tmp_path, host=bare)
    with pytest.raises(StartupError, match="no IPv4 or IPv6 addresses"):
        start(client, tmp_path, host=bare, IP="none")
    with pytest.raises(ResourceNotFound):
        client.get("Node", "node1")


def test_ip_conflict_refuses_to_start(client: ResourceClient, tmp_path: Path) -> None:
    apply(client, "Node", "node2", {"bgp": {"ipv4Address": "172.31.0.11/24"}})
    with pytest.raises(StartupError) as err:
        start(client, tmp_path)
    assert "Calico node 'node2' is already using the IPv4 address 172.31.0.11/24." in str(err.value)
    with pytest.raises(ResourceNotFound):
        client.get("Node", "node1")
    # DISABLE_NODE_IP_CHECK lets it through, as calico/node.
    start(client, tmp_path, DISABLE_NODE_IP_CHECK="true")


def test_autodetected_conflict_clears_the_stale_address(
    client: ResourceClient, tmp_path: Path
) -> None:
    apply(client, "Node", "node1", {"bgp": {"ipv4Address": "10.9.9.9/24"}})
    apply(client, "Node", "node2", {"bgp": {"ipv4Address": "172.31.0.11/24"}})
    with pytest.raises(StartupError, match="node2"):
        start(client, tmp_path, IP="autodetect")
    assert client.get("Node", "node1").spec.bgp is None  # type: ignore[attr-defined]


def test_policy_only_writes_no_bgp_details(client: ResourceClient, tmp_path: Path) -> None:
    result = start(client, tmp_path, CALICO_NETWORKING_BACKEND="none", AS="65001")
    assert result.created
    assert client.get("Node", "node1").to_dict()["spec"] == {}


def test_default_pools_created_once(client: ResourceClient, tmp_path: Path) -> None:
    env = {"CALICO_IPV4POOL_CIDR": "10.65.0.0/16", "CALICO_IPV4POOL_BLOCK_SIZE": "24"}
    start(client, tmp_path, **env)
    start(
        client,
        tmp_path,
        NODENAME="node2",
        IP="172.31.0.12",
        DISABLE_NODE_IP_CHECK="true",
        CALICO_IPV4POOL_CIDR="10.99.0.0/16",
    )
    pools = client.list("IPPool").items
    assert [(p.name, p.spec.cidr, p.spec.block_size) for p in pools] == [  # type: ignore[attr-defined]
        ("default-ipv4-ippool", "10.65.0.0/16", 24)
    ]
    assert pools[0].spec.nat_outgoing is True  # type: ignore[attr-defined]


def test_existing_pool_means_no_default(client: ResourceClient, tmp_path: Path) -> None:
    apply(client, "IPPool", "mine", {"cidr": "10.1.0.0/16"})
    start(client, tmp_path)
    assert [p.name for p in client.list("IPPool").items] == ["mine"]


def test_ipv6_pool_only_where_supported(client: ResourceClient, tmp_path: Path) -> None:
    cfg = config(tmp_path, CALICO_IPV6POOL_CIDR="fd00:10::/64")
    run_startup(cfg, client, HOST, ipv6_supported=lambda _: True)
    names = {p.name: p.spec.cidr for p in client.list("IPPool").items}  # type: ignore[attr-defined]
    assert names == {"default-ipv4-ippool": "192.168.0.0/16", "default-ipv6-ippool": "fd00:10::/64"}


def test_no_default_pools(client: ResourceClient, tmp_path: Path) -> None:
    start(client, tmp_path, NO_DEFAULT_POOLS="true")
    assert client.list("IPPool").items == []


def test_default_ipv4_pool_avoids_host_addresses() -> None:
    def addrs(*a: str) -> list[ipaddress.IPv4Interface]:
        return [ipaddress.IPv4Interface(x) for x in a]

    assert default_ipv4_pool(addrs("10.0.0.5/24")) == "192.168.0.0/16"
    assert default_ipv4_pool(addrs("192.168.1.5/24")) == "172.16.0.0/16"
    assert default_ipv4_pool(addrs("192.168.1.5/24", "172.16.0.1/16")) == "172.17.0.0/16"


def test_ula_prefix() -> None:
    net = ipaddress.IPv6Network(generate_ula_prefix())
    assert net.prefixlen == 48 and net.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    assert generate_ula_prefix() != generate_ula_prefix()


def test_cluster_defaults(client: ResourceClient, tmp_path: Path) -> None:
    start(client, tmp_path, CLUSTER_TYPE="k8s,bgp")
    info = client.get("ClusterInformation", "default").to_dict()["spec"]
    assert info["clusterType"] == "k8s,bgp" and info["datastoreReady"] is True
    assert len(info["clusterGUID"]) == 32 and info["calicoVersion"].startswith("v")
    felix = client.get("FelixConfiguration", "default").to_dict()["spec"]
    assert (felix["reportingInterval"], felix["logSeverityScreen"]) == ("0s", "Info")
    node_cfg = client.get("FelixConfiguration", "node.node1").to_dict()["spec"]
    assert node_cfg["defaultEndpointToHostAction"] == "Return"
    assert client.get("BGPConfiguration", "default").to_dict()["spec"] == {}
    assert client.get("IPAMConfiguration", "default").to_dict()["spec"] == {
        "strictAffinity": False,
        "autoAllocateBlocks": True,
    }
    assert {t.name for t in client.list("Tier").items} == {"default", "kube-admin", "kube-baseline"}


def test_existing_cluster_config_is_only_filled_in(client: ResourceClient, tmp_path: Path) -> None:
    apply(client, "FelixConfiguration", "default", {"logSeverityScreen": "Debug"})
    apply(client, "BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False})
    start(client, tmp_path)
    felix = client.get("FelixConfiguration", "default").to_dict()["spec"]
    assert (felix["logSeverityScreen"], felix["reportingInterval"]) == ("Debug", "0s")
    assert client.get("BGPConfiguration", "default").to_dict()["spec"] == {
        "nodeToNodeMeshEnabled": False
    }


def test_cluster_information_merges_types_and_keeps_the_guid(client: ResourceClient) -> None:
    first = ensure_cluster_information(client, "v1", "k8s,bgp")
    again = ensure_cluster_information(client, "v2", "bgp,kubeadm")
    assert again.spec.cluster_guid == first.spec.cluster_guid
    assert again.spec.cluster_type == "k8s,bgp,kubeadm"
    assert again.spec.calico_version == "v2"


def test_node_name_precedence(tmp_path: Path) -> None:
    nodename = tmp_path / "nodename"
    base = {"CALICO_NODENAME_FILE": str(nodename)}
    assert determine_node_name(NodeConfig.from_env({**base, "NODENAME": "a"})) == "a"
    assert determine_node_name(NodeConfig.from_env({**base, "HOSTNAME": "Host-B"})) == "host-b"
    nodename.write_text("stored")
    assert determine_node_name(NodeConfig.from_env({**base, "HOSTNAME": "b"})) == "stored"
    nodename.unlink()
    cfg = NodeConfig.from_env(base)
    assert determine_node_name(cfg, hostname=lambda: "MyHost") == "myhost"


# --- VXLAN tunnel addresses ---------------------------------------------------------------------


def test_vtep_mac_is_felixs_derived_mac() -> None:
    mac = vtep_mac("node1")
    assert mac.startswith("66:") and len(mac.split(":")) == 6
    assert vtep_mac("node1") == mac != vtep_mac("node2")


def test_tunnel_address_follows_vxlan_pools(client: ResourceClient, tmp_path: Path) -> None:
    start(client, tmp_path, CALICO_IPV4POOL_CIDR="10.65.0.0/16")
    changes: list[dict[str, Any]] = []
    manager = TunnelAddressManager(client, "node1", on_change=changes.append)
    assert manager.reconcile() == {"vxlan": None, "vxlan-v6": None}
    assert changes == []

    pool = client.get("IPPool", "default-ipv4-ippool")
    pool.spec.vxlan_mode = "Always"  # type: ignore[attr-defined]
    client.update(pool)
    state = manager.reconcile()
    address = state["vxlan"]
    assert address is not None and ipaddress.ip_address(address) in ipaddress.ip_network(
        "10.65.0.0/16"
    )
    spec = client.get("Node", "node1").spec
    assert spec.ipv4_vxlan_tunnel_addr == address  # type: ignore[attr-defined]
    assert spec.vxlan_tunnel_mac_addr == vtep_mac("node1")  # type: ignore[attr-defined]
    assert manager.ipam.ips_by_handle("vxlan-tunnel-addr-node1") == [address]
    assert manager.reconcile()["vxlan"] == address  # stable
    assert len(changes) == 1

    pool = client.get("IPPool", "default-ipv4-ippool")
    pool.spec.vxlan_mode = "Never"  # type: ignore[attr-defined]
    client.update(pool)
    assert manager.reconcile()["vxlan"] is None
    spec = client.get("Node", "node1").spec
    assert spec.ipv4_vxlan_tunnel_addr is None and spec.vxlan_tunnel_mac_addr is None  # type: ignore[attr-defined]
    assert manager.ipam.ips_by_handle("vxlan-tunnel-addr-node1") == []
    assert len(changes) == 2
