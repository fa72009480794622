"""The design's service metrics and the daemon's alerts, worked out once per snapshot tick.

The supervisor's snapshot (``itsd.supervisor.snapshot``) hands this module, each tick, the
samples it read from the stages' cell tables and what it knows of cameras and queues;
``ServiceMetrics.tick`` returns the derived samples (``ml_throughput_fps``,
``ml_target_fps``, ``ml_error_rate``, ``queue_depth``, ``gpu_utilization``, GPU memory,
``memory_used_ratio``, ``itsd_alert_firing``), evaluates the alert rules
(``itsd.runtime.alerts``) on the same values, and writes every alert transition to the
*alerts board* (``itsd-<run>-board-alerts``, a ``itsd.shm.board.Board`` of JSON):

    {"transitions": [{"seq": 7, "rule": "QueueDepthHigh", "state": "firing", ...}, ...]}

It also makes the *detections board* (``itsd-<run>-board-detections``) where analytics
leaves the boxes of each camera's last frames for the dashboard's snapshots (the
supervisor itself never reads it). The publisher stage reads the alerts board and turns
each transition it has not published yet (its sequence number is above the publisher's
``itsd_publish_alert_seq`` state cell) into one ``alert`` event on topic alert_events.

Why a board and not a ring: the supervisor must never wait on a stage, a board write
never blocks, transitions are rare (a few per hour), and the board keeps the last
``RECENT`` of them, so a publisher that restarts catches up from its state cell; only a
publisher down through more than ``RECENT`` transitions would miss some (they stay in
the log and on the dashboard). Why the supervisor evaluates: it alone sees every input
at once (every stage's cells, the rings' headers, NVML), and the dashboard shows the
same alert states it publishes.

This module must never import a stage, the supervisor, ``control`` or ``monitor``, and
never block: it reads numbers and writes boards.
"""

from __future__ import annotations

import collections
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType

from itsd.config import AlertsConfig
from itsd.runtime import metrics as m
from itsd.runtime.alerts import (
    RECENT,
    AlertEngine,
    AlertsView,
    Transition,
    rules_from_config,
    window_quantile,
)
from itsd.runtime.hostinfo import HostProbe, HostSample
from itsd.runtime.metrics import Sample, merge_histograms
from itsd.shm.board import Board
from itsd.shm.segments import segment_name

log = logging.getLogger("itsd.alerts")

ALERTS_BOARD_BYTES = 256 * 1024
DETECTIONS_BOARD_BYTES = 4 * 1024 * 1024
#: Errors counted by ml_error_rate.
ERROR_METRICS = (
    m.DECODE_ERRORS,
    m.ANALYZE_ERRORS,
    m.PUBLISH_ERRORS,
    m.KAFKA_FAILED,
    m.SPOOL_DROPPED,
)


def alerts_board_name(run_id: str) -> str:
    """Name of the alerts board of a run."""
    return segment_name(run_id, "board", "alerts")


def detections_board_name(run_id: str, shard: int = 0) -> str:
    """Name of the board where analytics shard ``shard`` leaves the last frames' boxes
    (the dashboard); shard 0's is the one a daemon without shards has."""
    return segment_name(run_id, "board", "detections" if shard == 0 else f"detections{shard}")


@dataclass(frozen=True, slots=True)
class CameraRates:
    """What the rules need of one camera."""

    camera_id: str
    state: str
    fps_in: float
    fps_out: float
    target_fps: float
    frames_waiting: int


def _lab(**kv: str) -> MappingProxyType[str, str]:
    return MappingProxyType(kv)


class ServiceMetrics:
    """Derived metrics, alert evaluation and the alerts board of one daemon run."""

    def __init__(self, run_id: str = "", probe: HostProbe | None = None) -> None:
        self.run_id = run_id
        self.probe = probe or HostProbe()
        self.engine = AlertEngine(())
        self._cfg: AlertsConfig | None = None
        self._lat_hist: collections.deque[tuple[float, tuple[float, ...]]] = collections.deque()
        self._err_hist: collections.deque[tuple[float, float, float]] = collections.deque()
        self._board: Board | None = None
        self._board_failed = False
        self._detections: list[Board] = []
        #: Analytics shards: one detections board each.
        self.shards = 1
        self.host = HostSample()

    # -- the alerts board ------------------------------------------------------------------
    def _publish(self, view: AlertsView) -> None:
        if not self.run_id or self._board_failed:
            return
        if self._board is None:
            try:
                self._board = Board.create(alerts_board_name(self.run_id), ALERTS_BOARD_BYTES)
                for s in range(self.shards):
                    self._detections.append(
                        Board.create(detections_board_name(self.run_id, s), DETECTIONS_BOARD_BYTES)
                    )
            except (OSError, ValueError) as err:
                self._board_failed = True
                log.error("alerts board not created (no alert events): %s", err)
                return
        blob = json.dumps(
            {"transitions": [asdict(t) for t in view.recent[-RECENT:]]},
            separators=(",", ":"),
            allow_nan=False,
            default=str,
        ).encode()
        try:
            self._board.publish(blob)
        except ValueError as err:
            log.error("alerts board: %s", err)

    def close(self) -> None:
        """Remove the boards and let NVML go."""
        for board in (self._board, *self._detections):
            if board is not None:
                board.close()
                board.unlink()
        self._board = None
        self._detections = []
        self.probe.close()

    # -- one tick ---------------------------------------------------------------------------
    def tick(
        self,
        cfg: AlertsConfig,
        samples: Sequence[Sample],
        cameras: Iterable[CameraRates],
        record_queues: Iterable[tuple[str, int]],
        now_wall: float,
        now_mono: float,
        gpus: Sequence[int] = (),
    ) -> tuple[list[Sample], AlertsView]:
        """Derived samples and the alerts now; publishes transitions to the board.

        ``gpus``: the GPU indices the daemon runs on (``gpus:``); only those are exported
        and watched (a GPU the daemon does not use is no business of its alerts).
        """
        if cfg is not self._cfg:
            self.engine.set_rules(rules_from_config(cfg))
            self._cfg = cfg
        self.host = host = self.probe.sample()
        out: list[Sample] = []
        values: dict[str, dict[str, float | None]] = collections.defaultdict(dict)
        cams = list(cameras)
        for c in cams:
            lab = _lab(camera_id=c.camera_id)
            # What inference can be asked for: the target, or less when the source
            # itself delivers less (a 15 fps camera asked for 30).
            target = min(c.target_fps, c.fps_in) if c.fps_in > 0 else c.target_fps
            out.append(Sample(m.ML_THROUGHPUT, lab, c.fps_out))
            out.append(Sample(m.ML_TARGET_FPS, lab, target))
            out.append(Sample(m.QUEUE_DEPTH, _lab(queue=f"frames:{c.camera_id}"), c.frames_waiting))
            values["QueueDepthHigh"][f"frames:{c.camera_id}"] = float(c.frames_waiting)
            if c.state == "running" and target > 0 and c.fps_in > 0:
                values["ThroughputLow"][c.camera_id] = c.fps_out / target
        for name, depth in record_queues:
            out.append(Sample(m.QUEUE_DEPTH, _lab(queue=name), float(depth)))
            values["QueueDepthHigh"][name] = float(depth)
        # Inference latency: the quantile of the last window's observations.
        hist = next((h for h in merge_histograms(samples) if h.defn is m.ML_INFER_LATENCY), None)
        if hist is not None:
            lat = window_quantile(
                hist.defn.buckets,
                self._lat_hist,
                hist.cumulative,
                now_mono,
                cfg.window_s,
                cfg.latency_quantile,
            )
            v = None if math.isnan(lat) else lat
            values["InferenceLatencyCritical"][""] = v
            values["InferenceLatencyHigh"][""] = v
        # Error rate over the window.
        errors = sum(s.value for s in samples if s.defn in ERROR_METRICS and not s.part)
        frames = sum(s.value for s in samples if s.defn is m.DECODE_FRAMES)
        rate = self._error_rate(errors, frames, now_mono, cfg.window_s)
        out.append(Sample(m.ML_ERROR_RATE, _lab(), rate))
        values["ErrorRateHigh"][""] = rate
        # Host and GPUs.
        if host.memory_used_ratio is not None:
            out.append(Sample(m.MEMORY_USED, _lab(), host.memory_used_ratio))
            values["MemoryHigh"]["host"] = host.memory_used_ratio
        for g in host.gpus:
            if g.index not in gpus:
                continue
            gl = _lab(gpu=str(g.index))
            out.append(Sample(m.GPU_UTILIZATION, gl, g.utilization))
            out.append(Sample(m.GPU_MEMORY_USED, gl, float(g.memory_used)))
            out.append(Sample(m.GPU_MEMORY_TOTAL, gl, float(g.memory_total)))
            values["GpuUtilizationLow"][f"gpu{g.index}"] = g.utilization
            values["MemoryHigh"][f"gpu{g.index}"] = g.memory_ratio
        ids = frozenset(c.camera_id for c in cams)
        transitions = self.engine.evaluate(values, now_mono, now_wall, ids)
        for t in transitions:
            _log(t)
        view = self.engine.view()
        for rule in self.engine.rules.values():
            firing = any(a.rule == rule.name and a.state == "firing" for a in view.active)
            out.append(
                Sample(
                    m.ALERTS_FIRING,
                    _lab(rule=rule.name, severity=rule.severity),
                    1.0 if firing else 0.0,
                )
            )
        if transitions or self._board is None:
            self._publish(view)
        return out, view

    def _error_rate(self, errors: float, frames: float, now: float, window_s: float) -> float:
        hist = self._err_hist
        if hist and (errors < hist[-1][1] or frames < hist[-1][2]):
            hist.clear()  # a stage restarted and its counts began again
        hist.append((now, errors, frames))
        while len(hist) > 2 and now - hist[1][0] >= window_s:
            hist.popleft()
        _, e0, f0 = hist[0]
        de, df = errors - e0, frames - f0
        return de / (df + de) if de > 0 else 0.0


def _log(t: Transition) -> None:
    level = logging.WARNING if t.state == "firing" else logging.INFO
    log.log(level, "alert %s %s [%s]: %s", t.rule, t.state, t.severity, t.message)
