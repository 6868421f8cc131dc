"""The CNI plugin in a `tortie.lab` lab: the tests', benchmark's and demo's way to drive it.

- `install(bin_dir)`: the launchers, as `tortie-cni install` writes them.
- `start_daemon(lab, node, ...)`: `tortie-cni daemon` in a node's namespace (killed by
  `lab.down()`); `daemon_listening(ns)` tells whether it answers yet.
- `invoke(ns, plugin, command, conf, ...)`: run a plugin binary exactly as a runtime does
  (`CNI_*` variables, the configuration on stdin), from a thread that has joined the node's
  namespace, so the plugin process starts there directly (no `nsenter` in the timing).
"""

from __future__ import annotations

import _socket
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tortie.cni.client import DEFAULT_SOCKET, socket_address
from tortie.cni.install import install_plugins
from tortie.lab import netns

__all__ = ["daemon_listening", "install", "invoke", "start_daemon"]

RUNTIME_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def install(bin_dir: str | os.PathLike[str]) -> Path:
    """Install the launchers into `bin_dir` (created); return it."""
    install_plugins(bin_dir)
    return Path(bin_dir)


def _can_connect(name: str) -> bool:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(socket_address(name))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def daemon_listening(ns: str, name: str = DEFAULT_SOCKET) -> bool:
    return netns.run_in(ns, _can_connect, name)


def start_daemon(lab: Any, node: str, log_file: str | None = None,
                 name: str = DEFAULT_SOCKET, timeout: float = 15.0) -> subprocess.Popen[Any]:
    """Start the CNI daemon in `node`'s namespace and wait until it listens."""
    argv = [sys.executable, "-m", "tortie.cni.daemon", "--socket", name]
    if log_file:
        argv += ["--log-file", log_file]
    proc = lab.spawn(node, argv, name=f"tortie-cni-{node}", stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    ns = lab.netns_of(node)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"tortie-cni daemon on {node} exited with {proc.returncode}")
        return daemon_listening(ns, name)

    netns.wait_for(ready, timeout, f"the CNI daemon on {node}")
    return proc


def invoke(
    ns: str,
    plugin: str | os.PathLike[str],
    command: str,
    conf: Mapping[str, Any] | bytes,
    *,
    container_id: str = "",
    netns_path: str = "",
    ifname: str = "eth0",
    cni_args: str = "",
    cni_path: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[bytes]:
    """Run `plugin` with `CNI_COMMAND=command` inside namespace `ns`, as a runtime would."""
    plugin = str(plugin)
    run_env = {"PATH": RUNTIME_PATH, "CNI_COMMAND": command}
    if command != "VERSION":
        run_env.update(
            CNI_CONTAINERID=container_id,
            CNI_NETNS=netns_path,
            CNI_IFNAME=ifname,
            CNI_ARGS=cni_args,
            CNI_PATH=cni_path if cni_path is not None else os.path.dirname(plugin),
        )
    run_env.update(env or {})
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    return netns.run_in(
        ns,
        subprocess.run,
        [plugin],
        input=data,
        env=run_env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
