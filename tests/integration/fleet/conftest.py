"""Fleet nodes for the tests: real ``itsd start`` daemons pointed at one Tansu broker.

``fleet_nodes`` yields a factory of nodes; each node has its own work directory, ports,
pid file, state directory and JSONL events file (shared-memory names are unique per
run already). Every node is stopped at teardown (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ITSD = [sys.executable, "-m", "itsd"]
PATTERN = "pattern://moving?width=160&height=120&fps=2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    workdir: Path
    config_path: Path
    proc: subprocess.Popen[bytes]
    _log: Any = field(repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "itsd.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        path = self.workdir / "events.jsonl"
        out = []
        if path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):  # a killed node's last line is cut
                    out.append(json.loads(line))
        return out

    @property
    def grpc_target(self) -> str:
        cfg = yaml.safe_load(self.config_path.read_text())
        return f"127.0.0.1:{cfg['server']['grpc_port']}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@dataclass
class Fleet:
    """One fleet (topics and group of its own) on one broker."""

    base: dict[str, Any]
    tmp: Path
    model: Path
    nodes: list[Node] = field(default_factory=list)

    def config(self, name: str) -> dict[str, Any]:
        wd = self.tmp / name
        return {
            "model": {"path": str(self.model)},
            "performance": {"inference_workers": 1, "decode_workers": 1, "target_fps": 1},
            "outputs": {"jsonl_path": str(wd / "events.jsonl")},
            "server": {"grpc_port": free_port(), "monitoring_port": 0},
            "pid_file": str(wd / "itsd.pid"),
            "state_dir": str(wd / "state"),
            "store": {"enabled": False},
            "fleet": {**self.base, "enabled": True, "node_id": name},
        }

    def write_config(self, name: str) -> Path:
        wd = self.tmp / name
        wd.mkdir(exist_ok=True)
        path = wd / "itsd.yaml"
        path.write_text(yaml.safe_dump(self.config(name)))
        return path

    def start(self, name: str) -> Node:
        path = self.write_config(name)
        fh = open(path.parent / "itsd.log", "ab")  # noqa: SIM115 - closed by Node.stop
        proc = subprocess.Popen(
            [*ITSD, "start", "--foreground", "--config", str(path)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=path.parent,
        )
        node = Node(name, path.parent, path, proc, fh)
        self.nodes.append(node)
        return node

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        path = self.write_config("cli")
        return subprocess.run(
            [*ITSD, *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture
def fleet(tansu: Any, tmp_path: Path, model_path: Path) -> Iterator[Fleet]:
    tag = uuid.uuid4().hex[:8]
    base = {
        "bootstrap_servers": tansu.bootstrap,
        "registry_topic": f"cams-{tag}",
        "status_topic": f"nodes-{tag}",
        "group_id": f"fleet-{tag}",  # one group per test (Tansu)
        "partitions": 12,
        "session_timeout_ms": 5000,
        "status_interval_s": 1.0,
    }
    f = Fleet(base, tmp_path, model_path)
    yield f
    for n in f.nodes:
        n.stop()
