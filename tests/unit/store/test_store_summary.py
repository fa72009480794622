"""analytics_summary events into interval rows: the agreed shape, older events, bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from itsd.store.summary import SummaryError, interval_from_event

T0 = 1_795_000_000.0  # 2026-11-18


def test_a_full_summary_becomes_one_row(make_summary: Callable[..., dict[str, Any]]) -> None:
    ev = make_summary(
        "cam-1",
        T0,
        60.0,
        counts={"north": {"in": {"car": 3, "truck": 0}, "out": {"bus": 1}}},
        speeds=[40.0, 52.0, 61.0],
        zones={
            "lane1": {
                "occupancy_mean": 1.5,
                "occupied_fraction": 0.75,
                "dwell_mean_s": None,
                "queue_max_m": 18.0,
            }
        },
        longest_queue_m=18.0,
    )
    r = interval_from_event(ev)
    assert r is not None
    assert (r.camera_id, r.start_ms, r.end_ms, r.seconds, r.frames) == (
        "cam-1",
        int(T0 * 1000),
        int(T0 * 1000) + 60_000,
        60.0,
        600,
    )
    assert r.counts == {("north", "in", "car"): 3, ("north", "out", "bus"): 1}  # zeros dropped
    assert (r.speed_samples, r.speed_bin_kmh) == (3, 5.0)
    assert r.speed_mean_kmh == pytest.approx(51.0)
    assert r.speed_histogram is not None and sum(r.speed_histogram) == 3
    (z,) = r.zones
    assert (z.zone_id, z.occupancy_mean, z.dwell_mean_s, z.queue_max_m) == (
        "lane1",
        1.5,
        None,
        18.0,
    )
    assert r.longest_queue_m == 18.0


def test_without_calibration_speed_is_absent_not_zero(
    make_summary: Callable[..., dict[str, Any]],
) -> None:
    ev = make_summary("cam-1", T0)
    ev["data"]["speed"] = None
    r = interval_from_event(ev)
    assert r is not None
    assert (r.speed_samples, r.speed_mean_kmh, r.speed_p85_kmh, r.speed_histogram) == (
        0,
        None,
        None,
        None,
    )


def test_an_older_summary_without_interval_gives_none(
    make_summary: Callable[..., dict[str, Any]],
) -> None:
    assert interval_from_event(make_summary("cam-1", T0, interval=False)) is None


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("data", "interval", "start"), "yesterday", "data.interval.start"),
        (("data", "interval", "end"), "2020-01-01T00:00:00Z", "data.interval"),
        (("data", "interval_counts"), {"l": {"in": {"car": -1}}}, "data.interval_counts.l.in.car"),
        (
            ("data", "interval_counts"),
            {"l": {"in": {"car": True}}},
            "data.interval_counts.l.in.car",
        ),
        (("data", "speed"), {"samples": 2, "mean_kmh": "fast"}, "data.speed.mean_kmh"),
        (("data", "speed"), {"samples": 1, "histogram": {"bin_kmh": 0, "counts": []}}, "bin_kmh"),
        (("data", "zones"), {"z": {"occupancy_mean": float("nan")}}, "data.zones.z.occupancy_mean"),
        (("camera_id",), "", "camera_id"),
        (("camera_id",), "c" * 65, "camera_id"),
    ],
)
def test_malformed_fields_are_named(
    make_summary: Callable[..., dict[str, Any]], path: tuple[str, ...], value: Any, field: str
) -> None:
    ev = make_summary("cam-1", T0, speeds=[50.0])
    node = ev
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(SummaryError, match=field.replace(".", r"\.")):
        interval_from_event(ev)
