"""Supervision of tortie-node's children (Felix, confd, BIRD), as runit does in calico/node.

Each `Service` is one long-running child:

- **Logs**: the child's stdout and stderr go through a pipe to a reader thread that appends
  them to ``<log dir>/<service>/current``, rotated when it passes ``max_bytes`` into
  ``current.1`` .. ``current.<keep>`` (svlogd's layout, so ``tortiectl node diags`` finds
  them). With file logging off, lines go to tortie-node's stderr prefixed ``[service]``.
- **Restarts**: a child that exits is started again after a backoff that doubles from
  ``backoff_initial`` up to ``backoff_max``, and falls back to the initial value once a run
  lasted ``stable_after`` seconds. A requested restart (`Supervisor.request_restart`, e.g. Felix
  after a change of its environment) has no backoff.
- **Gates**: a service may wait for a condition before each start (BIRD waits for confd's
  ``bird.cfg``); ``pre_start`` runs just before (BIRD: remove a stale control socket).
- **Shutdown** (`Supervisor.stop`, from SIGTERM/SIGINT): children are sent SIGTERM in reverse
  start order, given ``grace`` seconds, then SIGKILLed; every signal goes to a recorded PID.
  Each child leads its own process group, so once it is gone anything it left behind in that
  group is killed too. Children also get ``PR_SET_PDEATHSIG`` (through ``setpriv``), so even a
  SIGKILLed tortie-node leaves no orphans.

Children are started and reaped only from the thread that calls `Supervisor.run` (the main
thread): the parent-death signal fires when the *thread* that forked a child exits.

The status file (JSON, rewritten atomically on every change) says which children run, their
PIDs, restarts and last exit; ``tortie-node --check-live`` and the tests read it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

__all__ = ["RotatingLog", "Service", "ServiceSpec", "Supervisor"]

log = logging.getLogger("tortie.node")

POLL_INTERVAL = 0.1


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RotatingLog:
    """An append-only, size-capped log file with numbered rotations (thread-safe)."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, keep: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "current"
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._f: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 - kept open, closed in close()
        self._size = self._f.tell()

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._f.closed:
                return
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._f.write(data)
            self._f.flush()
            self._size += len(data)

    def _rotate(self) -> None:
        self._f.close()
        oldest = self.dir / f"current.{self.keep}"
        with contextlib.suppress(FileNotFoundError):
            oldest.unlink()
        for i in range(self.keep - 1, 0, -1):
            src = self.dir / f"current.{i}"
            if src.exists():
                os.replace(src, self.dir / f"current.{i + 1}")
        os.replace(self.path, self.dir / "current.1")
        self._f = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        with self._lock:
            self._f.close()


class _StderrSink:
    """File logging off: a child's lines on tortie-node's stderr, prefixed with its name."""

    def __init__(self, name: str) -> None:
        self.prefix = f"[{name}] ".encode()
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            sys.stderr.buffer.write(self.prefix + data)
            sys.stderr.buffer.flush()

    def close(self) -> None:
        pass


@dataclass
class ServiceSpec:
    """What to run, and how (see the module docstring)."""

    name: str
    argv: Sequence[str]
    env: Callable[[], Mapping[str, str]] = lambda: dict(os.environ)
    gate: Callable[[], bool] | None = None
    gate_what: str = ""
    pre_start: Callable[[], None] | None = None


@dataclass
class Service:
    """A spec and its run-time state."""

    spec: ServiceSpec
    sink: Any
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    started_at: str = ""
    next_start: float = 0.0
    backoff: float = 0.0
    restarts: int = 0
    last_exit: int | None = None
    waiting_logged: bool = False
    restart_requested: bool = False
    reader: threading.Thread | None = None
    env_used: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def state(self) -> str:
        if self.proc is not None:
            return "running"
        if self.spec.gate is not None and self.waiting_logged:
            return "waiting"
        return "backoff" if self.restarts else "starting"


class Supervisor:
    """Runs and watches services until `stop` (see the module docstring)."""

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        file_logging: bool = True,
        max_bytes: int = 10 * 1024 * 1024,
        keep: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 30.0,
        grace: float = 10.0,
        status_file: str | None = None,
        status_extra: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.file_logging = file_logging
        self.max_bytes = max_bytes
        self.keep = keep
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.grace = grace
        self.status_file = status_file
        self.status_extra = status_extra
        self.services: list[Service] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._dirty = True
        self._last_status = ""
        self._pdeathsig = shutil.which("setpriv")

    # --- set-up ------------------------------------------------------------------------------
    def sink(self, name: str) -> Any:
        if self.file_logging:
            return RotatingLog(self.log_dir / name, self.max_bytes, self.keep)
        return _StderrSink(name)

    def add(self, spec: ServiceSpec) -> Service:
        svc = Service(spec, self.sink(spec.name), backoff=self.backoff_initial)
        self.services.append(svc)
        return svc

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    # --- requests (any thread, signal handlers) --------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def touch(self) -> None:
        """Rewrite the status file on the next round (``status_extra`` changed)."""
        self._dirty = True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_restart(self, name: str) -> None:
        with self._lock:
            for svc in self.services:
                if svc.name == name:
                    svc.restart_requested = True

    # --- one-off tasks -------------------------------------------------------------------------
    def run_task(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> int | None:
        """Run ``argv`` to completion with its output in service ``name``'s log; the exit
        code, or None when it timed out (it is killed) or tortie-node is stopping."""
        svc = self.service(name)
        proc = self._popen(argv, env)
        reader = self._reader(svc, proc)
        deadline = time.monotonic() + timeout
        try:
            while True:
                code = self._reap(proc, 0.0)
                if code is not None:
                    return code
                if self._stop.is_set() or time.monotonic() > deadline:
                    self._terminate(proc, grace=2.0)
                    return None
                self._stop.wait(POLL_INTERVAL)
        finally:
            reader.join(timeout=5)

    # --- the loop (main thread) ------------------------------------------------------------
    def run(self) -> None:
        """Start, watch and restart the services until `stop`; then stop them all."""
        try:
            while not self._stop.is_set():
                self.step()
                self._stop.wait(POLL_INTERVAL)
        finally:
            self.shutdown()

    def step(self) -> None:
        """One round: reap, restart, start what is due (exposed for tests)."""
        now = time.monotonic()
        for svc in self.services:
            if svc.proc is not None:
                code = self._reap(svc.proc, 0.0)
                if code is not None:
                    self._on_exit(svc, code, now)
                elif svc.restart_requested:
                    log.info("restarting %s (pid %d) as requested", svc.name, svc.proc.pid)
                    self._terminate(svc.proc, self.grace)
                    continue  # reaped next round
            if svc.proc is None and now >= svc.next_start and not self._stop.is_set():
                self._maybe_start(svc)
        self._write_status()

    def _maybe_start(self, svc: Service) -> None:
        spec = svc.spec
        if spec.gate is not None and not spec.gate():
            if not svc.waiting_logged:
                log.info("%s: waiting for %s", svc.name, spec.gate_what or "its start condition")
                svc.waiting_logged = True
                self._dirty = True
            return
        svc.waiting_logged = False
        if spec.pre_start is not None:
            spec.pre_start()
        env = dict(spec.env())
        try:
            proc = self._popen(spec.argv, env)
        except OSError as exc:
            log.error("could not start %s (%s): %s", svc.name, spec.argv[0], exc)
            self._schedule(svc, time.monotonic(), ran_for=0.0)
            return
        with self._lock:
            svc.restart_requested = False
        svc.proc, svc.env_used = proc, env
        svc.started, svc.started_at = time.monotonic(), _now_iso()
        svc.reader = self._reader(svc, proc)
        self._dirty = True
        log.info("started %s (pid %d)", svc.name, proc.pid)

    def _on_exit(self, svc: Service, code: int, now: float) -> None:
        ran_for = now - svc.started
        svc.proc = None
        svc.last_exit = code
        if svc.reader is not None:
            svc.reader.join(timeout=2)
        self._dirty = True
        if svc.restart_requested:
            with self._lock:
                svc.restart_requested = False
            svc.next_start = now
            svc.restarts += 1
            return
        how = f"signal {-code}" if code < 0 else f"code {code}"
        delay = self._schedule(svc, now, ran_for)
        log.warning(
            "%s exited with %s after %.1fs; restarting in %.1fs", svc.name, how, ran_for, delay
        )

    def _schedule(self, svc: Service, now: float, ran_for: float) -> float:
        if ran_for >= self.stable_after:
            svc.backoff = self.backoff_initial
        delay = svc.backoff
        svc.backoff = min(svc.backoff * 2, self.backoff_max)
        svc.next_start = now + delay
        svc.restarts += 1
        self._dirty = True
        return delay

    # --- processes -----------------------------------------------------------------------------
    def _popen(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        full = list(argv)
        if self._pdeathsig:
            full = [self._pdeathsig, "--pdeathsig", "TERM", "--", *full]
        return subprocess.Popen(
            full,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: terminal signals go to us only
            close_fds=True,
        )

    def _reader(self, svc: Service, proc: subprocess.Popen[bytes]) -> threading.Thread:
        def pump() -> None:
            assert proc.stdout is not None
            with proc.stdout:
                for line in proc.stdout:
                    svc.sink.write(line)

        t = threading.Thread(target=pump, name=f"log-{svc.name}", daemon=True)
        t.start()
        return t

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
        """Wait up to ``timeout`` for ``proc`` to exit; None if it still runs. Once it has
        exited, and while its zombie still holds the PID (so the group ID cannot have been
        reused), whatever it left in its process group is SIGKILLed; then it is reaped."""
        if proc.returncode is not None:
            return proc.returncode
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # already reaped
                return proc.wait()
            if info is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # it led the group: its leftovers
                return proc.wait()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def _terminate(self, proc: subprocess.Popen[bytes], grace: float) -> int:
        """SIGTERM, ``grace`` seconds, SIGKILL; the exit code (reaped)."""
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        code = self._reap(proc, grace)
        if code is None:
            log.warning("pid %d did not stop within %.0fs: killing it", proc.pid, grace)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = self._reap(proc, 10.0)
        return code if code is not None else -signal.SIGKILL

    def shutdown(self) -> None:
        """SIGTERM every child (reverse start order), wait ``grace``, SIGKILL the rest."""
        self._stop.set()
        running = [s for s in reversed(self.services) if s.proc is not None]
        for svc in running:
            log.info("stopping %s (pid %d)", svc.name, svc.pid)
            with contextlib.suppress(ProcessLookupError):
                svc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + self.grace
        for svc in running:
            proc = svc.proc
            assert proc is not None
            code = self._reap(proc, max(0.0, deadline - time.monotonic()))
            if code is None:
                log.warning("%s (pid %d) did not stop in time: killing it", svc.name, proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                code = self._reap(proc, 10.0)
            svc.last_exit = code
            svc.proc = None
            if svc.reader is not None:
                svc.reader.join(timeout=2)
        for svc in self.services:
            svc.sink.close()
        self._dirty = True
        self._write_status(final=True)

    # --- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            svc.name: {
                "pid": svc.pid,
                "state": svc.state(),
                "restarts": svc.restarts,
                "since": svc.started_at or None,
                "last_exit": svc.last_exit,
            }
            for svc in self.services
        }

    def _write_status(self, final: bool = False) -> None:
        if not self.status_file or not (self._dirty or final):
            return
        self._dirty = False
        body: dict[str, Any] = dict(self.status_extra() if self.status_extra else {})
        body["pid"] = os.getpid()
        body["services"] = self.status()
        if final:
            body["phase"] = "stopped"
        text = json.dumps(body, indent=2, sort_keys=True) + "\n"
        if text == self._last_status:
            return
        self._last_status = text
        write_json_atomic(self.status_file, text)


def write_json_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)
