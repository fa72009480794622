"""Defects a user met, each replayed against a real daemon the way the user met it.

Real daemons, real model, real footage; answers read through the monitoring port, the
gRPC API (``itsd.control.client``) and the command line, as an operator would.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ITSD, SHM, Daemon, free_port, wait_until
from google.protobuf.json_format import MessageToJson
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families

from itsd.control import client
from itsd.runtime.metrics import REGISTRY

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- helpers
def http_get(d: Daemon, path: str, accept: str | None = None) -> tuple[int, str, str]:
    """(status, body, content type) of GET ``path`` on the daemon's monitoring port."""
    req = urllib.request.Request(f"http://127.0.0.1:{d.http_port}{path}")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers.get("Content-Type", "")
    except OSError:
        return 0, "", ""


def health(d: Daemon) -> dict[str, Any]:
    code, body, _ = http_get(d, "/health")
    return {"http": code, **json.loads(body)} if body else {"http": code}


def target(d: Daemon) -> str:
    return f"127.0.0.1:{d.grpc_port}"


def wait_reason(d: Daemon, pattern: str, timeout: float = 90.0) -> dict[str, Any]:
    """The /health answer once one of its reasons matches ``pattern``."""

    def found() -> dict[str, Any] | None:
        h = health(d)
        if any(re.search(pattern, r) for r in h.get("reasons", ())):
            return h
        return None

    return wait_until(found, timeout, f"a /health reason matching /{pattern}/", d.log_path)  # type: ignore[no-any-return]


def segments_of(pid: int) -> list[Path]:
    """Shared-memory segments of the run started by process ``pid`` (run ids start so)."""
    return sorted(SHM.glob(f"itsd-{pid}x*"))


def run_itsd(
    *args: str, cwd: Path, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], list[Path], float]:
    """Run ``itsd ARGS``; (result, segments its run left behind, seconds it took)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*ITSD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )
    out, err = proc.communicate(timeout=timeout)
    took = time.monotonic() - t0
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done, segments_of(proc.pid), took


def write_config(tmp_path: Path, model_path: Path, **sections: Any) -> Path:
    cfg: dict[str, Any] = {
        "model": {"path": str(model_path)},
        "pid_file": str(tmp_path / "itsd.pid"),
        "state_dir": str(tmp_path / "state"),
        "server": {"grpc_port": free_port(), "monitoring_port": free_port()},
        "outputs": {"jsonl_path": str(tmp_path / "events.jsonl")},
        **sections,
    }
    path = tmp_path / "itsd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------ 1. credentials never shown
def test_camera_password_is_shown_nowhere(start_daemon: Callable[..., Daemon]) -> None:
    port = free_port()  # nothing listens there
    d = start_daemon(source=f"rtsp://admin:secret@127.0.0.1:{port}/x", open_timeout_s=1.0)
    wait_reason(d, r"^camera street: .*refused")
    d.wait_log(r"retrying in", count=2)
    streams = client.list_streams(target(d), 10)
    cams = client.camera_health(target(d), 10)
    answers = {
        "/api/state": http_get(d, "/api/state")[1],
        "/health": http_get(d, "/health")[1],
        "ListStreams": "\n".join(MessageToJson(s) for s in streams),
        "GetCameraHealth": "\n".join(MessageToJson(c) for c in cams),
        "GetEngineHealth": MessageToJson(client.get_health(target(d), 10)),
    }
    for name, text in answers.items():
        assert "secret" not in text, f"{name} shows the password:\n{text}"
        assert "***" in text, f"{name} does not show the masked source or error:\n{text}"
    assert streams[0].config.source_url == f"rtsp://admin:***@127.0.0.1:{port}/x"
    assert "***" in cams[0].last_error
    metrics_text = http_get(d, "/metrics")[1]
    assert "itsd_up" in metrics_text and "secret" not in metrics_text
    assert d.stop().returncode == 0
    log = d.log()
    assert "cannot open rtsp://admin:***@" in log
    leaks = [line for line in log.splitlines() if "secret" in line]
    assert not leaks, "log lines show the password:\n" + "\n".join(leaks)


# ------------------------------------------------- 2. health reflects a broken camera
def _missing(tmp: Path, media: Path) -> str:
    return str(tmp / "missing.mp4")


def _text_file(tmp: Path, media: Path) -> str:
    p = tmp / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    return str(p)


def _truncated(tmp: Path, media: Path) -> str:
    p = tmp / "truncated.mp4"
    p.write_bytes((media / "street_overhead_dusk.mp4").read_bytes()[:20_000])
    return str(p)


def _directory(tmp: Path, media: Path) -> str:
    p = tmp / "clips.mp4"
    p.mkdir()
    return str(p)


def _closed_port(tmp: Path, media: Path) -> str:
    return f"rtsp://127.0.0.1:{free_port()}/x"


@pytest.mark.parametrize(
    ("make_source", "cause"),
    [
        (_missing, r"no such file"),
        (_text_file, r"not a video"),
        (_truncated, r"not a video"),
        (_directory, r"is a directory"),
        (_closed_port, r"refused"),
    ],
    ids=["missing-file", "text-file", "truncated-mp4", "directory", "closed-rtsp-port"],
)
def test_health_names_a_camera_that_cannot_be_read(
    start_daemon: Callable[..., Daemon],
    tmp_path: Path,
    media_dir: Path,
    make_source: Callable[[Path, Path], str],
    cause: str,
) -> None:
    d = start_daemon(source=make_source(tmp_path, media_dir), open_timeout_s=1.0)
    h = wait_reason(d, rf"^camera street: .*(?i:{cause})")
    assert h["status"] == "degraded", h
    assert h["http"] == 200
    assert not any(r.startswith("camera street: camera street") for r in h["reasons"]), h
    (cam,) = client.camera_health(target(d), 10, "street")
    assert re.search(f"(?i:{cause})", cam.last_error), cam.last_error
    assert not cam.connected
    assert d.stop().returncode == 0


# ---------------------------------------------- 3. a run on a file that cannot be opened
def test_demo_on_a_missing_file_fails_fast(tmp_path: Path, model_path: Path) -> None:
    proc, left, took = run_itsd(
        "demo",
        "/nonexistent.mp4",
        "--model",
        str(model_path),
        "--monitoring-port",
        str(free_port()),
        "--port",
        str(free_port()),
        "--output",
        str(tmp_path / "events.jsonl"),
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 66, proc.stderr[-3000:]
    assert took < 30, f"took {took:.0f} s"
    assert "/nonexistent.mp4" in proc.stderr.splitlines()[-1], proc.stderr[-2000:]
    assert not left


@pytest.mark.parametrize("kind", ["missing", "text"])
def test_run_that_ends_with_its_sources_fails_on_a_file_it_cannot_open(
    tmp_path: Path, model_path: Path, kind: str
) -> None:
    src = tmp_path / "cam.mp4"
    if kind == "text":
        src.write_text("not a video\n")
    path = write_config(
        tmp_path,
        model_path,
        supervisor={"exit_when_sources_end": True},
        cameras=[{"id": "gate", "source": str(src)}],
    )
    proc, left, took = run_itsd("start", "--config", str(path), cwd=tmp_path, timeout=150)
    assert proc.returncode == 66, proc.stderr[-3000:]
    # It ends instead of waiting forever (start-up alone takes 10-45 s on a busy 2 cores).
    assert took < 120, f"took {took:.0f} s"
    assert f"camera gate: cannot open {src}" in proc.stderr or f"{src}: no such file" in (
        proc.stderr
    ), proc.stderr[-3000:]
    assert "gate could not be opened" in proc.stderr
    assert not left
    assert not (tmp_path / "itsd.pid").exists()


# ------------------------------------------------------------- 4. an unwritable output
@pytest.mark.parametrize("kind", ["directory", "parent-is-a-file", "under-proc"])
def test_unwritable_output_is_refused_at_start(
    tmp_path: Path, model_path: Path, media_dir: Path, kind: str
) -> None:
    if kind == "directory":
        out = tmp_path / "events"
        out.mkdir()
        why = "is a directory"
    elif kind == "parent-is-a-file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "events.jsonl"
        why = "not a directory"
    else:
        out = Path("/proc/itsd-test/events.jsonl")
        why = "cannot write"
    path = write_config(
        tmp_path,
        model_path,
        outputs={"jsonl_path": str(out)},
        cameras=[{"id": "a", "source": str(media_dir / "bikes.mp4")}],
    )
    proc, left, _ = run_itsd("start", "--config", str(path), cwd=tmp_path, timeout=60)
    assert proc.returncode == 78, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "outputs.jsonl_path" in ln]
    assert lines, proc.stderr
    assert str(out) in lines[0] and why in lines[0].lower(), lines[0]
    assert "started" not in proc.stderr
    assert "shared memory ready" not in proc.stderr
    assert not left
    assert not (tmp_path / "itsd.pid").exists()


def test_output_failing_at_run_time_turns_health_degraded(
    start_daemon: Callable[..., Daemon],
) -> None:
    # /dev/full fails every write with ENOSPC, like a disk that filled up while running.
    d = start_daemon(loop=True, jsonl_path="/dev/full")
    h = wait_reason(d, r"^stage publish: cannot write events to /dev/full: .*No space left")
    assert h["status"] == "degraded" and h["http"] == 200, h
    families = {f.name: f for f in text_string_to_metric_families(http_get(d, "/metrics")[1])}
    held = [s.value for s in families["itsd_publish_events_held"].samples]
    assert held and max(held) > 0, "the events the output refuses are held, and say so"
    stages = {s["name"]: s for s in d.status_json()["stages"]}
    assert stages["publish"]["restarts"] == 0
    d.kill()


def test_output_replaced_by_a_directory_is_reported_then_recovers(
    start_daemon: Callable[..., Daemon],
) -> None:
    d = start_daemon(loop=True)
    wait_until(lambda: len(d.detections()) >= 5, 60, "detections", d.log_path)
    out = d.events_path
    out.rename(out.with_name("events.jsonl.1"))
    out.mkdir()  # the configured path is no longer a file the daemon can write
    h = wait_reason(d, rf"^stage publish: cannot write events to {re.escape(str(out))}: ")
    assert h["status"] == "degraded" and h["http"] == 200, h
    assert "Is a directory" in " ".join(h["reasons"])
    d.wait_log(r"cannot write \d+ event\(s\) to .*events.jsonl: .*Is a directory")
    out.rmdir()
    d.wait_log(r"writing to .*events.jsonl works again")
    wait_until(lambda: len(d.detections()) >= 3, 30, "events in the new file", d.log_path)
    wait_until(lambda: health(d)["status"] == "serving", 30, "serving again", d.log_path)
    assert d.stop().returncode == 0


# ----------------------------------------------------------- 5. a binary config file
@pytest.mark.parametrize(
    "data",
    [b"\x89PNG\r\n\x1a\n\x00\x00IHDR", b"server:\n  grpc_bind: caf\xe9\n", b"\xff\xfes\x00e\x00"],
    ids=["png", "latin-1", "utf-16"],
)
def test_binary_config_gives_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "itsd.yaml"
    path.write_bytes(data)
    for args in (["start", "--config", str(path)], ["config", "check", str(path)]):
        proc, left, _ = run_itsd(*args, cwd=tmp_path, timeout=60)
        assert proc.returncode == 78, (args, proc.stderr)
        err = proc.stderr.strip()
        assert "\n" not in err, (args, err)
        assert str(path) in err and "not a text file" in err, (args, err)
        assert "Traceback" not in proc.stderr + proc.stdout
        assert not left


# --------------------------------------------------------- 6. /metrics parses cleanly
def _check_families(families: list[Any], fmt: str) -> None:
    names = [f.name for f in families]
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"{fmt}: families appear twice: {twice}"
    by_name = {f.name: f for f in families}
    assert "itsd_stage_restarts" in by_name, fmt
    assert by_name["itsd_stage_restarts"].type == "counter"
    for name, defn in REGISTRY.items():
        if not defn.exported:
            continue
        fam = by_name.get(name.removesuffix("_total"))
        assert fam is not None, f"{fmt}: {name} is missing"
        assert fam.documentation == defn.help, (fmt, name)


def test_metrics_parse_in_both_formats(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon(loop=True)
    d.wait_log("all stages running")
    wait_until(lambda: len(d.detections()) >= 5, 60, "detections", d.log_path)
    code, text, ctype = http_get(d, "/metrics")
    assert code == 200 and ctype.startswith("text/plain"), ctype
    _check_families(list(text_string_to_metric_families(text)), "text")
    for name, defn in REGISTRY.items():
        if defn.exported:
            assert f"# HELP {name} {defn.help}" in text, name  # 0.0.4 keeps the _total
    restarts = [ln for ln in text.splitlines() if ln.startswith("itsd_stage_restarts_total{")]
    assert len(restarts) >= 4, restarts  # one family, a series per stage
    code, om_text, ctype = http_get(
        d, "/metrics", accept="application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    assert code == 200 and ctype.startswith("application/openmetrics-text"), ctype
    assert om_text.rstrip().endswith("# EOF")
    _check_families(list(om_parser.text_string_to_metric_families(om_text)), "openmetrics")
    for name, defn in REGISTRY.items():
        if defn.exported:
            assert f"# HELP {name.removesuffix('_total')} {defn.help}" in om_text, name


# ------------------------------------------------ 7. fps right on the first query
def test_fps_is_right_on_the_first_query(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon(loop=True)
    d.wait_log("all stages running")
    # Frames flow once events come out (10 frames: more than one tick of the supervisor's
    # loop); then ask, once each, as a dashboard would.
    wait_until(lambda: len(d.detections()) >= 10, 60, "detections", d.log_path)
    code, body, _ = http_get(d, "/api/state")
    assert code == 200
    metrics = json.loads(body)["metrics"]
    assert metrics["counters"]["decode_fps"] > 0, metrics["counters"]
    assert metrics["per_camera"]["street"]["fps_in"] > 0, metrics["per_camera"]
    em = client.metrics(target(d), 10)
    assert em.decode_fps > 0, MessageToJson(em)
    assert 0 < em.cameras[0].fps_in <= 40, MessageToJson(em)
    assert d.stop().returncode == 0
