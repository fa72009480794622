"""The daemon with a real RTSP camera (GStreamer's RTSP server): frames, drop, reconnect."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, free_port, wait_until

pytestmark = pytest.mark.slow


def test_rtsp_camera_is_processed_and_reconnected_after_a_drop(
    start_daemon: Callable[..., Daemon],
    rtsp_server: Callable[[Path, int], subprocess.Popen[str]],
    media_dir: Path,
) -> None:
    clip = media_dir / "street_overhead_dusk.mp4"
    port = free_port()
    server = rtsp_server(clip, port)
    url = f"rtsp://127.0.0.1:{port}/stream"
    d = start_daemon(source=url, open_timeout_s=3.0)
    d.wait_log(rf"camera street: opened {url}", timeout=60)
    wait_until(lambda: len(d.detections()) >= 30, 60, "30 frames from the camera", d.log_path)
    cars = [x for e in d.detections() for x in e["data"]["detections"] if x["class_name"] == "car"]
    assert cars, "the RTSP frames are the real clip: cars must be seen"

    server.kill()  # the camera drops off the network
    server.wait(10)
    d.wait_log(r"camera street: (stream .* (failed|ended)|cannot open)", timeout=60)
    before = max(e["frame_id"] for e in d.detections())
    assert d.proc.poll() is None

    rtsp_server(clip, port)  # the camera comes back
    d.wait_log(rf"camera street: opened {url}", count=2, timeout=90)
    wait_until(
        lambda: max(e["frame_id"] for e in d.detections()) > before + 20,
        60,
        "frames after the reconnect",
        d.log_path,
    )
    ids = [e["frame_id"] for e in d.detections()]
    assert ids == sorted(set(ids)), "frame ids keep increasing across the reconnect"
    assert d.stop().returncode == 0
