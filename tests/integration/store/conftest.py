"""Fixtures of the store's integration tests: a real PostgreSQL server, and the daemon.

``pg_server`` starts one private PostgreSQL cluster per session (``tools/pg_server.py``:
Debian's binaries, run as the postgres user when the tests run as root, on a free port);
``pg_url`` gives each test a fresh database on it; ``own_pg_server`` is a server of the
test's own, for tests that stop and restart it. ``start_daemon`` is the daemon fixture
of ``tests/integration/supervisor``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests" / "unit" / "store"))

from pg_server import PostgresServer, pg_bin  # noqa: E402


def _load_daemon_fixtures() -> object:
    path = REPO / "tests" / "integration" / "supervisor" / "conftest.py"
    spec = importlib.util.spec_from_file_location("itsd_supervisor_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_daemon = _load_daemon_fixtures()
start_daemon = _daemon.start_daemon  # type: ignore[attr-defined]


def _need_postgres() -> None:
    if pg_bin() is None:
        msg = "PostgreSQL is not installed (Debian package postgresql; run `make system-deps`)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    _need_postgres()
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def own_pg_server() -> Iterator[PostgresServer]:
    _need_postgres()
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
