"""Host endpoint policy classes with real packets: applyOnForward, preDNAT and doNotTrack.

node2's fabric interface `eth0` becomes a host endpoint. Traffic from the client workload on
node1 to the server workload on node2 is *forwarded* by node2 (in on eth0, out on the
workload's veth); traffic to node2's own ports is *host* traffic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.lab import probe

NODE2_IP = "172.31.0.12"


@pytest.fixture(scope="module")
def wls(felix_lab: FelixLab) -> Iterator[dict[str, Any]]:
    lab = felix_lab.lab
    out = {
        "client": lab.add_workload("node1", "client", labels={"role": "client"}),
        "server": lab.add_workload("node2", "server", labels={"role": "server"}),
    }
    felix_lab.apply(
        resource(
            "GlobalNetworkPolicy",
            "server-open",
            {"selector": 'role == "server"', "ingress": [{"action": "Allow"}]},
        )
    )
    felix_lab.created.clear()  # module-wide
    responders = [
        probe.Responder(out["server"].netns, tcp_ports=(8080, 9090)).start(),
        probe.Responder(lab.netns_of("node2"), tcp_ports=(7001,)).start(),
    ]
    try:
        yield out
    finally:
        for r in responders:
            r.stop()


def _hep(fl: FelixLab) -> None:
    fl.apply(
        resource(
            "HostEndpoint",
            "node2-eth0",
            {"node": "node2", "interfaceName": "eth0", "expectedIPs": [NODE2_IP]},
            labels={"host-endpoint": "node2"},
        )
    )


def reach(w: dict[str, Any], dst: str, port: int) -> bool:
    ip = NODE2_IP if dst == "node2" else w[dst].ip
    return probe.tcp(w["client"].netns, ip, port, timeout=0.4) is True


def expect(w: dict[str, Any], dst: str, port: int, allowed: bool) -> None:
    eventually(
        lambda: reach(w, dst, port) == allowed,
        10,
        f"client -> {dst}:{port} {'allowed' if allowed else 'blocked'}",
    )


def test_forwarded_traffic_needs_apply_on_forward(fl: FelixLab, wls: dict[str, Any]) -> None:
    expect(wls, "server", 9090, True)
    _hep(fl)
    # a host endpoint with no forward policy does not police forwarded traffic...
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "host-deny-9090",
            {
                "selector": "has(host-endpoint)",
                "ingress": [
                    {"action": "Deny", "protocol": "TCP", "destination": {"ports": [9090]}},
                    {"action": "Allow"},
                ],
            },
        )
    )
    expect(wls, "node2", 7001, True)  # host traffic: the policy applies (allows 7001)
    assert reach(wls, "server", 9090)  # forwarded: untouched without applyOnForward
    # ...an applyOnForward policy does
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "host-deny-9090",
            {
                "selector": "has(host-endpoint)",
                "applyOnForward": True,
                "ingress": [
                    {"action": "Deny", "protocol": "TCP", "destination": {"ports": [9090]}},
                    {"action": "Allow"},
                ],
            },
        )
    )
    expect(wls, "server", 9090, False)
    assert reach(wls, "server", 8080)


def test_pre_dnat_policy_filters_before_forwarding(fl: FelixLab, wls: dict[str, Any]) -> None:
    _hep(fl)
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "allow-host",
            {"selector": "has(host-endpoint)", "ingress": [{"action": "Allow"}]},
        )
    )
    expect(wls, "server", 9090, True)
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "prednat-deny-9090",
            {
                "selector": "has(host-endpoint)",
                "preDNAT": True,
                "applyOnForward": True,
                "ingress": [
                    {"action": "Deny", "protocol": "TCP", "destination": {"ports": [9090]}}
                ],
            },
        )
    )
    expect(wls, "server", 9090, False)
    assert reach(wls, "server", 8080)
    assert "cali-fh-eth0" in fl.iptables_save("node2", "mangle")


def test_untracked_policy_bypasses_conntrack_and_normal_policy(
    fl: FelixLab, wls: dict[str, Any]
) -> None:
    _hep(fl)
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "deny-host",
            {"selector": "has(host-endpoint)", "types": ["Ingress", "Egress"]},
        )
    )
    expect(wls, "node2", 7001, False)
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "untracked-7001",
            {
                "selector": "has(host-endpoint)",
                "doNotTrack": True,
                "applyOnForward": True,
                "ingress": [
                    {"action": "Allow", "protocol": "TCP", "destination": {"ports": [7001]}}
                ],
                "egress": [{"action": "Allow", "protocol": "TCP", "source": {"ports": [7001]}}],
            },
        )
    )
    expect(wls, "node2", 7001, True)
    raw = fl.iptables_save("node2", "raw")
    assert "-j NOTRACK" in raw or "-j CT --notrack" in raw
