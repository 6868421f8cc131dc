"""tortie-node on lab nodes: start it in each node's namespace, wait until ready, stop it.

``NodeRunner(lab)`` gives every node its own directories (run, logs, BIRD config, nodename
file) under the lab's workdir and the environment calico/node would get on a real host
(``NODENAME``, ``ETCD_ENDPOINTS``, ``IP_AUTODETECTION_METHOD=interface=eth0``, the default
pool, the backend...). Used by the demo, the tutorials and the end-to-end tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tortie.lab.netns import LabError


class NodeRunner:
    def __init__(self, lab: Any, **common_env: str) -> None:
        self.lab = lab
        self.common_env = dict(common_env)
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    def dir(self, node: str) -> Path:
        d = Path(self.lab.workdir) / "tortie-node" / node
        d.mkdir(parents=True, exist_ok=True)
        return d

    def env(self, node: str, **extra: str) -> dict[str, str]:
        d = self.dir(node)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(
                ("ETCD_", "FELIX_", "CALICO_", "TORTIE_", "IP", "NODENAME", "DOCKER_")
            )
        }
        env.update(
            NODENAME=node,
            ETCD_ENDPOINTS=self.lab.etcd_endpoint,
            IP_AUTODETECTION_METHOD="interface=eth0",
            CALICO_IPV4POOL_CIDR="10.65.0.0/16",
            CALICO_NODENAME_FILE=str(d / "nodename"),
            TORTIE_RUN_DIR=str(d / "run"),
            TORTIE_LOG_DIR=str(d / "log"),
            CONFD_CONFIG_DIR=str(d / "bird"),
        )
        env.update(self.common_env)
        env.update(extra)
        return env

    def start(self, node: str, **extra: str) -> subprocess.Popen[Any]:
        out = open(self.dir(node) / "stderr.log", "a")  # noqa: SIM115 - handed to the child
        try:
            proc = self.lab.spawn(
                node,
                [sys.executable, "-m", "tortie.node.daemon"],
                name=f"tortie-node-{node}",
                env=self.env(node, **extra),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()
        self.procs[node] = proc
        return proc

    def check_ready(self, node: str) -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable,
            "-m",
            "tortie.node.daemon",
            "--check-ready",
            "--threshold-time",
            "600",
        ]
        return self.lab.exec(node, argv, env=self.env(node))

    def wait_ready(self, nodes: list[str], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes:
            while True:
                proc = self.procs.get(node)
                if proc is not None and proc.poll() is not None:
                    raise LabError(
                        f"tortie-node on {node} exited ({proc.returncode}): see "
                        f"{self.dir(node) / 'stderr.log'}"
                    )
                out = self.check_ready(node)
                if out.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise LabError(
                        f"tortie-node on {node} not ready after {timeout:g} s: "
                        f"{(out.stdout + out.stderr).strip()}"
                    )
                time.sleep(0.5)

    def stop(self, node: str, timeout: float = 30.0) -> int:
        proc = self.procs.pop(node)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=5)

    def stop_all(self) -> None:
        for node in list(self.procs):
            try:
                self.stop(node)
            except Exception:
                pass

    def errors(self) -> list[str]:
        """Error lines from every node's logs (for a report when something failed)."""
        out = []
        for node_dir in sorted((Path(self.lab.workdir) / "tortie-node").glob("*")):
            for log in [*sorted(node_dir.glob("log/*/current")), node_dir / "stderr.log"]:
                if log.exists():
                    out += [
                        f"{log}: {ln}"
                        for ln in log.read_text().splitlines()
                        if " error " in ln.lower()
                    ]
        return out
