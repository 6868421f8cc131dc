"""`tortiectl get gnp` with 1,000 policies, end to end (interpreter start included).

Starts a private etcd on loopback, writes 1,000 GlobalNetworkPolicies through the resource
client, then times the real `tortiectl` console script (and `python -c pass` as the baseline
interpreter start, in the same run). Target: ≤ 1 s.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tortie.api import validate
from tortie.datastore.client import ResourceClient
from tortie.datastore.etcd import EtcdBackend
from tortie.lab.etcd import EtcdServer

POLICIES = 1000
RUNS = 7


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    return time.perf_counter() - t, out


def main() -> None:
    tortiectl = shutil.which("tortiectl", path=str(Path(sys.executable).parent)) or "tortiectl"
    with EtcdServer(name="bench-ctl") as server:
        client = ResourceClient(EtcdBackend(server.endpoint))
        for i in range(POLICIES):
            client.create(
                validate(
                    {
                        "apiVersion": "projectcalico.org/v3",
                        "kind": "GlobalNetworkPolicy",
                        "metadata": {"name": f"policy-{i:04d}"},
                        "spec": {
                            "order": i,
                            "selector": f'app == "a{i % 50}"',
                            "ingress": [
                                {
                                    "action": "Allow",
                                    "protocol": "TCP",
                                    "source": {"selector": f'role == "r{i % 7}"'},
                                    "destination": {"ports": [80, 443]},
                                }
                            ],
                        },
                    }
                )
            )
        env = dict(os.environ, ETCD_ENDPOINTS=server.endpoint)
        results: dict[str, list[float]] = {
            "python -c pass": [],
            "get gnp": [],
            "get gnp -o wide": [],
            "get gnp -o yaml": [],
        }
        for _ in range(RUNS):
            results["python -c pass"].append(timed([sys.executable, "-c", "pass"], env)[0])
            for label, args in (
                ("get gnp", ["get", "gnp"]),
                ("get gnp -o wide", ["get", "gnp", "-o", "wide"]),
                ("get gnp -o yaml", ["get", "gnp", "-o", "yaml"]),
            ):
                secs, out = timed([tortiectl, *args], env)
                if out.returncode != 0:
                    raise SystemExit(f"tortiectl failed: {out.stderr}")
                rows = len(out.stdout.splitlines())
                results[label].append(secs)
        base = statistics.median(results["python -c pass"])
        print(f"tortiectl with {POLICIES} GlobalNetworkPolicies ({RUNS} runs, median):")
        for label, vals in results.items():
            med = statistics.median(vals)
            print(f"  {label:18s} {med * 1000:7.1f} ms  (x{med / base:.1f} of bare python)")
        print(f"  last table had {rows} lines; target: get gnp <= 1000 ms")


if __name__ == "__main__":
    main()
