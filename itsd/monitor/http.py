"""The HTTP monitoring port: health, Prometheus metrics and a small live dashboard.

Routes:

* ``GET /health``: JSON health; 200 while serving or degraded, 503 otherwise (for load
  balancers and ``curl -f``).
* ``GET /metrics``: every exported metric of the registry (``itsd.runtime.metrics``), by
  name and help text, with the daemon's samples: Prometheus text format 0.0.4, or
  OpenMetrics when the scraper asks for it (``Accept: application/openmetrics-text``;
  prometheus_client's ``choose_encoder`` picks the format, as its own server does).
* ``GET /api/state``: JSON of health, metrics, streams and traffic, used by the page.
* ``GET /``: the dashboard, a static page that polls ``/api/state`` once a second.

Everything comes from a ``ControlBackend`` and the samples of the supervisor's state
snapshot; this module must never import a stage or the supervisor, and never serve
frame pixels.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from itsd.control.backend import ControlBackend, HealthStatus
from itsd.runtime.metrics import REGISTRY, Kind, Sample

log = logging.getLogger("itsd.monitor")


class _ItsdCollector(Collector):
    """Every exported metric of the registry, with the samples the daemon has now."""

    def __init__(self, samples: Callable[[], Sequence[Sample]]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Any]:
        by_name: dict[str, list[Sample]] = {}
        for s in self.samples():
            by_name.setdefault(s.defn.name, []).append(s)
        for name in sorted(REGISTRY):
            defn = REGISTRY[name]
            if not defn.exported:
                continue
            labels = list(defn.labels)
            fam: CounterMetricFamily | GaugeMetricFamily
            if defn.kind is Kind.COUNTER:
                fam = CounterMetricFamily(name, defn.help, labels=labels)
            else:
                fam = GaugeMetricFamily(name, defn.help, labels=labels)
            for s in by_name.get(name, ()):
                fam.add_metric([str(s.labels.get(k, "")) for k in labels], float(s.value))
            yield fam


def state_json(backend: ControlBackend) -> dict[str, Any]:
    """Everything the dashboard shows, as plain JSON."""
    streams = backend.list_streams()
    return {
        "health": dataclasses.asdict(backend.health()),
        "metrics": dataclasses.asdict(backend.metrics()),
        "streams": [dataclasses.asdict(s) for s in streams],
        "traffic": [dataclasses.asdict(backend.traffic_metrics(s.camera_id)) for s in streams],
    }


class MonitorServer:
    """The HTTP server, run in a daemon thread."""

    def __init__(
        self,
        backend: ControlBackend,
        bind: str,
        port: int,
        samples: Callable[[], Sequence[Sample]] = tuple,
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ItsdCollector(samples))
        page = resources.files("itsd.monitor").joinpath("dashboard.html").read_bytes()

        class Handler(BaseHTTPRequestHandler):
            server_version = "itsd"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/health":
                        h = backend.health()
                        code = 503 if h.status == HealthStatus.NOT_SERVING else 200
                        self._send(
                            code, json.dumps(dataclasses.asdict(h)).encode(), "application/json"
                        )
                    elif path == "/metrics":
                        encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                        self._send(200, encoder(registry), ctype)
                    elif path == "/api/state":
                        self._send(
                            200, json.dumps(state_json(backend)).encode(), "application/json"
                        )
                    elif path in ("/", "/index.html"):
                        self._send(200, page, "text/html; charset=utf-8")
                    else:
                        self._send(404, b"not found\n", "text/plain")
                except Exception:
                    log.exception("monitoring request %s failed", path)
                    self._send(500, b"internal error\n", "text/plain")

        try:
            self.httpd = ThreadingHTTPServer((bind, port), Handler)
        except OSError as err:
            raise OSError(
                f"cannot bind the monitoring port on {bind}:{port}: {err.strerror}"
            ) from None
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="itsd-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
