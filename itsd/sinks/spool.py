"""Disk spool: events wait here, in order, while the broker is away.

A directory of append-only segment files and one cursor file::

    seg-00000000000000000001.spool   segment: header, then records
    seg-00000000000000000002.spool
    cursor                           JSON {"segment": n, "offset": bytes}: what is delivered

Segment layout (little endian)::

    header   8s magic b"ITSDSPL1" | u32 version (1) | u32 reserved
    record   u32 body length | u32 crc32(body) | body
    body     an EventRecord as packed for the event ring (topic, type, key, JSON)

The spool is one queue: records are replayed in the order they were written, so the
events of each camera come out in their order. The writer appends to the newest segment
and starts a new one past ``segment_bytes``; the reader follows the cursor and deletes a
segment once every record of it is delivered; when everything is delivered the spool is
empty (no segment, no cursor).

Durability (``fsync``): ``always`` fsyncs the segment before ``append`` returns (the
publisher then takes the batch off its ring; nothing is lost even on power loss),
``interval`` at most every ``fsync_interval_s``, ``never`` leaves it to the kernel (the
data survives a crash of itsd, not of the machine). The cursor is written to a temporary
file, fsynced and renamed, so it is either the old or the new one; a crash after a
delivery but before the cursor is saved replays at most one round again (duplicates, not
loss).

Opening the spool scans every segment: a record whose length runs past the end of the
newest segment, or whose checksum is wrong at its end, is a torn write (the process or
the machine died mid-append): it is skipped with a warning and cut off, and appends go
on after the last good record. A bad record elsewhere is counted and skipped when its
length is plausible; otherwise the rest of that segment is skipped with an error.

Size: ``max_bytes`` bounds the files; ``append`` refuses records beyond it
(``SpoolFullError``), as it does when the disk itself is full (``OSError``); the caller counts
them as lost and raises an alert.

This module must never import a stage, Kafka, or another sink.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("itsd.sinks.spool")

MAGIC = b"ITSDSPL1"
VERSION = 1
_SEG_HEADER = struct.Struct("<8sII")
_REC_HEADER = struct.Struct("<II")
_SEG_RE = re.compile(r"^seg-(\d{20})\.spool$")
#: Largest record accepted; a length beyond it means the header itself is damaged.
MAX_RECORD = 64 * 1024 * 1024


class SpoolFullError(Exception):
    """The spool reached its size limit."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record ends: segment number and byte offset after it."""

    segment: int
    offset: int


def _seg_name(n: int) -> str:
    return f"seg-{n:020d}.spool"


def encode_record(body: bytes) -> bytes:
    """A record as stored: length, crc32, body."""
    return _REC_HEADER.pack(len(body), zlib.crc32(body)) + body


@dataclass
class ScanResult:
    """What a scan of one segment found."""

    records: list[tuple[int, bytes]]  # (offset after the record, body)
    good_end: int  # offset after the last good record
    corrupt: int  # bad records skipped
    torn: bool  # the segment ends in a partial or damaged record


def scan_segment(data: bytes, start: int = _SEG_HEADER.size, limit: int = 0) -> ScanResult:
    """Parse records of a segment's bytes from ``start`` (at most ``limit`` if > 0)."""
    records: list[tuple[int, bytes]] = []
    pos = start
    corrupt = 0
    torn = False
    good_end = start
    n = len(data)
    while pos < n and (limit <= 0 or len(records) < limit):
        if pos + _REC_HEADER.size > n:
            torn = True
            break
        length, crc = _REC_HEADER.unpack_from(data, pos)
        end = pos + _REC_HEADER.size + length
        if length > MAX_RECORD:
            corrupt += 1
            torn = True  # the length cannot be trusted: nothing after it can be found
            break
        if end > n:
            torn = True
            break
        body = data[pos + _REC_HEADER.size : end]
        if zlib.crc32(body) != crc:
            if end == n:
                torn = True  # the last record, damaged: a torn write
                break
            corrupt += 1  # a damaged record in the middle: skip it
            pos = end
            good_end = end
            continue
        records.append((end, bytes(body)))
        pos = end
        good_end = end
    return ScanResult(records, good_end, corrupt, torn)


class Spool:
    """The on-disk queue of events (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync: str = "always",
        fsync_interval_s: float = 1.0,
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, segment_bytes)
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.corrupt = 0  # records skipped since the spool was opened
        self.torn = 0
        self._segments: list[int] = []
        self._sizes: dict[int, int] = {}
        self._fd: int | None = None  # newest segment, open for appending
        self._cursor = Position(0, 0)
        self._pending = 0  # records not yet delivered
        self._dirty = False
        self._last_sync = time.monotonic()
        self._open()

    # -- opening --------------------------------------------------------------------
    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        segs = sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _SEG_RE.match(p.name)))
        self._cursor = self._load_cursor()
        for n in segs:
            if n < self._cursor.segment:
                (self.dir / _seg_name(n)).unlink()  # delivered, deletion was interrupted
                continue
            path = self.dir / _seg_name(n)
            data = path.read_bytes()
            if len(data) < _SEG_HEADER.size or _SEG_HEADER.unpack_from(data)[0] != MAGIC:
                if len(data) < _SEG_HEADER.size and n == segs[-1]:
                    log.warning("spool %s: torn segment header; removed", path)
                    self.torn += 1
                else:
                    log.error("spool %s: not a spool segment; moved aside", path)
                    path.rename(path.with_suffix(".bad"))
                    continue
                path.unlink()
                continue
            start = self._cursor.offset if n == self._cursor.segment else _SEG_HEADER.size
            res = scan_segment(data, max(start, _SEG_HEADER.size))
            if res.corrupt:
                self.corrupt += res.corrupt
                log.error("spool %s: %d damaged record(s) skipped", path, res.corrupt)
            if res.torn:
                self.torn += 1
                log.warning(
                    "spool %s: torn last record at offset %d (%d bytes) skipped",
                    path,
                    res.good_end,
                    len(data) - res.good_end,
                )
                with open(path, "r+b") as fh:
                    fh.truncate(res.good_end)
                    os.fsync(fh.fileno())
                data = data[: res.good_end]
            self._segments.append(n)
            self._sizes[n] = len(data)
            self._pending += len(res.records)
        if self._segments and self._cursor.segment < self._segments[0]:
            self._cursor = Position(self._segments[0], _SEG_HEADER.size)
        if not self._segments:
            self._reset_cursor()
        elif self._pending:
            log.info(
                "spool %s: %d event(s) in %d segment(s) wait for the broker",
                self.dir,
                self._pending,
                len(self._segments),
            )

    def _load_cursor(self) -> Position:
        path = self.dir / "cursor"
        try:
            obj = json.loads(path.read_text())
            return Position(int(obj["segment"]), int(obj["offset"]))
        except FileNotFoundError:
            return Position(0, 0)
        except (ValueError, KeyError, TypeError) as err:
            log.error("spool cursor %s unreadable (%s): replaying from the start", path, err)
            return Position(0, 0)

    def _save_cursor(self) -> None:
        path = self.dir / "cursor"
        tmp = self.dir / "cursor.tmp"
        with open(tmp, "w") as fh:
            json.dump({"segment": self._cursor.segment, "offset": self._cursor.offset}, fh)
            fh.flush()
            if self.fsync != "never":
                os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _reset_cursor(self) -> None:
        self._cursor = Position(0, 0)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "cursor").unlink()

    # -- state ------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records written and not yet delivered."""
        return self._pending

    def is_empty(self) -> bool:
        """True when nothing waits."""
        return self._pending == 0

    @property
    def bytes_used(self) -> int:
        """Bytes of the segment files."""
        return sum(self._sizes.values())

    # -- writing ----------------------------------------------------------------------
    def _new_segment(self) -> int:
        n = (self._segments[-1] + 1) if self._segments else max(1, self._cursor.segment)
        path = self.dir / _seg_name(n)
        self._close_fd()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, _SEG_HEADER.pack(MAGIC, VERSION, 0))
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._fd = fd
        self._segments.append(n)
        self._sizes[n] = _SEG_HEADER.size
        if self._cursor.segment == 0:
            self._cursor = Position(n, _SEG_HEADER.size)
        return n

    def _writable(self) -> int:
        if self._segments and self._fd is None:
            n = self._segments[-1]
            if self._sizes[n] < self.segment_bytes:
                self._fd = os.open(self.dir / _seg_name(n), os.O_WRONLY | os.O_APPEND)
                return n
        if not self._segments or self._sizes[self._segments[-1]] >= self.segment_bytes:
            return self._new_segment()
        return self._segments[-1]

    def append(self, bodies: Sequence[bytes]) -> int:
        """Append records in order; returns how many were written (all of them, unless
        the size limit is reached: then the rest is refused, ``SpoolFullError`` if none fit).

        Raises OSError when the disk refuses the write (what was written before stays;
        a partial record is cut off again).
        """
        written = 0
        i = 0
        while i < len(bodies):
            n = self._writable()
            room_seg = self.segment_bytes - self._sizes[n]
            chunk: list[bytes] = []
            size = 0
            total = self.bytes_used
            while i < len(bodies):
                rec = encode_record(bodies[i])
                if total + size + len(rec) > self.max_bytes:
                    break
                if chunk and size + len(rec) > room_seg:
                    break
                chunk.append(rec)
                size += len(rec)
                i += 1
            if not chunk:  # the size limit is reached
                if written == 0:
                    raise SpoolFullError(f"spool {self.dir} is full ({total} bytes)")
                break
            self._write_all(n, b"".join(chunk))
            written += len(chunk)
            self._pending += len(chunk)
        self._dirty = True
        if self.fsync == "always" or (
            self.fsync == "interval" and time.monotonic() - self._last_sync >= self.fsync_interval_s
        ):
            self.sync()
        return written

    def _write_all(self, n: int, data: bytes) -> None:
        assert self._fd is not None
        before = self._sizes[n]
        try:
            view = memoryview(data)
            while view:
                k = os.write(self._fd, view)
                view = view[k:]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, before)  # no torn record left behind
            raise
        self._sizes[n] = before + len(data)

    def sync(self) -> None:
        """fsync the segment being written."""
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def poll(self) -> None:
        """Periodic fsync for the ``interval`` policy."""
        if (
            self.fsync == "interval"
            and self._dirty
            and time.monotonic() - self._last_sync >= self.fsync_interval_s
        ):
            self.sync()

    # -- reading ------------------------------------------------------------------------
    def read(self, max_records: int) -> list[tuple[Position, bytes]]:
        """The oldest undelivered records (at most ``max_records``), not yet consumed."""
        out: list[tuple[Position, bytes]] = []
        for n in self._segments:
            if n < self._cursor.segment:
                continue
            start = self._cursor.offset if n == self._cursor.segment else _SEG_HEADER.size
            if start >= self._sizes[n]:
                continue
            with open(self.dir / _seg_name(n), "rb") as fh:
                fh.seek(start)
                data = fh.read(self._sizes[n] - start)
            res = scan_segment(data, 0, max_records - len(out))
            if res.corrupt:
                self.corrupt += res.corrupt
            out.extend((Position(n, start + end), body) for end, body in res.records)
            if res.torn and len(out) < max_records:
                log.error(
                    "spool segment %d damaged at offset %d: rest skipped", n, start + res.good_end
                )
                self._sizes[n] = start + res.good_end
            if len(out) >= max_records:
                break
        if not out and self._pending:
            log.error(
                "spool %s: %d record(s) counted but unreadable (damaged); dropped",
                self.dir,
                self._pending,
            )
            for n in list(self._segments):
                self._drop_segment(n)
            self._pending = 0
            self._reset_cursor()
        return out

    def commit(self, pos: Position, count: int) -> None:
        """Record everything up to ``pos`` (``count`` records) as delivered."""
        self._cursor = pos
        self._pending = max(0, self._pending - count)
        for n in list(self._segments):
            last = n == self._segments[-1]
            if n < pos.segment or (not last and n == pos.segment and pos.offset >= self._sizes[n]):
                self._drop_segment(n)
        if self._pending == 0:
            for n in list(self._segments):
                self._drop_segment(n)
            self._reset_cursor()
            return
        if self._segments and self._cursor.segment < self._segments[0]:
            self._cursor = Position(self._segments[0], _SEG_HEADER.size)
        self._save_cursor()

    def _drop_segment(self, n: int) -> None:
        if self._segments and n == self._segments[-1]:
            self._close_fd()
        with contextlib.suppress(FileNotFoundError):
            (self.dir / _seg_name(n)).unlink()
        self._segments.remove(n)
        self._sizes.pop(n, None)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self._dirty:
                    os.fsync(fd)
                    self._dirty = False
            finally:
                os.close(fd)

    def close(self) -> None:
        """fsync and close."""
        self._close_fd()
