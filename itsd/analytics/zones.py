"""Zones: polygons in the picture, with their occupancy, dwell times and queue length.

A zone is a polygon in normalised image coordinates (0..1 of width and height). A track
is in a zone when the bottom centre of its box (where it meets the road) is inside the
polygon; only tracks of the zone's classes count (vehicles when it names none). The
point test is the even-odd rule, vectorised over all tracks of a frame.

Per zone and frame:

* **occupancy**: tracks inside. A track keeps its state (inside or not) while the
  tracker has lost it, until it is seen again or dropped.
* **dwell**: when a track leaves the zone (seen outside, or dropped by the tracker) its
  dwell is the time from its first to its last sample inside.
* **queue** (zones marked as lanes, calibrated cameras only): the tracks inside moving
  slower than ``queue_speed_kmh`` are placed on the lane's axis (the zone's allowed
  direction when it has one, else the long axis of the zone on the ground); vehicles
  closer than ``queue_gap_m`` to the next form one queue; the queue length is the span
  of the longest such chain plus one vehicle length (``vehicle_length_m``: the anchors
  are points, a queue of one car is one car long). Uncalibrated: no queue (None).

This module must never import anything from itsd outside ``itsd.analytics``, and never
draws.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from itsd.analytics.calibration import Calibration
from itsd.analytics.speed import Motion

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ZoneSpec:
    """One zone's geometry and rules, from plain values (not the configuration model)."""

    zone_id: str
    polygon: tuple[tuple[float, float], ...]
    #: Class names considered; None: road vehicles.
    classes: frozenset[str] | None = None
    #: A lane: report its queue length.
    queue: bool = False
    #: Compass bearing traffic must follow (wrong-way detection), degrees.
    allowed_heading_deg: float | None = None
    #: Speed limit (speeding detection), km/h.
    speed_limit_kmh: float | None = None
    #: No stopping: a vehicle still for longer than this many seconds raises an alert.
    no_stopping_s: float | None = None
    #: Watch for congestion (low mean speed with high occupancy).
    congestion: bool = False

    def __post_init__(self) -> None:
        if len(self.polygon) < 3:
            raise ValueError(f"zone {self.zone_id!r}: a polygon needs at least 3 points")


def points_in_polygon(points: FloatArray, polygon: FloatArray) -> npt.NDArray[np.bool_]:
    """Which of ``points`` (N, 2) lie inside ``polygon`` (K, 2) (even-odd rule)."""
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    x = points[:, 0][:, None]
    y = points[:, 1][:, None]
    x0, y0 = polygon[:, 0][None, :], polygon[:, 1][None, :]
    x1, y1 = np.roll(polygon[:, 0], -1)[None, :], np.roll(polygon[:, 1], -1)[None, :]
    straddle = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    hits = straddle & (x < x_cross)
    inside: npt.NDArray[np.bool_] = (np.count_nonzero(hits, axis=1) % 2) == 1
    return inside


@dataclass(frozen=True)
class QueueSettings:
    """What makes a queue (see the module docstring)."""

    queue_speed_kmh: float = 7.0
    queue_gap_m: float = 15.0
    vehicle_length_m: float = 5.0


def queue_length(
    positions: Sequence[tuple[float, float]],
    axis: tuple[float, float],
    settings: QueueSettings = QueueSettings(),
) -> float:
    """Length (metres) of the longest chain of ``positions`` along ``axis``; 0 if none."""
    if not positions:
        return 0.0
    ax, ay = axis
    proj = sorted(px * ax + py * ay for px, py in positions)
    best = 0.0
    start = proj[0]
    for prev, cur in itertools.pairwise(proj):
        if cur - prev > settings.queue_gap_m:
            best = max(best, prev - start)
            start = cur
    best = max(best, proj[-1] - start)
    return best + settings.vehicle_length_m


@dataclass(slots=True)
class ZoneFrame:
    """One zone's state at one frame."""

    occupancy: int
    #: Tracks inside, with their motion (those seen in this frame).
    members: dict[int, Motion]
    #: Tracks that entered, and dwell (s) of the tracks that left, in this frame.
    entered: list[int] = field(default_factory=list)
    dwells: list[tuple[int, float]] = field(default_factory=list)
    #: Queue length (metres) for a lane zone on a calibrated camera, else None.
    queue_m: float | None = None


class Zone:
    """A zone's tracking of its tracks; one per zone of a camera."""

    def __init__(
        self,
        spec: ZoneSpec,
        calibration: Calibration | None,
        queue: QueueSettings = QueueSettings(),
    ) -> None:
        self.spec = spec
        self.polygon = np.asarray(spec.polygon, dtype=np.float64)
        self.calibration = calibration
        self.queue_settings = queue
        #: track id -> (first time inside, last time inside)
        self.inside: dict[int, tuple[float, float]] = {}
        self.axis = self._axis()

    def _axis(self) -> tuple[float, float] | None:
        cal = self.calibration
        if cal is None:
            return None
        if self.spec.allowed_heading_deg is not None:
            return cal.compass_vector(self.spec.allowed_heading_deg)
        ground = cal.to_ground(self.polygon)
        ground = ground[np.all(np.isfinite(ground), axis=1)]
        if len(ground) < 2:
            return None
        centred = ground - ground.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return (float(vt[0, 0]), float(vt[0, 1]))

    def counts(self, class_name: str, vehicle: bool) -> bool:
        """Whether tracks of ``class_name`` are considered by this zone."""
        classes = self.spec.classes
        return vehicle if classes is None else class_name in classes

    def update(
        self,
        motions: dict[int, Motion],
        inside: dict[int, bool],
        t: float,
    ) -> ZoneFrame:
        """Apply one frame: ``inside`` says, for the tracks seen in it (of the zone's
        classes), whether their anchor is in the polygon."""
        frame = ZoneFrame(0, {})
        for tid, is_in in inside.items():
            span = self.inside.get(tid)
            if is_in:
                if span is None:
                    self.inside[tid] = (t, t)
                    frame.entered.append(tid)
                else:
                    self.inside[tid] = (span[0], t)
                frame.members[tid] = motions[tid]
            elif span is not None:
                del self.inside[tid]
                frame.dwells.append((tid, span[1] - span[0]))
        frame.occupancy = len(self.inside)
        if self.spec.queue and self.axis is not None:
            slow = [
                m.ground_xy
                for m in frame.members.values()
                if m.ground_xy is not None
                and m.speed_kmh is not None
                and m.speed_kmh < self.queue_settings.queue_speed_kmh
            ]
            frame.queue_m = queue_length(slow, self.axis, self.queue_settings) if slow else 0.0
        return frame

    def forget(self, track_ids: Iterable[int]) -> list[tuple[int, float]]:
        """Tracks the tracker dropped: they leave the zone; returns their dwells."""
        out = []
        for tid in track_ids:
            span = self.inside.pop(tid, None)
            if span is not None:
                out.append((tid, span[1] - span[0]))
        return out


def polygon_area(polygon: Sequence[tuple[float, float]]) -> float:
    """Area of a polygon (shoelace), in the square of its units."""
    a = 0.0
    n = len(polygon)
    for i in range(n):
        x0, y0 = polygon[i]
        x1, y1 = polygon[(i + 1) % n]
        a += x0 * y1 - x1 * y0
    return abs(a) * 0.5


def check_polygon(zone_id: str, polygon: Sequence[tuple[float, float]]) -> None:
    """ValueError for a polygon with no area."""
    if polygon_area(polygon) < 1e-6 or not all(math.isfinite(c) for p in polygon for c in p):
        raise ValueError(f"zone {zone_id!r}: the polygon has no area")
