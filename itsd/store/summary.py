"""Turn an ``analytics_summary`` event into an ``IntervalRow`` (strictly checked).

The event (topic analytics_events) carries in ``data``: ``interval`` (``start``, ``end``
RFC 3339, ``seconds``), ``interval_counts`` (line -> direction -> class -> crossings in
the interval), ``speed`` (``samples``, ``mean_kmh``, ``p85_kmh``, ``histogram``
``{"bin_kmh", "counts"}``; absent or null without calibration), ``zones`` (zone ->
``occupancy_mean``, ``occupied_fraction``, ``dwell_mean_s``, ``queue_max_m``),
``longest_queue_m``, plus ``frames`` and ``vehicles_in_view``. A summary without
``interval`` (older analytics) gives ``None``: it has nothing to store. Anything
malformed raises ``SummaryError`` naming the field, so one bad event is skipped and
counted instead of blocking the others.

This module must never import anything from itsd but ``itsd.store.model``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from itsd.store.model import CountKey, IntervalRow, ZoneRow

ID_LEN = 64
NAME_LEN = 32


class SummaryError(ValueError):
    """A summary event that cannot be stored; the message names the field."""


def ms_from_rfc3339(text: Any, what: str) -> int:
    """Unix milliseconds of an RFC 3339 time (``...Z`` or with an offset)."""
    if not isinstance(text, str):
        raise SummaryError(f"{what}: expected an RFC 3339 time, got {text!r}")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise SummaryError(f"{what}: not an RFC 3339 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def _num(value: Any, what: str, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SummaryError(f"{what}: expected a number, got {value!r}")
    return float(value)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SummaryError(f"{what}: expected a count (integer >= 0), got {value!r}")
    return value


def _name(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise SummaryError(f"{what}: expected a name of 1 to {limit} characters, got {value!r}")
    return value


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SummaryError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def interval_from_event(event: dict[str, Any]) -> IntervalRow | None:
    """The interval an ``analytics_summary`` event describes; None when it has none."""
    if event.get("event_type") != "analytics_summary":
        raise SummaryError(
            f"event_type: expected analytics_summary, got {event.get('event_type')!r}"
        )
    camera_id = _name(event.get("camera_id"), "camera_id", ID_LEN)
    data = _mapping(event.get("data"), "data")
    if data.get("interval") is None:
        return None
    iv = _mapping(data["interval"], "data.interval")
    start_ms = ms_from_rfc3339(iv.get("start"), "data.interval.start")
    end_ms = ms_from_rfc3339(iv.get("end"), "data.interval.end")
    if end_ms < start_ms:
        raise SummaryError("data.interval: end is before start")
    seconds = _num(iv.get("seconds"), "data.interval.seconds", optional=True)
    if seconds is None:
        seconds = (end_ms - start_ms) / 1000.0
    if seconds < 0:
        raise SummaryError(f"data.interval.seconds: must be >= 0, got {seconds}")

    counts: dict[CountKey, int] = {}
    for line_id, by_dir in _mapping(data.get("interval_counts"), "data.interval_counts").items():
        where = f"data.interval_counts.{line_id}"
        _name(line_id, where, ID_LEN)
        for direction, by_class in _mapping(by_dir, where).items():
            _name(direction, f"{where}.{direction}", NAME_LEN)
            for cls, n in _mapping(by_class, f"{where}.{direction}").items():
                _name(cls, f"{where}.{direction}.{cls}", NAME_LEN)
                k = _count(n, f"{where}.{direction}.{cls}")
                if k:
                    counts[(line_id, direction, cls)] = k

    samples, mean, p85, bin_kmh, hist = 0, None, None, None, None
    speed = data.get("speed")
    if speed is not None:
        sp = _mapping(speed, "data.speed")
        samples = _count(sp.get("samples", 0), "data.speed.samples")
        mean = _num(sp.get("mean_kmh"), "data.speed.mean_kmh")
        p85 = _num(sp.get("p85_kmh"), "data.speed.p85_kmh")
        h = sp.get("histogram")
        if h is not None:
            hm = _mapping(h, "data.speed.histogram")
            bin_kmh = _num(hm.get("bin_kmh"), "data.speed.histogram.bin_kmh", optional=False)
            assert bin_kmh is not None
            if bin_kmh <= 0:
                raise SummaryError("data.speed.histogram.bin_kmh: must be > 0")
            raw = hm.get("counts")
            if not isinstance(raw, list):
                raise SummaryError("data.speed.histogram.counts: expected a list of counts")
            hist = tuple(_count(c, "data.speed.histogram.counts[]") for c in raw)

    zones = []
    for zone_id, z in sorted(_mapping(data.get("zones"), "data.zones").items()):
        where = f"data.zones.{zone_id}"
        _name(zone_id, where, ID_LEN)
        zm = _mapping(z, where)
        zones.append(
            ZoneRow(
                zone_id,
                _num(zm.get("occupancy_mean"), f"{where}.occupancy_mean"),
                _num(zm.get("occupied_fraction"), f"{where}.occupied_fraction"),
                _num(zm.get("dwell_mean_s"), f"{where}.dwell_mean_s"),
                _num(zm.get("queue_max_m"), f"{where}.queue_max_m"),
            )
        )
    return IntervalRow(
        camera_id=camera_id,
        start_ms=start_ms,
        end_ms=end_ms,
        seconds=seconds,
        frames=_count(data.get("frames", 0), "data.frames"),
        vehicles_in_view=_count(data.get("vehicles_in_view", 0), "data.vehicles_in_view"),
        counts=counts,
        speed_samples=samples,
        speed_mean_kmh=mean,
        speed_p85_kmh=p85,
        speed_bin_kmh=bin_kmh,
        speed_histogram=hist,
        zones=tuple(zones),
        longest_queue_m=_num(data.get("longest_queue_m"), "data.longest_queue_m"),
    )
