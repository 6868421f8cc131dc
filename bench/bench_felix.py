"""Felix benchmarks in a namespace lab (root needed). Prints figures; asserts nothing.

1. Cold start: 1,000 local endpoints and 500 policies in etcd; time from starting
   tortie-felix to fully programmed (readiness), divided by the time a bare
   `ipset restore` + `iptables-restore` of the same final state takes in a fresh namespace,
   measured in the same run (target <= 1.3x).
2. Enforcement latency: a label change (and a policy change) to the first packet that shows
   the new verdict, probing every few ms between two workloads on different nodes
   (target: median <= 100 ms, p99 <= 300 ms).
3. Memory: Felix's RSS with 10,000 endpoints (100 local) and 1,000 policies cluster-wide
   (target <= 150 MB).
4. VXLAN: a new workload on one node reachable from a node across a router (target
   <= 500 ms), Felix alone programming the overlay.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.datastore.client import ResourceClient
from tortie.lab import Lab, netns, probe


def wep(node: str, i: int, labels: dict[str, str], iface: str | None = None) -> Any:
    name = f"{node}-k8s-pod{i}-eth0"
    return resource("WorkloadEndpoint", name, {
        "orchestrator": "k8s", "node": node, "pod": f"pod{i}", "endpoint": "eth0",
        "ipNetworks": [f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}/32"],
        "interfaceName": iface or f"cali{i:011x}", "profiles": ["kns.default"],
    }, "default", labels)


def policy(p: int, apps: int) -> Any:
    return resource("GlobalNetworkPolicy", f"pol{p}", {
        "order": p % 50,
        "selector": f'app == "app{p % apps}"',
        "ingress": [
            {"action": "Allow", "protocol": "TCP",
             "source": {"selector": f'app == "app{(p * 7) % apps}"'},
             "destination": {"ports": [80, 443, "8000:8100"]}},
            {"action": "Allow", "source": {"selector": f'role == "r{p % 7}" && env == "prod"'}},
            {"action": "Deny", "source": {"nets": ["192.0.2.0/24", "198.51.100.0/24"]}},
        ],
        "egress": [{"action": "Allow", "destination": {"selector": f'team == "t{p % 13}"'}}],
    })


def labels_for(i: int, apps: int) -> dict[str, str]:
    return {"app": f"app{i % apps}", "role": f"r{i % 7}", "env": ("prod", "dev")[i % 2],
            "team": f"t{i % 13}"}


def bulk_write(client: ResourceClient, resources: list[Any]) -> None:
    backend = client.backend
    items = [(client.key_for(r), client.encode(r)) for r in resources]
    backend.put_many(items)


def state_dump(lab: Lab, node: str) -> tuple[str, str]:
    ipsets = lab.exec(node, ["ipset", "save"], check=True).stdout
    tables = "".join(
        lab.exec(node, ["iptables-save", "-t", t], check=True).stdout
        for t in ("raw", "mangle", "nat", "filter"))
    return ipsets, tables


def raw_restore_seconds(ipsets: str, tables: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        ns = f"tbench-{os.getpid()}-{len(times)}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            t0 = time.perf_counter()
            subprocess.run(netns.nsenter_argv(ns, ["ipset", "restore"]), input=ipsets,
                           text=True, check=True)
            subprocess.run(netns.nsenter_argv(ns, ["iptables-restore"]), input=tables,
                           text=True, check=True)
            times.append(time.perf_counter() - t0)
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    return statistics.median(times)


def cold_start(endpoints: int, policies: int) -> None:
    with Lab(nodes=1, static_route=False, host_sysctls=False) as lab, \
            tempfile.TemporaryDirectory() as logs:
        fl = FelixLab(lab, logs)
        client = lab.client
        client.apply(resource("Profile", "kns.default", {"labelsToApply": {
            "pcns.projectcalico.org/name": "default"}}))
        apps = 200
        bulk_write(client, [wep("node1", i, labels_for(i, apps)) for i in range(endpoints)])
        bulk_write(client, [policy(p, apps) for p in range(policies)])
        t0 = time.perf_counter()
        fl.start_felix("node1", FELIX_IPTABLESREFRESHINTERVAL="600",
                       FELIX_ROUTEREFRESHINTERVAL="600", FELIX_IPSETSREFRESHINTERVAL="600")
        eventually(lambda: fl.felix_ready("node1"), 300, "felix ready")
        felix_secs = time.perf_counter() - t0
        ipsets, tables = state_dump(lab, "node1")
        rules = tables.count("\n-A ")
        members = ipsets.count("\nadd ")
        fl.stop_felix("node1")
    raw = raw_restore_seconds(ipsets, tables)
    print(f"cold start: {endpoints} local endpoints, {policies} policies -> {rules} rules, "
          f"{members} ipset members")
    print(f"  felix start -> programmed: {felix_secs:.2f} s; bare ipset+iptables restore of "
          f"the same state: {raw:.2f} s; ratio {felix_secs / raw:.2f}x (target <= 1.3x)")


def latency(samples: int) -> None:
    with Lab(nodes=2, static_route=False, host_sysctls=False) as lab, \
            tempfile.TemporaryDirectory() as logs:
        fl = FelixLab(lab, logs)
        lab.static_routes()
        fl.apply(resource("GlobalNetworkPolicy", "egress", {
            "order": 1000, "types": ["Egress"], "egress": [{"action": "Allow"}]}))
        fl.apply(resource("GlobalNetworkPolicy", "from-trusted", {
            "selector": 'role == "server"',
            "ingress": [{"action": "Allow", "source": {"selector": 'trusted == "yes"'}}]}))
        for n in ("node1", "node2"):
            fl.start_felix(n)
        srv = lab.add_workload("node2", "server", labels={"role": "server"})
        cli = lab.add_workload("node1", "client", labels={"role": "client"})
        for n in ("node1", "node2"):
            eventually(lambda n=n: fl.felix_ready(n), 60, f"{n} ready")
        resp = probe.Responder(srv.netns, tcp_ports=(8080,)).start()
        results: dict[str, list[float]] = {"label change": [], "policy change": []}
        try:
            for i in range(2 * samples):
                allowed = i % 2 == 0
                if i < samples:  # first label toggles, then (label "no") policy toggles
                    kind = "label change"
                    w = client_get(lab, cli)
                    w.metadata.labels = {**(w.metadata.labels or {}),
                                         "trusted": "yes" if allowed else "no"}
                    t0 = time.perf_counter()
                    lab.client.update(w)
                else:
                    kind = "policy change"
                    src = 'role == "client"' if allowed else 'role == "nobody"'
                    t0 = time.perf_counter()
                    lab.client.apply(resource("GlobalNetworkPolicy", "from-trusted", {
                        "selector": 'role == "server"',
                        "ingress": [{"action": "Allow", "source": {"selector": src}}]}))
                while (probe.tcp(cli.netns, srv.ip, 8080, timeout=0.05) is True) != allowed:
                    if time.perf_counter() - t0 > 10:
                        raise SystemExit(f"{kind} {i} not enforced after 10 s")
                results[kind].append(time.perf_counter() - t0)
        finally:
            resp.stop()
            for n in ("node1", "node2"):
                fl.stop_felix(n)
    for kind, vals in results.items():
        vals.sort()
        p99 = vals[min(len(vals) - 1, int(len(vals) * 0.99))]
        print(f"{kind} -> enforced (packets): median {statistics.median(vals) * 1e3:.0f} ms, "
              f"p99 {p99 * 1e3:.0f} ms, max {vals[-1] * 1e3:.0f} ms over {len(vals)} "
              f"(targets: median <= 100 ms, p99 <= 300 ms)")


def vxlan_reachability(samples: int) -> None:
    """A new workload on node1 reachable from node3 (across the router, VXLAN), after the
    workload is created (veth + WorkloadEndpoint, as the CNI plugin does)."""
    import json as _json

    from tortie.datastore import keys

    with Lab(nodes=3, topology="two-subnets", static_route=False, host_sysctls=False) as lab, \
            tempfile.TemporaryDirectory() as logs:
        fl = FelixLab(lab, logs)
        for plan in lab.nodes:
            lab.client.backend.put(keys.host_affinity_key(plan.name, plan.workload_cidr),
                                   _json.dumps({"state": "confirmed"}).encode())
            node = lab.client.get("Node", plan.name)
            node.spec.ipv4_vxlan_tunnel_addr = plan.workload_cidr.rsplit(".", 1)[0] + ".254"
            node.spec.vxlan_tunnel_mac_addr = f"66:00:00:00:00:{plan.index:02x}"
            lab.client.update(node)
        fl.apply(resource("IPPool", "p", {"cidr": "10.65.0.0/16", "blockSize": 24,
                                          "vxlanMode": "Always"}))
        fl.apply(resource("GlobalNetworkPolicy", "open", {
            "selector": "all()", "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}]}))
        for plan in lab.nodes:
            fl.start_felix(plan.name)
        src = lab.add_workload("node3", "src")
        for plan in lab.nodes:
            eventually(lambda n=plan.name: fl.felix_ready(n), 60, f"{plan.name} ready")
        times = []
        for i in range(samples):
            t0 = time.perf_counter()
            w = lab.add_workload("node1", f"new{i}")
            eventually(lambda w=w: probe.icmp(src.netns, w.ip, timeout=0.05), 10, "reachable")
            times.append(time.perf_counter() - t0)
            lab.remove_workload(f"new{i}")
        for plan in lab.nodes:
            fl.stop_felix(plan.name)
    times.sort()
    print(f"VXLAN: new workload on node1 -> first ping from node3 (across the router): "
          f"median {statistics.median(times) * 1e3:.0f} ms, max {times[-1] * 1e3:.0f} ms "
          f"over {samples} (target <= 500 ms)")


def client_get(lab: Lab, w: Any) -> Any:
    return lab.client.get("WorkloadEndpoint", w.wep, w.namespace)


def rss(endpoints: int, policies: int) -> None:
    with Lab(nodes=1, static_route=False, host_sysctls=False) as lab, \
            tempfile.TemporaryDirectory() as logs:
        fl = FelixLab(lab, logs)
        client = lab.client
        client.apply(resource("Profile", "kns.default", {"labelsToApply": {
            "pcns.projectcalico.org/name": "default"}}))
        apps = 200
        # every 100th endpoint is local, with a different app each, so that many policies
        # are active here as well as known cluster-wide
        weps = [wep("node1" if i % 100 == 0 else f"node{2 + i % 99}", i,
                    {**labels_for(i, apps), "app": f"app{(i // 100) % apps}"})
                for i in range(endpoints)]
        bulk_write(client, weps)
        bulk_write(client, [policy(p, apps) for p in range(policies)])
        proc = fl.start_felix("node1")
        eventually(lambda: fl.felix_ready("node1"), 300, "felix ready")
        pid = proc.pid  # nsenter execs Felix: the spawned PID is Felix's
        status = Path(f"/proc/{pid}/status").read_text()
        vm = {k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines())}
        metrics = fl.http_get("node1", 9091, "/metrics")
        active = [line for line in metrics.splitlines()
                  if line.startswith("felix_active_local_policies")]
        fl.stop_felix("node1")
    print(f"memory: {endpoints} endpoints ({endpoints // 100} local), {policies} policies: "
          f"felix VmRSS {vm['VmRSS']}, VmHWM {vm['VmHWM']} (target <= 150 MB); {active}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("cold", "latency", "rss", "vxlan"))
    parser.add_argument("--samples", type=int, default=40, help="per kind of change (even)")
    args = parser.parse_args()
    if args.only in (None, "cold"):
        cold_start(1000, 500)
    if args.only in (None, "latency"):
        latency(args.samples)
    if args.only in (None, "rss"):
        rss(10_000, 1000)
    if args.only in (None, "vxlan"):
        vxlan_reachability(10)


if __name__ == "__main__":
    main()
