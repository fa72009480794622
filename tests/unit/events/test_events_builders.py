"""Every builder's output is valid against its schema; the envelope, key, topic and type
are right; released sample events stay valid (the compatibility check)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from itsd.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    alert_event,
    analytics_summary_event,
    detection_event,
    detection_item,
    line_crossing_event,
    load_schema,
    metrics_snapshot_event,
)
from itsd.records import EventRecord, EventType, Topic

NS = 1_800_000_000_123_456_789


def _validate(rec: EventRecord) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(rec.payload)
    schema = load_schema(obj["event_type"])
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(obj, schema, format_checker=jsonschema.FormatChecker())
    assert obj["event_type"] == rec.kind.wire_name
    assert obj["schema_version"] == SCHEMA_VERSION
    assert rec.key == obj["camera_id"]
    assert EventRecord.unpack(rec.pack()) == rec
    return obj


def test_detection() -> None:
    dets = [
        detection_item("car", 0.87654, (1.04, 2.06, 3.0, 4.0), 7, True),
        detection_item("person", 0.5, (5, 6, 7, 8), None, False),
    ]
    rec = detection_event("cam-1", 83, NS, dets, 640, 360, 17.567, 24.1234, 2)
    obj = _validate(rec)
    assert rec.topic is Topic.DETECTION and rec.kind is EventType.DETECTION
    assert obj["timestamp"] == "2027-01-15T08:00:00.123Z"
    assert obj["data"]["vehicle_count"] == 1
    assert obj["data"]["detections"][0] == {
        "class_name": "car",
        "confidence": 0.8765,
        "bbox": {"x_min": 1.0, "y_min": 2.1, "x_max": 3.0, "y_max": 4.0},
        "tracking_id": 7,
        "is_vehicle": True,
    }
    assert obj["data"]["latency_ms"] == {"inference": 17.57, "capture_to_analytics": 24.12}


def test_line_crossing() -> None:
    rec = line_crossing_event(
        "cam-1", 9, NS, "mid", "in", "car", 7, True, (320.04, 208.0), {"in": {"car": 1}, "out": {}}
    )
    obj = _validate(rec)
    assert rec.topic is Topic.ANALYTICS
    assert obj["data"]["position"] == {"x": 320.0, "y": 208.0}
    assert obj["data"]["line_totals"] == {"in": {"car": 1}, "out": {}}


def test_summary_metrics_alert() -> None:
    s = analytics_summary_event("c", NS, 60.0, 900, 3, {"mid": {"in": {"car": 2}, "out": {}}})
    assert _validate(s)["frame_id"] == 0
    m = metrics_snapshot_event([("itsd_up", {}, 1.0), ("itsd_fps", {"step": "infer"}, 14.5)], NS)
    assert m.topic is Topic.METRICS and m.key == ""
    assert len(_validate(m)["data"]["metrics"]) == 2
    a = alert_event(
        "ALERT_TYPE_SPOOL_FULL", "ALERT_SEVERITY_CRITICAL", "spool full", details={"dropped": 3}
    )
    assert a.topic is Topic.ALERT
    assert _validate(a)["data"]["details"] == {"dropped": 3}
    with pytest.raises(ValueError, match="alert type"):
        alert_event("SPOOL", "ALERT_SEVERITY_INFO", "x")


def test_schema_rejects_broken_events() -> None:
    rec = detection_event("cam-1", 1, NS, [], 640, 360, 1.0, 2.0, 1)
    obj = json.loads(rec.payload)
    del obj["data"]["frame"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, load_schema("detection"))
    obj = json.loads(rec.payload)
    obj["schema_version"] = "2.0"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, load_schema("detection"))


#: Events as released in schema 1.0; every later 1.x schema must still accept them.
RELEASED_1_0 = [
    '{"event_type":"detection","schema_version":"1.0","timestamp":"2026-11-27T12:00:05.078Z",'
    '"camera_id":"street","frame_id":83,"data":{"detections":[{"class_name":"car",'
    '"confidence":0.87,"bbox":{"x_min":455.0,"y_min":226.1,"x_max":601.3,"y_max":274.9},'
    '"tracking_id":7,"is_vehicle":true}],"vehicle_count":1,"frame":{"width":640,"height":360},'
    '"latency_ms":{"inference":17.6,"capture_to_analytics":24.1},"batch_size":1}}',
    '{"event_type":"line_crossing","schema_version":"1.0","timestamp":"2026-11-27T12:00:05.078Z",'
    '"camera_id":"street","frame_id":83,"data":{"line_id":"mid","direction":"out",'
    '"class_name":"car","tracking_id":7,"is_vehicle":true,"position":{"x":320.0,"y":208.0},'
    '"line_totals":{"in":{},"out":{"car":1}}}}',
]


@pytest.mark.parametrize("raw", RELEASED_1_0)
def test_released_events_stay_valid(raw: str) -> None:
    obj = json.loads(raw)
    jsonschema.validate(obj, load_schema(obj["event_type"]))
    obj["data"]["a_key_added_later"] = 1  # consumers and schemas accept new keys
    obj["new_top_level"] = {}
    jsonschema.validate(obj, load_schema(obj["event_type"]))


def test_every_type_has_a_schema_with_a_version() -> None:
    for t in EVENT_TYPES:
        schema = load_schema(t)
        assert schema["schema_version"] == SCHEMA_VERSION
        assert schema["properties"]["event_type"] == {"const": t}


def test_node_names_the_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schema 1.2: ``node`` in every envelope when the daemon named its node."""
    from itsd.events import builders, load_schema

    monkeypatch.setattr(builders, "NODE", "edge-7")
    obj = json.loads(builders.detection_event("cam-1", 1, NS, [], 640, 360, 1.0, 2.0, 1).payload)
    assert obj["node"] == "edge-7" and obj["schema_version"] == "1.3"
    jsonschema.validate(obj, load_schema("detection"))
    monkeypatch.setattr(builders, "NODE", None)
    obj = json.loads(builders.detection_event("cam-1", 1, NS, [], 640, 360, 1.0, 2.0, 1).payload)
    assert "node" not in obj
