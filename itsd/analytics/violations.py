"""Traffic violations in a zone: wrong way and speeding, each raised once and cleared once.

* **Wrong way** (zones with an allowed direction, calibrated cameras): a track whose
  compass heading differs from the allowed one by more than
  ``wrong_way_tolerance_deg`` accumulates the ground distance it moves; at
  ``wrong_way_min_m`` the alert is raised (one vehicle reversing a metre, or a heading
  that flickers while a car stands still, is not a wrong-way driver). A heading back in
  the allowed sector resets the distance. Cleared when the track leaves the zone, is
  dropped by the tracker, or drives the allowed way again.
* **Speeding** (zones with a speed limit, calibrated cameras): the track's speed stays
  above the limit for ``speeding_min_s`` seconds. Cleared when it drops to the limit or
  below, or the track leaves the zone or is dropped. The evidence holds the highest
  speed seen while the alert was active.

This module must never import anything from itsd outside ``itsd.analytics``, and never
draws.
"""

from __future__ import annotations

from typing import Any

from itsd.analytics.alerts import (
    CRITICAL,
    RAISED,
    SPEEDING,
    WARNING,
    WRONG_WAY,
    Alert,
    AlertBook,
    Thresholds,
    TrackRule,
)
from itsd.analytics.calibration import angle_difference, compass_label
from itsd.analytics.zones import ZoneFrame, ZoneSpec


class WrongWay(TrackRule):
    """Wrong-way detection in one zone (state: metres driven against the allowed way)."""

    rule = "wrong_way"

    def __init__(self, spec: ZoneSpec, thresholds: Thresholds, book: AlertBook) -> None:
        assert spec.allowed_heading_deg is not None
        super().__init__(spec, thresholds, book)
        self.allowed = spec.allowed_heading_deg

    def update(self, frame: ZoneFrame, t: float) -> list[Alert]:
        out: list[Alert] = []
        for tid, m in frame.members.items():
            if m.heading_deg is None:
                continue
            off = angle_difference(m.heading_deg, self.allowed)
            if off > self.th.wrong_way_tolerance_deg:
                dist = self.state.get(tid, 0.0) + m.step_m
                self.state[tid] = dist
                if dist >= self.th.wrong_way_min_m:
                    a = self.book.raise_alert(
                        Alert(
                            key=self._key(tid),
                            alert_type=WRONG_WAY,
                            severity=CRITICAL,
                            state=RAISED,
                            message=(
                                f"track {tid} drives {m.heading} in zone {self.spec.zone_id}, "
                                f"allowed {compass_label(self.allowed)}"
                            ),
                            t=t,
                            zone_id=self.spec.zone_id,
                            track_ids=(tid,),
                            speed_kmh=m.speed_kmh,
                            evidence={
                                "heading_deg": round(m.heading_deg, 1),
                                "allowed_heading_deg": self.allowed,
                                "tolerance_deg": self.th.wrong_way_tolerance_deg,
                                "distance_m": round(dist, 2),
                                "min_distance_m": self.th.wrong_way_min_m,
                            },
                        )
                    )
                    if a is not None:
                        out.append(a)
            else:
                self.state.pop(tid, None)
                c = self.book.clear(self._key(tid), t, "the track drives the allowed way")
                if c is not None:
                    out.append(c)
        for tid, _ in frame.dwells:
            out.extend(self._gone(tid, t, "the track left the zone"))
        return out


class Speeding(TrackRule):
    """Speeding detection in one zone (state: when the track went over the limit)."""

    rule = "speeding"

    def __init__(self, spec: ZoneSpec, thresholds: Thresholds, book: AlertBook) -> None:
        assert spec.speed_limit_kmh is not None
        super().__init__(spec, thresholds, book)
        self.limit = spec.speed_limit_kmh
        self.top: dict[int, float] = {}

    def update(self, frame: ZoneFrame, t: float) -> list[Alert]:
        out: list[Alert] = []
        for tid, m in frame.members.items():
            if m.speed_kmh is None:
                continue
            if m.speed_kmh > self.limit:
                start = self.state.setdefault(tid, t)
                self.top[tid] = max(self.top.get(tid, 0.0), m.speed_kmh)
                if t - start >= self.th.speeding_min_s:
                    a = self.book.raise_alert(
                        Alert(
                            key=self._key(tid),
                            alert_type=SPEEDING,
                            severity=WARNING,
                            state=RAISED,
                            message=(
                                f"track {tid} at {m.speed_kmh:.0f} km/h in zone "
                                f"{self.spec.zone_id} (limit {self.limit:g} km/h)"
                            ),
                            t=t,
                            zone_id=self.spec.zone_id,
                            track_ids=(tid,),
                            speed_kmh=m.speed_kmh,
                            evidence={
                                "speed_kmh": round(m.speed_kmh, 1),
                                "limit_kmh": self.limit,
                                "above_for_s": round(t - start, 2),
                                "min_duration_s": self.th.speeding_min_s,
                                "samples": m.samples,
                            },
                        )
                    )
                    if a is not None:
                        out.append(a)
            else:
                out.extend(self._gone(tid, t, "speed at or below the limit"))
        for tid, _ in frame.dwells:
            out.extend(self._gone(tid, t, "the track left the zone"))
        return out

    def _clear_evidence(self, tid: int) -> dict[str, Any]:
        return {"top_speed_kmh": round(self.top.pop(tid, 0.0), 1)}
