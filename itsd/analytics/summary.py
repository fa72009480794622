"""Interval summaries of one camera: counts, speeds, zone occupancy and queues per interval.

Intervals are aligned to multiples of ``interval_s`` of the capture clock (UTC), so the
summaries of every camera (and of a restarted daemon) fall on the same boundaries, which
is what an aggregates store wants. An interval closes when the first frame of a later
one arrives (or the stage closes it on shutdown or when a camera goes quiet, with
``flush``); an interval with no frame gives no summary. An interval closed early (``flush``) and
then continued gives a second summary for the rest of it, never the same span twice.

What one summary holds (``IntervalSummary.data``):

* ``interval``: ``start``, ``end`` (seconds since the epoch here; RFC 3339 in events)
  and ``seconds`` (end - start; shorter for the last, partial interval);
* ``interval_counts``: line crossings counted inside the interval only,
  ``line_id -> direction -> class -> n``;
* ``speed``: one sample per vehicle that had a ground speed in the interval (its mean
  speed over its samples in the interval), so a slow car seen for 300 frames weighs as
  much as a fast one seen for 30: ``samples``, ``mean_kmh``, ``p85_kmh`` (85th
  percentile, linear interpolation) and a histogram of 5 km/h bins (bin ``i`` is
  ``[5i, 5i+5)``, as long as the fastest sample needs). Uncalibrated cameras have
  ``samples`` 0 and null statistics;
* ``zones``: per zone ``occupancy_mean`` (mean tracks inside per frame),
  ``occupied_fraction`` (frames with at least one), ``dwell_mean_s`` (mean dwell of the
  tracks that left the zone in the interval; null if none did) and ``queue_max_m``
  (longest queue seen; null unless a lane zone on a calibrated camera);
* ``longest_queue_m``: the longest queue of any zone, null when no zone measures one.

This module must never import anything from itsd outside ``itsd.analytics``, and never
draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SPEED_BIN_KMH = 5


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation."""
    v = sorted(values)
    if not v:
        raise ValueError("no values")
    pos = (len(v) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


@dataclass(slots=True)
class _ZoneAcc:
    frames: int = 0
    occupancy_sum: int = 0
    occupied_frames: int = 0
    dwells: list[float] = field(default_factory=list)
    queue_max: float | None = None


@dataclass(frozen=True)
class IntervalSummary:
    """One closed interval of one camera."""

    start: float
    end: float
    frames: int
    data: dict[str, Any]


class IntervalAccumulator:
    """Collects one camera's interval and closes it; one per camera."""

    def __init__(self, interval_s: float, zone_ids: list[str], queue_zones: set[str]) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a positive number, got {interval_s}")
        self.interval_s = interval_s
        self.zone_ids = list(zone_ids)
        self.queue_zones = set(queue_zones)
        self.start: float | None = None
        self.last_t = 0.0
        #: End of the last interval closed early by ``flush``: a later frame of the same
        #: aligned interval opens the rest of it, never the part already summarised.
        self.resume_at = -math.inf
        self._reset()

    def _reset(self) -> None:
        self.frames = 0
        self.counts: dict[str, dict[str, dict[str, int]]] = {}
        self.speeds: dict[int, tuple[float, int]] = {}
        self.zones: dict[str, _ZoneAcc] = {z: _ZoneAcc() for z in self.zone_ids}

    def set_zones(self, zone_ids: list[str], queue_zones: set[str]) -> None:
        """New zone geometry: zones no longer configured are dropped from the interval."""
        self.zone_ids = list(zone_ids)
        self.queue_zones = set(queue_zones)
        self.zones = {z: self.zones.get(z, _ZoneAcc()) for z in self.zone_ids}

    def boundary(self, t: float) -> float:
        """Start of the interval holding ``t``."""
        return math.floor(t / self.interval_s) * self.interval_s

    def advance(self, t: float) -> IntervalSummary | None:
        """Call with each frame's time before adding its data; returns the interval that
        a frame of a later interval closes."""
        closed = None
        if self.start is None:
            self.start = max(self.boundary(t), self.resume_at)
        elif t >= self.boundary(self.start) + self.interval_s:
            closed = self.close(self.boundary(self.start) + self.interval_s)
            self.start = max(self.boundary(t), self.resume_at)
        self.last_t = max(self.last_t, t)
        return closed

    def add_frame(self) -> None:
        self.frames += 1

    def add_crossing(self, line_id: str, direction: str, class_name: str) -> None:
        per = self.counts.setdefault(line_id, {}).setdefault(direction, {})
        per[class_name] = per.get(class_name, 0) + 1

    def add_speed(self, track_id: int, speed_kmh: float) -> None:
        s, n = self.speeds.get(track_id, (0.0, 0))
        self.speeds[track_id] = (s + speed_kmh, n + 1)

    def add_zone(self, zone_id: str, occupancy: int, queue_m: float | None) -> None:
        acc = self.zones.get(zone_id)
        if acc is None:
            return
        acc.frames += 1
        acc.occupancy_sum += occupancy
        if occupancy:
            acc.occupied_frames += 1
        if queue_m is not None:
            acc.queue_max = queue_m if acc.queue_max is None else max(acc.queue_max, queue_m)

    def add_dwell(self, zone_id: str, dwell_s: float) -> None:
        acc = self.zones.get(zone_id)
        if acc is not None:
            acc.dwells.append(dwell_s)

    def flush(self) -> IntervalSummary | None:
        """Close the open interval at the last frame's time (shutdown, camera gone)."""
        if self.start is None or self.frames == 0:
            return None
        end = min(self.boundary(self.start) + self.interval_s, max(self.last_t, self.start))
        out = self.close(end)
        self.start = None
        self.resume_at = end
        return out

    def to_state(self) -> dict[str, Any]:
        """The open interval as plain JSON data (``restore_state`` takes it back)."""
        return {
            "interval_s": self.interval_s,
            "start": self.start,
            "last_t": self.last_t,
            "resume_at": None if math.isinf(self.resume_at) else self.resume_at,
            "frames": self.frames,
            "counts": self.counts,
            "speeds": [[tid, s, n] for tid, (s, n) in self.speeds.items()],
            "zones": {
                z: [a.frames, a.occupancy_sum, a.occupied_frames, a.dwells, a.queue_max]
                for z, a in self.zones.items()
            },
        }

    def restore_state(self, state: dict[str, Any]) -> bool:
        """Reopen an interval saved by ``to_state`` (after a restart of the stage); False
        (and nothing changed) when it was saved with another interval length or does not
        parse. Zones no longer configured are dropped."""
        try:
            if float(state["interval_s"]) != self.interval_s:
                return False
            start = None if state["start"] is None else float(state["start"])
            last_t = float(state["last_t"])
            resume = state.get("resume_at")
            resume_at = -math.inf if resume is None else float(resume)
            frames = int(state["frames"])
            counts = {
                str(line): {
                    str(d): {str(c): int(n) for c, n in per.items()} for d, per in dirs.items()
                }
                for line, dirs in state["counts"].items()
            }
            speeds = {int(t): (float(sp), int(n)) for t, sp, n in state["speeds"]}
            zones = {}
            for z, (fr, occ, occf, dwells, qmax) in state["zones"].items():
                if z in self.zone_ids:
                    zones[z] = _ZoneAcc(
                        int(fr),
                        int(occ),
                        int(occf),
                        [float(x) for x in dwells],
                        None if qmax is None else float(qmax),
                    )
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        self.start, self.last_t, self.resume_at, self.frames = start, last_t, resume_at, frames
        self.counts, self.speeds = counts, speeds
        self.zones = {z: zones.get(z, _ZoneAcc()) for z in self.zone_ids}
        return True

    def close(self, end: float) -> IntervalSummary | None:
        """The summary of the open interval, ending at ``end``; the accumulators restart."""
        start = self.start if self.start is not None else end
        if self.frames == 0:
            self._reset()
            return None
        samples = [s / n for s, n in self.speeds.values() if n]
        hist: list[int] = []
        for v in samples:
            b = max(0, int(v // SPEED_BIN_KMH))
            if b >= len(hist):
                hist.extend([0] * (b + 1 - len(hist)))
            hist[b] += 1
        zones: dict[str, dict[str, float | None]] = {}
        longest: float | None = None
        for zid, acc in self.zones.items():
            queue = acc.queue_max if zid in self.queue_zones else None
            if queue is not None:
                longest = queue if longest is None else max(longest, queue)
            zones[zid] = {
                "occupancy_mean": round(acc.occupancy_sum / acc.frames, 3) if acc.frames else 0.0,
                "occupied_fraction": round(acc.occupied_frames / acc.frames, 3)
                if acc.frames
                else 0.0,
                "dwell_mean_s": round(sum(acc.dwells) / len(acc.dwells), 2) if acc.dwells else None,
                "queue_max_m": None if queue is None else round(queue, 1),
            }
        data: dict[str, Any] = {
            "interval": {"start": start, "end": end, "seconds": round(end - start, 3)},
            "interval_counts": self.counts,
            "speed": {
                "samples": len(samples),
                "mean_kmh": round(sum(samples) / len(samples), 1) if samples else None,
                "p85_kmh": round(percentile(samples, 85.0), 1) if samples else None,
                "histogram": {"bin_kmh": SPEED_BIN_KMH, "counts": hist},
            },
            "zones": zones,
            "longest_queue_m": None if longest is None else round(longest, 1),
        }
        summary = IntervalSummary(start, end, self.frames, data)
        self._reset()
        return summary
