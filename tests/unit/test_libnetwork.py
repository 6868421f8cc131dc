"""tortie-libnetwork's request handling: each plugin call's JSON in and out.

The datastore and IPAM are real (memory backend, `IPAMClient`); Docker's API and the kernel
(veth) are fakes that record what they were asked, and background work runs inline. The last
tests drive the real HTTP servers on unix sockets, as Docker does.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tortie.api import load
from tortie.datastore.client import ResourceClient, ResourceNotFound
from tortie.datastore.memory import MemoryBackend
from tortie.ipam import IPAMClient
from tortie.libnetwork.config import ConfigError, LibnetworkConfig, parse_duration
from tortie.libnetwork.dockerapi import DockerAPIError, DockerNotFound
from tortie.libnetwork.ipam import IpamDriver
from tortie.libnetwork.network import (
    PROFILE_ANNOTATION,
    NetworkDriver,
    container_mac,
    endpoint_name,
)
from tortie.libnetwork.protocol import DriverError
from tortie.libnetwork.server import Plugin

EP = "6e38796765332c7dbb408ce80210454ba64c5adfaed6b018fba067adeff46b3e"
EP2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
NET = "2f7ec0a497b6dee46015874b2aa47d5665f200ebeb15dce2f993ae300a3bdd0e"
CID = "84e06af361568b2cc0ef758b8ee7d66e8cda8194603c561e2633e6e3ef8754e8"


class FakeDocker:
    """The Docker API as the driver uses it: networks by ID, containers' labels."""

    def __init__(self) -> None:
        self.networks: dict[str, dict[str, Any]] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []

    def network(self, network_id: str) -> dict[str, Any]:
        self.calls.append(f"network {network_id}")
        if network_id not in self.networks:
            raise DockerNotFound(f"network {network_id} not found")
        return self.networks[network_id]

    def network_name(self, network_id: str) -> str:
        return str(self.network(network_id)["Name"])

    def container_labels(self, container_id: str) -> dict[str, str]:
        self.calls.append(f"container {container_id}")
        if container_id not in self.labels:
            raise DockerAPIError("no such container")
        return self.labels[container_id]


class FakeDataplane:
    def __init__(self) -> None:
        self.veths: dict[str, tuple[str, tuple[Any, ...], int]] = {}
        self.fail: str | None = None

    def create(self, host_if: str, temp_if: str, ips: Sequence[Any], mtu: int) -> None:
        if self.fail:
            raise DriverError(self.fail)
        self.veths[host_if] = (temp_if, tuple(ips), mtu)

    def delete(self, host_if: str, temp_if: str) -> None:
        self.veths.pop(host_if, None)


def pool(rc: ResourceClient, name: str, cidr: str, **spec: object) -> None:
    rc.apply(load(json.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": name}, "spec": {"cidr": cidr, **spec},
    }))[0])


@pytest.fixture
def rc(memory_backend: MemoryBackend) -> ResourceClient:
    client = ResourceClient(memory_backend)
    pool(client, "default-ipv4-ippool", "10.65.0.0/16", blockSize=26)
    pool(client, "v6", "fd00:65::/48")
    return client


@pytest.fixture
def ipam(memory_backend: MemoryBackend, rc: ResourceClient) -> IpamDriver:
    return IpamDriver(IPAMClient(memory_backend, rc), "node1")


@pytest.fixture
def docker() -> FakeDocker:
    d = FakeDocker()
    d.networks[NET] = {"Name": "net1", "Containers": {}}
    return d


@pytest.fixture
def dp() -> FakeDataplane:
    return FakeDataplane()


def make_driver(rc: ResourceClient, docker: FakeDocker, dp: FakeDataplane,
                **cfg: Any) -> NetworkDriver:
    config = LibnetworkConfig(**{"nodename": "node1", "label_poll_timeout": 0.1, **cfg})
    return NetworkDriver(config, rc, docker, dp, background=lambda fn: fn())  # type: ignore[arg-type]


@pytest.fixture
def net(rc: ResourceClient, docker: FakeDocker, dp: FakeDataplane) -> NetworkDriver:
    return make_driver(rc, docker, dp)


def create_network_body(**extra: Any) -> dict[str, Any]:
    body = {
        "NetworkID": NET,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "CalicoLocalAddressSpace", "Gateway": "0.0.0.0/0",
                      "Pool": "0.0.0.0/0"}],
        "IPv6Data": [],
    }
    body.update(extra)
    return body


def endpoint_body(address: str = "10.65.0.5/32", ep: str = EP, mac: str = "") -> dict[str, Any]:
    return {"NetworkID": NET, "EndpointID": ep,
            "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": mac},
            "Options": {"com.docker.network.endpoint.exposedports": [],
                        "com.docker.network.portmap": []}}


def wep(rc: ResourceClient, ep: str = EP) -> Any:
    return rc.get("WorkloadEndpoint", endpoint_name("node1", ep), "libnetwork")


# --- IPAM driver ----------------------------------------------------------------------------


def test_ipam_capabilities_and_address_spaces(ipam: IpamDriver) -> None:
    assert ipam.get_capabilities({}) == {"RequiresMACAddress": False,
                                         "RequiresRequestReplay": False}
    assert ipam.get_default_address_spaces({}) == {
        "LocalDefaultAddressSpace": "CalicoLocalAddressSpace",
        "GlobalDefaultAddressSpace": "CalicoGlobalAddressSpace",
    }


def test_request_pool_without_subnet_is_every_pool(ipam: IpamDriver) -> None:
    body = {"AddressSpace": "CalicoLocalAddressSpace", "Pool": "", "SubPool": "",
            "Options": {}, "V6": False}
    assert ipam.request_pool(body) == {
        "PoolID": "CalicoPoolIPv4", "Pool": "0.0.0.0/0",
        "Data": {"com.docker.network.gateway": "0.0.0.0/0"},
    }
    assert ipam.request_pool({**body, "V6": True}) == {
        "PoolID": "CalicoPoolIPv6", "Pool": "::/0",
        "Data": {"com.docker.network.gateway": "::/0"},
    }


def test_request_pool_with_subnet_must_be_a_pool(ipam: IpamDriver) -> None:
    resp = ipam.request_pool({"Pool": "10.65.0.0/16", "V6": False})
    assert resp == {"PoolID": "10.65.0.0/16", "Pool": "10.65.0.0/16",
                    "Data": {"com.docker.network.gateway": "0.0.0.0/0"}}
    with pytest.raises(DriverError, match="must match the CIDR of a configured Tortie IP Pool"):
        ipam.request_pool({"Pool": "10.65.0.0/24", "V6": False})
    with pytest.raises(DriverError, match="not an IPv4 CIDR"):
        ipam.request_pool({"Pool": "fd00:65::/48", "V6": False})
    with pytest.raises(DriverError, match="Invalid CIDR"):
        ipam.request_pool({"Pool": "nonsense", "V6": False})


def test_request_pool_refuses_sub_pools_and_options(ipam: IpamDriver) -> None:
    with pytest.raises(DriverError, match="does not support sub pool"):
        ipam.request_pool({"Pool": "10.65.0.0/16", "SubPool": "10.65.1.0/24"})
    with pytest.raises(DriverError, match="Arbitrary options are not supported"):
        ipam.request_pool({"Options": {"REJECT": "1"}})


def test_request_address_auto_assigns_on_this_node(ipam: IpamDriver) -> None:
    resp = ipam.request_address({"PoolID": "CalicoPoolIPv4", "Address": "", "Options": None})
    addr = resp["Address"]
    assert addr.endswith("/32") and addr.startswith("10.65.")
    ip = addr.split("/")[0]
    attrs, handle = ipam.ipam.get_assignment_attributes(ip)
    assert attrs == {"node": "node1"} and handle is None
    v6 = ipam.request_address({"PoolID": "CalicoPoolIPv6", "Address": ""})["Address"]
    assert v6.startswith("fd00:65:") and v6.endswith("/128")


def test_request_address_from_the_networks_pool(ipam: IpamDriver, rc: ResourceClient) -> None:
    pool(rc, "other", "10.66.0.0/16")
    for _ in range(3):
        addr = ipam.request_address({"PoolID": "10.66.0.0/16"})["Address"]
        assert addr.startswith("10.66.")
    rc.delete("IPPool", "other")
    with pytest.raises(DriverError, match="has been deleted"):
        ipam.request_address({"PoolID": "10.66.0.0/16"})


def test_request_specific_address_and_conflicts(ipam: IpamDriver) -> None:
    assert ipam.request_address({"PoolID": "10.65.0.0/16", "Address": "10.65.3.7"}) == {
        "Address": "10.65.3.7/32"}
    with pytest.raises(DriverError, match="already assigned"):
        ipam.request_address({"PoolID": "10.65.0.0/16", "Address": "10.65.3.7"})
    with pytest.raises(DriverError, match="not in any enabled IP pool"):
        ipam.request_address({"PoolID": "CalicoPoolIPv4", "Address": "192.0.2.1"})


def test_gateway_requests_are_refused(ipam: IpamDriver) -> None:
    with pytest.raises(DriverError, match="does not support specifying a gateway"):
        ipam.request_address({"PoolID": "10.65.0.0/16", "Address": "10.65.0.1",
                              "Options": {"RequestAddressType": "com.docker.network.gateway"}})


def test_release_address_frees_it_and_ignores_the_placeholder(ipam: IpamDriver) -> None:
    addr = ipam.request_address({"PoolID": "CalicoPoolIPv4"})["Address"]
    ip = addr.split("/")[0]
    assert ipam.release_address({"PoolID": "CalicoPoolIPv4", "Address": ip}) == {}
    assert ipam.ipam.release_ips([ip]) == [ip]  # already free
    assert ipam.release_address({"PoolID": "CalicoPoolIPv4", "Address": ip}) == {}  # idempotent
    assert ipam.release_address({"PoolID": "CalicoPoolIPv4", "Address": "0.0.0.0"}) == {}
    assert ipam.release_pool({"PoolID": "CalicoPoolIPv4"}) == {}


def test_no_pool_left_is_a_clear_error(memory_backend: MemoryBackend) -> None:
    rc = ResourceClient(memory_backend)
    pool(rc, "tiny", "10.70.0.0/31", blockSize=31)
    drv = IpamDriver(IPAMClient(memory_backend, rc), "node1")
    drv.request_address({"PoolID": "CalicoPoolIPv4"})
    drv.request_address({"PoolID": "CalicoPoolIPv4"})
    with pytest.raises(DriverError, match="IP assignment error"):
        drv.request_address({"PoolID": "CalicoPoolIPv4"})
    with pytest.raises(DriverError, match="IP assignment error"):
        drv.request_address({"PoolID": "CalicoPoolIPv6"})


# --- network driver: networks -----------------------------------------------------------------


def test_capabilities_and_trivial_calls(net: NetworkDriver) -> None:
    assert net.get_capabilities({}) == {"Scope": "local"}
    assert net.endpoint_oper_info({"NetworkID": NET, "EndpointID": EP}) == {"Value": {}}
    for method in ("NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete",
                   "NetworkDriver.ProgramExternalConnectivity",
                   "NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.FreeNetwork"):
        assert net.handlers()[method]({}) == {}


def test_create_network_makes_the_profile(net: NetworkDriver, rc: ResourceClient) -> None:
    assert net.create_network(create_network_body()) == {}
    prof = rc.get("Profile", "net1")
    assert prof.to_dict()["spec"] == {
        "ingress": [{"action": "Allow", "source": {"selector": "has(net1)"}}],
        "egress": [{"action": "Allow"}],
        "labelsToApply": {"net1": ""},
    }
    assert prof.metadata.annotations == {PROFILE_ANNOTATION: "net1"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"com.docker.network.internal": True}, "does not support the flag --internal."),
        ({"com.docker.network.generic": {"REJECT": ""}}, "does not support the flag REJECT."),
        ({"com.docker.network.generic": {"REJECT": "", "REJECT2": "x"}},
         "does not support the flags REJECT, REJECT2."),
        ({"com.docker.network.mtu": "1400"}, "flag com.docker.network.mtu (1400)."),
    ],
)
def test_create_network_refuses_options(net: NetworkDriver, options: dict[str, Any],
                                        message: str) -> None:
    with pytest.raises(DriverError, match=message.replace("(", r"\(").replace(")", r"\)")):
        net.create_network(create_network_body(Options=options))


def test_create_network_needs_tortie_ipam(net: NetworkDriver) -> None:
    body = create_network_body(IPv4Data=[{"AddressSpace": "LocalDefault",
                                          "Gateway": "172.18.0.1/16", "Pool": "172.18.0.0/16"}])
    with pytest.raises(DriverError, match="--ipam-driver tortie-ipam"):
        net.create_network(body)
    v6 = create_network_body(IPv6Data=[{"AddressSpace": "LocalDefault", "Gateway": "fd::1/64",
                                        "Pool": "fd::/64"}])
    with pytest.raises(DriverError, match="Non-Tortie IPAM"):
        net.create_network(v6)
    ok = create_network_body(IPv6Data=[{"AddressSpace": "CalicoLocalAddressSpace",
                                        "Gateway": "::/0", "Pool": "::/0"}])
    assert net.create_network(ok) == {}


def test_profile_is_not_created_when_disabled(rc: ResourceClient, docker: FakeDocker,
                                              dp: FakeDataplane) -> None:
    drv = make_driver(rc, docker, dp, create_profiles=False)
    drv.create_network(create_network_body())
    drv.create_endpoint(endpoint_body())
    with pytest.raises(ResourceNotFound):
        rc.get("Profile", "net1")
    assert wep(rc).spec.profiles is None
    assert docker.calls == []  # no need to ask Docker for the name


def test_delete_network_removes_an_unused_profile(net: NetworkDriver, rc: ResourceClient) -> None:
    net.create_network(create_network_body())
    net.create_endpoint(endpoint_body())
    net.delete_network({"NetworkID": NET})
    assert rc.get("Profile", "net1")  # still used by the endpoint (e.g. on another host)
    net.delete_endpoint({"NetworkID": NET, "EndpointID": EP})
    net.delete_network({"NetworkID": NET})
    with pytest.raises(ResourceNotFound):
        rc.get("Profile", "net1")


def test_delete_network_keeps_a_profile_the_user_made(net: NetworkDriver,
                                                      rc: ResourceClient) -> None:
    rc.apply(load(json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "Profile",
                              "metadata": {"name": "net1"},
                              "spec": {"ingress": [{"action": "Allow"}]}}))[0])
    net.create_network(create_network_body())
    assert net.delete_network({"NetworkID": NET}) == {}
    assert rc.get("Profile", "net1").spec.ingress[0].action == "Allow"


def test_delete_network_never_fails_on_the_profile(net: NetworkDriver, docker: FakeDocker) -> None:
    docker.networks.clear()  # Docker cannot name it any more: the profile is left alone
    assert net.delete_network({"NetworkID": NET}) == {}


def test_profile_removed_while_endpoint_created_comes_back(net: NetworkDriver,
                                                           rc: ResourceClient) -> None:
    net.create_network(create_network_body())
    real_in_use = net.profile_in_use
    looks: list[bool] = []

    def racing(name: str) -> bool:
        # First look: nothing uses the profile; then another host creates an endpoint.
        if not looks:
            looks.append(False)
            return False
        net.create_endpoint(endpoint_body())
        return real_in_use(name)

    net.profile_in_use = racing  # type: ignore[method-assign]
    assert net.remove_profile_if_unused("net1") is False
    assert rc.get("Profile", "net1")


# --- network driver: endpoints ----------------------------------------------------------------


def test_create_endpoint_writes_the_workload_endpoint(net: NetworkDriver,
                                                      rc: ResourceClient) -> None:
    resp = net.create_endpoint(endpoint_body())
    mac = container_mac(EP)
    assert mac == "02:6e:38:79:67:65"
    assert resp == {"Interface": {"MacAddress": mac}}
    w = wep(rc)
    assert w.name == f"node1-libnetwork-libnetwork-{EP}"
    assert w.to_dict()["spec"] == {
        "orchestrator": "libnetwork",
        "workload": "libnetwork",
        "node": "node1",
        "endpoint": EP,
        "ipNetworks": ["10.65.0.5/32"],
        "profiles": ["net1"],
        "interfaceName": "cali6e387967653",
        "mac": mac,
    }
    assert w.labels == {"projectcalico.org/namespace": "libnetwork",
                        "projectcalico.org/orchestrator": "libnetwork"}
    assert rc.get("Profile", "net1")


def test_create_endpoint_with_user_mac_and_ipv6(net: NetworkDriver, rc: ResourceClient) -> None:
    body = endpoint_body(mac="00:22:33:44:55:66")
    body["Interface"]["AddressIPv6"] = "fd00:65::5/64"
    assert net.create_endpoint(body) == {"Interface": {}}
    spec = wep(rc).spec
    assert spec.mac == "00:22:33:44:55:66"
    assert spec.ip_networks == ["10.65.0.5/32", "fd00:65::5/128"]


def test_create_endpoint_errors(net: NetworkDriver, docker: FakeDocker) -> None:
    with pytest.raises(DriverError, match="No address assigned"):
        net.create_endpoint(endpoint_body(address=""))
    with pytest.raises(DriverError, match="Parsing bogus as CIDR failed"):
        net.create_endpoint(endpoint_body(address="bogus"))
    with pytest.raises(DriverError, match="EndpointID is missing"):
        net.create_endpoint({"NetworkID": NET, "Interface": {"Address": "10.65.0.5/32"}})
    docker.networks.clear()
    with pytest.raises(DriverError, match="inspection error"):
        net.create_endpoint(endpoint_body())


def test_network_names_that_cannot_be_profiles(net: NetworkDriver, docker: FakeDocker) -> None:
    docker.networks[NET] = {"Name": "Bad Name!", "Containers": {}}
    with pytest.raises(DriverError, match="cannot name a Tortie profile"):
        net.create_endpoint(endpoint_body())


def test_replayed_create_endpoint_replaces_it(net: NetworkDriver, rc: ResourceClient) -> None:
    net.create_endpoint(endpoint_body("10.65.0.5/32"))
    net.create_endpoint(endpoint_body("10.65.0.6/32"))
    assert wep(rc).spec.ip_networks == ["10.65.0.6/32"]


def test_delete_endpoint_is_idempotent(net: NetworkDriver, rc: ResourceClient) -> None:
    net.create_endpoint(endpoint_body())
    assert net.delete_endpoint({"NetworkID": NET, "EndpointID": EP}) == {}
    with pytest.raises(ResourceNotFound):
        wep(rc)
    assert net.delete_endpoint({"NetworkID": NET, "EndpointID": EP}) == {}


# --- join, leave, labels ------------------------------------------------------------------------


def join_body(ep: str = EP) -> dict[str, Any]:
    return {"NetworkID": NET, "EndpointID": ep, "SandboxKey": "/var/run/docker/netns/e06dc3b1",
            "Options": {}}


def test_join_creates_the_veth_and_answers_as_calico(net: NetworkDriver, dp: FakeDataplane,
                                                     docker: FakeDocker) -> None:
    net.create_endpoint(endpoint_body())
    resp = net.join(join_body())
    assert resp == {
        "InterfaceName": {"SrcName": "temp6e387967653", "DstPrefix": "cali"},
        "Gateway": "169.254.1.1",
        "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1, "NextHop": ""}],
        "DisableGatewayService": True,
    }
    temp, ips, mtu = dp.veths["cali6e387967653"]
    assert temp == "temp6e387967653" and [str(i) for i in ips] == ["10.65.0.5/32"] and mtu == 0
    assert net.leave({"NetworkID": NET, "EndpointID": EP}) == {}
    assert dp.veths == {}


def test_join_with_ipv6_gives_the_link_local_gateway(net: NetworkDriver) -> None:
    body = endpoint_body()
    body["Interface"]["AddressIPv6"] = "fd00:65::5/128"
    net.create_endpoint(body)
    resp = net.join(join_body())
    assert resp["GatewayIPv6"] == "fe80::ecee:eeff:feee:eeee"
    assert resp["StaticRoutes"][1] == {"Destination": "fe80::ecee:eeff:feee:eeee/128",
                                       "RouteType": 1, "NextHop": ""}


def test_join_after_a_restart_reads_the_endpoint(rc: ResourceClient, docker: FakeDocker,
                                                 dp: FakeDataplane) -> None:
    make_driver(rc, docker, dp).create_endpoint(endpoint_body("10.65.0.9/32"))
    fresh = make_driver(rc, docker, dp, veth_mtu=1400, if_prefix="eth")
    resp = fresh.join(join_body())
    assert resp["InterfaceName"] == {"SrcName": "temp6e387967653", "DstPrefix": "eth"}
    assert [str(i) for i in dp.veths["cali6e387967653"][1]] == ["10.65.0.9/32"]
    assert dp.veths["cali6e387967653"][2] == 1400


def test_join_failure_is_reported(net: NetworkDriver, dp: FakeDataplane) -> None:
    dp.fail = "cannot create veth cali6e387967653/temp6e387967653: File exists"
    with pytest.raises(DriverError, match="cannot create veth"):
        net.join(join_body())


def test_join_copies_prefixed_container_labels(net: NetworkDriver, rc: ResourceClient,
                                               docker: FakeDocker) -> None:
    net.create_endpoint(endpoint_body())
    docker.networks[NET]["Containers"] = {CID: {"EndpointID": EP, "Name": "c1"},
                                          f"ep-{EP}": {"EndpointID": EP}}
    docker.labels[CID] = {"org.projectcalico.label.role": "db",
                          "org.projectcalico.label.tier": "back",
                          "other": "ignored", "org.projectcalico.label.": "empty key"}
    net.join(join_body())
    assert wep(rc).labels == {"projectcalico.org/namespace": "libnetwork",
                              "projectcalico.org/orchestrator": "libnetwork",
                              "role": "db", "tier": "back"}


def test_labels_that_are_invalid_are_skipped(net: NetworkDriver, rc: ResourceClient,
                                             docker: FakeDocker) -> None:
    net.create_endpoint(endpoint_body())
    docker.networks[NET]["Containers"] = {CID: {"EndpointID": EP}}
    docker.labels[CID] = {"org.projectcalico.label.bad key!": "x"}
    assert net.apply_container_labels(NET, EP) is False
    assert "bad key!" not in (wep(rc).labels or {})


def test_labels_give_up_when_the_container_never_shows(net: NetworkDriver,
                                                       docker: FakeDocker) -> None:
    net.create_endpoint(endpoint_body())
    assert net.apply_container_labels(NET, EP) is False  # 0.1 s poll timeout in these tests
    assert sum(c.startswith("network") for c in docker.calls) > 1


def test_labels_can_be_disabled(rc: ResourceClient, docker: FakeDocker,
                                dp: FakeDataplane) -> None:
    drv = make_driver(rc, docker, dp, label_endpoints=False)
    drv.create_endpoint(endpoint_body())
    docker.calls.clear()
    drv.join(join_body())
    assert docker.calls == []


# --- configuration ------------------------------------------------------------------------------


def test_config_from_calico_environment(tmp_path: Path) -> None:
    env = {
        "NODENAME": "n7",
        "CALICO_LIBNETWORK_NAMESPACE": "docker",
        "CALICO_LIBNETWORK_CREATE_PROFILES": "false",
        "CALICO_LIBNETWORK_LABEL_ENDPOINTS": "FALSE",
        "CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT": "500ms",
        "CALICO_LIBNETWORK_VETH_MTU": "1440",
        "CALICO_LIBNETWORK_IFPREFIX": "eth",
        "DOCKER_HOST": "unix:///tmp/d.sock",
        "TORTIE_LIBNETWORK_PLUGIN_DIR": str(tmp_path),
    }
    cfg = LibnetworkConfig.from_env(env)
    assert (cfg.nodename, cfg.namespace, cfg.create_profiles, cfg.label_endpoints) == \
        ("n7", "docker", False, False)
    assert (cfg.label_poll_timeout, cfg.veth_mtu, cfg.if_prefix) == (0.5, 1440, "eth")
    assert cfg.network_socket == str(tmp_path / "tortie.sock")
    assert cfg.ipam_socket == str(tmp_path / "tortie-ipam.sock")
    assert LibnetworkConfig.from_env(env, nodename="cli", plugin_dir=None).nodename == "cli"
    assert LibnetworkConfig.from_env({"CALICO_LIBNETWORK_HOSTNAME": "h", "NODENAME": "n"}
                                     ).nodename == "h"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CALICO_LIBNETWORK_VETH_MTU": "big"}, "not a number"),
        ({"CALICO_LIBNETWORK_CREATE_PROFILES": "maybe"}, "use true or false"),
        ({"CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT": "soon"}, "duration"),
        ({"TORTIE_LIBNETWORK_SCOPE": "swarm"}, "use local or global"),
    ],
)
def test_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LibnetworkConfig.from_env({"NODENAME": "n", **env})
    assert parse_duration("1m", "x") == 60.0


# --- the servers, over their sockets -----------------------------------------------------------


def post(path: str, method: str, body: Any) -> tuple[int, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    conn = http.client.HTTPConnection("localhost", timeout=5)
    conn.sock = sock
    try:
        conn.request("POST", f"/{method}", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/vnd.docker.plugins.v1.2+json"})
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == "application/vnd.docker.plugins.v1+json"
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.fixture
def plugin(tmp_path: Path, memory_backend: MemoryBackend, rc: ResourceClient,
           docker: FakeDocker, dp: FakeDataplane) -> Iterator[Plugin]:
    cfg = LibnetworkConfig(nodename="node1", plugin_dir=str(tmp_path / "plugins"),
                           label_poll_timeout=0.2)
    p = Plugin(cfg, backend=memory_backend)
    p.network.docker = docker  # type: ignore[assignment]
    p.network.dataplane = dp  # type: ignore[assignment]
    p.network._background = lambda fn: fn()
    p.start()
    try:
        yield p
    finally:
        p.stop()


def test_sockets_activate_as_their_driver(plugin: Plugin) -> None:
    cfg = plugin.config
    assert post(cfg.network_socket, "Plugin.Activate", {}) == (200, {"Implements":
                                                                     ["NetworkDriver"]})
    assert post(cfg.ipam_socket, "Plugin.Activate", {}) == (200, {"Implements": ["IpamDriver"]})
    assert post(cfg.network_socket, "NetworkDriver.GetCapabilities", {}) == \
        (200, {"Scope": "local"})
    status, body = post(cfg.network_socket, "IpamDriver.RequestPool", {})
    assert status == 404 and "not implemented" in body["Err"]


def test_a_container_over_the_sockets(plugin: Plugin, rc: ResourceClient,
                                      dp: FakeDataplane) -> None:
    """The calls `docker network create` and `docker run`/`rm` make, in Docker's order."""
    cfg = plugin.config
    ipam, net = cfg.ipam_socket, cfg.network_socket
    call: Callable[[str, str, Any], tuple[int, Any]] = post
    status, pool_resp = call(ipam, "IpamDriver.RequestPool",
                             {"AddressSpace": "CalicoLocalAddressSpace", "Pool": "",
                              "SubPool": "", "Options": {}, "V6": False})
    assert status == 200 and pool_resp["PoolID"] == "CalicoPoolIPv4"
    assert call(net, "NetworkDriver.CreateNetwork", create_network_body()) == (200, {})
    status, addr = call(ipam, "IpamDriver.RequestAddress",
                        {"PoolID": "CalicoPoolIPv4", "Address": "", "Options": None})
    assert status == 200
    body = endpoint_body(addr["Address"])
    assert call(net, "NetworkDriver.CreateEndpoint", body) == \
        (200, {"Interface": {"MacAddress": container_mac(EP)}})
    status, joined = call(net, "NetworkDriver.Join", join_body())
    assert status == 200 and joined["InterfaceName"]["SrcName"] == "temp6e387967653"
    assert "cali6e387967653" in dp.veths
    assert wep(rc).spec.ip_networks == [addr["Address"]]
    assert call(net, "NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": EP}) == (200, {})
    assert call(net, "NetworkDriver.DeleteEndpoint",
                {"NetworkID": NET, "EndpointID": EP}) == (200, {})
    ip = addr["Address"].split("/")[0]
    assert call(ipam, "IpamDriver.ReleaseAddress",
                {"PoolID": "CalicoPoolIPv4", "Address": ip}) == (200, {})
    assert plugin.ipam.release_ips([ip]) == [ip]
    assert call(net, "NetworkDriver.DeleteNetwork", {"NetworkID": NET}) == (200, {})
    with pytest.raises(ResourceNotFound):
        rc.get("Profile", "net1")


def test_errors_go_back_as_err(plugin: Plugin) -> None:
    cfg = plugin.config
    status, body = post(cfg.network_socket, "NetworkDriver.CreateNetwork",
                        create_network_body(Options={"com.docker.network.internal": True}))
    assert (status, body) == (500, {"Err": "Tortie driver does not support the flag "
                                           "--internal."})
    status, body = post(cfg.ipam_socket, "IpamDriver.RequestAddress", {"PoolID": 7})
    assert status == 500 and "PoolID must be a string" in body["Err"]
    status, body = post(cfg.ipam_socket, "IpamDriver.RequestAddress", [1, 2])
    assert status == 400 and "malformed request" in body["Err"]


def test_a_live_socket_is_not_taken_over(plugin: Plugin, memory_backend: MemoryBackend) -> None:
    second = Plugin(plugin.config, backend=memory_backend)
    with pytest.raises(ConfigError, match="in use by another plugin process"):
        second.start()
    assert post(plugin.config.network_socket, "Plugin.Activate", {})[0] == 200


def test_a_stale_socket_is_replaced(tmp_path: Path, memory_backend: MemoryBackend) -> None:
    cfg = LibnetworkConfig(nodename="node1", plugin_dir=str(tmp_path))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(cfg.network_socket)
    stale.close()  # the file stays, nobody listens
    p = Plugin(cfg, backend=memory_backend).start()
    try:
        assert post(cfg.network_socket, "Plugin.Activate", {})[0] == 200
    finally:
        p.stop()
    assert not Path(cfg.network_socket).exists() and not Path(cfg.ipam_socket).exists()


# --- the Docker API client, against a fake daemon on a unix socket ------------------------------


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    import socketserver
    import threading
    from http.server import BaseHTTPRequestHandler

    seen: list[str] = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if self.path == f"/networks/{NET}":
                status, body = 200, {"Name": "net1", "Containers": {CID: {"EndpointID": EP}}}
            elif self.path.startswith("/containers/json?all=1&filters="):
                status, body = 200, ([{"Id": CID, "Labels": {"a": "1"}}]
                                     if CID in self.path else [])
            elif self.path == f"/containers/{EP}/json":
                status, body = 200, {"Config": {"Labels": {"b": "2"}}}
            else:
                status, body = 404, {"message": f"no such thing: {self.path}"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

        def get_request(self) -> Any:
            return self.socket.accept()[0], ("x", 0)

    path = str(tmp_path / "docker.sock")
    srv = S(path, H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        yield f"unix://{path}", seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_docker_api_reads(fake_daemon: tuple[str, list[str]]) -> None:
    from tortie.libnetwork.dockerapi import DockerAPI

    host, seen = fake_daemon
    api = DockerAPI(host, timeout=2)
    assert api.network_name(NET) == "net1"
    assert api.network(NET)["Containers"][CID]["EndpointID"] == EP
    assert api.container_labels(CID) == {"a": "1"}
    assert api.container_labels(EP) == {"b": "2"}  # not listed: falls back to inspect
    assert [p.split("?")[0] for p in seen[2:]] == [
        "/containers/json", "/containers/json", f"/containers/{EP}/json"]
    with pytest.raises(DockerNotFound, match="no such thing"):
        api.network("nope")


def test_docker_api_errors(tmp_path: Path) -> None:
    from tortie.libnetwork.dockerapi import DockerAPI

    with pytest.raises(DockerAPIError, match="cannot reach the Docker daemon"):
        DockerAPI(f"unix://{tmp_path}/absent.sock", timeout=1).network(NET)
    with pytest.raises(DockerAPIError, match="use unix://"):
        DockerAPI("ssh://host")
