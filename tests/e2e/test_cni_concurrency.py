"""Many pods at once: 3 nodes, 100 CNI ADDs per node in parallel, then all the DELs.

Each node runs its CNI daemon (with its own IPAM lock file, as each real node has); the plugin
processes are started concurrently inside the nodes' namespaces against 300 workload
namespaces. Afterwards: every ADD succeeded, no address was handed out twice, every address
lies in a block affine to the node that asked (no node strayed into another's blocks), every
handle holds exactly its address, and `tortiectl ipam check`'s analysis finds no problem. Then
every DEL succeeded and nothing is left: no endpoint, handle, allocation or cali* interface.
"""

from __future__ import annotations

import ipaddress
import json
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import eventually, resource
from tortie.cni import lab as cnilab
from tortie.cni import netlink as nl
from tortie.cni.install import netconf
from tortie.datastore import keys
from tortie.lab import Lab, netns

NODES = ("node1", "node2", "node3")
PER_NODE = 100
POOL = "10.69.0.0/16"


class Cluster:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.plugin = cnilab.install(tmp / "bin") / "tortie"
        self.workloads = [(node, i, f"tl{lab.lab_id}-wl.cc.{node}.{i}")
                          for node in NODES for i in range(PER_NODE)]

    def conf(self, node: str) -> bytes:
        return json.dumps(netconf("ccnet", etcd_endpoints=self.lab.etcd_endpoint, nodename=node,
                                  conflist=False,
                                  extra={"ipam_lock_file": str(self.tmp / f"{node}.lock")})
                          ).encode()

    def run_all(self, command: str) -> list[tuple[str, int, Any]]:
        confs = {node: self.conf(node) for node in NODES}

        def one(item: tuple[str, int, str]) -> tuple[str, int, Any]:
            node, i, ns = item
            res = cnilab.invoke(self.lab.netns_of(node), self.plugin, command, confs[node],
                                container_id=f"cc{node}x{i:03d}", netns_path=f"/run/netns/{ns}",
                                timeout=300)
            out = json.loads(res.stdout) if res.stdout.strip() else None
            return node, res.returncode, out

        with ThreadPoolExecutor(max_workers=150) as pool:
            return list(pool.map(one, self.workloads))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="tortie-cni-cc-") as tmp:
        lab = Lab(nodes=len(NODES), static_route=False, host_sysctls=False)
        lab.up()
        c = Cluster(lab, Path(tmp))
        try:
            lab.client.apply(resource("IPPool", "cc-pool", {"cidr": POOL, "blockSize": 26}))
            for node in NODES:
                cnilab.start_daemon(lab, node, log_file=f"{tmp}/daemon-{node}.log")
            netns.create_namespaces(ns for _, _, ns in c.workloads)
            yield c
        finally:
            netns.delete_namespaces(ns for _, _, ns in c.workloads)
            lab.down()


def _affine_blocks(c: Cluster, node: str) -> list[ipaddress.IPv4Network]:
    kvs, _ = c.lab.client.backend.list(keys.host_affinity_prefix(node, 4))
    return [ipaddress.ip_network(keys.parse_host_affinity_key(kv.key).cidr) for kv in kvs]


def _cali_links(c: Cluster, node: str) -> list[str]:
    def names() -> list[str]:
        with nl.Netlink() as sock:
            return [link.name for link in sock.links() if link.name.startswith("cali")]

    return netns.run_in(c.lab.netns_of(node), names)


def test_parallel_adds_then_dels(cluster: Cluster) -> None:
    from tortie.datastore.client import ResourceClient
    from tortie.ipam.check import check_ipam

    added = cluster.run_all("ADD")
    failures = [(node, out) for node, code, out in added if code != 0]
    assert not failures, failures[:5]

    ips = [ipaddress.ip_interface(out["ips"][0]["address"]).ip for _, _, out in added]
    assert len(set(ips)) == len(ips) == len(NODES) * PER_NODE, "an address was given twice"
    for node in NODES:
        blocks = _affine_blocks(cluster, node)
        mine = [ipaddress.ip_interface(out["ips"][0]["address"]).ip
                for n, _, out in added if n == node]
        stray = [str(ip) for ip in mine if not any(ip in b for b in blocks)]
        assert not stray, f"{node} got addresses outside its blocks: {stray[:5]}"
        assert 2 <= len(blocks) <= 3  # 100 addresses need two /26 blocks
    others = {node: set(_affine_blocks(cluster, node)) for node in NODES}
    assert not (others["node1"] & others["node2"] or others["node1"] & others["node3"]
                or others["node2"] & others["node3"]), "a block is affine to two nodes"

    weps = cluster.lab.client.list("WorkloadEndpoint").items
    assert len(weps) == len(NODES) * PER_NODE
    report = check_ipam(cluster.lab.client.backend, ResourceClient(cluster.lab.client.backend),
                        "test")
    assert report.problems == 0
    assert report.allocations_by_node == dict.fromkeys(NODES, PER_NODE)
    assert not report.multiple_owners

    deleted = cluster.run_all("DEL")
    failures = [(node, out) for node, code, out in deleted if code != 0]
    assert not failures, failures[:5]
    assert cluster.lab.client.list("WorkloadEndpoint").items == []
    kvs, _ = cluster.lab.client.backend.list(keys.handle_prefix())
    assert kvs == [], "handles left behind"
    report = check_ipam(cluster.lab.client.backend, ResourceClient(cluster.lab.client.backend),
                        "test")
    assert report.allocations == {} and report.problems == 0
    for node in NODES:
        eventually(lambda n=node: _cali_links(cluster, n) == [], 15, f"no cali* left on {node}")
