"""The supervisor: creates shared memory, spawns the stages, keeps them alive, stops them.

Process model (see ARCHITECTURE.md):

* Signal handlers only enqueue the signal number (and wake the loop through
  ``signal.set_wakeup_fd``); one loop waits on that wake-up socket and on every child's
  sentinel with ``multiprocessing.connection.wait`` and does all the work.
* Every child exit is classified: a clean stop, a source that ended, a configuration or
  model error (``EXIT_CONFIG``: the daemon stops instead of restart-looping), or a crash
  (restart with exponential backoff, at most ``max_restarts`` per window; past the cap a
  camera is given up and a core stage stops the daemon).
* Each stage bumps a heartbeat counter in the control block. A stage whose heartbeat
  stops is stuck: it gets SIGABRT (faulthandler prints its threads' tracebacks into the
  log), then SIGKILL, then a restart.
* A graceful stop works against one deadline, in flow order: decoders stop, inference
  drains the frame rings, analytics drains the detection ring, the publisher drains the
  event ring and syncs; whatever is still running at the deadline is killed.
* Only the supervisor creates and unlinks shared memory. At start it sweeps segments
  left by dead runs and checks /dev/shm has room for everything before creating anything.

The supervisor's own loop never touches frame pixels. This module must never import a
stage module (stages are spawned by name through ``itsd.stages.runtime``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from itsd.config import Config, config_to_json
from itsd.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError, ItsdError, ResourceError
from itsd.shm import (
    ControlBlock,
    FrameRing,
    RecordRing,
    ShmSpaceError,
    check_free_space,
    new_run_id,
    segment_name,
    sweep_stale,
)
from itsd.shm.board import Board
from itsd.shm.control import STATE_RUNNING, STATE_STARTING
from itsd.stages.runtime import C_EOF, StageSpec, stage_main
from itsd.supervisor import pidfile
from itsd.supervisor.notify import Notifier

log = logging.getLogger("itsd.supervisor")

ABORT_GRACE_S = 3.0
BOARD_BYTES = 1 << 20  # analytics' live state (line counts) for the control API
LOOP_TICK_S = 0.5

# Flow order: what a graceful stop stops first.
GROUP_DECODE, GROUP_INFER, GROUP_ANALYZE, GROUP_PUBLISH = 0, 1, 2, 3


@dataclass
class StageHandle:
    """The supervisor's view of one stage process."""

    spec: StageSpec
    group: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    restarts: collections.deque[float] = field(default_factory=collections.deque)
    total_restarts: int = 0
    next_start_at: float | None = None
    last_beat: int = -1
    last_beat_change: float = 0.0
    abort_sent_at: float | None = None
    finished: bool = False  # a source that ended (no restart)
    given_up: bool = False  # restart cap reached
    last_exit: str = ""

    @property
    def name(self) -> str:
        """Stage name, e.g. ``decode:cam1``."""
        return self.spec.name

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.is_alive()


def describe_exit(code: int | None) -> str:
    """Human-readable form of a child's exit code."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == EXIT_CONFIG:
        return f"exit code {code} (configuration or model error)"
    return f"exit code {code}"


class Supervisor:
    """Runs one itsd daemon until it is told to stop (or cannot go on)."""

    def __init__(self, config: Config, model_path: str) -> None:
        self.config = config
        self.model_path = model_path
        self.run_id = new_run_id()
        self.ctx = multiprocessing.get_context("spawn")
        self.handles: list[StageHandle] = []
        self.control: ControlBlock | None = None
        self.frame_rings: list[FrameRing] = []
        self.record_rings: list[RecordRing] = []
        self.board: Board | None = None
        self.notifier = Notifier()
        self.started_mono = time.monotonic()
        self.stopping = False
        self.exit_code = EXIT_OK
        self.ready_sent = False
        self._signals: collections.deque[int] = collections.deque()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._services: list[Callable[[], None]] = []
        self._last_watchdog = 0.0
        self.pid_file: Path = config.resolved_pid_file()

    # -- set-up -----------------------------------------------------------------------
    def _create_shared_memory(self) -> None:
        cfg = self.config
        removed = sweep_stale()
        for name in removed:
            log.info("removed shared memory left by a dead run: %s", name)
        slots = cfg.performance.frame_ring_slots
        ring_bytes = cfg.performance.record_ring_mib * 1024 * 1024
        n_stages = len(cfg.cameras) + 3
        needed = ControlBlock.required_size(n_stages) + 2 * RecordRing.required_size(ring_bytes)
        needed += Board.required_size(BOARD_BYTES)
        needed += sum(
            FrameRing.required_size(slots, cam.max_width, cam.max_height) for cam in cfg.cameras
        )
        try:
            check_free_space(needed)
        except ShmSpaceError as err:
            raise ResourceError(str(err)) from None
        rid = self.run_id
        try:
            self.control = ControlBlock.create(segment_name(rid, "ctl", "main"), n_stages)
            for i, cam in enumerate(cfg.cameras):
                self.frame_rings.append(
                    FrameRing.create(
                        segment_name(rid, "frames", cam.id),
                        camera_index=i,
                        slot_count=slots,
                        max_width=cam.max_width,
                        max_height=cam.max_height,
                    )
                )
            self.record_rings.append(
                RecordRing.create(segment_name(rid, "records", "detections"), ring_bytes)
            )
            self.record_rings.append(
                RecordRing.create(segment_name(rid, "records", "events"), ring_bytes)
            )
            self.board = Board.create(segment_name(rid, "board", "analytics"), BOARD_BYTES)
        except ShmSpaceError as err:
            self._destroy_shared_memory()
            raise ResourceError(str(err)) from None
        log.info(
            "shared memory ready: run %s, %d frame ring(s), %.1f MiB in all",
            rid,
            len(self.frame_rings),
            needed / 2**20,
        )

    def _destroy_shared_memory(self) -> None:
        for ring in self.frame_rings:
            ring.close()
            ring.unlink()
        for rring in self.record_rings:
            rring.close()
            rring.unlink()
        if self.board is not None:
            self.board.close()
            self.board.unlink()
            self.board = None
        if self.control is not None:
            self.control.close()
            self.control.unlink()
        self.frame_rings.clear()
        self.record_rings.clear()
        self.control = None

    def _build_stages(self) -> None:
        cfg = self.config
        assert self.control is not None
        common: dict[str, Any] = {
            "control_name": self.control_name,
            "parent_pid": os.getpid(),
            "config_json": config_to_json(cfg),
            "frame_rings": tuple(r.name for r in self.frame_rings),
            "detection_ring": self.record_rings[0].name,
            "event_ring": self.record_rings[1].name,
            "model_path": self.model_path,
            "extra": {"board": self.board.name if self.board is not None else ""},
        }
        slot = 0
        for i, cam in enumerate(cfg.cameras):
            spec = StageSpec(
                name=f"decode:{cam.id}",
                kind="decode",
                slot=slot,
                camera_index=i,
                **{**common, "frame_rings": (self.frame_rings[i].name,)},
            )
            self.handles.append(StageHandle(spec, GROUP_DECODE))
            slot += 1
        for kind, group in (
            ("infer", GROUP_INFER),
            ("analyze", GROUP_ANALYZE),
            ("publish", GROUP_PUBLISH),
        ):
            self.handles.append(
                StageHandle(StageSpec(name=kind, kind=kind, slot=slot, **common), group)
            )
            slot += 1
        for h in self.handles:
            self.control.slot(h.spec.slot).set_name(h.name)

    @property
    def control_name(self) -> str:
        """Name of the control block segment."""
        assert self.control is not None
        return self.control.name

    # -- signals ------------------------------------------------------------------------
    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)

        def _enqueue(signum: int, frame: FrameType | None) -> None:
            self._signals.append(signum)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _enqueue)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()

    def _drain_wakeups(self) -> None:
        if self._wake_r is None:
            return
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # -- stage lifecycle ----------------------------------------------------------------
    def _start(self, h: StageHandle) -> None:
        assert self.control is not None
        slot = self.control.slot(h.spec.slot)
        slot.set_state(STATE_STARTING)
        slot.set_pid(0)
        proc = self.ctx.Process(target=stage_main, args=(h.spec,), name=f"itsd-{h.name}")
        proc.daemon = False
        proc.start()
        h.process = proc
        h.started_at = time.monotonic()
        h.last_beat = slot.heartbeat()
        h.last_beat_change = h.started_at
        h.abort_sent_at = None
        h.next_start_at = None
        log.info("started %s (pid %s)", h.name, proc.pid)

    def _on_exit(self, h: StageHandle) -> None:
        assert h.process is not None and self.control is not None
        code = h.process.exitcode
        h.process.join(0)
        h.process.close()
        h.process = None
        h.last_exit = describe_exit(code)
        if self.stopping:
            return
        if (
            code == EXIT_OK
            and h.group == GROUP_DECODE
            and self.control.slot(h.spec.slot).get(C_EOF)
        ):
            h.finished = True
            log.info("%s finished: its source ended", h.name)
            return
        if code == EXIT_CONFIG:
            log.error("%s stopped with a configuration or model error; stopping itsd", h.name)
            self.begin_stop(EXIT_CONFIG)
            return
        now = time.monotonic()
        window = self.config.supervisor.restart_window_s
        while h.restarts and now - h.restarts[0] > window:
            h.restarts.popleft()
        if len(h.restarts) >= self.config.supervisor.max_restarts:
            h.given_up = True
            if h.group == GROUP_DECODE:
                log.error(
                    "%s died (%s) %d times within %.0f s: giving up on this camera",
                    h.name,
                    h.last_exit,
                    len(h.restarts) + 1,
                    window,
                )
                return
            log.error(
                "%s died (%s) %d times within %.0f s: stopping itsd",
                h.name,
                h.last_exit,
                len(h.restarts) + 1,
                window,
            )
            self.begin_stop(EXIT_FAILURE)
            return
        sup = self.config.supervisor
        delay = min(sup.backoff_initial_s * (2 ** len(h.restarts)), sup.backoff_max_s)
        h.restarts.append(now)
        h.total_restarts += 1
        h.next_start_at = now + delay
        log.warning("%s died (%s); restarting in %.1f s", h.name, h.last_exit, delay)

    def _check_heartbeats(self, now: float) -> None:
        assert self.control is not None
        sup = self.config.supervisor
        for h in self.handles:
            if not h.alive():
                continue
            slot = self.control.slot(h.spec.slot)
            beat = slot.heartbeat()
            if beat != h.last_beat:
                h.last_beat = beat
                h.last_beat_change = now
                continue
            limit = (
                sup.startup_grace_s if slot.state() == STATE_STARTING else sup.heartbeat_timeout_s
            )
            stalled = now - h.last_beat_change
            assert h.process is not None and h.process.pid is not None
            if h.abort_sent_at is None and stalled > limit:
                log.error(
                    "%s (pid %d) is stuck: no heartbeat for %.1f s; sending SIGABRT "
                    "(its traceback follows in the log)",
                    h.name,
                    h.process.pid,
                    stalled,
                )
                h.abort_sent_at = now
                _kill(h.process.pid, signal.SIGABRT)
            elif h.abort_sent_at is not None and now - h.abort_sent_at > ABORT_GRACE_S:
                log.error(
                    "%s (pid %d) did not die on SIGABRT; sending SIGKILL", h.name, h.process.pid
                )
                _kill(h.process.pid, signal.SIGKILL)
                h.abort_sent_at = now

    def _all_running(self) -> bool:
        assert self.control is not None
        return all(
            h.finished
            or h.given_up
            or (h.alive() and self.control.slot(h.spec.slot).state() >= STATE_RUNNING)
            for h in self.handles
        )

    def begin_stop(self, code: int = EXIT_OK) -> None:
        """Start a graceful stop (idempotent); the first non-zero code wins."""
        if self.exit_code == EXIT_OK:
            self.exit_code = code
        if not self.stopping:
            self.stopping = True
            log.info("stopping")
            self.notifier.stopping()

    # -- main loop ----------------------------------------------------------------------
    def add_service(self, stop: Callable[[], None]) -> None:
        """Register a stop function of a side service (gRPC, HTTP) run by the caller."""
        self._services.append(stop)

    def run(self, on_started: Callable[[Supervisor], None] | None = None) -> int:
        """Run until stopped; returns the process exit code."""
        pidfile.acquire(self.pid_file)
        try:
            self._create_shared_memory()
            try:
                self._build_stages()
                self._install_signals()
                try:
                    if on_started is not None:
                        on_started(self)
                    for h in sorted(self.handles, key=lambda x: -x.group):
                        self._start(h)
                    self._loop()
                    self._shutdown()
                finally:
                    for stop in reversed(self._services):
                        try:
                            stop()
                        except Exception:  # a side service must not block the clean-up
                            log.exception("error stopping a service")
                    self._restore_signals()
                    self._kill_all()
            finally:
                self._destroy_shared_memory()
        finally:
            pidfile.release(self.pid_file)
            self.notifier.close()
        log.info("itsd stopped (exit code %d)", self.exit_code)
        return self.exit_code

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.warning(
                    "SIGHUP: configuration reload is not supported; restart itsd to apply changes"
                )
                continue
            if self.stopping:
                log.warning("%s again while stopping: killing the stages now", name)
                self._kill_all()
                self.exit_code = self.exit_code or EXIT_FAILURE
            else:
                log.info("%s received", name)
                self.begin_stop(EXIT_OK)

    def _wait(self, timeout: float) -> None:
        waitables: list[Any] = [h.process.sentinel for h in self.handles if h.process is not None]
        if self._wake_r is not None:
            waitables.append(self._wake_r)
        multiprocessing.connection.wait(waitables, timeout=timeout)
        self._drain_wakeups()

    def _loop(self) -> None:
        while not self.stopping:
            self._wait(LOOP_TICK_S)
            self._handle_signals()
            now = time.monotonic()
            for h in self.handles:
                if h.process is not None and not h.process.is_alive():
                    self._on_exit(h)
            if self.stopping:
                break
            for h in self.handles:
                if h.process is None and h.next_start_at is not None and now >= h.next_start_at:
                    self._start(h)
            self._check_heartbeats(now)
            if not self.ready_sent and self._all_running():
                self.ready_sent = True
                log.info("all stages running")
                self.notifier.ready(f"{len(self.config.cameras)} camera(s)")
            self._ping_watchdog(now)
            decoders = [h for h in self.handles if h.group == GROUP_DECODE]
            if (
                self.config.supervisor.exit_when_sources_end
                and decoders
                and all(h.finished or h.given_up for h in decoders)
            ):
                log.info("every source has ended")
                self.begin_stop(EXIT_OK)

    def _ping_watchdog(self, now: float) -> None:
        wd = self.notifier.watchdog_interval_s
        if wd is not None and now - self._last_watchdog >= wd:
            self._last_watchdog = now
            self.notifier.watchdog()

    def _shutdown(self) -> None:
        """Stop stages group by group, in flow order, against one deadline."""
        deadline = time.monotonic() + self.config.supervisor.shutdown_timeout_s
        self.notifier.status("stopping: draining")
        for group in (GROUP_DECODE, GROUP_INFER, GROUP_ANALYZE, GROUP_PUBLISH):
            members = [h for h in self.handles if h.group == group]
            for h in members:
                h.next_start_at = None
                if h.process is not None and h.process.is_alive() and h.process.pid is not None:
                    _kill(h.process.pid, signal.SIGTERM)
            while True:
                running = [h for h in members if h.process is not None and h.process.is_alive()]
                if not running:
                    break
                now = time.monotonic()
                if now >= deadline:
                    for h in running:
                        assert h.process is not None and h.process.pid is not None
                        log.error("%s did not stop before the deadline; killing it", h.name)
                        _kill(h.process.pid, signal.SIGKILL)
                        h.process.join(5)
                    self.exit_code = self.exit_code or EXIT_FAILURE
                    break
                self._wait(min(LOOP_TICK_S, deadline - now))
                self._handle_signals()
                self._ping_watchdog(time.monotonic())
            for h in members:
                if h.process is not None:
                    code = h.process.exitcode
                    if code not in (EXIT_OK, None):
                        log.warning("%s stopped with %s", h.name, describe_exit(code))
                    h.process.join(0)
                    h.process.close()
                    h.process = None

    def _kill_all(self) -> None:
        for h in self.handles:
            if h.process is not None:
                if h.process.is_alive() and h.process.pid is not None:
                    _kill(h.process.pid, signal.SIGKILL)
                h.process.join(5)
                h.process.close()
                h.process = None

    # -- state for the control API and monitoring ---------------------------------------
    def uptime_s(self) -> float:
        """Seconds since the supervisor started."""
        return time.monotonic() - self.started_mono


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def check_supported(config: Config) -> None:
    """Refuse settings this version cannot honour (ConfigError names the key)."""
    if config.kafka.enabled:
        raise ConfigError(
            "kafka.enabled: Kafka publishing is not available in this version of itsd; "
            "set kafka.enabled: false (or pass --no-kafka) and use outputs.jsonl_path"
        )
    if not config.cameras:
        raise ConfigError("cameras: no camera is configured; add one under `cameras:`")


def run_daemon(config: Config, on_started: Callable[[Supervisor], None] | None = None) -> int:
    """Resolve the model, then supervise the pipeline until stopped; returns the exit code."""
    from itsd.engines import resolve_model  # model look-up only; no inference here

    try:
        check_supported(config)
        model_path = resolve_model(config.model.path)
        sup = Supervisor(config, str(model_path))
        return sup.run(on_started)
    except ItsdError as err:
        log.error("%s", err)
        return err.exit_code
