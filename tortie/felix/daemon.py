"""``tortie-felix``: the per-host agent's process — wiring, threads, configuration, status.

Data flow (ARCHITECTURE §3)::

    etcd ──Syncer thread──> inbox ──calc thread (validate → CalcGraph → flush)──> outbox
         ──dataplane thread (coalesce batches → InternalDataplane.apply)──> kernel

- **Start-up**: configuration from the environment and the config file, then the datastore's
  ``FelixConfiguration`` ``default`` and ``node.<hostname>`` (Calico's precedence, see
  ``tortie.felix.config``); the dataplane starts only once that is known.
- **Validation**: every datastore value is validated as its kind; an invalid one is treated as
  deleted (logged), so a bad write can never crash Felix or half-program a policy.
- **In-sync gating**: nothing is removed from the dataplane before the calculation graph has
  processed the whole snapshot (``InSync``), so a restarted Felix leaves working rules alone.
- **Configuration changes** that need a restart make Felix re-execute itself, as Calico's Felix
  exits to be restarted.
- **Health** (``/liveness``, ``/readiness``) and **metrics** (``/metrics``) when enabled;
  **status** reports under ``/calico/felix/v2/no-region/host/<hostname>/``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from tortie.datastore import keys
from tortie.datastore.backend import Backend, DatastoreError
from tortie.datastore.syncer import Syncer, SyncStatus, Update
from tortie.felix import config as felix_config
from tortie.felix import proto
from tortie.felix.calc.graph import CalcGraph
from tortie.felix.health import HealthAggregator, HTTPService
from tortie.felix.metrics import FelixMetrics

log = logging.getLogger("tortie.felix")

# The kinds Felix reads; everything else in the datastore is none of its business.
FELIX_KINDS = (
    "Tier",
    "GlobalNetworkPolicy",
    "NetworkPolicy",
    "Profile",
    "WorkloadEndpoint",
    "HostEndpoint",
    "NetworkSet",
    "GlobalNetworkSet",
    "IPPool",
    "Node",
    "FelixConfiguration",
)
AFFINITY_PREFIX = keys.host_affinity_prefix()
RESTART_EXIT = 129  # "restart me": the run loop re-executes the process


class DataplaneLike(Protocol):
    """What the daemon needs from a dataplane (``FamilyDataplanes`` in production)."""

    def on_messages(self, msgs: list[proto.Message]) -> None: ...
    def apply(self) -> None: ...
    def next_refresh_in(self) -> float: ...
    def on_timer(self) -> None: ...
    def close(self) -> None: ...


def _decode(update: Update) -> tuple[str, str, Any] | None:
    """(kind, graph key, validated resource or None) for a datastore update we care about."""
    from tortie.api import ValidationError, validate

    if update.key.startswith(AFFINITY_PREFIX):
        try:
            aff = keys.parse_host_affinity_key(update.key)
            value = json.loads(update.value) if update.value is not None else None
        except ValueError as exc:
            log.warning("ignoring invalid block affinity %s: %s", update.key, exc)
            return None
        if value is not None and not isinstance(value, dict):
            value = {}  # present, with no state: the graph treats it as confirmed
        return "BlockAffinity", f"{aff.node}/{aff.cidr}", value
    try:
        parsed = keys.parse_resource_key(update.key)
    except ValueError:
        return None
    kind, namespace, name = parsed
    if kind not in FELIX_KINDS:
        return None
    key = f"{namespace}/{name}" if namespace else name
    if update.value is None:
        return kind, key, None
    try:
        data = json.loads(update.value)
        resource = validate(data)
    except (ValueError, ValidationError) as exc:
        log.warning("ignoring invalid %s %s (treated as deleted): %s", kind, key, exc)
        return kind, key, None
    if kind != resource.KIND:
        log.warning("ignoring %s stored under a %s key %s", resource.KIND, kind, update.key)
        return kind, key, None
    return kind, key, resource


class Felix:
    """One run of Felix until it is stopped or needs a restart."""

    def __init__(
        self,
        cfg: felix_config.Config,
        backend: Backend,
        dataplane: DataplaneLike,
        *,
        environ: dict[str, str] | None = None,
        config_file: str | None = None,
        global_spec: Any = None,
        node_spec: Any = None,
    ) -> None:
        self.cfg = cfg
        self.hostname: str = cfg.FelixHostname
        self.backend = backend
        self.dataplane = dataplane
        self.metrics = FelixMetrics()
        self.health = HealthAggregator()
        self.health.register("calculation-graph")
        self.health.register("dataplane", timeout=max(90.0, 4 * cfg.IptablesRefreshInterval))
        self._environ = environ
        self._config_file = config_file
        self._global_spec = global_spec
        self._node_spec = node_spec
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[list[proto.Message] | None] = queue.SimpleQueue()
        self._pending: list[proto.Message] = []
        self._graph = CalcGraph(self.hostname, self._pending.append)
        self._stop = threading.Event()
        self.exit_code = 0
        self._in_sync = False
        self._applied_in_sync = threading.Event()
        self._first_apply_logged = False
        self._started = time.monotonic()
        self._services: list[HTTPService] = []
        self._node_count: set[str] = set()
        self.syncer = Syncer(
            backend,
            [*(keys.resource_prefix(k) for k in FELIX_KINDS), AFFINITY_PREFIX],
            self,
        )

    # --- Syncer callbacks (Syncer thread) ------------------------------------------------
    def on_status(self, status: SyncStatus) -> None:
        self._inbox.put(("status", status))

    def on_updates(self, updates: list[Update]) -> None:
        self._inbox.put(("updates", updates))

    # --- lifecycle ------------------------------------------------------------------------
    def stop(self, code: int = 0) -> None:
        self.exit_code = code
        self._stop.set()
        self._inbox.put(("stop", None))

    def run(self) -> int:
        if self.cfg.HealthEnabled:
            self._services.append(
                HTTPService(self.cfg.HealthHost, self.cfg.HealthPort, self.health).start()
            )
        if self.cfg.PrometheusMetricsEnabled:
            self._services.append(
                HTTPService(
                    self.cfg.PrometheusMetricsHost,
                    self.cfg.PrometheusMetricsPort,
                    registry=self.metrics.registry,
                ).start()
            )
        dp_thread = threading.Thread(target=self._dataplane_loop, name="dataplane", daemon=True)
        status_thread = threading.Thread(target=self._status_loop, name="status", daemon=True)
        dp_thread.start()
        status_thread.start()
        start_watch = getattr(self.dataplane, "start_link_watch", None)
        if start_watch is not None:
            start_watch(lambda: self._outbox.put([]))
        self.syncer.start()
        try:
            self._calc_loop()
        finally:
            self.syncer.stop()
            self._outbox.put(None)
            dp_thread.join(timeout=30)
            for svc in self._services:
                svc.stop()
        return self.exit_code

    # --- calculation thread ----------------------------------------------------------------
    def _calc_loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._inbox.get(timeout=5.0)
            except queue.Empty:
                self.health.report("calculation-graph", live=True, ready=self._in_sync)
                if self.syncer.error is not None:
                    log.error("syncer stopped: %s", self.syncer.error)
                    self.stop(1)
                continue
            batch = [item]
            while True:  # drain: coalesce everything that is already queued
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            t0 = time.perf_counter()
            in_sync_now = False
            n_updates = 0
            for what, payload in batch:
                if what == "stop":
                    return
                if what == "status":
                    self._on_status(payload)
                    in_sync_now = in_sync_now or payload is SyncStatus.IN_SYNC
                    continue
                for update in payload:
                    n_updates += 1
                    self._on_update(update)
            if in_sync_now:
                self._graph.on_in_sync()
                if not self._in_sync:
                    log.info(
                        "calculation graph in sync %.3f s after process start (%d active policies)",
                        process_age(),
                        self._graph.active_policy_count,
                    )
                    self._in_sync = True
                    gc.freeze()  # the snapshot is long-lived: keep it out of GC scans
                    self._check_config()
            else:
                self._graph.flush()
            if n_updates:
                self.metrics.calc_update_time.observe(time.perf_counter() - t0)
                self.metrics.calc_updates.inc(n_updates)
            self.metrics.active_policies.set(self._graph.active_policy_count)
            self.health.report("calculation-graph", live=True, ready=self._in_sync)
            if self._pending:
                self.metrics.calc_output_events.inc(len(self._pending))
                self._outbox.put(self._pending[:])
                self._pending.clear()

    def _on_status(self, status: SyncStatus) -> None:
        self.metrics.resync_state.set(
            {SyncStatus.WAIT_FOR_DATASTORE: 1, SyncStatus.RESYNC: 2, SyncStatus.IN_SYNC: 3}[status]
        )
        if status is SyncStatus.RESYNC:
            self.metrics.resyncs.inc()
        log.info("datastore status: %s (%.3f s after process start)", status.value, process_age())

    def _on_update(self, update: Update) -> None:
        decoded = _decode(update)
        if decoded is None:
            return
        kind, key, resource = decoded
        if kind == "FelixConfiguration":
            if key == "default":
                self._global_spec = resource.spec if resource else None
            elif key == f"node.{self.hostname}":
                self._node_spec = resource.spec if resource else None
            else:
                return
            if self._in_sync:
                self._check_config()
            return
        if kind == "Node":
            (self._node_count.add if resource else self._node_count.discard)(key)
            self.metrics.cluster_hosts.set(len(self._node_count))
        self._graph.on_resource(kind, key, resource)

    def _check_config(self) -> None:
        try:
            new = felix_config.load(
                self._environ, self._config_file, self._global_spec, self._node_spec
            )
        except felix_config.ConfigError as exc:
            log.error("configuration error: %s", exc)
            return
        changed = self.cfg.restart_needed(new)
        if changed:
            log.warning("configuration changed (%s): restarting", ", ".join(changed))
            self.stop(RESTART_EXIT)
        elif new.LogSeverityScreen != self.cfg.LogSeverityScreen:
            logging.getLogger("tortie").setLevel(_level(new.LogSeverityScreen))
            self.cfg = new

    # --- dataplane thread ------------------------------------------------------------------
    def _dataplane_loop(self) -> None:
        dp = self.dataplane
        while True:
            timeout = max(0.05, dp.next_refresh_in())
            try:
                first = self._outbox.get(timeout=timeout)
            except queue.Empty:
                first = []
            if first is None:
                return
            msgs = list(first)
            while True:
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._apply(dp, msgs)
                    return
                msgs.extend(more)
            self._apply(dp, msgs)

    def _apply(self, dp: DataplaneLike, msgs: list[proto.Message]) -> None:
        try:
            if msgs:
                self.metrics.msg_batch_size.observe(len(msgs))
                dp.on_messages(msgs)
                if any(isinstance(m, proto.InSync) for m in msgs):
                    self._applied_in_sync.set()
            if not self._applied_in_sync.is_set():
                # As Calico's Felix: nothing is programmed before the whole snapshot is in,
                # so a (re)starting Felix never writes a partial view of the world.
                self.health.report(
                    "dataplane", live=True, ready=False, detail="waiting for datastore sync"
                )
                return
            dp.on_timer()
            t0 = time.perf_counter()
            dp.apply()
            elapsed = time.perf_counter() - t0
            if msgs:
                self.metrics.apply_time.observe(elapsed)
            if not self._first_apply_logged:
                self._first_apply_logged = True
                log.info(
                    "dataplane programmed %.3f s after process start (apply %.3f s, %d messages)",
                    process_age(),
                    elapsed,
                    len(msgs),
                )
            self.health.report("dataplane", live=True, ready=True)
        except Exception as exc:  # keep going: the next apply retries from kernel state
            self.metrics.dataplane_failures.inc()
            log.exception("dataplane apply failed: %s", exc)
            self.health.report("dataplane", live=True, ready=False, detail=str(exc)[:200])

    # --- status reporting -------------------------------------------------------------------
    def _status_loop(self) -> None:
        if self.cfg.ReportingIntervalSecs <= 0:
            return  # as Calico: an interval of 0 turns status reports off
        first = True
        while not self._stop.wait(0 if first else self.cfg.ReportingIntervalSecs):
            if not self._applied_in_sync.is_set():
                if self._stop.wait(1.0):
                    return
                continue
            value = json.dumps(
                {
                    "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "uptime": round(time.monotonic() - self._started, 3),
                    "first_update": first,
                }
            ).encode()
            try:
                self.backend.put(keys.felix_status_key(self.hostname), value)
                self.backend.put(keys.felix_last_status_key(self.hostname), value)
                first = False
            except DatastoreError as exc:
                log.warning("could not report status: %s", exc)


def process_age() -> float:
    """Seconds since this process started (interpreter start included), from /proc."""
    try:
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _level(name: str) -> int:
    return {
        "Debug": logging.DEBUG,
        "Info": logging.INFO,
        "Warning": logging.WARNING,
        "Error": logging.ERROR,
        "Fatal": logging.CRITICAL,
    }.get(name, logging.INFO)


class _KVFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` — one line per event, easy to grep."""

    def format(self, record: logging.LogRecord) -> str:
        base = (
            f"{self.formatTime(record, '%Y-%m-%d %H:%M:%S')}.{int(record.msecs):03d} "
            f"{record.levelname.lower():7s} "
            f"{record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def setup_logging(level: str, path: str = "") -> None:
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler()
    handler.setFormatter(_KVFormatter())
    root = logging.getLogger("tortie")
    root.handlers[:] = [handler]
    root.setLevel(_level(level))
    root.propagate = False


def _datastore_config(cfg: felix_config.Config) -> Any:
    from tortie.datastore.config import CalicoAPIConfig, load_config

    if cfg.EtcdEndpoints:
        return CalicoAPIConfig(
            source="felix configuration",
            etcd_endpoints=tuple(e.strip() for e in cfg.EtcdEndpoints.split(",") if e.strip()),
            etcd_key_file=cfg.EtcdKeyFile or None,
            etcd_cert_file=cfg.EtcdCertFile or None,
            etcd_ca_cert_file=cfg.EtcdCaFile or None,
        ).validated()
    return load_config(None)


def _wait_for_config(backend: Backend, hostname: str, stop: Callable[[], bool]) -> tuple[Any, Any]:
    """FelixConfiguration ``default`` and ``node.<hostname>`` specs, waiting for etcd."""
    from tortie.datastore.client import ResourceClient, ResourceNotFound

    client = ResourceClient(backend)
    delay = 0.5
    while not stop():
        try:
            specs = []
            for name in ("default", f"node.{hostname}"):
                try:
                    specs.append(client.get("FelixConfiguration", name).spec)  # type: ignore[attr-defined]
                except ResourceNotFound:
                    specs.append(None)
            return specs[0], specs[1]
        except DatastoreError as exc:
            log.warning("waiting for the datastore: %s", exc)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    return None, None


def run_once(environ: dict[str, str], config_file: str | None) -> int:
    boot = felix_config.load(environ, config_file)
    setup_logging(boot.LogSeverityScreen, boot.LogFilePath)
    from tortie.datastore.etcd import EtcdBackend
    from tortie.felix.dataplane.internal import FamilyDataplanes

    backend = EtcdBackend(_datastore_config(boot))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    global_spec, node_spec = _wait_for_config(backend, boot.FelixHostname, stopping.is_set)
    if stopping.is_set():
        return 0
    cfg = felix_config.load(environ, config_file, global_spec, node_spec)
    setup_logging(cfg.LogSeverityScreen, cfg.LogFilePath)
    log.info(
        "felix starting on %s (config: %s)",
        cfg.FelixHostname,
        {k: v for k, v in cfg.sources.items() if v != "default"},
    )
    dataplane = FamilyDataplanes(cfg)
    felix = Felix(
        cfg,
        backend,
        dataplane,
        environ=environ,
        config_file=config_file,
        global_spec=global_spec,
        node_spec=node_spec,
    )
    dataplane.metrics = felix.metrics
    signal.signal(signal.SIGTERM, lambda *_: felix.stop(0))
    signal.signal(signal.SIGINT, lambda *_: felix.stop(0))
    try:
        return felix.run()
    finally:
        dataplane.close()
        backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tortie-felix", description="Tortie's Felix agent")
    parser.add_argument(
        "-c",
        "--config-file",
        default=None,
        help=f"INI config file (default {felix_config.DEFAULT_CONFIG_FILE})",
    )
    args = parser.parse_args(argv)
    try:
        code = run_once(dict(os.environ), args.config_file)
    except felix_config.ConfigError as exc:
        sys.stderr.write(f"tortie-felix: configuration error: {exc}\n")
        return 2
    if code == RESTART_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(
            sys.executable, [sys.executable, "-m", "tortie.felix.daemon", *(argv or sys.argv[1:])]
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
