"""The control server as a whole: gRPC health checking, reflection, binding, stopping."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from itsd.control.server import (
    SERVICE_NAMES,
    ControlBindError,
    ControlServer,
    start_control_server,
)
from itsd.errors import EXIT_UNAVAILABLE

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ENTRIES = ["", "itsd.v1.VisionCoreService", "itsd.v1.StreamingService", "itsd.v1.AnalyticsService"]


@pytest.fixture
def channel(target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target) as ch:
        yield ch


def _check(channel: grpc.Channel, service: str = "") -> Any:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_service_names() -> None:
    assert tuple(ENTRIES[1:]) == SERVICE_NAMES


@pytest.mark.parametrize("service", ENTRIES)
def test_health_check_serving(channel: grpc.Channel, service: str) -> None:
    assert _check(channel, service) == SERVING


def test_health_check_follows_the_backend(backend: Any, channel: grpc.Channel) -> None:
    backend.status = "not_serving"
    assert _check(channel) == NOT_SERVING
    assert _check(channel, "itsd.v1.VisionCoreService") == NOT_SERVING
    backend.status = "degraded"  # degraded still serves results
    assert _check(channel) == SERVING
    backend.fail_health = True  # a backend that cannot tell is not serving
    assert _check(channel) == NOT_SERVING
    backend.fail_health = False
    assert _check(channel) == SERVING


def test_health_check_of_an_unknown_service(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _check(channel, "itsd.v1.NoSuchService")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_list(backend: Any, channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.List(health_pb2.HealthListRequest(), timeout=10)
    assert {k: v.status for k, v in reply.statuses.items()} == dict.fromkeys(ENTRIES, SERVING)
    backend.status = "not_serving"
    reply = stub.List(health_pb2.HealthListRequest(), timeout=10)
    assert {v.status for v in reply.statuses.values()} == {NOT_SERVING}


def test_health_watch_sees_changes(backend: Any, channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    stream = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    try:
        assert next(stream).status == SERVING
        backend.status = "not_serving"
        assert next(stream).status == NOT_SERVING  # pushed by the poller, no Check needed
        backend.status = "serving"
        assert next(stream).status == SERVING
    finally:
        stream.cancel()


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert services >= {*ENTRIES[1:], "grpc.health.v1.Health"}
    assert any(s.startswith("grpc.reflection.") for s in services)
    pool = descriptor_pool.DescriptorPool(db)
    vision = pool.FindServiceByName("itsd.v1.VisionCoreService")
    assert vision.file.name == "itsd/v1/vision.proto"
    assert "ProcessCameraStream" in vision.methods_by_name
    # Imported files resolve too, so tools such as grpcurl can build requests.
    frame = pool.FindMessageTypeByName("itsd.v1.Frame")
    capture_time = frame.fields_by_name["capture_time"].message_type
    assert capture_time is not None
    assert capture_time.full_name == "google.protobuf.Timestamp"


def test_port_zero_picks_a_free_port(server: ControlServer) -> None:
    assert 0 < server.port < 65536
    assert server.address == f"127.0.0.1:{server.port}"


def test_taken_port_gives_a_clear_error(backend: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ControlBindError) as info:
            start_control_server(backend, "127.0.0.1", port)
    err = info.value
    assert isinstance(err, OSError)
    assert err.exit_code == EXIT_UNAVAILABLE
    message = str(err)
    assert message.startswith(f"cannot bind gRPC on 127.0.0.1:{port}: ")
    assert "in use" in message


def test_second_server_on_the_same_port_is_refused(backend: Any, server: ControlServer) -> None:
    # gRPC's default SO_REUSEPORT would let a second daemon share the port silently.
    with pytest.raises(OSError, match=f"cannot bind gRPC on 127.0.0.1:{server.port}: "):
        start_control_server(backend, "127.0.0.1", server.port)


def test_address_not_on_this_host(backend: Any) -> None:
    with pytest.raises(ControlBindError, match=r"cannot bind gRPC on 192\.0\.2\.1:\d+: "):
        start_control_server(backend, "192.0.2.1", 0)  # TEST-NET-1, never local


@pytest.mark.parametrize(
    ("bind", "port", "workers", "fragment"),
    [
        ("", 0, 8, "bind address is empty"),
        ("127.0.0.1", 70000, 8, "out of range"),
        ("127.0.0.1", -1, 8, "out of range"),
        ("127.0.0.1", 0, 0, "max_workers"),
    ],
)
def test_bad_arguments(backend: Any, bind: str, port: int, workers: int, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        start_control_server(backend, bind, port, workers)


def test_ipv6_loopback(backend: Any) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        srv = start_control_server(backend, "::1", 0)
    except ControlBindError as exc:
        pytest.skip(f"IPv6 loopback unusable here: {exc}")
    try:
        assert srv.address == f"[::1]:{srv.port}"
        with grpc.insecure_channel(srv.address) as ch:
            assert _check(ch) == SERVING
    finally:
        srv.stop(0)


def test_stop_refuses_new_calls_and_is_idempotent(backend: Any) -> None:
    with start_control_server(backend, "127.0.0.1", 0) as srv:
        target = f"127.0.0.1:{srv.port}"
        with grpc.insecure_channel(target) as ch:
            assert _check(ch) == SERVING
        srv.stop(grace=0)
        srv.stop(grace=0)
        assert srv.wait_for_termination(timeout=10)
        with grpc.insecure_channel(target) as ch, pytest.raises(grpc.RpcError) as info:
            _check(ch)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
