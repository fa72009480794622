"""Mapping of backend snapshots and client input to protobuf, and parsing of published events."""

from __future__ import annotations

import json
import math

import grpc
import pytest
from google.protobuf import json_format

from itsd.control._pb import streaming_pb2
from itsd.control.backend import (
    ControlBackend,
    HealthSnapshot,
    MetricsSnapshot,
    NotSupportedError,
    StageHealth,
    StreamExistsError,
    TrafficSnapshot,
)
from itsd.control.events import EVENT_TYPES, parse_event
from itsd.control.servicers import (
    is_serving,
    metrics_message,
    redact_url,
    status_for,
    stream_from_config,
    timestamp,
    traffic_message,
)

# The JSON event of one frame, as the daemon publishes it.
DETECTION_EVENT = {
    "event_type": "detection",
    "timestamp": "2026-11-27T10:00:00.123Z",
    "camera_id": "cam-01",
    "frame_id": 123,
    "data": {
        "detections": [
            {
                "class_name": "car",
                "confidence": 0.9,
                "bbox": {"x_min": 10.0, "y_min": 20.0, "x_max": 110.0, "y_max": 90.0},
                "tracking_id": 7,
                "is_vehicle": True,
            }
        ],
        "vehicle_count": 3,
    },
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live"),
        ("rtsp://u:p@ss@cam/x?a=1", "rtsp://u:***@cam/x?a=1"),
        ("rtsp://viewer@cam/x", "rtsp://***@cam/x"),  # a lone user name may be a token
        ("http://cam.local/mjpeg", "http://cam.local/mjpeg"),
        ("/data/clips/a.mp4", "/data/clips/a.mp4"),
        ("rtsp://[::1", "rtsp://[::1"),  # unparsable: unchanged
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (
            NotSupportedError("streams are fixed"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "streams are fixed",
        ),
        (KeyError("unknown camera 'x'"), grpc.StatusCode.NOT_FOUND, "unknown camera 'x'"),
        (
            StreamExistsError("camera 'x' exists"),
            grpc.StatusCode.ALREADY_EXISTS,
            "camera 'x' exists",
        ),
        (ValueError("target_fps < 0"), grpc.StatusCode.INVALID_ARGUMENT, "target_fps < 0"),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL, "internal error: RuntimeError: boom"),
    ],
)
def test_status_for(exc: Exception, code: grpc.StatusCode, message: str) -> None:
    assert status_for(exc) == (code, message)


def test_timestamp_of_unknown_time_is_unset() -> None:
    assert timestamp(None) is None
    assert timestamp(math.nan) is None
    ts = timestamp(1.5)
    assert ts is not None
    assert (ts.seconds, ts.nanos) == (1, 500_000_000)


def test_is_serving_counts_degraded_as_serving() -> None:
    def snap(status: str) -> HealthSnapshot:
        return HealthSnapshot(status, "0", 0.0, "b", "m")

    assert is_serving(snap("serving"))
    assert is_serving(snap("degraded"))
    assert not is_serving(snap("not_serving"))
    assert not is_serving(snap("starting"))


def test_metrics_with_bad_values_never_invent_numbers() -> None:
    msg = metrics_message(
        MetricsSnapshot(
            counters={"frames_decoded": math.nan, "frames_dropped": -3, "decode_fps": math.inf},
            per_camera={},
        )
    )
    assert (msg.frames_decoded, msg.frames_dropped, msg.decode_fps) == (0, 0, 0.0)


def test_traffic_with_nan_speed_leaves_it_unset() -> None:
    msg = traffic_message(TrafficSnapshot("c", 0.0, 60.0, avg_speed_kmh=math.nan))
    assert not msg.HasField("avg_speed_kmh")


def test_stream_from_config_keeps_the_fields() -> None:
    info = stream_from_config(
        streaming_pb2.StreamConfig(
            camera_id="gate_2.north", source_url="rtsp://h/s", target_fps=12.5, priority=-1
        )
    )
    assert (info.camera_id, info.source_url, info.target_fps, info.priority, info.state) == (
        "gate_2.north",
        "rtsp://h/s",
        12.5,
        -1,
        "",
    )


def test_stream_from_config_rejects_a_long_camera_id() -> None:
    with pytest.raises(ValueError, match=r"config\.camera_id .* is invalid"):
        stream_from_config(streaming_pb2.StreamConfig(camera_id="c" * 65, source_url="/x"))


def test_backend_dataclasses_and_protocol() -> None:
    stage = StageHealth("infer", 12, "running", 0, 0.1)
    assert stage.detail == ""

    class Incomplete:
        def health(self) -> HealthSnapshot:
            raise NotImplementedError

    assert not isinstance(Incomplete(), ControlBackend)


# ------------------------------------------------------------------ events


def test_detection_event_parses_strictly() -> None:
    event = parse_event(DETECTION_EVENT, ignore_unknown_fields=False)
    assert event.event_type == "detection"
    assert event.WhichOneof("data") == "detection"
    assert event.timestamp.ToJsonString() == "2026-11-27T10:00:00.123Z"
    assert (event.camera_id, event.frame_id) == ("cam-01", 123)
    assert event.detection.vehicle_count == 3
    (det,) = event.detection.detections
    assert det.class_name == "car"
    assert det.confidence == pytest.approx(0.9)
    assert (det.bbox.x_min, det.bbox.y_min, det.bbox.x_max, det.bbox.y_max) == (10, 20, 110, 90)
    assert det.tracking_id == 7
    assert det.is_vehicle
    assert not det.HasField("speed_kmh")


def test_event_from_json_text() -> None:
    event = parse_event(json.dumps(DETECTION_EVENT))
    assert event.detection.detections[0].tracking_id == 7


def test_unknown_keys_are_skipped_unless_strict() -> None:
    doc = json.loads(json.dumps(DETECTION_EVENT))
    doc["data"]["detections"][0]["mask"] = [1, 2]
    assert parse_event(doc).detection.detections[0].class_name == "car"
    with pytest.raises(ValueError, match="does not match the schema"):
        parse_event(doc, ignore_unknown_fields=False)


def test_unknown_event_type() -> None:
    doc = {"event_type": "weather", "camera_id": "c", "data": {"rain_mm": 3}}
    event = parse_event(doc)
    assert event.event_type == "weather"
    assert event.WhichOneof("data") is None
    with pytest.raises(ValueError, match="unknown event_type 'weather'"):
        parse_event(doc, ignore_unknown_fields=False)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"camera_id": "c"}, "no event_type"),
    ],
)
def test_malformed_events(raw: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_event(raw)  # type: ignore[arg-type]


def test_event_types() -> None:
    assert {"detection", "line_crossing", "minute_aggregate", "alert"} == EVENT_TYPES


def test_alert_event() -> None:
    event = parse_event(
        {
            "event_type": "alert",
            "timestamp": "2026-11-27T10:00:01Z",
            "camera_id": "cam-01",
            "frame_id": 124,
            "data": {
                "alert_type": "ALERT_TYPE_SPEEDING",
                "severity": "ALERT_SEVERITY_WARNING",
                "tracking_id": 7,
                "zone_id": "school",
                "speed_kmh": 62.0,
                "message": "car 7 at 62 km/h in a 30 km/h zone",
            },
        },
        ignore_unknown_fields=False,
    )
    assert event.alert.speed_kmh == 62.0
    assert event.alert.zone_id == "school"


def test_detection_event_with_frame_latency_and_untracked_box() -> None:
    doc = json.loads(json.dumps(DETECTION_EVENT))
    doc["data"]["detections"][0]["tracking_id"] = None  # untracked
    doc["data"]["frame"] = {"width": 1920, "height": 1080}
    doc["data"]["latency_ms"] = {"inference": 8.5, "capture_to_analytics": 41.25}
    doc["data"]["batch_size"] = 4
    data = parse_event(doc, ignore_unknown_fields=False).detection
    assert data.detections[0].tracking_id == 0
    assert (data.frame.width, data.frame.height) == (1920, 1080)
    assert (data.latency_ms.inference, data.latency_ms.capture_to_analytics) == (8.5, 41.25)
    assert data.batch_size == 4


def test_line_crossing_event() -> None:
    event = parse_event(
        {
            "event_type": "line_crossing",
            "timestamp": "2026-11-27T10:00:02.500Z",
            "camera_id": "cam-01",
            "frame_id": 130,
            "data": {
                "line_id": "stop-line",
                "direction": "in",
                "class_name": "truck",
                "tracking_id": 9,
                "is_vehicle": True,
                "position": {"x": 640.5, "y": 400.0},
                "line_totals": {"in": {"truck": 1, "car": 12}, "out": {}},
            },
        },
        ignore_unknown_fields=False,
    )
    crossing = event.line_crossing
    assert (crossing.line_id, crossing.direction, crossing.class_name) == (
        "stop-line",
        "in",
        "truck",
    )
    assert (crossing.tracking_id, crossing.is_vehicle) == (9, True)
    assert (crossing.position.x, crossing.position.y) == (640.5, 400.0)
    assert json_format.MessageToDict(crossing.line_totals) == {
        "in": {"truck": 1, "car": 12},
        "out": {},
    }
    assert not crossing.HasField("speed_kmh")
