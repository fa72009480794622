"""Fixtures of the control server integration tests: a small switchable backend."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from itsd.control.backend import (
    CameraHealth,
    HealthSnapshot,
    MetricsSnapshot,
    NotSupportedError,
    StageHealth,
    StreamInfo,
    TrafficSnapshot,
)
from itsd.control.server import ControlServer, start_control_server


class SwitchableBackend:
    """A ControlBackend whose health status tests can flip; one camera, fixed streams."""

    def __init__(self) -> None:
        self.status = "serving"
        self.fail_health = False

    def health(self) -> HealthSnapshot:
        if self.fail_health:
            raise RuntimeError("control block unreadable")
        return HealthSnapshot(
            self.status,
            "0.1.0",
            3.0,
            "onnxruntime-cpu",
            "yolo11n.onnx",
            [StageHealth("infer", 4242, "running", 1, 0.5)],
        )

    def metrics(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            counters={"frames_decoded": 10, "frames_inferred": 9},
            per_camera={"cam-1": {"frames_decoded": 10}},
        )

    def list_streams(self) -> list[StreamInfo]:
        return [StreamInfo("cam-1", "rtsp://op:pw@cam-1/h264", 10.0, 0, "running")]

    def camera_health(self, camera_id: str | None) -> list[CameraHealth]:
        if camera_id not in (None, "cam-1"):
            raise KeyError(f"unknown camera {camera_id!r}")
        return [CameraHealth("cam-1", True, 10.0, 9.0, 0.1, 0)]

    def traffic_metrics(self, camera_id: str) -> TrafficSnapshot:
        if camera_id != "cam-1":
            raise KeyError(f"unknown camera {camera_id!r}")
        return TrafficSnapshot("cam-1", 0.0, 1.0)

    def register_stream(self, stream: StreamInfo) -> StreamInfo:
        raise NotSupportedError("streams come from the configuration file")

    def unregister_stream(self, camera_id: str) -> bool:
        raise NotSupportedError("streams come from the configuration file")


@pytest.fixture
def backend() -> SwitchableBackend:
    """A fresh backend, serving."""
    return SwitchableBackend()


@pytest.fixture
def server(backend: SwitchableBackend) -> Iterator[ControlServer]:
    """A control server over ``backend`` on 127.0.0.1, on a free port, polling health often."""
    srv = start_control_server(backend, "127.0.0.1", 0, max_workers=4, health_poll_s=0.05)
    try:
        yield srv
    finally:
        srv.stop(grace=0)


@pytest.fixture
def target(server: ControlServer) -> str:
    """Client target of ``server``."""
    return f"127.0.0.1:{server.port}"


# ----------------------------------------------------- a real daemon, throwaway certificates
def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_TESTS = Path(__file__).resolve().parents[2]
#: The supervisor tests' daemon helpers (``start_daemon``, ``Daemon``, ``wait_until``).
daemon_helpers = _load("itsd_test_daemon_helpers", _TESTS / "integration/supervisor/conftest.py")
#: ``make_certs`` of the control unit tests.
cert_helpers = _load("itsd_test_cert_helpers", _TESTS / "unit/control/control_fakes.py")
start_daemon = daemon_helpers.start_daemon


@pytest.fixture
def wait_until() -> Any:
    """The supervisor tests' ``wait_until(predicate, timeout, what, log=None)``."""
    return daemon_helpers.wait_until


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    """Throwaway CA, server (localhost, 127.0.0.1) and client certificates."""
    folder = tmp_path / "certs"
    folder.mkdir()
    return cert_helpers.make_certs(folder)  # type: ignore[no-any-return]
