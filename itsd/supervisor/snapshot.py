"""Builds the supervisor's ``DaemonState`` from its tables and the shared memory.

Called by the supervisor's loop only (never from another thread): it reads every
stage's cell table (metrics by name), the rings' counters, the stages' info boards and
the analytics board, works out rates against the previous snapshot, each camera's
state, and the daemon's health with the reasons when it is not serving. Rates are
measured over a sliding window of the last ticks (about ``RATE_WINDOW_S``), so a gauge
is right from the first query once frames flow: the first tick that sees frames gives
a rate, with no wait for a fixed window to close.

This module must never import a stage, ``control.servicers`` or ``monitor``, and never
write to shared memory.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from itsd.redact import redact_text, redact_url
from itsd.runtime import metrics as m
from itsd.runtime.metrics import Kind, Sample
from itsd.runtime.service_metrics import CameraRates, ServiceMetrics
from itsd.shm.control import STATE_DRAINING, STATE_RUNNING, STATE_STARTING
from itsd.supervisor.state import CameraView, DaemonState, RingView, StageView

if TYPE_CHECKING:
    from itsd.supervisor.core import CameraEntry, StageHandle, Supervisor

STALE_FRAME_S = 5.0  # a camera with no frame for this long is not connected
RATE_WINDOW_S = 2.0  # rates are measured over about this many seconds of ticks
RATE_MIN_SPAN_S = 0.2  # shorter spans (ticks forced close together) give no rate yet


def _json(board_blob: bytes | None) -> dict[str, Any]:
    if not board_blob:
        return {}
    try:
        data = json.loads(board_blob)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _frozen(obj: Any) -> Any:
    if isinstance(obj, dict):
        return MappingProxyType({k: _frozen(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return tuple(_frozen(v) for v in obj)
    return obj


class Snapshotter:
    """Keeps what rates need between ticks; call it with the supervisor each tick."""

    def __init__(self) -> None:
        self._prev: dict[str, tuple[float, float]] = {}
        self._rate: dict[str, float] = {}
        self._history: dict[str, collections.deque[tuple[float, float]]] = {}
        self._seen: set[str] = set()
        #: Service metrics of the design and the alert rules (``itsd.runtime.service_metrics``).
        self.service = ServiceMetrics()

    def _rate_of(self, key: str, value: float, now: float) -> float:
        """Per-second rate of counter ``value`` over the last ``RATE_WINDOW_S`` of ticks."""
        self._seen.add(key)
        hist = self._history.setdefault(key, collections.deque())
        if hist and value < hist[-1][1]:
            hist.clear()  # the counter started again
        hist.append((now, value))
        # Keep the newest tick at least a window old as the start; drop older ones.
        while len(hist) > 2 and now - hist[1][0] >= RATE_WINDOW_S:
            hist.popleft()
        t0, v0 = hist[0]
        if now - t0 < RATE_MIN_SPAN_S:
            return 0.0
        return max(0.0, value - v0) / (now - t0)

    def _forget_unseen(self) -> None:
        """Drop the history of series not seen this tick (cameras removed)."""
        for key in set(self._history) - self._seen:
            del self._history[key]
        self._seen.clear()

    def _stage_state(self, sup: Supervisor, h: StageHandle) -> str:
        control = sup.control
        if h.given_up:
            return "failed"
        if not h.alive() or control is None:
            return "backoff" if h.next_start_at is not None else "stopped"
        if sup.stopping or h.retired:
            return "stopping"
        if h.abort_sent_at is not None:
            return "stalled"
        state = control.slot(h.slot).state()
        if state == STATE_STARTING:
            return "starting"
        if state == STATE_DRAINING:
            return "stopping"
        return "running" if state == STATE_RUNNING else "stopped"

    def __call__(self, sup: Supervisor) -> DaemonState:
        now_m = time.monotonic()
        now = time.time()
        samples: list[Sample] = []
        stages: list[StageView] = []
        abouts: dict[str, dict[str, Any]] = {}
        for entry in sup.cameras.values():
            try:
                samples.extend(m.read_table(entry.cells))
                about = _json(entry.info.read(timeout=0.01))
            except (OSError, ValueError):
                about = {}
            abouts[f"camera:{entry.config.id}"] = about
        for h in sup.handles():
            try:
                samples.extend(m.read_table(h.cells))
                about = _json(h.info.read(timeout=0.01))
            except (OSError, ValueError):
                about = {}
            abouts[h.name] = about
            pid = h.process.pid if h.process is not None and h.alive() else None
            age = now_m - h.last_beat_change if h.alive() else None
            stages.append(
                StageView(
                    h.name,
                    h.kind,
                    self._stage_state(sup, h),
                    pid,
                    h.total_restarts,
                    age,
                    h.last_exit,
                    h.camera_id,
                    _frozen(about),
                )
            )
        by_series: dict[tuple[str, str], float] = {}
        for smp in samples:
            cam = smp.labels.get("camera", "")
            series_id = (smp.defn.name, cam)
            by_series[series_id] = by_series.get(series_id, 0.0) + smp.value
        traffic: dict[str, Any] = {}
        for shard_board in sup.boards:  # each analytics shard's cameras
            board = _json(shard_board.read(timeout=0.05))
            if isinstance(board.get("cameras"), dict):
                traffic.update(board["cameras"])
        cameras: list[CameraView] = []
        rings: list[RingView] = []
        reasons: list[str] = []
        for entry in sup.cameras.values():
            view, ring = self._camera(sup, entry, by_series, traffic, abouts, now, now_m)
            cameras.append(view)
            rings.append(ring)
            samples.extend(self._camera_samples(view))
            if view.state in ("reconnecting", "failed"):
                # The decoder's message already starts with "camera <id>: "; say it once.
                why = (view.last_error or view.state).removeprefix(f"camera {view.camera_id}: ")
                reasons.append(f"camera {view.camera_id}: {why}")
        for rr in sup.record_rings:
            st = rr.stats()
            name = rr.name.rsplit("-", 1)[-1]
            rings.append(RingView(name, rr.capacity_bytes, rr.used_bytes(), st.put, 0, 0))
            samples.append(Sample(m.RING_RECORDS, MappingProxyType({"ring": name}), float(st.put)))
            samples.append(
                Sample(
                    m.RING_USED,
                    MappingProxyType({"ring": name}),
                    rr.used_bytes() / max(1, rr.capacity_bytes),
                )
            )
        # A lost inference worker whose cameras moved leaves the daemon degraded, not down.
        infer_up = any(sv.kind == "infer" and sv.state == "running" for sv in stages)
        core_down = [
            sv
            for sv in stages
            if sv.kind != "decode"
            and sv.state != "running"
            and not (sv.kind == "infer" and sv.state == "failed" and infer_up)
        ]
        for sv in stages:
            if sv.kind == "decode":
                continue
            if sv.state != "running":
                reasons.append(
                    f"stage {sv.name} is {sv.state}"
                    + (f" ({sv.last_exit})" if sv.last_exit else "")
                )
            err = sv.about.get("error") if isinstance(sv.about, Mapping) else None
            if err:
                reasons.append(f"stage {sv.name}: {err}")
            # A stage that runs degraded (an inference worker whose breaker is open) says why.
            deg = sv.about.get("degraded") if isinstance(sv.about, Mapping) else None
            if deg and sv.state == "running":
                reasons.append(f"stage {sv.name}: {deg}")
        if sup.stopping:
            status = "not_serving"
            reasons.insert(0, "itsd is stopping")
        elif core_down:
            status = "not_serving"
        elif reasons or any(s.state not in ("running", "stopped") for s in stages):
            status = "degraded"
            reasons += [
                f"stage {s.name} is {s.state}"
                for s in stages
                if s.kind == "decode"
                and s.state not in ("running", "stopped", "failed")
                and not any(r.startswith(f"camera {s.camera_id}:") for r in reasons)
            ]
        else:
            status = "serving"
        decoded = sum(c.frames_decoded for c in cameras)
        inferred = sum(c.frames_inferred for c in cameras)
        lat_sum = by_series.get((m.ANALYZE_LATENCY_SUM.name, ""), 0.0)
        analysed = sum(v for (n, _), v in by_series.items() if n == m.ANALYZE_RECORDS.name)
        lat_mean = self._window_mean("latency", lat_sum, analysed, now_m)
        batches = by_series.get((m.INFER_BATCHES.name, ""), 0.0)
        infer_frames = sum(v for (n, _), v in by_series.items() if n == m.INFER_FRAMES.name)
        counters = {
            "frames_decoded": float(decoded),
            "frames_inferred": float(inferred),
            "frames_dropped": float(sum(c.frames_dropped for c in cameras)),
            # Sums of the cameras' rates: a camera that comes or goes does not disturb them.
            "decode_fps": sum(c.fps_in for c in cameras),
            "inference_fps": sum(c.fps_out for c in cameras),
            "batch_size_mean": infer_frames / batches if batches else 0.0,
            "pipeline_latency_mean_ms": lat_mean * 1000,
            # Every event goes to every sink: the busiest sink's count is the events.
            "events_published": max(
                (x.value for x in samples if x.defn is m.PUBLISH_EVENTS), default=0.0
            ),
            "stage_restarts": float(sum(s.restarts for s in stages)),
            "cameras": float(len(cameras)),
        }
        up = 0.0 if status == "not_serving" else 1.0
        samples.append(Sample(m.SUP_UP, MappingProxyType({}), up))
        samples.append(Sample(m.SUP_CAMERAS, MappingProxyType({}), float(len(cameras))))
        samples.append(Sample(m.SUP_LATENCY, MappingProxyType({}), lat_mean))
        for step, ckey in (("decoded", "decode_fps"), ("inferred", "inference_fps")):
            samples.append(Sample(m.SUP_FPS, MappingProxyType({"step": step}), counters[ckey]))
        for sv in stages:
            lab = MappingProxyType({"stage": sv.name})
            samples.append(Sample(m.SUP_RESTARTS, lab, float(sv.restarts)))
            running = 1.0 if sv.state == "running" else 0.0
            samples.append(Sample(m.SUP_STAGE_RUNNING, lab, running))
        for op in ("add", "remove", "update", "move"):
            samples.append(
                Sample(m.SUP_COMMANDS, MappingProxyType({"op": op}), float(sup.op_counts[op]))
            )
        self.service.run_id = sup.run_id
        self.service.shards = sup.shards
        rates = [
            CameraRates(c.camera_id, c.state, c.fps_in, c.fps_out, c.target_fps, c.ring_used)
            for c in cameras
        ]
        queues = []
        for rr in sup.record_rings + sup.command_rings:
            rst = rr.stats()
            queues.append((rr.name.rsplit("-", 1)[-1], rst.put - rst.got))
        derived, alerts = self.service.tick(
            sup.config.alerts, samples, rates, queues, now, now_m, sup.config.gpus
        )
        samples.extend(derived)
        self._forget_unseen()
        infer_about = next((abouts.get(h.name, {}) for h in sup.core if h.kind == "infer"), {})
        return DaemonState(
            taken_at=now,
            started_at=sup.started_wall,
            uptime_s=sup.uptime_s(),
            stopping=sup.stopping,
            status=status,
            reasons=tuple(dict.fromkeys(reasons)),
            backend=str(infer_about.get("backend", "")),
            model=str(infer_about.get("model", sup.model_path.rsplit("/", 1)[-1])),
            stages=tuple(stages),
            cameras=tuple(cameras),
            rings=tuple(rings),
            samples=tuple(s for s in samples if s.defn.exported or s.defn.kind is Kind.STATE),
            counters=MappingProxyType(counters),
            generation=sup.generation,
            alerts=alerts,
            host=self.service.host,
        )

    def _window_mean(self, key: str, total: float, count: float, now: float) -> float:
        """Mean of (total / count) over the last few seconds (0 when nothing moved)."""
        prev = self._prev.get(f"{key}:n")
        if prev is None:
            self._prev[f"{key}:n"] = (now, count)
            self._prev[f"{key}:s"] = (now, total)
            return total / count if count else 0.0
        t0, n0 = prev
        _, s0 = self._prev[f"{key}:s"]
        if now - t0 >= 2.0 and count > n0:
            self._rate[key] = (total - s0) / (count - n0)
            self._prev[f"{key}:n"] = (now, count)
            self._prev[f"{key}:s"] = (now, total)
        return self._rate.get(key, total / count if count else 0.0)

    def _camera(
        self,
        sup: Supervisor,
        entry: CameraEntry,
        series: dict[tuple[str, str], float],
        traffic: dict[str, Any],
        abouts: dict[str, dict[str, Any]],
        now: float,
        now_m: float,
    ) -> tuple[CameraView, RingView]:
        cid = entry.config.id
        h = sup.decoder_handle(entry)
        st = entry.ring.stats()
        decoded = int(series.get((m.DECODE_WRITTEN.name, cid), 0.0))
        reconnects = int(series.get((m.DECODE_RECONNECTS.name, cid), 0.0))
        decode_s = series.get((m.DECODE_TIME.name, cid), 0.0)
        last = series.get((m.DECODE_LAST_FRAME.name, cid), 0.0)
        age = now - last if last else None
        about = abouts.get(f"camera:{cid}", {})
        stage_state = self._stage_state(sup, h)
        src_state = str(about.get("state", ""))
        fresh = age is not None and age < STALE_FRAME_S
        if entry.removing:
            state = "stopped"
        elif src_state == "failed" or (stage_state == "failed" and src_state != "stopped"):
            state = "failed"
        elif src_state == "stopped" or entry.flag(m.DECODE_EOF):
            state = "stopped"
        elif entry.config.push:
            state = "running"  # frames come from clients; between frames it just waits
        elif (
            stage_state == "backoff"
            or src_state in ("reconnecting", "stalled")
            or (not fresh and decoded > 0 and not sup.stopping)
        ):
            state = "reconnecting"
        elif stage_state == "starting" or decoded == 0:
            state = "starting"
        else:
            state = "running"
        last_error = str(about.get("last_error") or "")
        if not last_error and stage_state in ("failed", "backoff") and h.last_exit:
            last_error = f"decode worker {h.name} {h.last_exit}"
        err_at = about.get("last_error_at")
        cfg = entry.config
        data = traffic.get(cid, {}) if isinstance(traffic.get(cid), dict) else {}
        config = cfg.model_dump(mode="json")
        config["source"] = redact_url(cfg.source)
        if cfg.substream:
            config["substream"] = redact_url(cfg.substream)
        view = CameraView(
            camera_id=cid,
            key=entry.key,
            worker=sup.worker_name(entry.worker),
            source=redact_url(cfg.source),
            target_fps=sup.config.camera_fps(cfg),
            priority=cfg.priority,
            origin=entry.origin,
            state=state,
            connected=state == "running" and fresh,
            fps_in=self._rate_of(f"in:{cid}:{entry.key}", decoded, now_m),
            fps_out=self._rate_of(f"out:{cid}:{entry.key}", st.read, now_m),
            frames_decoded=decoded,
            frames_inferred=st.read,
            frames_dropped=st.dropped + st.skipped,
            reconnects=reconnects,
            last_frame_age_s=age,
            last_error=redact_text(last_error),
            last_error_at=float(err_at)
            if isinstance(err_at, (int, float)) and last_error
            else None,
            ring=entry.ring.name,
            ring_slots=entry.ring.slot_count,
            ring_used=entry.ring.pending(),
            line_counts=_frozen(data.get("line_counts", {})),
            vehicles_in_view=int(data.get("vehicles_in_view", 0)),
            config=_frozen(config),
            decoder=h.name,
            source_state=src_state,
            reason=redact_text(str(about.get("reason") or "")),
            stalls=int(series.get((m.DECODE_STALLS.name, cid), 0.0)),
            decode_time_s=decode_s / decoded if decoded else 0.0,
            analytics=sup.shard_name(entry.shard),
        )
        ring = RingView(
            entry.ring.name,
            entry.ring.slot_count,
            entry.ring.pending(),
            st.written,
            st.dropped,
            st.skipped,
            cid,
        )
        return view, ring

    @staticmethod
    def _camera_samples(view: CameraView) -> list[Sample]:
        lab = MappingProxyType({"camera": view.camera_id})
        out = [
            Sample(m.SUP_CAMERA_UP, lab, 1.0 if view.connected else 0.0),
            Sample(
                m.SUP_CAMERA_INFO,
                MappingProxyType(
                    {"camera": view.camera_id, "worker": view.worker, "origin": view.origin}
                ),
                1.0,
            ),
            Sample(m.RING_WRITTEN, lab, float(view.frames_decoded)),
            Sample(m.RING_READ, lab, float(view.frames_inferred)),
            Sample(m.RING_DROPPED, lab, float(view.frames_dropped)),
            Sample(
                m.SUP_CAMERA_FPS,
                MappingProxyType({"camera": view.camera_id, "step": "in"}),
                view.fps_in,
            ),
            Sample(
                m.SUP_CAMERA_FPS,
                MappingProxyType({"camera": view.camera_id, "step": "out"}),
                view.fps_out,
            ),
        ]
        for line, dirs in view.line_counts.items():
            for direction, classes in dirs.items():
                for cls, n in classes.items():
                    out.append(
                        Sample(
                            m.SUP_LINE_CROSSINGS,
                            MappingProxyType(
                                {
                                    "camera": view.camera_id,
                                    "line": line,
                                    "direction": direction,
                                    "class": cls,
                                }
                            ),
                            float(n),
                        )
                    )
        return out
