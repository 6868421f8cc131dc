"""A small Prometheus metrics registry (text exposition format 0.0.4), no dependencies.

Counters, gauges and summaries with labels, named as Calico's Felix names them
(``felix_int_dataplane_apply_time_seconds``, ``felix_calc_graph_update_time_seconds``,
``felix_iptables_rules``, ``felix_active_local_policies`` ...). Summaries keep a sliding window
of recent observations and report the 0.5, 0.9 and 0.99 quantiles, plus ``_sum`` and
``_count`` over all time, as Go's client_golang summaries do. Thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable

LabelValues = tuple[tuple[str, str], ...]


def _labels(values: LabelValues, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = (*values, *extra)
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = list(self._values.items()) or [((), 0.0)]
        return [*self.header(), *(f"{self.name}{_labels(k)} {_num(v)}" for k, v in items)]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = float(value)


class Summary(_Metric):
    kind = "summary"
    QUANTILES = (0.5, 0.9, 0.99)

    def __init__(self, name: str, help_text: str, window: int = 500) -> None:
        super().__init__(name, help_text)
        self._window = window
        self._obs: dict[LabelValues, deque[float]] = {}
        self._sum: dict[LabelValues, float] = {}
        self._count: dict[LabelValues, int] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            dq = self._obs.get(key)
            if dq is None:
                dq = self._obs[key] = deque(maxlen=self._window)
            dq.append(value)
            self._sum[key] = self._sum.get(key, 0.0) + value
            self._count[key] = self._count.get(key, 0) + 1

    def count(self, **labels: str) -> int:
        return self._count.get(tuple(sorted(labels.items())), 0)

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            keys = list(self._obs) or [()]
            for key in keys:
                obs = sorted(self._obs.get(key, ()))
                for q in self.QUANTILES:
                    v = obs[min(len(obs) - 1, int(q * len(obs)))] if obs else math.nan
                    lines.append(f"{self.name}{_labels(key, (('quantile', str(q)),))} {_num(v)}")
                lines.append(f"{self.name}_sum{_labels(key)} {_num(self._sum.get(key, 0.0))}")
                lines.append(f"{self.name}_count{_labels(key)} {self._count.get(key, 0)}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        existing = self._metrics.get(metric.name)
        if existing is not None:
            return existing
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str) -> Counter:
        return self._add(Counter(name, help_text))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str) -> Gauge:
        return self._add(Gauge(name, help_text))  # type: ignore[return-value]

    def summary(self, name: str, help_text: str) -> Summary:
        return self._add(Summary(name, help_text))  # type: ignore[return-value]

    def metrics(self) -> Iterable[_Metric]:
        return list(self._metrics.values())

    def render(self) -> str:
        lines: list[str] = []
        for m in self.metrics():
            lines.extend(m.render())
        return "\n".join(lines) + "\n"


class FelixMetrics:
    """The metrics Tortie's Felix exports, with Calico's names."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.apply_time = r.summary(
            "felix_int_dataplane_apply_time_seconds",
            "Time in seconds that it took to apply a dataplane update.",
        )
        self.msg_batch_size = r.summary(
            "felix_int_dataplane_msg_batch_size", "Number of messages processed in each batch."
        )
        self.dataplane_failures = r.counter(
            "felix_int_dataplane_failures", "Number of times dataplane updates failed."
        )
        self.calc_update_time = r.summary(
            "felix_calc_graph_update_time_seconds",
            "Seconds to update calculation graph for each datastore OnUpdate call.",
        )
        self.calc_updates = r.counter(
            "felix_calc_graph_updates_processed",
            "Number of datastore updates processed by the calculation graph.",
        )
        self.calc_output_events = r.counter(
            "felix_calc_graph_output_events", "Number of events emitted by the calculation graph."
        )
        self.iptables_rules = r.gauge(
            "felix_iptables_rules", "Number of rules in Felix-owned chains, by table."
        )
        self.iptables_chains = r.gauge("felix_iptables_chains", "Number of active iptables chains.")
        self.iptables_restore_calls = r.counter(
            "felix_iptables_restore_calls", "Number of iptables-restore calls."
        )
        self.iptables_restore_errors = r.counter(
            "felix_iptables_restore_errors", "Number of iptables-restore errors."
        )
        self.ipsets = r.gauge("felix_ipsets_calico", "Number of active Calico IP sets.")
        self.ipset_calls = r.counter("felix_ipset_calls", "Number of ipset commands executed.")
        self.active_policies = r.gauge(
            "felix_active_local_policies", "Number of active policies on this host."
        )
        self.active_endpoints = r.gauge(
            "felix_active_local_endpoints", "Number of active endpoints on this host."
        )
        self.resync_state = r.gauge(
            "felix_resync_state", "Current datastore state (1 waiting, 2 resyncing, 3 in sync)."
        )
        self.resyncs = r.counter(
            "felix_resyncs_started", "Number of times Felix has started resyncing."
        )
        self.cluster_hosts = r.gauge("felix_cluster_num_hosts", "Total number of hosts.")
        self.cluster_workloads = r.gauge(
            "felix_cluster_num_workload_endpoints", "Total number of workload endpoints."
        )
        self.route_table_syncs = r.counter(
            "felix_route_table_syncs", "Number of route table syncs."
        )
