"""The order of one dataplane apply, and its timings.

The calculation graph's messages only record intent in the managers; :meth:`ApplyPlan.apply`
then runs the phases in the one order that never leaves a dangling reference:

1. ``interfaces`` — link changes and workload sysctls (so route tables know which links exist);
2. ``ipsets`` — create and update IP sets, before any rule can mention them;
3. ``iptables`` — the tables in the kernel's own traversal order: ``raw``, ``mangle``,
   ``nat``, ``filter`` (one ``iptables-restore`` each, IPv4 then IPv6);
4. ``routes`` — netlink;
5. ``ipset-deletions`` — destroy sets only once no rule refers to them.

Nothing stale is cleaned up before the calculation graph reports in-sync
(:meth:`ApplyPlan.set_in_sync`).  A failing phase stops the apply — later phases depend on it,
and deleting ipsets after a failed rules update could break live rules — and the error is
re-raised after the timings are recorded; every manager keeps its dirty state, so the next
apply retries.  :class:`ApplyReport` carries per-phase seconds for the
``felix_int_dataplane_apply_time_seconds`` metric.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tortie.felix.dataplane.commands import ApplyStats
from tortie.felix.dataplane.interfaces import InterfaceManager
from tortie.felix.dataplane.ipsets import IpsetManager
from tortie.felix.dataplane.iptables import Table
from tortie.felix.dataplane.routes import RouteTable

log = logging.getLogger(__name__)

TABLE_ORDER = ("raw", "mangle", "nat", "filter")
PHASES = ("interfaces", "ipsets", "iptables", "routes", "ipset-deletions")


@dataclass
class ApplyReport:
    """Per-phase seconds and per-manager stats of one apply."""

    phase_seconds: dict[str, float] = field(default_factory=dict)
    stats: list[ApplyStats] = field(default_factory=list)
    total_seconds: float = 0.0
    error: Exception | None = None

    @property
    def commands(self) -> int:
        return sum(s.commands for s in self.stats)

    @property
    def lines(self) -> int:
        return sum(s.lines for s in self.stats)


def _table_key(table: Table) -> tuple[int, int]:
    order = TABLE_ORDER.index(table.name) if table.name in TABLE_ORDER else len(TABLE_ORDER)
    return (table.ip_version, order)


class ApplyPlan:
    """Runs the managers' applies in dependency order; see the module docstring."""

    def __init__(
        self,
        *,
        ipsets: Sequence[IpsetManager] = (),
        tables: Iterable[Table] = (),
        routes: Sequence[RouteTable] = (),
        interfaces: InterfaceManager | None = None,
    ) -> None:
        self.ipsets = list(ipsets)
        self.tables = sorted(tables, key=_table_key)
        self.routes = list(routes)
        self.interfaces = interfaces
        self.in_sync = False
        if interfaces is not None:
            for rt in self.routes:
                interfaces.add_listener(rt.on_link_update)

    def set_in_sync(self) -> None:
        """The calculation graph has the full datastore snapshot: allow cleanup of leftovers.

        The first time, every manager also re-reads the kernel, so that the cleanup apply
        sees leftovers however they got there.
        """
        if not self.in_sync:
            log.info("dataplane in sync: stale chains, sets and routes may now be removed")
            self.invalidate()
        self.in_sync = True

    def invalidate(self) -> None:
        """Re-read all kernel state on the next apply and repair drift (periodic refresh)."""
        for m in self.ipsets:
            m.invalidate()
        for t in self.tables:
            t.invalidate()
        for r in self.routes:
            r.invalidate()
        if self.interfaces is not None:
            self.interfaces.resync()

    def apply(self) -> ApplyReport:
        report = ApplyReport()
        start = time.monotonic()
        cleanup = self.in_sync
        try:
            self._phase(
                report, "interfaces", [self.interfaces.apply] if self.interfaces is not None else []
            )
            self._phase(report, "ipsets", [m.apply_updates for m in self.ipsets])
            self._phase(
                report,
                "iptables",
                [lambda t=t: t.apply(allow_cleanup=cleanup) for t in self.tables],
            )
            self._phase(
                report, "routes", [lambda r=r: r.apply(allow_cleanup=cleanup) for r in self.routes]
            )
            self._phase(
                report,
                "ipset-deletions",
                [lambda m=m: m.apply_deletions(allow_cleanup=cleanup) for m in self.ipsets],
            )
        except Exception as e:
            report.error = e
            raise
        finally:
            report.total_seconds = time.monotonic() - start
            log.debug(
                "dataplane apply: %.3fs (%s)",
                report.total_seconds,
                ", ".join(f"{k}={v:.3f}s" for k, v in report.phase_seconds.items()),
            )
        return report

    @staticmethod
    def _phase(report: ApplyReport, name: str, steps: list) -> None:
        start = time.monotonic()
        try:
            for step in steps:
                report.stats.append(step())
        finally:
            report.phase_seconds[name] = time.monotonic() - start
