"""The host side of Join and Leave: the workload veth as Calico's libnetwork plugin makes it.

Docker, unlike a CNI runtime, moves the container's end itself: at Join the driver creates a
veth pair in the host's namespace, `cali<first 11 chars of the endpoint ID>` (stays on the
host, MAC `ee:ee:ee:ee:ee:ee`) and `temp<same>` (Docker moves it into the container, renames it
`<prefix>0`, sets its MAC, address and routes from the Join answer and brings it up).

The kernel work reuses the CNI plugin's pieces: `tortie.cni.netlink` (a netlink socket in this
process's namespace, veth creation with the peer's MAC) and `tortie.cni.dataplane`'s
host-side values (`HOST_MAC`, `host_sysctls`: proxy ARP with no delay, forwarding). As the
CNI plugin does, the host side is brought up and the /32 (/128) route to each of the
workload's addresses is added at once, so traffic does not wait for Felix (which owns these
afterwards and sets the same values). A route that cannot be added yet is left to Felix.

Leave deletes the host side (the container's end goes with it). Everything here runs in the
namespace of the calling process: `tortie-libnetwork` runs in the host's (node's) namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
from collections.abc import Sequence

from tortie.cni import netlink as nl
from tortie.cni.dataplane import HOST_MAC, host_sysctls

__all__ = ["VethError", "create", "delete", "host_ifname", "temp_ifname"]

log = logging.getLogger(__name__)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class VethError(Exception):
    """Creating or deleting the veth failed; the message says which step."""


def host_ifname(endpoint_id: str) -> str:
    return "cali" + endpoint_id[:11]


def temp_ifname(endpoint_id: str) -> str:
    return "temp" + endpoint_id[:11]


def create(
    host_if: str,
    temp_if: str,
    ips: Sequence[IPInterface] = (),
    *,
    mtu: int = 0,
) -> None:
    """Create the pair (replacing stale interfaces of the same names), bring the host side up,
    set its sysctls and add the host routes (see the module docstring)."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with nl.Netlink() as host:
            for name in (host_if, temp_if):
                stale = host.link(name)
                if stale is not None:
                    log.info("deleting stale interface %s before creating it again", name)
                    host.delete_link(stale.index)
            try:
                host.add_veth(temp_if, host_if, here, mtu=mtu, peer_mac=HOST_MAC)
            except nl.NetlinkError as exc:
                raise VethError(f"cannot create veth {host_if}/{temp_if}: {exc}") from None
            try:
                _configure(host, host_if, ips)
            except (OSError, VethError) as exc:
                _delete_quietly(host, host_if)
                if isinstance(exc, VethError):
                    raise
                raise VethError(f"cannot configure {host_if}: {exc}") from None
    finally:
        os.close(here)


def _configure(host: nl.Netlink, host_if: str, ips: Sequence[IPInterface]) -> None:
    hlink = host.link(host_if)
    if hlink is None:
        raise VethError(f"veth {host_if} vanished right after it was created")
    host.set_link(hlink.index, up=True)
    v4 = any(ip.version == 4 for ip in ips) or not ips
    v6 = any(ip.version == 6 for ip in ips)
    for key, value in host_sysctls(host_if, v4, v6).items():
        nl.write_sysctl(key, value)
    for ip in ips:
        dst = ipaddress.ip_network(f"{ip.ip}/{ip.max_prefixlen}")
        try:
            host.add_route(dst, hlink.index, scope=nl.RT_SCOPE_LINK)
        except nl.NetlinkError as exc:
            if exc.errno != errno.EEXIST:
                log.debug("route to %s via %s not added (%s): Felix will add it", dst, host_if,
                          exc)


def _delete_quietly(host: nl.Netlink, name: str) -> None:
    try:
        link = host.link(name)
        if link is not None:
            host.delete_link(link.index)
    except OSError:
        pass


def delete(host_if: str, temp_if: str | None = None) -> bool:
    """Delete the host side (and a temp end Docker never moved); False if nothing was there."""
    found = False
    with nl.Netlink() as host:
        for name in filter(None, (host_if, temp_if)):
            try:
                link = host.link(name)
                if link is not None:
                    host.delete_link(link.index)
                    found = True
            except nl.NetlinkError as exc:
                if exc.errno not in (errno.ENODEV, errno.ENOENT):
                    raise VethError(f"cannot delete {name}: {exc}") from None
    return found
