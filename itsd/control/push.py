"""Frames pushed over gRPC into the pipeline, and their results back: the ``PushHub``.

A ``push://`` camera has no decoder: the control API is the single writer of its frame
ring. ``PushHub`` keeps one ``PushCamera`` per camera that got frames (its ring mapped,
a lock that serialises every write, so the ring keeps exactly one writer whatever the
number of gRPC threads, and a semaphore of ``api.max_inflight_frames``), and one reader
thread on the results ring, where the publisher's results sink copies detection events.

Flow of one frame: ``submit`` takes an in-flight slot of its camera (waiting at most
``wait_s``: ``Busy`` when none frees up, which the servicer answers RESOURCE_EXHAUSTED
with a retry hint), registers a ``Ticket`` under (camera, frame id), writes the pixels
into the ring (inference reads push cameras' rings oldest first and, with fewer frames
in flight than ring slots, no frame is ever overwritten) and returns the ticket. The
reader thread parses the detection event of that (camera, frame id), hands it to the
ticket and frees the slot at once. A ticket that is never answered (deadline, a client
that went away) is finished by its caller: slot freed, entry removed. No path keeps a
slot: every ``submit`` that returns a ticket is paired with ``Ticket.finish`` in a
``finally`` of the servicer.

The reader also feeds ``StreamFrames`` subscribers (bounded queues, newest result wins)
and keeps a window of the pipeline's latencies and batch sizes read from every
detection event, for ``GetEngineMetrics`` percentiles.

This module must never import a stage, an engine or analytics, never decode images
(``itsd.sources.push`` does) and never block the results ring's writer.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from itsd.control.backend import PushBackend, PushTarget
from itsd.records import EventRecord, EventType
from itsd.runtime import metrics as m
from itsd.runtime.metrics import MetricWriter
from itsd.shm import FrameRing, RecordRing
from itsd.shm.cells import CellTable
from itsd.shm.frame_ring import PIXEL_FORMAT_RGB24

_log = logging.getLogger(__name__)

#: Detection events kept for the latency percentiles (and at most this many seconds).
STATS_WINDOW = 4096
STATS_WINDOW_S = 60.0
#: Results kept per StreamFrames subscriber when the client reads slower than they come.
SUBSCRIBER_QUEUE = 64
#: How often the reader unmaps the rings of push cameras that were removed.
PRUNE_S = 2.0
#: Polling period of the results ring while a pushed frame or a StreamFrames client waits.
_BUSY_POLL_S = 0.001
#: ... and while nobody waits (detection events then only feed the latency statistics).
_IDLE_POLL_S = 0.05
_LATENCY_RE = re.compile(
    rb'"latency_ms":\{"inference":(-?[0-9.eE+-]+),"capture_to_analytics":(-?[0-9.eE+-]+)\},'
    rb'"batch_size":([0-9]+)'
)


class Busy(Exception):  # noqa: N818 - a state, not a failure of the daemon
    """The camera has its maximum of frames in flight; retry after ``retry_s``."""

    def __init__(self, message: str, retry_s: float) -> None:
        super().__init__(message)
        self.retry_s = retry_s


class FrameInFlight(ValueError):  # noqa: N818
    """A frame with the same (camera, frame id) is still waiting for its result."""


class CameraGone(KeyError):  # noqa: N818
    """The camera was removed (or replaced) while frames were being pushed."""


@dataclass
class Ticket:
    """One pushed frame waiting for its detection event."""

    camera_id: str
    frame_id: int
    pushed_at: float
    _release: Callable[[], None]
    _forget: Callable[[Ticket], None]
    event: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    _released: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, doc: dict[str, Any]) -> None:
        """The result arrived: keep it, free the in-flight slot, wake the waiter."""
        self.result = doc
        self.release()
        self.event.set()

    def release(self) -> None:
        """Free the camera's in-flight slot (once)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._release()

    def wait(self, timeout: float) -> dict[str, Any] | None:
        """The detection event, or None when it did not come within ``timeout``."""
        self.event.wait(max(0.0, timeout))
        return self.result

    def cancel(self) -> None:
        """Wake the waiter without a result (the client went away)."""
        self.event.set()

    def finish(self) -> None:
        """Done with the ticket, answered or not: slot freed, entry removed (idempotent)."""
        self.release()
        self._forget(self)


class PushCamera:
    """The single writer of one push camera's frame ring (every write under ``lock``)."""

    def __init__(self, target: PushTarget, inflight: int) -> None:
        self.target = target
        self.ring = FrameRing.attach(target.ring, populate=False)
        try:
            self.ring.recover_writer()  # nobody else writes this ring
            self.limit = max(1, min(inflight, self.ring.slot_count - 1))
            self.inflight = threading.BoundedSemaphore(self.limit)
            self.lock = threading.Lock()
            self.next_id = itertools.count()
            self.closed = False
            self._table: CellTable | None = None
            self._cells: dict[str, Any] = {}
            if target.cells:
                self._table = CellTable.attach(target.cells)
                w = MetricWriter(self._table)
                cam = target.camera_id
                self._cells = {
                    "frames": w.cell(m.DECODE_FRAMES, camera=cam),
                    "written": w.cell(m.DECODE_WRITTEN, camera=cam),
                    "last": w.cell(m.DECODE_LAST_FRAME, camera=cam),
                }
        except BaseException:
            self.ring.close()
            raise

    @property
    def max_size(self) -> tuple[int, int]:
        """Largest frame the ring takes (width, height)."""
        return self.ring.max_width, self.ring.max_height

    def write(self, pixels: np.ndarray, frame_id: int, capture_ns: int) -> bool:
        """Copy an RGB frame into the ring and publish it; False when no slot was free."""
        with self.lock:
            if self.closed:
                raise CameraGone(f"camera {self.target.camera_id!r} was removed")
            cells = self._cells
            if cells:
                cells["frames"].inc()
            ok = self.ring.write(
                pixels,
                frame_id=frame_id,
                capture_ts_ns=capture_ns,
                pts=frame_id,
                pixel_format=PIXEL_FORMAT_RGB24,
            )
            if ok and cells:
                cells["written"].inc()
                cells["last"].set(time.time())
            return ok

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(OSError, ValueError):
                self.ring.close()
            if self._table is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._table.close()


class _Subscriber:
    """A StreamFrames client: results of one camera, newest kept when it reads slowly."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.items: collections.deque[dict[str, Any]] = collections.deque(maxlen=SUBSCRIBER_QUEUE)
        self.cond = threading.Condition()
        self.missed = 0

    def offer(self, doc: dict[str, Any]) -> None:
        with self.cond:
            if len(self.items) == self.items.maxlen:
                self.missed += 1
            self.items.append(doc)
            self.cond.notify()

    def take(self, timeout: float) -> dict[str, Any] | None:
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
            return self.items.popleft() if self.items else None


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(values.max()),
    }


class _Stats:
    """Latencies and batch sizes of recent detection events (every camera)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: collections.deque[tuple[float, float, float, int]] = collections.deque(
            maxlen=STATS_WINDOW
        )
        self.push_ms: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=STATS_WINDOW
        )

    def add(self, payload: bytes) -> None:
        # The latency block sits at the end of a detection event: search from there.
        start = payload.rfind(b'"latency_ms"')
        match = _LATENCY_RE.match(payload, start) if start >= 0 else None
        if match is None:
            return
        row = (time.monotonic(), float(match[1]), float(match[2]), int(match[3]))
        with self.lock:
            self.rows.append(row)

    def add_push(self, ms: float) -> None:
        with self.lock:
            self.push_ms.append((time.monotonic(), ms))

    def counters(self) -> dict[str, float]:
        """Percentiles over the window, as ``MetricsSnapshot.counters`` keys."""
        horizon = time.monotonic() - STATS_WINDOW_S
        with self.lock:
            rows = [r for r in self.rows if r[0] >= horizon]
            push = [p[1] for p in self.push_ms if p[0] >= horizon]
        out: dict[str, float] = {}
        if rows:
            arr = np.asarray(rows, dtype=np.float64)
            for prefix, col in (("inference_latency", 1), ("pipeline_latency", 2)):
                for k, v in _percentiles(arr[:, col]).items():
                    out[f"{prefix}_{k}"] = v
            sizes = arr[:, 3]
            out["batch_size_min"] = float(sizes.min())
            out["batch_size_max"] = float(sizes.max())
            out["batch_size_last"] = float(sizes[-1])
            span = rows[-1][0] - rows[0][0]
            if span > 0:
                out["results_per_s"] = (len(rows) - 1) / span
        for k, v in _percentiles(np.asarray(push, dtype=np.float64)).items():
            out[f"push_result_latency_{k}"] = v
        return out


class PushHub:
    """Pushed frames in, results out (see the module docstring)."""

    def __init__(self, backend: PushBackend, inflight: int, *, wait_s: float = 1.0) -> None:
        self.backend = backend
        self.inflight = inflight
        self.wait_s = wait_s
        self.stats = _Stats()
        self._lock = threading.Lock()
        self._cameras: dict[str, PushCamera] = {}
        self._tickets: dict[tuple[str, int], Ticket] = {}
        self._subs: dict[str, list[_Subscriber]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()  # a frame or a subscriber came: poll fast again
        self._thread: threading.Thread | None = None
        self.results_read = 0
        self.results_unmatched = 0
        #: (capacity bytes, used bytes, records put) of the results ring, kept by its reader.
        self.ring_stats: tuple[int, int, int] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the results reader (when the daemon has a results ring)."""
        name = self.backend.results_ring()
        if not name:
            return
        ring = RecordRing.attach(name)
        self.ring_stats = (ring.capacity_bytes, ring.used_bytes(), ring.stats().put)
        self._thread = threading.Thread(
            target=self._run, args=(ring,), name="itsd-grpc-results", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the reader, wake every waiter, unmap the rings."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            tickets = list(self._tickets.values())
            cams = list(self._cameras.values())
            subs = [s for group in self._subs.values() for s in group]
            self._cameras.clear()
        for t in tickets:
            t.cancel()
        for s in subs:
            with s.cond:
                s.cond.notify_all()
        for c in cams:
            c.close()

    # -- cameras ------------------------------------------------------------------------
    def camera(self, camera_id: str) -> PushCamera:
        """The writer of a push camera ("" = the ad-hoc camera); KeyError, NotSupportedError."""
        target = (
            self.backend.adhoc_target() if not camera_id else self.backend.push_target(camera_id)
        )
        with self._lock:
            cam = self._cameras.get(target.camera_id)
            if cam is not None and cam.target.key == target.key and not cam.closed:
                return cam
            if cam is not None:  # the camera was replaced: its old ring is gone
                cam.close()
            cam = PushCamera(target, self.inflight)
            self._cameras[target.camera_id] = cam
            return cam

    def pending(self) -> int:
        """Frames waiting for their result, all cameras (for tests and health)."""
        with self._lock:
            return len(self._tickets)

    def slots_taken(self) -> int:
        """In-flight slots held, all cameras (0 when idle: a slot that stays taken leaked)."""
        with self._lock:
            cams = list(self._cameras.values())
        return sum(c.limit - c.inflight._value for c in cams)

    def counters(self) -> dict[str, float]:
        """Latency percentiles and the state of the push path, as metrics counters."""
        out = self.stats.counters()
        out["push_frames_waiting"] = float(self.pending())
        out["push_slots_taken"] = float(self.slots_taken())
        out["results_read"] = float(self.results_read)
        return out

    # -- frames -------------------------------------------------------------------------
    def submit(
        self,
        cam: PushCamera,
        pixels: np.ndarray,
        frame_id: int | None,
        capture_ns: int,
        wait_s: float | None = None,
    ) -> Ticket:
        """Write a frame into the camera's ring; the ticket gets its result.

        ``frame_id`` None takes the camera's next internal id (the ad-hoc camera). Raises
        ``Busy`` when no in-flight slot frees up within ``wait_s`` (default: the hub's),
        ``FrameInFlight`` for a (camera, frame id) already waiting.
        """
        limit = self.wait_s if wait_s is None else wait_s
        if not cam.inflight.acquire(timeout=max(0.0, limit)):
            raise Busy(
                f"camera {cam.target.camera_id!r} has {cam.limit} frame(s) waiting for "
                "results (api.max_inflight_frames); retry shortly",
                retry_s=0.05,
            )
        try:
            fid = next(cam.next_id) if frame_id is None else frame_id
            ticket = Ticket(
                cam.target.camera_id, fid, time.monotonic(), cam.inflight.release, self._forget
            )
            key = (ticket.camera_id, fid)
            with self._lock:
                if key in self._tickets:
                    raise FrameInFlight(
                        f"frame_id {fid} of camera {ticket.camera_id!r} is already waiting "
                        "for its result"
                    )
                self._tickets[key] = ticket
            self._wake.set()
        except BaseException:
            cam.inflight.release()
            raise
        try:
            if not cam.write(pixels, fid, capture_ns):
                raise Busy(
                    f"camera {cam.target.camera_id!r}: no free slot in its frame ring; retry",
                    retry_s=0.05,
                )
        except BaseException:
            ticket.finish()
            raise
        return ticket

    def _forget(self, ticket: Ticket) -> None:
        with self._lock:
            key = (ticket.camera_id, ticket.frame_id)
            if self._tickets.get(key) is ticket:
                del self._tickets[key]
        if ticket.result is not None:
            self.stats.add_push((time.monotonic() - ticket.pushed_at) * 1000.0)

    # -- StreamFrames -------------------------------------------------------------------
    def subscribe(self, camera_id: str) -> _Subscriber:
        sub = _Subscriber(camera_id)
        with self._lock:
            self._subs.setdefault(camera_id, []).append(sub)
        self._wake.set()
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            group = self._subs.get(sub.camera_id, [])
            if sub in group:
                group.remove(sub)
            if not group:
                self._subs.pop(sub.camera_id, None)

    # -- the results reader -------------------------------------------------------------
    def prune(self) -> list[str]:
        """Unmap the rings of cameras removed (or replaced) since their frames came, so
        their shared memory is freed; returns their ids."""
        with self._lock:
            cams = list(self._cameras.items())
        gone = []
        for cid, cam in cams:
            try:
                target = self.backend.push_target(cid)  # never creates a camera
                alive = target.key == cam.target.key
            except Exception:  # unknown now, or no longer a push camera
                alive = False
            if not alive:
                with self._lock:
                    if self._cameras.get(cid) is cam:
                        del self._cameras[cid]
                cam.close()
                gone.append(cid)
        return gone

    def _run(self, ring: RecordRing) -> None:
        next_prune = time.monotonic() + PRUNE_S
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_S
                    self.ring_stats = (ring.capacity_bytes, ring.used_bytes(), ring.stats().put)
                    try:
                        self.prune()
                    except Exception as exc:  # never stop reading results
                        _log.warning("cannot check the push cameras: %s", exc)
                raw = ring.get_many(256)
                if not raw:
                    with self._lock:
                        waiting = bool(self._tickets or self._subs)
                    if self._wake.wait(_BUSY_POLL_S if waiting else _IDLE_POLL_S):
                        self._wake.clear()
                    continue
                for data in raw:
                    try:
                        self._dispatch(data)
                    except Exception as exc:  # one bad record must not stop the reader
                        _log.warning("skipping a malformed result record: %s", exc)
        finally:
            ring.close()

    def _dispatch(self, data: bytes) -> None:
        ev = EventRecord.unpack(data)
        if ev.kind is not EventType.DETECTION:
            return
        self.results_read += 1
        self.stats.add(ev.payload)
        with self._lock:
            wanted = ev.key in self._subs or any(k[0] == ev.key for k in self._tickets)
        if not wanted:
            return
        doc = json.loads(ev.payload)
        key = (ev.key, int(doc.get("frame_id", -1)))
        with self._lock:
            ticket = self._tickets.get(key)
            subs = list(self._subs.get(ev.key, ()))
        if ticket is not None:
            ticket.answer(doc)
        elif not subs:
            self.results_unmatched += 1
        for s in subs:
            s.offer(doc)
