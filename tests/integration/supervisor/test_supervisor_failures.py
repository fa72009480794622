"""Bad input and broken parts: each gets a clear message and the rest keeps running.

Real daemons, real model, real footage (corrupted on purpose where the test says so).
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import Daemon, wait_until

pytestmark = pytest.mark.slow


def test_corrupt_video_data_is_skipped_and_counted(
    start_daemon: Callable[..., Daemon], media_dir: Path, tmp_path: Path
) -> None:
    data = bytearray((media_dir / "street_overhead_dusk.mp4").read_bytes())
    rng = random.Random(1)
    for off in range(200_000, len(data) - 100_000, 97_000):
        data[off : off + 3000] = bytes(rng.randrange(256) for _ in range(3000))
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(data)
    d = start_daemon(source=str(bad), realtime=False, target_fps=30)
    d.wait_log(r"camera street: corrupt data skipped \(1 so far\)", timeout=60)
    d.wait_log(r"camera street: end of ", timeout=90)
    assert d.stop().returncode in (0, 3)  # it may already be gone after the clip ended
    assert len(d.detections()) > 10, "frames around the damage must still be processed"


def test_camera_that_never_answers_is_retried(start_daemon: Callable[..., Daemon]) -> None:
    # A TCP port that accepts connections and never says a word, like a hung camera.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        d = start_daemon(source=f"rtsp://127.0.0.1:{port}/stream", open_timeout_s=1.0)
        d.wait_log(rf"camera street: cannot open rtsp://127.0.0.1:{port}/stream", timeout=60)
        d.wait_log(r"retrying in", count=2, timeout=60)
        assert d.status_json()["status"] in ("SERVING_STATUS_DEGRADED", "SERVING_STATUS_SERVING")
        assert d.stop().returncode == 0


def test_full_disk_is_reported_and_does_not_crash(start_daemon: Callable[..., Daemon]) -> None:
    # /dev/full fails every write with ENOSPC, like a full disk.
    d = start_daemon(loop=True, jsonl_path="/dev/full")
    d.wait_log(r"cannot write \d+ event\(s\) to /dev/full: .*No space left on device", timeout=60)
    d.wait_log(r"retrying every 1 s")
    # Back-pressure, not a crash: the publisher stays up and holds what it has.
    stages = {s["name"]: s for s in d.status_json()["stages"]}
    assert stages["publish"]["restarts"] == 0
    assert d.proc.poll() is None
    d.kill()


def test_restart_cap_moves_cameras_off_a_decode_worker_and_stops_on_a_core_stage(
    start_daemon: Callable[..., Daemon],
) -> None:
    d = start_daemon(loop=True, max_restarts=2, extra={"performance": {"decode_workers": 2}})
    d.wait_log("all stages running")
    for n in range(3):
        pid = d.stage_pid("decode:0")
        os.kill(pid, signal.SIGKILL)
        if n < 2:
            d.wait_log(r"started decode:0 \(pid", count=n + 2)
    d.wait_log(
        r"decode:0 died \(killed by SIGKILL\) 3 times .*giving up on it; its cameras move to "
        r"decode:1"
    )
    d.wait_log(r"camera street moved to decode:1")
    assert d.proc.poll() is None, "losing a decode worker must not stop the daemon"
    # The camera goes on from its new worker, frame ids still increasing.
    n0 = len(d.detections())
    wait_until(lambda: len(d.detections()) > n0 + 5, 60, "events after the move", d.log_path)
    ids = [e["frame_id"] for e in d.detections()]
    assert ids == sorted(set(ids))
    for n in range(3):
        pid = d.stage_pid("infer")
        os.kill(pid, signal.SIGKILL)
        if n < 2:
            d.wait_log(r"started infer \(pid", count=n + 2)
    d.wait_log(r"infer died \(killed by SIGKILL\) 3 times within .*stopping itsd")
    assert d.proc.wait(60) == 1
    assert not d.pid_file.exists()


def test_unloadable_model_stops_instead_of_restart_looping(tmp_path: Path, media_dir: Path) -> None:
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"this is not an onnx model")
    cfg = {
        "model": {"path": str(model)},
        "pid_file": str(tmp_path / "p.pid"),
        "server": {"grpc_port": 0, "monitoring_port": 0},
        "outputs": {"jsonl_path": str(tmp_path / "e.jsonl")},
        "cameras": [{"id": "a", "source": str(media_dir / "bikes.mp4")}],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "itsd", "start", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 78, proc.stderr[-2000:]
    assert "broken.onnx" in proc.stderr
    # With the default of one inference worker per core, every worker fails alike.
    assert re.search(
        r"infer(:\d+)? stopped with a configuration or model error; stopping itsd", proc.stderr
    )
    workers = len(set(re.findall(r"started (infer(?::\d+)?) \(pid", proc.stderr)))
    assert len(re.findall(r"started infer", proc.stderr)) == workers, "no restart loop"


def test_shared_memory_shortage_is_refused_before_anything_starts(tmp_path: Path) -> None:
    free = os.statvfs("/dev/shm")
    free_bytes = free.f_bavail * free.f_frsize
    per_camera = 64 * 8192 * 8192 * 3  # slots x max frame
    cams = [
        {"id": f"c{i}", "source": "x.mp4", "max_width": 8192, "max_height": 8192}
        for i in range(free_bytes // per_camera + 2)
    ]
    cfg = {
        "model": {"path": str(tmp_path / "m.onnx")},
        "performance": {"frame_ring_slots": 64},
        "pid_file": str(tmp_path / "p.pid"),
        "cameras": cams,
    }
    (tmp_path / "m.onnx").write_bytes(b"x")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "itsd", "start", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 69, proc.stderr[-2000:]
    assert "MiB" in proc.stderr and "/dev/shm" in proc.stderr
    assert "started" not in proc.stderr
    wait_until(lambda: not (tmp_path / "p.pid").exists(), 5, "pid file removed")
