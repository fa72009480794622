"""Write intervals into the store: an idempotent upsert, and the retention clean-up.

``upsert_intervals`` writes a batch in the caller's transaction: the interval row is
inserted or, when its key (camera id, interval start and end) is already there, replaced
(``INSERT ... ON CONFLICT DO UPDATE`` in both SQLite and PostgreSQL); its child rows
(line counts, zone statistics) are deleted and written again. Replaying an event, or a
whole batch, therefore never doubles a row, and the last version of an interval wins.
Within one batch the last row of a key wins too.

``StoreWriter`` commits one batch per transaction and sorts failures into "the database
is away" (``StoreUnavailable``: the caller buffers and retries) and "the database refuses
this data" (``StoreRejected``: retrying cannot help).

This module must never import a stage, the supervisor, ``control`` or ``monitor``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from itsd.store.db import StoreRejected, StoreUnavailable, describe_url, is_unavailable
from itsd.store.model import IntervalRow
from itsd.store.schema import CHILDREN, intervals, line_counts, zone_stats

log = logging.getLogger("itsd.store")

_KEY = ("camera_id", "start_ms", "end_ms")


def _insert(dialect: str, table: sa.Table) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise ValueError(f"unsupported database {dialect!r}")


def interval_values(row: IntervalRow, written_at_ms: int) -> dict[str, Any]:
    """The ``traffic_intervals`` columns of ``row``."""
    return {
        "camera_id": row.camera_id,
        "start_ms": row.start_ms,
        "end_ms": row.end_ms,
        "seconds": row.seconds,
        "frames": row.frames,
        "vehicles_in_view": row.vehicles_in_view,
        "speed_samples": row.speed_samples,
        "speed_mean_kmh": row.speed_mean_kmh,
        "speed_p85_kmh": row.speed_p85_kmh,
        "speed_bin_kmh": row.speed_bin_kmh,
        "speed_histogram": list(row.speed_histogram) if row.speed_histogram is not None else None,
        "longest_queue_m": row.longest_queue_m,
        "written_at_ms": written_at_ms,
    }


def upsert_intervals(
    conn: sa.Connection, rows: Sequence[IntervalRow], written_at_ms: int | None = None
) -> int:
    """Insert or replace ``rows`` (see the module docstring); returns rows written."""
    latest: dict[tuple[str, int, int], IntervalRow] = {}
    for r in rows:
        latest[r.key] = r  # the last version of a key wins
    if not latest:
        return 0
    now = int(time.time() * 1000) if written_at_ms is None else written_at_ms
    batch = list(latest.values())
    ins = _insert(conn.dialect.name, intervals)
    stmt = ins.on_conflict_do_update(
        index_elements=[intervals.c.camera_id, intervals.c.start_ms, intervals.c.end_ms],
        set_={c.name: ins.excluded[c.name] for c in intervals.c if c.name not in _KEY},
    )
    conn.execute(stmt, [interval_values(r, now) for r in batch])
    keys = [{"k_camera": r.camera_id, "k_start": r.start_ms, "k_end": r.end_ms} for r in batch]
    for child in CHILDREN:
        conn.execute(
            sa.delete(child).where(
                child.c.camera_id == sa.bindparam("k_camera"),
                child.c.start_ms == sa.bindparam("k_start"),
                child.c.end_ms == sa.bindparam("k_end"),
            ),
            keys,
        )
    counts = [
        {
            "camera_id": r.camera_id,
            "start_ms": r.start_ms,
            "end_ms": r.end_ms,
            "line_id": line,
            "direction": direction,
            "class_name": cls,
            "count": n,
        }
        for r in batch
        for (line, direction, cls), n in sorted(r.counts.items())
    ]
    if counts:
        conn.execute(sa.insert(line_counts), counts)
    zones = [
        {
            "camera_id": r.camera_id,
            "start_ms": r.start_ms,
            "end_ms": r.end_ms,
            "zone_id": z.zone_id,
            "occupancy_mean": z.occupancy_mean,
            "occupied_fraction": z.occupied_fraction,
            "dwell_mean_s": z.dwell_mean_s,
            "queue_max_m": z.queue_max_m,
        }
        for r in batch
        for z in r.zones
    ]
    if zones:
        conn.execute(sa.insert(zone_stats), zones)
    return len(batch)


def delete_before(conn: sa.Connection, cutoff_ms: int) -> int:
    """Delete every interval that started before ``cutoff_ms``; returns intervals deleted."""
    for child in CHILDREN:
        conn.execute(sa.delete(child).where(child.c.start_ms < cutoff_ms))
    result = conn.execute(sa.delete(intervals).where(intervals.c.start_ms < cutoff_ms))
    return int(result.rowcount or 0)


class StoreWriter:
    """Commits batches of intervals; one transaction per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.where = describe_url(engine.url.render_as_string(hide_password=False))

    def _run(self, fn: Any, *args: Any) -> int:
        try:
            with self.engine.begin() as conn:
                return int(fn(conn, *args))
        except sa.exc.SQLAlchemyError as err:
            cause = err.orig if isinstance(err, sa.exc.DBAPIError) else err
            lines = str(cause).strip().splitlines()
            text = f"store {self.where}: {lines[0] if lines else type(err).__name__}"
            if is_unavailable(err):
                raise StoreUnavailable(text) from err
            raise StoreRejected(text) from err

    def write(self, rows: Sequence[IntervalRow]) -> int:
        """Upsert ``rows`` and commit; StoreUnavailable or StoreRejected on failure."""
        return self._run(upsert_intervals, rows)

    def delete_before(self, cutoff_ms: int) -> int:
        """Retention: delete intervals that started before ``cutoff_ms`` and commit."""
        return self._run(delete_before, cutoff_ms)

    def close(self) -> None:
        self.engine.dispose()
