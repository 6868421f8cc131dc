"""The lab: etcd servers, network-namespace clusters and workloads for the demo, tests and
benchmarks.

- `tortie.lab.cluster`: `Lab` — a Calico cluster in network namespaces (fabric, etcd, nodes,
  workloads), its teardown from the state file (`down_lab`, `cleanup_stale`).
- `tortie.lab.topology`: the plan of a lab (names and addresses) as plain data.
- `tortie.lab.workload`: workload plumbing exactly as the CNI plugin does it, WorkloadEndpoint
  names, the pluggable address allocator.
- `tortie.lab.netns`: namespaces, batched `ip` calls, per-thread setns, process sweeps.
- `tortie.lab.state`: the per-lab state file under ``/run/tortie-lab/<id>/``.
- `tortie.lab.etcd`: `EtcdServer`, a private etcd (optionally inside a namespace).

The names below are imported lazily, so `import tortie.lab.etcd` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tortie.lab.cluster import Lab, WorkloadRequest, cleanup_stale, down_lab
    from tortie.lab.netns import LabError
    from tortie.lab.workload import Workload

__all__ = ["Lab", "LabError", "Workload", "WorkloadRequest", "cleanup_stale", "down_lab"]

_EXPORTS = {
    "Lab": "tortie.lab.cluster",
    "WorkloadRequest": "tortie.lab.cluster",
    "cleanup_stale": "tortie.lab.cluster",
    "down_lab": "tortie.lab.cluster",
    "LabError": "tortie.lab.netns",
    "Workload": "tortie.lab.workload",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tortie.lab' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
