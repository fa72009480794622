"""systemd notification protocol (sd_notify) without a dependency.

Sends READY=1, STOPPING=1, WATCHDOG=1 and STATUS= datagrams to ``$NOTIFY_SOCKET`` when
the daemon runs under systemd with ``Type=notify``; does nothing otherwise. This module
must never raise on a missing or broken socket, and never block (the socket is
non-blocking; a full listener queue drops the message): notification is best effort.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Talks to systemd's notify socket, if there is one."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):  # abstract namespace
            addr = "\0" + addr[1:]
        self._addr = addr
        self._sock: socket.socket | None = None
        if addr:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the supervisor's loop on a listener that does not read.
                self._sock.setblocking(False)
            except OSError:
                self._sock = None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_interval_s: float | None = None
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1e6 / 2  # ping twice per period

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields; False if not under systemd or the send failed."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._addr)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Tell systemd start-up is complete."""
        return self.send("READY=1", f"STATUS={status}") if status else self.send("READY=1")

    def stopping(self) -> bool:
        """Tell systemd the daemon is stopping."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """Keep the systemd watchdog happy."""
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Set the status line shown by ``systemctl status``."""
        return self.send(f"STATUS={text}")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
