"""GetAggregatedMetrics and the latest interval of GetTrafficMetrics: store buckets to
protobuf messages and back, the checks of a request, and the client call ``itsd report``
makes.

This module must never import a stage, an engine, analytics or the store (the backend
reads the store; this module only maps its plain buckets), and never fabricate a value:
what the store does not know stays unset.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import timestamp_pb2

from itsd.control._pb import analytics_pb2, common_pb2
from itsd.control.backend import AggregateBucket, LineCounts, ZoneAggregate

#: Bucket size when a request names none, and the largest one accepted (seconds).
DEFAULT_BUCKET_S = 60
MAX_BUCKET_S = 31 * 86400


def _ts(unix_s: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(unix_s * 1e9))
    return ts


def _known(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _count(value: float) -> int:
    return int(value) if math.isfinite(value) and value > 0 else 0


def _line_counts(counts: LineCounts) -> list[common_pb2.LineCount]:
    rows = []
    for line_id in sorted(counts):
        for direction in sorted(counts[line_id]):
            by_class = counts[line_id][direction]
            for cls in sorted(by_class):
                if by_class[cls] > 0:
                    rows.append(
                        common_pb2.LineCount(
                            line_id=line_id,
                            direction=direction,
                            class_name=cls,
                            count=int(by_class[cls]),
                        )
                    )
    return rows


def aggregate_message(b: AggregateBucket) -> analytics_pb2.MinuteAggregate:
    """MinuteAggregate of one bucket of the store."""
    return analytics_pb2.MinuteAggregate(
        camera_id=b.camera_id,
        minute_start=_ts(b.start),
        line_counts=_line_counts(b.line_counts),
        avg_speed_kmh=_known(b.avg_speed_kmh),
        p85_speed_kmh=_known(b.p85_speed_kmh),
        covered_s=b.covered_s if math.isfinite(b.covered_s) else 0.0,
        bucket_s=_count(b.bucket_s),
        intervals=_count(b.intervals),
        speed_samples=_count(b.speed_samples),
        longest_queue_m=_known(b.longest_queue_m),
        zones=[
            analytics_pb2.ZoneAggregate(
                zone_id=z.zone_id,
                occupancy_mean=_known(z.occupancy_mean),
                occupied_fraction=_known(z.occupied_fraction),
                dwell_mean_s=_known(z.dwell_mean_s),
                queue_max_m=_known(z.queue_max_m),
            )
            for z in sorted(b.zones, key=lambda z: z.zone_id)
        ],
        frames=_count(b.frames),
    )


def aggregate_range(
    request: analytics_pb2.GetAggregatedMetricsRequest, now: float
) -> tuple[float, float, int]:
    """(start, end, bucket_s) of a request, the range widened to bucket boundaries;
    ValueError names the field at fault."""
    bucket = int(request.bucket_s) or DEFAULT_BUCKET_S
    if bucket > MAX_BUCKET_S:
        raise ValueError(f"bucket_s must be at most {MAX_BUCKET_S} (31 days), got {bucket}")
    if not request.HasField("start_time"):
        raise ValueError("start_time is required")
    start = request.start_time.ToNanoseconds() / 1e9
    end = request.end_time.ToNanoseconds() / 1e9 if request.HasField("end_time") else now
    if end <= start:
        raise ValueError("end_time must be after start_time")
    return math.floor(start / bucket) * bucket, math.ceil(end / bucket) * bucket, bucket


def bucket_from_message(m: analytics_pb2.MinuteAggregate) -> AggregateBucket:
    """The plain bucket of a MinuteAggregate (the reverse of ``aggregate_message``)."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for lc in m.line_counts:
        counts.setdefault(lc.line_id, {}).setdefault(lc.direction, {})[lc.class_name] = lc.count
    return AggregateBucket(
        camera_id=m.camera_id,
        start=m.minute_start.ToNanoseconds() / 1e9,
        bucket_s=float(m.bucket_s),
        line_counts=counts,
        intervals=m.intervals,
        covered_s=m.covered_s,
        frames=m.frames,
        speed_samples=m.speed_samples,
        avg_speed_kmh=m.avg_speed_kmh if m.HasField("avg_speed_kmh") else None,
        p85_speed_kmh=m.p85_speed_kmh if m.HasField("p85_speed_kmh") else None,
        longest_queue_m=m.longest_queue_m if m.HasField("longest_queue_m") else None,
        zones=[
            ZoneAggregate(
                z.zone_id,
                z.occupancy_mean if z.HasField("occupancy_mean") else None,
                z.occupied_fraction if z.HasField("occupied_fraction") else None,
                z.dwell_mean_s if z.HasField("dwell_mean_s") else None,
                z.queue_max_m if z.HasField("queue_max_m") else None,
            )
            for z in m.zones
        ],
    )


def fetch_aggregated(
    target: Any,
    timeout: float,
    camera_id: str,
    start: float,
    end: float,
    bucket_s: int,
) -> list[AggregateBucket]:
    """AnalyticsService.GetAggregatedMetrics on a running daemon, as plain buckets
    (``ControlClientError`` when the call fails)."""
    from itsd.control import client
    from itsd.control._pb import analytics_pb2_grpc

    request = analytics_pb2.GetAggregatedMetricsRequest(
        camera_id=camera_id, start_time=_ts(start), end_time=_ts(end), bucket_s=bucket_s
    )
    response = client._call(
        target,
        "GetAggregatedMetrics",
        lambda ch: client._expect(
            analytics_pb2.GetAggregatedMetricsResponse,
            analytics_pb2_grpc.AnalyticsServiceStub(ch).GetAggregatedMetrics(
                request, timeout=timeout
            ),
        ),
    )
    return [bucket_from_message(m) for m in response.aggregates]
