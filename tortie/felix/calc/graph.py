"""The calculation graph: validated datastore resources in, dataplane messages out.

Pure, synchronous and single-threaded. Feed it resources with ``on_resource`` (value ``None``
means deleted), then call ``flush()``: it emits the coalesced messages for everything that
changed since the last flush, in an order the dataplane can apply directly (IP sets before the
rules that use them, removals last). ``on_in_sync()`` emits ``InSync`` once the datastore
snapshot has been processed.

The nodes of the graph:

- **Local endpoint filter**: of all WorkloadEndpoints and HostEndpoints, only those whose
  ``spec.node`` is this host are policed here; every endpoint (and network set) still
  contributes addresses to IP sets.
- **Policy index** (a ``LabelIndex`` of local endpoints × policy selectors): which policies
  apply to which local endpoint. Endpoints inherit labels from their profiles.
- **Active rules**: a policy or profile is *active* while it applies to at least one local
  endpoint; only active ones are scanned into ``ParsedRule``s and sent to the dataplane.
- **IP set index** (a ``LabelIndex`` of all endpoints and network sets × the selectors of
  active rules): the members of each IP set, reference-counted by address, sent as deltas.
- **Endpoint computation**: for each dirty local endpoint, its tiers in order (tier order,
  then name) with the policies of each tier (policy order, unset last, then name), per
  direction, and its profiles.
- **Pools and hosts**: IP pools (for NAT-outgoing and VXLAN) and node addresses pass through.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tortie.felix import proto
from tortie.felix.calc.labelindex import LabelIndex
from tortie.felix.calc.overlay import OverlayResolver
from tortie.felix.calc.rulescan import (
    NAMESPACE_PREFIX,
    ORCHESTRATOR_LABEL,
    SERVICE_ACCOUNT_LABEL,
    SERVICE_ACCOUNT_PREFIX,
    IPSetSpec,
    and_selectors,
    parse_protocol,
    prefix_keys,
    scan_rules,
)
from tortie.selector import NAMESPACE_LABEL, Selector, parse_cached

if TYPE_CHECKING:
    from tortie.api import Resource

Emit = Callable[[proto.Message], None]

DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
POLICY_KINDS = ("GlobalNetworkPolicy", "NetworkPolicy")


@dataclass
class _Policy:
    id: proto.PolicyID
    tier: str
    order: float | None
    selector: Selector
    ingress: bool
    egress: bool
    namespace: str | None
    spec: Any
    untracked: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    # The scanned rules and the IP sets they need, computed on first activation.
    scanned: tuple[proto.Policy, dict[str, IPSetSpec]] | None = None


@dataclass
class _Endpoint:
    """A workload or host endpoint, as the graph needs it."""

    key: tuple[str, str]  # ("wep", "<ns>/<name>") or ("hep", "<name>")
    local: bool
    labels: dict[str, str]
    profiles: tuple[str, ...]
    nets: tuple[str, ...]  # addresses for IP sets ("10.0.0.1", "10.1.0.0/24")
    ports: tuple[tuple[str, str, int], ...]  # (name, protocol, port)
    resource: Any


def _sort_key_order(order: float | None, name: str) -> tuple[float, str]:
    return (math.inf if order is None else order, name)


def _named_ports(ports: Iterable[Any] | None) -> tuple[tuple[str, str, int], ...]:
    return tuple(
        (p.name, parse_protocol(p.protocol) or "tcp", p.port) for p in ports or () if p.name
    )


def _normalise_net(net: str) -> str:
    """``10.0.0.1/32`` → ``10.0.0.1``; other CIDRs as their network (host bits masked)."""
    try:
        n = ipaddress.ip_network(net, strict=False)
    except ValueError:
        return net
    if n.prefixlen == n.max_prefixlen:
        return str(n.network_address)
    return str(n)


class CalcGraph:
    """See the module docstring."""

    def __init__(self, hostname: str, emit: Emit) -> None:
        self.hostname = hostname
        self._emit = emit
        self._policy_index = LabelIndex(self._on_policy_match, self._on_policy_unmatch)
        self._ipset_index = LabelIndex(self._on_ipset_match, self._on_ipset_unmatch)
        # inputs
        self._tiers: dict[str, tuple[float | None, str]] = {}
        self._policies: dict[proto.PolicyID, _Policy] = {}
        self._profiles: dict[str, Any] = {}  # name -> ProfileSpec
        self._endpoints: dict[tuple[str, str], _Endpoint] = {}
        self._netsets: dict[tuple[str, str], tuple[str, ...]] = {}
        self._pools: dict[str, proto.IPAMPoolUpdate] = {}
        # derived
        self._ep_policies: dict[tuple[str, str], set[proto.PolicyID]] = defaultdict(set)
        self._policy_eps: dict[proto.PolicyID, set[tuple[str, str]]] = defaultdict(set)
        self._profile_eps: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._active_policy_sets: dict[proto.PolicyID, dict[str, IPSetSpec]] = {}
        self._active_profile_sets: dict[str, dict[str, IPSetSpec]] = {}
        self._active_policies: dict[proto.PolicyID, proto.Policy] = {}
        self._active_profiles: dict[str, proto.Profile] = {}
        self._set_refs: Counter[str] = Counter()
        self._set_specs: dict[str, IPSetSpec] = {}
        self._set_members: dict[str, Counter[str]] = {}
        # pending output
        self._dirty_endpoints: set[tuple[str, str]] = set()
        self._dirty_policies: set[proto.PolicyID] = set()
        self._dirty_profiles: set[str] = set()
        self._removed_policies: set[proto.PolicyID] = set()
        self._removed_profiles: set[str] = set()
        self._sent_endpoints: dict[tuple[str, str], Any] = {}
        self._new_sets: set[str] = set()
        self._removed_sets: set[str] = set()
        self._set_added: dict[str, set[str]] = defaultdict(set)
        self._set_removed: dict[str, set[str]] = defaultdict(set)
        self._other: list[proto.Message] = []
        self.overlay = OverlayResolver(hostname, self._other.append)

    # ==================================================================================
    # Input
    # ==================================================================================
    def on_resource(self, kind: str, key: str, resource: Resource | None) -> None:
        """One datastore change; ``key`` is ``name`` or ``namespace/name``."""
        handler = self._HANDLERS.get(kind)
        if handler is not None:
            handler(self, key, resource)

    def on_in_sync(self) -> None:
        self.flush()
        self._emit(proto.InSync())

    # --- tiers and policies -------------------------------------------------------------
    def _on_tier(self, key: str, res: Resource | None) -> None:
        if res is None:
            self._tiers.pop(key, None)
        else:
            spec = res.spec  # type: ignore[attr-defined]
            self._tiers[key] = (spec.order, spec.default_action or "Deny")
        for pid, pol in self._policies.items():
            if pol.tier == key:
                self._dirty_endpoints |= self._policy_eps.get(pid, set())

    def _on_policy(self, key: str, res: Resource | None, kind: str) -> None:
        namespace = key.partition("/")[0] if kind == "NetworkPolicy" else None
        tier = DEFAULT_TIER if res is None else res.spec.tier or DEFAULT_TIER  # type: ignore[attr-defined]
        pid = proto.PolicyID(tier, key)
        if res is None:
            # The tier is part of the ID; find the policy whatever its tier was.
            for old in [p for p in self._policies if p.name == key]:
                self._delete_policy(old)
            return
        for old in [p for p in self._policies if p.name == key and p != pid]:
            self._delete_policy(old)  # moved to another tier
        spec = res.spec  # type: ignore[attr-defined]
        types = set(spec.types or ("Ingress",))
        base = parse_cached(spec.selector or "all()").root
        parts = [base]
        if namespace is not None:
            parts.append(parse_cached(f'{NAMESPACE_LABEL} == "{namespace}"').root)
        ns_sel = getattr(spec, "namespace_selector", None)
        if ns_sel:
            parts.append(prefix_keys(parse_cached(ns_sel).root, NAMESPACE_PREFIX))
        if spec.service_account_selector:
            parts.append(
                prefix_keys(
                    parse_cached(spec.service_account_selector).root, SERVICE_ACCOUNT_PREFIX
                )
            )
        selector = and_selectors(*parts)
        assert selector is not None
        pol = _Policy(
            id=pid,
            tier=tier,
            order=spec.order,
            selector=selector,
            ingress="Ingress" in types,
            egress="Egress" in types,
            namespace=namespace,
            spec=spec,
            untracked=bool(getattr(spec, "do_not_track", False)),
            pre_dnat=bool(getattr(spec, "pre_dnat", False)),
            apply_on_forward=bool(getattr(spec, "apply_on_forward", False)),
        )
        old = self._policies.get(pid)
        self._policies[pid] = pol
        self._policy_index.update_selector(pid, selector)
        if pid in self._active_policy_sets:
            self._activate_policy(pid)  # rescan the rules
        if old is not None:
            # order or types may have changed: every endpoint using it is affected
            self._dirty_endpoints |= self._policy_eps.get(pid, set())

    def _delete_policy(self, pid: proto.PolicyID) -> None:
        self._policy_index.delete_selector(pid)  # unmatch events deactivate it
        self._policies.pop(pid, None)

    # --- profiles -------------------------------------------------------------------------
    def _on_profile(self, key: str, res: Resource | None) -> None:
        if res is None:
            self._profiles.pop(key, None)
            self._policy_index.delete_parent(key)
            self._ipset_index.delete_parent(key)
        else:
            spec = res.spec  # type: ignore[attr-defined]
            self._profiles[key] = spec
            labels = spec.labels_to_apply or {}
            self._policy_index.update_parent(key, labels)
            self._ipset_index.update_parent(key, labels)
        if key in self._active_profile_sets:
            self._activate_profile(key)

    # --- endpoints ------------------------------------------------------------------------
    def _on_wep(self, key: str, res: Resource | None) -> None:
        ek = ("wep", key)
        if res is None:
            self._remove_endpoint(ek)
            return
        spec = res.spec  # type: ignore[attr-defined]
        namespace = res.metadata.namespace or "default"
        labels = dict(res.metadata.labels or {})
        labels.setdefault(NAMESPACE_LABEL, namespace)
        labels.setdefault(ORCHESTRATOR_LABEL, spec.orchestrator or "k8s")
        if spec.service_account_name:
            labels.setdefault(SERVICE_ACCOUNT_LABEL, spec.service_account_name)
        ports = _named_ports(spec.ports)
        self._upsert_endpoint(
            _Endpoint(
                key=ek,
                local=spec.node == self.hostname,
                labels=labels,
                profiles=tuple(spec.profiles or ()),
                nets=tuple(_normalise_net(n) for n in spec.ip_networks or ()),
                ports=ports,
                resource=res,
            )
        )

    def _on_hep(self, key: str, res: Resource | None) -> None:
        ek = ("hep", key)
        if res is None:
            self._remove_endpoint(ek)
            return
        spec = res.spec  # type: ignore[attr-defined]
        ports = _named_ports(spec.ports)
        self._upsert_endpoint(
            _Endpoint(
                key=ek,
                local=spec.node == self.hostname,
                labels=dict(res.metadata.labels or {}),
                profiles=tuple(spec.profiles or ()),
                nets=tuple(_normalise_net(n) for n in spec.expected_ips or ()),
                ports=ports,
                resource=res,
            )
        )

    def _upsert_endpoint(self, ep: _Endpoint) -> None:
        old = self._endpoints.get(ep.key)
        sets_before = self._ipset_index.selectors_matching(ep.key)
        if old is not None and (old.nets != ep.nets or old.ports != ep.ports):
            for sid in sets_before:
                self._change_members(sid, self._members(sid, old), -1)
        self._endpoints[ep.key] = ep
        if old is not None and (old.nets != ep.nets or old.ports != ep.ports):
            for sid in sets_before:
                self._change_members(sid, self._members(sid, ep), +1)
        self._ipset_index.update_item(ep.key, ep.labels, ep.profiles)
        if old is not None and old.local and not ep.local:
            self._policy_index.delete_item(ep.key)
            self._set_profiles(ep.key, ())
            self._dirty_endpoints.add(ep.key)
        if ep.local:
            self._policy_index.update_item(ep.key, ep.labels, ep.profiles)
            self._set_profiles(ep.key, ep.profiles)
            self._dirty_endpoints.add(ep.key)

    def _remove_endpoint(self, ek: tuple[str, str]) -> None:
        ep = self._endpoints.get(ek)
        if ep is None:
            return
        self._ipset_index.delete_item(ek)
        if ep.local:
            self._policy_index.delete_item(ek)
            self._set_profiles(ek, ())
        del self._endpoints[ek]
        self._dirty_endpoints.add(ek)

    def _set_profiles(self, ek: tuple[str, str], profiles: Iterable[str]) -> None:
        wanted = set(profiles)
        for name in list(self._profile_eps):
            eps = self._profile_eps[name]
            if ek in eps and name not in wanted:
                eps.discard(ek)
                if not eps:
                    del self._profile_eps[name]
                    self._deactivate_profile(name)
        for name in wanted:
            eps = self._profile_eps[name]
            if not eps:
                eps.add(ek)
                self._activate_profile(name)
            else:
                eps.add(ek)

    # --- network sets ---------------------------------------------------------------------
    def _on_netset(self, key: str, res: Resource | None, namespaced: bool) -> None:
        nk = ("netset", key) if namespaced else ("gnetset", key)
        sets_before = self._ipset_index.selectors_matching(nk)
        old_nets = self._netsets.get(nk)
        for sid in sets_before:
            if self._set_specs[sid].type is proto.IPSetType.NET and old_nets:
                self._change_members(sid, old_nets, -1)
        if res is None:
            self._netsets.pop(nk, None)
            self._ipset_index.delete_item(nk)
            return
        nets = tuple(_normalise_net(n) for n in res.spec.nets or ())  # type: ignore[attr-defined]
        self._netsets[nk] = nets
        for sid in sets_before:
            if self._set_specs[sid].type is proto.IPSetType.NET:
                self._change_members(sid, nets, +1)
        labels = dict(res.metadata.labels or {})
        if namespaced:
            labels[NAMESPACE_LABEL] = res.metadata.namespace or "default"
        self._ipset_index.update_item(nk, labels)

    # --- pools, nodes ---------------------------------------------------------------------
    def _on_pool(self, key: str, res: Resource | None) -> None:
        old = self._pools.pop(key, None)
        if res is None:
            self.overlay.on_pool(key, None)
            if old is not None:
                self._other.append(proto.IPAMPoolRemove(old.id))
            return
        spec = res.spec  # type: ignore[attr-defined]
        msg = proto.IPAMPoolUpdate(
            id=spec.cidr,
            cidr=spec.cidr,
            masquerade=bool(spec.nat_outgoing),
            vxlan_mode=spec.vxlan_mode or "Never",
            ipip_mode=spec.ipip_mode or "Never",
            disabled=bool(spec.disabled),
        )
        self.overlay.on_pool(key, spec.cidr, spec.vxlan_mode or "Never")
        if old is not None and old.id != msg.id:
            self._other.append(proto.IPAMPoolRemove(old.id))
        self._pools[key] = msg
        if old != msg:
            self._other.append(msg)

    def _on_node(self, key: str, res: Resource | None) -> None:
        if res is None:
            self.overlay.on_node_removed(key)
            self._other.append(proto.HostMetadataRemove(key))
            return
        spec: Any = res.spec  # type: ignore[attr-defined]
        bgp = getattr(spec, "bgp", None)
        cidr = getattr(bgp, "ipv4_address", None) if bgp else None
        self.overlay.on_node(key, cidr, spec.ipv4_vxlan_tunnel_addr, spec.vxlan_tunnel_mac_addr)
        addr6 = getattr(bgp, "ipv6_address", None) if bgp else None
        self._other.append(
            proto.HostMetadataUpdate(
                hostname=key,
                ipv4_addr=cidr.split("/")[0] if cidr else None,
                ipv4_cidr=cidr,
                ipv6_addr=addr6.split("/")[0] if addr6 else None,
                asnumber=str(bgp.as_number) if bgp and bgp.as_number else None,
                labels=tuple(sorted((res.metadata.labels or {}).items())),
            )
        )

    def _on_affinity(self, key: str, value: Any) -> None:
        """An IPAM block affinity: ``key`` is ``<node>/<block CIDR>``, ``value`` its JSON
        (``None`` when deleted); pending affinities are not yet the node's."""
        node, _, block = key.partition("/")
        state = (value or {}).get("state", "confirmed") if value is not None else None
        self.overlay.on_affinity(node, block, state in ("confirmed", "pendingDeletion"))

    _HANDLERS: dict[str, Callable[[CalcGraph, str, Any], None]] = {
        "Tier": _on_tier,
        "GlobalNetworkPolicy": lambda g, k, r: g._on_policy(k, r, "GlobalNetworkPolicy"),
        "NetworkPolicy": lambda g, k, r: g._on_policy(k, r, "NetworkPolicy"),
        "Profile": _on_profile,
        "WorkloadEndpoint": _on_wep,
        "HostEndpoint": _on_hep,
        "NetworkSet": lambda g, k, r: g._on_netset(k, r, True),
        "GlobalNetworkSet": lambda g, k, r: g._on_netset(k, r, False),
        "IPPool": _on_pool,
        "Node": _on_node,
        "BlockAffinity": _on_affinity,
    }

    # ==================================================================================
    # Policy index callbacks and active rules
    # ==================================================================================
    def _on_policy_match(self, pid: Any, ek: Any) -> None:
        self._ep_policies[ek].add(pid)
        eps = self._policy_eps[pid]
        eps.add(ek)
        self._dirty_endpoints.add(ek)
        if len(eps) == 1:
            self._activate_policy(pid)

    def _on_policy_unmatch(self, pid: Any, ek: Any) -> None:
        pols = self._ep_policies.get(ek)
        if pols is not None:
            pols.discard(pid)
            if not pols:
                del self._ep_policies[ek]
        eps = self._policy_eps.get(pid)
        if eps is not None:
            eps.discard(ek)
            if not eps:
                del self._policy_eps[pid]
                self._deactivate_policy(pid)
        self._dirty_endpoints.add(ek)

    def _activate_policy(self, pid: proto.PolicyID) -> None:
        pol = self._policies[pid]
        if pol.scanned is None:
            sets: dict[str, IPSetSpec] = {}
            rendered = proto.Policy(
                inbound_rules=scan_rules(pol.spec.ingress, pol.namespace, sets, "i"),
                outbound_rules=scan_rules(pol.spec.egress, pol.namespace, sets, "e"),
                untracked=pol.untracked,
                pre_dnat=pol.pre_dnat,
                apply_on_forward=pol.apply_on_forward,
            )
            pol.scanned = (rendered, sets)
        rendered, sets = pol.scanned
        self._active_policies[pid] = rendered
        self._swap_sets(self._active_policy_sets.get(pid, {}), sets)
        self._active_policy_sets[pid] = sets
        self._dirty_policies.add(pid)
        self._removed_policies.discard(pid)

    def _deactivate_policy(self, pid: proto.PolicyID) -> None:
        self._swap_sets(self._active_policy_sets.pop(pid, {}), {})
        self._active_policies.pop(pid, None)
        self._dirty_policies.discard(pid)
        self._removed_policies.add(pid)

    def _activate_profile(self, name: str) -> None:
        spec = self._profiles.get(name)
        sets: dict[str, IPSetSpec] = {}
        self._active_profiles[name] = (
            proto.Profile(
                inbound_rules=scan_rules(spec.ingress, None, sets, "i"),
                outbound_rules=scan_rules(spec.egress, None, sets, "e"),
            )
            if spec is not None
            else proto.Profile()  # missing profile: no rules, so nothing is allowed
        )
        self._swap_sets(self._active_profile_sets.get(name, {}), sets)
        self._active_profile_sets[name] = sets
        self._dirty_profiles.add(name)
        self._removed_profiles.discard(name)

    def _deactivate_profile(self, name: str) -> None:
        self._swap_sets(self._active_profile_sets.pop(name, {}), {})
        self._active_profiles.pop(name, None)
        self._dirty_profiles.discard(name)
        self._removed_profiles.add(name)

    # ==================================================================================
    # IP sets
    # ==================================================================================
    def _swap_sets(self, old: dict[str, IPSetSpec], new: dict[str, IPSetSpec]) -> None:
        """Reference the sets in ``new``, then release those in ``old`` (order matters: a
        set used before and after must never drop to zero references in between)."""
        for sid, spec in new.items():
            self._set_refs[sid] += 1
            if self._set_refs[sid] == 1:
                self._set_specs[sid] = spec
                self._set_members[sid] = Counter()
                if sid in self._removed_sets:
                    self._removed_sets.discard(sid)
                self._new_sets.add(sid)
                self._set_added.pop(sid, None)
                self._set_removed.pop(sid, None)
                self._ipset_index.update_selector(sid, spec.selector)
        for sid in old:
            self._set_refs[sid] -= 1
            if self._set_refs[sid] == 0:
                del self._set_refs[sid]
                self._ipset_index.delete_selector(sid)
                del self._set_specs[sid]
                del self._set_members[sid]
                self._set_added.pop(sid, None)
                self._set_removed.pop(sid, None)
                if sid in self._new_sets:
                    self._new_sets.discard(sid)
                else:
                    self._removed_sets.add(sid)

    def _members(self, sid: str, item: _Endpoint | tuple[str, ...]) -> Iterable[str]:
        spec = self._set_specs[sid]
        if isinstance(item, tuple):  # a network set's nets
            return item if spec.type is proto.IPSetType.NET else ()
        if spec.type is proto.IPSetType.NET:
            return item.nets
        return [
            f"{net},{proto_}:{port}"
            for (name, proto_, port) in item.ports
            if name == spec.port_name and proto_ == spec.protocol
            for net in item.nets
        ]

    def _item_members(self, sid: str, item_id: Any) -> Iterable[str]:
        ep = self._endpoints.get(item_id)
        if ep is not None:
            return self._members(sid, ep)
        nets = self._netsets.get(item_id)
        return self._members(sid, nets) if nets else ()

    def _change_members(self, sid: str, members: Iterable[str], delta: int) -> None:
        counts = self._set_members.get(sid)
        if counts is None:
            return
        for m in members:
            before = counts[m]
            after = before + delta
            if after <= 0:
                del counts[m]
                if before > 0:
                    self._note_member(sid, m, added=False)
            else:
                counts[m] = after
                if before == 0:
                    self._note_member(sid, m, added=True)

    def _note_member(self, sid: str, member: str, added: bool) -> None:
        if sid in self._new_sets:
            return  # the full list goes out with the set's creation
        if added:
            if member in self._set_removed[sid]:
                self._set_removed[sid].discard(member)
            else:
                self._set_added[sid].add(member)
        elif member in self._set_added[sid]:
            self._set_added[sid].discard(member)
        else:
            self._set_removed[sid].add(member)

    def _on_ipset_match(self, sid: Any, item_id: Any) -> None:
        self._change_members(sid, self._item_members(sid, item_id), +1)

    def _on_ipset_unmatch(self, sid: Any, item_id: Any) -> None:
        self._change_members(sid, self._item_members(sid, item_id), -1)

    # ==================================================================================
    # Output
    # ==================================================================================
    def flush(self) -> None:
        """Emit every pending change, coalesced, in dataplane order."""
        emit = self._emit
        for sid in sorted(self._new_sets):
            spec = self._set_specs[sid]
            emit(proto.IPSetUpdate(sid, spec.type, frozenset(self._set_members[sid])))
        for sid in sorted(set(self._set_added) | set(self._set_removed)):
            added = self._set_added.get(sid, set())
            removed = self._set_removed.get(sid, set())
            if added or removed:
                emit(proto.IPSetDeltaUpdate(sid, frozenset(added), frozenset(removed)))
        self._new_sets.clear()
        self._set_added.clear()
        self._set_removed.clear()
        for pid in sorted(self._dirty_policies):
            emit(proto.ActivePolicyUpdate(pid, self._active_policies[pid]))
        for name in sorted(self._dirty_profiles):
            emit(proto.ActiveProfileUpdate(proto.ProfileID(name), self._active_profiles[name]))
        self._dirty_policies.clear()
        self._dirty_profiles.clear()
        self.overlay.flush()
        for msg in self._other:
            emit(msg)
        self._other.clear()
        for ek in sorted(self._dirty_endpoints):
            self._emit_endpoint(ek)
        self._dirty_endpoints.clear()
        for pid in sorted(self._removed_policies):
            emit(proto.ActivePolicyRemove(pid))
        for name in sorted(self._removed_profiles):
            emit(proto.ActiveProfileRemove(proto.ProfileID(name)))
        self._removed_policies.clear()
        self._removed_profiles.clear()
        for sid in sorted(self._removed_sets):
            emit(proto.IPSetRemove(sid))
        self._removed_sets.clear()

    def _tiers_for(self, pids: Iterable[proto.PolicyID]) -> tuple[proto.TierInfo, ...]:
        by_tier: dict[str, list[_Policy]] = defaultdict(list)
        for pid in pids:
            pol = self._policies.get(pid)
            if pol is not None:
                by_tier[pol.tier].append(pol)
        tiers = []
        for tier, pols in by_tier.items():
            order, action = self._tiers.get(tier, (None, "Deny"))
            if tier == DEFAULT_TIER and order is None:
                order = DEFAULT_TIER_ORDER
            pols.sort(key=lambda p: _sort_key_order(p.order, p.id.name))
            tiers.append(
                (
                    _sort_key_order(order, tier),
                    proto.TierInfo(
                        name=tier,
                        default_action=action,
                        ingress_policies=tuple(p.id for p in pols if p.ingress),
                        egress_policies=tuple(p.id for p in pols if p.egress),
                    ),
                )
            )
        tiers.sort(key=lambda t: t[0])
        return tuple(t for _, t in tiers)

    def _emit_endpoint(self, ek: tuple[str, str]) -> None:
        ep = self._endpoints.get(ek)
        kind, key = ek
        if ep is None or not ep.local:
            sent = self._sent_endpoints.pop(ek, None)
            if sent is not None:
                if kind == "wep":
                    self._emit(proto.WorkloadEndpointRemove(sent))
                else:
                    self._emit(proto.HostEndpointRemove(sent))
            return
        pids = self._ep_policies.get(ek, set())
        profiles = tuple(proto.ProfileID(p) for p in ep.profiles)
        spec = ep.resource.spec
        if kind == "wep":
            wid = self._wep_id(key, ep.resource)
            old_id = self._sent_endpoints.get(ek)
            if old_id is not None and old_id != wid:
                self._emit(proto.WorkloadEndpointRemove(old_id))
            self._sent_endpoints[ek] = wid
            nets4 = tuple(n for n in spec.ip_networks or () if ":" not in n)
            nets6 = tuple(n for n in spec.ip_networks or () if ":" in n)
            self._emit(
                proto.WorkloadEndpointUpdate(
                    wid,
                    proto.WorkloadEndpoint(
                        name=ep.resource.metadata.name,
                        interface_name=spec.interface_name or "",
                        mac=spec.mac,
                        ipv4_nets=nets4,
                        ipv6_nets=nets6,
                        ipv4_nat=tuple((n.internal_ip, n.external_ip) for n in spec.ip_nats or ()),
                        tiers=self._tiers_for(p for p in pids if self._is_normal(p)),
                        profile_ids=profiles,
                        allow_spoofed_source_prefixes=tuple(
                            spec.allow_spoofed_source_prefixes or ()
                        ),
                    ),
                )
            )
            return
        self._sent_endpoints[ek] = proto.HostEndpointID(key)
        pols = [self._policies[p] for p in pids if p in self._policies]
        ips = spec.expected_ips or ()
        self._emit(
            proto.HostEndpointUpdate(
                proto.HostEndpointID(key),
                proto.HostEndpoint(
                    name=key,
                    interface_name=spec.interface_name or "",
                    expected_ipv4_addrs=tuple(i for i in ips if ":" not in i),
                    expected_ipv6_addrs=tuple(i for i in ips if ":" in i),
                    tiers=self._tiers_for(p.id for p in pols if not (p.untracked or p.pre_dnat)),
                    untracked_tiers=self._tiers_for(p.id for p in pols if p.untracked),
                    pre_dnat_tiers=self._tiers_for(p.id for p in pols if p.pre_dnat),
                    forward_tiers=self._tiers_for(
                        p.id for p in pols if p.apply_on_forward and not (p.untracked or p.pre_dnat)
                    ),
                    profile_ids=profiles,
                ),
            )
        )

    def _is_normal(self, pid: proto.PolicyID) -> bool:
        pol = self._policies.get(pid)
        return pol is not None and not (pol.untracked or pol.pre_dnat)

    @staticmethod
    def _wep_id(key: str, res: Any) -> proto.WorkloadEndpointID:
        spec = res.spec
        return proto.WorkloadEndpointID(
            spec.orchestrator or "", spec.workload or spec.pod or "", spec.endpoint or "", key
        )

    # --- introspection (metrics, tests) ----------------------------------------------------
    @property
    def active_policy_count(self) -> int:
        return len(self._active_policy_sets)

    @property
    def active_profile_count(self) -> int:
        return len(self._active_profile_sets)

    @property
    def ipset_count(self) -> int:
        return len(self._set_specs)

    def ipset_members(self, sid: str) -> frozenset[str]:
        return frozenset(self._set_members.get(sid, ()))
