"""The supervisor: creates shared memory, spawns the stages, keeps them alive, changes cameras.

Process model (see ARCHITECTURE.md):

* Signal handlers only enqueue the signal number (and wake the loop through
  ``signal.set_wakeup_fd``); one loop waits on that wake-up socket and on every child's
  sentinel with ``multiprocessing.connection.wait`` and does all the work.
* Every child exit is classified: a clean stop, a configuration or model error
  (``EXIT_CONFIG``: the daemon stops instead of restart-looping), or a crash (restart
  with exponential backoff, at most ``max_restarts`` per window; past the cap a decode
  or inference worker is given up and its cameras move to the others, and any other
  stage stops the daemon).
* Decode workers (``performance.decode_workers``) each run many cameras, one thread per
  camera; a new camera goes to the least loaded one. A camera's decode counters and
  state live in its own cell table and info board, created here with its ring, so they
  survive a worker's restart and a move.
* Analytics runs as ``performance.analytics_workers`` shards; a new camera goes to the
  shard with the fewest cameras and stays there. Every inference worker has one
  detection ring per shard and each shard one event ring, all read by the publisher.
* Each stage bumps a heartbeat counter in the control block. A stage whose heartbeat
  stops is stuck: it gets SIGABRT (faulthandler prints its threads' tracebacks into the
  log), then SIGKILL, then a restart.
* A graceful stop works against one deadline, in flow order: decoders stop, inference
  drains the frame rings, analytics drains the detection ring, the publisher drains the
  event ring and syncs; whatever is still running at the deadline is killed.
* Only the supervisor creates and unlinks shared memory. At start it sweeps segments
  left by dead runs and checks /dev/shm has room before creating anything.

Cameras are live objects keyed by id (and by a numeric key in rings and records, never
reused within a run). Changes (add, remove, update, reload) come from other threads
(gRPC) or signals (SIGHUP) as operations on a queue; the loop runs one at a time as a
small state machine, never blocking: it creates the camera's shared memory, puts a
``CommandRecord`` on the inference worker's command ring, waits until the inference
worker, analytics and the publisher have recorded it as applied (the command travels in
flow order with the data), and only then attaches the camera to its decode worker
(through that worker's command ring); a removal detaches it from the decode worker
first and frees the memory last. The caller's ``Future`` resolves when the change has taken effect.

The loop publishes an immutable ``DaemonState`` each tick; other threads read only
that (``state``) and submit operations (``submit``). The supervisor's own loop never
touches frame pixels. This module must never import a stage module (stages are spawned
by name through ``itsd.stages.runtime``).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from itsd.config import (
    CameraConfig,
    Config,
    apply_overrides,
    config_to_json,
    load_config,
)
from itsd.control.backend import StreamExistsError
from itsd.errors import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_NO_INPUT,
    EXIT_OK,
    ConfigError,
    ItsdError,
    ResourceError,
)
from itsd.records import CameraBinding, CommandOp, CommandRecord
from itsd.runtime import metrics as m
from itsd.runtime.service_metrics import detections_board_name
from itsd.shm import (
    ControlBlock,
    FrameRing,
    RecordRing,
    ShmSpaceError,
    bells,
    check_free_space,
    new_run_id,
    segment_name,
    sweep_stale,
)
from itsd.shm.board import Board
from itsd.shm.cells import CellTable
from itsd.shm.control import STATE_RUNNING, STATE_STARTING
from itsd.stages.runtime import StageSpec, stage_main
from itsd.supervisor import pidfile
from itsd.supervisor.notify import Notifier
from itsd.supervisor.registry import Registrations, RegistryStore, merge
from itsd.supervisor.state import DaemonState

log = logging.getLogger("itsd.supervisor")

ABORT_GRACE_S = 3.0
BOARD_BYTES = 1 << 20  # analytics' live state (line counts) for the control API
INFO_BYTES = 16 << 10  # a stage's self-description
DECODE_CELLS = 64  # named cells of one decoder
COMMAND_RING_BYTES = 1 << 20
RESULTS_RING_BYTES = 8 << 20  # detection events on their way back to gRPC clients
LOOP_TICK_S = 0.5
OP_TICK_S = 0.005  # loop period while a camera change is in progress
ACK_TIMEOUT_S = 30.0  # how long a change waits for the stages to apply it
BATCH_CAMERAS = 32  # cameras per attach command of a batch
BALANCE_PERIOD_S = 10.0  # how often inference workers are checked for saturation
SATURATED_DROP = 0.2  # a worker losing this share of its frames is saturated ...
SPARE_DROP = 0.05  # ... and one losing less than this has room for one more camera
BALANCE_COOLDOWN_S = 30.0  # after a move, the workers settle before the next one

# Flow order: what a graceful stop stops first.
GROUP_DECODE, GROUP_INFER, GROUP_ANALYZE, GROUP_PUBLISH = 0, 1, 2, 3

#: Camera settings that only the decoder uses: a change restarts that decoder alone.
DECODER_KEYS = frozenset(
    {
        "source",
        "substream",
        "target_fps",
        "loop",
        "realtime",
        "open_timeout_s",
        "stall_timeout_s",
        "rtsp_transport",
    }
)
#: Camera settings that size the camera's ring: a change replaces the camera.
RING_KEYS = frozenset({"max_width", "max_height"})


class ChangeTimeoutError(Exception):
    """The stages did not apply a change in time (it applies when they are back)."""


@dataclass
class StageHandle:
    """The supervisor's view of one stage process."""

    name: str
    kind: str
    group: int
    slot: int
    cells: CellTable
    info: Board
    make_spec: Callable[[], StageSpec]
    camera_id: str = ""
    process: BaseProcess | None = None
    started_at: float = 0.0
    restarts: collections.deque[float] = field(default_factory=collections.deque)
    total_restarts: int = 0
    next_start_at: float | None = None
    last_beat: int = -1
    last_beat_change: float = 0.0
    abort_sent_at: float | None = None
    given_up: bool = False  # restart cap reached
    retired: bool = False  # being removed: an exit is expected, never restarted
    last_exit: str = ""
    ack_index: int = -1  # entry of the stage's applied-command cell
    worker: int = -1  # worker index (decode and inference workers only)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.is_alive()


@dataclass
class CameraEntry:
    """A camera the daemon runs."""

    config: CameraConfig
    key: int
    origin: str  # "file", "registered", "fleet" (itsd.fleet) or "internal" (ad hoc)
    ring: FrameRing
    cells: CellTable  # the camera's decode counters (written by its decode worker)
    info: Board  # the camera's decode state (connecting, streaming, ...)
    worker: int = 0  # inference worker
    decoder: int = 0  # decode worker
    shard: int = 0  # analytics shard
    removing: bool = False

    def binding(self) -> CameraBinding:
        """The camera as the stages know it."""
        return CameraBinding(
            self.key,
            self.config.id,
            self.ring.name,
            self.config.model_dump(mode="json"),
            self.worker,
            self.cells.name,
            self.info.name,
            self.shard,
        )

    def flag(self, defn: m.MetricDef) -> bool:
        """True when the camera's decode cell ``defn`` (a 0/1 state) is set."""
        key = m.series_key(defn, {"camera": self.config.id})
        try:
            return any(k == key and v == 1 for k, v in self.cells.items())
        except (OSError, ValueError):
            return False

    def ended(self) -> bool:
        """True once its file has ended or it was given up (nothing more will come)."""
        return self.flag(m.DECODE_EOF) or self.flag(m.DECODE_FAILED)


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
    if code == EXIT_NO_INPUT:
        return f"exit code {code} (source cannot be opened)"
    return f"exit code {code}"


Op = Generator[None, None, Any]


class Supervisor:
    """Runs one itsd daemon until it is told to stop (or cannot go on)."""

    def __init__(
        self,
        config: Config,
        model_path: str,
        config_path: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.model_path = model_path
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.run_id = new_run_id()
        self.ctx = multiprocessing.get_context("spawn")
        self.core: list[StageHandle] = []
        self.cameras: dict[str, CameraEntry] = {}
        self.control: ControlBlock | None = None
        self.workers = config.resolved_inference_workers()
        self.decoders = config.resolved_decode_workers()
        self.shards = config.resolved_analytics_workers()
        # Decode workers, inference workers, analytics shards, publisher.
        self.n_core = self.decoders + self.workers + self.shards + 1
        #: Every record ring: the detection rings, then the event rings.
        self.record_rings: list[RecordRing] = []
        #: detection_rings[k][s]: inference worker k's detections for analytics shard s.
        self.detection_rings: list[list[RecordRing]] = []
        self.event_rings: list[RecordRing] = []  # one per analytics shard
        self.command_rings: list[RecordRing] = []  # one per inference worker
        self.decode_command_rings: list[RecordRing] = []  # one per decode worker
        self.boards: list[Board] = []  # each analytics shard's live state (line counts)
        #: Detection events the publisher hands back to the control API (pushed frames'
        #: results, StreamFrames); written by the publisher, read by the gRPC server.
        self.results_ring: RecordRing | None = None
        self.notifier = Notifier()
        self.started_mono = time.monotonic()
        self.started_wall = time.time()
        self.stopping = False
        self.exit_code = EXIT_OK
        self.ready_sent = False
        self.decoders_started = False
        self.generation = 1
        self.state = DaemonState()
        self.store = RegistryStore(config.resolved_state_dir())
        self.registrations = Registrations()
        self._signals: collections.deque[int] = collections.deque()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._services: list[Callable[[], None]] = []
        self._last_watchdog = 0.0
        self._last_snapshot = 0.0
        self._snapshotter: Callable[[Supervisor], DaemonState] | None = None
        self._ops: queue.Queue[tuple[Callable[[], Op], Future[Any]]] = queue.Queue()
        # Cameras added one by one are attached in batches: while the last queued
        # operation is an open batch, a new camera joins it (see add_camera).
        self._adds: list[tuple[CameraConfig, str, bool, Future[Any]]] = []
        self._adds_lock = threading.Lock()
        self._batch_open = False
        self._op: tuple[Op, Future[Any]] | None = None
        self._seq = 0
        self._next_key = 1
        self.op_counts: collections.Counter[str] = collections.Counter()
        self._balance_prev: dict[str, tuple[int, int]] = {}  # camera -> (offered, lost)
        self._balance_at = 0.0
        self._balance_quiet_until = 0.0
        self.pid_file: Path = config.resolved_pid_file()

    # -- shared memory ------------------------------------------------------------------
    def _stage_config_json(self) -> str:
        # Stages never read cameras from the configuration: they get camera bindings.
        return config_to_json(self.config.model_copy(update={"cameras": []}))

    def _create_shared_memory(self) -> None:
        removed = sweep_stale()
        for name in removed:
            log.info("removed shared memory left by a dead run: %s", name)
        ring_bytes = self._record_ring_bytes()
        n_slots = self.n_core
        n_rings = (self.workers + 1) * self.shards
        needed = ControlBlock.required_size(n_slots)
        needed += n_rings * RecordRing.required_size(ring_bytes)
        needed += (self.workers + self.decoders) * RecordRing.required_size(COMMAND_RING_BYTES)
        needed += self.shards * Board.required_size(BOARD_BYTES)
        needed += RecordRing.required_size(RESULTS_RING_BYTES)
        needed += self.n_core * (
            CellTable.required_size(self._core_cells()) + Board.required_size(INFO_BYTES)
        )
        try:
            check_free_space(needed)
        except ShmSpaceError as err:
            raise ResourceError(str(err)) from None
        rid = self.run_id
        try:
            self.control = ControlBlock.create(segment_name(rid, "ctl", "main"), n_slots)
            bells.use_control(self.control)  # commands and pushed frames wake their readers
            one = self.shards == 1  # the names of a daemon without shards stay as they were
            for k in range(self.workers):
                row = []
                for s in range(self.shards):
                    name = f"detections{k}" if one else f"detections{k}s{s}"
                    row.append(RecordRing.create(segment_name(rid, "records", name), ring_bytes))
                self.detection_rings.append(row)
                self.record_rings.extend(row)
            for s in range(self.shards):
                name = "events" if one else f"events{s}"
                ring = RecordRing.create(segment_name(rid, "records", name), ring_bytes)
                self.event_rings.append(ring)
                self.record_rings.append(ring)
            for k in range(self.workers):
                self.command_rings.append(
                    RecordRing.create(
                        segment_name(rid, "records", f"commands{k}"), COMMAND_RING_BYTES
                    )
                )
            for k in range(self.decoders):
                self.decode_command_rings.append(
                    RecordRing.create(
                        segment_name(rid, "records", f"decodecmds{k}"), COMMAND_RING_BYTES
                    )
                )
            for s in range(self.shards):
                name = "analytics" if s == 0 else f"analytics{s}"
                self.boards.append(Board.create(segment_name(rid, "board", name), BOARD_BYTES))
            self.results_ring = RecordRing.create(
                segment_name(rid, "records", "results"), RESULTS_RING_BYTES
            )
        except ShmSpaceError as err:
            self._destroy_shared_memory()
            raise ResourceError(str(err)) from None
        log.info(
            "shared memory ready: run %s, %.1f MiB for the core, %d decode worker(s), "
            "%d inference worker(s)",
            rid,
            needed / 2**20,
            self.decoders,
            self.workers,
        )

    def _record_ring_bytes(self) -> int:
        """Size of each detection and event ring: ``record_ring_mib``, split between the
        analytics shards (each ring carries a shard's share), at least 4 MiB."""
        full = self.config.performance.record_ring_mib * 1024 * 1024
        return max(min(full, 4 << 20), full // self.shards)

    def _core_cells(self) -> int:
        return 8 * self.config.supervisor.max_cameras + 64

    def _destroy_shared_memory(self) -> None:
        for entry in list(self.cameras.values()):
            self._free_camera(entry)
        for h in self.core:
            _close_unlink(h.cells)
            _close_unlink(h.info)
        for rring in self.record_rings + self.command_rings + self.decode_command_rings:
            _close_unlink(rring)
        self.record_rings.clear()
        self.detection_rings.clear()
        self.event_rings.clear()
        self.command_rings.clear()
        self.decode_command_rings.clear()
        for obj in (*self.boards, self.control, self.results_ring):
            if obj is not None:
                _close_unlink(obj)
        self.boards.clear()
        self.control = None
        self.results_ring = None

    def _stage_memory(self, kind: str, key: str, cells: int) -> tuple[CellTable, Board]:
        rid = self.run_id
        table = CellTable.create(segment_name(rid, "cells", f"{kind}{key}"), cells)
        try:
            info = Board.create(segment_name(rid, "info", f"{kind}{key}"), INFO_BYTES)
        except BaseException:
            _close_unlink(table)
            raise
        return table, info

    # -- stages ---------------------------------------------------------------------------
    def _common_spec(self) -> dict[str, Any]:
        assert self.control is not None
        return {
            "control_name": self.control.name,
            "parent_pid": os.getpid(),
            "config_json": self._stage_config_json(),
            "model_path": self.model_path,
        }

    def _table(
        self, worker: int | None = None, shard: int | None = None
    ) -> tuple[CameraBinding, ...]:
        return tuple(
            e.binding()
            for e in self.cameras.values()
            if not e.removing
            and (worker is None or e.worker == worker)
            and (shard is None or e.shard == shard)
        )

    def _decode_table(self, decoder: int) -> tuple[CameraBinding, ...]:
        return tuple(
            e.binding()
            for e in self.cameras.values()
            if not e.removing and e.decoder == decoder and not e.ended() and not e.config.push
        )

    def worker_name(self, k: int) -> str:
        """Stage name of inference worker ``k`` ("infer" when there is only one)."""
        return "infer" if self.workers == 1 else f"infer:{k}"

    def decoder_name(self, k: int) -> str:
        """Stage name of decode worker ``k`` ("decode" when there is only one)."""
        return "decode" if self.decoders == 1 else f"decode:{k}"

    def decoder_handle(self, entry: CameraEntry) -> StageHandle:
        """The decode worker that runs ``entry``."""
        return self.core[entry.decoder]

    def place_decoder(self, camera_id: str) -> int:
        """The decode worker for a new camera: the least loaded one not given up (ties go
        to the lowest index). ResourceError when every one runs
        ``performance.cameras_per_decode_worker`` cameras."""
        load = collections.Counter(e.decoder for e in self.cameras.values() if not e.removing)
        alive = [k for k in range(self.decoders) if not self.core[k].given_up]
        if not alive:
            alive = list(range(self.decoders))
        best = min(alive, key=lambda k: (load[k], k))
        cap = self.config.performance.cameras_per_decode_worker
        if load[best] >= cap:
            raise ResourceError(
                f"camera {camera_id}: every decode worker already runs {cap} cameras "
                f"(performance.decode_workers is {self.decoders}, "
                f"performance.cameras_per_decode_worker is {cap})"
            )
        return best

    def place_shard(self) -> int:
        """The analytics shard for a new camera: the one with the fewest cameras (ties go
        to the lowest index). A camera stays on its shard for as long as it runs."""
        load = collections.Counter(e.shard for e in self.cameras.values() if not e.removing)
        return min(range(self.shards), key=lambda s: (load[s], s))

    def shard_name(self, s: int) -> str:
        """Stage name of analytics shard ``s`` ("analyze" when there is only one)."""
        return "analyze" if self.shards == 1 else f"analyze:{s}"

    def place(self, camera_id: str) -> int:
        """The inference worker for a new camera: the one not given up with the fewest
        cameras; ties go by rendezvous hashing of the camera's id, so a daemon restarted
        with the same cameras places them alike. (Hashing alone put 3 of 4 cameras on one
        of two workers, leaving a core idle.) A camera then stays on its worker; only the
        cameras of a lost worker, and rebalancing, move one."""
        dead = {h.worker for h in self.core if h.kind == "infer" and h.given_up}
        candidates = [k for k in range(self.workers) if k not in dead] or list(range(self.workers))
        load = collections.Counter(e.worker for e in self.cameras.values() if not e.removing)

        def rank(k: int) -> tuple[int, int]:
            digest = hashlib.blake2b(f"{camera_id}/{k}".encode(), digest_size=8).digest()
            return load[k], -int.from_bytes(digest, "big")

        return min(candidates, key=rank)

    def _build_core(self) -> None:
        assert self.control is not None
        kinds = [("decode", GROUP_DECODE, k) for k in range(self.decoders)]
        kinds += [("infer", GROUP_INFER, k) for k in range(self.workers)]
        kinds += [("analyze", GROUP_ANALYZE, s) for s in range(self.shards)]
        kinds += [("publish", GROUP_PUBLISH, -1)]
        for slot, (kind, group, worker) in enumerate(kinds):
            if kind == "infer":
                name = self.worker_name(worker)
            elif kind == "decode":
                name = self.decoder_name(worker)
            elif kind == "analyze":
                name = self.shard_name(worker)
            else:
                name = kind
            cells, info = self._stage_memory(kind, str(max(worker, 0)), self._core_cells())
            ack = cells.cell(m.series_key(m.STAGE_COMMAND_SEQ, {}))

            def make(
                kind: str = kind,
                name: str = name,
                slot: int = slot,
                worker: int = worker,
                cells: CellTable = cells,
                info: Board = info,
            ) -> StageSpec:
                common = self._common_spec()
                results = self.results_ring.name if self.results_ring is not None else ""
                extra: dict[str, Any] = {}
                if kind == "infer":
                    rings = tuple(r.name for r in self.detection_rings[worker])
                    extra = {
                        "worker": worker,
                        "command_ring": self.command_rings[worker].name,
                        "detection_ring": rings[0],
                        "detection_rings": rings,
                    }
                    table = self._table(worker)
                elif kind == "decode":
                    extra = {
                        "worker": worker,
                        "command_ring": self.decode_command_rings[worker].name,
                    }
                    table = self._decode_table(worker)
                elif kind == "analyze":
                    extra = {
                        "worker": worker,
                        "detection_rings": tuple(row[worker].name for row in self.detection_rings),
                        "event_ring": self.event_rings[worker].name,
                        "extra": {
                            "board": self.boards[worker].name,
                            "detections_board": detections_board_name(self.run_id, worker),
                        },
                    }
                    table = self._table(shard=worker)
                else:
                    extra = {
                        "event_ring": self.event_rings[0].name,
                        "event_rings": tuple(r.name for r in self.event_rings),
                        "extra": {"results": results},
                    }
                    table = self._table()
                return StageSpec(
                    name=name,
                    kind=kind,
                    slot=slot,
                    cells=cells.name,
                    info_board=info.name,
                    cameras=table,
                    cmd_seq=self._seq,
                    **common,
                    **extra,
                )

            h = StageHandle(name, kind, group, slot, cells, info, make, ack_index=ack)
            h.worker = worker
            self.control.slot(slot).set_name(name)
            self.core.append(h)

    def _camera_bytes(self, cfg: CameraConfig) -> int:
        """Shared memory one camera needs: its frame ring, cell table and info board."""
        slots = self.config.performance.frame_ring_slots
        return (
            FrameRing.required_size(slots, cfg.max_width, cfg.max_height)
            + CellTable.required_size(DECODE_CELLS)
            + Board.required_size(INFO_BYTES)
        )

    def _new_camera(self, cfg: CameraConfig, origin: str) -> CameraEntry:
        """Create a camera's shared memory and entry (no stage knows it yet)."""
        live = sum(1 for e in self.cameras.values() if not e.removing)
        if live >= self.config.supervisor.max_cameras:
            raise ResourceError(
                f"camera {cfg.id}: this daemon already runs {live} cameras "
                f"(supervisor.max_cameras is {self.config.supervisor.max_cameras})"
            )
        decoder = self.place_decoder(cfg.id)
        slots = self.config.performance.frame_ring_slots
        try:
            check_free_space(self._camera_bytes(cfg))
        except ShmSpaceError as err:
            raise ResourceError(f"camera {cfg.id}: {err}") from None
        key = self._next_key
        tag = f"k{key}_{cfg.id}"
        ring = FrameRing.create(
            segment_name(self.run_id, "frames", tag),
            camera_key=key,
            slot_count=slots,
            max_width=cfg.max_width,
            max_height=cfg.max_height,
        )
        try:
            cells, info = self._stage_memory("cam", tag, DECODE_CELLS)
        except BaseException:
            _close_unlink(ring)
            raise
        self._next_key += 1
        entry = CameraEntry(
            cfg, key, origin, ring, cells, info, self.place(cfg.id), decoder, self.place_shard()
        )
        self.cameras[cfg.id] = entry
        return entry

    def _free_camera(self, entry: CameraEntry) -> None:
        _close_unlink(entry.ring)
        _close_unlink(entry.cells)
        _close_unlink(entry.info)
        self.cameras.pop(entry.config.id, None)

    def handles(self) -> list[StageHandle]:
        """Every stage handle, in flow order: decode workers, inference, analytics, publisher."""
        return self.core

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

    def _wake(self) -> None:
        w = self._wake_w
        if w is not None:
            with contextlib.suppress(OSError):
                w.send(b"\0")

    def _drain_wakeups(self) -> None:
        if self._wake_r is None:
            return
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError, OSError):
            pass

    # -- stage lifecycle ----------------------------------------------------------------
    def _start(self, h: StageHandle) -> None:
        assert self.control is not None
        slot = self.control.slot(h.slot)
        slot.set_state(STATE_STARTING)
        slot.set_pid(0)
        proc = self.ctx.Process(target=stage_main, args=(h.make_spec(),), name=f"itsd-{h.name}")
        proc.daemon = False
        proc.start()
        h.process = proc
        h.started_at = time.monotonic()
        h.last_beat = slot.heartbeat()
        h.last_beat_change = h.started_at
        h.abort_sent_at = None
        h.next_start_at = None
        log.info("started %s (pid %s)", h.name, proc.pid)

    def _reap(self, h: StageHandle) -> int | None:
        assert h.process is not None
        code = h.process.exitcode
        h.process.join(0)
        h.process.close()
        h.process = None
        h.last_exit = describe_exit(code)
        return code

    def _on_exit(self, h: StageHandle) -> None:
        code = self._reap(h)
        if self.stopping or h.retired:
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
            alive = [w for w in self.core if w.kind == h.kind and not w.given_up]
            if h.kind in ("infer", "decode") and alive:
                log.error(
                    "%s died (%s) %d times within %.0f s: giving up on it; its cameras move to %s",
                    h.name,
                    h.last_exit,
                    len(h.restarts) + 1,
                    window,
                    ", ".join(w.name for w in alive),
                )
                if h.kind == "infer":
                    fut = self.submit(lambda: self._op_move_off(h.worker))
                else:
                    fut = self.submit(lambda: self._op_move_decoder(h.worker))
                fut.add_done_callback(_log_op_failure)
                return
            if h.kind == "decode":
                log.error(
                    "%s died (%s) %d times within %.0f s: giving up on it; no decode worker "
                    "is left, so no camera is decoded",
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
        for h in self.handles():
            if not h.alive() or h.retired:
                continue
            slot = self.control.slot(h.slot)
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

    def stage_running(self, h: StageHandle) -> bool:
        """True when the stage's process runs and says it is ready."""
        assert self.control is not None
        return h.alive() and self.control.slot(h.slot).state() >= STATE_RUNNING

    def _all_running(self) -> bool:
        return all(h.given_up or self.stage_running(h) for h in self.handles())

    def begin_stop(self, code: int = EXIT_OK) -> None:
        """Start a graceful stop (idempotent); the first non-zero code wins."""
        if self.exit_code == EXIT_OK:
            self.exit_code = code
        if not self.stopping:
            self.stopping = True
            log.info("stopping")
            self.notifier.stopping()
            self._wake()

    # -- camera changes (any thread) ---------------------------------------------------
    def submit(self, make_op: Callable[[], Op]) -> Future[Any]:
        """Queue a change for the loop; the future resolves when it has taken effect."""
        fut: Future[Any] = Future()
        if self.stopping:
            fut.set_exception(ChangeTimeoutError("itsd is stopping"))
            return fut
        with self._adds_lock:
            self._batch_open = False  # a later add must not overtake this change
            self._ops.put((make_op, fut))
        self._wake()
        return fut

    def add_camera(
        self, cfg: CameraConfig, origin: str = "registered", persist: bool = True
    ) -> Future[Any]:
        """Register a camera at run time (persisted); resolves to its CameraEntry id.

        ``origin="fleet", persist=False``: a camera of the fleet's registry topic
        (``itsd.fleet``), never written to cameras.json and left alone by a reload.

        Cameras added in a row are attached together: one command per inference and
        decode worker for the whole batch, one wait for the stages, so hundreds of
        cameras (a fleet rebalance, a script) take about as long as a few. A camera
        never overtakes a change queued before it."""
        fut: Future[Any] = Future()
        if self.stopping:
            fut.set_exception(ChangeTimeoutError("itsd is stopping"))
            return fut
        with self._adds_lock:
            self._adds.append((cfg, origin, persist, fut))
            if self._batch_open:
                return fut
            self._batch_open = True
            self._ops.put((self._op_add_batch, Future()))
        self._wake()
        return fut

    def remove_camera(self, camera_id: str, persist: bool = True) -> Future[Any]:
        """Remove a camera (persisted); resolves to True, KeyError if unknown."""
        return self.submit(lambda: self._op_remove(camera_id, persist=persist))

    def update_camera(self, cfg: CameraConfig) -> Future[Any]:
        """Apply a new configuration to a running camera (not persisted); resolves to
        True when something changed, KeyError if unknown."""
        return self.submit(lambda: self._op_update(cfg))

    def request_reload(self) -> Future[Any]:
        """Re-read the configuration file and apply the difference."""
        return self.submit(self._op_reload)

    # -- operations (run by the loop, one at a time) -----------------------------------
    def _send(
        self, op: CommandOp, binding: CameraBinding, to: int | None = None
    ) -> tuple[int, str, int]:
        """Put a command for one camera on its inference worker's command ring (or worker
        ``to``'s); it travels on through analytics and the publisher. (seq, "infer", k)."""
        self._seq += 1
        k = binding.worker if to is None else to
        payload = CommandRecord(self._seq, op, (binding,), k).pack()
        if not self.command_rings[k].put(payload, timeout=5.0):
            raise ChangeTimeoutError(
                f"{self.worker_name(k)} does not take commands (command ring full)"
            )
        return self._seq, "infer", k

    def _send_decoder(self, op: CommandOp, entry: CameraEntry) -> tuple[int, str, int]:
        """Put a command for one camera on its decode worker's command ring."""
        if entry.config.push:
            # Frames come over gRPC: no decoder runs it (sequence 0 counts as applied).
            return 0, "decode", entry.decoder
        self._seq += 1
        k = entry.decoder
        payload = CommandRecord(self._seq, op, (entry.binding(),), entry.worker).pack()
        if not self.decode_command_rings[k].put(payload, timeout=5.0):
            raise ChangeTimeoutError(
                f"{self.decoder_name(k)} does not take commands (command ring full)"
            )
        return self._seq, "decode", k

    def _acked(self, seq: int, path: str, worker: int) -> list[str]:
        """Stages on the command's path that have not applied command ``seq`` yet.

        A decode worker that is not running counts as done: when it starts again its
        camera table is built from the cameras as they are then."""
        late = []
        for h in self.core:
            if path == "decode":
                on_path = h.kind == "decode" and h.worker == worker and h.process is not None
            else:
                on_path = h.kind in ("analyze", "publish") or (
                    h.kind == "infer" and h.worker == worker
                )
            if on_path and h.cells.load(h.ack_index) < seq:
                late.append(h.name)
        return late

    def _wait_acks(self, sent: tuple[int, str, int], what: str) -> Op:
        seq, path, worker = sent
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while True:
            late = self._acked(seq, path, worker)
            if not late:
                return
            if self.stopping:
                raise ChangeTimeoutError(f"{what}: itsd is stopping")
            if time.monotonic() > deadline:
                raise ChangeTimeoutError(
                    f"{what}: not applied by {', '.join(late)} within {ACK_TIMEOUT_S:.0f} s "
                    "(it takes effect when that stage is running again)"
                )
            yield

    def _op_add(self, cfg: CameraConfig, origin: str, persist: bool) -> Op:
        if cfg.id in self.cameras:
            raise StreamExistsError(f"camera {cfg.id!r} is already registered")
        entry = self._new_camera(cfg, origin)
        try:
            seq = self._send(CommandOp.ATTACH, entry.binding())
        except BaseException:
            self._free_camera(entry)
            raise
        if persist:
            self._persist_add(cfg)
        late: ChangeTimeoutError | None = None
        try:
            yield from self._wait_acks(seq, f"camera {cfg.id}")
        except ChangeTimeoutError as err:
            # The camera stays registered and the command applies when that stage is
            # back, so its decoder must run all the same.
            late = err
        if self.decoders_started and not self.stopping:
            sent = self._send_decoder(CommandOp.ATTACH, entry)
            yield from self._wait_acks(sent, f"camera {cfg.id}")
        if late is not None:
            raise late
        self.op_counts["add"] += 1
        log.info("camera %s added (%s)", cfg.id, origin)
        return cfg.id

    def _op_add_batch(self) -> Op:
        """Add the cameras waiting in ``_adds`` (see ``add_camera``)."""
        with self._adds_lock:
            batch, self._adds = self._adds, []
            self._batch_open = False
        entries: list[tuple[CameraEntry, Future[Any]]] = []
        persisted = False
        for cfg, origin, persist, fut in batch:
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                if cfg.id in self.cameras:
                    raise StreamExistsError(f"camera {cfg.id!r} is already registered")
                entry = self._new_camera(cfg, origin)
            except Exception as err:
                fut.set_exception(err)
                continue
            if persist:
                self.registrations.registered[cfg.id] = cfg.model_dump(mode="json")
                self.registrations.removed.discard(cfg.id)
                persisted = True
            entries.append((entry, fut))
        if not entries:
            return 0
        if persisted:
            self._save_registrations()
        try:
            return (yield from self._attach_batch(entries))
        finally:
            # Dropped half-way (itsd stopping): nobody waits forever.
            for _, fut in entries:
                if not fut.done():
                    fut.set_exception(ChangeTimeoutError("itsd is stopping"))

    def _attach_batch(self, entries: list[tuple[CameraEntry, Future[Any]]]) -> Op:
        """Attach new cameras everywhere: inference (through analytics and the publisher)
        first, then their decode workers; resolve their futures."""
        late: ChangeTimeoutError | None = None
        try:
            for sent in self._send_batch([e for e, _ in entries], decode=False):
                yield from self._wait_acks(sent, f"{len(entries)} camera(s)")
        except ChangeTimeoutError as err:
            late = err  # they stay registered; the command applies when the stage is back
        if self.decoders_started and not self.stopping:
            try:
                for sent in self._send_batch([e for e, _ in entries], decode=True):
                    yield from self._wait_acks(sent, f"{len(entries)} camera(s)")
            except ChangeTimeoutError as err:
                late = late or err
        if late is None:
            for entry, _ in entries:
                self.op_counts["add"] += 1
                log.info("camera %s added (%s)", entry.config.id, entry.origin)
        self._refresh_state(force=True)  # before the callers wake and read it
        for entry, fut in entries:
            if late is not None:
                fut.set_exception(late)
            else:
                fut.set_result(entry.config.id)
        return len(entries)

    def _send_batch(
        self, entries: list[CameraEntry], decode: bool, op: CommandOp = CommandOp.ATTACH
    ) -> list[tuple[int, str, int]]:
        """One command per worker (``BATCH_CAMERAS`` cameras at most each) for ``entries``;
        what was sent, for ``_wait_acks``."""
        groups: dict[int, list[CameraEntry]] = collections.defaultdict(list)
        for e in entries:
            groups[e.decoder if decode else e.worker].append(e)
        sent = []
        for k, group in groups.items():
            for i in range(0, len(group), BATCH_CAMERAS):
                chunk = group[i : i + BATCH_CAMERAS]
                self._seq += 1
                payload = CommandRecord(self._seq, op, tuple(e.binding() for e in chunk), k).pack()
                ring = self.decode_command_rings[k] if decode else self.command_rings[k]
                if not ring.put(payload, timeout=5.0):
                    name = self.decoder_name(k) if decode else self.worker_name(k)
                    raise ChangeTimeoutError(f"{name} does not take commands (command ring full)")
                sent.append((self._seq, "decode" if decode else "infer", k))
        # Acknowledgements only move forward: the last command of each worker is enough.
        last: dict[tuple[str, int], tuple[int, str, int]] = {}
        for item in sent:
            last[(item[1], item[2])] = item
        return list(last.values())

    def _op_remove(self, camera_id: str, persist: bool) -> Op:
        entry = self.cameras.get(camera_id)
        if entry is None or entry.removing:
            raise KeyError(f"camera {camera_id!r} is not registered")
        entry.removing = True
        if persist:
            self._persist_remove(entry)
        if self.decoders_started:
            sent = self._send_decoder(CommandOp.DETACH, entry)
            yield from self._wait_acks(sent, f"camera {camera_id}")
        seq = self._send(CommandOp.DETACH, entry.binding())
        try:
            yield from self._wait_acks(seq, f"camera {camera_id}")
        finally:
            self._free_camera(entry)
        self.op_counts["remove"] += 1
        log.info("camera %s removed", camera_id)
        return True

    def _op_update(self, cfg: CameraConfig) -> Op:
        entry = self.cameras.get(cfg.id)
        if entry is None or entry.removing:
            raise KeyError(f"camera {cfg.id!r} is not registered")
        old = entry.config.model_dump()
        new = cfg.model_dump()
        changed = {k for k in new if new[k] != old.get(k)}
        if not changed:
            return False
        if changed & RING_KEYS:
            origin = entry.origin
            yield from self._op_remove(cfg.id, persist=False)
            yield from self._op_add(cfg, origin, persist=False)
            return True
        entry.config = cfg
        seq = self._send(CommandOp.UPDATE, entry.binding())
        yield from self._wait_acks(seq, f"camera {cfg.id}")
        if changed & DECODER_KEYS and self.decoders_started:
            sent = self._send_decoder(CommandOp.UPDATE, entry)
            yield from self._wait_acks(sent, f"camera {cfg.id}")
        self.op_counts["update"] += 1
        log.info("camera %s updated (%s)", cfg.id, ", ".join(sorted(changed)))
        return True

    def _op_move_off(self, worker: int) -> Op:
        """Move every camera of a worker that was given up to the others (attach there)."""
        moved = []
        for entry in list(self.cameras.values()):
            if entry.worker != worker or entry.removing:
                continue
            entry.ring.recover_reader()  # slots the dead worker held
            entry.worker = self.place(entry.config.id)
            sent = self._send(CommandOp.ATTACH, entry.binding())
            yield from self._wait_acks(sent, f"camera {entry.config.id}")
            moved.append(entry.config.id)
            log.info("camera %s moved to %s", entry.config.id, self.worker_name(entry.worker))
        return moved

    def _op_move_decoder(self, decoder: int) -> Op:
        """Move every camera of a decode worker that was given up to the others."""
        moved = []
        for entry in list(self.cameras.values()):
            if entry.decoder != decoder or entry.removing:
                continue
            entry.decoder = self.place_decoder(entry.config.id)
            sent = self._send_decoder(CommandOp.ATTACH, entry)
            yield from self._wait_acks(sent, f"camera {entry.config.id}")
            moved.append(entry.config.id)
            log.info("camera %s moved to %s", entry.config.id, self.decoder_name(entry.decoder))
        return moved

    def _balance(self, now: float) -> None:
        """Move one camera off an inference worker that drops many of its frames onto one
        that drops almost none (``performance.rebalance``); at most one move per
        ``BALANCE_COOLDOWN_S``. Frames lost are those the worker did not take in time
        (overwritten or passed over in the ring)."""
        if (
            not self.config.performance.rebalance
            or self.workers < 2
            or now - self._balance_at < BALANCE_PERIOD_S
        ):
            return
        self._balance_at = now
        offered: collections.Counter[int] = collections.Counter()
        lost: collections.Counter[int] = collections.Counter()
        per_camera: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
        seen: dict[str, tuple[int, int]] = {}
        for cid, e in self.cameras.items():
            if e.removing:
                continue
            st = e.ring.stats()
            total, gone = st.written, st.dropped + st.skipped
            seen[cid] = (total, gone)
            prev = self._balance_prev.get(cid)
            if prev is None or prev[0] > total:
                continue  # new camera (or a new ring): measured from the next round
            offered[e.worker] += total - prev[0]
            lost[e.worker] += gone - prev[1]
            per_camera[e.worker].append((total - prev[0], cid))
        self._balance_prev = seen
        if self._op is not None or not self._ops.empty() or now < self._balance_quiet_until:
            return
        alive = [h.worker for h in self.core if h.kind == "infer" and self.stage_running(h)]
        share = {k: lost[k] / offered[k] if offered[k] else 0.0 for k in alive}
        busy = [k for k in alive if share[k] > SATURATED_DROP and len(per_camera[k]) > 1]
        spare = [k for k in alive if share[k] < SPARE_DROP]
        if not busy or not spare:
            return
        src = max(busy, key=lambda k: share[k])
        dst = min(spare, key=lambda k: (offered[k], k))
        # The lightest camera: the smallest step towards balance.
        _, cid = min(per_camera[src])
        why = f"{share[src]:.0%} of its frames dropped"
        self._balance_quiet_until = now + BALANCE_COOLDOWN_S
        fut = self.submit(lambda: self._op_move_camera(cid, dst, why))
        fut.add_done_callback(_log_op_failure)

    def _op_move_camera(self, camera_id: str, worker: int, why: str) -> Op:
        """Move a camera to another inference worker: its worker hands it over (taking
        what is left in its ring), then ``worker`` attaches it. Its tracks and totals go
        on in analytics."""
        entry = self.cameras.get(camera_id)
        if entry is None or entry.removing or entry.worker == worker:
            return False
        src = entry.worker
        entry.worker = worker
        # The old worker sees a binding naming another worker: it takes what is left in
        # the ring and lets go; analytics follows the camera (its tracks and totals stay).
        sent = self._send(CommandOp.UPDATE, entry.binding(), to=src)
        yield from self._wait_acks(sent, f"camera {camera_id}")
        sent = self._send(CommandOp.ATTACH, entry.binding())
        yield from self._wait_acks(sent, f"camera {camera_id}")
        self.op_counts["move"] += 1
        log.warning(
            "camera %s moved from %s (saturated: %s) to %s",
            camera_id,
            self.worker_name(src),
            why,
            self.worker_name(worker),
        )
        return True

    def _op_reload(self) -> Op:
        if self.config_path is None:
            raise ConfigError("itsd was started without --config: there is no file to re-read")
        try:
            new = apply_overrides(load_config(self.config_path), self.overrides)
        except ConfigError as err:
            log.error("reload refused; the running configuration stays:\n%s", err)
            raise
        reg = self.store.load()
        wanted, notes = merge(new.cameras, reg)
        for note in notes:
            log.warning("%s", note)
        self.registrations = reg
        self._save_registrations()
        for key in _changed_sections(self.config, new):
            if key.startswith("alerts."):
                continue  # applied now, below
            log.warning("reload: %s changed; restart itsd to apply it", key)
        if new.alerts != self.config.alerts:
            # The alert rules (evaluated by the snapshot) take new thresholds at once.
            self.config = self.config.model_copy(update={"alerts": new.alerts})
            log.info("reload: alert rules updated")
        want = {c.id: (c, origin) for c, origin in wanted}
        removed = [
            cid
            for cid, e in self.cameras.items()
            # the ad-hoc camera and the fleet's cameras (itsd.fleet) stay
            if cid not in want and e.origin not in ("internal", "fleet")
        ]
        added = [cid for cid in want if cid not in self.cameras]
        kept = [cid for cid in want if cid in self.cameras]
        for cid in removed:
            yield from self._op_remove(cid, persist=False)
        for cid in kept:
            self.cameras[cid].origin = want[cid][1]
            yield from self._op_update(want[cid][0])
        for cid in added:
            yield from self._op_add(want[cid][0], want[cid][1], persist=False)
        self.config = self.config.model_copy(update={"cameras": [c for c, _ in wanted]})
        self.generation += 1
        log.info(
            "configuration reloaded: %d camera(s) added, %d removed, %d kept",
            len(added),
            len(removed),
            len(kept),
        )
        return {"added": added, "removed": removed, "kept": kept}

    # -- persistence ----------------------------------------------------------------------
    def _persist_add(self, cfg: CameraConfig) -> None:
        self.registrations.registered[cfg.id] = cfg.model_dump(mode="json")
        self.registrations.removed.discard(cfg.id)
        self._save_registrations()

    def _persist_remove(self, entry: CameraEntry) -> None:
        cid = entry.config.id
        self.registrations.registered.pop(cid, None)
        if entry.origin == "file":
            self.registrations.removed.add(cid)
        self._save_registrations()

    def _save_registrations(self) -> None:
        try:
            self.store.save(self.registrations)
        except OSError as err:
            log.error(
                "cannot save the camera registrations to %s: %s; they apply until itsd stops",
                self.store.path,
                err,
            )

    def _run_ops(self) -> None:
        if self._op is None:
            try:
                make_op, fut = self._ops.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                return
            try:
                self._op = (make_op(), fut)
            except Exception as err:
                fut.set_exception(err)
                return
        gen, fut = self._op
        try:
            next(gen)
        except StopIteration as done:
            self._op = None
            self._refresh_state(force=True)  # before the caller wakes and reads it
            fut.set_result(done.value)
        except Exception as err:  # the caller gets the error; the loop goes on
            self._op = None
            self._refresh_state(force=True)
            fut.set_exception(err)

    def _fail_pending_ops(self) -> None:
        with self._adds_lock:
            adds, self._adds = self._adds, []
            self._batch_open = False
        for _, _, _, fut in adds:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(ChangeTimeoutError("itsd is stopping"))
        if self._op is not None:
            self._op[1].set_exception(ChangeTimeoutError("itsd is stopping"))
            self._op = None
        while True:
            try:
                _, fut = self._ops.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(ChangeTimeoutError("itsd is stopping"))

    # -- main loop ----------------------------------------------------------------------
    def add_service(self, stop: Callable[[], None]) -> None:
        """Register a stop function of a side service (gRPC, HTTP) run by the caller."""
        self._services.append(stop)

    def set_snapshotter(self, fn: Callable[[Supervisor], DaemonState]) -> None:
        """The function that builds the state snapshot each tick."""
        self._snapshotter = fn

    def _refresh_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._snapshotter is None or (not force and now - self._last_snapshot < LOOP_TICK_S):
            return
        self._last_snapshot = now
        try:
            self.state = self._snapshotter(self)
        except Exception:  # a broken snapshot must never stop the daemon
            log.exception("cannot build the state snapshot")

    def _load_cameras(self) -> None:
        reg = self.store.load()
        wanted, notes = merge(self.config.cameras, reg)
        for note in notes:
            log.warning("%s", note)
        self.registrations = reg
        if notes:
            self._save_registrations()
        if len(wanted) > self.config.supervisor.max_cameras:
            raise ConfigError(
                f"{len(wanted)} cameras (configuration file and {self.store.path}) but "
                f"supervisor.max_cameras is {self.config.supervisor.max_cameras}"
            )
        # All the cameras' memory is checked at once, before any is created.
        try:
            check_free_space(sum(self._camera_bytes(c) for c, _ in wanted))
        except ShmSpaceError as err:
            raise ResourceError(f"{len(wanted)} camera(s): {err}") from None
        for cfg, origin in wanted:
            self._new_camera(cfg, origin)
        self.config = self.config.model_copy(update={"cameras": [c for c, _ in wanted]})
        n_reg = sum(1 for _, o in wanted if o == "registered")
        if n_reg:
            log.info("%d camera(s) registered at run time restored from %s", n_reg, self.store.path)

    def run(self, on_started: Callable[[Supervisor], None] | None = None) -> int:
        """Run until stopped; returns the process exit code."""
        pidfile.acquire(self.pid_file)
        try:
            self._create_shared_memory()
            try:
                self._build_core()
                self._load_cameras()
                self._install_signals()
                try:
                    if on_started is not None:
                        on_started(self)
                    for h in sorted(self.core, key=lambda x: -x.group):
                        if h.kind != "decode":  # decoders start once inference is ready
                            self._start(h)
                    self._refresh_state(force=True)
                    self._loop()
                    self._fail_pending_ops()
                    self._shutdown()
                finally:
                    self._fail_pending_ops()
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
                log.info("SIGHUP: re-reading the configuration")
                fut = self.request_reload()
                fut.add_done_callback(_log_reload_failure)
                continue
            if self.stopping:
                log.warning("%s again while stopping: killing the stages now", name)
                self._kill_all()
                self.exit_code = self.exit_code or EXIT_FAILURE
            else:
                log.info("%s received", name)
                self.begin_stop(EXIT_OK)

    def _wait(self, timeout: float) -> None:
        waitables: list[Any] = [h.process.sentinel for h in self.handles() if h.process is not None]
        if self._wake_r is not None:
            waitables.append(self._wake_r)
        multiprocessing.connection.wait(waitables, timeout=timeout)
        self._drain_wakeups()

    def _loop(self) -> None:
        while not self.stopping:
            busy = self._op is not None or not self._ops.empty()
            self._wait(OP_TICK_S if busy else LOOP_TICK_S)
            self._handle_signals()
            now = time.monotonic()
            for h in self.handles():
                if h.process is not None and not h.process.is_alive() and not h.retired:
                    self._on_exit(h)
            if self.stopping:
                break
            for h in self.handles():
                if (
                    h.process is None
                    and not h.retired
                    and h.next_start_at is not None
                    and now >= h.next_start_at
                ):
                    self._start(h)
            if not self.decoders_started and all(
                self.stage_running(h) for h in self.core if h.kind == "infer"
            ):
                # Decoders start once inference is ready, so no source loses its first
                # frames while the model loads.
                self.decoders_started = True
                for h in self.core:
                    if h.kind == "decode" and h.process is None:
                        self._start(h)
            self._run_ops()
            self._balance(now)
            self._check_heartbeats(now)
            if not self.ready_sent and self.decoders_started and self._all_running():
                self.ready_sent = True
                log.info("all stages running")
                self.notifier.ready(f"{len(self.cameras)} camera(s)")
            self._ping_watchdog(now)
            self._refresh_state()
            self._check_sources_ended()

    def _check_sources_ended(self) -> None:
        if not self.config.supervisor.exit_when_sources_end or not self.decoders_started:
            return
        cams = [e for e in self.cameras.values() if not e.removing]
        if not cams or not all(e.ended() for e in cams):
            return
        failed = [e.config.id for e in cams if e.flag(m.DECODE_FAILED)]
        if failed:
            log.error("every source has ended; %s could not be opened", ", ".join(failed))
            self.begin_stop(EXIT_NO_INPUT)
        else:
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
        self._refresh_state(force=True)
        for group in (GROUP_DECODE, GROUP_INFER, GROUP_ANALYZE, GROUP_PUBLISH):
            members = [h for h in self.handles() if h.group == group]
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
        for h in self.handles():
            _kill_handle(h)

    def uptime_s(self) -> float:
        """Seconds since the supervisor started."""
        return time.monotonic() - self.started_mono


def _log_op_failure(fut: Future[Any]) -> None:
    err = fut.exception()
    if err is not None:
        log.error("%s", err)


def _log_reload_failure(fut: Future[Any]) -> None:
    err = fut.exception()
    if err is not None and not isinstance(err, ConfigError):
        log.error("reload failed: %s", err)


def _changed_sections(old: Config, new: Config) -> list[str]:
    """Top-level keys (other than cameras) whose value differs."""
    a = old.model_dump(mode="json", exclude={"cameras"})
    b = new.model_dump(mode="json", exclude={"cameras"})
    out = []
    for key in a:
        if isinstance(a[key], dict):
            out += [f"{key}.{k}" for k in a[key] if a[key][k] != b[key].get(k)]
        elif a[key] != b[key]:
            out.append(key)
    return out


def _close_unlink(obj: Any) -> None:
    with contextlib.suppress(OSError):
        obj.close()
    with contextlib.suppress(OSError):
        obj.unlink()


def _kill_handle(h: StageHandle) -> None:
    """SIGKILL a stage's process if it runs, reap it and forget it."""
    if h.process is not None:
        if h.process.is_alive() and h.process.pid is not None:
            _kill(h.process.pid, signal.SIGKILL)
        h.process.join(5)
        h.process.close()
        h.process = None


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def check_supported(config: Config) -> None:
    """Refuse settings this version cannot honour (ConfigError names the key).

    Every setting of this version is honoured (Kafka included); kept as the one place for
    such checks.
    """


def check_outputs(config: Config) -> None:
    """Refuse an output that cannot be written, before anything starts.

    Never blocks: a FIFO or a device (``/dev/full``) is checked for write permission
    only, a regular file is opened for appending (created when missing).
    """
    path = config.outputs.jsonl_path
    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"outputs.jsonl_path: {path} is a directory; name a file")
    parent = path.parent if str(path.parent) else Path(".")
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"outputs.jsonl_path: cannot write {path}: {ancestor} is not a directory")
    try:
        if path.exists() and not path.is_file():
            if not os.access(path, os.W_OK):
                raise PermissionError(13, "permission denied")
            return
        parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as err:
        raise ConfigError(
            f"outputs.jsonl_path: cannot write {path}: {err.strerror or err}"
        ) from None


def run_daemon(
    config: Config,
    on_started: Callable[[Supervisor], None] | None = None,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> int:
    """Resolve the model, then supervise the pipeline until stopped; returns the exit code."""
    from itsd.engines import resolve_model  # model look-up only; no inference here

    try:
        check_supported(config)
        check_outputs(config)
        model_path = resolve_model(config.model.path)
        sup = Supervisor(config, str(model_path), config_path, overrides)
        return sup.run(on_started)
    except ItsdError as err:
        log.error("%s", err)
        return err.exit_code
