"""The analytics stage's camera (tracker, lines, scene) turns synthetic traffic into events
that match their schemas: speeds on crossings, interval summaries, alert pairs with JPEG
snapshots on disk, and the closing summary of a camera that goes away."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np

from itsd.analytics import COCO_NAMES
from itsd.config import AnalyticsConfig, CameraConfig
from itsd.events import EVENT_TYPES, load_schema
from itsd.records import DetectionRecord
from itsd.shm import FrameRing
from itsd.shm.segments import new_run_id, segment_name
from itsd.stages.analyze import CameraAnalytics

W, H = 1280, 720
FPS = 10.0
T0 = 1_800_000_000.0
GROUND_TO_IMAGE = np.array([[0.030, 0.0175, 0.5], [0.0, -0.004, 0.95], [0.0, 0.035, 1.0]])


def project(ground: np.ndarray) -> np.ndarray:
    g = np.column_stack((ground, np.ones(len(ground))))
    p = (GROUND_TO_IMAGE @ g.T).T
    return p[:, :2] / p[:, 2:3]


WORLD = np.array([[-5.0, 5.0], [5.0, 5.0], [5.0, 40.0], [-5.0, 40.0]])
LANE = np.array([[0.0, 5.0], [3.5, 5.0], [3.5, 45.0], [0.0, 45.0]])


def camera() -> CameraConfig:
    return CameraConfig.model_validate(
        {
            "id": "synthetic",
            "source": "x.mp4",
            "calibration": {
                "image_points": project(WORLD).tolist(),
                "world_points": WORLD.tolist(),
                "bearing_deg": 0.0,
            },
            "lines": [{"id": "mid", "start": [0.0, 0.4], "end": [1.0, 0.4]}],  # ground y 30.6 m
            "zones": [
                {
                    "id": "lane",
                    "polygon": project(LANE).tolist(),
                    "allowed_direction_deg": 0.0,
                    "speed_limit_kmh": 50.0,
                }
            ],
        }
    )


def record(k: int, grounds: list[tuple[float, float]]) -> DetectionRecord:
    boxes = []
    for p in grounds:
        g = np.array([p])
        bx, by = project(g)[0]
        size = project(g + np.array([1.8, 0.0]))[0, 0] - bx
        w, h = size * W, size * W * 0.8
        boxes.append([bx * W - w / 2, by * H - h, bx * W + w / 2, by * H])
    n = len(boxes)
    t_ns = round((T0 + k / FPS) * 1e9)
    return DetectionRecord(
        camera_key=1,
        frame_id=k,
        pts=k,
        capture_wall_ns=t_ns,
        acquire_mono_ns=0,
        infer_start_mono_ns=0,
        infer_end_mono_ns=1000,
        width=W,
        height=H,
        batch_size=1,
        boxes=np.array(boxes, np.float32).reshape(n, 4),
        scores=np.full(n, 0.9, np.float32),
        class_ids=np.full(n, 2, np.int32),
        luma=80.0,
        picture_crc=k,
    )


def test_events_from_synthetic_traffic(tmp_path: Path) -> None:
    analytics = AnalyticsConfig(
        snapshot_dir=tmp_path / "snaps", summary_interval_s=5.0, speeding_min_s=0.5
    )
    cam = CameraAnalytics(camera(), COCO_NAMES, analytics)
    events = []
    for k in range(int(9 * FPS)):
        t = k / FPS
        cars = []
        y_wrong = 44.0 - 40 / 3.6 * t  # southbound in the northbound lane
        if y_wrong > 2.0:
            cars.append((1.75, y_wrong))
        y_fast = 6.0 + 70 / 3.6 * (t - 2.0)  # 70 km/h where 50 is the limit
        if t >= 2.0 and y_fast < 60.0:
            cars.append((1.0, y_fast))
        rec = DetectionRecord.unpack(record(k, cars).pack())
        events.extend(cam.process(rec, emit_detections=True, report_min=0.25))
    events.extend(cam.close("the test ends"))
    objs = [json.loads(e.payload) for e in events]
    validators = {t: jsonschema.Draft202012Validator(load_schema(t)) for t in EVENT_TYPES}
    for o in objs:
        validators[o["event_type"]].validate(o)
    kinds = [o["event_type"] for o in objs]
    assert kinds.count("analytics_summary") == 2  # [T0, T0+5) and the partial [T0+5, T0+9)
    alerts = [o["data"] for o in objs if o["event_type"] == "alert"]
    by_type: dict[str, list[str]] = {}
    for a in alerts:
        by_type.setdefault(a["alert_type"], []).append(a["state"])
    assert by_type["ALERT_TYPE_WRONG_WAY"] == ["raised", "cleared"]
    assert by_type["ALERT_TYPE_SPEEDING"] == ["raised", "cleared"]
    for a in alerts:
        if a["state"] == "raised":
            snap = cv2.imread(a["snapshot_path"])
            assert snap is not None and snap.shape[1] == 960
            assert a["evidence"]["track_ids"] == [a["tracking_id"]]
    ids = [a["alert_id"] for a in alerts]
    assert len(set(ids)) == len(ids) // 2  # each raise and its clear share an id
    crossings = [o["data"] for o in objs if o["event_type"] == "line_crossing"]
    assert crossings and all(c["vehicle_type"] == "VEHICLE_TYPE_CAR" for c in crossings)
    fast = [c for c in crossings if c["speed_kmh"] is not None and c["speed_kmh"] > 60]
    assert fast and abs(fast[0]["speed_kmh"] - 70.0) < 2.1
    dets = [d for o in objs if o["event_type"] == "detection" for d in o["data"]["detections"]]
    assert any(d.get("heading") == "south" for d in dets)
    assert any(d.get("heading") == "north" for d in dets)
    summary = next(o["data"] for o in objs if o["event_type"] == "analytics_summary")
    assert summary["interval"]["seconds"] == 5.0
    assert summary["zones"]["lane"]["occupied_fraction"] > 0.5


def test_uncalibrated_camera_never_invents_a_speed() -> None:
    cfg = camera().model_copy(update={"calibration": None, "zones": []})
    cam = CameraAnalytics(cfg, COCO_NAMES, AnalyticsConfig(snapshots=False))
    events = []
    for k in range(40):
        rec = record(k, [(1.75, 6.0 + 50 / 3.6 * k / FPS)])
        events.extend(cam.process(rec, emit_detections=True, report_min=0.25))
    events.extend(cam.close("end"))
    objs = [json.loads(e.payload) for e in events]
    for o in objs:
        if o["event_type"] == "detection":
            for d in o["data"]["detections"]:
                assert "speed_kmh" not in d
                assert d.get("heading", "image_").startswith("image_")
        if o["event_type"] == "line_crossing":
            assert o["data"]["speed_kmh"] is None
    summary = [o for o in objs if o["event_type"] == "analytics_summary"][-1]
    assert summary["data"]["speed"]["samples"] == 0


def test_snapshots_are_drawn_on_the_frame_peeked_from_the_ring(tmp_path: Path) -> None:
    """The camera's frame ring holds the frames (decode wrote them, nobody reads): the
    snapshot of an alert is drawn on a real frame, not a blank canvas."""
    ring = FrameRing.create(
        segment_name(new_run_id(), "frame", "snap"),
        camera_key=1,
        slot_count=4,
        max_width=W,
        max_height=H,
    )
    try:
        analytics = AnalyticsConfig(snapshot_dir=tmp_path / "snaps", speeding_min_s=0.5)
        cam = CameraAnalytics(camera(), COCO_NAMES, analytics)
        cam.attach_frames(ring.name)
        picture = np.zeros((H, W, 3), np.uint8)
        picture[..., 0] = 250  # red, as the decoder writes RGB
        events = []
        for k in range(int(6 * FPS)):
            y = 44.0 - 40 / 3.6 * k / FPS  # a wrong-way driver
            assert ring.write(picture, frame_id=k, capture_ts_ns=k, pts=k)
            rec = record(k, [(1.75, y)] if y > 2.0 else [])
            events.extend(cam.process(rec, emit_detections=False, report_min=0.25))
        cam.close_frames()
    finally:
        ring.close()
        ring.unlink()
    raised = [
        json.loads(e.payload)["data"]
        for e in events
        if e.topic.name == "ALERT" and b'"raised"' in e.payload
    ]
    assert raised, "a wrong-way alert"
    snap = cv2.imread(raised[0]["snapshot_path"])
    assert snap is not None
    b, g, r = (int(v) for v in snap[snap.shape[0] // 2, 5])
    assert r > 200 and b < 60, (b, g, r)  # the frame's red, in BGR
