"""Dispatch chains: from an interface name to that endpoint's chain (Calico's ``dispatch.go``).

This module owns the chains that send a packet to the right per-endpoint chain:

- ``cali-from-wl-dispatch`` / ``cali-to-wl-dispatch`` (filter): ``-i <iface> -g cali-fw-<iface>``
  and ``-o <iface> -g cali-tw-<iface>``; a packet from or to a ``cali`` interface Felix does
  not know is dropped ("Unknown interface");
- ``cali-from-host-endpoint`` / ``cali-to-host-endpoint`` and the forward variants
  ``cali-from-hep-forward`` / ``cali-to-hep-forward`` (filter); in raw the first two for
  ``doNotTrack`` endpoints; in mangle ``cali-from-host-endpoint`` for ``preDNAT`` endpoints and
  ``cali-to-host-endpoint`` for DNAT'd host traffic. Unknown interfaces simply return (their
  traffic is not ours to police), unless a host endpoint with ``interfaceName: "*"`` exists:
  then everything else goes to its ``…-any-interface-at-all`` chains;
- ``cali-rpf-skip`` (raw): the workloads' ``allowSpoofedSourcePrefixes``, accepted before the
  reverse-path check.

With many endpoints a flat list makes the last interface pay for every rule before it, so, as
Calico does, names are sorted and binned by the character after their common prefix: a bin of
one name is a rule in the root chain, a bin of several becomes a child chain
``<root>-<char>`` reached by ``-i cali1+ -g <root>-1`` and ending with the root's end rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from tortie.felix.dataplane.iptables import Chain, Rule
from tortie.felix.proto import HostEndpoint, WorkloadEndpoint
from tortie.felix.rules import matches as m
from tortie.felix.rules.config import RulesConfig
from tortie.felix.rules.names import (
    ALL_INTERFACES,
    CHAIN_DISPATCH_FROM_HOST_ENDPOINT,
    CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD,
    CHAIN_DISPATCH_TO_HOST_ENDPOINT,
    CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD,
    CHAIN_FROM_WORKLOAD_DISPATCH,
    CHAIN_RPF_SKIP,
    CHAIN_TO_WORKLOAD_DISPATCH,
    HOST_FROM_ENDPOINT_FORWARD_PREFIX,
    HOST_FROM_ENDPOINT_PREFIX,
    HOST_TO_ENDPOINT_FORWARD_PREFIX,
    HOST_TO_ENDPOINT_PREFIX,
    WORKLOAD_FROM_ENDPOINT_PREFIX,
    WORKLOAD_TO_ENDPOINT_PREFIX,
    endpoint_chain_name,
)


def _prefix_bins(names: Iterable[str]) -> tuple[str, dict[str, list[str]]]:
    """(common prefix, bins keyed by common prefix + next character, in sorted order)."""
    unique = sorted(set(names))
    common = ""
    if unique:  # the common prefix of a sorted list is that of its first and last names
        first, last = unique[0], unique[-1]
        while (
            len(common) < len(first) and first[len(common)] == last[len(common) : len(common) + 1]
        ):
            common += first[len(common)]
    bins: dict[str, list[str]] = {}
    for name in unique:
        key = name[: len(common) + 1]
        bins.setdefault(key, []).append(name)
    return common, bins


def interface_dispatch_chain(
    root: str,
    names: Iterable[str],
    match_iface: Callable[[str], str],
    target: Callable[[str], str],
    end_rules: Sequence[Rule],
) -> list[Chain]:
    """The root chain ``root`` and its child chains (children first)."""
    common, bins = _prefix_bins(names)
    children: list[Chain] = []
    root_rules: list[Rule] = []
    for key, members in bins.items():
        if len(members) == 1:
            root_rules.append(Rule(match=match_iface(members[0]), action=target(members[0])))
            continue
        child = f"{root}-{key[len(common) :]}"
        # A goto: the packet never comes back to scan the rest of the root chain.
        root_rules.append(Rule(match=match_iface(key + "+"), action=m.goto(child)))
        child_rules = [Rule(match=match_iface(n), action=target(n)) for n in members]
        children.append(Chain(name=child, rules=(*child_rules, *end_rules)))
    return [*children, Chain(name=root, rules=(*root_rules, *end_rules))]


def workload_dispatch_chains(workload_ifaces: Iterable[str]) -> list[Chain]:
    """``cali-from-wl-dispatch`` and ``cali-to-wl-dispatch`` with their children (filter)."""
    names = list(workload_ifaces)
    unknown = (Rule(action=m.DROP, comment="Unknown interface"),)
    return [
        *interface_dispatch_chain(
            CHAIN_FROM_WORKLOAD_DISPATCH,
            names,
            m.in_iface,
            lambda n: m.goto(endpoint_chain_name(WORKLOAD_FROM_ENDPOINT_PREFIX, n)),
            unknown,
        ),
        *interface_dispatch_chain(
            CHAIN_TO_WORKLOAD_DISPATCH,
            names,
            m.out_iface,
            lambda n: m.goto(endpoint_chain_name(WORKLOAD_TO_ENDPOINT_PREFIX, n)),
            unknown,
        ),
    ]


def _host_dispatch(
    endpoints: Sequence[HostEndpoint],
    from_root: str | None,
    to_root: str | None,
    from_prefix: str,
    to_prefix: str,
    skip_workloads: bool,
    config: RulesConfig,
) -> list[Chain]:
    ifaces = [ep.interface_name for ep in endpoints if ep.interface_name != "*"]
    wildcard = any(ep.interface_name == "*" for ep in endpoints)
    from_end: list[Rule] = []
    to_end: list[Rule] = []
    if wildcard:
        from_end.append(Rule(action=m.goto(endpoint_chain_name(from_prefix, ALL_INTERFACES))))
        if skip_workloads:
            # The "*" endpoint's normal egress policy never applies to local workloads.
            to_end.extend(
                Rule(
                    match=m.out_iface(prefix + "+"),
                    action=m.RETURN,
                    comment="Skip egress WHEP policy for traffic to local workload",
                )
                for prefix in config.workload_iface_prefixes
            )
        to_end.append(Rule(action=m.goto(endpoint_chain_name(to_prefix, ALL_INTERFACES))))
    chains: list[Chain] = []
    if from_root:
        chains += interface_dispatch_chain(
            from_root,
            ifaces,
            m.in_iface,
            lambda n: m.goto(endpoint_chain_name(from_prefix, n)),
            from_end,
        )
    if to_root:
        chains += interface_dispatch_chain(
            to_root,
            ifaces,
            m.out_iface,
            lambda n: m.goto(endpoint_chain_name(to_prefix, n)),
            to_end,
        )
    return chains


def one_endpoint_per_interface(endpoints: Iterable[HostEndpoint]) -> list[HostEndpoint]:
    """Where several host endpoints name one interface, keep the first by name."""
    chosen: dict[str, HostEndpoint] = {}
    for ep in sorted(endpoints, key=lambda e: e.name):
        chosen.setdefault(ep.interface_name, ep)
    return list(chosen.values())


def host_dispatch_chains(
    host_endpoints: Iterable[HostEndpoint], config: RulesConfig
) -> dict[str, list[Chain]]:
    """The host-endpoint dispatch chains of each table."""
    eps = one_endpoint_per_interface(host_endpoints)
    untracked = [ep for ep in eps if ep.untracked_tiers]
    pre_dnat = [ep for ep in eps if ep.pre_dnat_tiers]
    normal_from, normal_to = CHAIN_DISPATCH_FROM_HOST_ENDPOINT, CHAIN_DISPATCH_TO_HOST_ENDPOINT
    return {
        "filter": [
            *_host_dispatch(
                eps,
                normal_from,
                normal_to,
                HOST_FROM_ENDPOINT_PREFIX,
                HOST_TO_ENDPOINT_PREFIX,
                False,
                config,
            ),
            *_host_dispatch(
                eps,
                CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD,
                CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD,
                HOST_FROM_ENDPOINT_FORWARD_PREFIX,
                HOST_TO_ENDPOINT_FORWARD_PREFIX,
                False,
                config,
            ),
        ],
        "raw": _host_dispatch(
            untracked,
            normal_from,
            normal_to,
            HOST_FROM_ENDPOINT_PREFIX,
            HOST_TO_ENDPOINT_PREFIX,
            True,
            config,
        ),
        "mangle": [
            *_host_dispatch(
                pre_dnat,
                normal_from,
                None,
                HOST_FROM_ENDPOINT_PREFIX,
                HOST_TO_ENDPOINT_PREFIX,
                True,
                config,
            ),
            *_host_dispatch(
                eps,
                None,
                normal_to,
                HOST_FROM_ENDPOINT_PREFIX,
                HOST_TO_ENDPOINT_PREFIX,
                True,
                config,
            ),
        ],
    }


def dispatch_chains(
    workload_ifaces: Iterable[str], host_endpoints: Iterable[HostEndpoint], config: RulesConfig
) -> dict[str, tuple[Chain, ...]]:
    """All dispatch chains, per table. The static chains jump to every root chain, so the
    caller programs all of them, even when empty."""
    per_table = host_dispatch_chains(host_endpoints, config)
    per_table["filter"] = [*workload_dispatch_chains(workload_ifaces), *per_table["filter"]]
    per_table.setdefault("nat", [])
    return {table: tuple(chains) for table, chains in per_table.items()}


def rpf_skip_chain(workloads: Iterable[WorkloadEndpoint], config: RulesConfig) -> Chain:
    """``cali-rpf-skip`` (raw): accept each workload's ``allowSpoofedSourcePrefixes``."""
    want_v6 = config.ip_version == 6
    rules = [
        Rule(match=m.join(m.in_iface(ep.interface_name), m.src_net(prefix)), action=m.ACCEPT)
        for ep in sorted(workloads, key=lambda e: e.interface_name)
        for prefix in ep.allow_spoofed_source_prefixes
        if (":" in prefix) == want_v6
    ]
    return Chain(name=CHAIN_RPF_SKIP, rules=tuple(rules))
