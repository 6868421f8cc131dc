"""tortie-node in namespace labs: start-up, supervision, readiness, policy-only mode.

- **BIRD backend** (3-node lab): each node runs ``tortie-node`` (``IP_AUTODETECTION_METHOD=
  interface=eth0``), which writes its Node with the autodetected fabric address, creates the
  default pool once (``CALICO_IPV4POOL_CIDR=10.65.0.0/16``, block size 24, so the lab's
  per-node workload ranges are blocks) and runs Felix, confd and BIRD. Each node's block
  affinity is written as IPAM records it (as in test_bgp); workloads on all nodes reach each
  other over BIRD's routes. Readiness goes
  ready once BGP is up, and names the peer while it is not; a SIGKILLed Felix is restarted;
  SIGTERM stops tortie-node leaving no process in the node's namespace; a second node with
  the same address is refused; ``tortiectl node status`` and ``node diags`` on a running node.
- **Policy only** (2-node lab): ``tortiectl node run --backend none`` starts tortie-node
  detached; only Felix runs (no confd, no BIRD, no BIRD routes, no BGP details on the Node),
  and Felix enforces policy between workloads whose routes come from elsewhere (the lab's
  static routes stand in for another network provider).
- **VXLAN backend** (2-node lab): the default pool is created with ``vxlanMode: Always``;
  each tortie-node gets a tunnel address through IPAM and writes it with its VTEP MAC on the
  Node; Felix alone routes the other node's block through ``vxlan.calico``; once the pool no
  longer uses VXLAN the addresses are released, the fields cleared and Felix restarted.

Every node also runs the node's CNI daemon (``cni``), whatever the backend.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tarfile
import time
from collections.abc import Iterator
from itertools import permutations
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import eventually, resource
from tortie.confd.lab import LabBGP
from tortie.lab import Lab
from tortie.lab import netns as lab_netns
from tortie.lab.nodes import NodeRunner

ALLOW_ALL = {
    "order": 10000,
    "types": ["Ingress", "Egress"],
    "ingress": [{"action": "Allow"}],
    "egress": [{"action": "Allow"}],
}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class NodeCluster(NodeRunner):
    """A lab whose nodes run tortie-node (`tortie.lab.nodes.NodeRunner`), and the tests'
    vocabulary."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(
            lab,
            CALICO_IPV4POOL_BLOCK_SIZE="24",
            FELIX_IPTABLESREFRESHINTERVAL="3",
            FELIX_ROUTEREFRESHINTERVAL="3",
            FELIX_IPSETSREFRESHINTERVAL="3",
        )
        self.workloads: dict[str, Any] = {}

    def status(self, node: str) -> dict[str, Any]:
        try:
            return json.loads((self.dir(node) / "run" / "tortie-node.json").read_text())
        except (OSError, ValueError):
            return {}

    def child_pid(self, node: str, service: str) -> int | None:
        return self.status(node).get("services", {}).get(service, {}).get("pid")

    def processes_in(self, node: str) -> list[int]:
        inode = lab_netns.namespace_inode(self.lab.node(node).netns)
        return lab_netns.pids_in_namespaces([inode]) if inode else []

    def close(self) -> None:
        self.stop_all()
        self.lab.down()

    def dump_errors(self) -> None:
        for line in self.errors()[-30:]:
            sys.stderr.write(line + "\n")

    # --- traffic -------------------------------------------------------------------------------
    def add_workload(self, node: str, name: str, **kw: Any) -> Any:
        self.workloads[name] = self.lab.add_workload(
            node, name, static_route=False, host_sysctls=False, **kw
        )
        return self.workloads[name]

    def expect_ping(self, src: str, dst: str, ok: bool = True, timeout: float = 20.0) -> None:
        ip = self.workloads[dst].ip
        eventually(
            lambda: self.lab.ping(src, ip, timeout=0.3) == ok,
            timeout,
            f"{src} -> {dst} ({ip}) {'reachable' if ok else 'unreachable'}",
        )

    def bird_routes(self, node: str) -> dict[str, str]:
        out = self.lab.exec(node, ["ip", "-4", "route", "show", "proto", "bird"]).stdout
        return {line.split()[0]: line for line in out.splitlines() if line.strip()}


# --- the BIRD backend ----------------------------------------------------------------------------

NODES = ["node1", "node2", "node3"]


@pytest.fixture(scope="module")
def bird_cluster() -> Iterator[NodeCluster]:
    lab = Lab(nodes=3, static_route=False, host_sysctls=False)
    lab.up()
    cluster = NodeCluster(lab)
    try:
        for node in NODES:  # tortie-node creates them
            lab.client.delete("Node", node)
        lab.client.apply(resource("GlobalNetworkPolicy", "allow-all", ALLOW_ALL))
        for node in NODES:
            cluster.start(node)
        cluster.wait_ready(NODES)
        bgp = LabBGP(lab)  # only its datastore helper: each node's block, as IPAM records it
        for node in NODES:
            bgp.write_affinity(node, lab.node(node).workload_cidr)
            cluster.add_workload(node, f"wl-{node}")
        yield cluster
    finally:
        cluster.dump_errors()
        cluster.close()


def test_nodes_pools_and_cluster_defaults(bird_cluster: NodeCluster) -> None:
    lab = bird_cluster.lab
    for node in NODES:
        res = lab.client.get("Node", node)
        assert res.spec.bgp.ipv4_address == lab.node(node).cidr  # autodetected on eth0
        assert (bird_cluster.dir(node) / "nodename").read_text() == node
    pools = [p for p in lab.client.list("IPPool").items if p.spec.network.version == 4]
    assert [(p.name, p.spec.cidr, p.spec.block_size) for p in pools] == [
        ("default-ipv4-ippool", "10.65.0.0/16", 24)
    ]
    assert len([p for p in lab.client.list("IPPool").items if p.spec.network.version == 6]) <= 1
    info = lab.client.get("ClusterInformation", "default").spec
    assert info.datastore_ready is True and len(info.cluster_guid) == 32
    assert (
        lab.client.get("FelixConfiguration", "node.node2").spec.default_endpoint_to_host_action
        == "Return"
    )
    for node in NODES:
        services = bird_cluster.status(node)["services"]
        assert sorted(services) == ["bird", "cni", "confd", "felix"]
        assert all(s["state"] == "running" for s in services.values()), services


def test_workloads_reach_each_other_over_bgp(bird_cluster: NodeCluster) -> None:
    lab = bird_cluster.lab
    for node in NODES:
        for other in NODES:
            if other != node:
                block = lab.node(other).workload_cidr
                eventually(
                    lambda n=node, b=block, o=other: (
                        f"via {lab.node(o).ip} " in bird_cluster.bird_routes(n).get(b, "") + " "
                    ),
                    20,
                    f"{node}: BIRD route to {block}",
                )
    for src, dst in permutations(["wl-node1", "wl-node2", "wl-node3"], 2):
        bird_cluster.expect_ping(src, dst)


def test_node_status_and_diags(bird_cluster: NodeCluster, tmp_path: Path) -> None:
    lab = bird_cluster.lab
    env = bird_cluster.env("node1")
    env["BIRD_CTL"] = str(bird_cluster.dir("node1") / "run" / "bird.ctl")
    ctl = [sys.executable, "-m", "tortie.ctl.main", "node"]
    status = lab.exec("node1", [*ctl, "status"], env=env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("Calico process is running.")
    assert "172.31.0.12" in status.stdout and "Established" in status.stdout
    diags = lab.exec("node1", [*ctl, "diags", "--dir", str(tmp_path)], env=env, timeout=120)
    assert diags.returncode == 0, diags.stderr
    assert "Diags saved to" in diags.stdout
    tarball = next(tmp_path.glob("tortie-diags*/diags-*.tar.gz"))
    with tarfile.open(tarball) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        nodes_yaml = tar.extractfile(
            next(m for m in tar.getmembers() if m.name.endswith("resources/nodes.yaml"))
        )
        assert nodes_yaml is not None and b"172.31.0.11/24" in nodes_yaml.read()
    for expected in (
        "ipv4_route",
        "ipv4_tables",
        "ipsets",
        "bird_protocols",
        "logs/felix/current",
        "logs/bird/current",
        "logs/confd/current",
        "logs/node/current",
        "tortie-node/tortie-node.json",
        "tortie-node/bird.cfg",
    ):
        assert expected in names, (expected, sorted(names))


def test_killed_felix_is_restarted(bird_cluster: NodeCluster) -> None:
    first = bird_cluster.child_pid("node2", "felix")
    assert first is not None and alive(first)
    os.kill(first, signal.SIGKILL)
    second = eventually(
        lambda: (p := bird_cluster.child_pid("node2", "felix")) not in (None, first) and p,
        15,
        "felix restarted",
    )
    assert alive(second) and not alive(first)
    felix = bird_cluster.status("node2")["services"]["felix"]
    assert felix["restarts"] >= 1 and felix["last_exit"] == -signal.SIGKILL
    bird_cluster.wait_ready(["node2"], timeout=30)
    bird_cluster.expect_ping("wl-node1", "wl-node2")


def test_readiness_names_the_peer_that_is_down(bird_cluster: NodeCluster) -> None:
    lab = bird_cluster.lab
    uid = lab.client.get("Node", "node3").metadata.uid
    pids = [p["pid"] for p in bird_cluster.status("node3")["services"].values()]
    assert bird_cluster.stop("node3") == 0
    # SIGTERM: every child stopped, nothing left in the node's namespace.
    assert not [p for p in pids if alive(p)]
    assert bird_cluster.processes_in("node3") == []
    assert bird_cluster.status("node3")["phase"] == "stopped"

    def not_ready_naming_node3() -> bool:
        check = bird_cluster.check_ready("node1")
        return check.returncode == 1 and "BGP not established with 172.31.0.13" in check.stdout

    eventually(not_ready_naming_node3, 30, "node1 unready, naming 172.31.0.13")
    bird_cluster.start("node3")
    bird_cluster.wait_ready(["node3", "node1"])
    assert lab.client.get("Node", "node3").metadata.uid == uid  # updated, not recreated
    bird_cluster.expect_ping("wl-node1", "wl-node3")


def test_second_node_with_the_same_address_is_refused(bird_cluster: NodeCluster) -> None:
    lab = bird_cluster.lab
    d = bird_cluster.dir("intruder")
    env = bird_cluster.env(
        "node2",
        NODENAME="intruder",
        CALICO_NODENAME_FILE=str(d / "nodename"),
        TORTIE_RUN_DIR=str(d / "run"),
        TORTIE_LOG_DIR=str(d / "log"),
    )
    proc = lab.exec("node2", [sys.executable, "-m", "tortie.node.daemon", "--startup"], env=env)
    assert proc.returncode == 1
    assert "Calico node 'node2' is already using the IPv4 address 172.31.0.12/24." in proc.stderr
    assert "intruder" not in {n.name for n in lab.client.list("Node").items}
    assert json.loads((d / "run" / "tortie-node.json").read_text())["phase"] == "failed"


# --- policy only ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_cluster() -> Iterator[NodeCluster]:
    lab = Lab(nodes=2, static_route=False, host_sysctls=False)
    lab.up()
    cluster = NodeCluster(lab)
    pids: list[int] = []
    try:
        for node in ("node1", "node2"):
            lab.client.delete("Node", node)
            env = cluster.env(node)
            run = lab.exec(
                node,
                [
                    sys.executable,
                    "-m",
                    "tortie.ctl.main",
                    "node",
                    "run",
                    "--backend",
                    "none",
                    "--name",
                    node,
                    "--log-dir",
                    env["TORTIE_LOG_DIR"],
                    "--disable-docker-networking",
                    "--timeout",
                    "60",
                ],
                env=env,
                timeout=90,
            )
            assert run.returncode == 0, run.stdout + run.stderr
            assert "tortie-node started successfully." in run.stdout
            pids.append(int((cluster.dir(node) / "run" / "tortie-node.pid").read_text()))
        lab.static_routes()  # another network provider's routes: Tortie only does policy
        lab.client.apply(
            resource(
                "GlobalNetworkPolicy",
                "servers",
                {
                    "selector": "role == 'server'",
                    "types": ["Ingress", "Egress"],
                    "ingress": [{"action": "Allow", "source": {"selector": "role == 'client'"}}],
                    "egress": [{"action": "Allow"}],
                },
            )
        )
        lab.client.apply(
            resource(
                "GlobalNetworkPolicy",
                "others",
                {
                    "selector": "role != 'server'",
                    "types": ["Ingress", "Egress"],
                    "ingress": [{"action": "Allow"}],
                    "egress": [{"action": "Allow"}],
                },
            )
        )
        cluster.add_workload("node1", "server", labels={"role": "server"})
        cluster.add_workload("node2", "client", labels={"role": "client"})
        cluster.add_workload("node2", "stranger", labels={"role": "stranger"})
        yield cluster
    finally:
        for pid in pids:  # started detached by tortiectl: stop them by PID
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        cluster.dump_errors()
        cluster.close()


def test_policy_only_runs_felix_alone(policy_cluster: NodeCluster) -> None:
    lab = policy_cluster.lab
    policy_cluster.wait_ready(["node1", "node2"])
    for node in ("node1", "node2"):
        assert sorted(policy_cluster.status(node)["services"]) == ["cni", "felix"]
        assert policy_cluster.status(node)["backend"] == "none"
        commands = [
            Path(f"/proc/{p}/cmdline").read_bytes() for p in policy_cluster.processes_in(node)
        ]
        assert not [c for c in commands if b"bird" in c or b"tortie.confd" in c], commands
        assert policy_cluster.bird_routes(node) == {}
        assert lab.client.get("Node", node).spec.bgp is None  # no BGP details in policy-only mode
    policy_cluster.expect_ping("client", "server")
    policy_cluster.expect_ping("stranger", "server", ok=False)
    policy_cluster.expect_ping("server", "stranger")  # server egress allowed, replies allowed


# --- VXLAN backend -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vxlan_cluster() -> Iterator[NodeCluster]:
    lab = Lab(nodes=2, static_route=False, host_sysctls=False)
    lab.up()
    cluster = NodeCluster(lab)
    try:
        for node in ("node1", "node2"):
            lab.client.delete("Node", node)
        lab.client.apply(resource("GlobalNetworkPolicy", "allow-all", ALLOW_ALL))
        for node in ("node1", "node2"):
            cluster.start(node, CALICO_NETWORKING_BACKEND="vxlan", CALICO_IPV4POOL_VXLAN="Always")
        cluster.wait_ready(["node1", "node2"])
        yield cluster
    finally:
        cluster.dump_errors()
        cluster.close()


def test_vxlan_backend_allocates_vteps_and_felix_routes(vxlan_cluster: NodeCluster) -> None:
    import ipaddress

    from tortie.node.tunnel import vtep_mac

    lab = vxlan_cluster.lab
    pool = lab.client.get("IPPool", "default-ipv4-ippool").spec
    assert (pool.cidr, pool.vxlan_mode) == ("10.65.0.0/16", "Always")
    vteps = {}
    for node in ("node1", "node2"):
        assert sorted(vxlan_cluster.status(node)["services"]) == ["cni", "felix"]  # no BIRD
        spec = eventually(
            lambda n=node: (s := lab.client.get("Node", n).spec).ipv4_vxlan_tunnel_addr and s,
            20,
            f"{node}'s VXLAN tunnel address",
        )
        assert ipaddress.ip_address(spec.ipv4_vxlan_tunnel_addr) in ipaddress.ip_network(pool.cidr)
        assert spec.vxlan_tunnel_mac_addr == vtep_mac(node)
        vteps[node] = spec.ipv4_vxlan_tunnel_addr
    # Workloads take addresses from the block their node's tunnel address came from.
    for node, vtep in vteps.items():
        block = ipaddress.ip_network(f"{vtep}/24", strict=False)
        vxlan_cluster.add_workload(node, f"vx-{node}", ip=str(block.network_address + 10))
    block2 = ipaddress.ip_network(f"{vteps['node2']}/24", strict=False)
    eventually(
        lambda: (
            f"{block2} via {vteps['node2']} dev vxlan.calico"
            in lab.exec("node1", ["ip", "route"]).stdout
        ),
        20,
        "node1: route to node2's block through vxlan.calico",
    )
    mac = lab.exec("node1", ["ip", "-d", "link", "show", "vxlan.calico"]).stdout
    assert vtep_mac("node1") in mac
    vxlan_cluster.expect_ping("vx-node1", "vx-node2")
    vxlan_cluster.expect_ping("vx-node2", "vx-node1")
    assert vxlan_cluster.bird_routes("node1") == {}

    # No VXLAN pool any more: the tunnel addresses are released and the Node fields cleared.
    from tortie.datastore import keys
    from tortie.datastore.backend import KeyNotFound

    res = lab.client.get("IPPool", "default-ipv4-ippool")
    res.spec.vxlan_mode = "Never"
    lab.client.update(res)
    for node in ("node1", "node2"):
        eventually(
            lambda n=node: lab.client.get("Node", n).spec.ipv4_vxlan_tunnel_addr is None,
            20,
            f"{node}'s tunnel address released",
        )
        assert lab.client.get("Node", node).spec.vxlan_tunnel_mac_addr is None
        with pytest.raises(KeyNotFound):
            lab.client.backend.get(keys.handle_key(f"vxlan-tunnel-addr-{node}"))
    # Felix is restarted without FELIX_VXLANENABLED, and comes back ready.
    eventually(
        lambda: vxlan_cluster.status("node1")["services"]["felix"]["restarts"] >= 1,
        20,
        "felix restarted on node1",
    )
    vxlan_cluster.wait_ready(["node1", "node2"], timeout=30)
