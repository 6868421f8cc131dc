"""Health aggregation and the Prometheus text format, over a real local HTTP server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tortie.felix.health import HealthAggregator, HTTPService
from tortie.felix.metrics import FelixMetrics


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_and_metrics_endpoints() -> None:
    health = HealthAggregator()
    health.register("calc")
    health.register("dataplane")
    metrics = FelixMetrics()
    svc = HTTPService("127.0.0.1", 0, health, metrics.registry).start()
    try:
        health.report("calc", live=True, ready=True)
        health.report("dataplane", live=True, ready=False, detail="not yet in sync")
        code, body = _get(svc.port, "/readiness")
        assert code == 503
        assert json.loads(body)["dataplane"]["detail"] == "not yet in sync"
        assert _get(svc.port, "/liveness")[0] == 200
        health.report("dataplane", live=True, ready=True)
        assert _get(svc.port, "/readiness")[0] == 200

        metrics.apply_time.observe(0.25)
        metrics.apply_time.observe(0.5)
        metrics.iptables_rules.set(42, ip_version="4", table="filter")
        code, text = _get(svc.port, "/metrics")
        assert code == 200
        assert "# TYPE felix_int_dataplane_apply_time_seconds summary" in text
        assert "felix_int_dataplane_apply_time_seconds_count 2" in text
        assert 'felix_iptables_rules{ip_version="4",table="filter"} 42' in text
        assert _get(svc.port, "/nope")[0] == 404
    finally:
        svc.stop()


def test_reporter_timeout_makes_process_not_live() -> None:
    health = HealthAggregator()
    health.register("calc", timeout=0.0)
    health.report("calc", live=True, ready=True)
    assert not health.live()
    assert health.summary()["calc"]["detail"] == "timed out"
