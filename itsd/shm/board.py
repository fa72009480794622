"""A snapshot board: one writer publishes a small byte blob, any number of readers copy it.

Used by analytics to publish its live state (line counts, vehicles in view) for the
control API and the monitoring port without those importing a stage. It is a seqlock::

    offset 0   u32 magic 'BRD1'  | u32 version
    offset 8   u64 sequence      (odd while the writer is writing)
    offset 16  u32 length        | u32 capacity
    offset 24  payload bytes (capacity)

Writer: sequence += 1 (odd, release), write length and payload, sequence += 1 (even,
release). Reader: load sequence (acquire); if odd, retry; copy length and payload; full
fence; load sequence again; if it changed, retry. A reader never blocks the writer and
never returns a torn blob. One writer only.

This module must never import anything from itsd outside ``itsd.shm``.
"""

from __future__ import annotations

import mmap
import struct
import time

from itsd.shm import atomics
from itsd.shm.segments import Segment, SegmentBacked

MAGIC = 0x31445242  # b"BRD1" little endian
VERSION = 1
HEADER = 24
_OFF_SEQ = 8
_OFF_LEN = 16


class Board(SegmentBacked):
    """A seqlock-protected blob in a shared-memory segment."""

    def __init__(self, segment: Segment) -> None:
        self._seg = segment
        self._closed = False
        self.name = segment.name
        buf = segment.buf
        magic, version = struct.unpack_from("<II", buf, 0)
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"shared memory segment {segment.name} is not an itsd board")
        self.capacity = struct.unpack_from("<I", buf, _OFF_LEN + 4)[0]

    @staticmethod
    def required_size(capacity: int) -> int:
        """Bytes of a board holding blobs up to ``capacity`` bytes."""
        return HEADER + capacity

    @classmethod
    def create(cls, name: str, capacity: int) -> Board:
        """Create the segment and an empty board (creator only)."""

        def init(buf: mmap.mmap) -> None:
            struct.pack_into("<IIQII", buf, 0, MAGIC, VERSION, 0, 0, capacity)

        return cls._create_initialised(name, cls.required_size(capacity), init)

    def publish(self, blob: bytes) -> None:
        """Replace the blob (single writer). ValueError if it does not fit."""
        if len(blob) > self.capacity:
            raise ValueError(f"board {self.name}: blob of {len(blob)} bytes > {self.capacity}")
        buf = self._seg.buf
        seq = atomics.load_u64(buf, _OFF_SEQ)
        atomics.store_u64(buf, _OFF_SEQ, seq + 1)
        atomics.fence()
        struct.pack_into("<I", buf, _OFF_LEN, len(blob))
        buf[HEADER : HEADER + len(blob)] = blob
        atomics.store_u64(buf, _OFF_SEQ, seq + 2)

    def read(self, timeout: float = 0.5) -> bytes | None:
        """A consistent copy of the blob; None if never published or the writer is stuck."""
        buf = self._seg.buf
        deadline = time.monotonic() + timeout
        while True:
            seq = atomics.load_u64(buf, _OFF_SEQ)
            if seq == 0:
                return None
            if seq % 2 == 0:
                (length,) = struct.unpack_from("<I", buf, _OFF_LEN)
                blob = bytes(buf[HEADER : HEADER + min(length, self.capacity)])
                atomics.fence()
                if atomics.load_u64(buf, _OFF_SEQ) == seq:
                    return blob
            if time.monotonic() > deadline:
                return None
            time.sleep(0.0005)
