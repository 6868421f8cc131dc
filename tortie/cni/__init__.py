"""The CNI plugin `tortie` and the IPAM plugin `tortie-ipam` (Calico's `calico` and `calico-ipam`).

A container runtime runs one plugin process per operation, so everything here is written for
a short life and a cheap start: no YAML, no msgspec, no pyroute2; the datastore is reached
over etcd's JSON gateway (`tortie.datastore.etcd`) and the kernel over a few hand-built
netlink messages (`tortie.cni.netlink`).

- `tortie.cni.spec`: the CNI protocol: versions, environment, `CNI_ARGS`, errors, results.
- `tortie.cni.config`: the network configuration with Calico's keys, the node name.
- `tortie.cni.netlink`: a minimal rtnetlink client and per-thread `setns`.
- `tortie.cni.dataplane`: the workload veth as Calico wires it (ADD, DEL, CHECK).
- `tortie.cni.endpoint`: WorkloadEndpoint and Profile documents and their datastore writes.
- `tortie.cni.ipam`: the `tortie-ipam` plugin and the delegation to any IPAM plugin.
- `tortie.cni.plugin`: the `tortie` plugin's commands (ADD, DEL, CHECK, STATUS, GC, VERSION).
- `tortie.cni.install`: `tortie-cni install`: launcher scripts for a CNI bin directory.

Importing this package imports nothing.
"""
