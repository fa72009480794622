"""The whole daemon on real footage with the real model: run, stop, crash, recover.

Every test starts ``itsd start --foreground`` in a subprocess (supervisor plus decode,
infer, analyze and publish processes talking through shared memory) and checks what a
user would: events in the JSONL file, the log, ``itsd stop``, /dev/shm.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ITSD, Daemon, free_port, wait_until

pytestmark = pytest.mark.slow


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_demo_on_street_clip_counts_cars(tmp_path: Path, model_path: Path, media_dir: Path) -> None:
    out = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [
            *ITSD,
            "demo",
            str(media_dir / "street_overhead_dusk.mp4"),
            "--model",
            str(model_path),
            "--output",
            str(out),
            "--port",
            str(free_port()),
            "--monitoring-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in out.read_text().splitlines()]
    dets = [e for e in events if e["event_type"] == "detection"]
    crossings = [e for e in events if e["event_type"] == "line_crossing"]
    # 20 s at 15 fps = 300 frames; newest frame wins, so a busy machine drops some.
    assert len(dets) > 100
    ids = [e["frame_id"] for e in dets]
    assert ids == sorted(set(ids))
    cars = [d for e in dets for d in e["data"]["detections"] if d["class_name"] == "car"]
    assert len(cars) > 1.5 * len(dets)
    assert all(d["is_vehicle"] for d in cars)
    assert max(e["data"]["vehicle_count"] for e in dets) >= 3
    tracked = {d["tracking_id"] for d in cars if d["tracking_id"] is not None}
    assert len(tracked) >= 5
    # The clip shows cars driving both ways past the middle line.
    directions = {e["data"]["direction"] for e in crossings if e["data"]["class_name"] == "car"}
    assert directions == {"in", "out"}, crossings
    e0 = dets[0]
    assert set(e0) >= {"event_type", "timestamp", "camera_id", "frame_id", "data"}
    # The summary printed at the end names the demo's line and what crossed it.
    assert "frames processed" in proc.stdout
    assert "line crossings: center in car" in proc.stdout


def test_clean_stop_loses_nothing_and_leaves_no_shm(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon(loop=True)
    run_id = d.run_id()
    d.wait_log("all stages running")
    assert d.segments(run_id), "the run's segments should exist while it runs"
    wait_until(lambda: len(d.detections()) >= 30, 60, "30 detection events", d.log_path)
    res = d.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "itsd stopped" in res.stdout
    assert d.proc.wait(10) == 0
    assert not d.pid_file.exists()
    assert d.segments(run_id) == []
    inferred = int(d.wait_log(r"infer: stopped after (\d+) frames").group(1))
    dets = d.detections()
    assert len(dets) == inferred, "every frame taken by inference must have its event"
    ids = [e["frame_id"] for e in dets]
    assert ids == sorted(set(ids))


def test_systemd_notify_and_monitoring_port(
    start_daemon: Callable[..., Daemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    messages: list[str] = []
    done = threading.Event()

    def listen() -> None:  # what systemd does: read the socket all the time
        while not done.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    d = start_daemon(loop=True)
    wait_until(lambda: any("READY=1" in m for m in messages), 60, "READY=1", d.log_path)
    wait_until(lambda: any("WATCHDOG=1" in m for m in messages), 30, "WATCHDOG=1", d.log_path)
    wait_until(lambda: len(d.detections()) >= 5, 60, "events", d.log_path)

    base = f"http://127.0.0.1:{d.http_port}"
    with urllib.request.urlopen(f"{base}/health", timeout=10) as resp:
        health = json.loads(resp.read())
    assert resp.status == 200 and health["status"] in ("serving", "degraded")
    names = {st["name"] for st in health["stages"]}
    assert names == {"decode", "infer", "analyze", "publish"}

    def frames_metric() -> float:
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith('itsd_infer_frames_total{camera="street"} '):
                return float(line.split()[1])
        raise AssertionError("itsd_infer_frames_total of camera street missing from /metrics")

    first = frames_metric()
    wait_until(lambda: frames_metric() > first, 30, "the frame counter to grow")
    with urllib.request.urlopen(f"{base}/api/state", timeout=10) as resp:
        state = json.loads(resp.read())
    assert state["cameras"][0]["camera_id"] == "street"
    with urllib.request.urlopen(f"{base}/", timeout=10) as resp:
        assert b"<title>itsd</title>" in resp.read()

    assert d.stop().returncode == 0
    wait_until(lambda: any("STOPPING=1" in m for m in messages), 10, "STOPPING=1")
    done.set()
    listener.join(5)
    sock.close()
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    stopping = next(i for i, m in enumerate(messages) if "STOPPING=1" in m)
    assert ready < stopping


def test_stuck_stage_gets_sigabrt_with_traceback_and_is_restarted(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    # A FIFO with no reader: opening it for writing blocks forever, as a hung NFS
    # mount would. The publisher stops beating and the watchdog must act.
    fifo = tmp_path / "stuck.jsonl"
    os.mkfifo(fifo)
    d = start_daemon(loop=True, jsonl_path=str(fifo), heartbeat_timeout_s=2.0)
    d.wait_log(r"publish \(pid \d+\) is stuck: no heartbeat for", timeout=90)
    d.wait_log(r"Fatal Python error: Aborted", timeout=30)
    log = d.log()
    assert "publish.py" in log, "faulthandler should print where the stage was stuck"
    d.wait_log(r"publish died \(killed by SIGABRT\); restarting in", timeout=30)
    d.wait_log(r"started publish \(pid", count=2, timeout=30)
    pids = [int(s["pid"]) for s in d.status_json()["stages"] if s.get("pid")]
    d.kill()
    # Even a stage stuck in a blocking call must not outlive its supervisor for long.
    wait_until(lambda: all(pid_gone(p) for p in pids), 20, "orphaned stages to exit")


def test_killed_stages_are_restarted(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon(loop=True)
    d.wait_log("all stages running")
    wait_until(lambda: len(d.detections()) >= 10, 60, "first events", d.log_path)

    infer_pid = d.stage_pid("infer")
    os.kill(infer_pid, signal.SIGKILL)
    d.wait_log(r"infer died \(killed by SIGKILL\); restarting in")
    d.wait_log(r"started infer \(pid", count=2)

    decode_pid = d.stage_pid("decode")
    last_id = max(e["frame_id"] for e in d.detections())
    os.kill(decode_pid, signal.SIGKILL)
    d.wait_log(r"decode died \(killed by SIGKILL\); restarting in")
    d.wait_log(r"started decode \(pid", count=2)
    # The pipeline goes on, and frame ids keep increasing across the decoder restart.
    wait_until(
        lambda: max(e["frame_id"] for e in d.detections()) > last_id + 20,
        60,
        "events after the restarts",
        d.log_path,
    )
    ids = [e["frame_id"] for e in d.detections()]
    assert ids == sorted(set(ids))
    status = d.status_json()
    restarts = {s["name"]: s.get("restarts", 0) for s in status["stages"]}
    assert restarts["infer"] == 1 and restarts["decode"] == 1
    res = d.stop()
    assert res.returncode == 0, res.stderr


def test_supervisor_killed_children_exit_and_next_start_sweeps(
    start_daemon: Callable[..., Daemon],
) -> None:
    d = start_daemon(loop=True)
    run_id = d.run_id()
    d.wait_log("all stages running")
    pids = [int(s["pid"]) for s in d.status_json()["stages"] if s.get("pid")]
    assert len(pids) == 4
    d.kill()  # SIGKILL the supervisor
    wait_until(lambda: all(pid_gone(p) for p in pids), 15, "children to exit")
    leftovers = d.segments(run_id)
    assert leftovers, "a SIGKILLed supervisor cannot unlink its segments"

    d2 = start_daemon(loop=True)
    d2.wait_log("all stages running")
    assert d.segments(run_id) == []
    assert f"removed shared memory left by a dead run: itsd-{run_id}" in d2.log()
    res = d2.stop()
    assert res.returncode == 0, res.stderr


def test_second_start_with_same_pid_file_is_refused(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon(loop=True)
    d.wait_log("all stages running")
    proc = subprocess.run(
        [*ITSD, "start", "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=d.workdir,
    )
    assert proc.returncode != 0
    assert "already running" in proc.stderr
    assert d.stop().returncode == 0


def test_missing_model_stops_with_config_exit_code(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model: {{path: {tmp_path / 'nope.onnx'}}}\n"
        f"pid_file: {tmp_path / 'p.pid'}\n"
        "cameras: [{id: a, source: x.mp4}]\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "itsd", "start", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "nope.onnx" in proc.stderr


def test_unreachable_camera_is_retried_and_others_keep_running(
    start_daemon: Callable[..., Daemon],
) -> None:
    d = start_daemon(source="/nonexistent/camera.mp4")
    d.wait_log(r"camera street: cannot open /nonexistent/camera.mp4.*retrying in", timeout=60)
    d.wait_log(r"retrying in", count=3, timeout=60)
    time.sleep(0.5)
    assert d.proc.poll() is None, "a dead camera must not stop the daemon"
    assert d.stop().returncode == 0


def test_daemon_mode_detaches_and_stops(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon(loop=True)  # a foreground daemon gives us a config; stop it first
    d.wait_log("all stages running")
    assert d.stop().returncode == 0
    log = d.workdir / "daemon.log"
    res = d.cli("start", "--daemon", "--config", str(d.config_path), "--log-file", str(log))
    assert res.returncode == 0, res.stderr
    pid = int(d.pid_file.read_text())
    try:
        assert f"itsd started (pid {pid}); log: {log}" in res.stdout
        wait_until(lambda: "all stages running" in log.read_text(), 60, "daemon ready", log)
        assert d.status_json()["status"] == "SERVING_STATUS_SERVING"
        res = d.stop()
        assert res.returncode == 0, res.stderr
        assert pid_gone(pid)
        assert not d.pid_file.exists()
    finally:
        if not pid_gone(pid):  # never leave a detached daemon behind
            os.kill(pid, signal.SIGKILL)
