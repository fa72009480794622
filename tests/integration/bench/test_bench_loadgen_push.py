"""bench/loadgen.py --mode push against a real daemon: 2 push:// cameras for a few seconds."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "bench"))

import loadgen  # noqa: E402
from soak import stop_daemon  # noqa: E402

from itsd.control import client  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_push_mode_measures_two_cameras(
    tmp_path: Path, model_path: Path, media_dir: Path, monkeypatch: object
) -> None:
    port = _free_port()
    events = tmp_path / "events.jsonl"
    cfg = {
        "model": {"path": str(model_path)},
        "performance": {"inference_workers": 1, "decode_workers": 1},
        "outputs": {"jsonl_path": str(events)},
        "server": {"grpc_port": port, "monitoring_port": 0},
        "pid_file": str(tmp_path / "itsd.pid"),
        "state_dir": str(tmp_path / "state"),
        "cameras": [],
    }
    (tmp_path / "itsd.yaml").write_text(yaml.safe_dump(cfg))
    log = tmp_path / "itsd.log"
    with open(log, "wb") as fh:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "itsd", "start", "--foreground", "--config", "itsd.yaml"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        target = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert daemon.poll() is None, log.read_text()[-3000:]
            try:
                health = client.get_health(target, 5)
                if health.stages and all(st.pid for st in health.stages):
                    break
            except client.ControlClientError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        report_path = tmp_path / "report.json"
        cache = tmp_path / "cache"
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # type: ignore[attr-defined]
        rc = loadgen.main(
            [
                "--mode",
                "push",
                "--cameras",
                "2",
                "--fps",
                "3",
                "--duration",
                "6",
                "--warmup",
                "2",
                "--push-frames",
                "12",
                "--resolution",
                "320x180",
                "--clip",
                str(media_dir / "street_overhead_dusk.mp4"),
                "--target-server",
                target,
                "--events",
                str(events),
                "--json",
                str(report_path),
            ]
        )
        assert rc == 0
        report = json.loads(report_path.read_text())
        push = report["push"]
        assert push["errors"] == []
        assert push["frames_sent"] >= 10  # 2 cameras x 3 fps x 4 s, less a busy machine's
        assert push["results"] >= push["frames_sent"] // 2
        assert not math.isnan(push["result_round_trip_ms"]["p50"])
        assert report["events_per_s"] > 0
        assert report["latency_ms"]["p50"] > 0
        # the JPEGs were made once and cached; the cameras are gone again
        assert len(list((cache / "itsd" / "loadgen").glob("*_320x180_q85_12.jpegs"))) == 1
        assert not [
            s for s in client.list_streams(target, 10) if s.config.camera_id.startswith("loadgen-")
        ]
        detections = [
            json.loads(line)
            for line in events.read_text().splitlines()
            if line.strip() and '"detection"' in line
        ]
        assert {d["camera_id"] for d in detections} == {"loadgen-000", "loadgen-001"}
    finally:
        stop_daemon(daemon)
