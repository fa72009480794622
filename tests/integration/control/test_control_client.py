"""itsd.control.client against a running control server, and against no server."""

from __future__ import annotations

import socket

import pytest

from itsd.control import client
from itsd.control._pb import streaming_pb2, vision_pb2
from itsd.errors import ItsdError


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_get_health(target: str) -> None:
    health = client.get_health(target, timeout=10)
    assert isinstance(health, vision_pb2.EngineHealth)
    assert health.status == vision_pb2.SERVING_STATUS_SERVING
    assert [s.name for s in health.stages] == ["infer"]


def test_metrics(target: str) -> None:
    m = client.metrics(target, timeout=10)
    assert (m.frames_decoded, m.frames_inferred) == (10, 9)
    assert [c.camera_id for c in m.cameras] == ["cam-1"]


def test_list_streams(target: str) -> None:
    streams = client.list_streams(target, timeout=10)
    assert [s.config.camera_id for s in streams] == ["cam-1"]
    assert streams[0].config.source_url == "rtsp://op:***@cam-1/h264"
    assert streams[0].state == streaming_pb2.STREAM_STATE_RUNNING


def test_queue_metrics_and_camera_health(target: str) -> None:
    assert list(client.queue_metrics(target, timeout=10).rings) == []
    (cam,) = client.camera_health(target, timeout=10)
    assert cam.camera_id == "cam-1"
    assert cam.connected


def test_dicts_for_printing(backend: object, target: str) -> None:
    health = client.get_health_dict(target, timeout=10)
    assert health["status"] == "SERVING"
    assert health["version"] == "0.1.0"
    assert health["stages"] == [
        {
            "name": "infer",
            "pid": 4242,
            "state": "RUNNING",
            "restarts": 1,
            "heartbeat_age_s": 0.5,
            "detail": "",
        }
    ]
    assert isinstance(health["observed_at"], str)
    assert client.list_streams_dicts(target, timeout=10) == [
        {
            "camera_id": "cam-1",
            "source_url": "rtsp://op:***@cam-1/h264",
            "target_fps": 10.0,
            "priority": 0,
            "state": "RUNNING",
        }
    ]


def test_error_status_becomes_a_client_error(target: str) -> None:
    with pytest.raises(client.ControlClientError) as info:
        client.camera_health(target, timeout=10, camera_id="cam-9")
    err = info.value
    assert not isinstance(err, client.ControlUnavailable)
    assert isinstance(err, ItsdError)
    assert (err.code, err.details) == ("NOT_FOUND", "unknown camera 'cam-9'")
    assert str(err) == f"GetCameraHealth on {target} failed (NOT_FOUND): unknown camera 'cam-9'"


def test_no_daemon_is_unavailable() -> None:
    target = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(client.ControlUnavailable) as info:
        client.get_health(target, timeout=10)
    assert info.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    assert info.value.target == target
    assert str(info.value)  # a reason a person can read
