"""The metric registry: every counter, gauge and state word of itsd, defined once.

A ``MetricDef`` names a metric (Prometheus style, ``itsd_...``), its kind, its help text
and its labels. Stages write values into their own shared-memory cell table
(``itsd.shm.cells``) through ``MetricWriter``; the supervisor reads every table with
``read_table`` and gets ``Sample``s that carry their definition, so ``/metrics``, the
gRPC answers and ``tools/shm_inspect.py`` print metrics by name and help, never by an
index. Series are keyed by name and label values (``camera``, ``sink``, ``gpu`` ...):
there is no fixed number of slots per camera or stage.

Kinds:

* ``counter``: only grows during a run (u64 in the cell);
* ``gauge``: a float that goes up and down (the cell holds the float64's bits);
* ``state``: an internal word (next frame id, end-of-file flag, applied command
  sequence); shown by ``shm_inspect`` but not exported to Prometheus;
* ``histogram``: observations counted in fixed buckets (``MetricDef.buckets``). The
  writer keeps one counter cell per bucket (``<name>_bucket{...,le="0.1"}``, the count
  of observations in that bucket alone, not cumulative, so an observation is one
  increment), ``<name>_sum`` (in units of ``scale``) and ``<name>_count``. Readers get
  ``Sample``s with ``part`` set and merge them with ``merge_histograms`` (several
  writers of one series add up; buckets become cumulative there), and ``quantile``
  estimates a percentile the way Prometheus' ``histogram_quantile`` does.

This module must never import a stage, the supervisor, ``control`` or ``monitor``.
"""

from __future__ import annotations

import bisect
import enum
import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from itsd.shm.cells import CellTable


class Kind(enum.StrEnum):
    """What a metric's value means."""

    COUNTER = "counter"
    GAUGE = "gauge"
    STATE = "state"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric: name, kind, help text and label names."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    #: Who writes it: a stage kind ("decode", "infer", "analyze", "publish"), "ring"
    #: (read from ring headers) or "supervisor".
    source: str = ""
    #: Exported value = stored integer x scale (time counters store microseconds).
    scale: float = 1.0
    #: Upper bounds of a histogram's buckets, ascending (``+Inf`` is implied).
    buckets: tuple[float, ...] = ()

    @property
    def exported(self) -> bool:
        """True for metrics that appear in ``/metrics``."""
        return self.kind is not Kind.STATE


REGISTRY: dict[str, MetricDef] = {}
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def define(
    name: str,
    kind: Kind,
    help: str,
    labels: tuple[str, ...] = (),
    source: str = "",
    scale: float = 1.0,
    buckets: tuple[float, ...] = (),
) -> MetricDef:
    """Register a metric; a name may be defined once."""
    if kind is Kind.HISTOGRAM:
        if not buckets or list(buckets) != sorted(set(buckets)) or not math.isfinite(buckets[-1]):
            raise ValueError(f"histogram {name!r} needs finite buckets in ascending order")
        if name.endswith(("_total", "_bucket", "_sum", "_count")) or "le" in labels:
            raise ValueError(f"histogram {name!r}: reserved suffix or label 'le'")
    elif buckets:
        raise ValueError(f"metric {name!r}: only histograms have buckets")
    if not _NAME_RE.match(name):
        raise ValueError(f"metric name {name!r} is not a valid Prometheus name")
    if name in REGISTRY:
        raise ValueError(f"metric {name!r} is defined twice")
    if kind is Kind.COUNTER and not name.endswith("_total"):
        raise ValueError(f"counter {name!r} must end in _total")
    d = MetricDef(name, kind, help, labels, source, scale, tuple(float(b) for b in buckets))
    REGISTRY[name] = d
    return d


C, G, S, H = Kind.COUNTER, Kind.GAUGE, Kind.STATE, Kind.HISTOGRAM
CAM = ("camera",)

# -- decode (one table per camera) -------------------------------------------------------
DECODE_FRAMES = define(
    "itsd_decode_frames_total", C, "Frames decoded from the source.", CAM, "decode"
)
DECODE_WRITTEN = define(
    "itsd_decode_frames_written_total", C, "Frames written to the camera's ring.", CAM, "decode"
)
DECODE_SKIPPED = define(
    "itsd_decode_frames_skipped_total",
    C,
    "Decoded frames not kept because the camera runs below the source's frame rate.",
    CAM,
    "decode",
)
DECODE_ERRORS = define(
    "itsd_decode_errors_total", C, "Corrupt packets skipped and failed reads.", CAM, "decode"
)
DECODE_RECONNECTS = define(
    "itsd_decode_reconnects_total",
    C,
    "Attempts to open the source again after it failed or ended.",
    CAM,
    "decode",
)
DECODE_TS_JUMPS = define(
    "itsd_decode_timestamp_jumps_total",
    C,
    "Times a file's timestamps jumped (joined segments, a clock reset); timing restarts there.",
    CAM,
    "decode",
)
DECODE_WAITS = define(
    "itsd_decode_backpressure_seconds_total",
    C,
    "Seconds a lossless source waited for inference to free a slot of its ring.",
    CAM,
    "decode",
    1e-6,
)
DECODE_LAST_FRAME = define(
    "itsd_decode_last_frame_timestamp_seconds",
    G,
    "Unix time of the last frame written to the ring.",
    CAM,
    "decode",
)
DECODE_NEXT_FRAME_ID = define(
    "itsd_decode_next_frame_id",
    S,
    "Next frame id (survives a restart of the stage).",
    CAM,
    "decode",
)
DECODE_EOF = define("itsd_decode_eof", S, "1 once a non-looping file source ended.", CAM, "decode")
DECODE_FAILED = define(
    "itsd_decode_source_failed",
    S,
    "1 once the camera was given up: its file cannot be opened in a run that ends with its "
    "sources.",
    CAM,
    "decode",
)
DECODE_STALLS = define(
    "itsd_decode_stalls_total",
    C,
    "Times the source delivered nothing for the camera's stall_timeout_s and was reopened.",
    CAM,
    "decode",
)
DECODE_TIME = define(
    "itsd_decode_seconds_total",
    C,
    "Seconds spent decoding and converting the frames kept (divide by frames written for "
    "the mean decode time).",
    CAM,
    "decode",
    1e-6,
)
DECODE_WORKER_CAMERAS = define(
    "itsd_decode_worker_cameras",
    G,
    "Cameras a decode worker runs.",
    (),
    "decode",
)

# -- inference -----------------------------------------------------------------------------
INFER_FRAMES = define(
    "itsd_infer_frames_total", C, "Frames that went through the detector.", CAM, "infer"
)
INFER_BATCHES = define("itsd_infer_batches_total", C, "Inference batches run.", (), "infer")
INFER_SECONDS = define(
    "itsd_infer_seconds_total", C, "Seconds spent running the detector.", (), "infer", 1e-6
)
INFER_CAMERAS = define(
    "itsd_infer_cameras", G, "Camera rings the inference stage reads.", (), "infer"
)
INFER_EXPIRED = define(
    "itsd_infer_frames_expired_total",
    C,
    "Frames dropped unprocessed because they were older than performance.frame_deadline_ms.",
    CAM,
    "infer",
)
INFER_SKIPPED = define(
    "itsd_infer_frames_skipped_total",
    C,
    "Frames skipped while the inference circuit breaker was open (breaker_fallback: skip).",
    CAM,
    "infer",
)
INFER_ERRORS = define(
    "itsd_infer_errors_total",
    C,
    "Failed inference batches, by kind: cuda, oom, timeout, other.",
    ("kind",),
    "infer",
)
INFER_BREAKER = define(
    "itsd_infer_breaker_state",
    G,
    "Inference circuit breaker: 0 closed, 1 half-open (probing), 2 open (degraded).",
    (),
    "infer",
)
INFER_BATCH_LIMIT = define(
    "itsd_infer_batch_limit",
    G,
    "Batch size the inference worker adapts to hold performance.latency_target_ms.",
    (),
    "infer",
)

# -- analytics -----------------------------------------------------------------------------
ANALYZE_RECORDS = define(
    "itsd_analyze_frames_total", C, "Frames of detections analysed.", CAM, "analyze"
)
ANALYZE_EVENTS = define(
    "itsd_analyze_events_total", C, "Events handed to the publisher.", CAM, "analyze"
)
ANALYZE_ERRORS = define(
    "itsd_analyze_bad_records_total",
    C,
    "Detection records skipped: malformed, or for a camera already removed.",
    (),
    "analyze",
)
ANALYZE_CROSSINGS = define(
    "itsd_analyze_line_crossings_total", C, "Line crossings counted.", CAM, "analyze"
)
ANALYZE_TRACKS = define(
    "itsd_analyze_tracks_in_view", G, "Confirmed tracks in view.", CAM, "analyze"
)
ANALYZE_LATENCY_SUM = define(
    "itsd_analyze_latency_seconds_total",
    C,
    "Sum of the times from capture to analytics over every frame, seconds "
    "(divide by itsd_analyze_frames_total for the mean).",
    (),
    "analyze",
    1e-6,
)

# -- publisher -----------------------------------------------------------------------------
PUBLISH_EVENTS = define(
    "itsd_publish_events_total", C, "Events written to an output.", ("sink",), "publish"
)
PUBLISH_ERRORS = define(
    "itsd_publish_errors_total", C, "Failed writes to an output (retried).", ("sink",), "publish"
)
PUBLISH_SECONDS = define(
    "itsd_publish_seconds_total", C, "Seconds spent writing events.", ("sink",), "publish", 1e-6
)
PUBLISH_HELD = define(
    "itsd_publish_events_held",
    G,
    "Events held in the ring because an output refuses them.",
    ("sink",),
    "publish",
)

PUBLISH_ALERT_SEQ = define(
    "itsd_publish_alert_seq",
    S,
    "Sequence number of the last daemon alert transition published (survives a restart).",
    (),
    "publish",
)
KAFKA_PRODUCED = define(
    "itsd_kafka_produced_total",
    C,
    "Events handed to the Kafka producer (first attempts and replays from the spool).",
    (),
    "publish",
)
KAFKA_DELIVERED = define(
    "itsd_kafka_delivered_total", C, "Events the broker acknowledged (acks=all).", (), "publish"
)
KAFKA_FAILED = define(
    "itsd_kafka_failed_total",
    C,
    "Events whose delivery failed or timed out (they go to the spool, not lost).",
    (),
    "publish",
)
KAFKA_DELIVERY_SECONDS = define(
    "itsd_kafka_delivery_seconds_total",
    C,
    "Sum of the times from produce to acknowledgement (divide by "
    "itsd_kafka_delivered_total for the mean).",
    (),
    "publish",
    1e-6,
)
KAFKA_CONNECTED = define(
    "itsd_kafka_connected", G, "1 while events go straight to the broker.", (), "publish"
)
SPOOL_SPOOLED = define(
    "itsd_spool_events_total", C, "Events written to the disk spool.", (), "publish"
)
SPOOL_REPLAYED = define(
    "itsd_spool_replayed_total",
    C,
    "Spooled events delivered to the broker once it was back.",
    (),
    "publish",
)
SPOOL_DROPPED = define(
    "itsd_spool_dropped_total",
    C,
    "Events that could be neither delivered nor spooled (spool full or unwritable): lost.",
    (),
    "publish",
)
SPOOL_CORRUPT = define(
    "itsd_spool_corrupt_records_total",
    C,
    "Spool records skipped because their checksum or length was wrong (a torn write).",
    (),
    "publish",
)
SPOOL_BYTES = define("itsd_spool_bytes", G, "Bytes in the disk spool.", (), "publish")
SPOOL_EVENTS = define("itsd_spool_pending_events", G, "Events waiting in the spool.", (), "publish")
JSONL_ROTATIONS = define(
    "itsd_jsonl_rotations_total", C, "Times the JSONL file was rotated by size.", (), "publish"
)
STORE_WRITTEN = define(
    "itsd_store_intervals_written_total",
    C,
    "Intervals committed to the aggregates store (replays of the buffer included).",
    (),
    "publish",
)
STORE_BUFFERED = define(
    "itsd_store_intervals_buffered_total",
    C,
    "Intervals written to the store's disk buffer while the database was away.",
    (),
    "publish",
)
STORE_PENDING = define(
    "itsd_store_buffer_pending_intervals",
    G,
    "Intervals waiting in the store's disk buffer.",
    (),
    "publish",
)
STORE_SKIPPED = define(
    "itsd_store_summaries_skipped_total",
    C,
    "analytics_summary events not stored: reason no_interval (older analytics), invalid "
    "(malformed) or rejected (refused by the database).",
    ("reason",),
    "publish",
)
STORE_CONNECTED = define(
    "itsd_store_connected", G, "1 while intervals go straight to the database.", (), "publish"
)

# -- every stage -----------------------------------------------------------------------------
STAGE_COMMAND_SEQ = define(
    "itsd_stage_command_seq", S, "Sequence number of the last command this stage applied."
)

# -- rings (read from the ring headers by the supervisor) -----------------------------------
RING_WRITTEN = define(
    "itsd_ring_frames_written_total", C, "Frames written into a camera's ring.", CAM, "ring"
)
RING_READ = define(
    "itsd_ring_frames_read_total", C, "Frames inference took from a camera's ring.", CAM, "ring"
)
RING_DROPPED = define(
    "itsd_ring_frames_dropped_total",
    C,
    "Frames overwritten or skipped before inference took them (newest frame wins).",
    CAM,
    "ring",
)
RING_RECORDS = define(
    "itsd_ring_records_total", C, "Records put on a record ring.", ("ring",), "ring"
)
RING_USED = define("itsd_ring_used_ratio", G, "Fill level of a ring, 0..1.", ("ring",), "ring")

# -- supervisor ------------------------------------------------------------------------------
SUP_UP = define(
    "itsd_up", G, "1 while the pipeline serves (healthy or degraded).", (), "supervisor"
)
SUP_RESTARTS = define(
    "itsd_stage_restarts_total", C, "Stage processes restarted.", ("stage",), "supervisor"
)
SUP_STAGE_RUNNING = define(
    "itsd_stage_running", G, "1 while a stage process runs.", ("stage",), "supervisor"
)
SUP_CAMERAS = define("itsd_cameras", G, "Cameras registered.", (), "supervisor")
SUP_CAMERA_UP = define("itsd_camera_up", G, "1 while a camera delivers frames.", CAM, "supervisor")
SUP_CAMERA_INFO = define(
    "itsd_camera_info",
    G,
    "Always 1; the labels say which inference worker reads the camera and where it came from.",
    ("camera", "worker", "origin"),
    "supervisor",
)
SUP_CAMERA_FPS = define(
    "itsd_camera_fps", G, "Frames per second per camera and step.", ("camera", "step"), "supervisor"
)
SUP_FPS = define(
    "itsd_fps", G, "Frames per second, all cameras, per step.", ("step",), "supervisor"
)
SUP_LATENCY = define(
    "itsd_pipeline_latency_seconds",
    G,
    "Mean time from capture to analytics over the last few seconds.",
    (),
    "supervisor",
)
SUP_LINE_CROSSINGS = define(
    "itsd_line_crossings_total",
    C,
    "Line crossings per camera, line, direction and class since the totals began.",
    ("camera", "line", "direction", "class"),
    "supervisor",
)
SUP_COMMANDS = define(
    "itsd_commands_total", C, "Camera changes applied (add, remove, update).", ("op",), "supervisor"
)

# -- the service metrics of the original design (names kept as the design has them) -------
#: Buckets hold the alert thresholds (75 and 100 ms) as bounds, so rules on them are exact.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
PROCESSING_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ML_INFER_LATENCY = define(
    "ml_inference_latency_seconds",
    H,
    "Time the detector took to run one batch, seconds.",
    (),
    "infer",
    1e-6,
    LATENCY_BUCKETS,
)
ML_PROCESSING = define(
    "ml_processing_seconds",
    H,
    "Total processing time per frame: from capture to the end of analytics, seconds.",
    (),
    "analyze",
    1e-6,
    PROCESSING_BUCKETS,
)
ML_THROUGHPUT = define(
    "ml_throughput_fps",
    G,
    "Frames per second through the detector, per camera.",
    ("camera_id",),
    "supervisor",
)
ML_TARGET_FPS = define(
    "ml_target_fps",
    G,
    "Frames per second asked of each camera (the throughput alert compares against it).",
    ("camera_id",),
    "supervisor",
)
ML_ERROR_RATE = define(
    "ml_error_rate",
    G,
    "Errors per item over the last minute, 0..1: decode errors, bad records and failed "
    "or dropped writes, over frames decoded plus those errors.",
    (),
    "supervisor",
)
QUEUE_DEPTH = define(
    "queue_depth",
    G,
    "Items waiting: unread frames of a camera's frame ring, unread records of a record ring.",
    ("queue",),
    "supervisor",
)
GPU_UTILIZATION = define(
    "gpu_utilization",
    G,
    "GPU busy time over NVML's last sample period, percent (only with an NVIDIA GPU).",
    ("gpu",),
    "supervisor",
)
GPU_MEMORY_USED = define(
    "gpu_memory_used_bytes", G, "GPU memory in use, bytes (NVML).", ("gpu",), "supervisor"
)
GPU_MEMORY_TOTAL = define(
    "gpu_memory_total_bytes", G, "GPU memory installed, bytes (NVML).", ("gpu",), "supervisor"
)
MEMORY_USED = define(
    "memory_used_ratio",
    G,
    "Host memory in use, 0..1 (1 - MemAvailable / MemTotal).",
    (),
    "supervisor",
)
ALERTS_FIRING = define(
    "itsd_alert_firing",
    G,
    "1 while an alert rule of the daemon fires (itsd.runtime.alerts), else 0.",
    ("rule", "severity"),
    "supervisor",
)

#: Metrics named as the original design names them (no ``itsd_`` prefix).
DESIGN_METRICS = frozenset(
    d.name
    for d in (
        ML_INFER_LATENCY,
        ML_PROCESSING,
        ML_THROUGHPUT,
        ML_TARGET_FPS,
        ML_ERROR_RATE,
        QUEUE_DEPTH,
        GPU_UTILIZATION,
        GPU_MEMORY_USED,
        GPU_MEMORY_TOTAL,
        MEMORY_USED,
    )
)


# -- keys ---------------------------------------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def series_key(defn: MetricDef, labels: Mapping[str, str]) -> str:
    """The cell key of one series: ``name{a="x",b="y"}`` in the definition's label order."""
    if set(labels) != set(defn.labels):
        raise ValueError(
            f"metric {defn.name}: labels {sorted(labels)} given, {list(defn.labels)} defined"
        )
    if not defn.labels:
        return defn.name
    inner = ",".join(f'{k}="{_escape(str(labels[k]))}"' for k in defn.labels)
    return f"{defn.name}{{{inner}}}"


_LABEL_RE = re.compile(r'([a-z_][a-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """Inverse of ``series_key``: (name, labels)."""
    if "{" not in key:
        return key, {}
    name, rest = key.split("{", 1)
    labels = {
        m.group(1): m.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        for m in _LABEL_RE.finditer(rest.rstrip("}"))
    }
    return name, labels


def _f2u(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", float(value)))[0])


def _u2f(raw: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", raw))[0])


@dataclass(frozen=True, slots=True)
class Sample:
    """One series' value, read from a cell table."""

    defn: MetricDef
    labels: Mapping[str, str]
    value: float
    #: For a histogram: "bucket" (``labels`` has ``le``; the count in that bucket alone),
    #: "sum" or "count"; empty for other kinds.
    part: str = ""

    @property
    def series_name(self) -> str:
        """The exposition name: ``<name>_bucket`` etc. for histogram parts."""
        return f"{self.defn.name}_{self.part}" if self.part else self.defn.name


class Cell:
    """A writer's handle on one series."""

    __slots__ = ("_float", "_index", "_table")

    def __init__(self, table: CellTable, index: int, is_float: bool) -> None:
        self._table = table
        self._index = index
        self._float = is_float

    def inc(self, n: int = 1) -> None:
        """Add ``n`` (counters and states)."""
        self._table.add(self._index, n)

    def set(self, value: float) -> None:
        """Store a value (a gauge's float, a state's integer)."""
        self._table.store(self._index, _f2u(value) if self._float else int(value))

    def get(self) -> float:
        """The value now."""
        raw = self._table.load(self._index)
        return _u2f(raw) if self._float else raw

    def get_int(self) -> int:
        """The value as an integer (counters and states)."""
        return int(self.get())


class MetricWriter:
    """A stage's door to its cell table: one ``Cell`` per (metric, labels)."""

    def __init__(self, table: CellTable) -> None:
        self.table = table
        self._cells: dict[str, Cell] = {}

    def cell(self, defn: MetricDef, **labels: str) -> Cell:
        """The cell of one series (created with value 0 the first time)."""
        key = series_key(defn, labels)
        cell = self._cells.get(key)
        if cell is None:
            cell = Cell(self.table, self.table.cell(key), defn.kind is Kind.GAUGE)
            self._cells[key] = cell
        return cell

    def histogram(self, defn: MetricDef, **labels: str) -> HistogramCells:
        """The cells of one histogram series (created at 0 the first time)."""
        if defn.kind is not Kind.HISTOGRAM:
            raise ValueError(f"metric {defn.name} is not a histogram")
        series_key(defn, labels)  # checks the label names
        bucket_def = MetricDef(f"{defn.name}_bucket", Kind.COUNTER, "", (*defn.labels, "le"))
        part_def = MetricDef(f"{defn.name}_sum", Kind.COUNTER, "", defn.labels)
        count_def = MetricDef(f"{defn.name}_count", Kind.COUNTER, "", defn.labels)
        les = [_format_le(b) for b in defn.buckets] + ["+Inf"]
        buckets = [self._raw_cell(series_key(bucket_def, {**labels, "le": le})) for le in les]
        return HistogramCells(
            defn,
            buckets,
            self._raw_cell(series_key(part_def, labels)),
            self._raw_cell(series_key(count_def, labels)),
        )

    def _raw_cell(self, key: str) -> Cell:
        cell = self._cells.get(key)
        if cell is None:
            cell = Cell(self.table, self.table.cell(key), False)
            self._cells[key] = cell
        return cell

    def retire_label(self, label: str, value: str) -> int:
        """Retire every series whose ``label`` equals ``value`` (a removed camera)."""
        n = 0
        for key in self.table.live_keys():
            _, labels = parse_key(key)
            if labels.get(label) == value:
                self.table.retire(key)
                self._cells.pop(key, None)
                n += 1
        return n


def _histogram_part(name: str) -> tuple[MetricDef, str] | None:
    """(histogram, part) of a cell name such as ``x_bucket``; None for other names."""
    for part in ("bucket", "sum", "count"):
        base = name.removesuffix(f"_{part}")
        defn = REGISTRY.get(base) if base != name else None
        if defn is not None and defn.kind is Kind.HISTOGRAM:
            return defn, part
    return None


def _format_le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``0.1``, ``1.0``)."""
    return repr(float(bound))


class HistogramCells:
    """A writer's handle on one histogram series: ``observe`` is three increments."""

    __slots__ = ("_bounds", "_buckets", "_count", "_scale", "_sum")

    def __init__(self, defn: MetricDef, buckets: list[Cell], sum_: Cell, count: Cell) -> None:
        self._bounds = defn.buckets
        self._scale = defn.scale
        self._buckets = buckets
        self._sum = sum_
        self._count = count

    def observe(self, value: float) -> None:
        """Count one observation (negative values count as 0)."""
        value = max(0.0, value)
        self._buckets[bisect.bisect_left(self._bounds, value)].inc()
        self._sum.inc(round(value / self._scale))
        self._count.inc()


def read_table(table: CellTable) -> list[Sample]:
    """Every live series of a table whose metric is registered (others are skipped).

    A histogram gives one sample per cell, with ``part`` set (see the module docstring).
    """
    out = []
    for key, raw in table.items():
        name, labels = parse_key(key)
        defn = REGISTRY.get(name)
        if defn is None:
            hp = _histogram_part(name)
            if hp is None:
                continue
            defn, part = hp
            value = raw * defn.scale if part == "sum" else float(raw)
            out.append(Sample(defn, labels, value, part))
            continue
        value = _u2f(raw) if defn.kind is Kind.GAUGE else raw * defn.scale
        out.append(Sample(defn, labels, value))
    return out


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """One histogram series: cumulative bucket counts (one per bound, then +Inf)."""

    defn: MetricDef
    labels: Mapping[str, str]
    cumulative: tuple[float, ...]
    sum: float
    count: float

    def minus(self, older: HistogramValue | None) -> HistogramValue:
        """What was observed since ``older`` (the whole of it if the counts restarted)."""
        if older is None or older.count > self.count:
            return self
        return HistogramValue(
            self.defn,
            self.labels,
            tuple(a - b for a, b in zip(self.cumulative, older.cumulative, strict=True)),
            self.sum - older.sum,
            self.count - older.count,
        )

    def quantile(self, q: float) -> float:
        """Estimated ``q`` quantile (NaN without observations); see ``quantile``."""
        return quantile(self.defn.buckets, self.cumulative, q)


class _HistAcc:
    __slots__ = ("buckets", "count", "defn", "labels", "sum")

    def __init__(self, defn: MetricDef, labels: dict[str, str]) -> None:
        self.defn = defn
        self.labels = labels
        self.buckets = [0.0] * (len(defn.buckets) + 1)
        self.sum = 0.0
        self.count = 0.0


def merge_histograms(samples: Iterable[Sample]) -> list[HistogramValue]:
    """Histogram samples (any number of writers) merged per series, buckets cumulative."""
    acc: dict[tuple[str, tuple[tuple[str, str], ...]], _HistAcc] = {}
    for smp in samples:
        if smp.defn.kind is not Kind.HISTOGRAM or not smp.part:
            continue
        labels = {k: v for k, v in smp.labels.items() if k != "le"}
        key = (smp.defn.name, tuple(sorted(labels.items())))
        entry = acc.get(key)
        if entry is None:
            entry = acc[key] = _HistAcc(smp.defn, labels)
        if smp.part == "bucket":
            le = smp.labels.get("le", "")
            bounds = smp.defn.buckets
            try:
                idx = len(bounds) if le == "+Inf" else bisect.bisect_left(bounds, float(le))
            except ValueError:
                continue
            entry.buckets[idx] += smp.value
        elif smp.part == "sum":
            entry.sum += smp.value
        elif smp.part == "count":
            entry.count += smp.value
    out = []
    for entry in acc.values():
        cum, total = [], 0.0
        for v in entry.buckets:
            total += v
            cum.append(total)
        out.append(HistogramValue(entry.defn, entry.labels, tuple(cum), entry.sum, entry.count))
    return out


def quantile(bounds: tuple[float, ...], cumulative: tuple[float, ...], q: float) -> float:
    """The ``q`` quantile of a histogram, interpolated linearly inside its bucket.

    Same estimate as Prometheus' ``histogram_quantile``: an answer in the +Inf bucket is
    the largest finite bound; NaN without observations.
    """
    if not cumulative or cumulative[-1] <= 0:
        return math.nan
    rank = q * cumulative[-1]
    idx = bisect.bisect_left(cumulative, rank)
    if idx >= len(bounds):
        return bounds[-1]
    lower = bounds[idx - 1] if idx > 0 else 0.0
    below = cumulative[idx - 1] if idx > 0 else 0.0
    inside = cumulative[idx] - below
    if inside <= 0:
        return bounds[idx]
    return lower + (bounds[idx] - lower) * (rank - below) / inside
