"""VXLAN with Felix alone (no BIRD anywhere): two subnets joined by a router namespace.

node1 and node2 share subnet A, node3 is on subnet B. Each node's workload range is a block
affine to it, with a VTEP (tunnel address and MAC) on its Node, as tortie-node writes them.
`vxlanMode: Always` encapsulates everything; `CrossSubnet` only what crosses the router.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.datastore import keys
from tortie.lab import Lab, probe


@pytest.fixture(scope="module")
def vx() -> Iterator[tuple[FelixLab, dict[str, Any]]]:
    lab = Lab(nodes=3, topology="two-subnets", static_route=False, host_sysctls=False)
    lab.up()
    fl = FelixLab(lab, tempfile.mkdtemp(prefix="vxlan-logs-"))
    try:
        client = lab.client
        for plan in lab.nodes:
            block = plan.workload_cidr
            client.backend.put(
                keys.host_affinity_key(plan.name, block),
                json.dumps({"state": "confirmed", "deleted": False}).encode(),
            )
            node = client.get("Node", plan.name)
            node.spec.ipv4_vxlan_tunnel_addr = block.rsplit(".", 1)[0] + ".254"
            node.spec.vxlan_tunnel_mac_addr = f"66:00:00:00:00:{plan.index:02x}"
            client.update(node)
        fl.apply(
            resource(
                "IPPool",
                "vxlan-pool",
                {"cidr": "10.65.0.0/16", "blockSize": 24, "vxlanMode": "Always"},
            )
        )
        fl.apply(
            resource(
                "GlobalNetworkPolicy",
                "open",
                {
                    "selector": "all()",
                    "ingress": [{"action": "Allow"}],
                    "egress": [{"action": "Allow"}],
                },
            )
        )
        fl.created.clear()
        for plan in lab.nodes:
            fl.start_felix(plan.name)
        wls = {p.name: lab.add_workload(p.name, f"w-{p.name}") for p in lab.nodes}
        for plan in lab.nodes:
            eventually(lambda n=plan.name: fl.felix_ready(n), 60, f"{plan.name} ready")
        responders = [probe.Responder(w.netns, tcp_ports=(8080,)).start() for w in wls.values()]
        try:
            yield fl, wls
        finally:
            for r in responders:
                r.stop()
    finally:
        for node in list(fl.felix):
            fl.stop_felix(node)
        lab.down()


def routes(fl: FelixLab, node: str) -> str:
    return fl.lab.exec(node, ["ip", "route"], check=True).stdout


def test_always_encapsulates_and_everything_is_reachable(vx: tuple[FelixLab, Any]) -> None:
    fl, wls = vx
    eventually(
        lambda: "10.65.2.0/24 via 10.65.2.254 dev vxlan.calico" in routes(fl, "node1"),
        20,
        "route to node3's block through the tunnel",
    )
    assert "10.65.1.0/24 via 10.65.1.254 dev vxlan.calico" in routes(fl, "node1")
    link = fl.lab.exec("node1", ["ip", "-d", "link", "show", "vxlan.calico"], check=True).stdout
    assert "vxlan id 4096" in link and "dstport 4789" in link and "nolearning" in link
    neigh = fl.lab.exec("node1", ["ip", "neigh", "show", "dev", "vxlan.calico"]).stdout
    assert "10.65.2.254 lladdr 66:00:00:00:00:03 PERMANENT" in neigh
    fdb = fl.lab.exec("node1", ["bridge", "fdb", "show", "dev", "vxlan.calico"]).stdout
    assert "66:00:00:00:00:03 dst 172.31.2." in fdb
    for src in wls:
        for dst in wls:
            if src != dst:
                eventually(
                    lambda s=src, d=dst: probe.tcp(wls[s].netns, wls[d].ip, 8080) is True,
                    20,
                    f"{src} -> {dst}",
                )
    assert "proto bird" not in routes(fl, "node1")


def test_cross_subnet_encapsulates_only_across_the_router(vx: tuple[FelixLab, Any]) -> None:
    fl, wls = vx
    pool = fl.lab.client.get("IPPool", "vxlan-pool")
    pool.spec.vxlan_mode = "CrossSubnet"
    fl.lab.client.update(pool)
    node2_ip = next(p.ip for p in fl.lab.nodes if p.name == "node2")
    eventually(
        lambda: f"10.65.1.0/24 via {node2_ip} dev eth0" in routes(fl, "node1"),
        20,
        "same-subnet block routed directly",
    )
    assert "10.65.2.0/24 via 10.65.2.254 dev vxlan.calico" in routes(fl, "node1")
    for src, dst in (("node1", "node2"), ("node1", "node3"), ("node3", "node2")):
        eventually(
            lambda s=src, d=dst: probe.tcp(wls[s].netns, wls[d].ip, 8080) is True,
            20,
            f"{src} -> {dst}",
        )
    pool = fl.lab.client.get("IPPool", "vxlan-pool")
    pool.spec.vxlan_mode = "Always"
    fl.lab.client.update(pool)
    eventually(
        lambda: "10.65.1.0/24 via 10.65.1.254 dev vxlan.calico" in routes(fl, "node1"),
        20,
        "back through the tunnel",
    )
    assert f"via {node2_ip} dev eth0" not in routes(fl, "node1")
