"""The three itsd.v1 services over a real gRPC server (127.0.0.1, port 0) and a fake backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from itsd.control._pb import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    streaming_pb2,
    streaming_pb2_grpc,
    vision_pb2,
    vision_pb2_grpc,
)


def _vision(channel: grpc.Channel) -> Any:
    return vision_pb2_grpc.VisionCoreServiceStub(channel)


def _streaming(channel: grpc.Channel) -> Any:
    return streaming_pb2_grpc.StreamingServiceStub(channel)


def _analytics(channel: grpc.Channel) -> Any:
    return analytics_pb2_grpc.AnalyticsServiceStub(channel)


def _rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# ------------------------------------------------------------------ VisionCoreService


def test_engine_health_maps_the_snapshot(channel: grpc.Channel, taken_at: float) -> None:
    health = _vision(channel).GetEngineHealth(vision_pb2.GetEngineHealthRequest())
    assert health.status == vision_pb2.SERVING_STATUS_SERVING
    assert (health.version, health.backend, health.model) == (
        "0.1.0",
        "onnxruntime-cpu",
        "yolo11n.onnx",
    )
    assert health.uptime_s == 12.5
    assert health.observed_at.ToNanoseconds() == int(taken_at * 1e9)
    decode, infer, publish = health.stages
    assert (decode.name, decode.pid, decode.state, decode.restarts) == (
        "decode:cam-a",
        101,
        vision_pb2.STAGE_STATE_RUNNING,
        0,
    )
    assert decode.HasField("last_heartbeat_age_s")
    assert decode.last_heartbeat_age_s == 0.25
    assert infer.state == vision_pb2.STAGE_STATE_BACKOFF
    assert infer.restarts == 3
    assert infer.detail == "exit code 1"
    assert not infer.HasField("last_heartbeat_age_s")  # never beat: unset, not 0
    # No process: pid 0. A state name the API does not know: UNSPECIFIED, name in detail.
    assert publish.pid == 0
    assert publish.state == vision_pb2.STAGE_STATE_UNSPECIFIED
    assert publish.detail == "hibernating"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("degraded", vision_pb2.SERVING_STATUS_DEGRADED),
        ("not_serving", vision_pb2.SERVING_STATUS_NOT_SERVING),
        ("confused", vision_pb2.SERVING_STATUS_UNSPECIFIED),
    ],
)
def test_engine_health_status(
    backend: Any, channel: grpc.Channel, status: str, expected: int
) -> None:
    backend.status = status
    assert _vision(channel).GetEngineHealth(vision_pb2.GetEngineHealthRequest()).status == expected


def test_backend_failure_is_internal_with_its_message(backend: Any, channel: grpc.Channel) -> None:
    backend.health_error = RuntimeError("control block is gone")
    err = _rpc_error(lambda: _vision(channel).GetEngineHealth(vision_pb2.GetEngineHealthRequest()))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "control block is gone" in err.details()


def test_engine_metrics_maps_counters(channel: grpc.Channel, taken_at: float) -> None:
    m = _vision(channel).GetEngineMetrics(vision_pb2.GetEngineMetricsRequest())
    assert (m.frames_decoded, m.frames_inferred, m.frames_dropped) == (1000, 900, 100)
    assert (m.decode_fps, m.inference_fps) == (30.0, 27.5)
    assert (m.batch_size.mean, m.batch_size.min, m.batch_size.max, m.batch_size.last) == (
        3.5,
        1,
        8,
        4,
    )
    assert m.inference_latency.p50_ms == 12.0
    assert m.inference_latency.p99_ms == 40.0
    assert m.inference_latency.p90_ms == 0.0  # not reported by the backend
    assert m.pipeline_latency.max_ms == 250.0
    # Counters without a field are passed through, not dropped.
    assert dict(m.extra) == {"events_published": 42.0}
    assert [c.camera_id for c in m.cameras] == ["cam-a", "cam-b"]
    cam_a, cam_b = m.cameras
    assert (cam_a.frames_decoded, cam_a.frames_inferred, cam_a.frames_dropped) == (600, 590, 10)
    assert (cam_a.fps_in, cam_a.fps_out) == (20.0, 19.5)
    assert dict(cam_a.extra) == {"reconnect_wait_s": 1.5}
    assert (cam_b.frames_decoded, cam_b.frames_inferred, cam_b.fps_in) == (400, 0, 10.0)
    assert m.observed_at.ToNanoseconds() == int(taken_at * 1e9)


UNIMPLEMENTED_CALLS: list[tuple[str, Callable[[grpc.Channel], Any]]] = [
    (
        "VisionCoreService.ProcessFrame",
        lambda ch: _vision(ch).ProcessFrame(
            vision_pb2.ProcessFrameRequest(frame=common_pb2.Frame(camera_id="cam-a"))
        ),
    ),
    (
        "VisionCoreService.ProcessFrameBatch",
        lambda ch: _vision(ch).ProcessFrameBatch(common_pb2.ProcessFrameBatchRequest()),
    ),
    (
        "VisionCoreService.ProcessCameraStream",
        lambda ch: list(
            _vision(ch).ProcessCameraStream(iter([common_pb2.Frame(camera_id="cam-a")]))
        ),
    ),
    (
        "StreamingService.StreamFrames",
        lambda ch: list(
            _streaming(ch).StreamFrames(streaming_pb2.StreamFramesRequest(camera_id="cam-a"))
        ),
    ),
    (
        "StreamingService.ProcessFrameBatch",
        lambda ch: _streaming(ch).ProcessFrameBatch(common_pb2.ProcessFrameBatchRequest()),
    ),
]


@pytest.mark.parametrize(
    ("method", "call"), UNIMPLEMENTED_CALLS, ids=[m for m, _ in UNIMPLEMENTED_CALLS]
)
def test_rpcs_without_a_pipeline_answer_unimplemented(
    channel: grpc.Channel, method: str, call: Callable[[grpc.Channel], Any]
) -> None:
    err = _rpc_error(lambda: call(channel))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert err.details().startswith(f"{method} is not implemented yet: ")


# ------------------------------------------------------------------ StreamingService


def test_list_streams_sorted_with_passwords_redacted(channel: grpc.Channel) -> None:
    streams = _streaming(channel).ListStreams(streaming_pb2.ListStreamsRequest()).streams
    assert [s.config.camera_id for s in streams] == ["cam-a", "cam-b"]
    cam_a, cam_b = streams
    assert cam_a.config.source_url == "rtsp://admin:***@10.0.0.5:554/live"
    assert (cam_a.config.target_fps, cam_a.config.priority) == (15.0, 2)
    assert cam_a.state == streaming_pb2.STREAM_STATE_RUNNING
    assert cam_b.config.source_url == "/data/b.mp4"
    assert cam_b.state == streaming_pb2.STREAM_STATE_RECONNECTING


def test_queue_metrics_sorted_by_ring_name(channel: grpc.Channel) -> None:
    q = _streaming(channel).GetQueueMetrics(streaming_pb2.GetQueueMetricsRequest())
    assert [r.name for r in q.rings] == ["detections", "frames/cam-b"]
    det, frames = q.rings
    assert (det.capacity, det.used, det.written, det.camera_id) == (256, 10, 900, "")
    assert (frames.camera_id, frames.dropped, frames.skipped) == ("cam-b", 3, 2)


def test_register_stream_returns_the_registered_stream(backend: Any, channel: grpc.Channel) -> None:
    config = streaming_pb2.StreamConfig(
        camera_id="cam-c", source_url="rtsp://u:pw@cam-c/live", target_fps=10, priority=1
    )
    reply = _streaming(channel).RegisterStream(streaming_pb2.RegisterStreamRequest(config=config))
    assert reply.stream.config.camera_id == "cam-c"
    assert reply.stream.config.source_url == "rtsp://u:***@cam-c/live"
    assert reply.stream.state == streaming_pb2.STREAM_STATE_STARTING
    # The backend got the real URL, not the redacted one.
    assert backend.streams["cam-c"].source_url == "rtsp://u:pw@cam-c/live"


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (streaming_pb2.RegisterStreamRequest(), "config is required"),
        (
            streaming_pb2.RegisterStreamRequest(
                config=streaming_pb2.StreamConfig(source_url="/x.mp4")
            ),
            "config.camera_id is required",
        ),
        (
            streaming_pb2.RegisterStreamRequest(
                config=streaming_pb2.StreamConfig(camera_id="cam c", source_url="/x.mp4")
            ),
            "config.camera_id 'cam c' is invalid",
        ),
        (
            streaming_pb2.RegisterStreamRequest(config=streaming_pb2.StreamConfig(camera_id="c")),
            "config.source_url is required",
        ),
        (
            streaming_pb2.RegisterStreamRequest(
                config=streaming_pb2.StreamConfig(camera_id="c", source_url="/x", target_fps=-1)
            ),
            "config.target_fps must be >= 0",
        ),
        (
            streaming_pb2.RegisterStreamRequest(
                config=streaming_pb2.StreamConfig(camera_id="c", source_url="ftp://h/x")
            ),
            "ftp:// sources are not supported",  # ValueError from the backend
        ),
    ],
)
def test_register_stream_invalid_argument(
    channel: grpc.Channel, request_: Any, fragment: str
) -> None:
    err = _rpc_error(lambda: _streaming(channel).RegisterStream(request_))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.details()


def test_register_existing_stream_already_exists(channel: grpc.Channel) -> None:
    config = streaming_pb2.StreamConfig(camera_id="cam-a", source_url="/x.mp4")
    err = _rpc_error(
        lambda: _streaming(channel).RegisterStream(
            streaming_pb2.RegisterStreamRequest(config=config)
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.details() == "camera 'cam-a' is already registered"


def test_not_supported_is_failed_precondition(backend: Any, channel: grpc.Channel) -> None:
    backend.runtime_streams = False
    config = streaming_pb2.StreamConfig(camera_id="cam-c", source_url="/x.mp4")
    for call in (
        lambda: _streaming(channel).RegisterStream(
            streaming_pb2.RegisterStreamRequest(config=config)
        ),
        lambda: _streaming(channel).UnregisterStream(
            streaming_pb2.UnregisterStreamRequest(camera_id="cam-a")
        ),
    ):
        err = _rpc_error(call)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == "streams come from the configuration file"
    assert "cam-a" in backend.streams


def test_unregister_stream(backend: Any, channel: grpc.Channel) -> None:
    stub = _streaming(channel)
    reply = stub.UnregisterStream(streaming_pb2.UnregisterStreamRequest(camera_id="cam-b"))
    assert reply.removed
    assert "cam-b" not in backend.streams
    err = _rpc_error(
        lambda: stub.UnregisterStream(streaming_pb2.UnregisterStreamRequest(camera_id="cam-b"))
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "camera 'cam-b' is not registered"
    again = stub.UnregisterStream(
        streaming_pb2.UnregisterStreamRequest(camera_id="cam-b", allow_missing=True)
    )
    assert not again.removed
    err = _rpc_error(lambda: stub.UnregisterStream(streaming_pb2.UnregisterStreamRequest()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------ AnalyticsService


def test_camera_health_of_all_cameras(channel: grpc.Channel, taken_at: float) -> None:
    cams = _analytics(channel).GetCameraHealth(analytics_pb2.GetCameraHealthRequest()).cameras
    assert [c.camera_id for c in cams] == ["cam-a", "cam-b"]
    up, down = cams
    assert up.connected
    assert (up.fps_in, up.fps_out, up.last_frame_age_s, up.reconnects) == (20.0, 19.5, 0.05, 0)
    assert not up.HasField("last_error_time")
    assert not down.connected
    assert not down.HasField("last_frame_age_s")  # never decoded a frame: unset
    assert (down.reconnects, down.last_error) == (4, "connection refused")
    assert down.last_error_time.ToNanoseconds() == int((taken_at - 5) * 1e9)


def test_camera_health_of_one_camera(channel: grpc.Channel) -> None:
    request = analytics_pb2.GetCameraHealthRequest(camera_id="cam-b")
    cams = _analytics(channel).GetCameraHealth(request).cameras
    assert [c.camera_id for c in cams] == ["cam-b"]


def test_unknown_camera_is_not_found_with_the_message(channel: grpc.Channel) -> None:
    for call in (
        lambda: _analytics(channel).GetCameraHealth(
            analytics_pb2.GetCameraHealthRequest(camera_id="cam-z")
        ),
        lambda: _analytics(channel).GetTrafficMetrics(
            analytics_pb2.GetTrafficMetricsRequest(camera_id="cam-z")
        ),
    ):
        err = _rpc_error(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert err.details() == "unknown camera 'cam-z'"


def test_traffic_metrics_of_one_camera(channel: grpc.Channel, taken_at: float) -> None:
    request = analytics_pb2.GetTrafficMetricsRequest(camera_id="cam-a")
    (t,) = _analytics(channel).GetTrafficMetrics(request).cameras
    assert t.camera_id == "cam-a"
    assert t.window_start.ToNanoseconds() == int((taken_at - 60) * 1e9)
    assert t.window_end.ToNanoseconds() == int(taken_at * 1e9)
    rows = [(r.line_id, r.direction, r.class_name, r.count) for r in t.line_counts]
    # Sorted by line, direction, class; zero counts left out.
    assert rows == [
        ("entry", "in", "car", 3),
        ("stop-line", "in", "car", 5),
        ("stop-line", "in", "truck", 1),
        ("stop-line", "out", "car", 2),
    ]
    assert t.vehicles_in_view == 4
    assert t.HasField("avg_speed_kmh")
    assert t.avg_speed_kmh == 43.5


def test_traffic_metrics_of_all_cameras(channel: grpc.Channel) -> None:
    cams = _analytics(channel).GetTrafficMetrics(analytics_pb2.GetTrafficMetricsRequest()).cameras
    assert [c.camera_id for c in cams] == ["cam-a", "cam-b"]
    quiet = cams[1]
    assert list(quiet.line_counts) == []
    assert not quiet.HasField("avg_speed_kmh")  # unknown speed: unset, not 0
