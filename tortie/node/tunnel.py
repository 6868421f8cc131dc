"""The node's VXLAN tunnel addresses and VTEP MACs, as calico-node's ``allocate-tunnel-addrs``.

While an enabled IP pool with ``vxlanMode`` ``Always`` or ``CrossSubnet`` selects this node,
the node holds one tunnel address per IP version from such a pool, allocated through IPAM
under the handle ``vxlan-tunnel-addr-<node>`` (``vxlan-v6-tunnel-addr-<node>``), and its
Node spec carries it (``ipv4VXLANTunnelAddr`` / ``ipv6VXLANTunnelAddr``) with a VTEP MAC
(``vxlanTunnelMACAddr`` / ``vxlanTunnelMACAddrV6``). Felix builds ``vxlan.calico`` from those
fields. When no such pool selects the node any more, the address is released and the fields
are cleared.

The MAC is stable: the one Calico's Felix derives for a node without a stored MAC (the byte
``f`` then the first five bytes of SHA-1 over the node name, ``<name>-v6`` for IPv6), so
writing it changes nothing for a Felix that already used the derived one.

`TunnelAddressManager.reconcile()` does one pass; `run()` repeats it whenever an IP pool or
this Node changes (a Syncer watch) and at least every ``interval`` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from tortie.datastore import keys
from tortie.datastore.client import ResourceClient, ResourceConflict, ResourceNotFound
from tortie.datastore.syncer import Syncer, SyncStatus, Update

__all__ = ["TunnelAddressManager", "TunnelState", "vtep_mac"]

log = logging.getLogger("tortie.node")

#: (IPAM tunnel kind, Node address field, Node MAC field, MAC name suffix)
FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("vxlan", "ipv4_vxlan_tunnel_addr", "vxlan_tunnel_mac_addr", ""),
    ("vxlan-v6", "ipv6_vxlan_tunnel_addr", "vxlan_tunnel_mac_addr_v6", "-v6"),
)


def vtep_mac(node_name: str) -> str:
    """Calico Felix's deterministic VTEP MAC for a node: ``66:`` + SHA-1(name)[0:5]."""
    digest = hashlib.sha1(node_name.encode()).digest()
    return ":".join(f"{b:02x}" for b in b"f" + digest[:5])


TunnelState = dict[str, str | None]  # IPAM kind -> tunnel address (None: none)


class TunnelAddressManager:
    """Keeps this node's VXLAN tunnel addresses in step with the pools (module docstring)."""

    def __init__(
        self,
        client: ResourceClient,
        node_name: str,
        *,
        on_change: Callable[[TunnelState], None] | None = None,
        interval: float = 60.0,
    ) -> None:
        from tortie.ipam import IPAMClient

        self.client = client
        self.node_name = node_name
        self.ipam = IPAMClient(client.backend, client)
        self.on_change = on_change
        self.interval = interval
        self.state: TunnelState = {kind: None for kind, *_ in FAMILIES}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pass ------------------------------------------------------------------------------
    def reconcile(self) -> TunnelState:
        """Allocate or release per family; returns the addresses now held."""
        from tortie.ipam import NoMatchingPool

        state: TunnelState = {}
        for kind, addr_field, mac_field, suffix in FAMILIES:
            try:
                address = self.ipam.assign_tunnel_address(self.node_name, kind, update_node=False)
            except NoMatchingPool:
                address = None
            if address is None:
                self._release(kind)
                self._set_node(addr_field, None, mac_field, None)
            else:
                self._set_node(addr_field, address, mac_field, vtep_mac(self.node_name + suffix))
            state[kind] = address
        if state != self.state:
            log.info(
                "VXLAN tunnel addresses: %s",
                ", ".join(f"{k}={v or 'none'}" for k, v in state.items()),
            )
            self.state = state
            if self.on_change is not None:
                self.on_change(dict(state))
        return state

    def _release(self, kind: str) -> None:
        from tortie.ipam.client import TUNNEL_KINDS

        handle = TUNNEL_KINDS[kind][0] + self.node_name
        if self.ipam.ips_by_handle(handle):
            log.info("no VXLAN pool selects this node any more: releasing %s", handle)
            self.ipam.release_by_handle(handle)

    def _set_node(
        self, addr_field: str, address: str | None, mac_field: str, mac: str | None
    ) -> None:
        for _ in range(10):
            try:
                node: Any = self.client.get("Node", self.node_name)
            except ResourceNotFound:
                return
            spec = node.spec
            if getattr(spec, addr_field) == address and getattr(spec, mac_field) == mac:
                return
            setattr(spec, addr_field, address)
            setattr(spec, mac_field, mac)
            try:
                self.client.update(node)
                return
            except ResourceConflict:
                continue
            except ResourceNotFound:
                return
        log.warning("could not record the VXLAN tunnel address on Node %s", self.node_name)

    # --- the loop ----------------------------------------------------------------------------
    def on_status(self, status: SyncStatus) -> None:
        if status is SyncStatus.IN_SYNC:
            self._wake.set()

    def on_updates(self, updates: list[Update]) -> None:
        mine = keys.resource_key("Node", self.node_name)
        pools = keys.resource_prefix("IPPool")
        if any(u.key == mine or u.key.startswith(pools) for u in updates):
            self._wake.set()

    def start(self) -> TunnelAddressManager:
        self._thread = threading.Thread(target=self._run, name="tunnel-addrs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        syncer = Syncer(
            self.client.backend,
            [keys.resource_prefix("IPPool"), keys.resource_prefix("Node")],
            self,
            name="tunnel-syncer",
        )
        syncer.start()
        try:
            while not self._stop.is_set():
                self._wake.wait(self.interval)
                if self._stop.is_set():
                    break
                self._wake.clear()
                try:
                    self.reconcile()
                except Exception as exc:  # the datastore may be away: try again later
                    log.warning("could not reconcile VXLAN tunnel addresses: %s", exc)
                    self._stop.wait(2.0)
                    self._wake.set()
        finally:
            syncer.stop()
