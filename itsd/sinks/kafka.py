"""Kafka sink: events to the broker with confluent-kafka, the disk spool while it is away.

Producer settings: ``acks=all``, ``enable.idempotence=true`` (no duplicates from the
producer's own retries, order kept per partition), compression and a bounded linger from
the config, ``message.timeout.ms`` = ``kafka.delivery_timeout_s``; every
``kafka.producer`` setting is applied last, as given. Topic = prefix + the configured
name of the event's stream; key = camera id (one camera's events stay in one partition,
in order); headers ``event_type`` and ``schema_version``.

Acceptance (what lets the publisher take a batch off its ring): each event of the batch
is either acknowledged by the broker or durably in the spool. ``submit`` produces the
whole batch; ``settle`` flushes (what lingers is sent at once) until the producer's
queue is empty, so every event has its outcome, and spools the failed ones, in order;
``write`` is the two together. Delivery reports come only for failures
(``delivery.report.only.error``): one batch is in flight at a time, so a message that
left the queue without a failure report was acknowledged, and a success costs no Python
call. The publisher reads and decodes its next batch while one settles.

Two modes:

* direct: the spool is empty; batches go to the broker;
* spooling: the spool holds events, so new batches are appended behind them (never sent
  ahead of older events of the same camera), and ``poll`` replays the spool in rounds of
  ``kafka.replay_batch`` once a metadata request says the broker answers again. A round's
  delivered events are committed (the spool's cursor moves past them); when the spool is
  empty the sink returns to direct mode. The spool is replayed before anything new after
  a restart for the same reason.

Duplicates: a delivery report can be lost when the broker fails after writing an event
(then the event is spooled and sent again), and a crash between a replay round's
delivery and its cursor commit replays that round again. So delivery is at least once,
with at most ``replay_batch`` events sent twice per crash and the events in flight when
a broker failed.

When the spool is full (its size limit, or the disk), events that can be neither
delivered nor spooled are counted as dropped (``itsd_spool_dropped_total``), an alert
event is raised (near full at ``outputs.spool_alert_ratio``, then full) and logged; the
pipeline keeps running.

This module must never import a stage or the JSONL sink.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from itsd.config import KafkaConfig
from itsd.events import SCHEMA_VERSION
from itsd.records import EventRecord, EventType, Topic
from itsd.sinks.base import Sink
from itsd.sinks.spool import Position, Spool, SpoolFullError

log = logging.getLogger("itsd.sinks.kafka")


class Counters:
    """Callables the sink reports through (metric cells in the daemon, no-ops in tests)."""

    def __init__(self) -> None:
        noop: Callable[[int], None] = lambda n: None  # noqa: E731
        self.produced = noop
        self.delivered = noop
        self.failed = noop
        self.spooled = noop
        self.replayed = noop
        self.dropped = noop
        self.latency_us = noop
        self.gauges: Callable[[Spool, bool], None] = lambda spool, connected: None


def topic_names(cfg: KafkaConfig) -> dict[Topic, str]:
    """Topic of each stream: prefix + configured name."""
    t = cfg.topics
    names = {
        Topic.DETECTION: t.detection_events,
        Topic.ANALYTICS: t.analytics_events,
        Topic.METRICS: t.metrics_events,
        Topic.ALERT: t.alert_events,
    }
    return {k: cfg.topic_prefix + v for k, v in names.items()}


def producer_config(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings: ours first, then every ``kafka.producer`` setting as given."""
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": cfg.compression,
        "linger.ms": cfg.linger_ms,
        "message.timeout.ms": int(cfg.delivery_timeout_s * 1000),
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "client.id": "itsd",
        # Reports only for failures: a message that leaves the queue without one was
        # acknowledged (a report per success costs a Python call per event).
        "delivery.report.only.error": True,
    }
    conf.update(cfg.producer)
    return conf


class _InFlight:
    """A batch handed to the producer, waiting for the broker's answers."""

    __slots__ = ("batch", "deadline", "failures", "lost", "refused", "rejected", "t0")

    def __init__(self, batch: Sequence[EventRecord], deadline: float) -> None:
        self.batch = batch
        self.deadline = deadline  # give up waiting (purge) after this monotonic time
        self.t0 = time.monotonic_ns()
        #: (topic, key, value) of each failure report
        self.failures: list[tuple[str, bytes | None, bytes | None]] = []
        self.refused: list[int] = []  # not sent: the producer failed (offered again)
        self.rejected: list[int] = []  # refused for good (too large): dropped, counted
        self.lost = False  # reports missing: nothing known delivered


class KafkaSink(Sink):
    """Events to Kafka, the spool as the fallback (see the module docstring)."""

    name = "kafka"

    def __init__(
        self,
        cfg: KafkaConfig,
        spool: Spool,
        counters: Counters | None = None,
        alert: Callable[[EventRecord], None] | None = None,
        beat: Callable[[], None] | None = None,
        alert_ratio: float = 0.8,
        producer: Producer | None = None,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.c = counters or Counters()
        self.alert = alert
        self.beat = beat or (lambda: None)
        self.alert_ratio = alert_ratio
        self.topics = topic_names(cfg)
        self._fatal: KafkaError | None = None
        self._own_producer = producer is None
        self.producer = producer if producer is not None else self._new_producer()
        self._headers: dict[EventType, list[tuple[str, str | bytes | None]]] = {
            kind: [
                ("event_type", kind.wire_name.encode()),
                ("schema_version", SCHEMA_VERSION.encode()),
            ]
            for kind in EventType
        }
        # The same by the enums' values, for the produce loop (a tuple indexed by an int
        # costs a third of a dict lookup keyed by an enum member).
        self._topic_at = tuple(self.topics[t] for t in Topic)
        self._headers_at = tuple(self._headers[k] for k in EventType)
        self._next_try = 0.0
        self._spool_state = "ok"  # ok | near_full | full
        self._dropped_since_log = 0
        self._last_drop_log = 0.0
        self._delivered_ahead: set[Position] = set()
        self._failed_msgs: list[tuple[str, bytes | None, bytes | None]] = []
        self._inflight: _InFlight | None = None
        self.connected = spool.is_empty()
        if not self.connected:
            log.info("the spool holds %d event(s): they are replayed first", spool.pending)
        self.c.gauges(self.spool, self.connected)

    def describe(self) -> str:
        return f"kafka {self.cfg.bootstrap_servers} (spool {self.spool.dir})"

    # -- delivery ------------------------------------------------------------------------
    def _new_producer(self) -> Producer:
        conf = producer_config(self.cfg)
        rd = logging.getLogger("itsd.sinks.rdkafka")
        if not log.isEnabledFor(logging.DEBUG):
            # librdkafka logs every failed reconnect; this sink logs the outage once and
            # fatal errors arrive through error_cb.
            rd.setLevel(logging.CRITICAL)
        conf.setdefault("logger", rd)
        conf.setdefault("error_cb", self._on_error)
        conf["on_delivery"] = self._report
        return Producer(conf)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
        elif err.code() not in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            log.warning("kafka: %s", err.str())

    def _recover(self) -> bool:
        """After a fatal producer error (e.g. the broker lost the idempotent producer's
        state): drop the producer with what it still holds, start a new one. True when
        the old one reported the outcome of every message it held."""
        err, self._fatal = self._fatal, None
        log.warning("kafka producer failed (%s): starting a new one", err.str() if err else "")
        old = self.producer
        left = 1
        with contextlib.suppress(KafkaException):
            old.purge()
        with contextlib.suppress(KafkaException):
            left = _flush(old, 1.0)  # purged messages report as failed
        self.producer = self._new_producer()
        return left == 0

    def _report(self, err: KafkaError | None, msg: Any) -> None:
        """The producer's one delivery callback (served inside ``poll``/``flush``).

        With ``delivery.report.only.error`` (our default) only failures arrive here; a
        message that leaves the producer's queue without a failure report was
        acknowledged. A setting that asks for every report only costs time.
        """
        if err is not None:
            self._failed_msgs.append((msg.topic(), msg.key(), msg.value()))

    def _produce(self, batch: Sequence[EventRecord]) -> _InFlight:
        """Hand ``batch`` to the producer (no waiting for the broker)."""
        n = len(batch)
        if self._fatal is not None:
            self._recover()
        f = _InFlight(batch, time.monotonic() + self.cfg.delivery_timeout_s + 10.0)
        self._failed_msgs = f.failures
        produce = self.producer.produce
        topics = self._topic_at
        headers = self._headers_at
        i = 0
        try:
            # All arguments by position (partition -1: the partitioner's choice, no
            # callback of its own, no timestamp): a keyword argument costs the call a
            # dict, about a fifth of its time; the record unpacks as the tuple it is.
            for topic, key, payload, kind in batch:
                produce(topics[topic], payload, key, -1, None, None, 0, headers[kind])
                i += 1
        except (BufferError, KafkaException):
            self._produce_slowly(f, i)
        self.c.produced(n)
        return f

    def _produce_slowly(self, f: _InFlight, start: int) -> None:
        """The rest of a batch from ``start`` on, one event at a time, with the rare
        cases: a full local queue (serve reports, retry), an event refused for good (too
        large: dropped and counted) and a producer that failed (the rest is offered
        again)."""
        produce = self.producer.produce
        topics = self.topics
        headers = self._headers
        batch = f.batch
        for i in range(start, len(batch)):
            ev = batch[i]
            while True:
                try:
                    produce(topics[ev.topic], ev.payload, ev.key, headers=headers[ev.kind])
                    break
                except BufferError:
                    self._poll(0.05)  # the local queue is full: serve reports, then retry
                except KafkaException as err:  # a message larger than allowed, a fatal error
                    if self._fatal is None:
                        # It would be refused again after any replay: counted as lost.
                        log.error("kafka refused an event of %s (dropped): %s", ev.key, err)
                        f.rejected.append(i)
                    else:
                        f.refused.append(i)
                    break
            if self._fatal is not None:
                f.refused.extend(range(i + 1, len(batch)))
                return

    def _drain(self, f: _InFlight, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the outcome of every message of ``f``; True once
        each one is known (acknowledged, or failed with a report) or given up on.

        ``flush`` sends what lingers at once and serves the failure reports; the batch
        is settled when the producer's queue is empty (one batch is in flight at a time).
        """
        if self._fatal is None:
            try:
                left = _flush(self.producer, timeout)
            except KafkaException as err:
                self._note(err)
                left = len(self.producer)
            if left == 0 and self._fatal is None:
                return True
        if self._fatal is not None:
            # Serves the old producer's reports of what it still held; what it could
            # not report is treated as not delivered (offered again: duplicates, not loss).
            if not self._recover():
                f.lost = True
            return True
        if time.monotonic() > f.deadline:  # librdkafka should have timed them out by now
            log.error("no delivery report for some event(s): purging")
            with contextlib.suppress(KafkaException):
                self.producer.purge()
            with contextlib.suppress(KafkaException):
                if _flush(self.producer, 1.0):
                    f.lost = True
            return True
        return False

    def _outcome(self, f: _InFlight) -> list[bool]:
        """Acknowledged (True) or not, per event of a settled batch; counts them."""
        batch = f.batch
        n = len(batch)
        ok = [True] * n
        for i in f.refused:
            ok[i] = False
        if f.lost:
            # Reports missing (a producer that failed for good): nothing is known to be
            # delivered, so all of it is offered again (duplicates, not loss).
            ok = [False] * n
        elif f.failures:
            topics = self.topics
            where: dict[tuple[str, bytes, bytes], list[int]] = {}
            for i, ev in enumerate(batch):
                where.setdefault((topics[ev.topic], ev.key.encode(), ev.payload), []).append(i)
            for t, k, v in f.failures:
                idx = where.get((t, k or b"", v or b""))
                if idx:
                    ok[idx.pop(0)] = False
        rejected = len(f.rejected)
        delivered = sum(ok) - rejected
        if rejected:
            self.c.dropped(rejected)
        if delivered:
            self.c.delivered(delivered)
            self.c.latency_us(delivered * ((time.monotonic_ns() - f.t0) // 1000))
        if delivered + rejected < n:
            self.c.failed(n - delivered - rejected)
        return ok

    def _deliver(self, batch: Sequence[EventRecord]) -> list[bool]:
        """Produce ``batch`` and wait for the outcome of every event; True = acked."""
        f = self._produce(batch)
        beat_at = time.monotonic()
        while not self._drain(f, 0.5):
            now = time.monotonic()
            if now - beat_at > 1.0:
                beat_at = now
                self.beat()
        return self._outcome(f)

    def _poll(self, timeout: float) -> None:
        try:
            self.producer.poll(timeout)
        except KafkaException as err:
            self._note(err)

    def _note(self, err: KafkaException) -> None:
        kerr = err.args[0] if err.args and isinstance(err.args[0], KafkaError) else None
        if kerr is not None and kerr.fatal():
            self._fatal = kerr
        else:
            log.warning("kafka: %s", err)

    # -- the sink ------------------------------------------------------------------------
    def write(self, batch: Sequence[EventRecord]) -> None:
        self.submit(batch)
        self._settle_all()

    def submit(self, batch: Sequence[EventRecord]) -> None:
        """Start accepting ``batch``: produce it (direct mode) or spool it (spooling
        mode); ``settle`` says when the broker's answers are all in. A batch still in
        flight is settled first (one at a time: its outcome decides the mode)."""
        self._settle_all()
        if not batch:
            return
        if not self.connected:
            self._spool(batch)
            return
        self._inflight = self._produce(batch)

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the batch in flight; True once it is accepted
        (each event acknowledged, or spooled after a failure) or when none is in flight."""
        f = self._inflight
        if f is None:
            return True
        if not self._drain(f, timeout):
            return False
        self._inflight = None
        self._settled(f.batch, self._outcome(f))
        return True

    def _settle_all(self) -> None:
        beat_at = time.monotonic()
        while not self.settle(0.5):
            now = time.monotonic()
            if now - beat_at > 1.0:
                beat_at = now
                self.beat()

    def _settled(self, batch: Sequence[EventRecord], ok: list[bool]) -> None:
        """Spool what the broker did not take (and spool from now on)."""
        failed = [ev for ev, good in zip(batch, ok, strict=True) if not good]
        if failed:
            self.connected = False
            self._next_try = time.monotonic() + self.cfg.retry_s
            log.warning(
                "kafka %s: %d of %d event(s) not delivered within %.0f s: spooling to %s "
                "until the broker is back",
                self.cfg.bootstrap_servers,
                len(failed),
                len(batch),
                self.cfg.delivery_timeout_s,
                self.spool.dir,
            )
            self._spool(failed)
        self.c.gauges(self.spool, self.connected)

    def _spool(self, events: Sequence[EventRecord]) -> None:
        try:
            kept = self.spool.append([ev.pack() for ev in events])
        except SpoolFullError:
            kept = 0
            self._full("its size limit outputs.spool_max_mib")
        except OSError as err:
            kept = 0
            self._full(f"a write error: {err.strerror or err}")
        else:
            if kept < len(events):
                self._full("its size limit outputs.spool_max_mib")
        if kept:
            self.c.spooled(kept)
        lost = len(events) - kept
        if lost:
            self.c.dropped(lost)
            self._dropped_since_log += lost
            now = time.monotonic()
            if now - self._last_drop_log >= 10.0:
                self._last_drop_log = now
                log.error(
                    "spool %s full: %d event(s) could be neither delivered nor kept (lost)",
                    self.spool.dir,
                    self._dropped_since_log,
                )
                self._dropped_since_log = 0
        else:
            self._check_level()
        self.c.gauges(self.spool, self.connected)

    def _check_level(self) -> None:
        ratio = self.spool.bytes_used / max(1, self.spool.max_bytes)
        if ratio >= self.alert_ratio and self._spool_state == "ok":
            self._spool_state = "near_full"
            msg = (
                f"the event spool {self.spool.dir} is {ratio:.0%} full "
                f"({self.spool.bytes_used} of {self.spool.max_bytes} bytes) while the broker "
                f"{self.cfg.bootstrap_servers} is away"
            )
            log.warning("%s", msg)
            self._raise_alert("ALERT_TYPE_SPOOL_NEAR_FULL", "ALERT_SEVERITY_WARNING", msg)
        elif ratio < self.alert_ratio * 0.5 and self._spool_state != "ok":
            self._spool_state = "ok"

    def _full(self, why: str) -> None:
        if self._spool_state == "full":
            return
        self._spool_state = "full"
        msg = (
            f"the event spool {self.spool.dir} is full ({why}) while the broker "
            f"{self.cfg.bootstrap_servers} is away: new events are counted in "
            "itsd_spool_dropped_total and lost until the broker is back"
        )
        log.error("%s", msg)
        self._raise_alert("ALERT_TYPE_SPOOL_FULL", "ALERT_SEVERITY_CRITICAL", msg)

    def _raise_alert(self, kind: str, severity: str, msg: str) -> None:
        if self.alert is None:
            return
        from itsd.events import alert_event

        self.alert(
            alert_event(
                kind,
                severity,
                msg,
                details={
                    "spool_dir": str(self.spool.dir),
                    "spool_bytes": self.spool.bytes_used,
                    "spool_max_bytes": self.spool.max_bytes,
                },
            )
        )

    def broker_answers(self, timeout: float = 1.0) -> bool:
        """True when a metadata request gets an answer from a broker."""
        try:
            md = self.producer.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return bool(md.brokers)

    def poll(self) -> None:
        """Serve delivery callbacks; replay the spool when the broker is back."""
        self.spool.poll()
        if self.connected or self._inflight is not None:
            return
        now = time.monotonic()
        if now < self._next_try:
            return
        if not self.broker_answers():
            self._next_try = time.monotonic() + self.cfg.retry_s
            return
        budget = time.monotonic() + 1.0  # leave the ring some attention between rounds
        while not self.spool.is_empty() and time.monotonic() < budget:
            if not self._replay_round():
                self._next_try = time.monotonic() + self.cfg.retry_s
                return
            self.beat()
        if self.spool.is_empty():
            self.connected = True
            self._spool_state = "ok"
            log.info(
                "kafka %s: the spool is replayed; sending directly", self.cfg.bootstrap_servers
            )
        self.c.gauges(self.spool, self.connected)

    def _replay_round(self) -> bool:
        """Replay one round from the spool; True when all of it was delivered."""
        recs = self.spool.read(self.cfg.replay_batch)
        todo: list[tuple[Position, EventRecord]] = []
        for pos, body in recs:
            if pos in self._delivered_ahead:
                continue
            try:
                todo.append((pos, EventRecord.unpack(body)))
            except ValueError as err:
                log.error("skipping a malformed spooled event: %s", err)
                self._delivered_ahead.add(pos)  # nothing to send: treat it as done
        ok = self._deliver([ev for _, ev in todo]) if todo else []
        replayed = sum(ok)
        if replayed:
            self.c.replayed(replayed)
        # Commit the delivered prefix; remember the rest that was delivered so the next
        # round does not send it twice.
        prefix = 0
        for (pos, _), good in zip(todo, ok, strict=True):
            if good:
                self._delivered_ahead.add(pos)
        for pos, _ in recs:
            if pos in self._delivered_ahead:
                prefix += 1
            else:
                break
        if prefix:
            last = recs[prefix - 1][0]
            self.spool.commit(last, prefix)
            self._delivered_ahead = {p for p in self._delivered_ahead if _after(p, last)}
        self.c.gauges(self.spool, self.connected)
        return prefix == len(recs)

    def flush(self) -> None:
        self.spool.sync()

    def close(self) -> None:
        """Settle a batch still in flight (delivered or spooled), sync the spool and let
        the producer go."""
        try:
            self._settle_all()
            _flush(self.producer, 0.5)
        except KafkaException as err:
            log.warning("kafka: %s", err)
        finally:
            self.spool.close()


def _flush(producer: Producer, timeout: float) -> int:
    """``producer.flush`` in steps under 0.2 s, until the queue is empty or ``timeout``
    passes; the messages left. (For longer timeouts confluent-kafka flushes in chunks
    and goes on serving delivery reports after a fatal error raised its exception,
    which then surfaces as a SystemError; one short call raises the KafkaException.)"""
    end = time.monotonic() + timeout
    while True:
        left = int(producer.flush(max(0.0, min(0.1, end - time.monotonic()))))
        if left == 0 or time.monotonic() >= end:
            return left


def _after(p: Position, q: Position) -> bool:
    return (p.segment, p.offset) > (q.segment, q.offset)
