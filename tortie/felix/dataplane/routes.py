"""Routes: the kernel routing table entries Felix owns, programmed over netlink.

A :class:`RouteTable` owns, in one routing table (``main`` by default) and one IP family:

- the routes the caller asks for with ``set_routes(ifname, [...])`` (the complete list for
  that interface): workload ``/32`` routes ``<ip>/32 dev caliXXXX scope link``, VXLAN routes
  ``<block> via <tunnel ip> dev vxlan.calico onlink``, and routes without an interface
  (``blackhole``/``unreachable``) under :data:`NO_IFACE`;
- on *exclusive* interfaces — names starting with one of ``iface_prefixes`` (default
  ``cali``; add ``vxlan.calico``) — every other route too: a stray route on an interface with
  desired routes is removed at once, and, with ``allow_cleanup=True`` (after in-sync), the
  routes on exclusive interfaces that nobody wants any more;
- on shared interfaces (an uplink) and for :data:`NO_IFACE`, only routes it created itself
  or, for cleanup, routes carrying its protocol number when that number is Felix's alone
  (not ``kernel``/``boot``/``static``, which others use too).

Routes of other software on shared interfaces, and ``proto kernel`` routes anywhere (the
subnet routes the kernel derives from addresses), are never touched.

Batching and state
    One netlink socket (pyroute2 ``IPRoute``) is opened lazily and kept across applies; it
    stays bound to the namespace it was created in.  ``apply()`` does one link dump when it
    needs interface indexes, one route dump per apply (the whole table on the first apply or
    after :meth:`RouteTable.invalidate`, else only the dirty interfaces), then one
    ``RTM_NEWROUTE`` (replace) per missing or wrong route and one ``RTM_DELROUTE`` per stale
    route.  Intent for an interface that does not exist yet, or is administratively down
    (the kernel refuses routes on it, and drops its routes when it goes down), stays pending
    and is retried on every apply and on :meth:`RouteTable.on_link_update`.

Room for L2: VXLAN's static ARP and FDB entries (``set_l2_routes``) will live beside this
class with the same intent/dirty/apply shape.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from tortie.felix.dataplane.commands import ApplyStats, DataplaneError

log = logging.getLogger(__name__)

RTPROT_KERNEL = 2
RTPROT_BOOT = 3
RTPROT_STATIC = 4
SHARED_PROTOCOLS = frozenset({RTPROT_KERNEL, RTPROT_BOOT, RTPROT_STATIC})
RTNH_F_ONLINK = 4
IFF_UP = 1

NO_IFACE = "*NoOIF*"
"""Pseudo interface name for routes without an output interface (blackhole, unreachable)."""

RouteType = Literal["unicast", "blackhole", "unreachable", "prohibit"]
_RTN = {"unicast": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8}
_RTN_NAME = {v: k for k, v in _RTN.items()}
_SCOPE_UNIVERSE = 0
_SCOPE_LINK = 253


@dataclass(frozen=True)
class RouteTarget:
    """One desired route: destination CIDR, optional gateway and ``onlink`` flag, and type."""

    dest: str
    gateway: str | None = None
    onlink: bool = False
    type: RouteType = "unicast"

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.dest, strict=False)
        object.__setattr__(self, "dest", str(net))
        if self.gateway is not None:
            object.__setattr__(self, "gateway", str(ipaddress.ip_address(self.gateway)))
        if self.type not in _RTN:
            raise ValueError(f"unknown route type {self.type!r}")

    @property
    def version(self) -> int:
        return ipaddress.ip_network(self.dest).version


@dataclass(frozen=True)
class KernelRoute:
    """A route as the kernel reported it (the fields we compare)."""

    dest: str
    oif: int | None
    gateway: str | None
    onlink: bool
    type: str
    protocol: int
    scope: int

    def matches(self, target: RouteTarget, oif: int | None) -> bool:
        return (
            self.dest == target.dest
            and self.oif == oif
            and self.gateway == target.gateway
            and self.onlink == target.onlink
            and self.type == target.type
        )


def _kernel_route(msg: Any, family: int) -> KernelRoute:
    dst = msg.get_attr("RTA_DST")
    if dst is None:
        dst = "0.0.0.0" if family == socket.AF_INET else "::"
    return KernelRoute(
        dest=str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)),
        oif=msg.get_attr("RTA_OIF"),
        gateway=msg.get_attr("RTA_GATEWAY"),
        onlink=bool(msg["flags"] & RTNH_F_ONLINK),
        type=_RTN_NAME.get(msg["type"], str(msg["type"])),
        protocol=msg["proto"],
        scope=msg["scope"],
    )


@dataclass
class _Link:
    index: int
    up: bool


class RouteTable:
    """Routes of one family in one routing table; see the module docstring."""

    def __init__(
        self,
        ip_version: int = 4,
        table: int = 254,
        protocol: int = RTPROT_BOOT,
        *,
        iface_prefixes: Iterable[str] = ("cali",),
        ipr: Any = None,
    ) -> None:
        if ip_version not in (4, 6):
            raise ValueError(f"ip_version must be 4 or 6, not {ip_version!r}")
        self.ip_version = ip_version
        self.family = socket.AF_INET if ip_version == 4 else socket.AF_INET6
        self.table = table
        self.protocol = protocol
        self.iface_prefixes = tuple(iface_prefixes)
        self._ipr = ipr
        self._own_ipr = ipr is None
        self._desired: dict[str, dict[str, RouteTarget]] = {}
        self._dirty: set[str] = set()
        self._links: dict[str, _Link] | None = None
        self._resync = True
        self._cleaned_once = False
        self._created: set[tuple[str, str]] = set()  # (ifname, dest) made by us

    def __repr__(self) -> str:
        return f"RouteTable(ip_version={self.ip_version}, table={self.table})"

    # -- intent ---------------------------------------------------------------------------

    def set_routes(self, ifname: str, targets: Iterable[RouteTarget]) -> None:
        """Set the complete list of routes wanted on *ifname* (:data:`NO_IFACE` for
        blackhole/unreachable routes).  An empty list removes our routes there."""
        wanted: dict[str, RouteTarget] = {}
        for t in targets:
            if t.version != self.ip_version:
                raise ValueError(f"{t.dest} is not IPv{self.ip_version}")
            if (ifname == NO_IFACE) != (t.type != "unicast"):
                raise ValueError(
                    f"{t.dest}: unicast routes need an interface; {t.type} routes use NO_IFACE"
                )
            wanted[t.dest] = t
        if self._desired.get(ifname) == wanted:
            return
        self._desired[ifname] = wanted
        self._dirty.add(ifname)

    def routes(self, ifname: str) -> list[RouteTarget]:
        return list(self._desired.get(ifname, {}).values())

    def on_link_update(self, ifname: str, ifindex: int | None, up: bool = True) -> None:
        """Tell the table about a link event (``ifindex=None``: the link is gone).

        A link that appears or comes up gets its routes (re)programmed on the next apply: the
        kernel deletes an interface's routes when it goes down.
        """
        if self._links is not None:
            if ifindex is None:
                self._links.pop(ifname, None)
            else:
                self._links[ifname] = _Link(ifindex, up)
        if ifname in self._desired or self._is_managed_prefix(ifname):
            self._dirty.add(ifname)

    def invalidate(self) -> None:
        """Re-read links and the whole table on the next apply and repair any drift."""
        self._resync = True

    def close(self) -> None:
        if self._ipr is not None and self._own_ipr:
            self._ipr.close()
        self._ipr = None

    # -- apply ----------------------------------------------------------------------------

    def _is_managed_prefix(self, ifname: str) -> bool:
        return any(ifname.startswith(p) for p in self.iface_prefixes)

    def _netlink(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute  # deferred: ~0.3 s import

            self._ipr = IPRoute()
        return self._ipr

    def _dump_links(self, stats: ApplyStats) -> dict[str, _Link]:
        links = {}
        for msg in self._netlink().get_links():
            name = msg.get_attr("IFLA_IFNAME")
            links[name] = _Link(msg["index"], bool(msg["flags"] & IFF_UP))
        stats.reads += 1
        self._links = links
        return links

    def _dump_routes(self, stats: ApplyStats, oif: int | None = None) -> list[KernelRoute]:
        kwargs: dict[str, Any] = {"family": self.family, "table": self.table}
        if oif is not None:
            kwargs["oif"] = oif
        stats.reads += 1
        out = []
        for msg in self._netlink().get_routes(**kwargs):
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            if table != self.table:
                continue
            out.append(_kernel_route(msg, self.family))
        return out

    def apply(self, allow_cleanup: bool = False) -> ApplyStats:
        """Program missing/changed routes and delete stale ones on dirty interfaces."""
        start = time.monotonic()
        stats = ApplyStats(component=f"routes-v{self.ip_version}")
        try:
            self._apply(allow_cleanup, stats)
        finally:
            stats.seconds = time.monotonic() - start
        return stats

    def _apply(self, allow_cleanup: bool, stats: ApplyStats) -> None:
        by_oif: dict[int | None, list[KernelRoute]] | None = None
        if allow_cleanup and not self._cleaned_once:
            self._resync = True  # the first cleanup must see every leftover, not just dirt
            self._cleaned_once = True
        if self._resync:
            links = self._dump_links(stats)
            by_oif = {}
            for r in self._dump_routes(stats):
                by_oif.setdefault(r.oif, []).append(r)
            self._dirty |= set(self._desired)
            index_to_name = {link.index: name for name, link in links.items()}
            for oif in by_oif:
                name = NO_IFACE if oif is None else index_to_name.get(oif)
                if name is not None and (name == NO_IFACE or self._is_managed_prefix(name)):
                    self._dirty.add(name)
            self._resync = False
        if not self._dirty:
            return
        links = self._links
        if links is None or any(
            n != NO_IFACE and (n not in links or not links[n].up) for n in self._dirty
        ):
            links = self._dump_links(stats)

        pending: set[str] = set()
        errors: list[str] = []
        for ifname in sorted(self._dirty):
            desired = self._desired.get(ifname, {})
            if ifname == NO_IFACE:
                oif = None
            else:
                link = links.get(ifname)
                if link is None or not link.up:
                    if desired:
                        log.debug("%s: %s is missing or down; routes pending", self, ifname)
                        pending.add(ifname)
                        stats.deferred += len(desired)
                    elif ifname in self._desired:
                        del self._desired[ifname]  # nothing wanted, and the kernel has none
                    continue
                oif = link.index
            if by_oif is not None:
                kernel_routes = by_oif.get(oif, [])
            elif oif is None:
                kernel_routes = [r for r in self._dump_routes(stats) if r.oif is None]
            else:
                kernel_routes = self._dump_routes(stats, oif=oif)
            synced = self._sync_iface(
                ifname, oif, desired, kernel_routes, allow_cleanup, stats, errors
            )
            if not synced:
                pending.add(ifname)
            if not desired and ifname in self._desired and ifname not in pending:
                del self._desired[ifname]
        self._dirty = pending
        if errors:
            raise DataplaneError(f"{self}: " + "; ".join(errors))

    def _owns_kernel_route(self, ifname: str, r: KernelRoute, allow_cleanup: bool) -> bool:
        if r.protocol == RTPROT_KERNEL or r.type not in _RTN:
            return False
        if (ifname, r.dest) in self._created:
            return True
        wanted_here = ifname in self._desired
        if ifname != NO_IFACE and self._is_managed_prefix(ifname):
            return wanted_here or allow_cleanup
        dedicated = self.protocol not in SHARED_PROTOCOLS and r.protocol == self.protocol
        if ifname == NO_IFACE and r.type == "unicast":
            return False
        return dedicated and (wanted_here or allow_cleanup)

    def _sync_iface(
        self,
        ifname: str,
        oif: int | None,
        desired: dict[str, RouteTarget],
        kernel_routes: list[KernelRoute],
        allow_cleanup: bool,
        stats: ApplyStats,
        errors: list[str],
    ) -> bool:
        """Make one interface's routes match; returns False if it must be retried."""
        ipr = self._netlink()
        ok = True
        present = {r.dest: r for r in kernel_routes}
        for r in kernel_routes:
            if r.dest in desired or not self._owns_kernel_route(ifname, r, allow_cleanup):
                continue
            args = {
                "dst": r.dest,
                "table": self.table,
                "family": self.family,
                "proto": r.protocol,
                "type": r.type,
                "scope": r.scope,
            }
            if oif is not None:
                args["oif"] = oif
            if r.gateway is not None:
                args["gateway"] = r.gateway
            try:
                ipr.route("del", **args)
                stats.commands += 1
                stats.deleted += 1
                self._created.discard((ifname, r.dest))
            except Exception as e:  # NetlinkError
                if getattr(e, "code", None) not in (errno.ESRCH, errno.ENODEV):
                    errors.append(f"deleting {r.dest} dev {ifname}: {e}")
        for dest, target in desired.items():
            current = present.get(dest)
            if current is not None and current.matches(target, oif):
                continue
            args = self._route_args(dest, oif, target.type, target.gateway, target.onlink)
            try:
                ipr.route("replace", **args)
                stats.commands += 1
                stats.written += 1
                self._created.add((ifname, dest))
            except Exception as e:  # NetlinkError
                code = getattr(e, "code", None)
                if code in (errno.ENODEV, errno.ENETDOWN):
                    log.debug("%s: %s went away or down; will retry", self, ifname)
                    if self._links is not None:
                        self._links.pop(ifname, None)
                    ok = False
                else:
                    errors.append(f"programming {dest} dev {ifname}: {e}")
                    ok = False
        return ok

    def _route_args(
        self,
        dest: str,
        oif: int | None,
        rtype: str,
        gateway: str | None,
        onlink: bool,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dst": dest,
            "table": self.table,
            "proto": self.protocol,
            "family": self.family,
            "type": rtype,
        }
        if oif is not None:
            args["oif"] = oif
        if gateway is not None:
            args["gateway"] = gateway
            args["scope"] = _SCOPE_UNIVERSE
        elif rtype == "unicast":
            args["scope"] = _SCOPE_LINK
        else:
            args["scope"] = _SCOPE_UNIVERSE
        if onlink:
            args["flags"] = RTNH_F_ONLINK
        return args
