"""Decode stage: one process per camera, from a video source into the camera's frame ring.

Opens the camera's source (``itsd.sources``: PyAV for files, RTSP and HTTP; a synthetic
pattern), keeps frames at the camera's target fps, scales frames larger than the ring's
slots down (keeping the aspect ratio), converts to RGB and writes each kept frame into
the ring (newest frame wins; the ring counts what inference did not take in time).

The camera comes from the stage spec (``spec.cameras[0]``: its key, id, ring and
settings), never from a position in the configuration's camera list.

Failures of the source never end the process: a camera that does not answer, drops
its connection or sends corrupt data is logged with its id and source and retried with
exponential backoff, and the reason is published on the stage's info board (health
shows it). The one exception: in a run that ends with its sources
(``supervisor.exit_when_sources_end``), a file that cannot be opened ends the stage
with ``EXIT_NO_INPUT`` so the run ends with an error instead of waiting forever. Frame
ids keep increasing across reconnects and restarts of this stage (the next id lives in
the stage's cell table).

This stage must never run inference or analytics, and never block on anything but its
source: the ring write does not wait for a reader.
"""

from __future__ import annotations

import logging
import time

import av

from itsd.config import CameraConfig
from itsd.errors import EXIT_NO_INPUT, EXIT_OK, SourceError
from itsd.runtime import metrics as m
from itsd.shm import FrameRing
from itsd.shm.frame_ring import PIXEL_FORMAT_RGB24
from itsd.sources import Source, open_source
from itsd.stages.runtime import StageContext

log = logging.getLogger("itsd.decode")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
JUMP_BACK_S = 0.25  # a file timestamp going back this much is a jump (joined segments)
JUMP_FORWARD_S = 2.0  # ... or forward this much (a clock reset, a gap in a recording)
LOSSLESS_POLL_S = 0.001


def fit_within(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    """Largest even size with the same aspect ratio that fits ``max_w`` x ``max_h``."""
    if width <= max_w and height <= max_h:
        return width, height
    scale = min(max_w / width, max_h / height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


class _Cells:
    """The decode stage's named cells for one camera."""

    def __init__(self, ctx: StageContext, camera_id: str) -> None:
        w = ctx.metrics
        assert w is not None, "decode needs its cell table"
        self.frames = w.cell(m.DECODE_FRAMES, camera=camera_id)
        self.written = w.cell(m.DECODE_WRITTEN, camera=camera_id)
        self.skipped = w.cell(m.DECODE_SKIPPED, camera=camera_id)
        self.errors = w.cell(m.DECODE_ERRORS, camera=camera_id)
        self.reconnects = w.cell(m.DECODE_RECONNECTS, camera=camera_id)
        self.last_frame = w.cell(m.DECODE_LAST_FRAME, camera=camera_id)
        self.next_id = w.cell(m.DECODE_NEXT_FRAME_ID, camera=camera_id)
        self.eof = w.cell(m.DECODE_EOF, camera=camera_id)
        self.ts_jumps = w.cell(m.DECODE_TS_JUMPS, camera=camera_id)
        self.waits = w.cell(m.DECODE_WAITS, camera=camera_id)


def run(ctx: StageContext) -> int:
    """Decode the camera of ``ctx.spec`` until stopped (or its file ends)."""
    binding = ctx.spec.cameras[0]
    camera = CameraConfig.model_validate(binding.config)
    ring = FrameRing.attach(binding.ring)
    recovered = ring.recover_writer()
    if recovered:
        log.info("camera %s: recovered %d slot(s) left half-written", camera.id, recovered)
    cells = _Cells(ctx, camera.id)
    fps = ctx.config.camera_fps(camera)
    live = camera.live
    end_with_sources = ctx.config.supervisor.exit_when_sources_end
    backoff = BACKOFF_START_S
    ctx.describe(camera=camera.id, state="opening", last_error="", last_error_at=None)
    ctx.set_running()
    try:
        while not ctx.should_stop():
            # One connection: open, decode until the source ends or fails.
            problem = ""
            frames_before = cells.frames.get_int()
            try:
                source = open_source(camera)
            except SourceError as err:
                problem = str(err)
                if end_with_sources and not live:
                    ctx.describe(state="failed", last_error=problem, last_error_at=time.time())
                    log.error(
                        "%s; this run ends with its sources, so the camera is given up", problem
                    )
                    return EXIT_NO_INPUT
            else:
                log.info("camera %s: opened %s (%s)", camera.id, camera.source, source.description)
                ctx.describe(state="streaming", source=source.description)
                try:
                    if not _decode_loop(ctx, source, camera, ring, cells, fps):
                        break  # stop requested
                    if not source.live:
                        if camera.loop:
                            continue
                        log.info("camera %s: end of %s", camera.id, camera.source)
                        cells.eof.set(1)
                        ctx.describe(state="ended")
                        break
                    problem = f"camera {camera.id}: stream {camera.source} ended"
                except (av.error.FFmpegError, OSError) as err:
                    cells.errors.inc()
                    problem = f"camera {camera.id}: stream {camera.source} failed: {err}"
                finally:
                    source.close()
            # Back off; a connection that delivered frames starts the backoff afresh.
            if cells.frames.get_int() > frames_before:
                backoff = BACKOFF_START_S
            cells.reconnects.inc()
            ctx.describe(state="retrying", last_error=problem, last_error_at=time.time())
            log.warning("%s; retrying in %.1f s", problem, backoff)
            if not ctx.sleep(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX_S)
    finally:
        ring.close()
    return EXIT_OK


def _decode_loop(
    ctx: StageContext,
    source: Source,
    camera: CameraConfig,
    ring: FrameRing,
    cells: _Cells,
    fps: float,
) -> bool:
    """Decode until the source ends (True) or a stop is requested (False).

    Frame ids: for a file that does not loop, the frame's index in the file (a restarted
    decoder resumes after the last frame it published); otherwise they continue from the
    stage's counter. A lossless camera (``realtime: false`` file) waits for a free ring
    slot before each frame instead of overwriting one. File timestamps that jump
    (backwards, or forwards by more than ``JUMP_FORWARD_S``) are logged and timing
    restarts at that frame, so pacing neither stalls nor sleeps through the gap.
    """
    slot = ctx.slot
    stats = {"corrupt": 0}
    period = 1.0 / fps
    live = source.live
    pace = (camera.realtime and not live) or camera.source.startswith("pattern://")
    lossless = camera.lossless
    by_index = not live and not camera.loop
    resume_from = cells.next_id.get_int() if by_index else 0
    if by_index and resume_from:
        log.info("camera %s: resuming after frame %d", camera.id, resume_from - 1)
    wall0 = time.monotonic()
    file_wall0_ns = time.time_ns()
    t_first: float | None = None
    t_prev: float | None = None
    rel_prev = 0.0
    step = period  # typical distance between two frames' timestamps
    next_due: float | None = None
    index = -1
    try:
        for frame in source.frames(stats):
            slot.beat()
            if ctx.should_stop():
                return False
            index += 1
            cells.frames.inc()
            if by_index and index < resume_from:
                continue  # published before this decoder restarted
            # Frame time: the stream clock for files, arrival time for live sources.
            t = frame.time if frame.time is not None else time.monotonic()
            if t_first is None:
                t_first = t
            elif not live and t_prev is not None:
                dt = t - t_prev
                if dt < -JUMP_BACK_S or dt > max(JUMP_FORWARD_S, 10 * step):
                    cells.ts_jumps.inc()
                    log.warning(
                        "camera %s: timestamps jump by %+.2f s at frame %d of %s; timing "
                        "restarts at this frame",
                        camera.id,
                        dt,
                        index,
                        camera.source,
                    )
                    t_first = t - (rel_prev + step)  # as if one ordinary frame later
                elif dt > 0:
                    step = 0.9 * step + 0.1 * dt
            t_prev = t
            rel = t - t_first
            rel_prev = rel
            if next_due is not None and rel + 1e-6 < next_due:
                cells.skipped.inc()
                continue  # above the target fps
            next_due = (next_due + period) if next_due is not None else period
            if next_due < rel:  # fell behind (gap in the stream): resynchronise
                next_due = rel + period
            if pace:
                delay = wall0 + rel - time.monotonic()
                if delay > 0 and not ctx.sleep(delay, step=0.5):
                    return False
            if lossless and not _wait_for_slot(ctx, ring, cells):
                return False
            w, h = fit_within(frame.width, frame.height, ring.max_width, ring.max_height)
            pixels = frame.rgb(w, h)
            # Claim the id before the frame is published: a crash in between leaves a gap,
            # never a frame id used twice.
            if by_index:
                frame_id = index
                cells.next_id.set(index + 1)
            else:
                frame_id = cells.next_id.get_int()
                cells.next_id.set(frame_id + 1)
            # Capture time: arrival for live sources; for files the start of this pass
            # plus the frame's stream time, so events line up with the video and the
            # tracker sees the video's own clock at any processing speed.
            wall_ns = time.time_ns() if live else file_wall0_ns + int(rel * 1e9)
            ok = ring.write(
                pixels,
                frame_id=frame_id,
                capture_ts_ns=wall_ns,
                pts=frame.pts,
                pixel_format=PIXEL_FORMAT_RGB24,
            )
            cells.last_frame.set(time.time())
            if ok:
                cells.written.inc()
    finally:
        if stats["corrupt"]:
            cells.errors.inc(stats["corrupt"])
    return True


def _wait_for_slot(ctx: StageContext, ring: FrameRing, cells: _Cells) -> bool:
    """Wait (beating) until the ring has a free slot; False if a stop came first."""
    if ring.has_free_slot():
        return True
    t0 = time.monotonic_ns()
    try:
        while not ring.has_free_slot():
            ctx.slot.beat()
            if ctx.should_stop():
                return False
            time.sleep(LOSSLESS_POLL_S)
        return True
    finally:
        cells.waits.inc((time.monotonic_ns() - t0) // 1000)
