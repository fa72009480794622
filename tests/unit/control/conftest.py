"""Fixtures of the control API unit tests: a fake backend and a real server on port 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from control_fakes import TAKEN_AT, FakeBackend, make_certs

from itsd.control.server import ControlServer, start_control_server


@pytest.fixture
def taken_at() -> float:
    """The ``taken_at`` of the fake backend's snapshots (Unix time)."""
    return TAKEN_AT


@pytest.fixture
def backend() -> FakeBackend:
    """A fresh fake backend."""
    return FakeBackend()


@pytest.fixture
def server(backend: FakeBackend) -> Iterator[ControlServer]:
    """A control server over ``backend`` on 127.0.0.1, on a free port."""
    srv = start_control_server(backend, "127.0.0.1", 0, max_workers=4)
    try:
        yield srv
    finally:
        srv.stop(grace=0)


@pytest.fixture
def channel(server: ControlServer) -> Iterator[grpc.Channel]:
    """A client channel to ``server``."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    """Throwaway CA, server and client certificates (see ``make_certs``)."""
    folder = tmp_path / "certs"
    folder.mkdir()
    return make_certs(folder)
