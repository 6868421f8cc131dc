"""Podman running containers on a Tortie network, with real Felix, BGP and the CNI daemon.

A two-node lab; each node runs Felix, tortie-confd and BIRD (routes between the nodes' IPAM
blocks are learned over BGP, nothing static), the CNI daemon, and its own Podman: CNI
backend (`network_backend = "cni"`), our plugin directory, its own network config dir,
storage (`--root`/`--runroot`/`--tmpdir`), `runc` with the ulimits these machines need, all
under `nsenter --net` into the node's namespace. The image is imported from a busybox-static
root filesystem (nothing can be pulled).

Containers: `client` (node1) and `server` (node2, busybox httpd on 8080 and 9090) and
`neighbour` (node2) on network `tortie-pods`; `outsider` (node1) on network `tortie-other`.
Checked with processes inside the containers (`podman exec ... wget`): pool addresses and
Calico's plumbing in the containers, the WorkloadEndpoints Podman's ADDs produced, traffic
allowed by the networks' profiles (members only), a GlobalNetworkPolicy denying one port,
and `podman rm` releasing the address, the endpoint and the veth.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.cni import lab as cnilab
from tortie.cni.install import netconf
from tortie.confd.lab import LabBGP
from tortie.lab import Lab, netns

pytestmark = pytest.mark.skipif(
    not shutil.which("podman") or not shutil.which("runc") or not os.path.exists(
        "/bin/busybox"),
    reason="needs podman, runc and busybox-static (scripts/setup.sh installs them)",
)

NET = "tortie-pods"
OTHER = "tortie-other"
POOL = "10.70.0.0/16"
IMAGE = "localhost/tortie-busybox:test"
APPLETS = ("sh", "ip", "sleep", "wget", "httpd", "timeout", "cat", "echo", "true", "ls")


def build_rootfs_tar(dest: Path) -> Path:
    """A busybox-static root filesystem as a tarball, with a page for httpd to serve."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    tar_path = dest / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "www"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        page = dest / "index.html"
        page.write_text("hello from tortie\n")
        tar.add(page, "www/index.html")
    return tar_path


class Podman:
    """One node's Podman: its own storage, config and CNI network definitions."""

    def __init__(self, lab: Lab, node: str, base: Path, plugin_dirs: list[str]) -> None:
        self.lab = lab
        self.node = node
        self.dir = base / node
        self.netconf_dir = self.dir / "net.d"
        self.netconf_dir.mkdir(parents=True)
        self.conf_file = self.dir / "containers.conf"
        dirs = ", ".join(json.dumps(d) for d in plugin_dirs)
        self.conf_file.write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            'runtime = "runc"\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f"cni_plugin_dirs = [{dirs}]\n"
            f"network_config_dir = {json.dumps(str(self.netconf_dir))}\n"
        )

    def add_network(self, name: str, tmp: Path) -> None:
        conf = netconf(name, etcd_endpoints=self.lab.etcd_endpoint, nodename=self.node,
                       extra={"ipam_lock_file": str(tmp / f"ipam-{self.node}.lock"),
                              "log_file_path": str(tmp / f"cni-{self.node}.log")})
        (self.netconf_dir / f"10-{name}.conflist").write_text(json.dumps(conf, indent=2))

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = ["podman", "--root", str(self.dir / "root"), "--runroot",
                str(self.dir / "runroot"), "--tmpdir", str(self.dir / "tmp"),
                "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--network-config-dir", str(self.netconf_dir),
                *args]
        env = {"PATH": os.environ["PATH"], "HOME": str(self.dir),
               "CONTAINERS_CONF": str(self.conf_file)}
        proc = subprocess.run(netns.nsenter_argv(self.lab.netns_of(self.node), argv),
                              env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def run(self, name: str, network: str, *cmd: str) -> str:
        out = self("run", "-d", "--runtime", "runc", "--ulimit", "nofile=1024:1024",
                   "--ulimit", "nproc=1024:1024", "--network", network, "--name", name,
                   IMAGE, *cmd)
        return out.stdout.strip()

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self("inspect", name).stdout)[0]  # type: ignore[no-any-return]

    def ip(self, name: str, network: str) -> str:
        return str(self.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"])

    def exec(self, name: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self("exec", name, *cmd, check=False, timeout=timeout)

    def cleanup(self) -> None:
        """Remove every container; kill (by PID) any container process that survives it,
        then unmount whatever storage is still mounted."""
        pids: dict[int, int | None] = {}
        ps = self("ps", "-a", "-q", check=False)
        for cid in ps.stdout.split():
            state = self("inspect", "--format", "{{.State.Pid}}", cid, check=False)
            if state.stdout.strip().isdigit() and int(state.stdout) > 0:
                pid = int(state.stdout)
                pids[pid] = netns.process_start_time(pid)
        self("rm", "-a", "-f", "-t", "0", check=False)
        netns.kill_pids({p: t for p, t in pids.items() if t is not None}, grace=1.0)
        mounts = []
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                point = line.split()[4]
                if point.startswith(str(self.dir)):
                    mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


class PodLab:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.felix = FelixLab(lab, str(tmp))
        self.bgp = LabBGP(lab)
        bin_dir = cnilab.install(tmp / "bin")
        plugin_dirs = [str(bin_dir)]
        if os.path.isdir("/usr/lib/cni"):
            plugin_dirs.append("/usr/lib/cni")
        # Short: Podman refuses a runroot path over 50 characters.
        self.podman_dir = Path(tempfile.mkdtemp(prefix="tpod", dir="/tmp"))
        self.podman = {n: Podman(lab, n, self.podman_dir, plugin_dirs) for n in ("node1", "node2")}
        self.ids: dict[str, str] = {}
        self.where: dict[str, str] = {}

    def start(self) -> None:
        self.lab.client.apply(resource("IPPool", "pod-pool", {"cidr": POOL, "blockSize": 26}))
        tar = build_rootfs_tar(self.tmp)
        for node, podman in self.podman.items():
            self.felix.start_felix(node)
            cnilab.start_daemon(self.lab, node, log_file=str(self.tmp / f"daemon-{node}.log"))
            podman.add_network(NET, self.tmp)
            podman.add_network(OTHER, self.tmp)
            podman("import", str(tar), IMAGE)
        self.bgp.start()
        for node in self.podman:
            eventually(lambda n=node: self.felix.felix_ready(n), 30, f"felix on {node} ready")

    def run(self, node: str, name: str, network: str, *cmd: str) -> str:
        self.ids[name] = self.podman[node].run(name, network, *cmd)
        self.where[name] = node
        return self.ids[name]

    def ip(self, name: str, network: str = NET) -> str:
        return self.podman[self.where[name]].ip(name, network)

    def wget(self, src: str, dst: str, port: int) -> bool:
        url = f"http://{self.ip(dst)}:{port}/"
        # (busybox 1.35's `wget -T` crashes: bound it with `timeout` instead)
        res = self.podman[self.where[src]].exec(src, "timeout", "2", "wget", "-q", "-O", "-", url)
        return res.returncode == 0 and "hello from tortie" in res.stdout

    def expect(self, src: str, dst: str, port: int, ok: bool, timeout: float = 30) -> None:
        eventually(lambda: self.wget(src, dst, port) == ok, timeout,
                   f"{src} -> {dst}:{port} {'allowed' if ok else 'blocked'}")

    def close(self) -> None:
        for podman in self.podman.values():
            podman.cleanup()
        self.bgp.stop()
        for node in list(self.felix.felix):
            try:
                self.felix.stop_felix(node)
            except Exception:
                pass
        self.lab.down()
        # Podman's CNI result cache (libcni's default directory) for our networks.
        for f in Path("/var/lib/cni/results").glob("tortie-*"):
            f.unlink()
        shutil.rmtree(self.podman_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodLab]:
    tmp = tmp_path_factory.mktemp("podman")
    lab = Lab(nodes=2, static_route=False, host_sysctls=False)
    lab.up()
    p = PodLab(lab, tmp)
    try:
        p.start()
        p.run("node1", "client", NET, "sleep", "3600")
        p.run("node2", "server", NET, "sh", "-c",
              "httpd -p 8080 -h /www && exec httpd -f -p 9090 -h /www")
        p.run("node2", "neighbour", NET, "sleep", "3600")
        p.run("node1", "outsider", OTHER, "sleep", "3600")
        yield p
    finally:
        p.close()
        for name in sorted(os.listdir(tmp)):
            if name.startswith(("daemon-", "cni-")) and name.endswith(".log"):
                errors = [ln for ln in (tmp / name).read_text().splitlines() if "[ERROR]" in ln]
                if errors:
                    sys.stderr.write(f"--- {name}:\n" + "\n".join(errors[-10:]) + "\n")


def test_containers_get_pool_addresses(pods: PodLab) -> None:
    weps = {w.spec.container_id: w for w in pods.lab.client.list("WorkloadEndpoint").items}
    for name in ("client", "server", "neighbour"):
        ip = pods.ip(name)
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(POOL)
        cid = pods.ids[name]
        wep = weps[cid]  # Podman's ADD: plain CNI (no pod namespace in CNI_ARGS)
        assert wep.name == f"{pods.where[name]}-cni-{cid}-eth0"
        assert (wep.spec.orchestrator, wep.spec.node) == ("cni", pods.where[name])
        assert wep.spec.ip_networks == [f"{ip}/32"] and wep.spec.profiles == [NET]
        assert wep.spec.interface_name == "cali" + cid[:11]
        podman = pods.podman[pods.where[name]]
        addr = podman.exec(name, "ip", "-4", "addr", "show", "eth0").stdout
        assert f"inet {ip}/32" in addr
        routes = podman.exec(name, "ip", "route").stdout
        assert "default via 169.254.1.1 dev eth0" in routes
        assert "169.254.1.1 dev eth0" in routes
    assert weps[pods.ids["outsider"]].spec.profiles == [OTHER]
    assert pods.lab.client.get("Profile", NET).spec.labels_to_apply == {NET: ""}


def test_members_of_a_network_reach_each_other(pods: PodLab) -> None:
    pods.expect("client", "server", 8080, True)  # across nodes (BGP route to the block)
    pods.expect("neighbour", "server", 9090, True)  # same node
    # The other network's profile does not admit tortie-pods members, nor the reverse.
    assert not pods.wget("outsider", "server", 8080)


def test_global_network_policy_denies_a_port(pods: PodLab) -> None:
    pods.expect("client", "server", 8080, True)
    pods.felix.apply(resource("GlobalNetworkPolicy", "deny-8080", {
        "selector": f"has({NET})",
        "types": ["Ingress"],
        "ingress": [
            {"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}},
            {"action": "Pass"},
        ],
    }))
    try:
        pods.expect("client", "server", 8080, False)
        pods.expect("client", "server", 9090, True)  # passed on to the profile: allowed
        pods.expect("neighbour", "server", 8080, False)
    finally:
        pods.felix.cleanup_resources()
    pods.expect("client", "server", 8080, True)


def test_podman_rm_frees_the_address(pods: PodLab) -> None:
    from tortie.ipam import IPAMClient

    cid = pods.run("node1", "ephemeral", NET, "sleep", "3600")
    ip = pods.ip("ephemeral")
    ipam = IPAMClient(pods.lab.client.backend)
    assert ipam.ips_by_handle(f"{NET}.{cid}") == [ip]
    pods.podman["node1"]("rm", "-f", "-t", "0", "ephemeral")
    assert ipam.ips_by_handle(f"{NET}.{cid}") == []
    assert not [w for w in pods.lab.client.list("WorkloadEndpoint").items
                if w.spec.container_id == cid]

    def veth_gone() -> bool:
        out = pods.lab.exec("node1", ["ip", "-o", "link", "show"]).stdout
        return "cali" + cid[:11] not in out

    eventually(veth_gone, 10, "the host-side veth to go")
    # The address goes to the next container.
    pods.run("node1", "successor", NET, "sleep", "3600")
    assert pods.ip("successor")
    pods.podman["node1"]("rm", "-f", "-t", "0", "successor")
