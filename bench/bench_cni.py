"""CNI plugin latency as the runtime sees it: ADD and DEL, process start included (root needed).

A one-node lab with its etcd, an IP pool, the `tortie` launcher installed in a temporary bin
dir, and N workload namespaces. Each invocation is a fresh plugin process started inside the
node's namespace (as a runtime in that namespace would exec it) with the `CNI_*` variables and
the configuration on stdin; the wall clock runs from before the exec to the process's exit.

Two paths are timed, in the same run:
- `daemon`: the node's `tortie-cni daemon` is running; the plugin process forwards to it;
- `in-process`: `TORTIE_CNI_DAEMON=0`: the plugin imports everything and does the work itself.
The baseline is the bare interpreter the launcher uses (`python -IS -c pass`), started the same
way and interleaved with the plugin runs (so that both see the same machine load: on a shared
2-core machine the baseline itself moves between 10 and 25 ms). Targets: ADD median <= 100 ms,
DEL median <= 50 ms (daemon path). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_cni.py [--runs 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tortie.api import validate
from tortie.cni import lab as cnilab
from tortie.cni.install import netconf
from tortie.lab import Lab, netns


def _stats(samples: list[float]) -> dict[str, float]:
    xs = sorted(samples)
    p99 = xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]
    return {"median_ms": statistics.median(xs) * 1000, "p99_ms": p99 * 1000,
            "min_ms": xs[0] * 1000, "n": len(xs)}


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tortie-bench-cni-") as tmp:
        plugin = cnilab.install(Path(tmp) / "bin") / "tortie"
        lab = Lab(nodes=1, static_route=False, host_sysctls=False)
        lab.up()
        names = [f"tl{lab.lab_id}-wl.bench.c{i}" for i in range(runs)]
        try:
            lab.client.apply(validate({
                "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                "metadata": {"name": "bench-pool"},
                "spec": {"cidr": "10.66.0.0/16", "blockSize": 26},
            }))
            cnilab.start_daemon(lab, "node1", log_file=str(Path(tmp) / "daemon.log"))
            netns.create_namespaces(names)
            ns = lab.netns_of("node1")
            conf = json.dumps(netconf("bench-net", etcd_endpoints=lab.etcd_endpoint,
                                      nodename="node1", conflist=False,
                                      extra={"ipam_lock_file": f"{tmp}/ipam.lock"})).encode()

            def once(cmd: str, i: int, env: dict[str, str]) -> None:
                cid = f"bench{i:04d}{'p' if env else 'd'}"
                res = cnilab.invoke(ns, plugin, cmd, conf, container_id=cid,
                                    netns_path=f"/run/netns/{names[i]}", env=env)
                if res.returncode != 0:
                    raise RuntimeError(f"{cmd} failed: {res.stdout!r} {res.stderr!r}")

            def baseline() -> None:
                netns.run_in(ns, subprocess.run, [sys.executable, "-IS", "-c", "pass"],
                             check=True)

            base: list[float] = []
            for mode, env in (("daemon", {}), ("in-process", {"TORTIE_CNI_DAEMON": "0"})):
                once("ADD", 0, env)  # warm-up (first-use costs: pool watch, .pyc files)
                once("DEL", 0, env)
                adds, dels, add_over, del_over = [], [], [], []
                # Interleaved with the baseline, so that both see the same machine load.
                for i in range(runs):
                    base.append(_timed(baseline))
                    adds.append(_timed(lambda i=i, env=env: once("ADD", i, env)))
                    add_over.append(adds[-1] - base[-1])
                for i in range(runs):
                    base.append(_timed(baseline))
                    dels.append(_timed(lambda i=i, env=env: once("DEL", i, env)))
                    del_over.append(dels[-1] - base[-1])
                out[mode] = {"ADD": _stats(adds), "DEL": _stats(dels),
                             "ADD over baseline": _stats(add_over),
                             "DEL over baseline": _stats(del_over)}
            out["baseline python -IS -c pass"] = _stats(base)
        finally:
            netns.delete_namespaces(names)
            lab.down()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    res = run(opts.runs)
    if opts.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"CNI plugin latency, {opts.runs} runs each (wall clock, process start included)")
    print(f"{'':36s} {'median':>8s} {'p99':>8s} {'min':>8s}")
    for mode in ("daemon", "in-process"):
        for cmd in ("ADD", "DEL", "ADD over baseline", "DEL over baseline"):
            s = res[mode][cmd]
            print(f"{mode + ' ' + cmd:36s} {s['median_ms']:7.1f}ms {s['p99_ms']:7.1f}ms "
                  f"{s['min_ms']:7.1f}ms")
    s = res["baseline python -IS -c pass"]
    print(f"{'baseline python -IS -c pass':36s} {s['median_ms']:7.1f}ms {s['p99_ms']:7.1f}ms "
          f"{s['min_ms']:7.1f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
