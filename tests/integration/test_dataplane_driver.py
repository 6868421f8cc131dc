"""ApplyPlan: the phase order inside one apply, against the real kernel."""

from __future__ import annotations

import subprocess

import pytest

from tortie.felix.dataplane.driver import PHASES, ApplyPlan
from tortie.felix.dataplane.interfaces import InterfaceManager
from tortie.felix.dataplane.ipsets import IpsetManager
from tortie.felix.dataplane.iptables import Chain, Rule, Table
from tortie.felix.dataplane.netns import run_in_netns
from tortie.felix.dataplane.routes import RouteTable, RouteTarget

pytestmark = pytest.mark.root

WL = "cali1234567890a"



def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def test_apply_order_lets_rules_and_sets_come_and_go_in_one_batch(
    nss: tuple[str, str],
) -> None:
    node, wl = nss

    def body() -> None:
        ipsets = IpsetManager()
        filt, nat = Table("filter"), Table("nat")
        routes = RouteTable()
        plan = ApplyPlan(
            ipsets=[ipsets], tables=[filt, nat], routes=[routes], interfaces=InterfaceManager()
        )
        assert [t.name for t in plan.tables] == ["nat", "filter"]

        # Batch 1: a new set and the rule that uses it; a route for a not-yet-existing veth.
        ipsets.replace_members("cali40s:web", "hash:net", ["10.65.0.0/26"])
        filt.update_chain(
            Chain("cali-FORWARD", (Rule("-m set --match-set cali40s:web src", "-j ACCEPT"),))
        )
        filt.set_rule_insertions("FORWARD", [Rule(action="-j cali-FORWARD")])
        nat.update_chain(Chain("cali-nat-outgoing", (Rule(action="-j RETURN"),)))
        nat.set_rule_insertions("POSTROUTING", [Rule(action="-j cali-nat-outgoing")])
        routes.set_routes(WL, [RouteTarget("10.65.0.5/32")])
        report = plan.apply()
        assert list(report.phase_seconds) == list(PHASES)
        assert report.error is None and report.total_seconds > 0
        assert "cali40s:web" in sh("ipset list -n")
        assert "--match-set cali40s:web" in sh("iptables-save -t filter")

        # The veth appears: the interface phase tells the route table, same apply.
        sh(f"ip link add {WL} type veth peer name eth0 netns {wl}")
        plan.interfaces.resync()  # as after a batch of link events
        plan.apply()
        assert f"10.65.0.5 dev {WL} scope link" in sh("ip route")

        # Batch 2: the rule and its set go together; ipset deletion runs after iptables.
        filt.update_chain(Chain("cali-FORWARD", ()))
        ipsets.remove_set("cali40s:web")
        report = plan.apply()
        assert "cali40s:web" not in sh("ipset list -n")
        assert report.commands >= 2

        # Leftovers wait for in-sync.
        sh("ipset create cali40s:stale hash:net")
        sh("iptables -N cali-stale")
        plan.apply()
        assert "cali40s:stale" in sh("ipset list -n") and "cali-stale" in sh("iptables-save")
        plan.set_in_sync()
        plan.apply()
        assert "cali40s:stale" not in sh("ipset list -n")
        assert "cali-stale" not in sh("iptables-save")
        # A steady state costs nothing.
        report = plan.apply()
        assert report.commands == 0 and report.lines == 0
        routes.close()
        plan.interfaces.close()

    run_in_netns(node, body)
