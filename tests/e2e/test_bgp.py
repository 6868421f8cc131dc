"""BGP with real BIRD, real tortie-confd and real Felix in namespace labs: no static routes.

Every cross-node route here is learned by BIRD (``proto bird``) from the other nodes' block
advertisements; Felix plumbs the workloads (/32 routes, proxy ARP). Until IPAM writes block
affinities, the tests write one per node for its workload range (10.65.<i-1>.0/24 in a
10.65.0.0/16 pool with blockSize 24). Calico's production BGP timers are used throughout.

- Mesh (4-node lab; node4's Node resource is only created when it joins): workloads on three
  nodes reach each other; routes are the blocks via the owners' fabric addresses and no /32
  leaks; ``tortiectl node status``; a borrowed address travels as a /32 from the node that
  hosts it; a node whose BIRD stops loses its routes on the others and gets them back; a
  joining node is meshed without restarting anyone; the status file.
- Route reflectors (6-node lab, mesh disabled): one RR and four clients through a
  ``peerSelector`` BGPPeer, then a second RR (RR-to-RR session in the same cluster), then
  the first RR killed: routes stay and new blocks still propagate.
- An external peer (two-subnets lab, mesh disabled): a plain BIRD in the router namespace
  (AS 65000, next hop self) peers over eBGP with each subnet's nodes through ``nodeSelector``
  BGPPeers (``numAllowedLocalASNumbers: 1``); workloads on the two subnets reach each other.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from itertools import permutations
from typing import Any

import pytest

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.confd.lab import LabBGP
from tortie.lab import Lab

POOL = {"cidr": "10.65.0.0/16", "blockSize": 24}
ALLOW_ALL = {
    "order": 10000,
    "types": ["Ingress", "Egress"],
    "ingress": [{"action": "Allow"}],
    "egress": [{"action": "Allow"}],
}


class BGPCluster:
    """A lab with Felix and BGP (confd + BIRD) per node, and the tests' vocabulary."""

    def __init__(self, lab: Lab, log_dir: str) -> None:
        self.lab = lab
        self.felix = FelixLab(lab, log_dir)
        self.bgp = LabBGP(lab)
        self.workloads: dict[str, Any] = {}

    def start_node(self, node: str) -> None:
        block = self.lab.node(node).workload_cidr
        self.bgp.write_affinity(node, block)
        self.felix.start_felix(node)
        self.bgp.start([node])

    def wait_ready(self, nodes: list[str]) -> None:
        for node in nodes:
            eventually(lambda n=node: self.felix.felix_ready(n), 30, f"felix on {node} ready")

    def add_workload(self, node: str, name: str) -> Any:
        self.workloads[name] = self.lab.add_workload(node, name)
        return self.workloads[name]

    def expect_ping(self, src: str, dst: str, ok: bool = True, timeout: float = 20.0) -> None:
        ip = self.workloads[dst].ip
        eventually(
            lambda: self.lab.ping(src, ip, timeout=0.3) == ok,
            timeout,
            f"{src} -> {dst} ({ip}) {'reachable' if ok else 'unreachable'}",
        )

    def route_to(self, node: str, block: str) -> str | None:
        return self.bgp.bird_routes(node).get(block)

    def expect_route(self, node: str, block: str, via: str | None, timeout: float = 20.0) -> None:
        def check() -> bool:
            route = self.route_to(node, block)
            if via is None:
                return route is None
            return route is not None and f"via {via} " in route + " "

        eventually(check, timeout, f"{node}: route to {block} {'via ' + via if via else 'gone'}")

    def node_status(self, node: str) -> str:
        argv = [
            sys.executable,
            "-m",
            "tortie.ctl.main",
            "node",
            "status",
            "--bird-socket",
            self.bgp.nodes[node].socket,
        ]
        proc = self.lab.exec(node, argv, env=self.lab.ctl_env())
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def close(self) -> None:
        self.bgp.stop()
        for node in list(self.felix.felix):
            try:
                self.felix.stop_felix(node)
            except Exception:
                pass
        self.lab.down()


def _cluster(tmp_path_factory: pytest.TempPathFactory, nodes: int) -> BGPCluster:
    lab = Lab(nodes=nodes, static_route=False, host_sysctls=False)
    lab.up()
    cluster = BGPCluster(lab, str(tmp_path_factory.mktemp("bgp-logs")))
    try:
        lab.client.apply(resource("IPPool", "default-ipv4-ippool", POOL))
        lab.client.apply(resource("GlobalNetworkPolicy", "allow-all", ALLOW_ALL))
    except BaseException:
        cluster.close()
        raise
    return cluster


def _dump_logs(cluster: BGPCluster) -> None:
    for n in cluster.bgp.nodes.values():
        path = n.dir / "confd.log"
        if path.exists():
            errors = [line for line in path.read_text().splitlines() if "ERROR" in line]
            if errors:
                sys.stderr.write(f"--- confd {n.name} errors:\n" + "\n".join(errors[-10:]) + "\n")


# --- node-to-node mesh ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BGPCluster]:
    cluster = _cluster(tmp_path_factory, 4)
    try:
        cluster.lab.client.delete("Node", "node4")  # joins later
        for node in ("node1", "node2", "node3"):
            cluster.start_node(node)
        cluster.wait_ready(["node1", "node2", "node3"])
        for node in ("node1", "node2", "node3"):
            cluster.add_workload(node, f"wl-{node}")
        yield cluster
    finally:
        _dump_logs(cluster)
        cluster.close()


def test_mesh_workloads_reach_each_other(mesh: BGPCluster) -> None:
    lab = mesh.lab
    for node in ("node1", "node2", "node3"):
        for other in ("node1", "node2", "node3"):
            if other != node:
                mesh.expect_route(node, lab.node(other).workload_cidr, lab.node(other).ip)
    for src, dst in permutations(("wl-node1", "wl-node2", "wl-node3"), 2):
        mesh.expect_ping(src, dst)
    # Only blocks travel: no workload /32 (Felix's routes) is re-exported to another node.
    routes = mesh.bgp.bird_routes("node1")
    assert not [r for r in routes if r.endswith("/32")], routes
    assert routes.get("blackhole") == f"{lab.node('node1').workload_cidr} metric 32"
    # Nothing but pool routes leaks: no fabric or default route came over BGP.
    assert "default" not in routes and "172.31.0.0/24" not in routes, routes


def test_node_status_shows_the_mesh(mesh: BGPCluster) -> None:
    eventually(lambda: len(mesh.bgp.nodes["node1"].established()) == 2, 20, "node1 sessions")
    out = mesh.node_status("node1")
    lines = out.splitlines()
    assert lines[0] == "Calico process is running."
    assert "IPv4 BGP status" in lines
    assert "| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |" in lines
    for ip in ("172.31.0.12", "172.31.0.13"):
        row = next(line for line in lines if line.startswith(f"| {ip} "))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:3] == ["node-to-node mesh", "up"] and cells[4] == "Established", row
    assert "No IPv6 peers found." in lines
    status = mesh.bgp.nodes["node1"].status()
    assert status["state"] == "ok", status


def test_borrowed_address_is_announced_as_a_host_route(mesh: BGPCluster) -> None:
    # A workload on node2 with an address of node1's block (IPAM borrows when a node's blocks
    # are full): node2's BIRD learns Felix's /32 from the kernel and announces it, since it is
    # in a pool but in none of node2's blocks; it beats node1's block route elsewhere.
    lab = mesh.lab
    mesh.workloads["borrowed"] = lab.add_workload("node2", "borrowed", ip="10.65.0.200")
    for node in ("node1", "node3"):
        mesh.expect_route(node, "10.65.0.200", lab.node("node2").ip, timeout=15)
    mesh.expect_ping("wl-node3", "borrowed")
    mesh.expect_ping("wl-node1", "borrowed")
    lab.remove_workload("borrowed")
    del mesh.workloads["borrowed"]
    mesh.expect_route("node3", "10.65.0.200", None, timeout=15)


def test_node_leaving_withdraws_its_routes(mesh: BGPCluster) -> None:
    lab = mesh.lab
    block3 = lab.node("node3").workload_cidr
    mesh.expect_ping("wl-node1", "wl-node3")
    mesh.bgp.stop_bird("node3")
    try:
        for node in ("node1", "node2"):
            mesh.expect_route(node, block3, None, timeout=10)
        assert lab.ping("wl-node1", mesh.workloads["wl-node3"].ip, timeout=0.5) is False
    finally:
        mesh.bgp.start_bird("node3")
    for node in ("node1", "node2"):
        mesh.expect_route(node, block3, lab.node("node3").ip, timeout=30)
    mesh.expect_ping("wl-node1", "wl-node3")


def test_node_joining_is_meshed_without_restarts(mesh: BGPCluster) -> None:
    lab = mesh.lab
    birds = {n: mesh.bgp.nodes[n].bird.pid for n in ("node1", "node2", "node3")}  # type: ignore[union-attr]
    n4 = lab.node("node4")
    lab.client.apply(resource("Node", "node4", {"bgp": {"ipv4Address": n4.cidr}}))
    mesh.start_node("node4")
    mesh.wait_ready(["node4"])
    mesh.add_workload("node4", "wl-node4")
    for node in ("node1", "node2", "node3"):
        mesh.expect_route(node, n4.workload_cidr, n4.ip, timeout=30)
    mesh.expect_route("node4", lab.node("node1").workload_cidr, lab.node("node1").ip)
    mesh.expect_ping("wl-node4", "wl-node1")
    mesh.expect_ping("wl-node2", "wl-node4")
    assert {n: mesh.bgp.nodes[n].bird.pid for n in birds} == birds  # type: ignore[union-attr]
    eventually(lambda: len(mesh.bgp.nodes["node4"].established()) == 3, 20, "node4 meshed")


# --- route reflectors ----------------------------------------------------------------------------


def _make_rr(lab: Lab, node: str, cluster_id: str = "244.0.0.1") -> None:
    res = lab.client.get("Node", node)
    res.spec.bgp.route_reflector_cluster_id = cluster_id
    res.metadata.labels = {**res.labels, "route-reflector": "true"}
    lab.client.update(res)


@pytest.fixture(scope="module")
def rr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BGPCluster]:
    cluster = _cluster(tmp_path_factory, 6)
    lab = cluster.lab
    try:
        lab.client.apply(resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False}))
        lab.client.apply(
            resource(
                "BGPPeer",
                "peer-with-route-reflectors",
                {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
            )
        )
        _make_rr(lab, "node1")
        for node in ("node1", "node2", "node3", "node4", "node5"):
            cluster.start_node(node)
        cluster.wait_ready(["node2", "node3", "node4", "node5"])
        for node in ("node2", "node3", "node4", "node5"):
            cluster.add_workload(node, f"wl-{node}")
        yield cluster
    finally:
        _dump_logs(cluster)
        cluster.close()


def test_route_reflector_with_four_clients(rr: BGPCluster) -> None:
    lab = rr.lab
    clients = ("node2", "node3", "node4", "node5")
    eventually(lambda: len(rr.bgp.nodes["node1"].established()) == 4, 30, "RR sessions")
    for node in clients:
        # One session each: to the reflector. Routes keep the originator's next hop.
        assert rr.bgp.nodes[node].established() <= {lab.node("node1").ip}
        for other in clients:
            if other != node:
                rr.expect_route(node, lab.node(other).workload_cidr, lab.node(other).ip)
    for src, dst in permutations(("wl-node2", "wl-node3", "wl-node4", "wl-node5"), 2):
        rr.expect_ping(src, dst)
    config = rr.bgp.nodes["node1"].config.read_text()
    assert "rr client;" in config and "rr cluster id 244.0.0.1;" in config
    assert "Mesh_" not in config
    client_view = rr.node_status("node2")
    assert "| 172.31.0.11  | route reflector | up    |" in client_view, client_view
    rr_view = rr.node_status("node1")
    # node6 exists but runs nothing yet: its session waits ("start", not "up").
    assert rr_view.count("| rr client | up    |") == 4, rr_view


def test_second_route_reflector_then_losing_the_first(rr: BGPCluster) -> None:
    lab = rr.lab
    rr1, rr2 = lab.node("node1").ip, lab.node("node6").ip
    _make_rr(lab, "node6")
    rr.start_node("node6")
    # Every client peers with both reflectors; the reflectors peer with each other as plain
    # iBGP peers of one cluster (not as clients).
    for node in ("node2", "node3", "node4", "node5"):
        eventually(
            lambda n=node: rr.bgp.nodes[n].established() == {rr1, rr2}, 30, f"{node} with both RRs"
        )
    eventually(lambda: rr2 in rr.bgp.nodes["node1"].established(), 30, "RR-to-RR session")
    config6 = rr.bgp.nodes["node6"].config.read_text()
    assert config6.count("rr client;") == 4, config6
    # Lose the first reflector without a goodbye.
    rr.bgp.stop_bird("node1", kill=True)
    rr.bgp.stop_confd("node1")
    eventually(lambda: rr1 not in rr.bgp.nodes["node2"].established(), 30,
               "the clients to notice the first reflector is gone")
    rr.expect_ping("wl-node2", "wl-node5")
    # New routes still propagate, through the second reflector.
    new_block = "10.65.200.0/24"
    rr.bgp.write_affinity("node3", new_block)
    rr.workloads["wl-node3-b"] = lab.add_workload("node3", "wl-node3-b", ip="10.65.200.5")
    rr.expect_route("node5", new_block, lab.node("node3").ip, timeout=20)
    rr.expect_ping("wl-node5", "wl-node3-b")


def test_bgp_logs_are_quiet(rr: BGPCluster) -> None:
    for n in rr.bgp.nodes.values():
        log = (n.dir / "confd.log").read_text()
        assert "Traceback" not in log, log
        assert log.count("\n") < 60, f"{n.name}: {log.count(chr(10))} lines of confd log"
    assert os.path.exists(rr.bgp.nodes["node2"].status_file)


# --- an external peer: a top-of-rack router between two subnets --------------------------------

TOR_BIRD = """\
router id 172.31.1.1;
protocol device { scan time 2; }
protocol direct { ipv4; interface "eth-*"; }
protocol kernel {
  ipv4 { import none; export filter { if net ~ 10.65.0.0/16 then accept; reject; }; };
}
template bgp calico_nodes {
  local as 65000;
  ipv4 {
    import filter { if net ~ 10.65.0.0/16 then accept; reject; };
    export filter { if net ~ 10.65.0.0/16 then accept; reject; };
    next hop self;
  };
}
protocol bgp node1 from calico_nodes { neighbor 172.31.1.11 as 64512; }
protocol bgp node2 from calico_nodes { neighbor 172.31.2.11 as 64512; }
"""


@pytest.fixture(scope="module")
def tor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BGPCluster]:
    lab = Lab(nodes=2, topology="two-subnets", static_route=False, host_sysctls=False)
    lab.up()
    cluster = BGPCluster(lab, str(tmp_path_factory.mktemp("bgp-logs")))
    try:
        client = lab.client
        client.apply(resource("IPPool", "default-ipv4-ippool", POOL))
        client.apply(resource("GlobalNetworkPolicy", "allow-all", ALLOW_ALL))
        client.apply(resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False}))
        for node in lab.nodes:
            res = client.get("Node", node.name)
            res.metadata.labels = {"subnet": node.subnet}
            client.update(res)
            gateway = lab.plan.router.links[node.subnet][2].split("/")[0]  # type: ignore[union-attr]
            spec = {
                "nodeSelector": f"subnet == '{node.subnet}'",
                "peerIP": gateway,
                "asNumber": 65000,
                # Every node has AS 64512: routes from the other subnet come back through
                # AS 65000 with 64512 already in their path.
                "numAllowedLocalASNumbers": 1,
            }
            client.apply(resource("BGPPeer", f"tor-{node.subnet}", spec))
        cluster.bgp.start_external("router", TOR_BIRD)
        for node in ("node1", "node2"):
            cluster.start_node(node)
        cluster.wait_ready(["node1", "node2"])
        for node in ("node1", "node2"):
            cluster.add_workload(node, f"wl-{node}")
        yield cluster
    finally:
        _dump_logs(cluster)
        cluster.close()


def test_external_peer_routes_between_subnets(tor: BGPCluster) -> None:
    lab = tor.lab
    n1, n2 = lab.node("node1"), lab.node("node2")
    # The router learned both blocks over eBGP and routes them.
    tor.expect_route("router", n1.workload_cidr, n1.ip)
    tor.expect_route("router", n2.workload_cidr, n2.ip)
    # Each node learned the other's block from the router, next hop the router.
    tor.expect_route("node1", n2.workload_cidr, n1.gateway)
    tor.expect_route("node2", n1.workload_cidr, n2.gateway)
    tor.expect_ping("wl-node1", "wl-node2")
    tor.expect_ping("wl-node2", "wl-node1")
    config = tor.bgp.nodes["node1"].config.read_text()
    assert "protocol bgp Node_172_31_1_1 from bgp_template" in config
    assert "allow local as 1;" in config
    assert "calico_export_to_bgp_peers(false);" in config  # eBGP
    status = tor.node_status("node1")
    assert "| 172.31.1.1   | node specific | up    |" in status, status
