"""Fakes of the control API unit tests: a backend over fixed data, throwaway certificates.

A plain module (not the conftest) so that tests import it by a name no other test folder
uses; the conftest turns these into fixtures.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from itsd.control.backend import (
    CameraHealth,
    HealthSnapshot,
    MetricsSnapshot,
    NotSupportedError,
    QueueStat,
    StageHealth,
    StreamExistsError,
    StreamInfo,
    TrafficSnapshot,
)

TAKEN_AT = 1_800_000_000.25


class FakeBackend:
    """A ControlBackend over fixed data that tests can change."""

    def __init__(self) -> None:
        self.status = "serving"
        self.health_error: Exception | None = None
        self.runtime_streams = True
        self.streams: dict[str, StreamInfo] = {
            "cam-b": StreamInfo("cam-b", "/data/b.mp4", 0.0, 0, "reconnecting"),
            "cam-a": StreamInfo(
                "cam-a", "rtsp://admin:s3cret@10.0.0.5:554/live", 15.0, 2, "running"
            ),
        }

    def health(self) -> HealthSnapshot:
        if self.health_error is not None:
            raise self.health_error
        return HealthSnapshot(
            status=self.status,
            version="0.1.0",
            uptime_s=12.5,
            backend="onnxruntime-cpu",
            model="yolo11n.onnx",
            stages=[
                StageHealth("decode:cam-a", 101, "running", 0, 0.25),
                StageHealth("infer", 102, "backoff", 3, None, "exit code 1"),
                StageHealth("publish", None, "hibernating", 0, None),
            ],
            taken_at=TAKEN_AT,
        )

    def metrics(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            counters={
                "frames_decoded": 1000,
                "frames_inferred": 900,
                "frames_dropped": 100,
                "decode_fps": 30.0,
                "inference_fps": 27.5,
                "batch_size_mean": 3.5,
                "batch_size_min": 1,
                "batch_size_max": 8,
                "batch_size_last": 4,
                "inference_latency_p50_ms": 12.0,
                "inference_latency_p99_ms": 40.0,
                "pipeline_latency_max_ms": 250.0,
                "events_published": 42,
            },
            per_camera={
                "cam-b": {"frames_decoded": 400, "fps_in": 10.0},
                "cam-a": {
                    "frames_decoded": 600,
                    "frames_inferred": 590,
                    "frames_dropped": 10,
                    "fps_in": 20.0,
                    "fps_out": 19.5,
                    "reconnect_wait_s": 1.5,
                },
            },
            queues=[
                QueueStat("frames/cam-b", 4, 1, 400, 3, 2, "cam-b"),
                QueueStat("detections", 256, 10, 900, 0, 0),
            ],
            taken_at=TAKEN_AT,
        )

    def list_streams(self) -> list[StreamInfo]:
        return list(self.streams.values())

    def camera_health(self, camera_id: str | None) -> list[CameraHealth]:
        ids = list(self.streams) if camera_id is None else [camera_id]
        out = []
        for cid in ids:
            if cid not in self.streams:
                raise KeyError(f"unknown camera {cid!r}")
            connected = self.streams[cid].state == "running"
            out.append(
                CameraHealth(
                    camera_id=cid,
                    connected=connected,
                    fps_in=20.0 if connected else 0.0,
                    fps_out=19.5 if connected else 0.0,
                    last_frame_age_s=0.05 if connected else None,
                    reconnects=0 if connected else 4,
                    last_error="" if connected else "connection refused",
                    last_error_at=None if connected else TAKEN_AT - 5,
                )
            )
        return out

    def traffic_metrics(self, camera_id: str) -> TrafficSnapshot:
        if camera_id not in self.streams:
            raise KeyError(f"unknown camera {camera_id!r}")
        if camera_id == "cam-b":
            return TrafficSnapshot("cam-b", TAKEN_AT - 60, TAKEN_AT)
        return TrafficSnapshot(
            camera_id="cam-a",
            window_start=TAKEN_AT - 60,
            window_end=TAKEN_AT,
            line_counts={
                "stop-line": {"out": {"car": 2}, "in": {"truck": 1, "car": 5, "bus": 0}},
                "entry": {"in": {"car": 3}},
            },
            vehicles_in_view=4,
            avg_speed_kmh=43.5,
        )

    def register_stream(self, stream: StreamInfo) -> StreamInfo:
        if not self.runtime_streams:
            raise NotSupportedError("streams come from the configuration file")
        if stream.camera_id in self.streams:
            raise StreamExistsError(f"camera {stream.camera_id!r} is already registered")
        if stream.source_url.startswith("ftp://"):
            raise ValueError("source_url: ftp:// sources are not supported")
        registered = StreamInfo(
            stream.camera_id, stream.source_url, stream.target_fps, stream.priority, "starting"
        )
        self.streams[stream.camera_id] = registered
        return registered

    def unregister_stream(self, camera_id: str) -> bool:
        if not self.runtime_streams:
            raise NotSupportedError("streams come from the configuration file")
        return self.streams.pop(camera_id, None) is not None


# ------------------------------------------------------------------- throwaway certificates
def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate (localhost, 127.0.0.1) and a client certificate, all
    signed by the CA, written as PEM files into ``folder``; returns their paths."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("itsd test CA"))
        .issuer_name(name("itsd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, server: bool) -> tuple[Any, Any]:
        k = key()
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return k, b.sign(ca_key, hashes.SHA256())

    out: dict[str, Path] = {}

    def write(label: str, cert: Any, k: Any | None) -> None:
        path = folder / f"{label}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{label}_cert"] = path
        if k is not None:
            kp = folder / f"{label}.key"
            kp.write_bytes(
                k.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            out[f"{label}_key"] = kp

    write("ca", ca, None)
    write("server", *reversed(leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH, True)))
    write("client", *reversed(leaf("itsd test client", ExtendedKeyUsageOID.CLIENT_AUTH, False)))
    return out
