"""Store sink: each ``analytics_summary`` interval into the aggregates store (SQLite or
PostgreSQL), through a disk buffer while the database is away.

Acceptance (what lets the publisher take a batch off its ring): every interval of the
batch is committed to the database, or durably in the buffer (the disk spool of
``itsd.sinks.spool``, fsynced before ``write`` returns). Other events are ignored.

* direct: the buffer is empty; a batch's intervals are upserted in one transaction.
* buffering: the database failed (connection refused, server restarting, SQLite locked):
  the batch goes to the buffer, and so does every later batch (a newer version of an
  interval is never written before an older one); ``poll`` retries the database with a
  backoff (1 s doubling to 30 s) and replays the buffer in rounds, each committed before
  the buffer's cursor moves past it. When the buffer is empty the sink is direct again.
  After a restart the buffer is replayed first, for the same reason.

Nothing is lost: an interval leaves the ring only when committed or buffered; a crash
between a replay's commit and the buffer's cursor replays that round again. Nothing is
doubled: the store upserts on (camera id, interval start and end), so a replay replaces
the rows it already wrote. When the buffer is full (``store.buffer_max_mib``) the batch is
refused (``SinkError``): the publisher holds it on its ring and retries.

Events that cannot be stored are skipped with a count and a log line (at most one per
minute per reason): summaries without ``interval`` (older analytics), malformed ones, and
rows the database refuses (a constraint), so one bad event never blocks the rest.

Schema: on its first connection the sink migrates the database to this code's revision
(the supervisor normally did at start); a database newer than the code raises
``StoreVersionError`` (exit code 78: the daemon stops with that message).

This module must never import a stage or another sink (the spool is a queue, not a
sink), and never block the publisher for long: one connection attempt per retry, bounded
by ``store.connect_timeout_s``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.engine import Engine

from itsd.records import EventRecord, EventType
from itsd.sinks.base import Sink, SinkError
from itsd.sinks.spool import Spool, SpoolFullError
from itsd.store.db import StoreError, StoreRejected, StoreUnavailable, describe_url, migrate
from itsd.store.model import IntervalRow
from itsd.store.summary import interval_from_event
from itsd.store.writer import StoreWriter

log = logging.getLogger("itsd.sinks.store")

#: Intervals replayed from the buffer per round, and rounds per poll.
REPLAY_BATCH = 500
REPLAY_ROUNDS = 4
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0
RETENTION_PERIOD_S = 3600.0
LOG_PERIOD_S = 60.0


class Counters:
    """Callables the sink reports through (metric cells in the daemon, no-ops in tests)."""

    def __init__(self) -> None:
        noop: Callable[[int], None] = lambda n: None  # noqa: E731
        self.written = noop
        self.buffered = noop
        self.pending: Callable[[int], None] = noop
        self.connected: Callable[[bool], None] = lambda up: None
        self.skipped: Callable[[str, int], None] = lambda reason, n: None


class StoreSink(Sink):
    """Intervals to the store, the buffer as the fallback (see the module docstring)."""

    name = "store"

    def __init__(
        self,
        engine: Engine,
        buffer: Spool,
        retention_days: float = 0.0,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.writer = StoreWriter(engine)
        self.buffer = buffer
        self.retention_days = retention_days
        self.c = counters or Counters()
        self.clock = clock
        self.wall = wall
        self._migrated = False
        self._down = False
        self._retry_s = RETRY_MIN_S
        self._next_try = 0.0
        self._next_retention = clock() + 5.0
        self._last_log: dict[str, float] = {}
        self._skipped: dict[str, int] = {}
        if not buffer.is_empty():
            log.info(
                "the store buffer holds %d interval(s): they are written first", buffer.pending
            )
        self.c.pending(buffer.pending)

    def describe(self) -> str:
        return f"store {describe_url(self.engine.url.render_as_string(hide_password=False))}"

    # -- parsing -------------------------------------------------------------------------
    def _skip(self, reason: str, detail: str) -> None:
        self.c.skipped(reason, 1)
        self._skipped[reason] = self._skipped.get(reason, 0) + 1
        now = self.clock()
        if now - self._last_log.get(reason, -LOG_PERIOD_S) >= LOG_PERIOD_S:
            self._last_log[reason] = now
            n = self._skipped.pop(reason)
            log.warning(
                "store: %d analytics_summary event(s) not stored (%s): %s", n, reason, detail
            )

    def _parse(self, payload: bytes) -> IntervalRow | None:
        try:
            obj = json.loads(payload)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            row = interval_from_event(obj)
        except ValueError as err:
            self._skip("invalid", str(err))
            return None
        if row is None:
            self._skip("no_interval", "the summary has no data.interval (older analytics)")
        return row

    # -- writing -------------------------------------------------------------------------
    def _mark_down(self, err: Exception) -> None:
        if not self._down:
            log.error(
                "%s: %s; intervals go to the buffer %s and are written when it answers",
                self.describe(),
                err,
                self.buffer.dir,
            )
            self._down = True
            self.c.connected(False)
        self._next_try = self.clock() + self._retry_s
        self._retry_s = min(RETRY_MAX_S, self._retry_s * 2)

    def _mark_up(self) -> None:
        self._retry_s = RETRY_MIN_S
        if self._down:
            self._down = False
            log.info("%s answers again", self.describe())
        self.c.connected(True)

    def _commit(self, rows: Sequence[IntervalRow]) -> bool:
        """Upsert ``rows``; True when they are committed (or refused for good)."""
        try:
            if not self._migrated:
                migrate(self.engine)
                self._migrated = True
            self.writer.write(rows)
        except StoreRejected:
            return self._commit_one_by_one(rows)
        except StoreError as err:  # away, or its schema cannot be set up now: retry later
            self._mark_down(err)
            return False
        self._mark_up()
        self.c.written(len(rows))
        return True

    def _commit_one_by_one(self, rows: Sequence[IntervalRow]) -> bool:
        written = 0
        for r in rows:
            try:
                self.writer.write([r])
            except StoreUnavailable as err:
                self._mark_down(err)
                return False  # the whole batch is buffered; upserts make that harmless
            except StoreRejected as err:
                self._skip("rejected", f"{r.camera_id} at {r.start_ms} ms: {err}")
                continue
            written += 1
        self._mark_up()
        self.c.written(written)
        return True

    def write(self, batch: Sequence[EventRecord]) -> None:
        """Commit the batch's intervals, or buffer them; SinkError when the buffer is full."""
        payloads: list[bytes] = []
        rows: list[IntervalRow] = []
        for e in batch:
            if e.kind != EventType.ANALYTICS_SUMMARY:
                continue
            row = self._parse(e.payload)
            if row is not None:
                payloads.append(e.payload)
                rows.append(row)
        if not rows:
            return
        if self.buffer.is_empty() and self.clock() >= self._next_try and self._commit(rows):
            return
        self._buffer(payloads)

    def _buffer(self, payloads: list[bytes]) -> None:
        try:
            n = self.buffer.append(payloads)
        except SpoolFullError as err:
            raise SinkError(f"the store is away and its buffer is full: {err}") from None
        self.c.buffered(n)
        self.c.pending(self.buffer.pending)
        if n < len(payloads):
            # The head of the batch is buffered; the batch is offered again whole (its
            # intervals then replace themselves in the store).
            raise SinkError(f"the store is away and its buffer {self.buffer.dir} is full")

    def _replay(self) -> None:
        for _ in range(REPLAY_ROUNDS):
            if self.buffer.is_empty() or self.clock() < self._next_try:
                return
            records = self.buffer.read(REPLAY_BATCH)
            if not records:
                self.c.pending(self.buffer.pending)
                return
            rows = [r for r in (self._parse(body) for _, body in records) if r is not None]
            if rows and not self._commit(rows):
                return
            self.buffer.commit(records[-1][0], len(records))
            self.c.pending(self.buffer.pending)
            if self.buffer.is_empty():
                log.info(
                    "%s: the buffer is written; intervals go straight in again", self.describe()
                )

    def _retention(self) -> None:
        if self.retention_days <= 0 or self.clock() < self._next_retention or self._down:
            return
        self._next_retention = self.clock() + RETENTION_PERIOD_S
        cutoff = int((self.wall() - self.retention_days * 86400.0) * 1000)
        try:
            n = self.writer.delete_before(cutoff)
        except (StoreUnavailable, StoreRejected) as err:
            log.warning("%s: retention clean-up failed: %s", self.describe(), err)
            return
        if n:
            log.info(
                "%s: deleted %d interval(s) older than %g days",
                self.describe(),
                n,
                self.retention_days,
            )

    def poll(self) -> None:
        """Replay the buffer when the database answers again; apply the retention."""
        self._replay()
        self._retention()

    def flush(self) -> None:
        self.buffer.sync()

    def close(self) -> None:
        """Replay what the database takes now; the rest stays buffered for the next start."""
        try:
            if not self.buffer.is_empty():
                self._next_try = 0.0
                self._replay()
        finally:
            self.buffer.close()
            self.writer.close()


def buffer_dir(state_dir: Path) -> Path:
    """Where the store sink buffers intervals while the database is away."""
    return state_dir / "store-buffer"
