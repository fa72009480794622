"""Cell table: named 64-bit cells in shared memory, written by one process, read by any.

Every stage process owns one table (created by the supervisor, attached by the stage)
and keeps its counters, gauges and small state words there under names chosen by the
metric registry (``itsd.runtime.metrics``), for example
``itsd_decode_frames_total{camera="cam1"}``. Readers (the supervisor, the monitoring
port, ``tools/shm_inspect.py``) list the cells by name; nobody shares index constants.
A table has room for ``capacity`` cells; cells of a camera that went away are retired
and their entries reused, so a long-running daemon that adds and removes cameras does
not run out.

Layout (little-endian; offsets in bytes)::

    0 +-------------------------- header (64 bytes) ---------------------------+
      | 0  u64 magic "ITSDCEL1" (stored last, release)                          |
      | 8  u32 version | 12 u32 capacity | 16 u32 entry size (256)              |
      | 20 u32 creator pid | 24 u64 high-water mark (entries ever used; release) |
   64 +-------------------------- entry i at 64 + 256 * i ----------------------+
      | +0 u32 key version (seqlock: odd while the key is being written)        |
      | +4 u32 state: 0 free, 1 live, 2 retired                                 |
      | +8 u64 value (atomic load/store)                                        |
      | +16 240 bytes key (UTF-8, NUL padded)                                   |
      +-------------------------------------------------------------------------+

Writer (one process at a time): to create a cell it takes a retired entry or the next
fresh one, makes the key version odd, writes key, value 0 and state live, makes the
version even (release), and for a fresh entry then stores the new high-water mark
(release). Values change with single atomic stores. Reader: load the high-water mark
(acquire); per entry load the version, skip it when odd, copy state, key and value,
fence, and keep the entry only if the version did not move. A reader never blocks the
writer and never sees a key paired with another cell's value.

The value is an opaque u64: what it means (a count, a float's bits) is the registry's
business. This module must never import anything else from ``itsd`` (only ``itsd.shm``).
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Final, Self

from itsd.shm.atomics import U64_MASK, add_u64, fence, load_u32, load_u64, store_u32, store_u64
from itsd.shm.segments import Segment, SegmentBacked

__all__ = ["CellTable", "CellTableFullError"]

MAGIC: Final = int.from_bytes(b"ITSDCEL1", "little")
VERSION: Final = 1
HEADER_SIZE: Final = 64
ENTRY_SIZE: Final = 256
KEY_SIZE: Final = ENTRY_SIZE - 16
MAX_CAPACITY: Final = 1 << 20

STATE_FREE: Final = 0
STATE_LIVE: Final = 1
STATE_RETIRED: Final = 2

_H_MAGIC = 0
_H_LAYOUT = struct.Struct("<IIII")  # version, capacity, entry size, pid at 8
_H_USED = 24
_E_VER = 0
_E_STATE = 4
_E_VALUE = 8
_E_KEY = 16


class CellTableFullError(Exception):
    """Every entry of a cell table is live: no room for another named cell."""


class CellTable(SegmentBacked):
    """A table of named u64 cells in one shared-memory segment (single writer)."""

    def __init__(self, segment: Segment) -> None:
        self._seg = segment
        self._buf = segment.buf
        self._closed = False
        self.name = segment.name
        magic = load_u64(self._buf, _H_MAGIC)
        if magic != MAGIC:
            segment.close()
            raise ValueError(f"shared-memory segment {segment.name!r} is not a cell table")
        version, capacity, entry_size, pid = _H_LAYOUT.unpack_from(self._buf, 8)
        if version != VERSION or entry_size != ENTRY_SIZE:
            segment.close()
            raise ValueError(
                f"cell table {segment.name!r} has layout version {version}; this build reads "
                f"version {VERSION}: restart all itsd processes together"
            )
        if segment.size < HEADER_SIZE + capacity * ENTRY_SIZE:
            segment.close()
            raise ValueError(f"cell table {segment.name!r} is truncated ({segment.size} bytes)")
        self.capacity: int = capacity
        self.creator_pid: int = pid
        self._index: dict[str, int] | None = None  # the writer's key -> entry map

    @staticmethod
    def required_size(capacity: int) -> int:
        """Bytes of shared memory for ``capacity`` cells."""
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"cell table capacity must be 1..{MAX_CAPACITY}, got {capacity}")
        return HEADER_SIZE + capacity * ENTRY_SIZE

    @classmethod
    def create(cls, name: str, capacity: int) -> Self:
        """Create an empty table (creator only unlinks it)."""
        size = cls.required_size(capacity)

        def init(buf: mmap.mmap) -> None:
            _H_LAYOUT.pack_into(buf, 8, VERSION, capacity, ENTRY_SIZE, os.getpid())
            store_u64(buf, _H_MAGIC, MAGIC)

        return cls._create_initialised(name, size, init)

    # -- writer -------------------------------------------------------------------------
    def _off(self, index: int) -> int:
        return HEADER_SIZE + index * ENTRY_SIZE

    def _writer_index(self) -> dict[str, int]:
        if self._index is None:
            # A writer that attaches (a restarted stage) adopts the cells already there,
            # so counters continue instead of starting again at zero.
            self._index = {}
            for i in range(self.used()):
                off = self._off(i)
                if load_u32(self._buf, off + _E_STATE) == STATE_LIVE:
                    self._index[self._read_key(off)] = i
        return self._index

    def _read_key(self, off: int) -> str:
        raw = bytes(self._buf[off + _E_KEY : off + _E_KEY + KEY_SIZE])
        return raw.rstrip(b"\0").decode("utf-8", errors="replace")

    def cell(self, key: str) -> int:
        """The entry index of cell ``key``, created (value 0) when it does not exist.

        ValueError for a key over 240 bytes of UTF-8; CellTableFullError when every
        entry is live.
        """
        index = self._writer_index()
        found = index.get(key)
        if found is not None:
            return found
        raw = key.encode("utf-8")
        if not raw or len(raw) > KEY_SIZE:
            raise ValueError(
                f"cell table {self.name!r}: key {key[:60]!r} is {len(raw)} bytes of UTF-8; "
                f"1..{KEY_SIZE} allowed"
            )
        used = self.used()
        slot = -1
        for i in range(used):
            if load_u32(self._buf, self._off(i) + _E_STATE) == STATE_RETIRED:
                slot = i
                break
        fresh = slot < 0
        if fresh:
            if used >= self.capacity:
                raise CellTableFullError(
                    f"cell table {self.name!r} is full ({self.capacity} live cells); "
                    f"cannot add {key!r}"
                )
            slot = used
        off = self._off(slot)
        ver = load_u32(self._buf, off + _E_VER)
        store_u32(self._buf, off + _E_VER, (ver + 1) & 0xFFFF_FFFF)  # odd: being written
        fence()
        self._buf[off + _E_KEY : off + _E_KEY + KEY_SIZE] = raw.ljust(KEY_SIZE, b"\0")
        store_u64(self._buf, off + _E_VALUE, 0)
        store_u32(self._buf, off + _E_STATE, STATE_LIVE)
        store_u32(self._buf, off + _E_VER, (ver + 2) & 0xFFFF_FFFF)  # even: release
        if fresh:
            store_u64(self._buf, _H_USED, used + 1)
        index[key] = slot
        return slot

    def retire(self, key: str) -> bool:
        """Retire cell ``key`` (its entry may be reused); False if there is none."""
        index = self._writer_index()
        slot = index.pop(key, None)
        if slot is None:
            return False
        off = self._off(slot)
        ver = load_u32(self._buf, off + _E_VER)
        store_u32(self._buf, off + _E_VER, (ver + 1) & 0xFFFF_FFFF)
        fence()
        store_u32(self._buf, off + _E_STATE, STATE_RETIRED)
        store_u32(self._buf, off + _E_VER, (ver + 2) & 0xFFFF_FFFF)
        return True

    def live_keys(self) -> list[str]:
        """Keys of the live cells, as the writer knows them."""
        return list(self._writer_index())

    def store(self, index: int, value: int) -> None:
        """Set a cell's value (0 <= value < 2**64; release)."""
        store_u64(self._buf, self._off(index) + _E_VALUE, value & U64_MASK)

    def add(self, index: int, delta: int = 1) -> None:
        """Add ``delta`` to a cell's value (atomic; wraps modulo 2**64)."""
        add_u64(self._buf, self._off(index) + _E_VALUE, delta)

    def load(self, index: int) -> int:
        """A cell's value (acquire)."""
        return load_u64(self._buf, self._off(index) + _E_VALUE)

    # -- readers ------------------------------------------------------------------------
    def used(self) -> int:
        """Entries ever used (the high-water mark)."""
        return min(load_u64(self._buf, _H_USED), self.capacity)

    def items(self) -> list[tuple[str, int]]:
        """(key, value) of every live cell, in entry order."""
        out: list[tuple[str, int]] = []
        buf = self._buf
        for i in range(self.used()):
            off = self._off(i)
            for _ in range(100):
                ver = load_u32(buf, off + _E_VER)
                if ver % 2:
                    os.sched_yield()
                    continue
                state = load_u32(buf, off + _E_STATE)
                key = self._read_key(off) if state == STATE_LIVE else ""
                value = load_u64(buf, off + _E_VALUE)
                fence()
                if load_u32(buf, off + _E_VER) == ver:
                    if state == STATE_LIVE:
                        out.append((key, value))
                    break
        return out

    def __repr__(self) -> str:
        return f"CellTable({self.name!r}, capacity={self.capacity}, used={self.used()})"
