"""Inference stage: batches the newest frame of each ready camera through the detector.

One process per GPU (or one on the CPU). Each round takes at most one frame per camera
(the newest; older unread frames are stale and skipped by the ring), visiting cameras
by priority and then round-robin so no camera starves, up to ``max_batch_size`` frames.
The detector reads the pixels straight from the ring slots (no copy); slots are released
in ``finally`` so a failing batch never leaks one. One ``DetectionRecord`` per frame goes
to the detection ring, which is lossless: when analytics falls behind, this stage waits
and the frame rings absorb the pressure by dropping the oldest frames.

On a stop request (sent only after every decode stage has exited) the stage drains the
frames still in the rings, then exits.

This stage must never decode, track or publish, and never hold a ring slot across a
wait on the detection ring.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from itsd.engines import EngineOptions, create_engine
from itsd.errors import EXIT_OK
from itsd.records import DetectionRecord, ModelInfoRecord
from itsd.shm import FrameRing, FrameSlot, RecordRing
from itsd.stages.runtime import (
    C_BATCHES,
    C_BUSY_US,
    C_IN,
    C_LAST_WALL_MS,
    C_OUT,
    IDLE_SLEEP_S,
    StageContext,
)

log = logging.getLogger("itsd.infer")


def run(ctx: StageContext) -> int:
    """Run batches until stopped and drained."""
    config = ctx.config
    cams = config.cameras
    options = EngineOptions(
        confidence=config.model.confidence,
        iou=config.model.iou,
        max_detections=config.model.max_detections,
        # The precision setting is for GPU backends; on the CPU the file runs as exported.
        precision=config.model.precision if config.gpus else "fp32",
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
    rings = [FrameRing.attach(name) for name in ctx.spec.frame_rings]
    for ring in rings:
        n = ring.recover_reader()
        if n:
            log.info("recovered %d slot(s) of ring %s left by a previous run", n, ring.name)
    det_ring = RecordRing.attach(ctx.spec.detection_ring)
    info = ModelInfoRecord(tuple(engine.class_names), engine.name, ctx.spec.model_path)
    ctx.put(det_ring, info.pack())

    # Visit order: priority first (9 = first), then a rotating start for fairness.
    order = sorted(range(len(rings)), key=lambda i: -cams[rings[i].camera_index].priority)
    max_batch = config.performance.max_batch_size
    slot = ctx.slot
    start = 0
    ctx.set_running()
    try:
        while True:
            draining = ctx.check_drain()
            taken: list[FrameSlot] = []
            n = len(order)
            for k in range(n):
                ring = rings[order[(start + k) % n]]
                s = ring.acquire_newest()
                if s is not None:
                    taken.append(s)
                    if len(taken) >= max_batch:
                        break
            start = (start + 1) % max(n, 1)
            if not taken:
                if draining or ctx.parent_gone():
                    break
                slot.beat()
                time.sleep(IDLE_SLEEP_S)
                continue
            acquire_ns = time.monotonic_ns()
            try:
                t0 = time.monotonic_ns()
                results = engine.infer([s.pixels for s in taken])
                t1 = time.monotonic_ns()
                records = [
                    DetectionRecord(
                        camera_index=s.camera_index,
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
                    for s, det in zip(taken, results, strict=True)
                ]
            finally:
                for s in taken:
                    s.release()
            slot.add(C_IN, len(taken))
            slot.add(C_BATCHES)
            slot.add(C_BUSY_US, (t1 - t0) // 1000)
            for payload in records:
                if not ctx.put(det_ring, payload):
                    return EXIT_OK
                slot.add(C_OUT)
            slot.set(C_LAST_WALL_MS, time.time_ns() // 1_000_000)
            slot.beat()
    finally:
        engine.close()
        for ring in rings:
            ring.close()
        det_ring.close()
    log.info("stopped after %d frames in %d batches", slot.get(C_IN), slot.get(C_BATCHES))
    return EXIT_OK
