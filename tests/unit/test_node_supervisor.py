"""The supervisor with real (tiny) child processes: logs, restarts with backoff, gates, shutdown
with no child left behind; and the readiness rule for BGP sessions."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tortie.node.health import bird_verdict, unestablished
from tortie.node.supervisor import RotatingLog, ServiceSpec, Supervisor


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class Running:
    """A supervisor on a background thread (the tests drive it; tortie-node uses the main
    thread, which the parent-death signal needs)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.thread = threading.Thread(target=sup.run, daemon=True)

    def __enter__(self) -> Supervisor:
        self.thread.start()
        return self.sup

    def __exit__(self, *exc: object) -> None:
        self.sup.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def supervisor(tmp_path: Path, **kw: Any) -> Supervisor:
    kw.setdefault("backoff_initial", 0.1)
    kw.setdefault("backoff_max", 0.4)
    kw.setdefault("grace", 3.0)
    return Supervisor(tmp_path / "log", status_file=str(tmp_path / "status.json"), **kw)


def test_output_goes_to_the_services_log(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    sup.add(
        ServiceSpec(
            "echo",
            py(
                "import sys,time; print('hello'); sys.stderr.write('err\\n');"
                "sys.stdout.flush(); time.sleep(60)"
            ),
        )
    )
    with Running(sup):
        log = tmp_path / "log" / "echo" / "current"
        wait_for(lambda: log.exists() and "err" in log.read_text(), what="log lines")
    assert log.read_text().splitlines() == ["hello", "err"]


def test_restart_with_exponential_backoff(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, stable_after=60.0)
    svc = sup.add(ServiceSpec("crash", py("import sys; sys.exit(3)")))
    with Running(sup):
        wait_for(lambda: svc.restarts >= 4, what="four restarts")
        assert svc.last_exit == 3
        assert svc.backoff == pytest.approx(0.4)  # doubled 0.1 -> 0.2 -> 0.4, capped


def test_backoff_resets_after_a_stable_run(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, stable_after=0.3, backoff_initial=0.05, backoff_max=5.0)
    svc = sup.add(ServiceSpec("slow", py("import time; time.sleep(0.4)")))
    with Running(sup):
        wait_for(lambda: svc.restarts >= 3, what="restarts")
        assert svc.backoff <= 0.1


def test_killed_child_is_restarted_with_a_new_pid(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    svc = sup.add(ServiceSpec("sleeper", py("import time; time.sleep(60)")))
    with Running(sup):
        first = wait_for(lambda: svc.pid, what="first start")
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: svc.pid if svc.pid not in (None, first) else None, what="restart")
        assert alive(second) and not alive(first)
        assert svc.last_exit == -signal.SIGKILL
        status = json.loads((tmp_path / "status.json").read_text())
        wait_for(
            lambda: (
                json.loads((tmp_path / "status.json").read_text())["services"]["sleeper"]["pid"]
                == second
            ),
            what="status file",
        )
        assert status["pid"] == os.getpid()


def test_shutdown_leaves_no_child_or_grandchild(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, grace=1.0)
    pidfile = tmp_path / "grandchild"
    # A child that ignores SIGTERM and has a grandchild of its own.
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    a = sup.add(ServiceSpec("stubborn", py(code)))
    b = sup.add(ServiceSpec("polite", py("import time; time.sleep(60)")))
    with Running(sup):
        wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="grandchild")
        pids = [a.pid, b.pid, int(pidfile.read_text())]
    assert None not in pids
    # SIGKILL is delivered asynchronously: give the kernel a moment to finish them.
    wait_for(lambda: not any(alive(p) for p in pids if p), 5, "every process gone")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "stopped"
    assert {s["pid"] for s in status["services"].values()} == {None}


def test_gate_and_pre_start(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    calls: list[str] = []
    sup = supervisor(tmp_path)
    svc = sup.add(
        ServiceSpec(
            "gated",
            py("import time; time.sleep(60)"),
            gate=flag.exists,
            gate_what="the flag",
            pre_start=lambda: calls.append("pre"),
        )
    )
    with Running(sup):
        time.sleep(0.3)
        assert svc.pid is None and svc.state() == "waiting"
        flag.write_text("")
        wait_for(lambda: svc.pid, what="start after the gate opened")
        assert calls == ["pre"]


def test_requested_restart_has_no_backoff(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, backoff_initial=30.0)
    count = {"n": 0}

    def env() -> dict[str, str]:
        count["n"] += 1
        return {**os.environ, "GENERATION": str(count["n"])}

    svc = sup.add(ServiceSpec("felixish", py("import time; time.sleep(60)"), env))
    with Running(sup):
        first = wait_for(lambda: svc.pid, what="start")
        sup.request_restart("felixish")
        wait_for(lambda: svc.pid not in (None, first), timeout=5, what="restart")
        assert svc.env_used["GENERATION"] == "2"


def test_run_task_logs_and_returns_the_exit_code(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    sup.add(ServiceSpec("confd", py("pass")))
    assert sup.run_task("confd", py("print('rendered'); raise SystemExit(4)"), os.environ, 10) == 4
    assert sup.run_task("confd", py("import time; time.sleep(30)"), os.environ, 0.3) is None
    sup.shutdown()
    assert "rendered" in (tmp_path / "log" / "confd" / "current").read_text()


def test_rotating_log(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path, max_bytes=100, keep=2)
    for i in range(30):
        log.write(f"line {i:02d} {'x' * 20}\n".encode())
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["current", "current.1", "current.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    assert "line 29" in (tmp_path / "current").read_text()


# --- BGP readiness --------------------------------------------------------------------------------


def test_unestablished() -> None:
    rows = [("172.31.0.12", "Established"), ("172.31.0.13", "Connect Socket: refused")]
    assert unestablished(rows) == (["172.31.0.13"], 1)


def test_bird_readiness_rule() -> None:
    up = ("172.31.0.12", "Established")
    down = ("172.31.0.13", "Active Socket: Connection refused")
    down2 = ("172.31.0.14", "Connect")
    # No peers at all: ready.
    assert bird_verdict([], age=1, threshold=30) is None
    # Young: every peer must be up, and the message names the ones that are not.
    assert bird_verdict([up, down, down2], age=1, threshold=30) == (
        "BGP not established with 172.31.0.13,172.31.0.14"
    )
    assert bird_verdict([up], age=1, threshold=30) is None
    # Old: one established peer is enough; none is not.
    assert bird_verdict([up, down], age=31, threshold=30) is None
    assert bird_verdict([down], age=31, threshold=30) == "BGP not established with 172.31.0.13"
