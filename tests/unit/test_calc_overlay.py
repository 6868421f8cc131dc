"""The overlay resolver: VTEPs from Nodes, routes to other nodes' blocks by pool mode."""

from __future__ import annotations

from tortie.felix import proto
from tortie.felix.calc.overlay import OverlayResolver

V, D = proto.RouteType.VXLAN, proto.RouteType.DIRECT


def make() -> tuple[OverlayResolver, list[proto.Message]]:
    out: list[proto.Message] = []
    r = OverlayResolver("n1", out.append)
    r.on_node("n1", "172.31.1.11/24", "10.65.0.0", "66:00:00:00:00:01")
    r.on_node("n2", "172.31.1.12/24", "10.65.1.0", "66:00:00:00:00:02")  # same subnet
    r.on_node("n3", "172.31.2.13/24", "10.65.2.0", "66:00:00:00:00:03")  # across a router
    for node, block in (("n1", "10.65.0.0/26"), ("n2", "10.65.1.0/26"), ("n3", "10.65.2.0/26")):
        r.on_affinity(node, block, True)
    return r, out


def routes(msgs: list[proto.Message]) -> dict[str, tuple[proto.RouteType, str]]:
    return {m.dst: (m.type, m.gateway) for m in msgs if isinstance(m, proto.RouteUpdate)}


def test_always_encapsulates_every_remote_block_and_vteps_include_self() -> None:
    r, out = make()
    r.on_pool("p", "10.65.0.0/16", "Always")
    r.flush()
    assert routes(out) == {"10.65.1.0/26": (V, "10.65.1.0"), "10.65.2.0/26": (V, "10.65.2.0")}
    vteps = {m.node: m for m in out if isinstance(m, proto.VXLANTunnelEndpointUpdate)}
    assert set(vteps) == {"n1", "n2", "n3"} and vteps["n3"].parent_device_ip == "172.31.2.13"


def test_cross_subnet_goes_direct_inside_the_subnet() -> None:
    r, out = make()
    r.on_pool("p", "10.65.0.0/16", "CrossSubnet")
    r.flush()
    assert routes(out) == {"10.65.1.0/26": (D, "172.31.1.12"), "10.65.2.0/26": (V, "10.65.2.0")}


def test_never_mode_and_changes_are_diffs() -> None:
    r, out = make()
    r.on_pool("p", "10.65.0.0/16", "Never")
    r.flush()
    assert routes(out) == {}
    r.on_pool("p", "10.65.0.0/16", "Always")
    r.flush()
    out.clear()
    r.on_affinity("n3", "10.65.2.0/26", False)
    r.on_affinity("n3", "10.65.2.64/26", True)
    r.flush()
    assert [type(m) for m in out] == [proto.RouteRemove, proto.RouteUpdate]
    out.clear()
    r.flush()  # nothing changed: nothing emitted
    assert out == []
    r.on_node_removed("n2")
    r.flush()
    assert proto.VXLANTunnelEndpointRemove("n2") in out
    assert proto.RouteRemove("10.65.1.0/26") in out


def test_most_specific_pool_decides() -> None:
    r, out = make()
    r.on_pool("big", "10.65.0.0/16", "Always")
    r.on_pool("small", "10.65.2.0/24", "Never")
    r.flush()
    assert set(routes(out)) == {"10.65.1.0/26"}
