"""Re-bucketing of stored intervals: sums, weighted means, p85 from merged histograms."""

from __future__ import annotations

import pytest

from itsd.store.aggregate import (
    bucket_start,
    merge_histograms,
    percentile_from_histogram,
    rebucket,
)
from itsd.store.model import IntervalRow, ZoneRow

MIN = 60_000


def row(
    start_min: int,
    counts: dict[tuple[str, str, str], int] | None = None,
    samples: int = 0,
    mean: float | None = None,
    p85: float | None = None,
    hist: tuple[int, ...] | None = None,
    camera: str = "cam",
    seconds: float = 60.0,
    zones: tuple[ZoneRow, ...] = (),
    queue: float | None = None,
) -> IntervalRow:
    return IntervalRow(
        camera_id=camera,
        start_ms=start_min * MIN,
        end_ms=start_min * MIN + int(seconds * 1000),
        seconds=seconds,
        frames=int(seconds * 10),
        counts=counts or {},
        speed_samples=samples,
        speed_mean_kmh=mean,
        speed_p85_kmh=p85,
        speed_bin_kmh=5.0 if hist is not None else None,
        speed_histogram=hist,
        zones=zones,
        longest_queue_m=queue,
    )


def test_buckets_are_epoch_aligned_and_hold_the_intervals_starting_in_them() -> None:
    assert bucket_start(14 * MIN + 59_999, 15 * MIN) == 0
    assert bucket_start(15 * MIN, 15 * MIN) == 15 * MIN
    rows = [row(m, {("l", "in", "car"): 1}) for m in range(0, 31)]
    buckets = rebucket(rows, 15 * MIN)
    assert [(b.start_ms, b.intervals, b.crossings) for b in buckets] == [
        (0, 15, 15),
        (15 * MIN, 15, 15),
        (30 * MIN, 1, 1),
    ]
    assert buckets[0].covered_s == 15 * 60.0
    assert buckets[0].frames == 15 * 600


def test_counts_are_summed_per_line_direction_and_class_and_cameras_stay_apart() -> None:
    rows = [
        row(0, {("a", "in", "car"): 2, ("a", "out", "truck"): 1}),
        row(1, {("a", "in", "car"): 3, ("b", "in", "car"): 4}),
        row(1, {("a", "in", "car"): 7}, camera="other"),
    ]
    cam, other = rebucket(rows, 5 * MIN)
    assert cam.counts == {("a", "in", "car"): 5, ("a", "out", "truck"): 1, ("b", "in", "car"): 4}
    assert (other.camera_id, other.counts) == ("other", {("a", "in", "car"): 7})


def test_mean_speed_is_weighted_by_samples_and_p85_comes_from_merged_histograms() -> None:
    # 10 samples in 40-45 km/h, then 30 samples in 60-65 km/h.
    h1 = (0,) * 8 + (10,)
    h2 = (0,) * 12 + (30,)
    (b,) = rebucket(
        [
            row(0, samples=10, mean=42.0, p85=44.0, hist=h1),
            row(1, samples=30, mean=62.0, p85=64.0, hist=h2),
        ],
        2 * MIN,
    )
    assert b.speed_samples == 40
    assert b.speed_mean_kmh == pytest.approx((10 * 42 + 30 * 62) / 40)
    # 85 % of 40 = 34: the 24th of the 30 samples of the 60-65 bin -> 60 + 24/30 * 5.
    assert b.speed_p85_kmh == pytest.approx(64.0)


def test_one_measured_interval_keeps_its_own_p85_and_unmeasured_ones_do_not_dilute() -> None:
    (b,) = rebucket(
        [row(0, samples=8, mean=50.0, p85=57.3, hist=(0,) * 10 + (8,)), row(1), row(2, samples=0)],
        5 * MIN,
    )
    assert (b.speed_samples, b.speed_mean_kmh, b.speed_p85_kmh) == (8, 50.0, 57.3)


def test_p85_is_unknown_when_a_measured_interval_has_no_histogram() -> None:
    (b,) = rebucket(
        [
            row(0, samples=5, mean=40.0, p85=45.0, hist=(0,) * 8 + (5,)),
            row(1, samples=5, mean=50.0, p85=55.0),
        ],
        5 * MIN,
    )
    assert b.speed_mean_kmh == pytest.approx(45.0)
    assert b.speed_p85_kmh is None


def test_no_speed_without_samples() -> None:
    (b,) = rebucket([row(0), row(1)], 5 * MIN)
    assert (b.speed_samples, b.speed_mean_kmh, b.speed_p85_kmh) == (0, None, None)


def test_zones_are_time_weighted_and_queues_take_the_maximum() -> None:
    (b,) = rebucket(
        [
            row(0, seconds=60, zones=(ZoneRow("z", 1.0, 0.5, 10.0, 12.0),), queue=12.0),
            row(1, seconds=20, zones=(ZoneRow("z", 3.0, 1.0, None, 30.0),), queue=30.0),
            row(2, seconds=20, zones=(ZoneRow("z", 0.0, 0.0, 4.0, None),), queue=None),
        ],
        5 * MIN,
    )
    (z,) = b.zones
    assert z.occupancy_mean == pytest.approx((60 * 1.0 + 20 * 3.0) / 100)
    assert z.occupied_fraction == pytest.approx((60 * 0.5 + 20 * 1.0) / 100)
    assert z.dwell_mean_s == pytest.approx((60 * 10.0 + 20 * 4.0) / 80)
    assert z.queue_max_m == 30.0
    assert b.longest_queue_m == 30.0


def test_histogram_percentile_and_merge_of_other_bin_widths() -> None:
    assert percentile_from_histogram([0, 0, 10], 5.0, 0.5) == pytest.approx(12.5)
    assert percentile_from_histogram([], 5.0) is None
    assert percentile_from_histogram([0, 0], 5.0) is None
    # A 2.5 km/h histogram folds into 5 km/h bins by bin centre.
    assert merge_histograms([(5.0, [1, 2]), (2.5, [0, 0, 4, 4])]) == (5.0, [1, 10])
    assert merge_histograms([]) is None


def test_a_bucket_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="bucket size"):
        rebucket([row(0)], 0)
