"""The internal dataplane: calculation-graph messages → rendered chains → the managers.

``on_messages`` records intent — it renders each changed policy, profile and endpoint into
chains (``tortie.felix.rules``) and hands them, with IP set members and routes, to the managers
— and ``apply`` makes the kernel match in one ordered pass (``ApplyPlan``: interfaces, ipsets,
iptables raw/mangle/nat/filter, routes, ipset deletions). Nothing is written per message: a
burst of messages costs one ``ipset restore`` and one ``iptables-restore`` per table.

Ownership: each source of chains (a policy, an endpoint, the dispatch tree...) is tracked by
the names it produced, so when it changes or goes, exactly the chains it no longer produces are
removed. Periodic refreshes re-read kernel state and repair drift (a hand-deleted ``cali-``
rule comes back within ``IptablesRefreshInterval``). IPv4 only for now; the renderer and
managers take an IP version, so IPv6 is a second instance of each.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from tortie.felix import proto
from tortie.felix.config import Config
from tortie.felix.dataplane.driver import ApplyPlan, ApplyReport
from tortie.felix.dataplane.interfaces import InterfaceManager, LinkWatcher
from tortie.felix.dataplane.ipsets import IpsetManager
from tortie.felix.dataplane.iptables import Chain, Table
from tortie.felix.dataplane.routes import RouteTable, RouteTarget
from tortie.felix.dataplane.vxlan import VXLANManager
from tortie.felix.rules import RuleRenderer, RulesConfig
from tortie.felix.rules.config import ProtoPort as RulesProtoPort

log = logging.getLogger(__name__)

TABLES = ("raw", "mangle", "nat", "filter")
ALL_POOLS_SET = "all-ipam-pools"
MASQ_POOLS_SET = "masq-ipam-pools"


def rules_config(cfg: Config, ip_version: int = 4) -> RulesConfig:
    def ports(pp: Iterable[Any]) -> tuple[RulesProtoPort, ...]:
        return tuple(RulesProtoPort(p.protocol, p.port, p.net or "") for p in pp)

    return RulesConfig.from_mark_mask(
        cfg.IptablesMarkMask,
        ip_version=ip_version,
        workload_iface_prefixes=(cfg.InterfacePrefix,),
        default_endpoint_to_host_action=cfg.DefaultEndpointToHostAction,
        iptables_filter_allow_action=cfg.IptablesFilterAllowAction,
        mangle_allow_action=cfg.IptablesMangleAllowAction,
        failsafe_inbound_host_ports=ports(cfg.FailsafeInboundHostPorts),
        failsafe_outbound_host_ports=ports(cfg.FailsafeOutboundHostPorts),
        log_prefix=cfg.LogPrefix,
        vxlan_port=cfg.VXLANPort,
        allow_vxlan_packets_from_workloads=cfg.AllowVXLANPacketsFromWorkloads,
        allow_ipip_packets_from_workloads=cfg.AllowIPIPPacketsFromWorkloads,
        nat_outgoing_address=cfg.NATOutgoingAddress or None,
        disable_conntrack_invalid_check=cfg.DisableConntrackInvalidCheck,
        chain_insert_mode=cfg.ChainInsertMode,
    )


def _family(net: str) -> int:
    return 6 if ":" in net else 4


class InternalDataplane:
    """See the module docstring. Not thread-safe: one dataplane thread drives it."""

    def __init__(self, cfg: Config, *, ip_version: int = 4) -> None:
        self.cfg = cfg
        self.ip_version = ip_version
        self.metrics: Any = None  # a FelixMetrics, set by the daemon
        self.renderer = RuleRenderer(rules_config(cfg, ip_version))
        self.tables = {
            name: Table(name, ip_version, insert_mode=cfg.ChainInsertMode) for name in TABLES
        }
        self.ipsets = IpsetManager(ip_version)
        self.routes = RouteTable(
            ip_version, protocol=cfg.DeviceRouteProtocol, iface_prefixes=(cfg.InterfacePrefix,)
        )
        self.interfaces = InterfaceManager(
            prefixes=(cfg.InterfacePrefix,), ipv4=ip_version == 4, ipv6=ip_version == 6
        )
        # VXLAN (IPv4 overlay): the device, ARP/FDB entries and routes to remote blocks.
        self.vxlan: VXLANManager | None = None
        if ip_version == 4 and cfg.ProgramRoutes:  # policy-only mode programs no overlay
            self.vxlan = VXLANManager(
                cfg.FelixHostname,
                vni=cfg.VXLANVNI,
                port=cfg.VXLANPort,
                mtu=cfg.VXLANMTU,
                route_protocol=cfg.DeviceRouteProtocol,
            )
        self.plan = ApplyPlan(
            ipsets=[self.ipsets],
            tables=self.tables.values(),
            routes=[self.routes, *(self.vxlan.route_tables if self.vxlan else ())],
            interfaces=self.interfaces,
        )
        # what we were told
        self.workloads: dict[str, proto.WorkloadEndpoint] = {}
        self.host_endpoints: dict[str, proto.HostEndpoint] = {}
        self.pools: dict[str, proto.IPAMPoolUpdate] = {}
        self.policies: dict[proto.PolicyID, proto.Policy] = {}
        self.profiles: dict[proto.ProfileID, proto.Profile] = {}
        # Policies/profiles that host endpoints' mangle egress chains jump to: those need a
        # copy of their chains in mangle too.
        self._mangle_policies: set[proto.PolicyID] = set()
        self._mangle_profiles: set[proto.ProfileID] = set()
        # chain ownership: source -> table -> names
        self._owned: dict[Hashable, dict[str, set[str]]] = {}
        self._dispatch_dirty = True
        self._pools_dirty = True
        self._in_sync = False
        # refresh timers
        now = time.monotonic()
        self._refresh_due = {
            "iptables": now + cfg.IptablesRefreshInterval,
            "ipsets": now + cfg.IpsetsRefreshInterval,
            "routes": now + cfg.RouteRefreshInterval,
            "interfaces": now + cfg.InterfaceRefreshInterval,
        }
        self._link_updates: list[Any] = []
        self._link_lock = threading.Lock()
        self._watcher: LinkWatcher | None = None
        self.link_followers: list[InternalDataplane] = []  # other families fed by our watcher
        self._watch_thread: threading.Thread | None = None
        self._closed = False
        self.last_report: ApplyReport | None = None
        for table, chains in self._static_chains().items():
            self._set_chains(("static", table), table, chains)
        for table in TABLES:
            for kernel_chain, rules in self.renderer.insertions(table).items():
                self.tables[table].set_rule_insertions(kernel_chain, rules)

    # --- chain ownership -----------------------------------------------------------------
    def _static_chains(self) -> dict[str, tuple[Chain, ...]]:
        return {t: self.renderer.static_chains(t) for t in TABLES}

    def _set_chains(self, owner: Hashable, table: str, chains: Iterable[Chain]) -> None:
        chains = list(chains)
        names = {c.name for c in chains}
        owned = self._owned.setdefault(owner, {})
        for gone in owned.get(table, set()) - names:
            self.tables[table].remove_chain(gone)
        self.tables[table].update_chains(chains)
        owned[table] = names

    def _drop_owner(self, owner: Hashable) -> None:
        for table, names in self._owned.pop(owner, {}).items():
            self.tables[table].remove_chains(names)

    # --- messages ------------------------------------------------------------------------
    def on_messages(self, msgs: list[proto.Message]) -> None:
        for msg in msgs:
            handler = self._HANDLERS.get(type(msg))
            if handler is not None:
                handler(self, msg)

    def _ipset_update(self, msg: proto.IPSetUpdate) -> None:
        members = [m for m in msg.members if _family(m.split(",")[0]) == self.ip_version]
        self.ipsets.replace_members(self.ipsets.name_for(msg.id), msg.type.value, members)

    def _ipset_delta(self, msg: proto.IPSetDeltaUpdate) -> None:
        name = self.ipsets.name_for(msg.id)
        v = self.ip_version
        self.ipsets.remove_members(name, [m for m in msg.removed if _family(m.split(",")[0]) == v])
        self.ipsets.add_members(name, [m for m in msg.added if _family(m.split(",")[0]) == v])

    def _ipset_remove(self, msg: proto.IPSetRemove) -> None:
        self.ipsets.remove_set(self.ipsets.name_for(msg.id))

    def _policy_update(self, msg: proto.ActivePolicyUpdate) -> None:
        self.policies[msg.id] = msg.policy
        self._render_policy(msg.id)

    def _render_policy(self, pid: proto.PolicyID) -> None:
        pol = self.policies[pid]
        chains = self.renderer.policy_chains(pid, pol)
        owner = ("policy", pid)
        self._set_chains(owner, "filter", chains)
        # Untracked policies also run in raw, pre-DNAT ones (and those host endpoints' DNAT'd
        # egress uses) in mangle, under the same chain names.
        self._set_chains(owner, "raw", chains if pol.untracked else ())
        in_mangle = pol.pre_dnat or pid in self._mangle_policies
        self._set_chains(owner, "mangle", chains if in_mangle else ())

    def _policy_remove(self, msg: proto.ActivePolicyRemove) -> None:
        self.policies.pop(msg.id, None)
        self._drop_owner(("policy", msg.id))

    def _profile_update(self, msg: proto.ActiveProfileUpdate) -> None:
        self.profiles[msg.id] = msg.profile
        self._render_profile(msg.id)

    def _render_profile(self, pid: proto.ProfileID) -> None:
        chains = self.renderer.profile_chains(pid, self.profiles[pid])
        self._set_chains(("profile", pid), "filter", chains)
        self._set_chains(("profile", pid), "mangle", chains if pid in self._mangle_profiles else ())

    def _profile_remove(self, msg: proto.ActiveProfileRemove) -> None:
        self.profiles.pop(msg.id, None)
        self._drop_owner(("profile", msg.id))

    def _refresh_mangle_refs(self) -> None:
        heps = self.host_endpoints.values()
        pols = {p for h in heps for t in h.tiers for p in t.egress_policies}
        profs = {p for h in heps for p in h.profile_ids}
        changed_pols = pols ^ self._mangle_policies
        changed_profs = profs ^ self._mangle_profiles
        self._mangle_policies, self._mangle_profiles = pols, profs
        for pid in changed_pols:
            if pid in self.policies:
                self._render_policy(pid)
        for prid in changed_profs:
            if prid in self.profiles:
                self._render_profile(prid)

    def _workload_update(self, msg: proto.WorkloadEndpointUpdate) -> None:
        key = msg.id.key
        ep = msg.endpoint
        old = self.workloads.get(key)
        self.workloads[key] = ep
        self._set_chains(("wep", key), "filter", self.renderer.workload_chains(ep))
        if old is not None and old.interface_name != ep.interface_name:
            self.routes.set_routes(old.interface_name, ())
        nets = ep.ipv4_nets if self.ip_version == 4 else ep.ipv6_nets
        if ep.interface_name:
            self.routes.set_routes(ep.interface_name, [RouteTarget(n) for n in nets])
        if (
            old is None
            or old.interface_name != ep.interface_name
            or (old.allow_spoofed_source_prefixes != ep.allow_spoofed_source_prefixes)
            or old.ipv4_nat != ep.ipv4_nat
        ):
            self._dispatch_dirty = True

    def _workload_remove(self, msg: proto.WorkloadEndpointRemove) -> None:
        ep = self.workloads.pop(msg.id.key, None)
        self._drop_owner(("wep", msg.id.key))
        if ep is not None and ep.interface_name:
            self.routes.set_routes(ep.interface_name, ())
        self._dispatch_dirty = True

    def _host_endpoint_update(self, msg: proto.HostEndpointUpdate) -> None:
        self.host_endpoints[msg.id.name] = msg.endpoint
        self._refresh_mangle_refs()
        per_table = self.renderer.host_endpoint_chains(msg.endpoint)
        for table in ("filter", "raw", "mangle"):
            self._set_chains(("hep", msg.id.name), table, per_table.get(table, ()))
        self._dispatch_dirty = True

    def _host_endpoint_remove(self, msg: proto.HostEndpointRemove) -> None:
        self.host_endpoints.pop(msg.id.name, None)
        self._drop_owner(("hep", msg.id.name))
        self._refresh_mangle_refs()
        self._dispatch_dirty = True

    def _pool_update(self, msg: proto.IPAMPoolUpdate) -> None:
        self.pools[msg.id] = msg
        self._pools_dirty = True

    def _pool_remove(self, msg: proto.IPAMPoolRemove) -> None:
        self.pools.pop(msg.id, None)
        self._pools_dirty = True

    def _in_sync_msg(self, msg: proto.InSync) -> None:
        self._in_sync = True
        self.plan.set_in_sync()
        if self.vxlan is not None:
            self.vxlan.set_in_sync()

    def _vtep_update(self, msg: proto.VXLANTunnelEndpointUpdate) -> None:
        if self.vxlan is not None:
            self.vxlan.on_vtep_update(msg)

    def _vtep_remove(self, msg: proto.VXLANTunnelEndpointRemove) -> None:
        if self.vxlan is not None:
            self.vxlan.on_vtep_remove(msg.node)

    def _route_update(self, msg: proto.RouteUpdate) -> None:
        if self.vxlan is not None and _family(msg.dst) == self.ip_version:
            self.vxlan.on_route_update(msg)

    def _route_remove(self, msg: proto.RouteRemove) -> None:
        if self.vxlan is not None:
            self.vxlan.on_route_remove(msg.dst)

    _HANDLERS: dict[type, Callable[[InternalDataplane, Any], None]] = {
        proto.IPSetUpdate: _ipset_update,
        proto.IPSetDeltaUpdate: _ipset_delta,
        proto.IPSetRemove: _ipset_remove,
        proto.ActivePolicyUpdate: _policy_update,
        proto.ActivePolicyRemove: _policy_remove,
        proto.ActiveProfileUpdate: _profile_update,
        proto.ActiveProfileRemove: _profile_remove,
        proto.WorkloadEndpointUpdate: _workload_update,
        proto.WorkloadEndpointRemove: _workload_remove,
        proto.HostEndpointUpdate: _host_endpoint_update,
        proto.HostEndpointRemove: _host_endpoint_remove,
        proto.IPAMPoolUpdate: _pool_update,
        proto.IPAMPoolRemove: _pool_remove,
        proto.InSync: _in_sync_msg,
        proto.VXLANTunnelEndpointUpdate: _vtep_update,
        proto.VXLANTunnelEndpointRemove: _vtep_remove,
        proto.RouteUpdate: _route_update,
        proto.RouteRemove: _route_remove,
    }

    # --- derived state -------------------------------------------------------------------
    def _update_dispatch(self) -> None:
        workloads = list(self.workloads.values())
        ifaces = [w.interface_name for w in workloads if w.interface_name]
        per_table = self.renderer.dispatch_chains(ifaces, self.host_endpoints.values())
        for table in TABLES:
            self._set_chains(("dispatch", table), table, per_table.get(table, ()))
        self._set_chains(("rpf",), "raw", [self.renderer.rpf_skip_chain(workloads)])
        self._set_chains(("fip",), "nat", self.renderer.floating_ip_chains(workloads))
        self._dispatch_dirty = False

    def _update_pools(self) -> None:
        pools = [
            p
            for p in self.pools.values()
            if ipaddress.ip_network(p.cidr, strict=False).version == self.ip_version
        ]
        self.ipsets.replace_members(
            self.ipsets.name_for(ALL_POOLS_SET), "hash:net", [p.cidr for p in pools]
        )
        masq = [p.cidr for p in pools if p.masquerade and not p.disabled]
        self.ipsets.replace_members(self.ipsets.name_for(MASQ_POOLS_SET), "hash:net", masq)
        self._set_chains(("nat-outgoing",), "nat", [self.renderer.nat_outgoing_chain(bool(masq))])
        self._pools_dirty = False

    # --- apply and timers ------------------------------------------------------------------
    def apply(self) -> ApplyReport:
        self._drain_link_updates()
        if self._dispatch_dirty:
            self._update_dispatch()
        if self._pools_dirty:
            self._update_pools()
        if self.vxlan is not None:
            self.vxlan.apply_device()
        report = self.plan.apply()
        self.last_report = report
        if self.metrics is not None:
            self._export_metrics(report)
        return report

    def _export_metrics(self, report: ApplyReport) -> None:
        m = self.metrics
        v = str(self.ip_version)
        chains = 0
        for name, table in self.tables.items():
            desired = table.desired_chains
            chains += len(desired)
            m.iptables_rules.set(
                sum(len(c.rules) for c in desired.values()), ip_version=v, table=name
            )
        m.iptables_chains.set(chains, ip_version=v)
        m.ipsets.set(len(self.ipsets.desired_names))
        m.active_endpoints.set(len(self.workloads) + len(self.host_endpoints))
        for st in report.stats:
            if st.component.startswith("iptables") and st.commands:
                m.iptables_restore_calls.inc(st.commands)
            elif st.component.startswith("ipset") and st.commands:
                m.ipset_calls.inc(st.commands)
            elif st.component.startswith("routes"):
                m.route_table_syncs.inc()

    def next_refresh_in(self) -> float:
        return max(0.0, min(self._refresh_due.values()) - time.monotonic())

    def on_timer(self) -> None:
        now = time.monotonic()
        intervals = {
            "iptables": self.cfg.IptablesRefreshInterval,
            "ipsets": self.cfg.IpsetsRefreshInterval,
            "routes": self.cfg.RouteRefreshInterval,
            "interfaces": self.cfg.InterfaceRefreshInterval,
        }
        for what, due in self._refresh_due.items():
            if now >= due:
                self._refresh_due[what] = now + intervals[what]
                if what == "iptables":
                    for t in self.tables.values():
                        t.invalidate()
                elif what == "ipsets":
                    self.ipsets.invalidate()
                elif what == "routes":
                    self.routes.invalidate()
                    if self.vxlan is not None:
                        self.vxlan.invalidate()
                else:
                    self.interfaces.resync()

    # --- link events ------------------------------------------------------------------------
    def start_link_watch(self, wake: Callable[[], None]) -> None:
        """Watch netlink for link changes; ``wake()`` the dataplane loop when they come."""
        self._watcher = LinkWatcher()
        self._watch_thread = threading.Thread(
            target=self._watch, args=(wake,), name="link-watch", daemon=True
        )
        self._watch_thread.start()

    def _watch(self, wake: Callable[[], None]) -> None:
        import select

        watcher = self._watcher
        assert watcher is not None
        while not self._closed:
            try:
                ready, _, _ = select.select([watcher], [], [], 1.0)
                if not ready:
                    continue
                updates = watcher.read_updates()
            except (OSError, ValueError):
                if self._closed:
                    return
                self.interfaces.resync()
                wake()
                continue
            if updates:
                for target in (self, *self.link_followers):
                    target.push_link_updates(updates)
                wake()

    def push_link_updates(self, updates: list[Any]) -> None:
        """Queue link changes for the next apply (thread-safe)."""
        with self._link_lock:
            self._link_updates.extend(updates)

    def _drain_link_updates(self) -> None:
        with self._link_lock:
            updates, self._link_updates = self._link_updates, []
        if updates:
            self.interfaces.on_link_updates(updates)

    def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.close()
        if self.vxlan is not None:
            self.vxlan.close()
        self.routes.close()
        self.interfaces.close()


class FamilyDataplanes:
    """IPv4, and IPv6 when ``IPv6Support`` is on: the same messages drive one
    ``InternalDataplane`` per family (each keeps only its family's addresses)."""

    def __init__(self, cfg: Config) -> None:
        self.families = [InternalDataplane(cfg, ip_version=4)]
        if cfg.IPv6Support:
            self.families.append(InternalDataplane(cfg, ip_version=6))
        self.families[0].link_followers = self.families[1:]

    @property
    def metrics(self) -> Any:
        return self.families[0].metrics

    @metrics.setter
    def metrics(self, value: Any) -> None:
        for dp in self.families:
            dp.metrics = value

    def on_messages(self, msgs: list[proto.Message]) -> None:
        for dp in self.families:
            dp.on_messages(msgs)

    def apply(self) -> None:
        for dp in self.families:
            dp.apply()

    def next_refresh_in(self) -> float:
        return min(dp.next_refresh_in() for dp in self.families)

    def on_timer(self) -> None:
        for dp in self.families:
            dp.on_timer()

    def start_link_watch(self, wake: Callable[[], None]) -> None:
        self.families[0].start_link_watch(wake)

    def close(self) -> None:
        for dp in self.families:
            dp.close()
