"""The frame RPCs: client frames through the pipeline, detection events back as FrameResults.

``FrameService`` serves ProcessFrame and ProcessFrameBatch (both services),
ProcessCameraStream and StreamFrames over a ``PushHub``:

* a frame is checked and decoded here (``itsd.sources.push``: JPEG/PNG or raw pixels,
  bad data -> ``ValueError`` -> INVALID_ARGUMENT), scaled to fit its camera's ring, and
  pushed; a frame without a camera id goes to the internal ad-hoc camera (untracked
  results), a frame for a ``push://`` camera to that camera (its tracker and lines);
* the answer is the frame's detection event turned into a ``FrameResult``, boxes scaled
  back to the frame the client sent, filtered by the call's ``InferenceOptions``;
* no result within the call's deadline (or ``api.result_timeout_s``) ->
  DEADLINE_EXCEEDED; a camera with all its in-flight slots taken -> RESOURCE_EXHAUSTED
  with a retry hint (``Busy``).

Every ticket a call takes is finished in a ``finally`` (answered, failed or cancelled),
so no in-flight slot is ever leaked.

This module must never import a stage, an engine or analytics, and never fabricate a
result: a detection the daemon did not report is never made up, and a value it does not
know stays unset.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import timestamp_pb2

from itsd.control._pb import common_pb2
from itsd.control.backend import ADHOC_CAMERA_ID, NotSupportedError, UnavailableError
from itsd.control.push import Busy, PushCamera, PushHub, Ticket
from itsd.sources import push as pushsrc

_log = logging.getLogger(__name__)

MAX_BATCH = 64
_I64_MAX = 2**63 - 1

_RAW_FORMATS = {
    common_pb2.PIXEL_FORMAT_RGB24: "rgb24",
    common_pb2.PIXEL_FORMAT_BGR24: "bgr24",
    common_pb2.PIXEL_FORMAT_GRAY8: "gray8",
    common_pb2.PIXEL_FORMAT_NV12: "nv12",
}
_ENCODINGS = {common_pb2.IMAGE_ENCODING_JPEG: "jpeg", common_pb2.IMAGE_ENCODING_PNG: "png"}
_VEHICLE_TYPES = {
    "car": common_pb2.VEHICLE_TYPE_CAR,
    "truck": common_pb2.VEHICLE_TYPE_TRUCK,
    "bus": common_pb2.VEHICLE_TYPE_BUS,
    "motorcycle": common_pb2.VEHICLE_TYPE_MOTORCYCLE,
    "bicycle": common_pb2.VEHICLE_TYPE_BICYCLE,
}


def short(text: str, limit: int = 64) -> str:
    """``repr(text)``, cut to ``limit`` characters with the full length said: client input
    is never echoed whole into a message or a log line."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class DeadlineError(Exception):
    """No result came back before the call's deadline (DEADLINE_EXCEEDED)."""


@dataclass(frozen=True, slots=True)
class Options:
    """InferenceOptions of a call, checked."""

    min_confidence: float = 0.0
    classes: frozenset[str] = frozenset()

    @classmethod
    def of(cls, msg: common_pb2.InferenceOptions | None) -> Options:
        if msg is None:
            return cls()
        conf = 0.0
        if msg.HasField("confidence_threshold"):
            conf = float(msg.confidence_threshold)
            if not math.isfinite(conf) or not 0.0 <= conf <= 1.0:
                raise ValueError(f"options.confidence_threshold must be in [0, 1], got {conf}")
        if len(msg.class_names) > 1000:
            raise ValueError("options.class_names: at most 1000 names")
        return cls(conf, frozenset(msg.class_names))


@dataclass(slots=True)
class Prepared:
    """A frame checked, decoded and scaled for its camera's ring."""

    camera: PushCamera
    client_frame_id: int
    pixels: np.ndarray
    #: Size of the frame the client sent (boxes are scaled back to it).
    width: int
    height: int
    capture_ns: int
    capture_set: bool


def _timestamp_ns(ns: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(ns)
    return ts


class FrameService:
    """The frame RPCs over a PushHub (see the module docstring)."""

    def __init__(self, hub: PushHub, result_timeout_s: float) -> None:
        self.hub = hub
        self.result_timeout_s = result_timeout_s

    # -- one frame --------------------------------------------------------------------
    def prepare(self, frame: common_pb2.Frame) -> Prepared:
        """Check and decode one frame; ValueError (INVALID_ARGUMENT), KeyError (NOT_FOUND),
        NotSupportedError (FAILED_PRECONDITION)."""
        camera_id = frame.camera_id
        if len(camera_id) > 64:
            raise KeyError(f"camera {short(camera_id)} is not registered")
        if camera_id == ADHOC_CAMERA_ID:
            camera_id = ""
        if frame.frame_id > _I64_MAX:
            raise ValueError(f"frame.frame_id must be below 2^63, got {frame.frame_id}")
        which = frame.WhichOneof("payload")
        if which is None:
            raise ValueError("frame has no pixels: set frame.raw or frame.encoded")
        cam = self.hub.camera(camera_id)
        if not cam.target.results:
            raise NotSupportedError(
                "outputs.detection_events is off: frames sent over gRPC would give no result"
            )
        if which == "encoded":
            enc = frame.encoded
            fmt = _ENCODINGS.get(enc.format)
            if fmt is None:
                raise ValueError("frame.encoded.format must be IMAGE_ENCODING_JPEG or _PNG")
            pixels = pushsrc.decode_encoded(enc.data, fmt)
        else:
            raw = frame.raw
            pf = _RAW_FORMATS.get(raw.pixel_format)
            if pf is None:
                raise ValueError("frame.raw.pixel_format must be set (RGB24, BGR24, GRAY8, NV12)")
            pixels = pushsrc.decode_raw(raw.data, raw.width, raw.height, pf, raw.stride)
        height, width = pixels.shape[:2]
        max_w, max_h = cam.max_size
        pixels = pushsrc.fit(pixels, max_w, max_h)
        if frame.HasField("capture_time"):
            capture_ns = frame.capture_time.ToNanoseconds()
            if not 0 < capture_ns < _I64_MAX:
                raise ValueError("frame.capture_time must be between 1970 and 2262")
            set_ = True
        else:
            capture_ns, set_ = time.time_ns(), False
        return Prepared(cam, int(frame.frame_id), pixels, width, height, capture_ns, set_)

    def push(self, p: Prepared, wait_s: float | None = None) -> Ticket:
        """Write a prepared frame into its camera's ring (Busy when it has no slot)."""
        fid = None if p.camera.target.adhoc else p.client_frame_id
        # Ad-hoc frames of unrelated clients share one camera: its clock is their arrival.
        ring_ns = time.time_ns() if p.camera.target.adhoc else p.capture_ns
        return self.hub.submit(p.camera, p.pixels, fid, ring_ns, wait_s)

    def result(
        self, p: Prepared, ticket: Ticket, options: Options, timeout_s: float
    ) -> common_pb2.FrameResult:
        """Wait for the ticket's detection event and turn it into a FrameResult."""
        doc = ticket.wait(timeout_s)
        if doc is None:
            raise DeadlineError(
                f"no result for frame {p.client_frame_id} of camera "
                f"{short(p.camera.target.camera_id)} within {timeout_s:.1f} s"
            )
        return self.to_result(doc, p, options)

    def to_result(
        self, doc: dict[str, Any], p: Prepared | None, options: Options
    ) -> common_pb2.FrameResult:
        """A FrameResult from a detection event (boxes back in the client's frame)."""
        data = doc.get("data") or {}
        size = data.get("frame") or {}
        ring_w, ring_h = int(size.get("width", 0)), int(size.get("height", 0))
        out_w, out_h = (p.width, p.height) if p is not None else (ring_w, ring_h)
        sx = out_w / ring_w if ring_w else 1.0
        sy = out_h / ring_h if ring_h else 1.0
        tracked = p is None or not p.camera.target.adhoc
        msg = common_pb2.FrameResult(
            camera_id=str(doc.get("camera_id", "")) if p is None or tracked else "",
            frame_id=p.client_frame_id if p is not None else int(doc.get("frame_id", 0)),
            frame_width=out_w,
            frame_height=out_h,
            batch_size=int(data.get("batch_size", 0)),
        )
        lat = data.get("latency_ms") or {}
        msg.inference_latency_ms = float(lat.get("inference", 0.0))
        now_ns = time.time_ns()
        msg.result_time.CopyFrom(_timestamp_ns(now_ns))
        if p is not None:
            msg.capture_time.CopyFrom(_timestamp_ns(p.capture_ns))
            msg.pipeline_latency_ms = max(0.0, (now_ns - p.capture_ns) / 1e6)
        else:
            msg.pipeline_latency_ms = float(lat.get("capture_to_analytics", 0.0))
            ts = doc.get("timestamp")
            if isinstance(ts, str):
                with contextlib.suppress(ValueError):
                    msg.capture_time.FromJsonString(ts)
        dets = sorted(data.get("detections") or (), key=lambda d: -float(d.get("confidence", 0.0)))
        for d in dets:
            name = str(d.get("class_name", ""))
            conf = float(d.get("confidence", 0.0))
            if conf < options.min_confidence or (options.classes and name not in options.classes):
                continue
            box = d.get("bbox") or {}
            det = msg.detections.add(
                class_id=-1,
                class_name=name,
                confidence=conf,
                bbox=common_pb2.BoundingBox(
                    x_min=float(box.get("x_min", 0.0)) * sx,
                    y_min=float(box.get("y_min", 0.0)) * sy,
                    x_max=float(box.get("x_max", 0.0)) * sx,
                    y_max=float(box.get("y_max", 0.0)) * sy,
                ),
                is_vehicle=bool(d.get("is_vehicle", False)),
                vehicle_type=_VEHICLE_TYPES.get(name, common_pb2.VEHICLE_TYPE_UNSPECIFIED),
            )
            if "class_id" in d:
                det.class_id = int(d["class_id"])
            track = d.get("tracking_id")
            if tracked and isinstance(track, int):
                det.tracking_id = track
        msg.vehicle_count = sum(1 for d in msg.detections if d.is_vehicle)
        return msg

    def _timeout(self, context: grpc.ServicerContext) -> float:
        left = context.time_remaining()
        limit = self.result_timeout_s
        if left is not None:
            limit = min(limit, max(0.0, left - 0.05))
        return limit

    # -- RPCs -------------------------------------------------------------------------
    def process_frame(
        self,
        frame: common_pb2.Frame,
        options: common_pb2.InferenceOptions | None,
        context: grpc.ServicerContext,
    ) -> common_pb2.FrameResult:
        opts = Options.of(options)
        p = self.prepare(frame)
        timeout = self._timeout(context)
        ticket = self.push(p, wait_s=min(1.0, timeout))
        context.add_callback(ticket.cancel)
        try:
            return self.result(p, ticket, opts, timeout)
        finally:
            ticket.finish()

    def process_batch(
        self,
        frames: Sequence[common_pb2.Frame],
        options: common_pb2.InferenceOptions | None,
        context: grpc.ServicerContext,
        status_for: Any,
    ) -> common_pb2.ProcessFrameBatchResponse:
        """Each frame gets its own outcome; frames are pipelined up to each camera's
        in-flight limit."""
        if len(frames) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} frames per batch, got {len(frames)}")
        opts = Options.of(options)
        timeout = self._timeout(context)
        deadline = time.monotonic() + timeout
        items: list[common_pb2.BatchItemResult] = [
            common_pb2.BatchItemResult(index=i) for i in range(len(frames))
        ]
        waiting: list[tuple[int, Prepared, Ticket]] = []

        def fail(i: int, exc: Exception) -> None:
            code, message = status_for(exc)
            items[i].error.CopyFrom(common_pb2.ItemStatus(code=code.value[0], message=message))

        def settle(entry: tuple[int, Prepared, Ticket]) -> None:
            i, p, t = entry
            try:
                items[i].result.CopyFrom(
                    self.result(p, t, opts, max(0.0, deadline - time.monotonic()))
                )
            except Exception as exc:
                fail(i, exc)
            finally:
                t.finish()

        cancel = threading.Event()
        context.add_callback(cancel.set)
        try:
            for i, frame in enumerate(frames):
                if cancel.is_set():
                    break
                try:
                    p = self.prepare(frame)
                except Exception as exc:
                    fail(i, exc)
                    continue
                while True:
                    try:
                        waiting.append((i, p, self.push(p, wait_s=0.0)))
                        break
                    except Busy:
                        # Our own frames fill the camera: take their results first.
                        mine = next((w for w in waiting if w[1].camera is p.camera), None)
                        if mine is not None:
                            waiting.remove(mine)
                            settle(mine)
                            continue
                        # Other calls' frames fill it: wait a little for a slot.
                        left = min(1.0, max(0.0, deadline - time.monotonic()))
                        try:
                            waiting.append((i, p, self.push(p, wait_s=left)))
                        except Exception as exc:
                            fail(i, exc)
                        break
                    except Exception as exc:
                        fail(i, exc)
                        break
            while waiting:
                settle(waiting.pop(0))
        finally:
            for _, _, t in waiting:
                t.finish()
        return common_pb2.ProcessFrameBatchResponse(items=items)

    def camera_stream(
        self,
        requests: Iterable[common_pb2.Frame],
        context: grpc.ServicerContext,
        on_error: Any,
    ) -> Iterator[common_pb2.FrameResult]:
        """Bidirectional: a reader thread pushes frames (blocking when the camera has no
        in-flight slot, so the stream is not read further: backpressure), this generator
        yields results in the order the frames came."""
        pending: queue.Queue[tuple[Prepared, Ticket] | BaseException | None] = queue.Queue()
        stop = threading.Event()
        # A ticket is queued only under this lock and only before the stop: so once the
        # response side has stopped under it, draining the queue finishes every ticket.
        handover = threading.Lock()
        context.add_callback(stop.set)

        def reader() -> None:
            try:
                for frame in requests:
                    if stop.is_set():
                        return
                    p = self.prepare(frame)
                    while not stop.is_set():
                        try:
                            ticket = self.push(p, wait_s=0.5)
                        except Busy:
                            continue  # backpressure: keep the client waiting, not reading
                        with handover:
                            if stop.is_set():
                                ticket.finish()
                                return
                            pending.put((p, ticket))
                        break
                pending.put(None)
            except BaseException as exc:  # handed to the response side
                pending.put(exc)

        thread = threading.Thread(target=reader, name="itsd-grpc-push", daemon=True)
        thread.start()
        held: list[Ticket] = []
        try:
            while True:
                try:
                    item = pending.get(timeout=0.5)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, grpc.RpcError) or stop.is_set():
                        return  # the client went away while we read
                    on_error(item)
                    return
                p, ticket = item
                held.append(ticket)
                try:
                    result = self.result(p, ticket, Options(), self.result_timeout_s)
                except Exception as exc:  # no result in time: the stream ends with it
                    on_error(exc)
                    return
                finally:
                    ticket.finish()
                    held.remove(ticket)
                yield result
        finally:
            with handover:
                stop.set()
            for t in held:
                t.finish()

            def drain() -> None:
                while True:
                    try:
                        item = pending.get_nowait()
                    except queue.Empty:
                        return
                    if isinstance(item, tuple):
                        item[1].finish()

            drain()  # the reader may be blocked on a slot these tickets hold
            thread.join(timeout=1.0)
            drain()  # tickets it made meanwhile

    def stream_results(
        self, camera_id: str, include_empty: bool, context: grpc.ServicerContext, alive: Any
    ) -> Iterator[common_pb2.FrameResult]:
        """Results of one camera as they come, until the client leaves or the camera goes."""
        sub = self.hub.subscribe(camera_id)
        try:
            while context.is_active():
                doc = sub.take(timeout=0.5)
                if doc is None:
                    if not alive():
                        return
                    continue
                data = doc.get("data") or {}
                if not include_empty and not data.get("detections"):
                    continue
                yield self.to_result(doc, None, Options())
        finally:
            self.hub.unsubscribe(sub)


__all__ = [
    "ADHOC_CAMERA_ID",
    "MAX_BATCH",
    "DeadlineError",
    "FrameService",
    "NotSupportedError",
    "Options",
    "UnavailableError",
    "short",
]
