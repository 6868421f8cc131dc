"""The etcd key layout, as libcalico-go writes it (a compatibility requirement).

- v3 resources: `/calico/resources/v3/projectcalico.org/<plural>/<name>`, or
  `.../<plural>/<namespace>/<name>` for namespaced kinds. Plurals are libcalico-go's, lower
  case (its `BGPFilters` registration is lowered to `bgpfilters`). `IPAMConfiguration` is
  stored as `ipamconfigurations/default`, as current libcalico-go registers it.
- IPAM (`/calico/ipam/v2/`): allocation blocks `assignment/ipv4/block/10.0.0.0-26`, handles
  `handle/<id>`, block affinities `host/<node>/ipv4/block/10.0.0.0-26`, and the IPAM
  allocator's own settings (strict affinity, max blocks per host) at `config`.
- Felix status: `/calico/felix/v2/<region>/host/<node>/status` and `.../last_reported_status`,
  workload endpoint status `.../host/<node>/workload/<orch>/<workload>/endpoint/<endpoint>`
  (the region is `no-region` unless one is configured); host endpoint status
  `/calico/felix/v1/host/<node>/endpoint/<endpoint>`.

In status keys, orchestrator/workload/endpoint ids are escaped as libcalico-go does (`%` ->
`%25`, `/` -> `%2f`). Resource names cannot contain `/`, so resource keys are not escaped on
the way in, but are unescaped when parsed, as libcalico-go does.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

__all__ = [
    "FELIX_V1_PREFIX",
    "FELIX_V2_PREFIX",
    "IPAM_PREFIX",
    "KINDS",
    "RESOURCES_PREFIX",
    "ROOT_PREFIX",
    "BlockKey",
    "HandleKey",
    "HostAffinityKey",
    "KindInfo",
    "StatusKey",
    "block_key",
    "block_prefix",
    "escape_name",
    "felix_last_status_key",
    "felix_status_key",
    "handle_key",
    "handle_prefix",
    "host_affinity_key",
    "host_affinity_prefix",
    "host_endpoint_status_key",
    "ipam_config_key",
    "kind_info",
    "parse_block_key",
    "parse_handle_key",
    "parse_host_affinity_key",
    "parse_resource_key",
    "parse_status_key",
    "resource_key",
    "resource_prefix",
    "unescape_name",
    "workload_endpoint_status_key",
]

ROOT_PREFIX = "/calico/"
RESOURCES_PREFIX = "/calico/resources/v3/projectcalico.org/"
IPAM_PREFIX = "/calico/ipam/v2/"
FELIX_V2_PREFIX = "/calico/felix/v2/"
FELIX_V1_PREFIX = "/calico/felix/v1/"
DEFAULT_REGION = "no-region"


class KindInfo(NamedTuple):
    kind: str
    plural: str
    namespaced: bool


_KIND_LIST = [
    KindInfo("GlobalNetworkPolicy", "globalnetworkpolicies", False),
    KindInfo("NetworkPolicy", "networkpolicies", True),
    KindInfo("StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies", False),
    KindInfo("StagedNetworkPolicy", "stagednetworkpolicies", True),
    KindInfo("StagedKubernetesNetworkPolicy", "stagedkubernetesnetworkpolicies", True),
    KindInfo("Tier", "tiers", False),
    KindInfo("Profile", "profiles", False),
    KindInfo("HostEndpoint", "hostendpoints", False),
    KindInfo("WorkloadEndpoint", "workloadendpoints", True),
    KindInfo("IPPool", "ippools", False),
    KindInfo("IPReservation", "ipreservations", False),
    KindInfo("IPAMConfiguration", "ipamconfigurations", False),
    KindInfo("BGPConfiguration", "bgpconfigurations", False),
    KindInfo("BGPPeer", "bgppeers", False),
    KindInfo("BGPFilter", "bgpfilters", False),
    KindInfo("FelixConfiguration", "felixconfigurations", False),
    KindInfo("ClusterInformation", "clusterinformations", False),
    KindInfo("Node", "nodes", False),
    KindInfo("NetworkSet", "networksets", True),
    KindInfo("GlobalNetworkSet", "globalnetworksets", False),
    KindInfo("KubeControllersConfiguration", "kubecontrollersconfigurations", False),
]

#: Every v3 kind Tortie stores, by kind name.
KINDS: dict[str, KindInfo] = {k.kind: k for k in _KIND_LIST}
_BY_LOWER: dict[str, KindInfo] = {k.kind.lower(): k for k in _KIND_LIST}
_BY_PLURAL: dict[str, KindInfo] = {k.plural: k for k in _KIND_LIST}


def kind_info(kind: str) -> KindInfo:
    """Look a kind up by its name (any case) or its plural; raise ValueError if unknown."""
    info = _BY_LOWER.get(kind.lower()) or _BY_PLURAL.get(kind.lower())
    if info is None:
        raise ValueError(f"unknown resource kind {kind!r}")
    return info


def escape_name(name: str) -> str:
    return name.replace("%", "%25").replace("/", "%2f")


def unescape_name(name: str) -> str:
    return name.replace("%2f", "/").replace("%25", "%")


def _check_segment(what: str, value: str) -> None:
    if not value:
        raise ValueError(f"{what} must not be empty")
    if "/" in value:
        raise ValueError(f"{what} must not contain '/': {value!r}")


# ---------------------------------------------------------------------------------------------
# v3 resources


def resource_key(kind: str, name: str, namespace: str | None = None) -> str:
    """The etcd key of one resource. Namespaced kinds need a namespace; others refuse one."""
    info = kind_info(kind)
    _check_segment("name", name)
    if info.namespaced:
        if not namespace:
            raise ValueError(f"{info.kind} is namespaced: a namespace is required")
        _check_segment("namespace", namespace)
        return f"{RESOURCES_PREFIX}{info.plural}/{namespace}/{name}"
    if namespace:
        raise ValueError(f"{info.kind} is not namespaced: got namespace {namespace!r}")
    return f"{RESOURCES_PREFIX}{info.plural}/{name}"


def resource_prefix(kind: str, namespace: str | None = None) -> str:
    """The prefix holding every resource of `kind` (in `namespace`, when given).

    Ends with "/" so that it never matches a longer plural or namespace by accident.
    """
    info = kind_info(kind)
    if namespace:
        if not info.namespaced:
            raise ValueError(f"{info.kind} is not namespaced: got namespace {namespace!r}")
        _check_segment("namespace", namespace)
        return f"{RESOURCES_PREFIX}{info.plural}/{namespace}/"
    return f"{RESOURCES_PREFIX}{info.plural}/"


def parse_resource_key(key: str) -> tuple[str, str | None, str]:
    """Split a resource key into (kind, namespace or None, name); raise ValueError."""
    if not key.startswith(RESOURCES_PREFIX):
        raise ValueError(f"not a v3 resource key: {key!r}")
    parts = key[len(RESOURCES_PREFIX) :].split("/")
    info = _BY_PLURAL.get(unescape_name(parts[0]))
    if info is None:
        raise ValueError(f"unknown resource type {parts[0]!r} in key {key!r}")
    if info.namespaced and len(parts) == 3 and parts[1] and parts[2]:
        return info.kind, unescape_name(parts[1]), unescape_name(parts[2])
    if not info.namespaced and len(parts) == 2 and parts[1]:
        return info.kind, None, unescape_name(parts[1])
    raise ValueError(f"malformed {info.kind} key: {key!r}")


# ---------------------------------------------------------------------------------------------
# IPAM


class BlockKey(NamedTuple):
    cidr: str  # normalised, e.g. "10.0.0.0/26"
    version: int


class HandleKey(NamedTuple):
    handle_id: str


class HostAffinityKey(NamedTuple):
    node: str
    cidr: str
    version: int


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise ValueError(f"invalid block CIDR {cidr!r}: {e}") from None


def _munge(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return f"{net.network_address}-{net.prefixlen}"


def _unmunge(segment: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    addr, sep, plen = segment.rpartition("-")
    if not sep:
        raise ValueError(f"malformed block segment {segment!r}")
    return _network(f"{addr}/{plen}")


def block_key(cidr: str) -> str:
    """`/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26` for "10.0.0.0/26"."""
    net = _network(cidr)
    return f"{IPAM_PREFIX}assignment/ipv{net.version}/block/{_munge(net)}"


def block_prefix(version: int | None = None) -> str:
    if version is None:
        return f"{IPAM_PREFIX}assignment/"
    return f"{IPAM_PREFIX}assignment/ipv{version}/block/"


def parse_block_key(key: str) -> BlockKey:
    parts = key.split("/")
    # ['', 'calico', 'ipam', 'v2', 'assignment', 'ipv4', 'block', '10.0.0.0-26']
    if (
        len(parts) != 8
        or not key.startswith(IPAM_PREFIX + "assignment/")
        or parts[5] not in ("ipv4", "ipv6")
        or parts[6] != "block"
    ):
        raise ValueError(f"not an IPAM block key: {key!r}")
    net = _unmunge(parts[7])
    if f"ipv{net.version}" != parts[5]:
        raise ValueError(f"IP version mismatch in block key {key!r}")
    return BlockKey(str(net), net.version)


def handle_key(handle_id: str) -> str:
    _check_segment("handle id", handle_id)
    return f"{IPAM_PREFIX}handle/{handle_id}"


def handle_prefix() -> str:
    return f"{IPAM_PREFIX}handle/"


def parse_handle_key(key: str) -> HandleKey:
    prefix = handle_prefix()
    rest = key[len(prefix) :]
    if not key.startswith(prefix) or not rest or "/" in rest:
        raise ValueError(f"not an IPAM handle key: {key!r}")
    return HandleKey(rest)


def host_affinity_key(node: str, cidr: str) -> str:
    """`/calico/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26`."""
    _check_segment("node name", node)
    net = _network(cidr)
    return f"{IPAM_PREFIX}host/{node}/ipv{net.version}/block/{_munge(net)}"


def host_affinity_prefix(node: str | None = None, version: int | None = None) -> str:
    if node is None:
        return f"{IPAM_PREFIX}host/"
    _check_segment("node name", node)
    if version is None:
        return f"{IPAM_PREFIX}host/{node}/"
    return f"{IPAM_PREFIX}host/{node}/ipv{version}/block/"


def parse_host_affinity_key(key: str) -> HostAffinityKey:
    parts = key.split("/")
    # ['', 'calico', 'ipam', 'v2', 'host', NODE, 'ipv4', 'block', CIDR]
    if (
        len(parts) != 9
        or not key.startswith(IPAM_PREFIX + "host/")
        or not parts[5]
        or parts[6] not in ("ipv4", "ipv6")
        or parts[7] != "block"
    ):
        raise ValueError(f"not an IPAM host-affinity key: {key!r}")
    net = _unmunge(parts[8])
    return HostAffinityKey(parts[5], str(net), net.version)


def ipam_config_key() -> str:
    """Where the IPAM allocator keeps its settings (strict_affinity, maxBlocksPerHost...)."""
    return f"{IPAM_PREFIX}config"


# ---------------------------------------------------------------------------------------------
# Felix status


class StatusKey(NamedTuple):
    kind: str  # "status", "last_reported_status", "workload", "hostendpoint"
    node: str
    region: str | None = None
    orchestrator: str | None = None
    workload: str | None = None
    endpoint: str | None = None


def felix_status_key(node: str, region: str = DEFAULT_REGION) -> str:
    _check_segment("node name", node)
    _check_segment("region", region)
    return f"{FELIX_V2_PREFIX}{region}/host/{node}/status"


def felix_last_status_key(node: str, region: str = DEFAULT_REGION) -> str:
    _check_segment("node name", node)
    _check_segment("region", region)
    return f"{FELIX_V2_PREFIX}{region}/host/{node}/last_reported_status"


def workload_endpoint_status_key(
    node: str, orchestrator: str, workload: str, endpoint: str, region: str = DEFAULT_REGION
) -> str:
    _check_segment("node name", node)
    _check_segment("region", region)
    for what, value in (("orchestrator", orchestrator), ("workload", workload),
                        ("endpoint", endpoint)):
        if not value:
            raise ValueError(f"{what} must not be empty")
    return (
        f"{FELIX_V2_PREFIX}{region}/host/{node}/workload/{escape_name(orchestrator)}/"
        f"{escape_name(workload)}/endpoint/{escape_name(endpoint)}"
    )


def host_endpoint_status_key(node: str, endpoint: str) -> str:
    _check_segment("node name", node)
    if not endpoint:
        raise ValueError("endpoint must not be empty")
    return f"{FELIX_V1_PREFIX}host/{node}/endpoint/{escape_name(endpoint)}"


def parse_status_key(key: str) -> StatusKey:
    parts = key.split("/")
    if key.startswith(FELIX_V2_PREFIX) and len(parts) >= 7 and parts[5] == "host":
        # ['', 'calico', 'felix', 'v2', REGION, 'host', NODE, ...]
        region, node = parts[4], parts[6]
        tail = parts[7:]
        if region and node:
            if tail == ["status"]:
                return StatusKey("status", node, region)
            if tail == ["last_reported_status"]:
                return StatusKey("last_reported_status", node, region)
            if len(tail) == 5 and tail[0] == "workload" and tail[3] == "endpoint" and all(tail):
                return StatusKey(
                    "workload", node, region, unescape_name(tail[1]), unescape_name(tail[2]),
                    unescape_name(tail[4]),
                )
    # ['', 'calico', 'felix', 'v1', 'host', NODE, 'endpoint', EP]
    if (
        key.startswith(FELIX_V1_PREFIX)
        and len(parts) == 8
        and parts[4] == "host"
        and parts[6] == "endpoint"
        and parts[5]
        and parts[7]
    ):
        return StatusKey("hostendpoint", parts[5], endpoint=unescape_name(parts[7]))
    raise ValueError(f"not a Felix status key: {key!r}")
