"""Inference stage: batches the newest frame of each ready camera through the detector.

One process per inference worker (one per core on the CPU, one per GPU), each owning a
share of the cameras. Each round takes at most one frame per camera (the newest; older
unread frames are stale and skipped by the ring; lossless cameras give their oldest).
The scheduling is `itsd.engines.batcher`'s: cameras of the priority lane
(``performance.priority_lane``) first and beyond the adaptive limit, the others
round-robin so no camera starves; the batch size adapts between 1 and
``max_batch_size`` to hold the p95 batch latency under ``latency_target_ms``; a frame
older than ``frame_deadline_ms`` is released unread and counted
(``itsd_infer_frames_expired_total``), never inferred late. The detector reads the
pixels straight from the ring slots (no copy); slots are released in ``finally`` so a
failing batch never leaks one. One ``DetectionRecord`` per frame goes to the detection
ring, which is lossless: when analytics falls behind, this stage waits and the frame
rings absorb the pressure by dropping the oldest frames.

Failures of the backend go through `itsd.engines.breaker`'s circuit breaker: counted by
kind (CUDA, out of memory, time-out, other); once open the worker degrades
(``performance.breaker_fallback``: the same model on a CPU backend, or skipping frames,
counted) and probes the backend again after a cool-down. The breaker's state and reason
go into the stage's self-description (``degraded``), which health lists as a reason.

Cameras come and go at run time. The supervisor puts ``CommandRecord``s on this stage's
command ring; the stage applies each one between batches (attach a camera's ring,
detach it after taking its last frame, new priority), records it as applied and forwards
it on its detection rings ahead of any detection that depends on it, so analytics and
the publisher apply it in flow order. The stage has one detection ring per analytics
shard: a camera's records go to its shard's ring, commands to every ring. At start
the stage forwards a ``sync`` with the camera table it was spawned with, so the next
stages match it after any restart.

On a stop request (sent only after every decode stage has exited) the stage drains the
frames still in the rings, then exits.

This stage must never decode, track or publish, and never hold a ring slot across a
wait on the detection ring.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from itsd.config import CameraConfig, Config
from itsd.engines import EngineOptions, create_cpu_fallback, create_engine
from itsd.engines.base import Detections, Engine
from itsd.engines.batcher import Batcher, BatchPolicy
from itsd.engines.breaker import BreakerState, CircuitBreaker
from itsd.engines.models import prepare_for_gpu
from itsd.errors import EXIT_OK, ItsdError
from itsd.records import (
    CameraBinding,
    CommandOp,
    CommandRecord,
    DetectionRecord,
    ModelInfoRecord,
    picture_stats,
)
from itsd.runtime import metrics as m
from itsd.runtime.metrics import Cell, MetricWriter
from itsd.shm import FrameRing, FrameSlot, RecordRing
from itsd.shm.frame_pixels import to_rgb
from itsd.shm.frame_ring import PIXEL_FORMAT_RGB24
from itsd.stages.runtime import Idle, StageContext

log = logging.getLogger("itsd.infer")
COMMANDS_PER_ROUND = 16


@dataclass
class _Camera:
    binding: CameraBinding
    ring: FrameRing
    priority: int
    frames: Cell
    expired: Cell
    skipped: Cell
    lossless: bool = False
    #: Frames of a live camera have a deadline; files and patterns carry their video's
    #: clock rather than the moment of capture, lossless ones wait by design.
    deadline: bool = True

    def take(self) -> FrameSlot | None:
        """The next frame: the oldest for lossless cameras, else the newest."""
        return self.ring.acquire_oldest() if self.lossless else self.ring.acquire_newest()


class _Cameras:
    """The rings this stage reads, keyed by camera key; the batcher knows their lanes."""

    def __init__(
        self, metrics: MetricWriter, batcher: Batcher[int], bell_slot: int | None = None
    ) -> None:
        self.metrics = metrics
        self.batcher = batcher
        self.bell_slot = bell_slot  # the control slot whose doorbell a new frame rings
        self.by_key: dict[int, _Camera] = {}
        self.cameras_gauge = metrics.cell(m.INFER_CAMERAS)

    def _changed(self, cam: _Camera | None, key: int) -> None:
        if cam is None:
            self.batcher.remove_camera(key)
        else:
            self.batcher.set_camera(key, cam.priority)
        self.cameras_gauge.set(len(self.by_key))

    def attach(self, binding: CameraBinding) -> None:
        if binding.key in self.by_key:
            self.update(binding)
            return
        ring = FrameRing.attach(binding.ring)
        ring.set_reader_bell(self.bell_slot)  # its decoder wakes this worker per frame
        n = ring.recover_reader()
        if n:
            log.info("camera %s: recovered %d slot(s) left by a previous run", binding.camera_id, n)
        cfg = CameraConfig.model_validate(binding.config)
        cid = binding.camera_id
        cam = _Camera(
            binding,
            ring,
            cfg.priority,
            self.metrics.cell(m.INFER_FRAMES, camera=cid),
            self.metrics.cell(m.INFER_EXPIRED, camera=cid),
            self.metrics.cell(m.INFER_SKIPPED, camera=cid),
            cfg.lossless,
            cfg.live and not cfg.lossless,
        )
        self.by_key[binding.key] = cam
        self._changed(cam, binding.key)

    def update(self, binding: CameraBinding) -> None:
        cam = self.by_key.get(binding.key)
        if cam is None:
            self.attach(binding)
            return
        cam.binding = binding
        cfg = CameraConfig.model_validate(binding.config)
        cam.priority = cfg.priority
        cam.lossless = cfg.lossless
        cam.deadline = cfg.live and not cfg.lossless
        self._changed(cam, binding.key)

    def detach(self, key: int) -> _Camera | None:
        cam = self.by_key.pop(key, None)
        if cam is not None:
            self._changed(None, key)
        return cam

    def close(self) -> None:
        for cam in self.by_key.values():
            cam.ring.close()
        self.by_key.clear()


def _policy(config: Config) -> BatchPolicy:
    perf = config.performance
    return BatchPolicy(
        max_batch=perf.max_batch_size,
        initial_batch=perf.batch_size,
        latency_target_s=perf.latency_target_ms / 1000,
        deadline_s=perf.frame_deadline_ms / 1000,
        lane_priority=perf.priority_lane,
    )


def _options(config: Config, worker: int) -> EngineOptions:
    # The tracker sees every candidate down to candidate_confidence; detection events
    # report only those at or above model.confidence (analytics filters them).
    gpu = config.gpus[worker % len(config.gpus)] if config.gpus else None
    return EngineOptions(
        confidence=min(config.model.confidence, config.model.candidate_confidence),
        iou=config.model.iou,
        max_detections=config.model.max_detections,
        # model.precision is what GPU backends convert to; the CPU runs the file as is.
        precision=config.model.precision if gpu is not None else "fp32",
        intra_op_threads=config.performance.cpu_threads,
        classes=tuple(config.model.classes) if config.model.classes is not None else None,
        # Workers share the listed GPUs round-robin (one worker per GPU by default).
        gpu=gpu,
        max_batch=config.performance.max_batch_size,
    )


def _engine(ctx: StageContext) -> Engine:
    config = ctx.config
    options = _options(config, ctx.spec.worker)
    t_load = time.monotonic()
    # On a GPU with TensorRT, an ONNX/.pt model runs as an engine built once and cached;
    # the CPU fallback keeps using the file itself (ctx.spec.model_path).
    model, backend = prepare_for_gpu(
        Path(ctx.spec.model_path),
        config.model.backend,
        options.precision,
        options.gpu,
        options.max_batch,
        enabled=config.model.tensorrt,
        progress=lambda line: log.info("model.tensorrt: %s", line),
    )
    engine = create_engine(model, backend, options)
    log.info(
        "model %s loaded on %s in %.2f s (input %dx%d, %d classes%s)",
        ctx.spec.model_path,
        engine.name,
        time.monotonic() - t_load,
        engine.input_size[1],
        engine.input_size[0],
        len(engine.class_names),
        f", GPU {options.gpu}" if options.gpu is not None else "",
    )
    return engine


class _Runner:
    """Runs batches through the engine behind the circuit breaker; degrades when open."""

    def __init__(self, ctx: StageContext, engine: Engine, metrics: MetricWriter) -> None:
        self.ctx = ctx
        self.engine = engine
        self.metrics = metrics
        self.breaker = CircuitBreaker()
        #: A batch slower than this counts as a time-out (a GPU that hangs, a thrashing
        #: host); generous, as a loaded CPU is slow without being broken.
        self.timeout_s = max(10.0, 50 * ctx.config.performance.latency_target_ms / 1000)
        self.mode = ctx.config.performance.breaker_fallback
        self.fallback: Engine | None = None
        self._fallback_failed = False
        self.breaker_gauge = metrics.cell(m.INFER_BREAKER)
        self._errors: dict[str, Cell] = {}
        self._shown = (BreakerState.CLOSED, 0)
        ctx.describe(breaker=self.breaker.describe(), degraded="")

    def _error_cell(self, kind: str) -> Cell:
        cell = self._errors.get(kind)
        if cell is None:
            cell = self._errors[kind] = self.metrics.cell(m.INFER_ERRORS, kind=kind)
        return cell

    def _cpu(self) -> Engine | None:
        """The CPU fallback engine, built the first time it is needed."""
        if self.mode != "cpu" or self._fallback_failed:
            return None
        if self.fallback is None:
            try:
                opts = _options(self.ctx.config, self.ctx.spec.worker)
                self.fallback = create_cpu_fallback(Path(self.ctx.spec.model_path), opts)
                log.warning("CPU fallback ready: %s", self.fallback.name)
            except (ItsdError, OSError, RuntimeError) as err:
                self._fallback_failed = True
                log.error("no CPU fallback (%s); frames are skipped while the breaker is open", err)
                return None
        return self.fallback

    def infer(self, frames: list[np.ndarray]) -> list[Detections] | None:
        """Detections for the frames, or None when they were skipped (breaker open)."""
        if self.breaker.allow():
            t0 = time.monotonic()
            try:
                results = self.engine.infer(frames)
            except Exception as exc:  # every backend failure is classified, none is fatal
                kind = self.breaker.failure(exc)
                self._error_cell(kind).inc()
                log.error("inference failed (%s): %s", kind, exc)
            else:
                took = time.monotonic() - t0
                if took > self.timeout_s:
                    # Late but valid: the detections are used; the slowness is counted.
                    late = TimeoutError(f"a batch of {len(frames)} took {took:.1f} s")
                    self._error_cell(self.breaker.failure(late)).inc()
                    log.warning("inference time-out: %s (limit %.0f s)", late, self.timeout_s)
                else:
                    self.breaker.success()
                self._publish()
                return results
            self._publish()
        cpu = self._cpu()
        if cpu is None:
            return None
        return cpu.infer(frames)

    def _publish(self) -> None:
        state = self.breaker.state
        self.breaker_gauge.set(
            {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}[state]
        )
        shown = (state, self.breaker.opened)  # a failed probe re-opens it: show the new reason
        if state is BreakerState.HALF_OPEN or shown == self._shown:
            return
        self._shown = shown
        degraded = ""
        if state is BreakerState.OPEN:
            how = (
                "running on the CPU fallback"
                if self._cpu() is not None
                else "skipping frames until a probe succeeds"
            )
            degraded = f"circuit breaker open ({self.breaker.reason}); {how}"
            log.warning("%s; next probe in %.0f s", degraded, self.breaker.seconds_to_probe())
        else:
            log.warning("circuit breaker closed: the %s backend works again", self.engine.name)
        self.ctx.describe(breaker=self.breaker.describe(), degraded=degraded)

    def close(self) -> None:
        self.engine.close()
        if self.fallback is not None:
            self.fallback.close()


def _describe(ctx: StageContext, engine: Engine) -> None:
    versions = {"python": platform.python_version()}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - onnxruntime is a core dependency
        pass
    for lib in ("torch", "tensorrt"):  # loaded by the backend, if it is theirs
        if lib in sys.modules:
            versions[lib] = str(getattr(sys.modules[lib], "__version__", "?"))
    provider = getattr(engine, "provider", None)
    providers = getattr(engine, "providers", None) or ([provider] if provider else [])
    ctx.describe(
        backend=engine.name,
        model=Path(ctx.spec.model_path).name,
        model_path=ctx.spec.model_path,
        input_size=list(engine.input_size),
        classes=len(engine.class_names),
        providers=list(providers),
        device=str(getattr(engine, "device", "cpu")),
        precision=str(getattr(engine, "precision", "")),
        max_batch=engine.max_batch,
        versions=versions,
    )


def run(ctx: StageContext) -> int:
    """Run batches until stopped and drained."""
    engine = _engine(ctx)
    _describe(ctx, engine)
    assert ctx.metrics is not None
    metrics = ctx.metrics
    batcher: Batcher[int] = Batcher(_policy(ctx.config))
    cams = _Cameras(metrics, batcher, ctx.spec.slot)
    for binding in ctx.spec.cameras:
        cams.attach(binding)
    runner = _Runner(ctx, engine, metrics)
    # One detection ring per analytics shard: a camera's records go to its shard's.
    det_rings = [
        RecordRing.attach(n) for n in (ctx.spec.detection_rings or (ctx.spec.detection_ring,))
    ]
    cmd_ring = RecordRing.attach(ctx.spec.command_ring) if ctx.spec.command_ring else None
    if cmd_ring is not None:
        cmd_ring.set_reader_bell(ctx.spec.slot)  # a command wakes a sleeping worker
    info = ModelInfoRecord(tuple(engine.class_names), engine.name, ctx.spec.model_path)
    base_seq = ctx.spec.cmd_seq
    # Tell the next stages (every shard) the camera table this process starts from.
    sync = CommandRecord(base_seq, CommandOp.SYNC, ctx.spec.cameras, ctx.spec.worker)
    _put_all(ctx, det_rings, info.pack())
    _put_all(ctx, det_rings, sync.pack())
    ctx.ack(base_seq)
    batches = metrics.cell(m.INFER_BATCHES)
    busy = metrics.cell(m.INFER_SECONDS)
    latency = metrics.histogram(m.ML_INFER_LATENCY)
    limit_gauge = metrics.cell(m.INFER_BATCH_LIMIT)
    limit_gauge.set(batcher.size.limit)
    slot = ctx.slot
    n_frames = 0
    idle = Idle(slot)
    ctx.set_running()
    try:
        while True:
            draining = ctx.check_drain()
            if cmd_ring is not None and not _apply_commands(
                ctx, runner, cams, cmd_ring, det_rings, base_seq
            ):
                return EXIT_OK
            taken, backlog = _take(cams, batcher)
            if not taken:
                if draining or ctx.parent_gone():
                    break
                slot.beat()
                # Asleep until a decoder commits a frame (or a command comes): an idle
                # worker that polled its rings 500 times a second spent about 4% of a
                # core with 4 cameras.
                idle.pause()
                continue
            idle.busy()
            records, busy_us = _infer(runner, taken)
            n_frames += len(taken)
            batches.inc()
            busy.inc(busy_us)
            latency.observe(busy_us / 1e6)
            limit_gauge.set(batcher.done(len(taken), busy_us / 1e6, backlog))
            for (cam, _), payload in zip(taken, records, strict=False):
                if not ctx.put(det_rings[_shard(cam.binding, det_rings)], payload):
                    return EXIT_OK
            slot.beat()
    finally:
        runner.close()
        cams.close()
        for r in det_rings:
            r.close()
        if cmd_ring is not None:
            cmd_ring.close()
    log.info("stopped after %d frames in %d batches", n_frames, batches.get_int())
    return EXIT_OK


def _shard(b: CameraBinding, det_rings: list[RecordRing]) -> int:
    """Index of the detection ring of ``b``'s analytics shard."""
    return b.shard if 0 <= b.shard < len(det_rings) else 0


def _put_all(ctx: StageContext, rings: list[RecordRing], payload: bytes) -> bool:
    """Put ``payload`` on every ring (commands reach every analytics shard); False if
    the supervisor is gone."""
    return all(ctx.put(r, payload) for r in rings)


def _take(cams: _Cameras, batcher: Batcher[int]) -> tuple[list[tuple[_Camera, FrameSlot]], bool]:
    """One round of the batcher: the frames of the next batch, and whether the batch
    filled up before every camera was visited (frames were left waiting)."""
    taken: list[tuple[_Camera, FrameSlot]] = []
    normal = 0
    order = batcher.visit_order()
    for i, (key, high) in enumerate(order):
        if batcher.full(len(taken), normal, high):
            return taken, i < len(order)
        cam = cams.by_key.get(key)
        if cam is None:
            continue
        s = cam.take()
        if s is None:
            continue
        if not batcher.admit(key, s.capture_ts_ns, not cam.deadline):
            s.release()  # past its deadline: never inferred late
            cam.expired.inc()
            continue
        taken.append((cam, s))
        normal += not high
    return taken, False


def _model_frames(
    input_size: tuple[int, int], taken: list[tuple[_Camera, FrameSlot]]
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The RGB frames the engine gets, and per frame the factor (x, y, x, y) from its
    boxes to the slot's frame, or None when it is the slot's own RGB pixels.

    An RGB24 slot goes in as it is (zero copy). Any other format (I420 from a decode
    worker) is scaled to the size the letterbox would give it, then converted
    (``to_rgb`` scales the YUV planes first, so colour conversion runs on the small
    picture); the engine's own letterbox then only pads it.
    """
    dst_h, dst_w = input_size
    frames: list[np.ndarray] = []
    scales: list[np.ndarray | None] = []
    for _, s in taken:
        if s.pixel_format == PIXEL_FORMAT_RGB24:
            frames.append(s.pixels)
            scales.append(None)
            continue
        k = min(dst_h / s.height, dst_w / s.width, 1.0)
        size = (max(1, round(s.width * k)), max(1, round(s.height * k)))
        frames.append(to_rgb(s.pixels, s.pixel_format, size))
        sx, sy = s.width / size[0], s.height / size[1]
        scales.append(np.array([sx, sy, sx, sy], dtype=np.float32))
    return frames, scales


def _infer(runner: _Runner, taken: list[tuple[_Camera, FrameSlot]]) -> tuple[list[bytes], int]:
    """Run one batch; returns the packed detection records and the busy microseconds.

    Frames skipped because the breaker is open (and there is no CPU fallback) give no
    record: they are counted per camera, as frames a ring overwrote would be.
    """
    acquire_ns = time.monotonic_ns()
    records: list[bytes] = []
    try:
        t0 = time.monotonic_ns()
        frames, scales = _model_frames(runner.engine.input_size, taken)
        results = runner.infer(frames)
        t1 = time.monotonic_ns()
        if results is not None:
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
                    boxes=det.boxes if scale is None else det.boxes * scale,
                    scores=det.scores,
                    class_ids=det.class_ids,
                    **picture_stats(frame),
                ).pack()
                for (_, s), det, frame, scale in zip(taken, results, frames, scales, strict=True)
            ]
    finally:
        for _, s in taken:
            s.release()
    for cam, _ in taken:
        (cam.frames if results is not None else cam.skipped).inc()
    return records, (t1 - t0) // 1000


def _apply_commands(
    ctx: StageContext,
    runner: _Runner,
    cams: _Cameras,
    cmd_ring: RecordRing,
    det_rings: list[RecordRing],
    base_seq: int,
) -> bool:
    """Apply pending commands in order and forward them to every analytics shard (the
    records of a camera let go to its own shard's ring first); False if the supervisor
    is gone."""
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
        forward: list[tuple[int, bytes]] = []

        def let_go(b: CameraBinding, why: str, forward: list[tuple[int, bytes]] = forward) -> None:
            cam = cams.detach(b.key)
            if cam is None:
                return
            # Take what is in the ring now (the newest frame; every frame, in order, for a
            # lossless camera), then let go. Bounded: a camera handed over keeps its
            # decoder, which goes on writing; what comes later is the new worker's.
            for _ in range(cam.ring.slot_count):
                last = cam.take()
                if last is None:
                    break
                records, _ = _infer(runner, [(cam, last)])
                forward.extend((_shard(cam.binding, det_rings), r) for r in records)
            cam.ring.close()
            cams.metrics.retire_label("camera", b.camera_id)
            log.info("camera %s %s", b.camera_id, why)

        if cmd.op is CommandOp.ATTACH or cmd.op is CommandOp.UPDATE:
            for b in cmd.cameras:
                if b.worker != ctx.spec.worker:
                    # The camera moves to another worker (this one is saturated): hand it
                    # over; the command goes on so analytics follows it.
                    let_go(b, f"handed over to inference worker {b.worker}")
                    continue
                try:
                    cams.attach(b) if cmd.op is CommandOp.ATTACH else cams.update(b)
                except (OSError, ValueError) as err:
                    log.error("camera %s: cannot attach its ring %s: %s", b.camera_id, b.ring, err)
        elif cmd.op is CommandOp.DETACH:
            for b in cmd.cameras:
                let_go(b, "detached")
        for shard, payload in forward:
            if not ctx.put(det_rings[shard], payload):
                return False
        if not _put_all(ctx, det_rings, data):
            return False
        ctx.ack(cmd.seq)
        log.info("applied command %d (%s %s)", cmd.seq, cmd.op, [c.camera_id for c in cmd.cameras])
    cmd_ring.advance(len(raw))
    return True
