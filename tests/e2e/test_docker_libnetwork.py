"""Real Docker on two lab nodes, networked by tortie-libnetwork, enforced by real Felix.

Each node runs its own dockerd (`tortie.lab.docker`), tortie-libnetwork and tortie-felix in its
namespace; etcd is the lab's. The pool 10.65.0.0/16 is cut into /24 blocks, node1 owning
10.65.0.0/24 and node2 10.65.1.0/24 (the static routes between nodes stand in for BGP). Docker
networks have `local` scope, so each is created on both nodes under the same name: the
containers of `net1` on either node share its Profile and reach each other; a container on
`net2` is kept out until a policy on the containers' labels lets it in.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.datastore.client import ResourceNotFound
from tortie.ipam import AddressNotAssigned, IPAMClient
from tortie.lab import Lab
from tortie.lab import docker as ld

REASON = ld.docker_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

IMAGE = ld.IMAGE
LABEL = "org.projectcalico.label."


@dataclass
class DockerLab:
    fl: FelixLab
    ipam: IPAMClient
    nodes: dict[str, ld.DockerNode] = field(default_factory=dict)

    @property
    def lab(self) -> Lab:
        return self.fl.lab

    def docker(self, node: str, *args: str, **kw: Any) -> Any:
        return self.nodes[node].docker(*args, **kw)

    def network(self, name: str, *extra: str, nodes: tuple[str, ...] = ("node1", "node2")) -> None:
        for node in nodes:
            self.docker(
                node,
                "network",
                "create",
                "--driver",
                "tortie",
                "--ipam-driver",
                "tortie-ipam",
                *extra,
                name,
            )

    def run(self, node: str, name: str, net: str, *extra: str) -> str:
        """Start a container that sleeps; return its address on `net`."""
        self.docker(node, "run", "-d", "--name", name, "--net", net, *extra, IMAGE, "sleep", "3600")
        return self.nodes[node].container_ip(name, net)

    def ping(self, node: str, container: str, ip: str, timeout: float = 0.5) -> bool:
        return self.nodes[node].ping(container, ip, timeout)

    def wep(self, node: str, container: str, net: str) -> Any:
        info = self.nodes[node].inspect(container)
        ep = info["NetworkSettings"]["Networks"][net]["EndpointID"]
        name = f"{node}-libnetwork-libnetwork-{ep}"
        return self.lab.client.get("WorkloadEndpoint", name, "libnetwork")


@pytest.fixture(scope="module")
def dl() -> Iterator[DockerLab]:
    lab = Lab(nodes=2, static_route=False, host_sysctls=False)
    lab.up()
    # Short: dockerd's socket paths live under it (unix socket paths are limited).
    workdir = tempfile.mkdtemp(prefix="tdk", dir="/tmp")
    fl = FelixLab(lab, workdir)
    dlab = DockerLab(fl, IPAMClient(lab.client.backend, lab.client))
    try:
        fl.apply(resource("IPPool", "docker-pool", {"cidr": "10.65.0.0/16", "blockSize": 24}))
        for plan in lab.nodes:
            claimed, _ = dlab.ipam.claim_affinity(plan.workload_cidr, plan.name)
            assert claimed == [plan.workload_cidr]
        lab.static_routes()
        fl.created.clear()
        for node in ("node1", "node2"):
            fl.start_felix(node)
        dlab.nodes.update(ld.start_docker_nodes(lab, ["node1", "node2"], workdir, libnetwork=True))
        for node in ("node1", "node2"):
            eventually(lambda n=node: fl.felix_ready(n), 30, f"felix on {node} ready")
        yield dlab
    finally:
        for dn in dlab.nodes.values():
            dn.stop()
        for node in list(fl.felix):
            try:
                fl.stop_felix(node)
            except Exception:
                pass
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def net1(dl: DockerLab) -> dict[str, str]:
    """`net1` on both nodes with a container on each: a1 (node1, role=db) and b1 (node2)."""
    dl.network("net1")
    return {
        "a1": dl.run("node1", "a1", "net1", "--label", f"{LABEL}role=db", "--label", "unrelated=x"),
        "b1": dl.run("node2", "b1", "net1"),
    }


def test_containers_on_one_network_reach_each_other_across_hosts(
    dl: DockerLab, net1: dict[str, str]
) -> None:
    assert net1["a1"].startswith("10.65.0.") and net1["b1"].startswith("10.65.1.")
    # As a user would check it: busybox ping inside the containers.
    eventually(
        lambda: (
            dl.docker(
                "node1", "exec", "a1", "ping", "-c", "1", "-W", "1", net1["b1"], check=False
            ).returncode
            == 0
        ),
        20,
        "a1 to ping b1 across hosts",
    )
    eventually(lambda: dl.ping("node2", "b1", net1["a1"]), 10, "b1 to reach a1")
    routes = dl.docker("node1", "exec", "a1", "ip", "route").stdout
    assert routes.split("\n")[:2] == [
        "default via 169.254.1.1 dev cali0 ",
        "169.254.1.1 dev cali0 scope link ",
    ]
    addr = dl.docker("node1", "exec", "a1", "ip", "-o", "-4", "addr", "show", "cali0").stdout
    assert f"{net1['a1']}/32" in addr


def test_the_workload_endpoint_carries_the_container(dl: DockerLab, net1: dict[str, str]) -> None:
    wep = eventually(
        lambda: (w := dl.wep("node1", "a1", "net1")).labels.get("role") and w,
        10,
        "a1's endpoint labelled role=db",
    )
    assert wep.labels == {
        "role": "db",
        "projectcalico.org/namespace": "libnetwork",
        "projectcalico.org/orchestrator": "libnetwork",
    }
    spec = wep.spec
    assert (spec.orchestrator, spec.workload, spec.node) == ("libnetwork", "libnetwork", "node1")
    assert spec.ip_networks == [f"{net1['a1']}/32"] and spec.profiles == ["net1"]
    ep = spec.endpoint
    assert spec.interface_name == f"cali{ep[:11]}"
    inspect = dl.nodes["node1"].inspect("a1")["NetworkSettings"]["Networks"]["net1"]
    assert inspect["MacAddress"] == spec.mac and inspect["Gateway"] == "169.254.1.1"
    link = dl.lab.exec("node1", ["ip", "-o", "link", "show", spec.interface_name]).stdout
    assert "ee:ee:ee:ee:ee:ee" in link
    attrs, _ = dl.ipam.get_assignment_attributes(net1["a1"])
    assert attrs == {"node": "node1"}
    prof = dl.lab.client.get("Profile", "net1")
    assert prof.spec.labels_to_apply == {"net1": ""}


def test_another_network_is_kept_out_until_policy_lets_it_in(
    dl: DockerLab, net1: dict[str, str]
) -> None:
    eventually(lambda: dl.ping("node2", "b1", net1["a1"]), 20, "baseline: b1 reaches a1")
    dl.network("net2", nodes=("node2",))
    c2 = dl.run("node2", "c2", "net2")
    eventually(lambda: dl.ping("node2", "c2", c2) is True, 10, "c2 is up")  # its own address
    iface = dl.wep("node2", "c2", "net2").spec.interface_name
    eventually(
        lambda: f"cali-tw-{iface}" in dl.fl.iptables_save("node2"),
        10,
        "Felix to program c2's chains",
    )  # so "blocked" below is policy, not a race
    assert not dl.ping("node2", "c2", net1["a1"], timeout=0.7)
    assert not dl.ping("node2", "c2", net1["b1"], timeout=0.7)  # same host, other network
    assert not dl.ping("node1", "a1", c2, timeout=0.7)
    # The container label a1 carries selects it in policy: let net2 in to role=db only.
    dl.fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "net2-to-db",
            {
                "order": 100,
                "selector": "role == 'db'",
                "ingress": [{"action": "Allow", "source": {"selector": "has(net2)"}}],
            },
        )
    )
    try:
        eventually(lambda: dl.ping("node2", "c2", net1["a1"]), 10, "c2 to reach a1 by policy")
        assert not dl.ping("node2", "c2", net1["b1"], timeout=0.7)
    finally:
        dl.fl.cleanup_resources()
        dl.docker("node2", "rm", "-f", "c2")
        dl.docker("node2", "network", "rm", "net2")
    with pytest.raises(ResourceNotFound):
        dl.lab.client.get("Profile", "net2")


def test_subnet_network_and_a_chosen_address(dl: DockerLab) -> None:
    dl.network("net3", "--subnet", "10.65.0.0/16")
    try:
        ip = dl.run("node1", "d1", "net3", "--ip", "10.65.0.200")
        assert ip == "10.65.0.200"
        other = dl.run("node2", "d2", "net3")
        assert other.startswith("10.65.1.")
        eventually(lambda: dl.ping("node2", "d2", "10.65.0.200"), 20, "d2 to reach d1")
        taken = dl.docker(
            "node2",
            "run",
            "-d",
            "--name",
            "d3",
            "--net",
            "net3",
            "--ip",
            "10.65.0.200",
            IMAGE,
            "sleep",
            "60",
            check=False,
        )
        assert taken.returncode != 0
        assert (
            "IpamDriver.RequestAddress: IP assignment error: IP 10.65.0.200 is already "
            "assigned" in taken.stderr
        )
        dl.docker("node2", "rm", "-f", "d3", check=False)
    finally:
        for node, name in (("node1", "d1"), ("node2", "d2")):
            dl.docker(node, "rm", "-f", name, check=False)
        for node in ("node1", "node2"):
            dl.docker(node, "network", "rm", "net3", check=False)
    bad = dl.docker(
        "node1",
        "network",
        "create",
        "--driver",
        "tortie",
        "--ipam-driver",
        "tortie-ipam",
        "--subnet",
        "10.99.0.0/16",
        "bad",
        check=False,
    )
    assert bad.returncode != 0
    assert (
        "IpamDriver.RequestPool: The requested subnet 10.99.0.0/16 must match the CIDR "
        "of a configured Tortie IP Pool" in bad.stderr
    )
    internal = dl.docker(
        "node1",
        "network",
        "create",
        "--driver",
        "tortie",
        "--ipam-driver",
        "tortie-ipam",
        "--internal",
        "bad",
        check=False,
    )
    assert (
        "NetworkDriver.CreateNetwork: Tortie driver does not support the flag --internal."
        in internal.stderr
    )


def test_rm_frees_the_address_and_the_endpoint(dl: DockerLab, net1: dict[str, str]) -> None:
    ip = dl.run("node1", "gone", "net1")
    wep = dl.wep("node1", "gone", "net1")
    assert dl.ipam.get_assignment_attributes(ip)
    dl.docker("node1", "rm", "-f", "gone")
    with pytest.raises(ResourceNotFound):
        dl.lab.client.get("WorkloadEndpoint", wep.name, "libnetwork")
    with pytest.raises(AddressNotAssigned):
        dl.ipam.get_assignment_attributes(ip)
    links = dl.lab.exec("node1", ["ip", "-o", "link"]).stdout
    assert wep.spec.interface_name not in links


def test_network_rm_removes_the_profile(dl: DockerLab, net1: dict[str, str]) -> None:
    for node, name in (("node1", "a1"), ("node2", "b1")):
        dl.docker(node, "rm", "-f", name)
    dl.docker("node1", "network", "rm", "net1")
    dl.docker("node2", "network", "rm", "net1")
    with pytest.raises(ResourceNotFound):
        dl.lab.client.get("Profile", "net1")
    assert [w.name for w in dl.lab.client.list("WorkloadEndpoint").items] == []


def test_docker_failures_are_clear_and_quick(dl: DockerLab) -> None:
    workdir = str(dl.nodes["node1"].dir.parent)
    with pytest.raises(ld.DockerError, match="a dockerd already answers"):
        ld.start_dockerd(dl.lab, "node1", workdir)
    # A daemon that cannot start (its pid file names a live process) fails fast, with its log.
    other = tempfile.mkdtemp(prefix="tdk", dir="/tmp")
    try:
        os.makedirs(f"{other}/node1")
        with open(f"{other}/node1/docker.pid", "w") as fh:
            fh.write(str(os.getpid()))
        t0 = time.monotonic()
        with pytest.raises(ld.DockerError, match=r"(?s)exited with code.*pid file found"):
            ld.start_dockerd(dl.lab, "node1", other, timeout=20)
        assert time.monotonic() - t0 < 10
    finally:
        shutil.rmtree(other, ignore_errors=True)
    with pytest.raises(ld.DockerError, match="too long"):
        ld.start_dockerd(dl.lab, "node1", "/tmp/" + "x" * 80)
    # The running daemon is untouched.
    assert dl.docker("node1", "info", "--format", "{{.ServerVersion}}").stdout.strip()


def test_without_the_plugin_docker_says_so(dl: DockerLab) -> None:
    """Docker itself retries an absent plugin for ~15 s, then fails; the lab says why."""
    dn = dl.nodes["node1"]
    dn.stop_plugin()
    try:
        t0 = time.monotonic()
        with pytest.raises(ld.DockerError, match="tortie-libnetwork is not running on node1"):
            dl.network("net4", nodes=("node1",))
        assert time.monotonic() - t0 < 40
    finally:
        ld.start_libnetwork(dn)
    dl.network("net4", nodes=("node1",))
    dl.docker("node1", "network", "rm", "net4")
