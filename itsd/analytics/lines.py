"""Counting lines: which tracks crossed which line, in which direction, counted once.

A ``CountingLine`` is a segment in normalised image coordinates (0..1 of the frame width
and height), so one configuration fits every resolution a camera may deliver; it is scaled
to pixels on each ``LineCounter.update``.

Direction convention: stand at ``start`` and look towards ``end`` *on the image as it is
displayed* (x to the right, y down). Crossing from the left-hand side of that line to its
right-hand side is ``"in"``; the other way is ``"out"``. Example: for a horizontal line
from ``(0, 0.5)`` to ``(1, 0.5)`` the left side is the upper half of the image, so an
object moving down the image crosses ``"in"``, one moving up crosses ``"out"``. Swap
``start`` and ``end`` to swap the directions.

What is counted: the anchor of a track (a point of its box chosen per line, ``anchor``:
``center`` by default, ``bottom_center`` where a vehicle meets the road, ...) traces a
path through the boxes the tracker recorded. The default was chosen by measurement
(bench/count_tune.py): on the test clips the centre and the bottom centre count equally
well, and the centre did so over a wider range of tracker settings. A crossing counts when

* the path intersects the line *segment* (passing beyond an end point does not count),
* the anchor had been established on one side, at least the hysteresis distance away
  from the line, and
* the anchor is then established on the other side, again beyond the hysteresis distance.

A track that only touches the line, or wanders inside the hysteresis band, is not counted;
jitter of a vehicle waiting on the line cannot add counts. On top of that a track counts at
most once per line and direction. The hysteresis distance is ``hysteresis`` times the
shorter side of the frame. A track whose first anchor lies inside the band is counted only
once it has been established on one side and crosses afterwards, so lines belong where
vehicles are already tracked, not at the very edge of the picture.

The crossing's ``timestamp`` and ``position`` are those of the intersection of the anchor
path with the line, interpolated between the two anchors around it, so they are exact
even when the count itself is only confirmed a frame or two later.

Only confirmed tracks are counted, but a track's whole recorded path is replayed when it
is first confirmed, so a crossing made while it was still tentative counts (at its own
time). The class counted is the track's class (the best by accumulated detection score);
a crossing made while that class was one the line does not count is kept and counted if
the track's class later becomes one it does (a vehicle first taken for something else).
The counter keeps a little memory per track; call ``forget`` with the ids the tracker
dropped (``Tracker.pop_removed``); memory of tracks not seen for ``forget_after_s``
seconds is dropped as well.

This module must never import a stage, an engine, a GPU library, itsd.control,
itsd.monitor or itsd.cli, and it never draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from itsd.analytics.classes import class_name as _class_name
from itsd.analytics.tracker import Track

IN = "in"
OUT = "out"
DIRECTIONS: tuple[str, str] = (IN, OUT)

_LEFT = -1
_RIGHT = 1

#: Where on a track's box the point that crosses a line sits, as fractions of the box's
#: width and height from its top-left corner.
ANCHORS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "bottom_center": (0.5, 1.0),
    "top_center": (0.5, 0.0),
    "center_left": (0.0, 0.5),
    "center_right": (1.0, 0.5),
}
#: The anchor a line uses unless it names one (chosen by measurement: bench/count_tune.py).
DEFAULT_ANCHOR = "center"


def _check_point(label: str, point: tuple[float, float]) -> tuple[float, float]:
    if len(point) != 2:
        raise ValueError(f"{label} must be a point (x, y), got {point!r}")
    x, y = float(point[0]), float(point[1])
    if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"{label} must be normalised to 0..1, got {point!r}")
    return (x, y)


@dataclass(frozen=True)
class CountingLine:
    """A counting line. ``start`` and ``end`` are normalised (0..1 of width and height).

    Crossing from the left of ``start -> end`` (as displayed, y down) to its right is
    ``"in"``, the other way ``"out"`` (see the module docstring). ``classes`` restricts the
    counted class names (``None`` counts every class). ``hysteresis`` is how far, as a
    fraction of the frame's shorter side, the anchor must be from the line for its side to
    count as established.
    """

    line_id: str
    start: tuple[float, float]
    end: tuple[float, float]
    name: str = ""
    classes: frozenset[str] | None = None
    hysteresis: float = 0.01
    #: The point of a track's box that must cross: a key of ``ANCHORS``.
    anchor: str = DEFAULT_ANCHOR

    def __post_init__(self) -> None:
        if not self.line_id:
            raise ValueError("line_id must not be empty")
        if self.anchor not in ANCHORS:
            raise ValueError(
                f"line {self.line_id!r}: anchor must be one of {', '.join(ANCHORS)}, "
                f"got {self.anchor!r}"
            )
        start = _check_point(f"line {self.line_id!r}: start", self.start)
        end = _check_point(f"line {self.line_id!r}: end", self.end)
        if start == end:
            raise ValueError(f"line {self.line_id!r}: start and end must differ")
        if not (math.isfinite(self.hysteresis) and 0.0 <= self.hysteresis < 0.5):
            raise ValueError(
                f"line {self.line_id!r}: hysteresis must be in [0, 0.5), got {self.hysteresis}"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if self.classes is not None and not isinstance(self.classes, frozenset):
            object.__setattr__(self, "classes", frozenset(self.classes))

    def counts_class(self, class_name: str) -> bool:
        """Whether crossings of objects of ``class_name`` are counted on this line."""
        return self.classes is None or class_name in self.classes


@dataclass(frozen=True)
class LineCrossing:
    """One counted crossing of a counting line by a track."""

    line_id: str
    track_id: int
    class_id: int
    class_name: str
    #: ``"in"`` (left to right of start -> end) or ``"out"``.
    direction: str
    #: Capture time (seconds) of the crossing, interpolated between anchors.
    timestamp: float
    #: Pixel point where the anchor path crossed the line.
    position: tuple[float, float]


@dataclass(slots=True)
class _TrackMemory:
    """What the counter remembers of one track."""

    n_lines: int
    hits_seen: int = 0
    last_point: tuple[float, float, float, float, float] | None = None  # (t, box)
    last_seen: float = -math.inf
    #: Per line: the established side (_LEFT, _RIGHT) or 0 when not yet known.
    sides: list[int] = field(default_factory=list)
    #: Per line: latest intersection (t, x, y) since the anchor left its established side.
    pending: list[tuple[float, float, float] | None] = field(default_factory=list)
    #: (line index, direction) pairs already counted for this track.
    counted: set[tuple[int, str]] = field(default_factory=set)
    #: Crossings made while the track's class was not one the line counts, by (line
    #: index, direction): (t, x, y) of the crossing. Counted if the class changes to one
    #: the line counts.
    deferred: dict[tuple[int, str], tuple[float, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sides = [0] * self.n_lines
        self.pending = [None] * self.n_lines


@dataclass(slots=True, frozen=True)
class _PixelLine:
    """A line scaled to one frame size, with what every step needs precomputed."""

    x0: float
    y0: float
    dx: float
    dy: float
    length: float
    band: float
    ax: float
    ay: float

    def anchor(self, p: tuple[float, float, float, float, float]) -> tuple[float, float]:
        """The anchor point of the box ``(t, x_min, y_min, x_max, y_max)``."""
        return (p[1] + self.ax * (p[3] - p[1]), p[2] + self.ay * (p[4] - p[2]))


class LineCounter:
    """Counts crossings of a camera's counting lines by its confirmed tracks."""

    def __init__(
        self,
        lines: Sequence[CountingLine],
        class_names: Sequence[str],
        *,
        forget_after_s: float = 60.0,
    ) -> None:
        ids = [line.line_id for line in lines]
        if len(set(ids)) != len(ids):
            raise ValueError(f"line ids must be unique, got {ids}")
        if not (math.isfinite(forget_after_s) and forget_after_s > 0.0):
            raise ValueError(f"forget_after_s must be a positive number, got {forget_after_s}")
        self._lines: tuple[CountingLine, ...] = tuple(lines)
        self._class_names: tuple[str, ...] = tuple(class_names)
        self._forget_after_s = forget_after_s
        self._memory: dict[int, _TrackMemory] = {}
        self._totals: dict[str, dict[str, dict[str, int]]] = {}
        self._last_prune = -math.inf
        self._reset_totals()

    @property
    def lines(self) -> tuple[CountingLine, ...]:
        """The lines counted, in the order given."""
        return self._lines

    def update(
        self, tracks: Sequence[Track], frame_w: int, frame_h: int, timestamp: float
    ) -> list[LineCrossing]:
        """Process the tracks of one frame; return the crossings counted in it.

        ``tracks`` are usually what ``Tracker.update`` returned; unconfirmed tracks are
        ignored, and every anchor a track recorded since the previous call is used, so a
        frame skipped here loses nothing. ``frame_w`` and ``frame_h`` are the pixel size of
        the frame the boxes refer to.
        """
        if frame_w <= 0 or frame_h <= 0:
            raise ValueError(f"frame size must be positive, got {frame_w}x{frame_h}")
        if not self._lines:
            return []
        pixel_lines = self._pixel_lines(frame_w, frame_h)
        crossings: list[LineCrossing] = []
        for track in tracks:
            if not track.confirmed:
                continue
            mem = self._memory.get(track.track_id)
            if mem is None:
                mem = _TrackMemory(len(self._lines))
                self._memory[track.track_id] = mem
            mem.last_seen = max(mem.last_seen, timestamp)
            if mem.deferred:
                self._recheck_deferred(track, mem, out=crossings)
            history = _box_history(track)
            new = min(track.hits - mem.hits_seen, len(history))
            mem.hits_seen = track.hits
            if new <= 0:
                continue
            for k in range(len(history) - new, len(history)):
                point = history[k]
                if mem.last_point is not None:
                    self._step(track, mem, mem.last_point, point, pixel_lines, out=crossings)
                else:
                    self._first_point(mem, pixel_lines, point)
                mem.last_point = point
        if timestamp - self._last_prune >= 1.0:
            self._prune(timestamp)
        return crossings

    def totals(self) -> dict[str, dict[str, dict[str, int]]]:
        """Counts so far: ``line_id -> direction ("in"/"out") -> class name -> count``.

        Every line and both directions are present, with an empty dict before the first
        count. The result is a copy.
        """
        return {
            line_id: {direction: dict(per_class) for direction, per_class in by_dir.items()}
            for line_id, by_dir in self._totals.items()
        }

    def restore_totals(self, totals: dict[str, dict[str, dict[str, int]]]) -> None:
        """Add saved counts (``totals()``'s shape) to the lines of the same id; other lines
        and unknown directions are ignored. For totals that survive a restart."""
        for line_id, by_dir in totals.items():
            mine = self._totals.get(line_id)
            if mine is None:
                continue
            for direction, per_class in by_dir.items():
                if direction not in mine:
                    continue
                for cls, n in per_class.items():
                    mine[direction][cls] = mine[direction].get(cls, 0) + int(n)

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop what is remembered of these tracks (call with the tracker's removed ids)."""
        for track_id in track_ids:
            self._memory.pop(track_id, None)

    def reset(self) -> None:
        """Forget every track and zero the totals."""
        self._memory.clear()
        self._reset_totals()

    # ----------------------------------------------------------------- helpers

    def _reset_totals(self) -> None:
        self._totals = {line.line_id: {IN: {}, OUT: {}} for line in self._lines}

    def _pixel_lines(self, frame_w: int, frame_h: int) -> list[_PixelLine]:
        short_side = float(min(frame_w, frame_h))
        out = []
        for line in self._lines:
            x0, y0 = line.start[0] * frame_w, line.start[1] * frame_h
            dx, dy = line.end[0] * frame_w - x0, line.end[1] * frame_h - y0
            ax, ay = ANCHORS[line.anchor]
            out.append(
                _PixelLine(x0, y0, dx, dy, math.hypot(dx, dy), line.hysteresis * short_side, ax, ay)
            )
        return out

    @staticmethod
    def _first_point(
        mem: _TrackMemory,
        pixel_lines: list[_PixelLine],
        point: tuple[float, float, float, float, float],
    ) -> None:
        """Establish the sides of a track's first anchor (nothing to count yet)."""
        for li, pl in enumerate(pixel_lines):
            x, y = pl.anchor(point)
            d = (pl.dx * (y - pl.y0) - pl.dy * (x - pl.x0)) / pl.length
            if d < -pl.band:
                mem.sides[li] = _LEFT
            elif d > pl.band:
                mem.sides[li] = _RIGHT

    def _step(
        self,
        track: Track,
        mem: _TrackMemory,
        a: tuple[float, float, float, float, float],
        b: tuple[float, float, float, float, float],
        pixel_lines: list[_PixelLine],
        *,
        out: list[LineCrossing],
    ) -> None:
        """Advance every line's state of ``track`` along the box step ``a -> b``."""
        ta, tb = a[0], b[0]
        for li, pl in enumerate(pixel_lines):
            xa, ya = pl.anchor(a)
            xb, yb = pl.anchor(b)
            # Signed distances from the line: negative on the left (as displayed), positive
            # on the right.
            da = (pl.dx * (ya - pl.y0) - pl.dy * (xa - pl.x0)) / pl.length
            db = (pl.dx * (yb - pl.y0) - pl.dy * (xb - pl.x0)) / pl.length
            if (da <= 0.0 <= db or db <= 0.0 <= da) and da != db:
                s = da / (da - db)
                xs, ys = xa + s * (xb - xa), ya + s * (yb - ya)
                u = ((xs - pl.x0) * pl.dx + (ys - pl.y0) * pl.dy) / (pl.length * pl.length)
                if 0.0 <= u <= 1.0:
                    mem.pending[li] = (ta + s * (tb - ta), xs, ys)
            if db > pl.band:
                zone = _RIGHT
            elif db < -pl.band:
                zone = _LEFT
            else:
                continue  # inside the hysteresis band: nothing is decided
            side = mem.sides[li]
            hit = mem.pending[li]
            mem.pending[li] = None
            mem.sides[li] = zone
            if side in (0, zone) or hit is None:
                continue  # first established side, a return, or a pass beyond the segment
            direction = IN if side == _LEFT else OUT
            if (li, direction) in mem.counted:
                continue
            if not self._count(track, mem, li, direction, hit, out):
                mem.deferred[(li, direction)] = hit

    def _count(
        self,
        track: Track,
        mem: _TrackMemory,
        li: int,
        direction: str,
        hit: tuple[float, float, float],
        out: list[LineCrossing],
    ) -> bool:
        """Count a crossing if the line counts the track's class; whether it did."""
        line = self._lines[li]
        name = _class_name(track.class_id, self._class_names)
        if not line.counts_class(name):
            return False
        mem.counted.add((li, direction))
        mem.deferred.pop((li, direction), None)
        per_class = self._totals[line.line_id][direction]
        per_class[name] = per_class.get(name, 0) + 1
        out.append(
            LineCrossing(
                line_id=line.line_id,
                track_id=track.track_id,
                class_id=track.class_id,
                class_name=name,
                direction=direction,
                timestamp=hit[0],
                position=(hit[1], hit[2]),
            )
        )
        return True

    def _recheck_deferred(
        self, track: Track, mem: _TrackMemory, *, out: list[LineCrossing]
    ) -> None:
        """Count the deferred crossings of a track whose class the line now counts."""
        for (li, direction), hit in sorted(mem.deferred.items(), key=lambda kv: kv[1][0]):
            if (li, direction) not in mem.counted:
                self._count(track, mem, li, direction, hit, out)

    def _prune(self, timestamp: float) -> None:
        """Drop the memory of tracks not seen for ``forget_after_s`` seconds."""
        self._last_prune = timestamp
        horizon = timestamp - self._forget_after_s
        stale = [tid for tid, mem in self._memory.items() if mem.last_seen < horizon]
        for tid in stale:
            del self._memory[tid]


def _box_history(track: Track) -> Sequence[tuple[float, float, float, float, float]]:
    """The boxes a track recorded; from its bottom-centre anchors when it kept no boxes
    (then every anchor of a line is that bottom centre)."""
    if len(track.box_history) >= len(track.anchor_history):
        return track.box_history
    return [(t, x, y, x, y) for t, x, y in track.anchor_history]
