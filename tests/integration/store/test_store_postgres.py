"""The store on a real PostgreSQL server: migrations, the idempotent upsert, the reads,
and the store sink across a server crash and restart (nothing lost, nothing doubled)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from pg_server import PostgresServer  # type: ignore[import-not-found]
from store_events import as_record, summary_event  # type: ignore[import-not-found]

from itsd.sinks.spool import Spool
from itsd.sinks.store import StoreSink
from itsd.store.aggregate import rebucket
from itsd.store.db import (
    StoreUnavailable,
    StoreVersionError,
    head_revision,
    make_engine,
    migrate,
)
from itsd.store.reader import StoreReader
from itsd.store.schema import intervals, line_counts, metadata
from itsd.store.summary import interval_from_event
from itsd.store.writer import StoreWriter

T0 = 1_795_000_020.0


def _rows(minutes: range, camera: str = "cam") -> list:
    out = []
    for m in minutes:
        r = interval_from_event(
            summary_event(
                camera,
                T0 + 60 * m,
                counts={"l": {"in": {"car": m + 1, "bus": 1}}},
                speeds=[40.0 + m, 60.0],
                zones={"z": {"occupancy_mean": 0.5, "occupied_fraction": 0.25, "queue_max_m": 6.0}},
                longest_queue_m=6.0,
            )
        )
        assert r is not None
        out.append(r)
    return out


def test_migrations_and_schema_on_postgres(pg_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(pg_url)
    assert migrate(engine) == ((), head_revision())
    assert migrate(engine) == ((head_revision(),), head_revision())
    with engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), metadata) == []
    with engine.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d_future'")
    with pytest.raises(StoreVersionError, match="newer itsd"):
        migrate(engine)
    engine.dispose()


def test_upsert_is_idempotent_and_reads_match_on_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    w = StoreWriter(engine)
    rows = _rows(range(6))
    w.write(rows)
    w.write(rows[1:3] + rows[1:3])  # a replay, with a key twice in one batch
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(intervals)).scalar_one() == 6
        assert c.execute(sa.select(sa.func.count()).select_from(line_counts)).scalar_one() == 12
    got = StoreReader(engine).intervals("cam", 0, 2**62)
    assert got == rows
    (b,) = rebucket(got, 3600_000 * 24)
    assert b.counts == {("l", "in", "car"): 21, ("l", "in", "bus"): 6}
    assert b.speed_samples == 12
    engine.dispose()


def test_an_unreachable_server_is_unavailable_not_an_error(pg_server: PostgresServer) -> None:
    engine = make_engine(
        f"postgresql+psycopg://itsd@127.0.0.1:{pg_server.port + 1}/nowhere", connect_timeout_s=1
    )
    with pytest.raises(StoreUnavailable):
        StoreWriter(engine).write(_rows(range(1)))
    engine.dispose()


def test_the_sink_survives_a_server_crash_and_restart(
    own_pg_server: PostgresServer, tmp_path: Path
) -> None:
    url = own_pg_server.create_database("itsd")
    engine = make_engine(url, connect_timeout_s=2)
    sink = StoreSink(engine, Spool(tmp_path / "buffer", 2**24, 4096))
    events = [
        as_record(summary_event("cam", T0 + 60 * m, counts={"l": {"in": {"car": m + 1}}}))
        for m in range(12)
    ]
    sink.write(events[0:4])
    own_pg_server.kill()  # a crash: connections in the pool die with it
    sink.write(events[4:6])  # accepted into the buffer
    sink.write(events[3:8])  # a replay of one, new ones: queued behind
    assert sink.buffer.pending == 7
    own_pg_server.start()
    deadline = 0
    while not sink.buffer.is_empty() and deadline < 100:
        sink._next_try = 0.0  # do not wait for the backoff in a test
        sink.poll()
        deadline += 1
    assert sink.buffer.is_empty()
    sink.write(events[8:12])
    sink.close()
    check = make_engine(url)
    got = StoreReader(check).intervals("cam", 0, 2**62)
    assert [(r.start_ms, r.counts) for r in got] == [
        (int((T0 + 60 * m) * 1000), {("l", "in", "car"): m + 1}) for m in range(12)
    ]
    check.dispose()
