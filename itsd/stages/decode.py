"""Decode stage: one process per camera, from a video source into the camera's frame ring.

Opens the source with PyAV (files, RTSP over TCP, HTTP), decodes on the CPU, keeps
frames at the camera's target fps, scales frames larger than the ring's slots down
(keeping the aspect ratio), converts to RGB and writes each kept frame into the ring
(newest frame wins; the ring counts what inference did not take in time).

Failures of the source never end the process: a camera that does not answer, drops
its connection or sends corrupt data is logged with its id and source and retried with
exponential backoff. Frame ids keep increasing across reconnects and restarts of this
stage (the next id lives in the stage's shared-memory slot).

This stage must never run inference or analytics, and never block on anything but its
source: the ring write does not wait for a reader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import av
import numpy as np

from itsd.config import CameraConfig
from itsd.errors import EXIT_OK, SourceError
from itsd.samples import resolve_source
from itsd.shm import FrameRing
from itsd.shm.frame_ring import PIXEL_FORMAT_RGB24
from itsd.stages.runtime import (
    C_DROPPED,
    C_EOF,
    C_ERRORS,
    C_IN,
    C_LAST_WALL_MS,
    C_NEXT_FRAME_ID,
    C_OUT,
    C_RECONNECTS,
    StageContext,
)

log = logging.getLogger("itsd.decode")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


def is_live(source: str) -> bool:
    """True for network streams (paced by the camera), False for files."""
    return "://" in source and not source.startswith("file://")


def _open(camera: CameraConfig) -> Any:
    source = resolve_source(camera.source).removeprefix("file://")
    options: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    if source.startswith("rtsp://"):
        options["rtsp_transport"] = "tcp"
    if is_live(source):
        kwargs["timeout"] = (camera.open_timeout_s, camera.open_timeout_s)
    try:
        container = av.open(source, options=options, **kwargs)
    except (av.error.FFmpegError, OSError) as err:  # FileNotFoundError is an OSError
        raise SourceError(f"camera {camera.id}: cannot open {camera.source}: {err}") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"camera {camera.id}: {camera.source} has no video stream")
    return container


def fit_within(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    """Largest even size with the same aspect ratio that fits ``max_w`` x ``max_h``."""
    if width <= max_w and height <= max_h:
        return width, height
    scale = min(max_w / width, max_h / height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _frames(container: Any, camera: CameraConfig, stats: dict[str, int]) -> Iterator[Any]:
    """Decoded frames; corrupt packets are counted and skipped."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError as err:
            stats["corrupt"] += 1
            if stats["corrupt"] <= 3 or stats["corrupt"] % 100 == 0:
                log.warning(
                    "camera %s: corrupt data skipped (%d so far): %s",
                    camera.id,
                    stats["corrupt"],
                    err,
                )
            continue
        yield from frames


def run(ctx: StageContext) -> int:
    """Decode the camera ``ctx.spec.camera_index`` until stopped (or its file ends)."""
    config = ctx.config
    camera = config.cameras[ctx.spec.camera_index]
    ring = FrameRing.attach(ctx.spec.frame_rings[0])
    recovered = ring.recover_writer()
    if recovered:
        log.info("camera %s: recovered %d slot(s) left half-written", camera.id, recovered)
    fps = config.camera_fps(camera)
    period = 1.0 / fps
    live = is_live(camera.source)
    slot = ctx.slot
    backoff = BACKOFF_START_S
    ctx.set_running()
    try:
        while not ctx.should_stop():
            # One connection: open, decode until the source ends or fails.
            problem = ""
            frames_before = slot.get(C_IN)
            try:
                container = _open(camera)
            except SourceError as err:
                problem = str(err)
            else:
                log.info("camera %s: opened %s", camera.id, camera.source)
                try:
                    if not _decode_loop(ctx, container, camera, ring, period, live):
                        break  # stop requested
                    if not live:
                        if camera.loop:
                            continue
                        log.info("camera %s: end of %s", camera.id, camera.source)
                        slot.set(C_EOF, 1)
                        break
                    problem = f"camera {camera.id}: stream {camera.source} ended"
                except (av.error.FFmpegError, OSError) as err:
                    slot.add(C_ERRORS)
                    problem = f"camera {camera.id}: stream {camera.source} failed: {err}"
                finally:
                    container.close()
            # Back off; a connection that delivered frames starts the backoff afresh.
            if slot.get(C_IN) > frames_before:
                backoff = BACKOFF_START_S
            slot.add(C_RECONNECTS)
            log.warning("%s; retrying in %.1f s", problem, backoff)
            if not ctx.sleep(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX_S)
    finally:
        ring.close()
    return EXIT_OK


def _decode_loop(
    ctx: StageContext,
    container: Any,
    camera: CameraConfig,
    ring: FrameRing,
    period: float,
    live: bool,
) -> bool:
    """Decode until the source ends (True) or a stop is requested (False)."""
    slot = ctx.slot
    stats = {"corrupt": 0}
    pace = camera.realtime and not live
    wall0 = time.monotonic()
    t_first: float | None = None
    next_due: float | None = None
    for frame in _frames(container, camera, stats):
        slot.beat()
        if ctx.should_stop():
            return False
        slot.add(C_IN)
        # Frame time: the stream clock for files, arrival time for live sources.
        t = frame.time if (frame.time is not None and not live) else time.monotonic()
        if t_first is None:
            t_first = t
        rel = t - t_first
        if next_due is not None and rel + 1e-6 < next_due:
            continue  # above the target fps
        next_due = (next_due + period) if next_due is not None else period
        if next_due < rel:  # fell behind (gap in the stream): resynchronise
            next_due = rel + period
        if pace:
            delay = wall0 + rel - time.monotonic()
            if delay > 0 and not ctx.sleep(delay, step=0.05):
                return False
        w, h = fit_within(frame.width, frame.height, ring.max_width, ring.max_height)
        if (w, h) != (frame.width, frame.height):
            pixels: np.ndarray = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
        else:
            pixels = frame.to_ndarray(format="rgb24")
        # Claim the id before the frame is published: a crash in between leaves a gap,
        # never a frame id used twice.
        frame_id = slot.get(C_NEXT_FRAME_ID)
        slot.set(C_NEXT_FRAME_ID, frame_id + 1)
        wall_ns = time.time_ns()
        ok = ring.write(
            pixels,
            frame_id=frame_id,
            capture_ts_ns=wall_ns,
            pts=int(frame.pts or 0),
            pixel_format=PIXEL_FORMAT_RGB24,
        )
        slot.set(C_LAST_WALL_MS, wall_ns // 1_000_000)
        if ok:
            slot.add(C_OUT)
        else:
            slot.add(C_DROPPED)
    if stats["corrupt"]:
        slot.add(C_ERRORS, stats["corrupt"])
    return True
