"""IP autodetection as calico/node does it (``startup/autodetection``), over an interface table.

The pure part works on `Interface` rows (name and addresses, in the kernel's link order) so it
can be tested with made-up tables; `SystemHost` reads the real table over netlink and answers
``can-reach`` with a connected UDP socket (a route lookup: no packet is sent).

Calico's rules, kept exactly:

- Interfaces are examined in **reverse** link order ("to maintain behaviour with older
  versions"). Include/exclude regexes are joined as ``(a)|(b)`` and *searched* (not anchored)
  in the name, as Go's ``MatchString``; the default exclusions carry their own ``^``.
- An address qualifies when it is global unicast (not unspecified, loopback, link-local,
  multicast or the IPv4 broadcast address) and, for ``cidr=``, inside one of the CIDRs. The
  first qualifying address of the first interface wins, with its prefix length
  (``172.31.0.11/24``).
- ``first-found`` excludes `DEFAULT_INTERFACES_TO_EXCLUDE`; ``skip-interface=`` excludes those
  and the given regexes; ``interface=`` includes only the given regexes (no default
  exclusions); ``cidr=`` looks at every interface.
- ``can-reach=DEST`` asks the kernel which source address it would use towards DEST (a name is
  resolved first), then returns that address with the prefix of the interface that has it.
- An explicit ``IP=addr`` without a prefix gets the prefix of the interface holding it
  (`local_cidr`); an address on no interface is kept as a host address, with a warning.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tortie.node.config import AutodetectMethod

__all__ = [
    "DEFAULT_INTERFACES_TO_EXCLUDE",
    "AutodetectError",
    "HostNetwork",
    "IPInterface",
    "Interface",
    "SystemHost",
    "autodetect",
    "filter_interfaces",
    "filtered_enumeration",
    "find_address",
    "is_global_unicast",
    "local_cidr",
]

log = logging.getLogger("tortie.node")

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: calico/node's interfaces to skip for first-found and skip-interface (regexes, searched).
DEFAULT_INTERFACES_TO_EXCLUDE: tuple[str, ...] = (
    r"^docker.*",
    r"^cbr.*",
    r"^dummy.*",
    r"^virbr.*",
    r"^lxcbr.*",
    r"^veth.*",
    r"^lo",
    r"^cali.*",
    r"^tunl.*",
    r"^flannel.*",
    r"^kube-ipvs.*",
    r"^cni.*",
    r"^vxlan\.calico.*",
    r"^vxlan-v6\.calico.*",
    r"^wireguard\.cali.*",
    r"^wg-v6\.cali.*",
    r"^egress\.calico.*",
    r"^nodelocaldns.*",
)


class AutodetectError(Exception):
    """No address could be found; the message says which method and why."""


@dataclass(frozen=True)
class Interface:
    """One host interface and its addresses (both families, as the kernel lists them)."""

    name: str
    addresses: tuple[IPInterface, ...] = ()

    def of_version(self, version: int) -> tuple[IPInterface, ...]:
        return tuple(a for a in self.addresses if a.version == version)

    @classmethod
    def of(cls, name: str, *addresses: str) -> Interface:
        """Test helper: ``Interface.of("eth0", "10.0.0.5/24", "fe80::1/64")``."""
        return cls(name, tuple(ipaddress.ip_interface(a) for a in addresses))


class HostNetwork(Protocol):
    """What autodetection needs from the host."""

    def interfaces(self) -> Sequence[Interface]: ...

    def reach(self, dest: str, version: int) -> str: ...


def is_global_unicast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Go's ``net.IP.IsGlobalUnicast`` (private ranges count as global here, as in Go)."""
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
        return False
    return not (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"))


def _regex(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("(" + ")|(".join(patterns) + ")")


def filter_interfaces(
    interfaces: Sequence[Interface],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    version: int | None = None,
) -> list[Interface]:
    """calico/node's ``GetInterfaces``: reverse order, include/exclude by regex search,
    addresses of ``version`` only (both when None)."""
    inc, exc = _regex(include), _regex(exclude)
    out = []
    for iface in reversed(interfaces):
        if inc is not None and not inc.search(iface.name):
            continue
        if exc is not None and exc.search(iface.name):
            continue
        addrs = iface.addresses if version is None else iface.of_version(version)
        out.append(Interface(iface.name, addrs))
    return out


def filtered_enumeration(
    interfaces: Sequence[Interface],
    include: Sequence[str],
    exclude: Sequence[str],
    cidrs: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
    version: int,
) -> tuple[Interface, IPInterface]:
    """The first global-unicast address (inside one of ``cidrs``, when given)."""
    candidates = filter_interfaces(interfaces, include, exclude, version)
    if not candidates:
        raise AutodetectError("no valid host interfaces found")
    for iface in candidates:
        for addr in iface.addresses:
            if is_global_unicast(addr.ip) and (
                not cidrs or any(addr.ip in c for c in cidrs if c.version == addr.version)
            ):
                return iface, addr
    raise AutodetectError(f"no valid IPv{version} addresses found on the host interfaces")


def find_address(interfaces: Sequence[Interface], ip: str, version: int) -> IPInterface | None:
    """The interface address (with its prefix) equal to ``ip``, on any interface."""
    want = ipaddress.ip_address(ip)
    for iface in filter_interfaces(interfaces, version=version):
        for addr in iface.addresses:
            if addr.ip == want:
                return addr
    return None


def local_cidr(value: str, version: int, interfaces: Sequence[Interface]) -> str:
    """calico/node's ``GetLocalCIDR`` + ``parseIPEnvironment`` for an explicit ``IP``/``IP6``:
    a CIDR is kept; an address gets its interface's prefix, or /32 (/128) with a warning."""
    iface = ipaddress.ip_interface(value)
    if iface.version != version:
        raise AutodetectError(f"{value} is not an IPv{version} address")
    if "/" in value:
        return str(iface)
    found = find_address(interfaces, value, version)
    if found is not None:
        log.info("including CIDR information from host interface: %s", found)
        return str(found)
    log.warning("unable to find matching host interface for IP %s", value)
    return str(iface)


def autodetect(method: AutodetectMethod, version: int, host: HostNetwork) -> IPInterface:
    """The address ``method`` picks on ``host``; AutodetectError says why there is none."""
    kind, values = method.kind, method.values
    if kind == "can-reach":
        dest = values[0]
        try:
            source = host.reach(dest, version)
        except OSError as exc:
            raise AutodetectError(
                f"unable to auto-detect an IPv{version} address by connecting to {dest}: {exc}"
            ) from None
        found = find_address(host.interfaces(), source, version)
        if found is None:
            raise AutodetectError(
                f"autodetected IPv{version} address does not match any addresses found on "
                f"local interfaces: {source}"
            )
        log.info(
            "using autodetected IPv%d address %s, detected by connecting to %s",
            version,
            found,
            dest,
        )
        return found
    interfaces = host.interfaces()
    cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    if kind == "first-found":
        include: Sequence[str] = ()
        exclude: Sequence[str] = DEFAULT_INTERFACES_TO_EXCLUDE
    elif kind == "interface":
        include, exclude = values, ()
    elif kind == "skip-interface":
        include, exclude = (), (*DEFAULT_INTERFACES_TO_EXCLUDE, *values)
    elif kind == "cidr":
        include, exclude = (), ()
        cidrs = [ipaddress.ip_network(v, strict=False) for v in values]
    else:  # parse_method only makes the kinds above
        raise AutodetectError(f"invalid IP autodetection method: {method}")
    try:
        iface, addr = filtered_enumeration(interfaces, include, exclude, cidrs, version)
    except AutodetectError as exc:
        raise AutodetectError(
            f"unable to auto-detect an IPv{version} address using {method}: {exc}"
        ) from None
    log.info(
        "using autodetected IPv%d address %s on interface %s (%s)",
        version,
        addr,
        iface.name,
        method,
    )
    return addr


# --- the real host -----------------------------------------------------------------------------


class SystemHost:
    """This host's interfaces (netlink, in link order) and route lookups.

    ``resolver`` turns a destination name into addresses (``socket.getaddrinfo`` by default).
    """

    def __init__(self, resolver: Callable[[str, int], list[str]] | None = None) -> None:
        self._resolver = resolver or _resolve
        self._cache: list[Interface] | None = None

    def interfaces(self) -> list[Interface]:
        if self._cache is None:
            self._cache = read_interfaces()
        return self._cache

    def refresh(self) -> None:
        self._cache = None

    def reach(self, dest: str, version: int) -> str:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        addresses = self._resolver(dest, version)
        if not addresses:
            raise OSError(f"{dest} has no IPv{version} address")
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((addresses[0], 80))  # UDP connect: a route lookup, nothing is sent
            return str(s.getsockname()[0]).split("%", 1)[0]


def _resolve(dest: str, version: int) -> list[str]:
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        return [str(ipaddress.ip_address(dest.strip("[]")))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(dest, 80, family, socket.SOCK_DGRAM)
    return [str(info[4][0]) for info in infos]


def read_interfaces() -> list[Interface]:
    """The host's interfaces in link (ifindex) order with their addresses, over netlink."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = sorted(
            ((link["index"], link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()),
            key=lambda item: item[0],
        )
        addrs: dict[int, list[IPInterface]] = {}
        for msg in ipr.get_addr():
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if not text:
                continue
            try:
                addr = ipaddress.ip_interface(f"{text.split('%', 1)[0]}/{msg['prefixlen']}")
            except ValueError:
                continue
            addrs.setdefault(msg["index"], []).append(addr)
    return [Interface(name, tuple(addrs.get(index, ()))) for index, name in links]
