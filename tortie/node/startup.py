"""Start-up, as calico/node's ``startup.Run``: everything that must hold before Felix starts.

In calico/node's order:

1. The node name (``NODENAME``, the nodename file, ``HOSTNAME``, the host name).
2. This node's Node resource, read (or a new one), then, unless the backend is ``none``
   (policy only: calico/node writes no BGP details then):

   - the IPv4/IPv6 address (`configure_ips`): autodetected when ``IP=autodetect``, or when
     ``IP`` is unset and the Node has none; kept when ``IP`` is unset or ``none`` and the Node
     has one; else the explicit address, given its interface's prefix. IPv6 only on request.
   - when an address changed, a check that no *other* Node uses it: calico/node refuses to
     start then (and clears an autodetected, conflicting address from its own Node).
   - the AS number from ``AS`` (else the Node's, else the cluster's).

   The Node is created or updated with a compare-and-swap on its revision, so labels, tunnel
   addresses, orchRefs and anything else already there are kept.
3. The run and log directories.
4. The default IP pools, only for IP versions that have no pool at all.
5. Cluster defaults: ClusterInformation ``default`` (GUID, version, type, datastoreReady),
   the ``default``, ``kube-admin`` and ``kube-baseline`` tiers, FelixConfiguration ``default``
   (``reportingInterval: 0s``, ``logSeverityScreen: Info``) and ``node.<name>``
   (``defaultEndpointToHostAction: Return``), BGPConfiguration ``default`` (empty) and
   IPAMConfiguration ``default``; each only filled in where missing.
6. The nodename file, for the CNI plugin.

A Tortie difference: calico/node on etcd in policy-only mode leaves a new node without a Node
resource (Kubernetes would provide one); tortie-node creates an empty one, since IPAM and the
CNI plugin look up the node's labels.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tortie.api import validate
from tortie.api.kinds.node import Node, NodeBGPSpec, NodeInterface
from tortie.datastore.client import (
    ResourceClient,
    ResourceConflict,
    ResourceExists,
    ResourceNotFound,
)
from tortie.node.autodetect import (
    DEFAULT_INTERFACES_TO_EXCLUDE,
    AutodetectError,
    HostNetwork,
    filter_interfaces,
    find_address,
    local_cidr,
)
from tortie.node.autodetect import (
    autodetect as detect_address,
)
from tortie.node.config import DEFAULT_IPV4_POOL_CIDR, NodeConfig, PoolConfig

__all__ = [
    "StartupError",
    "StartupResult",
    "check_conflicting_nodes",
    "configure_as",
    "configure_ips",
    "default_ipv4_pool",
    "determine_node_name",
    "ensure_cluster_information",
    "ensure_default_config",
    "ensure_pools",
    "generate_ula_prefix",
    "run_startup",
    "write_nodename",
]

log = logging.getLogger("tortie.node")

FELIX_NODE_CONFIG_PREFIX = "node."
WRITE_RETRIES = 10


class StartupError(Exception):
    """Start-up cannot go on; the message says why and what to do (calico/node terminates)."""


@dataclass(frozen=True)
class StartupResult:
    node_name: str
    node: Node
    created: bool


def _api_version() -> str:
    from tortie import __version__

    return f"v{__version__}"


# --- the node name -----------------------------------------------------------------------------


def determine_node_name(cfg: NodeConfig, hostname: Callable[[], str] = socket.gethostname) -> str:
    """calico/node's ``DetermineNodeName``: ``NODENAME``, the nodename file, ``HOSTNAME``
    (lower-cased), then the host name (lower-cased)."""
    if cfg.nodename:
        log.info("using NODENAME environment for node name %s", cfg.nodename)
        return cfg.nodename
    try:
        with open(cfg.nodename_file) as f:
            stored = f.read().strip()
    except FileNotFoundError:
        stored = ""
    except OSError as exc:
        raise StartupError(f"failed to read the nodename file {cfg.nodename_file}: {exc}") from None
    if stored:
        log.info("using stored node name %s from %s", stored, cfg.nodename_file)
        return stored
    if cfg.hostname_env:
        log.info("using HOSTNAME environment (lowercase) for node name %s", cfg.hostname_env)
        return cfg.hostname_env
    name = hostname().strip().lower()
    if not name:
        raise StartupError("unable to determine the node name: set NODENAME")
    log.warning("using auto-detected node name %s; an explicit NODENAME is recommended", name)
    return name


def write_nodename(path: str, name: str) -> None:
    """The nodename file the CNI plugin reads (no trailing newline, as calico/node)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(name)
    os.replace(tmp, path)


# --- addresses ---------------------------------------------------------------------------------


def _validate_ip(address: str | None, host: HostNetwork) -> None:
    """Warn when the address is on none of the host's interfaces (calico/node's validateIP)."""
    if not address:
        return
    ip = ipaddress.ip_interface(address).ip
    if find_address(host.interfaces(), str(ip), ip.version) is None:
        log.warning("unable to confirm IPv%d address %s is assigned to this host", ip.version, ip)


def _configure_family(bgp: NodeBGPSpec, cfg: NodeConfig, host: HostNetwork, version: int) -> None:
    attr = "ipv4_address" if version == 4 else "ipv6_address"
    setting = cfg.ip if version == 4 else cfg.ip6
    method = cfg.ip_method if version == 4 else cfg.ip6_method
    current = getattr(bgp, attr)
    detect = setting == "autodetect" or (version == 4 and setting == "" and not current)
    if detect:
        try:
            setattr(bgp, attr, str(detect_address(method, version, host)))
        except AutodetectError as exc:
            if not current:
                raise StartupError(
                    f"failed to autodetect an IPv{version} address ({exc}). If "
                    "auto-detecting, choose a different autodetection method "
                    f"(IP{'' if version == 4 else '6'}_AUTODETECTION_METHOD); otherwise give "
                    f"the address explicitly (IP{'' if version == 4 else '6'}=...)"
                ) from None
            log.warning(
                "autodetection of IPv%d address failed (%s), keeping existing value: %s",
                version,
                exc,
                current,
            )
            _validate_ip(current, host)
    elif setting == "none":
        if current:
            log.info(
                "autodetection for IPv%d disabled, keeping existing value: %s", version, current
            )
            _validate_ip(current, host)
    else:
        if setting:
            try:
                value = local_cidr(setting, version, host.interfaces())
            except (AutodetectError, ValueError) as exc:
                raise StartupError(f"IP{'' if version == 4 else '6'}={setting}: {exc}") from None
            log.info("using IPv%d address from environment: %s", version, value)
            setattr(bgp, attr, value)
        _validate_ip(getattr(bgp, attr), host)


def _node_interfaces(cfg: NodeConfig, host: HostNetwork) -> list[NodeInterface] | None:
    """calico/node's ``spec.interfaces``: filled in only when IP or IP6 is given explicitly."""
    explicit4 = cfg.ip not in ("", "none")
    explicit6 = cfg.ip6 not in ("", "none")
    if not (explicit4 or explicit6):
        return None
    versions = [v for v, on in ((4, explicit4), (6, explicit6)) if on]
    rows = []
    for iface in sorted(
        filter_interfaces(host.interfaces(), (), DEFAULT_INTERFACES_TO_EXCLUDE),
        key=lambda i: i.name,
    ):
        addrs = [str(a.ip) for a in iface.addresses if a.version in versions]
        rows.append(NodeInterface(name=iface.name, addresses=addrs or None))
    return rows or None


def configure_ips(node: Node, cfg: NodeConfig, host: HostNetwork) -> bool:
    """Set the Node's BGP addresses (and ``spec.interfaces``); True when they changed, which is
    when a conflict check is due. StartupError when no address can be had."""
    spec = node.spec
    if spec.bgp is None:
        spec.bgp = NodeBGPSpec()
    bgp = spec.bgp
    old = (bgp.ipv4_address, bgp.ipv6_address, spec.interfaces)
    _configure_family(bgp, cfg, host, 4)
    _configure_family(bgp, cfg, host, 6)
    spec.interfaces = _node_interfaces(cfg, host)
    if not bgp.ipv4_address and not bgp.ipv6_address:
        raise StartupError(
            "no IPv4 or IPv6 addresses configured or detected, required for Calico networking: "
            "set IP (or IP6), or an IP_AUTODETECTION_METHOD that finds one"
        )
    if bgp.ipv4_address != old[0]:
        log.info("node IPv4 address is now %s; checking for conflicts", bgp.ipv4_address)
        return True
    if bgp.ipv6_address != old[1]:
        log.info("node IPv6 address is now %s; checking for conflicts", bgp.ipv6_address)
        return True
    return spec.interfaces != old[2]


def _ip_of(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not address:
        return None
    try:
        return ipaddress.ip_interface(address).ip
    except ValueError:
        return None


def check_conflicting_nodes(node: Node, others: Sequence[Node]) -> tuple[list[str], bool, bool]:
    """Messages for other Nodes using this Node's addresses, and (v4 conflict, v6 conflict)."""
    bgp = node.spec.bgp
    ours4 = _ip_of(bgp.ipv4_address if bgp else None)
    ours6 = _ip_of(bgp.ipv6_address if bgp else None)
    messages: list[str] = []
    v4 = v6 = False
    for other in others:
        obgp = other.spec.bgp
        if obgp is None:
            continue
        theirs4, theirs6 = _ip_of(obgp.ipv4_address), _ip_of(obgp.ipv6_address)
        if other.name == node.name:
            for ours, theirs in ((ours4, theirs4), (ours6, theirs6)):
                if ours is not None and theirs is not None and ours != theirs:
                    log.warning(
                        "node %s: address changed from %s to %s (two hosts with the same "
                        "node name?)",
                        node.name,
                        theirs,
                        ours,
                    )
            continue
        if ours4 is not None and ours4 == theirs4:
            messages.append(
                f"Calico node '{other.name}' is already using the IPv4 address {bgp.ipv4_address}."  # type: ignore[union-attr]
            )
            v4 = True
        if ours6 is not None and ours6 == theirs6:
            messages.append(
                f"Calico node '{other.name}' is already using the IPv6 address {bgp.ipv6_address}."  # type: ignore[union-attr]
            )
            v6 = True
    return messages, v4, v6


def configure_as(node: Node, cfg: NodeConfig) -> bool:
    """The AS number from ``AS``; True when set (calico/node always rewrites it then)."""
    bgp = node.spec.bgp
    if cfg.as_number is not None:
        if bgp is None:
            bgp = node.spec.bgp = NodeBGPSpec()
        log.info("using AS number specified in environment (AS=%s)", cfg.as_number)
        bgp.as_number = cfg.as_number
        return True
    if bgp is None or bgp.as_number is None:
        log.info("no AS number configured on node resource, using global value")
    else:
        log.info("using AS number %s configured in node resource", bgp.as_number)
    return False


def _tidy_bgp(node: Node) -> None:
    bgp = node.spec.bgp
    if bgp is not None and bgp.is_empty():
        node.spec.bgp = None


def _new_node(name: str) -> Node:
    return validate(
        {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name}}
    )  # type: ignore[return-value]


def _clear_node_ips(client: ResourceClient, node: Node, v4: bool, v6: bool) -> None:
    bgp = node.spec.bgp
    if bgp is None or not node.metadata.resource_version or not (v4 or v6):
        return
    if v4:
        log.info("clearing out-of-date IPv4 address %s from this node", bgp.ipv4_address)
        bgp.ipv4_address = None
    if v6:
        log.info("clearing out-of-date IPv6 address %s from this node", bgp.ipv6_address)
        bgp.ipv6_address = None
    _tidy_bgp(node)
    try:
        client.update(node)
    except (ResourceConflict, ResourceNotFound) as exc:
        log.warning("failed to clear node addresses: %s", exc)


def configure_node(
    client: ResourceClient, cfg: NodeConfig, name: str, host: HostNetwork
) -> tuple[Node, bool]:
    """Create or update this node's Node resource (see the module docstring)."""
    for _ in range(WRITE_RETRIES):
        try:
            node: Node = client.get("Node", name)  # type: ignore[assignment]
            exists = True
        except ResourceNotFound:
            log.info("building new node resource %s", name)
            node, exists = _new_node(name), False
        needs_update = not exists
        if cfg.networking:
            check = configure_ips(node, cfg, host)
            needs_update = check or needs_update
            if check and cfg.node_ip_check:
                others: list[Node] = client.list("Node").items  # type: ignore[assignment]
                messages, v4, v6 = check_conflicting_nodes(node, others)
                if messages:
                    _clear_node_ips(
                        client,
                        node,
                        v4 and cfg.ip == "autodetect",
                        v6 and cfg.ip6 == "autodetect",
                    )
                    raise StartupError(
                        " ".join(messages)
                        + " Refusing to start: give this node another address (IP=...) or "
                        "another name (NODENAME=...), or remove the stale Node with "
                        "'tortiectl delete node <name>'"
                    )
            needs_update = configure_as(node, cfg) or needs_update
        _tidy_bgp(node)
        if not needs_update:
            return node, False
        try:
            if exists:
                return client.update(node), False  # type: ignore[return-value]
            return client.create(node), True  # type: ignore[return-value]
        except (ResourceConflict, ResourceExists, ResourceNotFound):
            log.info("node %s changed while being configured; retrying", name)
            continue
    raise StartupError(f"unable to set node resource configuration for {name}: it keeps changing")


# --- pools -------------------------------------------------------------------------------------


def default_ipv4_pool(host_addresses: Sequence[ipaddress.IPv4Interface]) -> str:
    """calico/node's ``GetDefaultIPv4Pool``: 192.168.0.0/16 unless a host address is inside
    it, then the first of 172.16.0.0/16 .. 172.31.0.0/16 that holds none (else 192.168/16)."""
    candidates = [DEFAULT_IPV4_POOL_CIDR] + [f"172.{i}.0.0/16" for i in range(16, 32)]
    for cidr in candidates:
        net = ipaddress.IPv4Network(cidr)
        if not any(a.ip in net for a in host_addresses):
            return cidr
    return DEFAULT_IPV4_POOL_CIDR


def generate_ula_prefix() -> str:
    """A random RFC 4193 ULA /48 (``fdxx:xxxx:xxxx::/48``), as calico/node's default v6 pool."""
    raw = bytes([0xFD]) + secrets.token_bytes(5) + bytes(10)
    return str(ipaddress.IPv6Network((raw, 48)))


def _ipv6_supported(cfg: NodeConfig) -> bool:
    if not cfg.ipv6_support:
        return False
    supported = os.path.exists("/proc/sys/net/ipv6")
    log.info("IPv6 supported on this platform: %s", supported)
    return supported


def ensure_pools(
    client: ResourceClient,
    cfg: NodeConfig,
    host: HostNetwork,
    ipv6_supported: Callable[[NodeConfig], bool] = _ipv6_supported,
) -> list[str]:
    """Create the default pools where a version has none; the names created."""
    if cfg.no_default_pools:
        log.info("NO_DEFAULT_POOLS: skipping IP pool configuration")
        return []
    present = set()
    for pool in client.list("IPPool").items:
        net = pool.spec.network  # type: ignore[attr-defined]
        if net is not None:
            present.add(net.version)
    created = []
    for pc in cfg.pools:
        if not pc.enabled:
            log.info("skipping the default IPv%d pool (CIDR none)", pc.version)
            continue
        if pc.version in present:
            continue
        if pc.version == 6 and not ipv6_supported(cfg):
            continue
        if _create_pool(client, pc, _pool_cidr(pc, host)):
            created.append(pc.name)
    return created


def _pool_cidr(pc: PoolConfig, host: HostNetwork) -> str:
    if pc.cidr:
        return pc.cidr
    if pc.version == 6:
        return generate_ula_prefix()
    addrs = [
        a for i in host.interfaces() for a in i.addresses if isinstance(a, ipaddress.IPv4Interface)
    ]
    cidr = default_ipv4_pool(addrs)
    log.info("selected default IP pool is %s", cidr)
    return cidr


def _create_pool(client: ResourceClient, pc: PoolConfig, cidr: str) -> bool:
    pool = validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": pc.name},
            "spec": pc.spec(cidr),
        }
    )
    try:
        client.create(pool)
    except ResourceExists:  # another node got there first
        return False
    log.info(
        "created default IPv%d pool %s (%s) with NAT outgoing %s, IPIP mode %s, VXLAN mode %s",
        pc.version,
        pc.name,
        cidr,
        pc.nat_outgoing,
        pc.ipip_mode,
        pc.vxlan_mode,
    )
    return True


# --- cluster-wide defaults ---------------------------------------------------------------------


def ensure_cluster_information(
    client: ResourceClient, version: str, cluster_type: str, retries: int = WRITE_RETRIES
) -> Any:
    """libcalico-go's ``ensureClusterInformation``: create ``default`` with a new GUID, or fill
    in what is missing (version, GUID, datastoreReady when unset, new cluster types)."""
    for _ in range(retries):
        try:
            info = client.get("ClusterInformation", "default")
        except ResourceNotFound:
            res = validate(
                {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "ClusterInformation",
                    "metadata": {"name": "default"},
                    "spec": {
                        "clusterGUID": uuid.uuid4().hex,
                        "calicoVersion": version,
                        "clusterType": cluster_type or None,
                        "datastoreReady": True,
                    },
                }
            )
            try:
                return client.create(res)
            except ResourceExists:
                time.sleep(0.1)
                continue
        spec = info.spec  # type: ignore[attr-defined]
        changed = False
        if version and spec.calico_version != version:
            spec.calico_version, changed = version, True
        if not spec.cluster_guid:
            spec.cluster_guid, changed = uuid.uuid4().hex, True
        if spec.datastore_ready is None:
            spec.datastore_ready, changed = True, True
        if cluster_type:
            have = spec.cluster_type.split(",") if spec.cluster_type else []
            new = [t for t in cluster_type.split(",") if t and t not in have]
            if new:
                spec.cluster_type, changed = ",".join(have + new), True
        if not changed:
            return info
        try:
            return client.update(info)
        except ResourceConflict:
            time.sleep(0.1)
            continue
    raise StartupError("could not update ClusterInformation(default): it keeps changing")


def _ensure(client: ResourceClient, doc: dict[str, Any], fill: dict[str, Any]) -> None:
    """Create ``doc`` if missing; otherwise set the spec fields in ``fill`` that are unset."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    for _ in range(WRITE_RETRIES):
        try:
            current = client.get(kind, name)
        except ResourceNotFound:
            try:
                client.create(validate(doc))
                log.info("created %s(%s)", kind, name)
                return
            except ResourceExists:
                continue
        data = current.to_dict()
        spec = data.setdefault("spec", {})
        missing = {k: v for k, v in fill.items() if spec.get(k) in (None, "")}
        if not missing:
            return
        spec.update(missing)
        try:
            client.update(validate(data))
            return
        except ResourceConflict:
            continue


def ensure_default_config(client: ResourceClient, node_name: str) -> None:
    """Tiers, FelixConfiguration, BGPConfiguration and IPAMConfiguration defaults."""
    from tortie.api.kinds.tier import STATIC_TIERS

    api = "projectcalico.org/v3"
    for tier, (order, action) in STATIC_TIERS.items():
        spec = {"order": order, "defaultAction": action}
        _ensure(
            client,
            {"apiVersion": api, "kind": "Tier", "metadata": {"name": tier}, "spec": spec},
            {},
        )
    felix_default = {"reportingInterval": "0s", "logSeverityScreen": "Info"}
    _ensure(
        client,
        {
            "apiVersion": api,
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": felix_default,
        },
        felix_default,
    )
    node_cfg = {"defaultEndpointToHostAction": "Return"}
    _ensure(
        client,
        {
            "apiVersion": api,
            "kind": "FelixConfiguration",
            "metadata": {"name": f"{FELIX_NODE_CONFIG_PREFIX}{node_name}"},
            "spec": node_cfg,
        },
        node_cfg,
    )
    _ensure(
        client,
        {
            "apiVersion": api,
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {},
        },
        {},
    )
    from tortie.ipam import IPAMClient

    IPAMClient(client.backend, client).get_config()  # creates IPAMConfiguration(default)


# --- the whole start-up ------------------------------------------------------------------------


def ensure_directories(cfg: NodeConfig) -> None:
    for path in (cfg.run_dir, os.path.dirname(cfg.nodename_file) or ".", cfg.log_dir):
        os.makedirs(path, exist_ok=True)
    if cfg.runs_bird:
        os.makedirs(cfg.confd_dir, exist_ok=True)
        os.makedirs(os.path.dirname(cfg.bird_socket) or ".", exist_ok=True)


def run_startup(
    cfg: NodeConfig,
    client: ResourceClient,
    host: HostNetwork,
    *,
    name: str | None = None,
    version: str | None = None,
    ipv6_supported: Callable[[NodeConfig], bool] = _ipv6_supported,
) -> StartupResult:
    """calico/node's start-up (see the module docstring); StartupError when it must stop."""
    node_name = name or determine_node_name(cfg)
    log.info(
        "starting node %s with version %s (backend %s)",
        node_name,
        version or _api_version(),
        cfg.backend,
    )
    node, created = configure_node(client, cfg, node_name, host)
    ensure_directories(cfg)
    ensure_pools(client, cfg, host, ipv6_supported)
    ensure_cluster_information(client, version or _api_version(), cfg.cluster_type)
    ensure_default_config(client, node_name)
    write_nodename(cfg.nodename_file, node_name)
    log.info("using node name: %s", node_name)
    return StartupResult(node_name, node, created)
