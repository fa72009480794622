"""sd_notify: messages reach the socket; a listener that does not read never blocks us."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from itsd.supervisor.notify import Notifier


def test_no_socket_means_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert n.ready() is False


def test_messages_and_watchdog_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")
        n = Notifier()
        assert n.watchdog_interval_s == 2.0
        assert n.ready("2 cameras")
        assert sock.recv(100) == b"READY=1\nSTATUS=2 cameras"
        assert n.stopping()
        assert sock.recv(100) == b"STOPPING=1"
        n.close()


def test_full_listener_queue_never_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))  # bound but never read
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        n = Notifier()
        t0 = time.monotonic()
        results = [n.watchdog() for _ in range(2000)]
        assert time.monotonic() - t0 < 30  # would hang forever if the send blocked
        assert results[0] is True
        assert False in results  # the queue filled up and messages were dropped
        n.close()


def test_watchdog_for_another_pid_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier().watchdog_interval_s is None
