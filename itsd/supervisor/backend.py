"""The supervisor's answer to the control API and the monitoring port.

Implements ``itsd.control.backend.ControlBackend`` from what the supervisor can see
without asking a stage: the control block (heartbeats, states, counters), the rings'
own counters, the analytics board (line counts, vehicles in view) and the supervisor's
table of stage processes. Every method reads shared memory and returns in microseconds;
none waits on a stage.

This module must never import a stage module, and never write to shared memory.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

from itsd import __version__
from itsd.control.backend import (
    CameraHealth,
    HealthSnapshot,
    HealthStatus,
    MetricsSnapshot,
    NotSupportedError,
    QueueStat,
    StageHealth,
    StageState,
    StreamInfo,
    StreamState,
    TrafficSnapshot,
)
from itsd.shm.control import STATE_DRAINING, STATE_RUNNING, STATE_STARTING
from itsd.stages.runtime import (
    C_BATCHES,
    C_EOF,
    C_IN,
    C_LAST_WALL_MS,
    C_LATENCY_N,
    C_LATENCY_US_SUM,
    C_OUT,
    C_RECONNECTS,
)

if TYPE_CHECKING:
    from itsd.supervisor.core import StageHandle, Supervisor

RATE_WINDOW_S = 2.0


class _Rates:
    """Per-key rates from counter samples at least RATE_WINDOW_S apart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prev: dict[str, tuple[float, int]] = {}
        self._rate: dict[str, float] = {}

    def update(self, key: str, value: int, now: float) -> float:
        with self._lock:
            prev = self._prev.get(key)
            if prev is None:
                self._prev[key] = (now, value)
                return 0.0
            t0, v0 = prev
            if now - t0 >= RATE_WINDOW_S:
                self._rate[key] = max(0, value - v0) / (now - t0)
                self._prev[key] = (now, value)
            return self._rate.get(key, 0.0)


class SupervisorBackend:
    """ControlBackend over a running Supervisor."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self._rates = _Rates()

    # -- helpers ----------------------------------------------------------------------
    def _counter(self, h: StageHandle, idx: int) -> int:
        control = self.sup.control
        return 0 if control is None else control.slot(h.spec.slot).get(idx)

    def _handles(self, kind: str) -> list[StageHandle]:
        return [h for h in self.sup.handles if h.spec.kind == kind]

    def _decoder(self, camera_id: str) -> StageHandle:
        for h in self._handles("decode"):
            if h.name == f"decode:{camera_id}":
                return h
        raise KeyError(f"unknown camera {camera_id!r}")

    def _stage_state(self, h: StageHandle) -> str:
        control = self.sup.control
        if h.given_up:
            return StageState.FAILED
        if h.finished:
            return StageState.STOPPED
        if not h.alive() or control is None:
            return StageState.BACKOFF if h.next_start_at is not None else StageState.STOPPED
        if self.sup.stopping:
            return StageState.STOPPING
        if h.abort_sent_at is not None:
            return StageState.STALLED
        state = control.slot(h.spec.slot).state()
        if state == STATE_STARTING:
            return StageState.STARTING
        if state == STATE_DRAINING:
            return StageState.STOPPING
        return StageState.RUNNING if state == STATE_RUNNING else StageState.STOPPED

    def _backend_name(self) -> str:
        backend = self.sup.config.model.backend
        if backend != "auto":
            return backend
        suffix = self.sup.model_path.rsplit(".", 1)[-1]
        return {"onnx": "onnxruntime", "pt": "torch", "engine": "tensorrt"}.get(suffix, backend)

    def _board(self) -> dict[str, Any]:
        board = self.sup.board
        blob = board.read() if board is not None else None
        if not blob:
            return {}
        try:
            data = json.loads(blob)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    # -- ControlBackend ----------------------------------------------------------------
    def health(self) -> HealthSnapshot:
        """Overall health and each stage's."""
        now = time.monotonic()
        stages = []
        states = []
        for h in self.sup.handles:
            st = self._stage_state(h)
            states.append((h, st))
            pid = h.process.pid if h.process is not None and h.alive() else None
            age = now - h.last_beat_change if h.alive() else None
            stages.append(StageHealth(h.name, pid, st, h.total_restarts, age, h.last_exit))
        core_down = any(st != StageState.RUNNING for h, st in states if h.spec.kind != "decode")
        if self.sup.stopping or core_down:
            status = HealthStatus.NOT_SERVING
        elif any(st not in (StageState.RUNNING, StageState.STOPPED) for _, st in states):
            status = HealthStatus.DEGRADED
        else:
            status = HealthStatus.SERVING
        model = self.sup.model_path.rsplit("/", 1)[-1]
        return HealthSnapshot(
            status=status,
            version=__version__,
            uptime_s=self.sup.uptime_s(),
            backend=self._backend_name(),
            model=model,
            stages=stages,
        )

    def metrics(self) -> MetricsSnapshot:
        """Counters, rates and ring states."""
        now = time.monotonic()
        cams = self.sup.config.cameras
        decoders = self._handles("decode")
        infer = self._handles("infer")
        analyze = self._handles("analyze")
        per_camera: dict[str, dict[str, float]] = {}
        queues: list[QueueStat] = []
        for i, ring in enumerate(self.sup.frame_rings):
            cam = cams[i]
            st = ring.stats()
            queues.append(
                QueueStat(
                    name=ring.name,
                    capacity=ring.slot_count,
                    used=ring.pending(),
                    written=st.written,
                    dropped=st.dropped,
                    skipped=st.skipped,
                    camera_id=cam.id,
                )
            )
            decoded = self._counter(decoders[i], C_OUT) if i < len(decoders) else 0
            per_camera[cam.id] = {
                "frames_decoded": decoded,
                "frames_inferred": st.read,
                "frames_dropped": st.dropped + st.skipped,
                "fps_in": self._rates.update(f"in:{cam.id}", decoded, now),
                "fps_out": self._rates.update(f"out:{cam.id}", st.read, now),
            }
        for rring in self.sup.record_rings:
            rst = rring.stats()
            queues.append(
                QueueStat(
                    name=rring.name,
                    capacity=rring.capacity_bytes,
                    used=rring.used_bytes(),
                    written=rst.put,
                    dropped=0,
                    skipped=0,
                )
            )
        decoded_all = sum(int(v["frames_decoded"]) for v in per_camera.values())
        inferred = sum(self._counter(h, C_IN) for h in infer)
        batches = sum(self._counter(h, C_BATCHES) for h in infer)
        lat_sum = sum(self._counter(h, C_LATENCY_US_SUM) for h in analyze)
        lat_n = sum(self._counter(h, C_LATENCY_N) for h in analyze)
        counters: dict[str, float] = {
            "frames_decoded": decoded_all,
            "frames_inferred": inferred,
            "frames_dropped": sum(v["frames_dropped"] for v in per_camera.values()),
            "decode_fps": self._rates.update("decoded", decoded_all, now),
            "inference_fps": self._rates.update("inferred", inferred, now),
            "batch_size_mean": inferred / batches if batches else 0.0,
            "pipeline_latency_mean_ms": lat_sum / lat_n / 1000 if lat_n else 0.0,
            "events_published": sum(self._counter(h, C_OUT) for h in self._handles("publish")),
            "stage_restarts": sum(h.total_restarts for h in self.sup.handles),
        }
        return MetricsSnapshot(counters=counters, per_camera=per_camera, queues=queues)

    def list_streams(self) -> list[StreamInfo]:
        """Every configured camera."""
        return [self._stream(cam.id) for cam in self.sup.config.cameras]

    def _stream(self, camera_id: str) -> StreamInfo:
        cfg = self.sup.config
        cam = next(c for c in cfg.cameras if c.id == camera_id)
        h = self._decoder(camera_id)
        st = self._stage_state(h)
        if st == StageState.FAILED:
            state = StreamState.FAILED
        elif st in (StageState.STOPPED, StageState.STOPPING):
            state = StreamState.STOPPED
        elif st == StageState.BACKOFF or self._recently_reconnecting(h):
            state = StreamState.RECONNECTING
        elif st == StageState.STARTING or self._counter(h, C_OUT) == 0:
            state = StreamState.STARTING
        else:
            state = StreamState.RUNNING
        return StreamInfo(cam.id, cam.source, cfg.camera_fps(cam), cam.priority, state)

    def _recently_reconnecting(self, h: StageHandle) -> bool:
        last_ms = self._counter(h, C_LAST_WALL_MS)
        return self._counter(h, C_RECONNECTS) > 0 and (time.time() * 1000 - last_ms) > 5000

    def camera_health(self, camera_id: str | None) -> list[CameraHealth]:
        """Health of one camera's source, or of all."""
        ids = [c.id for c in self.sup.config.cameras] if camera_id is None else [camera_id]
        metrics = self.metrics().per_camera
        out = []
        for cid in ids:
            h = self._decoder(cid)
            last_ms = self._counter(h, C_LAST_WALL_MS)
            age = time.time() - last_ms / 1000 if last_ms else None
            m = metrics.get(cid, {})
            eof = self._counter(h, C_EOF) == 1
            connected = h.alive() and age is not None and age < 5.0 and not eof
            out.append(
                CameraHealth(
                    camera_id=cid,
                    connected=connected,
                    fps_in=float(m.get("fps_in", 0.0)),
                    fps_out=float(m.get("fps_out", 0.0)),
                    last_frame_age_s=age,
                    reconnects=self._counter(h, C_RECONNECTS),
                    last_error="source ended" if eof else h.last_exit,
                )
            )
        return out

    def traffic_metrics(self, camera_id: str) -> TrafficSnapshot:
        """Line counts and vehicles in view since the daemon started."""
        self._decoder(camera_id)  # KeyError for unknown cameras
        cams = self._board().get("cameras", {})
        data = cams.get(camera_id, {})
        return TrafficSnapshot(
            camera_id=camera_id,
            window_start=time.time() - self.sup.uptime_s(),
            window_end=time.time(),
            line_counts=data.get("line_counts", {}),
            vehicles_in_view=int(data.get("vehicles_in_view", 0)),
        )

    def register_stream(self, stream: StreamInfo) -> StreamInfo:
        """Not supported at run time in this version."""
        raise NotSupportedError(
            "streams come from the configuration file in this version; add the camera "
            "under `cameras:` and restart itsd"
        )

    def unregister_stream(self, camera_id: str) -> bool:
        """Not supported at run time in this version."""
        self._decoder(camera_id)
        raise NotSupportedError(
            "streams come from the configuration file in this version; remove the camera "
            "from `cameras:` and restart itsd"
        )
