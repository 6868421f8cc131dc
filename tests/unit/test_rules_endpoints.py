"""Endpoint chains: golden text for workloads and host endpoints in each table, and tier /
pass / profile semantics checked by running packets through the rendered chains."""

from __future__ import annotations

from rules_sim import Packet, Simulator, lines

from tortie.felix.proto import (
    HostEndpoint,
    ParsedRule,
    Policy,
    PolicyID,
    PortRange,
    Profile,
    ProfileID,
    TierInfo,
    WorkloadEndpoint,
)
from tortie.felix.rules import RuleRenderer, RulesConfig
from tortie.felix.rules.names import length_limited_id

R = RuleRenderer(RulesConfig())
BLOCK_BAD = PolicyID("security", "block-bad")
ALLOW_DB = PolicyID("default", "allow-db")
PROD = ProfileID("kns.prod")

WEP = WorkloadEndpoint(
    name="node1-k8s-db-eth0",
    interface_name="cali1234",
    tiers=(
        TierInfo("security", default_action="Pass", ingress_policies=(BLOCK_BAD,)),
        TierInfo("default", ingress_policies=(ALLOW_DB,), egress_policies=(ALLOW_DB,)),
    ),
    profile_ids=(PROD,),
)

CONNTRACK = [
    "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-m conntrack --ctstate INVALID -j DROP",
]
RETURN_IF_POLICY = (
    '-m mark --mark 0x10000/0x10000 -m comment --comment "Return if policy accepted" -j RETURN'
)
END_OF_TIER = (
    '-m mark --mark 0/0x20000 -m comment --comment "Drop if no policies passed packet" -j DROP'
)
PROFILES_END = [
    '-m mark --mark 0x10000/0x10000 -m comment --comment "Return if profile accepted" -j RETURN',
    '-m comment --comment "Drop if no profiles matched" -j DROP',
]


def body(chain_lines: list[str], name: str) -> list[str]:
    prefix = f"-A {name} "
    assert all(line.startswith(prefix) for line in chain_lines), chain_lines
    return [line.removeprefix(prefix) for line in chain_lines]


def test_workload_chains_golden() -> None:
    to_wl, from_wl = R.workload_chains(WEP)
    assert to_wl.name == "cali-tw-cali1234"
    assert body(lines(to_wl), to_wl.name) == [
        *CONNTRACK,
        "-j MARK --set-mark 0/0x30000",
        '-m comment --comment "Start of tier security" -j MARK --set-mark 0/0x20000',
        "-m mark --mark 0/0x20000 -j cali-pi-security/block-bad",
        RETURN_IF_POLICY,
        # security's default action is Pass: no drop at the end of the tier
        '-m comment --comment "Start of tier default" -j MARK --set-mark 0/0x20000',
        "-m mark --mark 0/0x20000 -j cali-pi-default/allow-db",
        RETURN_IF_POLICY,
        END_OF_TIER,
        "-j cali-pri-kns.prod",
        *PROFILES_END,
    ]
    assert from_wl.name == "cali-fw-cali1234"
    assert body(lines(from_wl), from_wl.name) == [
        *CONNTRACK,
        "-j MARK --set-mark 0/0x30000",
        "-p udp -m multiport --dports 4789 "
        '-m comment --comment "Drop VXLAN encapped packets originating in workloads" -j DROP',
        '-p 4 -m comment --comment "Drop IPinIP encapped packets originating in workloads" -j DROP',
        # security has no egress policies: no tier section at all
        '-m comment --comment "Start of tier default" -j MARK --set-mark 0/0x20000',
        "-m mark --mark 0/0x20000 -j cali-po-default/allow-db",
        RETURN_IF_POLICY,
        END_OF_TIER,
        "-j cali-pro-kns.prod",
        *PROFILES_END,
    ]


def test_workload_without_policy_or_profile_fails_closed() -> None:
    to_wl, _ = R.workload_chains(WorkloadEndpoint(name="w", interface_name="cali1"))
    assert body(lines(to_wl), to_wl.name) == [
        *CONNTRACK,
        "-j MARK --set-mark 0/0x30000",
        '-m comment --comment "Drop if no profiles matched" -j DROP',
    ]


def test_return_allow_action_flags_established_flows() -> None:
    renderer = RuleRenderer(
        RulesConfig(
            iptables_filter_allow_action="Return",
            disable_conntrack_invalid_check=True,
            allow_vxlan_packets_from_workloads=True,
            allow_ipip_packets_from_workloads=True,
        )
    )
    _, from_wl = renderer.workload_chains(WorkloadEndpoint(name="w", interface_name="cali1"))
    assert body(lines(from_wl), from_wl.name) == [
        "-m conntrack --ctstate RELATED,ESTABLISHED -j MARK --set-mark 0x10000/0x10000",
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-j MARK --set-mark 0/0x30000",
        '-m comment --comment "Drop if no profiles matched" -j DROP',
    ]


def test_long_interface_names_are_hashed() -> None:
    to_wl, from_wl = R.workload_chains(WorkloadEndpoint(name="w", interface_name="x" * 25))
    assert len(to_wl.name) == 28 and to_wl.name.startswith("cali-tw-_")
    assert from_wl.name.startswith("cali-fw-_") and to_wl.name[8:] == from_wl.name[8:]


HEP = HostEndpoint(
    name="node1-eth0",
    interface_name="eth0",
    tiers=(TierInfo("default", ingress_policies=(PolicyID("default", "ssh-only"),)),),
    untracked_tiers=(TierInfo("default", ingress_policies=(PolicyID("default", "no-track"),)),),
    pre_dnat_tiers=(TierInfo("default", ingress_policies=(PolicyID("default", "pre"),)),),
    forward_tiers=(TierInfo("default", egress_policies=(PolicyID("default", "fwd"),)),),
    profile_ids=(ProfileID("host"),),
)


def test_host_endpoint_filter_chains_golden() -> None:
    th, fh, thfw, fhfw = R.host_endpoint_chains(HEP)["filter"]
    assert [c.name for c in (th, fh, thfw, fhfw)] == [
        "cali-th-eth0",
        "cali-fh-eth0",
        "cali-thfw-eth0",
        "cali-fhfw-eth0",
    ]
    assert body(lines(th), th.name) == [
        *CONNTRACK,
        "-j cali-failsafe-out",
        "-j MARK --set-mark 0/0x30000",
        "-j cali-pro-host",
        *PROFILES_END,
    ]
    assert body(lines(fh), fh.name) == [
        *CONNTRACK,
        "-j cali-failsafe-in",
        "-j MARK --set-mark 0/0x30000",
        '-m comment --comment "Start of tier default" -j MARK --set-mark 0/0x20000',
        "-m mark --mark 0/0x20000 -j cali-pi-default/ssh-only",
        RETURN_IF_POLICY,
        END_OF_TIER,
        "-j cali-pri-host",
        *PROFILES_END,
    ]
    # Forward chains: no failsafes, no profiles; allowed by default without policies.
    assert body(lines(thfw), thfw.name) == [
        *CONNTRACK,
        "-j MARK --set-mark 0/0x30000",
        '-m comment --comment "Start of tier default" -j MARK --set-mark 0/0x20000',
        "-m mark --mark 0/0x20000 -j cali-po-default/fwd",
        RETURN_IF_POLICY,
        END_OF_TIER,
    ]
    assert body(lines(fhfw), fhfw.name) == [
        *CONNTRACK,
        "-j MARK --set-mark 0/0x30000",
        '-m comment --comment "Allow forwarded traffic by default" '
        "-j MARK --set-mark 0x10000/0x10000",
        '-m comment --comment "Return for accepted forward traffic" -j RETURN',
    ]


def test_host_endpoint_untracked_chains_notrack_and_never_drop() -> None:
    th, fh = R.host_endpoint_chains(HEP)["raw"]
    assert body(lines(th), th.name) == ["-j cali-failsafe-out", "-j MARK --set-mark 0/0x30000"]
    assert body(lines(fh), fh.name) == [
        "-j cali-failsafe-in",
        "-j MARK --set-mark 0/0x30000",
        '-m comment --comment "Start of tier default" -j MARK --set-mark 0/0x20000',
        "-m mark --mark 0/0x20000 -j cali-pi-default/no-track",
        "-m mark --mark 0x10000/0x10000 -j NOTRACK",
        RETURN_IF_POLICY,
    ]


def test_host_endpoint_mangle_chains() -> None:
    th, fh = R.host_endpoint_chains(HEP)["mangle"]
    # DNAT'd host traffic: normal egress policy, RETURN as the allow action.
    assert body(lines(th), th.name) == [
        "-m conntrack --ctstate RELATED,ESTABLISHED -j MARK --set-mark 0x10000/0x10000",
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-m conntrack --ctstate INVALID -j DROP",
        "-j cali-failsafe-out",
        "-j MARK --set-mark 0/0x30000",
        "-j cali-pro-host",
        *PROFILES_END,
    ]
    # Pre-DNAT: ingress only, no profiles, no drop at the end.
    assert body(lines(fh), fh.name) == [
        *CONNTRACK,
        "-j cali-failsafe-in",
        "-j MARK --set-mark 0/0x30000",
        '-m comment --comment "Start of tier default" -j MARK --set-mark 0/0x20000',
        "-m mark --mark 0/0x20000 -j cali-pi-default/pre",
        RETURN_IF_POLICY,
    ]


def test_raw_and_pre_dnat_chains_only_with_such_policy() -> None:
    plain = HostEndpoint(name="h", interface_name="eth1")
    chains = R.host_endpoint_chains(plain)
    assert chains["raw"] == ()
    assert [c.name for c in chains["mangle"]] == ["cali-th-eth1"]


def test_all_interfaces_endpoint_uses_calicos_placeholder_name() -> None:
    chains = R.host_endpoint_chains(HostEndpoint(name="auto", interface_name="*"))
    th, fh, thfw, fhfw = (c.name for c in chains["filter"])
    assert (th, fh) == ("cali-th-any-interface-at-all", "cali-fh-any-interface-at-all")
    # "cali-thfw-any-interface-at-all" would be 30 characters: hashed, as in Calico.
    assert thfw == length_limited_id("cali-thfw-", "any-interface-at-all")
    assert thfw.startswith("cali-thfw-_") and len(thfw) == 28
    assert fhfw.startswith("cali-fhfw-_")


# --- semantics ------------------------------------------------------------------------------


def _world(endpoint: WorkloadEndpoint, policies: dict[PolicyID, Policy], profiles=None):
    chains = list(R.workload_chains(endpoint))
    for pid, pol in policies.items():
        chains += R.policy_chains(pid, pol)
    for prid, prof in (profiles or {}).items():
        chains += R.profile_chains(prid, prof)
    return Simulator(chains, {"cali40s:bad": {"10.9.9.9/32"}, "cali40s:trusted": {"10.8.8.8/32"}})


def _verdict(sim: Simulator, chain: str, packet: Packet) -> str:
    result = sim.run(chain, packet)
    if result == "RETURN":
        return "allow" if packet.mark & 0x10000 else "no verdict"
    return result.lower()


POLICIES = {
    BLOCK_BAD: Policy(
        inbound_rules=(
            ParsedRule(action="deny", src_ipset_ids=("s:bad",)),
            ParsedRule(action="pass", src_ipset_ids=("s:trusted",)),
        )
    ),
    ALLOW_DB: Policy(
        inbound_rules=(
            ParsedRule(action="allow", protocol="tcp", dst_ports=(PortRange(5432, 5432),)),
        ),
    ),
}


def test_tiers_pass_and_default_actions() -> None:
    sim = _world(WEP, POLICIES, {PROD: Profile(inbound_rules=(ParsedRule(action="allow"),))})
    tw = "cali-tw-cali1234"
    # Denied in the first tier.
    assert _verdict(sim, tw, Packet(src="10.9.9.9", dport=5432)) == "drop"
    # No verdict in "security" (default Pass) → "default" tier allows 5432.
    assert _verdict(sim, tw, Packet(src="10.0.0.1", dport=5432)) == "allow"
    # ... and its end-of-tier drop catches the rest (the allowing profile is never reached).
    assert _verdict(sim, tw, Packet(src="10.0.0.1", dport=22)) == "drop"
    # An explicit pass skips the rest of "security", but "default" still applies.
    assert _verdict(sim, tw, Packet(src="10.8.8.8", dport=22)) == "drop"
    assert _verdict(sim, tw, Packet(src="10.8.8.8", dport=5432)) == "allow"
    # Established flows are accepted before any policy.
    assert _verdict(sim, tw, Packet(src="10.9.9.9", ctstate="ESTABLISHED")) == "accept"
    assert _verdict(sim, tw, Packet(ctstate="INVALID")) == "drop"


def test_pass_in_the_last_tier_falls_through_to_profiles() -> None:
    ep = WorkloadEndpoint(
        name="w",
        interface_name="cali9",
        tiers=(TierInfo("security", ingress_policies=(BLOCK_BAD,)),),
        profile_ids=(PROD,),
    )
    allow_all = {PROD: Profile(inbound_rules=(ParsedRule(action="allow"),))}
    sim = _world(ep, POLICIES, allow_all)
    assert _verdict(sim, "cali-tw-cali9", Packet(src="10.8.8.8")) == "allow"  # passed → profile
    # Default Deny tier: no verdict from its policies → dropped before the profiles.
    assert _verdict(sim, "cali-tw-cali9", Packet(src="10.0.0.1")) == "drop"
    sim = _world(ep, POLICIES, {PROD: Profile()})
    assert _verdict(sim, "cali-tw-cali9", Packet(src="10.8.8.8")) == "drop"  # profile says nothing


def test_profiles_alone_decide_when_no_policy_applies() -> None:
    ep = WorkloadEndpoint(name="w", interface_name="cali7", profile_ids=(PROD,))
    sim = _world(ep, {}, {PROD: Profile(outbound_rules=(ParsedRule(action="allow"),))})
    assert _verdict(sim, "cali-fw-cali7", Packet()) == "allow"
    assert _verdict(sim, "cali-tw-cali7", Packet()) == "drop"
    # VXLAN from a workload is dropped before any policy.
    assert _verdict(sim, "cali-fw-cali7", Packet(proto="udp", dport=4789)) == "drop"
