"""Helpers to run a real itsd daemon (supervisor + stage processes) in a test."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ITSD = [sys.executable, "-m", "itsd"]
SHM = Path(os.environ.get("ITSD_SHM_DIR", "/dev/shm"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "\n--- daemon log (tail) ---\n" + "\n".join(log.read_text().splitlines()[-40:])
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


@dataclass
class Daemon:
    """A daemon started with ``itsd start --foreground`` in a subprocess."""

    workdir: Path
    config_path: Path
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log_path: Path
    events_path: Path
    pid_file: Path
    _log_fh: Any = field(repr=False, default=None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 60.0, count: int = 1) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            matches = list(re.finditer(pattern, self.log()))
            return matches[count - 1] if len(matches) >= count else None

        return wait_until(found, timeout, f"log line /{pattern}/ x{count}", self.log_path)  # type: ignore[no-any-return]

    def run_id(self) -> str:
        return self.wait_log(r"shared memory ready: run (\S+),").group(1)

    def segments(self, run_id: str) -> list[Path]:
        return sorted(SHM.glob(f"itsd-{run_id}-*"))

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        out = []
        for line in self.events_path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))  # a half-written last line would fail here
        return out

    def detections(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event_type"] == "detection"]

    def frames(self) -> dict[str, list[int]]:
        """Frame ids of the detection events, by camera, in the order written."""
        out: dict[str, list[int]] = {}
        for e in self.detections():
            out.setdefault(e["camera_id"], []).append(int(e["frame_id"]))
        return out

    def api_state(self) -> dict[str, Any]:
        """The monitoring port's /api/state."""
        url = f"http://127.0.0.1:{self.http_port}/api/state"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def cli(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ITSD, *args], capture_output=True, text=True, timeout=timeout, cwd=self.workdir
        )

    def status_json(self) -> dict[str, Any]:
        proc = self.cli("status", "--json", "--target", f"127.0.0.1:{self.grpc_port}")
        assert proc.stdout, proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def stage_pid(self, name: str) -> int:
        for st in self.status_json()["stages"]:
            if st["name"] == name and st.get("pid"):
                return int(st["pid"])
        raise AssertionError(f"no running stage {name}")

    def stop(self, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.cli("stop", "--pid-file", str(self.pid_file), "--timeout", str(timeout))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def start_daemon(
    tmp_path: Path, model_path: Path, media_dir: Path
) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def _start(
        clip: str = "street_overhead_dusk.mp4",
        jsonl_path: str | None = None,
        heartbeat_timeout_s: float = 10.0,
        max_restarts: int = 5,
        cameras: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        workdir: Path | None = None,
        **camera: Any,
    ) -> Daemon:
        if workdir is None:
            workdir = tmp_path / f"d{len(started)}"
            workdir.mkdir()
        grpc_port, http_port = free_port(), free_port()
        cam = {
            "id": "street",
            "source": str(media_dir / clip),
            "lines": [{"id": "mid", "start": [0.5, 0.05], "end": [0.5, 0.95]}],
            **camera,
        }
        cfg = {
            "model": {"path": str(model_path), "confidence": 0.3},
            # One inference and one decode worker unless a test asks for more: these tests
            # name "infer" and "decode".
            "performance": {"target_fps": 15, "inference_workers": 1, "decode_workers": 1},
            "outputs": {"jsonl_path": jsonl_path or str(workdir / "events.jsonl")},
            "server": {"grpc_port": grpc_port, "monitoring_port": http_port},
            "pid_file": str(workdir / "itsd.pid"),
            "supervisor": {
                "heartbeat_timeout_s": heartbeat_timeout_s,
                "backoff_initial_s": 0.2,
                "max_restarts": max_restarts,
            },
            "state_dir": str(workdir / "state"),
            "cameras": [cam] if cameras is None else cameras,
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        config_path = workdir / "itsd.yaml"
        config_path.write_text(yaml.safe_dump(cfg))
        log_path = workdir / "itsd.log"
        fh = open(log_path, "ab")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen(
            [*ITSD, "start", "--foreground", "--config", str(config_path)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        d = Daemon(
            workdir,
            config_path,
            proc,
            grpc_port,
            http_port,
            log_path,
            workdir / "events.jsonl",
            workdir / "itsd.pid",
            fh,
        )
        started.append(d)
        return d

    yield _start
    for d in started:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            try:
                d.proc.wait(30)
            except subprocess.TimeoutExpired:
                d.kill()
        d._log_fh.close()
    # Tests that SIGKILL a supervisor leave its segments behind (as a crash would); the
    # next itsd start would sweep them, and so does this, once the children are gone.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and sweep_leftovers(started):
        time.sleep(0.2)


def sweep_leftovers(daemons: list[Daemon]) -> bool:
    """Sweep dead runs' segments; True while some of these daemons' segments remain."""
    from itsd.shm import sweep_stale

    sweep_stale()
    return any(
        next(SHM.glob(f"itsd-{m.group(1)}-*"), None) is not None
        for d in daemons
        if (m := re.search(r"shared memory ready: run (\S+),", d.log()))
    )


REPO = Path(__file__).resolve().parents[3]
DEBIAN_PY = "/usr/bin/python3"


def _gst_available() -> bool:
    if not os.path.exists(DEBIAN_PY):
        return False
    probe = subprocess.run(
        [
            DEBIAN_PY,
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0');"
            "from gi.repository import GstRtspServer",
        ],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@pytest.fixture
def rtsp_server() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    if not _gst_available():
        msg = "GStreamer RTSP server not installed (run `make system-deps`)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    procs: list[subprocess.Popen[str]] = []

    def _start(clip: Path, port: int, *extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                DEBIAN_PY,
                str(REPO / "tools" / "rtsp_server.py"),
                "--file",
                str(clip),
                "--port",
                str(port),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        return proc

    yield _start
    for p in procs:
        p.kill()
        p.wait(10)
