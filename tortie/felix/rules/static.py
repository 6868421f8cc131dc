"""The fixed chains and the hooks into the kernel chains (Calico's ``static.go``, ``nat.go``).

This module owns every chain whose contents depend only on configuration, per table:

- filter: ``cali-INPUT`` (workload traffic to ``cali-wl-to-host``, then host endpoint ingress),
  ``cali-wl-to-host`` (workload egress policy, then ``DefaultEndpointToHostAction``),
  ``cali-FORWARD`` (host endpoint forward policy and both workload dispatches; accepts what
  policy accepted), ``cali-OUTPUT`` (host → local workload is not policed, as in Calico;
  host endpoint egress otherwise) and the failsafe chains;
- nat: ``cali-PREROUTING``/``cali-OUTPUT`` (floating IP DNAT), ``cali-POSTROUTING`` (floating
  IP SNAT, ``cali-nat-outgoing``, and, with VXLAN, the fix-up of host-sourced tunnel traffic);
- raw: ``cali-PREROUTING`` (marks workload traffic, reverse-path check, untracked host endpoint
  policy), ``cali-OUTPUT`` (untracked egress policy) and raw failsafes;
- mangle: ``cali-PREROUTING`` (pre-DNAT policy), ``cali-POSTROUTING`` (normal host endpoint
  egress policy for DNAT'd host traffic) and mangle failsafes;

plus the chains that depend on pools or workloads but are as fixed in form:
``cali-nat-outgoing`` and ``cali-fip-dnat``/``cali-fip-snat``, and the kernel-chain insertions
(``-j cali-INPUT`` in ``INPUT`` and so on) for the table manager's ``set_rule_insertions``.

One difference from current Calico: the rules Calico appends to the end of the kernel
``FORWARD`` chain (accept what policy accepted, then mark the packet as forwarded so mangle
POSTROUTING skips host endpoint policy) end ``cali-FORWARD`` instead, as older Calico did;
the table manager only inserts into kernel chains.
"""

from __future__ import annotations

from collections.abc import Iterable

from tortie.felix.dataplane.iptables import Chain, Rule
from tortie.felix.proto import WorkloadEndpoint
from tortie.felix.rules import matches as m
from tortie.felix.rules.config import ProtoPort, RulesConfig
from tortie.felix.rules.names import (
    CHAIN_DISPATCH_FROM_HOST_ENDPOINT,
    CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD,
    CHAIN_DISPATCH_TO_HOST_ENDPOINT,
    CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD,
    CHAIN_FAILSAFE_IN,
    CHAIN_FAILSAFE_OUT,
    CHAIN_FILTER_FORWARD,
    CHAIN_FILTER_INPUT,
    CHAIN_FILTER_OUTPUT,
    CHAIN_FIP_DNAT,
    CHAIN_FIP_SNAT,
    CHAIN_FROM_WORKLOAD_DISPATCH,
    CHAIN_MANGLE_POSTROUTING,
    CHAIN_MANGLE_PREROUTING,
    CHAIN_NAT_OUTGOING,
    CHAIN_NAT_OUTPUT,
    CHAIN_NAT_POSTROUTING,
    CHAIN_NAT_PREROUTING,
    CHAIN_RAW_OUTPUT,
    CHAIN_RAW_PREROUTING,
    CHAIN_RPF_SKIP,
    CHAIN_TO_WORKLOAD_DISPATCH,
    CHAIN_WORKLOAD_TO_HOST,
    IPSET_ID_ALL_HOST_NETS,
    IPSET_ID_ALL_POOLS,
    IPSET_ID_ALL_VXLAN_SOURCE_NETS,
    IPSET_ID_MASQ_POOLS,
    ipset_name,
)

TABLES = ("filter", "nat", "raw", "mangle")
PROTO_IPIP = "4"
# ICMPv6 a workload needs to reach its router: MLD query/report/done, router and neighbour
# solicitation, neighbour advertisement (allowed before egress policy, as Calico does).
ICMPV6_ROUTER_TYPES = (130, 131, 132, 133, 135, 136)


def _workload_ifaces(config: RulesConfig) -> list[str]:
    return [prefix + "+" for prefix in config.workload_iface_prefixes]


def _vxlan_match(config: RulesConfig) -> str:
    return m.join(m.protocol("udp"), m.ports([config.vxlan_port], "dst"))


def _family_ok(net: str, config: RulesConfig) -> bool:
    return not net or (":" in net) == (config.ip_version == 6)


# --- failsafes ------------------------------------------------------------------------------


def _failsafe_rules(
    entries: Iterable[ProtoPort], config: RulesConfig, port_dir: str, net_dir: str
) -> list[Rule]:
    rules = []
    for entry in entries:
        if not _family_ok(entry.net, config):
            continue
        net = ""
        if entry.net:
            net = m.src_net(entry.net) if net_dir == "src" else m.dst_net(entry.net)
        match = m.join(m.protocol(entry.protocol), net, m.ports([entry.port], port_dir))
        rules.append(Rule(match=match, action=m.ACCEPT))
    return rules


def failsafe_in_chain(table: str, config: RulesConfig) -> Chain:
    """Inbound failsafe ports (to the host); raw also lets replies to outbound ones in."""
    rules = _failsafe_rules(config.failsafe_inbound_host_ports, config, "dst", "src")
    if table == "raw":
        # Before conntrack: untracked policy must not see half of a failsafe connection.
        rules += _failsafe_rules(config.failsafe_outbound_host_ports, config, "src", "src")
    return Chain(name=CHAIN_FAILSAFE_IN, rules=tuple(rules))


def failsafe_out_chain(table: str, config: RulesConfig) -> Chain:
    """Outbound failsafe ports (from the host); raw also lets replies to inbound ones out."""
    rules = _failsafe_rules(config.failsafe_outbound_host_ports, config, "dst", "dst")
    if table == "raw":
        rules += _failsafe_rules(config.failsafe_inbound_host_ports, config, "src", "dst")
    return Chain(name=CHAIN_FAILSAFE_OUT, rules=tuple(rules))


# --- filter ---------------------------------------------------------------------------------


def filter_input_chain(config: RulesConfig) -> Chain:
    allow = m.verdict(config.iptables_filter_allow_action)
    accept = config.mark_accept
    v4 = config.ip_version == 4
    family = "IPv4" if v4 else "IPv6"
    rules: list[Rule] = []
    if v4 and config.ipip_enabled:
        hosts = ipset_name(IPSET_ID_ALL_HOST_NETS, 4)
        rules += [
            Rule(
                match=m.join(m.protocol(PROTO_IPIP), m.ipset(hosts, "src"), m.addrtype_dst_local()),
                action=allow,
                comment="Allow IPIP packets from Calico hosts",
            ),
            Rule(
                match=m.protocol(PROTO_IPIP),
                action=m.DROP,
                comment="Drop IPIP packets from non-Calico hosts",
            ),
        ]
    if config.vxlan_enabled:
        sources = ipset_name(IPSET_ID_ALL_VXLAN_SOURCE_NETS, config.ip_version)
        rules += [
            Rule(
                match=m.join(_vxlan_match(config), m.ipset(sources, "src"), m.addrtype_dst_local()),
                action=allow,
                comment=f"Allow {family} VXLAN packets from allowed hosts",
            ),
            Rule(
                match=m.join(_vxlan_match(config), m.addrtype_dst_local()),
                action=m.DROP,
                comment=f"Drop {family} VXLAN packets from non-allowed hosts",
            ),
        ]
    rules += [
        Rule(match=m.in_iface(iface), action=m.goto(CHAIN_WORKLOAD_TO_HOST))
        for iface in _workload_ifaces(config)
    ]
    rules += [
        # Already accepted by untracked or pre-DNAT policy in raw or mangle.
        Rule(match=m.mark_set(accept), action=allow),
        Rule(action=m.clear_mark(config.all_marks)),
        Rule(action=m.jump(CHAIN_DISPATCH_FROM_HOST_ENDPOINT)),
        Rule(
            match=m.mark_set(accept), action=allow, comment="Host endpoint policy accepted packet."
        ),
    ]
    return Chain(name=CHAIN_FILTER_INPUT, rules=tuple(rules))


def workload_to_host_chain(config: RulesConfig) -> Chain:
    allow = m.verdict(config.iptables_filter_allow_action)
    rules: list[Rule] = []
    if config.ip_version == 6:
        rules += [
            Rule(
                match=m.join(m.protocol("ipv6-icmp"), m.icmp(6, icmp_type, None)),
                action=allow,
            )
            for icmp_type in ICMPV6_ROUTER_TYPES
        ]
    rules += [
        Rule(action=m.jump(CHAIN_FROM_WORKLOAD_DISPATCH)),
        # Reached only if the workload's egress policy allowed the packet.
        Rule(
            action=m.verdict(config.default_endpoint_to_host_action),
            comment="Configured DefaultEndpointToHostAction",
        ),
    ]
    return Chain(name=CHAIN_WORKLOAD_TO_HOST, rules=tuple(rules))


def filter_forward_chain(config: RulesConfig) -> Chain:
    allow = m.verdict(config.iptables_filter_allow_action)
    accept = config.mark_accept
    rules: list[Rule] = [
        # Keep the accept bit: raw/pre-DNAT policy may have set it.
        Rule(action=m.clear_mark(config.all_marks & ~accept)),
        Rule(match=m.mark_clear(accept), action=m.jump(CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD)),
    ]
    for iface in _workload_ifaces(config):
        rules += [
            Rule(match=m.in_iface(iface), action=m.jump(CHAIN_FROM_WORKLOAD_DISPATCH)),
            Rule(match=m.out_iface(iface), action=m.jump(CHAIN_TO_WORKLOAD_DISPATCH)),
        ]
    rules += [
        Rule(action=m.jump(CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD)),
        Rule(match=m.mark_set(accept), action=allow, comment="Policy explicitly accepted packet."),
        # Forwarded, so mangle POSTROUTING must not apply host endpoint egress policy to it.
        Rule(action=m.set_mark(accept)),
    ]
    return Chain(name=CHAIN_FILTER_FORWARD, rules=tuple(rules))


def filter_output_chain(config: RulesConfig) -> Chain:
    allow = m.verdict(config.iptables_filter_allow_action)
    accept = config.mark_accept
    v4 = config.ip_version == 4
    rules: list[Rule] = [Rule(match=m.mark_set(accept), action=allow)]
    # Host → local workload is not policed (Calico's pragmatic choice: a compromised host
    # could remove the rules anyway).
    rules += [Rule(match=m.out_iface(iface), action=m.RETURN) for iface in _workload_ifaces(config)]
    if v4 and config.ipip_enabled:
        hosts = ipset_name(IPSET_ID_ALL_HOST_NETS, 4)
        rules.append(
            Rule(
                match=m.join(m.protocol(PROTO_IPIP), m.ipset(hosts, "dst"), m.addrtype_src_local()),
                action=allow,
                comment="Allow IPIP packets to other Calico hosts",
            )
        )
    if config.vxlan_enabled:
        sources = ipset_name(IPSET_ID_ALL_VXLAN_SOURCE_NETS, config.ip_version)
        family = "IPv4" if v4 else "IPv6"
        rules.append(
            Rule(
                match=m.join(_vxlan_match(config), m.addrtype_src_local(), m.ipset(sources, "dst")),
                action=allow,
                comment=f"Allow {family} VXLAN packets to other allowed hosts",
            )
        )
    rules += [
        Rule(action=m.clear_mark(config.all_marks)),
        # DNAT'd host traffic is policed in mangle POSTROUTING, once it has been re-routed.
        Rule(
            match=m.conntrack("DNAT", negate=True), action=m.jump(CHAIN_DISPATCH_TO_HOST_ENDPOINT)
        ),
        Rule(
            match=m.mark_set(accept), action=allow, comment="Host endpoint policy accepted packet."
        ),
    ]
    return Chain(name=CHAIN_FILTER_OUTPUT, rules=tuple(rules))


# --- nat ------------------------------------------------------------------------------------


def nat_chains(config: RulesConfig) -> list[Chain]:
    postrouting = [
        Rule(action=m.jump(CHAIN_FIP_SNAT)),
        Rule(action=m.jump(CHAIN_NAT_OUTGOING)),
    ]
    if config.vxlan_enabled:
        # Host traffic leaving through the tunnel with another local address as source gets
        # the tunnel's address instead (explicit binds, NAT'd service traffic).
        tunnel = "vxlan.calico" if config.ip_version == 4 else "vxlan-v6.calico"
        postrouting.append(
            Rule(
                match=m.join(
                    m.out_iface(tunnel),
                    "-m addrtype ! --src-type LOCAL --limit-iface-out",
                    m.addrtype_src_local(),
                ),
                action=m.MASQUERADE,
            )
        )
    return [
        Chain(name=CHAIN_NAT_PREROUTING, rules=(Rule(action=m.jump(CHAIN_FIP_DNAT)),)),
        Chain(name=CHAIN_NAT_POSTROUTING, rules=tuple(postrouting)),
        Chain(name=CHAIN_NAT_OUTPUT, rules=(Rule(action=m.jump(CHAIN_FIP_DNAT)),)),
    ]


def nat_outgoing_chain(active: bool, config: RulesConfig) -> Chain:
    """``cali-nat-outgoing``: masquerade from natOutgoing pools to outside all pools."""
    if not active:
        return Chain(name=CHAIN_NAT_OUTGOING)
    if config.nat_outgoing_address:
        action = f"-j SNAT --to-source {config.nat_outgoing_address}"
    else:
        action = m.MASQUERADE
    if config.nat_outgoing_random_fully:
        action += " --random-fully"
    match = m.join(
        m.ipset(ipset_name(IPSET_ID_MASQ_POOLS, config.ip_version), "src"),
        m.ipset(ipset_name(IPSET_ID_ALL_POOLS, config.ip_version), "dst", negate=True),
    )
    return Chain(name=CHAIN_NAT_OUTGOING, rules=(Rule(match=match, action=action),))


def floating_ip_chains(
    workloads: Iterable[WorkloadEndpoint], config: RulesConfig
) -> tuple[Chain, Chain]:
    """``cali-fip-dnat`` / ``cali-fip-snat`` from the workloads' 1:1 NAT mappings (IPv4)."""
    pairs: dict[str, str] = {}  # external → internal
    if config.ip_version == 4:
        for ep in workloads:
            for internal, external in ep.ipv4_nat:
                pairs[external] = internal
    dnat = tuple(
        Rule(match=m.dst_net(ext), action=f"-j DNAT --to-destination {pairs[ext]}")
        for ext in sorted(pairs)
    )
    by_internal = {internal: external for external, internal in pairs.items()}
    snat = tuple(
        Rule(
            match=m.join(m.src_net(internal), m.dst_net(internal)),
            action=f"-j SNAT --to-source {by_internal[internal]}",
        )
        for internal in sorted(by_internal)
    )
    return Chain(name=CHAIN_FIP_DNAT, rules=dnat), Chain(name=CHAIN_FIP_SNAT, rules=snat)


# --- raw ------------------------------------------------------------------------------------


def raw_prerouting_chain(config: RulesConfig) -> Chain:
    from_workload = config.mark_scratch0
    rules: list[Rule] = [
        # Start clean: in append mode another program's rules may have run first.
        Rule(action=m.clear_mark(config.all_marks)),
    ]
    if config.vxlan_enabled:
        # VXLAN uses different source ports each way; tracking would leave unreplied flows.
        rules.append(Rule(match=_vxlan_match(config), action=m.NOTRACK))
    rules += [
        Rule(match=m.in_iface(iface), action=m.set_mark(from_workload))
        for iface in _workload_ifaces(config)
    ]
    rules.append(Rule(match=m.mark_set(from_workload), action=m.jump(CHAIN_RPF_SKIP)))
    if config.workload_rpf_check:
        # Strict reverse-path check: a workload may only send from addresses routed to it.
        rules.append(
            Rule(
                match=m.join(m.mark_set(from_workload), "-m rpfilter --validmark --invert"),
                action=m.DROP,
            )
        )
    rules += [
        Rule(match=m.mark_clear(from_workload), action=m.jump(CHAIN_DISPATCH_FROM_HOST_ENDPOINT)),
        Rule(match=m.mark_set(config.mark_accept), action=m.ACCEPT),
    ]
    return Chain(name=CHAIN_RAW_PREROUTING, rules=tuple(rules))


def raw_output_chain(config: RulesConfig) -> Chain:
    rules = [
        Rule(action=m.clear_mark(config.all_marks)),
        Rule(action=m.jump(CHAIN_DISPATCH_TO_HOST_ENDPOINT)),
    ]
    if config.vxlan_enabled:
        rules.append(Rule(match=_vxlan_match(config), action=m.NOTRACK))
    rules.append(Rule(match=m.mark_set(config.mark_accept), action=m.ACCEPT))
    return Chain(name=CHAIN_RAW_OUTPUT, rules=tuple(rules))


# --- mangle ---------------------------------------------------------------------------------


def mangle_prerouting_chain(config: RulesConfig) -> Chain:
    allow = m.verdict(config.mangle_allow_action)
    accept = config.mark_accept
    rules = (
        Rule(match=m.conntrack("RELATED,ESTABLISHED"), action=allow),
        Rule(match=m.mark_set(accept), action=allow),  # accepted by untracked policy in raw
        Rule(action=m.jump(CHAIN_DISPATCH_FROM_HOST_ENDPOINT)),
        Rule(
            match=m.mark_set(accept), action=allow, comment="Host endpoint policy accepted packet."
        ),
    )
    return Chain(name=CHAIN_MANGLE_PREROUTING, rules=rules)


def mangle_postrouting_chain(config: RulesConfig) -> Chain:
    accept = config.mark_accept
    rules = (
        # cali-FORWARD marks forwarded traffic: no host endpoint (non-forward) policy for it.
        Rule(match=m.mark_set(accept), action=m.RETURN),
        Rule(action=m.clear_mark(config.all_marks)),
        Rule(match=m.conntrack("DNAT"), action=m.jump(CHAIN_DISPATCH_TO_HOST_ENDPOINT)),
        Rule(
            match=m.mark_set(accept),
            action=m.RETURN,
            comment="Host endpoint policy accepted packet.",
        ),
    )
    return Chain(name=CHAIN_MANGLE_POSTROUTING, rules=rules)


# --- per table ------------------------------------------------------------------------------


def static_chains(table: str, config: RulesConfig) -> tuple[Chain, ...]:
    """The fixed chains of ``table``."""
    if table == "filter":
        return (
            filter_input_chain(config),
            workload_to_host_chain(config),
            failsafe_in_chain(table, config),
            filter_forward_chain(config),
            filter_output_chain(config),
            failsafe_out_chain(table, config),
        )
    if table == "nat":
        return tuple(nat_chains(config))
    if table == "raw":
        return (
            raw_prerouting_chain(config),
            raw_output_chain(config),
            failsafe_in_chain(table, config),
            failsafe_out_chain(table, config),
        )
    if table == "mangle":
        return (
            mangle_prerouting_chain(config),
            mangle_postrouting_chain(config),
            failsafe_in_chain(table, config),
            failsafe_out_chain(table, config),
        )
    raise ValueError(f"unknown table {table!r}")


_HOOKS: dict[str, dict[str, str]] = {
    "filter": {
        "INPUT": CHAIN_FILTER_INPUT,
        "FORWARD": CHAIN_FILTER_FORWARD,
        "OUTPUT": CHAIN_FILTER_OUTPUT,
    },
    "nat": {
        "PREROUTING": CHAIN_NAT_PREROUTING,
        "POSTROUTING": CHAIN_NAT_POSTROUTING,
        "OUTPUT": CHAIN_NAT_OUTPUT,
    },
    "raw": {"PREROUTING": CHAIN_RAW_PREROUTING, "OUTPUT": CHAIN_RAW_OUTPUT},
    "mangle": {"PREROUTING": CHAIN_MANGLE_PREROUTING, "POSTROUTING": CHAIN_MANGLE_POSTROUTING},
}


def insertions(table: str) -> dict[str, tuple[Rule, ...]]:
    """Kernel chain → the rules Felix puts there (``-j cali-INPUT`` in ``INPUT``, …)."""
    if table not in _HOOKS:
        raise ValueError(f"unknown table {table!r}")
    return {kernel: (Rule(action=m.jump(ours)),) for kernel, ours in _HOOKS[table].items()}
