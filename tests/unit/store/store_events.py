"""analytics_summary events as the analytics stage makes them, for the store tests (unit and
integration)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from itsd.records import EventRecord, EventType, Topic, rfc3339_from_ns


def summary_event(
    camera_id: str,
    start_s: float,
    seconds: float = 60.0,
    counts: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
    speeds: list[float] | None = None,
    zones: Mapping[str, Mapping[str, Any]] | None = None,
    longest_queue_m: float | None = None,
    frames: int = 600,
    interval: bool = True,
) -> dict[str, Any]:
    """The JSON of an analytics_summary event for one interval (speeds: the measured
    values; their mean, p85 and 5 km/h histogram are computed as analytics does)."""
    data: dict[str, Any] = {
        "period_s": seconds,
        "frames": frames,
        "vehicles_in_view": 2,
        "line_totals": {},
    }
    if interval:
        start_ns = int(start_s * 1e9)
        data["interval"] = {
            "start": rfc3339_from_ns(start_ns),
            "end": rfc3339_from_ns(start_ns + int(seconds * 1e9)),
            "seconds": seconds,
        }
        data["interval_counts"] = {
            k: {d: dict(c) for d, c in v.items()} for k, v in (counts or {}).items()
        }
        if speeds is not None:
            hist = [0] * (int(max(speeds, default=0) // 5) + 1)
            for v in speeds:
                hist[int(v // 5)] += 1
            ordered = sorted(speeds)
            data["speed"] = {
                "samples": len(speeds),
                "mean_kmh": sum(speeds) / len(speeds) if speeds else None,
                "p85_kmh": ordered[min(len(ordered) - 1, int(0.85 * len(ordered)))]
                if speeds
                else None,
                "histogram": {"bin_kmh": 5, "counts": hist},
            }
        data["zones"] = {k: dict(v) for k, v in (zones or {}).items()}
        data["longest_queue_m"] = longest_queue_m
    return {
        "event_type": "analytics_summary",
        "schema_version": "1.0",
        "timestamp": rfc3339_from_ns(int((start_s + seconds) * 1e9)),
        "camera_id": camera_id,
        "frame_id": 0,
        "data": data,
    }


def as_record(event: dict[str, Any]) -> EventRecord:
    """The event as it travels the event ring."""
    return EventRecord(
        Topic.ANALYTICS,
        event["camera_id"],
        json.dumps(event, separators=(",", ":")).encode(),
        EventType.ANALYTICS_SUMMARY,
    )
