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

Camera changes arrive as ``CommandRecord``s on the event ring behind the events of the
camera they concern; the publisher is the last stage to record them as applied, so a
caller that waits for the change knows every event before it has been written.

While an output refuses events the stage says so on its info board (health turns
degraded with the reason) and in the log.

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
from itsd.records import CMD_MAGIC, CommandRecord, EventRecord, record_magic
from itsd.runtime import metrics as m
from itsd.shm import RecordRing
from itsd.stages.runtime import StageContext

log = logging.getLogger("itsd.publish")

BATCH_RECORDS = 512
RETRY_S = 1.0


class JsonlSink:
    """Appends event payloads as lines to a file, reopening it after a failure.

    The file is also reopened when its path no longer names the open file (moved away by
    log rotation, deleted, replaced by something else), as ``logging``'s
    ``WatchedFileHandler`` does: events go to the path the operator configured, never to
    an unlinked file nobody can read, and a path that cannot be written any more (now a
    directory) fails the batch, which is then held and reported.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        if self._fh is not None and not self._still_ours(self._fh):
            self._drop_handle()
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
        return self._fh

    def _still_ours(self, fh: BinaryIO) -> bool:
        """True while the path names the open file (or is a device such as /dev/full)."""
        try:
            now = os.stat(self.path)
        except OSError:
            return False
        mine = os.fstat(fh.fileno())
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

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
    assert ctx.metrics is not None
    written = ctx.metrics.cell(m.PUBLISH_EVENTS, sink="jsonl")
    errors = ctx.metrics.cell(m.PUBLISH_ERRORS, sink="jsonl")
    busy = ctx.metrics.cell(m.PUBLISH_SECONDS, sink="jsonl")
    held = ctx.metrics.cell(m.PUBLISH_HELD, sink="jsonl")
    ctx.ack(ctx.spec.cmd_seq)
    ctx.describe(outputs={"jsonl": str(path) if path is not None else None}, error="")
    slot = ctx.slot
    last_error_log = 0.0
    failing = False
    ctx.set_running()
    try:
        # Events leave the ring only once written: a failed write or a crash means
        # they are written again later (at least once), never lost.
        while (raw := ctx.next_records(ring, BATCH_RECORDS)) is not None:
            pending: list[bytes] = []
            acks: list[int] = []
            for r in raw:
                if record_magic(r) == CMD_MAGIC:
                    try:
                        acks.append(CommandRecord.unpack(r).seq)
                    except ValueError as err:
                        log.error("skipping a malformed command record: %s", err)
                    continue
                pending.append(EventRecord.unpack(r).payload)
            t0 = time.monotonic_ns()
            try:
                if sink is not None and pending:
                    sink.write(pending)
            except OSError as err:
                errors.inc()
                held.set(len(pending))
                now = time.monotonic()
                if not failing:
                    failing = True
                    ctx.describe(
                        error=f"cannot write events to {path}: {err}", error_at=time.time()
                    )
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
            if failing:
                failing = False
                held.set(0)
                ctx.describe(error="")
                log.info("writing to %s works again", path)
            for seq in acks:
                ctx.ack(seq)
            busy.inc((time.monotonic_ns() - t0) // 1000)
            written.inc(len(pending))
            slot.beat()
    finally:
        if sink is not None:
            try:
                sink.close()
            except OSError as err:
                log.error("cannot sync %s: %s", path, err)
        ring.close()
    return EXIT_OK
