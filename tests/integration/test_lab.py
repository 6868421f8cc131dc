"""The namespace lab (`tortie.lab`): fabrics, workloads, etcd resources, teardown, crashes, CLI.

Root tests build real labs. Every lab a test makes is torn down by a fixture finalizer even
when the test fails, and the module ends by checking that none of its namespaces, processes
or state directories are left. Waits poll against deadlines (`wait_for`, `wait_ping`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tortie.lab import netns, state
from tortie.lab.cluster import Lab, cleanup_stale, down_lab, fabric_batches, static_route_batches
from tortie.lab.topology import plan
from tortie.lab.workload import HOST_MAC, veth_name, wep_name

REPO = Path(__file__).resolve().parents[2]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("etcd"),
    reason="needs root, iproute2 and etcd",
)

# Every lab id used by this module, so the final check can prove nothing is left behind.
_USED_IDS: list[str] = []


def _new_id() -> str:
    lab_id = "t" + secrets.token_hex(2)
    _USED_IDS.append(lab_id)
    return lab_id


def _leftovers(lab_id: str) -> list[str]:
    left = [f"netns {n}" for n in os.listdir(netns.NETNS_DIR) if n.startswith(f"tl{lab_id}-")]
    if state.lab_dir(lab_id).exists():
        left.append(f"state dir {state.lab_dir(lab_id)}")
    with open("/proc/self/mountinfo") as fh:
        left += [f"mount {line.split()[4]}" for line in fh if f"/tl{lab_id}-" in line]
    return left


@pytest.fixture(scope="module", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    yield
    if os.geteuid() != 0:
        return
    left = []
    for lab_id in _USED_IDS:
        down_lab(lab_id)  # no-op when the test already cleaned up
        left += _leftovers(lab_id)
    assert not left, f"labs left things behind: {left}"


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Build labs that are torn down after the test, whatever happens."""
    labs: list[Lab] = []

    def make(**kw: object) -> Lab:
        lab = Lab(lab_id=_new_id(), **kw)  # type: ignore[arg-type]
        labs.append(lab)
        return lab.up()

    yield make
    for lab in labs:
        lab.down()


@pytest.fixture(scope="module")
def flat() -> Iterator[Lab]:
    """Two nodes on one L2 segment, a workload on each, static routes between them."""
    if os.geteuid() != 0 or not shutil.which("etcd"):
        pytest.skip("needs root and etcd")
    lab = Lab(nodes=2, topology="flat", lab_id=_new_id())
    try:
        lab.up()
        lab.add_workload("node1", "web-1", labels={"app": "web"})
        lab.add_workload(
            "node2",
            "db-1",
            namespace="prod",
            labels={"app": "db"},
            profiles=["kns.prod"],
            ports=[{"name": "pg", "protocol": "TCP", "port": 5432}],
        )
        lab.static_routes()
        yield lab
    finally:
        lab.down()


# ---------------------------------------------------------------------------------------------
# Pure: names and plans


def test_calico_names() -> None:
    assert veth_name("default", "web-1") == (
        "cali" + hashlib.sha1(b"default.web-1").hexdigest()[:11]
    )
    assert len(veth_name("a-very-long-namespace", "and-pod")) == 15
    assert wep_name("node-1", "my-pod") == "node--1-k8s-my--pod-eth0"
    assert wep_name("node1", "web") == "node1-k8s-web-eth0"


def test_plans() -> None:
    p = plan("ab12", 3, "flat")
    assert [n.cidr for n in p.nodes] == ["172.31.0.11/24", "172.31.0.12/24", "172.31.0.13/24"]
    assert {n.gateway for n in p.nodes} == {"172.31.0.1"} and p.etcd.ip == "172.31.0.2"
    assert p.namespaces == [
        "tlab12-fabric",
        "tlab12-etcd",
        "tlab12-node1",
        "tlab12-node2",
        "tlab12-node3",
    ]
    assert all("ab12" in line for line in fabric_batches(p)["tlab12-fabric"] if "add" in line)
    q = plan("ab12", 3, "two-subnets")
    assert [(n.subnet, n.cidr, n.gateway) for n in q.nodes] == [
        ("a", "172.31.1.11/24", "172.31.1.1"),
        ("a", "172.31.1.12/24", "172.31.1.1"),
        ("b", "172.31.2.11/24", "172.31.2.1"),
    ]
    routes = static_route_batches(q)
    assert "route replace 10.65.2.0/24 via 172.31.1.1" in routes["tlab12-node1"]
    assert "route replace 10.65.1.0/24 via 172.31.1.12" in routes["tlab12-node1"]
    assert "route replace 10.65.2.0/24 via 172.31.2.11" in routes["tlab12-router"]
    with pytest.raises(ValueError):
        plan("BAD!", 2)
    with pytest.raises(ValueError):
        plan("ab12", ["etcd"])


# ---------------------------------------------------------------------------------------------
# A flat lab


@needs_root
@pytest.mark.root
def test_flat_nodes_ping_over_fabric(flat: Lab) -> None:
    n1, n2 = flat.nodes
    flat.wait_ping("node1", n2.ip)
    flat.wait_ping("node2", n1.ip)
    flat.wait_ping("node1", flat.plan.etcd.ip)
    forward = flat.exec("node1", ["cat", "/proc/sys/net/ipv4/ip_forward"], check=True)
    assert forward.stdout.strip() == "1"
    assert "default via 172.31.0.1" in flat.exec("node1", ["ip", "route"]).stdout
    # Nothing of the lab leaks into the root namespace.
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert flat.lab_id not in root_links and "cali" not in root_links


@needs_root
@pytest.mark.root
def test_workload_plumbing(flat: Lab) -> None:
    w = flat.workload("web-1")
    assert w.host_if == veth_name("default", "web-1") and w.wep == "node1-k8s-web--1-eth0"
    inside = flat.exec("web-1", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert f"{w.ip}/32" in inside
    routes = flat.exec("web-1", ["ip", "route"]).stdout.splitlines()
    assert "default via 169.254.1.1 dev eth0" in [r.strip() for r in routes]
    assert "169.254.1.1 dev eth0 scope link" in [r.strip() for r in routes]
    assert w.mac in flat.exec("web-1", ["ip", "-o", "link", "show", "dev", "eth0"]).stdout
    host = flat.exec("node1", ["ip", "-o", "link", "show", "dev", w.host_if]).stdout
    assert HOST_MAC in host and "UP" in host
    assert f"{w.ip} dev {w.host_if} scope link" in flat.exec("node1", ["ip", "route"]).stdout
    proxy = flat.exec("node1", ["cat", f"/proc/sys/net/ipv4/conf/{w.host_if}/proxy_arp"])
    assert proxy.stdout.strip() == "1"
    # The workload reaches its node through the proxy-ARP'd gateway.
    flat.wait_ping("web-1", flat.node("node1").ip)
    neigh = flat.exec("web-1", ["ip", "neigh", "show", "169.254.1.1"]).stdout
    assert HOST_MAC in neigh


@needs_root
@pytest.mark.root
def test_cross_node_workloads_with_static_routes(flat: Lab) -> None:
    web, db = flat.workload("web-1"), flat.workload("prod/db-1")
    flat.wait_ping("web-1", db.ip)
    flat.wait_ping("db-1", web.ip)


@needs_root
@pytest.mark.root
def test_resources_in_etcd(flat: Lab) -> None:
    nodes = {n.name: n for n in flat.client.list("Node").items}
    assert set(nodes) == {"node1", "node2"}
    assert nodes["node2"].spec.bgp.ipv4_address == "172.31.0.12/24"
    weps = {(w.metadata.namespace, w.name): w for w in flat.client.list("WorkloadEndpoint").items}
    assert set(weps) == {("default", "node1-k8s-web--1-eth0"), ("prod", "node2-k8s-db--1-eth0")}
    db = weps[("prod", "node2-k8s-db--1-eth0")]
    assert db.metadata.labels["app"] == "db"
    assert db.spec.orchestrator == "k8s" and db.spec.node == "node2" and db.spec.pod == "db-1"
    assert db.spec.endpoint == "eth0" and db.spec.interface_name == veth_name("prod", "db-1")
    assert db.spec.ip_networks == [f"{flat.workload('db-1').ip}/32"]
    assert db.spec.profiles == ["kns.prod"] and db.spec.ports[0].port == 5432
    # ...and tortiectl sees the same, run inside the lab as a user would.
    out = flat.ctl(["get", "workloadendpoints", "-A", "-o", "json"])
    assert out.returncode == 0, out.stderr
    assert "node2-k8s-db--1-eth0" in out.stdout


@needs_root
@pytest.mark.root
def test_add_and_remove_workload(flat: Lab) -> None:
    w = flat.add_workload("node2", "tmp", ip="10.65.1.200")
    assert netns.namespace_exists(w.netns)
    flat.wait_ping("web-1", w.ip)
    flat.remove_workload("tmp")
    assert not netns.namespace_exists(w.netns)
    assert w.host_if not in flat.exec("node2", ["ip", "link"]).stdout
    names = [x.name for x in flat.client.list("WorkloadEndpoint", "default").items]
    assert w.wep not in names
    assert "default/tmp" not in state.load(flat.lab_id).workloads  # type: ignore[union-attr]


@needs_root
@pytest.mark.root
def test_without_proxy_arp_workload_cannot_resolve_gateway(flat: Lab) -> None:
    w = flat.add_workload("node1", "no-parp", host_sysctls=False)
    try:
        proxy = flat.exec("node1", ["cat", f"/proc/sys/net/ipv4/conf/{w.host_if}/proxy_arp"])
        assert proxy.stdout.strip() == "0"
        assert not flat.ping("no-parp", flat.node("node1").ip, timeout=0.5)
    finally:
        flat.remove_workload("no-parp")


@needs_root
@pytest.mark.root
def test_attach_and_status(flat: Lab) -> None:
    other = Lab.attach(flat.lab_id)
    assert {w.key for w in other.workloads} == {"default/web-1", "prod/db-1"}
    st = other.status()
    assert st["phase"] == "up" and all(st["namespaces"].values())
    assert [p["alive"] for p in st["processes"]] == [True]
    assert other.exec("etcd", ["ip", "-o", "-4", "addr"]).stdout.count("172.31.0.2/24") == 1


# ---------------------------------------------------------------------------------------------
# Two subnets, teardown, crashes


@needs_root
@pytest.mark.root
def test_two_subnets_route_via_router(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=3, topology="two-subnets")
    n1, n2, n3 = lab.nodes
    assert (n1.subnet, n2.subnet, n3.subnet) == ("a", "a", "b")
    lab.wait_ping("node1", n3.ip)
    lab.wait_ping("node3", lab.plan.etcd.ip)
    route = lab.exec("node1", ["ip", "route", "get", n3.ip]).stdout
    assert "via 172.31.1.1" in route
    a = lab.add_workload("node1", "a")
    b = lab.add_workload("node3", "b")
    lab.static_routes()
    lab.wait_ping("a", b.ip)
    trace = lab.exec("router", ["ip", "route", "get", b.ip]).stdout
    assert f"via {n3.ip}" in trace
    assert lab.client.get("Node", "node3").spec.bgp.ipv4_address == "172.31.2.11/24"
    assert a.ip.startswith("10.65.0.")


@needs_root
@pytest.mark.root
def test_down_leaves_nothing(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=2)
    lab.add_workload("node1", "w")
    server = lab.spawn("w", ["sleep", "300"], name="sleeper")
    etcd_pid = lab.state.processes[0].pid  # type: ignore[union-attr]
    # A process the lab did not record (e.g. left by `lab exec`): swept by namespace.
    stray = subprocess.Popen(netns.nsenter_argv(lab.plan.nodes[1].netns, ["sleep", "300"]))
    lab.down()
    server.wait(5)
    stray.wait(5)
    assert netns.process_start_time(etcd_pid) is None
    assert _leftovers(lab.lab_id) == []
    lab.down()  # idempotent


def _start_crashing_lab(lab_id: str, env: dict[str, str]) -> subprocess.Popen[str]:
    code = (
        "import sys\n"
        "from tortie.lab import Lab\n"
        f"lab = Lab(nodes=2, lab_id={lab_id!r}).up()\n"
        "lab.add_workload('node1', 'orphan')\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        proc.kill()
        proc.wait()
        pytest.fail(f"lab subprocess did not come up: {line!r}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return proc


@needs_root
@pytest.mark.root
def test_crashed_lab_is_cleaned_by_cleanup_stale() -> None:
    lab_id = _new_id()
    _start_crashing_lab(lab_id, {})
    st = state.load(lab_id)
    assert st is not None and not state.owner_alive(st)
    etcd_pid = st.processes[0].pid
    assert netns.process_start_time(etcd_pid) is not None  # orphaned, still running
    assert all(netns.namespace_exists(ns) for ns in st.namespaces)
    assert lab_id in cleanup_stale()
    assert netns.process_start_time(etcd_pid) is None
    assert _leftovers(lab_id) == []


@needs_root
@pytest.mark.root
def test_crashed_lab_is_cleaned_by_cli_down_all(tmp_path: Path) -> None:
    # A private state root, so `--all` cannot touch labs of anyone else on this machine.
    env = {"TORTIE_LAB_ROOT": str(tmp_path / "labs")}
    lab_id = _new_id()
    _start_crashing_lab(lab_id, env)
    cli = [sys.executable, "-m", "tortie.ctl.lab"]
    run_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    status = subprocess.run(
        [*cli, "status", "-o", "json"], env=run_env, capture_output=True, text=True, check=True
    )
    [st] = json.loads(status.stdout)
    assert st["id"] == lab_id and st["owner_alive"] is False
    out = subprocess.run([*cli, "down", "--all"], env=run_env, capture_output=True, text=True)
    assert out.returncode == 0 and lab_id in out.stdout, out.stderr
    assert [n for n in os.listdir(netns.NETNS_DIR) if n.startswith(f"tl{lab_id}-")] == []
    assert not (tmp_path / "labs" / lab_id).exists()


@needs_root
@pytest.mark.root
def test_cli_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    from tortie.ctl.lab import main

    lab_id = _new_id()
    try:
        assert main(["up", "--nodes", "2", "--id", lab_id, "--static-routes"]) == 0
        assert f"lab {lab_id} up" in capsys.readouterr().out
        assert main(["add-workload", lab_id, "node2", "cli-pod", "--label", "app=x"]) == 0
        assert "node2-k8s-cli--pod-eth0" in capsys.readouterr().out
        assert main(["status", lab_id]) == 0
        out = capsys.readouterr().out
        assert "default/cli-pod" in out and "etcd pid" in out and "alive" in out
        lab = Lab.attach(lab_id)
        assert lab.state.owner_pid is None  # type: ignore[union-attr]  # lives until `down`
        netns.wait_for(lambda: lab.ping("node1", lab.workload("cli-pod").ip), 5, "cli-pod")
        assert main(["exec", lab_id, "nope", "--", "true"]) == 1
        assert main(["remove-workload", lab_id, "cli-pod"]) == 0
        assert main(["down", lab_id]) == 0
        assert _leftovers(lab_id) == []
        assert main(["down", lab_id]) == 1  # gone
    finally:
        down_lab(lab_id)


@needs_root
@pytest.mark.root
def test_lab_id_in_use_is_refused(flat: Lab) -> None:
    with pytest.raises(netns.LabError, match="already in use"):
        Lab(nodes=1, lab_id=flat.lab_id).up()
    assert state.load(flat.lab_id) is not None  # the refusal did not harm the running lab
    flat.wait_ping("node1", flat.plan.etcd.ip)
