"""Readiness and liveness checks, as calico-node's ``-felix-ready -bird-ready`` (``pkg/health``).

- **felix-ready / felix-live**: GET ``http://$FELIX_HEALTHHOST:$FELIX_HEALTHPORT/readiness``
  (``/liveness``), default ``localhost:9099``; any status outside 200-399 fails with
  ``readiness probe reporting 503``.
- **bird-ready**: BIRD's BGP sessions over its control socket. No sessions: ready. While
  tortie-node has been up for less than ``threshold`` (the age of the nodename file, which
  start-up rewrites), *every* session must be Established; afterwards one Established session
  is enough, so that one dead peer does not make the whole mesh unready. Failure names the
  peers: ``BGP not established with 172.31.0.12,172.31.0.13``.
- **bird-live**: BIRD answers on its control socket and confd runs (per tortie-node's status
  file).

Tortie's BIRD 2 serves both IP families from one daemon, so one check covers calico-node's
``-bird-ready`` and ``-bird6-ready``.

Each failing check gives a line ``tortie-node is not ready: <part> is not ready: <why>``; the
command exits 1 when any check fails, 0 otherwise (what a Kubernetes exec probe or a systemd
``ExecStartPost`` wants).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "Checks",
    "bird_live",
    "bird_ready",
    "bird_verdict",
    "felix_health",
    "run_checks",
    "unestablished",
]

log = logging.getLogger("tortie.node")

DEFAULT_THRESHOLD = 30.0


@dataclass(frozen=True)
class Checks:
    felix_ready: bool = False
    felix_live: bool = False
    bird_ready: bool = False
    bird_live: bool = False
    threshold: float = DEFAULT_THRESHOLD

    @property
    def any(self) -> bool:
        return self.felix_ready or self.felix_live or self.bird_ready or self.bird_live


def felix_health(env: Mapping[str, str], probe: str, timeout: float = 5.0) -> str | None:
    """None when Felix's ``probe`` endpoint (``readiness``/``liveness``) says OK, else why."""
    host = env.get("FELIX_HEALTHHOST") or "localhost"
    port = int(env.get("FELIX_HEALTHPORT") or 9099)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", f"/{probe}")
        status = conn.getresponse().status
    except OSError as exc:
        return f"{probe} probe failed: {exc}"
    finally:
        conn.close()
    if status < 200 or status >= 400:
        return f"{probe} probe reporting {status}"
    return None


def unestablished(peers: list[tuple[str, str]]) -> tuple[list[str], int]:
    """(addresses of peers whose session is not Established, number Established) from
    (address, info) rows."""
    down = [addr for addr, info in peers if not info.startswith("Established")]
    return down, len(peers) - len(down)


def bird_ready(
    socket_path: str,
    nodename_file: str,
    threshold: float,
    now: Callable[[], float] = time.time,
) -> str | None:
    """None when BIRD is ready by calico-node's rule (module docstring), else why not."""
    from tortie.confd.bird import BirdControl, BirdError, calico_peers

    try:
        started = os.stat(nodename_file).st_mtime
    except OSError as exc:
        return f"failed to stat() nodename file: {exc}"
    try:
        peers = calico_peers(BirdControl(socket_path, timeout=5.0).protocols())
    except BirdError as exc:
        return str(exc)
    return bird_verdict([(p.address, p.info) for p in peers], now() - started, threshold)


def bird_verdict(peers: list[tuple[str, str]], age: float, threshold: float) -> str | None:
    """calico-node's rule over (address, info) rows, ``age`` seconds after start-up."""
    down, up = unestablished(peers)
    log.debug("number of node(s) with BGP peering established = %d", up)
    if not peers:
        return None
    if age < threshold:
        return f"BGP not established with {','.join(down)}" if down else None
    if up > 0:
        return None
    return f"BGP not established with {','.join(down)}"


def bird_live(socket_path: str, status_file: str) -> str | None:
    """None when BIRD answers on its socket and confd is running, else why not."""
    from tortie.confd.bird import BirdControl

    try:
        with open(status_file) as f:
            status = json.load(f)
        confd = status.get("services", {}).get("confd", {})
    except (OSError, ValueError) as exc:
        return f"cannot read tortie-node's status file {status_file}: {exc}"
    pid = confd.get("pid")
    if not pid or not _alive(int(pid)):
        return "confd is not running"
    if not BirdControl(socket_path, timeout=5.0).ready():
        return f"BIRD does not answer on {socket_path}"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_checks(
    checks: Checks,
    env: Mapping[str, str],
    *,
    bird_socket: str,
    nodename_file: str,
    status_file: str,
) -> list[str]:
    """The failure lines (empty when everything checked is fine)."""
    failures: list[str] = []
    if checks.felix_live:
        err = felix_health(env, "liveness")
        if err:
            failures.append(f"tortie-node is not live: Felix is not live: {err}")
    if checks.bird_live:
        err = bird_live(bird_socket, status_file)
        if err:
            failures.append(f"tortie-node is not live: bird/confd is not live: {err}")
    if checks.felix_ready:
        err = felix_health(env, "readiness")
        if err:
            failures.append(f"tortie-node is not ready: felix is not ready: {err}")
    if checks.bird_ready:
        err = bird_ready(bird_socket, nodename_file, checks.threshold)
        if err:
            failures.append(f"tortie-node is not ready: BIRD is not ready: {err}")
    return failures
