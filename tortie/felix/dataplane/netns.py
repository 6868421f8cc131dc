"""Run code inside a named network namespace (``/run/netns/<name>``).

Felix itself never needs this: it is started inside the namespace it programs
(``nsenter --net=/run/netns/NODE tortie-felix``), and every manager works in whatever namespace
its process is in.  Tests and benchmarks, however, run in the root namespace and must never
touch its iptables, ipsets, routes or sysctls, so they move a thread into a throwaway namespace
first.

Network namespaces are a per-*thread* attribute on Linux (``setns(2)`` with ``CLONE_NEWNET``
changes only the calling thread), and everything that thread creates inherits it:

- child processes forked from it (``subprocess.run(["iptables-restore", ...])``),
- netlink sockets it opens (pyroute2 ``IPRoute()`` binds at creation time and stays bound to
  that namespace even if the thread moves on),
- ``/proc/sys/net/...`` paths it opens (resolved against the opener's namespace).

``/sys/class/net`` is *not* per-thread (it reflects the namespace sysfs was mounted in), so
code here never relies on it.

:func:`in_netns` moves the current thread and always moves it back (it keeps an fd of the
original namespace).  :func:`run_in_netns` runs a function in a fresh thread inside the
namespace and is the safer choice from pytest's main thread: even if restoring failed, only
that short-lived thread would be affected.  :func:`temp_netns` creates a uniquely named
namespace and deletes it afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

T = TypeVar("T")

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


def netns_path(name: str) -> str:
    """The bind-mount path of a named namespace (``ip netns`` convention)."""
    if "/" in name:
        return name
    return os.path.join(NETNS_RUN_DIR, name)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Move the current thread into namespace *name* for the duration of the block.

    The original namespace is restored on exit, even on exceptions.  If restoring fails the
    thread is in an unknown namespace, so we raise rather than continue silently.
    """
    orig_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target_fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.fstat(target_fd)
            _setns(target_fd)
        finally:
            os.close(target_fd)
        here = os.stat("/proc/thread-self/ns/net")
        if (here.st_dev, here.st_ino) != (target.st_dev, target.st_ino):
            _setns(orig_fd)
            raise OSError(f"setns into {name} did not take effect for this thread")
        try:
            yield
        finally:
            _setns(orig_fd)
    finally:
        os.close(orig_fd)


def run_in_netns(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in a fresh thread inside namespace *name*.

    Returns its result or re-raises its exception in the caller.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            with in_netns(name):
                result.append(fn(*args, **kwargs))
        except BaseException as e:  # re-raised in the caller
            error.append(e)

    t = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def create_netns(name: str) -> None:
    """Create a named namespace with ``ip netns add`` and bring its loopback up."""
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, text=True)
    subprocess.run(
        ["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True, text=True
    )


def delete_netns(name: str) -> None:
    """Delete a named namespace; a missing one is not an error."""
    if os.path.exists(netns_path(name)):
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@contextlib.contextmanager
def temp_netns(prefix: str = "tdp") -> Iterator[str]:
    """Create ``<prefix>-<random hex>`` and always delete it afterwards; yields its name."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    create_netns(name)
    try:
        yield name
    finally:
        delete_netns(name)


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (not root, no ``ip netns``), or ``None`` if they can.

    Tests and benchmarks call this to skip cleanly instead of failing.
    """
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    try:
        proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    except FileNotFoundError:
        return "the ip command (iproute2) is not installed"
    if proc.returncode != 0:
        return f"ip netns is unavailable: {proc.stderr.strip()}"
    if not os.path.exists("/proc/thread-self/ns/net"):
        return "/proc/thread-self/ns/net is missing (kernel without network namespaces)"
    return None
