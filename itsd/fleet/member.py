"""A node of the fleet: registry partitions assigned by Kafka become cameras of this daemon.

One thread per daemon (started by ``itsd.supervisor.service`` when ``fleet.enabled``):

1. It waits until every stage runs, then joins the consumer group ``fleet.group_id`` on
   the registry topic with ``fleet.assignor`` (cooperative-sticky by default: a
   rebalance revokes only the partitions that move, the others keep running untouched).
2. **Assigned** partitions are read from their beginning (offsets are never committed):
   the last record of each camera wins, a tombstone removes it. Once a read catches up
   (a poll returns nothing) the wanted cameras are compared with what runs, and the
   difference goes to the supervisor as ``add_camera(cfg, origin="fleet",
   persist=False)``, ``update_camera`` and ``remove_camera(id, persist=False)``: the
   same live-camera path as ``itsd streams add``, never written to cameras.json (a
   node that restarts runs only what the group gives it).
3. **Revoked** (or lost) partitions: inside the callback, so before this node rejoins
   and the rebalance can complete, their cameras are removed and the thread waits (at
   most ``fleet.revoke_timeout_s``) until each removal has taken effect. A removal takes
   effect when the publisher has written every event of the camera (the detach command
   travels behind them), so the next owner starts after the last event of this one:
   one owner at a time, events in order across a move.
4. **Capacity**: Kafka's assignors balance partitions by count and a member cannot
   refuse a partition (the classic protocol gives no say to a member beyond its
   subscription, and librdkafka has no pluggable assignor in Python), so a node keeps
   every partition it is given but runs at most ``fleet.capacity`` of their cameras:
   those already running first, then by priority (9 first) and id. The rest wait, are
   listed as ``waiting`` in the node's status record and as not running in ``itsd fleet
   status``, and start when capacity frees (a camera removed, partitions revoked).
5. Every ``fleet.status_interval_s`` (and soon after a change) the node writes its
   status record (key = node id) to ``fleet.status_topic``: partitions, cameras
   running, starting, waiting and failed (with the reason), load (cameras, frames per
   second asked) and consumer lag; a clean stop writes ``state: stopped``.

The node id (``fleet.node_id``, else the host name) is put in ``ITSD_NODE`` before the
stages start, so every event names the node that produced it (``itsd.events``).

This module must never import a stage, an engine, analytics, ``control`` or
``monitor``; it changes cameras only through the supervisor's public methods.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from itsd.config import CameraConfig, Config
from itsd.fleet.registry import RegistryError, client_config, decode, encode, ensure_topics

if TYPE_CHECKING:
    from itsd.supervisor.core import Supervisor

log = logging.getLogger("itsd.fleet")

#: Environment variable that carries the node id into the stage processes.
NODE_ENV = "ITSD_NODE"
#: Longest a read of assigned partitions waits before the wanted cameras are applied.
RECONCILE_EVERY_S = 2.0
#: Shortest pause between two status records.
STATUS_MIN_GAP_S = 1.0


class CameraHost(Protocol):
    """What a node needs of the daemon (``Supervisor`` provides it)."""

    config: Config
    stopping: bool
    ready_sent: bool

    def add_camera(
        self, cfg: CameraConfig, origin: str = ..., persist: bool = ...
    ) -> Future[Any]: ...

    def remove_camera(self, camera_id: str, persist: bool = ...) -> Future[Any]: ...

    def update_camera(self, cfg: CameraConfig) -> Future[Any]: ...


@dataclass
class Cameras:
    """The node's book of cameras (touched only by the member's thread and the futures'
    callbacks, under ``lock``)."""

    #: partition -> camera id -> last configuration read (the wanted cameras).
    owned: dict[int, dict[str, CameraConfig]] = field(default_factory=dict)
    #: Cameras handed to the supervisor (running, or their add in flight).
    running: dict[str, CameraConfig] = field(default_factory=dict)
    #: The change in flight per camera: ("add" | "update" | "remove", its future).
    pending: dict[str, tuple[str, Future[Any]]] = field(default_factory=dict)
    #: Cameras the daemon refused: id -> (encoded config, reason); retried on a new config.
    failed: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: Wanted cameras beyond capacity.
    waiting: list[str] = field(default_factory=list)
    #: Reentrant: a future that is already done runs its callback at once, lock held.
    lock: threading.RLock = field(default_factory=threading.RLock)

    def wanted(self) -> dict[str, CameraConfig]:
        out: dict[str, CameraConfig] = {}
        for part in self.owned.values():
            out.update(part)
        return out


def plan_changes(
    book: Cameras, capacity: int
) -> tuple[list[CameraConfig], list[CameraConfig], list[str], list[str]]:
    """(to add, to update, to remove, waiting) for the wanted cameras of ``book``.

    Cameras with a change in flight are left for the next round. Under capacity, running
    cameras are kept first, then priority (9 first), then id."""
    wanted = book.wanted()
    for cid in list(book.failed):
        if cid not in wanted or encode(wanted[cid]) != book.failed[cid][0]:
            del book.failed[cid]  # gone, or a new configuration: try again
    eligible = [cid for cid in wanted if cid not in book.failed]
    eligible.sort(key=lambda c: (c not in book.running, -wanted[c].priority, c))
    chosen, waiting = eligible[:capacity], eligible[capacity:]
    keep = set(chosen)
    add, update, remove = [], [], []
    for cid in sorted(book.running):
        if cid not in keep and cid not in book.pending:
            remove.append(cid)
    for cid in chosen:
        if cid in book.pending:
            continue
        if cid not in book.running:
            add.append(wanted[cid])
        elif encode(book.running[cid]) != encode(wanted[cid]):
            update.append(wanted[cid])
    return add, update, remove, waiting


class FleetMember:
    """The node's member of the fleet's consumer group (see the module docstring)."""

    def __init__(self, host: CameraHost, consumer: Any = None, producer: Any = None) -> None:
        self.host = host
        cfg = host.config
        self.fleet = cfg.fleet
        self.node = cfg.fleet.resolved_node_id()
        self.capacity = cfg.fleet_capacity()
        self.cooperative = cfg.fleet.assignor == "cooperative-sticky"
        self.book = Cameras()
        self._consumer = consumer
        self._producer = producer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dirty = threading.Event()
        self._last_status = 0.0
        self._status_due = True
        self._bad_records = 0
        self._last_err = ""
        self._last_err_at = 0.0
        #: Rebalance history for logs and tests: (monotonic time, "assign"/"revoke"/"lost", n).
        self.rebalances: list[tuple[float, str, int]] = []

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="itsd-fleet", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Leave the group (after the stages stopped: their events are written) and write
        the last status record."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.fleet.revoke_timeout_s + 10)

    def _consumer_config(self) -> dict[str, Any]:
        conf = client_config(self.host.config)
        session = self.fleet.session_timeout_ms
        conf.update(
            {
                "group.id": self.fleet.group_id,
                "client.id": f"itsd-{self.node}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": session,
                "heartbeat.interval.ms": max(100, min(3000, session // 4)),
                "partition.assignment.strategy": self.fleet.assignor,
                # Revocation waits for cameras to detach: never be thrown out for that.
                "max.poll.interval.ms": max(300_000, int(self.fleet.revoke_timeout_s * 4000)),
            }
        )
        return conf

    def _wait_ready(self) -> bool:
        while not self._stop.is_set():
            if self.host.stopping:
                return False
            if self.host.ready_sent:
                return True
            self._stop.wait(0.2)
        return False

    def _connect(self) -> bool:
        """Topics exist, producer and consumer made; False when stopping first."""
        from confluent_kafka import Consumer, Producer

        delay = 1.0
        while not self._stop.is_set() and not self.host.stopping:
            try:
                if self._consumer is None:
                    ensure_topics(self.host.config)
                    conf = client_config(self.host.config)
                    conf.update({"linger.ms": 50, "client.id": f"itsd-{self.node}"})
                    self._producer = Producer(conf)
                    self._consumer = Consumer(self._consumer_config())
                return True
            except RegistryError as err:
                log.warning("fleet: %s; trying again in %.0f s", err, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
        return False

    def _run(self) -> None:
        try:
            if not self._wait_ready() or not self._connect():
                return
            assert self._consumer is not None
            self._consumer.subscribe(
                [self.fleet.registry_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            log.info(
                "fleet: node %s joining group %s on %s (%s, capacity %d cameras)",
                self.node,
                self.fleet.group_id,
                self.fleet.registry_topic,
                self.fleet.assignor,
                self.capacity,
            )
            last_apply = time.monotonic()
            while not self._stop.is_set():
                msgs = self._consumer.consume(1000, 0.5)
                for msg in msgs:
                    self._record(msg)
                now = time.monotonic()
                if self._dirty.is_set() and (not msgs or now - last_apply > RECONCILE_EVERY_S):
                    self._dirty.clear()
                    self.reconcile()
                    last_apply = now
                self._maybe_status(now)
        except Exception:  # the daemon goes on without the fleet; the log says why
            log.exception("fleet: the node's member stopped")
        finally:
            self._leave()

    def _leave(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()  # revokes everything (the stages have drained)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._publish_status(state="stopped")
                self._producer.flush(3.0)
        log.info("fleet: node %s left the group", self.node)

    # -- records ------------------------------------------------------------------------
    def _record(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            now = time.monotonic()
            text = str(err)
            # KafkaError._PARTITION_EOF is no error; the same error is logged at most
            # once a minute (a broker that is away reports it on every poll).
            if err.code() != -191 and (text != self._last_err or now - self._last_err_at > 60):
                self._last_err, self._last_err_at = text, now
                log.warning("fleet: registry: %s", text)
            return
        part = msg.partition()
        with self.book.lock:
            cams = self.book.owned.get(part)
            if cams is None:
                return  # revoked meanwhile
            try:
                cid, cfg = decode(msg.key(), msg.value())
            except ValueError as err2:
                self._bad_records += 1
                log.warning("fleet: skipping a registry record (partition %d): %s", part, err2)
                return
            if cfg is None:
                cams.pop(cid, None)
            else:
                cams[cid] = cfg
        self._dirty.set()

    # -- rebalance callbacks (run inside consume(), on the member's thread) -------------
    def _on_assign(self, consumer: Any, parts: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        with self.book.lock:
            if not self.cooperative:
                self.book.owned = {}
            for p in parts:
                self.book.owned[p.partition] = {}
                p.offset = OFFSET_BEGINNING
        if self.cooperative:
            consumer.incremental_assign(parts)
        else:
            consumer.assign(parts)
        if parts:
            self.rebalances.append((time.monotonic(), "assign", len(parts)))
            log.info(
                "fleet: assigned partition(s) %s (reading from the beginning)",
                _ranges(p.partition for p in parts),
            )
        self._dirty.set()
        self._status_due = True

    def _on_revoke(self, consumer: Any, parts: list[Any]) -> None:
        self._give_up(parts, "revoke")
        if self.cooperative:
            consumer.incremental_unassign(parts)
        else:
            consumer.unassign()

    def _on_lost(self, consumer: Any, parts: list[Any]) -> None:
        # The group has gone on without this node (session timed out): another node may
        # run these cameras already, so they stop at once.
        self._give_up(parts, "lost")
        with contextlib.suppress(Exception):
            if self.cooperative:
                consumer.incremental_unassign(parts)
            else:
                consumer.unassign()

    def _give_up(self, parts: list[Any], why: str) -> None:
        """Detach the cameras of ``parts`` and wait (bounded) until their events are out."""
        t0 = time.monotonic()
        revoked = {p.partition for p in parts}
        with self.book.lock:
            if self.cooperative:
                gone = {cid for p in revoked for cid in self.book.owned.pop(p, {})}
            else:
                gone = {cid for cams in self.book.owned.values() for cid in cams}
                self.book.owned = {}
            waits = self._detach(gone)
        if not revoked:
            return
        deadline = t0 + self.fleet.revoke_timeout_s
        late = []
        for cid, fut in waits:
            try:
                fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except (FutureTimeout, TimeoutError):
                late.append(cid)
            except (CancelledError, Exception):  # unknown camera, stopping: it is not running
                pass
        self.rebalances.append((time.monotonic(), why, len(revoked)))
        log.info(
            "fleet: %s partition(s) %s: %d camera(s) detached in %.2f s%s",
            "revoked" if why == "revoke" else "lost",
            _ranges(revoked),
            len(waits),
            time.monotonic() - t0,
            f"; still detaching after {self.fleet.revoke_timeout_s:.0f} s: {', '.join(late)}"
            if late
            else "",
        )
        self._status_due = True
        self._dirty.set()

    def _detach(self, ids: set[str]) -> list[tuple[str, Future[Any]]]:
        """Stop cameras (lock held): cancel an add not started yet, else remove; the
        futures to wait for."""
        waits: list[tuple[str, Future[Any]]] = []
        for cid in sorted(ids):
            self.book.failed.pop(cid, None)
            if cid in self.book.waiting:
                self.book.waiting.remove(cid)
            kind, pending = self.book.pending.get(cid, ("", None))
            if kind == "add" and pending is not None and pending.cancel():
                self.book.pending.pop(cid, None)
                self.book.running.pop(cid, None)
                continue
            if kind == "remove" and pending is not None:
                waits.append((cid, pending))
                continue
            if cid not in self.book.running:
                continue
            fut = self.host.remove_camera(cid, persist=False)
            self._track(cid, fut, None, "remove")
            waits.append((cid, fut))
        return waits

    # -- applying the wanted cameras ---------------------------------------------------
    def reconcile(self) -> None:
        """Hand the difference between wanted and running cameras to the supervisor."""
        with self.book.lock:
            add, update, remove, waiting = plan_changes(self.book, self.capacity)
            if waiting != self.book.waiting and waiting:
                log.warning(
                    "fleet: %d camera(s) wait: capacity is %d cameras (%s)",
                    len(waiting),
                    self.capacity,
                    ", ".join(waiting[:10]) + (" ..." if len(waiting) > 10 else ""),
                )
            self.book.waiting = waiting
            for cid in remove:
                self._track(cid, self.host.remove_camera(cid, persist=False), None, "remove")
            for cfg in update:
                self._track(cfg.id, self.host.update_camera(cfg), cfg, "update")
            for cfg in add:
                fut = self.host.add_camera(cfg, origin="fleet", persist=False)
                self._track(cfg.id, fut, cfg, "add")
        if add or update or remove:
            log.info(
                "fleet: %d camera(s) to start, %d to change, %d to stop",
                len(add),
                len(update),
                len(remove),
            )
            self._status_due = True

    def _track(self, cid: str, fut: Future[Any], cfg: CameraConfig | None, kind: str) -> None:
        """Book a change in flight (lock held); ``cfg`` None for a removal."""
        book = self.book
        book.pending[cid] = (kind, fut)
        if cfg is not None:
            book.running[cid] = cfg
        else:
            book.running.pop(cid, None)

        def done(f: Future[Any]) -> None:
            with book.lock:
                if book.pending.get(cid, ("", None))[1] is f:
                    del book.pending[cid]
                if f.cancelled() or cfg is None:
                    pass
                elif (err := f.exception()) is not None and not _still_registered(err):
                    book.running.pop(cid, None)
                    book.failed[cid] = (encode(cfg), f"{type(err).__name__}: {err}")
                    log.error("fleet: camera %s not started: %s", cid, err)
            self._dirty.set()
            self._status_due = True

        fut.add_done_callback(done)

    # -- status -------------------------------------------------------------------------
    def status_record(self, state: str = "running") -> dict[str, Any]:
        """This node's status record (see ``itsd.fleet.status``)."""
        with self.book.lock:
            running = sorted(
                c for c in self.book.running if self.book.pending.get(c, ("",))[0] != "add"
            )
            starting = sorted(c for c, (k, _) in self.book.pending.items() if k == "add")
            fps = sum(self.host.config.camera_fps(self.book.running[c]) for c in running)
            rec: dict[str, Any] = {
                "node": self.node,
                "state": state,
                "time": round(time.time(), 3),
                "interval_s": self.fleet.status_interval_s,
                "group": self.fleet.group_id,
                "pid": os.getpid(),
                "capacity": self.capacity,
                "partitions": sorted(self.book.owned),
                "cameras": running,
                "starting": starting,
                "waiting": list(self.book.waiting),
                "failed": {cid: why for cid, (_, why) in sorted(self.book.failed.items())},
                "load": {"cameras": len(running), "fps": round(fps, 2)},
                "lag": self._lag(),
                "bad_records": self._bad_records,
            }
        return rec

    def _lag(self) -> int | None:
        """Registry records not read yet on the assigned partitions (as the broker
        reports its end offsets), None when unknown."""
        c = self._consumer
        if c is None or not self.book.owned:
            return 0 if c is not None else None
        try:
            from confluent_kafka import TopicPartition

            parts = [TopicPartition(self.fleet.registry_topic, p) for p in self.book.owned]
            total = 0
            for tp in c.position(parts):
                lo, hi = c.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and hi >= 0:
                    total += max(0, hi - tp.offset)
                elif hi > 0:
                    total += hi - max(lo, 0)
            return total
        except Exception:
            return None

    def _publish_status(self, state: str = "running") -> None:
        if self._producer is None:
            return
        value = json.dumps(self.status_record(state), separators=(",", ":")).encode()
        self._producer.produce(self.fleet.status_topic, key=self.node.encode(), value=value)
        self._producer.poll(0)

    def _maybe_status(self, now: float) -> None:
        gap = now - self._last_status
        if gap >= self.fleet.status_interval_s or (self._status_due and gap >= STATUS_MIN_GAP_S):
            self._last_status = now
            self._status_due = False
            try:
                self._publish_status()
            except Exception as err:  # BufferError, KafkaException: next time
                log.warning("fleet: cannot write the status record: %s", err)


def _still_registered(err: BaseException) -> bool:
    """An add that timed out waiting for a stage stays registered (it applies later)."""
    return type(err).__name__ == "ChangeTimeoutError" and "stopping" not in str(err)


def _ranges(parts: Any) -> str:
    """``0-3,7,9-10`` for a set of partition numbers."""
    ps = sorted(set(parts))
    out: list[str] = []
    i = 0
    while i < len(ps):
        j = i
        while j + 1 < len(ps) and ps[j + 1] == ps[j] + 1:
            j += 1
        out.append(str(ps[i]) if i == j else f"{ps[i]}-{ps[j]}")
        i = j + 1
    return ",".join(out) or "-"


def start_member(sup: Supervisor) -> FleetMember | None:
    """Name this node in events (``ITSD_NODE`` for the stages); when ``fleet.enabled``,
    start the member and register its stop with the supervisor."""
    cfg = sup.config
    os.environ[NODE_ENV] = cfg.fleet.resolved_node_id()
    if not cfg.fleet.enabled:
        return None
    member = FleetMember(sup)
    member.start()
    sup.add_service(member.stop)
    return member
