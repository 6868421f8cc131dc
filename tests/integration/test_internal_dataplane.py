"""The internal dataplane, both families, in a throwaway namespace: messages → kernel."""

from __future__ import annotations

import subprocess

import pytest

from tortie.felix import config, proto
from tortie.felix.dataplane.internal import FamilyDataplanes
from tortie.felix.dataplane.netns import netns_unavailable_reason, run_in_netns, temp_netns

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)


POL = proto.PolicyID("default", "p")
MSGS: list[proto.Message] = [
    proto.IPSetUpdate("s:abc", proto.IPSetType.NET, frozenset({"fd00::1", "10.0.0.1"})),
    proto.ActivePolicyUpdate(
        POL,
        proto.Policy(inbound_rules=(proto.ParsedRule(action="allow", src_ipset_ids=("s:abc",)),)),
    ),
    proto.WorkloadEndpointUpdate(
        proto.WorkloadEndpointID("k8s", "default/x", "eth0", "default/n1-k8s-x-eth0"),
        proto.WorkloadEndpoint(
            name="n1-k8s-x-eth0",
            interface_name="cali0123456789a",
            ipv4_nets=("10.65.0.5/32",),
            ipv6_nets=("fd00::5/128",),
            tiers=(proto.TierInfo("default", ingress_policies=(POL,)),),
        ),
    ),
    proto.IPAMPoolUpdate("10.65.0.0/16", "10.65.0.0/16", masquerade=True),
    proto.InSync(),
]


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_both_families_programmed_from_one_message_stream() -> None:
    cfg = config.load({"NODENAME": "n1", "FELIX_IPV6SUPPORT": "true"}, "/nonexistent")
    with temp_netns("tidp") as ns:

        def go() -> tuple[str, str, str, str]:
            dp = FamilyDataplanes(cfg)
            try:
                dp.on_messages(MSGS)
                dp.apply()
                return (
                    _run(["iptables-save", "-t", "filter"]),
                    _run(["ip6tables-save", "-t", "filter"]),
                    _run(["ipset", "save"]),
                    _run(["iptables-save", "-t", "nat"]),
                )
            finally:
                dp.close()

        v4, v6, ipsets, nat = run_in_netns(ns, go)
    for text in (v4, v6):
        assert ":cali-tw-cali0123456789a" in text
        assert "-A cali-pi-default/p" in text
    assert "add cali40s:abc 10.0.0.1" in ipsets and "add cali60s:abc fd00::1" in ipsets
    assert "fd00::1" not in ipsets.split("create cali60s:abc")[0]  # v6 member not in v4 set
    assert "add cali40masq-ipam-pools 10.65.0.0/16" in ipsets
    assert "MASQUERADE" in nat


def test_ipv4_only_by_default() -> None:
    cfg = config.load({"NODENAME": "n1"}, "/nonexistent")
    with temp_netns("tidp") as ns:

        def go() -> str:
            dp = FamilyDataplanes(cfg)
            try:
                dp.on_messages(MSGS)
                dp.apply()
                return _run(["ip6tables-save", "-t", "filter"])
            finally:
                dp.close()

        assert "cali-" not in run_in_netns(ns, go)
