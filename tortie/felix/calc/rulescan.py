"""The rule scanner: v3 API rules → ``ParsedRule`` plus the IP sets they need.

Every selector a rule uses (``selector`` combined with ``namespaceSelector`` and
``serviceAccounts``, ``notSelector``, and each named port) becomes an IP set whose ID is
derived from the selector's canonical form, so identical selectors across policies share one
set. Namespace semantics follow Calico:

- In a namespaced policy, a rule ``selector`` without ``namespaceSelector`` only matches
  endpoints in the policy's namespace.
- ``namespaceSelector`` matches namespace labels, which endpoints inherit with the ``pcns.``
  prefix (from their ``kns.<namespace>`` profile); ``all()`` means "any namespaced endpoint"
  and ``global()`` means "anything not namespaced" (host endpoints, global network sets).
- ``serviceAccounts.names`` match ``projectcalico.org/serviceaccount``;
  ``serviceAccounts.selector`` matches service-account labels (prefix ``pcsa.``).

Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tortie.felix.proto import ICMPMatch, IPSetType, ParsedRule, PortRange
from tortie.selector import ALL, NAMESPACE_LABEL, Selector, parse_cached
from tortie.selector.ast import (
    All,
    And,
    Global,
    Has,
    LabelSetNode,
    LabelValueNode,
    Node,
    Not,
    Or,
)

if TYPE_CHECKING:
    from tortie.api.kinds.policy import EntityRule, Rule

NAMESPACE_PREFIX = "pcns."
SERVICE_ACCOUNT_PREFIX = "pcsa."
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"

PROTOCOLS = {
    "TCP": "tcp",
    "UDP": "udp",
    "ICMP": "icmp",
    "ICMPv6": "ipv6-icmp",
    "SCTP": "sctp",
    "UDPLite": "udplite",
}


@dataclass(frozen=True, slots=True)
class IPSetSpec:
    """An IP set a rule needs: members are the addresses (or ip,proto:port for named ports)
    of every endpoint/network set that ``selector`` matches."""

    id: str
    type: IPSetType
    selector: Selector
    protocol: str | None = None  # named ports only
    port_name: str | None = None


def prefix_keys(node: Node, prefix: str) -> Node:
    """The same expression over ``prefix + key`` labels (namespace/service-account labels).

    ``all()`` becomes "has a namespace" and ``global()`` "has no namespace", as Calico
    interprets them inside a namespaceSelector.
    """
    if isinstance(node, LabelValueNode | LabelSetNode | Has):
        return replace(node, key=prefix + node.key)
    if isinstance(node, Not):
        return Not(prefix_keys(node.operand, prefix))
    if isinstance(node, And):
        return And(tuple(prefix_keys(o, prefix) for o in node.operands))
    if isinstance(node, Or):
        return Or(tuple(prefix_keys(o, prefix) for o in node.operands))
    if isinstance(node, All):
        return Has(NAMESPACE_LABEL)
    if isinstance(node, Global):
        return Not(Has(NAMESPACE_LABEL))
    raise TypeError(f"unexpected selector node {node!r}")


def and_selectors(*parts: Node | None) -> Selector | None:
    nodes = [p for p in parts if p is not None and not isinstance(p, All)]
    if not nodes:
        return ALL if any(p is not None for p in parts) else None
    if len(nodes) == 1:
        return Selector(nodes[0])
    flat: list[Node] = []
    for n in nodes:
        flat.extend(n.operands if isinstance(n, And) else (n,))
    return Selector(And(tuple(flat)))


def namespace_node(namespace: str) -> Node:
    return parse_cached(f'{NAMESPACE_LABEL} == "{namespace}"').root


def entity_selector(entity: EntityRule, namespace: str | None) -> Selector | None:
    """The combined positive selector of one side of a rule (None: no selector at all)."""
    sel = parse_cached(entity.selector).root if entity.selector else None
    ns_sel: Node | None = None
    if entity.namespace_selector:
        ns_sel = prefix_keys(parse_cached(entity.namespace_selector).root, NAMESPACE_PREFIX)
    sa_parts: list[Node] = []
    sa = entity.service_accounts
    if sa is not None:
        if sa.names:
            names = ", ".join(f'"{n}"' for n in sa.names)
            sa_parts.append(parse_cached(f"{SERVICE_ACCOUNT_LABEL} in {{{names}}}").root)
        if sa.selector:
            sa_parts.append(prefix_keys(parse_cached(sa.selector).root, SERVICE_ACCOUNT_PREFIX))
    if sel is None and ns_sel is None and not sa_parts:
        return None
    if namespace is not None and ns_sel is None:
        ns_sel = namespace_node(namespace)
    return and_selectors(sel if sel is not None else All(), ns_sel, *sa_parts)


def _hash_id(prefix: str, text: str) -> str:
    digest = hashlib.sha224(text.encode()).digest()
    return prefix + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def named_port_set(selector: Selector, protocol: str, port_name: str) -> IPSetSpec:
    set_id = _hash_id("n:", f"{selector}|{protocol}|{port_name}")
    return IPSetSpec(set_id, IPSetType.IP_PORT, selector, protocol, port_name)


def selector_set(selector: Selector) -> IPSetSpec:
    return IPSetSpec(selector.unique_id, IPSetType.NET, selector)


def parse_protocol(value: int | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, int):
        return str(value)
    return PROTOCOLS.get(value, value.lower())


def split_ports(ports: list[int | str] | None) -> tuple[tuple[PortRange, ...], tuple[str, ...]]:
    """Numeric ports and ranges, and named ports."""
    numeric: list[PortRange] = []
    named: list[str] = []
    for p in ports or ():
        if isinstance(p, int):
            numeric.append(PortRange(p, p))
        elif ":" in p:
            a, b = p.split(":", 1)
            numeric.append(PortRange(int(a), int(b)))
        elif p.isdigit():
            numeric.append(PortRange(int(p), int(p)))
        else:
            named.append(p)
    return tuple(numeric), tuple(named)


def _icmp(fields: object) -> ICMPMatch | None:
    if fields is None or getattr(fields, "type", None) is None:
        return None
    return ICMPMatch(fields.type, getattr(fields, "code", None))  # type: ignore[attr-defined]


def scan_rule(
    rule: Rule, namespace: str | None, sets: dict[str, IPSetSpec], rule_id: str = ""
) -> ParsedRule:
    """One API rule → ParsedRule; the IP sets it needs are added to ``sets``."""
    protocol = parse_protocol(rule.protocol)
    sides: dict[str, dict[str, object]] = {}
    for side, entity in (("src", rule.source), ("dst", rule.destination)):
        out: dict[str, object] = {}
        if entity is None:
            sides[side] = out
            continue
        out["nets"] = tuple(entity.nets or ())
        out["not_nets"] = tuple(entity.not_nets or ())
        ports, named = split_ports(entity.ports)
        not_ports, not_named = split_ports(entity.not_ports)
        out["ports"], out["not_ports"] = ports, not_ports
        sel = entity_selector(entity, namespace)
        if sel is not None:
            spec = selector_set(sel)
            sets[spec.id] = spec
            out["ipset_ids"] = (spec.id,)
        if entity.not_selector:
            not_sel = parse_cached(entity.not_selector)
            spec = selector_set(not_sel)
            sets[spec.id] = spec
            out["not_ipset_ids"] = (spec.id,)
        for key, names in (
            ("named_port_ipset_ids", named),
            ("not_named_port_ipset_ids", not_named),
        ):
            ids = []
            for name in names:
                spec = named_port_set(sel or ALL, protocol or "tcp", name)
                sets[spec.id] = spec
                ids.append(spec.id)
            out[key] = tuple(ids)
        sides[side] = out
    fields: dict[str, object] = {}
    for side, out in sides.items():
        for key, value in out.items():
            if key.startswith("not_"):
                fields[f"not_{side}_{key[4:]}"] = value
            else:
                fields[f"{side}_{key}"] = value
    never = rule.http is not None or any(
        e is not None and e.services is not None for e in (rule.source, rule.destination)
    )
    return ParsedRule(
        action=rule.action.lower(),
        ip_version=rule.ip_version,
        protocol=protocol,
        not_protocol=parse_protocol(rule.not_protocol),
        icmp=_icmp(rule.icmp),
        not_icmp=_icmp(rule.not_icmp),
        never_matches=never,
        rule_id=rule_id,
        **fields,  # type: ignore[arg-type]
    )


def scan_rules(
    rules: list[Rule] | None, namespace: str | None, sets: dict[str, IPSetSpec], prefix: str
) -> tuple[ParsedRule, ...]:
    return tuple(scan_rule(r, namespace, sets, f"{prefix}{i}") for i, r in enumerate(rules or ()))
