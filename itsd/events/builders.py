"""One builder per event type: the only place event JSON is put together.

Each builder takes plain values, rounds them the way the schema documents, and returns
an ``EventRecord`` (topic, Kafka key, event type, compact JSON payload) ready for the
event ring or a sink. Field meanings are in ``proto/itsd/v1/events.proto`` and in the
schema files next to this module.

This module must never import a stage, the supervisor, ``control``, ``monitor``, numpy or
a GPU library: it is called for every frame and must stay cheap.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from itsd.records import EventRecord, EventType, Topic, rfc3339_from_ns

#: Version of the event schemas (see ``itsd.events`` for the rules of change).
SCHEMA_VERSION = "1.3"
# 1.1: vehicle_type, speed_kmh and heading on detections and line crossings; interval,
# interval_counts, speed, zones and longest_queue_m on analytics_summary; state,
# alert_id, evidence and snapshot_path on alerts; ALERT_TYPE_CAMERA_BLIND.
# 1.2: ``node`` in the envelope of every event: the itsd node that produced it.

#: The node that produces the events (``fleet.node_id`` or the host name), put in the
#: environment by the supervisor before it starts the stages; None leaves ``node`` out.
NODE: str | None = os.environ.get("ITSD_NODE") or None

#: Alert types: the traffic ones of ``events.proto`` plus the daemon's own.
ALERT_TYPES = (
    "ALERT_TYPE_UNSPECIFIED",
    "ALERT_TYPE_SPEEDING",
    "ALERT_TYPE_WRONG_WAY",
    "ALERT_TYPE_STOPPED_VEHICLE",
    "ALERT_TYPE_CONGESTION",
    "ALERT_TYPE_CAMERA_BLIND",
    "ALERT_TYPE_SPOOL_NEAR_FULL",
    "ALERT_TYPE_SPOOL_FULL",
    # The daemon's alert rules (itsd.runtime.alerts; details.rule names the rule).
    "ALERT_TYPE_INFERENCE_LATENCY",
    "ALERT_TYPE_GPU_UTILIZATION",
    "ALERT_TYPE_ERROR_RATE",
    "ALERT_TYPE_QUEUE_DEPTH",
    "ALERT_TYPE_THROUGHPUT",
    "ALERT_TYPE_MEMORY",
)
SEVERITIES = (
    "ALERT_SEVERITY_UNSPECIFIED",
    "ALERT_SEVERITY_INFO",
    "ALERT_SEVERITY_WARNING",
    "ALERT_SEVERITY_CRITICAL",
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _envelope(
    kind: EventType, wall_ns: int, camera_id: str, frame_id: int, data: dict[str, Any]
) -> dict[str, Any]:
    env = {
        "event_type": kind.wire_name,
        "schema_version": SCHEMA_VERSION,
        "timestamp": rfc3339_from_ns(wall_ns),
        "camera_id": camera_id,
        "frame_id": frame_id,
        "data": data,
    }
    if NODE is not None:
        env["node"] = NODE
    return env


def _record(topic: Topic, kind: EventType, key: str, obj: dict[str, Any]) -> EventRecord:
    return EventRecord(topic, key, _dumps(obj), kind)


def detection_item(
    class_name: str,
    confidence: float,
    box: Sequence[float],
    tracking_id: int | None,
    is_vehicle: bool,
    vehicle_type: str | None = None,
    speed_kmh: float | None = None,
    heading: str | None = None,
    class_id: int | None = None,
) -> dict[str, Any]:
    """One detection of a detection event (box in frame pixels, x_min y_min x_max y_max).

    ``speed_kmh`` and ``heading`` are left out when unknown (no calibration, a young or
    still track); ``class_id`` is the model's class index (COCO numbering for YOLO11)."""
    x0, y0, x1, y1 = (round(float(v), 1) for v in box)
    item: dict[str, Any] = {
        "class_name": class_name,
        "confidence": round(float(confidence), 4),
        "bbox": {"x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1},
        "tracking_id": tracking_id,
        "is_vehicle": bool(is_vehicle),
    }
    if class_id is not None:
        item["class_id"] = int(class_id)
    if vehicle_type is not None:
        item["vehicle_type"] = vehicle_type
    if speed_kmh is not None:
        item["speed_kmh"] = round(speed_kmh, 1)
    if heading is not None:
        item["heading"] = heading
    return item


def detection_event(
    camera_id: str,
    frame_id: int,
    capture_wall_ns: int,
    detections: list[dict[str, Any]],
    width: int,
    height: int,
    inference_ms: float,
    capture_to_analytics_ms: float,
    batch_size: int,
) -> EventRecord:
    """``detection`` (topic detection_events): the detections of one frame."""
    data = {
        "detections": detections,
        "vehicle_count": sum(1 for d in detections if d["is_vehicle"]),
        "frame": {"width": width, "height": height},
        "latency_ms": {
            "inference": round(inference_ms, 2),
            "capture_to_analytics": round(capture_to_analytics_ms, 2),
        },
        "batch_size": batch_size,
    }
    obj = _envelope(EventType.DETECTION, capture_wall_ns, camera_id, frame_id, data)
    return _record(Topic.DETECTION, EventType.DETECTION, camera_id, obj)


def line_crossing_event(
    camera_id: str,
    frame_id: int,
    wall_ns: int,
    line_id: str,
    direction: str,
    class_name: str,
    tracking_id: int,
    is_vehicle: bool,
    position: tuple[float, float],
    line_totals: Mapping[str, Mapping[str, int]],
    vehicle_type: str | None = None,
    speed_kmh: float | None = None,
    heading: str | None = None,
) -> EventRecord:
    """``line_crossing`` (topic analytics_events): a track crossed a counting line.

    ``speed_kmh`` is null when unknown (never invented); ``heading`` is left out when
    unknown."""
    data: dict[str, Any] = {
        "line_id": line_id,
        "direction": direction,
        "class_name": class_name,
        "tracking_id": tracking_id,
        "is_vehicle": bool(is_vehicle),
        "position": {"x": round(position[0], 1), "y": round(position[1], 1)},
        "line_totals": {d: dict(per) for d, per in line_totals.items()},
        "speed_kmh": None if speed_kmh is None else round(speed_kmh, 1),
    }
    if vehicle_type is not None:
        data["vehicle_type"] = vehicle_type
    if heading is not None:
        data["heading"] = heading
    obj = _envelope(EventType.LINE_CROSSING, wall_ns, camera_id, frame_id, data)
    return _record(Topic.ANALYTICS, EventType.LINE_CROSSING, camera_id, obj)


def analytics_summary_event(
    camera_id: str,
    wall_ns: int,
    period_s: float,
    frames: int,
    vehicles_in_view: int,
    line_totals: Mapping[str, Mapping[str, Mapping[str, int]]],
    interval: tuple[float, float] | None = None,
    interval_counts: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
    speed: Mapping[str, Any] | None = None,
    zones: Mapping[str, Mapping[str, Any]] | None = None,
    longest_queue_m: float | None = None,
) -> EventRecord:
    """``analytics_summary`` (topic analytics_events): one camera's state over a period.

    With ``interval`` (start and end, seconds since the epoch) it is an interval summary:
    ``interval`` ({start, end: RFC 3339, seconds}), ``interval_counts`` (crossings inside
    the interval), ``speed``, ``zones`` and ``longest_queue_m`` are added (shapes in
    ``itsd.analytics.summary``)."""
    data: dict[str, Any] = {
        "period_s": round(period_s, 3),
        "frames": frames,
        "vehicles_in_view": vehicles_in_view,
        "line_totals": {
            line: {d: dict(per) for d, per in by_dir.items()}
            for line, by_dir in line_totals.items()
        },
    }
    if interval is not None:
        start, end = interval
        data["interval"] = {
            "start": rfc3339_from_ns(round(start * 1e9)),
            "end": rfc3339_from_ns(round(end * 1e9)),
            "seconds": round(end - start, 3),
        }
        data["interval_counts"] = {
            line: {d: dict(per) for d, per in by_dir.items()}
            for line, by_dir in (interval_counts or {}).items()
        }
        data["speed"] = (
            dict(speed)
            if speed is not None
            else {
                "samples": 0,
                "mean_kmh": None,
                "p85_kmh": None,
                "histogram": {"bin_kmh": 5, "counts": []},
            }
        )
        data["zones"] = {z: dict(v) for z, v in (zones or {}).items()}
        data["longest_queue_m"] = longest_queue_m
    obj = _envelope(EventType.ANALYTICS_SUMMARY, wall_ns, camera_id, 0, data)
    return _record(Topic.ANALYTICS, EventType.ANALYTICS_SUMMARY, camera_id, obj)


def metrics_snapshot_event(
    samples: Iterable[tuple[str, Mapping[str, str], float]],
    wall_ns: int | None = None,
    host: str = "",
) -> EventRecord:
    """``metrics_snapshot`` (topic metrics_events): the daemon's metrics at one moment.

    ``samples`` are ``(metric name, labels, value)``; names are those of ``/metrics``.
    """
    data = {
        "host": host,
        "metrics": [
            {"name": name, "labels": dict(labels), "value": float(value)}
            for name, labels, value in samples
        ],
    }
    ns = time.time_ns() if wall_ns is None else wall_ns
    obj = _envelope(EventType.METRICS_SNAPSHOT, ns, "", 0, data)
    return _record(Topic.METRICS, EventType.METRICS_SNAPSHOT, "", obj)


def alert_event(
    alert_type: str,
    severity: str,
    message: str,
    camera_id: str = "",
    frame_id: int = 0,
    wall_ns: int | None = None,
    tracking_id: int = 0,
    zone_id: str = "",
    speed_kmh: float | None = None,
    details: Mapping[str, Any] | None = None,
    state: str | None = None,
    alert_id: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    snapshot_path: str | None = None,
) -> EventRecord:
    """``alert`` (topic alert_events): a rule was broken, an anomaly seen, or the daemon
    itself needs attention (its spool filling up).

    Traffic alerts come in pairs: ``state`` "raised" then "cleared", with the same
    ``alert_id``; ``evidence`` holds the track ids, values and thresholds, and
    ``snapshot_path`` the JPEG written when it was raised."""
    if alert_type not in ALERT_TYPES:
        raise ValueError(f"unknown alert type {alert_type!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"unknown alert severity {severity!r}")
    data: dict[str, Any] = {
        "alert_type": alert_type,
        "severity": severity,
        "tracking_id": tracking_id,
        "zone_id": zone_id,
        "message": message,
    }
    if speed_kmh is not None:
        data["speed_kmh"] = round(speed_kmh, 1)
    if details:
        data["details"] = dict(details)
    if state is not None:
        if state not in ("raised", "cleared"):
            raise ValueError(f"unknown alert state {state!r}")
        data["state"] = state
    if alert_id is not None:
        data["alert_id"] = alert_id
    if evidence is not None:
        data["evidence"] = dict(evidence)
    if snapshot_path is not None:
        data["snapshot_path"] = snapshot_path
    ns = time.time_ns() if wall_ns is None else wall_ns
    obj = _envelope(EventType.ALERT, ns, camera_id, frame_id, data)
    return _record(Topic.ALERT, EventType.ALERT, camera_id, obj)
