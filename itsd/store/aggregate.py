"""Re-bucket stored intervals into buckets of any size (pure functions, no database).

Buckets are aligned on the Unix epoch (a 15-minute bucket starts at :00, :15, :30, :45
UTC; a day bucket at midnight UTC); an interval belongs to the bucket its start falls in.
Within a bucket:

* crossings are summed per line, direction and class; ``covered_s`` sums the intervals'
  lengths and ``frames`` their frames (gaps show as ``covered_s`` below the bucket size);
* the mean speed is the sample-weighted mean of the intervals' means;
* the 85th percentile comes from the merged speed histograms (linear inside the bin),
  except for a bucket with one measured interval, which keeps that interval's own p85;
  when a measured interval has no histogram the bucket's p85 is unknown (``None``),
  never guessed;
* zones: occupancy and occupied fraction are time-weighted means, the dwell mean a
  time-weighted mean of the intervals that measured one, the queue its maximum; the
  longest queue is the maximum.

This module must never import anything from itsd but ``itsd.store.model``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from itsd.store.model import CountKey, IntervalRow

#: Percentile the API reports beside the mean.
P85 = 0.85


@dataclass(frozen=True, slots=True)
class ZoneBucket:
    """One zone over one bucket (``None``: not measured)."""

    zone_id: str
    occupancy_mean: float | None
    occupied_fraction: float | None
    dwell_mean_s: float | None
    queue_max_m: float | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """One camera over one bucket ``[start_ms, start_ms + bucket_ms)``."""

    camera_id: str
    start_ms: int
    bucket_ms: int
    intervals: int
    covered_s: float
    frames: int
    counts: dict[CountKey, int] = field(default_factory=dict)
    speed_samples: int = 0
    speed_mean_kmh: float | None = None
    speed_p85_kmh: float | None = None
    zones: tuple[ZoneBucket, ...] = ()
    longest_queue_m: float | None = None

    @property
    def crossings(self) -> int:
        """Every crossing of every line in the bucket."""
        return sum(self.counts.values())


def bucket_start(start_ms: int, bucket_ms: int) -> int:
    """Start of the epoch-aligned bucket ``start_ms`` falls in."""
    return (start_ms // bucket_ms) * bucket_ms


def percentile_from_histogram(
    counts: Sequence[int], bin_kmh: float, q: float = P85
) -> float | None:
    """The ``q`` quantile of a histogram (bin i is [i*bin, (i+1)*bin)), linear in the bin."""
    total = sum(counts)
    if total <= 0 or bin_kmh <= 0:
        return None
    target = q * total
    seen = 0.0
    for i, c in enumerate(counts):
        if c <= 0:
            continue
        if seen + c >= target:
            return (i + (target - seen) / c) * bin_kmh
        seen += c
    return len(counts) * bin_kmh  # unreachable with total > 0; kept for float safety


def merge_histograms(
    hists: Iterable[tuple[float, Sequence[int]]],
) -> tuple[float, list[int]] | None:
    """Add histograms; bins of another width are re-binned by their centres onto the
    widest bin width given."""
    items = [(b, list(c)) for b, c in hists if b > 0]
    if not items:
        return None
    width = max(b for b, _ in items)
    out: list[int] = []
    for b, counts in items:
        for i, c in enumerate(counts):
            if c <= 0:
                continue
            j = i if b == width else int(((i + 0.5) * b) // width)
            if j >= len(out):
                out.extend([0] * (j + 1 - len(out)))
            out[j] += c
    return width, out


def _weighted(pairs: list[tuple[float, float]]) -> float | None:
    w = sum(p[1] for p in pairs)
    if not pairs:
        return None
    if w <= 0:
        return sum(p[0] for p in pairs) / len(pairs)
    return sum(v * wt for v, wt in pairs) / w


def _max(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def merge(
    camera_id: str,
    start_ms: int,
    bucket_ms: int,
    rows: Sequence[IntervalRow],
    counts: Mapping[CountKey, int] | None = None,
) -> Bucket:
    """One bucket from the intervals that fall in it (see the module docstring);
    ``counts``: the bucket's crossings when the database summed them already."""
    if counts is None:
        summed: dict[CountKey, int] = {}
        for r in rows:
            for k, n in r.counts.items():
                summed[k] = summed.get(k, 0) + n
        counts = summed
    measured = [r for r in rows if r.speed_samples > 0 and r.speed_mean_kmh is not None]
    samples = sum(r.speed_samples for r in measured)
    mean = (
        sum(r.speed_samples * (r.speed_mean_kmh or 0.0) for r in measured) / samples
        if samples
        else None
    )
    p85: float | None = None
    if len(measured) == 1:
        p85 = measured[0].speed_p85_kmh
    elif measured and all(
        r.speed_histogram is not None and r.speed_bin_kmh is not None for r in measured
    ):
        merged = merge_histograms(
            (r.speed_bin_kmh or 0.0, r.speed_histogram or ()) for r in measured
        )
        if merged is not None:
            p85 = percentile_from_histogram(merged[1], merged[0])
    zone_ids = sorted({z.zone_id for r in rows for z in r.zones})
    zones = []
    for zid in zone_ids:
        occ: list[tuple[float, float]] = []
        frac: list[tuple[float, float]] = []
        dwell: list[tuple[float, float]] = []
        queue: list[float | None] = []
        for r in rows:
            for z in r.zones:
                if z.zone_id != zid:
                    continue
                if z.occupancy_mean is not None:
                    occ.append((z.occupancy_mean, r.seconds))
                if z.occupied_fraction is not None:
                    frac.append((z.occupied_fraction, r.seconds))
                if z.dwell_mean_s is not None:
                    dwell.append((z.dwell_mean_s, r.seconds))
                queue.append(z.queue_max_m)
        zones.append(
            ZoneBucket(zid, _weighted(occ), _weighted(frac), _weighted(dwell), _max(queue))
        )
    return Bucket(
        camera_id=camera_id,
        start_ms=start_ms,
        bucket_ms=bucket_ms,
        intervals=len(rows),
        covered_s=sum(r.seconds for r in rows),
        frames=sum(r.frames for r in rows),
        counts=dict(counts),
        speed_samples=samples,
        speed_mean_kmh=mean,
        speed_p85_kmh=p85,
        zones=tuple(zones),
        longest_queue_m=_max(r.longest_queue_m for r in rows),
    )


def rebucket(
    rows: Iterable[IntervalRow],
    bucket_ms: int,
    counts: Mapping[tuple[str, int], Mapping[CountKey, int]] | None = None,
) -> list[Bucket]:
    """Buckets of ``bucket_ms`` from intervals, ordered by camera then start; buckets
    without an interval are absent. ``counts`` (camera, bucket start) -> crossings, when
    the database summed them (the rows' own counts are then not used)."""
    if bucket_ms <= 0:
        raise ValueError(f"bucket size must be > 0 ms, got {bucket_ms}")
    groups: dict[tuple[str, int], list[IntervalRow]] = {}
    for r in rows:
        groups.setdefault((r.camera_id, bucket_start(r.start_ms, bucket_ms)), []).append(r)
    return [
        merge(
            cam,
            start,
            bucket_ms,
            sorted(groups[(cam, start)], key=lambda r: r.start_ms),
            None if counts is None else counts.get((cam, start), {}),
        )
        for cam, start in sorted(groups)
    ]
