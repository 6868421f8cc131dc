"""Calculation graph benchmark: 10,000 endpoints and 1,000 policies cluster-wide.

Prints the initial compute time (all updates in, one flush, messages out; target ≤ 2 s), the
time from one endpoint label change to its messages (target ≤ 1 ms), and the peak memory of
the graph's state. Pure: no datastore, no dataplane.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tortie.api import validate
from tortie.felix.calc.graph import CalcGraph

ENDPOINTS = 10_000
NODES = 100
POLICIES = 1_000
APPS = 200
HOST = "node0"


def resource(
    kind: str,
    name: str,
    spec: dict[str, Any],
    ns: str | None = None,
    labels: dict[str, str] | None = None,
) -> Any:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    if labels:
        meta["labels"] = labels
    return validate(
        {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}
    )


def wep(i: int, app: str) -> tuple[str, Any]:
    node = f"node{i % NODES}"
    name = f"{node}-k8s-pod{i}-eth0"
    labels = {
        "app": app,
        "role": f"r{i % 7}",
        "env": ("prod", "dev", "staging")[i % 3],
        "team": f"t{i % 13}",
        "zone": f"z{i % 4}",
        "version": f"v{i % 5}",
        "tier": ("front", "back")[i % 2],
        "owner": f"o{i % 17}",
        "cost": f"c{i % 3}",
        "pod-template-hash": f"h{i % 29}",
    }
    spec = {
        "orchestrator": "k8s",
        "node": node,
        "pod": f"pod{i}",
        "endpoint": "eth0",
        "ipNetworks": [f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}/32"],
        "interfaceName": f"cali{i:011x}",
        "profiles": ["kns.default"],
    }
    return f"default/{name}", resource("WorkloadEndpoint", name, spec, "default", labels)


def build() -> list[tuple[str, str, Any]]:
    updates: list[tuple[str, str, Any]] = [
        (
            "Profile",
            "kns.default",
            resource(
                "Profile",
                "kns.default",
                {"labelsToApply": {"pcns.projectcalico.org/name": "default"}},
            ),
        )
    ]
    for i in range(ENDPOINTS):
        updates.append(("WorkloadEndpoint", *wep(i, f"app{(i // NODES) % APPS}")))
    for p in range(POLICIES):
        name = f"pol{p}"
        updates.append(
            (
                "GlobalNetworkPolicy",
                name,
                resource(
                    "GlobalNetworkPolicy",
                    name,
                    {
                        "order": p % 50,
                        "selector": f'app == "app{p % APPS}"',
                        "ingress": [
                            {
                                "action": "Allow",
                                "protocol": "TCP",
                                "source": {"selector": f'app == "app{(p * 7) % APPS}"'},
                                "destination": {"ports": [80, 443]},
                            },
                            {
                                "action": "Allow",
                                "source": {"selector": f'role == "r{p % 7}" && env == "prod"'},
                            },
                        ],
                        "egress": [
                            {"action": "Allow", "destination": {"selector": f'team == "t{p % 13}"'}}
                        ],
                    },
                ),
            )
        )
    return updates


def main() -> None:
    updates = build()
    msgs: list[Any] = []
    # Memory first (tracemalloc slows everything down), then the timed run.
    tracemalloc.start()
    probe = CalcGraph(HOST, lambda m: None)
    for kind, key, res in updates:
        probe.on_resource(kind, key, res)
    probe.on_in_sync()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del probe
    gc.collect()
    t0 = time.perf_counter()
    graph = CalcGraph(HOST, msgs.append)
    for kind, key, res in updates:
        graph.on_resource(kind, key, res)
    graph.on_in_sync()
    initial = time.perf_counter() - t0
    gc.freeze()  # as the daemon does after in-sync: the snapshot is long-lived
    print(
        f"initial compute: {ENDPOINTS} endpoints ({ENDPOINTS // NODES} local), "
        f"{POLICIES} policies -> {len(msgs)} messages in {initial:.3f} s (target <= 2 s)"
    )
    print(
        f"  active policies {graph.active_policy_count}, ip sets {graph.ipset_count}, "
        f"peak traced memory {peak / 1e6:.1f} MB"
    )

    # One endpoint label change, local and remote, alternating apps.
    samples: list[float] = []
    by_kind: dict[str, list[float]] = {"local": [], "remote": []}
    for n in range(400):
        i = (n * 100) % ENDPOINTS  # node0's endpoints are multiples of 100
        if n % 2:
            i += 1  # a remote endpoint
        key, res = wep(i, f"app{(n * 31) % APPS}")
        msgs.clear()
        t = time.perf_counter()
        graph.on_resource("WorkloadEndpoint", key, res)
        graph.flush()
        samples.append(time.perf_counter() - t)
        by_kind["remote" if n % 2 else "local"].append(samples[-1])
    samples.sort()
    print(
        f"label change -> messages: median {statistics.median(samples) * 1e3:.3f} ms, "
        f"p99 {samples[int(len(samples) * 0.99)] * 1e3:.3f} ms (target <= 1 ms)"
    )
    for kind, vals in by_kind.items():
        vals.sort()
        print(
            f"  {kind} endpoint: median {statistics.median(vals) * 1e3:.3f} ms, "
            f"p99 {vals[int(len(vals) * 0.99)] * 1e3:.3f} ms"
        )


if __name__ == "__main__":
    main()
