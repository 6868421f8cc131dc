"""Network-namespace primitives for the lab: namespaces, batched `ip` calls, per-thread setns.

This module owns every direct touch of the kernel the lab makes, and it is written so that
none of it can land in the root network namespace:

- Namespaces are created and deleted with one `ip -batch` call for all of them
  (`create_namespaces`, `delete_namespaces`); that is the only `ip` call without `-n`.
- Links, addresses and routes go through `ip_batch(ns, lines)`, which always runs
  `ip -n NS -batch -`: one process per namespace and step, never one per object. `ns` must
  name an existing namespace (`ip -n` fails otherwise; it never falls back to the root).
- Sysctls, sockets and anything else done from Python run in a thread that has joined the
  namespace with setns(2) (`run_in`, `NetnsExecutor`). setns of a network namespace is
  per-thread, so the rest of the process stays where it is; each such thread checks, before
  running anything, that `/proc/thread-self/ns/net` is the namespace it asked for.
  Sockets keep the namespace they were created in, whichever thread uses them later.
- Commands for users run under `nsenter --net=/run/netns/NAME` (`nsenter_argv`), not
  `ip netns exec`, which remounts /sys and hides the cgroup mounts.

Processes: `pids_in_namespaces` finds every process whose network namespace is one of a set
(by inode), so the lab can kill what it started even when a crash lost the PIDs.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import errno
import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = [
    "NETNS_DIR",
    "LabError",
    "NetnsExecutor",
    "create_namespaces",
    "delete_namespaces",
    "ip_batch",
    "kill_pids",
    "namespace_exists",
    "namespace_inode",
    "nsenter_argv",
    "pids_in_namespaces",
    "ping",
    "process_start_time",
    "run_in",
    "set_sysctls",
    "wait_for",
]

log = logging.getLogger(__name__)

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class LabError(RuntimeError):
    """A lab operation failed; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Namespaces


def namespace_path(name: str) -> str:
    """The file of a named namespace, or of a process's (``pid:1234``, e.g. a container)."""
    if name.startswith("pid:") and name[4:].isdigit():
        return f"/proc/{int(name[4:])}/ns/net"
    if not name or "/" in name or name in (".", ".."):
        raise LabError(f"invalid network namespace name {name!r}")
    return f"{NETNS_DIR}/{name}"


def namespace_exists(name: str) -> bool:
    return os.path.exists(namespace_path(name))


def namespace_inode(name: str) -> int | None:
    """The inode identifying the namespace (what /proc/PID/ns/net points at), or None."""
    try:
        return os.stat(namespace_path(name)).st_ino
    except FileNotFoundError:
        return None


def _run_ip(args: Sequence[str], lines: Sequence[str], what: str) -> None:
    if not lines:
        return
    proc = subprocess.run(
        ["ip", *args, "-batch", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"{what} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def create_namespaces(names: Iterable[str]) -> None:
    """Create network namespaces (one `ip -batch` for all); existing ones are an error."""
    names = list(names)
    for n in names:
        namespace_path(n)
    _run_ip([], [f"netns add {n}" for n in names], f"creating namespaces {', '.join(names)}")


def delete_namespaces(names: Iterable[str]) -> None:
    """Delete the namespaces that exist (one `ip -batch -force`); absent ones are skipped."""
    present = [n for n in names if namespace_exists(n)]
    if not present:
        return
    proc = subprocess.run(
        ["ip", "-force", "-batch", "-"],
        input="".join(f"netns del {n}\n" for n in present),
        capture_output=True,
        text=True,
        check=False,
    )
    left = [n for n in present if namespace_exists(n)]
    if left:
        raise LabError(f"could not delete namespaces {', '.join(left)}: {proc.stderr.strip()}")


def ip_batch(ns: str, lines: Sequence[str], force: bool = False) -> None:
    """Run `ip` commands (one per line, without the leading `ip`) inside namespace `ns`.

    With `force`, failing lines do not stop the rest (and do not raise)."""
    args = ["-n", namespace_path(ns).rsplit("/", 1)[1]]
    if force:
        subprocess.run(
            ["ip", *args, "-force", "-batch", "-"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        return
    _run_ip(args, lines, f"ip -n {ns}")


def nsenter_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs `argv` inside namespace `ns` (network namespace only)."""
    return ["nsenter", f"--net={namespace_path(ns)}", "--", *argv]


# ---------------------------------------------------------------------------------------------
# Threads inside a namespace

_libc = ctypes.CDLL(None, use_errno=True)


def _enter(ns: str) -> None:
    """Move the calling thread into namespace `ns` and prove it did."""
    path = namespace_path(ns)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns({ns}): {os.strerror(err)}")
        want = os.fstat(fd).st_ino
    finally:
        os.close(fd)
    got = os.stat("/proc/thread-self/ns/net").st_ino
    if got != want:  # never run namespace work in the wrong place
        raise LabError(f"thread is not in namespace {ns} after setns")


def run_in(ns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn(*args, **kwargs)` in a fresh thread inside namespace `ns`; return its result."""
    result: list[Any] = []

    def body() -> None:
        try:
            _enter(ns)
            result.append((True, fn(*args, **kwargs)))
        except BaseException as exc:
            result.append((False, exc))

    t = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


class NetnsExecutor:
    """A single long-lived thread inside a namespace; `call(fn, ...)` runs work there.

    Used for clients whose connections must originate inside the lab (the datastore client
    talks to etcd through one). Calls are serialised, in submission order.
    """

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{ns}", initializer=_enter, initargs=(ns,)
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return self._pool.submit(fn, *args, **kwargs).result()
        except concurrent.futures.BrokenExecutor as exc:
            raise LabError(f"could not start a thread in namespace {self.ns}: {exc}") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def set_sysctls(per_namespace: Mapping[str, Mapping[str, str]]) -> None:
    """Write sysctls, e.g. {"tlab-n1": {"net/ipv4/ip_forward": "1"}}, inside each namespace."""

    def write(values: Mapping[str, str]) -> None:
        for key, value in values.items():
            path = "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key
            with open(path, "w") as fh:
                fh.write(value)

    for ns, values in per_namespace.items():
        if values:
            run_in(ns, write, values)


# ---------------------------------------------------------------------------------------------
# Probes


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _ping_here(dst: str, timeout: float) -> bool:
    ident = (os.getpid() ^ threading.get_native_id()) & 0xFFFF
    payload = b"tortie-lab-ping"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            s.sendto(packet, (dst, 0))
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL):
                return False
            raise
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, addr = s.recvfrom(2048)
            except (TimeoutError, OSError):
                return False
            ihl = (data[0] & 0x0F) * 4
            icmp_type, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if icmp_type == 0 and rid == ident and addr[0] == dst:
                return True
    return False


def ping(ns: str, dst: str, timeout: float = 1.0) -> bool:
    """One ICMP echo from inside `ns` to `dst`; True if the reply came back in time.

    Done from a thread in the namespace with a raw socket (these machines have no `ping`).
    """
    return run_in(ns, _ping_here, dst, timeout)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `cond` until it is true; raise LabError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        if cond():
            return
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


# ---------------------------------------------------------------------------------------------
# Processes


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (to tell a PID's reuse), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # a zombie is as good as dead
        return None
    return int(fields[19])


def pids_in_namespaces(inodes: Iterable[int]) -> list[int]:
    """Every process whose network namespace has one of these inodes."""
    wanted = set(inodes)
    if not wanted:
        return []
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            ino = os.stat(f"/proc/{entry}/ns/net").st_ino
        except OSError:
            continue
        if ino in wanted:
            found.append(int(entry))
    return found


def kill_pids(pids: Mapping[int, int | None], grace: float = 3.0) -> None:
    """SIGTERM each process, SIGKILL what is left after `grace` seconds, wait until gone.

    `pids` maps PID -> start time as recorded (None: unknown); a PID whose start time no
    longer matches is someone else's process by now and is left alone.
    """
    live: dict[int, int | None] = {}
    for pid, started in pids.items():
        now = process_start_time(pid)
        if now is None or (started is not None and now != started):
            continue
        live[pid] = now
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            live.pop(pid)

    def gone() -> bool:
        for pid in list(live):
            if process_start_time(pid) != live[pid]:
                live.pop(pid)
                with_reap(pid)
        return not live

    try:
        wait_for(gone, grace, "processes to exit")
        return
    except LabError:
        pass
    for pid in live:
        log.warning("pid %d ignored SIGTERM; killing it", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(gone, 10.0, f"processes {sorted(live)} to die")


def with_reap(pid: int) -> None:
    """Reap `pid` if it is our child (so it does not linger as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
