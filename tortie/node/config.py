"""`NodeConfig`: tortie-node's settings from its environment, parsed and checked up front.

The variables and their meaning are calico/node's (``node/pkg/lifecycle/startup``), so a
calico/node environment file works unchanged:

- Identity: ``NODENAME``, else the nodename file (``CALICO_NODENAME_FILE``, default
  ``/var/lib/calico/nodename``), else ``HOSTNAME`` (lower-cased), else the host name.
- Addresses: ``IP`` (empty: keep the Node's address or autodetect; ``autodetect``; ``none``;
  or an address, optionally with its prefix), ``IP6`` (IPv6 only when asked for),
  ``IP_AUTODETECTION_METHOD`` / ``IP6_AUTODETECTION_METHOD`` (``first-found``,
  ``can-reach=DEST``, ``interface=REGEX,...``, ``skip-interface=REGEX,...``, ``cidr=CIDR,...``;
  ``kubernetes-internal-ip`` needs a Kubernetes node and is refused here),
  ``DISABLE_NODE_IP_CHECK``.
- BGP: ``AS``, ``CALICO_ROUTER_ID`` (an IPv4 address or ``hash``, passed on to confd).
- Networking: ``CALICO_NETWORKING_BACKEND`` = ``bird`` (default: confd + BIRD + Felix),
  ``vxlan`` (Felix alone) or ``none`` (policy only); the older ``CALICO_NETWORKING=false``
  also means ``none``.
- Default pools (created only when no pool of that IP version exists):
  ``CALICO_IPV4POOL_CIDR`` (default ``192.168.0.0/16``, or a free 172.16-31.0.0/16 when that
  overlaps a host address; ``none`` skips the pool), ``CALICO_IPV4POOL_BLOCK_SIZE`` (26),
  ``CALICO_IPV4POOL_IPIP`` / ``CALICO_IPV4POOL_VXLAN`` (``Never``, ``Always``,
  ``CrossSubnet``; also ``off`` and ``cross-subnet``), ``CALICO_IPV4POOL_NAT_OUTGOING`` (true),
  ``CALICO_IPV4POOL_NODE_SELECTOR``, ``CALICO_IPV4POOL_DISABLE_BGP_EXPORT``; the ``IPV6``
  equivalents (a random ULA /48 by default, NAT off, block 122, no IPIP), created only where
  IPv6 is supported (``FELIX_IPV6SUPPORT`` not false and the kernel has IPv6);
  ``NO_DEFAULT_POOLS=true`` skips both.
- Cluster: ``CLUSTER_TYPE`` (merged into ClusterInformation's ``clusterType``).

Tortie's own (calico/node has them fixed inside its container): ``TORTIE_RUN_DIR``
(``/var/run/calico``: BIRD's control socket, the status file), ``TORTIE_LOG_DIR``
(``/var/log/calico``: one directory per process, ``<dir>/<process>/current``),
``TORTIE_LOG_MAX_BYTES`` / ``TORTIE_LOG_KEEP`` (size cap and rotated files kept, as svlogd),
``CALICO_DISABLE_FILE_LOGGING`` (children log to tortie-node's stderr instead),
``CONFD_CONFIG_DIR`` and ``BIRD_CTL`` (as tortie-confd reads them),
``TORTIE_NODE_LOG_STDERR`` (the level of tortie-node's own lines on stderr).

Booleans follow calico/node's ``evaluateENVBool``: set to ``false``, ``0``, ``no``, ``n`` or
``f`` (any case) is false, anything else set is true, unset is the default.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "BACKENDS",
    "DEFAULT_IPV4_POOL_CIDR",
    "AutodetectMethod",
    "ConfigError",
    "NodeConfig",
    "PoolConfig",
    "env_bool",
    "parse_as",
    "parse_backend",
    "parse_encap_mode",
    "parse_ip_setting",
    "parse_method",
]

BACKENDS = ("bird", "vxlan", "none")
DEFAULT_IPV4_POOL_CIDR = "192.168.0.0/16"
DEFAULT_IPV4_POOL_NAME = "default-ipv4-ippool"
DEFAULT_IPV6_POOL_NAME = "default-ipv6-ippool"
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_RUN_DIR = "/var/run/calico"
DEFAULT_LOG_DIR = "/var/log/calico"
DEFAULT_CONFD_DIR = "/etc/tortie/bird"
DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_LOG_KEEP = 5
FALSE_WORDS = ("false", "0", "no", "n", "f")
METHOD_KINDS = ("first-found", "can-reach", "interface", "skip-interface", "cidr")


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable and says what is expected."""


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """calico/node's ``evaluateENVBool``."""
    value = env.get(name)
    if value is None:
        return default
    return value.strip().lower() not in FALSE_WORDS


# --- single settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AutodetectMethod:
    """A parsed ``IP_AUTODETECTION_METHOD``: its kind and its comma-separated values."""

    kind: str
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.kind if not self.values else f"{self.kind}={','.join(self.values)}"


def parse_method(text: str, var: str = "IP_AUTODETECTION_METHOD") -> AutodetectMethod:
    """``first-found`` (also the empty string), ``can-reach=DEST``, ``interface=RE,RE``,
    ``skip-interface=RE,RE`` or ``cidr=CIDR,CIDR``; regexes and CIDRs are checked here."""
    text = text.strip()
    if text in ("", "first-found"):
        return AutodetectMethod("first-found")
    if text.startswith("kubernetes-internal-ip"):
        raise ConfigError(
            f"{var}={text}: kubernetes-internal-ip needs a Kubernetes node, and Tortie runs on "
            "etcd: use interface=, cidr= or can-reach= instead"
        )
    kind, sep, rest = text.partition("=")
    if not sep or kind not in METHOD_KINDS or kind == "first-found":
        raise ConfigError(
            f"invalid IP autodetection method {var}={text!r}: use first-found, can-reach=DEST, "
            "interface=REGEX,..., skip-interface=REGEX,... or cidr=CIDR,..."
        )
    values = tuple(v for v in re.split(r"\s*,\s*", rest.strip()))
    if not rest.strip() or any(not v for v in values):
        raise ConfigError(f"{var}={text!r}: {kind}= needs a value")
    if kind == "can-reach":
        if len(values) != 1:
            raise ConfigError(f"{var}={text!r}: can-reach= takes one destination")
    elif kind == "cidr":
        for v in values:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise ConfigError(f"{var}={text!r}: {v!r} is not a CIDR") from None
    else:
        for v in values:
            try:
                re.compile(v)
            except re.error as exc:
                raise ConfigError(f"{var}={text!r}: invalid interface regex {v!r}: {exc}") from None
    return AutodetectMethod(kind, values)


def parse_ip_setting(value: str, version: int, var: str) -> str:
    """``IP``/``IP6``: empty, ``autodetect``, ``none`` or an address (with or without prefix).
    Returned as given (addresses are resolved against the host's interfaces at start-up)."""
    value = value.strip()
    if value in ("", "autodetect", "none"):
        return value
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ConfigError(
            f"{var}={value!r} is not a valid IPv{version} address: use an address (optionally "
            "with its prefix length), autodetect or none"
        ) from None
    if iface.version != version:
        raise ConfigError(f"{var}={value!r} is not an IPv{version} address")
    return value


def parse_as(value: str) -> int | None:
    """``AS``: empty (use the node's or the global AS), a number or dotted ``a.b``."""
    from tortie.api.kinds.common import parse_as_number

    value = value.strip()
    if not value:
        return None
    number = parse_as_number(value)
    if number is None:
        raise ConfigError(
            f"the AS number specified in the environment (AS={value}) is not valid: use "
            "0-4294967295 or dotted notation <0-65535>.<0-65535>"
        )
    return number


def parse_backend(env: Mapping[str, str]) -> str:
    """``CALICO_NETWORKING_BACKEND`` (``bird`` by default); ``CALICO_NETWORKING=false``
    (calico/node's older switch for policy-only mode) means ``none``."""
    if not env_bool(env, "CALICO_NETWORKING", True):
        return "none"
    backend = env.get("CALICO_NETWORKING_BACKEND", "").strip().lower() or "bird"
    if backend not in BACKENDS:
        raise ConfigError(
            f"CALICO_NETWORKING_BACKEND={backend!r} is not supported: use bird, vxlan or none"
        )
    return backend


def parse_encap_mode(value: str, var: str) -> str:
    """calico/node's spellings of an IPIP/VXLAN mode → the pool's ``Never``/``Always``/
    ``CrossSubnet``."""
    v = value.strip().lower()
    if v in ("", "off", "never"):
        return "Never"
    if v in ("crosssubnet", "cross-subnet"):
        return "CrossSubnet"
    if v == "always":
        return "Always"
    raise ConfigError(f"unrecognized mode {var}={value!r}: use Never, Always or CrossSubnet")


# --- pools -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolConfig:
    """What the default pool of one IP version would be (``CALICO_IPV<n>POOL_*``)."""

    version: int
    name: str
    enabled: bool  # False for CIDR "none" or NO_DEFAULT_POOLS
    cidr: str | None  # None: the default (v4: 192.168.0.0/16 or a free /16; v6: a random ULA)
    block_size: int
    ipip_mode: str
    vxlan_mode: str
    nat_outgoing: bool
    node_selector: str
    disable_bgp_export: bool

    def spec(self, cidr: str) -> dict[str, object]:
        """The IPPool spec to create with ``cidr``."""
        spec: dict[str, object] = {
            "cidr": cidr,
            "blockSize": self.block_size,
            "ipipMode": self.ipip_mode,
            "vxlanMode": self.vxlan_mode,
            "natOutgoing": self.nat_outgoing,
        }
        if self.node_selector:
            spec["nodeSelector"] = self.node_selector
        if self.disable_bgp_export:
            spec["disableBGPExport"] = True
        return spec


def _pool_config(env: Mapping[str, str], version: int, no_default: bool) -> PoolConfig:
    p = f"CALICO_IPV{version}POOL_"
    raw_cidr = env.get(p + "CIDR", "").strip()
    enabled = not no_default and raw_cidr != "none"
    cidr: str | None = None
    if raw_cidr and raw_cidr != "none":
        try:
            net = ipaddress.ip_network(raw_cidr, strict=False)
        except ValueError:
            net = None
        if net is None or "/" not in raw_cidr or net.version != version:
            raise ConfigError(f"invalid CIDR specified in {p}CIDR {raw_cidr!r}")
        cidr = str(net)
    size_text = env.get(p + "BLOCK_SIZE", "").strip()
    if size_text:
        try:
            block_size = int(size_text)
        except ValueError:
            raise ConfigError(f"{p}BLOCK_SIZE={size_text!r} is not a number") from None
    else:
        block_size = DEFAULT_BLOCK_SIZE[version]
    lo, hi = BLOCK_SIZE_RANGE[version]
    if enabled and not lo <= block_size <= hi:
        raise ConfigError(
            f"invalid block size {p}BLOCK_SIZE={block_size} for IPv{version}: use {lo}-{hi}"
        )
    ipip = parse_encap_mode(env.get(p + "IPIP", ""), p + "IPIP") if version == 4 else "Never"
    vxlan = parse_encap_mode(env.get(p + "VXLAN", ""), p + "VXLAN")
    if ipip != "Never" and vxlan != "Never":
        raise ConfigError(
            f"invalid configuration with both IPIP and VXLAN enabled ({p}IPIP={ipip}, "
            f"{p}VXLAN={vxlan}): choose one"
        )
    selector = env.get(p + "NODE_SELECTOR", "").strip()
    if selector:
        from tortie.selector import SelectorError, parse

        try:
            parse(selector)
        except SelectorError as exc:
            raise ConfigError(
                f"invalid node selector {p}NODE_SELECTOR={selector!r}: {exc}"
            ) from None
    return PoolConfig(
        version=version,
        name=DEFAULT_IPV4_POOL_NAME if version == 4 else DEFAULT_IPV6_POOL_NAME,
        enabled=enabled,
        cidr=cidr,
        block_size=block_size,
        ipip_mode=ipip,
        vxlan_mode=vxlan,
        nat_outgoing=env_bool(env, p + "NAT_OUTGOING", version == 4),
        node_selector=selector,
        disable_bgp_export=env_bool(env, p + "DISABLE_BGP_EXPORT", False),
    )


# --- the whole configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class NodeConfig:
    """Everything tortie-node reads from its environment (see the module docstring)."""

    nodename: str  # NODENAME as given ("" when unset)
    hostname_env: str
    nodename_file: str
    backend: str
    ip: str
    ip6: str
    ip_method: AutodetectMethod
    ip6_method: AutodetectMethod
    as_number: int | None
    router_id: str
    cluster_type: str
    no_default_pools: bool
    pools: tuple[PoolConfig, PoolConfig]
    ipv6_support: bool
    node_ip_check: bool
    run_dir: str
    log_dir: str
    log_max_bytes: int
    log_keep: int
    file_logging: bool
    confd_dir: str
    bird_socket: str
    libnetwork: bool
    cni_daemon: bool = True  # the node's CNI daemon, so each CNI ADD/DEL is a thin client
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def networking(self) -> bool:
        """Does this node do networking (BGP or VXLAN), not only policy?"""
        return self.backend != "none"

    @property
    def runs_bird(self) -> bool:
        return self.backend == "bird"

    @property
    def status_file(self) -> str:
        return f"{self.run_dir}/tortie-node.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NodeConfig:
        backend = parse_backend(env)
        no_default = env.get("NO_DEFAULT_POOLS", "").strip().lower() == "true"  # as calico/node
        if no_default and (env.get("CALICO_IPV4POOL_CIDR") or env.get("CALICO_IPV6POOL_CIDR")):
            raise ConfigError(
                "invalid configuration with NO_DEFAULT_POOLS defined and CALICO_IPV4POOL_CIDR "
                "or CALICO_IPV6POOL_CIDR defined"
            )
        router_id = env.get("CALICO_ROUTER_ID", "").strip()
        if router_id and router_id != "hash":
            try:
                ipaddress.IPv4Address(router_id)
            except ValueError:
                raise ConfigError(
                    f"CALICO_ROUTER_ID={router_id!r}: use an IPv4 address or hash"
                ) from None
        run_dir = env.get("TORTIE_RUN_DIR", "").strip() or DEFAULT_RUN_DIR
        return cls(
            nodename=env.get("NODENAME", "").strip(),
            hostname_env=env.get("HOSTNAME", "").strip().lower(),
            nodename_file=env.get("CALICO_NODENAME_FILE", "").strip() or DEFAULT_NODENAME_FILE,
            backend=backend,
            ip=parse_ip_setting(env.get("IP", ""), 4, "IP"),
            ip6=parse_ip_setting(env.get("IP6", ""), 6, "IP6"),
            ip_method=parse_method(env.get("IP_AUTODETECTION_METHOD", "")),
            ip6_method=parse_method(
                env.get("IP6_AUTODETECTION_METHOD", ""), "IP6_AUTODETECTION_METHOD"
            ),
            as_number=parse_as(env.get("AS", "")),
            router_id=router_id,
            cluster_type=env.get("CLUSTER_TYPE", "").strip(),
            no_default_pools=no_default,
            pools=(_pool_config(env, 4, no_default), _pool_config(env, 6, no_default)),
            ipv6_support=env_bool(env, "FELIX_IPV6SUPPORT", False),  # Tortie Felix default
            node_ip_check=env.get("DISABLE_NODE_IP_CHECK", "").strip().lower() != "true",
            run_dir=run_dir,
            log_dir=env.get("TORTIE_LOG_DIR", "").strip() or DEFAULT_LOG_DIR,
            log_max_bytes=_positive_int(env, "TORTIE_LOG_MAX_BYTES", DEFAULT_LOG_MAX_BYTES),
            log_keep=_positive_int(env, "TORTIE_LOG_KEEP", DEFAULT_LOG_KEEP),
            file_logging=not env_bool(env, "CALICO_DISABLE_FILE_LOGGING", False),
            confd_dir=env.get("CONFD_CONFIG_DIR", "").strip() or DEFAULT_CONFD_DIR,
            bird_socket=env.get("BIRD_CTL", "").strip() or f"{run_dir}/bird.ctl",
            libnetwork=env_bool(env, "CALICO_LIBNETWORK_ENABLED", False),
            cni_daemon=env_bool(env, "TORTIE_CNI_DAEMON", True),
            env=dict(env),
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={text!r} must be positive")
    return value
