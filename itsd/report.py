"""``itsd report``: one camera's traffic over a time range, as a table and a PNG chart.

The buckets come from a running daemon (GetAggregatedMetrics) or, with ``--config``,
straight from the store that configuration names (the daemon need not run); both give
the same numbers (``itsd.store.aggregate``). The table has one row per bucket with data:
crossings (all lines, then per line and direction), mean and 85th-percentile speed, the
speed samples, the longest queue and the time covered, and a total row. The chart (drawn
with OpenCV, no plotting library) stacks the crossings per class above the mean and p85
speeds.

This module must never import a stage, an engine or a GPU library, and imports numpy and
OpenCV only when it draws (``itsd --help`` stays instant).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from itsd.control.backend import AggregateBucket
from itsd.store.aggregate import Bucket, ZoneBucket

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Bucket sizes chosen when none is given: the smallest that keeps the table short.
NICE_BUCKETS_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
MAX_AUTO_BUCKETS = 96


def parse_duration(text: str) -> int:
    """Seconds of ``90s``, ``15m``, ``24h``, ``7d``, ``2w`` or a plain number of seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 15m, 24h, 7d)")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds < 1:
        raise ValueError(f"{text!r} is shorter than a second")
    return round(seconds)


def choose_bucket(span_s: float) -> int:
    """The smallest nice bucket size giving at most ``MAX_AUTO_BUCKETS`` buckets."""
    for b in NICE_BUCKETS_S:
        if span_s / b <= MAX_AUTO_BUCKETS:
            return b
    return NICE_BUCKETS_S[-1]


def from_control(b: AggregateBucket) -> Bucket:
    """A bucket as the control API gives it, as the store's bucket."""
    counts = {
        (line, direction, cls): n
        for line, by_dir in b.line_counts.items()
        for direction, by_cls in by_dir.items()
        for cls, n in by_cls.items()
    }
    return Bucket(
        camera_id=b.camera_id,
        start_ms=round(b.start * 1000),
        bucket_ms=round(b.bucket_s * 1000),
        intervals=b.intervals,
        covered_s=b.covered_s,
        frames=b.frames,
        counts=counts,
        speed_samples=b.speed_samples,
        speed_mean_kmh=b.avg_speed_kmh,
        speed_p85_kmh=b.p85_speed_kmh,
        zones=tuple(
            ZoneBucket(
                z.zone_id, z.occupancy_mean, z.occupied_fraction, z.dwell_mean_s, z.queue_max_m
            )
            for z in b.zones
        ),
        longest_queue_m=b.longest_queue_m,
    )


def _utc(ms: int, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime(fmt)


def _size(seconds: float) -> str:
    s = int(seconds)
    if s % 86400 == 0:
        return f"{s // 86400}-day"
    if s % 3600 == 0:
        return f"{s // 3600}-hour"
    if s % 60 == 0:
        return f"{s // 60}-minute"
    return f"{s}-second"


def _covered(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def _num(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def merge_all(buckets: Sequence[Bucket]) -> tuple[dict[tuple[str, str], int], int, float | None]:
    """Crossings per (line, direction) over all buckets, speed samples, weighted mean."""
    per: dict[tuple[str, str], int] = {}
    for b in buckets:
        for (line, direction, _), n in b.counts.items():
            per[(line, direction)] = per.get((line, direction), 0) + n
    samples = sum(b.speed_samples for b in buckets if b.speed_mean_kmh is not None)
    mean = (
        sum(
            b.speed_samples * (b.speed_mean_kmh or 0.0)
            for b in buckets
            if b.speed_mean_kmh is not None
        )
        / samples
        if samples
        else None
    )
    return per, samples, mean


def table(
    buckets: Sequence[Bucket], camera_id: str, start: float, end: float, bucket_s: int
) -> str:
    """The report as text: a title line, one row per bucket with data, a total row."""
    title = (
        f"camera {camera_id}: {_utc(int(start * 1000))} to {_utc(int(end * 1000))} UTC, "
        f"{_size(bucket_s)} buckets"
    )
    if not buckets:
        return f"{title}\nno data in this range (no analytics interval was stored)"
    per, samples, mean = merge_all(buckets)
    pairs = sorted(per)[:6]  # more lines and directions than fit: the total still counts all
    head = ["start (UTC)", "crossings", *[f"{line}:{d}" for line, d in pairs]]
    head += ["mean km/h", "p85 km/h", "samples", "queue m", "covered"]
    rows: list[list[str]] = []
    for b in buckets:
        by_pair = {p: 0 for p in pairs}
        for (line, direction, _), n in b.counts.items():
            if (line, direction) in by_pair:
                by_pair[(line, direction)] += n
        rows.append(
            [
                _utc(b.start_ms),
                str(b.crossings),
                *[str(by_pair[p]) for p in pairs],
                _num(b.speed_mean_kmh),
                _num(b.speed_p85_kmh),
                str(b.speed_samples),
                _num(b.longest_queue_m),
                _covered(b.covered_s),
            ]
        )
    queue = [b.longest_queue_m for b in buckets if b.longest_queue_m is not None]
    rows.append(
        [
            "total",
            str(sum(b.crossings for b in buckets)),
            *[str(per[p]) for p in pairs],
            _num(mean),
            "",
            str(samples),
            _num(max(queue) if queue else None),
            _covered(sum(b.covered_s for b in buckets)),
        ]
    )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    return "\n".join([title, fmt(head), *[fmt(r) for r in rows]])


# ---------------------------------------------------------------- the chart

_CLASS_COLOURS = {  # BGR
    "car": (201, 120, 31),
    "truck": (14, 127, 255),
    "bus": (44, 160, 44),
    "motorcycle": (40, 39, 214),
    "bicycle": (189, 103, 148),
    "person": (75, 86, 140),
}
_OTHER = (127, 127, 127)


def _nice_step(top: float, ticks: int = 5) -> float:
    raw = max(top, 1e-9) / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return float(m * mag)
    return float(10 * mag)


def chart(
    buckets: Sequence[Bucket],
    camera_id: str,
    start: float,
    end: float,
    bucket_s: int,
    path: Path,
    size: tuple[int, int] = (1200, 720),
) -> Path:
    """Write the PNG chart (crossings per class, stacked; mean and p85 speed) to ``path``."""
    import cv2
    import numpy as np

    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    left, right, top = 80, 30, 50
    panel_h = (h - top - 90) // 2
    p1 = (top, top + panel_h)  # crossings
    p2 = (top + panel_h + 40, top + 2 * panel_h + 40)  # speed
    t0 = math.floor(start / bucket_s) * bucket_s
    n = max(1, math.ceil((end - t0) / bucket_s))
    slot = (w - left - right) / n

    def x_of(ms: int) -> float:
        return left + ((ms / 1000 - t0) / bucket_s) * slot

    title = f"itsd report - camera {camera_id} - {_size(bucket_s)} buckets (UTC)"
    cv2.putText(img, title, (left, 30), font, 0.7, (0, 0, 0), 2, cv2.LINE_AA)

    def axes(y0: int, y1: int, ymax: float, label: str) -> float:
        step = _nice_step(ymax)
        ytop = step * math.ceil(max(ymax, step) / step)
        v = 0.0
        while v <= ytop + 1e-9:
            y = int(y1 - (v / ytop) * (y1 - y0))
            cv2.line(img, (left, y), (w - right, y), (225, 225, 225), 1)
            cv2.putText(img, f"{v:g}", (8, y + 5), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
            v += step
        cv2.line(img, (left, y0), (left, y1), (0, 0, 0), 1)
        cv2.line(img, (left, y1), (w - right, y1), (0, 0, 0), 1)
        cv2.putText(img, label, (left + 6, y0 + 16), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        return ytop

    # Crossings, stacked by class.
    classes = sorted({k[2] for b in buckets for k in b.counts})
    cmax = max((b.crossings for b in buckets), default=0)
    ctop = axes(p1[0], p1[1], float(max(cmax, 1)), "crossings per bucket")
    for b in buckets:
        x0 = int(x_of(b.start_ms) + max(1.0, slot * 0.1))
        x1 = int(x_of(b.start_ms) + slot - max(1.0, slot * 0.1))
        y = float(p1[1])
        for cls in classes:
            v = sum(n for (_, _, c), n in b.counts.items() if c == cls)
            if v <= 0:
                continue
            hgt = v / ctop * (p1[1] - p1[0])
            cv2.rectangle(
                img,
                (x0, int(y - hgt)),
                (max(x0 + 1, x1), int(y)),
                _CLASS_COLOURS.get(cls, _OTHER),
                -1,
            )
            y -= hgt
    lx = w - right - 110 * max(1, len(classes))
    for i, cls in enumerate(classes):
        x = lx + 110 * i
        cv2.rectangle(
            img, (x, p1[0] - 14), (x + 12, p1[0] - 2), _CLASS_COLOURS.get(cls, _OTHER), -1
        )
        cv2.putText(img, cls, (x + 16, p1[0] - 3), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)

    # Speeds: mean (solid) and p85 (thin), points joined within runs of buckets.
    speeds = [v for b in buckets for v in (b.speed_mean_kmh, b.speed_p85_kmh) if v is not None]
    stop = axes(p2[0], p2[1], max(speeds, default=50.0), "speed km/h: mean (thick), p85 (thin)")
    for attr, colour, thick in (
        ("speed_mean_kmh", (160, 60, 0), 2),
        ("speed_p85_kmh", (0, 0, 200), 1),
    ):
        prev: tuple[int, int] | None = None
        prev_ms: int | None = None
        for b in buckets:
            speed: Any = getattr(b, attr)
            if speed is None:
                prev = None
                continue
            pt = (int(x_of(b.start_ms) + slot / 2), int(p2[1] - speed / stop * (p2[1] - p2[0])))
            if prev is not None and prev_ms is not None and b.start_ms - prev_ms <= b.bucket_ms:
                cv2.line(img, prev, pt, colour, thick, cv2.LINE_AA)
            cv2.circle(img, pt, 3 if thick > 1 else 2, colour, -1, cv2.LINE_AA)
            prev, prev_ms = pt, b.start_ms

    # Time labels under the speed panel.
    every = max(1, math.ceil(n / 8))
    last_day = ""
    for i in range(0, n + 1, every):
        ms = int((t0 + i * bucket_s) * 1000)
        x = int(left + i * slot)
        cv2.line(img, (x, p2[1]), (x, p2[1] + 5), (0, 0, 0), 1)
        day = _utc(ms, "%Y-%m-%d")
        label = _utc(ms, "%H:%M") if day == last_day else _utc(ms, "%m-%d %H:%M")
        last_day = day
        cv2.putText(img, label, (x - 20, p2[1] + 22), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    if not buckets:
        cv2.putText(
            img, "no data in this range", (left + 20, p1[0] + 40), font, 0.8, (0, 0, 200), 2
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")
    return path
