"""The supervisor's answers from the aggregates store: GetTrafficMetrics' newest interval
and mean speed since the start, GetAggregatedMetrics' buckets, and what a missing or
unreachable store gives (a real SQLite store; the supervisor is its state snapshot)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from itsd.control.backend import NotSupportedError, UnavailableError
from itsd.store.db import make_engine, migrate
from itsd.store.reader import StoreReader
from itsd.store.summary import interval_from_event
from itsd.store.writer import StoreWriter
from itsd.supervisor.backend import SupervisorBackend
from itsd.supervisor.state import CameraView, DaemonState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_events import summary_event  # type: ignore[import-not-found]

T0 = 1_795_000_020.0  # a whole minute


def _sup(started_at: float) -> Any:
    cam = CameraView(
        "cam", 1, "infer", "file.mp4", 10.0, 5, "file", "running", True, 10.0, 10.0,
        100, 100, 0, 0, 0.1, line_counts={"l": {"in": {"car": 9}}}, vehicles_in_view=2,
    )  # fmt: skip
    return SimpleNamespace(
        state=DaemonState(taken_at=T0 + 600, started_at=started_at, cameras=(cam,))
    )


@pytest.fixture
def reader(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite3'}")
    migrate(engine)
    rows = [
        interval_from_event(
            summary_event(
                "cam",
                T0 + 60 * m,
                counts={"l": {"in": {"car": 1}}},
                speeds=[20.0] * 2 if m < 2 else [40.0, 60.0],
                longest_queue_m=7.5,
            )
        )
        for m in range(5)
    ]
    StoreWriter(engine).write([r for r in rows if r is not None])
    yield StoreReader(engine)
    engine.dispose()


def test_traffic_metrics_add_the_newest_interval_and_the_mean_speed_since_start(
    reader: StoreReader,
) -> None:
    backend = SupervisorBackend(_sup(started_at=T0 + 120), reader)
    snap = backend.traffic_metrics("cam")
    assert snap.line_counts == {"l": {"in": {"car": 9}}}  # live counts as before
    assert snap.avg_speed_kmh == pytest.approx(50.0)  # intervals since the start only
    latest = snap.latest_interval
    assert latest is not None
    assert (latest.start, latest.bucket_s, latest.intervals) == (T0 + 240, 60.0, 1)
    assert latest.line_counts == {"l": {"in": {"car": 1}}}
    assert (latest.speed_samples, latest.longest_queue_m) == (2, 7.5)


def test_aggregated_metrics_rebucket_the_store(reader: StoreReader) -> None:
    backend = SupervisorBackend(_sup(T0), reader)
    (b,) = backend.aggregated_metrics("cam", T0 - 20, T0 + 3600, 3600)
    assert (b.intervals, b.line_counts, b.speed_samples) == (5, {"l": {"in": {"car": 5}}}, 10)
    assert b.avg_speed_kmh == pytest.approx((4 * 20 + 6 * 50) / 10)
    assert backend.aggregated_metrics("nobody", T0, T0 + 3600, 60) == []


def test_without_a_store(reader: StoreReader) -> None:
    backend = SupervisorBackend(_sup(T0))
    with pytest.raises(NotSupportedError, match=r"store\.enabled"):
        backend.aggregated_metrics(None, T0, T0 + 60, 60)
    snap = backend.traffic_metrics("cam")
    assert (snap.latest_interval, snap.avg_speed_kmh) == (None, None)


def test_an_unreachable_store_is_unavailable_and_live_counts_still_answer() -> None:
    engine = make_engine("postgresql+psycopg://itsd@127.0.0.1:1/none", connect_timeout_s=1)
    backend = SupervisorBackend(_sup(T0), StoreReader(engine))
    with pytest.raises(UnavailableError):
        backend.aggregated_metrics(None, T0, T0 + 60, 60)
    snap = backend.traffic_metrics("cam")
    assert snap.line_counts == {"l": {"in": {"car": 9}}}
    assert snap.latest_interval is None
    engine.dispose()
