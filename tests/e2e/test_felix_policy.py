"""Felix enforcing policy with real packets in a two-node namespace lab.

Workloads: `client` (node1, role=client), `server` (node2, role=server), `local-server`
(node1, role=server: same host as the client), `other` (node2, role=other). Servers echo on
TCP 8080 and 9090 and UDP 5353. A module-wide policy allows all egress, so each test is about
ingress unless it says otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.lab import probe


class W:
    def __init__(self, fl: FelixLab, wl: Any) -> None:
        self.wl = wl
        self.ns = wl.netns
        self.ip = wl.ip
        self.fl = fl


@pytest.fixture(scope="module")
def wls(felix_lab: FelixLab) -> Iterator[dict[str, W]]:
    lab = felix_lab.lab
    specs = {
        "client": ("node1", {"role": "client"}),
        "server": ("node2", {"role": "server"}),
        "local-server": ("node1", {"role": "server"}),
        "other": ("node2", {"role": "other"}),
    }
    out = {
        name: W(felix_lab, lab.add_workload(node, name, labels=labels))
        for name, (node, labels) in specs.items()
    }
    responders = [
        probe.Responder(out[n].ns, tcp_ports=(8080, 9090), udp_ports=(5353,)).start()
        for n in ("server", "local-server", "other", "client")
    ]
    try:
        yield out
    finally:
        for r in responders:
            r.stop()


def tcp(w: dict[str, W], src: str, dst: str, port: int) -> Any:
    return probe.tcp(w[src].ns, w[dst].ip, port, timeout=0.4)


def expect_tcp(
    w: dict[str, W], src: str, dst: str, port: int, ok: bool, timeout: float = 10.0
) -> None:
    eventually(
        lambda: (tcp(w, src, dst, port) is True) == ok,
        timeout,
        f"{src} -> {dst}:{port} {'allowed' if ok else 'blocked'}",
    )


def test_default_deny_without_profile_or_policy(fl: FelixLab, wls: dict[str, W]) -> None:
    # Felix programmed routes and proxy ARP (the lab did not), yet nothing is allowed in.
    assert fl.lab.exec("node1", ["ip", "route", "show", wls["client"].ip]).stdout.strip()
    for dst in ("server", "local-server", "other"):
        assert tcp(wls, "client", dst, 8080) is False
    assert probe.icmp(wls["client"].ns, wls["server"].ip) is False


def test_profile_allows_its_own_members(fl: FelixLab, wls: dict[str, W]) -> None:
    fl.apply(
        resource(
            "Profile",
            "members",
            {
                "labelsToApply": {"member-of": "members"},
                "ingress": [{"action": "Allow", "source": {"selector": 'member-of == "members"'}}],
                "egress": [{"action": "Allow"}],
            },
        )
    )
    for name in ("client", "server"):
        wep = fl.lab.client.get("WorkloadEndpoint", wls[name].wl.wep, "default")
        wep.spec.profiles = ["members"]
        fl.lab.client.update(wep)
    try:
        expect_tcp(wls, "client", "server", 8080, True)
        assert probe.icmp(wls["client"].ns, wls["server"].ip)
        expect_tcp(wls, "other", "server", 8080, False)
    finally:
        for name in ("client", "server"):
            wep = fl.lab.client.get("WorkloadEndpoint", wls[name].wl.wep, "default")
            wep.spec.profiles = []
            fl.lab.client.update(wep)
    expect_tcp(wls, "client", "server", 8080, False)


def test_global_policy_ports_protocols_and_selectors(fl: FelixLab, wls: dict[str, W]) -> None:
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "server-ingress",
            {
                "selector": 'role == "server"',
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {"selector": 'role == "client"'},
                        "destination": {"ports": ["8000:8090"]},
                    },
                    {"action": "Allow", "protocol": "UDP", "destination": {"ports": [5353]}},
                    {
                        "action": "Allow",
                        "protocol": "ICMP",
                        "icmp": {"type": 8},
                        "source": {"notSelector": 'role == "other"'},
                    },
                ],
            },
        )
    )
    expect_tcp(wls, "client", "server", 8080, True)
    expect_tcp(wls, "client", "local-server", 8080, True)  # same host
    assert tcp(wls, "client", "server", 9090) is False  # port not in the range
    assert tcp(wls, "other", "server", 8080) is False  # source not selected
    assert probe.udp(wls["other"].ns, wls["server"].ip, 5353) is True  # any source, UDP
    assert probe.icmp(wls["client"].ns, wls["server"].ip) is True
    assert probe.icmp(wls["other"].ns, wls["server"].ip) is False  # notSelector
    assert tcp(wls, "server", "client", 8080) is False  # the client has no ingress policy


def test_nets_and_not_nets(fl: FelixLab, wls: dict[str, W]) -> None:
    client_ip = wls["client"].ip
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "by-cidr",
            {
                "selector": 'role == "server"',
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {"nets": ["10.65.0.0/16"], "notNets": [f"{client_ip}/32"]},
                    }
                ],
            },
        )
    )
    expect_tcp(wls, "other", "server", 8080, True)
    assert tcp(wls, "client", "server", 8080) is False


def test_label_change_moves_endpoint_in_and_out(fl: FelixLab, wls: dict[str, W]) -> None:
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "from-trusted",
            {
                "selector": 'role == "server"',
                "ingress": [{"action": "Allow", "source": {"selector": 'trusted == "yes"'}}],
            },
        )
    )
    wep_name = wls["other"].wl.wep
    expect_tcp(wls, "other", "server", 8080, False)  # the previous test's policy may linger

    def relabel(labels: dict[str, str]) -> float:
        wep = fl.lab.client.get("WorkloadEndpoint", wep_name, "default")
        wep.metadata.labels = {**(wep.metadata.labels or {}), **labels}
        t0 = time.monotonic()
        fl.lab.client.update(wep)
        return t0

    t0 = relabel({"trusted": "yes"})
    expect_tcp(wls, "other", "server", 8080, True)
    grant = time.monotonic() - t0
    t0 = relabel({"trusted": "no"})
    expect_tcp(wls, "other", "server", 8080, False)
    revoke = time.monotonic() - t0
    assert grant < 5 and revoke < 5, (grant, revoke)


def test_deleted_workload_leaves_nothing_behind(fl: FelixLab, wls: dict[str, W]) -> None:
    lab = fl.lab
    tmp = lab.add_workload("node1", "tmp", labels={"role": "tmp"})
    eventually(lambda: f"cali-tw-{tmp.host_if}" in fl.iptables_save("node1"), 10, "tmp chains")
    eventually(
        lambda: lab.exec("node1", ["ip", "route", "show", tmp.ip]).stdout.strip(), 10, "tmp route"
    )
    lab.remove_workload("tmp")
    eventually(lambda: tmp.host_if not in fl.iptables_save("node1"), 10, "tmp chains gone")
    assert lab.exec("node1", ["ip", "route", "show", tmp.ip]).stdout.strip() == ""


def test_metrics_and_health(fl: FelixLab, wls: dict[str, W]) -> None:
    text = fl.http_get("node1", 9091, "/metrics")
    assert "felix_int_dataplane_apply_time_seconds_count" in text
    assert "felix_active_local_policies" in text
    assert fl.felix_ready("node1")
