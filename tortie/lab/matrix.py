"""The reachability matrix: probe every ordered pair of workloads with real packets.

For each check (``tcp:8080``, ``udp:5353``, ``icmp``) and each ordered pair of endpoints
(source ≠ destination), a probe from inside the source's network namespace says whether the
destination answered. Echo responders are started inside each destination for the TCP/UDP
ports for the duration of the run (a port already in use there is assumed to be served by the
workload itself). Probes run in parallel threads, so a blocked pair costs one timeout, not one
per pair.

The result renders as a table per check (``✓`` allowed, ``✗`` blocked), and as YAML/JSON that
can be saved and passed back as ``--expect`` to compare a later run against.
"""

from __future__ import annotations

import concurrent.futures
import errno
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tortie.lab import probe


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    netns: str
    ip: str


@dataclass(frozen=True, slots=True)
class Check:
    protocol: str  # tcp | udp | icmp
    port: int | None = None

    def __str__(self) -> str:
        return self.protocol if self.port is None else f"{self.protocol}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Check:
        proto, _, port = text.strip().lower().partition(":")
        if proto == "icmp" and not port:
            return cls("icmp")
        if proto not in ("tcp", "udp") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid check {text!r}: expected tcp:PORT, udp:PORT or icmp")
        return cls(proto, int(port))


@dataclass
class Matrix:
    targets: list[Target]
    checks: list[Check]
    # results[check][src][dst] = reachable
    results: dict[str, dict[str, dict[str, bool]]] = field(default_factory=dict)

    def get(self, check: Check | str, src: str, dst: str) -> bool:
        return self.results[str(check)][src][dst]

    def to_data(self) -> dict[str, Any]:
        return {
            "checks": [str(c) for c in self.checks],
            "matrix": {
                check: {
                    src: {dst: ("allow" if ok else "deny") for dst, ok in row.items()}
                    for src, row in rows.items()
                }
                for check, rows in self.results.items()
            },
        }


def _start_responders(targets: Sequence[Target], checks: Sequence[Check]) -> list[Any]:
    tcp = sorted({c.port for c in checks if c.protocol == "tcp" and c.port})
    udp = sorted({c.port for c in checks if c.protocol == "udp" and c.port})
    started = []
    for t in targets:
        for proto_ports, kw in ((tcp, "tcp_ports"), (udp, "udp_ports")):
            for port in proto_ports:
                r = probe.Responder(t.netns, **{kw: (port,)})  # type: ignore[arg-type]
                try:
                    started.append(r.start())
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    r.stop()  # the workload serves this port itself
    return started


def _probe(src: Target, dst: Target, check: Check, timeout: float) -> bool:
    if check.protocol == "icmp":
        return probe.icmp(src.netns, dst.ip, timeout)
    assert check.port is not None
    fn = probe.tcp if check.protocol == "tcp" else probe.udp
    return fn(src.netns, dst.ip, check.port, timeout) is True


def run(
    targets: Iterable[Target],
    checks: Iterable[Check],
    timeout: float = 0.5,
    workers: int = 32,
) -> Matrix:
    targets, checks = list(targets), list(checks)
    matrix = Matrix(targets, checks)
    responders = _start_responders(targets, checks)
    try:
        jobs = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for check in checks:
                for src in targets:
                    for dst in targets:
                        if src.name != dst.name:
                            jobs[(str(check), src.name, dst.name)] = pool.submit(
                                _probe, src, dst, check, timeout
                            )
        for check in checks:
            matrix.results[str(check)] = {
                s.name: {
                    d.name: jobs[(str(check), s.name, d.name)].result()
                    for d in targets
                    if d.name != s.name
                }
                for s in targets
            }
    finally:
        for r in responders:
            r.stop()
    return matrix


GREEN, RED, DIM, RESET = "\033[32m", "\033[31m", "\033[2m", "\033[0m"


def render(
    matrix: Matrix, colour: bool = False, changed: Iterable[tuple[str, str, str]] = ()
) -> str:
    """One table per check; rows are sources, columns destinations. Cells listed in
    ``changed`` (check, src, dst) are marked with ``*``."""
    changed = set(changed)
    names = [t.name for t in matrix.targets]
    width = max(len(n) for n in [*names, "from \\ to"]) + 2
    lines = []
    for check in matrix.checks:
        rows = matrix.results[str(check)]
        lines.append(f"{check}:")
        lines.append("  " + "from \\ to".ljust(width) + "".join(n.ljust(width) for n in names))
        for src in names:
            cells = []
            for dst in names:
                if src == dst:
                    text, col = "·", DIM
                else:
                    ok = rows[src][dst]
                    text, col = ("✓" if ok else "✗"), (GREEN if ok else RED)
                    if (str(check), src, dst) in changed:
                        text += "*"
                cell = text.ljust(width)
                cells.append(f"{col}{cell}{RESET}" if colour else cell)
            lines.append("  " + src.ljust(width) + "".join(cells))
    return "\n".join(lines) + "\n"


def differences(matrix: Matrix, expected: Mapping[str, Any]) -> list[str]:
    """What differs from an expectation in ``Matrix.to_data()`` form (missing = no opinion)."""
    out = []
    wanted = expected.get("matrix", expected)
    for check, rows in wanted.items():
        have = matrix.results.get(str(check))
        if have is None:
            out.append(f"{check}: not probed in this run")
            continue
        for src, row in rows.items():
            for dst, verdict in row.items():
                if src not in have or dst not in have[src]:
                    out.append(f"{check} {src} -> {dst}: no such pair in this run")
                    continue
                want = str(verdict).lower() in ("allow", "true", "yes", "ok", "✓")
                if have[src][dst] != want:
                    got = "allow" if have[src][dst] else "deny"
                    out.append(f"{check} {src} -> {dst}: expected {verdict}, got {got}")
    return out


def changes(before: Matrix | None, after: Matrix) -> list[tuple[str, str, str]]:
    """The (check, src, dst) cells whose verdict differs between two runs."""
    if before is None:
        return []
    out = []
    for check, rows in after.results.items():
        for src, row in rows.items():
            for dst, ok in row.items():
                old = before.results.get(check, {}).get(src, {}).get(dst)
                if old is not None and old != ok:
                    out.append((check, src, dst))
    return out
