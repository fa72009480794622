"""Alembic environment: runs migrations on the connection ``itsd.store.db.migrate`` passes.

There is no ``alembic.ini``: the caller builds the Alembic config in code and hands over
an open connection (``config.attributes["connection"]``), so the same code migrates a
SQLite file and a PostgreSQL server. Offline (SQL script) mode is not supported.

This module must never import anything from itsd but ``itsd.store.schema``.
"""

from __future__ import annotations

from alembic import context

from itsd.store.schema import metadata


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("itsd store migrations run only through itsd.store.db.migrate")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline migrations are not supported: run `itsd db upgrade`")
_run()
