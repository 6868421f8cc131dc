"""``tortie-node``: the host bundle, as calico/node (ARCHITECTURE §1).

One process per host. It first runs **start-up** (the node's name, its Node resource with an
autodetected or configured address, the default IP pools, the cluster-wide defaults), then
**supervises** Felix and, with the BIRD backend, tortie-confd and BIRD, restarting whatever
dies, until SIGTERM stops everything it started.

Modules, from pure to I/O:

- `tortie.node.config`: `NodeConfig`, everything calico/node reads from its environment
  (``NODENAME``, ``IP``, ``IP_AUTODETECTION_METHOD``, ``CALICO_IPV4POOL_*``,
  ``CALICO_NETWORKING_BACKEND``...), parsed and validated, no I/O.
- `tortie.node.autodetect`: calicoctl's IP autodetection methods over an interface table
  (``first-found``, ``interface=``, ``skip-interface=``, ``cidr=``, ``can-reach=``), and the
  host's real table (netlink) and route lookup (a connected UDP socket, no packet sent).
- `tortie.node.startup`: the Node resource, IP conflicts, AS number, default pools,
  ClusterInformation, FelixConfiguration / BGPConfiguration / IPAMConfiguration defaults.
- `tortie.node.tunnel`: the VXLAN tunnel address (IPAM handle ``vxlan-tunnel-addr-<node>``)
  and VTEP MAC on the Node while a VXLAN pool selects the node, released when none does.
- `tortie.node.supervisor`: child processes with per-process size-capped logs, restart with
  exponential backoff, clean shutdown by PID.
- `tortie.node.health`: ``--check-ready`` / ``--check-live`` (calico-node's ``-felix-ready``,
  ``-bird-ready``...): Felix's health endpoint and BIRD's BGP sessions.
- `tortie.node.checksystem` and `tortie.node.diags`: what ``tortiectl node checksystem`` and
  ``tortiectl node diags`` do on the host.
- `tortie.node.daemon`: the process: arguments, logging, start-up, then supervision.
"""
