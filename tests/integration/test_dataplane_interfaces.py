"""Workload-interface sysctls, link tracking and a workload reachable end to end.

Each test uses a "node" namespace and a "workload" namespace joined by a veth whose host
side is ``cali...``, as the CNI plugin leaves it.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tortie.felix.dataplane.interfaces import (
    InterfaceManager,
    LinkWatcher,
    configure_workload_interface,
    read_sysctl,
)
from tortie.felix.dataplane.netns import run_in_netns
from tortie.felix.dataplane.routes import RouteTable, RouteTarget

pytestmark = pytest.mark.root

WL = "cali1234567890a"



def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def add_workload_veth(node: str, wl: str, host_if: str = WL, up: bool = False) -> None:
    sh(f"ip -n {node} link add {host_if} type veth peer name eth0 netns {wl}")
    sh(f"ip -n {wl} link set eth0 up")
    if up:
        sh(f"ip -n {node} link set {host_if} up")


def test_configure_workload_interface_sets_calico_sysctls(nss: tuple[str, str]) -> None:
    node, wl = nss
    add_workload_veth(node, wl)

    def body() -> None:
        ipv6 = os.path.exists(f"/proc/sys/net/ipv6/conf/{WL}")
        written = configure_workload_interface(WL, ipv6=ipv6)
        assert read_sysctl(f"/proc/sys/net/ipv4/conf/{WL}/proxy_arp") == "1"
        assert read_sysctl(f"/proc/sys/net/ipv4/neigh/{WL}/proxy_delay") == "0"
        assert read_sysctl(f"/proc/sys/net/ipv4/conf/{WL}/route_localnet") == "1"
        assert read_sysctl(f"/proc/sys/net/ipv4/conf/{WL}/forwarding") == "1"
        assert read_sysctl(f"/proc/sys/net/ipv4/conf/{WL}/rp_filter") == "1"
        if ipv6:
            assert read_sysctl(f"/proc/sys/net/ipv6/conf/{WL}/proxy_ndp") == "1"
            assert read_sysctl(f"/proc/sys/net/ipv6/conf/{WL}/forwarding") == "1"
        assert written >= 4  # forwarding may already be on by inheritance
        assert configure_workload_interface(WL, ipv6=ipv6) == 0  # nothing rewritten
        assert "UP" in sh(f"ip -o link show {WL}").split("<", 1)[1].split(">", 1)[0].split(",")

    run_in_netns(node, body)
    # The root namespace has no such interface, and its sysctls were not touched.
    assert not os.path.exists(f"/proc/sys/net/ipv4/conf/{WL}")


def test_interface_manager_configures_once_per_appearance(nss: tuple[str, str]) -> None:
    node, wl = nss

    def body() -> None:
        events: list[tuple[str, int | None, bool]] = []
        mgr = InterfaceManager()
        mgr.add_listener(lambda name, idx, up: events.append((name, idx, up)))
        watcher = LinkWatcher()
        try:
            stats = mgr.apply()  # start-up: link dump, global sysctls
            assert stats.reads == 1
            assert read_sysctl("/proc/sys/net/ipv4/ip_forward") == "1"
            assert mgr.configured == set()

            add_workload_veth(node, wl)  # host side left down
            sh("ip link add notours type veth peer name notours1")
            mgr.on_link_updates(watcher.read_updates())
            stats = mgr.apply()
            assert mgr.configured == {WL}
            assert stats.commands == 1  # brought up
            assert read_sysctl(f"/proc/sys/net/ipv4/conf/{WL}/proxy_arp") == "1"
            assert read_sysctl("/proc/sys/net/ipv4/conf/notours/proxy_arp") == "0"
            first_index = mgr.interfaces[WL][0]
            assert (WL, first_index, True) in events

            # Flapping is not a new appearance: nothing is rewritten.
            sh(f"ip link set {WL} down && ip link set {WL} up")
            mgr.on_link_updates(watcher.read_updates())
            stats = mgr.apply()
            assert stats.written == 0 and stats.commands == 0

            # Deleted and recreated (new ifindex): configured again.
            sh(f"ip link del {WL}")
            mgr.on_link_updates(watcher.read_updates())
            mgr.apply()
            assert mgr.configured == set() and (WL, None, False) in events
            add_workload_veth(node, wl)
            mgr.on_link_updates(watcher.read_updates())
            stats = mgr.apply()
            assert mgr.configured == {WL} and stats.written >= 4
            assert mgr.interfaces[WL][0] != first_index

            # A resync (e.g. after an event overflow) changes nothing that is right.
            mgr.resync()
            stats = mgr.apply()
            assert stats.written == 0 and stats.commands == 0
        finally:
            watcher.close()
            mgr.close()

    run_in_netns(node, body)


def test_workload_reachable_through_proxy_arp_and_host_route(nss: tuple[str, str]) -> None:
    """Calico's L3 plumbing, end to end: a TCP connection from the node to a workload."""
    node, wl = nss
    add_workload_veth(node, wl)
    sh(f"ip -n {wl} addr add 10.65.0.5/32 dev eth0")
    sh(f"ip -n {wl} route add 169.254.1.1 dev eth0 scope link")
    sh(f"ip -n {wl} route add default via 169.254.1.1 dev eth0")
    # An uplink with a default route: proxy ARP answers only for addresses we can route.
    sh(f"ip -n {node} link add up0 type veth peer name up1")
    sh(f"ip -n {node} link set up0 up && ip -n {node} link set up1 up")
    sh(f"ip -n {node} addr add 172.18.0.2/24 dev up0")
    sh(f"ip -n {node} route add default via 172.18.0.1")

    def listen() -> socket.socket:
        s = socket.socket()
        s.bind(("10.65.0.5", 0))
        s.listen(1)
        return s

    server = run_in_netns(wl, listen)  # stays bound to the workload namespace
    port = server.getsockname()[1]

    def body() -> None:
        mgr = InterfaceManager()
        rt = RouteTable()
        mgr.add_listener(rt.on_link_update)
        rt.set_routes(WL, [RouteTarget("10.65.0.5/32")])
        mgr.apply()
        rt.apply()
        with socket.create_connection(("10.65.0.5", port), timeout=5) as c:
            c.sendall(b"hi")
        conn, peer = server.accept()
        with conn:
            assert conn.recv(2) == b"hi"
            assert peer[0] == "172.18.0.2"
        mgr.close()
        rt.close()

    try:
        run_in_netns(node, body)
    finally:
        server.close()
