"""The store on SQLite: migrations, the idempotent upsert, retention, bounded reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from itsd.config import Config, parse_config
from itsd.errors import ConfigError
from itsd.store.db import (
    StoreVersionError,
    head_revision,
    make_engine,
    migrate,
    schema_revision,
    store_url,
)
from itsd.store.reader import RangeTooLargeError, StoreReader
from itsd.store.schema import intervals, line_counts, metadata, zone_stats
from itsd.store.summary import interval_from_event
from itsd.store.writer import StoreWriter

T0 = 1_795_000_020.0  # a minute boundary


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    e = make_engine(f"sqlite:///{tmp_path / 'db' / 'store.sqlite3'}")
    migrate(e)
    yield e
    e.dispose()


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_default_url_is_a_sqlite_file_in_the_state_dir(tmp_path: Path) -> None:
    cfg = Config.model_validate({"state_dir": str(tmp_path)})
    assert store_url(cfg) == f"sqlite:///{tmp_path}/store.sqlite3"
    cfg = Config.model_validate({"store": {"url": "postgresql://u:pw@db:5432/itsd"}})
    assert store_url(cfg) == "postgresql+psycopg://u:pw@db:5432/itsd"
    assert store_url(Config.model_validate({"store": {"enabled": False}})) is None


def test_a_store_url_of_another_database_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"f\.yaml: store\.url: .*sqlite:///PATH or postgresql://"
    ):
        parse_config({"store": {"url": "mysql://db/itsd"}}, "f.yaml")


def test_migrate_creates_the_schema_once_and_in_wal_mode(tmp_path: Path) -> None:
    e = make_engine(f"sqlite:///{tmp_path / 's.sqlite3'}")
    assert schema_revision(e) == ()
    assert migrate(e) == ((), head_revision())
    assert migrate(e) == ((head_revision(),), head_revision())
    with e.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        names = set(sa.inspect(c).get_table_names())
    assert {"traffic_intervals", "traffic_line_counts", "traffic_zone_stats"} <= names
    e.dispose()


def test_the_migrations_build_exactly_the_schema_the_code_declares(engine: sa.Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    assert diff == []


def test_a_database_newer_than_the_code_is_refused(engine: sa.Engine) -> None:
    with engine.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d_future'")
    with pytest.raises(StoreVersionError, match=r"f00d_future.*newer itsd"):
        migrate(engine)


def test_replaying_events_never_doubles_a_row(
    engine: sa.Engine, make_summary: Callable[..., dict[str, Any]]
) -> None:
    rows = [
        interval_from_event(
            make_summary(
                "cam",
                T0 + 60 * i,
                counts={"l": {"in": {"car": i + 1, "bus": 1}}},
                speeds=[40.0 + i, 50.0],
                zones={"z": {"occupancy_mean": 1.0, "occupied_fraction": 0.5}},
            )
        )
        for i in range(5)
    ]
    w = StoreWriter(engine)
    assert w.write([r for r in rows if r is not None]) == 5
    for _ in range(3):  # replays, whole and partial
        w.write([r for r in rows if r is not None])
        w.write([r for r in rows[2:4] if r is not None])
    assert _count(engine, intervals) == 5
    assert _count(engine, line_counts) == 10
    assert _count(engine, zone_stats) == 5
    got = StoreReader(engine).intervals("cam", 0, 2**62)
    assert [g.counts[("l", "in", "car")] for g in got] == [1, 2, 3, 4, 5]


def test_a_new_version_of_an_interval_replaces_its_rows(
    engine: sa.Engine, make_summary: Callable[..., dict[str, Any]]
) -> None:
    first = interval_from_event(make_summary("cam", T0, counts={"l": {"in": {"car": 2, "bus": 1}}}))
    second = interval_from_event(make_summary("cam", T0, counts={"l": {"out": {"truck": 4}}}))
    assert first is not None and second is not None
    w = StoreWriter(engine)
    w.write([first])
    w.write([second, first, second])  # within a batch the last one wins
    (got,) = StoreReader(engine).intervals(None, 0, 2**62)
    assert got.counts == {("l", "out", "truck"): 4}


def test_retention_deletes_old_intervals_with_their_rows(
    engine: sa.Engine, make_summary: Callable[..., dict[str, Any]]
) -> None:
    rows = [
        interval_from_event(make_summary("cam", T0 + 60 * i, counts={"l": {"in": {"car": 1}}}))
        for i in range(4)
    ]
    w = StoreWriter(engine)
    w.write([r for r in rows if r is not None])
    assert w.delete_before(int((T0 + 120) * 1000)) == 2
    assert _count(engine, intervals) == 2
    assert _count(engine, line_counts) == 2


def test_reads_are_bounded_latest_and_speed_since(
    engine: sa.Engine, make_summary: Callable[..., dict[str, Any]]
) -> None:
    rows = [
        interval_from_event(make_summary("cam", T0 + 60 * i, speeds=[30.0, 50.0] if i else None))
        for i in range(6)
    ]
    StoreWriter(engine).write([r for r in rows if r is not None])
    reader = StoreReader(engine, max_rows=5)
    with pytest.raises(RangeTooLargeError, match="more than 5 intervals"):
        reader.intervals("cam", 0, 2**62)
    assert len(reader.intervals("cam", int(T0 * 1000), int((T0 + 300) * 1000))) == 5
    latest = reader.latest("cam")
    assert latest is not None and latest.start_ms == int((T0 + 300) * 1000)
    assert reader.latest("nobody") is None
    assert reader.speed_since("cam", 0) == (10, 40.0)
    assert reader.cameras() == ["cam"]


def test_buckets_summed_by_the_database_equal_rebucketing_in_python(
    engine: sa.Engine, make_summary: Callable[..., dict[str, Any]]
) -> None:
    from itsd.store.aggregate import rebucket

    rows = [
        interval_from_event(
            make_summary(
                cam,
                T0 + 60 * i,
                counts={
                    "l": {"in": {"car": i + 1}, "out": {"bus": i % 2}},
                    "m": {"in": {"car": 1}},
                },
                speeds=[30.0 + i, 50.0] if i % 3 else None,
                zones={"z": {"occupancy_mean": 0.1 * i, "queue_max_m": float(i)}},
            )
        )
        for i in range(40)
        for cam in ("a", "b")
    ]
    StoreWriter(engine).write([r for r in rows if r is not None])
    reader = StoreReader(engine)
    for camera in ("a", None):
        for bucket_ms in (60_000, 900_000, 86_400_000):
            by_db = reader.buckets(camera, 0, 2**62, bucket_ms)
            in_python = rebucket(reader.intervals(camera, 0, 2**62), bucket_ms)
            assert by_db == in_python


def test_two_pieces_of_one_interval_are_both_kept(
    engine: sa.Engine, make_summary: Callable[..., dict[str, Any]]
) -> None:
    # A daemon stopped 30 s into an interval flushed [T0, T0+30); the next one, started
    # within the same minute, reports [T0, T0+60) for what it saw.
    before = interval_from_event(make_summary("cam", T0, 30.0, counts={"l": {"in": {"car": 4}}}))
    after = interval_from_event(make_summary("cam", T0, 60.0, counts={"l": {"in": {"car": 3}}}))
    assert before is not None and after is not None
    w = StoreWriter(engine)
    w.write([before])
    w.write([after, before])  # a replay of the first piece replaces only itself
    got = StoreReader(engine).intervals("cam", 0, 2**62)
    assert [(g.end_ms - g.start_ms, g.counts) for g in got] == [
        (30_000, {("l", "in", "car"): 4}),
        (60_000, {("l", "in", "car"): 3}),
    ]
    (b,) = StoreReader(engine).buckets("cam", 0, 2**62, 60_000)
    assert (b.intervals, b.crossings) == (2, 7)


def test_revision_0002_keeps_the_rows_of_0001(tmp_path: Path) -> None:
    from alembic import command

    from itsd.store.db import _alembic_config

    e = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with e.connect() as c:
        command.upgrade(_alembic_config(c), "0001")
        c.commit()
    with e.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO traffic_intervals VALUES "
            "('cam', 60000, 120000, 60.0, 600, 1, 0, NULL, NULL, NULL, NULL, NULL, 0)"
        )
        c.exec_driver_sql(
            "INSERT INTO traffic_line_counts VALUES ('cam', 60000, 'l', 'in', 'car', 5)"
        )
    assert schema_revision(e) == ("0001",)
    migrate(e)
    assert schema_revision(e) == (head_revision(),)
    (got,) = StoreReader(e).intervals("cam", 0, 2**62)
    assert (got.start_ms, got.end_ms, got.counts) == (60000, 120000, {("l", "in", "car"): 5})
    e.dispose()
