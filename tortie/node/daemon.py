"""``tortie-node``: the process — start-up, then Felix (and confd + BIRD) under supervision.

Usage (calico-node's flags are accepted too)::

    tortie-node                       # start-up, then supervise until SIGTERM
    tortie-node --startup             # start-up only (calico-node -startup)
    tortie-node --check-ready         # Felix ready and, with BIRD, BGP sessions up
    tortie-node --check-live          # Felix live and, with BIRD, BIRD and confd running
    tortie-node -felix-ready -bird-ready [-threshold-time 30s]

What runs, by ``CALICO_NETWORKING_BACKEND``:

- ``bird``: Felix, then ``tortie-confd --oneshot`` renders ``bird.cfg``, then ``tortie-confd``
  (watching) and BIRD (``bird -R -s <socket> -d -c <bird.cfg>``, as calico/node runs it);
  the VXLAN tunnel-address manager runs in-process.
- ``vxlan``: Felix alone does the routing (VXLAN); the tunnel-address manager runs.
- ``none``: policy only. Felix alone, told not to program routes or VXLAN
  (``FELIX_PROGRAMROUTES=false``, ``FELIX_VXLANENABLED=false`` unless given), no confd, no
  BIRD, no tunnel addresses, no BGP details on the Node.

Children get tortie-node's whole environment (``ETCD_*``, ``FELIX_*``, ``CALICO_*``...) plus
``NODENAME`` set to the node name start-up settled on. Felix's health endpoint is turned on
(``FELIX_HEALTHENABLED=true`` unless given) because readiness depends on it; Felix gets
``FELIX_VXLANENABLED=true`` while the node holds a VXLAN tunnel address (unless given), and
is restarted when that changes.

tortie-node's own log goes to stderr (level ``TORTIE_NODE_LOG_STDERR``, default info) and,
with file logging, to ``<log dir>/node/current``; each child's to ``<log dir>/<child>/current``.
The status file ``<run dir>/tortie-node.json`` has the phase (``startup``, ``running``,
``failed`` with the error, ``stopped``) and the children's PIDs.

Exit codes: 0 stopped cleanly (or the check passed), 1 start-up failed (or a check failed),
2 configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tortie.node.config import ConfigError, NodeConfig
from tortie.node.health import DEFAULT_THRESHOLD, Checks, run_checks
from tortie.node.supervisor import RotatingLog, ServiceSpec, Supervisor, write_json_atomic

__all__ = ["NodeDaemon", "main"]

log = logging.getLogger("tortie.node")

CONFD_ONESHOT_TIMEOUT = 30.0
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS.update(warn=logging.WARNING, error=logging.ERROR, fatal=logging.CRITICAL)


# --- logging -------------------------------------------------------------------------------------


class _Formatter(logging.Formatter):
    """``2024-05-01 12:00:00.123 info    tortie.node: message`` (as Felix's lines)."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record, '%Y-%m-%d %H:%M:%S')}.{int(record.msecs):03d} "
            f"{record.levelname.lower():7s} {record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _RotatingHandler(logging.Handler):
    def __init__(self, sink: RotatingLog) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write((self.format(record) + "\n").encode())
        except Exception:
            self.handleError(record)


def setup_logging(cfg: NodeConfig | None, env: Mapping[str, str]) -> None:
    level = LEVELS.get(env.get("CALICO_STARTUP_LOGLEVEL", "info").strip().lower(), logging.INFO)
    stderr_level = LEVELS.get(env.get("TORTIE_NODE_LOG_STDERR", "info").strip().lower(), level)
    root = logging.getLogger("tortie")
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    fmt = _Formatter()
    stderr = logging.StreamHandler()
    stderr.setFormatter(fmt)
    stderr.setLevel(stderr_level)
    root.addHandler(stderr)
    if cfg is not None and cfg.file_logging:
        try:
            sink = RotatingLog(Path(cfg.log_dir) / "node", cfg.log_max_bytes, cfg.log_keep)
        except OSError as exc:
            log.warning("cannot log to %s: %s", cfg.log_dir, exc)
        else:
            handler = _RotatingHandler(sink)
            handler.setFormatter(fmt)
            root.addHandler(handler)


# --- the daemon ----------------------------------------------------------------------------------


class NodeDaemon:
    """One run of tortie-node (see the module docstring)."""

    def __init__(self, cfg: NodeConfig, env: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.env = dict(env)
        self.node_name = ""
        self.phase = "startup"
        self.error: str | None = None
        self.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.vxlan = False
        self._stop = threading.Event()
        self.sup: Supervisor | None = None
        self.tunnel: Any = None

    # --- signals and status ------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        if not self._stop.is_set():
            log.info("stopping (signal received)")
        self._stop.set()
        if self.sup is not None:
            self.sup.stop()

    def status_extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node_name or None,
            "backend": self.cfg.backend,
            "phase": self.phase,
            "started": self.started_at,
            "log_dir": self.cfg.log_dir,
            "bird_socket": self.cfg.bird_socket if self.cfg.runs_bird else None,
        }
        if self.error:
            out["error"] = self.error
        return out

    def _write_status(self) -> None:
        body = self.status_extra()
        body["pid"] = os.getpid()
        body["services"] = self.sup.status() if self.sup is not None else {}
        try:
            os.makedirs(self.cfg.run_dir, exist_ok=True)
        except OSError:
            return
        write_json_atomic(self.cfg.status_file, json.dumps(body, indent=2, sort_keys=True) + "\n")

    # --- start-up ------------------------------------------------------------------------------
    def _startup(self) -> Any:
        """Run start-up, retrying while the datastore is unreachable; the ResourceClient."""
        from tortie.datastore.backend import DatastoreError
        from tortie.datastore.client import ResourceClient
        from tortie.datastore.config import config_from_env
        from tortie.datastore.etcd import EtcdBackend
        from tortie.node.autodetect import SystemHost
        from tortie.node.startup import run_startup

        client = ResourceClient(EtcdBackend(config_from_env(self.env)))
        host = SystemHost()
        delay = 0.5
        while not self._stop.is_set():
            try:
                result = run_startup(self.cfg, client, host)
                self.node_name = result.node_name
                return client
            except DatastoreError as exc:
                log.warning("waiting for the datastore: %s", exc)
                host.refresh()
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        client.backend.close()
        return None

    # --- children ------------------------------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        env = dict(self.env)
        env["NODENAME"] = self.node_name
        return env

    def felix_env(self) -> dict[str, str]:
        env = self.child_env()
        env.setdefault("FELIX_HEALTHENABLED", "true")
        if not self.cfg.networking:
            env.setdefault("FELIX_PROGRAMROUTES", "false")
            env.setdefault("FELIX_VXLANENABLED", "false")
        elif self.vxlan and "FELIX_VXLANENABLED" not in self.env:
            env["FELIX_VXLANENABLED"] = "true"
        return env

    def confd_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tortie.confd.daemon",
            "--node",
            self.node_name,
            "--config-dir",
            self.cfg.confd_dir,
            "--bird-socket",
            self.cfg.bird_socket,
        ]

    def bird_config(self) -> Path:
        return Path(self.cfg.confd_dir) / "bird.cfg"

    def _remove_stale_socket(self) -> None:
        try:
            os.unlink(self.cfg.bird_socket)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove the stale BIRD socket %s: %s", self.cfg.bird_socket, exc)

    def build_supervisor(self) -> Supervisor:
        cfg = self.cfg
        sup = Supervisor(
            cfg.log_dir,
            file_logging=cfg.file_logging,
            max_bytes=cfg.log_max_bytes,
            keep=cfg.log_keep,
            backoff_initial=float(self.env.get("TORTIE_RESTART_BACKOFF", "1") or 1),
            status_file=cfg.status_file,
            status_extra=self.status_extra,
        )
        sup.add(ServiceSpec("felix", [sys.executable, "-m", "tortie.felix.daemon"], self.felix_env))
        if cfg.cni_daemon:  # serves the CNI plugin processes of this node (TORTIE_CNI_DAEMON)
            sup.add(
                ServiceSpec(
                    "cni", [sys.executable, "-m", "tortie.cni.install", "daemon"], self.child_env
                )
            )
        if cfg.libnetwork:  # Docker's network and IPAM drivers (CALICO_LIBNETWORK_ENABLED)
            sup.add(
                ServiceSpec(
                    "libnetwork",
                    [sys.executable, "-m", "tortie.libnetwork", "--nodename", self.node_name],
                    self.child_env,
                )
            )
        if cfg.runs_bird:
            sup.add(ServiceSpec("confd", self.confd_argv(), self.child_env))
            sup.add(
                ServiceSpec(
                    "bird",
                    ["bird", "-R", "-s", cfg.bird_socket, "-d", "-c", str(self.bird_config())],
                    self.child_env,
                    gate=self.bird_config().exists,
                    gate_what=f"confd to write {self.bird_config()}",
                    pre_start=self._remove_stale_socket,
                )
            )
        return sup

    def _on_tunnel_change(self, state: Mapping[str, str | None]) -> None:
        vxlan = bool(state.get("vxlan"))
        if vxlan != self.vxlan:
            self.vxlan = vxlan
            if self.sup is not None and "FELIX_VXLANENABLED" not in self.env:
                log.info("VXLAN is now %s: restarting Felix", "in use" if vxlan else "unused")
                self.sup.request_restart("felix")

    def _start_tunnel_manager(self, client: Any) -> None:
        from tortie.node.tunnel import TunnelAddressManager

        self.tunnel = TunnelAddressManager(client, self.node_name)
        try:
            state = self.tunnel.reconcile()
            self.vxlan = bool(state.get("vxlan"))
        except Exception as exc:  # retried by the manager's loop
            log.warning("could not reconcile VXLAN tunnel addresses yet: %s", exc)
        self.tunnel.on_change = self._on_tunnel_change
        self.tunnel.start()

    # --- the run -------------------------------------------------------------------------------
    def run(self, startup_only: bool = False) -> int:
        from tortie.node.startup import StartupError

        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self._write_status()
        try:
            client = self._startup()
        except StartupError as exc:
            self.phase, self.error = "failed", str(exc)
            log.error("start-up failed: %s", exc)
            self._write_status()
            return 1
        if client is None:  # stopped while waiting for the datastore
            self.phase = "stopped"
            self._write_status()
            return 0
        if startup_only:
            self.phase = "stopped"
            self._write_status()
            client.backend.close()
            return 0
        try:
            return self._supervise(client)
        finally:
            if self.tunnel is not None:
                self.tunnel.stop()
            client.backend.close()

    def _supervise(self, client: Any) -> int:
        self.sup = sup = self.build_supervisor()
        if self._stop.is_set():
            sup.stop()
        if self.cfg.networking:
            self._start_tunnel_manager(client)
        if self.cfg.runs_bird and not self._stop.is_set():
            code = sup.run_task(
                "confd", [*self.confd_argv(), "--oneshot"], self.child_env(), CONFD_ONESHOT_TIMEOUT
            )
            if code != 0 and not self._stop.is_set():
                log.warning(
                    "confd --oneshot did not render bird.cfg (exit %s): BIRD starts once the "
                    "watching confd has written it",
                    code,
                )
        sup.step()  # start the children, then say so
        self.phase = "running"
        sup.touch()
        log.info(
            "tortie-node started successfully on node %s (backend %s, %s)",
            self.node_name,
            self.cfg.backend,
            ", ".join(s.name for s in sup.services),
        )
        sup.run()
        self.phase = "stopped"
        self._write_status()
        log.info("tortie-node stopped")
        return 0


# --- checks --------------------------------------------------------------------------------------


def _duration(text: str) -> float:
    from tortie.api.validators import parse_duration

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30s)") from None


def _run_checks(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        cfg = NodeConfig.from_env(env)
    except ConfigError as exc:
        sys.stderr.write(f"tortie-node: configuration error: {exc}\n")
        return 2
    bird = cfg.runs_bird
    try:  # the running node's backend, when there is one, wins over this environment
        with open(cfg.status_file) as f:
            bird = json.load(f).get("backend", cfg.backend) == "bird"
    except (OSError, ValueError):
        pass
    checks = Checks(
        felix_ready=args.felix_ready or args.check_ready,
        felix_live=args.felix_live or args.check_live,
        bird_ready=args.bird_ready or (args.check_ready and bird),
        bird_live=args.bird_live or (args.check_live and bird),
        threshold=args.threshold_time,
    )
    failures = run_checks(
        checks,
        env,
        bird_socket=cfg.bird_socket,
        nodename_file=cfg.nodename_file,
        status_file=cfg.status_file,
    )
    for line in failures:
        print(line)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tortie-node",
        description="Tortie's per-host bundle: start-up, then Felix, confd and BIRD.",
    )
    p.add_argument("--startup", "-startup", action="store_true", help="run start-up only")
    p.add_argument("--check-ready", action="store_true", help="exit 0 when the node is ready")
    p.add_argument("--check-live", action="store_true", help="exit 0 when the node is live")
    p.add_argument("-felix-ready", dest="felix_ready", action="store_true", help="check Felix")
    p.add_argument("-bird-ready", dest="bird_ready", action="store_true", help="check BGP")
    p.add_argument("-bird6-ready", dest="bird_ready", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-felix-live", dest="felix_live", action="store_true", help="Felix live")
    p.add_argument("-bird-live", dest="bird_live", action="store_true", help="BIRD/confd live")
    p.add_argument("-bird6-live", dest="bird_live", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--threshold-time",
        "-threshold-time",
        dest="threshold_time",
        type=_duration,
        default=DEFAULT_THRESHOLD,
        help="how long after start-up every BGP session must be up to be ready (default 30s)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    if args.check_ready or args.check_live or args.felix_ready or args.bird_ready:
        return _run_checks(args, env)
    if args.felix_live or args.bird_live:
        return _run_checks(args, env)
    try:
        cfg = NodeConfig.from_env(env)
    except ConfigError as exc:
        setup_logging(None, env)
        log.error("configuration error: %s", exc)
        return 2
    setup_logging(cfg, env)
    t0 = time.monotonic()
    code = NodeDaemon(cfg, env).run(startup_only=args.startup)
    log.debug("exiting with %d after %.1fs", code, time.monotonic() - t0)
    return code


if __name__ == "__main__":
    sys.exit(main())
