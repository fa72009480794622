"""The control server's gate: bounded streams, requests that do not parse, cut ids, tokens
and TLS, on a real gRPC server over the fake backend."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from control_fakes import FakeBackend
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from itsd.config import ApiConfig, SecurityConfig
from itsd.control import client
from itsd.control._pb import (
    analytics_pb2,
    analytics_pb2_grpc,
    streaming_pb2,
    streaming_pb2_grpc,
    vision_pb2,
    vision_pb2_grpc,
)
from itsd.control.auth import Scope, TokenTable, bearer_token, check_bearer, read_tokens_file
from itsd.control.server import start_control_server
from itsd.errors import ConfigError

ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"


def _health(ch: grpc.Channel, **kw: Any) -> Any:
    return vision_pb2_grpc.VisionCoreServiceStub(ch).GetEngineHealth(
        vision_pb2.GetEngineHealthRequest(), timeout=5, **kw
    )


# ----------------------------------------------------------------------------- tokens
def test_check_bearer_scopes() -> None:
    table = TokenTable({ADMIN: Scope.ADMIN, READER: Scope.READ})
    assert check_bearer(TokenTable(), None, Scope.ADMIN).ok  # no tokens: open
    assert check_bearer(table, f"Bearer {ADMIN}", Scope.ADMIN).ok
    assert check_bearer(table, f"bearer {READER}", Scope.READ).ok
    assert check_bearer(table, f"Bearer {ADMIN}", Scope.READ).ok
    denied = check_bearer(table, f"Bearer {READER}", Scope.ADMIN)
    assert (denied.ok, denied.reason) == (False, "permission_denied")
    for header in (None, "", "Basic abc", "Bearer", f"Bearer {ADMIN}x"):
        verdict = check_bearer(table, header, Scope.READ)
        assert (verdict.ok, verdict.reason) == (False, "unauthenticated"), header
        assert ADMIN not in verdict.message
    assert bearer_token("Bearer  abc ") == "abc"


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# comment\n\nadmin {ADMIN}\nread {READER}\n")
    assert read_tokens_file(path) == {ADMIN: Scope.ADMIN, READER: Scope.READ}
    path.write_text(f"root {ADMIN}\n")
    with pytest.raises(ValueError, match="line 1") as err:
        read_tokens_file(path)
    assert ADMIN not in str(err.value)
    with pytest.raises(ValueError, match="cannot read"):
        TokenTable.from_config(SecurityConfig(tokens_file=tmp_path / "missing"))


@pytest.fixture
def secured(backend: FakeBackend) -> Iterator[int]:
    security = SecurityConfig.model_validate({"admin_tokens": [ADMIN], "read_tokens": [READER]})
    srv = start_control_server(backend, "127.0.0.1", 0, security=security)
    try:
        yield srv.port
    finally:
        srv.stop(grace=0)


def test_tokens_unauthenticated_and_permission_denied(
    secured: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(f"127.0.0.1:{secured}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            _health(ch)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            _health(ch, metadata=[("authorization", "Bearer wrong-token-0123456789")])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _health(ch, metadata=[("authorization", f"Bearer {READER}")]).version == "0.1.0"
        stub = streaming_pb2_grpc.StreamingServiceStub(ch)
        request = streaming_pb2.UnregisterStreamRequest(camera_id="cam-a")
        with pytest.raises(grpc.RpcError) as err:
            stub.UnregisterStream(
                request, timeout=5, metadata=[("authorization", f"Bearer {READER}")]
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        done = stub.UnregisterStream(
            request, timeout=5, metadata=[("authorization", f"Bearer {ADMIN}")]
        )
        assert done.removed
        # Health checking needs no token (load balancers).
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    text = caplog.text
    assert ADMIN not in text and READER not in text and "wrong-token" not in text
    assert "Traceback" not in text
    # The client of the CLI sends the token on every call.
    target = client.Target(f"127.0.0.1:{secured}", token=READER)
    assert client.get_health(target, 5).version == "0.1.0"
    assert READER not in repr(target)
    with pytest.raises(client.ControlClientError) as cerr:
        client.unregister_stream(target, 5, "cam-b")
    assert cerr.value.code == "PERMISSION_DENIED"


# ----------------------------------------------------------------------------- TLS
def test_tls_and_client_certificates(backend: FakeBackend, certs: dict[str, Path]) -> None:
    security = SecurityConfig(
        tls_cert=certs["server_cert"],
        tls_key=certs["server_key"],
        tls_client_ca=certs["ca_cert"],
    )
    srv = start_control_server(backend, "127.0.0.1", 0, security=security)
    try:
        addr = f"127.0.0.1:{srv.port}"
        good = client.Target(
            addr,
            tls_ca=certs["ca_cert"],
            tls_cert=certs["client_cert"],
            tls_key=certs["client_key"],
        )
        assert client.get_health(good, 5).version == "0.1.0"
        for bad in (client.Target(addr), client.Target(addr, tls_ca=certs["ca_cert"])):
            with pytest.raises(client.ControlUnavailable):
                client.get_health(bad, 3)
    finally:
        srv.stop(grace=0)


# ----------------------------------------------------------------------------- limits
def test_idle_streams_never_starve_unary_calls(backend: FakeBackend) -> None:
    """More idle reflection streams than stream slots: unary calls still answer at once,
    the extra streams get RESOURCE_EXHAUSTED with a retry hint."""
    api = ApiConfig(max_concurrent_unary=4, max_concurrent_streams=3)
    srv = start_control_server(backend, "127.0.0.1", 0, api=api)
    held: list[Any] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            stop = threading.Event()

            def idle() -> Iterator[Any]:
                stop.wait(30)
                yield from ()

            errors = []
            for _ in range(8):
                call = stub.ServerReflectionInfo(idle())
                held.append(call)
            time.sleep(0.5)
            t0 = time.monotonic()
            for _ in range(10):
                assert _health(ch).version == "0.1.0"
            assert time.monotonic() - t0 < 3.0
            for call in held:
                if call.done():
                    errors.append(call.code())
                    assert call.trailing_metadata() is not None
            # 3 slots: the other 5 were refused at once.
            assert errors.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 5
            stop.set()
            for call in held:
                call.cancel()
            # Slots come back: a new reflection call works.
            time.sleep(0.3)
            req = reflection_pb2.ServerReflectionRequest(list_services="")
            answers = list(stub.ServerReflectionInfo(iter([req]), timeout=5))
            assert answers and answers[0].list_services_response.service
    finally:
        srv.stop(grace=0)


def test_unparseable_request_is_invalid_argument_in_one_line(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    call = channel.unary_unary(
        "/itsd.v1.AnalyticsService/GetCameraHealth",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    for junk in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12"):
        with pytest.raises(grpc.RpcError) as err:
            call(junk, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "do not parse" in err.value.details()
    assert "Traceback" not in caplog.text
    lines = [r for r in caplog.records if "GetCameraHealth" in r.getMessage()]
    assert len(lines) == 3


def test_huge_camera_id_is_not_found_with_a_short_message(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    huge = "x" * (1 << 20)
    stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
    for call in (
        lambda: stub.GetCameraHealth(
            analytics_pb2.GetCameraHealthRequest(camera_id=huge), timeout=5
        ),
        lambda: stub.GetTrafficMetrics(
            analytics_pb2.GetTrafficMetricsRequest(camera_id=huge), timeout=5
        ),
        lambda: streaming_pb2_grpc.StreamingServiceStub(channel).UnregisterStream(
            streaming_pb2.UnregisterStreamRequest(camera_id=huge), timeout=5
        ),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(err.value.details()) <= 1000
    assert max(len(r.getMessage()) for r in caplog.records) < 2000


def test_oversized_message_is_refused(backend: FakeBackend) -> None:
    srv = start_control_server(backend, "127.0.0.1", 0, api=ApiConfig(max_message_mib=1.0))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = analytics_pb2_grpc.AnalyticsServiceStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.GetCameraHealth(
                    analytics_pb2.GetCameraHealthRequest(camera_id="y" * (2 << 20)), timeout=5
                )
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert _health(ch).version == "0.1.0"
    finally:
        srv.stop(grace=0)


def test_bad_tls_files_are_a_configuration_error(
    backend: FakeBackend, certs: dict[str, Path], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        ({"tls_cert": junk, "tls_key": certs["server_key"]}, "not a PEM certificate chain"),
        ({"tls_cert": certs["server_cert"], "tls_key": certs["client_key"]}, "private key"),
        (
            {
                "tls_cert": certs["server_cert"],
                "tls_key": certs["server_key"],
                "tls_client_ca": junk,
            },
            "not a PEM CA bundle",
        ),
        ({"tls_cert": tmp_path / "missing.pem", "tls_key": junk}, "cannot read"),
    ]
    for fields, words in cases:
        with pytest.raises(ConfigError, match=words):
            start_control_server(backend, "127.0.0.1", 0, security=SecurityConfig(**fields))
