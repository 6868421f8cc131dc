"""Real Docker on lab nodes: a private dockerd per node, the busybox image, tortie-libnetwork.

`start_dockerd(lab, node, workdir)` starts Debian's dockerd (20.10) *inside the node's network
namespace* (`nsenter --net`, not `ip netns exec`, which would hide the cgroup mounts) and in
a private mount namespace (`unshare -m --propagation private`), where

- a per-node directory is bind-mounted on `/run/docker/plugins`, so each node's dockerd finds
  only its own node's plugin sockets (`tortie.sock`, `tortie-ipam.sock`);
- a tmpfs covers `/run/containerd`, so dockerd never adopts a containerd of the machine's
  and starts its own (whose shims' sockets stay private too).

Everything else is the node's own: `--data-root`, `--exec-root` (container namespaces live
under it), `--pidfile`, `-H unix://<dir>/docker.sock`, its own (empty) config file and trust
key; `--iptables=false --ip-forward=false --ip-masq=false --bridge=none
--userland-proxy=false`: Docker touches no iptables rule, sysctl or bridge, Felix does the
networking. The Docker CLI talks to the socket from anywhere (a unix socket is a file), with a
private `DOCKER_CONFIG`. Nothing here touches the machine's own Docker, if it has one.

`ensure_image(dn)` imports `tortie/busybox` from a rootfs tarball built once from Debian's
`busybox-static` (there is no registry) and cached (`TORTIE_CACHE_DIR`, default
`/var/tmp/tortie-cache`). `start_libnetwork(dn)` runs `tortie-libnetwork` in the node's
namespace with its sockets in that node's plugin directory.

Stopping (`DockerNode.stop`) never hangs and leaves nothing: containers are removed through
Docker, dockerd is stopped by PID (SIGTERM, then SIGKILL), and whatever is left of its mount
namespace (containerd, shims) and the containers they ran is killed by PID; the mount
namespace, its mounts and the containers' network namespaces disappear with the last of them.
Every step has a deadline; a failure says what to look at (`dockerd.log` in the node's
directory). `dockerd` and the plugin are also registered with the lab (`Lab.spawn`), so
`Lab.down` kills them if a test never got to `stop`.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tortie.lab import netns
from tortie.lab.netns import LabError

__all__ = [
    "IMAGE",
    "DockerError",
    "DockerNode",
    "busybox_rootfs",
    "docker",
    "docker_unavailable_reason",
    "ensure_image",
    "start_docker_nodes",
    "start_dockerd",
    "start_libnetwork",
]

IMAGE = "tortie/busybox:latest"
BUSYBOX = "/bin/busybox"
DEFAULT_CACHE_DIR = "/var/tmp/tortie-cache"
T = TypeVar("T")


class DockerError(LabError):
    """Docker in the lab failed; the message says what and where to look."""


def docker_cli() -> str:
    """The Docker CLI matching Debian's daemon when there is one, else any on PATH."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if not found:
        raise DockerError("the docker CLI is not installed (scripts/setup.sh installs docker.io)")
    return found


def docker_unavailable_reason() -> str | None:
    """Why real Docker cannot run in the lab here, or None when it can."""
    if os.geteuid() != 0:
        return "Docker in the lab needs root"
    for tool in ("dockerd", "containerd", "runc", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup.sh installs docker.io)"
    try:
        docker_cli()
    except DockerError as exc:
        return str(exc)
    problem = _busybox_problem()
    if problem:
        return problem
    return None


def _busybox_problem() -> str | None:
    try:
        with open(BUSYBOX, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return f"{BUSYBOX} is missing (install busybox-static)"
    if head[:4] != b"\x7fELF" or head[4] != 2:
        return f"{BUSYBOX} is not a 64-bit ELF binary"
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(head):
            break
        if struct.unpack_from("<I", head, off)[0] == 3:  # PT_INTERP: dynamically linked
            return f"{BUSYBOX} is dynamically linked: install busybox-static for the image"
    return None


# ---------------------------------------------------------------------------------------------
# The image


def busybox_rootfs(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A rootfs tarball with a static busybox and its applets (built once, then cached)."""
    cache = Path(cache_dir or os.environ.get("TORTIE_CACHE_DIR") or DEFAULT_CACHE_DIR)
    stat = os.stat(BUSYBOX)
    out = cache / f"busybox-rootfs-{stat.st_size}-{int(stat.st_mtime)}.tar"
    if out.exists():
        return out
    problem = _busybox_problem()
    if problem:
        raise DockerError(problem)
    cache.mkdir(parents=True, exist_ok=True)
    listed = subprocess.run(
        [BUSYBOX, "--list-full"], capture_output=True, text=True, timeout=10, check=False
    )
    if listed.returncode != 0:
        raise DockerError(f"{BUSYBOX} --list-full failed: {listed.stderr.strip()}")
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    try:
        with tarfile.open(tmp, "w") as tar:
            for d, mode in (
                ("bin", 0o755),
                ("sbin", 0o755),
                ("usr", 0o755),
                ("usr/bin", 0o755),
                ("usr/sbin", 0o755),
                ("etc", 0o755),
                ("dev", 0o755),
                ("proc", 0o555),
                ("sys", 0o555),
                ("tmp", 0o1777),
                ("root", 0o700),
                ("var", 0o755),
            ):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            tar.add(BUSYBOX, "bin/busybox")
            for path in sorted(set(listed.stdout.split())):
                if path == "bin/busybox" or path.count("/") not in (1, 2):
                    continue
                info = tarfile.TarInfo(path)
                info.type = tarfile.SYMTYPE
                info.linkname = "busybox" if path.startswith("bin/") else "/bin/busybox"
                tar.addfile(info)
            for name, text in (
                ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                ("etc/group", "root:x:0:\n"),
            ):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def ensure_image(dn: DockerNode, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Import `tortie/busybox` into the node's Docker unless it is there; return its name."""
    if dn.docker("image", "inspect", IMAGE, check=False, timeout=30).returncode == 0:
        return IMAGE
    tarball = busybox_rootfs(cache_dir)
    proc = dn.docker(
        "import",
        "-c",
        'CMD ["/bin/sh"]',
        "-c",
        "ENV PATH=/bin:/sbin:/usr/bin",
        str(tarball),
        IMAGE,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise DockerError(
            f"{dn.node}: docker import of {tarball} failed: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return IMAGE


# ---------------------------------------------------------------------------------------------
# The daemon


@dataclass
class DockerNode:
    """One lab node's dockerd (and, once started, its tortie-libnetwork)."""

    lab: Any  # tortie.lab.Lab
    node: str
    dir: Path
    proc: subprocess.Popen[Any] | None = None
    plugin: subprocess.Popen[Any] | None = None
    mount_ns: int | None = None
    stopped: bool = False
    _log_files: list[Any] = field(default_factory=list)

    # --- paths ----------------------------------------------------------------------------
    @property
    def socket(self) -> str:
        return str(self.dir / "docker.sock")

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def plugin_dir(self) -> Path:
        return self.dir / "plugins"

    @property
    def log_path(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def plugin_log_path(self) -> Path:
        return self.dir / "libnetwork.log"

    @property
    def netns(self) -> str:
        return str(self.lab.netns_of(self.node))

    # --- the CLI and the API ----------------------------------------------------------------
    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.dir / "cli")
        env["DOCKER_HOST"] = self.host
        return env

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker ARGS` against this node's daemon; DockerError if `check` and it fails."""
        argv = [docker_cli(), "-H", self.host, *args]
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.cli_env(),
                input=input,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DockerError(
                f"{self.node}: `docker {shlex.join(args)}` did not finish in "
                f"{timeout:g}s (daemon log: {self.log_path})"
            ) from None
        if (
            proc.returncode != 0
            and "/run/docker/plugins/" in proc.stderr
            and (self.plugin is None or self.plugin.poll() is not None)
        ):
            proc.stderr = (
                proc.stderr.rstrip() + f"\n(tortie-libnetwork is not running on "
                f"{self.node}: start it with start_libnetwork; its log: "
                f"{self.plugin_log_path})\n"
            )
        if check and proc.returncode != 0:
            raise DockerError(
                f"{self.node}: `docker {shlex.join(args)}` failed: "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def api(self, path: str, timeout: float = 5.0) -> Any:
        """GET a Docker Engine API path; DockerError when the daemon does not answer."""
        from tortie.libnetwork.dockerapi import DockerAPI, DockerAPIError

        try:
            return DockerAPI(self.host, timeout=timeout).get(path)
        except DockerAPIError as exc:
            raise DockerError(f"{self.node}: {exc}") from None

    def inspect(self, container: str) -> dict[str, Any]:
        data = self.api(f"/containers/{container}/json")
        if not isinstance(data, dict):
            raise DockerError(f"{self.node}: unexpected inspect answer for {container}")
        return data

    def container_ip(self, container: str, network: str) -> str:
        nets = (self.inspect(container).get("NetworkSettings") or {}).get("Networks") or {}
        ip = (nets.get(network) or {}).get("IPAddress")
        if not ip:
            raise DockerError(f"{self.node}: container {container} has no address on {network}")
        return str(ip)

    def container_pid(self, container: str) -> int:
        pid = int((self.inspect(container).get("State") or {}).get("Pid") or 0)
        if pid <= 0:
            raise DockerError(f"{self.node}: container {container} is not running")
        return pid

    # --- probes from inside a container -----------------------------------------------------
    def run_in_container(self, container: str, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn(*args)` in a thread inside the container's network namespace."""
        return run_in_pid_netns(self.container_pid(container), fn, *args)

    def ping(self, container: str, ip: str, timeout: float = 1.0) -> bool:
        """One ICMP echo from inside the container (no process started in it)."""
        return self.run_in_container(container, netns._ping_here, ip, timeout)

    # --- the plugin ---------------------------------------------------------------------------
    def stop_plugin(self, timeout: float = 10.0) -> None:
        if self.plugin is not None:
            _stop_process(self.plugin, timeout)
            self.plugin = None

    # --- stopping -------------------------------------------------------------------------------
    def stop(self, timeout: float = 20.0, *, remove_containers: bool = True) -> None:
        """Remove the containers, stop dockerd and the plugin, kill leftovers (see module doc).
        `remove_containers=False` skips the Docker API (a daemon that never answered)."""
        if self.stopped:
            return
        self.stopped = True
        if remove_containers and self.proc is not None and self.proc.poll() is None:
            try:
                ids = self.docker("ps", "-aq", check=False, timeout=10).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=timeout)
            except DockerError:
                pass
        leftovers = _mount_ns_pids(self.mount_ns) if self.mount_ns else []
        children = _children_outside(leftovers, self.mount_ns)
        if self.proc is not None:
            _stop_process(self.proc, timeout)
        self.stop_plugin()
        # What dockerd did not take down with it: containerd, shims, and their containers.
        if self.mount_ns:
            leftovers = _mount_ns_pids(self.mount_ns)
            children += _children_outside(leftovers, self.mount_ns)
            netns.kill_pids({p: netns.process_start_time(p) for p in children}, grace=1.0)
            netns.kill_pids({p: netns.process_start_time(p) for p in leftovers}, grace=2.0)
        for fh in self._log_files:
            fh.close()
        self._log_files.clear()


def docker(dn: DockerNode, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` on a lab node's daemon (see `DockerNode.docker`)."""
    return dn.docker(*args, **kwargs)


def _stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    except ProcessLookupError:
        pass


def _mount_ns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _private_mount_ns(pid: int) -> int | None:
    """The mount namespace of `pid` if it is a private one (never ours or init's: killing
    "everything in it" must only ever mean dockerd's own processes)."""
    inode = _mount_ns_inode(pid)
    if inode is None or inode in (_mount_ns_inode(os.getpid()), _mount_ns_inode(1)):
        return None
    return inode


def _mount_ns_pids(inode: int | None) -> list[int]:
    if inode is None:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and _mount_ns_inode(int(entry)) == inode:
            out.append(int(entry))
    return out


def _children_outside(parents: Sequence[int], inode: int | None) -> list[int]:
    """Processes whose parent is one of `parents` but that live in another mount namespace
    (the containers that containerd's shims started)."""
    wanted = set(parents)
    if not wanted:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        if ppid in wanted and _mount_ns_inode(int(entry)) != inode:
            out.append(int(entry))
    return out


def _daemon_script(dn: DockerNode) -> str:
    d = dn.dir
    argv = [
        "dockerd",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--bridge=none",
        "--userland-proxy=false",
        "--data-root",
        str(d / "data"),
        "--exec-root",
        str(d / "exec"),
        "--pidfile",
        str(d / "docker.pid"),
        "-H",
        dn.host,
        "--config-file",
        str(d / "daemon.json"),
        "--log-level",
        "warn",
        "--shutdown-timeout",
        "2",
    ]
    return (
        "set -e; mkdir -p /run/docker/plugins /run/containerd; "
        "mount -t tmpfs -o mode=0711 tortie-lab-containerd /run/containerd; "
        f"mount --bind {shlex.quote(str(dn.plugin_dir))} /run/docker/plugins; "
        f"exec {shlex.join(argv)}"
    )


def start_dockerd(
    lab: Any, node: str, workdir: str | os.PathLike[str], *, timeout: float = 30.0
) -> DockerNode:
    """Start a private dockerd on lab node `node` (see the module docstring); wait until it
    answers. Files go under `<workdir>/<node>/` (keep `workdir` short: unix socket paths
    are limited to 107 bytes)."""
    reason = docker_unavailable_reason()
    if reason:
        raise DockerError(reason)
    lab.node(node)
    d = Path(workdir).resolve() / node
    longest = d / "exec" / "containerd" / "containerd.sock.ttrpc"
    if len(str(longest)) > 100:
        raise DockerError(
            f"workdir {workdir} is too long for dockerd's sockets "
            f"({longest} is over 100 bytes): use a shorter directory"
        )
    for sub in ("data", "exec", "plugins", "cli"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(d / "key.json")}))
    dn = DockerNode(lab, node, d)
    if _pings(dn):
        raise DockerError(
            f"{node}: a dockerd already answers on {dn.socket}: stop it first "
            "or use another workdir"
        )
    log = open(dn.log_path, "ab")  # noqa: SIM115 - closed by stop()
    dn._log_files.append(log)
    argv = ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", _daemon_script(dn)]
    dn.proc = lab.spawn(
        node,
        argv,
        name=f"dockerd-{node}",
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: _pings(dn), timeout, dn, "dockerd to answer on " + dn.socket)
        dn.mount_ns = _private_mount_ns(dn.proc.pid)
    except BaseException:
        dn.mount_ns = _private_mount_ns(dn.proc.pid)
        dn.stop(timeout=5.0, remove_containers=False)
        raise
    return dn


def start_docker_nodes(
    lab: Any,
    nodes: Sequence[str],
    workdir: str | os.PathLike[str],
    *,
    libnetwork: bool = False,
) -> dict[str, DockerNode]:
    """`start_dockerd` (and the busybox image, and with ``libnetwork`` the plugin) on several
    nodes at once, in parallel; on any failure every daemon already started is stopped and
    the first error is raised."""
    started: dict[str, DockerNode] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def start(node: str) -> None:
        try:
            dn = start_dockerd(lab, node, workdir)
            with lock:
                started[node] = dn
            ensure_image(dn)
            if libnetwork:
                start_libnetwork(dn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for dn in started.values():
            dn.stop(timeout=10.0)
        raise errors[0]
    return started


def _pings(dn: DockerNode) -> bool:
    conn = http.client.HTTPConnection("localhost", timeout=1.0)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(dn.socket)
        conn.sock = sock
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
        sock.close()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _wait(
    cond: Callable[[], bool],
    timeout: float,
    dn: DockerNode,
    what: str,
    proc: subprocess.Popen[Any] | None = None,
    log: Path | None = None,
) -> None:
    proc = proc or dn.proc
    log = log or dn.log_path
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise DockerError(
                f"{dn.node}: waiting for {what}: the process exited with "
                f"code {proc.returncode}; {log}:\n{_tail(log)}"
            )
        if time.monotonic() >= deadline:
            raise DockerError(
                f"{dn.node}: timed out after {timeout:g}s waiting for {what}; {log}:\n{_tail(log)}"
            )
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# tortie-libnetwork


def _activates(path: Path) -> bool:
    conn = http.client.HTTPConnection("localhost", timeout=1.0)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(str(path))
        conn.sock = sock
        conn.request("POST", "/Plugin.Activate", body=b"{}")
        resp = conn.getresponse()
        return resp.status == 200 and "Implements" in json.loads(resp.read())
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()
        sock.close()


def start_libnetwork(
    dn: DockerNode,
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 20.0,
) -> subprocess.Popen[Any]:
    """Run tortie-libnetwork for this node in its namespace, sockets in its plugin dir; wait
    until both drivers answer `Plugin.Activate`."""
    if dn.plugin is not None and dn.plugin.poll() is None:
        return dn.plugin
    lab = dn.lab
    penv = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ETCD_", "CALICO_", "DOCKER_", "TORTIE_LIBNETWORK"))
    }
    penv.update(NODENAME=dn.node, ETCD_ENDPOINTS=lab.etcd_endpoint, DOCKER_HOST=dn.host)
    penv.update(env or {})
    log = open(dn.plugin_log_path, "ab")  # noqa: SIM115 - closed by stop()
    dn._log_files.append(log)
    argv = [sys.executable, "-m", "tortie.libnetwork", "--plugin-dir", str(dn.plugin_dir)]
    dn.plugin = lab.spawn(
        dn.node,
        argv,
        name=f"libnetwork-{dn.node}",
        env=penv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    net_sock = dn.plugin_dir / f"{penv.get('TORTIE_LIBNETWORK_NETWORK', 'tortie')}.sock"
    ipam_sock = dn.plugin_dir / "tortie-ipam.sock"
    try:
        _wait(
            lambda: _activates(net_sock) and _activates(ipam_sock),
            timeout,
            dn,
            "tortie-libnetwork to answer",
            proc=dn.plugin,
            log=dn.plugin_log_path,
        )
    except BaseException:
        dn.stop_plugin(timeout=5.0)
        raise
    return dn.plugin


# ---------------------------------------------------------------------------------------------
# Namespaces by process


def run_in_pid_netns(pid: int, fn: Callable[..., T], *args: Any) -> T:
    """Call `fn(*args)` in a fresh thread that joined process `pid`'s network namespace."""
    result: list[tuple[bool, Any]] = []

    def body() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if netns._libc.setns(fd, netns.CLONE_NEWNET) != 0:
                    raise DockerError(f"setns into process {pid}'s network namespace failed")
                want = os.fstat(fd).st_ino
            finally:
                os.close(fd)
            if os.stat("/proc/thread-self/ns/net").st_ino != want:
                raise DockerError(f"thread is not in process {pid}'s namespace after setns")
            result.append((True, fn(*args)))
        except BaseException as exc:
            result.append((False, exc))

    t = threading.Thread(target=body, name=f"netns-pid{pid}", daemon=True)
    t.start()
    t.join()
    ok, value = result[0]
    if not ok:
        if isinstance(value, FileNotFoundError):
            raise DockerError(f"process {pid} is gone") from None
        raise value
    return value  # type: ignore[no-any-return]
