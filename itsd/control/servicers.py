"""gRPC servicers of the itsd.v1 API: backend snapshots in, protobuf messages out.

Three servicers, one per service of proto/itsd/v1: ``VisionCoreServicer``,
``StreamingServicer`` and ``AnalyticsServicer``. Each reads the daemon through a
``ControlBackend`` and maps its plain snapshots to the generated messages.

Errors raised by the backend become gRPC status codes with the exception's message:
``NotSupportedError`` -> FAILED_PRECONDITION, ``KeyError`` -> NOT_FOUND,
``StreamExistsError`` -> ALREADY_EXISTS, ``ValueError`` -> INVALID_ARGUMENT, anything
else -> INTERNAL (and a log line with the traceback).

The frame RPCs (ProcessFrame, ProcessFrameBatch, ProcessCameraStream, StreamFrames)
are served by ``itsd.control.frames`` when the backend is also a ``PushBackend``;
otherwise they answer UNIMPLEMENTED with a message that says so. GetAggregatedMetrics
is served when the backend is also an ``AggregatesBackend`` (the daemon's store; messages
in ``itsd.control.aggregates``), FAILED_PRECONDITION otherwise.

A failed call is logged in one line (method, peer, code, message; no traceback) except
INTERNAL, which logs its traceback. Messages never echo unbounded client input: ids are
cut (``frames.short``) and every message to the client is at most ``MAX_MESSAGE``
characters, so a huge camera id gives NOT_FOUND, not a status too large to send.

This module must never fabricate a result (no placeholder detections, no made-up
values: an unknown optional value stays unset, a counter the backend does not report is
0 as the API documents), never import a stage, an engine or analytics, and never touch
pixels itself (``itsd.control.frames`` does, for the frames clients send).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from itsd.control._pb import (
    analytics_pb2,
    common_pb2,
    streaming_pb2,
    vision_pb2,
)
from itsd.control.backend import (
    AggregatesBackend,
    CameraCounter,
    ControlBackend,
    Counter,
    HealthStatus,
    LineCounts,
    NotSupportedError,
    StageState,
    StreamExistsError,
    StreamInfo,
    StreamState,
    UnavailableError,
)
from itsd.control.backend import CameraHealth as BackendCameraHealth
from itsd.control.backend import HealthSnapshot as BackendHealth
from itsd.control.backend import MetricsSnapshot as BackendMetrics
from itsd.control.backend import TrafficSnapshot as BackendTraffic
from itsd.control.frames import ADHOC_CAMERA_ID, DeadlineError, FrameService, short
from itsd.control.push import Busy
from itsd.redact import redact_url

_log = logging.getLogger(__name__)

_Self = TypeVar("_Self")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

#: Camera ids accepted by RegisterStream (documented on StreamConfig.camera_id).
CAMERA_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Longest status message sent to a client.
MAX_MESSAGE = 1000
#: Trailing metadata key of gRPC's retry pushback: milliseconds to wait before retrying.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"

_NOT_SERVED_FRAMES = (
    "{method} is not implemented yet: this daemon does not take frames over gRPC; it "
    "decodes the camera streams it is configured with and publishes their detections as "
    "events (Kafka or JSONL)"
)
_NOT_SERVED_STREAM = (
    "{method} is not implemented yet: this daemon does not stream results over gRPC; "
    "read the detection events it publishes (Kafka or JSONL) instead"
)

_HEALTH_STATUS = {
    HealthStatus.SERVING.value: vision_pb2.SERVING_STATUS_SERVING,
    HealthStatus.DEGRADED.value: vision_pb2.SERVING_STATUS_DEGRADED,
    HealthStatus.NOT_SERVING.value: vision_pb2.SERVING_STATUS_NOT_SERVING,
}
_STAGE_STATE = {
    StageState.STARTING.value: vision_pb2.STAGE_STATE_STARTING,
    StageState.RUNNING.value: vision_pb2.STAGE_STATE_RUNNING,
    StageState.STALLED.value: vision_pb2.STAGE_STATE_STALLED,
    StageState.BACKOFF.value: vision_pb2.STAGE_STATE_BACKOFF,
    StageState.STOPPING.value: vision_pb2.STAGE_STATE_STOPPING,
    StageState.STOPPED.value: vision_pb2.STAGE_STATE_STOPPED,
    StageState.FAILED.value: vision_pb2.STAGE_STATE_FAILED,
}
_STREAM_STATE = {
    StreamState.STARTING.value: streaming_pb2.STREAM_STATE_STARTING,
    StreamState.RUNNING.value: streaming_pb2.STREAM_STATE_RUNNING,
    StreamState.RECONNECTING.value: streaming_pb2.STREAM_STATE_RECONNECTING,
    StreamState.STOPPED.value: streaming_pb2.STREAM_STATE_STOPPED,
    StreamState.FAILED.value: streaming_pb2.STREAM_STATE_FAILED,
}


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("grpc.ServicerContext.abort returned")  # abort always raises


def _message(exc: BaseException) -> str:
    # KeyError's str() is the repr of its argument; show the text itself.
    if exc.args and isinstance(exc.args[0], str) and exc.args[0]:
        return exc.args[0]
    return str(exc) or type(exc).__name__


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message a backend exception maps to (message cut to
    ``MAX_MESSAGE`` characters)."""
    code, message = _status_for(exc)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 30] + f"... ({len(message)} characters)"
    return code, message


class NotServedError(Exception):
    """This daemon does not serve the method (UNIMPLEMENTED)."""


def _status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, NotServedError):
        return grpc.StatusCode.UNIMPLEMENTED, _message(exc)
    if isinstance(exc, Busy):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, _message(exc)
    if isinstance(exc, DeadlineError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, _message(exc)
    if isinstance(exc, NotSupportedError):
        return grpc.StatusCode.FAILED_PRECONDITION, _message(exc)
    if isinstance(exc, UnavailableError):
        return grpc.StatusCode.UNAVAILABLE, _message(exc)
    if isinstance(exc, KeyError):
        return grpc.StatusCode.NOT_FOUND, _message(exc)
    if isinstance(exc, StreamExistsError):
        return grpc.StatusCode.ALREADY_EXISTS, _message(exc)
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, _message(exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _unary(
    method: Callable[[_Self, _Req, grpc.ServicerContext], _Resp],
) -> Callable[[_Self, _Req, grpc.ServicerContext], _Resp]:
    """Turn exceptions of a unary servicer method into gRPC statuses (see status_for)."""

    @functools.wraps(method)
    def wrapper(self: _Self, request: _Req, context: grpc.ServicerContext) -> _Resp:
        try:
            return method(self, request, context)
        except Exception as exc:  # every failure must reach the client as a status
            failure = fail(method.__name__, exc, context)
        _abort(context, *failure)

    return wrapper


def fail(
    method: str, exc: BaseException, context: grpc.ServicerContext
) -> tuple[grpc.StatusCode, str]:
    """Log a failed call in one line (INTERNAL: with its traceback), set the retry hint
    of RESOURCE_EXHAUSTED, and return the status to abort with."""
    code, message = (
        status_for(exc)
        if isinstance(exc, Exception)
        else (
            grpc.StatusCode.INTERNAL,
            f"internal error: {type(exc).__name__}",
        )
    )
    if code == grpc.StatusCode.INTERNAL:
        _log.error("control RPC %s failed", method, exc_info=exc)
    else:
        _log.info("%s from %s: %s: %s", method, _peer(context), code.name, message)
    if isinstance(exc, Busy):
        with contextlib.suppress(Exception):
            context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(int(exc.retry_s * 1000))),))
    return code, message


def _peer(context: grpc.ServicerContext) -> str:
    try:
        return str(context.peer())[:80]
    except Exception:
        return "?"


def check_camera_id(camera_id: str) -> str:
    """A camera id of a request, unchanged; KeyError (NOT_FOUND, id cut) when it cannot
    name a camera (longer than 64 characters or outside [A-Za-z0-9._-])."""
    if not CAMERA_ID_RE.fullmatch(camera_id):
        raise KeyError(f"camera {short(camera_id)} is not registered")
    return camera_id


# ---------------------------------------------------------------- conversions


def timestamp(unix_s: float | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp for Unix time in seconds; None for None or non-finite."""
    if unix_s is None or not math.isfinite(unix_s):
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(unix_s * 1e9))
    return ts


def _count(value: float | None) -> int:
    """A counter value for an unsigned protobuf field (unknown or negative -> 0)."""
    if value is None or not math.isfinite(value) or value <= 0:
        return 0
    return int(value)


def _rate(value: float | None) -> float:
    if value is None or not math.isfinite(value):
        return 0.0
    return float(value)


def _known(value: float | None) -> float | None:
    """``value`` if it is a finite number, else None (for optional fields)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def health_message(snap: BackendHealth) -> vision_pb2.EngineHealth:
    """EngineHealth of a backend health snapshot."""
    msg = vision_pb2.EngineHealth(
        status=_HEALTH_STATUS.get(snap.status, vision_pb2.SERVING_STATUS_UNSPECIFIED),
        version=snap.version,
        uptime_s=_rate(snap.uptime_s),
        backend=snap.backend,
        model=snap.model,
        observed_at=timestamp(snap.taken_at),
        reasons=[str(r) for r in getattr(snap, "reasons", ())],
    )
    for stage in snap.stages:
        state = _STAGE_STATE.get(stage.state, vision_pb2.STAGE_STATE_UNSPECIFIED)
        detail = stage.detail or ""
        if state == vision_pb2.STAGE_STATE_UNSPECIFIED and not detail:
            detail = stage.state
        msg.stages.append(
            vision_pb2.StageHealth(
                name=stage.name,
                pid=stage.pid or 0,
                state=state,
                restarts=_count(stage.restarts),
                last_heartbeat_age_s=_known(stage.heartbeat_age_s),
                detail=detail,
            )
        )
    return msg


def _latency(values: Mapping[str, float], prefix: str) -> vision_pb2.LatencyStats:
    return vision_pb2.LatencyStats(
        p50_ms=_rate(values.get(f"{prefix}_p50_ms")),
        p90_ms=_rate(values.get(f"{prefix}_p90_ms")),
        p95_ms=_rate(values.get(f"{prefix}_p95_ms")),
        p99_ms=_rate(values.get(f"{prefix}_p99_ms")),
        max_ms=_rate(values.get(f"{prefix}_max_ms")),
    )


def metrics_message(snap: BackendMetrics) -> vision_pb2.EngineMetrics:
    """EngineMetrics of a backend metrics snapshot."""
    c = snap.counters
    msg = vision_pb2.EngineMetrics(
        frames_decoded=_count(c.get(Counter.FRAMES_DECODED)),
        frames_inferred=_count(c.get(Counter.FRAMES_INFERRED)),
        frames_dropped=_count(c.get(Counter.FRAMES_DROPPED)),
        decode_fps=_rate(c.get(Counter.DECODE_FPS)),
        inference_fps=_rate(c.get(Counter.INFERENCE_FPS)),
        batch_size=vision_pb2.BatchSizeStats(
            mean=_rate(c.get(Counter.BATCH_SIZE_MEAN)),
            min=_count(c.get(Counter.BATCH_SIZE_MIN)),
            max=_count(c.get(Counter.BATCH_SIZE_MAX)),
            last=_count(c.get(Counter.BATCH_SIZE_LAST)),
        ),
        inference_latency=_latency(c, "inference_latency"),
        pipeline_latency=_latency(c, "pipeline_latency"),
        observed_at=timestamp(snap.taken_at),
    )
    known = {k.value for k in Counter}
    for key in sorted(set(c) - known):
        msg.extra[key] = float(c[key])
    camera_known = {k.value for k in CameraCounter}
    for camera_id in sorted(snap.per_camera):
        values = snap.per_camera[camera_id]
        cam = vision_pb2.CameraCounters(
            camera_id=camera_id,
            frames_decoded=_count(values.get(CameraCounter.FRAMES_DECODED)),
            frames_inferred=_count(values.get(CameraCounter.FRAMES_INFERRED)),
            frames_dropped=_count(values.get(CameraCounter.FRAMES_DROPPED)),
            fps_in=_rate(values.get(CameraCounter.FPS_IN)),
            fps_out=_rate(values.get(CameraCounter.FPS_OUT)),
        )
        for key in sorted(set(values) - camera_known):
            cam.extra[key] = float(values[key])
        msg.cameras.append(cam)
    return msg


def queue_metrics_message(snap: BackendMetrics) -> streaming_pb2.QueueMetrics:
    """QueueMetrics of the rings of a backend metrics snapshot."""
    msg = streaming_pb2.QueueMetrics(observed_at=timestamp(snap.taken_at))
    for q in sorted(snap.queues, key=lambda q: q.name):
        msg.rings.append(
            streaming_pb2.RingStats(
                name=q.name,
                camera_id=q.camera_id,
                capacity=_count(q.capacity),
                used=_count(q.used),
                written=_count(q.written),
                dropped=_count(q.dropped),
                skipped=_count(q.skipped),
            )
        )
    return msg


def stream_message(info: StreamInfo) -> streaming_pb2.StreamInfo:
    """StreamInfo message of a backend stream (password in the URL redacted)."""
    return streaming_pb2.StreamInfo(
        config=streaming_pb2.StreamConfig(
            camera_id=info.camera_id,
            source_url=redact_url(info.source_url),
            target_fps=_rate(info.target_fps),
            priority=info.priority,
            options_json=json.dumps(dict(info.options), default=str) if info.options else "",
        ),
        state=_STREAM_STATE.get(info.state, streaming_pb2.STREAM_STATE_UNSPECIFIED),
    )


def stream_from_config(config: streaming_pb2.StreamConfig) -> StreamInfo:
    """Validate a StreamConfig from a client; ValueError names the field at fault."""
    if not config.camera_id:
        raise ValueError("config.camera_id is required")
    if not CAMERA_ID_RE.fullmatch(config.camera_id):
        raise ValueError(
            f"config.camera_id {config.camera_id!r} is invalid: use 1 to 64 characters "
            "from A-Z a-z 0-9 . _ -"
        )
    if not config.source_url.strip():
        raise ValueError("config.source_url is required")
    if not math.isfinite(config.target_fps) or config.target_fps < 0:
        raise ValueError(f"config.target_fps must be >= 0, got {config.target_fps}")
    options: dict[str, Any] = {}
    if config.options_json.strip():
        try:
            parsed = json.loads(config.options_json)
        except ValueError as err:
            raise ValueError(f"config.options_json is not valid JSON: {err}") from None
        if not isinstance(parsed, dict):
            raise ValueError("config.options_json must be a JSON object")
        options = parsed
    return StreamInfo(
        camera_id=config.camera_id,
        source_url=config.source_url,
        target_fps=float(config.target_fps),
        priority=int(config.priority),
        options=options,
    )


def line_count_messages(counts: LineCounts) -> list[common_pb2.LineCount]:
    """Flatten line -> direction -> class -> count into sorted LineCount rows (count > 0)."""
    rows = []
    for line_id in sorted(counts):
        by_direction = counts[line_id]
        for direction in sorted(by_direction):
            by_class = by_direction[direction]
            for class_name in sorted(by_class):
                n = _count(by_class[class_name])
                if n > 0:
                    rows.append(
                        common_pb2.LineCount(
                            line_id=line_id, direction=direction, class_name=class_name, count=n
                        )
                    )
    return rows


def traffic_message(snap: BackendTraffic) -> analytics_pb2.TrafficMetrics:
    """TrafficMetrics of a backend traffic snapshot."""
    from itsd.control.aggregates import aggregate_message

    latest = snap.latest_interval
    return analytics_pb2.TrafficMetrics(
        latest_interval=aggregate_message(latest) if latest is not None else None,
        camera_id=snap.camera_id,
        window_start=timestamp(snap.window_start),
        window_end=timestamp(snap.window_end),
        line_counts=line_count_messages(snap.line_counts),
        vehicles_in_view=_count(snap.vehicles_in_view),
        avg_speed_kmh=_known(snap.avg_speed_kmh),
    )


def camera_health_message(snap: BackendCameraHealth) -> analytics_pb2.CameraHealth:
    """CameraHealth message of a backend camera health snapshot."""
    return analytics_pb2.CameraHealth(
        camera_id=snap.camera_id,
        connected=snap.connected,
        fps_in=_rate(snap.fps_in),
        fps_out=_rate(snap.fps_out),
        last_frame_age_s=_known(snap.last_frame_age_s),
        reconnects=_count(snap.reconnects),
        last_error=snap.last_error or "",
        last_error_time=timestamp(snap.last_error_at),
    )


# ---------------------------------------------------------------- servicers


class VisionCoreServicer:
    """itsd.v1.VisionCoreService: frames in, results out; engine health and metrics."""

    def __init__(self, backend: ControlBackend, frames: FrameService | None = None) -> None:
        self._backend = backend
        self._frames = frames

    def _service(self, context: grpc.ServicerContext, method: str) -> FrameService:
        if self._frames is None:
            raise NotServedError(_NOT_SERVED_FRAMES.format(method=method))
        return self._frames

    @_unary
    def ProcessFrame(  # noqa: N802  (gRPC method name)
        self, request: vision_pb2.ProcessFrameRequest, context: grpc.ServicerContext
    ) -> common_pb2.FrameResult:
        """One client frame through inference (and its camera's analytics)."""
        frames = self._service(context, "VisionCoreService.ProcessFrame")
        if not request.HasField("frame"):
            raise ValueError("frame is required")
        options = request.options if request.HasField("options") else None
        return frames.process_frame(request.frame, options, context)

    @_unary
    def ProcessFrameBatch(  # noqa: N802
        self, request: common_pb2.ProcessFrameBatchRequest, context: grpc.ServicerContext
    ) -> common_pb2.ProcessFrameBatchResponse:
        """Up to 64 frames; each gets its own outcome."""
        frames = self._service(context, "VisionCoreService.ProcessFrameBatch")
        options = request.options if request.HasField("options") else None
        return frames.process_batch(request.frames, options, context, status_for)

    def ProcessCameraStream(  # noqa: N802
        self, request_iterator: Iterable[common_pb2.Frame], context: grpc.ServicerContext
    ) -> Iterator[common_pb2.FrameResult]:
        """Frames in, results out, with backpressure (see itsd.control.frames)."""
        if self._frames is None:
            _abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                _NOT_SERVED_FRAMES.format(method="VisionCoreService.ProcessCameraStream"),
            )
        frames = self._frames

        def on_error(exc: BaseException) -> None:
            _abort(context, *fail("ProcessCameraStream", exc, context))

        yield from frames.camera_stream(request_iterator, context, on_error)

    @_unary
    def GetEngineHealth(  # noqa: N802
        self, request: vision_pb2.GetEngineHealthRequest, context: grpc.ServicerContext
    ) -> vision_pb2.EngineHealth:
        """Overall and per-stage health."""
        return health_message(self._backend.health())

    @_unary
    def GetEngineMetrics(  # noqa: N802
        self, request: vision_pb2.GetEngineMetricsRequest, context: grpc.ServicerContext
    ) -> vision_pb2.EngineMetrics:
        """Pipeline counters and rates; latency percentiles and batch sizes from the
        detection events of the last minute."""
        snap = self._backend.metrics()
        if self._frames is not None:
            counters = {**snap.counters, **self._frames.hub.counters()}
            snap = BackendMetrics(counters, snap.per_camera, snap.queues, snap.taken_at)
        return metrics_message(snap)


class StreamingServicer:
    """itsd.v1.StreamingService: streams, rings and live results."""

    def __init__(self, backend: ControlBackend, frames: FrameService | None = None) -> None:
        self._backend = backend
        self._frames = frames

    def StreamFrames(  # noqa: N802
        self, request: streaming_pb2.StreamFramesRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.FrameResult]:
        """Results of one camera as they are produced (newest wins for slow readers)."""
        if self._frames is None:
            _abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                _NOT_SERVED_STREAM.format(method="StreamingService.StreamFrames"),
            )
        camera_id = request.camera_id
        try:
            if not camera_id:
                raise ValueError("camera_id is required")
            check_camera_id(camera_id)
            self._backend.camera_health(camera_id)  # NOT_FOUND when unknown
        except Exception as exc:
            _abort(context, *fail("StreamFrames", exc, context))

        def alive() -> bool:
            try:
                self._backend.camera_health(camera_id)
            except KeyError:
                return False
            return True

        yield from self._frames.stream_results(camera_id, request.include_empty, context, alive)

    @_unary
    def ProcessFrameBatch(  # noqa: N802
        self, request: common_pb2.ProcessFrameBatchRequest, context: grpc.ServicerContext
    ) -> common_pb2.ProcessFrameBatchResponse:
        """Same as VisionCoreService.ProcessFrameBatch."""
        if self._frames is None:
            raise NotServedError(
                _NOT_SERVED_FRAMES.format(method="StreamingService.ProcessFrameBatch")
            )
        options = request.options if request.HasField("options") else None
        return self._frames.process_batch(request.frames, options, context, status_for)

    @_unary
    def GetQueueMetrics(  # noqa: N802
        self, request: streaming_pb2.GetQueueMetricsRequest, context: grpc.ServicerContext
    ) -> streaming_pb2.QueueMetrics:
        """Fill levels and counters of the shared-memory rings (and of the results ring
        that brings detection events back to this API)."""
        msg = queue_metrics_message(self._backend.metrics())
        stats = self._frames.hub.ring_stats if self._frames is not None else None
        if stats is not None:
            capacity, used, put = stats
            msg.rings.append(
                streaming_pb2.RingStats(name="results", capacity=capacity, used=used, written=put)
            )
            msg.rings.sort(key=lambda r: r.name)
        return msg

    @_unary
    def RegisterStream(  # noqa: N802
        self, request: streaming_pb2.RegisterStreamRequest, context: grpc.ServicerContext
    ) -> streaming_pb2.RegisterStreamResponse:
        """Validate the config, then hand it to the backend."""
        if not request.HasField("config"):
            raise ValueError("config is required")
        if request.config.camera_id == ADHOC_CAMERA_ID:
            raise ValueError(f"config.camera_id {ADHOC_CAMERA_ID!r} is reserved for ad-hoc frames")
        registered = self._backend.register_stream(stream_from_config(request.config))
        return streaming_pb2.RegisterStreamResponse(stream=stream_message(registered))

    @_unary
    def UnregisterStream(  # noqa: N802
        self, request: streaming_pb2.UnregisterStreamRequest, context: grpc.ServicerContext
    ) -> streaming_pb2.UnregisterStreamResponse:
        """Remove a stream; NOT_FOUND for an unknown camera unless allow_missing."""
        camera_id = request.camera_id
        if not camera_id:
            raise ValueError("camera_id is required")
        try:
            removed = self._backend.unregister_stream(check_camera_id(camera_id))
        except KeyError:
            if not request.allow_missing:
                raise
            removed = False
        if not removed and not request.allow_missing:
            raise KeyError(f"camera {short(camera_id)} is not registered")
        return streaming_pb2.UnregisterStreamResponse(removed=removed)

    @_unary
    def ReloadConfig(  # noqa: N802
        self, request: streaming_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> streaming_pb2.ReloadConfigResponse:
        """Re-read the configuration file; INVALID_ARGUMENT with its errors when it fails."""
        result = self._backend.reload()
        return streaming_pb2.ReloadConfigResponse(
            added=list(result.get("added", [])),
            removed=list(result.get("removed", [])),
            kept=list(result.get("kept", [])),
        )

    @_unary
    def ListStreams(  # noqa: N802
        self, request: streaming_pb2.ListStreamsRequest, context: grpc.ServicerContext
    ) -> streaming_pb2.ListStreamsResponse:
        """Every registered stream, ordered by camera id."""
        streams = sorted(self._backend.list_streams(), key=lambda s: s.camera_id)
        return streaming_pb2.ListStreamsResponse(streams=[stream_message(s) for s in streams])


class AnalyticsServicer:
    """itsd.v1.AnalyticsService: live traffic, aggregates from the store, camera health."""

    def __init__(self, backend: ControlBackend) -> None:
        self._backend = backend

    @_unary
    def GetTrafficMetrics(  # noqa: N802
        self, request: analytics_pb2.GetTrafficMetricsRequest, context: grpc.ServicerContext
    ) -> analytics_pb2.GetTrafficMetricsResponse:
        """Traffic of one camera, or of every registered camera."""
        if request.camera_id:
            snaps = [self._backend.traffic_metrics(request.camera_id)]
        else:
            snaps = []
            for stream in sorted(self._backend.list_streams(), key=lambda s: s.camera_id):
                try:
                    snaps.append(self._backend.traffic_metrics(stream.camera_id))
                except KeyError:
                    continue  # unregistered between the two calls
        return analytics_pb2.GetTrafficMetricsResponse(cameras=[traffic_message(s) for s in snaps])

    @_unary
    def GetAggregatedMetrics(  # noqa: N802
        self, request: analytics_pb2.GetAggregatedMetricsRequest, context: grpc.ServicerContext
    ) -> analytics_pb2.GetAggregatedMetricsResponse:
        """The store's intervals in the range, re-bucketed to bucket_s (60 s by default)."""
        from itsd.control.aggregates import aggregate_message, aggregate_range

        backend = self._backend
        if not isinstance(backend, AggregatesBackend):
            raise NotSupportedError("this daemon has no aggregates store")
        start, end, bucket = aggregate_range(request, time.time())
        buckets = backend.aggregated_metrics(request.camera_id or None, start, end, bucket)
        return analytics_pb2.GetAggregatedMetricsResponse(
            aggregates=[aggregate_message(b) for b in buckets]
        )

    @_unary
    def GetCameraHealth(  # noqa: N802
        self, request: analytics_pb2.GetCameraHealthRequest, context: grpc.ServicerContext
    ) -> analytics_pb2.GetCameraHealthResponse:
        """Source health of one camera, or of every camera."""
        camera_id = check_camera_id(request.camera_id) if request.camera_id else None
        cameras = self._backend.camera_health(camera_id)
        return analytics_pb2.GetCameraHealthResponse(
            cameras=[camera_health_message(c) for c in sorted(cameras, key=lambda c: c.camera_id)]
        )


def is_serving(snap: BackendHealth) -> bool:
    """True when the daemon counts as serving for gRPC health checking (degraded included)."""
    return snap.status in (HealthStatus.SERVING.value, HealthStatus.DEGRADED.value)


__all__ = [
    "CAMERA_ID_RE",
    "AnalyticsServicer",
    "StreamingServicer",
    "VisionCoreServicer",
    "camera_health_message",
    "health_message",
    "is_serving",
    "line_count_messages",
    "metrics_message",
    "queue_metrics_message",
    "redact_url",
    "status_for",
    "stream_from_config",
    "stream_message",
    "timestamp",
    "traffic_message",
]
