"""BGP in the lab: tortie-confd and BIRD on lab nodes, and what tests and benchmarks ask of them.

`LabBGP(lab)` starts, per node, ``tortie-confd`` then ``bird`` inside the node's network
namespace (through `Lab.spawn`, so `Lab.down` kills whatever is left), with the node's files
under ``<lab workdir>/bgp/<node>/``: ``bird.cfg``, ``bird.ctl`` (control socket),
``confd-status.json`` and logs. BIRD starts only once confd has written a valid
``bird.cfg`` (as tortie-node will do it). BGP sessions run between lab addresses only.

It also writes what IPAM will own soon (block affinities) and reads what tests check: BGP
session states over the control socket and ``proto bird`` routes in a node's kernel table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tortie.confd.bird import BirdControl, BirdError, BirdPeerRow, calico_peers
from tortie.datastore import keys

__all__ = ["BGPNode", "LabBGP"]


@dataclass
class BGPNode:
    """The BGP processes and files of one lab node."""

    name: str
    dir: Path
    confd: subprocess.Popen[Any] | None = None
    bird: subprocess.Popen[Any] | None = None

    @property
    def config(self) -> Path:
        return self.dir / "bird.cfg"

    @property
    def socket(self) -> str:
        return str(self.dir / "bird.ctl")

    @property
    def status_file(self) -> Path:
        return self.dir / "confd-status.json"

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def control(self) -> BirdControl:
        return BirdControl(self.socket, timeout=5.0)

    def peers(self) -> list[BirdPeerRow]:
        """BIRD's BGP sessions as calicoctl shows them ([] when BIRD does not answer)."""
        try:
            return calico_peers(self.control().protocols())
        except BirdError:
            return []

    def established(self) -> set[str]:
        return {p.address for p in self.peers() if p.info.startswith("Established")}


class LabBGP:
    """confd + BIRD on the nodes of a `Lab` (see the module docstring).

    ``timers`` is passed to confd as ``CONFD_BGP_TIMERS`` (tests may shorten BGP timers;
    production keeps Calico's defaults).
    """

    def __init__(self, lab: Any, timers: str = "", settle: float = 0.05) -> None:
        self.lab = lab
        self.timers = timers
        self.settle = settle
        self.nodes: dict[str, BGPNode] = {}

    # --- processes -------------------------------------------------------------------------
    def node(self, name: str) -> BGPNode:
        if name not in self.nodes:
            d = Path(self.lab.workdir) / "bgp" / name
            d.mkdir(parents=True, exist_ok=True)
            self.nodes[name] = BGPNode(name, d)
        return self.nodes[name]

    def env(self, node: str) -> dict[str, str]:
        env = self.lab.ctl_env()
        env.update(NODENAME=node, BGP_LOGSEVERITYSCREEN="info")
        if self.timers:
            env["CONFD_BGP_TIMERS"] = self.timers
        return env

    def start_confd(self, name: str) -> BGPNode:
        n = self.node(name)
        log = open(n.dir / "confd.log", "a")  # noqa: SIM115 - handed to the child
        try:
            n.confd = self.lab.spawn(
                name,
                [
                    sys.executable,
                    "-m",
                    "tortie.confd.daemon",
                    "--node",
                    name,
                    "--config-dir",
                    str(n.dir),
                    "--bird-socket",
                    n.socket,
                    "--secrets-dir",
                    str(n.dir / "secrets"),
                    "--settle",
                    str(self.settle),
                ],
                name=f"confd-{name}",
                env=self.env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        return n

    def start_bird(self, name: str, timeout: float = 20.0) -> BGPNode:
        """Start BIRD once confd has written a valid configuration; wait for its socket."""
        n = self.node(name)
        _wait(lambda: n.config.exists(), timeout, f"confd to write {n.config}")
        if os.path.exists(n.socket):
            os.unlink(n.socket)
        log = open(n.dir / "bird.log", "a")  # noqa: SIM115 - handed to the child
        try:
            n.bird = self.lab.spawn(
                name,
                ["bird", "-f", "-c", str(n.config), "-s", n.socket, "-P", str(n.dir / "bird.pid")],
                name=f"bird-{name}",
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        _wait(lambda: n.control().ready(), timeout, f"BIRD on {name} to answer")
        return n

    def start(self, names: Iterable[str] | None = None, timeout: float = 30.0) -> None:
        """confd then BIRD on each node (all the lab's nodes by default)."""
        todo = list(names) if names is not None else [n.name for n in self.lab.nodes]
        for name in todo:
            self.start_confd(name)
        for name in todo:
            self.start_bird(name, timeout)

    def start_external(self, target: str, config: str, timeout: float = 20.0) -> BGPNode:
        """A plain BIRD with a hand-written ``config`` in any lab namespace (``router``...):
        an external BGP peer such as a top-of-rack router. No confd."""
        n = self.node(target)
        n.config.write_text(config)
        return self.start_bird(target, timeout)

    def stop_bird(self, name: str, kill: bool = False) -> None:
        """Stop BIRD: SIGTERM (a clean shutdown: peers withdraw its routes) or SIGKILL."""
        n = self.nodes[name]
        if n.bird is not None:
            (n.bird.kill if kill else n.bird.terminate)()
            n.bird.wait(timeout=15)
            n.bird = None

    def stop_confd(self, name: str) -> None:
        n = self.nodes[name]
        if n.confd is not None:
            n.confd.terminate()
            n.confd.wait(timeout=15)
            n.confd = None

    def stop(self) -> None:
        """Stop every confd and BIRD this object started (BIRD first)."""
        for name in list(self.nodes):
            for stop in (self.stop_bird, self.stop_confd):
                try:
                    stop(name)
                except (subprocess.TimeoutExpired, OSError):
                    pass

    def rss_kib(self) -> dict[str, dict[str, int]]:
        """Resident memory of each node's confd and BIRD, in KiB."""
        out: dict[str, dict[str, int]] = {}
        for name, n in self.nodes.items():
            out[name] = {}
            for what, proc in (("confd", n.confd), ("bird", n.bird)):
                if proc is not None:
                    out[name][what] = _rss_kib(_leaf_pid(proc.pid))
        return out

    # --- datastore: what IPAM will write ----------------------------------------------------
    def write_affinity(self, node: str, cidr: str, state: str = "confirmed") -> None:
        """A block affinity for ``node`` (the value Calico's IPAM stores)."""
        value = json.dumps({"state": state, "deleted": False}).encode()
        self.lab.client.backend.put(keys.host_affinity_key(node, cidr), value)

    def delete_affinity(self, node: str, cidr: str) -> None:
        self.lab.client.backend.delete(keys.host_affinity_key(node, cidr))

    # --- the kernel ---------------------------------------------------------------------------
    def bird_routes(self, node: str) -> dict[str, str]:
        """``proto bird`` routes in ``node``'s main table: destination → the rest of the line."""
        out = self.lab.exec(node, ["ip", "-4", "route", "show", "proto", "bird"]).stdout
        routes = {}
        for line in out.splitlines():
            dest, _, rest = line.strip().partition(" ")
            if dest:
                routes[dest] = rest
        return routes


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _leaf_pid(pid: int) -> int:
    """The process nsenter became (nsenter execs, so usually ``pid`` itself)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    return int(children[0]) if children else pid


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
