"""Pure pieces of the stages: frame sizing, source kinds, event building, the JSONL sink."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from itsd.analytics import COCO_NAMES
from itsd.config import CameraConfig
from itsd.config import is_live_source as is_live
from itsd.records import DetectionRecord, Topic
from itsd.sinks.jsonl import JsonlSink
from itsd.sources import fit_within
from itsd.stages.analyze import CameraAnalytics


@pytest.mark.parametrize(
    ("size", "limit", "expected"),
    [
        ((640, 360), (1920, 1080), (640, 360)),
        ((3840, 2160), (1920, 1080), (1920, 1080)),
        ((4000, 1000), (1920, 1080), (1920, 480)),
        ((1001, 3001), (640, 640), (212, 640)),
    ],
)
def test_fit_within_keeps_aspect_and_even_sizes(
    size: tuple[int, int], limit: tuple[int, int], expected: tuple[int, int]
) -> None:
    w, h = fit_within(*size, *limit)
    assert (w, h) == expected
    assert w <= limit[0] and h <= limit[1]


def test_is_live() -> None:
    assert is_live("rtsp://cam/1")
    assert is_live("https://x/y.m3u8")
    assert not is_live("/data/clip.mp4")
    assert not is_live("file:///data/clip.mp4")
    assert not is_live("sample:bikes")


def _record(frame_id: int, x: float, t: float) -> DetectionRecord:
    boxes = np.array([[x, 100, x + 60, 140], [500, 10, 520, 60]], np.float32)
    return DetectionRecord(
        camera_key=0,
        frame_id=frame_id,
        pts=frame_id,
        capture_wall_ns=int(t * 1e9),
        acquire_mono_ns=0,
        infer_start_mono_ns=0,
        infer_end_mono_ns=1_000_000,
        width=640,
        height=360,
        batch_size=1,
        boxes=boxes,
        scores=np.array([0.9, 0.8], np.float32),
        class_ids=np.array([2, 0], np.int32),
    )


def test_camera_analytics_builds_detection_and_crossing_events() -> None:
    cam = CameraConfig.model_validate(
        {
            "id": "c1",
            "source": "x.mp4",
            "lines": [{"id": "mid", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
        }
    )
    ca = CameraAnalytics(cam, COCO_NAMES)
    events = []
    for i in range(40):  # a car driving left to right across the middle line
        events += ca.process(_record(i, 100 + 10 * i, 1_700_000_000 + i / 10), True)
    dets = [json.loads(e.payload) for e in events if e.topic == Topic.DETECTION]
    crossings = [json.loads(e.payload) for e in events if e.topic == Topic.ANALYTICS]
    assert len(dets) == 40
    last = dets[-1]
    assert last["event_type"] == "detection" and last["camera_id"] == "c1"
    car, person = last["data"]["detections"]
    assert car["class_name"] == "car" and car["is_vehicle"] and car["tracking_id"] is not None
    assert person["class_name"] == "person" and not person["is_vehicle"]
    assert last["data"]["vehicle_count"] == 1
    assert set(car["bbox"]) == {"x_min", "y_min", "x_max", "y_max"}
    assert len(crossings) == 1
    c = crossings[0]["data"]
    assert c["line_id"] == "mid" and c["class_name"] == "car"
    assert c["line_totals"][c["direction"]] == {"car": 1}


def test_detection_events_can_be_turned_off() -> None:
    cam = CameraConfig.model_validate({"id": "c1", "source": "x.mp4"})
    ca = CameraAnalytics(cam, COCO_NAMES)
    assert ca.process(_record(0, 10, 1.0), False) == []


def test_jsonl_sink_appends_lines(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "e.jsonl"
    sink = JsonlSink(path)
    sink.write_payloads([b'{"a":1}', b'{"b":2}'])
    sink.write_payloads([b'{"c":3}'])
    sink.close()
    assert path.read_text().splitlines() == ['{"a":1}', '{"b":2}', '{"c":3}']


def test_jsonl_sink_reports_a_full_disk() -> None:
    sink = JsonlSink(Path("/dev/full"))
    with pytest.raises(OSError, match="No space left"):
        sink.write_payloads([b"x" * 100_000])
    sink.close()
