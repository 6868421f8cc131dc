"""RouteTable against the real kernel: a "node" namespace whose workload veths have their
peers in a second "workload" namespace, as CNI leaves them."""

from __future__ import annotations

import subprocess

import pytest

from tortie.felix.dataplane.netns import run_in_netns
from tortie.felix.dataplane.routes import NO_IFACE, RouteTable, RouteTarget

pytestmark = pytest.mark.root

WL1 = "cali1234567890a"
WL2 = "calibbbbbbbbbbb"



def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def add_workload_veth(node: str, wl: str, host_if: str, peer: str = "eth0") -> None:
    sh(f"ip -n {node} link add {host_if} type veth peer name {peer} netns {wl}")
    sh(f"ip -n {wl} link set {peer} up")
    sh(f"ip -n {node} link set {host_if} up")


def ifindex(node: str, ifname: str) -> int:
    return int(sh(f"ip -n {node} -o link show {ifname}").split(":", 1)[0])


def routes(node: str, extra: str = "") -> list[str]:
    out = sh(f"ip -n {node} {extra} route show table main")
    return [" ".join(line.split()) for line in out.splitlines()]


def test_workload_routes_add_change_remove(nss: tuple[str, str]) -> None:
    node, wl = nss
    add_workload_veth(node, wl, WL1)
    sh(f"ip -n {node} route add 192.0.2.0/24 dev {WL1}")  # stray, on an interface we manage

    def body() -> None:
        rt = RouteTable()
        rt.set_routes(WL1, [RouteTarget("10.65.0.5/32")])
        stats = rt.apply()
        # The interface is managed, so its stray route goes; our /32 arrives.
        assert stats.written == 1 and stats.deleted == 1
        assert routes(node) == [f"10.65.0.5 dev {WL1} scope link"]
        socket_before = rt._ipr
        assert rt.apply().commands == 0  # nothing dirty: no netlink writes

        rt.set_routes(WL1, [RouteTarget("10.65.0.6/32"), RouteTarget("10.65.0.7/32")])
        stats = rt.apply()
        assert (stats.written, stats.deleted) == (2, 1)
        assert routes(node) == [
            f"10.65.0.6 dev {WL1} scope link",
            f"10.65.0.7 dev {WL1} scope link",
        ]
        rt.set_routes(WL1, [])
        assert rt.apply().deleted == 2
        assert routes(node) == []
        assert rt._ipr is socket_before  # one netlink socket across applies
        rt.close()

    run_in_netns(node, body)


def test_interface_appearing_later_and_flapping(nss: tuple[str, str]) -> None:
    node, wl = nss

    def body() -> None:
        rt = RouteTable()
        rt.set_routes(WL2, [RouteTarget("10.65.1.9/32")])
        stats = rt.apply()
        assert stats.deferred == 1 and stats.written == 0
        add_workload_veth(node, wl, WL2)
        stats = rt.apply()  # pending interface: re-checked without any event
        assert stats.written == 1
        assert routes(node) == [f"10.65.1.9 dev {WL2} scope link"]
        # Down: the kernel drops the route; up again (reported as an event): it is back.
        sh(f"ip -n {node} link set {WL2} down")
        assert routes(node) == []
        sh(f"ip -n {node} link set {WL2} up")
        rt.on_link_update(WL2, ifindex(node, WL2), up=True)
        assert rt.apply().written == 1
        assert routes(node) == [f"10.65.1.9 dev {WL2} scope link"]
        # Deleted and recreated with a new ifindex.
        sh(f"ip -n {node} link del {WL2}")
        rt.on_link_update(WL2, None)
        assert rt.apply().deferred == 1
        add_workload_veth(node, wl, WL2, peer="eth1")
        assert rt.apply().written == 1
        assert routes(node) == [f"10.65.1.9 dev {WL2} scope link"]

    run_in_netns(node, body)


def test_others_routes_untouched_and_vxlan_style_routes(nss: tuple[str, str]) -> None:
    node, wl = nss
    add_workload_veth(node, wl, "eth0", peer="fabric0")  # stands in for the uplink
    sh(f"ip -n {node} addr add 172.18.0.2/24 dev eth0")
    sh(f"ip -n {node} route add default via 172.18.0.1")
    sh(f"ip -n {node} route add blackhole 10.99.0.0/26")  # someone else's, proto boot
    sh(f"ip -n {node} route add blackhole 10.98.0.0/26 proto 80")  # a leftover of ours
    foreign = routes(node)

    def body() -> None:
        rt = RouteTable(protocol=80)
        rt.set_routes("eth0", [RouteTarget("10.66.0.0/26", gateway="10.66.255.1", onlink=True)])
        rt.apply()
        got = routes(node)
        assert "10.66.0.0/26 via 10.66.255.1 dev eth0 proto 80 onlink" in got
        # eth0 is a shared interface: its default route and the kernel's subnet route stay.
        assert "default via 172.18.0.1 dev eth0" in got
        assert "172.18.0.0/24 dev eth0 proto kernel scope link src 172.18.0.2" in got
        # Before in-sync, the leftover proto-80 blackhole stays; after, it goes.
        assert "blackhole 10.98.0.0/26 proto 80" in got
        rt.invalidate()
        rt.apply(allow_cleanup=True)
        got = routes(node)
        assert "blackhole 10.98.0.0/26 proto 80" not in got
        assert "blackhole 10.99.0.0/26" in got  # proto boot: never ours
        rt.set_routes(NO_IFACE, [RouteTarget("10.65.0.0/26", type="blackhole")])
        rt.apply()
        assert "blackhole 10.65.0.0/26 proto 80" in routes(node)
        # Change of gateway is a replace; removal leaves the rest alone.
        rt.set_routes("eth0", [RouteTarget("10.66.0.0/26", gateway="10.66.255.2", onlink=True)])
        rt.set_routes(NO_IFACE, [])
        rt.apply(allow_cleanup=True)
        got = routes(node)
        assert "10.66.0.0/26 via 10.66.255.2 dev eth0 proto 80 onlink" in got
        assert not any("10.65.0.0" in r or "10.66.255.1" in r for r in got)
        rt.set_routes("eth0", [])
        rt.apply(allow_cleanup=True)
        assert sorted(routes(node)) == sorted(r for r in foreign if "10.98.0.0" not in r)

    run_in_netns(node, body)


def test_prefix_cleanup_waits_for_in_sync_and_ipv6(nss: tuple[str, str]) -> None:
    node, wl = nss
    add_workload_veth(node, wl, WL1)
    sh(f"ip -n {node} route add 10.65.0.9/32 dev {WL1} scope link")  # e.g. left by CNI

    def body() -> None:
        rt = RouteTable(iface_prefixes=("cali",))
        assert rt.apply().deleted == 0
        assert routes(node) == [f"10.65.0.9 dev {WL1} scope link"]
        # The first apply that may clean up re-reads everything by itself.
        assert rt.apply(allow_cleanup=True).deleted == 1
        assert routes(node) == []

        v6 = RouteTable(ip_version=6)
        v6.set_routes(WL1, [RouteTarget("fd00:65::5/128")])
        v6.apply()
        assert any(r.startswith(f"fd00:65::5 dev {WL1}") for r in routes(node, "-6"))
        # The interface's fe80::/64 (proto kernel) is not ours to delete.
        v6.set_routes(WL1, [])
        v6.apply(allow_cleanup=True)
        got = routes(node, "-6")
        assert not any(r.startswith("fd00:65::5") for r in got)
        assert any(r.startswith(f"fe80::/64 dev {WL1} proto kernel") for r in got)

    run_in_netns(node, body)
