"""Publisher stage: takes events from the event ring and writes them out.

Outputs: a JSONL file (one event per line, appended, flushed after every batch and
fsynced on stop). Kafka publishing with an on-disk spool is configured by ``kafka.*``
and is not available in this version; the supervisor refuses to start with it enabled
rather than drop events silently.

Nothing is lost on a failed write (a full disk, a read-only mount): events leave the
event ring only after they are written, so a failed batch stays in the ring and is
retried every second with an error in the log. Meanwhile the ring fills, back-pressure
reaches analytics and inference and, in the end, the frame rings (which drop the oldest
frames, counted). A crash between a write and taking the batch off the ring writes that
batch twice on restart (at least once, never lost). On a stop request (sent only after
analytics has exited) the stage drains the ring, writes and fsyncs.

This stage must never run analytics or touch frames.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO

from itsd.errors import EXIT_OK
from itsd.records import EventRecord
from itsd.shm import RecordRing
from itsd.stages.runtime import C_BUSY_US, C_ERRORS, C_IN, C_LAST_WALL_MS, C_OUT, StageContext

log = logging.getLogger("itsd.publish")

BATCH_RECORDS = 512
RETRY_S = 1.0


class JsonlSink:
    """Appends event payloads as lines to a file, reopening it after a failure."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
        return self._fh

    def write(self, payloads: list[bytes]) -> None:
        """Write and flush; raises OSError (the caller keeps the batch and retries)."""
        fh = self._open()
        try:
            fh.write(b"".join(p + b"\n" for p in payloads))
            fh.flush()
        except OSError:
            self._drop_handle()
            raise

    def _drop_handle(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def sync(self) -> None:
        """Flush to stable storage."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Sync and close."""
        if self._fh is not None:
            try:
                self.sync()
            finally:
                self._drop_handle()


def run(ctx: StageContext) -> int:
    """Publish events until stopped and drained."""
    config = ctx.config
    ring = RecordRing.attach(ctx.spec.event_ring)
    path = config.outputs.jsonl_path
    sink = JsonlSink(path) if path is not None else None
    if sink is None:
        log.warning("no output is configured (outputs.jsonl_path is null): events are discarded")
    else:
        log.info("writing events to %s", path)
    slot = ctx.slot
    last_error_log = 0.0
    ctx.set_running()
    try:
        # Events leave the ring only once written: a failed write or a crash means
        # they are written again later (at least once), never lost.
        while (raw := ctx.next_records(ring, BATCH_RECORDS)) is not None:
            pending = [EventRecord.unpack(r).payload for r in raw]
            t0 = time.monotonic_ns()
            try:
                if sink is not None:
                    sink.write(pending)
            except OSError as err:
                slot.add(C_ERRORS)
                now = time.monotonic()
                if now - last_error_log > 10.0:
                    last_error_log = now
                    log.error(
                        "cannot write %d event(s) to %s: %s; holding them, retrying every %.0f s",
                        len(pending),
                        path,
                        err,
                        RETRY_S,
                    )
                if ctx.parent_gone() and ctx.draining:
                    log.error("supervisor gone; %d event(s) could not be written", len(pending))
                    break
                slot.beat()
                time.sleep(RETRY_S)
                continue
            ring.advance(len(raw))
            slot.add(C_IN, len(pending))
            slot.add(C_BUSY_US, (time.monotonic_ns() - t0) // 1000)
            slot.add(C_OUT, len(pending))
            slot.set(C_LAST_WALL_MS, time.time_ns() // 1_000_000)
            slot.beat()
    finally:
        if sink is not None:
            try:
                sink.close()
            except OSError as err:
                log.error("cannot sync %s: %s", path, err)
        ring.close()
    return EXIT_OK
