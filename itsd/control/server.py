"""The gRPC control server: the three itsd.v1 services, health checking and reflection.

``start_control_server`` binds a ``grpc.server`` (thread pool) to one address, registers
VisionCoreService, StreamingService and AnalyticsService over a ``ControlBackend``, the
standard ``grpc.health.v1.Health`` service and server reflection, and starts it.

Health checking follows ``backend.health()``: the overall entry ("") and each itsd
service report SERVING while the daemon is serving or degraded, NOT_SERVING otherwise
(or when ``health()`` fails). ``Check`` and ``List`` read the backend on every call;
``Watch`` streams are fed by a poller thread that pushes only changes. On ``stop`` every
entry turns NOT_SERVING before the server drains, so load balancers stop sending first.

The server sets ``grpc.so_reuseport`` to 0: with gRPC's default (on) a second daemon could
silently share the port with the first. A port that is taken makes
``start_control_server`` raise ``ControlBindError`` (an ``OSError``) whose message reads
``cannot bind gRPC on ADDR:PORT: <reason>``.

This module must never import a stage, an engine, analytics or the CLI, and never run
frame processing in the server's threads.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from itsd.control._pb import (
    analytics_pb2,
    analytics_pb2_grpc,
    streaming_pb2,
    streaming_pb2_grpc,
    vision_pb2,
    vision_pb2_grpc,
)
from itsd.control.backend import ControlBackend
from itsd.control.servicers import (
    AnalyticsServicer,
    StreamingServicer,
    VisionCoreServicer,
    is_serving,
)
from itsd.errors import ResourceError

_log = logging.getLogger(__name__)

#: Full names of the itsd services, as gRPC and reflection know them.
SERVICE_NAMES: tuple[str, ...] = (
    vision_pb2.DESCRIPTOR.services_by_name["VisionCoreService"].full_name,
    streaming_pb2.DESCRIPTOR.services_by_name["StreamingService"].full_name,
    analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name,
)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ControlBindError(ResourceError, OSError):
    """The control server cannot listen on its address (taken port, unknown host...)."""


class _HealthMonitor:
    """Keeps the grpc.health.v1 statuses in line with ``backend.health()``."""

    def __init__(self, backend: ControlBackend, services: Sequence[str], poll_s: float) -> None:
        self._backend = backend
        self._services = ("", *services)
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._current: Any = None
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.servicer = health.HealthServicer(experimental_non_blocking=True)

    @property
    def entries(self) -> tuple[str, ...]:
        """The service names health checking answers for ("" is the whole server)."""
        return self._services

    def refresh(self) -> Any:
        """Read the backend, publish a change to watchers, return the current status.

        The backend is read under the lock, so a slow reader can never overwrite a newer
        status with an older one.
        """
        with self._lock:
            if self._closed:
                return _NOT_SERVING
            try:
                status = _SERVING if is_serving(self._backend.health()) else _NOT_SERVING
            except Exception:
                _log.exception("backend.health() failed; reporting NOT_SERVING")
                status = _NOT_SERVING
            if status != self._current:
                self._current = status
                for name in self._services:
                    self.servicer.set(name, status)
            return status

    def statuses(self) -> dict[str, Any]:
        """Current status of every entry, after a refresh."""
        status = self.refresh()
        return dict.fromkeys(self._services, status)

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="itsd-grpc-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.refresh()

    def close(self) -> None:
        """Stop polling and turn every entry NOT_SERVING for good."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._closed = True
            self.servicer.enter_graceful_shutdown()


class _LiveHealthServicer:
    """grpc.health.v1.Health whose Check and List read the backend on every call."""

    def __init__(self, monitor: _HealthMonitor) -> None:
        self._monitor = monitor
        # Watch keeps the reference servicer's non-blocking attributes by being its method.
        self.Watch = monitor.servicer.Watch

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Status of one entry; NOT_FOUND for an unknown service name."""
        status = self._monitor.refresh()
        if request.service not in self._monitor.entries:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details(f"unknown service {request.service!r}")
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=status)

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Status of every entry."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._monitor.statuses().items()
            }
        )


class ControlServer:
    """A running control server. Stop it with ``stop(grace)`` (or use it as a context)."""

    def __init__(
        self,
        server: grpc.Server,
        executor: ThreadPoolExecutor,
        monitor: _HealthMonitor,
        address: str,
        port: int,
    ) -> None:
        self._server = server
        self._executor = executor
        self._monitor = monitor
        self._address = address
        self._port = port
        self._stopped = False
        self._stop_lock = threading.Lock()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (the one picked when asked for port 0)."""
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` the server listens on (IPv6 hosts in brackets)."""
        return self._address

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, let running calls finish for ``grace`` seconds.

        Safe to call more than once; returns when the server has stopped.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._monitor.close()
        self._server.stop(grace).wait()
        self._executor.shutdown(wait=True)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Block until the server stops or ``timeout`` passes; True if it stopped."""
        timed_out = self._server.wait_for_termination(timeout)  # grpc returns "timed out"
        return not timed_out

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(grace=1.0)


def _host_port(bind: str, port: int) -> str:
    host = f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind
    return f"{host}:{port}"


def _bind_failure_reason(bind: str, port: int) -> str:
    """Why binding ``bind:port`` fails, found by trying it with a plain socket."""
    host = bind.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            return exc.strerror or str(exc)
    return "the gRPC runtime refused the address"


def start_control_server(
    backend: ControlBackend,
    bind: str,
    port: int,
    max_workers: int = 8,
    *,
    health_poll_s: float = 1.0,
) -> ControlServer:
    """Start the gRPC control API on ``bind:port`` (port 0 picks a free port).

    ``bind`` is a host name or an IPv4/IPv6 address (``"0.0.0.0"``, ``"::"``,
    ``"127.0.0.1"``). ``health_poll_s`` is how often Watch subscribers' status is
    refreshed from ``backend.health()``. Raises ``ControlBindError`` (an ``OSError``)
    with "cannot bind gRPC on ADDR:PORT: reason" when the address cannot be bound, and
    ``ValueError`` for a malformed argument.
    """
    if not bind:
        raise ValueError("bind address is empty (use 0.0.0.0, :: or 127.0.0.1)")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0..65535")
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if not health_poll_s > 0:
        raise ValueError(f"health_poll_s must be > 0, got {health_poll_s}")

    address = _host_port(bind, port)
    executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="itsd-grpc")
    server = grpc.server(executor, options=[("grpc.so_reuseport", 0)])
    vision_pb2_grpc.add_VisionCoreServiceServicer_to_server(VisionCoreServicer(backend), server)
    streaming_pb2_grpc.add_StreamingServiceServicer_to_server(StreamingServicer(backend), server)
    analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsServicer(backend), server)
    monitor = _HealthMonitor(backend, SERVICE_NAMES, health_poll_s)
    health_pb2_grpc.add_HealthServicer_to_server(_LiveHealthServicer(monitor), server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )

    try:
        bound = int(server.add_insecure_port(address))
    except RuntimeError:
        bound = 0
    if bound == 0:
        server.stop(None)
        executor.shutdown(wait=False)
        raise ControlBindError(f"cannot bind gRPC on {address}: {_bind_failure_reason(bind, port)}")
    monitor.start()
    server.start()
    _log.info("gRPC control API listening on %s", _host_port(bind, bound))
    return ControlServer(server, executor, monitor, _host_port(bind, bound), bound)
