"""The store's tables, one schema for SQLite and PostgreSQL (SQLAlchemy Core).

Times are Unix milliseconds (UTC) in BIGINT columns: exact, the same in both databases,
and cheap to bucket. One row per camera and interval (``traffic_intervals``, keyed by
camera id, interval start and end), with its line counts (``traffic_line_counts``) and
zone statistics (``traffic_zone_stats``) in child rows keyed the same way plus line,
direction and class, or zone. A replayed interval replaces its rows (see ``writer``), so a
key never holds two copies. The end is part of the key because a restarted daemon's first
interval starts on the boundary of the partial interval flushed at the stop before it:
both pieces are kept (revision 0002).

Changing a table means a new migration in ``migrations/versions`` (never editing an old
one) and the same change here; ``tests/unit/store`` checks the two agree.

This module must never import anything from itsd.
"""

from __future__ import annotations

import sqlalchemy as sa

#: Constraint names the same in every database (migrations can refer to them).
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

ID_LEN = 64
NAME_LEN = 32

intervals = sa.Table(
    "traffic_intervals",
    metadata,
    sa.Column("camera_id", sa.String(ID_LEN), primary_key=True),
    sa.Column("start_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("end_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("frames", sa.Integer, nullable=False),
    sa.Column("vehicles_in_view", sa.Integer, nullable=False),
    sa.Column("speed_samples", sa.Integer, nullable=False),
    sa.Column("speed_mean_kmh", sa.Float, nullable=True),
    sa.Column("speed_p85_kmh", sa.Float, nullable=True),
    sa.Column("speed_bin_kmh", sa.Float, nullable=True),
    sa.Column("speed_histogram", sa.JSON, nullable=True),
    sa.Column("longest_queue_m", sa.Float, nullable=True),
    sa.Column("written_at_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_traffic_intervals_start_ms", "start_ms"),
)

line_counts = sa.Table(
    "traffic_line_counts",
    metadata,
    sa.Column("camera_id", sa.String(ID_LEN), primary_key=True),
    sa.Column("start_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("end_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("line_id", sa.String(ID_LEN), primary_key=True),
    sa.Column("direction", sa.String(NAME_LEN), primary_key=True),
    sa.Column("class_name", sa.String(NAME_LEN), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(
        ["camera_id", "start_ms", "end_ms"],
        [
            "traffic_intervals.camera_id",
            "traffic_intervals.start_ms",
            "traffic_intervals.end_ms",
        ],
        ondelete="CASCADE",
    ),
)

zone_stats = sa.Table(
    "traffic_zone_stats",
    metadata,
    sa.Column("camera_id", sa.String(ID_LEN), primary_key=True),
    sa.Column("start_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("end_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("zone_id", sa.String(ID_LEN), primary_key=True),
    sa.Column("occupancy_mean", sa.Float, nullable=True),
    sa.Column("occupied_fraction", sa.Float, nullable=True),
    sa.Column("dwell_mean_s", sa.Float, nullable=True),
    sa.Column("queue_max_m", sa.Float, nullable=True),
    sa.ForeignKeyConstraint(
        ["camera_id", "start_ms", "end_ms"],
        [
            "traffic_intervals.camera_id",
            "traffic_intervals.start_ms",
            "traffic_intervals.end_ms",
        ],
        ondelete="CASCADE",
    ),
)

#: Child tables of an interval, deleted with it.
CHILDREN = (line_counts, zone_stats)
