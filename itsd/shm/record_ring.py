"""Record ring: a lossless single-producer single-consumer ring of byte records.

Carries detections (inference -> analytics) and events (analytics -> publisher) between
processes. Records are length-prefixed byte strings of 0..``max_record_size`` bytes; the
ring is a byte stream, so records wrap around the end of the data area without waste.

Layout (little-endian; offsets in bytes)::

    0 +------------------------ header (4096 bytes) ------------------------+
      | 0   u64 magic "ITSDREC1" (stored last, release)                      |
      | 8   u32 version    12 u32 header size (4096)                         |
      | 16  u64 capacity (data bytes, multiple of 8)                         |
      | 24  u64 max record size (capacity - 8)                               |
      | 32  u32 creator pid                                                  |
      | 128 writer line: u64 head | u64 records put | u64 waits (full)       |
      | 256 reader line: u64 tail | u64 records got | u32 reader bell       |
   4096 +------------------------ data area (capacity bytes) -----------------+
      | record at (head % capacity):                                         |
      |   u32 length | u32 ~length (check) | payload | pad to 8 bytes         |
      | the 8-byte prefix never straddles the end; the payload may wrap      |
      +----------------------------------------------------------------------+

``head`` and ``tail`` are byte counts since creation (u64, never wrap in practice);
``head - tail`` bytes are in use. Only the writer stores ``head``, only the reader stores
``tail``. The writer copies the record in, then stores the new head with release; the
reader loads head with acquire, copies the record out, then stores the new tail with
release, which hands the bytes back to the writer (it loads tail with acquire before it
reuses them). Exactly one producer and one consumer process; an object is used by one
thread. The reader bell (0: none, else the reader's control slot + 1) is rung after each
put (``itsd.shm.bells``), so a reader sleeping on empty inputs wakes at once.

Back-pressure rule: the ring never drops or overwrites. ``try_put`` returns False when
the record does not fit in the free space; ``put`` then waits (short sleeps, growing
from 50 us to 1 ms) until the reader makes room, the timeout passes or ``should_abort()``
says so. Losses happen only at frame rings, by design; a stage that sees ``put`` return
False keeps the record and retries, or shuts down.

Crash semantics: a writer that dies mid-record never published it (head not advanced);
the next writer overwrites the partial bytes. A reader that dies before advancing the
tail gets the record again (at-least-once); for processing-level at-least-once use
``peek`` then ``advance`` after the record is handled, instead of ``get``. A reader that
keeps several batches in hand (pipelining) reads ahead with ``peek_from(position, n)``,
which returns the position after the last record it read, and drops each handled batch
with ``advance_to(position, count)``, oldest first. ``peek_from`` copies its records out
in one C call (``_ringread.c``, about a tenth of the Python loop's time per record).

Memory: the creator reserves the whole segment (``posix_fallocate``), but a process's
page tables map a page only when it first touches it, so without help a ring's writer
and reader would see their RSS and PSS climb by every byte that passes until the ring
has gone round once (16 MiB of events at about 1 KB each: minutes to hours), which a
soak cannot tell from a leak, and each first touch costs a page fault on the hot path.
``attach`` therefore maps every page at once (``MAP_POPULATE``): a stage's memory shows
its rings from the start and stays flat. The creator (the supervisor, which only
touches the header) does not populate.

This module must never drop a record, never block inside ``try_put``/``get``, and never
import anything else from ``itsd`` (only ``itsd.shm``).
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Self, TypeVar

from itsd.shm import bells
from itsd.shm._ringread import read_records as _read_records
from itsd.shm.atomics import fetch_add_u64, load_u64, store_u64
from itsd.shm.segments import Segment, SegmentBacked

__all__ = ["RecordRing", "RecordRingStats"]

_T = TypeVar("_T")
MAGIC: Final = int.from_bytes(b"ITSDREC1", "little")
VERSION: Final = 1
HEADER_SIZE: Final = 4096
PREFIX_SIZE: Final = 8
MIN_CAPACITY: Final = 16
_MAX_LEN: Final = 0xFFFF_FFF8

_H_MAGIC = 0
_H_LAYOUT = struct.Struct("<IIQQI")  # version, header size, capacity, max record, pid at 8
_H_HEAD = 128
_H_PUT = 136
_H_WAITS = 144
_H_TAIL = 256
_H_GOT = 264
_H_BELL = 272

_PREFIX = struct.Struct("<II")
_WAIT_MIN_S = 50e-6
_WAIT_MAX_S = 1e-3

Payload = bytes | bytearray | memoryview


def _retry(
    attempt: Callable[[], _T | None],
    timeout: float | None,
    should_abort: Callable[[], bool] | None,
) -> _T | None:
    """Call ``attempt`` after growing sleeps (50 us to 1 ms) until it gives a value;
    None when ``timeout`` passes or ``should_abort()`` says so."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = _WAIT_MIN_S
    while True:
        if should_abort is not None and should_abort():
            return None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(delay, left))
        else:
            time.sleep(delay)
        delay = min(delay * 2, _WAIT_MAX_S)
        value = attempt()
        if value is not None:
            return value


def _round8(n: int) -> int:
    return (n + 7) & ~7


@dataclass(frozen=True, slots=True)
class RecordRingStats:
    """Counters of a record ring: records put and got, puts that found it full, bytes."""

    put: int
    got: int
    waits: int
    used_bytes: int
    capacity_bytes: int


class RecordRing(SegmentBacked):
    """SPSC lossless ring of length-prefixed byte records in a shared-memory segment."""

    def __init__(self, segment: Segment) -> None:
        self._seg = segment
        self._buf = segment.buf
        self.name = segment.name
        magic = load_u64(self._buf, _H_MAGIC)
        if magic != MAGIC:
            what = (
                "is not initialised yet (its creator is still setting it up)"
                if magic == 0
                else f"is not a record ring (magic {magic.to_bytes(8, 'little')!r})"
            )
            segment.close()
            raise ValueError(f"shared-memory segment {segment.name!r} {what}")
        version, header_size, capacity, max_record, pid = _H_LAYOUT.unpack_from(self._buf, 8)
        if version != VERSION or header_size != HEADER_SIZE:
            segment.close()
            raise ValueError(
                f"record ring {segment.name!r} has layout version {version}; this build reads "
                f"version {VERSION}: restart all itsd processes together"
            )
        if segment.size < HEADER_SIZE + capacity:
            segment.close()
            raise ValueError(
                f"record ring {segment.name!r} is {segment.size} bytes, its header needs "
                f"{HEADER_SIZE + capacity}"
            )
        self.capacity_bytes: int = capacity
        self.max_record_size: int = max_record
        self.creator_pid: int = pid
        #: Ring the reader's doorbell after each put; a writer that puts in bursts turns
        #: it off and calls ``wake_reader`` after each burst (the reader then wakes once,
        #: not in the middle of the burst). A full ring always wakes the reader.
        self.wake_on_put = True
        self._closed = False

    # ------------------------------------------------------------------ construction

    @staticmethod
    def required_size(capacity_bytes: int) -> int:
        """Bytes of shared memory for a ring whose data area holds ``capacity_bytes``.

        The capacity is rounded up to a multiple of 8.
        """
        if capacity_bytes < MIN_CAPACITY:
            raise ValueError(
                f"record ring capacity must be at least {MIN_CAPACITY} bytes, got {capacity_bytes}"
            )
        return HEADER_SIZE + _round8(capacity_bytes)

    @classmethod
    def create(cls, name: str, capacity_bytes: int) -> Self:
        """Create the ring's segment (this process becomes its creator, the only unlinker)."""
        size = cls.required_size(capacity_bytes)
        capacity = size - HEADER_SIZE
        max_record = min(capacity - PREFIX_SIZE, _MAX_LEN)

        def init(buf: mmap.mmap) -> None:
            _H_LAYOUT.pack_into(buf, 8, VERSION, HEADER_SIZE, capacity, max_record, os.getpid())
            store_u64(buf, _H_MAGIC, MAGIC)

        return cls._create_initialised(name, size, init)

    @classmethod
    def attach(cls, name: str, *, populate: bool = True) -> Self:
        """Map an existing ring, every page at once unless ``populate`` is False (see
        Memory in the module docstring); ``FileNotFoundError`` if missing, ``ValueError``
        if it is not a ring."""
        return cls(Segment.attach(name, populate=populate))

    # ------------------------------------------------------------------ writer

    def try_put(self, payload: Payload) -> bool:
        """Append one record; False (nothing written) when it does not fit right now.

        ``ValueError`` if the record is longer than ``max_record_size``.
        """
        mv = payload if isinstance(payload, memoryview) else memoryview(payload)
        if not mv.c_contiguous:
            mv = memoryview(mv.tobytes())
        elif mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        n = mv.nbytes
        if n > self.max_record_size:
            raise ValueError(
                f"record ring {self.name!r}: record of {n} bytes exceeds the maximum of "
                f"{self.max_record_size} bytes (capacity {self.capacity_bytes})"
            )
        buf = self._buf
        cap = self.capacity_bytes
        head = load_u64(buf, _H_HEAD)
        need = PREFIX_SIZE + _round8(n)
        if need > cap - (head - load_u64(buf, _H_TAIL)):
            return False
        pos = head % cap
        _PREFIX.pack_into(buf, HEADER_SIZE + pos, n, n ^ 0xFFFF_FFFF)
        p = pos + PREFIX_SIZE
        if p == cap:
            p = 0
        first = cap - p
        if n <= first:
            buf[HEADER_SIZE + p : HEADER_SIZE + p + n] = mv
        else:
            buf[HEADER_SIZE + p : HEADER_SIZE + cap] = mv[:first]
            buf[HEADER_SIZE : HEADER_SIZE + n - first] = mv[first:]
        store_u64(buf, _H_HEAD, head + need)  # release: publishes the record
        fetch_add_u64(buf, _H_PUT, 1)
        if self.wake_on_put:
            bells.ring_reader(buf, _H_BELL)
        return True

    def put(
        self,
        payload: Payload,
        timeout: float | None = None,
        should_abort: Callable[[], bool] | None = None,
    ) -> bool:
        """Append one record, waiting while the ring is full (back-pressure).

        Returns False when ``timeout`` seconds pass or ``should_abort()`` returns True
        first (nothing written then). ``timeout=None`` waits without limit.
        """
        if self.try_put(payload):
            return True
        bells.ring_reader(self._buf, _H_BELL)  # a full ring: its reader must be awake
        fetch_add_u64(self._buf, _H_WAITS, 1)
        return _retry(lambda: self.try_put(payload) or None, timeout, should_abort) is not None

    # ------------------------------------------------------------------ reader

    def set_reader_bell(self, slot: int | None) -> None:
        """Have writers ring control slot ``slot``'s doorbell after each put (None: stop)."""
        bells.set_reader(self._buf, _H_BELL, slot)

    def wake_reader(self) -> None:
        """Ring the reader's doorbell now (a writer with ``wake_on_put`` off, after a burst)."""
        bells.ring_reader(self._buf, _H_BELL)

    def _read_at(self, tail: int, head: int) -> tuple[bytes, int]:
        buf = self._buf
        cap = self.capacity_bytes
        pos = tail % cap
        n, check = _PREFIX.unpack_from(buf, HEADER_SIZE + pos)
        end = tail + PREFIX_SIZE + _round8(n)
        if check != n ^ 0xFFFF_FFFF or n > self.max_record_size or end > head:
            raise RuntimeError(
                f"record ring {self.name!r}: corrupt record prefix at byte {tail} "
                f"(length {n}, check {check:#x}, head {head}); the ring is damaged"
            )
        p = pos + PREFIX_SIZE
        if p == cap:
            p = 0
        first = cap - p
        if n <= first:
            data = buf[HEADER_SIZE + p : HEADER_SIZE + p + n]
        else:
            data = (
                buf[HEADER_SIZE + p : HEADER_SIZE + cap]
                + buf[HEADER_SIZE : HEADER_SIZE + n - first]
            )
        return data, end

    def get(self) -> bytes | None:
        """Take the oldest record (copied out), or None if the ring is empty. Never waits."""
        buf = self._buf
        head = load_u64(buf, _H_HEAD)  # acquire: the record bytes are visible
        tail = load_u64(buf, _H_TAIL)
        if head == tail:
            return None
        data, tail = self._read_at(tail, head)
        store_u64(buf, _H_TAIL, tail)  # release: hands the bytes back to the writer
        fetch_add_u64(buf, _H_GOT, 1)
        return data

    def get_many(self, max_records: int) -> list[bytes]:
        """Take up to ``max_records`` records (oldest first); an empty list if none."""
        buf = self._buf
        head = load_u64(buf, _H_HEAD)
        tail = start = load_u64(buf, _H_TAIL)
        out: list[bytes] = []
        while tail != head and len(out) < max_records:
            data, tail = self._read_at(tail, head)
            out.append(data)
        if tail != start:
            store_u64(buf, _H_TAIL, tail)
            fetch_add_u64(buf, _H_GOT, len(out))
        return out

    def get_wait(
        self, timeout: float | None = None, should_abort: Callable[[], bool] | None = None
    ) -> bytes | None:
        """Like ``get`` but waits (short sleeps) up to ``timeout`` s for a record."""
        data = self.get()
        if data is not None:
            return data
        return _retry(self.get, timeout, should_abort)

    def peek(self) -> bytes | None:
        """The oldest record without taking it (see ``advance``), or None if empty."""
        buf = self._buf
        head = load_u64(buf, _H_HEAD)
        tail = load_u64(buf, _H_TAIL)
        if head == tail:
            return None
        return self._read_at(tail, head)[0]

    def peek_many(self, max_records: int) -> list[bytes]:
        """Up to ``max_records`` oldest records without taking them (see ``advance``)."""
        buf = self._buf
        head = load_u64(buf, _H_HEAD)
        tail = load_u64(buf, _H_TAIL)
        out: list[bytes] = []
        while tail != head and len(out) < max_records:
            data, tail = self._read_at(tail, head)
            out.append(data)
        return out

    def peek_from(self, position: int | None, max_records: int) -> tuple[list[bytes], int]:
        """Up to ``max_records`` records from byte ``position`` on, without taking them;
        and the position just past the last one returned.

        ``position`` is None (the oldest record) or a position an earlier call returned
        whose records have not all been advanced past yet: a reader that holds batches it
        has not finished with reads the next ones without advancing (pipelining), then
        drops each batch with ``advance_to`` once it is handled.
        """
        buf = self._buf
        head = load_u64(buf, _H_HEAD)  # acquire: the record bytes are visible
        tail = load_u64(buf, _H_TAIL)
        if position is None:
            position = tail
        elif not tail <= position <= head:
            raise ValueError(
                f"record ring {self.name!r}: position {position} is outside the unread "
                f"bytes {tail}..{head}"
            )
        # One C call copies the records out (``_ringread``); it stops at a record whose
        # prefix it cannot vouch for, which ``_read_at`` then reads or raises on.
        out, position = _read_records(
            buf, HEADER_SIZE, self.capacity_bytes, self.max_record_size, position, head, max_records
        )
        while position != head and len(out) < max_records:
            data, position = self._read_at(position, head)
            out.append(data)
        return out, position

    def advance_to(self, position: int, count: int) -> None:
        """Drop every record before byte ``position`` (a position ``peek_from`` returned);
        ``count`` is how many records that is (it feeds the ring's statistics)."""
        buf = self._buf
        head = load_u64(buf, _H_HEAD)
        tail = load_u64(buf, _H_TAIL)
        if not tail <= position <= head:
            raise ValueError(
                f"record ring {self.name!r}: cannot advance to {position}, outside the "
                f"unread bytes {tail}..{head}"
            )
        if position != tail:
            store_u64(buf, _H_TAIL, position)  # release: hands the bytes back to the writer
            fetch_add_u64(buf, _H_GOT, count)

    def advance(self, count: int = 1) -> int:
        """Drop the ``count`` oldest records (after ``peek``/``peek_many`` and handling
        them); returns how many were dropped (fewer if the ring held fewer)."""
        buf = self._buf
        head = load_u64(buf, _H_HEAD)
        tail = start = load_u64(buf, _H_TAIL)
        done = 0
        while done < count and tail != head:
            n, check = _PREFIX.unpack_from(buf, HEADER_SIZE + tail % self.capacity_bytes)
            end = tail + PREFIX_SIZE + _round8(n)
            if check != n ^ 0xFFFF_FFFF or end > head:
                raise RuntimeError(
                    f"record ring {self.name!r}: corrupt record prefix at byte {tail}; ring damaged"
                )
            tail = end
            done += 1
        if tail != start:
            store_u64(buf, _H_TAIL, tail)  # release: hands the bytes back to the writer
            fetch_add_u64(buf, _H_GOT, done)
        return done

    # ------------------------------------------------------------------ inspection

    def is_empty(self) -> bool:
        """True when no record is waiting."""
        return load_u64(self._buf, _H_HEAD) == load_u64(self._buf, _H_TAIL)

    def used_bytes(self) -> int:
        """Bytes in use by unread records (prefixes and padding included)."""
        tail = load_u64(self._buf, _H_TAIL)
        return load_u64(self._buf, _H_HEAD) - tail

    def free_bytes(self) -> int:
        """Bytes the writer can use now."""
        return self.capacity_bytes - self.used_bytes()

    def stats(self) -> RecordRingStats:
        """Counters: records put and got, puts that had to wait, bytes in use."""
        buf = self._buf
        return RecordRingStats(
            put=load_u64(buf, _H_PUT),
            got=load_u64(buf, _H_GOT),
            waits=load_u64(buf, _H_WAITS),
            used_bytes=self.used_bytes(),
            capacity_bytes=self.capacity_bytes,
        )

    # ------------------------------------------------------------------ lifetime

    def __repr__(self) -> str:
        return f"RecordRing({self.name!r}, capacity={self.capacity_bytes})"
