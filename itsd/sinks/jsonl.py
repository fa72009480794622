"""JSONL sink: one event per line, appended to a file, rotated by size.

This module must never import a stage or another sink.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from itsd.records import EventRecord
from itsd.sinks.base import Sink

log = logging.getLogger("itsd.sinks.jsonl")


class JsonlSink(Sink):
    """Appends event payloads as lines to a file, reopening it after a failure.

    The file is also reopened when its path no longer names the open file (moved away by
    log rotation, deleted, replaced by something else), as ``logging``'s
    ``WatchedFileHandler`` does: events go to the path the operator configured, never to
    an unlinked file nobody can read, and a path that cannot be written any more (now a
    directory) fails the batch, which is then held and reported.

    With ``max_bytes`` > 0 the sink rotates by itself: when a batch would take the file
    past ``max_bytes``, ``path`` becomes ``path.1`` (``.1`` becomes ``.2`` and so on, the
    oldest beyond ``backups`` is deleted) and a new file starts. A batch is never split
    between two files. Only regular files rotate (not ``/dev/stdout`` or a FIFO).
    """

    name = "jsonl"

    def __init__(
        self,
        path: Path,
        max_bytes: int = 0,
        backups: int = 5,
        on_rotate: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = max(1, backups)
        self.on_rotate = on_rotate
        self._fh: BinaryIO | None = None

    def describe(self) -> str:
        return str(self.path)

    def _open(self) -> BinaryIO:
        if self._fh is not None and not self._still_ours(self._fh):
            self._drop_handle()
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
        return self._fh

    def _still_ours(self, fh: BinaryIO) -> bool:
        """True while the path names the open file (or is a device such as /dev/full)."""
        try:
            now = os.stat(self.path)
        except OSError:
            return False
        mine = os.fstat(fh.fileno())
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def write(self, batch: Sequence[EventRecord]) -> None:
        """Write and flush; raises OSError (the caller keeps the batch and retries)."""
        self.write_payloads([e.payload for e in batch])

    def write_payloads(self, payloads: Sequence[bytes]) -> None:
        """Write raw JSON payloads, one per line, and flush."""
        data = b"".join(p + b"\n" for p in payloads)
        fh = self._open()
        if self.max_bytes > 0:
            fh = self._maybe_rotate(fh, len(data))
        try:
            fh.write(data)
            fh.flush()
        except OSError:
            self._drop_handle()
            raise

    def _maybe_rotate(self, fh: BinaryIO, incoming: int) -> BinaryIO:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return fh
        if st.st_size + incoming <= self.max_bytes:
            return fh
        self.close()  # fsync the full file before it is renamed
        oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
        with contextlib.suppress(FileNotFoundError):
            oldest.unlink()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            with contextlib.suppress(FileNotFoundError):
                src.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        log.info("rotated %s at %d bytes", self.path, st.st_size)
        if self.on_rotate is not None:
            self.on_rotate()
        return self._open()

    def _drop_handle(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def sync(self) -> None:
        """Flush to stable storage."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def flush(self) -> None:
        self.sync()

    def close(self) -> None:
        """Sync and close."""
        if self._fh is not None:
            try:
                self.sync()
            finally:
                self._drop_handle()
