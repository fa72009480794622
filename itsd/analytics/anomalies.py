"""Anomalies: stopped vehicles, congestion and a blind camera, each raised once, cleared once.

* **Stopped vehicle** (zones with ``no_stopping_s``): a track that stays still (ground
  speed under ``stopped_speed_kmh``; uncalibrated, moving less than a tenth of its box
  height over the speed window) for more than ``no_stopping_s`` seconds. Cleared when it
  moves again (twice the stopping speed, so a creeping car does not flap), leaves the
  zone, or is dropped by the tracker.
* **Congestion** (zones marked for it, calibrated cameras): over the last
  ``congestion_window_s`` seconds, the mean occupancy is at least
  ``congestion_min_vehicles`` and the mean speed of the vehicles in the zone is under
  ``congestion_speed_kmh``. Cleared when occupancy falls under half the threshold or the
  mean speed rises over one and a half times it (hysteresis).
* **Blind camera** (per camera, one alert per reason):

  - ``no_detections``: frames keep arriving but none has had a detection for
    ``blind_after_s`` seconds, while before the silence the camera saw on average at
    least ``blind_min_detections`` per frame (a long-run average over five minutes, so a
    quiet road at night is not a blind camera). Cleared after three frames in a row
    with detections.
  - ``frozen``: the picture's fingerprint (a CRC of a sparse pixel grid, computed by
    inference while it holds the frame) has not changed for ``freeze_after_s`` seconds.
    Real sensors and encoders never give the same bytes twice; a stuck decoder or
    camera does. Cleared on the first change.
  - ``dark``: the picture's mean luma stays under ``dark_luma`` (0..255) for
    ``dark_after_s`` seconds. Cleared when it rises 5 over the threshold.

This module must never import anything from itsd outside ``itsd.analytics``, and never
draws.
"""

from __future__ import annotations

import math
from collections import deque

from itsd.analytics.alerts import (
    CAMERA_BLIND,
    CONGESTION,
    INFO,
    RAISED,
    STOPPED_VEHICLE,
    WARNING,
    Alert,
    AlertBook,
    Thresholds,
    TrackRule,
)
from itsd.analytics.zones import ZoneFrame, ZoneSpec

#: Time constant (seconds) of the long-run detections-per-frame average.
BASELINE_TAU_S = 300.0


class StoppedVehicle(TrackRule):
    """Stopped-vehicle detection in one no-stopping zone (state: when the track stopped)."""

    rule = "stopped"

    def __init__(self, spec: ZoneSpec, thresholds: Thresholds, book: AlertBook) -> None:
        assert spec.no_stopping_s is not None
        super().__init__(spec, thresholds, book)
        self.limit_s = spec.no_stopping_s

    def update(self, frame: ZoneFrame, t: float) -> list[Alert]:
        out: list[Alert] = []
        stop_kmh = self.th.stopped_speed_kmh
        for tid, m in frame.members.items():
            if m.samples == 0 or (m.speed_kmh is None and not m.still and m.heading is None):
                continue  # too young to say
            still = m.still or (m.speed_kmh is not None and m.speed_kmh < stop_kmh)
            if still:
                start = self.state.setdefault(tid, t)
                if t - start > self.limit_s:
                    a = self.book.raise_alert(
                        Alert(
                            key=self._key(tid),
                            alert_type=STOPPED_VEHICLE,
                            severity=WARNING,
                            state=RAISED,
                            message=(
                                f"track {tid} stopped in no-stopping zone {self.spec.zone_id} "
                                f"for {t - start:.0f} s"
                            ),
                            t=t,
                            zone_id=self.spec.zone_id,
                            track_ids=(tid,),
                            speed_kmh=m.speed_kmh,
                            evidence={
                                "stopped_for_s": round(t - start, 2),
                                "threshold_s": self.limit_s,
                                "stopped_speed_kmh": stop_kmh,
                                "speed_kmh": None if m.speed_kmh is None else round(m.speed_kmh, 2),
                            },
                        )
                    )
                    if a is not None:
                        out.append(a)
            elif m.speed_kmh is None or m.speed_kmh > 2.0 * stop_kmh:
                self.state.pop(tid, None)
                c = self.book.clear(self._key(tid), t, "the vehicle moves again")
                if c is not None:
                    out.append(c)
        for tid, _ in frame.dwells:
            out.extend(self._gone(tid, t, "the vehicle left the zone"))
        return out


class Congestion:
    """Congestion detection in one zone."""

    def __init__(self, spec: ZoneSpec, thresholds: Thresholds, book: AlertBook) -> None:
        self.spec = spec
        self.th = thresholds
        self.book = book
        #: (t, occupancy, sum of speeds, number of speeds) per frame.
        self.window: deque[tuple[float, int, float, int]] = deque()
        self.key = f"congestion:{spec.zone_id}"

    def update(self, frame: ZoneFrame, t: float) -> list[Alert]:
        speeds = [m.speed_kmh for m in frame.members.values() if m.speed_kmh is not None]
        self.window.append((t, frame.occupancy, sum(speeds), len(speeds)))
        span = self.th.congestion_window_s
        while self.window and self.window[0][0] < t - span:
            self.window.popleft()
        if t - self.window[0][0] < 0.9 * span:
            return []
        occ = sum(w[1] for w in self.window) / len(self.window)
        n = sum(w[3] for w in self.window)
        mean_speed = sum(w[2] for w in self.window) / n if n else math.nan
        th_speed, th_occ = self.th.congestion_speed_kmh, self.th.congestion_min_vehicles
        evidence = {
            "occupancy_mean": round(occ, 2),
            "mean_speed_kmh": None if math.isnan(mean_speed) else round(mean_speed, 1),
            "min_vehicles": th_occ,
            "speed_threshold_kmh": th_speed,
            "window_s": span,
        }
        if occ >= th_occ and not math.isnan(mean_speed) and mean_speed < th_speed:
            a = self.book.raise_alert(
                Alert(
                    key=self.key,
                    alert_type=CONGESTION,
                    severity=INFO,
                    state=RAISED,
                    message=(
                        f"congestion in zone {self.spec.zone_id}: {occ:.1f} vehicles at "
                        f"{mean_speed:.0f} km/h on average over {span:g} s"
                    ),
                    t=t,
                    zone_id=self.spec.zone_id,
                    track_ids=tuple(frame.members),
                    speed_kmh=mean_speed,
                    evidence=evidence,
                )
            )
            return [a] if a is not None else []
        if self.book.is_active(self.key) and (
            occ < 0.5 * th_occ or (not math.isnan(mean_speed) and mean_speed > 1.5 * th_speed)
        ):
            c = self.book.clear(self.key, t, "traffic flows again", **evidence)
            return [c] if c is not None else []
        return []


class BlindCamera:
    """Blind-camera detection for one camera (see the module docstring)."""

    def __init__(self, camera_id: str, thresholds: Thresholds, book: AlertBook) -> None:
        self.camera_id = camera_id
        self.th = thresholds
        self.book = book
        self.baseline = 0.0
        self.last_t: float | None = None
        self.silent_since: float | None = None
        self.baseline_at_silence = 0.0
        self.seen_in_row = 0
        self.last_crc: int | None = None
        self.crc_since = 0.0
        self.dark_since: float | None = None

    def _raise(
        self, reason: str, t: float, message: str, evidence: dict[str, float]
    ) -> list[Alert]:
        a = self.book.raise_alert(
            Alert(
                key=f"blind:{reason}",
                alert_type=CAMERA_BLIND,
                severity=WARNING,
                state=RAISED,
                message=f"camera {self.camera_id}: {message}",
                t=t,
                evidence={"reason": reason, **evidence},
            )
        )
        return [a] if a is not None else []

    def _clear(self, reason: str, t: float, why: str) -> list[Alert]:
        c = self.book.clear(f"blind:{reason}", t, why, reason=reason)
        return [c] if c is not None else []

    def update(self, t: float, detections: int, luma: float, crc: int) -> list[Alert]:
        out: list[Alert] = []
        th = self.th
        if self.last_t is None:
            self.baseline = float(detections)
        else:
            alpha = 1.0 - math.exp(-max(0.0, t - self.last_t) / BASELINE_TAU_S)
            self.baseline += alpha * (detections - self.baseline)
        self.last_t = t
        if detections > 0:
            self.silent_since = None
            self.seen_in_row += 1
            if self.seen_in_row >= 3:
                out.extend(self._clear("no_detections", t, "detections are back"))
        else:
            self.seen_in_row = 0
            if self.silent_since is None:
                self.silent_since = t
                self.baseline_at_silence = self.baseline
            elif (
                t - self.silent_since >= th.blind_after_s
                and self.baseline_at_silence >= th.blind_min_detections
            ):
                out.extend(
                    self._raise(
                        "no_detections",
                        t,
                        f"no detections for {t - self.silent_since:.0f} s while frames arrive",
                        {
                            "silent_for_s": round(t - self.silent_since, 1),
                            "threshold_s": th.blind_after_s,
                            "detections_per_frame_before": round(self.baseline_at_silence, 2),
                            "min_detections_per_frame": th.blind_min_detections,
                        },
                    )
                )
        if luma < 0:
            return out  # no picture statistics in the record
        if crc != self.last_crc:
            self.last_crc = crc
            self.crc_since = t
            out.extend(self._clear("frozen", t, "the picture changes again"))
        elif t - self.crc_since >= th.freeze_after_s:
            out.extend(
                self._raise(
                    "frozen",
                    t,
                    f"the picture has not changed for {t - self.crc_since:.0f} s",
                    {
                        "frozen_for_s": round(t - self.crc_since, 1),
                        "threshold_s": th.freeze_after_s,
                    },
                )
            )
        if luma < th.dark_luma:
            if self.dark_since is None:
                self.dark_since = t
            elif t - self.dark_since >= th.dark_after_s:
                out.extend(
                    self._raise(
                        "dark",
                        t,
                        f"the picture is dark (mean luma {luma:.0f})",
                        {
                            "luma": round(luma, 1),
                            "dark_luma": th.dark_luma,
                            "dark_for_s": round(t - self.dark_since, 1),
                            "threshold_s": th.dark_after_s,
                        },
                    )
                )
        elif luma >= th.dark_luma + 5.0:
            self.dark_since = None
            out.extend(self._clear("dark", t, "the picture is bright again"))
        return out
