"""Key intervals by camera, start and end (not start alone).

A restarted daemon's first interval starts on the same boundary as the partial interval
its predecessor flushed at its stop: keyed by start alone, the second replaced the first
and its crossings were lost. With the end in the key both pieces are kept, and a replayed
event (same start, same end) still replaces itself.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

This module must never import anything from itsd: a migration is frozen.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CHILDREN = ("traffic_line_counts", "traffic_zone_stats")
CHILD_KEYS = {
    "traffic_line_counts": ["line_id", "direction", "class_name"],
    "traffic_zone_stats": ["zone_id"],
}


def _fk(child: str) -> str:
    return f"fk_{child}_camera_id_traffic_intervals"


def upgrade() -> None:
    for child in CHILDREN:
        op.add_column(child, sa.Column("end_ms", sa.BigInteger, nullable=True))
        op.execute(
            f"UPDATE {child} SET end_ms = (SELECT p.end_ms FROM traffic_intervals p "
            f"WHERE p.camera_id = {child}.camera_id AND p.start_ms = {child}.start_ms)"
        )
        op.execute(f"DELETE FROM {child} WHERE end_ms IS NULL")  # orphans: no interval
        with op.batch_alter_table(child) as b:
            b.drop_constraint(_fk(child), type_="foreignkey")
    with op.batch_alter_table("traffic_intervals") as b:
        b.drop_constraint("pk_traffic_intervals", type_="primary")
        b.create_primary_key("pk_traffic_intervals", ["camera_id", "start_ms", "end_ms"])
    for child in CHILDREN:
        with op.batch_alter_table(child) as b:
            b.alter_column("end_ms", existing_type=sa.BigInteger, nullable=False)
            b.drop_constraint(f"pk_{child}", type_="primary")
            b.create_primary_key(
                f"pk_{child}", ["camera_id", "start_ms", "end_ms", *CHILD_KEYS[child]]
            )
            b.create_foreign_key(
                _fk(child),
                "traffic_intervals",
                ["camera_id", "start_ms", "end_ms"],
                ["camera_id", "start_ms", "end_ms"],
                ondelete="CASCADE",
            )


def downgrade() -> None:
    raise NotImplementedError("0002 is not reversible: two intervals may share a start")
