"""Analytics stage: tracks vehicles per camera and turns tracks into traffic events.

Reads ``DetectionRecord``s from the detection rings, runs one tracker and one set of
counting lines per camera (keyed by the camera's key, named by its id), and writes
events to the event ring:

* ``detection`` (topic detection_events): the frame's detections with their track ids
  and the number of vehicles in view, one per processed frame;
* ``line_crossing`` (topic analytics_events): a track crossed a counting line, with
  the line's running totals, the track's ground speed (null when unknown) and heading;
* ``analytics_summary`` (topic analytics_events): every ``analytics.summary_interval_s``
  per camera, the interval's counts, speeds, zone occupancy and queues
  (``itsd.analytics.summary``); the open interval is closed when a camera goes quiet,
  is removed or reconfigured, and on a clean stop;
* ``alert`` (topic alert_events): wrong way, speeding, stopped vehicle, congestion and
  blind camera, raised once and cleared once, with evidence and a JPEG snapshot.

Speed, heading, zones and rules live in ``itsd.analytics.scene``; this stage builds a
camera's scene from its configuration and turns what it reports into events.

Snapshots: when an alert is raised (rarely, never per frame) the camera's frame ring is
*peeked*: ``FrameRing.peek`` copies a published frame without changing any slot's state
(seqlock style, the ring's third-party rule), so inference stays the ring's one reader.
It takes the alert's own frame if a slot still holds it, else the frame inference took
last, else the newest; the snapshot's caption names the frame drawn when it is not the
alert's. The frame's boxes (the alert's tracks highlighted), the zone and a caption are
drawn on it (``itsd.drawing``); with no frame left to peek, on a blank canvas. The
picture checks of the blind-camera rule run on every frame, so they do not peek: their
pixels' summary (mean luma, a CRC of a sparse grid) comes from inference, which holds
the frame anyway, in the detection record.

For the dashboard this stage leaves, twice a second, the boxes and track ids of each
camera's frames of the last two seconds on the detections board (made by the
supervisor); the monitoring port draws them on the very frame they belong to, which it
copies from the frame ring with a read-only peek.

Line totals and track-id blocks are saved per camera in the state directory
(``itsd.analytics.totals``): totals continue after this stage or the daemon restarts, and
a tracking id is never given to another object.

Sharding (``performance.analytics_workers``): each process is one shard and analyses
its own cameras (``CameraBinding.shard``, chosen by the supervisor when the camera is
added and kept while it runs). It reads one detection ring per inference worker (the
worker writes a camera's records to its shard's ring) and writes its own event ring and
its own boards; the publisher reads every shard's event ring. A shard that restarts
touches no other shard's cameras: their tracks, intervals and alerts go on. Every shard
sees every command and applies only its own cameras, so acknowledgements work as with
one process.

Camera changes arrive as ``CommandRecord``s on the detection ring, in flow order with
the detections: ``sync`` (the whole table, after inference restarted), ``attach``,
``detach`` (after the camera's last detections) and ``update`` (new lines: the camera's
tracks continue, its line totals start again for the new geometry). Each is applied,
recorded as applied and forwarded to the publisher. Other cameras are never touched.

The event ring is lossless: when the publisher falls behind this stage waits. Detection
records leave their ring only after their events are queued, so a crash re-analyses
them instead of losing them (at least once). On a stop request (sent only after
inference has exited) it drains the detection ring, then exits.

This stage must never import an engine or a GPU library, and never draw on images.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itsd.analytics import (
    COCO_NAMES,
    VEHICLE_CLASS_NAMES,
    CountingLine,
    LineCounter,
    Tracker,
    TrackerConfig,
    is_vehicle,
)
from itsd.analytics.alerts import RAISED, Alert, Thresholds
from itsd.analytics.calibration import Calibration
from itsd.analytics.classes import vehicle_type
from itsd.analytics.scene import Scene, SceneSpec
from itsd.analytics.summary import IntervalSummary
from itsd.analytics.totals import (
    ID_BLOCK,
    SAVE_PERIOD_S,
    LineTotals,
    SceneStore,
    TotalsStore,
    line_signature,
)
from itsd.analytics.zones import QueueSettings, ZoneSpec
from itsd.config import AnalyticsConfig, CameraConfig
from itsd.errors import EXIT_OK
from itsd.events import (
    alert_event,
    analytics_summary_event,
    detection_event,
    detection_item,
    line_crossing_event,
)
from itsd.records import (
    CMD_MAGIC,
    DET_MAGIC,
    MODEL_MAGIC,
    CameraBinding,
    CommandOp,
    CommandRecord,
    DetectionRecord,
    EventRecord,
    ModelInfoRecord,
    Topic,
    record_magic,
)
from itsd.runtime import metrics as m
from itsd.runtime.metrics import Cell, MetricWriter
from itsd.shm import FrameRing, RecordRing
from itsd.shm.board import Board
from itsd.shm.frame_pixels import to_bgr
from itsd.shm.frame_ring import PIXEL_FORMAT_BGR24, PIXEL_FORMAT_GRAY8, PIXEL_FORMAT_I420
from itsd.shm.segments import parse_segment_name, segment_name
from itsd.stages.runtime import Idle, StageContext

log = logging.getLogger("itsd.analyze")

BATCH_RECORDS = 64
BOARD_PERIOD_S = 0.5
#: Longest wait for records before the loop's periodic work runs anyway.
IDLE_RETURN_S = 1.0
#: The dashboard's snapshots: boxes of the frames of the last seconds, per camera.
DETECTIONS_S = 2.0
DETECTIONS_KEPT = 64
#: What a counting line counts when its config names no classes.
DEFAULT_LINE_CLASSES = frozenset(VEHICLE_CLASS_NAMES | {"bicycle", "person"})


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()  # the live board, not events


def scene_spec(camera: CameraConfig, analytics: AnalyticsConfig) -> SceneSpec:
    """A camera's scene from its configuration (plain geometry for ``itsd.analytics``)."""
    cal = camera.calibration
    calibration = (
        Calibration.fit(cal.image_points, cal.world_points, cal.bearing_deg)
        if cal is not None
        else None
    )
    a = analytics
    return SceneSpec(
        camera_id=camera.id,
        calibration=calibration,
        zones=tuple(
            ZoneSpec(
                zone_id=z.id,
                polygon=tuple(z.polygon),
                classes=frozenset(z.classes) if z.classes is not None else None,
                queue=z.queue,
                allowed_heading_deg=z.allowed_direction_deg,
                speed_limit_kmh=z.speed_limit_kmh,
                no_stopping_s=z.no_stopping_s,
                congestion=z.congestion,
            )
            for z in camera.zones
        ),
        thresholds=Thresholds(
            wrong_way_min_m=a.wrong_way_min_m,
            wrong_way_tolerance_deg=a.wrong_way_tolerance_deg,
            speeding_min_s=a.speeding_min_s,
            stopped_speed_kmh=a.stopped_speed_kmh,
            congestion_speed_kmh=a.congestion_speed_kmh,
            congestion_min_vehicles=a.congestion_min_vehicles,
            congestion_window_s=a.congestion_window_s,
            blind_after_s=a.blind_after_s,
            blind_min_detections=a.blind_min_detections,
            freeze_after_s=a.freeze_after_s,
            dark_luma=a.dark_luma,
            dark_after_s=a.dark_after_s,
        ),
        queue=QueueSettings(a.queue_speed_kmh, a.queue_gap_m, a.vehicle_length_m),
        speed_window_s=a.speed_window_s,
        speed_min_samples=a.speed_min_samples,
        summary_interval_s=a.summary_interval_s,
        # A synthetic source has no lens to cover: its picture checks would be noise.
        blind_camera=a.blind_camera and not camera.source.startswith("pattern://"),
    )


class CameraAnalytics:
    """Tracker, counting lines and scene (speed, zones, rules, summaries) of one camera."""

    def __init__(
        self,
        camera: CameraConfig,
        class_names: Sequence[str],
        analytics: AnalyticsConfig | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.camera = camera
        self.analytics = analytics if analytics is not None else AnalyticsConfig()
        a = self.analytics
        default_dir = state_dir / "snapshots" if state_dir is not None else None
        #: Where alert snapshots go (None: none are written).
        self.snapshot_dir = (a.snapshot_dir or default_dir) if a.snapshots else None
        self.tracker = Tracker(TrackerConfig())
        self.lines = self._lines(camera)
        self.counter = LineCounter(self.lines, class_names)
        self.class_names = list(class_names)
        self.in_view = 0
        self.scene = Scene(scene_spec(camera, self.analytics))
        self._classes: dict[int, tuple[str, bool]] = {}
        self.last_frame_mono = time.monotonic()
        #: The last frames' detections with their track ids, for the dashboard's
        #: snapshots: [record, track ids by detection index, report_min, JSON or None].
        self.recent: collections.deque[list[Any]] = collections.deque(maxlen=DETECTIONS_KEPT)
        #: The camera's frame ring, peeked for snapshots (attached on the first one).
        self.frame_ring_name = ""
        self._frames: FrameRing | None = None

    def attach_frames(self, ring_name: str) -> None:
        """Name the camera's frame ring (peeked, read-only, for alert snapshots)."""
        if ring_name != self.frame_ring_name:
            self.close_frames()
            self.frame_ring_name = ring_name

    def close_frames(self) -> None:
        """Let go of the frame ring (the camera is removed or moved)."""
        if self._frames is not None:
            self._frames.close()
            self._frames = None

    def _background(self, frame_id: int) -> tuple[Any, int | None]:
        """A BGR copy of the alert's frame (or the closest one left) and its id."""
        if not self.frame_ring_name:
            return None, None
        try:
            if self._frames is None:
                self._frames = FrameRing.attach(self.frame_ring_name, populate=False)
            peeked = self._frames.peek(frame_id, taken=True)
        except (OSError, ValueError) as err:
            log.debug("camera %s: no frame for a snapshot: %s", self.camera.id, err)
            return None, None
        finally:
            # Snapshots are rare and the peek is a copy: unmapping the ring again keeps
            # the slots it touched out of this process's memory (else PSS climbs, slot by
            # slot, towards a share of every camera's frame ring).
            self.close_frames()
        if peeked is None:
            return None, None
        px = peeked.pixels
        if peeked.pixel_format == PIXEL_FORMAT_I420:
            return to_bgr(px, PIXEL_FORMAT_I420), peeked.frame_id
        if peeked.pixel_format == PIXEL_FORMAT_GRAY8 or px.shape[2] == 1:
            px = np.repeat(px[..., :1], 3, axis=2)
        elif peeked.pixel_format != PIXEL_FORMAT_BGR24:
            px = px[..., ::-1]  # RGB from the decoder; the drawing is BGR
        return np.ascontiguousarray(px), peeked.frame_id

    @staticmethod
    def _lines(camera: CameraConfig) -> list[CountingLine]:
        return [
            CountingLine(
                line_id=ln.id,
                start=ln.start,
                end=ln.end,
                name=ln.name,
                classes=frozenset(ln.classes) if ln.classes is not None else DEFAULT_LINE_CLASSES,
                anchor=ln.anchor,
            )
            for ln in camera.lines
        ]

    def reconfigure(self, camera: CameraConfig) -> list[EventRecord]:
        """Adopt new settings; tracks continue, line totals restart if the lines changed,
        the scene (interval, alerts) restarts if zones or calibration changed: the events
        closing the old one are returned."""
        old = self.camera
        self.camera = camera
        events: list[EventRecord] = []
        if camera.zones != old.zones or camera.calibration != old.calibration:
            events = self.close("the camera's zones or calibration changed")
            self.scene = Scene(scene_spec(camera, self.analytics))
        if camera.lines != old.lines:
            self.lines = self._lines(camera)
            self.counter = LineCounter(self.lines, self.class_names)
            log.info("camera %s: %d counting line(s) now in effect", camera.id, len(self.lines))
        return events

    def close(self, reason: str) -> list[EventRecord]:
        """Events that end the scene: the partial interval and the clears of its alerts."""
        events = []
        summary = self.scene.flush()
        if summary is not None:
            events.append(self._summary_event(summary))
        for a in self.scene.close(self.scene.last_t or time.time(), reason):
            events.append(self._alert_event(a, 0, None))
        return events

    def flush_idle(self, now_mono: float, grace_s: float = 5.0) -> list[EventRecord]:
        """Close the open interval of a camera that sent no frame for an interval and
        ``grace_s`` (monotonic clock: a file's capture clock may lag the wall clock)."""
        acc = self.scene.summary
        if acc.start is None or now_mono - self.last_frame_mono < acc.interval_s + grace_s:
            return []
        summary = self.scene.flush()
        return [self._summary_event(summary)] if summary is not None else []

    def _class_of(self, class_id: int) -> tuple[str, bool]:
        got = self._classes.get(class_id)
        if got is None:
            name = self.class_name(class_id)
            got = self._classes[class_id] = (name, is_vehicle(name))
        return got

    def _summary_event(self, s: IntervalSummary) -> EventRecord:
        d = s.data
        return analytics_summary_event(
            self.camera.id,
            round(s.end * 1e9),
            s.end - s.start,
            s.frames,
            self.in_view,
            self.counter.totals(),
            interval=(s.start, s.end),
            interval_counts=d["interval_counts"],
            speed=d["speed"],
            zones=d["zones"],
            longest_queue_m=d["longest_queue_m"],
        )

    def _alert_event(self, a: Alert, frame_id: int, snapshot: str | None) -> EventRecord:
        evidence = {"track_ids": list(a.track_ids), **a.evidence}
        raised_at = a.t if a.state == RAISED else float(a.evidence.get("raised_at_s", a.t))
        return alert_event(
            a.alert_type,
            a.severity,
            a.message,
            camera_id=self.camera.id,
            frame_id=frame_id,
            wall_ns=round(a.t * 1e9),
            tracking_id=a.tracking_id,
            zone_id=a.zone_id,
            speed_kmh=a.speed_kmh,
            state=a.state,
            alert_id=f"{self.camera.id}:{a.key}@{raised_at:.3f}",
            evidence=evidence,
            snapshot_path=snapshot,
        )

    def _snapshot(self, a: Alert, rec: DetectionRecord, track_of: dict[int, int]) -> str | None:
        directory = self.snapshot_dir
        if directory is None:
            return None
        from itsd.drawing import Box, write_snapshot

        boxes = []
        for i in range(len(rec.scores)):
            tid = track_of.get(i, 0)
            name = self.class_name(int(rec.class_ids[i]))
            boxes.append(Box(tuple(float(v) for v in rec.boxes[i]), name, tid, tid in a.track_ids))
        zone = next((z for z in self.camera.zones if z.id == a.zone_id), None)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(a.t))
        name = f"{stamp}_{a.key.replace(':', '_')}.jpg"
        path = Path(directory) / self.camera.id / name
        background, drawn = self._background(rec.frame_id)
        caption = f"{self.camera.id} {a.alert_type.removeprefix('ALERT_TYPE_')}: {a.message}"
        if drawn is not None and drawn != rec.frame_id:
            caption = f"[frame {drawn}, boxes of {rec.frame_id}] {caption}"
        try:
            write_snapshot(
                path,
                rec.width,
                rec.height,
                boxes,
                zone.polygon if zone is not None else None,
                caption,
                background,
            )
        except OSError as err:
            log.warning("camera %s: snapshot not written to %s: %s", self.camera.id, path, err)
            return None
        return str(path)

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

    def process(
        self, rec: DetectionRecord, emit_detections: bool, report_min: float = 0.0
    ) -> list[EventRecord]:
        """Track one frame's detections and return the events it gives."""
        t = rec.capture_wall_ns / 1e9
        tracks = self.tracker.update(rec.boxes, rec.scores, rec.class_ids, t)
        track_of = {tr.det_index: tr.track_id for tr in tracks if tr.det_index >= 0}
        self.recent.append([rec, track_of, report_min, None])  # references only
        crossings = self.counter.update(tracks, rec.width, rec.height, t)
        removed = self.tracker.pop_removed()
        self.counter.forget(removed)
        self.in_view = len(self.tracker.active_tracks())
        self.last_frame_mono = time.monotonic()
        reported = int(np.count_nonzero(rec.scores >= report_min)) if len(rec.scores) else 0
        scene = self.scene.update(
            tracks,
            removed,
            rec.width,
            rec.height,
            t,
            self._class_of,
            reported,
            rec.luma,
            rec.picture_crc,
        )
        motions = scene.motions
        cam_id = self.camera.id
        events: list[EventRecord] = [self._summary_event(s) for s in scene.summaries]
        if emit_detections:
            dets = []
            for i in range(len(rec.scores)):
                if rec.scores[i] < report_min:
                    continue  # a tracking candidate, below what events report
                cls = int(rec.class_ids[i])
                name, vehicle = self._class_of(cls)
                tid = track_of.get(i)
                mo = motions.get(tid) if tid is not None else None
                dets.append(
                    detection_item(
                        name,
                        rec.scores[i],
                        rec.boxes[i],
                        tid,
                        vehicle,
                        vehicle_type(name),
                        mo.speed_kmh if mo is not None else None,
                        mo.heading if mo is not None else None,
                        cls,
                    )
                )
            events.append(
                detection_event(
                    cam_id,
                    rec.frame_id,
                    rec.capture_wall_ns,
                    dets,
                    rec.width,
                    rec.height,
                    (rec.infer_end_mono_ns - rec.infer_start_mono_ns) / 1e6,
                    (time.time_ns() - rec.capture_wall_ns) / 1e6,
                    rec.batch_size,
                )
            )
        totals = self.counter.totals() if crossings else {}
        known = self.scene.kinematics.motions
        for c in crossings:
            self.scene.add_crossing(c.line_id, c.direction, c.class_name)
            mo = known.get(c.track_id)
            events.append(
                line_crossing_event(
                    cam_id,
                    rec.frame_id,
                    int(c.timestamp * 1e9),
                    c.line_id,
                    c.direction,
                    c.class_name,
                    c.track_id,
                    is_vehicle(c.class_name),
                    c.position,
                    totals.get(c.line_id, {}),
                    vehicle_type(c.class_name),
                    mo.speed_kmh if mo is not None else None,
                    mo.heading if mo is not None else None,
                )
            )
        for a in scene.alerts:
            snap = self._snapshot(a, rec, track_of) if a.state == RAISED else None
            events.append(self._alert_event(a, rec.frame_id, snap))
        return events


@dataclass
class _Cam:
    """One camera's analytics, its cells and its persisted totals."""

    a: CameraAnalytics
    frames: Cell
    events: Cell
    crossings: Cell
    tracks: Cell
    store: TotalsStore
    scene_store: SceneStore
    worker: int = 0

    def lines_state(self) -> dict[str, tuple[list[Any], LineTotals]]:
        totals = self.a.counter.totals()
        return {ln.line_id: (line_signature(ln), totals.get(ln.line_id, {})) for ln in self.a.lines}

    def save(self) -> None:
        """Save totals; reserve a new block of track ids first when the old one is used."""
        reserved = self.store.reserved_until
        if self.a.tracker.next_track_id + ID_BLOCK // 10 >= reserved:
            reserved = self.a.tracker.next_track_id + ID_BLOCK
        self.store.save(self.lines_state(), reserved)
        self.scene_store.save(self.a.scene.to_state())

    def restore(self) -> list[EventRecord]:
        """Take back the saved totals, track ids, open interval and raised alerts; the
        events that clear those alerts (the rules watch afresh after a restart)."""
        events: list[EventRecord] = []
        scene = self.scene_store.load()
        if scene is not None:
            cleared = self.a.scene.restore_state(scene, "analytics restarted; watching afresh")
            events = [self.a._alert_event(a, 0, None) for a in cleared]
            if self.a.scene.summary.start is not None or cleared:
                log.info(
                    "camera %s: open interval restored; %d alert(s) raised before the "
                    "restart cleared",
                    self.a.camera.id,
                    len(cleared),
                )
        saved, first = self.store.load()
        current = {ln.line_id: line_signature(ln) for ln in self.a.lines}
        restored = {k: tot for k, (sig, tot) in saved.items() if current.get(k) == sig}
        self.a.counter.restore_totals(restored)
        self.a.tracker.start_ids_at(first)
        self.store.reserved_until = first
        self.save()  # reserve the block before any id of it is used
        if restored or first > 1:
            log.info(
                "camera %s: totals of %d line(s) restored; track ids continue from %d",
                self.a.camera.id,
                len(restored),
                first,
            )
        return events


class _State:
    """The cameras this stage analyses, keyed by camera key, with their cells."""

    def __init__(self, ctx: StageContext) -> None:
        assert ctx.metrics is not None
        self.ctx = ctx
        self.metrics: MetricWriter = ctx.metrics
        self.cams: dict[int, _Cam] = {}
        self.class_names: Sequence[str] = COCO_NAMES
        self.bad = self.metrics.cell(m.ANALYZE_ERRORS)
        self.latency = self.metrics.cell(m.ANALYZE_LATENCY_SUM)
        self.processing = self.metrics.histogram(m.ML_PROCESSING)
        self.base_seq = ctx.spec.cmd_seq
        #: This process's analytics shard (``performance.analytics_workers``).
        self.shard = ctx.spec.worker
        self.state_dir = ctx.config.resolved_state_dir()
        self.last_save = 0.0
        self.last_idle_check = 0.0
        #: Events of camera changes (closed intervals, cleared alerts), queued before the
        #: command that caused them is forwarded.
        self.pending: list[EventRecord] = []

    def idle_flush(self) -> list[EventRecord]:
        """Close the intervals of cameras that went quiet (checked once a second)."""
        now = time.monotonic()
        if now - self.last_idle_check < 1.0:
            return []
        self.last_idle_check = now
        out: list[EventRecord] = []
        for cam in self.cams.values():
            out.extend(cam.a.flush_idle(now))
        return out

    def close_all(self, reason: str) -> list[EventRecord]:
        """The partial intervals and alert clears of every camera (a clean stop)."""
        out: list[EventRecord] = []
        for cam in self.cams.values():
            out.extend(cam.a.close(reason))
        return out

    def save_all(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_save >= SAVE_PERIOD_S:
            self.last_save = now
            for cam in self.cams.values():
                cam.save()

    def add(self, b: CameraBinding) -> None:
        camera = CameraConfig.model_validate(b.config)
        cur = self.cams.get(b.key)
        if cur is not None:
            self.pending.extend(cur.a.reconfigure(camera))
            cur.a.attach_frames(b.ring)
            cur.worker = b.worker
            return
        w, cid = self.metrics, camera.id
        cam = _Cam(
            CameraAnalytics(camera, self.class_names, self.ctx.config.analytics, self.state_dir),
            w.cell(m.ANALYZE_RECORDS, camera=cid),
            w.cell(m.ANALYZE_EVENTS, camera=cid),
            w.cell(m.ANALYZE_CROSSINGS, camera=cid),
            w.cell(m.ANALYZE_TRACKS, camera=cid),
            TotalsStore(self.state_dir, cid),
            SceneStore(self.state_dir, cid),
            b.worker,
        )
        self.pending.extend(cam.restore())
        cam.a.attach_frames(b.ring)
        self.cams[b.key] = cam
        log.info("camera %s attached (%d line(s))", camera.id, len(camera.lines))

    def remove(self, key: int) -> None:
        cam = self.cams.pop(key, None)
        if cam is not None:
            self.pending.extend(cam.a.close("the camera was removed"))
            cam.a.close_frames()
            cam.store.delete()  # the camera was removed: its totals go with it
            cam.scene_store.delete()
            self.metrics.retire_label("camera", cam.a.camera.id)
            log.info("camera %s detached", cam.a.camera.id)

    def apply(self, cmd: CommandRecord) -> None:
        if cmd.seq <= self.base_seq and cmd.op is not CommandOp.SYNC:
            return  # already part of the table this process was spawned with
        # Every shard sees every command; each takes only its own cameras.
        mine = [b for b in cmd.cameras if b.shard == self.shard]
        if cmd.op is CommandOp.SYNC:
            # The whole table of one inference worker: only its cameras are touched.
            keep = {b.key for b in mine}
            for key in [
                k for k, c in self.cams.items() if c.worker == cmd.worker and k not in keep
            ]:
                self.remove(key)
            for b in mine:
                self.add(b)
        elif cmd.op in (CommandOp.ATTACH, CommandOp.UPDATE):
            for b in mine:
                self.add(b)
        elif cmd.op is CommandOp.DETACH:
            for b in mine:
                self.remove(b.key)


def run(ctx: StageContext) -> int:
    """Analyse detection records until stopped and drained."""
    names = ctx.spec.detection_rings or (ctx.spec.detection_ring,)
    det_rings = [RecordRing.attach(n) for n in names]
    for r in det_rings:
        r.set_reader_bell(ctx.spec.slot)  # inference wakes this stage when it puts
    evt_ring = RecordRing.attach(ctx.spec.event_ring)
    # A frame gives several events: the publisher is woken once per round of batches,
    # not at the first of them (it would take the CPU from this stage mid-round).
    evt_ring.wake_on_put = False
    idle = Idle(ctx.slot)
    state = _State(ctx)
    for b in ctx.spec.cameras:
        if b.shard == state.shard:
            state.add(b)
    ctx.ack(ctx.spec.cmd_seq)
    board_name = ctx.spec.extra.get("board", "")
    board = Board.attach(board_name) if board_name else None
    last_board = 0.0
    detections = _DetectionsBoard(ctx)
    slot = ctx.slot
    ctx.set_running()
    try:
        # Records are dropped from the ring only after their events are queued, so a
        # crash here means those frames are analysed again (at least once).
        # One detection ring per inference worker; a camera's records all come from the
        # ring of its worker, so each camera is analysed in order.
        while (batches := _next_batches(ctx, det_rings, idle)) is not None:
            for det_ring, batch in batches:
                for data in batch:
                    if record_magic(data) == CMD_MAGIC:
                        if not _command(ctx, state, evt_ring, data):
                            return EXIT_OK
                        if board is not None:
                            _publish_board(board, state)
                        continue
                    for ev in _handle(ctx, state, data):
                        if not ctx.put(evt_ring, ev.pack()):
                            return EXIT_OK
                det_ring.advance(len(batch))
            pending, state.pending = state.pending, []  # e.g. clears of restored alerts
            for ev in pending + state.idle_flush():
                if not ctx.put(evt_ring, ev.pack()):
                    return EXIT_OK
            evt_ring.wake_reader()
            slot.beat()
            now = time.monotonic()
            if board is not None and now - last_board >= BOARD_PERIOD_S:
                last_board = now
                _publish_board(board, state)
            detections.publish(state)
            state.save_all()
        # Drained on a stop request: the partial intervals and the clears of the alerts
        # still raised go out before the publisher is stopped.
        for ev in state.close_all("the daemon stops"):
            if not ctx.put(evt_ring, ev.pack()):
                return EXIT_OK
    finally:
        evt_ring.wake_reader()
        state.save_all(force=True)
        if board is not None:
            _publish_board(board, state)
            board.close()
        detections.close()
        for cam in state.cams.values():
            cam.a.close_frames()
        for r in det_rings:
            r.close()
        evt_ring.close()
    return EXIT_OK


def _next_batches(
    ctx: StageContext, rings: list[RecordRing], idle: Idle
) -> list[tuple[RecordRing, list[bytes]]] | None:
    """The oldest records of every ring that has some (peeked: advance after handling).

    Waits (beating; asleep on the stage's doorbell, which inference rings) while all are
    empty, for at most ``IDLE_RETURN_S`` (then an empty list, so the caller's periodic
    work, such as closing the intervals of cameras that went quiet, runs while no record
    arrives); None once draining and all are empty.
    """
    waited_since = time.monotonic()
    while True:
        draining = ctx.check_drain()
        out = [(r, b) for r in rings if (b := r.peek_many(BATCH_RECORDS))]
        if out:
            idle.busy()
            return out
        if draining:
            idle.busy()
            return None
        if time.monotonic() - waited_since >= IDLE_RETURN_S:
            idle.busy()
            return []
        ctx.beat()
        idle.pause()


def _command(ctx: StageContext, state: _State, evt_ring: RecordRing, data: bytes) -> bool:
    """Apply a command, forward it to the publisher, record it; False if the parent is gone."""
    try:
        cmd = CommandRecord.unpack(data)
    except ValueError as err:
        state.bad.inc()
        log.error("skipping a malformed command record: %s", err)
        return True
    state.apply(cmd)
    pending, state.pending = state.pending, []
    for ev in pending:
        if not ctx.put(evt_ring, ev.pack()):
            return False
    if not ctx.put(evt_ring, data):
        return False
    ctx.ack(cmd.seq)
    return True


def _boxes_json(c: CameraAnalytics, item: list[Any]) -> bytes:
    """One frame for the detections board: [frame id, width, height, boxes], each box
    [x1, y1, x2, y2, track id (0: none), class]."""
    rec, track_of, report_min = item[0], item[1], item[2]
    boxes = []
    for i in range(len(rec.scores)):
        tid = track_of.get(i, 0)
        if rec.scores[i] < report_min and not tid:
            continue
        x1, y1, x2, y2 = (round(float(v), 1) for v in rec.boxes[i])
        boxes.append([x1, y1, x2, y2, tid, c.class_name(int(rec.class_ids[i]))])
    return _dumps([rec.frame_id, rec.width, rec.height, boxes])


class _DetectionsBoard:
    """The boxes of each camera's last frames (``DETECTIONS_S``), for the dashboard.

    The board (``itsd-<run>-board-detections``, ``...-detections<shard>`` for shards
    after the first; named in the spec) is made by the supervisor; the monitoring
    port draws these boxes on the very frame they belong to. Each frame is turned into
    JSON once, when first published; the blob is joined from those pieces.
    """

    def __init__(self, ctx: StageContext) -> None:
        named = ctx.spec.extra.get("detections_board", "")
        parsed = parse_segment_name(ctx.spec.cells) if ctx.spec.cells else None
        if named:
            self.name = named
        else:
            self.name = segment_name(parsed.run_id, "board", "detections") if parsed else ""
        self.board: Board | None = None
        self.next_at = 0.0
        self.warned = False

    def publish(self, state: _State, force: bool = False) -> None:
        now = time.monotonic()
        if not self.name or (now < self.next_at and not force):
            return
        self.next_at = now + BOARD_PERIOD_S
        if self.board is None:
            try:
                self.board = Board.attach(self.name)
            except (OSError, ValueError):
                return  # not made (yet): nobody draws
        oldest = time.time_ns() - int(DETECTIONS_S * 1e9)
        parts = []
        for cam in state.cams.values():
            c = cam.a
            frags = []
            for item in c.recent:
                if item[0].capture_wall_ns < oldest:
                    continue
                if item[3] is None:
                    item[3] = _boxes_json(c, item)
                frags.append(item[3])
            parts.append(_dumps(c.camera.id) + b":[" + b",".join(frags) + b"]")
        try:
            self.board.publish(b'{"cameras":{' + b",".join(parts) + b"}}")
        except ValueError as err:
            if not self.warned:
                self.warned = True
                log.warning("detections for the dashboard not published: %s", err)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def _publish_board(board: Board, state: _State) -> None:
    cams = [c.a for c in state.cams.values()]
    blob = {
        "cameras": {
            c.camera.id: {
                "line_counts": c.counter.totals(),
                "vehicles_in_view": c.in_view,
            }
            for c in cams
        },
        "updated_at": time.time(),
    }
    try:
        board.publish(_dumps(blob))
    except ValueError as err:
        log.warning("live state not published: %s", err)


def _handle(ctx: StageContext, state: _State, data: bytes) -> list[EventRecord]:
    magic = record_magic(data)
    try:
        if magic == MODEL_MAGIC:
            info = ModelInfoRecord.unpack(data)
            log.info("model %s on %s: %d classes", info.model, info.backend, len(info.class_names))
            state.class_names = info.class_names
            for c in state.cams.values():
                c.a.set_class_names(info.class_names)
            return []
        if magic != DET_MAGIC:
            raise ValueError(f"unknown record magic {magic:#x}")
        rec = DetectionRecord.unpack(data)
    except (ValueError, KeyError) as err:
        state.bad.inc()
        log.error("skipping a malformed detection record (%d bytes): %s", len(data), err)
        return []
    cam = state.cams.get(rec.camera_key)
    if cam is None:
        # Only possible around a stage restart while a camera was being removed.
        state.bad.inc()
        log.debug("detections of camera key %d, which is not attached: skipped", rec.camera_key)
        return []
    events = cam.a.process(rec, ctx.config.outputs.detection_events, ctx.config.model.confidence)
    cam.frames.inc()
    cam.events.inc(len(events))
    cam.tracks.set(cam.a.in_view)
    total_us = max(0, (time.time_ns() - rec.capture_wall_ns) // 1000)
    state.latency.inc(total_us)
    state.processing.observe(total_us / 1e6)
    crossings = sum(1 for e in events if e.topic == Topic.ANALYTICS)
    if crossings:
        cam.crossings.inc(crossings)
    return events
