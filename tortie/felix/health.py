"""Felix's health (``/liveness``, ``/readiness``) and Prometheus (``/metrics``) HTTP servers.

Health follows Calico's aggregator: each reporter (the syncer/calc graph, the dataplane)
declares itself live and/or ready with an optional timeout; the process is live while every
live-reporter has reported within its timeout, and ready while every ready-reporter says it is
ready. Responses are 200 or 503 with a small JSON body naming each reporter, so an operator can
see *which* part is unhappy.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tortie.felix.metrics import Registry

log = logging.getLogger(__name__)


@dataclass
class _Reporter:
    live: bool = False
    ready: bool = False
    timeout: float | None = None
    last: float = 0.0
    detail: str = ""


class HealthAggregator:
    def __init__(self) -> None:
        self._reporters: dict[str, _Reporter] = {}
        self._lock = threading.Lock()

    def register(self, name: str, timeout: float | None = None) -> None:
        with self._lock:
            self._reporters[name] = _Reporter(timeout=timeout, last=time.monotonic())

    def report(self, name: str, *, live: bool, ready: bool, detail: str = "") -> None:
        with self._lock:
            r = self._reporters.setdefault(name, _Reporter())
            r.live, r.ready, r.last, r.detail = live, ready, time.monotonic(), detail

    def summary(self) -> dict[str, Any]:
        now = time.monotonic()
        out: dict[str, Any] = {}
        with self._lock:
            for name, r in self._reporters.items():
                timed_out = r.timeout is not None and now - r.last > r.timeout
                out[name] = {
                    "live": r.live and not timed_out,
                    "ready": r.ready and not timed_out,
                    "detail": "timed out" if timed_out else r.detail,
                }
        return out

    def live(self) -> bool:
        return all(v["live"] for v in self.summary().values())

    def ready(self) -> bool:
        s = self.summary()
        return bool(s) and all(v["ready"] for v in s.values())


def _handler(health: HealthAggregator | None, registry: Registry | None) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if health is not None and path in ("/liveness", "/readiness"):
                ok = health.live() if path == "/liveness" else health.ready()
                body = json.dumps(health.summary(), indent=1).encode()
                self._send(200 if ok else 503, body, "application/json")
            elif registry is not None and path == "/metrics":
                self._send(200, registry.render().encode(), "text/plain; version=0.0.4")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet by default
            log.debug("http: " + fmt, *args)

    return Handler


class HTTPService:
    """A threaded HTTP server on (host, port) serving health and/or metrics."""

    def __init__(
        self,
        host: str,
        port: int,
        health: HealthAggregator | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.server = ThreadingHTTPServer((host or "0.0.0.0", port), _handler(health, registry))
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"http-{port}", daemon=True
        )

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> HTTPService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
