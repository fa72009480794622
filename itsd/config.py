"""The typed configuration of itsd: one pydantic model for the YAML file and the CLI flags.

Every field carries a description (the README's configuration table is generated from
them by ``tools/config_table.py``). Unknown keys are rejected (``extra="forbid"``) so a
typo never silently falls back to a default, and every error names the file, the key
path and what was expected. Keys whose feature this version does not have yet are listed
in ``NOT_YET_AVAILABLE`` and refused when set, so a file never promises what the daemon
does not do.

This module must never import a stage, an engine or anything that touches a GPU: the
supervisor, the CLI and every stage import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from itsd.errors import ConfigError

Point = tuple[
    Annotated[float, Field(ge=0.0, le=1.0)],
    Annotated[float, Field(ge=0.0, le=1.0)],
]
#: A point on the ground plane, in metres.
GroundPoint = tuple[float, float]
CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: Source of a camera whose frames clients push over gRPC (StreamFrames-style calls).
PUSH_SCHEME = "push://"

#: Largest configuration file read; anything bigger is not a configuration.
MAX_CONFIG_BYTES = 16 * 1024 * 1024

#: Keys whose feature this version does not have yet, with the reason shown to the user.
#: Setting one to anything but its default is refused by :func:`parse_config` (and so by
#: ``load_config``, ``apply_overrides``, ``itsd config check`` and ``itsd start``). When a
#: feature lands, delete its entry here; nothing else needs to change.
#:
#: Key syntax: a dotted path; ``name[]`` steps into every item of a list (messages show the
#: item's index, ``cameras[2].zones``); ``*`` stands for every key of a section, down to
#: its leaves, except the keys in ``_WILDCARD_EXEMPT``.
NOT_YET_AVAILABLE: dict[str, str] = {}

#: Keys a wildcard in NOT_YET_AVAILABLE does not cover.
_WILDCARD_EXEMPT: frozenset[str] = frozenset()


def _check_unique_ids(items: list[Any], what: str) -> list[Any]:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"duplicate {what} {item.id!r}")
        seen.add(item.id)
    return items


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ServerConfig(_Model):
    """Network endpoints of the daemon."""

    grpc_bind: str = Field("127.0.0.1", description="Address the gRPC control API binds to.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="Port of the gRPC control API.")
    monitoring_bind: str = Field(
        "127.0.0.1", description="Address of the HTTP monitoring port (health, Prometheus metrics)."
    )
    monitoring_port: int = Field(
        8080, ge=0, le=65535, description="HTTP monitoring port; 0 disables it."
    )


class SecurityConfig(_Model):
    """TLS and bearer tokens of the gRPC control API (``itsd.control.auth``) and of the
    HTTP monitoring port (where ``/health`` needs no token and everything else a read one).

    With no token configured every call is allowed (keep the bind local then); with any
    token configured every call but health checking needs ``authorization: Bearer
    <token>``: a read token for reads, an admin token for calls that change the daemon
    or push frames. Tokens never appear in logs, metrics or answers.
    """

    tls_cert: Path | None = Field(
        None,
        description="Server certificate chain (PEM) of the gRPC API; with tls_key turns TLS on.",
    )
    tls_key: Path | None = Field(None, description="Private key (PEM) of tls_cert.")
    tls_client_ca: Path | None = Field(
        None,
        description=(
            "CA bundle (PEM): clients must present a certificate signed by it (mutual TLS). "
            "Needs tls_cert and tls_key."
        ),
    )
    admin_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens allowed every call (streams, frames, reload).",
    )
    read_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens allowed read-only calls (health, metrics, lists, results).",
    )
    tokens_file: Path | None = Field(
        None,
        description=(
            "File of further tokens, one per line: 'admin TOKEN' or 'read TOKEN' (# comments); "
            "read at start and on reload."
        ),
    )

    @model_validator(mode="after")
    def _tls_pairs(self) -> SecurityConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError(
                "tls_client_ca needs tls_cert and tls_key (client certificates need TLS)"
            )
        for tok in (*self.admin_tokens, *self.read_tokens):
            value = tok.get_secret_value()
            if len(value) < 16 or any(c.isspace() for c in value):
                raise ValueError("tokens must be at least 16 characters without spaces")
        return self

    @property
    def tls(self) -> bool:
        """True when the gRPC API serves TLS."""
        return self.tls_cert is not None

    @property
    def has_tokens(self) -> bool:
        """True when any bearer token is configured (in the file or a tokens file)."""
        return bool(self.admin_tokens or self.read_tokens or self.tokens_file)


class ApiConfig(_Model):
    """Limits of the gRPC control API: concurrency, message sizes, pushed frames."""

    max_concurrent_unary: int = Field(
        32, ge=1, le=1024, description="Unary calls served at once; more get RESOURCE_EXHAUSTED."
    )
    max_concurrent_streams: int = Field(
        16,
        ge=1,
        le=1024,
        description=(
            "Streaming calls open at once (frame streams, result streams, reflection, health "
            "watches); kept apart from unary calls so long streams never starve them."
        ),
    )
    max_message_mib: float = Field(
        16.0, gt=0.0, le=256.0, description="Largest request or response message, in MiB."
    )
    max_inflight_frames: int = Field(
        2,
        ge=1,
        le=63,
        description=(
            "Frames pushed to one camera that may wait for their result at once (at most "
            "performance.frame_ring_slots - 1): a faster client is slowed down (streams) or "
            "refused with RESOURCE_EXHAUSTED (unary calls)."
        ),
    )
    result_timeout_s: float = Field(
        10.0, gt=0.0, le=300.0, description="Longest wait for the result of one pushed frame."
    )
    max_push_width: int = Field(
        1920,
        ge=16,
        le=8192,
        description="Frames pushed for ad-hoc inference larger than this are scaled down.",
    )
    max_push_height: int = Field(1080, ge=16, le=8192, description="See max_push_width.")


class ModelConfig(_Model):
    """Which detector runs and how its output is filtered."""

    path: str = Field(
        "yolo11n",
        description=(
            "Model file (.onnx, .pt, .engine) or a YOLO11/YOLOv8 name such as 'yolo11n', looked up "
            "in the model cache ($ITSD_MODEL_DIR or ~/.cache/itsd/models) and downloaded "
            "when online."
        ),
    )
    backend: Literal["auto", "onnxruntime", "torch", "tensorrt"] = Field(
        "auto", description="Inference backend; 'auto' picks by file type and hardware."
    )
    confidence: float = Field(
        0.25,
        gt=0.0,
        lt=1.0,
        description="Lowest confidence of a detection reported in detection events.",
    )
    candidate_confidence: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description=(
            "Lowest detector score the tracker sees (its second association keeps tracks "
            "alive on low-score boxes of small, distant vehicles); not reported in events "
            "below `confidence`. Chosen by measurement (bench/count_tune.py)."
        ),
    )
    iou: float = Field(0.45, gt=0.0, lt=1.0, description="IoU threshold of the class-aware NMS.")
    max_detections: int = Field(300, ge=1, le=10000, description="Most detections kept per frame.")
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16",
        description="Numeric precision on GPUs (TensorRT/PyTorch); the CPU runs the file as is.",
    )
    tensorrt: bool = Field(
        True,
        description=(
            "Build and use a TensorRT engine when a GPU and TensorRT are present (an ONNX "
            "or .pt model; built once, cached by model hash, GPU, TensorRT version and "
            "precision; int8 engines need `itsd models export --calibration`)."
        ),
    )
    classes: list[int] | None = Field(
        None, description="Keep only these class ids (COCO numbering); null keeps all."
    )


class PerformanceConfig(_Model):
    """Batching and pacing."""

    batch_size: int = Field(
        8,
        ge=1,
        le=1024,
        description=(
            "Batch size an inference worker starts with; it then adapts to hold latency_target_ms."
        ),
    )
    max_batch_size: int = Field(32, ge=1, le=1024, description="Largest inference batch.")
    latency_target_ms: float = Field(
        50.0,
        gt=0.0,
        le=10000.0,
        description=(
            "p95 batch latency the inference worker holds: the batch size adapts between 1 "
            "and max_batch_size (starting at batch_size) to stay under it."
        ),
    )
    frame_deadline_ms: float = Field(
        1000.0,
        ge=0.0,
        le=600000.0,
        description=(
            "A live camera's frame older than this (capture to inference) is dropped and "
            "counted, never inferred late; 0: no deadline. Files and patterns have none."
        ),
    )
    priority_lane: int = Field(
        8,
        ge=0,
        le=10,
        description=(
            "Cameras with at least this priority bypass the normal queue: served first, "
            "and beyond the adaptive batch size (10: no priority lane)."
        ),
    )
    breaker_fallback: Literal["cpu", "skip"] = Field(
        "cpu",
        description=(
            "While the inference circuit breaker is open (the backend keeps failing): "
            "'cpu' runs the model on a CPU backend, 'skip' skips frames until a probe succeeds."
        ),
    )
    target_fps: float = Field(
        30.0, gt=0.0, le=240.0, description="Frames per second taken from each camera by default."
    )
    inference_workers: int = Field(
        0,
        ge=0,
        le=64,
        description=(
            "Inference processes; each owns a share of the cameras (a new camera goes to the "
            "one with the fewest). 0: one per core on the CPU (each single-threaded), one per "
            "listed GPU."
        ),
    )
    cpu_threads: int = Field(
        1, ge=1, le=256, description="Intra-op threads of the CPU inference backend."
    )
    rebalance: bool = Field(
        True,
        description=(
            "Move a camera off an inference worker that drops more than 20% of its frames "
            "onto one that drops under 5% (one move per 30 s)."
        ),
    )
    decode_workers: int = Field(
        0,
        ge=0,
        le=256,
        description=(
            "Decode processes; each runs many cameras, one thread per camera (the decoder "
            "releases the GIL). 0: one per CPU core, at most 32."
        ),
    )
    nvdec_cameras_per_worker: int = Field(
        0,
        ge=0,
        le=4096,
        description=(
            "Cameras with decoder auto that one decode worker decodes on NVDEC; the rest "
            "decode on its CPU threads (0: no limit). Sets the CPU/NVDEC split."
        ),
    )
    analytics_workers: int = Field(
        0,
        ge=0,
        le=64,
        description=(
            "Analytics processes (shards); each analyses its own cameras (a new camera goes "
            "to the one with fewest) and writes its own event ring. 0: one per 4 CPU cores, "
            "at most 16."
        ),
    )
    cameras_per_decode_worker: int = Field(
        64,
        ge=1,
        le=4096,
        description="Most cameras one decode process runs; adding more when all are full fails.",
    )
    frame_ring_slots: int = Field(
        4, ge=3, le=64, description="Slots in each camera's frame ring (newest frame wins)."
    )
    record_ring_mib: int = Field(
        16,
        ge=1,
        le=4096,
        description=(
            "Size of the detection and event rings, in MiB each; with several analytics "
            "shards each ring gets its share (at least 4 MiB)."
        ),
    )

    @model_validator(mode="after")
    def _batch_le_max(self) -> PerformanceConfig:
        if self.batch_size > self.max_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed max_batch_size "
                f"({self.max_batch_size})"
            )
        return self


class TopicsConfig(_Model):
    """Kafka topic names (the prefix is prepended)."""

    detection_events: str = Field("detection_events", description="Per-frame detections.")
    analytics_events: str = Field(
        "analytics_events", description="Line crossings and other traffic facts."
    )
    metrics_events: str = Field("metrics_events", description="Periodic metrics snapshots.")
    alert_events: str = Field("alert_events", description="Alerts (anomalies, violations).")


class KafkaConfig(_Model):
    """Publishing to Kafka."""

    enabled: bool = Field(False, description="Publish events to Kafka.")
    bootstrap_servers: str = Field(
        "localhost:9092", description="Comma-separated Kafka bootstrap servers."
    )
    topic_prefix: str = Field("", description="Prefix put before every topic name.")
    topics: TopicsConfig = Field(default_factory=TopicsConfig, description="Topic names.")
    producer: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description=(
            "Extra librdkafka producer settings, passed through as given and applied last "
            "(e.g. {'security.protocol': 'SSL'}); acks=all and idempotence are set "
            "unless overridden here."
        ),
    )
    compression: Literal["lz4", "zstd", "none"] = Field(
        "lz4", description="Compression of produced batches."
    )
    linger_ms: float = Field(
        5.0, ge=0.0, le=1000.0, description="Longest time the producer waits to fill a batch."
    )
    delivery_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=300.0,
        description=(
            "Time an event may wait for the broker's acknowledgement before it goes to the "
            "disk spool instead (librdkafka's message.timeout.ms)."
        ),
    )
    replay_batch: int = Field(
        2000,
        ge=1,
        le=100_000,
        description=(
            "Events replayed from the spool per round; also the most an event can be "
            "delivered twice after a crash during replay."
        ),
    )
    retry_s: float = Field(
        2.0, gt=0.0, le=300.0, description="Pause between attempts to reach a broker that is away."
    )


class OutputsConfig(_Model):
    """Local outputs."""

    jsonl_path: Path | None = Field(
        Path("itsd-events.jsonl"),
        description="Append every event as one JSON line to this file; null disables it.",
    )
    jsonl_max_mib: float = Field(
        0.0,
        ge=0.0,
        description=(
            "Rotate the JSONL file when it would grow past this size (to .1, .2, ...); "
            "0 never rotates (leave it to logrotate)."
        ),
    )
    jsonl_backups: int = Field(5, ge=1, le=1000, description="Rotated JSONL files kept.")
    spool_dir: Path = Field(
        Path("itsd-spool"), description="Where events wait on disk while the broker is away."
    )
    spool_max_mib: float = Field(
        1024.0,
        gt=0.0,
        description=(
            "Largest size of the spool; past it events are counted as dropped and an alert "
            "is published."
        ),
    )
    spool_alert_ratio: float = Field(
        0.8, gt=0.0, le=1.0, description="Fill level of the spool that raises a near-full alert."
    )
    spool_segment_mib: float = Field(
        16.0, gt=0.0, description="Size of one spool segment file before a new one starts."
    )
    spool_fsync: Literal["always", "interval", "never"] = Field(
        "always",
        description=(
            "When spooled events are fsynced: 'always' before the batch leaves the event ring "
            "(nothing lost on power loss), 'interval' every spool_fsync_interval_s, 'never' "
            "(the kernel decides; survives a crash of itsd, not of the machine)."
        ),
    )
    spool_fsync_interval_s: float = Field(
        1.0, gt=0.0, description="Period of fsync with spool_fsync: interval."
    )
    metrics_interval_s: float = Field(
        30.0,
        ge=0.0,
        description="Period of the metrics snapshot events (topic metrics_events); 0 disables.",
    )
    detection_events: bool = Field(
        True, description="Publish one detection event per processed frame."
    )


#: URL schemes of ``store.url``: SQLite files and PostgreSQL servers.
STORE_URL_SCHEMES = ("sqlite", "postgresql", "postgres")


class StoreConfig(_Model):
    """The aggregates store: per-interval traffic aggregates in SQLite or PostgreSQL."""

    enabled: bool = Field(
        True,
        description=(
            "Write each analytics_summary interval to the store (served by "
            "GetAggregatedMetrics and `itsd report`)."
        ),
    )
    url: str | None = Field(
        None,
        description=(
            "Database URL: sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB; "
            "null: a SQLite file store.sqlite3 in the state directory."
        ),
    )
    retention_days: float = Field(
        90.0, ge=0.0, description="Intervals older than this are deleted; 0 keeps them forever."
    )
    pool_size: int = Field(
        4, ge=1, le=64, description="Connections kept open per process (PostgreSQL)."
    )
    connect_timeout_s: float = Field(
        5.0, gt=0.0, le=300.0, description="Timeout of opening a database connection."
    )
    query_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=300.0,
        description="Longest a read of GetAggregatedMetrics or GetTrafficMetrics may run.",
    )
    buffer_max_mib: float = Field(
        256.0,
        gt=0.0,
        description=(
            "Largest disk buffer of intervals waiting while the database is away "
            "(in the state directory); past it events are held on the event ring."
        ),
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
        if scheme not in STORE_URL_SCHEMES:
            raise ValueError("must be a sqlite:///PATH or postgresql://USER@HOST:PORT/DB URL")
        return url


class AnalyticsConfig(_Model):
    """Speed, zone rules, anomalies and interval summaries (every camera)."""

    summary_interval_s: float = Field(
        60.0,
        ge=1.0,
        le=86400.0,
        description="Length of the per-camera summary intervals (analytics_summary events).",
    )
    speed_window_s: float = Field(
        1.0, gt=0.0, le=30.0, description="Window a track's speed and heading are averaged over."
    )
    speed_min_samples: int = Field(
        3, ge=2, le=1000, description="Samples a speed must rest on before it is reported."
    )
    snapshots: bool = Field(
        True, description="Write a JPEG snapshot (boxes drawn) when an alert is raised."
    )
    snapshot_dir: Path | None = Field(
        None,
        description="Where alert snapshots go; null: a 'snapshots' folder in the state directory.",
    )
    wrong_way_min_m: float = Field(
        10.0, gt=0.0, description="Distance against a zone's direction before a wrong-way alert."
    )
    wrong_way_tolerance_deg: float = Field(
        90.0,
        gt=0.0,
        lt=180.0,
        description="A heading further than this from a zone's direction counts as against it.",
    )
    speeding_min_s: float = Field(
        2.0, ge=0.0, description="Time above a zone's limit before a speeding alert."
    )
    stopped_speed_kmh: float = Field(
        3.0, gt=0.0, description="Below this a vehicle counts as stopped."
    )
    queue_speed_kmh: float = Field(
        7.0, gt=0.0, description="Below this a vehicle in a lane zone counts as queueing."
    )
    queue_gap_m: float = Field(
        15.0, gt=0.0, description="Largest gap between two queueing vehicles of one queue."
    )
    vehicle_length_m: float = Field(
        5.0, gt=0.0, description="Length added for the last vehicle of a queue."
    )
    congestion_speed_kmh: float = Field(
        15.0, gt=0.0, description="Mean speed under which a busy zone is congested."
    )
    congestion_min_vehicles: float = Field(
        4.0, gt=0.0, description="Mean occupancy from which a slow zone is congested."
    )
    congestion_window_s: float = Field(
        30.0, gt=0.0, description="Window the congestion means are taken over."
    )
    blind_camera: bool = Field(
        True, description="Watch for blind cameras (no detections, frozen or dark picture)."
    )
    blind_after_s: float = Field(
        60.0, gt=0.0, description="Seconds without detections (frames arriving) before an alert."
    )
    blind_min_detections: float = Field(
        0.5,
        ge=0.0,
        description="Long-run detections per frame a camera must have had to be called blind.",
    )
    freeze_after_s: float = Field(
        10.0, gt=0.0, description="Seconds of an unchanged picture before a frozen-camera alert."
    )
    dark_luma: float = Field(
        12.0, ge=0.0, le=255.0, description="Mean luma (0..255) under which a picture is dark."
    )
    dark_after_s: float = Field(
        10.0, gt=0.0, description="Seconds of a dark picture before an alert."
    )


class LoggingConfig(_Model):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["text", "json"] = Field("text", description="Log line format.")


class SupervisorConfig(_Model):
    """How the supervisor keeps stages alive and stops them."""

    heartbeat_timeout_s: float = Field(
        10.0, gt=0.0, description="A stage whose heartbeat stops this long is stuck and killed."
    )
    startup_grace_s: float = Field(
        120.0, gt=0.0, description="Time a stage may take to start (model load, first connect)."
    )
    max_restarts: int = Field(
        5, ge=0, description="Restarts allowed per stage within restart_window_s."
    )
    restart_window_s: float = Field(60.0, gt=0.0, description="Window of the restart cap.")
    backoff_initial_s: float = Field(0.5, gt=0.0, description="First restart delay.")
    backoff_max_s: float = Field(30.0, gt=0.0, description="Longest restart delay.")
    shutdown_timeout_s: float = Field(
        30.0, gt=0.0, description="Deadline of a graceful stop before stages are killed."
    )
    exit_when_sources_end: bool = Field(
        False, description="Stop the daemon once every camera source has ended (files, demos)."
    )
    max_cameras: int = Field(
        256, ge=1, le=4096, description="Most cameras one daemon runs (sizes the control block)."
    )


class LineConfig(_Model):
    """A counting line, in normalised image coordinates (0..1 of width and height)."""

    id: str = Field(..., pattern=CAMERA_ID_PATTERN, description="Line id, unique per camera.")
    name: str = Field("", description="Human-readable name.")
    start: Point = Field(..., description="First end point [x, y], normalised.")
    end: Point = Field(..., description="Second end point [x, y], normalised.")
    classes: list[str] | None = Field(
        None, description="Count only these class names; null counts vehicles, bicycles and people."
    )
    anchor: Literal["center", "bottom_center", "top_center", "center_left", "center_right"] = Field(
        "center",
        description="Point of a vehicle's box that must cross the line (chosen by measurement).",
    )

    @model_validator(mode="after")
    def _not_degenerate(self) -> LineConfig:
        if self.start == self.end:
            raise ValueError("start and end of a line must differ")
        return self


class ZoneConfig(_Model):
    """A polygon zone, in normalised image coordinates."""

    id: str = Field(..., pattern=CAMERA_ID_PATTERN, description="Zone id, unique per camera.")
    name: str = Field("", description="Human-readable name.")
    polygon: list[Point] = Field(
        ..., min_length=3, description="Corner points [[x, y], ...], normalised."
    )
    classes: list[str] | None = Field(None, description="Classes considered; null = vehicles.")
    queue: bool = Field(
        False,
        description=(
            "A lane: report its queue length in metres (slow vehicles in a chain; needs "
            "the camera's calibration)."
        ),
    )
    allowed_direction_deg: float | None = Field(
        None,
        ge=0.0,
        lt=360.0,
        description=(
            "Compass bearing traffic must follow here (0 north, 90 east); a vehicle driving "
            "against it for analytics.wrong_way_min_m raises a wrong-way alert. Needs "
            "calibration."
        ),
    )
    speed_limit_kmh: float | None = Field(
        None,
        gt=0.0,
        le=400.0,
        description=(
            "Speed limit; above it for analytics.speeding_min_s raises a speeding alert. "
            "Needs calibration."
        ),
    )
    no_stopping_s: float | None = Field(
        None,
        gt=0.0,
        description="No-stopping zone: a vehicle stopped here longer than this raises an alert.",
    )
    congestion: bool = Field(
        False,
        description=(
            "Raise a congestion alert on low mean speed with high occupancy (thresholds "
            "in analytics.*). Needs calibration."
        ),
    )

    @model_validator(mode="after")
    def _has_area(self) -> ZoneConfig:
        pts = self.polygon
        area = sum(
            pts[i][0] * pts[(i + 1) % len(pts)][1] - pts[(i + 1) % len(pts)][0] * pts[i][1]
            for i in range(len(pts))
        )
        if abs(area) * 0.5 < 1e-6:
            raise ValueError(f"zone {self.id!r}: the polygon has no area")
        return self


class CalibrationConfig(_Model):
    """Ground-plane calibration: image points and their positions on the road in metres."""

    image_points: list[Point] = Field(
        ..., min_length=4, description="At least 4 image points [x, y], normalised."
    )
    world_points: list[tuple[float, float]] = Field(
        ...,
        min_length=4,
        description=(
            "The same points on the ground plane, in metres; +x is 90 degrees clockwise "
            "of +y seen from above (x east, y north on a map)."
        ),
    )
    bearing_deg: float = Field(
        0.0,
        ge=0.0,
        lt=360.0,
        description="Compass bearing of the ground frame's +y axis (0 north, 90 east).",
    )
    note: str = Field(
        "", description="Where the points come from (lane widths, dash lengths, survey)."
    )

    @model_validator(mode="after")
    def _same_length(self) -> CalibrationConfig:
        if len(self.image_points) != len(self.world_points):
            raise ValueError(
                f"image_points has {len(self.image_points)} points but world_points has "
                f"{len(self.world_points)}"
            )
        return self


class CameraConfig(_Model):
    """One camera (or video file) and its analytics geometry."""

    id: str = Field(..., pattern=CAMERA_ID_PATTERN, description="Camera id (letters, digits, _.-).")
    source: str = Field(
        ...,
        min_length=1,
        description=(
            "Video source: file path, rtsp://, http(s):// URL; push:// for frames clients send "
            "over gRPC (ProcessFrame, ProcessCameraStream)."
        ),
    )
    target_fps: float | None = Field(
        None, gt=0.0, le=240.0, description="Frames per second taken; null uses the default."
    )
    priority: int = Field(5, ge=0, le=9, description="Batching priority, 9 is served first.")
    loop: bool = Field(False, description="Restart a file source at its end.")
    realtime: bool = Field(
        True, description="Pace a file source at its own frame rate (false: as fast as possible)."
    )
    substream: str | None = Field(
        None,
        min_length=1,
        description=(
            "A second, smaller stream of the same camera (e.g. an RTSP substream at 640x360) "
            "decoded for analytics instead of source; source stays the camera's main stream."
        ),
    )
    max_width: int = Field(
        1280,
        ge=16,
        le=8192,
        description=(
            "Largest frame width kept; larger frames are scaled down as they are decoded "
            "and the ring's slots are sized from it."
        ),
    )
    max_height: int = Field(
        720,
        ge=16,
        le=8192,
        description="Largest frame height kept; larger frames are scaled down as they are decoded.",
    )
    open_timeout_s: float = Field(
        10.0, gt=0.0, description="Timeout of opening and reading a network source."
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp",
        description=(
            "RTSP transport: tcp (one connection, no loss) or udp (lower latency, loses "
            "packets on a busy network)."
        ),
    )
    decoder: Literal["auto", "cpu", "nvdec"] = Field(
        "auto",
        description=(
            "Where the camera is decoded: nvdec (an NVIDIA GPU, the gpu extra), cpu, or auto "
            "(NVDEC when available and under performance.nvdec_cameras_per_worker, else CPU)."
        ),
    )
    ring_format: Literal["rgb24", "i420"] = Field(
        "i420",
        description=(
            "Pixels in the camera's frame ring: i420 (the decoder's YUV 4:2:0 planes copied "
            "as they are: no colour conversion in the decode worker; readers convert, "
            "inference after scaling to the model size) or rgb24 (converted as decoded). "
            "i420 applies to CPU (PyAV) decoding; other sources and odd sizes stay RGB."
        ),
    )
    stall_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="A live source that delivers no frame for this long is closed and reopened.",
    )
    lines: list[LineConfig] = Field(default_factory=list, description="Counting lines.")
    zones: list[ZoneConfig] = Field(default_factory=list, description="Zones.")
    calibration: CalibrationConfig | None = Field(None, description="Ground-plane calibration.")

    @field_validator("lines", "zones")
    @classmethod
    def _unique_ids(cls, items: list[Any]) -> list[Any]:
        return _check_unique_ids(items, "id")

    @model_validator(mode="after")
    def _geometry(self) -> CameraConfig:
        """Calibration points must give a ground plane; rules that need one need it."""
        if self.calibration is not None:
            from itsd.analytics.calibration import Calibration, CalibrationError

            cal = self.calibration
            try:
                Calibration.fit(cal.image_points, cal.world_points, cal.bearing_deg)
            except CalibrationError as err:
                raise ValueError(f"camera {self.id!r}: calibration: {err}") from None
        else:
            for z in self.zones:
                needs = [
                    k
                    for k, v in (
                        ("queue", z.queue),
                        ("allowed_direction_deg", z.allowed_direction_deg is not None),
                        ("speed_limit_kmh", z.speed_limit_kmh is not None),
                        ("congestion", z.congestion),
                    )
                    if v
                ]
                if needs:
                    raise ValueError(
                        f"camera {self.id!r}: zone {z.id!r}: {', '.join(needs)} need(s) "
                        "ground-plane calibration (cameras[].calibration)"
                    )
        return self

    @property
    def live(self) -> bool:
        """True for network streams (paced by the camera), False for files and patterns."""
        return is_live_source(self.source)

    @property
    def lossless(self) -> bool:
        """True for recorded footage processed frame by frame (a file with realtime false):
        decode waits for inference instead of dropping frames."""
        if self.source.startswith(PUSH_SCHEME):
            return True  # pushed frames wait for a slot in the API; none is ever overwritten
        return not self.live and not self.realtime and not self.source.startswith("pattern://")

    @property
    def push(self) -> bool:
        """True for a camera whose frames clients push over gRPC (``push://``): no decoder."""
        return self.source.startswith(PUSH_SCHEME)

    @field_validator("source")
    @classmethod
    def _source_not_blank(cls, source: str) -> str:
        if not source.strip():
            raise ValueError("must not be blank")
        return source


class AlertRuleConfig(_Model):
    """One alert rule of the daemon: a threshold held for a duration."""

    enabled: bool = Field(True, description="Evaluate this rule.")
    threshold: float = Field(0.0, ge=0.0, description="The value that breaks the rule.")
    for_s: float = Field(
        0.0, ge=0.0, le=86400.0, description="How long the rule must be broken before it fires."
    )


def _for(seconds: float) -> Any:
    return Field(
        seconds,
        ge=0.0,
        le=86400.0,
        description="Seconds the rule must be broken before the alert fires.",
    )


class LatencyCriticalRule(AlertRuleConfig):
    """Critical: inference latency (the percentile) above the threshold."""

    threshold: float = Field(0.1, ge=0.0, description="Seconds (the p95 of batches).")
    for_s: float = _for(300.0)


class LatencyWarningRule(AlertRuleConfig):
    """Warning: inference latency (the percentile) above the threshold."""

    threshold: float = Field(0.075, ge=0.0, description="Seconds (the p95 of batches).")
    for_s: float = _for(300.0)


class GpuUtilizationRule(AlertRuleConfig):
    """Critical: a GPU of ``gpus:`` busy less than the threshold (through NVML)."""

    threshold: float = Field(50.0, ge=0.0, le=100.0, description="Percent of time busy.")
    for_s: float = _for(300.0)


class ErrorRateRule(AlertRuleConfig):
    """Critical: errors per item above the threshold."""

    threshold: float = Field(0.05, ge=0.0, le=1.0, description="Ratio, 0..1 (0.05 is 5 %).")
    for_s: float = _for(60.0)


class QueueDepthRule(AlertRuleConfig):
    """Critical: a queue (frame ring, record ring) holding more items than the threshold."""

    threshold: float = Field(1000.0, ge=0.0, description="Items waiting in one queue.")
    for_s: float = _for(60.0)


class ThroughputRule(AlertRuleConfig):
    """Warning: a running camera's frames through the detector below a share of its target."""

    threshold: float = Field(
        0.9, ge=0.0, le=1.0, description="Share of the camera's target fps (0.9 is 90 %)."
    )
    for_s: float = _for(120.0)


class MemoryRule(AlertRuleConfig):
    """Warning: host memory (or a GPU's) in use above the threshold."""

    threshold: float = Field(0.9, ge=0.0, le=1.0, description="Ratio in use, 0..1.")
    for_s: float = _for(120.0)


class AlertsConfig(_Model):
    """Alert rules evaluated in the daemon (``itsd.runtime.alerts``), published as alert
    events (topic alert_events) and shown on the dashboard. The same rules for a
    Prometheus server are in ``deploy/prometheus/itsd-rules.yml``."""

    enabled: bool = Field(True, description="Evaluate the alert rules.")
    window_s: float = Field(
        60.0,
        ge=5.0,
        le=3600.0,
        description="Window of the latency percentile and the error rate, in seconds.",
    )
    latency_quantile: float = Field(
        0.95, gt=0.0, lt=1.0, description="Percentile of inference latency the rules compare."
    )
    inference_latency_critical: LatencyCriticalRule = Field(
        default_factory=LatencyCriticalRule, description="Inference latency, critical."
    )
    inference_latency_warning: LatencyWarningRule = Field(
        default_factory=LatencyWarningRule, description="Inference latency, warning."
    )
    gpu_utilization_low: GpuUtilizationRule = Field(
        default_factory=GpuUtilizationRule, description="GPU utilisation too low, critical."
    )
    error_rate_high: ErrorRateRule = Field(
        default_factory=ErrorRateRule, description="Error rate, critical."
    )
    queue_depth_high: QueueDepthRule = Field(
        default_factory=QueueDepthRule, description="Queue depth, critical."
    )
    throughput_low: ThroughputRule = Field(
        default_factory=ThroughputRule, description="Throughput below the target fps, warning."
    )
    memory_high: MemoryRule = Field(
        default_factory=MemoryRule, description="Memory in use, warning."
    )


class FleetConfig(_Model):
    """A fleet of edge servers sharing cameras through a Kafka consumer group (``itsd.fleet``).

    Cameras live in a compacted registry topic (key = camera id, value = the camera's
    configuration as JSON, a tombstone removes it); each node joins one consumer group on
    it and runs the cameras of the partitions it is assigned."""

    enabled: bool = Field(
        False, description="Join the fleet: run the cameras of the registry partitions assigned."
    )
    node_id: str | None = Field(
        None,
        pattern=CAMERA_ID_PATTERN,
        description="This node's name in events and fleet status; null: the host name.",
    )
    bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers of the fleet; null: kafka.bootstrap_servers."
    )
    registry_topic: str = Field(
        "itsd.cameras", min_length=1, description="Compacted topic of camera configurations."
    )
    status_topic: str = Field(
        "itsd.nodes", min_length=1, description="Compacted topic of node status records."
    )
    group_id: str = Field("itsd-fleet", min_length=1, description="Consumer group of the nodes.")
    partitions: int = Field(
        64,
        ge=1,
        le=10_000,
        description=(
            "Partitions of the registry topic when it is created (many more than nodes: "
            "the unit of assignment)."
        ),
    )
    capacity: int | None = Field(
        None,
        ge=1,
        description=(
            "Most fleet cameras this node runs; the rest of its partitions' cameras wait and "
            "show as not running. null: supervisor.max_cameras minus the file's cameras."
        ),
    )
    assignor: Literal["cooperative-sticky", "range", "roundrobin"] = Field(
        "cooperative-sticky",
        description=(
            "Partition assignment strategy; cooperative-sticky moves only the partitions "
            "that must move."
        ),
    )
    session_timeout_ms: int = Field(
        6000,
        ge=1000,
        le=300_000,
        description="A node silent this long is out of the group and its cameras move.",
    )
    revoke_timeout_s: float = Field(
        15.0,
        gt=0.0,
        le=300.0,
        description=(
            "Longest a node spends detaching the cameras of revoked partitions (and "
            "flushing their events) before the rebalance goes on."
        ),
    )
    status_interval_s: float = Field(
        5.0, gt=0.0, le=3600.0, description="Period of this node's record on the status topic."
    )
    consumer: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Extra librdkafka settings of the fleet's clients (security, ...).",
    )

    def resolved_node_id(self) -> str:
        """node_id, else the host name (cut to a valid id)."""
        return self.node_id or node_name_from_host()


def node_name_from_host() -> str:
    """The host name as a node id (letters, digits, ``_.-``; at most 64 characters)."""
    import re
    import socket

    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).lstrip("_.-")[:64]
    return name or "node"


class Config(_Model):
    """The whole configuration of one itsd daemon."""

    server: ServerConfig = Field(default_factory=ServerConfig, description="Network endpoints.")
    security: SecurityConfig = Field(
        default_factory=SecurityConfig, description="TLS and tokens of the gRPC API."
    )
    api: ApiConfig = Field(default_factory=ApiConfig, description="Limits of the gRPC API.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The detector.")
    performance: PerformanceConfig = Field(
        default_factory=PerformanceConfig, description="Batching and pacing."
    )
    gpus: list[int] = Field(
        default_factory=list, description="GPU indices to use; empty runs inference on the CPU."
    )
    kafka: KafkaConfig = Field(default_factory=KafkaConfig, description="Kafka publishing.")
    outputs: OutputsConfig = Field(default_factory=OutputsConfig, description="Local outputs.")
    analytics: AnalyticsConfig = Field(
        default_factory=AnalyticsConfig,
        description="Speed, zone rules, anomalies and interval summaries.",
    )
    store: StoreConfig = Field(
        default_factory=StoreConfig, description="The aggregates store (SQLite or PostgreSQL)."
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    supervisor: SupervisorConfig = Field(
        default_factory=SupervisorConfig, description="Process supervision."
    )
    fleet: FleetConfig = Field(
        default_factory=FleetConfig, description="A fleet of nodes sharing cameras over Kafka."
    )
    alerts: AlertsConfig = Field(
        default_factory=AlertsConfig,
        description="Alert rules: thresholds in seconds (latency), percent (GPU), ratios.",
    )
    production: bool = Field(
        False,
        description="Production mode: refuse demo-only settings such as exit_when_sources_end.",
    )
    pid_file: Path | None = Field(
        None, description="Pid file; null uses /run/itsd/itsd.pid as root, else /tmp/itsd-UID.pid."
    )
    state_dir: Path | None = Field(
        None,
        description=(
            "Directory for the daemon's state (cameras registered at run time, persisted "
            "totals); null: /var/lib/itsd as root, else beside the pid file."
        ),
    )
    cameras: list[CameraConfig] = Field(default_factory=list, description="Cameras.")

    @field_validator("cameras")
    @classmethod
    def _unique_camera_ids(cls, cams: list[CameraConfig]) -> list[CameraConfig]:
        return _check_unique_ids(cams, "camera id")

    @field_validator("gpus")
    @classmethod
    def _gpus_non_negative(cls, gpus: list[int]) -> list[int]:
        if any(g < 0 for g in gpus):
            raise ValueError("GPU indices must be >= 0")
        return gpus

    @model_validator(mode="after")
    def _production_rules(self) -> Config:
        if self.production and self.supervisor.exit_when_sources_end:
            raise ValueError("supervisor.exit_when_sources_end is for demos, not production")
        return self

    @model_validator(mode="after")
    def _cameras_fit(self) -> Config:
        if len(self.cameras) > self.supervisor.max_cameras:
            raise ValueError(
                f"{len(self.cameras)} cameras configured but supervisor.max_cameras is "
                f"{self.supervisor.max_cameras}"
            )
        return self

    @model_validator(mode="after")
    def _fleet_fits(self) -> Config:
        cap = self.fleet.capacity
        if cap is not None and cap + len(self.cameras) > self.supervisor.max_cameras:
            raise ValueError(
                f"fleet.capacity ({cap}) plus the {len(self.cameras)} file camera(s) exceeds "
                f"supervisor.max_cameras ({self.supervisor.max_cameras})"
            )
        return self

    def fleet_capacity(self) -> int:
        """Fleet cameras this node takes: fleet.capacity, else what max_cameras leaves."""
        if self.fleet.capacity is not None:
            return self.fleet.capacity
        return max(0, self.supervisor.max_cameras - len(self.cameras))

    def fleet_bootstrap(self) -> str:
        """Bootstrap servers of the fleet: fleet.bootstrap_servers, else kafka's."""
        return self.fleet.bootstrap_servers or self.kafka.bootstrap_servers

    def resolved_pid_file(self) -> Path:
        """The pid file path in effect."""
        if self.pid_file is not None:
            return self.pid_file
        return default_pid_file()

    def resolved_state_dir(self) -> Path:
        """The state directory in effect: state_dir, else /var/lib/itsd as root, else
        ``<pid file without suffix>.state`` beside the pid file (``/tmp/itsd-1000.state``)."""
        if self.state_dir is not None:
            return self.state_dir
        if os.geteuid() == 0:
            return Path("/var/lib/itsd")
        pid_file = self.resolved_pid_file()
        return pid_file.parent / f"{pid_file.stem}.state"

    def resolved_inference_workers(self) -> int:
        """Inference processes to run: the setting, else one per GPU or per CPU core."""
        if self.performance.inference_workers:
            return self.performance.inference_workers
        if self.gpus:
            return len(self.gpus)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(8, (cores or 1) // max(1, self.performance.cpu_threads)))

    def resolved_decode_workers(self) -> int:
        """Decode processes to run: the setting, else one per CPU core (at most 32)."""
        if self.performance.decode_workers:
            return self.performance.decode_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(32, cores or 1))

    def resolved_analytics_workers(self) -> int:
        """Analytics shards to run: the setting, else one per 4 CPU cores (at most 16)."""
        if self.performance.analytics_workers:
            return self.performance.analytics_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(16, (cores or 1) // 4))

    def camera_fps(self, camera: CameraConfig) -> float:
        """Frames per second taken from ``camera``."""
        return camera.target_fps if camera.target_fps is not None else self.performance.target_fps


_LOCAL_BINDS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", "ip6-localhost"})


def is_local_bind(bind: str) -> bool:
    """True for an address only this machine can reach (loopback or a unix socket)."""
    host = bind.strip()
    return host in _LOCAL_BINDS or host.startswith(("127.", "unix:"))


def security_warnings(config: Config) -> list[str]:
    """Warnings about settings that expose the daemon (``itsd config check`` prints them)."""
    out = []
    sec = config.security
    if not is_local_bind(config.server.grpc_bind) and not sec.tls and not sec.has_tokens:
        out.append(
            f"server.grpc_bind is {config.server.grpc_bind}, reachable from other machines, "
            "but the gRPC API has neither TLS (security.tls_cert/tls_key) nor a token "
            "(security.admin_tokens/read_tokens): anyone who reaches the port can add, remove "
            "and reload cameras"
        )
    elif not is_local_bind(config.server.grpc_bind) and sec.has_tokens and not sec.tls:
        out.append(
            f"server.grpc_bind is {config.server.grpc_bind} without TLS: bearer tokens cross "
            "the network in clear text (set security.tls_cert and security.tls_key)"
        )
    http_bind = config.server.monitoring_bind
    if config.server.monitoring_port and not is_local_bind(http_bind):
        if not sec.tls and not sec.has_tokens:
            out.append(
                f"server.monitoring_bind is {http_bind}, reachable from other machines, but "
                "the monitoring port has neither TLS nor a token: anyone who reaches it sees "
                "the metrics, the cameras and their pictures"
            )
        elif sec.has_tokens and not sec.tls:
            out.append(
                f"server.monitoring_bind is {http_bind} without TLS: bearer tokens cross the "
                "network in clear text (set security.tls_cert and security.tls_key)"
            )
    return out


def is_live_source(source: str) -> bool:
    """True for network streams (paced by the camera), False for files and patterns."""
    if source.startswith(("pattern://", "file://", "sample:")):
        return False
    return "://" in source


def default_pid_file() -> Path:
    """The pid file used when the configuration names none."""
    if os.geteuid() == 0:
        return Path("/run/itsd/itsd.pid")
    return Path(f"/tmp/itsd-{os.geteuid()}.pid")


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``source: key.path: what was expected (got X)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"])
        loc = loc.replace(".[", "[")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see `itsd config show-defaults`)"
        got = e.get("input")
        got_s = "" if e["type"] in ("extra_forbidden", "missing") else f" (got {got!r})"
        if len(got_s) > 80:
            got_s = got_s[:77] + "...)"
        lines.append(f"{source}: {loc or '<top level>'}: {msg}{got_s}")
    return "\n".join(lines)


def _default(model: BaseModel, name: str) -> Any:
    return type(model).model_fields[name].get_default(call_default_factory=True)


def _set_keys(node: BaseModel, parts: list[str], prefix: str) -> Iterator[str]:
    """Paths under ``node`` matching ``parts`` (see NOT_YET_AVAILABLE) that differ from
    their field's default."""
    head, rest = parts[0], parts[1:]
    fields = type(node).model_fields
    names = list(fields) if head == "*" else [head.removesuffix("[]")]
    for name in names:
        path = f"{prefix}{name}"
        value = getattr(node, name)
        if head.endswith("[]"):
            for i, item in enumerate(value):
                yield from _set_keys(item, rest, f"{path}[{i}].")
        elif head == "*" and isinstance(value, BaseModel):
            yield from _set_keys(value, ["*"], f"{path}.")
        elif rest:
            yield from _set_keys(value, rest, f"{path}.")
        elif path not in _WILDCARD_EXEMPT and value != _default(node, name):
            yield path


def unavailable_keys(config: Config) -> list[tuple[str, str]]:
    """``(key path, reason)`` for every key of NOT_YET_AVAILABLE set to a non-default value."""
    return [
        (path, reason)
        for pattern, reason in NOT_YET_AVAILABLE.items()
        for path in _set_keys(config, pattern.split("."), "")
    ]


def unavailable_camera_keys(camera: CameraConfig, source: str = "config") -> list[str]:
    """One message per ``cameras[].*`` key of NOT_YET_AVAILABLE that ``camera`` sets, for a
    camera registered at run time: ``config: zones: not available in this version (...)``."""
    prefix = "cameras[]."
    return [
        f"{source}: {path}: not available in this version ({reason}); remove the key"
        for pattern, reason in NOT_YET_AVAILABLE.items()
        if pattern.startswith(prefix)
        for path in _set_keys(camera, pattern.removeprefix(prefix).split("."), "")
    ]


def not_yet_available_reason(key: str) -> str | None:
    """The reason ``key`` is refused, for a key path with list steps written ``[]``
    (``cameras[].zones``); None when the key is available."""
    if key in NOT_YET_AVAILABLE:
        return NOT_YET_AVAILABLE[key]
    if key in _WILDCARD_EXEMPT:
        return None
    for pattern, reason in NOT_YET_AVAILABLE.items():
        if pattern.endswith(".*") and key.startswith(pattern[:-1]):
            return reason
    return None


def check_available(config: Config, source: str) -> Config:
    """Refuse keys whose feature this version does not have; one line per key."""
    found = unavailable_keys(config)
    if found:
        raise ConfigError(
            "\n".join(
                f"{source}: {path}: not available in this version ({reason}); remove the key"
                for path, reason in found
            )
        )
    return config


def _validate(data: dict[str, Any], source: str) -> Config:
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    return check_available(config, source)


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate ``data`` (parsed YAML) into a Config; ConfigError names source and key path.

    Keys whose feature is not available yet (NOT_YET_AVAILABLE) are refused after validation.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    return _validate(data, source)


def _decode(raw: bytes, source: Path) -> str:
    """The text of a configuration file; ConfigError if it is not UTF-8 text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        where = f"invalid UTF-8 at byte {err.start}"
        raise ConfigError(f"{source}: not a text file ({where})") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ConfigError(f"{source}: not a text file (NUL byte at byte {nul})")
    return text


def _yaml_error(err: yaml.YAMLError, text: str) -> str:
    """``line L, column C: problem`` for a PyYAML error."""
    if isinstance(err, yaml.reader.ReaderError):
        # Raised for characters YAML does not allow (control characters); it carries an
        # offset into the text, not a line mark.
        before = text[: err.position]
        line = before.count("\n") + 1
        column = err.position - (before.rfind("\n") + 1) + 1
        char = err.character if isinstance(err.character, int) else ord(err.character)
        return f"line {line}, column {column}: character #x{char:04x} is not allowed ({err.reason})"
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(err, "problem", None) or str(err)
    return f"{where}{problem}"


def load_config(path: str | Path | None) -> Config:
    """Read and validate a YAML config file; no path gives the embedded defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{p}: configuration file not found") from None
    except OSError as err:
        raise ConfigError(f"{p}: cannot read configuration: {err.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{p}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; not a configuration file"
        )
    text = _decode(raw, p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: invalid YAML: {_yaml_error(err, text)}") from None
    return parse_config(data, str(p))


def apply_overrides(
    config: Config, overrides: dict[str, Any], source: str = "command line"
) -> Config:
    """Return a new Config with dotted-key overrides applied (``{"model.iou": 0.5}``).

    ``None`` values are skipped, so unset CLI flags never override the file. The result is
    checked like :func:`parse_config`'s, keys not available yet included.
    """
    data = config.model_dump(mode="python")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return _validate(data, source)


def config_to_json(config: Config) -> str:
    """Serialise for a child process (the reverse is :func:`config_from_json`).

    The ``security`` section stays behind: stages never need tokens or key paths.
    """
    return config.model_copy(update={"security": SecurityConfig()}).model_dump_json()


def config_from_json(text: str) -> Config:
    """Rebuild a Config sent by :func:`config_to_json`."""
    return Config.model_validate_json(text)
