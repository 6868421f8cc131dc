"""`tortie-libnetwork`: Docker's remote network driver `tortie` and IPAM driver `tortie-ipam`.

Calico's libnetwork-plugin, rebuilt: one long-lived process per Docker host serves two plugin
sockets in Docker's plugin directory (`/run/docker/plugins/tortie.sock` and
`tortie-ipam.sock`; a plugin's driver name is its socket's name), so that

    docker network create --driver tortie --ipam-driver tortie-ipam net1
    docker run --net net1 --label org.projectcalico.label.role=db ...

puts the container on a Calico-style routed veth with an address from Tortie's block IPAM,
a WorkloadEndpoint Felix enforces policy on, and the network's Profile.

- `tortie.libnetwork.config`: `LibnetworkConfig` (command line and Calico's environment).
- `tortie.libnetwork.protocol`: the plugin protocol's constants and `DriverError`.
- `tortie.libnetwork.ipam`: `IpamDriver` (pools, addresses) over `tortie.ipam.IPAMClient`.
- `tortie.libnetwork.network`: `NetworkDriver` (networks, endpoints, join/leave).
- `tortie.libnetwork.veth`: the host side of Join and Leave (reuses `tortie.cni.netlink`).
- `tortie.libnetwork.dockerapi`: the few Docker Engine API reads the driver needs.
- `tortie.libnetwork.server`: the HTTP servers on the sockets, `run(config)`, `main()`.

Importing this package imports nothing.
"""
