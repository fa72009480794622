"""Publisher stage: takes events from the event ring and fans them out to the sinks.

Sinks (``itsd.sinks``): the JSONL file (``outputs.jsonl_path``, rotated by size with
``outputs.jsonl_max_mib``) and Kafka (``kafka.enabled``) with its disk spool
(``outputs.spool_dir``). Each batch is offered to every sink; the batch leaves the ring
only when every sink accepted it (written; delivered to the broker or durably spooled).
A sink that fails keeps the batch on the ring and is retried alone every second with an
error in the log (the sinks that accepted it never see it twice). Meanwhile the ring
fills, back-pressure reaches analytics and inference and, in the end, the frame rings
(which drop the oldest frames, counted). A crash between a sink's acceptance and taking
the batch off the ring gives that batch again on restart (at least once, never lost).
On a stop request (sent only after analytics has exited) the stage drains the ring
through the sinks (the Kafka sink spools what the broker does not take) and closes them
(fsync).

Besides the ring's events the stage publishes two kinds of its own: a metrics snapshot
every ``outputs.metrics_interval_s`` (topic metrics_events; the metrics of every stage of
this run, read from their cell tables) and the alerts the sinks raise (a spool near full
or full, topic alert_events).

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
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from itsd.config import Config
from itsd.errors import EXIT_OK
from itsd.events import metrics_snapshot_event
from itsd.records import CMD_MAGIC, CommandRecord, EventRecord, record_magic
from itsd.runtime import metrics as m
from itsd.runtime.metrics import Cell, MetricWriter, read_table
from itsd.shm import RecordRing
from itsd.shm.cells import CellTable
from itsd.shm.segments import parse_segment_name, shm_dir
from itsd.sinks import Sink, SinkError
from itsd.sinks.jsonl import JsonlSink
from itsd.stages.runtime import IDLE_SLEEP_S, StageContext

log = logging.getLogger("itsd.publish")

BATCH_RECORDS = 512
#: Batches are larger with Kafka: each one waits for the broker's acknowledgements.
KAFKA_BATCH_RECORDS = 4096
RETRY_S = 1.0


@dataclass
class _Out:
    """A sink with its cells and its failure state."""

    sink: Sink
    written: Cell
    errors: Cell
    busy: Cell
    held: Cell
    failing: bool = False
    last_log: float = 0.0


@dataclass
class _Extra:
    """Events the stage makes itself (alerts, metrics snapshots), waiting for the sinks."""

    events: list[EventRecord] = field(default_factory=list)


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
    return sinks


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
                            samples.append((s.defn.name, dict(s.labels), s.value))
                finally:
                    table.close()
        return metrics_snapshot_event(samples, host=self.host)


def _offer(
    ctx: StageContext, outs: Sequence[_Out], events: Sequence[EventRecord], done: list[bool]
) -> None:
    """Offer ``events`` to each sink that has not accepted them yet; mark who took them."""
    for i, o in enumerate(outs):
        if done[i]:
            continue
        t0 = time.monotonic_ns()
        try:
            if events:
                o.sink.write(events)
        except (OSError, SinkError) as err:
            o.errors.inc()
            o.held.set(len(events))
            now = time.monotonic()
            if not o.failing:
                o.failing = True
                ctx.describe(
                    error=f"cannot write events to {o.sink.describe()}: {err}",
                    error_at=time.time(),
                )
            if now - o.last_log > 10.0:
                o.last_log = now
                log.error(
                    "cannot write %d event(s) to %s: %s; holding them, retrying every %.0f s",
                    len(events),
                    o.sink.describe(),
                    err,
                    RETRY_S,
                )
            continue
        done[i] = True
        o.busy.inc((time.monotonic_ns() - t0) // 1000)
        o.written.inc(len(events))
        if o.failing:
            o.failing = False
            o.held.set(0)
            if not any(x.failing for x in outs):
                ctx.describe(error="")
            log.info("writing to %s works again", o.sink.describe())


def run(ctx: StageContext) -> int:
    """Publish events until stopped and drained."""
    config = ctx.config
    ring = RecordRing.attach(ctx.spec.event_ring)
    assert ctx.metrics is not None
    w: MetricWriter = ctx.metrics
    extra = _Extra()
    sinks = build_sinks(ctx, extra)
    if not sinks:
        log.warning(
            "no output is configured (outputs.jsonl_path is null, kafka disabled): "
            "events are discarded"
        )
    for s in sinks:
        log.info("writing events to %s", s.describe())
    outs = [
        _Out(
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
    ctx.ack(ctx.spec.cmd_seq)
    ctx.describe(
        outputs={s.name: s.describe() for s in sinks},
        error="",
    )
    slot = ctx.slot
    ctx.set_running()

    def housekeeping() -> None:
        for o in outs:
            try:
                o.sink.poll()
            except (OSError, SinkError) as err:
                log.error("%s: %s", o.sink.describe(), err)
        if snapshots.due():
            extra.events.append(snapshots.take())
        if extra.events:
            mine = list(extra.events)
            extra.events.clear()  # the same list: the sinks hold its append
            done = [False] * len(outs)
            _offer(ctx, outs, mine, done)  # best effort: not on the ring, not retried

    try:
        # Events leave the ring only once every sink accepted them: a failed write or a
        # crash means they are written again later (at least once), never lost.
        while True:
            draining = ctx.check_drain()
            raw = ring.peek_many(batch_records)
            if not raw:
                if draining:
                    break
                housekeeping()
                slot.beat()
                time.sleep(IDLE_SLEEP_S)
                continue
            pending: list[EventRecord] = []
            acks: list[int] = []
            for r in raw:
                if record_magic(r) == CMD_MAGIC:
                    try:
                        acks.append(CommandRecord.unpack(r).seq)
                    except ValueError as err:
                        log.error("skipping a malformed command record: %s", err)
                    continue
                try:
                    pending.append(EventRecord.unpack(r))
                except ValueError as err:
                    log.error("skipping a malformed event record: %s", err)
            done = [False] * len(outs)
            gave_up = False
            while True:
                _offer(ctx, outs, pending, done)
                if all(done):
                    break
                if ctx.parent_gone() and ctx.draining:
                    log.error("supervisor gone; %d event(s) could not be written", len(pending))
                    gave_up = True
                    break
                slot.beat()
                time.sleep(RETRY_S)
            if gave_up:
                break
            ring.advance(len(raw))
            for seq in acks:
                ctx.ack(seq)
            housekeeping()
            slot.beat()
    finally:
        if extra.events:  # alerts raised by the last batches
            _offer(ctx, outs, extra.events, [False] * len(outs))
        for s in sinks:
            try:
                s.close()
            except (OSError, SinkError) as err:
                log.error("cannot close %s: %s", s.describe(), err)
        ring.close()
    return EXIT_OK
