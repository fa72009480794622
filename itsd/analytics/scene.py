"""One camera's analytics beyond counting: speed, heading, zones, rules and summaries.

``Scene`` composes, from plain geometry (never from the configuration model), a
camera's ground-plane ``Kinematics``, its ``Zone``s with their rules (wrong way,
speeding, stopped vehicle, congestion), the blind-camera watch and the
``IntervalAccumulator``. The analytics stage feeds it each frame's tracks (after the
tracker and the line counter ran) and turns what it returns into events; counting lines
stay with ``LineCounter`` and only report their crossings here.

Per frame: the interval is advanced first (a frame of a new interval closes the old
one), then motions are measured, zones and their rules updated, tracks the tracker
dropped are let go (their dwell recorded, their alerts cleared), and the picture
statistics checked. Cost: a few vectorised numpy calls per frame and zone plus a short
Python loop over the tracks seen in the frame.

This module must never import anything from itsd outside ``itsd.analytics``, and never
draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from itsd.analytics.alerts import Alert, AlertBook, Thresholds
from itsd.analytics.anomalies import BlindCamera, Congestion, StoppedVehicle
from itsd.analytics.calibration import Calibration
from itsd.analytics.speed import Kinematics, Motion
from itsd.analytics.summary import IntervalAccumulator, IntervalSummary
from itsd.analytics.tracker import Track
from itsd.analytics.violations import Speeding, WrongWay
from itsd.analytics.zones import QueueSettings, Zone, ZoneFrame, ZoneSpec, points_in_polygon


@dataclass(frozen=True)
class SceneSpec:
    """Everything a camera's scene is built from."""

    camera_id: str
    calibration: Calibration | None = None
    zones: tuple[ZoneSpec, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    queue: QueueSettings = field(default_factory=QueueSettings)
    speed_window_s: float = 1.0
    speed_min_samples: int = 3
    summary_interval_s: float = 60.0
    blind_camera: bool = True


@dataclass(slots=True)
class SceneFrame:
    """What one frame gave."""

    motions: dict[int, Motion]
    alerts: list[Alert]
    summaries: list[IntervalSummary]
    zones: dict[str, ZoneFrame]


_Rule = WrongWay | Speeding | StoppedVehicle


class Scene:
    """A camera's speed, zones, rules and interval summaries."""

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        self.book = AlertBook()
        self.kinematics = Kinematics(
            spec.calibration, window_s=spec.speed_window_s, min_samples=spec.speed_min_samples
        )
        self.zones = [Zone(z, spec.calibration, spec.queue) for z in spec.zones]
        self.track_rules: dict[str, list[_Rule]] = {}
        self.congestion: dict[str, Congestion] = {}
        th = spec.thresholds
        for z in spec.zones:
            rules: list[_Rule] = []
            if z.allowed_heading_deg is not None and spec.calibration is not None:
                rules.append(WrongWay(z, th, self.book))
            if z.speed_limit_kmh is not None and spec.calibration is not None:
                rules.append(Speeding(z, th, self.book))
            if z.no_stopping_s is not None:
                rules.append(StoppedVehicle(z, th, self.book))
            self.track_rules[z.zone_id] = rules
            if z.congestion and spec.calibration is not None:
                self.congestion[z.zone_id] = Congestion(z, th, self.book)
        self.blind = BlindCamera(spec.camera_id, th, self.book) if spec.blind_camera else None
        self.summary = IntervalAccumulator(
            spec.summary_interval_s,
            [z.zone_id for z in spec.zones],
            {z.zone_id for z in spec.zones if z.queue and spec.calibration is not None},
        )
        self.last_t = 0.0

    def update(
        self,
        tracks: Sequence[Track],
        removed: Iterable[int],
        frame_w: int,
        frame_h: int,
        t: float,
        class_of: Callable[[int], tuple[str, bool]],
        detections: int = 0,
        luma: float = -1.0,
        crc: int = 0,
    ) -> SceneFrame:
        """One frame. ``class_of(class_id)`` gives (class name, is a road vehicle)."""
        summaries = []
        closed = self.summary.advance(t)
        if closed is not None:
            summaries.append(closed)
        self.summary.add_frame()
        self.last_t = t
        motions = self.kinematics.update(tracks, frame_w, frame_h, t)
        alerts: list[Alert] = []
        zone_frames: dict[str, ZoneFrame] = {}
        if self.zones:
            ids = list(motions)
            pts = np.array([motions[i].image_xy for i in ids], dtype=np.float64).reshape(-1, 2)
            classes = {
                tr.track_id: class_of(tr.class_id) for tr in tracks if tr.track_id in motions
            }
            for zone in self.zones:
                mask = points_in_polygon(pts, zone.polygon)
                inside = {
                    tid: bool(mask[k]) for k, tid in enumerate(ids) if zone.counts(*classes[tid])
                }
                zf = zone.update(motions, inside, t)
                zone_frames[zone.spec.zone_id] = zf
                self.summary.add_zone(zone.spec.zone_id, zf.occupancy, zf.queue_m)
                for _, dwell in zf.dwells:
                    self.summary.add_dwell(zone.spec.zone_id, dwell)
                for rule in self.track_rules[zone.spec.zone_id]:
                    alerts.extend(rule.update(zf, t))
                cong = self.congestion.get(zone.spec.zone_id)
                if cong is not None:
                    alerts.extend(cong.update(zf, t))
        gone = list(removed)
        if gone:
            for zone in self.zones:
                for _, dwell in zone.forget(gone):
                    self.summary.add_dwell(zone.spec.zone_id, dwell)
                for rule in self.track_rules[zone.spec.zone_id]:
                    alerts.extend(rule.forget(gone, t))
            self.kinematics.forget(gone)
        for tid, m in motions.items():
            if m.speed_kmh is not None:
                self.summary.add_speed(tid, m.speed_kmh)
        if self.blind is not None:
            alerts.extend(self.blind.update(t, detections, luma, crc))
        return SceneFrame(motions, alerts, summaries, zone_frames)

    def add_crossing(self, line_id: str, direction: str, class_name: str) -> None:
        """A line crossing counted in the current interval."""
        self.summary.add_crossing(line_id, direction, class_name)

    def flush(self) -> IntervalSummary | None:
        """Close the open (partial) interval: shutdown or the camera going away."""
        return self.summary.flush()

    def close(self, t: float, reason: str) -> list[Alert]:
        """Clear every active alert (the camera is removed or reconfigured)."""
        return self.book.clear_all(t, reason)

    def to_state(self) -> dict[str, Any]:
        """What a restart of the stage must not lose: the open interval and the raised
        alerts (tracks, zones' dwell and the rules' per-track state start afresh)."""
        return {
            "last_t": self.last_t,
            "summary": self.summary.to_state(),
            "alerts": self.book.to_state(),
        }

    def restore_state(self, state: dict[str, Any], reason: str) -> list[Alert]:
        """Take back a state saved by ``to_state``: the open interval goes on; the alerts
        that were raised are cleared with ``reason`` (the rules watch afresh, and raise
        again, with a new id, what still holds), so every raise keeps its one clear."""
        try:
            last_t = float(state.get("last_t") or 0.0)
            summary = state.get("summary")
            alerts = state.get("alerts") or []
        except (AttributeError, TypeError, ValueError):
            return []
        if isinstance(summary, dict) and self.summary.restore_state(summary):
            self.last_t = max(self.last_t, last_t)
        if not isinstance(alerts, list) or not self.book.restore_state(alerts):
            return []
        return self.book.clear_all(max(last_t, self.last_t), reason)
