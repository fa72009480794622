"""The gRPC control server: the three itsd.v1 services, health checking and reflection.

``start_control_server`` binds a ``grpc.server`` (thread pool) to one address, registers
VisionCoreService, StreamingService and AnalyticsService over a ``ControlBackend``, the
standard ``grpc.health.v1.Health`` service and server reflection, and starts it.

Health checking follows ``backend.health()``: the overall entry ("") and each itsd
service report SERVING while the daemon is serving or degraded, NOT_SERVING otherwise
(or when ``health()`` fails). ``Check`` and ``List`` read the backend on every call;
``Watch`` streams are fed by a poller thread that pushes only changes. On ``stop`` every
entry turns NOT_SERVING before the server drains, so load balancers stop sending first.

Limits (``api:``): the thread pool has one thread per allowed call,
``api.max_concurrent_unary + api.max_concurrent_streams``, and gRPC's
``maximum_concurrent_rpcs`` is the same number, so a call past it is refused at once
(RESOURCE_EXHAUSTED) instead of queueing behind the others. Streaming calls (frame and
result streams, reflection) also take a slot of their own semaphore of
``max_concurrent_streams``: idle streams can hold at most that many threads, and unary
calls always have theirs (eight idle reflection streams used to take every thread and
time every call out). Messages larger than ``api.max_message_mib`` are refused by gRPC
(RESOURCE_EXHAUSTED). A request that does not parse answers INVALID_ARGUMENT with one log
line instead of gRPC's traceback.

Security (``security:``): TLS with ``tls_cert``/``tls_key`` (and client certificates
signed by ``tls_client_ca`` when set); bearer tokens checked by ``itsd.control.auth``
for every call but health checking: read calls need a read or admin token, calls that
change the daemon or push frames (``ADMIN_METHODS``) an admin token. Refusals are
UNAUTHENTICATED / PERMISSION_DENIED and one log line that never shows the token.

The server sets ``grpc.so_reuseport`` to 0: with gRPC's default (on) a second daemon could
silently share the port with the first. A port that is taken makes
``start_control_server`` raise ``ControlBindError`` (an ``OSError``) whose message reads
``cannot bind gRPC on ADDR:PORT: <reason>``.

This module must never import a stage, an engine, analytics or the CLI, and never run
inference or analytics in the server's threads (frames sent by clients are only decoded
there and copied into their camera's ring; the supervisor's own loop never sees them).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from itsd.config import ApiConfig, SecurityConfig
from itsd.control._pb import (
    analytics_pb2,
    analytics_pb2_grpc,
    streaming_pb2,
    streaming_pb2_grpc,
    vision_pb2,
    vision_pb2_grpc,
)
from itsd.control.auth import Scope, TokenTable, check_bearer
from itsd.control.backend import ControlBackend, PushBackend
from itsd.control.frames import FrameService
from itsd.control.push import PushHub
from itsd.control.servicers import (
    RETRY_PUSHBACK_KEY,
    AnalyticsServicer,
    StreamingServicer,
    VisionCoreServicer,
    is_serving,
)
from itsd.errors import ConfigError, ResourceError

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


#: Calls that change the daemon or push frames into it: they need an admin token.
ADMIN_METHODS: frozenset[str] = frozenset(
    {
        "/itsd.v1.StreamingService/RegisterStream",
        "/itsd.v1.StreamingService/UnregisterStream",
        "/itsd.v1.StreamingService/ReloadConfig",
        "/itsd.v1.StreamingService/ProcessFrameBatch",
        "/itsd.v1.VisionCoreService/ProcessFrame",
        "/itsd.v1.VisionCoreService/ProcessFrameBatch",
        "/itsd.v1.VisionCoreService/ProcessCameraStream",
    }
)
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class _Malformed:
    """What the safe deserializer gives for bytes that do not parse."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _Malformed(len(data))

    return parse


def _method_name(method: str) -> str:
    return method.rsplit("/", 1)[-1][:64]


def _deny(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, retry_ms: int = 0
) -> None:
    if retry_ms:
        context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(retry_ms)),))
    context.abort(code, message)


class _Gate(grpc.ServerInterceptor):  # type: ignore[misc]
    """Tokens, a slot per streaming call, and requests that do not parse (see the module)."""

    def __init__(self, tokens: TokenTable, max_streams: int) -> None:
        self.tokens = tokens
        self.max_streams = max_streams
        self.streams = threading.BoundedSemaphore(max_streams)
        self.refused = 0

    def _log(self, method: str, context: grpc.ServicerContext, code: str, message: str) -> None:
        self.refused += 1
        try:
            peer = str(context.peer())[:80]
        except Exception:
            peer = "?"
        _log.info("%s from %s: %s: %s", _method_name(method), peer, code, message)

    def _admit(self, method: str, context: grpc.ServicerContext) -> None:
        """Abort the call unless its token allows it."""
        if not self.tokens.enabled or method.startswith(_HEALTH_PREFIX):
            return
        auth = None
        for key, value in context.invocation_metadata():
            if key == "authorization":
                auth = value if isinstance(value, str) else value.decode("latin-1")
                break
        need = Scope.ADMIN if method in ADMIN_METHODS else Scope.READ
        verdict = check_bearer(self.tokens, auth, need)
        if not verdict.ok:
            code = (
                grpc.StatusCode.UNAUTHENTICATED
                if verdict.reason == "unauthenticated"
                else grpc.StatusCode.PERMISSION_DENIED
            )
            self._log(method, context, code.name, verdict.message)
            _deny(context, code, verdict.message)

    def _malformed(self, method: str, context: grpc.ServicerContext, bad: _Malformed) -> None:
        message = (
            f"the request is not a valid {_method_name(method)} message "
            f"({bad.size} bytes that do not parse)"
        )
        self._log(method, context, "INVALID_ARGUMENT", message)
        _deny(context, grpc.StatusCode.INVALID_ARGUMENT, message)

    def _requests(
        self, method: str, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        for n, req in enumerate(requests):
            if isinstance(req, _Malformed):
                if method.startswith("/itsd.v1."):
                    # The servicer maps it to INVALID_ARGUMENT (it may read in a thread).
                    raise ValueError(
                        f"message {n} of the stream is not a valid request "
                        f"({req.size} bytes that do not parse)"
                    )
                self._malformed(method, context, req)
            yield req

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method)
        if method == _HEALTH_PREFIX + "Watch":
            return handler  # non-blocking: holds no thread, needs no token
        streaming = handler.request_streaming or handler.response_streaming
        gate = self

        def enter(context: grpc.ServicerContext) -> Callable[[], None]:
            gate._admit(method, context)
            if not streaming:
                return lambda: None
            if not gate.streams.acquire(blocking=False):
                message = (
                    f"{gate.max_streams} streaming calls are open already "
                    "(api.max_concurrent_streams); retry later"
                )
                gate._log(method, context, "RESOURCE_EXHAUSTED", message)
                _deny(context, grpc.StatusCode.RESOURCE_EXHAUSTED, message, retry_ms=1000)
            done = threading.Event()

            def release() -> None:
                if not done.is_set():
                    done.set()
                    gate.streams.release()

            context.add_callback(release)
            return release

        def requests_of(request: Any, context: grpc.ServicerContext) -> Any:
            if handler.request_streaming:
                return gate._requests(method, request, context)
            if isinstance(request, _Malformed):
                gate._malformed(method, context, request)
            return request

        def responses(behavior: Any, release: Callable[[], None], args: Any) -> Iterator[Any]:
            try:
                yield from behavior(*args)
            finally:
                release()

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                enter(context)
                return inner_uu(requests_of(request, context), context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=_safe(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                release = enter(context)
                try:
                    req = requests_of(request, context)
                except BaseException:
                    release()
                    raise
                return responses(inner_us, release, (req, context))

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=_safe(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            def stream_unary(requests: Any, context: grpc.ServicerContext) -> Any:
                release = enter(context)
                try:
                    return inner_su(requests_of(requests, context), context)
                finally:
                    release()

            return grpc.stream_unary_rpc_method_handler(
                stream_unary,
                request_deserializer=_safe(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        inner_ss = handler.stream_stream

        def stream_stream(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            release = enter(context)
            return responses(inner_ss, release, (requests_of(requests, context), context))

        return grpc.stream_stream_rpc_method_handler(
            stream_stream,
            request_deserializer=_safe(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


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
        hub: PushHub | None = None,
    ) -> None:
        self._server = server
        self._executor = executor
        self._monitor = monitor
        #: The pushed-frame path (None when the backend takes no frames).
        self.hub = hub
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
        if self.hub is not None:
            self.hub.close()  # wakes the calls that wait for results
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


def _read(path: Any, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path}: {err.strerror or err}") from None


def server_credentials(security: SecurityConfig) -> grpc.ServerCredentials | None:
    """TLS credentials of ``security`` (None without TLS); ConfigError for a file that
    cannot be read."""
    if security.tls_cert is None or security.tls_key is None:
        return None
    cert = _read(security.tls_cert, "security.tls_cert")
    key = _read(security.tls_key, "security.tls_key")
    ca = _read(security.tls_client_ca, "security.tls_client_ca") if security.tls_client_ca else None
    # gRPC says only "failed to bind" for a bad certificate: check the files first.
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(security.tls_cert, security.tls_key)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(
            f"security.tls_cert/tls_key: {security.tls_cert} and {security.tls_key} are not a "
            f"PEM certificate chain and its private key ({err})"
        ) from None
    if security.tls_client_ca is not None:
        try:
            check.load_verify_locations(security.tls_client_ca)
        except (ssl.SSLError, OSError) as err:
            raise ConfigError(
                f"security.tls_client_ca: {security.tls_client_ca} is not a PEM CA bundle ({err})"
            ) from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def start_control_server(
    backend: ControlBackend,
    bind: str,
    port: int,
    max_workers: int | None = None,
    *,
    health_poll_s: float = 1.0,
    api: ApiConfig | None = None,
    security: SecurityConfig | None = None,
) -> ControlServer:
    """Start the gRPC control API on ``bind:port`` (port 0 picks a free port).

    ``bind`` is a host name or an IPv4/IPv6 address (``"0.0.0.0"``, ``"::"``,
    ``"127.0.0.1"``). ``health_poll_s`` is how often Watch subscribers' status is
    refreshed from ``backend.health()``. ``api`` sets the limits and ``security`` TLS
    and tokens (defaults: the configuration's defaults; ``max_workers``, when given,
    caps the unary calls). A backend that is also a ``PushBackend`` gets the frame RPCs.
    Raises ``ControlBindError`` (an ``OSError``) with "cannot bind gRPC on ADDR:PORT:
    reason" when the address cannot be bound, ``ValueError`` for a malformed argument
    and ``ConfigError`` for TLS files or a tokens file that cannot be read.
    """
    if not bind:
        raise ValueError("bind address is empty (use 0.0.0.0, :: or 127.0.0.1)")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0..65535")
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if not health_poll_s > 0:
        raise ValueError(f"health_poll_s must be > 0, got {health_poll_s}")
    api = api or ApiConfig()
    security = security or SecurityConfig()
    try:
        tokens = TokenTable.from_config(security)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    credentials = server_credentials(security)
    unary = max_workers or api.max_concurrent_unary
    threads = unary + api.max_concurrent_streams
    max_bytes = int(api.max_message_mib * 2**20)

    address = _host_port(bind, port)
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="itsd-grpc")
    gate = _Gate(tokens, api.max_concurrent_streams)
    server = grpc.server(
        executor,
        interceptors=[gate],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            # Dead peers' connections (and their streams) are noticed and closed.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ],
        maximum_concurrent_rpcs=threads,
    )
    hub: PushHub | None = None
    frames: FrameService | None = None
    if isinstance(backend, PushBackend):
        hub = PushHub(backend, api.max_inflight_frames)
        frames = FrameService(hub, api.result_timeout_s)
    vision_pb2_grpc.add_VisionCoreServiceServicer_to_server(
        VisionCoreServicer(backend, frames), server
    )
    streaming_pb2_grpc.add_StreamingServiceServicer_to_server(
        StreamingServicer(backend, frames), server
    )
    analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsServicer(backend), server)
    monitor = _HealthMonitor(backend, SERVICE_NAMES, health_poll_s)
    health_pb2_grpc.add_HealthServicer_to_server(_LiveHealthServicer(monitor), server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )

    try:
        if credentials is not None:
            bound = int(server.add_secure_port(address, credentials))
        else:
            bound = int(server.add_insecure_port(address))
    except RuntimeError:
        bound = 0
    if bound == 0:
        server.stop(None)
        executor.shutdown(wait=False)
        raise ControlBindError(f"cannot bind gRPC on {address}: {_bind_failure_reason(bind, port)}")
    if hub is not None:
        hub.start()
    monitor.start()
    server.start()
    _log.info(
        "gRPC control API listening on %s (%s, %s; %d unary and %d streaming calls at once)",
        _host_port(bind, bound),
        "TLS" + (" with client certificates" if security.tls_client_ca else "")
        if credentials is not None
        else "no TLS",
        "bearer tokens" if tokens.enabled else "no tokens",
        unary,
        api.max_concurrent_streams,
    )
    return ControlServer(server, executor, monitor, _host_port(bind, bound), bound, hub)
