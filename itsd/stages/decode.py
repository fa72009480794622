"""Decode worker: one process that runs many cameras, each in its own thread.

Each camera of the worker has a thread that opens its source (``itsd.sources``: PyAV for
files, RTSP and HTTP; a synthetic pattern), keeps frames at the camera's target fps,
scales frames larger than the ring's slots down (keeping the aspect ratio), converts to
RGB (or, for a camera with ``ring_format: i420``, copies the decoder's YUV 4:2:0 planes
straight into the ring slot: no colour conversion, no intermediate array) and writes
each kept frame into the camera's frame ring (newest frame wins; the ring
counts what inference did not take in time). PyAV releases the GIL while it decodes, so
the threads of one worker decode side by side; a camera that blocks (a dead host, a
stalled stream) blocks only its own thread.

The worker's main thread applies the supervisor's commands (attach, detach, update) from
its command ring and acknowledges them in its cell table, beats the heartbeat and
watches its cameras: a live source that delivers nothing for the camera's
``stall_timeout_s`` is marked ``stalled`` and reopened. A camera's counters live in the
camera's own cell table and its state (connecting, streaming, stalled, reconnecting,
failed, stopped, with the reason) on the camera's own info board, both created by the
supervisor with the camera: they survive a restart of the worker and a move to another
worker, so frame ids keep increasing.

Failures of a source never end the process: a camera that does not answer, drops its
connection or sends corrupt data is logged with its id and source and retried with
exponential backoff. In a run that ends with its sources
(``supervisor.exit_when_sources_end``), a file that cannot be opened marks the camera
failed (``itsd_decode_source_failed``) instead of retrying.

A detached camera's thread may still be blocked in its source; it is flagged first (under
the camera's lock, so it never writes its ring again) and its shared memory is unmapped
only once the thread has ended. This stage must never run inference or analytics, and
never block on anything but its sources: the ring write does not wait for a reader
(except for a lossless camera, which waits for a free slot in its own thread).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

import av

from itsd.config import CameraConfig
from itsd.errors import EXIT_OK, SourceError
from itsd.records import CameraBinding, CommandOp, CommandRecord
from itsd.runtime import metrics as m
from itsd.shm import FrameRing, RecordRing
from itsd.shm.board import Board
from itsd.shm.cells import CellTable
from itsd.shm.frame_ring import PIXEL_FORMAT_I420, PIXEL_FORMAT_RGB24
from itsd.sources import I420Frame, Source, SourceOptions, as_i420, open_source
from itsd.stages.runtime import StageContext

log = logging.getLogger("itsd.decode")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
LIVE_BACKOFF_MAX_S = 5.0  # a camera back on the network streams again within this
JUMP_BACK_S = 0.25  # a file timestamp going back this much is a jump (joined segments)
JUMP_FORWARD_S = 2.0  # ... or forward this much (a clock reset, a gap in a recording)
#: A lossless camera waiting for a free slot sleeps on its ring's writer bell, which the
#: reader rings as it frees a slot, and looks at its stop flag at least this often.
#: (Polling from every 1 ms up to every 8 ms cost about 0.6 CPU ms per frame.)
LOSSLESS_WAIT_S = 0.1
WATCH_PERIOD_S = 0.05  # the main thread's loop: commands, stall checks, heartbeat
COMMANDS_PER_ROUND = 64
BEHIND_S = 1.0  # a live source this far behind skips non-reference frames until caught up
JOIN_S = 0.5  # how long a detach waits for the camera's thread before moving on

#: Camera states shown by health (``state`` on the camera's info board).
CONNECTING, STREAMING, STALLED, RECONNECTING, FAILED, STOPPED = (
    "connecting",
    "streaming",
    "stalled",
    "reconnecting",
    "failed",
    "stopped",
)


class _Cells:
    """One camera's named cells (created once, by the worker's main thread)."""

    def __init__(self, writer: m.MetricWriter, camera_id: str) -> None:
        w = writer
        self.frames = w.cell(m.DECODE_FRAMES, camera=camera_id)
        self.written = w.cell(m.DECODE_WRITTEN, camera=camera_id)
        self.skipped = w.cell(m.DECODE_SKIPPED, camera=camera_id)
        self.errors = w.cell(m.DECODE_ERRORS, camera=camera_id)
        self.reconnects = w.cell(m.DECODE_RECONNECTS, camera=camera_id)
        self.last_frame = w.cell(m.DECODE_LAST_FRAME, camera=camera_id)
        self.next_id = w.cell(m.DECODE_NEXT_FRAME_ID, camera=camera_id)
        self.eof = w.cell(m.DECODE_EOF, camera=camera_id)
        self.failed = w.cell(m.DECODE_FAILED, camera=camera_id)
        self.ts_jumps = w.cell(m.DECODE_TS_JUMPS, camera=camera_id)
        self.waits = w.cell(m.DECODE_WAITS, camera=camera_id)
        self.stalls = w.cell(m.DECODE_STALLS, camera=camera_id)
        self.decode_time = w.cell(m.DECODE_TIME, camera=camera_id)


class _Memory:
    """A camera's shared memory as this worker maps it: ring, cells, info board."""

    def __init__(self, binding: CameraBinding) -> None:
        self.ring = FrameRing.attach(binding.ring)
        try:
            self.table = CellTable.attach(binding.cells)
            try:
                self.info = Board.attach(binding.info)
            except BaseException:
                self.table.close()
                raise
        except BaseException:
            self.ring.close()
            raise
        self.cells = _Cells(m.MetricWriter(self.table), binding.camera_id)
        self.info_lock = threading.Lock()  # the board has one writer at a time
        self.about: dict[str, Any] = {}
        self.users = 0  # camera runs using this memory (an old one may still be blocked)

    def describe(self, **fields: Any) -> None:
        """Merge ``fields`` into the camera's self-description and publish it."""
        with self.info_lock:
            self.about.update(fields)
            blob = json.dumps(self.about, separators=(",", ":"), default=str).encode()
            try:
                self.info.publish(blob[: self.info.capacity])
            except ValueError as err:
                log.warning("camera %s: state not published: %s", self.about.get("camera"), err)

    def close(self) -> None:
        """Unmap everything (only once no thread uses it)."""
        for obj in (self.ring, self.table, self.info):
            with contextlib.suppress(OSError):
                obj.close()


class _CameraRun(threading.Thread):
    """One camera's decode loop, in its own thread, until stopped or its file ends."""

    def __init__(self, ctx: StageContext, binding: CameraBinding, mem: _Memory) -> None:
        camera = CameraConfig.model_validate(binding.config)
        if camera.substream:  # analytics decodes the smaller stream; source stays the main
            camera = camera.model_copy(update={"source": camera.substream})
        self.camera = camera
        super().__init__(name=f"camera-{camera.id}", daemon=True)
        self.ctx = ctx
        self.binding = binding
        self.mem = mem
        self.cells = mem.cells
        self.ring = mem.ring
        self.lock = threading.Lock()  # held while writing the ring; detach takes it
        self.detached = False  # set under ``lock``: never write the ring again
        self.halt = threading.Event()  # stop this camera
        self.reopen = threading.Event()  # close and reopen the source (stalled)
        # Frames come out of the decoder scaled to the ring's slots (one libswscale call
        # with the RGB conversion); one decoder thread, as the worker runs many cameras.
        self.options = SourceOptions(
            max_width=self.ring.max_width,
            max_height=self.ring.max_height,
            behind_s=BEHIND_S if self.camera.live else 0.0,
            threads=1,
        )
        self.streaming_since: float | None = None
        self.last_progress = time.monotonic()
        self.decoder = "cpu"  # or "nvdec": set by the worker before start
        gpus = ctx.config.gpus
        self.gpu = gpus[binding.key % len(gpus)] if gpus else 0
        mem.users += 1

    # -- control (main thread) ----------------------------------------------------------
    def detach(self) -> None:
        """Stop for good: after this returns the thread never writes the ring again."""
        self.halt.set()
        with self.lock:
            self.detached = True

    def stopping(self) -> bool:
        """True when this camera should stop (detached or the worker stops)."""
        return self.halt.is_set() or self.ctx.should_stop()

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False if a stop came first."""
        deadline = time.monotonic() + seconds
        while True:
            if self.stopping():
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.halt.wait(min(0.25, left))

    # -- the thread -----------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:  # a bug in one camera must not take the worker down
            log.exception("camera %s: decoding stopped by an unexpected error", self.camera.id)
            self.mem.describe(
                state=FAILED, last_error="internal error (see the log)", last_error_at=time.time()
            )

    def _run(self) -> None:
        camera = self.camera
        cells = self.cells
        recovered = self.ring.recover_writer()
        if recovered:
            log.info("camera %s: recovered %d slot(s) left half-written", camera.id, recovered)
        fps = self.ctx.config.camera_fps(camera)
        end_with_sources = self.ctx.config.supervisor.exit_when_sources_end
        backoff = BACKOFF_START_S
        self.mem.describe(camera=camera.id, state=CONNECTING, reason="")
        while not self.stopping():
            # One connection: open, decode until the source ends or fails.
            problem = ""
            frames_before = cells.frames.get_int()
            self.reopen.clear()
            self.last_progress = time.monotonic()
            try:
                source = open_source(camera, self.options, self.decoder, self.gpu)
            except SourceError as err:
                problem = str(err)
                if self.decoder == "nvdec" and camera.decoder == "auto":
                    log.warning("%s; decoding this camera on the CPU instead", problem)
                    self.decoder = "cpu"
                    continue
                if end_with_sources and not camera.live:
                    cells.failed.set(1)
                    self.mem.describe(
                        state=FAILED,
                        reason=problem,
                        last_error=problem,
                        last_error_at=time.time(),
                    )
                    log.error(
                        "%s; this run ends with its sources, so the camera is given up", problem
                    )
                    return
            else:
                if self.stopping():
                    source.close()
                    break
                log.info("camera %s: opened %s (%s)", camera.id, camera.source, source.description)
                self.streaming_since = time.monotonic()
                self.mem.describe(state=STREAMING, reason="", source=source.description)
                try:
                    ended = self._decode_loop(source, fps)
                    if ended is None:
                        break  # stop requested
                    if ended == "stalled":
                        problem = (
                            f"camera {camera.id}: no frame from {camera.source} for "
                            f"{camera.stall_timeout_s:g} s; reopening it"
                        )
                    elif not source.live:
                        if camera.loop:
                            continue
                        log.info("camera %s: end of %s", camera.id, camera.source)
                        cells.eof.set(1)
                        self.mem.describe(state=STOPPED, reason="end of file")
                        return
                    else:
                        problem = f"camera {camera.id}: stream {camera.source} ended"
                except (av.error.FFmpegError, OSError) as err:
                    cells.errors.inc()
                    problem = f"camera {camera.id}: stream {camera.source} failed: {err}"
                finally:
                    self.streaming_since = None
                    source.close()
            if self.stopping():
                break
            # Back off; a connection that delivered frames starts the backoff afresh.
            if cells.frames.get_int() > frames_before:
                backoff = BACKOFF_START_S
            cells.reconnects.inc()
            self.mem.describe(
                state=RECONNECTING, reason=problem, last_error=problem, last_error_at=time.time()
            )
            log.warning("%s; retrying in %.1f s", problem, backoff)
            if not self._wait(backoff):
                break
            backoff = min(backoff * 2, LIVE_BACKOFF_MAX_S if camera.live else BACKOFF_MAX_S)
            self.mem.describe(state=CONNECTING)

    def _decode_loop(self, source: Source, fps: float) -> str | None:
        """Decode until the source ends ("end"), stalls ("stalled") or a stop (None).

        Frame ids: for a file that does not loop, the frame's index in the file (a restarted
        decoder resumes after the last frame it published); otherwise they continue from the
        camera's counter. A lossless camera (``realtime: false`` file) waits for a free ring
        slot before each frame instead of overwriting one. File timestamps that jump
        (backwards, or forwards by more than ``JUMP_FORWARD_S``) are logged and timing
        restarts at that frame, so pacing neither stalls nor sleeps through the gap.
        """
        camera = self.camera
        cells = self.cells
        ring = self.ring
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
        want_i420 = camera.ring_format == "i420"
        try:
            for frame in source.frames(stats):
                self.last_progress = time.monotonic()
                if self.stopping():
                    return None
                if self.reopen.is_set():
                    return "stalled"
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
                    if delay > 0 and not self._wait(delay):
                        return None
                if lossless and not self._wait_for_slot():
                    return None
                planar = as_i420(frame) if want_i420 else None
                i420 = planar.i420_size() if planar is not None else None
                if i420 is None:
                    t0 = time.perf_counter_ns()
                    pixels = frame.rgb()
                    cells.decode_time.inc((time.perf_counter_ns() - t0) // 1000)
                # Capture time: arrival for live sources; for files the start of this pass
                # plus the frame's stream time, so events line up with the video and the
                # tracker sees the video's own clock at any processing speed.
                wall_ns = frame.capture_ns if live else file_wall0_ns + int(rel * 1e9)
                with self.lock:
                    if self.detached:
                        return None
                    # Claim the id before the frame is published: a crash in between leaves
                    # a gap, never a frame id used twice.
                    if by_index:
                        frame_id = index
                        cells.next_id.set(index + 1)
                    else:
                        frame_id = cells.next_id.get_int()
                        cells.next_id.set(frame_id + 1)
                    if planar is not None and i420 is not None:
                        ok = self._write_i420(planar, i420, frame_id, wall_ns)
                    else:
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
        return "stalled" if self.reopen.is_set() else "end"

    def _write_i420(
        self, frame: I420Frame, size: tuple[int, int], frame_id: int, wall_ns: int
    ) -> bool:
        """Copy the frame's planes straight into a ring slot and publish it (zero copies
        besides that one); False when no slot was free (counted by the ring)."""
        ws = self.ring.begin_write(size[0], size[1], PIXEL_FORMAT_I420)
        if ws is None:
            return False
        with ws:  # aborts unless committed
            t0 = time.perf_counter_ns()
            frame.i420_into(ws.pixels)
            self.cells.decode_time.inc((time.perf_counter_ns() - t0) // 1000)
            ws.commit(frame_id=frame_id, capture_ts_ns=wall_ns, pts=getattr(frame, "pts", 0))
        return True

    def _wait_for_slot(self) -> bool:
        """Wait until the ring has a free slot; False if a stop came first."""
        ring = self.ring
        if ring.has_free_slot():
            return True
        t0 = time.monotonic_ns()
        try:
            while not ring.wait_free_slot(LOSSLESS_WAIT_S):
                if self.stopping():
                    return False
                self.last_progress = time.monotonic()  # waiting on inference is not a stall
            return True
        finally:
            self.cells.waits.inc((time.monotonic_ns() - t0) // 1000)


class _Worker:
    """The cameras of this decode worker, keyed by camera key."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.runs: dict[int, _CameraRun] = {}
        self.memory: dict[int, _Memory] = {}
        self.ended: list[_CameraRun] = []  # detached, thread not finished yet
        assert ctx.metrics is not None, "decode needs its cell table"
        self.n_cameras = ctx.metrics.cell(m.DECODE_WORKER_CAMERAS)
        self.gpu_ok: bool | None = None  # NVDEC usable here (checked on first need)

    def attach(self, binding: CameraBinding, fresh: bool = False) -> None:
        """Start decoding a camera (a camera already here is restarted with ``binding``).

        ``fresh`` (its source settings changed): a file that had ended or could not be
        opened is tried again."""
        old = self.runs.pop(binding.key, None)
        if old is not None:
            self._retire(old)
        mem = self.memory.get(binding.key)
        if mem is None:
            mem = _Memory(binding)
            self.memory[binding.key] = mem
        if fresh:
            mem.cells.eof.set(0)
            mem.cells.failed.set(0)
        run = _CameraRun(self.ctx, binding, mem)
        if run.camera.decoder != "cpu" and not run.camera.source.startswith(
            ("pattern://", "whep+")
        ):
            in_use = sum(1 for r in self.runs.values() if r.decoder == "nvdec")
            limit = self.ctx.config.performance.nvdec_cameras_per_worker
            if self.gpu_ok is None:
                from itsd.sources.nvdec import gpu_decode_available

                self.gpu_ok = gpu_decode_available()
            from itsd.sources.nvdec import choose_decoder

            run.decoder = choose_decoder(run.camera.decoder, in_use, limit, self.gpu_ok)
        self.runs[binding.key] = run
        if mem.cells.eof.get_int() or mem.cells.failed.get_int():
            # Its file has ended (or cannot be opened) already: nothing to decode.
            mem.describe(camera=run.camera.id)
        else:
            run.start()
        self.n_cameras.set(len(self.runs))
        log.info("camera %s attached (%s)", binding.camera_id, run.camera.source)

    def detach(self, key: int) -> None:
        """Stop a camera; its memory is unmapped once its thread has ended."""
        run = self.runs.pop(key, None)
        if run is None:
            return
        self._retire(run)
        self.n_cameras.set(len(self.runs))
        log.info("camera %s detached", run.camera.id)

    def _retire(self, run: _CameraRun) -> None:
        run.detach()
        if run.is_alive():
            run.join(JOIN_S)
        self.ended.append(run)
        self._reap()

    def _reap(self) -> None:
        """Unmap the memory of cameras that are gone once no thread uses it."""
        still = []
        for run in self.ended:
            if run.is_alive():
                still.append(run)
                continue
            mem = run.mem
            mem.users -= 1
            key = run.binding.key
            if mem.users <= 0 and self.memory.get(key) is mem and key not in self.runs:
                del self.memory[key]
                mem.close()
        self.ended = still

    def apply_commands(self, cmd_ring: RecordRing, base_seq: int) -> None:
        """Apply pending commands in order and acknowledge each."""
        raw = cmd_ring.peek_many(COMMANDS_PER_ROUND)
        if not raw:
            return
        for data in raw:
            try:
                cmd = CommandRecord.unpack(data)
            except ValueError as err:
                log.error("skipping a malformed command (%d bytes): %s", len(data), err)
                continue
            if cmd.seq <= base_seq:
                continue  # already part of the table this process was spawned with
            for b in cmd.cameras:
                try:
                    if cmd.op is CommandOp.ATTACH or cmd.op is CommandOp.UPDATE:
                        self.attach(b, fresh=cmd.op is CommandOp.UPDATE)
                    elif cmd.op is CommandOp.DETACH:
                        self.detach(b.key)
                except (OSError, ValueError) as err:
                    log.error("camera %s: cannot attach its memory: %s", b.camera_id, err)
            self.ctx.ack(cmd.seq)
        cmd_ring.advance(len(raw))

    def watch(self, now: float) -> None:
        """Reopen stalled live sources; reap ended threads."""
        for run in self.runs.values():
            since = run.streaming_since
            if since is None or not run.camera.live or run.reopen.is_set():
                continue
            idle = now - run.last_progress
            if idle > run.camera.stall_timeout_s:
                run.cells.stalls.inc()
                run.reopen.set()
                why = (
                    f"camera {run.camera.id}: no frame from {run.camera.source} for "
                    f"{idle:.1f} s; reopening it"
                )
                log.warning("%s", why)
                run.mem.describe(
                    state=STALLED, reason=why, last_error=why, last_error_at=time.time()
                )
        if self.ended:
            self._reap()

    def stop(self) -> None:
        """Stop every camera (the worker is ending)."""
        for run in self.runs.values():
            run.detach()
        deadline = time.monotonic() + 2.0
        for run in list(self.runs.values()) + self.ended:
            if run.is_alive():
                run.join(max(0.0, deadline - time.monotonic()))
            if not run.is_alive() and run.mem.about.get("state") not in (STOPPED, FAILED):
                run.mem.describe(state=STOPPED, reason="decode worker stopped")
        # Memory of threads still blocked in a source stays mapped until the process exits.
        runs = list(self.runs.values()) + self.ended
        busy = {id(r.mem) for r in runs if r.is_alive()}
        for mem in {id(r.mem): r.mem for r in runs}.values():
            if id(mem) not in busy:
                mem.close()


def run(ctx: StageContext) -> int:
    """Run the cameras of ``ctx.spec`` and those attached later, until stopped."""
    worker = _Worker(ctx)
    cmd_ring = RecordRing.attach(ctx.spec.command_ring) if ctx.spec.command_ring else None
    try:
        for binding in ctx.spec.cameras:
            try:
                worker.attach(binding)
            except (OSError, ValueError) as err:
                log.error("camera %s: cannot attach its memory: %s", binding.camera_id, err)
        ctx.describe(cameras=len(worker.runs))
        ctx.set_running()
        while not ctx.should_stop():
            ctx.beat()
            if cmd_ring is not None:
                worker.apply_commands(cmd_ring, ctx.spec.cmd_seq)
            worker.watch(time.monotonic())
            time.sleep(WATCH_PERIOD_S)
    finally:
        worker.stop()
        if cmd_ring is not None:
            cmd_ring.close()
    return EXIT_OK
