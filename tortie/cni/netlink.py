"""A minimal rtnetlink client: just what the CNI plugin needs, with no import cost to speak of.

pyroute2 costs ~300 ms to import and `ip` costs a fork and exec per namespace; a plugin that
runs once per pod can afford neither, so this module builds the few messages itself
(`struct` over a `NETLINK_ROUTE` socket): links (veth pairs with the peer placed in another
namespace by file descriptor, up/down, MAC, MTU, delete), addresses and routes (add, dump).

Namespaces. A netlink socket works in the network namespace that was current when it was
opened, whatever the thread does afterwards. `in_netns(fd)` moves the *calling thread* into a
namespace with setns(2) and always moves it back (a thread that cannot get back raises
`NamespaceError`; the plugin then exits rather than carry on in the wrong place). The plugin
opens one socket in the host namespace and one inside the container's; sysctls under
`/proc/sys/net` are written while inside the namespace they belong to.

Errors from the kernel are `NetlinkError` (an OSError with the errno: EEXIST, ENODEV...).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "Addr",
    "Link",
    "NamespaceError",
    "Netlink",
    "NetlinkError",
    "RouteInfo",
    "in_netns",
    "open_netns",
    "write_sysctl",
]

NETLINK_ROUTE = 0
CLONE_NEWNET = 0x40000000

# Message types.
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26

# Flags.
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

# Link attributes.
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_NUM_TX_QUEUES = 31
IFLA_NUM_RX_QUEUES = 32
IFLA_LINK_NETNSID = 37
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFF_UP = 0x1

# Address attributes.
IFA_ADDRESS = 1
IFA_LOCAL = 2

# Route attributes and values.
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")


class NetlinkError(OSError):
    """The kernel refused a netlink request (`errno` says why)."""


class NamespaceError(RuntimeError):
    """A namespace could not be entered or left."""


# ---------------------------------------------------------------------------------------------
# Namespaces

_libc = ctypes.CDLL(None, use_errno=True)


def open_netns(path: str) -> int:
    """An O_RDONLY file descriptor on a network namespace file (FileNotFoundError if gone)."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(f"setns({what}): {os.strerror(err)}")


@contextmanager
def in_netns(fd: int, what: str = "netns") -> Iterator[None]:
    """Run the body with the calling thread inside namespace `fd`, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, what)
        try:
            yield
        finally:
            _setns(home, "the original namespace")
    finally:
        os.close(home)


def write_sysctl(key: str, value: str) -> None:
    """Write `/proc/sys/<key>` (slash-separated) in the calling thread's namespace."""
    with open(f"/proc/sys/{key}", "w") as fh:
        fh.write(value)


def read_sysctl(key: str) -> str:
    with open(f"/proc/sys/{key}") as fh:
        return fh.read().strip()


# ---------------------------------------------------------------------------------------------
# Attributes


def _attr(kind: int, data: bytes) -> bytes:
    length = _RTATTR.size + len(data)
    return _RTATTR.pack(length, kind) + data + b"\0" * (-length % 4)


def _attr_str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _attr_u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _parse_attrs(buf: bytes, offset: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(buf):
        length, kind = _RTATTR.unpack_from(buf, offset)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = buf[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return out


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode()


def _mac(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(p, 16) for p in mac.split(":"))


def _u32(data: bytes) -> int:
    return int(struct.unpack("=I", data[:4])[0])


# ---------------------------------------------------------------------------------------------
# Plain data


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int
    mac: str
    mtu: int
    kind: str  # IFLA_INFO_KIND: "veth", "bridge", "" ...
    peer_index: int  # IFLA_LINK (for a veth: the peer's ifindex, in its own namespace)
    peer_netnsid: int | None  # IFLA_LINK_NETNSID: set when the peer is in another namespace

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True)
class Addr:
    index: int
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    scope: int


@dataclass(frozen=True)
class RouteInfo:
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: str | None
    oif: int | None
    scope: int
    table: int
    type: int


# ---------------------------------------------------------------------------------------------
# The socket


class Netlink:
    """One NETLINK_ROUTE socket in the namespace that was current when it was created."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE)
        self._sock.settimeout(30.0)  # the kernel always answers; never hang a runtime for ever
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport --------------------------------------------------------------------------
    def _request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one message; return the replies (a dump's messages, or [] for an ACK)."""
        self._seq += 1
        seq = self._seq
        self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self._sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    raise NetlinkError(errno.EBADMSG, "truncated netlink message")
                payload = data[offset + _NLMSGHDR.size : offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return out
                out.append((mtype, payload))

    def _dump(self, kind: int, body: bytes) -> list[tuple[int, bytes]]:
        return self._request(kind, NLM_F_REQUEST | NLM_F_DUMP, body)

    # --- links ------------------------------------------------------------------------------
    @staticmethod
    def _link(payload: bytes) -> Link:
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
        attrs = _parse_attrs(payload, _IFINFOMSG.size)
        info = _parse_attrs(attrs.get(IFLA_LINKINFO, b""))
        return Link(
            index=index,
            name=_cstr(attrs.get(IFLA_IFNAME, b"")),
            flags=flags,
            mac=_mac(attrs.get(IFLA_ADDRESS, b"")),
            mtu=_u32(attrs[IFLA_MTU]) if IFLA_MTU in attrs else 0,
            kind=_cstr(info.get(IFLA_INFO_KIND, b"")),
            peer_index=_u32(attrs[IFLA_LINK]) if IFLA_LINK in attrs else 0,
            peer_netnsid=(
                struct.unpack("=i", attrs[IFLA_LINK_NETNSID][:4])[0]
                if IFLA_LINK_NETNSID in attrs
                else None
            ),
        )

    def link(self, name: str) -> Link | None:
        """The link called `name`, or None."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr_str(IFLA_IFNAME, name)
        try:
            replies = self._request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, body)
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return self._link(replies[0][1]) if replies else None

    def links(self) -> list[Link]:
        return [self._link(p) for _, p in self._dump(RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0))]

    def add_veth(
        self,
        name: str,
        peer_name: str,
        peer_netns_fd: int,
        *,
        mtu: int = 0,
        peer_mac: str = "",
        queues: int = 1,
    ) -> None:
        """Create veth `name` here with its peer `peer_name` in namespace `peer_netns_fd`."""
        common = b""
        if mtu:
            common += _attr_u32(IFLA_MTU, mtu)
        if queues > 1:
            common += _attr_u32(IFLA_NUM_TX_QUEUES, queues) + _attr_u32(IFLA_NUM_RX_QUEUES, queues)
        peer = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr_str(IFLA_IFNAME, peer_name)
        if peer_mac:
            peer += _attr(IFLA_ADDRESS, _mac_bytes(peer_mac))
        peer += common + _attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        linkinfo = _attr_str(IFLA_INFO_KIND, "veth") + _attr(
            IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer)
        )
        body = (
            _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + _attr_str(IFLA_IFNAME, name)
            + common
            + _attr(IFLA_LINKINFO, linkinfo)
        )
        self._request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def set_link(self, index: int, *, up: bool | None = None, mac: str = "") -> None:
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
        if mac:
            body += _attr(IFLA_ADDRESS, _mac_bytes(mac))
        self._request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, body)

    def delete_link(self, index: int) -> None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        self._request(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, body)

    # --- addresses --------------------------------------------------------------------------
    def add_addr(self, index: int, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                 ) -> None:
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        packed = address.ip.packed
        body = _IFADDRMSG.pack(family, address.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
        self._request(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def addrs(self, index: int | None = None) -> list[Addr]:
        out = []
        for _, payload in self._dump(RTM_GETADDR, _IFADDRMSG.pack(0, 0, 0, 0, 0)):
            family, prefix, _flags, scope, idx = _IFADDRMSG.unpack_from(payload)
            if index is not None and idx != index:
                continue
            attrs = _parse_attrs(payload, _IFADDRMSG.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(raw)
            out.append(Addr(idx, ipaddress.ip_interface(f"{ip}/{prefix}"), scope))
        return out

    # --- routes -----------------------------------------------------------------------------
    def add_route(
        self,
        dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
        oif: int,
        *,
        gateway: str | None = None,
        scope: int = RT_SCOPE_UNIVERSE,
    ) -> None:
        """Add a main-table unicast route (EEXIST if one is there already)."""
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        body = _RTMSG.pack(family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope,
                           RTN_UNICAST, 0)
        if dst.prefixlen:
            body += _attr(RTA_DST, dst.network_address.packed)
        if gateway:
            body += _attr(RTA_GATEWAY, ipaddress.ip_address(gateway).packed)
        body += _attr_u32(RTA_OIF, oif)
        self._request(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def routes(self, family: int = socket.AF_INET) -> list[RouteInfo]:
        """The main table's routes of one family."""
        out = []
        for _, payload in self._dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            fam, dst_len, _, _, table, _, scope, rtype, _ = _RTMSG.unpack_from(payload)
            attrs = _parse_attrs(payload, _RTMSG.size)
            if RTA_TABLE in attrs:
                table = _u32(attrs[RTA_TABLE])
            if table != RT_TABLE_MAIN or fam != family:
                continue
            if RTA_DST in attrs:
                dst = ipaddress.ip_network(f"{ipaddress.ip_address(attrs[RTA_DST])}/{dst_len}")
            else:
                dst = ipaddress.ip_network("0.0.0.0/0" if fam == socket.AF_INET else "::/0")
            gw = str(ipaddress.ip_address(attrs[RTA_GATEWAY])) if RTA_GATEWAY in attrs else None
            oif = _u32(attrs[RTA_OIF]) if RTA_OIF in attrs else None
            out.append(RouteInfo(dst, gw, oif, scope, table, rtype))
        return out
