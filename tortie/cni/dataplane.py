"""The workload's veth, wired as Calico's CNI plugin wires it (`dataplane/linux`), and undone.

ADD (`setup`), all over netlink (`tortie.cni.netlink`), nothing through `ip`:

1. a stale host-side interface of the same name (a previous sandbox of the pod) is deleted;
2. the veth is created *inside* the container namespace as `CNI_IFNAME`, its peer placed in
   the host namespace as `cali…` with MAC `ee:ee:ee:ee:ee:ee` (both ends get the configured
   MTU and queue count);
3. IPv6 only: duplicate address detection off and IPv6 on in the container;
4. both ends up; on the host side `proxy_arp=1`, `neigh/<if>/proxy_delay=0`, `forwarding=1`
   (IPv6: `proxy_ndp=1`, `forwarding=1`, `disable_ipv6=0`), as Calico sets them (Felix owns
   them afterwards and sets the same values);
5. in the container: a link-scope route to 169.254.1.1 and the default route via it (IPv6: the
   default route via the host side's link-local address), then each address as a /32 (/128),
   and `ip_forward=1` when `container_settings.allow_ip_forwarding` is set;
6. on the host: a link-scope /32 (/128) route to each address via the host side. A route for
   that address through *another* interface is an error, as in Calico.

Any failure after the veth exists deletes it again before the error is raised (`setup` leaves
nothing behind). DEL (`teardown`) deletes the container's interface when the namespace and
interface still exist, and the host side by name when the caller knows it is this workload's
(it is gone with its peer in the normal case; deleting it covers a namespace already being
destroyed). CHECK (`check`) lists everything that differs from what ADD made.

Deferred deletion (the daemon). The kernel takes 10-20 ms to unregister a veth (it waits for
an RCU grace period while holding the RTNL lock), a third of DEL's budget. With a `Reaper`,
DEL hands the host side to a background thread and returns; the addresses are released at
once. An ADD for the same host-side name (the same pod or container again) waits for that
deletion first, and so does an ADD whose /32 route clashes with a route through a veth still
waiting to be deleted (its address was reused meanwhile): nothing is ever routed to the wrong
workload, and no ADD fails because DEL returned early.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import queue
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tortie.cni import netlink as nl
from tortie.cni.spec import DATAPLANE_ERROR, CNIError

__all__ = ["GATEWAY_V4", "HOST_MAC", "Plumbed", "Reaper", "check", "setup", "teardown"]

GATEWAY_V4 = "169.254.1.1"
HOST_MAC = "ee:ee:ee:ee:ee:ee"
_GW_NET = ipaddress.ip_network(f"{GATEWAY_V4}/32")
_DEFAULT4 = ipaddress.ip_network("0.0.0.0/0")
_DEFAULT6 = ipaddress.ip_network("::/0")

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Plumbed:
    """What ADD made: the host side's name and the container side's MAC (for the endpoint)."""

    host_ifname: str
    container_mac: str
    ipv6_gateway: str | None = None


def _host_ns_fd() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def _open_container_ns(path: str) -> int | None:
    try:
        return nl.open_netns(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _fail(what: str, exc: BaseException) -> CNIError:
    return CNIError(DATAPLANE_ERROR, what, str(exc))


def host_sysctls(ifname: str, v4: bool, v6: bool) -> dict[str, str]:
    out = {}
    if v4:
        out[f"net/ipv4/neigh/{ifname}/proxy_delay"] = "0"
        out[f"net/ipv4/conf/{ifname}/proxy_arp"] = "1"
        out[f"net/ipv4/conf/{ifname}/forwarding"] = "1"
    if v6:
        out[f"net/ipv6/conf/{ifname}/disable_ipv6"] = "0"
        out[f"net/ipv6/conf/{ifname}/proxy_ndp"] = "1"
        out[f"net/ipv6/conf/{ifname}/forwarding"] = "1"
    return out


def _eui64_link_local(mac: str) -> str:
    b = [int(x, 16) for x in mac.split(":")]
    b[0] ^= 0x02
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80, 0, 0, 0, 0, 0, 0, *b[:3], 0xFF, 0xFE,
                                            *b[3:]])))


def _host_link_local(host: nl.Netlink, index: int, mac: str) -> str:
    """The host side's IPv6 link-local address (the container's IPv6 gateway). The kernel adds
    it a moment after the link comes up; Calico waits for it too."""
    deadline = time.monotonic() + 2.0
    while True:
        for a in host.addrs(index):
            if a.address.version == 6 and a.address.ip.is_link_local:
                return str(a.address.ip)
        if time.monotonic() > deadline:
            return _eui64_link_local(mac)
        time.sleep(0.01)


class Reaper:
    """Deletes host-side veths in the background (see the module docstring).

    Create it in the host namespace: its thread stays there and opens its socket there. DEL
    makes no netlink call at all when it hands a veth over: every link change takes the
    kernel's RTNL lock, which a deletion holds for its whole RCU wait, so even setting the
    link down would queue behind the previous DEL's deletion."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, threading.Event] | None] = queue.Queue()
        self._pending: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tortie-cni-reaper", daemon=True)
        self._thread.start()

    def submit(self, name: str) -> None:
        """Delete host-side veth `name` soon. Until then ADDs of that name wait, and an ADD
        whose route clashes with one through it waits too (`pending`)."""
        done = threading.Event()
        with self._lock:
            self._pending[name] = done
        self._queue.put((name, done))

    def pending(self, name: str) -> bool:
        with self._lock:
            return name in self._pending

    def wait(self, name: str, timeout: float = 10.0) -> None:
        """Return once no deletion of `name` is pending."""
        with self._lock:
            done = self._pending.get(name)
        if done is not None:
            done.wait(timeout)

    def _run(self) -> None:
        with nl.Netlink() as host:
            while (item := self._queue.get()) is not None:
                name, done = item
                try:
                    link = host.link(name)
                    if link is not None and link.kind == "veth":
                        host.delete_link(link.index)
                except OSError:
                    pass  # gone already (its namespace was deleted meanwhile)
                finally:
                    with self._lock:
                        if self._pending.get(name) is done:
                            del self._pending[name]
                    done.set()

    def close(self) -> None:
        """Finish the pending deletions and stop."""
        self._queue.put(None)
        self._thread.join(timeout=30)


def setup(
    netns: str,
    ifname: str,
    host_ifname: str,
    ips: Sequence[IPInterface],
    *,
    mtu: int = 0,
    queues: int = 1,
    allow_ip_forwarding: bool = False,
    reaper: Reaper | None = None,
) -> Plumbed:
    """Create and configure the workload's veth (see the module docstring)."""
    if reaper is not None:
        reaper.wait(host_ifname)
    v4 = any(ip.version == 4 for ip in ips)
    v6 = any(ip.version == 6 for ip in ips)
    cont_fd = _open_container_ns(netns)
    if cont_fd is None:
        raise CNIError(DATAPLANE_ERROR, f"network namespace {netns} does not exist")
    host_fd = _host_ns_fd()
    host = cont = None
    created = False
    try:
        host = nl.Netlink()
        try:
            with nl.in_netns(cont_fd, netns):
                cont = nl.Netlink()
        except nl.NamespaceError as exc:
            raise _fail(f"cannot enter network namespace {netns}", exc) from None
        stale = host.link(host_ifname)
        if stale is not None:
            host.delete_link(stale.index)
        try:
            cont.add_veth(ifname, host_ifname, host_fd, mtu=mtu, peer_mac=HOST_MAC, queues=queues)
        except nl.NetlinkError as exc:
            if exc.errno == errno.EEXIST:
                raise CNIError(DATAPLANE_ERROR, f"interface {ifname} already exists in "
                               f"{netns} (or {host_ifname} on the host)") from None
            raise _fail(f"cannot create veth {ifname}/{host_ifname}", exc) from None
        created = True
        clink = cont.link(ifname)
        hlink = host.link(host_ifname)
        if clink is None or hlink is None:
            raise CNIError(DATAPLANE_ERROR, f"veth {ifname}/{host_ifname} vanished after creation")
        with nl.in_netns(cont_fd, netns):
            if v6:
                nl.write_sysctl(f"net/ipv6/conf/{ifname}/accept_dad", "0")
                for scope in ("all", "default", ifname):
                    nl.write_sysctl(f"net/ipv6/conf/{scope}/disable_ipv6", "0")
        cont.set_link(clink.index, up=True)
        host.set_link(hlink.index, up=True)
        for key, value in host_sysctls(host_ifname, v4, v6).items():
            nl.write_sysctl(key, value)
        gw6 = None
        if v4:
            cont.add_route(_GW_NET, clink.index, scope=nl.RT_SCOPE_LINK)
            cont.add_route(_DEFAULT4, clink.index, gateway=GATEWAY_V4)
        if v6:
            gw6 = _host_link_local(host, hlink.index, HOST_MAC)
            cont.add_route(_DEFAULT6, clink.index, gateway=gw6)
        for ip in ips:
            cont.add_addr(clink.index, ip)
        if allow_ip_forwarding:
            with nl.in_netns(cont_fd, netns):
                if v4:
                    nl.write_sysctl("net/ipv4/ip_forward", "1")
                if v6:
                    nl.write_sysctl("net/ipv6/conf/all/forwarding", "1")
        for ip in ips:
            _host_route(host, ip, hlink, reaper)
        return Plumbed(host_ifname, clink.mac, gw6)
    except CNIError:
        if created:
            _delete_quietly(host, host_ifname)
        raise
    except (OSError, nl.NamespaceError) as exc:
        if created:
            _delete_quietly(host, host_ifname)
        raise _fail(f"cannot set up {ifname} in {netns}", exc) from None
    finally:
        for sock in (host, cont):
            if sock is not None:
                sock.close()
        os.close(host_fd)
        os.close(cont_fd)


def _host_route(host: nl.Netlink, ip: IPInterface, hlink: nl.Link,
                reaper: Reaper | None = None) -> None:
    dst = ipaddress.ip_network(f"{ip.ip}/{ip.max_prefixlen}")
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    for _ in range(2):
        try:
            host.add_route(dst, hlink.index, scope=nl.RT_SCOPE_LINK)
            return
        except nl.NetlinkError as exc:
            if exc.errno != errno.EEXIST:
                raise
        other = next((r.oif for r in host.routes(family) if r.dst == dst), None)
        if other == hlink.index:
            return
        # The address's previous veth may still be waiting for the reaper: wait, then retry.
        old = _link_name(host, other)
        if reaper is None or old is None or not reaper.pending(old):
            break
        reaper.wait(old)
    raise CNIError(
        DATAPLANE_ERROR,
        f"route to {dst} already exists for an interface other than {hlink.name}",
    )


def _link_name(host: nl.Netlink, index: int | None) -> str | None:
    if index is None:
        return None
    return next((link.name for link in host.links() if link.index == index), None)


def _delete_quietly(host: nl.Netlink | None, name: str) -> None:
    if host is None:
        return
    try:
        link = host.link(name)
        if link is not None:
            host.delete_link(link.index)
    except OSError:
        pass


def teardown(netns: str, ifname: str, host_ifname: str | None = None,
             reaper: Reaper | None = None) -> None:
    """Remove the workload's interface; every piece may already be gone. With a `reaper`, a
    host side that is known is handed to it and deleted in the background."""
    if host_ifname and reaper is not None:
        reaper.submit(host_ifname)
        return
    cont_fd = _open_container_ns(netns) if netns else None
    try:
        if cont_fd is not None:
            try:
                with nl.in_netns(cont_fd, netns):
                    cont = nl.Netlink()
                with cont:
                    link = cont.link(ifname)
                    if link is not None:
                        cont.delete_link(link.index)
            except nl.NamespaceError:
                pass  # not a namespace (any more): nothing of ours in it
            except nl.NetlinkError as exc:
                if exc.errno not in (errno.ENODEV, errno.ENOENT):
                    raise _fail(f"cannot delete {ifname} in {netns}", exc) from None
        if host_ifname:
            with nl.Netlink() as host:
                try:
                    link = host.link(host_ifname)
                    if link is not None:
                        host.delete_link(link.index)
                except nl.NetlinkError as exc:
                    if exc.errno not in (errno.ENODEV, errno.ENOENT):
                        raise _fail(f"cannot delete {host_ifname}", exc) from None
    finally:
        if cont_fd is not None:
            os.close(cont_fd)


def check(
    netns: str,
    ifname: str,
    host_ifname: str,
    ips: Sequence[IPInterface],
    container_mac: str = "",
) -> list[str]:
    """What differs from the plumbing ADD made (empty when all is well)."""
    cont_fd = _open_container_ns(netns)
    if cont_fd is None:
        return [f"network namespace {netns} does not exist"]
    problems: list[str] = []
    try:
        try:
            with nl.in_netns(cont_fd, netns):
                cont = nl.Netlink()
        except nl.NamespaceError as exc:
            return [f"cannot enter network namespace {netns}: {exc}"]
        with cont, nl.Netlink() as host:
            clink = cont.link(ifname)
            hlink = host.link(host_ifname)
            if clink is None:
                problems.append(f"interface {ifname} does not exist in {netns}")
            if hlink is None:
                problems.append(f"host interface {host_ifname} does not exist")
            if clink is None or hlink is None:
                return problems
            if clink.kind != "veth" or hlink.kind != "veth":
                problems.append(f"{ifname}/{host_ifname} is not a veth pair")
            if clink.peer_index != hlink.index or hlink.peer_index != clink.index:
                problems.append(f"{host_ifname} is not the peer of {ifname} in {netns}")
            for link, where in ((clink, netns), (hlink, "the host")):
                if not link.up:
                    problems.append(f"{link.name} in {where} is down")
            if hlink.mac != HOST_MAC:
                problems.append(f"{host_ifname} has MAC {hlink.mac}, expected {HOST_MAC}")
            if container_mac and clink.mac != container_mac.lower():
                problems.append(f"{ifname} has MAC {clink.mac}, expected {container_mac}")
            have = {a.address for a in cont.addrs(clink.index)}
            for ip in ips:
                if ip not in have:
                    problems.append(f"address {ip} is missing from {ifname}")
            problems += _check_routes(cont, host, clink, hlink, ips)
    finally:
        os.close(cont_fd)
    return problems


def _check_routes(cont: nl.Netlink, host: nl.Netlink, clink: nl.Link, hlink: nl.Link,
                  ips: Sequence[IPInterface]) -> list[str]:
    problems = []
    if any(ip.version == 4 for ip in ips):
        routes = cont.routes(socket.AF_INET)
        if not any(r.dst == _GW_NET and r.oif == clink.index and r.gateway is None
                   for r in routes):
            problems.append(f"route {GATEWAY_V4} dev {clink.name} is missing")
        if not any(r.dst == _DEFAULT4 and r.gateway == GATEWAY_V4 and r.oif == clink.index
                   for r in routes):
            problems.append(f"default route via {GATEWAY_V4} dev {clink.name} is missing")
    if any(ip.version == 6 for ip in ips) and not any(
        r.dst == _DEFAULT6 and r.oif == clink.index for r in cont.routes(socket.AF_INET6)
    ):
        problems.append(f"IPv6 default route dev {clink.name} is missing")
    for fam in (4, 6):
        wanted = [ip for ip in ips if ip.version == fam]
        if not wanted:
            continue
        routes = host.routes(socket.AF_INET if fam == 4 else socket.AF_INET6)
        for ip in wanted:
            dst = ipaddress.ip_network(f"{ip.ip}/{ip.max_prefixlen}")
            if not any(r.dst == dst and r.oif == hlink.index for r in routes):
                problems.append(f"host route to {dst} via {hlink.name} is missing")
    return problems
