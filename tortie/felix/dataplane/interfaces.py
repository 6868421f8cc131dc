"""Interfaces: which workload interfaces exist, and the sysctls Felix sets on them.

Calico routes (rather than bridges) workload traffic, which needs a few per-interface knobs on
the host side of each workload veth (``cali`` + 11 hex chars):

- ``net.ipv4.conf.<if>.proxy_arp=1`` and ``net.ipv4.neigh.<if>.proxy_delay=0``: the host
  answers the workload's ARP for its ``169.254.1.1`` gateway at once;
- ``net.ipv4.conf.<if>.route_localnet=1``: allow NAT to host-local addresses;
- ``net.ipv4.conf.<if>.forwarding=1``: forward what the workload sends;
- ``net.ipv4.conf.<if>.rp_filter=1``: strict reverse-path check (anti-spoofing), as Felix;
- IPv6: ``net.ipv6.conf.<if>.proxy_ndp=1`` and ``forwarding=1``;

and globally ``net.ipv4.ip_forward=1`` (``net.ipv6.conf.all.forwarding=1`` with IPv6).

All of these are written through ``/proc/sys`` of the namespace the process runs in (paths,
not dotted keys: interface names such as ``vxlan.calico`` contain dots).  A value that already
holds is not rewritten, and nothing writes the same file twice.

:class:`InterfaceManager` tracks the interfaces (one link dump at start or on
:meth:`~InterfaceManager.resync`, then link events fed in batches through
:meth:`~InterfaceManager.on_link_updates`, e.g. from a :class:`LinkWatcher`), configures each
workload interface once per appearance (a new ifindex counts as a new appearance), brings it
up, and tells listeners (the route tables) about links that appear, change state or vanish.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tortie.felix.dataplane.commands import ApplyStats

log = logging.getLogger(__name__)

IFF_UP = 1
RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
WORKLOAD_PREFIXES = ("cali",)

SysctlWriter = Callable[[str, str], bool]
LinkListener = Callable[[str, "int | None", bool], None]


def read_sysctl(path: str) -> str | None:
    """The current value of a ``/proc/sys`` file, or ``None`` if it does not exist."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def write_sysctl(path: str, value: str) -> bool:
    """Write *value* to a ``/proc/sys`` file unless it already holds it; True if written."""
    if read_sysctl(path) == value:
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    return True


def workload_sysctls(
    ifname: str, *, ipv4: bool = True, ipv6: bool = False, rp_filter: str | None = "1"
) -> list[tuple[str, str]]:
    """The (path, value) pairs Felix sets on a workload interface's host side."""
    if "/" in ifname or ifname in ("", ".", ".."):
        raise ValueError(f"bad interface name {ifname!r}")
    out: list[tuple[str, str]] = []
    if ipv4:
        conf = f"/proc/sys/net/ipv4/conf/{ifname}"
        if rp_filter is not None:
            out.append((f"{conf}/rp_filter", rp_filter))
        out += [
            (f"{conf}/route_localnet", "1"),
            (f"{conf}/proxy_arp", "1"),
            (f"/proc/sys/net/ipv4/neigh/{ifname}/proxy_delay", "0"),
            (f"{conf}/forwarding", "1"),
        ]
    if ipv6:
        conf6 = f"/proc/sys/net/ipv6/conf/{ifname}"
        out += [(f"{conf6}/proxy_ndp", "1"), (f"{conf6}/forwarding", "1")]
    return out


def global_sysctls(*, ipv4: bool = True, ipv6: bool = False) -> list[tuple[str, str]]:
    out = []
    if ipv4:
        out.append(("/proc/sys/net/ipv4/ip_forward", "1"))
    if ipv6:
        out.append(("/proc/sys/net/ipv6/conf/all/forwarding", "1"))
    return out


def apply_sysctls(pairs: Iterable[tuple[str, str]], writer: SysctlWriter = write_sysctl) -> int:
    """Write each pair (skipping values already set); returns how many files were written."""
    return sum(1 for path, value in pairs if writer(path, value))


def configure_global(
    *, ipv4: bool = True, ipv6: bool = False, writer: SysctlWriter = write_sysctl
) -> int:
    return apply_sysctls(global_sysctls(ipv4=ipv4, ipv6=ipv6), writer)


def _open_iproute() -> Any:
    from pyroute2 import IPRoute  # deferred: ~0.3 s import

    return IPRoute()


def configure_workload_interface(
    ifname: str,
    *,
    ipv4: bool = True,
    ipv6: bool = False,
    rp_filter: str | None = "1",
    bring_up: bool = True,
    ipr: Any = None,
    writer: SysctlWriter = write_sysctl,
) -> int:
    """Set a workload interface's sysctls and bring it up; returns sysctl files written.

    Raises ``FileNotFoundError`` if the interface does not exist.
    """
    written = apply_sysctls(
        workload_sysctls(ifname, ipv4=ipv4, ipv6=ipv6, rp_filter=rp_filter), writer
    )
    if bring_up:
        own = ipr is None
        ipr = _open_iproute() if own else ipr
        try:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                raise FileNotFoundError(f"no interface {ifname}")
            ipr.link("set", index=idx[0], state="up")
        finally:
            if own:
                ipr.close()
    return written


@dataclass(frozen=True)
class LinkUpdate:
    """A link appeared/changed (``ifindex`` set) or vanished (``ifindex=None``)."""

    ifname: str
    ifindex: int | None
    up: bool = False


def link_updates_from_messages(msgs: Iterable[Any]) -> list[LinkUpdate]:
    """Convert pyroute2 ``ifinfmsg`` messages (dumps or events) into :class:`LinkUpdate`."""
    out = []
    for msg in msgs:
        name = msg.get_attr("IFLA_IFNAME")
        if name is None:
            continue
        if msg["header"]["type"] == RTM_DELLINK:
            out.append(LinkUpdate(name, None, False))
        else:
            out.append(LinkUpdate(name, msg["index"], bool(msg["flags"] & IFF_UP)))
    return out


class LinkWatcher:
    """A non-blocking netlink socket subscribed to link events in the current namespace.

    ``fileno()`` is selectable; :meth:`read_updates` drains everything queued and returns it
    as one batch (coalescing is left to :class:`InterfaceManager`).  We use a raw socket
    rather than pyroute2's: its internal buffering makes ``select`` unreliable.
    """

    def __init__(self, rcvbuf: int = 1 << 20) -> None:
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._sock.bind((0, RTMGRP_LINK))
        self._marshal = MarshalRtnl()
        self.overflowed = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_updates(self) -> list[LinkUpdate]:
        """All queued events; sets ``overflowed`` (the caller should resync) on ENOBUFS."""
        msgs: list[Any] = []
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overflowed = True
                    continue
                raise
            msgs.extend(m for m in self._marshal.parse(data) if m["header"]["type"] in (16, 17))
        return link_updates_from_messages(msgs)

    def close(self) -> None:
        self._sock.close()


@dataclass
class _LinkState:
    index: int
    up: bool


class InterfaceManager:
    """Tracks links, configures workload interfaces once per appearance; see module doc."""

    def __init__(
        self,
        *,
        prefixes: Iterable[str] = WORKLOAD_PREFIXES,
        ipv4: bool = True,
        ipv6: bool = False,
        rp_filter: str | None = "1",
        bring_up: bool = True,
        ipr: Any = None,
        writer: SysctlWriter = write_sysctl,
    ) -> None:
        self.prefixes = tuple(prefixes)
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.rp_filter = rp_filter
        self.bring_up = bring_up
        self._ipr = ipr
        self._own_ipr = ipr is None
        self._writer = writer
        self._links: dict[str, _LinkState] = {}
        self._configured: dict[str, int] = {}  # workload ifname -> ifindex configured
        self._pending: dict[str, LinkUpdate] = {}
        self._resync = True
        self._globals_done = False
        self._listeners: list[LinkListener] = []

    def add_listener(self, listener: LinkListener) -> None:
        """Call ``listener(ifname, ifindex_or_None, up)`` for every link change applied."""
        self._listeners.append(listener)

    def is_workload(self, ifname: str) -> bool:
        return any(ifname.startswith(p) for p in self.prefixes)

    @property
    def interfaces(self) -> dict[str, tuple[int, bool]]:
        return {n: (s.index, s.up) for n, s in self._links.items()}

    @property
    def configured(self) -> set[str]:
        return set(self._configured)

    def resync(self) -> None:
        """Re-dump all links on the next apply (start-up, or after an event overflow)."""
        self._resync = True

    def on_link_updates(self, updates: Iterable[LinkUpdate]) -> None:
        """Queue a batch of link events; only the last state per interface matters."""
        for u in updates:
            self._pending[u.ifname] = u

    def close(self) -> None:
        if self._ipr is not None and self._own_ipr:
            self._ipr.close()
        self._ipr = None

    def _netlink(self) -> Any:
        if self._ipr is None:
            self._ipr = _open_iproute()
        return self._ipr

    def apply(self) -> ApplyStats:
        """Apply queued link changes: configure new workload interfaces, notify listeners."""
        start = time.monotonic()
        stats = ApplyStats(component="interfaces")
        try:
            if not self._globals_done:
                stats.written += configure_global(
                    ipv4=self.ipv4, ipv6=self.ipv6, writer=self._writer
                )
                self._globals_done = True
            if self._resync:
                dumped = link_updates_from_messages(self._netlink().get_links())
                stats.reads += 1
                present = {u.ifname for u in dumped}
                gone = [LinkUpdate(n, None) for n in self._links if n not in present]
                self._pending = {u.ifname: u for u in [*gone, *dumped]}
                self._resync = False
            pending, self._pending = self._pending, {}
            for _, update in sorted(pending.items()):
                self._apply_one(update, stats)
        finally:
            stats.seconds = time.monotonic() - start
        return stats

    def _apply_one(self, update: LinkUpdate, stats: ApplyStats) -> None:
        name = update.ifname
        old = self._links.get(name)
        if update.ifindex is None:
            if old is None:
                return
            del self._links[name]
            self._configured.pop(name, None)
            self._notify(name, None, False)
            return
        up = update.up
        if self.is_workload(name) and self._configured.get(name) != update.ifindex:
            try:
                stats.written += apply_sysctls(
                    workload_sysctls(
                        name, ipv4=self.ipv4, ipv6=self.ipv6, rp_filter=self.rp_filter
                    ),
                    self._writer,
                )
                if self.bring_up and not up:
                    self._netlink().link("set", index=update.ifindex, state="up")
                    stats.commands += 1
                    up = True
                self._configured[name] = update.ifindex
                log.info("configured workload interface %s (index %d)", name, update.ifindex)
            except FileNotFoundError:
                log.debug("interface %s vanished while being configured", name)
                return
            except Exception as e:  # NetlinkError: gone (ENODEV) or similar
                if getattr(e, "code", None) == errno.ENODEV:
                    return
                raise
        new = _LinkState(update.ifindex, up)
        if old != new:
            self._links[name] = new
            self._notify(name, update.ifindex, up)

    def _notify(self, name: str, ifindex: int | None, up: bool) -> None:
        for listener in self._listeners:
            listener(name, ifindex, up)
