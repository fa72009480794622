"""Start and stop a private PostgreSQL server for tests and benchmarks.

Uses the binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/<ver>/bin``,
the newest version there, or ``$ITSD_PG_BIN``): ``initdb`` makes a cluster in a new
temporary directory (superuser ``itsd``, trust authentication, no network but
127.0.0.1), ``pg_ctl`` starts it on a free port with its unix socket in that directory.
PostgreSQL refuses to run as root, so as root every command runs as the ``postgres``
user (created by the Debian package) through ``runuser``, and the directory is handed to
that user. ``fsync`` is off (tests need speed, and a server process killed and restarted
still finds every committed row in the page cache); commits stay synchronous.

``restart`` keeps the data and the port: what a test needs to check that writes survive
a database restart. ``kill`` is a crash (``pg_ctl stop -m immediate``).

Usage as a script: ``python tools/pg_server.py`` prints the URL and runs until
interrupted.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

RUN_AS = "postgres"


def pg_bin() -> Path | None:
    """Folder of initdb and pg_ctl, or None when PostgreSQL is not installed."""
    env = os.environ.get("ITSD_PG_BIN")
    if env:
        return Path(env) if (Path(env) / "pg_ctl").is_file() else None
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        m = re.fullmatch(r"\d+(\.\d+)?", d.parent.name)
        if m and (d / "pg_ctl").is_file() and (d / "initdb").is_file():
            found.append((float(d.parent.name), d))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One private cluster (see the module docstring)."""

    def __init__(self, port: int | None = None) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL is not installed (Debian package postgresql; `make system-deps`)"
            )
        self.bin = bindir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="itsd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                pw = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise RuntimeError(f"running as root needs the {RUN_AS!r} user") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "itsd",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin / tool), *args]
        return ["runuser", "-u", RUN_AS, "--", *cmd] if self._as_root else cmd

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> None:
        proc = subprocess.run(
            self._cmd(tool, *args),
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if proc.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
                f"\n{tail}"
            )

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database."""
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg://itsd@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """A crash: stop without a checkpoint (``-m immediate``)."""
        self.stop("immediate")

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        """Create a database; returns its URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="itsd", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')  # type: ignore[arg-type]
        return self.url_of(name)

    def close(self) -> None:
        """Stop the server (if it runs) and delete the cluster."""
        if self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    server = PostgresServer()
    server.start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
