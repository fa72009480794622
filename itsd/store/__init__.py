"""The aggregates store: per-camera, per-interval traffic aggregates in SQLite or PostgreSQL.

One schema for both databases (``schema``, SQLAlchemy Core), versioned by the Alembic
migrations shipped in ``migrations/`` (``db.migrate``: run by ``itsd db upgrade`` and at
daemon start). The publisher's store sink writes intervals (``writer``); the supervisor
reads them for the control API (``reader``); ``aggregate`` re-buckets intervals
(``itsd.report`` prints and draws the buckets for ``itsd report``).

Modules of this package must never import a stage, the supervisor, ``control``,
``monitor`` or the CLI, and never a GPU library.
"""

from __future__ import annotations
