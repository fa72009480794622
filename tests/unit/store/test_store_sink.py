"""The store sink on SQLite: intervals committed, others ignored, a locked database
buffered on disk and replayed, nothing doubled; a restart replays the buffer first."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from store_events import as_record  # type: ignore[import-not-found]

from itsd.events import line_crossing_event
from itsd.records import EventRecord
from itsd.sinks.base import SinkError
from itsd.sinks.spool import Spool
from itsd.sinks.store import Counters, StoreSink
from itsd.store.db import make_engine
from itsd.store.reader import StoreReader

T0 = 1_795_000_020.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Tally(Counters):
    def __init__(self) -> None:
        super().__init__()
        self.n: dict[str, int] = {}
        self.written = lambda n: self._add("written", n)
        self.buffered = lambda n: self._add("buffered", n)
        self.skipped = self._add

    def _add(self, key: str, n: int) -> None:
        self.n[key] = self.n.get(key, 0) + n


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


def _sink(
    db: Path, tmp_path: Path, clock: Clock, tally: Tally, max_bytes: int = 2**24
) -> StoreSink:
    engine = make_engine(f"sqlite:///{db}", connect_timeout_s=0.2)
    return StoreSink(engine, Spool(tmp_path / "buffer", max_bytes, 4096), 0.0, tally, clock=clock)


def _stored(db: Path) -> list[tuple[str, int, int]]:
    engine = make_engine(f"sqlite:///{db}")
    try:
        rows = StoreReader(engine).intervals(None, 0, 2**62)
    finally:
        engine.dispose()
    return [(r.camera_id, r.start_ms, sum(r.counts.values())) for r in rows]


@pytest.fixture
def lock(db: Path) -> Iterator[Callable[[bool], None]]:
    """lock(True) takes SQLite's write lock from another connection; lock(False) frees it."""
    conn: list[sqlite3.Connection] = []

    def _lock(on: bool) -> None:
        if on:
            c = sqlite3.connect(db, isolation_level=None)
            c.execute("BEGIN EXCLUSIVE")
            conn.append(c)
        else:
            c = conn.pop()
            c.execute("ROLLBACK")
            c.close()

    yield _lock
    for c in conn:
        c.close()


def _events(make_summary: Callable[..., dict[str, Any]], minutes: range) -> list[EventRecord]:
    return [
        as_record(make_summary("cam", T0 + 60 * m, counts={"l": {"in": {"car": m + 1}}}))
        for m in minutes
    ]


def test_intervals_are_committed_and_other_events_ignored(
    db: Path, tmp_path: Path, make_summary: Callable[..., dict[str, Any]]
) -> None:
    tally = Tally()
    sink = _sink(db, tmp_path, Clock(), tally)
    crossing = line_crossing_event("cam", 1, 0, "l", "in", "car", 3, True, (1.0, 2.0), {})
    old = as_record(make_summary("cam", T0, interval=False))
    bad = as_record(make_summary("cam", T0))
    bad = EventRecord(
        bad.topic, bad.key, bad.payload.replace(b'"seconds":60.0', b'"seconds":"x"'), bad.kind
    )
    sink.write([crossing, old, bad, *_events(make_summary, range(3))])
    sink.close()
    assert _stored(db) == [("cam", int((T0 + 60 * m) * 1000), m + 1) for m in range(3)]
    assert tally.n == {"written": 3, "no_interval": 1, "invalid": 1}


def test_a_locked_database_is_buffered_then_replayed_without_doubles(
    db: Path,
    tmp_path: Path,
    make_summary: Callable[..., dict[str, Any]],
    lock: Callable[[bool], None],
) -> None:
    tally, clock = Tally(), Clock()
    sink = _sink(db, tmp_path, clock, tally)
    sink.write(_events(make_summary, range(0, 2)))
    lock(True)
    sink.write(_events(make_summary, range(2, 4)))  # accepted: on disk, not lost
    assert not sink.buffer.is_empty()
    # While buffering, later batches (and a replay of an earlier one) queue behind.
    sink.write(_events(make_summary, range(3, 6)))
    clock.t += 5
    sink.poll()  # still locked: stays buffered
    assert sink.buffer.pending == 5
    lock(False)
    clock.t += 60
    sink.poll()
    assert sink.buffer.is_empty()
    sink.write(_events(make_summary, range(6, 7)))  # direct again
    sink.close()
    assert _stored(db) == [("cam", int((T0 + 60 * m) * 1000), m + 1) for m in range(7)]
    assert tally.n["buffered"] == 5


def test_the_buffer_survives_a_restart_and_is_written_first(
    db: Path,
    tmp_path: Path,
    make_summary: Callable[..., dict[str, Any]],
    lock: Callable[[bool], None],
) -> None:
    sink = _sink(db, tmp_path, Clock(), Tally())
    sink.write(_events(make_summary, range(0, 1)))
    lock(True)
    sink.write(_events(make_summary, range(1, 3)))
    sink.close()  # the database is still locked: the buffer stays on disk
    lock(False)
    again = _sink(db, tmp_path, Clock(), Tally())
    assert again.buffer.pending == 2
    again.write(_events(make_summary, range(3, 4)))  # behind the buffer
    again.poll()
    again.close()
    assert [s for _, s, _ in _stored(db)] == [int((T0 + 60 * m) * 1000) for m in range(4)]


def test_a_full_buffer_refuses_the_batch(
    db: Path,
    tmp_path: Path,
    make_summary: Callable[..., dict[str, Any]],
    lock: Callable[[bool], None],
) -> None:
    size = len(_events(make_summary, range(1))[0].payload)
    sink = _sink(db, tmp_path, Clock(), Tally(), max_bytes=int(size * 2.5))
    sink.write(_events(make_summary, range(1)))
    lock(True)
    with pytest.raises(SinkError, match="buffer"):
        sink.write(_events(make_summary, range(1, 5)))
    lock(False)
    sink.close()


def test_payloads_stay_valid_json(make_summary: Callable[..., dict[str, Any]]) -> None:
    (rec,) = _events(make_summary, range(1))
    assert json.loads(rec.payload)["event_type"] == "analytics_summary"
    assert sa.__version__.startswith("2.")


def test_retention_deletes_intervals_older_than_the_setting(
    db: Path, tmp_path: Path, make_summary: Callable[..., dict[str, Any]]
) -> None:
    clock = Clock()
    engine = make_engine(f"sqlite:///{db}")
    wall = T0 + 10 * 86400 + 60  # ten days after the first interval
    sink = StoreSink(
        engine,
        Spool(tmp_path / "buffer", 2**24, 4096),
        2.0,
        Tally(),
        clock=clock,
        wall=lambda: wall,
    )
    old = [as_record(make_summary("cam", T0 + 60 * m)) for m in range(3)]
    new = [as_record(make_summary("cam", wall - 60 * (m + 1))) for m in range(2)]
    sink.write(old + new)
    sink.poll()  # too early: the first clean-up runs a few seconds after the start
    assert len(_stored(db)) == 5
    clock.t += 10
    sink.poll()
    assert len(_stored(db)) == 2
    sink.close()
