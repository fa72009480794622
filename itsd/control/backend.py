"""What the gRPC control servicers need from the daemon, as plain data.

``ControlBackend`` is the one seam between the control API and the rest of itsd. The
supervisor implements it from its shared-memory counters and its command channel; tests
implement it with fixed data. The snapshot types here are plain frozen dataclasses so
an implementation needs neither grpc nor protobuf; the servicers turn them into
protobuf messages.

Conventions of every snapshot:

* times on the wall clock are Unix time in seconds (``time.time()``); ages and
  durations are seconds; speeds are km/h;
* ``None`` means "unknown" (never NaN);
* counters never decrease during one daemon run.

Errors a backend method may raise, and what the client sees:

* ``KeyError(message)``: the camera named is unknown -> NOT_FOUND;
* ``ValueError(message)``: the request is invalid -> INVALID_ARGUMENT
  (``StreamExistsError``, a ``ValueError``, -> ALREADY_EXISTS);
* ``NotSupportedError(message)``: valid, but this daemon cannot do it -> FAILED_PRECONDITION;
* ``UnavailableError(message)``: valid, but the daemon cannot do it now (stopping, a
  stage restarting) -> UNAVAILABLE (retry later).

The message should name the camera or field concerned; it is shown to the client as is.

This module must never import grpc, protobuf, the generated code, or any other part of
itsd: it is the contract, and it must stay importable by the supervisor alone.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class NotSupportedError(Exception):
    """The request is valid but this daemon cannot carry it out (FAILED_PRECONDITION).

    For example: streams come from the configuration file and the running daemon cannot
    add or remove streams at run time.
    """


class UnavailableError(Exception):
    """The request is valid but cannot be carried out now (UNAVAILABLE; retry later)."""


class StreamExistsError(ValueError):
    """RegisterStream for a camera id that is already registered (ALREADY_EXISTS)."""


class HealthStatus(enum.StrEnum):
    """Values of ``HealthSnapshot.status``."""

    #: Every stage runs and heartbeats.
    SERVING = "serving"
    #: Results still flow, but a stage is restarting, a camera is down, or frames drop.
    DEGRADED = "degraded"
    #: No results flow (starting, stopping, or a required stage is down).
    NOT_SERVING = "not_serving"


class StageState(enum.StrEnum):
    """Values of ``StageHealth.state``."""

    STARTING = "starting"
    RUNNING = "running"
    #: Alive but its heartbeat stopped.
    STALLED = "stalled"
    #: Exited; waiting for the restart backoff.
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    #: Gave up restarting it.
    FAILED = "failed"


class StreamState(enum.StrEnum):
    """Values of ``StreamInfo.state``."""

    STARTING = "starting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"
    FAILED = "failed"


class Counter(enum.StrEnum):
    """Well-known keys of ``MetricsSnapshot.counters`` (all optional; missing means 0).

    Keys not listed here are passed through to clients in the ``extra`` map.
    """

    FRAMES_DECODED = "frames_decoded"
    FRAMES_INFERRED = "frames_inferred"
    FRAMES_DROPPED = "frames_dropped"
    DECODE_FPS = "decode_fps"
    INFERENCE_FPS = "inference_fps"
    BATCH_SIZE_MEAN = "batch_size_mean"
    BATCH_SIZE_MIN = "batch_size_min"
    BATCH_SIZE_MAX = "batch_size_max"
    BATCH_SIZE_LAST = "batch_size_last"
    INFERENCE_LATENCY_P50_MS = "inference_latency_p50_ms"
    INFERENCE_LATENCY_P90_MS = "inference_latency_p90_ms"
    INFERENCE_LATENCY_P95_MS = "inference_latency_p95_ms"
    INFERENCE_LATENCY_P99_MS = "inference_latency_p99_ms"
    INFERENCE_LATENCY_MAX_MS = "inference_latency_max_ms"
    PIPELINE_LATENCY_P50_MS = "pipeline_latency_p50_ms"
    PIPELINE_LATENCY_P90_MS = "pipeline_latency_p90_ms"
    PIPELINE_LATENCY_P95_MS = "pipeline_latency_p95_ms"
    PIPELINE_LATENCY_P99_MS = "pipeline_latency_p99_ms"
    PIPELINE_LATENCY_MAX_MS = "pipeline_latency_max_ms"


class CameraCounter(enum.StrEnum):
    """Well-known keys of the per-camera dicts of ``MetricsSnapshot.per_camera``."""

    FRAMES_DECODED = "frames_decoded"
    FRAMES_INFERRED = "frames_inferred"
    FRAMES_DROPPED = "frames_dropped"
    FPS_IN = "fps_in"
    FPS_OUT = "fps_out"


@dataclass(frozen=True, slots=True)
class StageHealth:
    """Health of one stage process."""

    name: str
    #: Process id; ``None`` when no process runs for the stage.
    pid: int | None
    #: A ``StageState`` value.
    state: str
    restarts: int
    #: Seconds since the last heartbeat; ``None`` when it never beat.
    heartbeat_age_s: float | None
    #: Free text for people, such as the last exit reason.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Overall health of the daemon."""

    #: A ``HealthStatus`` value.
    status: str
    version: str
    uptime_s: float
    #: Inference backend, for example ``"onnxruntime-cpu"``.
    backend: str
    #: Model in use, for example ``"yolo11n.onnx"``.
    model: str
    #: One entry per stage, in flow order.
    stages: Sequence[StageHealth] = ()
    #: When the snapshot was taken (Unix time).
    taken_at: float = field(default_factory=time.time)
    #: Why the status is not "serving", one line each; empty while serving.
    reasons: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class QueueStat:
    """State of one shared-memory ring."""

    name: str
    capacity: int
    used: int
    written: int
    dropped: int
    skipped: int
    #: Camera of a per-camera ring; empty for shared rings.
    camera_id: str = ""


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Counters and rates of the pipeline."""

    #: Daemon-wide values by name; see ``Counter`` for the well-known keys.
    counters: Mapping[str, float] = field(default_factory=dict)
    #: camera id -> values by name; see ``CameraCounter`` for the well-known keys.
    per_camera: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: One entry per ring.
    queues: Sequence[QueueStat] = ()
    #: When the snapshot was taken (Unix time).
    taken_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A camera stream: its configuration and, in answers, its state."""

    camera_id: str
    source_url: str
    #: Frames per second to process; 0 means the source's own rate.
    target_fps: float = 0.0
    #: Batcher lane; higher is served first; 0 is the default lane.
    priority: int = 0
    #: A ``StreamState`` value; empty in a registration request.
    state: str = ""
    #: Further keys of the camera's configuration entry (loop, realtime, lines, ...).
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CameraHealth:
    """Health of the source of one camera."""

    camera_id: str
    connected: bool
    fps_in: float
    fps_out: float
    #: Seconds since the last decoded frame; ``None`` when none was ever decoded.
    last_frame_age_s: float | None
    reconnects: int
    #: Last error of the source, for people; empty when there was none.
    last_error: str = ""
    #: When ``last_error`` happened (Unix time); ``None`` when there was none.
    last_error_at: float | None = None


#: line id -> direction label -> class name -> crossings.
LineCounts = Mapping[str, Mapping[str, Mapping[str, int]]]


@dataclass(frozen=True, slots=True)
class TrafficSnapshot:
    """Live traffic state of one camera."""

    camera_id: str
    #: The window the counts cover (Unix time).
    window_start: float
    window_end: float
    line_counts: LineCounts = field(default_factory=dict)
    #: Vehicles tracked in view right now.
    vehicles_in_view: int = 0
    #: Mean speed of the vehicles measured in the window; ``None`` when unknown.
    avg_speed_kmh: float | None = None
    #: The camera's newest analytics interval in the store; ``None`` when there is none.
    latest_interval: AggregateBucket | None = None


#: Id of the daemon's internal push camera of frames sent without a camera id.
ADHOC_CAMERA_ID = "itsd.adhoc"


@dataclass(frozen=True, slots=True)
class PushTarget:
    """Where the frames pushed to one ``push://`` camera go (shared-memory names)."""

    camera_id: str
    #: The camera's key in rings and records; a new key means the camera was replaced.
    key: int
    #: Name of the camera's frame ring segment.
    ring: str
    #: Name of the camera's decode cell table (frames in, last frame time); "" for none.
    cells: str = ""
    #: False when detection events are off (outputs.detection_events): no result comes back.
    results: bool = True
    #: True for the daemon's internal camera of ad-hoc frames (ProcessFrame without a camera).
    adhoc: bool = False


@runtime_checkable
class PushBackend(Protocol):
    """A daemon that takes frames over the API (optional beside ``ControlBackend``).

    Methods are called from gRPC worker threads, possibly concurrently.
    """

    def push_target(self, camera_id: str) -> PushTarget:
        """Where frames of a ``push://`` camera go; KeyError if unknown, NotSupportedError
        if the camera decodes its own source."""
        ...

    def adhoc_target(self) -> PushTarget:
        """The internal camera of ad-hoc frames, created on first use (UnavailableError
        when it cannot be made now)."""
        ...

    def results_ring(self) -> str:
        """Name of the ring of detection events the publisher hands back; "" for none."""
        ...


@runtime_checkable
class ControlBackend(Protocol):
    """The daemon as the control API sees it.

    Methods are called from gRPC worker threads, possibly concurrently; they must be
    thread-safe and should answer in milliseconds (read counters, do not wait on stages).
    """

    def health(self) -> HealthSnapshot:
        """Overall health and the health of each stage."""
        ...

    def metrics(self) -> MetricsSnapshot:
        """Pipeline counters, per-camera counters and ring states."""
        ...

    def list_streams(self) -> list[StreamInfo]:
        """Every registered camera stream."""
        ...

    def camera_health(self, camera_id: str | None) -> list[CameraHealth]:
        """Health of one camera (KeyError if unknown), or of all cameras when ``None``."""
        ...

    def traffic_metrics(self, camera_id: str) -> TrafficSnapshot:
        """Live traffic state of one camera (KeyError if unknown)."""
        ...

    def register_stream(self, stream: StreamInfo) -> StreamInfo:
        """Add a stream; return it as registered (with its state).

        Raises StreamExistsError if the camera id is taken, ValueError if the request is
        invalid, NotSupportedError if streams cannot be added at run time.
        """
        ...

    def unregister_stream(self, camera_id: str) -> bool:
        """Stop and remove a stream; True if removed, False if it was not registered.

        May raise KeyError instead of returning False; NotSupportedError if streams
        cannot be removed at run time.
        """
        ...

    def reload(self) -> dict[str, Any]:
        """Re-read the configuration file and apply the difference in cameras.

        Returns {"added": [...], "removed": [...], "kept": [...]}; ValueError with the
        file's errors when it does not validate (nothing changes then).
        """
        ...


@dataclass(frozen=True, slots=True)
class ZoneAggregate:
    """One zone over one bucket (``None``: not measured)."""

    zone_id: str
    occupancy_mean: float | None = None
    occupied_fraction: float | None = None
    dwell_mean_s: float | None = None
    queue_max_m: float | None = None


@dataclass(frozen=True, slots=True)
class AggregateBucket:
    """One camera's traffic over one bucket of time, from the aggregates store."""

    camera_id: str
    #: Start of the bucket (Unix time) and its length in seconds.
    start: float
    bucket_s: float
    line_counts: LineCounts = field(default_factory=dict)
    #: Analytics intervals merged, seconds they cover, frames analysed.
    intervals: int = 0
    covered_s: float = 0.0
    frames: int = 0
    speed_samples: int = 0
    avg_speed_kmh: float | None = None
    p85_speed_kmh: float | None = None
    longest_queue_m: float | None = None
    zones: Sequence[ZoneAggregate] = ()


@runtime_checkable
class AggregatesBackend(Protocol):
    """A daemon with an aggregates store (optional beside ``ControlBackend``).

    Called from gRPC worker threads; each call is one bounded read of the store.
    """

    def aggregated_metrics(
        self, camera_id: str | None, start: float, end: float, bucket_s: int
    ) -> list[AggregateBucket]:
        """Buckets of ``bucket_s`` seconds in ``[start, end)`` (Unix time), ordered by
        camera and start; buckets without data are absent.

        Raises ValueError for a range too large to answer, NotSupportedError when the
        store is disabled, UnavailableError while its database cannot be reached.
        """
        ...
