"""``itsd start`` in one call: logging, the supervisor, and its side services.

Starts the gRPC control API, the HTTP monitoring port and, with ``fleet.enabled``, the
fleet member (threads of the supervisor process; none touches frame pixels) once shared
memory exists, and stops them after the stages. A port that cannot be bound stops the
start with a clear message.

This module must never import a stage module.
"""

from __future__ import annotations

import logging
from typing import Any

from itsd.config import Config
from itsd.errors import ResourceError
from itsd.logutil import setup_logging
from itsd.supervisor.core import Supervisor, run_daemon

log = logging.getLogger("itsd.supervisor")


def _start_services(sup: Supervisor) -> None:
    from itsd.control.server import start_control_server
    from itsd.fleet.member import start_member
    from itsd.monitor.http import MonitorServer
    from itsd.store.reader import open_daemon_store
    from itsd.supervisor.backend import SupervisorBackend
    from itsd.supervisor.snapshot import Snapshotter

    cfg = sup.config.server
    snapshotter = Snapshotter()
    sup.set_snapshotter(snapshotter)
    sup.add_service(snapshotter.service.close)  # the alerts board; after the stages stop
    store = open_daemon_store(sup.config)  # migrations; refuses a newer schema
    if store is not None:
        sup.add_service(store.close)
    backend = SupervisorBackend(sup, store)
    try:
        control = start_control_server(
            backend,
            cfg.grpc_bind,
            cfg.grpc_port,
            api=sup.config.api,
            security=sup.config.security,
        )
    except OSError as err:
        raise ResourceError(str(err)) from None
    sup.add_service(lambda: control.stop(grace=1.0))
    log.info("gRPC control API on %s", control.address)
    if cfg.monitoring_port:
        from itsd.control.auth import TokenTable
        from itsd.monitor.http import server_ssl_context

        security = sup.config.security
        try:
            monitor = MonitorServer(
                backend,
                cfg.monitoring_bind,
                cfg.monitoring_port,
                lambda: backend.state.samples,
                state=lambda: backend.state,
                tokens=TokenTable.from_config(security),
                ssl_context=server_ssl_context(security),
            )
        except (OSError, ValueError) as err:
            raise ResourceError(str(err)) from None
        sup.add_service(monitor.stop)
        log.info(
            "monitoring on %s://%s:%d/ (health /health, metrics /metrics)",
            "https" if monitor.ssl_context is not None else "http",
            cfg.monitoring_bind,
            monitor.port,
        )
    # Names this node in every event (before the stages start); with fleet.enabled,
    # joins the fleet's consumer group once the stages run (stopped after the stages).
    start_member(sup)


def serve(
    config: Config, config_path: str | None = None, overrides: dict[str, Any] | None = None
) -> int:
    """Run the daemon in this process until it stops; returns the exit code.

    ``config_path`` and ``overrides`` (the command line's) are what a reload re-reads.
    """
    setup_logging(config.logging.level, "supervisor", config.logging.format)
    return run_daemon(config, _start_services, config_path, overrides)
