"""Alembic migrations of the store (run by ``itsd.store.db.migrate``, never by hand-made SQL).

This package must never import anything from itsd but ``itsd.store.schema``.
"""
