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
        cond = [intervals.c.start_ms >= start_ms, intervals.c.start_ms < end_ms]
        if camera_id:
            cond.append(intervals.c.camera_id == camera_id)
        with self._conn() as conn:
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
            if not rows:
                return []
            return self._with_children(conn, rows, camera_id, start_ms, end_ms)

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
    ) -> list[IntervalRow]:
        counts: dict[tuple[str, int], dict[CountKey, int]] = {}
        zones: dict[tuple[str, int], list[ZoneRow]] = {}
        for table in (line_counts, zone_stats):
            cond = [table.c.start_ms >= start_ms, table.c.start_ms < end_ms]
            if camera_id:
                cond.append(table.c.camera_id == camera_id)
            for r in conn.execute(sa.select(table).where(*cond)):
                key = (str(r.camera_id), int(r.start_ms))
                if table is line_counts:
                    ck = (r.line_id, r.direction, r.class_name)
                    counts.setdefault(key, {})[ck] = int(r._mapping["count"])
                else:
                    zones.setdefault(key, []).append(
                        ZoneRow(
                            r.zone_id,
                            r.occupancy_mean,
                            r.occupied_fraction,
                            r.dwell_mean_s,
                            r.queue_max_m,
                        )
                    )
        out = []
        for r in rows:
            key = (str(r.camera_id), int(r.start_ms))
            hist = r.speed_histogram
            out.append(
                IntervalRow(
                    camera_id=key[0],
                    start_ms=key[1],
                    end_ms=int(r.end_ms),
                    seconds=float(r.seconds),
                    frames=int(r.frames),
                    vehicles_in_view=int(r.vehicles_in_view),
                    counts=counts.get(key, {}),
                    speed_samples=int(r.speed_samples),
                    speed_mean_kmh=r.speed_mean_kmh,
                    speed_p85_kmh=r.speed_p85_kmh,
                    speed_bin_kmh=r.speed_bin_kmh,
                    speed_histogram=tuple(int(x) for x in hist) if hist is not None else None,
                    zones=tuple(sorted(zones.get(key, []), key=lambda z: z.zone_id)),
                    longest_queue_m=r.longest_queue_m,
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
