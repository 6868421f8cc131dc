"""Policy and profile rules → iptables rules (Calico's ``felix/rules/policy.go``).

This module owns the translation of one :class:`~tortie.felix.proto.ParsedRule` into
iptables rules, and of a policy or profile into its two chains (``cali-pi-``/``cali-po-``,
``cali-pri-``/``cali-pro-``).

Verdicts travel back to the endpoint chain in the mark: *allow* sets the accept bit and
returns, *pass* sets the pass bit and returns, *deny* drops, *log* logs and goes on.

Within a rule, the alternatives of one field are OR'ed and the fields are AND'ed. iptables can
express most of that in one rule, but not all: one rule holds at most one ``-s`` and one
``-d``, and one ``multiport`` match holds at most 15 port slots (a range takes two), while
named ports (``ip,port`` IP sets) are OR'ed with numeric ports. Rules that need more are
rendered as *match blocks* over two scratch mark bits, as Calico does:

- an initial rule resets the bits (scratch0 = "every block so far matched");
- each positive OR-group that does not fit is a block: one rule per alternative sets a bit;
  the first such block writes scratch0 directly, later ones write scratch1 (cleared first)
  and then fold it in with ``-m mark --mark 0/<scratch1> → clear scratch0``;
- each negated CIDR that does not fit clears scratch0 when it matches;
- the final rule requires scratch0 together with the matches that did fit, and acts.

When exactly one field overflows and nothing else needs the bits, the rule is instead emitted
once per alternative (cheaper: no block rules), unless the action is *log*, which must not
log a packet twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from tortie.felix.dataplane.iptables import Chain, Rule
from tortie.felix.proto import ParsedRule, Policy, PolicyID, PortRange, Profile, ProfileID
from tortie.felix.rules import matches as m
from tortie.felix.rules.config import RulesConfig
from tortie.felix.rules.names import (
    POLICY_INBOUND_PREFIX,
    POLICY_OUTBOUND_PREFIX,
    PROFILE_INBOUND_PREFIX,
    PROFILE_OUTBOUND_PREFIX,
    ipset_name,
    policy_chain_name,
    profile_chain_name,
)

MAX_MULTIPORT_SLOTS = 15

_PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132}
_PROTOCOL_NUMBERS["udplite"] = 136

# The order of the matches inside a rule (Calico's CalculateRuleMatch order).
(
    _PROTO,
    _SRC_NET,
    _SRC_SETS,
    _SRC_PORTS,
    _SRC_NAMED,
    _DST_NET,
    _DST_SETS,
    _DST_PORTS,
    _DST_NAMED,
    _ICMP,
    _NOT_PROTO,
    _NOT_SRC_NET,
    _NOT_SRC_SETS,
    _NOT_SRC_PORTS,
    _NOT_SRC_NAMED,
    _NOT_DST_NET,
    _NOT_DST_SETS,
    _NOT_DST_PORTS,
    _NOT_DST_NAMED,
    _NOT_ICMP,
    _MARK,
) = range(21)


# --- IP version filtering -------------------------------------------------------------------


def _catch_all(cidr: str, ip_version: int) -> bool:
    return cidr == ("0.0.0.0/0" if ip_version == 4 else "::/0")


def _filter_nets(
    nets: tuple[str, ...], ip_version: int, negated: bool
) -> tuple[tuple[str, ...], bool]:
    """(nets of this family, whether the whole rule must go)."""
    if not nets:
        return (), False
    want_v6 = ip_version == 6
    kept = tuple(n for n in nets if (":" in n) == want_v6)
    if negated and any(_catch_all(n, ip_version) for n in kept):
        return (), True  # "not anywhere" can never match
    return kept, not kept


def filter_rule_to_ip_version(rule: ParsedRule, ip_version: int) -> ParsedRule | None:
    """The rule restricted to one IP family, or None if it cannot apply to that family.

    As Calico's ``FilterRuleToIPVersion``: a rule for the other version goes; nets of the
    other family are dropped, and a rule goes when a nets list loses all its entries (so
    "from 10.0.0.1 or feed::1" renders in both families, "from 10.0.0.1" only in IPv4).
    A negated catch-all net (``!0.0.0.0/0``) can never match, so its rule goes too. And since
    iptables allows one ``-p`` per rule, ``protocol`` with ``notProtocol`` keeps just the
    former, or goes when the two are the same protocol.
    """
    if rule.ip_version is not None and rule.ip_version != ip_version:
        return None
    fields: dict[str, object] = {}
    for attr, negated in (
        ("src_nets", False),
        ("not_src_nets", True),
        ("dst_nets", False),
        ("not_dst_nets", True),
    ):
        kept, drop = _filter_nets(getattr(rule, attr), ip_version, negated)
        if drop:
            return None
        fields[attr] = kept
    if rule.protocol and rule.not_protocol:
        # iptables takes one -p per rule; "tcp and not udp" is just "tcp".
        if _protocol_number(rule.protocol) == _protocol_number(rule.not_protocol):
            return None
        fields["not_protocol"] = None
    return replace(rule, **fields)  # type: ignore[arg-type]


def _protocol_number(name: str) -> int | str:
    lowered = name.lower()
    if lowered.isdigit():
        return int(lowered)
    return _PROTOCOL_NUMBERS.get(lowered, lowered)


def split_port_list(ports: Sequence[PortRange]) -> list[tuple[PortRange, ...]]:
    """Split ports into groups that each fit one ``multiport`` match (15 slots, range = 2)."""
    splits: list[tuple[PortRange, ...]] = []
    current: list[PortRange] = []
    free = MAX_MULTIPORT_SLOTS
    for port in ports:
        need = 1 if port.first == port.last else 2
        if need > free:
            splits.append(tuple(current))
            current, free = [], MAX_MULTIPORT_SLOTS
        current.append(port)
        free -= need
    if current:
        splits.append(tuple(current))
    return splits


# --- one rule -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Alternative:
    slot: int
    fragment: str
    needs_protocol: bool  # numeric ports need "-p tcp" in a block rule of their own


class _Match:
    """The fragments of one iptables match, kept in Calico's order."""

    def __init__(self) -> None:
        self.slots: dict[int, list[str]] = {}

    def add(self, slot: int, fragment: str) -> None:
        self.slots.setdefault(slot, []).append(fragment)

    def has(self, slot: int) -> bool:
        return slot in self.slots

    def render(self, extra: Iterable[tuple[int, str]] = ()) -> str:
        items = [(slot, f) for slot, frags in self.slots.items() for f in frags]
        items.extend(extra)
        items.sort(key=lambda item: item[0])  # stable: keeps insertion order within a slot
        return m.join(*(f for _, f in items))


def _verdict_rules(action: str, match: str, config: RulesConfig, comment: str | None) -> list[Rule]:
    """The rules that apply ``action`` to packets matching ``match``."""
    if action == "allow":
        return [
            Rule(match=match, action=m.set_mark(config.mark_accept), comment=comment),
            Rule(match=m.mark_set(config.mark_accept), action=m.RETURN, comment=comment),
        ]
    if action in ("pass", "next-tier"):
        return [
            Rule(match=match, action=m.set_mark(config.mark_pass), comment=comment),
            Rule(match=m.mark_set(config.mark_pass), action=m.RETURN, comment=comment),
        ]
    if action == "deny":
        return [Rule(match=match, action=m.DROP, comment=comment)]
    if action == "log":
        return [Rule(match=match, action=m.log(config.log_prefix), comment=comment)]
    raise ValueError(f"unknown rule action {action!r}")


def rule_to_iptables(
    rule: ParsedRule, config: RulesConfig, comment: str | None = None
) -> list[Rule]:
    """Render one rule; ``[]`` if it never matches or is for the other IP version."""
    filtered = filter_rule_to_ip_version(rule, config.ip_version)
    if filtered is None or filtered.never_matches:
        return []
    r = filtered
    version = config.ip_version
    action = r.action.lower()

    inline = _Match()
    groups: list[list[_Alternative]] = []  # positive OR-groups that need a block
    negated_nets: list[str] = []  # negated CIDRs that need a block (each clears scratch0)

    if r.protocol:
        inline.add(_PROTO, m.protocol(r.protocol))

    # Positive ports: numeric splits and named ports are alternatives of one field.
    for direction, port_list, named, port_slot, named_slot in (
        ("src", r.src_ports, r.src_named_port_ipset_ids, _SRC_PORTS, _SRC_NAMED),
        ("dst", r.dst_ports, r.dst_named_port_ipset_ids, _DST_PORTS, _DST_NAMED),
    ):
        alternatives = [
            _Alternative(port_slot, m.ports(split, direction), True)
            for split in split_port_list(port_list)
        ] + [
            _Alternative(
                named_slot, m.ipset(ipset_name(i, version), f"{direction},{direction}"), False
            )
            for i in named
        ]
        if len(alternatives) > 1:
            groups.append(alternatives)
        elif alternatives:
            inline.add(alternatives[0].slot, alternatives[0].fragment)

    # Positive nets: one fits the rule, more need a block.
    for nets, slot, frag in (
        (r.src_nets, _SRC_NET, m.src_net),
        (r.dst_nets, _DST_NET, m.dst_net),
    ):
        if len(nets) > 1:
            groups.append([_Alternative(slot, frag(n), False) for n in nets])
        elif nets:
            inline.add(slot, frag(nets[0]))

    # Negated nets: only one -s/-d fits a rule, positive or negated.
    for not_nets, pos_slot, neg_slot, frag in (
        (r.not_src_nets, _SRC_NET, _NOT_SRC_NET, m.src_net),
        (r.not_dst_nets, _DST_NET, _NOT_DST_NET, m.dst_net),
    ):
        if int(inline.has(pos_slot)) + len(not_nets) > 1:
            negated_nets.extend(frag(n) for n in not_nets)
        elif not_nets:
            inline.add(neg_slot, frag(not_nets[0], negate=True))

    # Everything else always fits.
    for i in r.src_ipset_ids:
        inline.add(_SRC_SETS, m.ipset(ipset_name(i, version), "src"))
    for i in r.dst_ipset_ids:
        inline.add(_DST_SETS, m.ipset(ipset_name(i, version), "dst"))
    if r.icmp is not None:
        inline.add(_ICMP, m.icmp(version, r.icmp.type, r.icmp.code))
    if r.not_protocol:
        inline.add(_NOT_PROTO, m.protocol(r.not_protocol, negate=True))
    for i in r.not_src_ipset_ids:
        inline.add(_NOT_SRC_SETS, m.ipset(ipset_name(i, version), "src", negate=True))
    for split in split_port_list(r.not_src_ports):  # "in none of the splits": AND of negations
        inline.add(_NOT_SRC_PORTS, m.ports(split, "src", negate=True))
    for i in r.not_src_named_port_ipset_ids:
        inline.add(_NOT_SRC_NAMED, m.ipset(ipset_name(i, version), "src,src", negate=True))
    for i in r.not_dst_ipset_ids:
        inline.add(_NOT_DST_SETS, m.ipset(ipset_name(i, version), "dst", negate=True))
    for split in split_port_list(r.not_dst_ports):
        inline.add(_NOT_DST_PORTS, m.ports(split, "dst", negate=True))
    for i in r.not_dst_named_port_ipset_ids:
        inline.add(_NOT_DST_NAMED, m.ipset(ipset_name(i, version), "dst,dst", negate=True))
    if r.not_icmp is not None:
        inline.add(_NOT_ICMP, m.icmp(version, r.not_icmp.type, r.not_icmp.code, negate=True))

    if not groups and not negated_nets:
        return _verdict_rules(action, inline.render(), config, comment)

    if len(groups) == 1 and not negated_nets and action != "log":
        alternatives = groups[0]
        clash = (alternatives[0].slot == _SRC_NET and inline.has(_NOT_SRC_NET)) or (
            alternatives[0].slot == _DST_NET and inline.has(_NOT_DST_NET)
        )
        if not clash:
            return _one_rule_per_alternative(action, inline, alternatives, config, comment)

    return _match_block_rules(action, inline, groups, negated_nets, r.protocol, config, comment)


def _one_rule_per_alternative(
    action: str,
    inline: _Match,
    alternatives: list[_Alternative],
    config: RulesConfig,
    comment: str | None,
) -> list[Rule]:
    # The verdict's first rule carries the match; for allow/pass, one shared RETURN follows.
    rules = [
        _verdict_rules(action, inline.render([(alt.slot, alt.fragment)]), config, comment)[0]
        for alt in alternatives
    ]
    rules.extend(_verdict_rules(action, "", config, comment)[1:])
    return rules


def _match_block_rules(
    action: str,
    inline: _Match,
    groups: list[list[_Alternative]],
    negated_nets: list[str],
    protocol: str | None,
    config: RulesConfig,
    comment: str | None,
) -> list[Rule]:
    all_pass, this_pass = config.mark_scratch0, config.mark_scratch1
    both = all_pass | this_pass
    proto = m.protocol(protocol) if protocol else ""

    # Positive blocks first, so the first one can write "all blocks pass" directly.
    initial = m.set_masked_mark(0 if groups else all_pass, both)
    rules = [Rule(action=initial, comment=comment)]
    scratch1_dirty = False
    for index, alternatives in enumerate(groups):
        target = all_pass if index == 0 else this_pass
        if index > 0 and scratch1_dirty:
            rules.append(Rule(action=m.clear_mark(this_pass), comment=comment))
        for alt in alternatives:
            match = m.join(proto, alt.fragment) if alt.needs_protocol else alt.fragment
            rules.append(Rule(match=match, action=m.set_mark(target), comment=comment))
        if index > 0:
            # all_pass &&= this_pass
            rules.append(
                Rule(match=m.mark_clear(this_pass), action=m.clear_mark(all_pass), comment=comment)
            )
            scratch1_dirty = True
    for net in negated_nets:
        rules.append(Rule(match=net, action=m.clear_mark(all_pass), comment=comment))

    final = inline.render([(_MARK, m.mark_set(all_pass))])
    rules.extend(_verdict_rules(action, final, config, comment))
    return rules


# --- chains ---------------------------------------------------------------------------------


def rules_to_iptables(
    rules: Iterable[ParsedRule], config: RulesConfig, label: str
) -> tuple[Rule, ...]:
    """Render a rule list; each rule's comment is ``<label> rule <index>``.

    Trailing RETURN rules are dropped: at the end of a chain they change nothing.
    """
    out: list[Rule] = []
    for index, rule in enumerate(rules):
        out.extend(rule_to_iptables(rule, config, f"{label} rule {index}"))
    while out and out[-1].action == m.RETURN:
        out.pop()
    return tuple(out)


def policy_chains(policy_id: PolicyID, policy: Policy, config: RulesConfig) -> tuple[Chain, Chain]:
    """The policy's inbound (``cali-pi-``) and outbound (``cali-po-``) chains."""
    return (
        Chain(
            name=policy_chain_name(POLICY_INBOUND_PREFIX, policy_id),
            rules=rules_to_iptables(policy.inbound_rules, config, f"Policy {policy_id} ingress"),
        ),
        Chain(
            name=policy_chain_name(POLICY_OUTBOUND_PREFIX, policy_id),
            rules=rules_to_iptables(policy.outbound_rules, config, f"Policy {policy_id} egress"),
        ),
    )


def profile_chains(
    profile_id: ProfileID, profile: Profile, config: RulesConfig
) -> tuple[Chain, Chain]:
    """The profile's inbound (``cali-pri-``) and outbound (``cali-pro-``) chains."""
    name = profile_id.name
    return (
        Chain(
            name=profile_chain_name(PROFILE_INBOUND_PREFIX, profile_id),
            rules=rules_to_iptables(profile.inbound_rules, config, f"Profile {name} ingress"),
        ),
        Chain(
            name=profile_chain_name(PROFILE_OUTBOUND_PREFIX, profile_id),
            rules=rules_to_iptables(profile.outbound_rules, config, f"Profile {name} egress"),
        ),
    )
