"""``tortie-confd``: watch the datastore, render ``bird.cfg``, check it, reload BIRD.

Flow::

    etcd ──Syncer thread──> Snapshot (under a lock) ──"dirty"──> main thread:
        render (pure) → same text as last time? stop → write bird.cfg.new → bird -p
        → valid: rename over bird.cfg, ``configure`` over BIRD's control socket
        → invalid: keep the last good bird.cfg, save the text as bird.cfg.rejected,
          log the error and put it in the status file

- Nothing is rendered before the Syncer's first in-sync (a partial snapshot would drop
  peers). Bursts of updates are coalesced (``--settle`` seconds) into one render.
- BIRD is reloaded only when the rendered text changed. If BIRD is not running yet, the reload
  is retried; BIRD reads the current file when it starts anyway.
- The status file (JSON) says whether the current configuration is in force: ``state`` is
  ``ok``, ``error`` (BIRD refused the newest rendering; the previous one stays) or ``waiting``
  (nothing can be rendered yet, e.g. this node has no Node resource).
- ``--oneshot`` renders once after in-sync, writes (if valid) and exits: how tortie-node
  prepares ``bird.cfg`` before starting BIRD.

Environment (as calico/node's confd): ``NODENAME``, the datastore (``ETCD_ENDPOINTS``...),
``CALICO_ROUTER_ID``, ``BGP_LOGSEVERITYSCREEN``; Tortie's own: ``CONFD_CONFIG_DIR``,
``BIRD_CTL`` (control socket), ``CONFD_SECRETS_DIR`` (BGP passwords as
``<dir>/<secret>/<key>`` files, as Kubernetes mounts them), ``CONFD_BGP_TIMERS`` (tests only:
``hold=9,keepalive=3,connect_delay=1,connect_retry=1,error_wait=1,1``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tortie.confd.bird import BirdControl, BirdError, check_config
from tortie.confd.model import Snapshot, watch_prefixes
from tortie.confd.render import RenderError, RenderOptions, Timers, render
from tortie.datastore.backend import Backend
from tortie.datastore.syncer import Syncer, SyncStatus, Update

__all__ = ["Confd", "ConfdPaths", "main", "parse_timers", "secret_reader"]

log = logging.getLogger("tortie.confd")

DEFAULT_CONFIG_DIR = "/etc/tortie/bird"
DEFAULT_BIRD_CTL = "/var/run/calico/bird.ctl"
DEFAULT_SECRETS_DIR = "/etc/tortie/secrets"
RELOAD_RETRY = 1.0


@dataclass(frozen=True)
class ConfdPaths:
    config_dir: Path
    bird_socket: str
    status_file: Path

    @property
    def config(self) -> Path:
        return self.config_dir / "bird.cfg"

    @property
    def candidate(self) -> Path:
        return self.config_dir / "bird.cfg.new"

    @property
    def rejected(self) -> Path:
        return self.config_dir / "bird.cfg.rejected"


def secret_reader(directory: str) -> Any:
    """(secret name, key) → the file ``<directory>/<name>/<key>``'s text, or None."""

    def read(name: str, key: str) -> str | None:
        if not name or "/" in name or "/" in key or name.startswith(".") or key.startswith("."):
            return None
        try:
            return (Path(directory) / name / key).read_text().rstrip("\n")
        except OSError:
            return None

    return read


def parse_timers(text: str) -> Timers:
    """``hold=9,keepalive=3,connect_delay=1,connect_retry=1,error_wait=1,1`` → Timers."""
    timers = Timers()
    if not text:
        return timers
    fields: dict[str, Any] = {}
    for part in text.replace(";", " ").split():
        for item in part.split(","):
            if "=" in item:
                key, value = item.split("=", 1)
                fields[key.strip()] = value.strip()
            elif "error_wait" in fields:  # the second number of error_wait=a,b
                fields["error_wait"] += f",{item.strip()}"
    names = {
        "hold": "hold_time",
        "keepalive": "keepalive_time",
        "connect_delay": "connect_delay",
        "connect_retry": "connect_retry",
    }
    for key, value in fields.items():
        if key in names:
            timers = replace(timers, **{names[key]: int(value)})
        elif key == "error_wait":
            timers = replace(timers, error_wait=value)
        else:
            raise ValueError(f"unknown timer {key!r} in CONFD_BGP_TIMERS")
    return timers


class Confd:
    """One confd process for ``node`` (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        node: str,
        paths: ConfdPaths,
        options: RenderOptions | None = None,
        *,
        settle: float = 0.05,
        bird: str = "bird",
    ) -> None:
        self.node = node
        self.paths = paths
        self.options = options or RenderOptions()
        self.settle = settle
        self.bird = bird
        self.snapshot = Snapshot()
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._in_sync = threading.Event()
        self._last_text: str | None = None
        self._reload_pending = False
        self._waiting: str | None = None
        self.renders = 0
        self.reloads = 0
        self.syncer = Syncer(backend, watch_prefixes(node), self, name="confd-syncer")

    # --- Syncer callbacks (Syncer thread) -----------------------------------------------------
    def on_status(self, status: SyncStatus) -> None:
        if status is SyncStatus.IN_SYNC:
            self._in_sync.set()
            self._dirty.set()

    def on_updates(self, updates: list[Update]) -> None:
        changed = False
        with self._lock:
            for u in updates:
                changed |= self.snapshot.apply(u)
        if changed:
            self._dirty.set()

    # --- lifecycle ----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()

    def run(self, oneshot: bool = False) -> int:
        self.paths.config_dir.mkdir(parents=True, exist_ok=True)
        if self.paths.config.exists():
            self._last_text = self.paths.config.read_text()
        self.syncer.start()
        try:
            while not self._in_sync.wait(0.5):
                if self._stop.is_set():
                    return 0
                if self.syncer.error is not None:
                    log.error("syncer stopped: %s", self.syncer.error)
                    return 1
            if oneshot:
                self._dirty.clear()
                return 0 if self.process(reload=False) else 1
            while not self._stop.is_set():
                timeout = RELOAD_RETRY if self._reload_pending else 5.0
                if self._dirty.wait(timeout):
                    time.sleep(self.settle)  # coalesce a burst of updates into one render
                    self._dirty.clear()
                    if self._stop.is_set():
                        break
                    self.process()
                elif self._reload_pending:
                    self._reload()
                if self.syncer.error is not None:
                    log.error("syncer stopped: %s", self.syncer.error)
                    return 1
        finally:
            self.syncer.stop()
        return 0

    # --- one round ---------------------------------------------------------------------------
    def process(self, reload: bool = True) -> bool:
        """Render; install and reload if the text changed. False when it could not."""
        try:
            with self._lock:
                text = render(self.snapshot, self.node, self.options)
        except RenderError as exc:
            if self._waiting != str(exc):  # say it once, not on every update
                log.info("nothing to render yet: %s", exc)
                self._status("waiting", str(exc))
                self._waiting = str(exc)
            return False
        self._waiting = None
        self.renders += 1
        if text == self._last_text:
            if self._reload_pending and reload:
                self._reload()
            return True
        self._last_text = text
        candidate = self.paths.candidate
        candidate.write_text(text)
        error = check_config(str(candidate), self.bird)
        if error is not None:
            os.replace(candidate, self.paths.rejected)
            log.error(
                "BIRD rejected the new configuration (kept the previous one; see %s): %s",
                self.paths.rejected,
                error,
            )
            self._status("error", f"BIRD rejected the new configuration: {error}", text)
            return False
        os.replace(candidate, self.paths.config)
        log.info("wrote %s (%d bytes)", self.paths.config, len(text))
        self._status("ok", "configuration written", text)
        if reload:
            self._reload_pending = True
            self._reload()
        return True

    def _reload(self) -> None:
        socket_path = self.paths.bird_socket
        if not os.path.exists(socket_path):
            log.debug(
                "BIRD is not running yet (%s): it will read the file when it starts", socket_path
            )
            return
        try:
            message = BirdControl(socket_path, timeout=10.0).configure()
        except BirdError as exc:
            log.debug("reload deferred: %s", exc)
            return
        self._reload_pending = False
        self.reloads += 1
        log.info("BIRD reconfigured: %s", message)

    def _status(self, state: str, message: str, text: str | None = None) -> None:
        status = {
            "node": self.node,
            "state": state,
            "message": message,
            "config": str(self.paths.config),
            "sha256": hashlib.sha256(text.encode()).hexdigest() if text else None,
            "updated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        tmp = self.paths.status_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(status, indent=2) + "\n")
            os.replace(tmp, self.paths.status_file)
        except OSError as exc:
            log.warning("could not write the status file %s: %s", self.paths.status_file, exc)


# --- the process --------------------------------------------------------------------------------


def _level(name: str) -> int:
    return {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warning": logging.WARNING,
        "error": logging.ERROR,
        "fatal": logging.CRITICAL,
    }.get(name.lower(), logging.INFO)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    for name in ("tortie",):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(_level(level))
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="tortie-confd", description="Render BIRD's configuration from the datastore."
    )
    parser.add_argument(
        "--node",
        default=env.get("NODENAME") or env.get("CALICO_NODENAME"),
        help="this node's name (default $NODENAME)",
    )
    parser.add_argument(
        "--config-dir",
        default=env.get("CONFD_CONFIG_DIR", DEFAULT_CONFIG_DIR),
        help=f"where bird.cfg is written (default {DEFAULT_CONFIG_DIR})",
    )
    parser.add_argument(
        "--bird-socket",
        default=env.get("BIRD_CTL", DEFAULT_BIRD_CTL),
        help=f"BIRD's control socket (default {DEFAULT_BIRD_CTL})",
    )
    parser.add_argument(
        "--status-file", default=None, help="status file (default <config-dir>/confd-status.json)"
    )
    parser.add_argument("--secrets-dir", default=env.get("CONFD_SECRETS_DIR", DEFAULT_SECRETS_DIR))
    parser.add_argument(
        "--oneshot",
        action="store_true",
        help="render once after the datastore is in sync, then exit",
    )
    parser.add_argument(
        "--settle", type=float, default=0.05, help="seconds to coalesce updates before rendering"
    )
    parser.add_argument("--log-level", default=env.get("BGP_LOGSEVERITYSCREEN", "info"))
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if not args.node:
        sys.stderr.write("tortie-confd: the node name is required (--node or $NODENAME)\n")
        return 2
    try:
        timers = parse_timers(env.get("CONFD_BGP_TIMERS", ""))
    except ValueError as exc:
        sys.stderr.write(f"tortie-confd: {exc}\n")
        return 2
    from tortie.datastore.config import ConfigError, load_config
    from tortie.datastore.etcd import EtcdBackend

    try:
        backend = EtcdBackend(load_config(None))
    except ConfigError as exc:
        sys.stderr.write(f"tortie-confd: datastore configuration: {exc}\n")
        return 2
    config_dir = Path(args.config_dir)
    paths = ConfdPaths(
        config_dir,
        args.bird_socket,
        Path(args.status_file) if args.status_file else config_dir / "confd-status.json",
    )
    options = RenderOptions(
        router_id=env.get("CALICO_ROUTER_ID", ""),
        secrets=secret_reader(args.secrets_dir),
        timers=timers,
    )
    confd = Confd(backend, args.node, paths, options, settle=args.settle)
    signal.signal(signal.SIGTERM, lambda *_: confd.stop())
    signal.signal(signal.SIGINT, lambda *_: confd.stop())
    log.info(
        "confd starting for node %s (config %s, BIRD %s)",
        args.node,
        paths.config,
        paths.bird_socket,
    )
    try:
        return confd.run(oneshot=args.oneshot)
    finally:
        backend.close()


if __name__ == "__main__":
    sys.exit(main())
