"""The harness every stage process runs in: start-up, signals, heartbeat, exit codes.

The supervisor spawns ``stage_main(spec)`` with the spawn start method. The harness
ties the child's life to its parent (``PR_SET_PDEATHSIG`` plus a parent-pid check),
enables faulthandler (a SIGABRT from the supervisor's watchdog prints every thread's
traceback to the log), ignores SIGINT (a Ctrl-C in a terminal reaches the whole process
group; the supervisor alone decides the order of a stop), turns SIGTERM into a stop
request, attaches the stage's slot of the control block and runs the stage's ``run``.
Exceptions become exit codes the supervisor understands (see ``itsd.errors``).

A stage's counters live in its own shared-memory cell table, by name (see
``itsd.runtime.metrics``); its self-description (backend, model, versions, last error)
goes as a JSON record onto its info board, which the supervisor reads.

This module must never import a stage module statically (it loads the one it runs by
name), nor ``control``, ``monitor`` or ``cli``.
"""

from __future__ import annotations

import ctypes
import faulthandler
import importlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from itsd.config import Config, config_from_json
from itsd.errors import EXIT_FAILURE, EXIT_OK, ItsdError
from itsd.logutil import setup_logging
from itsd.records import CameraBinding
from itsd.runtime import memtrace
from itsd.runtime.metrics import STAGE_COMMAND_SEQ, MetricWriter
from itsd.shm import ControlBlock, RecordRing, StageSlot, bells
from itsd.shm.board import Board
from itsd.shm.cells import CellTable
from itsd.shm.control import (
    STATE_DRAINING,
    STATE_FAILED,
    STATE_RUNNING,
    STATE_STARTING,
    STATE_STOPPED,
)

log = logging.getLogger("itsd.stage")

PR_SET_PDEATHSIG = 1
#: Longest sleep on the doorbell: a stage with nothing to read still wakes this often for
#: its periodic work (heartbeat, drain check, sink polls), and a writer without a bell
#: is seen this late at worst.
BELL_WAIT_S = 0.05


class Idle:
    """How a stage waits while all its inputs are empty: on its doorbell.

    Use: each time the inputs had nothing, call ``pause()``; each time they had work,
    ``busy()``. The first empty look only arms the bell and returns at once, so the
    caller looks again: a record put before the arming is found then, one put after it
    rings the bell. The second ``pause()`` sleeps until a writer rings (its readers'
    rings carry this stage's slot, ``set_reader_bell``) or ``BELL_WAIT_S`` passes. A
    stage that waits this way never polls: it works or it sleeps.
    """

    __slots__ = ("_count", "_slot", "timeout")

    def __init__(self, slot: StageSlot, timeout: float = BELL_WAIT_S) -> None:
        self._slot = slot
        self._count: int | None = None
        self.timeout = timeout

    def busy(self) -> None:
        """The inputs had work: stop asking writers to wake this stage."""
        if self._count is not None:
            self._count = None
            self._slot.disarm_bell()

    def pause(self, timeout: float | None = None) -> bool:
        """Arm the bell (first call: returns at once) or sleep on it; True if it rang."""
        if self._count is None:
            self._count = self._slot.arm_bell()
            return True
        count, self._count = self._count, None
        return self._slot.wait_bell(count, self.timeout if timeout is None else timeout)


ORPHAN_GRACE_S = 5  # seconds a stage may take to exit once the supervisor is gone


@dataclass(frozen=True)
class StageSpec:
    """Everything a stage process needs; picklable, sent by the supervisor at spawn."""

    name: str  # "decode:cam1", "infer", "analyze", "publish"
    kind: str  # module name under itsd.stages
    slot: int  # index of the stage's slot in the control block
    control_name: str
    parent_pid: int
    config_json: str
    cells: str = ""  # the stage's cell table (named counters)
    info_board: str = ""  # where the stage describes itself (JSON)
    cameras: tuple[CameraBinding, ...] = ()  # decode: its camera; others: the table
    cmd_seq: int = 0  # the last command whose effect ``cameras`` includes
    command_ring: str = ""  # inference: commands from the supervisor
    detection_ring: str = ""  # inference: where its detections go
    #: inference: one per analytics shard; analytics: one per inference worker
    detection_rings: tuple[str, ...] = ()
    worker: int = 0  # inference worker, decode worker or analytics shard: its index
    event_ring: str = ""  # analytics: where its events go
    event_rings: tuple[str, ...] = ()  # the publisher: one per analytics shard
    model_path: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class StageContext:
    """What a running stage uses: its config, its control slot and the stop signal."""

    def __init__(self, spec: StageSpec, config: Config, control: ControlBlock) -> None:
        self.spec = spec
        self.config = config
        self.control = control
        self.slot: StageSlot = control.slot(spec.slot)
        self._stop = False
        self.draining = False
        self.log = logging.getLogger(f"itsd.{spec.kind}")
        self.cells = CellTable.attach(spec.cells) if spec.cells else None
        self.metrics = MetricWriter(self.cells) if self.cells is not None else None
        self.info = Board.attach(spec.info_board) if spec.info_board else None
        self._about: dict[str, Any] = {}

    # -- self-description and commands -----------------------------------------------
    def describe(self, **fields: Any) -> None:
        """Merge ``fields`` into the stage's self-description and publish it.

        The supervisor shows it in health answers (backend, model, versions, the last
        error of a source). Values must be JSON-serialisable.
        """
        self._about.update(fields)
        if self.info is None:
            return
        blob = json.dumps(self._about, separators=(",", ":"), default=str).encode()
        try:
            self.info.publish(blob[: self.info.capacity])
        except ValueError as err:
            self.log.warning("self-description not published: %s", err)

    def ack(self, seq: int) -> None:
        """Record command ``seq`` as applied (never moves backwards)."""
        if self.metrics is not None:
            cell = self.metrics.cell(STAGE_COMMAND_SEQ)
            if seq > cell.get_int():
                cell.set(seq)

    def close(self) -> None:
        """Unmap the stage's cell table and info board."""
        if self.cells is not None:
            self.cells.close()
        if self.info is not None:
            self.info.close()

    # -- stop signal ------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the stage to finish (called from the SIGTERM handler)."""
        self._stop = True

    def parent_gone(self) -> bool:
        """True once the supervisor has died (the stage must wind down quickly)."""
        return os.getppid() != self.spec.parent_pid

    def should_stop(self) -> bool:
        """True when the stage should stop taking new work (SIGTERM or parent gone)."""
        return self._stop or self.parent_gone()

    # -- liveness -----------------------------------------------------------------------
    def beat(self) -> None:
        """Bump the heartbeat; call at least every few seconds."""
        self.slot.beat()

    def set_running(self) -> None:
        """Mark the stage ready (the supervisor reports READY when all are)."""
        self.slot.set_state(STATE_RUNNING)
        self.beat()

    def check_drain(self) -> bool:
        """Enter the draining state once a stop is requested; True while draining.

        Stages are stopped in flow order, so when a stop arrives nothing new will come
        in: a draining stage finishes what is in its input ring, then exits.
        """
        if not self.draining and self.should_stop():
            self.draining = True
            self.slot.set_state(STATE_DRAINING)
            self.log.info("draining")
        return self.draining

    def next_records(self, ring: RecordRing, max_records: int) -> list[bytes] | None:
        """The oldest records of ``ring``, peeked (take them with ``ring.advance``).

        Waits (beating, on the stage's doorbell) while the ring is empty; None once the
        stage is draining and the ring is empty: time to exit.
        """
        ring.set_reader_bell(self.spec.slot)
        idle = Idle(self.slot)
        while True:
            draining = self.check_drain()
            batch = ring.peek_many(max_records)
            if batch:
                idle.busy()
                return batch
            if draining:
                idle.busy()
                return None
            self.beat()
            idle.pause()

    def put(self, ring: RecordRing, payload: bytes) -> bool:
        """Put a record on a lossless ring, waiting (and beating) while it is full.

        Gives up only when the supervisor is gone (nothing downstream would read it).
        """
        while not ring.put(payload, timeout=0.5, should_abort=self.parent_gone):
            self.beat()
            if self.parent_gone():
                return False
        return True

    def sleep(self, seconds: float, step: float = 0.25) -> bool:
        """Sleep up to ``seconds`` while beating; return False if a stop came first."""
        deadline = time.monotonic() + seconds
        while True:
            self.beat()
            if self.should_stop():
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(step, left))


def _set_parent_death_signal() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError):  # not Linux: the parent-pid checks still apply
        pass


def stage_main(spec: StageSpec) -> None:
    """Entry point of a stage process (the target the supervisor spawns)."""
    _set_parent_death_signal()
    if os.getppid() != spec.parent_pid:  # the parent died before prctl took effect
        os._exit(EXIT_FAILURE)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = config_from_json(spec.config_json)
    setup_logging(config.logging.level, spec.name, config.logging.format)
    if os.environ.get(memtrace.ENV_DIR):  # a memory hunt: off unless asked for
        memtrace.start(spec.name)
    control = ControlBlock.attach(spec.control_name)
    bells.use_control(control)  # rings put here wake their readers
    ctx = StageContext(spec, config, control)

    def _on_term(signum: int, frame: FrameType | None) -> None:
        ctx.request_stop()
        if ctx.parent_gone():
            # The supervisor died (PR_SET_PDEATHSIG). Wind down, but never outlive it
            # for long: a stage stuck in a blocking call would otherwise stay forever.
            # SIGALRM's default action ends the process wherever it is.
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(ORPHAN_GRACE_S)

    signal.signal(signal.SIGTERM, _on_term)
    slot = ctx.slot
    slot.set_pid(os.getpid())
    slot.set_state(STATE_STARTING)
    slot.beat()
    code = EXIT_FAILURE
    try:
        module = importlib.import_module(f"itsd.stages.{spec.kind}")
        code = int(module.run(ctx))
    except ItsdError as err:
        log.error("%s", err)
        code = err.exit_code
    except Exception:
        log.exception("stage %s crashed", spec.name)
        code = EXIT_FAILURE
    finally:
        slot.set_state(STATE_STOPPED if code == EXIT_OK else STATE_FAILED)
        ctx.close()
        control.close()
        logging.shutdown()
    sys.exit(code)
