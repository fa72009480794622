"""The aiohttp monitoring port around a fixed state: HEAD, /ml/health's status rules,
the event stream, idle connections closed, the stream limit. (The daemon test in
tests/integration/monitor runs it on a live pipeline.)"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import SecretStr

from itsd.config import SecurityConfig
from itsd.control.auth import TokenTable
from itsd.control.backend import HealthSnapshot, MetricsSnapshot
from itsd.monitor import http as mh
from itsd.monitor.http import MonitorServer, server_ssl_context
from itsd.runtime.hostinfo import GpuStat, HostSample
from itsd.supervisor.state import DaemonState, StageView


class Backend:
    """Health and metrics of a fixed state (the supervisor's backend does the same)."""

    def __init__(self) -> None:
        self.status = "serving"

    def health(self) -> HealthSnapshot:
        return HealthSnapshot(self.status, "0", 1.0, "onnxruntime", "m.onnx")

    def metrics(self) -> MetricsSnapshot:
        return MetricsSnapshot({"inference_fps": 5.0})

    def list_streams(self) -> list[Any]:
        return []


def state(worker_state: str = "running", breaker: Any = None) -> DaemonState:
    about = MappingProxyType({"backend": "onnxruntime", "breaker": breaker})
    return DaemonState(
        status="serving",
        stages=(StageView("infer", "infer", worker_state, 42, 0, 0.1, "", "", about),),
        host=HostSample(0.5, 1 << 30, (GpuStat(0, "H200", 12.0, 1 << 30, 1 << 34),)),
    )


@pytest.fixture
def server() -> Iterator[tuple[MonitorServer, dict[str, Any]]]:
    box: dict[str, Any] = {"state": state()}
    srv = MonitorServer(
        Backend(),  # type: ignore[arg-type]
        "127.0.0.1",
        0,
        state=lambda: box["state"],
        idle_timeout_s=0.5,
    )
    yield srv, box
    srv.stop()


def fetch(srv: MonitorServer, path: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_head_answers_like_get(server: tuple[MonitorServer, dict[str, Any]]) -> None:
    srv, _ = server
    assert fetch(srv, "/health", "HEAD") == (200, b"")
    assert fetch(srv, "/metrics", "HEAD")[0] == 200
    assert fetch(srv, "/nope")[0] == 404


def test_ml_health_status(server: tuple[MonitorServer, dict[str, Any]]) -> None:
    srv, box = server
    code, body = fetch(srv, "/ml/health")
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "serving"
    assert doc["gpus"][0]["utilization_percent"] == 12.0 and doc["workers"][0]["pid"] == 42
    box["state"] = state(breaker={"state": "open"})
    code, body = fetch(srv, "/ml/health")
    assert code == 200 and json.loads(body)["status"] == "degraded"
    box["state"] = state("backoff")
    code, body = fetch(srv, "/ml/health")
    assert code == 503 and "no inference worker is running" in json.loads(body)["reasons"]


def test_event_stream_pushes_state(
    server: tuple[MonitorServer, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"event: state") < 2 and time.monotonic() < deadline:
            data += s.recv(65536)
    assert b"text/event-stream" in data
    assert data.count(b"event: state") >= 2  # the first at once, then one a second
    first = data.split(b"data: ", 1)[1].split(b"\n", 1)[0]
    assert json.loads(first)["health"]["status"] == "serving"


def test_idle_connections_are_closed(server: tuple[MonitorServer, dict[str, Any]]) -> None:
    srv, _ = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        t0 = time.monotonic()
        assert s.recv(1) == b""  # closed by the server, nothing sent
        assert time.monotonic() - t0 < 3.0


def test_stream_limit(
    server: tuple[MonitorServer, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = server
    monkeypatch.setattr(mh, "MAX_STREAMS", 1)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"event-stream" in s.recv(65536)
        assert fetch(srv, "/events")[0] == 503


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot bind the monitoring port on 127.0.0.1:{port}"):
            MonitorServer(Backend(), "127.0.0.1", port)  # type: ignore[arg-type]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tokens_and_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    security = SecurityConfig(
        tls_cert=cert,
        tls_key=key,
        read_tokens=[SecretStr("r" * 20)],
        admin_tokens=[SecretStr("a" * 20)],
    )
    srv = MonitorServer(
        Backend(),  # type: ignore[arg-type]
        "127.0.0.1",
        0,
        state=state,
        tokens=TokenTable.from_config(security),
        ssl_context=server_ssl_context(security),
    )
    ctx = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{srv.port}"

    def call(path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        req = urllib.request.Request(base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers

    try:
        assert call("/health")[0] == 200  # open, as gRPC health checking is
        code, body, headers = call("/metrics")
        assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert b"r" * 20 not in body
        assert call("/metrics", {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        assert call("/metrics", {"Authorization": "Bearer " + "r" * 20})[0] == 200
        assert call("/ml/health", {"Authorization": "Bearer " + "a" * 20})[0] == 200
        assert call("/api/state", {"Cookie": "itsd_token=" + "r" * 20})[0] == 200
        code, body, _ = call("/")
        assert code == 401 and b"needs a read token" in body
        with pytest.raises(OSError):  # plain HTTP is not served
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/health", timeout=5)
    finally:
        srv.stop()


def test_unreadable_certificate_is_named(tmp_path: Path) -> None:
    security = SecurityConfig(tls_cert=tmp_path / "missing.pem", tls_key=tmp_path / "k.pem")
    with pytest.raises(OSError, match=r"security\.tls_cert"):
        server_ssl_context(security)


def test_stop_with_a_client_that_does_not_read(caplog: pytest.LogCaptureFixture) -> None:
    srv = MonitorServer(Backend(), "127.0.0.1", 0, state=state)  # type: ignore[arg-type]
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(3.5)  # its queue fills: the newest state replaces the oldest
    t0 = time.monotonic()
    srv.stop()
    s.close()
    assert time.monotonic() - t0 < 5.0
    assert "did not stop cleanly" not in caplog.text
