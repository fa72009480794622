"""The HTTP monitoring port: health, Prometheus metrics, and a live dashboard over SSE.

Routes (GET; HEAD too, with the same status and headers):

* ``/health``: the daemon's health as JSON; 200 while serving or degraded, 503 otherwise
  (load balancers, ``curl -f``).
* ``/ml/health``: the inference side: each inference worker (state, pid, restarts,
  heartbeat, cameras, backend, providers, breaker state when the backend reports one),
  the GPUs through NVML when present (utilisation, memory), the latency percentiles of
  the last minute; 503 when no inference worker runs.
* ``/metrics``: every exported metric of the registry (``itsd.runtime.metrics``) by name
  and help text, several writers of one series added up, histograms with cumulative
  buckets; Prometheus text 0.0.4, or OpenMetrics when asked (``Accept``).
* ``/api/state``: JSON of what the dashboard shows (the same document the stream pushes).
* ``/events``: server-sent events, one ``state`` message a second with that document.
* ``/snapshot/<camera id>``: a JPEG of the camera's newest frame with the boxes, track ids
  and counting lines drawn; rate-limited (see ``SNAPSHOT_PERIOD_S``).
* ``/``: the dashboard (``dashboard.html``: a grid of cameras with paging, counts per line
  and direction, alerts, latency and throughput charts), fed by ``/events``.

Why aiohttp: the port must stay responsive with many slow, idle or long-lived clients
(scrapers, dashboards holding an event stream), and ``http.server`` gave a thread per
connection, a backlog of 5 and no idle timeout. aiohttp is an asyncio server and client
in one well-kept package: one event loop (in one thread of the supervisor) serves every
connection, connections idle for ``IDLE_TIMEOUT_S`` are closed (also those that never
send a request), the listen backlog is ``BACKLOG``, a stream costs a queue rather than
a thread, and HEAD is answered for every GET route. Starlette would need uvicorn beside
it for the same (two packages, a server with its own signal handling that must be kept
off the supervisor's signals); aiohttp runs inside an existing thread with ``AppRunner``.

Security (``security:`` of the configuration, the same as the gRPC API's): with TLS
files the port serves HTTPS (client certificates required when ``tls_client_ca`` is
set); with tokens every route but ``/health`` needs a read (or admin) token, as
``Authorization: Bearer <token>`` (Prometheus' ``authorization`` scrape setting) or, for
the dashboard in a browser (an ``EventSource`` cannot send headers), in the
``itsd_token`` cookie the page's token form sets. Refusals are 401 (no or unknown token)
with ``WWW-Authenticate: Bearer``; a token is never logged or echoed.

What it reads: the health and the state come from a ``ControlBackend`` and from the
supervisor's immutable state snapshot (``DaemonState``: one reference read per request,
never a stage, a process object or a lock). Pixels for a snapshot are copied from the
camera's frame ring with ``FrameRing.peek`` (read-only; the ring's reader and writer are
never disturbed), on one worker thread, at most once per camera per
``SNAPSHOT_PERIOD_S``, and drawn with the boxes of the last frame analytics published
from the detections board (``itsd-<run>-board-detections``, analytics' boxes of each
camera's frames of the last two seconds), on the frame they were found in (see
``_Snapshots``; the frame ids are in ``X-Frame-Id`` and ``X-Boxes-Frame-Id``).

This module must never import a stage, an engine or the supervisor, never write to shared
memory, and never block the supervisor's loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from itsd.control.auth import Scope, TokenTable, check_bearer
from itsd.control.backend import ControlBackend, HealthStatus
from itsd.runtime import metrics as m
from itsd.runtime.metrics import REGISTRY, HistogramValue, Kind, Sample, merge_histograms

log = logging.getLogger("itsd.monitor")

IDLE_TIMEOUT_S = 30.0  # an idle connection (or one that never sends a request) is closed
BACKLOG = 512
PUSH_PERIOD_S = 1.0  # one state message a second on /events
HISTORY_S = 600.0  # the charts' span: the last ten minutes
MAX_STREAMS = 64  # event streams open at once; more get 503
SNAPSHOT_PERIOD_S = 1.0  # at most one new JPEG per camera per period
SNAPSHOT_MAX_SIDE = 960  # snapshots are scaled down to this width or height
HELD_MAX_S = 10.0  # a frame held for the next snapshot longer than this is dropped
JPEG_QUALITY = 75


class _ItsdCollector(Collector):
    """Every exported metric of the registry, with the samples the daemon has now."""

    def __init__(self, samples: Callable[[], Sequence[Sample]]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Any]:
        by_name: dict[str, dict[tuple[str, ...], float]] = {}
        samples = list(self.samples())
        hists: dict[str, list[HistogramValue]] = {}
        for h in merge_histograms(samples):
            hists.setdefault(h.defn.name, []).append(h)
        for s in samples:
            if s.part:
                continue
            labels = tuple(str(s.labels.get(k, "")) for k in s.defn.labels)
            series = by_name.setdefault(s.defn.name, {})
            # Several writers of one series (inference workers) add up.
            series[labels] = series.get(labels, 0.0) + float(s.value)
        for name in sorted(REGISTRY):
            defn = REGISTRY[name]
            if not defn.exported:
                continue
            label_names = list(defn.labels)
            if defn.kind is Kind.HISTOGRAM:
                hfam = HistogramMetricFamily(name, defn.help, labels=label_names)
                for h in hists.get(name, ()):
                    les = [repr(float(b)) for b in defn.buckets] + ["+Inf"]
                    hfam.add_metric(
                        [str(h.labels.get(k, "")) for k in label_names],
                        list(zip(les, h.cumulative, strict=True)),
                        h.sum,
                    )
                yield hfam
                continue
            fam: CounterMetricFamily | GaugeMetricFamily
            if defn.kind is Kind.COUNTER:
                fam = CounterMetricFamily(name, defn.help, labels=label_names)
            else:
                fam = GaugeMetricFamily(name, defn.help, labels=label_names)
            for values, value in by_name.get(name, {}).items():
                fam.add_metric(list(values), value)
            yield fam


def _plain(obj: Any) -> Any:
    """Read-only mappings and tuples of a snapshot as JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(_plain(obj), separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def state_json(backend: ControlBackend, state: Any = None) -> dict[str, Any]:
    """Everything the dashboard shows, as plain JSON (without the charts' history)."""
    health = dataclasses.asdict(backend.health())
    metrics = dataclasses.asdict(backend.metrics())
    out: dict[str, Any] = {"health": health, "counters": metrics["counters"], "metrics": metrics}
    if state is None:
        streams = backend.list_streams()
        out["cameras"] = [
            {
                "camera_id": s.camera_id,
                "state": s.state,
                **metrics["per_camera"].get(s.camera_id, {}),
            }
            for s in streams
        ]
        out["alerts"] = {"active": [], "recent": []}
        return out
    cams = []
    for c in state.cameras:
        lines = [
            {"id": ln.get("id"), "start": ln.get("start"), "end": ln.get("end")}
            for ln in _plain(c.config).get("lines", [])
        ]
        cams.append(
            {
                "camera_id": c.camera_id,
                "source": c.source,  # credentials replaced by ***
                "state": c.state,
                "connected": c.connected,
                "fps_in": c.fps_in,
                "fps_out": c.fps_out,
                "target_fps": c.target_fps,
                "frames_decoded": c.frames_decoded,
                "frames_dropped": c.frames_dropped,
                "vehicles_in_view": c.vehicles_in_view,
                "line_counts": _plain(c.line_counts),
                "lines": lines,
                "worker": c.worker,
                "decoder": c.decoder,
                "analytics": c.analytics,
                "source_state": c.source_state,
                "reason": c.reason,
                "last_error": c.last_error,
                "frames_inferred": c.frames_inferred,
            }
        )
    out["cameras"] = cams
    out["alerts"] = {
        "active": _plain(state.alerts.active),
        "recent": _plain(state.alerts.recent[-20:])[::-1],
    }
    out["gpus"] = _plain(state.host.gpus)
    out["memory_used_ratio"] = state.host.memory_used_ratio
    return out


def ml_health(state: Any) -> tuple[int, dict[str, Any]]:
    """The ``/ml/health`` document and its status code."""
    workers = []
    running = 0
    degraded = []
    for s in state.stages:
        if s.kind != "infer":
            continue
        about = _plain(s.about)
        cams = sum(1 for c in state.cameras if c.worker == s.name)
        breaker = about.get("breaker")
        workers.append(
            {
                "name": s.name,
                "state": s.state,
                "pid": s.pid,
                "restarts": s.restarts,
                "heartbeat_age_s": s.heartbeat_age_s,
                "cameras": cams,
                "backend": about.get("backend", ""),
                "model": about.get("model", ""),
                "providers": about.get("providers", []),
                "breaker": breaker,
                "last_exit": s.last_exit,
            }
        )
        if s.state == "running":
            running += 1
        else:
            degraded.append(f"inference worker {s.name} is {s.state}")
        b_state = breaker.get("state") if isinstance(breaker, dict) else breaker
        if b_state not in (None, "", "closed"):
            degraded.append(f"inference worker {s.name}: breaker {b_state}")
    latency = {}
    for h in merge_histograms(state.samples):
        if h.defn is m.ML_INFER_LATENCY and h.count:
            latency = {f"p{int(q * 100)}_ms": h.quantile(q) * 1000 for q in (0.5, 0.95, 0.99)}
            latency["mean_ms"] = h.sum / h.count * 1000
            latency["batches"] = h.count
    if running == 0 or state.status == "not_serving":
        status = "not_serving"
        degraded.insert(
            0, "no inference worker is running" if running == 0 else "itsd is not serving"
        )
    else:
        status = "degraded" if degraded else "serving"
    doc = {
        "status": status,
        "reasons": degraded,
        "backend": state.backend,
        "model": state.model,
        "workers": workers,
        "inference_fps": state.counters.get("inference_fps", 0.0),
        "latency_since_start": latency,
        "gpus": [
            {
                "index": g.index,
                "in_use": any(
                    x.defn is m.GPU_UTILIZATION and x.labels.get("gpu") == str(g.index)
                    for x in state.samples
                ),
                "name": g.name,
                "utilization_percent": g.utilization,
                "memory_used_bytes": g.memory_used,
                "memory_total_bytes": g.memory_total,
            }
            for g in state.host.gpus
        ],
        "nvml": state.host.nvml_error or ("ok" if state.host.gpus else ""),
        "alerts": [a for a in _plain(state.alerts.active) if a["state"] == "firing"],
    }
    return (503 if status == "not_serving" else 200), doc


class _Charts:
    """The charts' history: inference latency (p95 of each period) and throughput."""

    def __init__(self) -> None:
        self.points: collections.deque[tuple[float, float | None, float | None, float]] = (
            collections.deque()
        )
        self._prev: HistogramValue | None = None

    def add(self, state: Any, now: float) -> None:
        p95 = None
        for h in merge_histograms(state.samples):
            if h.defn is m.ML_INFER_LATENCY:
                q = h.minus(self._prev).quantile(0.95)
                p95 = None if math.isnan(q) else round(q * 1000, 2)
                self._prev = h
        total = state.counters.get("pipeline_latency_mean_ms")
        fps = float(state.counters.get("inference_fps", 0.0))
        self.points.append((round(now, 1), p95, round(total, 1) if total else None, round(fps, 2)))
        while self.points and now - self.points[0][0] > HISTORY_S:
            self.points.popleft()

    def doc(self) -> dict[str, list[Any]]:
        t, lat, total, fps = (
            (list(x) for x in zip(*self.points, strict=True)) if self.points else ([], [], [], [])
        )
        return {"t": t, "latency_p95_ms": lat, "processing_ms": total, "fps": fps}


class _Snapshots:
    """JPEG snapshots of cameras' frame rings, on one worker thread, rate-limited.

    Boxes must be drawn on the frame they were found in, but analytics finishes a frame
    a moment after the ring has moved on to newer ones. So each render peeks the newest
    frame and *holds* it (scaled down), and draws the frame held at the previous render,
    whose boxes the detections board has by then; the picture is about one period old,
    and exact. The first render of a camera, or a frame the board no longer has, is drawn
    with the boxes of the nearest frame, and says so on the picture.
    """

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="itsd-snap")
        self.rings: dict[str, tuple[str, Any]] = {}  # camera id -> (ring name, FrameRing)
        self.held: dict[str, tuple[float, int, Any]] = {}  # camera -> (time, frame id, image)
        self.cache: dict[str, tuple[float, bytes, dict[str, str]]] = {}
        self.pending: dict[str, asyncio.Future[tuple[bytes, dict[str, str]] | None]] = {}
        self._boards: list[Any] = []  # one detections board per analytics shard
        self._board_name = ""
        self._boxes: dict[str, Any] = {}
        self._boxes_at = -1e9

    def _ring(self, camera_id: str, ring_name: str) -> Any:
        from itsd.shm.frame_ring import FrameRing

        held = self.rings.get(camera_id)
        if held is not None and held[0] == ring_name:
            return held[1]
        if held is not None:
            held[1].close()
        ring = FrameRing.attach(ring_name, populate=False)
        self.rings[camera_id] = (ring_name, ring)
        return ring

    def _frames(self, ring_name: str, camera_id: str) -> dict[int, list[Any]]:
        """The detections board's frames of one camera, by frame id (parsed at most 4x/s)."""
        from itsd.runtime.service_metrics import detections_board_name
        from itsd.shm.board import Board
        from itsd.shm.segments import parse_segment_name

        parsed = parse_segment_name(ring_name)
        if parsed is None:
            return {}
        name = detections_board_name(parsed.run_id)
        now = time.monotonic()
        if name != self._board_name or now - self._boxes_at >= 0.25:
            self._boxes_at = now
            if name != self._board_name or not self._boards:
                for b in self._boards:
                    b.close()
                self._boards, self._board_name = [], name
                for shard in range(64):  # shard 0's board, then the others' while they exist
                    try:
                        self._boards.append(
                            Board.attach(detections_board_name(parsed.run_id, shard))
                        )
                    except (OSError, ValueError):
                        break
                if not self._boards:
                    self._boxes = {}
                    return {}
            self._boxes = {}
            for board in self._boards:
                blob = board.read(timeout=0.02)
                try:
                    data = json.loads(blob) if blob else {}
                except ValueError:
                    data = {}
                cams = data.get("cameras") if isinstance(data, dict) else None
                if isinstance(cams, dict):
                    self._boxes.update(cams)
        out: dict[int, list[Any]] = {}
        for entry in self._boxes.get(camera_id) or ():
            if isinstance(entry, list) and len(entry) == 4:
                out[int(entry[0])] = entry
        return out

    def forget(self, keep: set[str]) -> None:
        """Let go of the rings of cameras no longer registered, and of frames held for
        cameras nobody looked at lately (on the worker thread)."""
        for cid in [c for c in self.rings if c not in keep]:
            self.rings.pop(cid)[1].close()
            self.cache.pop(cid, None)
            self.held.pop(cid, None)
        now = time.monotonic()
        for cid in [c for c, h in self.held.items() if now - h[0] > HELD_MAX_S]:
            del self.held[cid]

    def render(
        self, camera_id: str, ring_name: str, lines: list[dict[str, Any]]
    ) -> tuple[bytes, dict[str, str]] | None:
        """Peek, draw and encode (on the worker thread)."""
        import cv2

        from itsd.monitor.draw import draw_snapshot, prepare

        ring = self._ring(camera_id, ring_name)
        now = time.monotonic()
        newest = ring.peek(taken=True)  # a frame inference took: its boxes will come
        frames = self._frames(ring_name, camera_id)
        held = self.held.pop(camera_id, None)
        if held is not None and now - held[0] > HELD_MAX_S:
            held = None
        current = (now, newest.frame_id, prepare(newest, SNAPSHOT_MAX_SIDE)) if newest else None
        choice = None
        for cand in (held, current):
            if cand is not None and cand[1] in frames:
                choice = cand
                break
        exact = choice is not None
        if choice is None:
            choice = current or held
        if current is not None and not (exact and current is choice):
            self.held[camera_id] = current  # drawn next time, once its boxes are out
        if choice is None:
            return None
        _, frame_id, image = choice
        det = frames.get(frame_id)
        if det is None and frames:
            det = frames[min(frames, key=lambda f: abs(f - frame_id))]
        img = draw_snapshot(image.copy(), frame_id, det, lines)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return None
        headers = {"X-Frame-Id": str(frame_id)}
        if det is not None:
            headers["X-Boxes-Frame-Id"] = str(det[0])
        return bytes(jpg), headers

    def close(self) -> None:
        def shut() -> None:
            for _, ring in self.rings.values():
                ring.close()
            self.rings.clear()
            self.held.clear()
            for b in self._boards:
                b.close()
            self._boards = []

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.pool.submit(shut).result(timeout=5)
        self.pool.shutdown(wait=False)


TOKEN_COOKIE = "itsd_token"
_LOGIN_PAGE = b"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>itsd</title></head><body style="font:14px system-ui;margin:2em">
<h1 style="font-size:1.2em">itsd</h1>
<p>This dashboard needs a read token.</p><form id="f"><input id="t" type="password" size="40"
autocomplete="off" placeholder="token"> <button>open</button></form><script>
document.getElementById("f").onsubmit = e => { e.preventDefault();
  document.cookie = "itsd_token=" + encodeURIComponent(document.getElementById("t").value) +
    "; path=/; SameSite=Strict" + (location.protocol === "https:" ? "; Secure" : "");
  location.reload(); };
</script></body></html>"""


def server_ssl_context(security: Any) -> ssl.SSLContext | None:
    """TLS for the port from ``security`` (None without ``tls_cert``); OSError or
    ssl.SSLError naming the file when it cannot be loaded."""
    if security is None or security.tls_cert is None or security.tls_key is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(security.tls_cert), str(security.tls_key))
    except (OSError, ssl.SSLError) as err:
        raise OSError(
            f"security.tls_cert/tls_key: cannot load {security.tls_cert}: {err}"
        ) from None
    if security.tls_client_ca is not None:
        try:
            ctx.load_verify_locations(str(security.tls_client_ca))
        except (OSError, ssl.SSLError) as err:
            raise OSError(
                f"security.tls_client_ca: cannot load {security.tls_client_ca}: {err}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class MonitorServer:
    """The HTTP server: an aiohttp application on its own event loop, in a daemon thread."""

    def __init__(
        self,
        backend: ControlBackend,
        bind: str,
        port: int,
        samples: Callable[[], Sequence[Sample]] = tuple,
        state: Callable[[], Any] | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        tokens: TokenTable | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.backend = backend
        self.tokens = tokens or TokenTable()
        self.ssl_context = ssl_context
        self.samples = samples
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ItsdCollector(samples))
        self.page = resources.files("itsd.monitor").joinpath("dashboard.html").read_bytes()
        self.charts = _Charts()
        self.snapshots = _Snapshots()
        self.streams: set[asyncio.Queue[bytes | None]] = set()
        self._latest: bytes = b""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._pusher: asyncio.Task[None] | None = None
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run,
            args=(bind, port, idle_timeout_s, started),
            name="itsd-http",
            daemon=True,
        )
        self._thread.start()
        try:
            self.port = started.result(timeout=30)
        except OSError as err:
            self._thread.join(timeout=5)
            raise OSError(
                f"cannot bind the monitoring port on {bind}:{port}: {err.strerror or err}"
            ) from None

    # -- the loop --------------------------------------------------------------------------
    def _run(
        self, bind: str, port: int, idle: float, started: concurrent.futures.Future[int]
    ) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            bound = self._loop.run_until_complete(self._start(bind, port, idle))
        except OSError as err:
            started.set_exception(err)
            self._loop.close()
            return
        started.set_result(bound)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _start(self, bind: str, port: int, idle: float) -> int:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/health", self._health)
        app.router.add_get("/ml/health", self._ml_health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_get("/events", self._events)
        app.router.add_get("/snapshot/{camera}", self._snapshot)
        app.router.add_get("/", self._page)
        app.router.add_get("/index.html", self._page)
        self._runner = web.AppRunner(
            app, keepalive_timeout=idle, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            bind,
            port,
            backlog=BACKLOG,
            reuse_address=True,
            ssl_context=self.ssl_context,
        )
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self._pusher = asyncio.create_task(self._push_loop())
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    def stop(self) -> None:
        """Close the event streams and the listener, and stop the thread."""

        async def shutdown() -> None:
            for q in list(self.streams):
                while q.full():
                    q.get_nowait()
                q.put_nowait(None)  # the stream ends
            if self._pusher is not None:
                self._pusher.cancel()
            if self._runner is not None:
                await self._runner.cleanup()

        if self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
            try:
                fut.result(timeout=5)
            except (concurrent.futures.TimeoutError, Exception) as err:  # never block a stop
                log.warning("monitoring port did not stop cleanly: %s", err)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self.snapshots.close()

    # -- documents -------------------------------------------------------------------------
    def _state_doc(self) -> dict[str, Any]:
        st = self.state() if self.state is not None else None
        doc = state_json(self.backend, st)
        doc["charts"] = self.charts.doc()
        doc["taken_at"] = time.time()
        return doc

    async def _push_loop(self) -> None:
        while True:
            try:
                now = time.time()
                if self.state is not None:
                    st = self.state()
                    self.charts.add(st, now)
                    keep = {c.camera_id for c in st.cameras}
                    if set(self.snapshots.rings) - keep or self.snapshots.held:
                        self.snapshots.pool.submit(self.snapshots.forget, keep)
                if self.streams:
                    body = json.dumps(_plain(self._state_doc()), separators=(",", ":"))
                    msg = f"event: state\ndata: {body}\n\n".encode()
                    for q in list(self.streams):
                        while q.full():  # a slow client gets the newest state, not a backlog
                            q.get_nowait()
                        q.put_nowait(msg)
            except asyncio.CancelledError:
                raise
            except Exception:  # the push must go on whatever one state holds
                log.exception("building the dashboard state failed")
            await asyncio.sleep(PUSH_PERIOD_S)

    # -- handlers --------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Tokens (when configured): every route but /health needs a read token."""
        if not self.tokens.enabled or request.path == "/health":
            resp: web.StreamResponse = await handler(request)
            return resp
        auth = request.headers.get("Authorization")
        cookie = request.cookies.get(TOKEN_COOKIE)
        if not auth and cookie:
            auth = f"Bearer {cookie}"
        verdict = check_bearer(self.tokens, auth, Scope.READ)
        if verdict.ok:
            resp = await handler(request)
            return resp
        code = 403 if verdict.reason == "permission_denied" else 401
        log.info("monitoring: %s refused (%s)", request.path, verdict.reason)
        if request.path in ("/", "/index.html"):
            return web.Response(
                body=_LOGIN_PAGE, status=code, content_type="text/html", charset="utf-8"
            )
        return web.Response(
            text=verdict.message + "\n",
            status=code,
            headers={"WWW-Authenticate": 'Bearer realm="itsd"'},
        )

    async def _health(self, request: web.Request) -> web.Response:
        h = self.backend.health()
        return _json(dataclasses.asdict(h), 503 if h.status == HealthStatus.NOT_SERVING else 200)

    async def _ml_health(self, request: web.Request) -> web.Response:
        if self.state is None:
            return _json({"status": "not_serving", "reasons": ["no daemon state"]}, 503)
        code, doc = ml_health(self.state())
        return _json(doc, code)

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, ctype = choose_encoder(request.headers.get("Accept", ""))
        # Encoding thousands of series takes a while: off the loop, so /health and the
        # event streams are served meanwhile.
        body = await asyncio.get_running_loop().run_in_executor(None, encoder, self.registry)
        resp = web.Response(body=body, headers={"Content-Type": ctype, "Cache-Control": "no-store"})
        return resp

    async def _api_state(self, request: web.Request) -> web.Response:
        return _json(self._state_doc())

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.page,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if len(self.streams) >= MAX_STREAMS:
            return web.Response(status=503, text=f"at most {MAX_STREAMS} event streams\n")
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        q: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=2)
        self.streams.add(q)
        try:
            first = json.dumps(_plain(self._state_doc()), separators=(",", ":"))
            await resp.write(f"retry: 2000\nevent: state\ndata: {first}\n\n".encode())
            while True:
                try:
                    msg = await asyncio.wait_for(q.get(), timeout=15.0)
                except TimeoutError:
                    msg = b": keep-alive\n\n"
                if msg is None:
                    break
                await resp.write(msg)
        except ConnectionResetError:  # the client left
            pass
        finally:
            self.streams.discard(q)
        return resp

    async def _snapshot(self, request: web.Request) -> web.Response:
        cid = request.match_info["camera"].removesuffix(".jpg")
        if self.state is None:
            return web.Response(status=503, text="no daemon state\n")
        st = self.state()
        cam = next((c for c in st.cameras if c.camera_id == cid), None)
        if cam is None or not cam.ring:
            return web.Response(status=404, text="no such camera\n")
        now = time.monotonic()
        cached = self.snapshots.cache.get(cid)
        if cached is None or now - cached[0] >= SNAPSHOT_PERIOD_S:
            fut = self.snapshots.pending.get(cid)
            if fut is None:
                lines = [
                    {"id": ln.get("id"), "start": ln.get("start"), "end": ln.get("end")}
                    for ln in _plain(cam.config).get("lines", [])
                ]
                loop = asyncio.get_running_loop()
                fut = loop.run_in_executor(
                    self.snapshots.pool,
                    self.snapshots.render,
                    cid,
                    cam.ring,
                    lines,
                )
                self.snapshots.pending[cid] = fut
            try:
                result = await fut
            except (OSError, ValueError) as err:
                log.debug("snapshot of %s: %s", cid, err)
                result = None
            finally:
                self.snapshots.pending.pop(cid, None)
            if result is None:
                if cached is None:
                    return web.Response(status=404, text="no frame yet\n")
            else:
                cached = (now, result[0], result[1])
                self.snapshots.cache[cid] = cached
        assert cached is not None
        return web.Response(
            body=cached[1],
            content_type="image/jpeg",
            headers={**cached[2], "Cache-Control": "no-store"},
        )
