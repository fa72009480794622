"""Real servers for the source tests, each a subprocess bound to 127.0.0.1 on a free port.

* ``mjpeg_server(**opts)``: ``mjpeg_server.py`` here, JPEGs of a shared clip as
  ``multipart/x-mixed-replace`` (options: user/password, mode ok|garbage|stall);
* ``hls_server()``: segments made with ``ffmpeg -f hls`` from a shared clip into a temp
  dir, served by ``python -m http.server``;
* ``whep_server(token=None)``: ``whep_server.py`` here, an aiortc peer sending a shared clip;
* ``rtsp_server(user="", password="")``: GStreamer's RTSP server (``tools/rtsp_server.py``, Debian's
  python3), skipped where GStreamer is missing (failed under CI).

Each factory returns the server's base URL and stops what it started at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from source_helpers import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DEBIAN_PY = "/usr/bin/python3"
CLIP = "street_overhead_dusk.mp4"  # h264 640x360, 23.976 fps, 480 frames


def _start(
    cmd: list[str], ready: Callable[[str], bool], timeout: float = 30.0
) -> subprocess.Popen[str]:
    """Start ``cmd`` and wait for the line ``ready`` accepts (fail with its output if not)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if ready(line):
                found.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(5)
            pytest.fail(f"server {cmd[1:3]} did not start:\n{''.join(lines)[-2000:]}")
    return proc


@pytest.fixture
def clip(media_dir: Path) -> Path:
    return media_dir / CLIP


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.fixture
def mjpeg_server(clip: Path, servers: list[subprocess.Popen[str]]) -> Callable[..., str]:
    def start(**opts: str | int) -> str:
        port = free_port()
        cmd = [sys.executable, str(HERE / "mjpeg_server.py"), "--file", str(clip)]
        cmd += ["--port", str(port)]
        opts.setdefault("frames", 30)  # JPEGs made at start: few, so the server is up fast
        for k, v in opts.items():
            cmd += [f"--{k}", str(v)]
        servers.append(_start(cmd, lambda line: line.startswith("READY")))
        return f"127.0.0.1:{port}"

    return start


@pytest.fixture
def hls_server(
    clip: Path, tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> Callable[[], str]:
    def start() -> str:
        if shutil.which("ffmpeg") is None:
            pytest.fail("ffmpeg is not on PATH (make system-deps installs it)")
        out = tmp_path / "hls"
        out.mkdir()
        subprocess.run(
            [
                *("ffmpeg", "-v", "error", "-i", str(clip), "-c", "copy", "-f", "hls"),
                *("-hls_time", "2", "-hls_list_size", "0", "-hls_playlist_type", "vod"),
                str(out / "index.m3u8"),
            ],
            check=True,
            timeout=60,
        )
        port = free_port()
        cmd = [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1"]
        cmd += ["--directory", str(out), str(port)]
        servers.append(_start(cmd, lambda line: "Serving HTTP" in line))
        return f"127.0.0.1:{port}"

    return start


@pytest.fixture
def whep_server(clip: Path, servers: list[subprocess.Popen[str]]) -> Callable[..., str]:
    def start(token: str | None = None) -> str:
        port = free_port()
        cmd = [sys.executable, str(HERE / "whep_server.py"), "--file", str(clip)]
        cmd += ["--port", str(port)] + (["--token", token] if token else [])
        servers.append(_start(cmd, lambda line: line.startswith("READY")))
        return f"127.0.0.1:{port}"

    return start


def _gst_available() -> bool:
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import GstRtspServer"
    )
    try:
        proc = subprocess.run([DEBIAN_PY, "-c", probe], capture_output=True, timeout=30)
        return proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def rtsp_server(clip: Path, servers: list[subprocess.Popen[str]]) -> Callable[..., str]:
    if not _gst_available():
        msg = "GStreamer RTSP server not installed (run `make system-deps`)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)

    def start(user: str = "", password: str = "") -> str:
        port = free_port()
        cmd = [DEBIAN_PY, str(REPO / "tools" / "rtsp_server.py"), "--file", str(clip)]
        cmd += ["--port", str(port)]
        if user:
            cmd += ["--user", user, "--password", password]
        servers.append(_start(cmd, lambda line: line.startswith("READY")))
        return f"127.0.0.1:{port}"

    return start
