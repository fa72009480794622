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
from itsd.sources import Source, is_live, open_source
from itsd.stages.runtime import StageContext

log = logging.getLogger("itsd.decode")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


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
    live = is_live(camera.source)
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
    """Decode until the source ends (True) or a stop is requested (False)."""
    slot = ctx.slot
    stats = {"corrupt": 0}
    period = 1.0 / fps
    live = source.live
    pace = (camera.realtime and not live) or camera.source.startswith("pattern://")
    wall0 = time.monotonic()
    t_first: float | None = None
    next_due: float | None = None
    try:
        for frame in source.frames(stats):
            slot.beat()
            if ctx.should_stop():
                return False
            cells.frames.inc()
            # Frame time: the stream clock for files, arrival time for live sources.
            t = frame.time if frame.time is not None else time.monotonic()
            if t_first is None:
                t_first = t
            rel = t - t_first
            if next_due is not None and rel + 1e-6 < next_due:
                cells.skipped.inc()
                continue  # above the target fps
            next_due = (next_due + period) if next_due is not None else period
            if next_due < rel:  # fell behind (gap in the stream): resynchronise
                next_due = rel + period
            if pace:
                delay = wall0 + rel - time.monotonic()
                if delay > 0 and not ctx.sleep(delay, step=0.05):
                    return False
            w, h = fit_within(frame.width, frame.height, ring.max_width, ring.max_height)
            pixels = frame.rgb(w, h)
            # Claim the id before the frame is published: a crash in between leaves a gap,
            # never a frame id used twice.
            frame_id = cells.next_id.get_int()
            cells.next_id.set(frame_id + 1)
            wall_ns = time.time_ns()
            ok = ring.write(
                pixels,
                frame_id=frame_id,
                capture_ts_ns=wall_ns,
                pts=frame.pts,
                pixel_format=PIXEL_FORMAT_RGB24,
            )
            cells.last_frame.set(wall_ns / 1e9)
            if ok:
                cells.written.inc()
    finally:
        if stats["corrupt"]:
            cells.errors.inc(stats["corrupt"])
    return True
