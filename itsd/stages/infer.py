"""Inference stage: batches the newest frame of each ready camera through the detector.

One process per GPU (or one on the CPU). Each round takes at most one frame per camera
(the newest; older unread frames are stale and skipped by the ring), visiting cameras
by priority and then round-robin so no camera starves, up to ``max_batch_size`` frames.
The detector reads the pixels straight from the ring slots (no copy); slots are released
in ``finally`` so a failing batch never leaks one. One ``DetectionRecord`` per frame goes
to the detection ring, which is lossless: when analytics falls behind, this stage waits
and the frame rings absorb the pressure by dropping the oldest frames.

Cameras come and go at run time. The supervisor puts ``CommandRecord``s on this stage's
command ring; the stage applies each one between batches (attach a camera's ring,
detach it after taking its last frame, new priority), records it as applied and forwards
it on the detection ring ahead of any detection that depends on it, so analytics and
the publisher apply it in flow order. At start the stage forwards a ``sync`` with the
camera table it was spawned with, so the next stages match it after any restart.

On a stop request (sent only after every decode stage has exited) the stage drains the
frames still in the rings, then exits.

This stage must never decode, track or publish, and never hold a ring slot across a
wait on the detection ring.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from itsd.config import CameraConfig
from itsd.engines import EngineOptions, create_engine
from itsd.engines.base import Engine
from itsd.errors import EXIT_OK
from itsd.records import (
    CameraBinding,
    CommandOp,
    CommandRecord,
    DetectionRecord,
    ModelInfoRecord,
)
from itsd.runtime import metrics as m
from itsd.runtime.metrics import Cell, MetricWriter
from itsd.shm import FrameRing, FrameSlot, RecordRing
from itsd.stages.runtime import IDLE_SLEEP_S, StageContext

log = logging.getLogger("itsd.infer")
COMMANDS_PER_ROUND = 16


@dataclass
class _Camera:
    binding: CameraBinding
    ring: FrameRing
    priority: int
    frames: Cell
    lossless: bool = False

    def take(self) -> FrameSlot | None:
        """The next frame: the oldest for lossless cameras, else the newest."""
        return self.ring.acquire_oldest() if self.lossless else self.ring.acquire_newest()


class _Cameras:
    """The rings this stage reads, keyed by camera key, and the visiting order."""

    def __init__(self, metrics: MetricWriter) -> None:
        self.metrics = metrics
        self.by_key: dict[int, _Camera] = {}
        self.order: list[_Camera] = []
        self.cameras_gauge = metrics.cell(m.INFER_CAMERAS)

    def _reorder(self) -> None:
        # Priority first (9 = first); ties keep the order cameras were added in.
        self.order = sorted(self.by_key.values(), key=lambda c: -c.priority)
        self.cameras_gauge.set(len(self.order))

    def attach(self, binding: CameraBinding) -> None:
        if binding.key in self.by_key:
            self.update(binding)
            return
        ring = FrameRing.attach(binding.ring)
        n = ring.recover_reader()
        if n:
            log.info("camera %s: recovered %d slot(s) left by a previous run", binding.camera_id, n)
        cfg = CameraConfig.model_validate(binding.config)
        frames = self.metrics.cell(m.INFER_FRAMES, camera=binding.camera_id)
        self.by_key[binding.key] = _Camera(binding, ring, cfg.priority, frames, cfg.lossless)
        self._reorder()

    def update(self, binding: CameraBinding) -> None:
        cam = self.by_key.get(binding.key)
        if cam is None:
            self.attach(binding)
            return
        cam.binding = binding
        cfg = CameraConfig.model_validate(binding.config)
        cam.priority = cfg.priority
        cam.lossless = cfg.lossless
        self._reorder()

    def detach(self, key: int) -> _Camera | None:
        cam = self.by_key.pop(key, None)
        if cam is not None:
            self._reorder()
        return cam

    def close(self) -> None:
        for cam in self.by_key.values():
            cam.ring.close()
        self.by_key.clear()
        self.order = []


def _engine(ctx: StageContext) -> Engine:
    config = ctx.config
    # The tracker sees every candidate down to candidate_confidence; detection events
    # report only those at or above model.confidence (analytics filters them).
    options = EngineOptions(
        confidence=min(config.model.confidence, config.model.candidate_confidence),
        iou=config.model.iou,
        max_detections=config.model.max_detections,
        precision="fp32",
        intra_op_threads=config.performance.cpu_threads,
        classes=tuple(config.model.classes) if config.model.classes is not None else None,
        gpu=config.gpus[0] if config.gpus else None,
    )
    if len(config.gpus) > 1:
        log.warning(
            "gpus: %s configured; this version runs one inference process, on GPU %d",
            config.gpus,
            config.gpus[0],
        )
    t_load = time.monotonic()
    engine = create_engine(Path(ctx.spec.model_path), config.model.backend, options)
    log.info(
        "model %s loaded on %s in %.2f s (input %dx%d, %d classes)",
        ctx.spec.model_path,
        engine.name,
        time.monotonic() - t_load,
        engine.input_size[1],
        engine.input_size[0],
        len(engine.class_names),
    )
    return engine


def _describe(ctx: StageContext, engine: Engine) -> None:
    versions = {"python": platform.python_version()}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - onnxruntime is a core dependency
        pass
    providers = getattr(engine, "providers", None)
    ctx.describe(
        backend=engine.name,
        model=Path(ctx.spec.model_path).name,
        model_path=ctx.spec.model_path,
        input_size=list(engine.input_size),
        classes=len(engine.class_names),
        providers=list(providers) if providers else [],
        versions=versions,
    )


def run(ctx: StageContext) -> int:
    """Run batches until stopped and drained."""
    engine = _engine(ctx)
    _describe(ctx, engine)
    assert ctx.metrics is not None
    metrics = ctx.metrics
    cams = _Cameras(metrics)
    for binding in ctx.spec.cameras:
        cams.attach(binding)
    det_ring = RecordRing.attach(ctx.spec.detection_ring)
    cmd_ring = RecordRing.attach(ctx.spec.command_ring) if ctx.spec.command_ring else None
    info = ModelInfoRecord(tuple(engine.class_names), engine.name, ctx.spec.model_path)
    base_seq = ctx.spec.cmd_seq
    # Tell the next stages the camera table this process starts from.
    ctx.put(det_ring, info.pack())
    sync = CommandRecord(base_seq, CommandOp.SYNC, ctx.spec.cameras, ctx.spec.worker)
    ctx.put(det_ring, sync.pack())
    ctx.ack(base_seq)
    batches = metrics.cell(m.INFER_BATCHES)
    busy = metrics.cell(m.INFER_SECONDS)
    latency = metrics.histogram(m.ML_INFER_LATENCY)
    max_batch = ctx.config.performance.max_batch_size
    slot = ctx.slot
    start = 0
    n_frames = 0
    ctx.set_running()
    try:
        while True:
            draining = ctx.check_drain()
            if cmd_ring is not None and not _apply_commands(
                ctx, engine, cams, cmd_ring, det_ring, base_seq
            ):
                return EXIT_OK
            taken: list[tuple[_Camera, FrameSlot]] = []
            order = cams.order
            n = len(order)
            for k in range(n):
                cam = order[(start + k) % n]
                s = cam.take()
                if s is not None:
                    taken.append((cam, s))
                    if len(taken) >= max_batch:
                        break
            start = (start + 1) % max(n, 1)
            if not taken:
                if draining or ctx.parent_gone():
                    break
                slot.beat()
                time.sleep(IDLE_SLEEP_S)
                continue
            records, busy_us = _infer(engine, taken)
            n_frames += len(taken)
            batches.inc()
            busy.inc(busy_us)
            latency.observe(busy_us / 1e6)
            for payload in records:
                if not ctx.put(det_ring, payload):
                    return EXIT_OK
            slot.beat()
    finally:
        engine.close()
        cams.close()
        det_ring.close()
        if cmd_ring is not None:
            cmd_ring.close()
    log.info("stopped after %d frames in %d batches", n_frames, batches.get_int())
    return EXIT_OK


def _infer(engine: Engine, taken: list[tuple[_Camera, FrameSlot]]) -> tuple[list[bytes], int]:
    """Run one batch; returns the packed detection records and the busy microseconds."""
    acquire_ns = time.monotonic_ns()
    try:
        t0 = time.monotonic_ns()
        results = engine.infer([s.pixels for _, s in taken])
        t1 = time.monotonic_ns()
        records = [
            DetectionRecord(
                camera_key=s.camera_key,
                frame_id=s.frame_id,
                pts=s.pts,
                capture_wall_ns=s.capture_ts_ns,
                acquire_mono_ns=acquire_ns,
                infer_start_mono_ns=t0,
                infer_end_mono_ns=t1,
                width=s.width,
                height=s.height,
                batch_size=len(taken),
                boxes=det.boxes,
                scores=det.scores,
                class_ids=det.class_ids,
            ).pack()
            for (_, s), det in zip(taken, results, strict=True)
        ]
    finally:
        for _, s in taken:
            s.release()
    for cam, _ in taken:
        cam.frames.inc()
    return records, (t1 - t0) // 1000


def _apply_commands(
    ctx: StageContext,
    engine: Engine,
    cams: _Cameras,
    cmd_ring: RecordRing,
    det_ring: RecordRing,
    base_seq: int,
) -> bool:
    """Apply pending commands in order and forward them; False if the supervisor is gone."""
    raw = cmd_ring.peek_many(COMMANDS_PER_ROUND)
    if not raw:
        return True
    for data in raw:
        try:
            cmd = CommandRecord.unpack(data)
        except ValueError as err:
            log.error("skipping a malformed command (%d bytes): %s", len(data), err)
            continue
        if cmd.seq <= base_seq:
            continue  # already part of the table this process was spawned with
        forward: list[bytes] = []
        if cmd.op is CommandOp.ATTACH or cmd.op is CommandOp.UPDATE:
            for b in cmd.cameras:
                try:
                    cams.attach(b) if cmd.op is CommandOp.ATTACH else cams.update(b)
                except (OSError, ValueError) as err:
                    log.error("camera %s: cannot attach its ring %s: %s", b.camera_id, b.ring, err)
        elif cmd.op is CommandOp.DETACH:
            for b in cmd.cameras:
                cam = cams.detach(b.key)
                if cam is None:
                    continue
                # The decoder has exited: take what is still in the ring (the newest frame;
                # every frame, in order, for a lossless camera), then let go.
                while (last := cam.take()) is not None:
                    records, _ = _infer(engine, [(cam, last)])
                    forward += records
                cam.ring.close()
                cams.metrics.retire_label("camera", b.camera_id)
                log.info("camera %s detached", b.camera_id)
        for payload in forward:
            if not ctx.put(det_ring, payload):
                return False
        if not ctx.put(det_ring, data):
            return False
        ctx.ack(cmd.seq)
        log.info("applied command %d (%s %s)", cmd.seq, cmd.op, [c.camera_id for c in cmd.cameras])
    cmd_ring.advance(len(raw))
    return True
