"""Per-endpoint chains (Calico's ``felix/rules/endpoints.go``).

This module owns the chains that apply an endpoint's tiers of policies and its profiles:

- workloads, filter table: ``cali-tw-<iface>`` (traffic *to* the workload: ingress policies,
  inbound profile rules) and ``cali-fw-<iface>`` (traffic *from* it: egress policies, outbound
  rules; VXLAN and IP-in-IP from workloads dropped unless configured otherwise);
- host endpoints, filter table: ``cali-th-``/``cali-fh-`` (to/from the host, behind the
  failsafe chains) and ``cali-thfw-``/``cali-fhfw-`` (forwarded traffic, ``applyOnForward``
  policies only, allowed when there are none);
- host endpoints, raw table (``doNotTrack`` policies): allowed packets are NOTRACKed and
  accepted; no profiles and no drop at the end, as the filter table still runs;
- host endpoints, mangle table: ``cali-fh-`` for ``preDNAT`` policies (ingress only, no
  profiles, no drop at the end), and ``cali-th-`` with the normal egress policy for host
  traffic that was DNAT'd (policed in mangle POSTROUTING, after the kernel re-routes it).

An endpoint chain starts with conntrack (established flows allowed, INVALID dropped), then
clears the accept and pass bits. Per tier with policies in this direction: clear pass ("Start
of tier"), jump to each policy while pass is clear, return as soon as one set accept; at the
end of the tier drop unless a policy passed (or the tier's default action is Pass). Then each
profile (return if it accepted) and, in the end, drop: fail closed.

Anti-spoofing is not done here: as in Calico's iptables mode, the raw table's PREROUTING runs
an ``rpfilter`` check on workload traffic (see :mod:`.static`), with per-workload exceptions
from ``allowSpoofedSourcePrefixes`` in ``cali-rpf-skip`` (see :mod:`.dispatch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from tortie.felix.dataplane.iptables import Chain, Rule
from tortie.felix.proto import HostEndpoint, ProfileID, TierInfo, WorkloadEndpoint
from tortie.felix.rules import matches as m
from tortie.felix.rules.config import RulesConfig
from tortie.felix.rules.names import (
    CHAIN_FAILSAFE_IN,
    CHAIN_FAILSAFE_OUT,
    HOST_FROM_ENDPOINT_FORWARD_PREFIX,
    HOST_FROM_ENDPOINT_PREFIX,
    HOST_TO_ENDPOINT_FORWARD_PREFIX,
    HOST_TO_ENDPOINT_PREFIX,
    POLICY_INBOUND_PREFIX,
    POLICY_OUTBOUND_PREFIX,
    PROFILE_INBOUND_PREFIX,
    PROFILE_OUTBOUND_PREFIX,
    WORKLOAD_FROM_ENDPOINT_PREFIX,
    WORKLOAD_TO_ENDPOINT_PREFIX,
    endpoint_chain_name,
    host_endpoint_iface,
    policy_chain_name,
    profile_chain_name,
)

PROTO_IPIP = 4


class ChainType(Enum):
    NORMAL = "normal"  # filter table: tiers, profiles, drop at the end
    UNTRACKED = "untracked"  # raw table: no conntrack, NOTRACK on allow, no drop
    PRE_DNAT = "pre-dnat"  # mangle table: no profiles, no drop
    FORWARD = "forward"  # filter table, applyOnForward: allowed when no policy applies


def endpoint_chain(
    *,
    name: str,
    tiers: Sequence[TierInfo],
    profile_ids: Sequence[ProfileID],
    ingress: bool,
    chain_type: ChainType,
    allow_action: str,
    config: RulesConfig,
    failsafe_chain: str | None = None,
    drop_encap: bool = False,
) -> Chain:
    """One endpoint chain. ``ingress`` picks each tier's ingress policies and the ``pi``/
    ``pri`` chains, otherwise the egress ones and ``po``/``pro``. ``allow_action`` is the
    verdict for established flows (``-j ACCEPT``, or ``-j RETURN`` with the accept bit)."""
    accept, pass_ = config.mark_accept, config.mark_pass
    policy_prefix = POLICY_INBOUND_PREFIX if ingress else POLICY_OUTBOUND_PREFIX
    profile_prefix = PROFILE_INBOUND_PREFIX if ingress else PROFILE_OUTBOUND_PREFIX
    rules: list[Rule] = []

    if chain_type is not ChainType.UNTRACKED:
        established = m.conntrack("RELATED,ESTABLISHED")
        if allow_action != m.ACCEPT:
            # Returning instead of accepting: flag the packet as allowed for our caller.
            rules.append(Rule(match=established, action=m.set_mark(accept)))
        rules.append(Rule(match=established, action=allow_action))
        if not config.disable_conntrack_invalid_check:
            rules.append(Rule(match=m.conntrack("INVALID"), action=m.DROP))

    if failsafe_chain:
        rules.append(Rule(action=m.jump(failsafe_chain)))

    rules.append(Rule(action=m.clear_mark(accept | pass_)))

    if drop_encap:
        if not config.allow_vxlan_packets_from_workloads:
            rules.append(
                Rule(
                    match=m.join(m.protocol("udp"), m.ports([config.vxlan_port], "dst")),
                    action=m.DROP,
                    comment="Drop VXLAN encapped packets originating in workloads",
                )
            )
        if not config.allow_ipip_packets_from_workloads:
            rules.append(
                Rule(
                    match=m.protocol(str(PROTO_IPIP)),
                    action=m.DROP,
                    comment="Drop IPinIP encapped packets originating in workloads",
                )
            )

    any_policies = False
    for tier in tiers:
        policies = tier.ingress_policies if ingress else tier.egress_policies
        if not policies:
            continue
        any_policies = True
        rules.append(Rule(action=m.clear_mark(pass_), comment=f"Start of tier {tier.name}"))
        for policy_id in policies:
            target = policy_chain_name(policy_prefix, policy_id)
            rules.append(Rule(match=m.mark_clear(pass_), action=m.jump(target)))
            if chain_type is ChainType.UNTRACKED:
                # Untracked allow means "NOTRACK and allow".
                rules.append(Rule(match=m.mark_set(accept), action=m.NOTRACK))
            rules.append(
                Rule(
                    match=m.mark_set(accept),
                    action=m.RETURN,
                    comment="Return if policy accepted",
                )
            )
        ends_in_drop = chain_type in (ChainType.NORMAL, ChainType.FORWARD)
        if ends_in_drop and tier.default_action.lower() != "pass":
            # Untracked and pre-DNAT chains don't: the filter table still has its say.
            rules.append(
                Rule(
                    match=m.mark_clear(pass_),
                    action=m.DROP,
                    comment="Drop if no policies passed packet",
                )
            )

    if chain_type is ChainType.FORWARD and not any_policies:
        rules.append(Rule(action=m.set_mark(accept), comment="Allow forwarded traffic by default"))
        rules.append(Rule(action=m.RETURN, comment="Return for accepted forward traffic"))

    if chain_type is ChainType.NORMAL:
        for profile_id in profile_ids:
            rules.append(Rule(action=m.jump(profile_chain_name(profile_prefix, profile_id))))
            rules.append(
                Rule(
                    match=m.mark_set(accept),
                    action=m.RETURN,
                    comment="Return if profile accepted",
                )
            )
        rules.append(Rule(action=m.DROP, comment="Drop if no profiles matched"))

    return Chain(name=name, rules=tuple(rules))


def workload_endpoint_chains(
    endpoint: WorkloadEndpoint, config: RulesConfig
) -> tuple[Chain, Chain]:
    """``cali-tw-<iface>`` (to the workload) and ``cali-fw-<iface>`` (from it)."""
    iface = endpoint.interface_name
    allow = m.verdict(config.iptables_filter_allow_action)
    to_workload = endpoint_chain(
        name=endpoint_chain_name(WORKLOAD_TO_ENDPOINT_PREFIX, iface),
        tiers=endpoint.tiers,
        profile_ids=endpoint.profile_ids,
        ingress=True,
        chain_type=ChainType.NORMAL,
        allow_action=allow,
        config=config,
    )
    from_workload = endpoint_chain(
        name=endpoint_chain_name(WORKLOAD_FROM_ENDPOINT_PREFIX, iface),
        tiers=endpoint.tiers,
        profile_ids=endpoint.profile_ids,
        ingress=False,
        chain_type=ChainType.NORMAL,
        allow_action=allow,
        config=config,
        drop_encap=True,
    )
    return to_workload, from_workload


def host_endpoint_chains(
    endpoint: HostEndpoint, config: RulesConfig
) -> dict[str, tuple[Chain, ...]]:
    """The host endpoint's chains, per table (``filter``, ``raw``, ``mangle``).

    ``raw`` chains exist only with ``doNotTrack`` tiers, the mangle ``cali-fh-`` only with
    ``preDNAT`` tiers (the dispatch chains list only such endpoints there).
    """
    iface = host_endpoint_iface(endpoint.interface_name)
    filter_allow = m.verdict(config.iptables_filter_allow_action)

    def chain(
        prefix: str,
        tiers: Sequence[TierInfo],
        ingress: bool,
        chain_type: ChainType,
        allow_action: str,
        failsafe: str | None = None,
    ) -> Chain:
        with_profiles = chain_type is ChainType.NORMAL
        return endpoint_chain(
            name=endpoint_chain_name(prefix, iface),
            tiers=tiers,
            profile_ids=endpoint.profile_ids if with_profiles else (),
            ingress=ingress,
            chain_type=chain_type,
            allow_action=allow_action,
            config=config,
            failsafe_chain=failsafe,
        )

    normal, forward = ChainType.NORMAL, ChainType.FORWARD
    filter_chains = (
        chain(
            HOST_TO_ENDPOINT_PREFIX, endpoint.tiers, False, normal, filter_allow, CHAIN_FAILSAFE_OUT
        ),
        chain(
            HOST_FROM_ENDPOINT_PREFIX, endpoint.tiers, True, normal, filter_allow, CHAIN_FAILSAFE_IN
        ),
        chain(
            HOST_TO_ENDPOINT_FORWARD_PREFIX, endpoint.forward_tiers, False, forward, filter_allow
        ),
        chain(
            HOST_FROM_ENDPOINT_FORWARD_PREFIX, endpoint.forward_tiers, True, forward, filter_allow
        ),
    )

    raw_chains: tuple[Chain, ...] = ()
    if endpoint.untracked_tiers:
        untracked = ChainType.UNTRACKED
        raw_chains = (
            chain(
                HOST_TO_ENDPOINT_PREFIX,
                endpoint.untracked_tiers,
                False,
                untracked,
                m.ACCEPT,
                CHAIN_FAILSAFE_OUT,
            ),
            chain(
                HOST_FROM_ENDPOINT_PREFIX,
                endpoint.untracked_tiers,
                True,
                untracked,
                m.ACCEPT,
                CHAIN_FAILSAFE_IN,
            ),
        )

    # Normal egress policy for host traffic that was DNAT'd; RETURN rather than ACCEPT, since
    # the mangle table is used for packet changes that may have to apply to allowed traffic.
    mangle_chains: tuple[Chain, ...] = (
        chain(HOST_TO_ENDPOINT_PREFIX, endpoint.tiers, False, normal, m.RETURN, CHAIN_FAILSAFE_OUT),
    )
    if endpoint.pre_dnat_tiers:
        mangle_chains += (
            chain(
                HOST_FROM_ENDPOINT_PREFIX,
                endpoint.pre_dnat_tiers,
                True,
                ChainType.PRE_DNAT,
                m.verdict(config.mangle_allow_action),
                CHAIN_FAILSAFE_IN,
            ),
        )

    return {"filter": filter_chains, "raw": raw_chains, "mangle": mangle_chains}
