"""BGP benchmarks with real BIRD, tortie-confd and Felix in a namespace lab (root needed).

Prints figures (and JSON with ``--json``); asserts nothing.

1. Route announcement: node A gets a new block affinity (as IPAM writes it when a node claims
   a block) and a workload in that block; time until a workload on node B reaches it. That is
   confd rendering, ``bird -p``, the reload, the BGP update and B's kernel route, plus Felix
   plumbing the workload on A. Median over ``--rounds`` (target <= 2 s).
2. Route-reflector cold start: ``--nodes`` nodes (2 reflectors, the rest clients, mesh off),
   all confd and BIRD processes started at once; time until every client has a ``proto bird``
   route to every other client's block (target <= 30 s). Per-node RSS of confd and BIRD.

Calico's production BGP timers throughout (connect delay 2 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def _rss_summary(rss: dict[str, dict[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for what in ("confd", "bird", "felix"):
        values = [v[what] for v in rss.values() if v.get(what)]
        if values:
            out[what] = {
                "median_kib": int(statistics.median(values)),
                "max_kib": max(values),
                "nodes": len(values),
            }
    return out


def bench_announcement(rounds: int, log_dir: str) -> dict[str, Any]:
    lab = Lab(nodes=2, static_route=False, host_sysctls=False)
    lab.up()
    felix = FelixLab(lab, log_dir)
    bgp = LabBGP(lab)
    try:
        lab.client.apply(resource("IPPool", "default-ipv4-ippool", POOL))
        lab.client.apply(resource("GlobalNetworkPolicy", "allow-all", ALLOW_ALL))
        for n in lab.nodes:
            bgp.write_affinity(n.name, n.workload_cidr)
            felix.start_felix(n.name)
        bgp.start()
        for n in lab.nodes:
            eventually(lambda n=n: felix.felix_ready(n.name), 30, f"felix on {n.name}")
        eventually(lambda: len(bgp.nodes["node1"].established()) == 1, 30, "BGP session")
        lab.add_workload("node2", "prober")
        first = lab.add_workload("node1", "first")
        eventually(lambda: lab.ping("prober", first.ip, 0.3), 30, "baseline reachability")
        samples = []
        for i in range(rounds):
            block = f"10.65.{100 + i}.0/24"
            ip = f"10.65.{100 + i}.10"
            t0 = time.monotonic()
            bgp.write_affinity("node1", block)
            lab.add_workload("node1", f"new{i}", ip=ip)
            eventually(lambda ip=ip: lab.ping("prober", ip, 0.1), 30, f"{ip} reachable")
            samples.append(time.monotonic() - t0)
        rss = bgp.rss_kib()
        for name, proc in felix.felix.items():
            from tortie.confd.lab import _leaf_pid, _rss_kib

            rss.setdefault(name, {})["felix"] = _rss_kib(_leaf_pid(proc.pid))
        return {
            "rounds": rounds,
            "median_s": round(statistics.median(samples), 3),
            "p90_s": round(sorted(samples)[int(0.9 * (len(samples) - 1))], 3),
            "max_s": round(max(samples), 3),
            "min_s": round(min(samples), 3),
            "rss": _rss_summary(rss),
        }
    finally:
        bgp.stop()
        for node in list(felix.felix):
            try:
                felix.stop_felix(node)
            except Exception:
                pass
        lab.down()


def bench_rr_cold_start(nodes: int) -> dict[str, Any]:
    lab = Lab(nodes=nodes, static_route=False, host_sysctls=False)
    lab.up()
    bgp = LabBGP(lab)
    try:
        client = lab.client
        client.apply(resource("IPPool", "default-ipv4-ippool", POOL))
        client.apply(resource("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False}))
        client.apply(
            resource(
                "BGPPeer",
                "peer-with-route-reflectors",
                {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
            )
        )
        reflectors = [lab.nodes[0].name, lab.nodes[1].name]
        for name in reflectors:
            res = client.get("Node", name)
            res.spec.bgp.route_reflector_cluster_id = "244.0.0.1"
            res.metadata.labels = {"route-reflector": "true"}
            client.update(res)
        clients = [n for n in lab.nodes if n.name not in reflectors]
        for n in lab.nodes:
            bgp.write_affinity(n.name, n.workload_cidr)
        want = {n.name: {m.workload_cidr for m in clients if m is not n} for n in clients}

        def converged() -> bool:
            return all(want[n.name] <= set(bgp.bird_routes(n.name)) for n in clients)

        t0 = time.monotonic()
        bgp.start()
        started = time.monotonic() - t0
        eventually(converged, 120, "every client has every other client's block")
        total = time.monotonic() - t0
        rss = bgp.rss_kib()
        return {
            "nodes": nodes,
            "reflectors": len(reflectors),
            "processes_started_s": round(started, 2),
            "converged_s": round(total, 2),
            "rss": _rss_summary(rss),
        }
    finally:
        bgp.stop()
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as log_dir:
        ann = bench_announcement(args.rounds, log_dir)
    rr = bench_rr_cold_start(args.nodes)
    if args.json:
        print(json.dumps({"announcement": ann, "rr_cold_start": rr}, indent=2))
        return 0
    print(
        f"new block + workload on A reachable from B: median {ann['median_s']} s, "
        f"p90 {ann['p90_s']} s, max {ann['max_s']} s over {ann['rounds']} (target <= 2 s)"
    )
    print(
        f"{rr['nodes']}-node RR cold start ({rr['reflectors']} reflectors): converged in "
        f"{rr['converged_s']} s (processes started in {rr['processes_started_s']} s; "
        "target <= 30 s)"
    )
    for title, figures in (("2-node lab", ann["rss"]), (f"{rr['nodes']}-node lab", rr["rss"])):
        parts = [
            f"{what} median {v['median_kib'] / 1024:.1f} MiB (max {v['max_kib'] / 1024:.1f})"
            for what, v in figures.items()
        ]
        print(f"RSS per node, {title}: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
