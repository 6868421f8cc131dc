"""Docker on Tortie: `docker run` to the first ping from another host's container.

A two-node lab; each node runs its own dockerd, tortie-libnetwork and tortie-felix
(`tortie.lab.docker`), with a `net1` network (driver `tortie`, IPAM `tortie-ipam`) on both.
A container `probe` on node1 pings; each round starts a new container on node2 with
`docker run -d --net net1` and measures, from just before `docker run`, until `probe`
gets the first echo reply from the new container's address (pings every 20 ms from inside
`probe`'s network namespace). Also shown: how long `docker run` itself took (IPAM, the
WorkloadEndpoint, the veth, the container start) and the rest (Felix programming the new
endpoint on node2). Target: median <= 2 s. Root needed; prints figures, asserts nothing.

    .venv/bin/python bench/bench_docker.py [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.ipam import IPAMClient
from tortie.lab import Lab
from tortie.lab import docker as ld


def bring_up(lab: Lab, workdir: str) -> tuple[FelixLab, dict[str, ld.DockerNode]]:
    fl = FelixLab(lab, workdir)
    fl.apply(resource("IPPool", "docker-pool", {"cidr": "10.65.0.0/16", "blockSize": 24}))
    ipam = IPAMClient(lab.client.backend, lab.client)
    for plan in lab.nodes:
        ipam.claim_affinity(plan.workload_cidr, plan.name)
    lab.static_routes()
    for node in ("node1", "node2"):
        fl.start_felix(node, FELIX_LOGSEVERITYSCREEN="Warning")
    nodes: dict[str, ld.DockerNode] = {}
    errors: list[BaseException] = []

    def start(node: str) -> None:
        try:
            dn = ld.start_dockerd(lab, node, workdir)
            nodes[node] = dn
            ld.ensure_image(dn)
            ld.start_libnetwork(dn, {"TORTIE_LIBNETWORK_LOGLEVEL": "warning"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in ("node1", "node2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for dn in nodes.values():
            dn.stop()
        raise errors[0]
    for node in ("node1", "node2"):
        eventually(lambda n=node: fl.felix_ready(n), 30, f"felix on {node} ready")
    return fl, nodes


def first_ping(dn: ld.DockerNode, container: str, ip: str, deadline: float) -> float | None:
    """Ping `ip` from inside `container` every 20 ms; the monotonic time of the first reply."""
    import socket

    from tortie.lab import netns

    def loop() -> float | None:
        while time.monotonic() < deadline:
            try:
                if netns._ping_here(ip, 0.02):
                    return time.monotonic()
            except OSError:
                time.sleep(0.02)
        return None

    socket.setdefaulttimeout(None)
    return dn.run_in_container(container, loop)


def measure(nodes: dict[str, ld.DockerNode], rounds: int) -> list[dict[str, float]]:
    n1, n2 = nodes["node1"], nodes["node2"]
    for dn in (n1, n2):
        dn.docker("network", "create", "--driver", "tortie", "--ipam-driver", "tortie-ipam",
                  "net1")
    n1.docker("run", "-d", "--name", "probe", "--net", "net1", ld.IMAGE, "sleep", "3600")
    # Warm-up: the first container on node2 (the daemon's first start of a container).
    warm_ip = (n2.docker("run", "-d", "--name", "warm", "--net", "net1", ld.IMAGE,
                         "sleep", "3600"), n2.container_ip("warm", "net1"))[1]
    eventually(lambda: n1.ping("probe", warm_ip, 0.3), 20, "warm-up container reachable")
    results = []
    for i in range(rounds):
        name = f"r{i}"
        t0 = time.monotonic()
        n2.docker("run", "-d", "--name", name, "--net", "net1", ld.IMAGE, "sleep", "3600")
        t_run = time.monotonic()
        ip = n2.container_ip(name, "net1")
        t_ping = first_ping(n1, "probe", ip, t0 + 30)
        if t_ping is None:
            raise RuntimeError(f"round {i}: {ip} never answered within 30 s")
        results.append({"run": t_run - t0, "total": t_ping - t0, "after_run": t_ping - t_run})
        n2.docker("rm", "-f", name)
        time.sleep(0.3)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = ld.docker_unavailable_reason()
    if reason:
        print(f"bench_docker: skipped: {reason}")
        return 0
    lab = Lab(nodes=2, static_route=False, host_sysctls=False)
    lab.up()
    workdir = tempfile.mkdtemp(prefix="tdk", dir="/tmp")
    nodes: dict[str, ld.DockerNode] = {}
    fl: FelixLab | None = None
    try:
        t0 = time.monotonic()
        fl, nodes = bring_up(lab, workdir)
        setup = time.monotonic() - t0
        results = measure(nodes, max(5, args.rounds))
    finally:
        for dn in nodes.values():
            dn.stop()
        if fl is not None:
            for node in list(fl.felix):
                fl.stop_felix(node)
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, Any] = {"rounds": len(results), "setup_s": round(setup, 2)}
    for key in ("run", "after_run", "total"):
        values = sorted(r[key] for r in results)
        summary[key] = {"median_s": round(statistics.median(values), 3),
                        "min_s": round(values[0], 3), "max_s": round(values[-1], 3)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"lab with 2 dockerd + tortie-libnetwork + felix up in {setup:.2f}s")
    print(f"docker run -> first ping from the other host's container, {len(results)} rounds:")
    for key, what in (("run", "docker run returned"), ("after_run", "then first reply"),
                      ("total", "total")):
        s = summary[key]
        print(f"  {what:22s} median {s['median_s'] * 1000:6.0f} ms  "
              f"(min {s['min_s'] * 1000:.0f}, max {s['max_s'] * 1000:.0f})")
    verdict = "meets" if summary["total"]["median_s"] <= 2.0 else "MISSES"
    print(f"target median <= 2 s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
