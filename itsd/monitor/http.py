"""The HTTP monitoring port: health, Prometheus metrics and a small live dashboard.

Routes:

* ``GET /health``: JSON health; 200 while serving or degraded, 503 otherwise (for load
  balancers and ``curl -f``).
* ``GET /metrics``: Prometheus text format (``itsd_*`` metrics).
* ``GET /api/state``: JSON of health, metrics, streams and traffic, used by the page.
* ``GET /``: the dashboard, a static page that polls ``/api/state`` once a second.

Everything comes from a ``ControlBackend`` (shared-memory counters); this module must
never import a stage or the supervisor, and never serve frame pixels.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from itsd.control.backend import ControlBackend, HealthStatus

log = logging.getLogger("itsd.monitor")

_COUNTERS = {
    "frames_decoded": "Frames decoded and written to the frame rings.",
    "frames_inferred": "Frames that went through the detector.",
    "frames_dropped": "Frames dropped because inference was busy (newest frame wins).",
    "events_published": "Events written to the outputs.",
    "stage_restarts": "Stage processes restarted by the supervisor.",
}
_GAUGES = {
    "decode_fps": "Frames per second decoded, all cameras.",
    "inference_fps": "Frames per second inferred, all cameras.",
    "batch_size_mean": "Mean inference batch size since start.",
    "pipeline_latency_mean_ms": "Mean time from capture to analytics, ms.",
}


class _ItsdCollector(Collector):
    def __init__(self, backend: ControlBackend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Any]:
        health = self.backend.health()
        metrics = self.backend.metrics()
        up = GaugeMetricFamily("itsd_up", "1 while the pipeline serves.")
        up.add_metric([], 1.0 if health.status != HealthStatus.NOT_SERVING else 0.0)
        yield up
        for key, doc in _COUNTERS.items():
            c = CounterMetricFamily(f"itsd_{key}", doc)
            c.add_metric([], float(metrics.counters.get(key, 0.0)))
            yield c
        for key, doc in _GAUGES.items():
            g = GaugeMetricFamily(f"itsd_{key}", doc)
            g.add_metric([], float(metrics.counters.get(key, 0.0)))
            yield g
        cam_frames = CounterMetricFamily(
            "itsd_camera_frames", "Frames per camera and step.", labels=["camera", "step"]
        )
        cam_fps = GaugeMetricFamily(
            "itsd_camera_fps", "Frames per second per camera.", labels=["camera", "direction"]
        )
        for cam, vals in metrics.per_camera.items():
            for step in ("decoded", "inferred", "dropped"):
                cam_frames.add_metric([cam, step], float(vals.get(f"frames_{step}", 0.0)))
            cam_fps.add_metric([cam, "in"], float(vals.get("fps_in", 0.0)))
            cam_fps.add_metric([cam, "out"], float(vals.get("fps_out", 0.0)))
        yield cam_frames
        yield cam_fps
        q_used = GaugeMetricFamily(
            "itsd_ring_used", "Ring occupancy (slots or bytes).", labels=["ring"]
        )
        q_cap = GaugeMetricFamily(
            "itsd_ring_capacity", "Ring capacity (slots or bytes).", labels=["ring"]
        )
        for q in metrics.queues:
            q_used.add_metric([q.name], float(q.used))
            q_cap.add_metric([q.name], float(q.capacity))
        yield q_used
        yield q_cap
        stage_up = GaugeMetricFamily(
            "itsd_stage_running", "1 while a stage runs.", labels=["stage"]
        )
        restarts = CounterMetricFamily(
            "itsd_stage_restarts", "Restarts per stage.", labels=["stage"]
        )
        for st in health.stages:
            stage_up.add_metric([st.name], 1.0 if st.state == "running" else 0.0)
            restarts.add_metric([st.name], float(st.restarts))
        yield stage_up
        yield restarts
        counts = CounterMetricFamily(
            "itsd_line_crossings",
            "Line crossings per camera, line, direction and class.",
            labels=["camera", "line", "direction", "class"],
        )
        for stream in self.backend.list_streams():
            traffic = self.backend.traffic_metrics(stream.camera_id)
            for line, dirs in traffic.line_counts.items():
                for direction, classes in dirs.items():
                    for cls, n in classes.items():
                        counts.add_metric([stream.camera_id, line, direction, cls], float(n))
        yield counts


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

    def __init__(self, backend: ControlBackend, bind: str, port: int) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ItsdCollector(backend))
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
                        self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
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
