"""`tortiectl ipam` as a user runs it: a subprocess against a real etcd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tortie import __version__
from tortie.api import load
from tortie.datastore.client import ResourceClient
from tortie.datastore.etcd import EtcdBackend
from tortie.ipam import AutoAssignArgs, IPAMClient
from tortie.lab.etcd import EtcdServer

pytestmark = pytest.mark.etcd

ROOT = Path(__file__).resolve().parents[2]
Run = Callable[..., subprocess.CompletedProcess[str]]

CLUSTER = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1}
spec: {cidr: 10.65.0.0/16, vxlanMode: Always}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1}
spec: {}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node2}
spec: {}
"""


def wep(name: str, ip: str) -> str:
    return f"""
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: node1-k8s-{name}-eth0, namespace: ns}}
spec: {{node: node1, orchestrator: k8s, pod: {name}, endpoint: eth0,
        interfaceName: cali0123456789a, ipNetworks: ["{ip}/32"]}}
"""


@pytest.fixture
def ctl(etcd_server: EtcdServer, etcd_backend: EtcdBackend) -> Run:
    env = dict(os.environ, ETCD_ENDPOINTS=etcd_server.endpoint)
    env.pop("TORTIE_DEBUG", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tortie.ctl.main", *args],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        )

    return run


@pytest.fixture
def cluster(etcd_backend: EtcdBackend) -> tuple[ResourceClient, IPAMClient]:
    rc = ResourceClient(etcd_backend)
    for res in load(CLUSTER):
        rc.create(res)
    return rc, IPAMClient(etcd_backend, rc)


def allocate(ipam: IPAMClient, handle: str, node: str = "node1", pod: str = "p") -> str:
    res = ipam.auto_assign(AutoAssignArgs(
        num4=1, handle_id=handle, hostname=node,
        attrs={"node": node, "pod": pod, "namespace": "ns"},
    ))
    return res.addresses[0]


def test_show(ctl: Run, cluster: tuple[ResourceClient, IPAMClient]) -> None:
    _, ipam = cluster
    for i in range(3):
        allocate(ipam, f"net1.c{i}", pod=f"p{i}")
    out = ctl("ipam", "show")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split("|")[1:-1] == [
        " GROUPING ", "     CIDR     ", " IPS TOTAL ", " IPS IN USE ", "   IPS FREE   "]
    assert "| IP Pool  | 10.65.0.0/16 |     65536 | 3 (0%)     | 65533 (100%) |" in lines

    blocks = ctl("ipam", "show", "--show-blocks")
    assert blocks.returncode == 0
    block_rows = [line for line in blocks.stdout.splitlines() if line.startswith("| Block")]
    assert len(block_rows) == 1
    cells = [c.strip() for c in block_rows[0].split("|")[1:-1]]
    assert cells[2:] == ["64", "3 (5%)", "61 (95%)"]

    addr = ipam.ips_by_handle("net1.c1")[0]
    one = ctl("ipam", "show", f"--ip={addr}")
    assert one.returncode == 0
    assert one.stdout.splitlines() == [
        f"IP {addr} is in use", "Handle ID: net1.c1", "Attributes:",
        "  namespace: ns", "  node: node1", "  pod: p1"]
    free = ctl("ipam", "show", "--ip=10.65.255.1")
    assert free.returncode == 0 and free.stdout == "10.65.255.1 is not assigned\n"
    bad = ctl("ipam", "show", "--ip=10.65.999.1")
    assert bad.returncode == 2 and "invalid IP address" in bad.stderr

    cfg = ctl("ipam", "show", "--show-configuration")
    assert cfg.returncode == 0
    assert "| StrictAffinity     | false |" in cfg.stdout
    assert "| MaxBlocksPerHost   | 0     |" in cfg.stdout


def test_show_borrowed(ctl: Run, etcd_backend: EtcdBackend) -> None:
    rc = ResourceClient(etcd_backend)
    for res in load(CLUSTER.replace("10.65.0.0/16, vxlanMode: Always",
                                    "10.65.0.0/30, blockSize: 30")):
        rc.create(res)
    ipam = IPAMClient(etcd_backend, rc)
    allocate(ipam, "a", "node1")
    borrowed = allocate(ipam, "b", "node2", pod="web")
    out = ctl("ipam", "show", "--show-borrowed")
    assert out.returncode == 0
    row = next(line for line in out.stdout.splitlines() if borrowed in line)
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells == [borrowed, "node2", "10.65.0.0/30", "node1", "pod", "ns/web"]


def test_configure(ctl: Run, cluster: tuple[ResourceClient, IPAMClient]) -> None:
    _, ipam = cluster
    out = ctl("ipam", "configure", "--strictaffinity=true")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Successfully set StrictAffinity to: true\n"
    assert ipam.get_config().strict_affinity is True
    got = ctl("get", "ipamconfiguration", "default", "-o", "yaml")
    assert got.returncode == 0 and "strictAffinity: true" in got.stdout
    out = ctl("ipam", "configure", "--max-blocks-per-host=3")
    assert out.returncode == 0 and "MaxBlocksPerHost to: 3" in out.stdout
    assert ipam.get_config().max_blocks_per_host == 3
    out = ctl("ipam", "configure", "--strictaffinity=false")
    assert out.returncode == 1 and "requires strictAffinity" in out.stderr
    out = ctl("ipam", "configure", "--strictaffinity=perhaps")
    assert out.returncode == 2 and "true or false" in out.stderr
    out = ctl("ipam", "configure", "--max-blocks-per-host=lots")
    assert out.returncode == 2
    out = ctl("ipam", "configure")
    assert out.returncode == 2 and "at least one" in out.stderr


def test_check_finds_leaks_and_release_from_report_fixes_them(
    ctl: Run, cluster: tuple[ResourceClient, IPAMClient], tmp_path: Path
) -> None:
    rc, ipam = cluster
    used = allocate(ipam, "net1.used", pod="used")
    leaked = allocate(ipam, "net1.gone", pod="gone")
    for res in load(wep("used", used)):
        rc.create(res)
    tunnel = ipam.assign_tunnel_address("node1", "vxlan")
    # A handle nobody references (its addresses were released behind its back).
    etcd = ipam.backend
    etcd.put("/calico/ipam/v2/handle/net1.orphan", b'{"block":{"10.65.0.0/26":1},"deleted":false}')

    report = tmp_path / "report.json"
    out = ctl("ipam", "check", "-o", str(report), "--show-problem-ips")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Found 1 IPAM blocks." in text
    assert "IPAM blocks record 3 allocations." in text
    assert "Found 1 node tunnel IPs." in text and "Found 1 workload IPs." in text
    assert f"  {leaked} leaked; attrs Main:net1.gone Extra:namespace=ns,node=node1,pod=gone" in text
    assert "Found 1 IPs that are allocated in IPAM but not actually in use." in text
    assert "Found 1 handles with no matching IPs (and 3 handles with matches)." in text
    assert "Check complete; found 2 problems." in text

    data = json.loads(report.read_text())
    assert list(data) == ["version", "clusterGUID", "datastoreLocked",
                          "clusterInformationRevision", "clusterType", "allocations",
                          "leakedHandles"]
    assert data["version"] == f"v{__version__}"
    assert set(data["allocations"]) == {used, leaked, tunnel}
    [gone] = data["allocations"][leaked]
    assert gone["handle"] == "net1.gone" and gone["inUse"] is False and gone["owners"] is None
    assert gone["pod"] == "gone" and gone["namespace"] == "ns" and gone["node"] == "node1"
    assert isinstance(gone["sequenceNumber"], int)
    [mine] = data["allocations"][used]
    assert mine["inUse"] and mine["owners"] == ["Workload(ns/node1-k8s-used-eth0)"]
    assert data["allocations"][tunnel][0]["type"] == "vxlanTunnelAddress"
    assert [h["ID"] for h in data["leakedHandles"]] == ["net1.orphan"]

    refused = ctl("ipam", "release", f"--from-report={report}")
    assert refused.returncode == 1 and "data store is not locked" in refused.stderr
    out = ctl("ipam", "release", f"--from-report={report}", "--force")
    assert out.returncode == 0, out.stderr
    assert "Releasing 1 old IPs..." in out.stdout
    assert "Released 1 IPs successfully" in out.stdout
    assert "Released 1 handles; 0 skipped; 0 errors." in out.stdout

    again = ctl("ipam", "check")
    assert again.returncode == 0
    assert "Check complete; found 0 problems." in again.stdout
    assert ipam.ips_by_handle("net1.used") == [used]


def test_release_from_a_stale_report_changes_nothing(
    ctl: Run, cluster: tuple[ResourceClient, IPAMClient], tmp_path: Path
) -> None:
    _, ipam = cluster
    leaked = allocate(ipam, "net1.a")
    report = tmp_path / "r.json"
    assert ctl("ipam", "check", "-o", str(report)).returncode == 0
    # The address is released and handed out again before the report is used.
    ipam.release_ips([leaked])
    ipam.assign_ip(leaked, "net1.new-owner", {"node": "node1"}, "node1")
    out = ctl("ipam", "release", f"--from-report={report}", "--force")
    assert out.returncode == 0
    assert "An error occurred while releasing some IPs" in out.stdout
    assert ipam.ips_by_handle("net1.new-owner") == [leaked]
    data = json.loads(report.read_text())
    data["version"] = "v0.0.1"
    report.write_text(json.dumps(data))
    out = ctl("ipam", "release", f"--from-report={report}")
    assert out.returncode == 1 and "different version" in out.stderr


def test_release_one_address(ctl: Run, cluster: tuple[ResourceClient, IPAMClient]) -> None:
    rc, ipam = cluster
    a = allocate(ipam, "net1.a", pod="a")
    b = allocate(ipam, "net1.b", pod="b")
    for res in load(wep("a", a)):
        rc.create(res)
    refused = ctl("ipam", "release", f"--ip={a}")
    assert refused.returncode == 1
    assert f"IP address {a} is in use by Workload(ns/node1-k8s-a-eth0)" in refused.stderr
    assert ipam.ips_by_handle("net1.a") == [a]
    forced = ctl("ipam", "release", f"--ip={a}", "--force")
    assert forced.returncode == 0 and forced.stdout == f"Successfully released IP address {a}\n"
    out = ctl("ipam", "release", f"--ip={b}")
    assert out.returncode == 0
    assert ipam.ips_by_handle("net1.b") == []
    out = ctl("ipam", "release", f"--ip={b}")
    assert out.returncode == 1 and f"IP address {b} is not assigned" in out.stderr
    assert ctl("ipam", "release").returncode == 2
    assert ctl("ipam", "release", "--ip=nonsense").returncode == 2


def test_split(ctl: Run, cluster: tuple[ResourceClient, IPAMClient]) -> None:
    rc, _ = cluster
    refused = ctl("ipam", "split", "4", "--name=pool1")
    assert refused.returncode == 1 and "datastore is not locked" in refused.stderr
    assert ctl("ipam", "split", "3", "--name=pool1").returncode == 2
    out = ctl("ipam", "split", "4", "--cidr=10.65.0.0/16", "--force")
    assert out.returncode == 0, out.stderr
    assert "IP Pool pool1 was successfully split into 4 smaller pools." in out.stdout
    pools = {p.name: p.spec.cidr for p in rc.list("IPPool").items}  # type: ignore[attr-defined]
    assert pools == {
        "split-pool1-0": "10.65.0.0/18", "split-pool1-1": "10.65.64.0/18",
        "split-pool1-2": "10.65.128.0/18", "split-pool1-3": "10.65.192.0/18",
    }
    assert rc.get("IPPool", "split-pool1-2").spec.vxlan_mode == "Always"  # type: ignore[attr-defined]


def test_status_and_usage(ctl: Run, cluster: tuple[ResourceClient, IPAMClient]) -> None:
    _, ipam = cluster
    allocate(ipam, "a", "node1")
    allocate(ipam, "b", "node2")
    out = ctl("ipam", "status")
    assert out.returncode == 0
    assert "| node1 |      1 |          1 |       63 |" in out.stdout
    assert "2 blocks, 2 addresses in use, 2 handles." in out.stdout
    usage = ctl("ipam")
    assert usage.returncode == 2 and "usage: tortiectl ipam" in usage.stderr
    assert ctl("ipam", "frobnicate").returncode == 2
    assert "Traceback" not in usage.stderr


def test_unreachable_datastore(tmp_path: Path) -> None:
    env = dict(os.environ, ETCD_ENDPOINTS="http://127.0.0.1:1")
    out = subprocess.run([sys.executable, "-m", "tortie.ctl.main", "ipam", "show"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 1
    assert "could not reach etcd" in out.stderr and "Traceback" not in out.stderr
