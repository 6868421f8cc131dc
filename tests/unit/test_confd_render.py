"""confd's pure parts: resources → peerings → bird.cfg (golden files), checked by ``bird -p``.

Golden files live in ``tests/unit/golden/confd/``; ``UPDATE_GOLDEN=1`` rewrites them. Every
rendering (golden or not) is also parsed by the real ``bird -p`` when BIRD is installed: a
configuration confd writes must always be one BIRD accepts, whatever the resources say.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tortie.api import validate
from tortie.confd.bird import (
    BirdProtocol,
    calico_peers,
    check_config,
    parse_protocols,
)
from tortie.confd.daemon import Confd, ConfdPaths, parse_timers
from tortie.confd.model import BlockAffinity, Snapshot
from tortie.confd.peers import peerings
from tortie.confd.render import (
    RenderError,
    RenderOptions,
    Timers,
    filter_function_name,
    hash_to_ipv4,
    render,
)
from tortie.ctl.node import format_table
from tortie.datastore import keys
from tortie.datastore.syncer import Update

GOLDEN = Path(__file__).parent / "golden" / "confd"
HAVE_BIRD = shutil.which("bird") is not None


def res(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> Any:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return validate(
        {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}
    )


def node(i: int, **bgp: Any) -> Any:
    labels = bgp.pop("labels", None)
    spec = {"ipv4Address": f"172.31.0.{10 + i}/24", **bgp}
    return res("Node", f"node{i}", {"bgp": spec}, labels)


POOL = res("IPPool", "default-ipv4-ippool", {"cidr": "10.65.0.0/16", "blockSize": 24})


def block(i: int, state: str = "confirmed") -> BlockAffinity:
    return BlockAffinity(f"10.65.{i - 1}.0/24", 4, state)


def bird_ok(text: str, tmp_path: Path) -> None:
    if not HAVE_BIRD:
        return
    path = tmp_path / "bird.cfg"
    path.write_text(text)
    error = check_config(str(path))
    assert error is None, f"bird -p refused the rendering: {error}\n{text}"


def golden(name: str, text: str, tmp_path: Path) -> None:
    bird_ok(text, tmp_path)
    path = GOLDEN / f"{name}.cfg"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


# --- golden renderings -------------------------------------------------------------------------


def test_mesh_of_three(tmp_path: Path) -> None:
    snap = Snapshot.of([node(1), node(2), node(3), POOL], [block(1)])
    text = render(snap, "node1")
    golden("mesh-of-three", text, tmp_path)
    assert "protocol bgp Mesh_172_31_0_12 from bgp_template" in text
    assert "protocol bgp Mesh_172_31_0_13 from bgp_template" in text
    assert "route 10.65.0.0/24 blackhole;" in text
    # node2's view: node1 (lower address) connects actively, node3 connects to node2.
    text2 = render(snap, "node2")
    mesh1 = text2.split("protocol bgp Mesh_172_31_0_11")[1].split("\n}")[0]
    mesh3 = text2.split("protocol bgp Mesh_172_31_0_13")[1].split("\n}")[0]
    assert "passive on" not in mesh1 and "passive on" in mesh3


RR_PEER = res(
    "BGPPeer",
    "peer-with-route-reflectors",
    {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
)
NO_MESH = res("BGPConfiguration", "default", {"nodeToNodeMeshEnabled": False})


def rr_snapshot(second_rr: bool = False) -> Snapshot:
    rr = {"routeReflectorClusterID": "244.0.0.1", "labels": {"route-reflector": "true"}}
    nodes = [node(1, **dict(rr)), node(2), node(3), node(4), node(5)]
    if second_rr:
        nodes.append(node(6, **dict(rr)))
    return Snapshot.of([*nodes, POOL, RR_PEER, NO_MESH], [block(1)])


def test_route_reflector_and_its_clients(tmp_path: Path) -> None:
    snap = rr_snapshot(second_rr=True)
    reflector = render(snap, "node1")
    golden("route-reflector", reflector, tmp_path)
    assert reflector.count("rr client;") == 4  # clients node2-5, not the other reflector
    assert "protocol bgp Node_172_31_0_16" in reflector  # RR-to-RR, same cluster
    assert "Mesh_" not in reflector
    client = render(snap, "node2")
    golden("route-reflector-client", client, tmp_path)
    assert "rr client" not in client
    assert "protocol bgp Node_172_31_0_11" in client and "protocol bgp Node_172_31_0_16" in client
    assert "Node_172_31_0_13" not in client  # clients do not peer with each other


def test_explicit_peers(tmp_path: Path) -> None:
    tor = res(
        "BGPPeer",
        "tor",
        {
            "peerIP": "172.31.0.1",
            "asNumber": 65001,
            "password": {"secretKeyRef": {"name": "bgp", "key": "tor"}},
            "keepOriginalNextHop": True,
            "maxRestartTime": "90s",
            "keepaliveTime": "20s",
            "numAllowedLocalASNumbers": 2,
            "filters": ["only-pools"],
        },
    )
    ext = res(
        "BGPPeer",
        "node1-external",
        {
            "node": "node1",
            "peerIP": "192.0.2.7:1790",
            "asNumber": 65002,
            "sourceAddress": "None",
            "localASNumber": 65100,
            "nextHopMode": "Self",
        },
    )
    only = res(
        "BGPFilter",
        "only-pools",
        {
            "exportV4": [
                {"action": "Accept", "matchOperator": "In", "cidr": "10.65.0.0/16"},
                {"action": "Reject"},
            ],
            "importV4": [
                {
                    "action": "Reject",
                    "matchOperator": "NotIn",
                    "cidr": "10.0.0.0/8",
                    "prefixLength": {"min": 16, "max": 24},
                    "source": "RemotePeers",
                    "interface": "eth*",
                }
            ],
        },
    )
    snap = Snapshot.of([node(1), node(2), POOL, tor, ext, only], [block(1)])
    secrets = {("bgp", "tor"): "s3cret"}
    text = render(snap, "node1", RenderOptions(secrets=lambda n, k: secrets.get((n, k))))
    golden("explicit-peers", text, tmp_path)
    assert "protocol bgp Global_172_31_0_1 from bgp_template" in text
    assert 'password "s3cret";' in text
    assert "next hop keep;" in text  # eBGP with keepOriginalNextHop
    assert "protocol bgp Node_192_0_2_7_port_1790" in text
    assert "neighbor 192.0.2.7 port 1790 as 65002;" in text and "local as 65100;" in text
    assert "'bgp_only-pools_exportFilterV4'();" in text
    assert "if ((net !~ [ 10.0.0.0/8{16,24} ])&&((defined(source))&&(source ~ [ RTS_BGP ]))" in text
    # node2 only has the global peer.
    text2 = render(snap, "node2", RenderOptions(secrets=lambda n, k: secrets.get((n, k))))
    assert "Global_172_31_0_1" in text2 and "Node_192_0_2_7" not in text2


def test_disabled_mesh_without_peers(tmp_path: Path) -> None:
    snap = Snapshot.of([node(1), node(2), POOL, NO_MESH], [block(1)])
    text = render(snap, "node1")
    golden("mesh-disabled", text, tmp_path)
    assert "# Node-to-node mesh disabled" in text
    assert "protocol bgp" not in text


def test_pools_export_and_communities(tmp_path: Path) -> None:
    no_export = res("IPPool", "private", {"cidr": "10.70.0.0/16", "disableBGPExport": True})
    vxlan = res("IPPool", "overlay", {"cidr": "10.80.0.0/16", "vxlanMode": "Always"})
    cfg = res(
        "BGPConfiguration",
        "default",
        {
            "asNumber": 64600,
            "logSeverityScreen": "Debug",
            "ignoredInterfaces": ["docker*"],
            "communities": [{"name": "pods", "value": "64600:100"}],
            "prefixAdvertisements": [
                {"cidr": "10.65.0.0/16", "communities": ["pods", "64600:200:300"]}
            ],
        },
    )
    snap = Snapshot.of(
        [node(1), node(2, asNumber=64601), POOL, no_export, vxlan, cfg],
        [block(1), BlockAffinity("10.65.9.0/24", 4, "pendingDeletion")],
    )
    text = render(snap, "node1")
    golden("pools-communities", text, tmp_path)
    assert "if ( net ~ 10.70.0.0/16 ) then { reject; }  # BGP export is disabled." in text
    export = text.split("function calico_export_to_bgp_peers")[1].split("\n}")[0]
    assert "10.70.0.0/16" not in export and "if ( net ~ 10.65.0.0/16 ) then { accept; }" in export
    assert (
        "if ( net ~ 10.80.0.0/16 ) then { reject; }  # VXLAN routes are handled by Felix." in text
    )
    assert "bgp_community.add((64600, 100));" in text
    assert "bgp_large_community.add((64600, 200, 300));" in text
    assert 'interface -"docker*", -"cali*", -"kube-ipvs*", "*";' in text
    assert "debug all;" in text
    assert "local as 64600;" in text and "neighbor 172.31.0.12 as 64601;" in text
    assert "route 10.65.9.0/24 blackhole;" in text  # still routed while being released...
    assert "if ( net = 10.65.9.0/24 )" not in text  # ...but no longer aggregated


def test_dual_stack(tmp_path: Path) -> None:
    n1 = node(1, ipv6Address="fd00:31::11/64")
    n2 = node(2, ipv6Address="fd00:31::12/64")
    pool6 = res("IPPool", "default-ipv6-ippool", {"cidr": "fd00:65::/48"})
    snap = Snapshot.of(
        [n1, n2, POOL, pool6],
        [block(1), BlockAffinity("fd00:65::/122", 6)],
    )
    text = render(snap, "node1")
    golden("dual-stack", text, tmp_path)
    assert "protocol bgp Mesh_fd00_31__12 from bgp_template_v6" in text
    assert "route fd00:65::/122 blackhole;" in text
    assert "calico_export_to_bgp_peers_v6(true);" in text


# --- whatever the resources say, BIRD accepts the result ------------------------------------------

BAD_PEERS = [
    {"peerIP": "172.31.0.50"},  # no asNumber
    {"peerIP": "172.31.0.11", "asNumber": 64512},  # ourselves
    {"peerIP": "172.31.0.50", "asNumber": 65000, "keepaliveTime": "10m"},  # > hold time
    {
        "peerIP": "172.31.0.50",
        "asNumber": 65000,
        "password": {"secretKeyRef": {"name": "bad", "key": "quote"}},
    },
    {
        "peerIP": "172.31.0.50",
        "asNumber": 65000,
        "password": {"secretKeyRef": {"name": "missing", "key": "k"}},
    },
    {"peerIP": "172.31.0.50", "asNumber": 65000, "filters": ["no-such-filter"]},
    {"peerIP": "172.31.0.50", "asNumber": 64512, "ttlSecurity": 3, "keepaliveTime": "1s"},
    {"peerIP": "172.31.0.50", "asNumber": 65000, "localASNumber": 65000},
    {"peerSelector": "has(nothing)"},
    {"nodeSelector": "!all()", "peerIP": "172.31.0.50", "asNumber": 65000},
    {"peerIP": "[fd00::50]:1790", "asNumber": 65000},  # v6 peer, v4-only node
    {"peerIP": "172.31.0.50", "asNumber": "1.10", "maxRestartTime": "0"},
]


@pytest.mark.parametrize("spec", BAD_PEERS, ids=range(len(BAD_PEERS)))
def test_odd_bgp_peers_still_render_valid_config(spec: dict[str, Any], tmp_path: Path) -> None:
    peer = res("BGPPeer", "odd", spec)
    snap = Snapshot.of([node(1), node(2), POOL, peer], [block(1)])
    secrets = {("bad", "quote"): 'a"b'}
    text = render(snap, "node1", RenderOptions(secrets=lambda n, k: secrets.get((n, k))))
    bird_ok(text, tmp_path)
    assert 'password "a"b"' not in text


def test_peers_are_names_sorted_and_deduplicated() -> None:
    global_peer = res("BGPPeer", "a-global", {"peerIP": "172.31.0.12", "asNumber": 64512})
    node_peer = res(
        "BGPPeer", "b-node", {"node": "node1", "peerIP": "172.31.0.12", "asNumber": 64512}
    )
    snap = Snapshot.of([node(1), node(2), node(3), global_peer, node_peer])
    got = [(p.kind, p.name) for p in peerings(snap, "node1")]
    # The global peering wins over the node-specific one to the same address, and the mesh
    # only covers the node that no explicit peering reaches.
    assert got == [("global", "Global_172_31_0_12"), ("mesh", "Mesh_172_31_0_13")]


def test_reverse_peering_and_listen_ports(tmp_path: Path) -> None:
    port_cfg = res("BGPConfiguration", "node.node2", {"listenPort": 1790})
    peer = res("BGPPeer", "n1-to-n2", {"node": "node1", "peerIP": "172.31.0.12", "asNumber": 64512})
    snap = Snapshot.of([node(1), node(2), node(3), peer, port_cfg, NO_MESH])
    assert [p.name for p in peerings(snap, "node1")] == ["Node_172_31_0_12_port_1790"]
    # node2 peers back with node1 (and with nobody else).
    assert [p.name for p in peerings(snap, "node2")] == ["Node_172_31_0_11"]
    assert peerings(snap, "node3") == []
    text = render(snap, "node2")
    assert "local port 1790;" in text
    bird_ok(text, tmp_path)
    bird_ok(render(snap, "node1"), tmp_path)


def test_bind_mode_node_ip_and_global_listen_port(tmp_path: Path) -> None:
    cfg = res("BGPConfiguration", "default", {"bindMode": "NodeIP", "listenPort": 1791})
    peer = res(
        "BGPPeer", "tor", {"peerIP": "172.31.0.1", "asNumber": 65000, "sourceAddress": "None"}
    )
    snap = Snapshot.of([node(1), node(2), POOL, cfg, peer], [block(1)])
    text = render(snap, "node1")
    bird_ok(text, tmp_path)
    assert "strict bind on;" in text
    assert "neighbor 172.31.0.12 port 1791 as 64512;" in text  # the mesh: the peer's port
    assert text.count("local port 1791;") == 2  # and ours, on every session


def test_router_id_choices() -> None:
    snap = Snapshot.of([node(1), POOL])
    assert "router id 172.31.0.11;" in render(snap, "node1")
    assert "router id 10.9.8.7;" in render(snap, "node1", RenderOptions(router_id="10.9.8.7"))
    hashed = hash_to_ipv4("node1")
    assert f"router id {hashed};" in render(snap, "node1", RenderOptions(router_id="hash"))


def test_nothing_to_render_without_our_node() -> None:
    with pytest.raises(RenderError, match="no Node resource"):
        render(Snapshot.of([node(2)]), "node1")
    bare = res("Node", "node1", {})
    with pytest.raises(RenderError, match="no BGP address"):
        render(Snapshot.of([bare]), "node1")


def test_filter_function_names_fit_bird_symbols() -> None:
    assert filter_function_name("my-filter", "import", 4) == "'bgp_my-filter_importFilterV4'"
    long = filter_function_name("x" * 80, "export", 6)
    assert len(long.strip("'")) <= 64


def test_timers_for_tests() -> None:
    assert parse_timers("") == Timers()
    t = parse_timers("hold=9,keepalive=3,connect_delay=1,connect_retry=1,error_wait=1,2")
    assert (t.hold_time, t.keepalive_time, t.connect_delay, t.error_wait) == (9, 3, 1, "1,2")
    with pytest.raises(ValueError):
        parse_timers("bogus=1")


# --- the snapshot --------------------------------------------------------------------------------


def _put(key: str, value: Any, rev: int = 1) -> Update:
    return Update(key, None if value is None else json.dumps(value).encode(), rev)


def test_snapshot_validates_and_tracks_affinities() -> None:
    snap = Snapshot()
    good = node(1).to_dict()
    assert snap.apply(_put(keys.resource_key("Node", "node1"), good))
    assert "node1" in snap.nodes
    bad = {**good, "spec": {"bgp": {"ipv4Address": "not-an-ip"}}}
    assert snap.apply(_put(keys.resource_key("Node", "node1"), bad))
    assert "node1" not in snap.nodes  # invalid = deleted
    aff = keys.host_affinity_key("node1", "10.65.0.0/24")
    assert not snap.apply(_put(aff, {"state": "pending", "deleted": False}))
    assert snap.apply(_put(aff, {"state": "confirmed", "deleted": False}))
    assert snap.affinities["10.65.0.0/24"].confirmed
    assert not snap.apply(_put(aff, {"state": "confirmed", "deleted": False}))
    assert snap.apply(_put(aff, None))
    assert snap.affinities == {}
    assert not snap.apply(_put(keys.resource_key("Profile", "p"), {"spec": {}}))


# --- BIRD's control protocol and calicoctl's table ----------------------------------------------

SHOW_PROTOCOLS_ALL = [
    (2002, "Name       Proto      Table      State  Since         Info"),
    (1002, "device1    Device     ---        up     01:53:39      "),
    (1002, "Mesh_172_31_0_12 BGP        ---        up     01:53:42      Established   "),
    (1006, "  Description:    Connection to BGP peer"),
    (1006, "    Neighbor address: 172.31.0.12"),
    (
        1002,
        "Node_172_31_0_16 BGP        ---        start  01:55:02      Active        Socket: "
        "Connection refused",
    ),
    (1006, "  Description:    Connection to route reflector"),
    (1002, "Global_fd00__1_port_1790 BGP ---        up     01:55:02      Established"),
    (0, ""),
]


def test_parse_show_protocols_all() -> None:
    rows = parse_protocols(SHOW_PROTOCOLS_ALL)
    assert [r.name for r in rows] == [
        "device1",
        "Mesh_172_31_0_12",
        "Node_172_31_0_16",
        "Global_fd00__1_port_1790",
    ]
    assert rows[2] == BirdProtocol(
        "Node_172_31_0_16",
        "BGP",
        "---",
        "start",
        "01:55:02",
        "Active Socket: Connection refused",
        "Connection to route reflector",
        "",
    )
    peers = calico_peers(rows)
    assert [(p.address, p.type, p.version) for p in peers] == [
        ("172.31.0.12", "node-to-node mesh", 4),
        ("172.31.0.16", "route reflector", 4),
        ("fd00::1", "global", 6),
    ]


def test_calicoctl_table_layout() -> None:
    table = format_table(
        ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
        [["172.17.8.102", "node-to-node mesh", "up", "23:30:04", "Established"]],
    )
    assert table == (
        "+--------------+-------------------+-------+----------+-------------+\n"
        "| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |\n"
        "+--------------+-------------------+-------+----------+-------------+\n"
        "| 172.17.8.102 | node-to-node mesh | up    | 23:30:04 | Established |\n"
        "+--------------+-------------------+-------+----------+-------------+\n"
    )


# --- the daemon's install step ------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_BIRD, reason="bird is not installed")
def test_a_rejected_rendering_keeps_the_last_good_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tortie.confd import daemon
    from tortie.datastore.memory import MemoryBackend

    paths = ConfdPaths(tmp_path, str(tmp_path / "bird.ctl"), tmp_path / "status.json")
    confd = Confd(MemoryBackend(), "node1", paths)
    confd.snapshot = Snapshot.of([node(1), node(2), POOL], [block(1)])
    assert confd.process()
    good = paths.config.read_text()
    assert json.loads(paths.status_file.read_text())["state"] == "ok"
    monkeypatch.setattr(daemon, "render", lambda *a: good + "protocol bgp {\n")
    assert not confd.process()
    assert paths.config.read_text() == good
    status = json.loads(paths.status_file.read_text())
    assert status["state"] == "error" and "rejected" in status["message"]
    assert paths.rejected.read_text().endswith("protocol bgp {\n")
    monkeypatch.undo()
    assert confd.process()  # back to the good text: installed again
    assert paths.config.read_text() == good


@pytest.mark.skipif(not HAVE_BIRD, reason="bird is not installed")
def test_bird_binary_reports_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.cfg"
    path.write_text("router id 1.2.3.4;\nprotocol nonsense {}\n")
    error = check_config(str(path))
    assert error is not None and "x.cfg" in error
    assert subprocess.run(["bird", "--version"], capture_output=True).returncode == 0


def test_waiting_for_our_node_is_reported_once(tmp_path: Path) -> None:
    from tortie.datastore.memory import MemoryBackend

    paths = ConfdPaths(tmp_path, str(tmp_path / "bird.ctl"), tmp_path / "status.json")
    confd = Confd(MemoryBackend(), "node9", paths)
    confd.snapshot = Snapshot.of([node(1)])
    assert not confd.process()
    status = json.loads(paths.status_file.read_text())
    assert status["state"] == "waiting" and "node9" in status["message"]
    paths.status_file.unlink()
    assert not confd.process()
    assert not paths.status_file.exists()  # unchanged: not rewritten
    assert not paths.config.exists()
