"""Analytics stage: tracks vehicles per camera and turns tracks into traffic events.

Reads ``DetectionRecord``s from the detection ring, runs one tracker and one set of
counting lines per camera, and writes events to the event ring:

* ``detection`` (topic detection_events): the frame's detections with their track ids
  and the number of vehicles in view, one per processed frame;
* ``line_crossing`` (topic analytics_events): a track crossed a counting line, with
  the line's running totals.

The event ring is lossless: when the publisher falls behind this stage waits. Detection
records leave their ring only after their events are queued, so a crash re-analyses
them instead of losing them (at least once). On a stop request (sent only after
inference has exited) it drains the detection ring, then exits.

This stage must never import an engine or a GPU library, and never draw on images.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from itsd.analytics import (
    COCO_NAMES,
    VEHICLE_CLASS_NAMES,
    CountingLine,
    LineCounter,
    Tracker,
    TrackerConfig,
    is_vehicle,
)
from itsd.config import CameraConfig
from itsd.errors import EXIT_OK
from itsd.records import (
    DET_MAGIC,
    MODEL_MAGIC,
    DetectionRecord,
    EventRecord,
    ModelInfoRecord,
    Topic,
    record_magic,
    rfc3339_from_ns,
)
from itsd.shm import RecordRing
from itsd.shm.board import Board
from itsd.stages.runtime import (
    C_ERRORS,
    C_IN,
    C_LAST_WALL_MS,
    C_LATENCY_N,
    C_LATENCY_US_SUM,
    C_LINE_CROSSINGS,
    C_OUT,
    C_TRACKS,
    StageContext,
)

log = logging.getLogger("itsd.analyze")

BATCH_RECORDS = 64
BOARD_PERIOD_S = 0.5
#: What a counting line counts when its config names no classes.
DEFAULT_LINE_CLASSES = frozenset(VEHICLE_CLASS_NAMES | {"bicycle", "person"})


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class CameraAnalytics:
    """Tracker and counting lines of one camera."""

    def __init__(self, camera: CameraConfig, class_names: Sequence[str]) -> None:
        self.camera = camera
        self.tracker = Tracker(TrackerConfig())
        self.lines = [
            CountingLine(
                line_id=ln.id,
                start=ln.start,
                end=ln.end,
                name=ln.name,
                classes=frozenset(ln.classes) if ln.classes is not None else DEFAULT_LINE_CLASSES,
            )
            for ln in camera.lines
        ]
        self.counter = LineCounter(self.lines, class_names)
        self.class_names = list(class_names)
        self.in_view = 0

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """Adopt the running model's class names (counts restart only if they change)."""
        if list(class_names) == self.class_names:
            return
        self.class_names = list(class_names)
        self.counter = LineCounter(self.lines, class_names)

    def class_name(self, class_id: int) -> str:
        """Name of a class id, or ``class_<id>`` when the model did not name it."""
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return f"class_{class_id}"

    def process(self, rec: DetectionRecord, emit_detections: bool) -> list[EventRecord]:
        """Track one frame's detections and return the events it gives."""
        t = rec.capture_wall_ns / 1e9
        tracks = self.tracker.update(rec.boxes, rec.scores, rec.class_ids, t)
        track_of = {tr.det_index: tr.track_id for tr in tracks if tr.det_index >= 0}
        crossings = self.counter.update(tracks, rec.width, rec.height, t)
        self.counter.forget(self.tracker.pop_removed())
        self.in_view = len(self.tracker.active_tracks())
        stamp = rfc3339_from_ns(rec.capture_wall_ns)
        cam_id = self.camera.id
        events: list[EventRecord] = []
        if emit_detections:
            dets = []
            vehicles = 0
            for i in range(len(rec.scores)):
                name = self.class_name(int(rec.class_ids[i]))
                veh = is_vehicle(name)
                vehicles += veh
                x0, y0, x1, y1 = (round(float(v), 1) for v in rec.boxes[i])
                dets.append(
                    {
                        "class_name": name,
                        "confidence": round(float(rec.scores[i]), 4),
                        "bbox": {"x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1},
                        "tracking_id": track_of.get(i),
                        "is_vehicle": veh,
                    }
                )
            payload = {
                "event_type": "detection",
                "timestamp": stamp,
                "camera_id": cam_id,
                "frame_id": rec.frame_id,
                "data": {
                    "detections": dets,
                    "vehicle_count": vehicles,
                    "frame": {"width": rec.width, "height": rec.height},
                    "latency_ms": {
                        "inference": round(
                            (rec.infer_end_mono_ns - rec.infer_start_mono_ns) / 1e6, 2
                        ),
                        "capture_to_analytics": round(
                            (time.time_ns() - rec.capture_wall_ns) / 1e6, 2
                        ),
                    },
                    "batch_size": rec.batch_size,
                },
            }
            events.append(EventRecord(Topic.DETECTION, cam_id, _dumps(payload)))
        totals = self.counter.totals() if crossings else {}
        for c in crossings:
            payload = {
                "event_type": "line_crossing",
                "timestamp": rfc3339_from_ns(int(c.timestamp * 1e9)),
                "camera_id": cam_id,
                "frame_id": rec.frame_id,
                "data": {
                    "line_id": c.line_id,
                    "direction": c.direction,
                    "class_name": c.class_name,
                    "tracking_id": c.track_id,
                    "is_vehicle": is_vehicle(c.class_name),
                    "position": {"x": round(c.position[0], 1), "y": round(c.position[1], 1)},
                    "line_totals": totals.get(c.line_id, {}),
                },
            }
            events.append(EventRecord(Topic.ANALYTICS, cam_id, _dumps(payload)))
        return events


def run(ctx: StageContext) -> int:
    """Analyse detection records until stopped and drained."""
    config = ctx.config
    det_ring = RecordRing.attach(ctx.spec.detection_ring)
    evt_ring = RecordRing.attach(ctx.spec.event_ring)
    cams = [CameraAnalytics(cam, COCO_NAMES) for cam in config.cameras]
    for cam in config.cameras:
        if cam.zones:
            log.warning(
                "camera %s: %d zone(s) configured; zone analytics are not evaluated yet",
                cam.id,
                len(cam.zones),
            )
    board_name = ctx.spec.extra.get("board", "")
    board = Board.attach(board_name) if board_name else None
    last_board = 0.0
    slot = ctx.slot
    ctx.set_running()
    try:
        # Records are dropped from the ring only after their events are queued, so a
        # crash here means those frames are analysed again (at least once).
        while (batch := ctx.next_records(det_ring, BATCH_RECORDS)) is not None:
            for data in batch:
                events = _handle(ctx, cams, data)
                for ev in events:
                    if not ctx.put(evt_ring, ev.pack()):
                        return EXIT_OK
                    slot.add(C_OUT)
            det_ring.advance(len(batch))
            slot.set(C_TRACKS, sum(c.in_view for c in cams))
            slot.set(C_LAST_WALL_MS, time.time_ns() // 1_000_000)
            slot.beat()
            now = time.monotonic()
            if board is not None and now - last_board >= BOARD_PERIOD_S:
                last_board = now
                _publish_board(board, cams)
    finally:
        if board is not None:
            _publish_board(board, cams)
            board.close()
        det_ring.close()
        evt_ring.close()
    return EXIT_OK


def _publish_board(board: Board, cams: list[CameraAnalytics]) -> None:
    state = {
        "cameras": {
            c.camera.id: {"line_counts": c.counter.totals(), "vehicles_in_view": c.in_view}
            for c in cams
        },
        "updated_at": time.time(),
    }
    try:
        board.publish(_dumps(state))
    except ValueError as err:
        log.warning("live state not published: %s", err)


def _handle(ctx: StageContext, cams: list[CameraAnalytics], data: bytes) -> list[EventRecord]:
    slot = ctx.slot
    magic = record_magic(data)
    try:
        if magic == MODEL_MAGIC:
            info = ModelInfoRecord.unpack(data)
            log.info("model %s on %s: %d classes", info.model, info.backend, len(info.class_names))
            for cam in cams:
                cam.set_class_names(info.class_names)
            return []
        if magic != DET_MAGIC:
            raise ValueError(f"unknown record magic {magic:#x}")
        rec = DetectionRecord.unpack(data)
        if not 0 <= rec.camera_index < len(cams):
            raise ValueError(f"record for unknown camera index {rec.camera_index}")
    except (ValueError, KeyError) as err:
        slot.add(C_ERRORS)
        log.error("skipping a malformed detection record (%d bytes): %s", len(data), err)
        return []
    slot.add(C_IN)
    events = cams[rec.camera_index].process(rec, ctx.config.outputs.detection_events)
    latency_us = max(0, (time.time_ns() - rec.capture_wall_ns) // 1000)
    slot.add(C_LATENCY_US_SUM, latency_us)
    slot.add(C_LATENCY_N)
    crossings = sum(1 for e in events if e.topic == Topic.ANALYTICS)
    if crossings:
        slot.add(C_LINE_CROSSINGS, crossings)
    return events
