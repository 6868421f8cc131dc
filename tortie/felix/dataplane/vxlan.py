"""VXLAN: the ``vxlan.calico`` device, its neighbour and FDB entries, and overlay routes.

From the calculation graph's VTEP and route messages this manager makes the kernel match:

- this node's VTEP → the ``vxlan.calico`` device (VNI ``VXLANVNI``, UDP ``VXLANPort``,
  ``nolearning``, local address and parent device = the node's own address and interface),
  with the VTEP MAC, MTU ``VXLANMTU`` and the tunnel address as a ``/32``; a device whose
  settings differ is recreated;
- each remote VTEP → a permanent ARP entry (tunnel address → VTEP MAC) and a permanent FDB
  entry (VTEP MAC → the node's address), so nothing is ever flooded or learned;
- each remote block → ``<block> via <remote tunnel address> dev vxlan.calico onlink``, or
  for a same-subnet node under ``CrossSubnet`` ``<block> via <node address> dev <parent>``.

Routes go through ``RouteTable`` managers (added to the apply plan's routes phase); the device,
neighbours and FDB are written with netlink in ``apply_device()``, which runs before the
routes phase. Entries for VTEPs that are gone are removed; the device itself is removed only
after in-sync, once no pool uses VXLAN.
"""

from __future__ import annotations

import logging
from typing import Any

from tortie.felix import proto
from tortie.felix.dataplane.routes import RouteTable, RouteTarget

log = logging.getLogger(__name__)

DEVICE = "vxlan.calico"
NUD_PERMANENT = 0x80
NTF_SELF = 0x02


class VXLANManager:
    def __init__(
        self,
        hostname: str,
        *,
        vni: int = 4096,
        port: int = 4789,
        mtu: int = 1450,
        route_protocol: int = 3,
        ipr: Any = None,
    ) -> None:
        self.hostname = hostname
        self.vni, self.port, self.mtu = vni, port, mtu
        self._ipr = ipr
        self.vteps: dict[str, proto.VXLANTunnelEndpointUpdate] = {}
        self.routes: dict[str, proto.RouteUpdate] = {}
        self.tunnel_routes = RouteTable(4, protocol=route_protocol, iface_prefixes=(DEVICE,))
        self.direct_routes = RouteTable(4, protocol=route_protocol, iface_prefixes=())
        self._dirty = True
        self._routes_dirty = True
        self._in_sync = False
        self._parent_ifname: str | None = None

    # --- intent ----------------------------------------------------------------------------
    def on_vtep_update(self, msg: proto.VXLANTunnelEndpointUpdate) -> None:
        self.vteps[msg.node] = msg
        self._dirty = self._routes_dirty = True

    def on_vtep_remove(self, node: str) -> None:
        self.vteps.pop(node, None)
        self._dirty = self._routes_dirty = True

    def on_route_update(self, msg: proto.RouteUpdate) -> None:
        self.routes[msg.dst] = msg
        self._routes_dirty = True

    def on_route_remove(self, dst: str) -> None:
        self.routes.pop(dst, None)
        self._routes_dirty = True

    def set_in_sync(self) -> None:
        self._in_sync = True
        self._dirty = True

    def invalidate(self) -> None:
        self._dirty = self._routes_dirty = True
        self.tunnel_routes.invalidate()
        self.direct_routes.invalidate()

    @property
    def route_tables(self) -> list[RouteTable]:
        return [self.tunnel_routes, self.direct_routes]

    # --- apply -----------------------------------------------------------------------------
    def _netlink(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute  # deferred: a heavy import, unused without VXLAN

            self._ipr = IPRoute()
        return self._ipr

    def apply_device(self) -> None:
        """Device, address, neighbours and FDB; then record the wanted routes."""
        if self._dirty:
            me = self.vteps.get(self.hostname)
            if me is not None:
                idx = self._ensure_device(me)
                if idx is not None:
                    self._sync_neighbours(idx)
            elif self._in_sync and not self.routes:
                self._remove_device()
            self._dirty = False
        if self._routes_dirty:
            tunnel = [
                RouteTarget(r.dst, gateway=r.gateway, onlink=True)
                for r in self.routes.values()
                if r.type is proto.RouteType.VXLAN
            ]
            direct = [
                RouteTarget(r.dst, gateway=r.gateway)
                for r in self.routes.values()
                if r.type is proto.RouteType.DIRECT
            ]
            self.tunnel_routes.set_routes(DEVICE, tunnel)
            if self._parent_ifname is not None:
                self.direct_routes.set_routes(self._parent_ifname, direct)
            self._routes_dirty = False

    def _parent_of(self, ip: str) -> tuple[int, str] | None:
        ipr = self._netlink()
        for addr in ipr.get_addr(family=2):
            if addr.get_attr("IFA_ADDRESS") == ip:
                idx = addr["index"]
                name = ipr.get_links(idx)[0].get_attr("IFLA_IFNAME")
                return idx, name
        return None

    def _ensure_device(self, me: proto.VXLANTunnelEndpointUpdate) -> int | None:
        ipr = self._netlink()
        parent = self._parent_of(me.parent_device_ip)
        if parent is None:
            log.warning(
                "no interface has this node's address %s: VXLAN device not created",
                me.parent_device_ip,
            )
            return None
        parent_idx, self._parent_ifname = parent
        existing = ipr.link_lookup(ifname=DEVICE)
        if existing:
            idx = existing[0]
            if not self._device_matches(idx, me, parent_idx):
                log.info("recreating %s: its settings differ", DEVICE)
                ipr.link("del", index=idx)
                existing = []
        if not existing:
            ipr.link(
                "add",
                ifname=DEVICE,
                kind="vxlan",
                vxlan_id=self.vni,
                vxlan_local=me.parent_device_ip,
                vxlan_link=parent_idx,
                vxlan_port=self.port,
                vxlan_learning=0,
                address=me.mac,
                mtu=self.mtu,
            )
            idx = ipr.link_lookup(ifname=DEVICE)[0]
            self.tunnel_routes.invalidate()  # the route table must see the new link
        ipr.link("set", index=idx, state="up", mtu=self.mtu)
        wanted = me.ipv4_addr
        for addr in ipr.get_addr(family=2, index=idx):
            have = addr.get_attr("IFA_ADDRESS")
            if have != wanted or addr["prefixlen"] != 32:
                ipr.addr("del", index=idx, address=have, prefixlen=addr["prefixlen"])
        ipr.addr("replace", index=idx, address=wanted, prefixlen=32)
        return idx

    def _device_matches(
        self, idx: int, me: proto.VXLANTunnelEndpointUpdate, parent_idx: int
    ) -> bool:
        link = self._netlink().get_links(idx)[0]
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return False
        data = info.get_attr("IFLA_INFO_DATA")
        return (
            data.get_attr("IFLA_VXLAN_ID") == self.vni
            and data.get_attr("IFLA_VXLAN_PORT") == self.port
            and data.get_attr("IFLA_VXLAN_LOCAL") == me.parent_device_ip
            and data.get_attr("IFLA_VXLAN_LINK") == parent_idx
            and (link.get_attr("IFLA_ADDRESS") or "").lower() == me.mac.lower()
        )

    def _sync_neighbours(self, idx: int) -> None:
        ipr = self._netlink()
        remote = {n: v for n, v in self.vteps.items() if n != self.hostname}
        want_arp = {v.ipv4_addr: v.mac.lower() for v in remote.values()}
        want_fdb = {v.mac.lower(): v.parent_device_ip for v in remote.values()}
        for n in ipr.get_neighbours(ifindex=idx, family=2):
            dst, mac = n.get_attr("NDA_DST"), (n.get_attr("NDA_LLADDR") or "").lower()
            if dst not in want_arp or want_arp[dst] != mac:
                ipr.neigh("del", dst=dst, ifindex=idx)
        for n in ipr.fdb("dump", ifindex=idx):
            mac, dst = (n.get_attr("NDA_LLADDR") or "").lower(), n.get_attr("NDA_DST")
            if dst is not None and want_fdb.get(mac) != dst:
                ipr.fdb("del", ifindex=idx, lladdr=mac, dst=dst, flags=NTF_SELF)
        for ip, mac in want_arp.items():
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=idx, state=NUD_PERMANENT)
        for mac, dst in want_fdb.items():
            ipr.fdb(
                "replace", ifindex=idx, lladdr=mac, dst=dst, flags=NTF_SELF, state=NUD_PERMANENT
            )

    def _remove_device(self) -> None:
        ipr = self._netlink()
        for idx in ipr.link_lookup(ifname=DEVICE):
            log.info("removing %s: VXLAN is no longer used", DEVICE)
            ipr.link("del", index=idx)

    def close(self) -> None:
        for rt in self.route_tables:
            rt.close()
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
