"""``tortiectl node run``: start tortie-node as calicoctl starts the calico/node container.

There is no container runtime for the node itself here, so "the container" is a process:

- **environment**: calicoctl's flags become calico/node's variables (``--name`` →
  ``NODENAME``, ``--ip`` → ``IP``, ``--as`` → ``AS``, ``--backend`` →
  ``CALICO_NETWORKING_BACKEND``, ``--no-default-ippools`` → ``NO_DEFAULT_POOLS``,
  ``--disable-docker-networking`` → ``CALICO_LIBNETWORK_ENABLED=false``...), the datastore
  settings tortiectl itself uses become ``ETCD_*``, and the rest of tortiectl's environment
  is passed through (``FELIX_*``, ``CALICO_*``...), as a container's ``-e`` would be.
- **detached** (default): a new session, stdout/stderr in ``<log dir>/node/console.log``
  (only warnings and errors go there; the full log is ``<log dir>/node/current``), the PID in
  the pidfile; then tortiectl follows the node's log until start-up succeeds (exit 0) or fails
  (exit 1 with the reason), as calicoctl follows the container's log.
- ``--init-system``: tortie-node runs in the foreground in place of tortiectl (for systemd
  and other init systems).
- ``--dryrun``: print the command and its environment, start nothing.

A running tortie-node (per the pidfile) is not started twice.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tortie.node.config import (
    BACKENDS,
    DEFAULT_LOG_DIR,
    DEFAULT_RUN_DIR,
    ConfigError,
    parse_as,
    parse_ip_setting,
    parse_method,
)

__all__ = [
    "RunOptions",
    "datastore_env",
    "node_argv",
    "node_env",
    "running_pid",
    "start_detached",
    "wait_started",
]


@dataclass(frozen=True)
class RunOptions:
    """calicoctl node run's flags."""

    name: str | None = None
    ip: str | None = None
    ip6: str | None = None
    as_number: str | None = None
    ip_method: str | None = None
    ip6_method: str | None = None
    log_dir: str = DEFAULT_LOG_DIR
    backend: str = "bird"
    no_default_pools: bool = False
    disable_docker_networking: bool = False
    docker_ifprefix: str = "cali"
    docker_labels: bool = False


def node_argv() -> list[str]:
    return [sys.executable, "-m", "tortie.node.daemon"]


def datastore_env(config: Any) -> dict[str, str]:
    """The ``ETCD_*`` variables for a `CalicoAPIConfig` (what tortiectl connects with)."""
    if config.etcd_key or config.etcd_cert or config.etcd_ca_cert:
        raise ConfigError(
            "inline etcdKey/etcdCert/etcdCACert cannot be handed to tortie-node: put them in "
            "files and use etcdKeyFile/etcdCertFile/etcdCACertFile"
        )
    env = {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": ",".join(config.etcd_endpoints)}
    for var, value in (
        ("ETCD_USERNAME", config.etcd_username),
        ("ETCD_PASSWORD", config.etcd_password),
        ("ETCD_KEY_FILE", config.etcd_key_file),
        ("ETCD_CERT_FILE", config.etcd_cert_file),
        ("ETCD_CA_CERT_FILE", config.etcd_ca_cert_file),
    ):
        if value:
            env[var] = value
    return env


def node_env(
    opts: RunOptions,
    datastore: Mapping[str, str],
    base: Mapping[str, str],
    hostname: Callable[[], str] = socket.gethostname,
) -> dict[str, str]:
    """tortie-node's environment for these flags (validated here, as calicoctl does)."""
    if opts.backend not in BACKENDS:
        raise ConfigError(f"--backend={opts.backend}: use one of {', '.join(BACKENDS)}")
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith(("ETCD_", "CALICO_ETCD_")) and k != "DATASTORE_TYPE"
    }
    env.update(datastore)
    env["NODENAME"] = opts.name or hostname().strip().lower()
    env["CALICO_NETWORKING_BACKEND"] = opts.backend
    env["TORTIE_LOG_DIR"] = opts.log_dir
    if opts.ip:
        env["IP"] = parse_ip_setting(opts.ip, 4, "--ip")
    if opts.ip6:
        env["IP6"] = parse_ip_setting(opts.ip6, 6, "--ip6")
    if opts.as_number:
        parse_as(opts.as_number)
        env["AS"] = opts.as_number
    if opts.ip_method:
        parse_method(opts.ip_method, "--ip-autodetection-method")
        env["IP_AUTODETECTION_METHOD"] = opts.ip_method
    if opts.ip6_method:
        parse_method(opts.ip6_method, "--ip6-autodetection-method")
        env["IP6_AUTODETECTION_METHOD"] = opts.ip6_method
    if opts.no_default_pools:
        env["NO_DEFAULT_POOLS"] = "true"
    env["CALICO_LIBNETWORK_ENABLED"] = "false" if opts.disable_docker_networking else "true"
    if not opts.disable_docker_networking:
        env["CALICO_LIBNETWORK_IFPREFIX"] = opts.docker_ifprefix
        if opts.docker_labels:
            env["CALICO_LIBNETWORK_LABEL_ENDPOINTS"] = "true"
    return env


def run_dir(env: Mapping[str, str]) -> str:
    return env.get("TORTIE_RUN_DIR", "").strip() or DEFAULT_RUN_DIR


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def running_pid(pidfile: str) -> int | None:
    """The PID in ``pidfile`` if that process is a live tortie-node."""
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None
    cmd = _cmdline(pid)
    if "tortie.node.daemon" in cmd or "tortie-node" in cmd:
        return pid
    return None


def start_detached(
    argv: list[str], env: Mapping[str, str], log_dir: str, pidfile: str
) -> subprocess.Popen[bytes]:
    """tortie-node in its own session, its console output in ``<log_dir>/node/console.log``."""
    console_dir = Path(log_dir) / "node"
    console_dir.mkdir(parents=True, exist_ok=True)
    env = dict(env)
    env.setdefault("TORTIE_NODE_LOG_STDERR", "warning")
    with open(console_dir / "console.log", "wb") as console:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    Path(pidfile).parent.mkdir(parents=True, exist_ok=True)
    Path(pidfile).write_text(f"{proc.pid}\n")
    return proc


def _status(path: str, pid: int) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            body = json.load(f)
    except (OSError, ValueError):
        return None
    return body if body.get("pid") == pid else None


def wait_started(
    proc: subprocess.Popen[bytes],
    status_file: str,
    log_dir: str,
    timeout: float,
    out: Callable[[str], None],
) -> tuple[bool, str]:
    """Follow ``<log_dir>/node/current`` until the status file says ``running`` (True) or
    ``failed``, or the process exits (False, with the reason)."""
    log_path = Path(log_dir) / "node" / "current"
    offset = log_path.stat().st_size if log_path.exists() else 0
    deadline = time.monotonic() + timeout

    def follow() -> None:
        nonlocal offset
        try:
            with open(log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return
        offset += len(data)
        if data:
            out(data.decode(errors="replace"))

    while time.monotonic() < deadline:
        follow()
        status = _status(status_file, proc.pid)
        if status is not None and status.get("phase") == "running":
            return True, "tortie-node started successfully."
        if status is not None and status.get("phase") == "failed":
            proc.wait(timeout=10)
            return False, f"tortie-node failed to start: {status.get('error')}"
        code = proc.poll()
        if code is not None:
            follow()
            console = Path(log_dir) / "node" / "console.log"
            tail = console.read_text(errors="replace")[-2000:] if console.exists() else ""
            return False, f"tortie-node exited with code {code} during start-up.\n{tail}".rstrip()
        time.sleep(0.2)
    return False, (
        f"tortie-node (pid {proc.pid}) has not finished starting after {timeout:.0f}s; it is "
        f"still running: see {log_path}"
    )
