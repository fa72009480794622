"""Publisher stage: takes events from the event ring and fans them out to the sinks.

Sinks (``itsd.sinks``): the JSONL file (``outputs.jsonl_path``, rotated by size with
``outputs.jsonl_max_mib``), Kafka (``kafka.enabled``) with its disk spool
(``outputs.spool_dir``), and the results ring that hands detection events back to the
gRPC control API (best effort: never holds a batch back). Each batch is offered to every
sink; the batch leaves the ring only when every sink accepted it (written; delivered to
the broker or durably spooled). A sink that fails keeps the batch on the ring and is
retried alone every second with an error in the log (the sinks that accepted it never
see it twice). Meanwhile the ring fills, back-pressure reaches analytics and inference
and, in the end, the frame rings (which drop the oldest frames, counted). A crash
between a sink's acceptance and taking the batch off the ring gives that batch again on
restart (at least once, never lost). ``Pump`` does this; while the Kafka sink waits for
the broker's answers on one batch, it reads and decodes the next (without taking it off
the ring), so the broker's round trip overlaps the next batch's work. On a stop request
(sent only after analytics has exited) the stage drains the ring through the sinks (the
Kafka sink spools what the broker does not take) and closes them (fsync).

Besides the ring's events the stage publishes three kinds of its own: a metrics snapshot
every ``outputs.metrics_interval_s`` (topic metrics_events; the metrics of every stage of
this run, read from their cell tables), the alerts the sinks raise (a spool near full
or full, topic alert_events), and the alerts of the daemon's rules (``alerts:``), which
the supervisor evaluates and leaves on the alerts board (``itsd.runtime.service_metrics``):
each transition (firing, resolved) is published once, its sequence number kept in a
state cell that survives a restart of this stage.

Camera changes arrive as ``CommandRecord``s on the event ring behind the events of the
camera they concern; the publisher is the last stage to record them as applied, so a
caller that waits for the change knows every event before it has been written.

While an output refuses events the stage says so on its info board (health turns
degraded with the reason) and in the log.

The aggregates store (``store.enabled``) is one more sink: each analytics_summary
interval is upserted into SQLite or PostgreSQL, or buffered on disk while the database
is away (``itsd.sinks.store``).

This stage must never run analytics or touch frames.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from itsd.config import Config
from itsd.errors import EXIT_OK
from itsd.events import alert_event, metrics_snapshot_event
from itsd.records import CMD_MAGIC, CommandRecord, EventRecord, Topic, record_magic
from itsd.runtime import metrics as m
from itsd.runtime.metrics import MetricWriter, read_table
from itsd.runtime.service_metrics import alerts_board_name
from itsd.shm import RecordRing
from itsd.shm.board import Board
from itsd.shm.cells import CellTable
from itsd.shm.segments import parse_segment_name, shm_dir
from itsd.sinks import Sink, SinkError
from itsd.sinks.jsonl import JsonlSink
from itsd.stages.runtime import Idle, StageContext

log = logging.getLogger("itsd.publish")

BATCH_RECORDS = 512
#: Batches are larger with Kafka: each one waits for the broker's acknowledgements.
KAFKA_BATCH_RECORDS = 4096
RETRY_S = 1.0


class Meter(Protocol):
    """What an output reports through (a metric ``Cell`` in the daemon)."""

    def inc(self, n: int = 1) -> None: ...

    def set(self, value: float) -> None: ...


@dataclass
class Output:
    """A sink with its cells and its failure state."""

    sink: Sink
    written: Meter
    errors: Meter
    busy: Meter
    held: Meter
    failing: bool = False
    last_log: float = 0.0


@dataclass
class _Extra:
    """Events the stage makes itself (alerts, metrics snapshots), waiting for the sinks."""

    events: list[EventRecord] = field(default_factory=list)


def _store_sink(config: Config, w: MetricWriter) -> Sink:
    """The aggregates store's sink (SQLite or PostgreSQL, buffered on disk)."""
    from itsd.sinks.spool import Spool
    from itsd.sinks.store import Counters as StoreCounters
    from itsd.sinks.store import StoreSink, buffer_dir
    from itsd.store.db import engine_for

    engine = engine_for(config)
    assert engine is not None
    spool = Spool(
        buffer_dir(config.resolved_state_dir()),
        int(config.store.buffer_max_mib * 2**20),
        4 * 2**20,
    )
    c = StoreCounters()
    c.written = w.cell(m.STORE_WRITTEN).inc
    c.buffered = w.cell(m.STORE_BUFFERED).inc
    pending, connected = w.cell(m.STORE_PENDING), w.cell(m.STORE_CONNECTED)
    c.pending = pending.set
    c.connected = lambda up: connected.set(1.0 if up else 0.0)
    skipped = {r: w.cell(m.STORE_SKIPPED, reason=r) for r in ("no_interval", "invalid", "rejected")}
    c.skipped = lambda reason, n: skipped[reason].inc(n)
    return StoreSink(engine, spool, config.store.retention_days, c)


def build_sinks(ctx: StageContext, extra: _Extra) -> list[Sink]:
    """The sinks the configuration asks for."""
    config: Config = ctx.config
    w = ctx.metrics
    assert w is not None
    sinks: list[Sink] = []
    out = config.outputs
    if out.jsonl_path is not None:
        rot = w.cell(m.JSONL_ROTATIONS)
        sinks.append(
            JsonlSink(
                out.jsonl_path,
                int(out.jsonl_max_mib * 2**20),
                out.jsonl_backups,
                on_rotate=rot.inc,
            )
        )
    if config.kafka.enabled:
        from itsd.sinks.kafka import Counters, KafkaSink
        from itsd.sinks.spool import Spool

        spool = Spool(
            out.spool_dir,
            int(out.spool_max_mib * 2**20),
            int(out.spool_segment_mib * 2**20),
            out.spool_fsync,
            out.spool_fsync_interval_s,
        )
        c = Counters()
        c.produced = w.cell(m.KAFKA_PRODUCED).inc
        c.delivered = w.cell(m.KAFKA_DELIVERED).inc
        c.failed = w.cell(m.KAFKA_FAILED).inc
        c.latency_us = w.cell(m.KAFKA_DELIVERY_SECONDS).inc
        c.spooled = w.cell(m.SPOOL_SPOOLED).inc
        c.replayed = w.cell(m.SPOOL_REPLAYED).inc
        c.dropped = w.cell(m.SPOOL_DROPPED).inc
        corrupt = w.cell(m.SPOOL_CORRUPT)
        sbytes, sevents, conn = (
            w.cell(m.SPOOL_BYTES),
            w.cell(m.SPOOL_EVENTS),
            w.cell(m.KAFKA_CONNECTED),
        )

        def gauges(sp: Spool, connected: bool) -> None:
            sbytes.set(sp.bytes_used)
            sevents.set(sp.pending)
            conn.set(1.0 if connected else 0.0)
            if sp.corrupt + sp.torn > corrupt.get_int():
                corrupt.set(sp.corrupt + sp.torn)

        c.gauges = gauges
        sinks.append(
            KafkaSink(
                config.kafka,
                spool,
                c,
                alert=extra.events.append,
                beat=ctx.beat,
                alert_ratio=out.spool_alert_ratio,
            )
        )
    if config.store.enabled:
        sinks.append(_store_sink(config, w))
    results = str(ctx.spec.extra.get("results") or "")
    if results:
        from itsd.sinks.results import ResultsSink

        # First: a batch reaches the gRPC clients before Kafka's acknowledgements are awaited.
        sinks.insert(0, ResultsSink(results))
    return sinks


class _DaemonAlerts:
    """Alert transitions of the supervisor's rules (``itsd.runtime.service_metrics``):
    read from the alerts board, each published once as an ``alert`` event."""

    def __init__(self, ctx: StageContext, run_id: str) -> None:
        assert ctx.metrics is not None
        self.name = alerts_board_name(run_id) if run_id else ""
        self.seq = ctx.metrics.cell(m.PUBLISH_ALERT_SEQ)
        self.board: Board | None = None
        self.next_at = 0.0

    def take(self) -> list[EventRecord]:
        now = time.monotonic()
        if not self.name or now < self.next_at:
            return []
        self.next_at = now + 0.5
        if self.board is None:
            try:
                self.board = Board.attach(self.name)
            except (OSError, ValueError):
                return []  # not made yet: no alert so far
        try:
            blob = self.board.read(timeout=0.01)
            data = json.loads(blob) if blob else {}
        except ValueError as err:
            log.error("unreadable alerts board: %s", err)
            return []
        out = []
        last = self.seq.get_int()
        for t in data.get("transitions", []):
            if not isinstance(t, dict) or int(t.get("seq", 0)) <= last:
                continue
            last = int(t["seq"])
            try:
                out.append(_alert_event(t))
            except (KeyError, TypeError, ValueError) as err:
                log.error("skipping a malformed alert transition: %s", err)
        if last > self.seq.get_int():
            self.seq.set(last)
        return out

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def _alert_event(t: dict[str, Any]) -> EventRecord:
    critical = t["severity"] == "critical"
    return alert_event(
        str(t["alert_type"]),
        "ALERT_SEVERITY_CRITICAL" if critical else "ALERT_SEVERITY_WARNING",
        str(t["message"]),
        camera_id=str(t.get("camera_id") or ""),
        wall_ns=int(float(t["at"]) * 1e9),
        state="raised" if t["state"] == "firing" else "cleared",
        alert_id=str(t.get("alert_id") or f"daemon-{t['seq']}-{t['rule']}"),
        evidence={
            "rule": t["rule"],
            "subject": t.get("subject", ""),
            "value": t.get("value"),
            "threshold": t.get("threshold"),
            "for_s": t.get("for_s"),
        },
    )


class _Snapshots:
    """Metrics snapshot events: every stage's cell table of this run, by name."""

    def __init__(self, ctx: StageContext) -> None:
        self.period = ctx.config.outputs.metrics_interval_s
        parsed = parse_segment_name(ctx.spec.cells) if ctx.spec.cells else None
        self.run_id = parsed.run_id if parsed else ""
        self.next_at = time.monotonic() + self.period
        self.host = socket.gethostname()

    def due(self) -> bool:
        return self.period > 0 and bool(self.run_id) and time.monotonic() >= self.next_at

    def take(self) -> EventRecord:
        self.next_at = time.monotonic() + self.period
        samples: list[tuple[str, dict[str, str], float]] = []
        prefix = f"itsd-{self.run_id}-cells-"
        with contextlib.suppress(FileNotFoundError):
            names = sorted(n for n in os.listdir(shm_dir()) if n.startswith(prefix))
            for name in names:
                try:
                    table = CellTable.attach(name)
                except (OSError, ValueError):
                    continue  # a stage that is just going away
                try:
                    for s in read_table(table):
                        if s.defn.exported:
                            samples.append((s.series_name, dict(s.labels), s.value))
                finally:
                    table.close()
        return metrics_snapshot_event(samples, host=self.host)


Describe = Callable[..., None]


def _refused(describe: Describe, o: Output, n: int, err: Exception) -> None:
    """``o`` did not accept a batch of ``n`` events: count, say so (once per 10 s)."""
    o.errors.inc()
    o.held.set(n)
    now = time.monotonic()
    if not o.failing:
        o.failing = True
        describe(error=f"cannot write events to {o.sink.describe()}: {err}", error_at=time.time())
    if now - o.last_log > 10.0:
        o.last_log = now
        log.error(
            "cannot write %d event(s) to %s: %s; holding them, retrying every %.0f s",
            n,
            o.sink.describe(),
            err,
            RETRY_S,
        )


def _accepted(describe: Describe, outs: Sequence[Output], o: Output, n: int) -> None:
    o.written.inc(n)
    if o.failing:
        o.failing = False
        o.held.set(0)
        if not any(x.failing for x in outs):
            describe(error="")
        log.info("writing to %s works again", o.sink.describe())


def _offer(
    ctx: StageContext, outs: Sequence[Output], events: Sequence[EventRecord], done: list[bool]
) -> None:
    """Write ``events`` to each sink that has not accepted them yet; mark who took them."""
    for i, o in enumerate(outs):
        if done[i]:
            continue
        t0 = time.monotonic_ns()
        try:
            if events:
                o.sink.write(events)
        except (OSError, SinkError) as err:
            _refused(ctx.describe, o, len(events), err)
            continue
        done[i] = True
        o.busy.inc((time.monotonic_ns() - t0) // 1000)
        _accepted(ctx.describe, outs, o, len(events))


@dataclass
class _Batch:
    """Records read from the event ring, decoded, not yet advanced past."""

    records: int  # ring records (events and commands)
    end: int  # ring position just past them
    events: list[EventRecord]
    acks: list[int]  # sequence numbers of the camera commands among them


# The decoder tries each record as an event first and looks for a command only when
# that fails: a command record starts with b"CMD1", and b"C" is no topic number.
if len(Topic) > CMD_MAGIC & 0xFF:
    raise ImportError("command records must not decode as events: CMD_MAGIC changed?")

#: States of a batch at one output.
_TODO, _SUBMITTED, _ACCEPTED = 0, 1, 2


class Pump:
    """Moves batches from the event ring through the outputs, without loss.

    A batch is submitted to every output; synchronous sinks accept it there and then,
    the Kafka sink produces it and settles once the broker answered for every event
    (or the failures are spooled). While it settles, the next batch is read from the
    ring and decoded (``RecordRing.peek_from``), so the broker's round trip overlaps
    the next batch's decoding. The batch leaves the ring (``advance_to``) only when
    every output accepted it; an output that refuses it is offered it again every
    ``RETRY_S`` (the ones that took it never see it twice), and nothing behind it is
    submitted meanwhile, so each output sees the events in ring order.
    """

    def __init__(
        self,
        ring: RecordRing,
        outs: Sequence[Output],
        batch_records: int,
        *,
        beat: Callable[[], None],
        describe: Describe,
        ack: Callable[[int], None],
        give_up: Callable[[], bool],
    ) -> None:
        self.ring = ring
        self.outs = list(outs)
        self.batch_records = batch_records
        self.beat = beat
        self.describe = describe
        self.ack = ack
        self.give_up = give_up
        self._next: _Batch | None = None
        #: True once a batch was refused and ``give_up()`` said to stop trying.
        self.gave_up = False

    def _read(self, position: int | None) -> _Batch | None:
        raw, end = self.ring.peek_from(position, self.batch_records)
        if not raw:
            return None
        acks: list[int] = []
        try:
            return _Batch(len(raw), end, EventRecord.unpack_all(raw), acks)  # the common case
        except ValueError:
            pass  # a command among the events, or a malformed record: one by one
        events: list[EventRecord] = []
        append = events.append
        unpack = EventRecord.unpack
        for r in raw:
            try:
                append(unpack(r))
            except ValueError as err:
                if record_magic(r) == CMD_MAGIC:
                    try:
                        acks.append(CommandRecord.unpack(r).seq)
                    except ValueError as cerr:
                        log.error("skipping a malformed command record: %s", cerr)
                else:
                    log.error("skipping a malformed event record: %s", err)
        return _Batch(len(raw), end, events, acks)

    def step(self) -> int:
        """Publish the oldest batch of the ring; the records it took (0: the ring is
        empty, or the outputs refused the batch and ``give_up()`` said to stop: then
        ``gave_up`` is set)."""
        batch, self._next = self._next, None
        if batch is None:
            batch = self._read(None)
            if batch is None:
                return 0
        if not self._publish(batch):
            return 0
        self.ring.advance_to(batch.end, batch.records)
        for seq in batch.acks:
            self.ack(seq)
        return batch.records

    def _publish(self, batch: _Batch) -> bool:
        outs = self.outs
        events = batch.events
        n = len(events)
        state = [_TODO] * len(outs)
        while True:
            for i, o in enumerate(outs):
                if state[i] != _TODO:
                    continue
                t0 = time.monotonic_ns()
                try:
                    if events:
                        o.sink.submit(events)
                except (OSError, SinkError) as err:
                    _refused(self.describe, o, n, err)
                    continue
                state[i] = _SUBMITTED
                o.busy.inc((time.monotonic_ns() - t0) // 1000)
            while _SUBMITTED in state:
                if self._next is None:
                    self._next = self._read(batch.end)  # decode ahead while it settles
                for i, o in enumerate(outs):
                    if state[i] != _SUBMITTED:
                        continue
                    t0 = time.monotonic_ns()
                    try:
                        if not o.sink.settle(0.05 if self._next is not None else 0.005):
                            continue
                    except (OSError, SinkError) as err:
                        state[i] = _TODO
                        _refused(self.describe, o, n, err)
                        continue
                    finally:
                        o.busy.inc((time.monotonic_ns() - t0) // 1000)
                    state[i] = _ACCEPTED
                    _accepted(self.describe, outs, o, n)
                self.beat()
            if _TODO not in state:
                return True
            if self.give_up():
                log.error("supervisor gone; %d event(s) could not be written", n)
                self.gave_up = True
                return False
            self.beat()
            time.sleep(RETRY_S)


class _Acks:
    """Camera commands reach the publisher once on every event ring (every analytics
    shard forwards every command); one counts as applied here once every ring has
    brought it, so a caller waiting for the change knows every event before it was
    written, whichever shard analysed the camera."""

    def __init__(self, base_seq: int, rings: int, ack: Callable[[int], None]) -> None:
        self.seen = [base_seq] * rings
        self._ack = ack

    def ack_from(self, ring: int) -> Callable[[int], None]:
        """The ack callback of ring ``ring``'s pump."""

        def ack(seq: int) -> None:
            if seq > self.seen[ring]:
                self.seen[ring] = seq
                self._ack(min(self.seen))

        return ack


def run(ctx: StageContext) -> int:
    """Publish events until stopped and drained."""
    config = ctx.config
    # One event ring per analytics shard; a camera's events all come through its
    # shard's ring, so each camera's events stay in order.
    rings = [RecordRing.attach(n) for n in (ctx.spec.event_rings or (ctx.spec.event_ring,))]
    for ring in rings:
        ring.set_reader_bell(ctx.spec.slot)  # analytics wakes this stage when it puts
    assert ctx.metrics is not None
    w: MetricWriter = ctx.metrics
    extra = _Extra()
    sinks = build_sinks(ctx, extra)
    if not [s for s in sinks if s.name != "results"]:
        log.warning(
            "no output is configured (outputs.jsonl_path is null, kafka disabled): "
            "events are discarded"
        )
    for s in sinks:
        log.info("writing events to %s", s.describe())
    outs = [
        Output(
            s,
            w.cell(m.PUBLISH_EVENTS, sink=s.name),
            w.cell(m.PUBLISH_ERRORS, sink=s.name),
            w.cell(m.PUBLISH_SECONDS, sink=s.name),
            w.cell(m.PUBLISH_HELD, sink=s.name),
        )
        for s in sinks
    ]
    batch_records = KAFKA_BATCH_RECORDS if config.kafka.enabled else BATCH_RECORDS
    snapshots = _Snapshots(ctx)
    daemon_alerts = _DaemonAlerts(ctx, snapshots.run_id)
    ctx.ack(ctx.spec.cmd_seq)
    ctx.describe(
        outputs={s.name: s.describe() for s in sinks},
        error="",
    )
    slot = ctx.slot
    # Each batch makes thousands of short-lived event tuples, so the collector runs
    # often; frozen, the objects of start-up (modules, configuration, clients) are left
    # out of its full passes, which otherwise cost about half a microsecond per event.
    gc.freeze()
    ctx.set_running()

    def housekeeping() -> None:
        for o in outs:
            try:
                o.sink.poll()
            except (OSError, SinkError) as err:
                log.error("%s: %s", o.sink.describe(), err)
        if snapshots.due():
            extra.events.append(snapshots.take())
        extra.events.extend(daemon_alerts.take())
        if extra.events:
            mine = list(extra.events)
            extra.events.clear()  # the same list: the sinks hold its append
            done = [False] * len(outs)
            _offer(ctx, outs, mine, done)  # best effort: not on the ring, not retried

    acks = _Acks(ctx.spec.cmd_seq, len(rings), ctx.ack)
    pumps = [
        Pump(
            ring,
            outs,
            batch_records,
            beat=slot.beat,
            describe=ctx.describe,
            ack=acks.ack_from(i),
            give_up=lambda: ctx.parent_gone() and ctx.draining,
        )
        for i, ring in enumerate(rings)
    ]
    try:
        # Events leave the ring only once every sink accepted them: a failed write or a
        # crash means they are written again later (at least once), never lost.
        idle = Idle(slot)
        while True:
            draining = ctx.check_drain()
            if sum(p.step() for p in pumps):
                idle.busy()
                housekeeping()
                slot.beat()
                continue
            if any(p.gave_up for p in pumps) or draining:
                break
            housekeeping()
            slot.beat()
            idle.pause()
    finally:
        if extra.events:  # alerts raised by the last batches
            _offer(ctx, outs, extra.events, [False] * len(outs))
        for s in sinks:
            try:
                s.close()
            except (OSError, SinkError) as err:
                log.error("cannot close %s: %s", s.describe(), err)
        for ring in rings:
            ring.close()
        daemon_alerts.close()
    return EXIT_OK
