"""The daemon writes its analytics intervals to the store and serves them back:
GetAggregatedMetrics over a run of several intervals returns what the events say, on
SQLite (across a daemon restart: the store is reopened, not rebuilt) and on PostgreSQL (a
server crash and restart in the middle of the run loses no interval and doubles none); a
store newer than the code stops the start."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from pg_server import PostgresServer  # type: ignore[import-not-found]

from itsd.control._pb import analytics_pb2, analytics_pb2_grpc
from itsd.store.db import make_engine
from itsd.store.model import IntervalRow
from itsd.store.reader import StoreReader
from itsd.store.summary import interval_from_event

SUMMARY = {"analytics": {"summary_interval_s": 1}}


def _intervals(events_path: Path) -> dict[tuple[str, int, int], IntervalRow]:
    """The intervals the daemon published (JSONL), the last version of each key."""
    out: dict[tuple[str, int, int], IntervalRow] = {}
    if not events_path.exists():
        return out
    for line in events_path.read_text().splitlines():
        if '"analytics_summary"' not in line:
            continue
        row = interval_from_event(json.loads(line))
        if row is not None:
            out[row.key] = row
    return out


def _wait(pred: Callable[[], Any], timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def _aggregates(port: int, start_ms: int, end_ms: int) -> list[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        req = analytics_pb2.GetAggregatedMetricsRequest(camera_id="street", bucket_s=1)
        req.start_time.FromMilliseconds(start_ms)
        req.end_time.FromMilliseconds(end_ms)
        return list(
            analytics_pb2_grpc.AnalyticsServiceStub(ch)
            .GetAggregatedMetrics(req, timeout=10)
            .aggregates
        )


def _check_served(port: int, expected: dict[tuple[str, int, int], IntervalRow], log: Path) -> None:
    """GetAggregatedMetrics (1 s buckets: one per interval, or the pieces of one interval
    two daemons shared) says what the events said."""
    by_start: dict[int, list[IntervalRow]] = {}
    for (_, start, _), row in expected.items():
        by_start.setdefault(start, []).append(row)
    lo, hi = min(by_start), max(by_start) + 1  # later intervals start at or after hi
    hi_aligned = hi - hi % 1000  # the range is widened to whole seconds: stay inside
    want = {s: rows for s, rows in by_start.items() if s < hi_aligned}

    def served() -> list[Any] | None:
        got = _aggregates(port, lo, hi_aligned)
        return got if {a.minute_start.ToMilliseconds() for a in got} >= set(want) else None

    got = _wait(served, 30, "the store to serve every published interval", log)
    assert len(got) == len(want)
    for a in got:
        rows = want[a.minute_start.ToMilliseconds()]
        counts: dict[tuple[str, str, str], int] = {}
        for r in rows:
            for k, n in r.counts.items():
                counts[k] = counts.get(k, 0) + n
        assert {(c.line_id, c.direction, c.class_name): c.count for c in a.line_counts} == counts
        assert (a.intervals, a.bucket_s) == (len(rows), 1)
        assert a.covered_s == pytest.approx(sum(r.seconds for r in rows))
        assert a.frames == sum(r.frames for r in rows)
        assert a.speed_samples == sum(r.speed_samples for r in rows)
        if len(rows) == 1 and rows[0].speed_mean_kmh is not None:
            assert a.avg_speed_kmh == pytest.approx(rows[0].speed_mean_kmh)
        elif all(r.speed_mean_kmh is None for r in rows):
            assert not a.HasField("avg_speed_kmh")


def _enough(path: Path, n: int) -> Callable[[], dict[tuple[str, int, int], IntervalRow] | None]:
    def check() -> dict[tuple[str, int, int], IntervalRow] | None:
        got = _intervals(path)
        return got if len(got) >= n else None

    return check


def test_the_store_is_reopened_by_a_restarted_daemon(start_daemon: Callable[..., Any]) -> None:
    d1 = start_daemon(loop=True, extra=SUMMARY)
    first = _wait(_enough(d1.events_path, 3), 90, "3 interval summaries", d1.log_path)
    assert d1.stop().returncode == 0
    db = d1.workdir / "state" / "store.sqlite3"
    inode = db.stat().st_ino
    engine = make_engine(f"sqlite:///{db}")
    stored = {r.key for r in StoreReader(engine).intervals(None, 0, 2**62)}
    engine.dispose()
    assert set(first) <= stored  # a clean stop wrote everything published
    d2 = start_daemon(loop=True, extra=SUMMARY, workdir=d1.workdir)
    both = _wait(_enough(d2.events_path, len(stored) + 3), 90, "3 more intervals", d2.log_path)
    assert db.stat().st_ino == inode
    assert sum(sum(r.counts.values()) for r in both.values()) > 0, "no crossing counted"
    # GetAggregatedMetrics over both runs says what the events said.
    _check_served(d2.grpc_port, both, d2.log_path)
    # GetTrafficMetrics carries the newest interval beside the live counts.
    with grpc.insecure_channel(f"127.0.0.1:{d2.grpc_port}") as ch:
        tm = analytics_pb2_grpc.AnalyticsServiceStub(ch).GetTrafficMetrics(
            analytics_pb2.GetTrafficMetricsRequest(camera_id="street"), timeout=10
        )
    (cam,) = tm.cameras
    assert cam.HasField("latest_interval")
    assert cam.latest_interval.minute_start.ToMilliseconds() >= max(k[1] for k in both)


def test_a_postgres_restart_mid_run_loses_no_interval(
    start_daemon: Callable[..., Any], own_pg_server: PostgresServer
) -> None:
    url = own_pg_server.create_database("itsd")
    d = start_daemon(loop=True, extra={**SUMMARY, "store": {"url": url, "connect_timeout_s": 1.0}})
    engine = make_engine(url)
    reader = StoreReader(engine)

    def stored() -> set[tuple[str, int, int]]:
        try:
            return {r.key for r in reader.intervals(None, 0, 2**62)}
        except Exception:  # the server is down
            return set()

    _wait(lambda: len(stored()) >= 2, 90, "2 intervals in PostgreSQL", d.log_path)
    own_pg_server.kill()
    before = len(_intervals(d.events_path))
    _wait(
        _enough(d.events_path, before + 3), 30, "3 intervals while the database is down", d.log_path
    )
    own_pg_server.start()
    after = len(_intervals(d.events_path))
    _wait(lambda: len(stored()) >= after + 2, 60, "the buffer written and 2 more", d.log_path)
    _check_served(d.grpc_port, _intervals(d.events_path), d.log_path)
    assert d.stop().returncode == 0
    published = _intervals(d.events_path)
    rows = {r.key: r for r in reader.intervals(None, 0, 2**62)}
    assert set(published) == set(rows)  # nothing lost (the primary key forbids doubles)
    for key, row in published.items():
        assert rows[key].counts == row.counts
    assert "intervals go to the buffer" in d.log()
    engine.dispose()


def test_a_store_newer_than_the_code_stops_the_start(
    start_daemon: Callable[..., Any], tmp_path: Path
) -> None:
    import sqlalchemy as sa

    from itsd.store.db import migrate

    workdir = tmp_path / "newer"
    engine = make_engine(f"sqlite:///{workdir / 'state' / 'store.sqlite3'}")
    migrate(engine)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d_future'"))
    engine.dispose()
    d = start_daemon(extra=SUMMARY, workdir=workdir)
    assert d.proc.wait(60) == 78
    assert "f00d_future" in d.log() and "newer itsd" in d.log()
