"""Benchmark: IPAM allocations per second on a real etcd, alone and under contention.

Starts its own etcd (127.0.0.1, free ports, data in a temporary directory removed at the end;
`--tmpfs` puts it in /dev/shm, taking the disk's fsync out of the figures), creates a /16 pool
(/26 blocks) and three Nodes, then measures, each on a fresh datastore:

- one node, reads per request: N sequential `auto_assign` calls (1 IPv4 + handle + attributes,
  as the CNI plugin makes them), reading pools, reservations and config every time;
- one node, one allocator: the same from a long-lived IPAMClient with `watch=True` (pools,
  reservations and config from a watch; the block as it last wrote it);
- one node, 3 clients: 3 threads, each its own IPAMClient (like 3 CNI processes), all on
  node1: they contend for the same block (compare-and-swap conflicts and retries);
- one node, 3 threads sharing one IPAMClient (like the libnetwork driver): the client queues
  its own block writes per node, so those do not conflict (block claims still can), and their
  handle writes overlap;
- 3 nodes: one allocator thread per node (separate blocks; etcd batches their writes);
- release by handle, sequentially, of N/3 of the handles allocated in the last run.

Every run checks that no address was handed out twice and prints the count (must be 0).
Exits non-zero on duplicates, or when one node (one allocator, or 3 threads on one client)
stays under the target (300/s).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tortie.api import load
from tortie.datastore import keys
from tortie.datastore.backend import KV, RevisionConflict, TxnResult
from tortie.datastore.client import ResourceClient
from tortie.datastore.etcd import EtcdBackend
from tortie.ipam import AutoAssignArgs, IPAMClient
from tortie.lab.etcd import EtcdServer

TARGET_ONE_NODE = 300.0

CLUSTER = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1}
spec: {cidr: 10.64.0.0/16, blockSize: 26}
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
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node3}
spec: {}
"""


class CountingBackend:
    """Counts requests and compare-and-swap conflicts (RevisionConflict, failed txn) of the
    backend it wraps."""

    def __init__(self, backend: EtcdBackend) -> None:
        self._b = backend
        self.requests = 0
        self.conflicts = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Callable[..., object]:
        fn = getattr(self._b, name)

        def call(*args: object, **kwargs: object) -> object:
            with self._lock:
                self.requests += 1
            try:
                result = fn(*args, **kwargs)
            except RevisionConflict:
                with self._lock:
                    self.conflicts += 1
                raise
            if isinstance(result, TxnResult) and not result.succeeded:
                with self._lock:
                    self.conflicts += 1
            return result

        return call

    def update(self, key: str, value: bytes, expect_revision: int | None) -> KV:
        return self.__getattr__("update")(key, value, expect_revision)  # type: ignore[return-value]


def fresh(backend: EtcdBackend) -> None:
    backend.delete_prefix("/calico/")
    rc = ResourceClient(backend)
    for res in load(CLUSTER):
        rc.create(res)


def allocate_loop(ipam: IPAMClient, node: str, tag: str, n: int, out: dict[str, str],
                  latencies: list[float], lock: threading.Lock) -> None:
    for i in range(n):
        hid = f"k8s-pod-network.{tag}-{i:05d}"
        t = time.perf_counter()
        res = ipam.auto_assign(AutoAssignArgs(
            num4=1, handle_id=hid, hostname=node,
            attrs={"node": node, "namespace": "bench", "pod": f"{tag}-{i}",
                   "timestamp": "2024-01-01 00:00:00 +0000 UTC"},
        ))
        dt = time.perf_counter() - t
        with lock:
            latencies.append(dt)
            out[hid] = res.addresses[0]


def run(backend: EtcdBackend, workers: list[tuple[str, str]], n: int,
        watch: bool = False, shared: bool = False) -> dict[str, object]:
    fresh(backend)
    counting = CountingBackend(backend)
    out: dict[str, str] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    if shared:
        one = IPAMClient(counting, ResourceClient(counting), watch=watch)  # type: ignore[arg-type]
        clients = [one] * len(workers)
    else:
        clients = [IPAMClient(counting, ResourceClient(counting), watch=watch)  # type: ignore[arg-type]
                   for _ in workers]
    # Warm up: config written, connections open (not timed).
    clients[0].get_config()
    counting.requests = counting.conflicts = 0
    threads = [
        threading.Thread(target=allocate_loop,
                         args=(c, node, tag, n, out, latencies, lock))
        for c, (node, tag) in zip(clients, workers, strict=True)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in set(clients):
        c.close()
    addrs = list(out.values())
    kvs, _ = backend.list(keys.block_prefix())
    total = len(workers) * n
    lat = sorted(latencies)
    return {
        "allocs": len(addrs),
        "expected": total,
        "rate": len(addrs) / elapsed,
        "p50": statistics.median(lat) * 1000,
        "p99": lat[int(len(lat) * 0.99) - 1] * 1000,
        "duplicates": len(addrs) - len(set(addrs)),
        "blocks": len(kvs),
        "requests": counting.requests / max(1, len(addrs)),
        "conflicts": counting.conflicts,
        "handles": list(out),
    }


def report(name: str, r: dict[str, object]) -> None:
    print(f"{name:<28} {r['rate']:7.0f} allocs/s   p50 {r['p50']:5.1f} ms   "
          f"p99 {r['p99']:5.1f} ms   {r['requests']:.1f} requests/alloc   "
          f"{r['conflicts']} CAS conflicts   {r['blocks']} blocks   "
          f"duplicates {r['duplicates']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=500, help="allocations per allocator")
    parser.add_argument("--tmpfs", action="store_true", help="etcd data in /dev/shm")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="tortie-bench-ipam-",
                               dir="/dev/shm" if args.tmpfs else None)
    server = EtcdServer(workdir, name="bench-ipam")
    failed = False
    try:
        server.start()
        backend = EtcdBackend(server.endpoint)
        where = "tmpfs (/dev/shm)" if args.tmpfs else "disk"
        print(f"etcd {server.endpoint}, data on {where}; pool 10.64.0.0/16, /26 blocks")

        cold = run(backend, [("node1", "a")], args.n)
        report("1 node, reads per request", cold)
        one = run(backend, [("node1", "a")], args.n, watch=True)
        report("1 node, 1 allocator", one)
        per = max(1, args.n // 3)
        contended = run(backend, [("node1", "a"), ("node1", "b"), ("node1", "c")], per,
                        watch=True)
        report("1 node, 3 clients", contended)
        shared = run(backend, [("node1", "a"), ("node1", "b"), ("node1", "c")], per,
                     watch=True, shared=True)
        report("1 node, 3 threads, 1 client", shared)
        spread = run(backend, [("node1", "a"), ("node2", "b"), ("node3", "c")], per,
                     watch=True)
        report("3 nodes, 1 allocator each", spread)

        ipam = IPAMClient(backend)
        handles = list(spread["handles"])[:per]  # type: ignore[call-overload]
        t0 = time.perf_counter()
        for h in handles:
            ipam.release_by_handle(h)
        rel = len(handles) / (time.perf_counter() - t0)
        print(f"{'release by handle':<28} {rel:7.0f} releases/s")

        runs = (cold, one, contended, shared, spread)
        dups = sum(int(r["duplicates"]) for r in runs)  # type: ignore[call-overload]
        missing = [r for r in runs if r["allocs"] != r["expected"]]
        print(f"duplicates: {dups}")
        if dups or missing:
            print("FAIL: duplicate or missing allocations")
            failed = True
        best = max(float(one["rate"]), float(shared["rate"]))  # type: ignore[arg-type]
        if best < TARGET_ONE_NODE:
            print(f"below target: one node {best:.0f}/s < {TARGET_ONE_NODE:.0f}/s")
            failed = True
        backend.close()
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
