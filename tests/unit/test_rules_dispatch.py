"""Dispatch chains: interface → endpoint chain, the prefix tree, host endpoint dispatch in each
table (with the "*" endpoint), and cali-rpf-skip."""

from __future__ import annotations

import random

from rules_sim import Packet, Simulator, lines

from tortie.felix.dataplane.iptables import Chain, Rule
from tortie.felix.proto import HostEndpoint, PolicyID, TierInfo, WorkloadEndpoint
from tortie.felix.rules import RuleRenderer, RulesConfig

R = RuleRenderer(RulesConfig())
TIER = (TierInfo("default", ingress_policies=(PolicyID("default", "p"),)),)


def test_few_workloads_dispatch_flat() -> None:
    chains = R.dispatch_chains(["cali2", "cali1"], [])["filter"]
    wl = [c for c in chains if "wl-dispatch" in c.name]
    assert lines(wl) == [
        "-A cali-from-wl-dispatch -i cali1 -g cali-fw-cali1",
        "-A cali-from-wl-dispatch -i cali2 -g cali-fw-cali2",
        '-A cali-from-wl-dispatch -m comment --comment "Unknown interface" -j DROP',
        "-A cali-to-wl-dispatch -o cali1 -g cali-tw-cali1",
        "-A cali-to-wl-dispatch -o cali2 -g cali-tw-cali2",
        '-A cali-to-wl-dispatch -m comment --comment "Unknown interface" -j DROP',
    ]


def test_no_workloads_still_renders_the_roots() -> None:
    chains = {c.name: c for c in R.dispatch_chains([], [])["filter"]}
    assert lines(chains["cali-from-wl-dispatch"]) == [
        '-A cali-from-wl-dispatch -m comment --comment "Unknown interface" -j DROP'
    ]
    for name in (
        "cali-from-host-endpoint",
        "cali-to-host-endpoint",
        "cali-from-hep-forward",
        "cali-to-hep-forward",
    ):
        assert chains[name].rules == ()


def test_prefix_tree_bins_by_the_next_character() -> None:
    names = ["calia1", "calia2", "calib1", "calic1", "calic2", "calic3"]
    chains = [c for c in R.dispatch_chains(names, [])["filter"] if "from-wl" in c.name]
    assert lines(chains, comments=False) == [
        "-A cali-from-wl-dispatch-a -i calia1 -g cali-fw-calia1",
        "-A cali-from-wl-dispatch-a -i calia2 -g cali-fw-calia2",
        "-A cali-from-wl-dispatch-a -j DROP",
        "-A cali-from-wl-dispatch-c -i calic1 -g cali-fw-calic1",
        "-A cali-from-wl-dispatch-c -i calic2 -g cali-fw-calic2",
        "-A cali-from-wl-dispatch-c -i calic3 -g cali-fw-calic3",
        "-A cali-from-wl-dispatch-c -j DROP",
        "-A cali-from-wl-dispatch -i calia+ -g cali-from-wl-dispatch-a",
        "-A cali-from-wl-dispatch -i calib1 -g cali-fw-calib1",
        "-A cali-from-wl-dispatch -i calic+ -g cali-from-wl-dispatch-c",
        "-A cali-from-wl-dispatch -j DROP",
    ]


def _endpoint_stubs(names: list[str], prefix: str) -> list[Chain]:
    """Stand-ins for the endpoint chains: log which one was reached, then accept."""
    return [
        Chain(name=f"{prefix}{n}", rules=(Rule(action=f'-j LOG --log-prefix "{n}"'),))
        for n in names
    ]


def test_every_workload_reaches_its_own_chain_through_few_rules() -> None:
    rng = random.Random(7)
    names = sorted({"cali" + "".join(rng.choices("0123456789abcdef", k=11)) for _ in range(300)})
    chains = R.dispatch_chains(names, [])["filter"]
    sim = Simulator(
        [*chains, *_endpoint_stubs(names, "cali-fw-"), *_endpoint_stubs(names, "cali-tw-")]
    )
    for name in names:
        packet = Packet(iif=name)
        assert sim.run("cali-from-wl-dispatch", packet) == "RETURN"
        assert packet.log == [name]
        packet = Packet(oif=name)
        assert sim.run("cali-to-wl-dispatch", packet) == "RETURN"
        assert packet.log == [name]
    assert sim.run("cali-from-wl-dispatch", Packet(iif="cali00000000000x")) == "DROP"
    assert sim.run("cali-to-wl-dispatch", Packet(oif="calizzz")) == "DROP"
    # Shallow tree: 16 bins at the root, about 300/16 names per child.
    by_name = {c.name: c for c in chains}
    assert len(by_name["cali-from-wl-dispatch"].rules) == 17
    assert max(len(c.rules) for c in chains) < 40


def test_duplicate_interface_names_render_once() -> None:
    chains = R.dispatch_chains(["cali1", "cali1"], [])["filter"]
    root = next(c for c in chains if c.name == "cali-from-wl-dispatch")
    assert len(root.rules) == 2


def test_host_endpoint_dispatch_filter() -> None:
    eth0 = HostEndpoint(name="a", interface_name="eth0", tiers=TIER)
    eth1 = HostEndpoint(name="b", interface_name="eth1")
    chains = [c for c in R.dispatch_chains([], [eth1, eth0])["filter"] if "wl" not in c.name]
    assert lines(chains) == [
        "-A cali-from-host-endpoint -i eth0 -g cali-fh-eth0",
        "-A cali-from-host-endpoint -i eth1 -g cali-fh-eth1",
        "-A cali-to-host-endpoint -o eth0 -g cali-th-eth0",
        "-A cali-to-host-endpoint -o eth1 -g cali-th-eth1",
        "-A cali-from-hep-forward -i eth0 -g cali-fhfw-eth0",
        "-A cali-from-hep-forward -i eth1 -g cali-fhfw-eth1",
        "-A cali-to-hep-forward -o eth0 -g cali-thfw-eth0",
        "-A cali-to-hep-forward -o eth1 -g cali-thfw-eth1",
    ]


def test_all_interfaces_endpoint_catches_the_rest() -> None:
    star = HostEndpoint(name="auto", interface_name="*", untracked_tiers=TIER)
    eth0 = HostEndpoint(name="a", interface_name="eth0")
    per_table = R.dispatch_chains([], [star, eth0])
    filter_chains = {c.name: c for c in per_table["filter"]}
    assert lines(filter_chains["cali-from-host-endpoint"]) == [
        "-A cali-from-host-endpoint -i eth0 -g cali-fh-eth0",
        "-A cali-from-host-endpoint -g cali-fh-any-interface-at-all",
    ]
    # In raw only "*" has untracked policy; its egress skips local workloads.
    assert lines(per_table["raw"]) == [
        "-A cali-from-host-endpoint -g cali-fh-any-interface-at-all",
        '-A cali-to-host-endpoint -o cali+ -m comment --comment "Skip egress WHEP policy for '
        'traffic to local workload" -j RETURN',
        "-A cali-to-host-endpoint -g cali-th-any-interface-at-all",
    ]


def test_raw_and_mangle_list_only_endpoints_with_such_policy() -> None:
    untracked = HostEndpoint(name="a", interface_name="eth0", untracked_tiers=TIER)
    pre_dnat = HostEndpoint(name="b", interface_name="eth1", pre_dnat_tiers=TIER)
    per_table = R.dispatch_chains([], [untracked, pre_dnat])
    assert lines(per_table["raw"]) == [
        "-A cali-from-host-endpoint -i eth0 -g cali-fh-eth0",
        "-A cali-to-host-endpoint -o eth0 -g cali-th-eth0",
    ]
    assert lines(per_table["mangle"]) == [
        "-A cali-from-host-endpoint -i eth1 -g cali-fh-eth1",
        # normal egress policy for DNAT'd host traffic: every host endpoint
        "-A cali-to-host-endpoint -o eth0 -g cali-th-eth0",
        "-A cali-to-host-endpoint -o eth1 -g cali-th-eth1",
    ]


def test_one_host_endpoint_per_interface() -> None:
    first = HostEndpoint(name="a", interface_name="eth0", untracked_tiers=TIER)
    second = HostEndpoint(name="b", interface_name="eth0")
    per_table = R.dispatch_chains([], [second, first])
    # "a" wins (alphabetically first), so eth0 is dispatched in raw for its untracked tier.
    assert lines(per_table["raw"])[0] == "-A cali-from-host-endpoint -i eth0 -g cali-fh-eth0"
    from_hep = next(c for c in per_table["filter"] if c.name == "cali-from-host-endpoint")
    assert len(from_hep.rules) == 1


def test_unknown_host_interfaces_return_unpoliced() -> None:
    eth0 = HostEndpoint(name="a", interface_name="eth0")
    chains = R.dispatch_chains([], [eth0])["filter"]
    sim = Simulator([*chains, *_endpoint_stubs(["eth0"], "cali-fh-")])
    packet = Packet(iif="eth9")
    assert sim.run("cali-from-host-endpoint", packet) == "RETURN" and packet.log == []
    packet = Packet(iif="eth0")
    assert sim.run("cali-from-host-endpoint", packet) == "RETURN" and packet.log == ["eth0"]


def test_rpf_skip_chain() -> None:
    workloads = [
        WorkloadEndpoint(
            name="vm",
            interface_name="cali2",
            allow_spoofed_source_prefixes=("10.9.0.0/16", "fd00:9::/64"),
        ),
        WorkloadEndpoint(name="pod", interface_name="cali1"),
    ]
    assert lines(R.rpf_skip_chain(workloads)) == [
        "-A cali-rpf-skip -i cali2 -s 10.9.0.0/16 -j ACCEPT"
    ]
    v6 = RuleRenderer(RulesConfig(ip_version=6)).rpf_skip_chain(workloads)
    assert lines(v6) == ["-A cali-rpf-skip -i cali2 -s fd00:9::/64 -j ACCEPT"]
    assert R.rpf_skip_chain([]).rules == ()
