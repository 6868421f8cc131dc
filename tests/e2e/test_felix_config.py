"""Felix configuration from the datastore (restart on change), status reports, and the
workload-to-host default action, in a two-node lab."""

from __future__ import annotations

import json
import re

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.datastore import keys
from tortie.lab import probe
from tortie.selector import parse

NODE1_IP = "172.31.0.11"


def _pid(fl: FelixLab, node: str) -> int:
    """Felix's PID on ``node`` (nsenter execs Felix, so it is the spawned process's PID);
    0 once that process has exited."""
    proc = fl.felix[node]
    return 0 if proc.poll() is not None else proc.pid


def test_status_reports_in_etcd(fl: FelixLab) -> None:
    backend = fl.lab.client.backend
    kv = eventually(lambda: _get(backend, keys.felix_status_key("node1")), 40, "status key")
    status = json.loads(kv.value)
    assert status["uptime"] >= 0 and status["time"].endswith("Z")


def _get(backend: object, key: str) -> object:
    from tortie.datastore.backend import KeyNotFound

    try:
        return backend.get(key)  # type: ignore[attr-defined]
    except KeyNotFound:
        return None


def test_default_endpoint_to_host_action_from_felix_configuration(fl: FelixLab) -> None:
    lab = fl.lab
    wl = lab.add_workload("node1", "to-host", labels={"role": "to-host"})
    responder = probe.Responder(lab.netns_of("node1"), tcp_ports=(7100,)).start()
    try:
        eventually(lambda: f"cali-fw-{wl.host_if}" in fl.iptables_save("node1"), 10, "chains")
        # default: Drop, even though egress policy allows everything
        assert probe.tcp(wl.netns, NODE1_IP, 7100) is False
        before = _pid(fl, "node1")
        fl.apply(
            resource("FelixConfiguration", "node.node1", {"defaultEndpointToHostAction": "Accept"})
        )
        # a restart-needing change: Felix re-executes itself (same PID, as exec keeps it)
        eventually(
            lambda: probe.tcp(wl.netns, NODE1_IP, 7100) is True,
            30,
            "workload reaches its host after the config change",
        )
        assert _pid(fl, "node1") == before
        eventually(lambda: fl.felix_ready("node1"), 30, "ready after restart")
        fl.delete("FelixConfiguration", "node.node1")
        eventually(lambda: probe.tcp(wl.netns, NODE1_IP, 7100) is False, 30, "back to Drop")
    finally:
        responder.stop()
        lab.remove_workload("to-host")


def test_deleted_workload_leaves_ipsets(fl: FelixLab) -> None:
    lab = fl.lab
    peer = lab.add_workload("node2", "peer", labels={"role": "peer"})
    member = lab.add_workload("node1", "member", labels={"role": "member"})
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "peer-from-members",
            {
                "selector": 'role == "peer"',
                "ingress": [{"action": "Allow", "source": {"selector": 'role == "member"'}}],
            },
        )
    )
    set_name = ("cali40" + parse('role == "member"').unique_id)[:31]

    def members() -> str:
        out = lab.exec("node2", ["ipset", "list", set_name]).stdout
        return out.split("Members:", 1)[1] if "Members:" in out else ""

    eventually(lambda: member.ip in members(), 10, "member in the set")
    lab.remove_workload("member")
    eventually(lambda: member.ip not in members(), 10, "member gone from the set")
    fl.delete("GlobalNetworkPolicy", "peer-from-members")
    eventually(
        lambda: (
            not re.search(re.escape(set_name), lab.exec("node2", ["ipset", "list", "-n"]).stdout)
        ),
        10,
        "set removed with the policy",
    )
    lab.remove_workload("peer")
    del peer
