"""The `tortie` and `tortie-ipam` binaries invoked exactly as a runtime does, in a lab node.

One lab node (its etcd, an IPv4 and an IPv6 pool), the launchers installed in a temporary
CNI bin dir and the node's CNI daemon running. Every test runs the plugin as a separate
process inside the node's namespace with the `CNI_*` variables and the configuration on
stdin, against a fresh workload namespace, and looks at what it left: the WorkloadEndpoint
and Profile in etcd, the IPAM handle and block, the veth pair, addresses, routes and sysctls.
Most tests go through the daemon; the `in-process` variants set `TORTIE_CNI_DAEMON=0`.

Covered: every spec version's ADD/CHECK/DEL cycle and result format, Kubernetes pods, a
requested IP, labels, profiles, rollback at every step of a failing ADD (nothing leaked), DEL
idempotence with pieces missing, CHECK finding broken plumbing, endpoint reuse for a second
network, chaining, `tortie-ipam` on its own and as a delegated binary, host-local delegation,
STATUS, GC, dual stack, and datastore-not-ready.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tortie.api import validate
from tortie.cni import lab as cnilab
from tortie.cni import netlink as nl
from tortie.cni.spec import SUPPORTED_VERSIONS
from tortie.datastore import keys
from tortie.datastore.backend import KeyNotFound
from tortie.lab import Lab, netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.etcd,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("etcd") or not shutil.which("ip"),
        reason="needs root, iproute2 and etcd",
    ),
]

NET = "tnet"
POOL4 = "10.66.0.0/16"
POOL6 = "fd66::/112"
HOST_MAC = "ee:ee:ee:ee:ee:ee"
_COUNTER = itertools.count()


def resource(kind: str, name: str, spec: dict[str, Any]) -> Any:
    return validate({"apiVersion": "projectcalico.org/v3", "kind": kind,
                     "metadata": {"name": name}, "spec": spec})


class CNI:
    """The module's lab node and the vocabulary of the tests."""

    def __init__(self, lab: Lab, bin_dir: Path, tmp: Path) -> None:
        self.lab = lab
        self.bin = bin_dir
        self.tmp = tmp
        self.node_ns = lab.netns_of("node1")
        self.namespaces: list[str] = []

    # --- configuration and invocation -----------------------------------------------------
    def conf(self, version: str = "1.0.0", name: str = NET, **extra: Any) -> dict[str, Any]:
        c: dict[str, Any] = {
            "cniVersion": version, "name": name, "type": "tortie",
            "etcd_endpoints": self.lab.etcd_endpoint, "nodename": "node1",
            "ipam_lock_file": str(self.tmp / "ipam.lock"),
            "log_file_path": str(self.tmp / "cni.log"), "log_level": "debug",
            "ipam": {"type": "tortie-ipam"},
        }
        c.update(extra)
        return c

    def new_netns(self) -> str:
        name = f"tl{self.lab.lab_id}-wl.cni.{next(_COUNTER)}"
        netns.create_namespaces([name])
        self.namespaces.append(name)
        return name

    def run(self, command: str, conf: dict[str, Any] | bytes, cid: str, ns: str | None,
            plugin: str = "tortie", args: str = "", env: dict[str, str] | None = None,
            mode: str = "daemon", ifname: str = "eth0",
            cni_path: str | None = None) -> tuple[int, Any]:
        env = dict(env or {})
        if mode == "in-process":
            env["TORTIE_CNI_DAEMON"] = "0"
        res = cnilab.invoke(self.node_ns, self.bin / plugin, command, conf, container_id=cid,
                            netns_path=f"/run/netns/{ns}" if ns else "", ifname=ifname,
                            cni_args=args, env=env, cni_path=cni_path)
        out = json.loads(res.stdout) if res.stdout.strip() else None
        if res.returncode != 0:
            assert isinstance(out, dict) and {"code", "msg"} <= set(out), (res.stdout,
                                                                          res.stderr)
        return res.returncode, out

    def ok(self, command: str, conf: dict[str, Any], cid: str, ns: str | None,
           **kw: Any) -> Any:
        code, out = self.run(command, conf, cid, ns, **kw)
        assert code == 0, out
        return out

    def add(self, cid: str, ns: str, conf: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.ok("ADD", conf or self.conf(), cid, ns, **kw)

    # --- observation ------------------------------------------------------------------------
    def weps(self) -> list[Any]:
        return self.lab.client.list("WorkloadEndpoint").items

    def wep(self, cid: str) -> Any | None:
        found = [w for w in self.weps() if w.spec.container_id == cid]
        assert len(found) <= 1
        return found[0] if found else None

    def handle_exists(self, handle: str) -> bool:
        try:
            self.lab.client.backend.get(keys.handle_key(handle))
            return True
        except KeyNotFound:
            return False

    def allocated(self, ip: str) -> bool:
        from tortie.ipam import AddressNotAssigned, IPAMClient

        try:
            IPAMClient(self.lab.client.backend).get_assignment_attributes(ip)
            return True
        except AddressNotAssigned:
            return False

    def attributes(self, ip: str) -> tuple[dict[str, str], str | None]:
        from tortie.ipam import IPAMClient

        return IPAMClient(self.lab.client.backend).get_assignment_attributes(ip)

    def in_ns(self, ns: str, fn: Callable[[nl.Netlink], Any]) -> Any:
        def body() -> Any:
            with nl.Netlink() as sock:
                return fn(sock)

        return netns.run_in(ns, body)

    def host_link(self, name: str) -> nl.Link | None:
        return self.in_ns(self.node_ns, lambda s: s.link(name))

    def sysctl(self, ns: str, key: str) -> str:
        return netns.run_in(ns, nl.read_sysctl, key)

    def assert_gone(self, cid: str, ns: str | None, host_if: str, ips: list[str],
                    net: str = NET) -> None:
        """Nothing of this container is left anywhere (the veth may take a moment: the
        daemon deletes it in the background)."""
        assert self.wep(cid) is None
        assert not self.handle_exists(f"{net}.{cid}")
        for ip in ips:
            assert not self.allocated(ip), f"{ip} is still allocated"
        netns.wait_for(lambda: self.host_link(host_if) is None, 5, f"{host_if} to go")
        if ns and netns.namespace_exists(ns):
            assert self.in_ns(ns, lambda s: s.link("eth0")) is None

    def close(self) -> None:
        netns.delete_namespaces(self.namespaces)


@pytest.fixture(scope="module")
def cni(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CNI]:
    tmp = tmp_path_factory.mktemp("cni")
    bin_dir = cnilab.install(tmp / "bin")
    lab = Lab(nodes=1, static_route=False, host_sysctls=False)
    lab.up()
    env = CNI(lab, bin_dir, tmp)
    try:
        lab.client.apply(resource("IPPool", "cni-pool", {"cidr": POOL4, "blockSize": 26}))
        lab.client.apply(resource("IPPool", "cni-pool-v6", {"cidr": POOL6, "blockSize": 122}))
        lab.client.apply(resource("IPPool", "tiny-pool", {
            "cidr": "10.67.0.0/30", "blockSize": 30, "nodeSelector": "!all()"}))
        cnilab.start_daemon(lab, "node1", log_file=str(tmp / "daemon.log"))
        yield env
    finally:
        env.close()
        lab.down()
        left = [n for n in os.listdir(netns.NETNS_DIR) if n.startswith(f"tl{lab.lab_id}-")]
        assert not left, f"namespaces left behind: {left}"


# --- the full cycle in every spec version --------------------------------------------------------


def _result_ips(version: str, result: dict[str, Any]) -> list[str]:
    if version in ("0.1.0", "0.2.0"):
        return [result[k]["ip"] for k in ("ip4", "ip6") if k in result]
    return [ip["address"] for ip in result["ips"]]


CYCLES = [(v, "daemon") for v in SUPPORTED_VERSIONS] + [
    ("1.0.0", "in-process"), ("0.3.1", "in-process")]


@pytest.mark.parametrize(("version", "mode"), CYCLES, ids=[f"{v}-{m}" for v, m in CYCLES])
def test_add_check_del(cni: CNI, version: str, mode: str) -> None:
    ns = cni.new_netns()
    cid = f"cycle{version.replace('.', '')}{mode[:2]}"
    conf = cni.conf(version, mtu=1400)
    result = cni.add(cid, ns, conf, mode=mode)
    assert result["cniVersion"] == version

    # The result, in the version's own format.
    (address,) = _result_ips(version, result)
    iface = ipaddress.ip_interface(address)
    assert iface.network.prefixlen == 32 and iface.ip in ipaddress.ip_network(POOL4)
    ip = str(iface.ip)
    host_if = "cali" + cid[:11]
    if version not in ("0.1.0", "0.2.0"):
        assert [i["name"] for i in result["interfaces"]] == [host_if, "eth0"]
        assert result["interfaces"][1]["sandbox"] == f"/run/netns/{ns}"
        assert result["ips"][0]["interface"] == 1
        assert ("version" in result["ips"][0]) == (version < "1.0.0")
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
        assert ("mtu" in result["interfaces"][0]) == (version == "1.1.0")

    # The WorkloadEndpoint, as Calico's plugin writes it for a plain CNI container.
    wep = cni.wep(cid)
    assert wep is not None and wep.namespace == "default"
    assert wep.name == f"node1-cni-{cid}-eth0"
    assert (wep.spec.orchestrator, wep.spec.node, wep.spec.endpoint) == ("cni", "node1", "eth0")
    assert wep.spec.ip_networks == [f"{ip}/32"] and wep.spec.profiles == [NET]
    assert wep.spec.interface_name == host_if
    assert wep.labels["projectcalico.org/orchestrator"] == "cni"

    # The plumbing: §7 of the architecture.
    eth0 = cni.in_ns(ns, lambda s: s.link("eth0"))
    assert eth0.up and eth0.mtu == 1400 and eth0.mac == wep.spec.mac
    addrs = cni.in_ns(ns, lambda s: [a.address for a in s.addrs(eth0.index)])
    assert ipaddress.ip_interface(f"{ip}/32") in addrs
    routes = cni.in_ns(ns, lambda s: {(str(r.dst), r.gateway, r.scope) for r in s.routes()})
    assert ("169.254.1.1/32", None, nl.RT_SCOPE_LINK) in routes
    assert ("0.0.0.0/0", "169.254.1.1", 0) in routes
    host = cni.host_link(host_if)
    assert host is not None and host.mac == HOST_MAC and host.up and host.mtu == 1400
    host_routes = cni.in_ns(cni.node_ns, lambda s: {(str(r.dst), r.oif) for r in s.routes()})
    assert (f"{ip}/32", host.index) in host_routes
    assert cni.sysctl(cni.node_ns, f"net/ipv4/conf/{host_if}/proxy_arp") == "1"
    assert cni.sysctl(cni.node_ns, f"net/ipv4/neigh/{host_if}/proxy_delay") == "0"

    # IPAM: the handle and the allocation's attributes.
    attrs, handle = cni.attributes(ip)
    assert handle == f"{NET}.{cid}" and attrs["node"] == "node1" and "pod" not in attrs

    if version >= "0.4.0":
        cni.ok("CHECK", dict(conf, prevResult=result), cid, ns, mode=mode)
    cni.ok("DEL", dict(conf, prevResult=result), cid, ns, mode=mode)
    cni.assert_gone(cid, ns, host_if, [ip])
    cni.ok("DEL", conf, cid, ns, mode=mode)  # idempotent


def test_kubernetes_pod(cni: CNI) -> None:
    ns = cni.new_netns()
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=k1"
    conf = cni.conf(policy={"type": "k8s"}, name="k8s-pod-network")
    result = cni.add("k8scid1", ns, conf, args=args)
    ip = result["ips"][0]["address"].split("/")[0]
    wep = cni.wep("k8scid1")
    assert (wep.name, wep.namespace) == ("node1-k8s-web--0-eth0", "prod")
    assert (wep.spec.orchestrator, wep.spec.pod) == ("k8s", "web-0")
    assert wep.spec.profiles == ["kns.prod"]  # policy type k8s: the namespace's profile
    assert wep.labels["projectcalico.org/namespace"] == "prod"
    from tortie.lab.workload import veth_name

    assert wep.spec.interface_name == veth_name("prod", "web-0")
    attrs, _ = cni.attributes(ip)
    assert (attrs["pod"], attrs["namespace"]) == ("web-0", "prod")
    # A DEL for an old sandbox of the same pod leaves the pod's endpoint alone.
    cni.ok("DEL", conf, "oldsandbox", None, args=args)
    assert cni.wep("k8scid1") is not None
    cni.ok("DEL", conf, "k8scid1", ns, args=args)
    cni.assert_gone("k8scid1", ns, veth_name("prod", "web-0"), [ip], net="k8s-pod-network")


def test_plain_cni_creates_the_network_profile(cni: CNI) -> None:
    ns = cni.new_netns()
    conf = cni.conf(name="profnet")
    cni.add("profcid", ns, conf)
    profile = cni.lab.client.get("Profile", "profnet").to_dict()["spec"]
    assert profile["labelsToApply"] == {"profnet": ""}
    assert profile["egress"] == [{"action": "Allow"}]
    assert profile["ingress"] == [{"action": "Allow", "source": {"selector": "has(profnet)"}}]
    cni.ok("DEL", conf, "profcid", ns)
    cni.lab.client.delete("Profile", "profnet")


def test_requested_ip_and_labels(cni: CNI) -> None:
    ns = cni.new_netns()
    conf = cni.conf(args={"cni": {"labels": [{"key": "app", "value": "web"}]}})
    result = cni.add("ipcid", ns, conf, args="IP=10.66.200.7")
    assert result["ips"][0]["address"] == "10.66.200.7/32"
    assert cni.wep("ipcid").labels["app"] == "web"
    code, err = cni.run("ADD", conf, "ipcid2", cni.new_netns(), args="IP=10.66.200.7")
    assert code == 1 and "already assigned" in err["details"]
    cni.ok("DEL", conf, "ipcid", ns)
    assert not cni.allocated("10.66.200.7")


def test_address_reused_right_after_del(cni: CNI) -> None:
    """DEL returns before the daemon has deleted the old veth; an ADD that gets the same
    address at once waits for that deletion instead of failing on the route."""
    first_ns, second_ns = cni.new_netns(), cni.new_netns()
    cni.add("reusea", first_ns, args="IP=10.66.201.9")
    cni.ok("DEL", cni.conf(), "reusea", first_ns)
    cni.add("reuseb", second_ns, args="IP=10.66.201.9")
    host = cni.host_link("calireuseb")
    routes = cni.in_ns(cni.node_ns, lambda s: {(str(r.dst), r.oif) for r in s.routes()})
    assert ("10.66.201.9/32", host.index) in routes
    cni.ok("DEL", cni.conf(), "reuseb", second_ns)
    cni.assert_gone("reuseb", second_ns, "calireuseb", ["10.66.201.9"])


def test_invalid_labels_fail_before_anything_exists(cni: CNI) -> None:
    ns = cni.new_netns()
    conf = cni.conf(args={"cni": {"labels": [{"key": "bad key!", "value": "x"}]}})
    code, err = cni.run("ADD", conf, "badlabels", ns)
    assert code == 1 and err["code"] == 7
    assert not cni.handle_exists(f"{NET}.badlabels")
    assert cni.host_link("calibadlabels") is None


def test_pools_exhausted(cni: CNI) -> None:
    conf = cni.conf(ipam={"type": "tortie-ipam", "ipv4_pools": ["tiny-pool"]})
    added = []
    for i in range(5):
        code, out = cni.run("ADD", conf, f"tiny{i}", cni.new_netns())
        if code:
            assert out["code"] == 102 and "no IP address" in out["msg"]
            break
        added.append(out["ips"][0]["address"])
    assert len(added) == 4  # a /30 holds four addresses
    assert not cni.handle_exists(f"{NET}.tiny{len(added)}")
    for i in range(len(added)):
        cni.ok("DEL", conf, f"tiny{i}", None)


# --- rollback ------------------------------------------------------------------------------------

FAILPOINTS = ["ipam", "veth", "profile", "endpoint-write", "after-endpoint"]


@pytest.mark.parametrize("step", FAILPOINTS)
def test_failed_add_leaves_nothing(cni: CNI, step: str) -> None:
    ns = cni.new_netns()
    cid = f"fail{step.replace('-', '')}"[:20]
    before = {w.name for w in cni.weps()}
    code, err = cni.run("ADD", cni.conf(name=f"failnet{FAILPOINTS.index(step)}"), cid, ns,
                        env={"TORTIE_CNI_FAILPOINT": step})
    assert code == 1 and f"failpoint {step}" in err["msg"]
    assert {w.name for w in cni.weps()} == before
    assert not cni.handle_exists(f"failnet{FAILPOINTS.index(step)}.{cid}")
    assert cni.host_link("cali" + cid[:11]) is None
    assert cni.in_ns(ns, lambda s: s.link("eth0")) is None


def test_failed_add_in_process_leaves_nothing(cni: CNI) -> None:
    ns = cni.new_netns()
    code, _ = cni.run("ADD", cni.conf(), "failinproc", ns, mode="in-process",
                      env={"TORTIE_CNI_FAILPOINT": "endpoint-write"})
    assert code == 1
    assert cni.wep("failinproc") is None and not cni.handle_exists(f"{NET}.failinproc")
    assert cni.host_link("califailinpro") is None


def test_failed_veth_keeps_what_was_there(cni: CNI) -> None:
    ns = cni.new_netns()
    netns.ip_batch(ns, ["link add eth0 type veth peer name other0"])  # the name is taken
    code, err = cni.run("ADD", cni.conf(), "vethtaken", ns)
    assert code == 1 and err["code"] == 103 and "already exists" in err["msg"]
    assert not cni.handle_exists(f"{NET}.vethtaken") and cni.wep("vethtaken") is None
    assert cni.in_ns(ns, lambda s: s.link("other0")) is not None  # not ours: untouched


# --- DEL with pieces missing ---------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["netns", "veth", "endpoint", "everything", "no-netns-arg"])
def test_del_is_idempotent(cni: CNI, missing: str) -> None:
    ns = cni.new_netns()
    cid = f"idem{missing.replace('-', '')}"[:16]
    result = cni.add(cid, ns)
    ip = result["ips"][0]["address"].split("/")[0]
    host_if = "cali" + cid[:11]
    if missing == "netns":
        netns.delete_namespaces([ns])
    elif missing == "veth":
        netns.ip_batch(cni.node_ns, [f"link del {host_if}"])
    elif missing == "endpoint":
        w = cni.wep(cid)
        cni.lab.client.delete("WorkloadEndpoint", w.name, w.namespace)
    elif missing == "everything":
        cni.ok("DEL", cni.conf(), cid, ns)
    cni.ok("DEL", cni.conf(), cid, None if missing == "no-netns-arg" else ns)
    cni.assert_gone(cid, ns, host_if, [ip])
    cni.ok("DEL", cni.conf(), cid, ns)


def test_del_of_unknown_container(cni: CNI) -> None:
    cni.ok("DEL", cni.conf(), "neveradded", None)
    cni.ok("DEL", cni.conf(), "neveradded", "no-such-namespace-anywhere")


# --- the daemon ---------------------------------------------------------------------------------


def test_no_daemon_listening_means_in_process(cni: CNI) -> None:
    ns = cni.new_netns()
    env = {"TORTIE_CNI_SOCKET": "tortie-cni-nobody-listens"}
    out = cni.add("nodaemon", ns, env=env)
    assert out["ips"]
    cni.ok("DEL", cni.conf(), "nodaemon", ns, env=env)
    cni.assert_gone("nodaemon", ns, "calinodaemon", [out["ips"][0]["address"].split("/")[0]])


def test_daemon_serves_root_only(cni: CNI) -> None:
    from tortie.cni.client import encode_request

    request = encode_request("tortie", {"CNI_COMMAND": "VERSION"}, b"{}")
    probe = (
        "import _socket, sys\n"
        "s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
        "s.connect('\\0tortie-cni')\n"
        "try:\n"  # a refused peer may be cut off while still sending: that is a refusal too
        f"    s.sendall({request!r})\n"
        "    s.shutdown(_socket.SHUT_WR)\n"
        "    sys.stdout.write(repr(s.recv(4096)))\n"
        "except OSError as e:\n"
        "    sys.stdout.write(type(e).__name__)\n"
    )

    python = "/usr/bin/python3"  # the venv's interpreter is not readable by nobody
    if not os.access(python, os.X_OK):
        pytest.skip("no /usr/bin/python3")

    def ask(uid: int) -> str:
        res = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                             timeout=30, check=True,
                             preexec_fn=(lambda: os.setuid(uid)) if uid else None)
        return res.stdout

    assert "supportedVersions" in netns.run_in(cni.node_ns, ask, 0)
    refused = ("b''", "ConnectionResetError", "BrokenPipeError")
    assert netns.run_in(cni.node_ns, ask, 65534) in refused


# --- CHECK ---------------------------------------------------------------------------------------

BREAKAGES: dict[str, tuple[Callable[[CNI, str, str, str], None], str]] = {
    "default-route": (lambda c, ns, h, ip: netns.ip_batch(ns, ["route del default"]),
                      "default route via 169.254.1.1"),
    "address": (lambda c, ns, h, ip: netns.ip_batch(ns, [f"addr del {ip}/32 dev eth0"]),
                "is missing from eth0"),
    "host-down": (lambda c, ns, h, ip: netns.ip_batch(c.node_ns, [f"link set {h} down"]),
                  "is down"),
    "host-veth": (lambda c, ns, h, ip: netns.ip_batch(c.node_ns, [f"link del {h}"]),
                  "does not exist"),
    "host-route": (lambda c, ns, h, ip: netns.ip_batch(c.node_ns, [f"route del {ip}/32"]),
                   "host route"),
    "endpoint": (lambda c, ns, h, ip: c.lab.client.delete(
        "WorkloadEndpoint", f"node1-cni-chk{h[7:]}-eth0", "default"), "WorkloadEndpoint"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_check_finds_broken_plumbing(cni: CNI, breakage: str) -> None:
    ns = cni.new_netns()
    cid = f"chk{breakage.replace('-', '')}"[:14]
    conf = cni.conf("1.1.0")
    result = cni.add(cid, ns, conf)
    ip = result["ips"][0]["address"].split("/")[0]
    host_if = "cali" + cid[:11]
    cni.ok("CHECK", dict(conf, prevResult=result), cid, ns)
    breaker, expected = BREAKAGES[breakage]
    breaker(cni, ns, host_if, ip)
    code, err = cni.run("CHECK", dict(conf, prevResult=result), cid, ns)
    assert code == 1 and err["code"] == 104
    assert expected in err["details"], err
    cni.ok("DEL", conf, cid, ns)
    cni.assert_gone(cid, ns, host_if, [ip])


def test_check_finds_a_released_address(cni: CNI) -> None:
    from tortie.ipam import IPAMClient

    ns = cni.new_netns()
    conf = cni.conf("1.0.0")
    result = cni.add("chkipam", ns, conf)
    IPAMClient(cni.lab.client.backend).release_by_handle(f"{NET}.chkipam")
    code, err = cni.run("CHECK", dict(conf, prevResult=result), "chkipam", ns)
    assert code == 1 and "does not hold" in err["msg"], (err, result)
    cni.ok("DEL", conf, "chkipam", ns)


# --- endpoint reuse, chaining --------------------------------------------------------------------


def test_second_network_reuses_the_endpoint(cni: CNI) -> None:
    ns = cni.new_netns()
    first = cni.add("reuse1", ns, cni.conf(name="neta"))
    second = cni.add("reuse1", ns, cni.conf(name="netb"))
    assert second["ips"] == first["ips"]  # no second address, no second veth
    assert cni.wep("reuse1").spec.profiles == ["neta", "netb"]
    assert not cni.handle_exists("netb.reuse1")
    cni.ok("DEL", cni.conf(name="netb"), "reuse1", ns)
    cni.ok("DEL", cni.conf(name="neta"), "reuse1", ns)
    cni.assert_gone("reuse1", ns, "calireuse1", [first["ips"][0]["address"].split("/")[0]],
                    net="neta")
    for p in ("neta", "netb"):
        cni.lab.client.delete("Profile", p)


def test_chained_prev_result_is_kept(cni: CNI) -> None:
    ns = cni.new_netns()
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": f"/run/netns/{ns}"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}], "dns": {}}
    out = cni.add("chained", ns, cni.conf(prevResult=prev))
    assert [i["name"] for i in out["interfaces"]] == ["lo", "calichained", "eth0"]
    assert out["ips"][0] == {"interface": 0, "address": "127.0.0.1/8"}
    assert out["ips"][1]["interface"] == 2
    cni.ok("DEL", cni.conf(), "chained", ns)


# --- IPAM: the plugin on its own, delegation -----------------------------------------------------


def test_tortie_ipam_binary(cni: CNI) -> None:
    conf = cni.conf(type="tortie-ipam")
    ns = cni.new_netns()
    out = cni.ok("ADD", conf, "ipamonly", ns, plugin="tortie-ipam")
    address = out["ips"][0]["address"]
    assert address.endswith("/26")  # the block's prefix, as calico-ipam prints it
    ip = address.split("/")[0]
    assert cni.attributes(ip)[1] == f"{NET}.ipamonly"
    cni.ok("CHECK", dict(conf, prevResult=out), "ipamonly", ns, plugin="tortie-ipam")
    cni.ok("DEL", conf, "ipamonly", ns, plugin="tortie-ipam")
    assert not cni.allocated(ip)
    version = cni.ok("VERSION", conf, "", None, plugin="tortie-ipam")
    assert "1.0.0" in version["supportedVersions"]


@pytest.mark.parametrize("mode", ["daemon", "in-process"])
def test_tortie_ipam_delegated_as_a_binary(cni: CNI, mode: str) -> None:
    ns = cni.new_netns()
    env = {"TORTIE_CNI_EXEC_IPAM": "1"}
    cid = f"execipam{mode[:2]}"
    out = cni.add(cid, ns, env=env, mode=mode)
    ip = out["ips"][0]["address"].split("/")[0]
    assert cni.attributes(ip)[1] == f"{NET}.{cid}"
    cni.ok("DEL", cni.conf(), cid, ns, env=env, mode=mode)
    assert not cni.allocated(ip)


@pytest.mark.skipif(not os.path.exists("/usr/lib/cni/host-local"), reason="no host-local")
def test_host_local_ipam(cni: CNI) -> None:
    ns = cni.new_netns()
    ipam = {"type": "host-local", "subnet": "10.68.0.0/24", "dataDir": str(cni.tmp / "hl")}
    conf = cni.conf(ipam=ipam)
    path = f"{cni.bin}:/usr/lib/cni"
    out = cni.add("hostlocal", ns, conf, cni_path=path)
    address = out["ips"][0]["address"]
    assert address.startswith("10.68.0.") and address.endswith("/32")
    assert cni.wep("hostlocal").spec.ip_networks == [address]
    assert list((cni.tmp / "hl" / NET).glob("10.68.0.*"))
    cni.ok("DEL", conf, "hostlocal", ns, cni_path=path)
    assert not list((cni.tmp / "hl" / NET).glob("10.68.0.*"))
    code, err = cni.run("ADD", cni.conf(ipam={"type": "no-such-ipam"}), "noipam",
                        cni.new_netns())
    assert code == 1 and "failed to find IPAM plugin" in err["msg"]


def test_dual_stack(cni: CNI) -> None:
    ns = cni.new_netns()
    conf = cni.conf(ipam={"type": "tortie-ipam", "assign_ipv6": "true"})
    out = cni.add("dual", ns, conf)
    addrs = [ipaddress.ip_interface(i["address"]) for i in out["ips"]]
    assert [a.version for a in addrs] == [4, 6]
    assert addrs[1].network.prefixlen == 128 and addrs[1].ip in ipaddress.ip_network(POOL6)
    assert {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"} in out["routes"]
    v6_routes = cni.in_ns(ns, lambda s: [str(r.dst) for r in s.routes(socket.AF_INET6)])
    assert "::/0" in v6_routes
    cni.ok("CHECK", dict(conf, prevResult=out), "dual", ns)
    cni.ok("DEL", conf, "dual", ns)
    cni.assert_gone("dual", ns, "calidual", [str(a.ip) for a in addrs])


# --- STATUS, GC, readiness -----------------------------------------------------------------------


def test_status(cni: CNI) -> None:
    assert cni.ok("STATUS", cni.conf("1.1.0"), "", None) is None
    code, err = cni.run("STATUS", cni.conf("1.1.0", etcd_endpoints="http://127.0.0.1:9"), "",
                        None)
    assert code == 1 and err["code"] == 50
    code, err = cni.run("STATUS", cni.conf("1.0.0"), "", None)
    assert code == 1 and err["code"] == 1  # STATUS needs a 1.1.0 configuration


def test_datastore_not_ready(cni: CNI) -> None:
    cni.lab.client.apply(validate({
        "apiVersion": "projectcalico.org/v3", "kind": "ClusterInformation",
        "metadata": {"name": "default"}, "spec": {"datastoreReady": False}}))
    try:
        ns = cni.new_netns()
        code, err = cni.run("ADD", cni.conf(), "notready", ns, mode="in-process")
        assert code == 1 and err["code"] == 11
        code, err = cni.run("STATUS", cni.conf("1.1.0"), "", None, mode="in-process")
        assert code == 1 and err["code"] == 50
        assert not cni.handle_exists(f"{NET}.notready")
    finally:
        cni.lab.client.backend.delete(keys.resource_key("ClusterInformation", "default"))


def test_gc(cni: CNI) -> None:
    conf = cni.conf("1.1.0", name="gcnet")
    keep_ns, stale_ns = cni.new_netns(), cni.new_netns()
    keep = cni.add("gckeep", keep_ns, conf)
    stale = cni.add("gcstale", stale_ns, conf)
    stale_ip = stale["ips"][0]["address"].split("/")[0]
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "gckeep",
                                                       "ifname": "eth0"}]})
    assert cni.ok("GC", gc, "", None) is None
    cni.assert_gone("gcstale", None, "caligcstale", [stale_ip], net="gcnet")
    assert cni.wep("gckeep") is not None and cni.handle_exists("gcnet.gckeep")
    cni.ok("CHECK", dict(conf, prevResult=keep), "gckeep", keep_ns)
    cni.ok("DEL", conf, "gckeep", keep_ns)
    cni.ok("DEL", conf, "gcstale", stale_ns)
    cni.lab.client.delete("Profile", "gcnet")


def test_nothing_left_in_ipam(cni: CNI) -> None:
    """Run last: every test cleaned up, so no handle of the test networks is left."""
    kvs, _ = cni.lab.client.backend.list(keys.handle_prefix())
    assert [(kv.key, kv.value) for kv in kvs] == []
