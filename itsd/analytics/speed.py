"""Speed and heading of one camera's tracks, on the ground plane when it is calibrated.

Each frame, every confirmed track that was matched in it contributes one sample: the
bottom centre of its filtered box (where the vehicle meets the road), mapped to the
ground in metres when the camera has a calibration. A track's motion is its mean
velocity over the last ``window_s`` seconds (the oldest and the newest sample inside
the window): a windowed average, so the detector's jitter of a few pixels does not reach
the reported speed. ``samples`` says how many samples the estimate rests on; below
``min_samples`` there is no estimate.

* Calibrated: ``speed_kmh`` and ``heading_deg`` (compass, clockwise from north), with a
  compass label (``north``, ``north_east``, ...).
* Not calibrated: no speed, ever (a pixel rate is not a speed); the heading is relative
  to the picture (``image_up``, ``image_down_left``, ...; degrees clockwise from the
  picture's top).

A box cut by the left, right or bottom edge of the picture gives no sample, and the
track's window starts again once it is whole: a vehicle entering the picture has a box
whose far edge stands still at the border, so its anchor moves at half the vehicle's
speed (on the overhead test clip this made entering cars read 15 km/h).

A track that moves less than ``still_m`` metres (or, uncalibrated, a tenth of its box
height) over the window has no heading, and counts as ``still``.

This module must never import anything from itsd outside ``itsd.analytics``, and never
draws.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from itsd.analytics.calibration import Calibration, compass_label, image_label
from itsd.analytics.tracker import Track


@dataclass(slots=True)
class Motion:
    """What is known of one track's motion at the latest frame it was seen in."""

    track_id: int
    t: float
    #: Normalised image position of the anchor (bottom centre).
    image_xy: tuple[float, float]
    #: Ground position in metres, None without calibration or beyond the horizon.
    ground_xy: tuple[float, float] | None
    #: Samples in the window the estimate rests on.
    samples: int = 0
    #: Ground speed (km/h); None when uncalibrated or too few samples.
    speed_kmh: float | None = None
    #: Compass (calibrated) or image (uncalibrated) direction, degrees clockwise.
    heading_deg: float | None = None
    #: ``north``... (calibrated) or ``image_up``... (uncalibrated); None while still.
    heading: str | None = None
    #: Moving too little over the window to have a heading.
    still: bool = False
    #: Ground distance (metres) moved since the previous frame's sample (0 uncalibrated).
    step_m: float = 0.0
    #: Ground step (dx, dy) since the previous sample, metres.
    step_xy: tuple[float, float] = (0.0, 0.0)
    #: Box height in pixels (for the uncalibrated stillness test).
    box_h: float = 0.0


@dataclass(slots=True)
class _History:
    #: (t, image x, image y, ground x, ground y); ground NaN when unknown.
    points: deque[tuple[float, float, float, float, float]] = field(default_factory=deque)


#: A box this close (pixels) to the left, right or bottom edge is cut by it.
EDGE_PX = 2.0


class Kinematics:
    """Speed and heading of a camera's tracks; one instance per camera."""

    def __init__(
        self,
        calibration: Calibration | None,
        *,
        window_s: float = 1.0,
        min_samples: int = 3,
        still_m: float = 0.5,
    ) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number, got {window_s}")
        if min_samples < 2:
            raise ValueError(f"min_samples must be at least 2, got {min_samples}")
        self.calibration = calibration
        self.window_s = window_s
        self.min_samples = min_samples
        self.still_m = still_m
        self._hist: dict[int, _History] = {}
        self.motions: dict[int, Motion] = {}

    def update(
        self, tracks: Sequence[Track], frame_w: int, frame_h: int, t: float
    ) -> dict[int, Motion]:
        """Add this frame's samples; returns the motion of every track matched in it."""
        live = [tr for tr in tracks if tr.confirmed and tr.time_since_update == 0]
        out: dict[int, Motion] = {}
        if not live:
            return out
        n = len(live)
        boxes = np.empty((n, 4), dtype=np.float64)
        for i, tr in enumerate(live):
            boxes[i] = tr.box
        e = EDGE_PX
        cut = (boxes[:, 0] <= e) | (boxes[:, 2] >= frame_w - e) | (boxes[:, 3] >= frame_h - e)
        if cut.any():
            for j in np.flatnonzero(cut).tolist():
                self._hist.pop(live[j].track_id, None)
            keep = ~cut
            live = [tr for tr, k in zip(live, keep, strict=True) if k]
            boxes = boxes[keep]
            n = len(live)
            if not n:
                return out
        img = np.empty((n, 2), dtype=np.float64)
        img[:, 0] = (boxes[:, 0] + boxes[:, 2]) * (0.5 / frame_w)
        img[:, 1] = boxes[:, 3] / frame_h
        cal = self.calibration
        ground = cal.to_ground(img) if cal is not None else None
        window = self.window_s
        for i, tr in enumerate(live):
            hist = self._hist.get(tr.track_id)
            if hist is None:
                hist = self._hist[tr.track_id] = _History()
            pts = hist.points
            ix, iy = float(img[i, 0]), float(img[i, 1])
            gx = float(ground[i, 0]) if ground is not None else math.nan
            gy = float(ground[i, 1]) if ground is not None else math.nan
            prev = pts[-1] if pts else None
            if prev is not None and tr.last_seen <= prev[0]:
                continue  # a frame analysed twice (replay after a restart)
            pts.append((tr.last_seen, ix, iy, gx, gy))
            horizon = tr.last_seen - window
            while len(pts) > 2 and pts[1][0] <= horizon:
                pts.popleft()
            box_h = float(boxes[i, 3] - boxes[i, 1])
            m = Motion(
                tr.track_id,
                tr.last_seen,
                (ix, iy),
                (gx, gy) if math.isfinite(gx) and math.isfinite(gy) else None,
                box_h=box_h,
            )
            if prev is not None and m.ground_xy is not None and math.isfinite(prev[3]):
                dx, dy = gx - prev[3], gy - prev[4]
                m.step_xy = (dx, dy)
                m.step_m = math.hypot(dx, dy)
            self._estimate(m, pts, frame_w, frame_h)
            out[tr.track_id] = m
            self.motions[tr.track_id] = m
        return out

    def _estimate(
        self,
        m: Motion,
        pts: deque[tuple[float, float, float, float, float]],
        frame_w: int,
        frame_h: int,
    ) -> None:
        # The window: the oldest sample kept is the last one at or before its start.
        first = pts[0]
        m.samples = len(pts)
        last = pts[-1]
        span = last[0] - first[0]
        if m.samples < self.min_samples or span <= 0:
            return
        cal = self.calibration
        if cal is not None:
            if not (math.isfinite(first[3]) and math.isfinite(last[3])):
                return
            dx, dy = last[3] - first[3], last[4] - first[4]
            dist = math.hypot(dx, dy)
            m.speed_kmh = dist / span * 3.6
            if dist < self.still_m:
                m.still = True
                return
            m.heading_deg = cal.compass(dx, dy)
            m.heading = compass_label(m.heading_deg)
        else:
            dx = (last[1] - first[1]) * frame_w
            dy = (last[2] - first[2]) * frame_h
            if math.hypot(dx, dy) < 0.1 * max(m.box_h, 1.0):
                m.still = True
                return
            m.heading_deg = math.degrees(math.atan2(dx, -dy)) % 360.0
            m.heading = image_label(m.heading_deg)

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the history of tracks the tracker removed."""
        for tid in track_ids:
            self._hist.pop(tid, None)
            self.motions.pop(tid, None)
