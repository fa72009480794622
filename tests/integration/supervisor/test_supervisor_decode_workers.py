"""Decode workers that run many cameras: placement, frame rate per camera, health."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, wait_until

pytestmark = pytest.mark.slow

WRITTEN = re.compile(r'^itsd_decode_frames_written_total\{camera="([^"]+)"\} ([0-9.e+]+)$', re.M)


def _written(d: Daemon) -> dict[str, float]:
    url = f"http://127.0.0.1:{d.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {cam: float(n) for cam, n in WRITTEN.findall(text)}


def test_32_cameras_on_2_decode_workers_each_keep_their_frame_rate(
    start_daemon: Callable[..., Daemon],
) -> None:
    fps = 3.0
    cameras = [
        {
            "id": f"c{i:02d}",
            "source": "pattern://moving?width=320&height=240&fps=15",
            "target_fps": fps,
            "max_width": 320,
            "max_height": 240,
        }
        for i in range(32)
    ]
    d = start_daemon(
        cameras=cameras,
        extra={"performance": {"decode_workers": 2}, "supervisor": {"max_cameras": 64}},
    )
    d.wait_log("all stages running", timeout=120)
    health = d.status_json()
    stages = {s["name"]: s for s in health["stages"]}
    # Least loaded placement: 16 cameras each.
    for name in ("decode:0", "decode:1"):
        assert stages[name]["detail"].startswith("16 camera(s)"), stages[name]
    wait_until(lambda: len(_written(d)) == 32, 60, "every camera's counters", d.log_path)
    time.sleep(3.0)  # past start-up
    t0, w0 = time.monotonic(), _written(d)
    time.sleep(20.0)
    t1, w1 = time.monotonic(), _written(d)
    rates = {cam: (w1[cam] - w0[cam]) / (t1 - t0) for cam in w0}
    print(
        f"decoded frames/s per camera over {t1 - t0:.0f} s: min {min(rates.values()):.2f}, "
        f"max {max(rates.values()):.2f} (target {fps})"
    )
    slow = {cam: round(r, 2) for cam, r in rates.items() if abs(r - fps) > 0.1 * fps}
    assert not slow, f"cameras off their frame rate: {slow}"
    assert d.stop().returncode == 0


def test_a_camera_decodes_its_substream_and_keeps_the_main_stream_as_its_source(
    start_daemon: Callable[..., Daemon], media_dir: Path
) -> None:
    main = "rtsp://admin:hunter2@main-stream.invalid/Streaming/Channels/101"
    sub = str(media_dir / "street_overhead_dusk.mp4")
    d = start_daemon(source=main, substream=sub, loop=True, target_fps=5)
    wait_until(lambda: len(d.detections()) >= 5, 60, "frames from the substream", d.log_path)
    frame = d.detections()[-1]["data"]["frame"]
    assert (frame["width"], frame["height"]) == (640, 360)
    proc = d.cli("streams", "list", "--target", f"127.0.0.1:{d.grpc_port}")
    assert "main-stream.invalid" in proc.stdout and "hunter2" not in proc.stdout
    assert "hunter2" not in d.log_path.read_text()
    assert d.stop().returncode == 0


def test_cameras_registered_at_once_are_attached_in_batches(
    start_daemon: Callable[..., Daemon],
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from itsd.control import client

    d = start_daemon(
        cameras=[{"id": "seed", "source": "pattern://moving?width=160&height=120&fps=2"}],
        extra={"performance": {"decode_workers": 2}},
    )
    d.wait_log("all stages running", timeout=120)
    target = f"127.0.0.1:{d.grpc_port}"
    src = "pattern://moving?width=160&height=120&fps=2"
    ids = [f"b{i:02d}" for i in range(48)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda cid: client.register_stream(target, 120, cid, src, 2.0), ids)
        )
    took = time.monotonic() - t0
    assert [a.config.camera_id for a in answers] == ids
    # Fewer attach commands than cameras: they went in batches.
    attaches = re.findall(
        r"infer\[\d+\] itsd\.infer: applied command \d+ \(attach \[([^]]*)\]", d.log()
    )
    sizes = [len(a.split(",")) for a in attaches]
    print(f"48 cameras registered from 16 threads in {took:.1f} s; attach batches {sizes}")
    assert sum(sizes) == 48 and len(sizes) < 48
    wait_until(lambda: set(ids) <= {e["camera_id"] for e in d.detections()}, 90, "every camera")
    assert d.stop().returncode == 0
