"""Traffic intervals with their line counts and zone statistics.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

This module must never import anything from itsd: a migration is frozen, it does not
follow later changes of ``itsd.store.schema``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traffic_intervals",
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("end_ms", sa.BigInteger, nullable=False),
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
        sa.PrimaryKeyConstraint("camera_id", "start_ms", name="pk_traffic_intervals"),
    )
    op.create_index("ix_traffic_intervals_start_ms", "traffic_intervals", ["start_ms"])
    op.create_table(
        "traffic_line_counts",
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("line_id", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(32), nullable=False),
        sa.Column("class_name", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(
            "camera_id",
            "start_ms",
            "line_id",
            "direction",
            "class_name",
            name="pk_traffic_line_counts",
        ),
        sa.ForeignKeyConstraint(
            ["camera_id", "start_ms"],
            ["traffic_intervals.camera_id", "traffic_intervals.start_ms"],
            name="fk_traffic_line_counts_camera_id_traffic_intervals",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "traffic_zone_stats",
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("start_ms", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("zone_id", sa.String(64), nullable=False),
        sa.Column("occupancy_mean", sa.Float, nullable=True),
        sa.Column("occupied_fraction", sa.Float, nullable=True),
        sa.Column("dwell_mean_s", sa.Float, nullable=True),
        sa.Column("queue_max_m", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("camera_id", "start_ms", "zone_id", name="pk_traffic_zone_stats"),
        sa.ForeignKeyConstraint(
            ["camera_id", "start_ms"],
            ["traffic_intervals.camera_id", "traffic_intervals.start_ms"],
            name="fk_traffic_zone_stats_camera_id_traffic_intervals",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("traffic_zone_stats")
    op.drop_table("traffic_line_counts")
    op.drop_index("ix_traffic_intervals_start_ms", table_name="traffic_intervals")
    op.drop_table("traffic_intervals")
