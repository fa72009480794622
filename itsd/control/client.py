"""Small typed client of the itsd.v1 control API, for the CLI and scripts.

Each function opens a channel to ``target`` (``host:port``, as grpc accepts it, or a
``Target`` with TLS files and a bearer token), makes
one call with a deadline of ``timeout`` seconds, closes the channel and returns the
response message. A failed call raises ``ControlClientError`` whose message says what
failed in words a person can act on; its ``code`` is the gRPC status code name, and
``ControlUnavailable`` (a subclass) means no daemon answered. ``get_health_dict`` and
``list_streams_dicts`` give the same answers as plain JSON-ready dicts for printing.

This module must never start a server, import a stage, an engine or analytics, or
retry on its own: the caller decides what a failure means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from itsd.control._pb import (
    analytics_pb2,
    analytics_pb2_grpc,
    streaming_pb2,
    streaming_pb2_grpc,
    vision_pb2,
    vision_pb2_grpc,
)
from itsd.errors import ItsdError

_T = TypeVar("_T")
_M = TypeVar("_M")


@dataclass(frozen=True)
class Target:
    """Where the daemon listens and how to talk to it.

    ``tls_ca`` (the CA that signed the daemon's certificate) turns TLS on; ``tls_cert``
    and ``tls_key`` add a client certificate; ``token`` is sent as ``authorization:
    Bearer <token>`` on every call (never printed: ``repr`` hides it).
    """

    address: str
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None
    #: TLS name to check the daemon's certificate against, when it differs from the host.
    server_name: str | None = None

    def __repr__(self) -> str:
        tls = "TLS" if self.tls_ca is not None else "plain"
        return f"Target({self.address!r}, {tls}, token={'set' if self.token else 'none'})"

    def __str__(self) -> str:
        return self.address

    def channel(self) -> grpc.Channel:
        """A channel to the daemon (TLS when ``tls_ca`` is set)."""
        if self.tls_ca is None:
            if self.tls_cert is not None or self.tls_key is not None:
                raise ItsdError("a client certificate needs TLS: give --tls-ca as well")
            channel = grpc.insecure_channel(self.address)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(self.tls_ca),
                private_key=_read(self.tls_key) if self.tls_key else None,
                certificate_chain=_read(self.tls_cert) if self.tls_cert else None,
            )
            options = (
                [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
            )
            channel = grpc.secure_channel(self.address, creds, options=options)
        if self.token:
            return grpc.intercept_channel(channel, _Bearer(self.token))
        return channel


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ItsdError(f"cannot read {path}: {err.strerror or err}") from None


class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(details, [*(details.metadata or ()), self._header])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


TargetLike = str | Target


class ControlClientError(ItsdError):
    """A control API call failed; ``code`` is the gRPC status code name."""

    def __init__(self, target: str, method: str, code: str, details: str) -> None:
        self.target = target
        self.method = method
        self.code = code
        self.details = details
        super().__init__(self._text())

    def _text(self) -> str:
        return f"{self.method} on {self.target} failed ({self.code}): {self.details}"


class ControlUnavailable(ControlClientError):  # noqa: N818  (name used by the CLI)
    """No daemon answered at the target (UNAVAILABLE) or not before the deadline.

    Its message is the reason alone (for example "failed to connect to all addresses"),
    so callers can write "cannot reach itsd at TARGET: {err}".
    """

    def _text(self) -> str:
        if self.code == "DEADLINE_EXCEEDED":
            return f"no answer to {self.method} within the deadline"
        return self.details


_UNREACHABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


def _call(target: TargetLike, method: str, invoke: Callable[[grpc.Channel], _T]) -> _T:
    spec = target if isinstance(target, Target) else Target(target)
    try:
        channel = spec.channel()
    except ItsdError as err:  # TLS files that cannot be read, a certificate without TLS
        raise ControlClientError(str(spec), method, "INVALID_ARGUMENT", str(err)) from None
    try:
        with channel:
            return invoke(channel)
    except grpc.RpcError as exc:
        code: Any = exc.code() if callable(getattr(exc, "code", None)) else None
        details: Any = exc.details() if callable(getattr(exc, "details", None)) else None
        name = code.name if code is not None else "UNKNOWN"
        kind = ControlUnavailable if name in _UNREACHABLE else ControlClientError
        raise kind(str(spec), method, name, str(details or exc)) from exc


def _expect(kind: type[_M], response: object) -> _M:
    """``response`` if it is a ``kind``; TypeError otherwise (a stub/servicer mismatch)."""
    if not isinstance(response, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(response).__name__}")
    return response


def get_health(target: TargetLike, timeout: float) -> vision_pb2.EngineHealth:
    """VisionCoreService.GetEngineHealth: overall and per-stage health of the daemon."""
    return _call(
        target,
        "GetEngineHealth",
        lambda ch: _expect(
            vision_pb2.EngineHealth,
            vision_pb2_grpc.VisionCoreServiceStub(ch).GetEngineHealth(
                vision_pb2.GetEngineHealthRequest(), timeout=timeout
            ),
        ),
    )


def metrics(target: TargetLike, timeout: float) -> vision_pb2.EngineMetrics:
    """VisionCoreService.GetEngineMetrics: pipeline counters, rates and per-camera counters."""
    return _call(
        target,
        "GetEngineMetrics",
        lambda ch: _expect(
            vision_pb2.EngineMetrics,
            vision_pb2_grpc.VisionCoreServiceStub(ch).GetEngineMetrics(
                vision_pb2.GetEngineMetricsRequest(), timeout=timeout
            ),
        ),
    )


def list_streams(target: TargetLike, timeout: float) -> list[streaming_pb2.StreamInfo]:
    """StreamingService.ListStreams: the camera streams, ordered by camera id."""
    response = _call(
        target,
        "ListStreams",
        lambda ch: _expect(
            streaming_pb2.ListStreamsResponse,
            streaming_pb2_grpc.StreamingServiceStub(ch).ListStreams(
                streaming_pb2.ListStreamsRequest(), timeout=timeout
            ),
        ),
    )
    return list(response.streams)


def queue_metrics(target: TargetLike, timeout: float) -> streaming_pb2.QueueMetrics:
    """StreamingService.GetQueueMetrics: state of the shared-memory rings."""
    return _call(
        target,
        "GetQueueMetrics",
        lambda ch: _expect(
            streaming_pb2.QueueMetrics,
            streaming_pb2_grpc.StreamingServiceStub(ch).GetQueueMetrics(
                streaming_pb2.GetQueueMetricsRequest(), timeout=timeout
            ),
        ),
    )


def camera_health(
    target: TargetLike, timeout: float, camera_id: str = ""
) -> list[analytics_pb2.CameraHealth]:
    """AnalyticsService.GetCameraHealth: one camera, or every camera when ``camera_id`` is ""."""
    response = _call(
        target,
        "GetCameraHealth",
        lambda ch: _expect(
            analytics_pb2.GetCameraHealthResponse,
            analytics_pb2_grpc.AnalyticsServiceStub(ch).GetCameraHealth(
                analytics_pb2.GetCameraHealthRequest(camera_id=camera_id), timeout=timeout
            ),
        ),
    )
    return list(response.cameras)


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    try:
        name = str(enum.Name(value))
    except ValueError:
        return "UNSPECIFIED"
    return name.removeprefix(prefix)


def health_dict(msg: vision_pb2.EngineHealth) -> dict[str, Any]:
    """EngineHealth as a JSON-ready dict; enum values are names without their prefix.

    ``status`` is "SERVING", "DEGRADED", "NOT_SERVING" or "UNSPECIFIED"; a stage's
    ``state`` is for example "RUNNING"; an unknown ``heartbeat_age_s`` is None.
    """
    return {
        "status": _enum_name(vision_pb2.ServingStatus, msg.status, "SERVING_STATUS_"),
        "version": msg.version,
        "uptime_s": msg.uptime_s,
        "backend": msg.backend,
        "model": msg.model,
        "observed_at": msg.observed_at.ToJsonString() if msg.HasField("observed_at") else None,
        "stages": [
            {
                "name": st.name,
                "pid": st.pid,
                "state": _enum_name(vision_pb2.StageState, st.state, "STAGE_STATE_"),
                "restarts": st.restarts,
                "heartbeat_age_s": (
                    st.last_heartbeat_age_s if st.HasField("last_heartbeat_age_s") else None
                ),
                "detail": st.detail,
            }
            for st in msg.stages
        ],
        "reasons": list(msg.reasons),
    }


def stream_dict(msg: streaming_pb2.StreamInfo) -> dict[str, Any]:
    """StreamInfo as a JSON-ready dict (``state`` for example "RUNNING")."""
    return {
        "camera_id": msg.config.camera_id,
        "source_url": msg.config.source_url,
        "target_fps": msg.config.target_fps,
        "priority": msg.config.priority,
        "state": _enum_name(streaming_pb2.StreamState, msg.state, "STREAM_STATE_"),
    }


def get_health_dict(target: TargetLike, timeout: float) -> dict[str, Any]:
    """``get_health`` as a dict (see ``health_dict``)."""
    return health_dict(get_health(target, timeout))


def list_streams_dicts(target: TargetLike, timeout: float) -> list[dict[str, Any]]:
    """``list_streams`` as dicts (see ``stream_dict``)."""
    return [stream_dict(s) for s in list_streams(target, timeout)]


def register_stream(
    target: TargetLike,
    timeout: float,
    camera_id: str,
    source_url: str,
    target_fps: float = 0.0,
    priority: int = 0,
    options: dict[str, Any] | None = None,
) -> streaming_pb2.StreamInfo:
    """StreamingService.RegisterStream: add a camera; returns it as registered."""
    import json

    config = streaming_pb2.StreamConfig(
        camera_id=camera_id,
        source_url=source_url,
        target_fps=target_fps,
        priority=priority,
        options_json=json.dumps(options) if options else "",
    )
    return _call(
        target,
        "RegisterStream",
        lambda ch: _expect(
            streaming_pb2.RegisterStreamResponse,
            streaming_pb2_grpc.StreamingServiceStub(ch).RegisterStream(
                streaming_pb2.RegisterStreamRequest(config=config), timeout=timeout
            ),
        ),
    ).stream


def unregister_stream(
    target: TargetLike, timeout: float, camera_id: str, allow_missing: bool = False
) -> bool:
    """StreamingService.UnregisterStream: remove a camera; True if one was removed."""
    return _call(
        target,
        "UnregisterStream",
        lambda ch: _expect(
            streaming_pb2.UnregisterStreamResponse,
            streaming_pb2_grpc.StreamingServiceStub(ch).UnregisterStream(
                streaming_pb2.UnregisterStreamRequest(
                    camera_id=camera_id, allow_missing=allow_missing
                ),
                timeout=timeout,
            ),
        ),
    ).removed


def reload_config(target: TargetLike, timeout: float) -> streaming_pb2.ReloadConfigResponse:
    """StreamingService.ReloadConfig: re-read the daemon's configuration file."""
    return _call(
        target,
        "ReloadConfig",
        lambda ch: _expect(
            streaming_pb2.ReloadConfigResponse,
            streaming_pb2_grpc.StreamingServiceStub(ch).ReloadConfig(
                streaming_pb2.ReloadConfigRequest(), timeout=timeout
            ),
        ),
    )
