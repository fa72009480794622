"""Pid file of a running daemon: written at start, removed at exit, read by ``itsd stop``.

A pid file whose process is gone (or is not an itsd process) is stale and is replaced.
This module must never kill or signal anything; it only answers who is running.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from itsd.errors import ResourceError


def _is_itsd(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"itsd" in cmdline


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists (and, where /proc exists, is an itsd process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if Path("/proc/self").exists():
        return _is_itsd(pid)
    return True


def read_pid(path: Path) -> int | None:
    """The pid of a live daemon recorded in ``path``, or None."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise ResourceError(f"cannot read pid file {path}: {err.strerror}") from None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid_alive(pid) else None


def acquire(path: Path) -> None:
    """Record this process in ``path``; ResourceError if a live daemon holds it."""
    other = read_pid(path)
    if other is not None and other != os.getpid():
        raise ResourceError(f"itsd is already running (pid {other}, pid file {path})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError as err:
        raise ResourceError(f"cannot write pid file {path}: {err.strerror}") from None


def release(path: Path) -> None:
    """Remove ``path`` if it still names this process."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    except OSError:
        pass
