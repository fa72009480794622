"""Read intervals back from the store, with bounded queries (for the control API).

The gRPC server runs in the supervisor process, so a read must never hold a thread for
long: every query is a range scan on the primary key or the start index, at most
``max_rows`` intervals are read per call (a larger range is refused with a message that
says to narrow it), and on PostgreSQL each statement runs under ``statement_timeout``
(``store.query_timeout_s``). Failures become ``StoreUnavailable`` / ``StoreError``.

This module must never write to the store, and never import a stage, the supervisor,
``control`` or ``monitor``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from itsd.config import Config
from itsd.store.aggregate import Bucket, rebucket
from itsd.store.db import (
    StoreError,
    StoreUnavailable,
    describe_url,
    engine_for,
    is_unavailable,
    make_engine,
    migrate,
    store_url,
)
from itsd.store.model import CountKey, IntervalRow, ZoneRow
from itsd.store.schema import intervals, line_counts, zone_stats

log = logging.getLogger("itsd.store")

#: Most intervals one read returns (35 days of one camera at one interval a minute).
MAX_ROWS = 50_000


class RangeTooLargeError(ValueError):
    """The asked range holds more intervals than one read may return."""


class StoreReader:
    """Bounded reads of intervals (see the module docstring); thread-safe."""

    def __init__(self, engine: Engine, max_rows: int = MAX_ROWS) -> None:
        self.engine = engine
        self.max_rows = max_rows
        self.where = describe_url(engine.url.render_as_string(hide_password=False))

    @contextmanager
    def _conn(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as err:
            cause = err.orig if isinstance(err, sa.exc.DBAPIError) else err
            lines = str(cause).strip().splitlines()
            text = f"store {self.where}: {lines[0] if lines else type(err).__name__}"
            if is_unavailable(err):
                raise StoreUnavailable(text) from err
            raise StoreError(text) from err

    def intervals(self, camera_id: str | None, start_ms: int, end_ms: int) -> list[IntervalRow]:
        """Intervals starting in ``[start_ms, end_ms)``, of one camera or all, ordered by
        camera and start. RangeTooLargeError past ``max_rows``."""
        with self._conn() as conn:
            rows = self._rows(conn, camera_id, start_ms, end_ms)
            if not rows:
                return []
            return self._with_children(conn, rows, camera_id, start_ms, end_ms)

    def buckets(
        self, camera_id: str | None, start_ms: int, end_ms: int, bucket_ms: int
    ) -> list[Bucket]:
        """The intervals of the range re-bucketed (``aggregate.rebucket``), with the line
        counts summed per bucket by the database: a month of one camera in hour buckets
        reads one row per interval and a few per bucket, not one per interval and class."""
        if bucket_ms <= 0:
            raise ValueError(f"bucket size must be > 0 ms, got {bucket_ms}")
        with self._conn() as conn:
            rows = self._rows(conn, camera_id, start_ms, end_ms)
            if not rows:
                return []
            bare = self._with_children(conn, rows, camera_id, start_ms, end_ms, counts=False)
            lc = line_counts.c
            bucket = (lc.start_ms // bucket_ms) * bucket_ms
            cond = [lc.start_ms >= start_ms, lc.start_ms < end_ms]
            if camera_id:
                cond.append(lc.camera_id == camera_id)
            summed: dict[tuple[str, int], dict[CountKey, int]] = {}
            query = (
                sa.select(
                    lc.camera_id,
                    bucket,
                    lc.line_id,
                    lc.direction,
                    lc.class_name,
                    sa.func.sum(lc.count),
                )
                .where(*cond)
                .group_by(lc.camera_id, bucket, lc.line_id, lc.direction, lc.class_name)
            )
            for cam, b, line, direction, cls, n in conn.execute(query):
                summed.setdefault((cam, int(b)), {})[(line, direction, cls)] = int(n)
        return rebucket(bare, bucket_ms, summed)

    def _rows(
        self, conn: sa.Connection, camera_id: str | None, start_ms: int, end_ms: int
    ) -> Sequence[Any]:
        cond = [intervals.c.start_ms >= start_ms, intervals.c.start_ms < end_ms]
        if camera_id:
            cond.append(intervals.c.camera_id == camera_id)
        rows = conn.execute(
            sa.select(intervals)
            .where(*cond)
            .order_by(intervals.c.camera_id, intervals.c.start_ms)
            .limit(self.max_rows + 1)
        ).all()
        if len(rows) > self.max_rows:
            raise RangeTooLargeError(
                f"the range holds more than {self.max_rows} intervals: narrow the time "
                "range or ask for one camera"
            )
        return rows

    def latest(self, camera_id: str) -> IntervalRow | None:
        """The newest interval of one camera, or None."""
        with self._conn() as conn:
            row = conn.execute(
                sa.select(intervals)
                .where(intervals.c.camera_id == camera_id)
                .order_by(intervals.c.start_ms.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            start = int(row.start_ms)
            return self._with_children(conn, [row], camera_id, start, start + 1)[0]

    def speed_since(self, camera_id: str, start_ms: int) -> tuple[int, float | None]:
        """(samples, sample-weighted mean km/h) of one camera's intervals since ``start_ms``."""
        c = intervals.c
        with self._conn() as conn:
            row = conn.execute(
                sa.select(
                    sa.func.sum(c.speed_samples),
                    sa.func.sum(c.speed_samples * c.speed_mean_kmh),
                ).where(
                    c.camera_id == camera_id,
                    c.start_ms >= start_ms,
                    c.speed_samples > 0,
                    c.speed_mean_kmh.is_not(None),
                )
            ).one()
        n = int(row[0] or 0)
        return n, (float(row[1]) / n if n else None)

    def cameras(self) -> list[str]:
        """Cameras with at least one interval."""
        with self._conn() as conn:
            rows = conn.execute(sa.select(intervals.c.camera_id).distinct()).all()
        return sorted(str(r[0]) for r in rows)

    def _with_children(
        self,
        conn: sa.Connection,
        rows: Sequence[Any],
        camera_id: str | None,
        start_ms: int,
        end_ms: int,
        counts: bool = True,
    ) -> list[IntervalRow]:
        by_key: dict[tuple[str, int, int], dict[CountKey, int]] = {}
        zones: dict[tuple[str, int, int], list[ZoneRow]] = {}

        def where(table: sa.Table) -> list[Any]:
            cond = [table.c.start_ms >= start_ms, table.c.start_ms < end_ms]
            if camera_id:
                cond.append(table.c.camera_id == camera_id)
            return cond

        lc = line_counts.c
        # Rows unpacked as tuples: attribute access costs more than the query itself.
        if counts:
            query = sa.select(
                lc.camera_id,
                lc.start_ms,
                lc.end_ms,
                lc.line_id,
                lc.direction,
                lc.class_name,
                lc.count,
            ).where(*where(line_counts))
            for cam, start, end, line, direction, cls, n in conn.execute(query):
                by_key.setdefault((cam, start, end), {})[(line, direction, cls)] = n
        zc = zone_stats.c
        for cam, start, end, *z in conn.execute(
            sa.select(
                zc.camera_id,
                zc.start_ms,
                zc.end_ms,
                zc.zone_id,
                zc.occupancy_mean,
                zc.occupied_fraction,
                zc.dwell_mean_s,
                zc.queue_max_m,
            ).where(*where(zone_stats))
        ):
            zones.setdefault((cam, start, end), []).append(ZoneRow(*z))
        out = []
        # Columns in the order of schema.intervals.
        for cam, start, end, secs, frames, viv, samples, mean, p85, width, hist, queue, _ in rows:
            key = (cam, start, end)
            out.append(
                IntervalRow(
                    camera_id=cam,
                    start_ms=start,
                    end_ms=end,
                    seconds=secs,
                    frames=frames,
                    vehicles_in_view=viv,
                    counts=by_key.get(key, {}),
                    speed_samples=samples,
                    speed_mean_kmh=mean,
                    speed_p85_kmh=p85,
                    speed_bin_kmh=width,
                    speed_histogram=tuple(hist) if hist is not None else None,
                    zones=tuple(sorted(zones.get(key, []), key=lambda z: z.zone_id)),
                    longest_queue_m=queue,
                )
            )
        return out

    def close(self) -> None:
        self.engine.dispose()


def open_daemon_store(config: Config) -> StoreReader | None:
    """At daemon start: migrate the configured store, return its reader (None: disabled).

    A database migrated by a newer itsd stops the start (``StoreVersionError``, exit
    code 78). A database that cannot be reached now is logged and the daemon starts
    anyway: the store sink buffers intervals and migrates once the database answers.
    """
    url = store_url(config)
    if url is None:
        return None
    s = config.store
    engine = make_engine(url, pool_size=1, connect_timeout_s=s.connect_timeout_s)
    try:
        before, head = migrate(engine)
        log.info(
            "store %s: schema revision %s%s",
            describe_url(url),
            head,
            "" if before == (head,) else f" (was {', '.join(before) or 'empty'})",
        )
    except StoreUnavailable as err:
        log.warning("%s; starting anyway, intervals are buffered until it answers", err)
    finally:
        engine.dispose()
    reader = engine_for(config, reader=True)
    assert reader is not None
    return StoreReader(reader)
