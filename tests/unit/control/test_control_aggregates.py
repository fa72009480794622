"""GetAggregatedMetrics over a real gRPC server: a backend reading a real SQLite store,
the request checks, FAILED_PRECONDITION without a store, and the message round trip."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from itsd.control._pb import analytics_pb2, analytics_pb2_grpc
from itsd.control.aggregates import aggregate_message, aggregate_range, bucket_from_message
from itsd.control.backend import AggregateBucket, ZoneAggregate
from itsd.control.server import start_control_server
from itsd.store.aggregate import rebucket
from itsd.store.db import make_engine, migrate
from itsd.store.reader import StoreReader
from itsd.store.summary import interval_from_event
from itsd.store.writer import StoreWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_events import summary_event  # type: ignore[import-not-found]

T0 = 1_795_000_020  # a whole minute


class StoreBackend:
    """The conftest's fake daemon plus aggregates read from a real store."""

    def __init__(self, base: Any, reader: StoreReader | None) -> None:
        self._base = base
        self.reader = reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def aggregated_metrics(
        self, camera_id: str | None, start: float, end: float, bucket_s: int
    ) -> list[AggregateBucket]:
        assert self.reader is not None
        rows = self.reader.intervals(camera_id, int(start * 1000), int(end * 1000))
        out = []
        for b in rebucket(rows, bucket_s * 1000):
            counts: dict[str, dict[str, dict[str, int]]] = {}
            for (line, d, c), n in b.counts.items():
                counts.setdefault(line, {}).setdefault(d, {})[c] = n
            out.append(
                AggregateBucket(
                    b.camera_id,
                    b.start_ms / 1000,
                    b.bucket_ms / 1000,
                    counts,
                    b.intervals,
                    b.covered_s,
                    b.frames,
                    b.speed_samples,
                    b.speed_mean_kmh,
                    b.speed_p85_kmh,
                    b.longest_queue_m,
                )
            )
        return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreReader]:
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite3'}")
    migrate(engine)
    rows = []
    for m in range(30):
        r = interval_from_event(
            summary_event(
                "cam-a",
                T0 + 60 * m,
                counts={"l1": {"in": {"car": 2}, "out": {"truck": 1}}},
                speeds=[40.0, 50.0, 60.0] if m % 2 else None,
            )
        )
        assert r is not None
        rows.append(r)
    StoreWriter(engine).write(rows)
    yield StoreReader(engine)
    engine.dispose()


def _call(backend: Any, req: analytics_pb2.GetAggregatedMetricsRequest) -> Any:
    srv = start_control_server(backend, "127.0.0.1", 0, max_workers=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            return analytics_pb2_grpc.AnalyticsServiceStub(ch).GetAggregatedMetrics(req, timeout=10)
    finally:
        srv.stop(grace=0)


def _req(start: int | None, end: int | None = None, bucket_s: int = 0) -> Any:
    req = analytics_pb2.GetAggregatedMetricsRequest(camera_id="cam-a", bucket_s=bucket_s)
    if start is not None:
        req.start_time.FromSeconds(start)
    if end is not None:
        req.end_time.FromSeconds(end)
    return req


def test_fifteen_minute_buckets_of_thirty_intervals(backend: Any, store: StoreReader) -> None:
    resp = _call(StoreBackend(backend, store), _req(T0, T0 + 1800, 900))
    starts = [a.minute_start.ToSeconds() for a in resp.aggregates]
    first_bucket = T0 - T0 % 900
    assert starts == [first_bucket + 900 * i for i in range(len(starts))]
    assert sum(a.intervals for a in resp.aggregates) == 30
    total = {}
    for a in resp.aggregates:
        assert a.bucket_s == 900
        for c in a.line_counts:
            total[(c.line_id, c.direction, c.class_name)] = (
                total.get((c.line_id, c.direction, c.class_name), 0) + c.count
            )
    assert total == {("l1", "in", "car"): 60, ("l1", "out", "truck"): 30}
    assert sum(a.speed_samples for a in resp.aggregates) == 45
    assert all(a.avg_speed_kmh == pytest.approx(50.0) for a in resp.aggregates)


def test_default_bucket_is_a_minute(backend: Any, store: StoreReader) -> None:
    resp = _call(StoreBackend(backend, store), _req(T0, T0 + 300))
    assert [(a.bucket_s, a.intervals) for a in resp.aggregates] == [(60, 1)] * 5
    assert not resp.aggregates[0].HasField("avg_speed_kmh")  # no speed measured: unset
    assert resp.aggregates[1].p85_speed_kmh == 60.0


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        (_req(None), "start_time is required"),
        (_req(T0, T0), "end_time must be after start_time"),
        (_req(T0, T0 + 60, 32 * 86400), "bucket_s must be at most"),
    ],
)
def test_bad_requests_are_invalid_arguments(
    backend: Any, store: StoreReader, req: Any, fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(StoreBackend(backend, store), req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.details()


def test_a_daemon_without_a_store_answers_failed_precondition(backend: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(backend, _req(T0, T0 + 60))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_range_is_widened_to_bucket_boundaries() -> None:
    assert aggregate_range(_req(T0 + 10, T0 + 70, 60), 0.0) == (T0, T0 + 120, 60)


def test_messages_round_trip() -> None:
    b = AggregateBucket(
        "cam",
        1800.0,
        900.0,
        {"l": {"in": {"car": 3}}},
        15,
        900.0,
        9000,
        12,
        48.5,
        None,
        20.0,
        [ZoneAggregate("z", 0.5, 0.25, None, 20.0)],
    )
    assert bucket_from_message(aggregate_message(b)) == b


def test_itsd_report_over_grpc_matches_the_store(
    backend: Any, store: StoreReader, tmp_path: Path
) -> None:
    import time

    from click.testing import CliRunner

    from itsd.cli import main

    ago = time.time() - T0  # the stored half hour, as durations before now
    srv = start_control_server(StoreBackend(backend, store), "127.0.0.1", 0, max_workers=2)
    try:
        png = tmp_path / "r.png"
        args = ["report", "--camera", "cam-a", "--since", f"{ago:.0f}s"]
        args += ["--until", f"{ago - 1800:.0f}s", "--bucket", "15m"]
        r = CliRunner().invoke(
            main, [*args, "--target", f"127.0.0.1:{srv.port}", "--png", str(png)]
        )
    finally:
        srv.stop(grace=0)
    assert r.exit_code == 0, r.output
    total = next(line for line in r.output.splitlines() if line.startswith("total")).split()
    assert total[:4] == ["total", "90", "60", "30"]  # crossings, l1:in, l1:out
    assert total[4] == "50.0" and total[5] == "45"  # mean speed, samples
    assert png.is_file()
