"""Static chains and kernel insertions, plus whole-table runs: a packet through the filter
table from the kernel hook to a verdict (failsafes, workload↔workload, workload→host)."""

from __future__ import annotations

import pytest
from rules_sim import Packet, Simulator, lines

from tortie.felix.dataplane.iptables import Chain
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
from tortie.felix.rules.config import ProtoPort

R = RuleRenderer(RulesConfig())


def chain(renderer: RuleRenderer, table: str, name: str) -> list[str]:
    chains = {c.name: c for c in renderer.static_chains(table)}
    return lines(chains[name], comments=False)


def test_filter_input() -> None:
    assert chain(R, "filter", "cali-INPUT") == [
        "-A cali-INPUT -i cali+ -g cali-wl-to-host",
        "-A cali-INPUT -m mark --mark 0x10000/0x10000 -j ACCEPT",
        "-A cali-INPUT -j MARK --set-mark 0/0xf0000",
        "-A cali-INPUT -j cali-from-host-endpoint",
        "-A cali-INPUT -m mark --mark 0x10000/0x10000 -j ACCEPT",
    ]
    assert chain(R, "filter", "cali-wl-to-host") == [
        "-A cali-wl-to-host -j cali-from-wl-dispatch",
        "-A cali-wl-to-host -j DROP",
    ]


def test_filter_input_with_tunnels_and_return_actions() -> None:
    renderer = RuleRenderer(
        RulesConfig(
            vxlan_enabled=True,
            ipip_enabled=True,
            iptables_filter_allow_action="Return",
            default_endpoint_to_host_action="Accept",
            workload_iface_prefixes=("cali", "tap"),
        )
    )
    assert chain(renderer, "filter", "cali-INPUT") == [
        "-A cali-INPUT -p 4 -m set --match-set cali40all-hosts-net src "
        "-m addrtype --dst-type LOCAL -j RETURN",
        "-A cali-INPUT -p 4 -j DROP",
        "-A cali-INPUT -p udp -m multiport --dports 4789 -m set --match-set cali40all-vxlan-net "
        "src -m addrtype --dst-type LOCAL -j RETURN",
        "-A cali-INPUT -p udp -m multiport --dports 4789 -m addrtype --dst-type LOCAL -j DROP",
        "-A cali-INPUT -i cali+ -g cali-wl-to-host",
        "-A cali-INPUT -i tap+ -g cali-wl-to-host",
        "-A cali-INPUT -m mark --mark 0x10000/0x10000 -j RETURN",
        "-A cali-INPUT -j MARK --set-mark 0/0xf0000",
        "-A cali-INPUT -j cali-from-host-endpoint",
        "-A cali-INPUT -m mark --mark 0x10000/0x10000 -j RETURN",
    ]
    assert chain(renderer, "filter", "cali-wl-to-host")[-1] == "-A cali-wl-to-host -j ACCEPT"


def test_ipv6_workload_to_host_allows_router_icmp_first() -> None:
    v6 = RuleRenderer(RulesConfig(ip_version=6))
    got = chain(v6, "filter", "cali-wl-to-host")
    assert got[:2] == [
        "-A cali-wl-to-host -p ipv6-icmp -m icmp6 --icmpv6-type 130 -j ACCEPT",
        "-A cali-wl-to-host -p ipv6-icmp -m icmp6 --icmpv6-type 131 -j ACCEPT",
    ]
    assert len(got) == 8 and got[-2:] == [
        "-A cali-wl-to-host -j cali-from-wl-dispatch",
        "-A cali-wl-to-host -j DROP",
    ]


def test_filter_forward() -> None:
    assert chain(R, "filter", "cali-FORWARD") == [
        "-A cali-FORWARD -j MARK --set-mark 0/0xe0000",
        "-A cali-FORWARD -m mark --mark 0/0x10000 -j cali-from-hep-forward",
        "-A cali-FORWARD -i cali+ -j cali-from-wl-dispatch",
        "-A cali-FORWARD -o cali+ -j cali-to-wl-dispatch",
        "-A cali-FORWARD -j cali-to-hep-forward",
        "-A cali-FORWARD -m mark --mark 0x10000/0x10000 -j ACCEPT",
        "-A cali-FORWARD -j MARK --set-mark 0x10000/0x10000",
    ]


def test_filter_output() -> None:
    assert chain(R, "filter", "cali-OUTPUT") == [
        "-A cali-OUTPUT -m mark --mark 0x10000/0x10000 -j ACCEPT",
        "-A cali-OUTPUT -o cali+ -j RETURN",
        "-A cali-OUTPUT -j MARK --set-mark 0/0xf0000",
        "-A cali-OUTPUT -m conntrack ! --ctstate DNAT -j cali-to-host-endpoint",
        "-A cali-OUTPUT -m mark --mark 0x10000/0x10000 -j ACCEPT",
    ]


def test_failsafe_chains() -> None:
    renderer = RuleRenderer(
        RulesConfig(
            failsafe_inbound_host_ports=(ProtoPort("tcp", 22), ProtoPort("tcp", 179, "10.0.0.0/8")),
            failsafe_outbound_host_ports=(ProtoPort("udp", 53), ProtoPort("tcp", 2379, "fd00::/8")),
        )
    )
    assert chain(renderer, "filter", "cali-failsafe-in") == [
        "-A cali-failsafe-in -p tcp -m multiport --dports 22 -j ACCEPT",
        "-A cali-failsafe-in -p tcp -s 10.0.0.0/8 -m multiport --dports 179 -j ACCEPT",
    ]
    assert chain(renderer, "filter", "cali-failsafe-out") == [
        "-A cali-failsafe-out -p udp -m multiport --dports 53 -j ACCEPT",
    ]
    # raw runs before conntrack: replies to the other direction's failsafes must pass too.
    assert chain(renderer, "raw", "cali-failsafe-in") == [
        "-A cali-failsafe-in -p tcp -m multiport --dports 22 -j ACCEPT",
        "-A cali-failsafe-in -p tcp -s 10.0.0.0/8 -m multiport --dports 179 -j ACCEPT",
        "-A cali-failsafe-in -p udp -m multiport --sports 53 -j ACCEPT",
    ]
    assert chain(renderer, "raw", "cali-failsafe-out") == [
        "-A cali-failsafe-out -p udp -m multiport --dports 53 -j ACCEPT",
        "-A cali-failsafe-out -p tcp -m multiport --sports 22 -j ACCEPT",
        "-A cali-failsafe-out -p tcp -d 10.0.0.0/8 -m multiport --sports 179 -j ACCEPT",
    ]
    assert chain(renderer, "mangle", "cali-failsafe-in") == chain(
        renderer, "filter", "cali-failsafe-in"
    )


def test_default_failsafes_cover_ssh_bgp_etcd() -> None:
    got = chain(R, "filter", "cali-failsafe-in")
    assert len(got) == 9
    assert "-A cali-failsafe-in -p tcp -m multiport --dports 22 -j ACCEPT" in got
    assert "-A cali-failsafe-in -p tcp -m multiport --dports 179 -j ACCEPT" in got
    assert "-A cali-failsafe-in -p tcp -m multiport --dports 2379 -j ACCEPT" in got


def test_nat_chains() -> None:
    assert lines(R.static_chains("nat")) == [
        "-A cali-PREROUTING -j cali-fip-dnat",
        "-A cali-POSTROUTING -j cali-fip-snat",
        "-A cali-POSTROUTING -j cali-nat-outgoing",
        "-A cali-OUTPUT -j cali-fip-dnat",
    ]
    vxlan = RuleRenderer(RulesConfig(vxlan_enabled=True))
    assert chain(vxlan, "nat", "cali-POSTROUTING")[-1] == (
        "-A cali-POSTROUTING -o vxlan.calico -m addrtype ! --src-type LOCAL --limit-iface-out "
        "-m addrtype --src-type LOCAL -j MASQUERADE"
    )


def test_nat_outgoing() -> None:
    assert R.nat_outgoing_chain(False) == Chain(name="cali-nat-outgoing")
    assert lines(R.nat_outgoing_chain(True)) == [
        "-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src "
        "-m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE"
    ]
    snat = RuleRenderer(
        RulesConfig(ip_version=6, nat_outgoing_address="fd00::1", nat_outgoing_random_fully=True)
    )
    assert lines(snat.nat_outgoing_chain(True)) == [
        "-A cali-nat-outgoing -m set --match-set cali60masq-ipam-pools src "
        "-m set ! --match-set cali60all-ipam-pools dst -j SNAT --to-source fd00::1 --random-fully"
    ]


def test_floating_ips() -> None:
    wep = WorkloadEndpoint(
        name="w", interface_name="cali1", ipv4_nat=(("10.65.0.5", "172.16.1.5"),)
    )
    dnat, snat = R.floating_ip_chains([wep])
    assert lines([dnat, snat]) == [
        "-A cali-fip-dnat -d 172.16.1.5 -j DNAT --to-destination 10.65.0.5",
        "-A cali-fip-snat -s 10.65.0.5 -d 10.65.0.5 -j SNAT --to-source 172.16.1.5",
    ]
    v6_dnat, v6_snat = RuleRenderer(RulesConfig(ip_version=6)).floating_ip_chains([wep])
    assert v6_dnat.rules == () and v6_snat.rules == ()


def test_raw_chains() -> None:
    assert chain(R, "raw", "cali-PREROUTING") == [
        "-A cali-PREROUTING -j MARK --set-mark 0/0xf0000",
        "-A cali-PREROUTING -i cali+ -j MARK --set-mark 0x40000/0x40000",
        "-A cali-PREROUTING -m mark --mark 0x40000/0x40000 -j cali-rpf-skip",
        "-A cali-PREROUTING -m mark --mark 0x40000/0x40000 -m rpfilter --validmark --invert "
        "-j DROP",
        "-A cali-PREROUTING -m mark --mark 0/0x40000 -j cali-from-host-endpoint",
        "-A cali-PREROUTING -m mark --mark 0x10000/0x10000 -j ACCEPT",
    ]
    assert chain(R, "raw", "cali-OUTPUT") == [
        "-A cali-OUTPUT -j MARK --set-mark 0/0xf0000",
        "-A cali-OUTPUT -j cali-to-host-endpoint",
        "-A cali-OUTPUT -m mark --mark 0x10000/0x10000 -j ACCEPT",
    ]
    vxlan = RuleRenderer(RulesConfig(vxlan_enabled=True, workload_rpf_check=False))
    prerouting = chain(vxlan, "raw", "cali-PREROUTING")
    assert prerouting[1] == "-A cali-PREROUTING -p udp -m multiport --dports 4789 -j NOTRACK"
    assert not any("rpfilter" in line for line in prerouting)
    assert "-A cali-OUTPUT -p udp -m multiport --dports 4789 -j NOTRACK" in chain(
        vxlan, "raw", "cali-OUTPUT"
    )


def test_mangle_chains() -> None:
    assert chain(R, "mangle", "cali-PREROUTING") == [
        "-A cali-PREROUTING -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A cali-PREROUTING -m mark --mark 0x10000/0x10000 -j ACCEPT",
        "-A cali-PREROUTING -j cali-from-host-endpoint",
        "-A cali-PREROUTING -m mark --mark 0x10000/0x10000 -j ACCEPT",
    ]
    assert chain(R, "mangle", "cali-POSTROUTING") == [
        "-A cali-POSTROUTING -m mark --mark 0x10000/0x10000 -j RETURN",
        "-A cali-POSTROUTING -j MARK --set-mark 0/0xf0000",
        "-A cali-POSTROUTING -m conntrack --ctstate DNAT -j cali-to-host-endpoint",
        "-A cali-POSTROUTING -m mark --mark 0x10000/0x10000 -j RETURN",
    ]


def test_insertions() -> None:
    assert {k: lines(Chain(name=k, rules=v)) for k, v in R.insertions("filter").items()} == {
        "INPUT": ["-A INPUT -j cali-INPUT"],
        "FORWARD": ["-A FORWARD -j cali-FORWARD"],
        "OUTPUT": ["-A OUTPUT -j cali-OUTPUT"],
    }
    assert set(R.insertions("nat")) == {"PREROUTING", "POSTROUTING", "OUTPUT"}
    assert set(R.insertions("raw")) == {"PREROUTING", "OUTPUT"}
    assert set(R.insertions("mangle")) == {"PREROUTING", "POSTROUTING"}
    with pytest.raises(ValueError, match="unknown table"):
        R.insertions("security")
    with pytest.raises(ValueError, match="unknown table"):
        R.static_chains("broute")


def test_every_jump_target_exists() -> None:
    """Static + dispatch + endpoint + policy chains form a closed set in each table."""
    pid, prof = PolicyID("default", "p"), ProfileID("kns.default")
    wep = WorkloadEndpoint(
        name="w",
        interface_name="cali1",
        tiers=(TierInfo("default", ingress_policies=(pid,), egress_policies=(pid,)),),
        profile_ids=(prof,),
    )
    hep = HostEndpoint(
        name="h",
        interface_name="*",
        tiers=wep.tiers,
        untracked_tiers=wep.tiers,
        pre_dnat_tiers=wep.tiers,
        forward_tiers=wep.tiers,
        profile_ids=(prof,),
    )
    policy_chains = R.policy_chains(pid, Policy())
    profile_chains = R.profile_chains(prof, Profile())
    tables: dict[str, list[Chain]] = {
        t: list(R.static_chains(t)) for t in ("filter", "nat", "raw", "mangle")
    }
    for table, chains in R.dispatch_chains(["cali1"], [hep]).items():
        tables[table] += chains
    for table, chains in R.host_endpoint_chains(hep).items():
        tables[table] += chains
    tables["filter"] += [*R.workload_chains(wep), *policy_chains, *profile_chains]
    tables["raw"] += [*policy_chains, R.rpf_skip_chain([wep])]
    tables["mangle"] += [*policy_chains, *profile_chains]
    tables["nat"] += [R.nat_outgoing_chain(True), *R.floating_ip_chains([wep])]
    builtin = {"ACCEPT", "DROP", "RETURN", "MARK", "LOG", "NOTRACK", "MASQUERADE", "SNAT", "DNAT"}
    for table, chains in tables.items():
        names = {c.name for c in chains}
        assert len(names) == len(chains), f"duplicate chain in {table}"
        for c in chains:
            for rule in c.rules:
                assert rule.target in names | builtin, f"{table}: {c.name} → {rule.target}"
        for kernel, rules in R.insertions(table).items():
            assert all(r.target in names for r in rules), kernel


# --- whole filter table ---------------------------------------------------------------------


def _filter_table(workloads: list[WorkloadEndpoint], heps: list[HostEndpoint], policies, profiles):
    chains = [
        *R.static_chains("filter"),
        *R.dispatch_chains([w.interface_name for w in workloads], heps)["filter"],
    ]
    for w in workloads:
        chains += R.workload_chains(w)
    for h in heps:
        chains += R.host_endpoint_chains(h)["filter"]
    for pid, pol in policies.items():
        chains += R.policy_chains(pid, pol)
    for prid, prof in profiles.items():
        chains += R.profile_chains(prid, prof)
    return Simulator(chains)


ALLOW = ProfileID("allow-all")
PROFILES = {
    ALLOW: Profile(
        inbound_rules=(ParsedRule(action="allow"),), outbound_rules=(ParsedRule(action="allow"),)
    )
}
DB_ONLY = PolicyID("default", "db-only")
POLICIES = {
    DB_ONLY: Policy(
        inbound_rules=(
            ParsedRule(action="allow", protocol="tcp", dst_ports=(PortRange(5432, 5432),)),
        )
    )
}


def test_forwarded_workload_to_workload() -> None:
    web = WorkloadEndpoint(name="web", interface_name="caliweb", profile_ids=(ALLOW,))
    db = WorkloadEndpoint(
        name="db",
        interface_name="calidb",
        tiers=(TierInfo("default", ingress_policies=(DB_ONLY,)),),
        profile_ids=(ALLOW,),
    )
    sim = _filter_table([web, db], [], POLICIES, PROFILES)
    assert sim.run("cali-FORWARD", Packet(iif="caliweb", oif="calidb", dport=5432)) == "ACCEPT"
    assert sim.run("cali-FORWARD", Packet(iif="caliweb", oif="calidb", dport=22)) == "DROP"
    # db's egress (profile allows) and web's ingress (profile allows).
    assert sim.run("cali-FORWARD", Packet(iif="calidb", oif="caliweb", dport=80)) == "ACCEPT"
    # An interface Felix does not know yet.
    assert sim.run("cali-FORWARD", Packet(iif="calinew", oif="calidb", dport=5432)) == "DROP"
    # Traffic that is not ours returns to the kernel chain unjudged.
    assert sim.run("cali-FORWARD", Packet(iif="eth0", oif="eth1")) == "RETURN"


def test_workload_to_host_ends_in_the_configured_action() -> None:
    web = WorkloadEndpoint(name="web", interface_name="caliweb", profile_ids=(ALLOW,))
    sim = _filter_table([web], [], {}, PROFILES)
    assert sim.run("cali-INPUT", Packet(iif="caliweb", dport=10250)) == "DROP"
    accepting = RuleRenderer(RulesConfig(default_endpoint_to_host_action="Accept"))
    chains = [
        *accepting.static_chains("filter"),
        *accepting.dispatch_chains(["caliweb"], [])["filter"],
    ]
    chains += [*accepting.workload_chains(web), *accepting.profile_chains(ALLOW, PROFILES[ALLOW])]
    assert Simulator(chains).run("cali-INPUT", Packet(iif="caliweb", dport=10250)) == "ACCEPT"


def test_host_endpoint_failsafe_keeps_ssh_open() -> None:
    deny_all = PolicyID("default", "deny-all")
    hep = HostEndpoint(
        name="node1-eth0",
        interface_name="eth0",
        tiers=(TierInfo("default", ingress_policies=(deny_all,), egress_policies=(deny_all,)),),
    )
    policies = {
        deny_all: Policy(
            inbound_rules=(ParsedRule(action="deny"),), outbound_rules=(ParsedRule(action="deny"),)
        )
    }
    sim = _filter_table([], [hep], policies, {})
    assert sim.run("cali-INPUT", Packet(iif="eth0", proto="tcp", dport=22)) == "ACCEPT"
    assert sim.run("cali-INPUT", Packet(iif="eth0", proto="udp", dport=68)) == "ACCEPT"
    assert sim.run("cali-INPUT", Packet(iif="eth0", proto="tcp", dport=80)) == "DROP"
    assert sim.run("cali-OUTPUT", Packet(oif="eth0", proto="udp", dport=53)) == "ACCEPT"
    assert sim.run("cali-OUTPUT", Packet(oif="eth0", proto="tcp", dport=443)) == "DROP"
    # Host → local workload is not policed by host endpoint egress policy.
    assert sim.run("cali-OUTPUT", Packet(oif="cali123", proto="tcp", dport=443)) == "RETURN"
    # Other interfaces are not host endpoints: unjudged.
    assert sim.run("cali-INPUT", Packet(iif="eth1", proto="tcp", dport=80)) == "RETURN"
