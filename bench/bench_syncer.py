"""Benchmark: the Syncer on a real etcd with 10,000 resources.

Starts its own etcd (127.0.0.1, free ports, temporary data dir, removed at the end), writes
10,000 ~500-byte JSON resources in transactions of 128, then measures:

- snapshot: Syncer start -> IN_SYNC with all 10,000 updates delivered (target <= 2 s);
- watch latency: for 200 sequential puts, the time from starting the put to the Syncer's
  callback receiving that update (target: median <= 5 ms). This includes the put's own round
  trip, so it is an upper bound on etcd-event-to-callback latency.

Prints the figures; exits non-zero if a target is missed.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tortie.datastore.etcd import EtcdBackend
from tortie.datastore.syncer import Syncer, SyncStatus, Update
from tortie.lab.etcd import EtcdServer

N_RESOURCES = 10_000
N_PUTS = 200
PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/"


def resource(i: int) -> bytes:
    doc = {
        "kind": "WorkloadEndpoint",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {
            "name": f"node{i % 50}-k8s-pod{i}-eth0",
            "namespace": f"ns{i % 20}",
            "uid": f"{i:08x}-0000-4000-8000-000000000000",
            "labels": {"app": f"app{i % 100}", "tier": "backend", "projectcalico.org/namespace":
                       f"ns{i % 20}", "projectcalico.org/orchestrator": "k8s"},
        },
        "spec": {
            "orchestrator": "k8s", "node": f"node{i % 50}", "pod": f"pod{i}",
            "endpoint": "eth0", "interfaceName": f"cali{i:011x}",
            "ipNetworks": [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32"],
            "profiles": [f"kns.ns{i % 20}", "ksa.default"], "mac": "ee:ee:ee:ee:ee:ee",
        },
    }
    raw = json.dumps(doc).encode()
    return raw + b" " * max(0, 500 - len(raw))


class Consumer:
    def __init__(self) -> None:
        self.state: dict[str, bytes] = {}
        self.in_sync = threading.Event()
        self.waiting_for: str | None = None
        self.arrived = threading.Event()
        self.arrived_at = 0.0

    def on_status(self, status: SyncStatus) -> None:
        if status is SyncStatus.IN_SYNC:
            self.in_sync.set()

    def on_updates(self, updates: list[Update]) -> None:
        now = time.perf_counter()
        for u in updates:
            if u.value is None:
                self.state.pop(u.key, None)
            else:
                self.state[u.key] = u.value
            if u.key == self.waiting_for:
                self.arrived_at = now
                self.arrived.set()


def main() -> int:
    with EtcdServer(name="tortie-bench") as server:
        backend = EtcdBackend(server.endpoint)
        try:
            t0 = time.perf_counter()
            backend.put_many(
                (f"{PREFIX}ns{i % 20}/wep-{i:05d}", resource(i)) for i in range(N_RESOURCES)
            )
            write_s = time.perf_counter() - t0
            size = len(resource(0))

            t0 = time.perf_counter()
            kvs, _ = backend.list(PREFIX)
            list_s = time.perf_counter() - t0
            assert len(kvs) == N_RESOURCES

            consumer = Consumer()
            syncer = Syncer(EtcdBackend(server.endpoint), [PREFIX], consumer)
            t0 = time.perf_counter()
            syncer.start()
            try:
                if not consumer.in_sync.wait(30):
                    print("syncer did not reach in-sync within 30 s")
                    return 1
                sync_s = time.perf_counter() - t0
                assert len(consumer.state) == N_RESOURCES

                latencies: list[float] = []
                for i in range(N_PUTS):
                    key = f"{PREFIX}ns{i % 20}/wep-{i:05d}"
                    consumer.waiting_for = key
                    consumer.arrived.clear()
                    start = time.perf_counter()
                    backend.put(key, resource(i + N_RESOURCES))
                    if not consumer.arrived.wait(5):
                        print(f"update {i} not delivered within 5 s")
                        return 1
                    latencies.append(consumer.arrived_at - start)
            finally:
                syncer.stop()
                syncer.backend.close()
        finally:
            backend.close()

    lat_ms = sorted(x * 1000 for x in latencies)
    median = statistics.median(lat_ms)
    p99 = lat_ms[int(len(lat_ms) * 0.99) - 1]
    print(f"resources:               {N_RESOURCES} x {size} bytes")
    print(f"write (txn of 128):      {write_s:.2f} s")
    print(f"list alone:              {list_s * 1000:.0f} ms")
    print(f"syncer start -> in-sync: {sync_s * 1000:.0f} ms   (target <= 2000 ms)")
    print(f"put -> callback latency: median {median:.2f} ms, p99 {p99:.2f} ms, "
          f"max {lat_ms[-1]:.2f} ms over {N_PUTS} puts   (target median <= 5 ms)")
    ok = sync_s <= 2.0 and median <= 5.0
    print("PASS" if ok else "FAIL: a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
