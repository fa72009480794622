"""The daemon with a real RTSP camera (GStreamer's RTSP server): frames, drop, reconnect."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, free_port, wait_until

pytestmark = pytest.mark.slow


def test_rtsp_camera_is_processed_and_reconnected_after_a_drop(
    start_daemon: Callable[..., Daemon],
    rtsp_server: Callable[..., subprocess.Popen[str]],
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


def _count(d: Daemon, camera: str) -> int:
    return sum(1 for e in d.detections() if e["camera_id"] == camera)


def test_one_decode_worker_keeps_its_other_cameras_while_an_rtsp_camera_drops(
    start_daemon: Callable[..., Daemon],
    rtsp_server: Callable[..., subprocess.Popen[str]],
    media_dir: Path,
) -> None:
    clip = media_dir / "street_overhead_dusk.mp4"
    port = free_port()
    login = ("--user", "cam", "--password", "s3cret")
    server = rtsp_server(clip, port, *login)
    url = f"rtsp://cam:s3cret@127.0.0.1:{port}/stream"
    cameras = [
        {"id": "rtsp", "source": url, "open_timeout_s": 3.0, "target_fps": 5},
        {"id": "file", "source": str(clip), "loop": True, "target_fps": 5},
        {"id": "synthetic", "source": "pattern://moving?width=320&height=240&fps=5"},
    ]
    d = start_daemon(cameras=cameras)  # one decode worker runs all three (conftest)
    d.wait_log(r"camera rtsp: opened rtsp://cam:\*\*\*@127\.0\.0\.1", timeout=60)
    for cam in ("rtsp", "file", "synthetic"):
        wait_until(lambda c=cam: _count(d, c) >= 5, 60, f"frames of {cam}", d.log_path)
    assert "s3cret" not in d.log_path.read_text()

    server.kill()  # the camera drops off the network ...
    server.wait(10)
    t_kill = time.monotonic()
    d.wait_log(r"camera rtsp: (stream .* (failed|ended)|cannot open|no frame)", timeout=60)
    # ... and the other cameras of its decode worker go on, without a pause.
    counts: list[tuple[float, int, int]] = []
    restarted_at: float | None = None
    reopened_at: float | None = None
    while time.monotonic() - t_kill < 40:
        now = time.monotonic()
        counts.append((now, _count(d, "file"), _count(d, "synthetic")))
        if restarted_at is None and now - t_kill > 6:
            rtsp_server(clip, port, *login)  # the camera comes back
            restarted_at = time.monotonic()
        log_text = d.log_path.read_text()
        if (
            restarted_at is not None
            and reopened_at is None
            and len(re.findall(r"camera rtsp: opened", log_text)) >= 2
        ):
            reopened_at = time.monotonic()
        if reopened_at is not None and now - reopened_at > 3:
            break
        time.sleep(0.5)
    assert restarted_at is not None and reopened_at is not None, "the camera never came back"
    back_s = reopened_at - restarted_at
    print(f"rtsp camera streams again {back_s:.1f} s after its server restarted")
    assert back_s < 10.0
    for col, cam in ((1, "file"), (2, "synthetic")):
        grew = [counts[0][0]] + [
            counts[i][0] for i in range(1, len(counts)) if counts[i][col] > counts[i - 1][col]
        ]
        gap = max(b - a for a, b in zip(grew, [*grew[1:], counts[-1][0]], strict=True))
        print(f"{cam}: longest pause in its events during the outage {gap:.1f} s")
        assert gap < 5.0, f"camera {cam} stalled for {gap:.1f} s while rtsp was down"
    before = max(e["frame_id"] for e in d.detections() if e["camera_id"] == "rtsp")
    wait_until(
        lambda: max(e["frame_id"] for e in d.detections() if e["camera_id"] == "rtsp") > before + 5,
        60,
        "frames after the reconnect",
        d.log_path,
    )
    stages = {s["name"]: s for s in d.status_json()["stages"]}
    assert stages["decode"]["restarts"] == 0
    assert d.stop().returncode == 0


def test_bad_sources_end_in_a_clear_state_per_camera(
    start_daemon: Callable[..., Daemon],
    rtsp_server: Callable[..., subprocess.Popen[str]],
    media_dir: Path,
    tmp_path: Path,
) -> None:
    clip = media_dir / "street_overhead_dusk.mp4"
    port = free_port()
    rtsp_server(clip, port, "--user", "cam", "--password", "s3cret")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    cameras = [
        {"id": "good", "source": str(clip), "loop": True, "target_fps": 5},
        {"id": "wronghost", "source": "rtsp://no-such-camera.invalid/stream"},
        {"id": "wrongpath", "source": f"rtsp://cam:s3cret@127.0.0.1:{port}/nope"},
        {"id": "badlogin", "source": f"rtsp://cam:wrong@127.0.0.1:{port}/stream"},
        {"id": "corrupt", "source": str(corrupt)},
    ]
    for cam in cameras[1:]:
        cam["open_timeout_s"] = 3.0
    d = start_daemon(cameras=cameras)
    wait_until(lambda: _count(d, "good") >= 5, 60, "frames of the good camera", d.log_path)
    expect = {
        "wronghost": r"no-such-camera\.invalid",
        "wrongpath": r"(?i)not found|404",
        "badlogin": r"(?i)unauthori[sz]ed|401|credentials|password|login",
        "corrupt": r"(?i)invalid data|not a video|cannot (open|read)",
    }

    def reasons() -> dict[str, str]:
        out = {}
        for r in d.status_json().get("reasons", []):
            m = re.match(r"camera (\S+): (.*)", r)
            if m:
                out[m.group(1)] = m.group(2)
        return out

    def all_reasons() -> dict[str, str] | None:
        r = reasons()
        return r if all(c in r for c in expect) else None

    got = wait_until(
        all_reasons,
        60,
        "a reason for every bad camera",
        d.log_path,
    )
    for cam, pattern in expect.items():
        print(f"{cam}: {got[cam]}")
        assert re.search(pattern, got[cam]), (cam, got[cam])
        assert "s3cret" not in got[cam] and "wrong@" not in got[cam]
    assert "good" not in got
    log = d.log_path.read_text()
    assert "s3cret" not in log and ":wrong@" not in log
    assert d.proc.poll() is None
    assert d.stop().returncode == 0
