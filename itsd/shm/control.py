"""The supervisor's control block: one slot per stage process, plus global flags.

Each stage process owns one ``StageSlot``: it bumps the heartbeat and publishes its pid,
state and name, and has a doorbell (``itsd.shm.bells``): a stage whose inputs are all
empty sleeps on it until a producer rings it. The supervisor watches heartbeats (a slot
whose heartbeat stops moving belongs to a stuck stage). Counters do not live here: each
stage keeps them by name in its own cell table (``itsd.shm.cells``). Every access is
atomic (``itsd.shm.atomics``), so readers on weakly ordered CPUs see whole, ordered
values. The name is guarded by a tiny seqlock (odd version = being written).

Layout (little-endian; offsets in bytes)::

    0 +--------------------- header (4096 bytes) ---------------------+
      | 0  u64 magic "ITSDCTL1" (stored last, release)                 |
      | 8  u32 version  12 u32 header size  16 u32 slot count          |
      | 20 u32 slot size (256)  24 u32 creator pid                     |
      | 64 u32 global flags (FLAG_*)                                   |
   4096 +--------------------- slot i at 4096 + 256 * i ----------------+
      | +0  u64 heartbeat       +8  u32 state (STATE_*)  +12 u32 pid   |
      | +16 u32 name version (seqlock)                                 |
      | +32 32 bytes name (UTF-8, NUL padded)                          |
      | +64 u32 doorbell count (futex word)  +68 u32 doorbell sleeper  |
      | +72 .. +255 reserved                                           |
      +----------------------------------------------------------------+

This module must never import anything from ``itsd`` outside ``itsd.shm``.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Final, Self

from itsd.shm import bells
from itsd.shm.atomics import (
    U32_MASK,
    add_u64,
    bell_ring,
    clear_bits_u32,
    fence,
    load_u32,
    load_u64,
    set_bits_u32,
    store_u32,
    store_u64,
)
from itsd.shm.segments import Segment, SegmentBacked

__all__ = [
    "FLAG_DRAIN",
    "FLAG_STOP",
    "STATE_DRAINING",
    "STATE_EMPTY",
    "STATE_FAILED",
    "STATE_NAMES",
    "STATE_RUNNING",
    "STATE_STARTING",
    "STATE_STOPPED",
    "ControlBlock",
    "StageSlot",
]

STATE_EMPTY: Final = 0
STATE_STARTING: Final = 1
STATE_RUNNING: Final = 2
STATE_DRAINING: Final = 3
STATE_STOPPED: Final = 4
STATE_FAILED: Final = 5
STATE_NAMES: Final = {
    STATE_EMPTY: "empty",
    STATE_STARTING: "starting",
    STATE_RUNNING: "running",
    STATE_DRAINING: "draining",
    STATE_STOPPED: "stopped",
    STATE_FAILED: "failed",
}

#: Global flag: every stage should stop taking new work.
FLAG_STOP: Final = 1 << 0
#: Global flag: stages should drain their inputs (shutdown in flow order).
FLAG_DRAIN: Final = 1 << 1

MAGIC: Final = int.from_bytes(b"ITSDCTL1", "little")
VERSION: Final = 2
HEADER_SIZE: Final = 4096
SLOT_SIZE: Final = 256
NAME_SIZE: Final = 32
MAX_SLOTS: Final = 65536

_H_MAGIC = 0
_H_LAYOUT = struct.Struct("<IIIII")  # version, header size, slots, slot size, pid at 8
_H_FLAGS = 64

_S_HEARTBEAT = 0
_S_STATE = 8
_S_PID = 12
_S_NAME_VER = 16
_S_NAME = 32
_S_BELL = 64  # the doorbell: u32 count at +64, u32 sleeper flag at +68 (itsd.shm.bells)


class StageSlot:
    """One stage's slot: heartbeat, pid, state and name."""

    __slots__ = ("_base", "_block", "_buf", "index")

    def __init__(self, block: ControlBlock, index: int) -> None:
        self._block = block
        self._buf = block.segment.buf
        self._base = HEADER_SIZE + index * SLOT_SIZE
        self.index = index

    # heartbeat ------------------------------------------------------------------------
    def beat(self) -> None:
        """Heartbeat += 1 (atomic)."""
        add_u64(self._buf, self._base + _S_HEARTBEAT, 1)

    def heartbeat(self) -> int:
        """The heartbeat counter."""
        return load_u64(self._buf, self._base + _S_HEARTBEAT)

    # pid / state ----------------------------------------------------------------------
    def set_pid(self, pid: int) -> None:
        """Publish the stage's pid (0 = none)."""
        if not 0 <= pid <= U32_MASK:
            raise ValueError(f"control slot {self.index}: pid {pid} out of range")
        store_u32(self._buf, self._base + _S_PID, pid)

    def pid(self) -> int:
        """The stage's pid (0 = none)."""
        return load_u32(self._buf, self._base + _S_PID)

    def set_state(self, state: int) -> None:
        """Publish the stage's state (one of the ``STATE_*`` constants)."""
        if state not in STATE_NAMES:
            raise ValueError(
                f"control slot {self.index}: unknown state {state} (known: {sorted(STATE_NAMES)})"
            )
        store_u32(self._buf, self._base + _S_STATE, state)

    def state(self) -> int:
        """The stage's state (``STATE_*``)."""
        return load_u32(self._buf, self._base + _S_STATE)

    # doorbell -------------------------------------------------------------------------
    def arm_bell(self) -> int:
        """Say this stage may sleep on its bell; returns the count to pass to ``wait_bell``.

        Check the inputs after arming: a record put before it is seen there, one put
        after it rings the bell (the flag and the count are sequentially consistent).
        """
        return bells.arm(self._buf, self._base + _S_BELL)

    def disarm_bell(self) -> None:
        """The stage is awake again: producers stop waking it."""
        bells.disarm(self._buf, self._base + _S_BELL)

    def wait_bell(self, count: int, timeout: float) -> bool:
        """Sleep until the bell rings after ``arm_bell`` returned ``count``, at most
        ``timeout`` seconds; True if it rang. Disarms."""
        return bells.wait(self._buf, self._base + _S_BELL, count, timeout)

    def ring_bell(self) -> None:
        """Wake the stage if it sleeps on its bell (no system call when it does not)."""
        bell_ring(self._buf, self._base + _S_BELL)

    # name -----------------------------------------------------------------------------
    def set_name(self, name: str) -> None:
        """Set the slot's name (at most 32 bytes of UTF-8). One writer at a time."""
        raw = name.encode("utf-8")
        if len(raw) > NAME_SIZE:
            raise ValueError(
                f"control slot {self.index}: name {name!r} is {len(raw)} bytes of UTF-8, "
                f"the limit is {NAME_SIZE}"
            )
        ver_off = self._base + _S_NAME_VER
        ver = load_u32(self._buf, ver_off)
        store_u32(self._buf, ver_off, (ver + 1) & U32_MASK)  # odd: being written
        fence()
        off = self._base + _S_NAME
        self._buf[off : off + NAME_SIZE] = raw.ljust(NAME_SIZE, b"\0")
        store_u32(self._buf, ver_off, (ver + 2) & U32_MASK)  # even again: release

    def name(self) -> str:
        """The slot's name ('' if never set)."""
        ver_off = self._base + _S_NAME_VER
        off = self._base + _S_NAME
        while True:
            before = load_u32(self._buf, ver_off)
            raw = self._buf[off : off + NAME_SIZE]
            fence()
            if before % 2 == 0 and load_u32(self._buf, ver_off) == before:
                return raw.rstrip(b"\0").decode("utf-8", errors="replace")
            os.sched_yield()

    def reset(self) -> None:
        """Zero heartbeat, pid and state (supervisor, before reusing the slot)."""
        store_u64(self._buf, self._base + _S_HEARTBEAT, 0)
        store_u32(self._buf, self._base + _S_PID, 0)
        store_u32(self._buf, self._base + _S_STATE, STATE_EMPTY)
        bells.disarm(self._buf, self._base + _S_BELL)

    def __repr__(self) -> str:
        return (
            f"StageSlot({self.index}, name={self.name()!r}, pid={self.pid()}, "
            f"state={STATE_NAMES.get(self.state(), self.state())}, heartbeat={self.heartbeat()})"
        )


class ControlBlock(SegmentBacked):
    """The control block segment: ``n_slots`` stage slots and a global flags word."""

    def __init__(self, segment: Segment) -> None:
        self._seg = segment
        self.name = segment.name
        buf = segment.buf
        magic = load_u64(buf, _H_MAGIC)
        if magic != MAGIC:
            what = (
                "is not initialised yet (its creator is still setting it up)"
                if magic == 0
                else f"is not a control block (magic {magic.to_bytes(8, 'little')!r})"
            )
            segment.close()
            raise ValueError(f"shared-memory segment {segment.name!r} {what}")
        version, header_size, n_slots, slot_size, pid = _H_LAYOUT.unpack_from(buf, 8)
        if version != VERSION or header_size != HEADER_SIZE or slot_size != SLOT_SIZE:
            segment.close()
            raise ValueError(
                f"control block {segment.name!r} has layout version {version}; this build "
                f"reads version {VERSION}: restart all itsd processes together"
            )
        if segment.size < HEADER_SIZE + n_slots * SLOT_SIZE:
            segment.close()
            raise ValueError(f"control block {segment.name!r} is truncated ({segment.size} bytes)")
        self.n_slots: int = n_slots
        self.creator_pid: int = pid
        self._slots = [StageSlot(self, i) for i in range(n_slots)]
        self._closed = False

    @staticmethod
    def required_size(n_slots: int) -> int:
        """Bytes of shared memory for ``n_slots`` stage slots."""
        if not 1 <= n_slots <= MAX_SLOTS:
            raise ValueError(f"control block n_slots must be 1..{MAX_SLOTS}, got {n_slots}")
        return HEADER_SIZE + n_slots * SLOT_SIZE

    @classmethod
    def create(cls, name: str, n_slots: int) -> Self:
        """Create the block (zeroed: every slot EMPTY); this process is the only unlinker."""

        def init(buf: mmap.mmap) -> None:
            _H_LAYOUT.pack_into(buf, 8, VERSION, HEADER_SIZE, n_slots, SLOT_SIZE, os.getpid())
            store_u64(buf, _H_MAGIC, MAGIC)

        return cls._create_initialised(name, cls.required_size(n_slots), init)

    def slot(self, index: int) -> StageSlot:
        """Stage slot ``index`` (0 <= index < n_slots)."""
        if not 0 <= index < self.n_slots:
            raise IndexError(
                f"control block {self.name!r}: slot {index} out of range 0..{self.n_slots - 1}"
            )
        return self._slots[index]

    def _on_close(self) -> None:
        bells.clear_control(self)

    def ring_bell(self, index: int) -> None:
        """Ring the doorbell of slot ``index``; an index out of range is ignored (a ring
        header may name the slot of a reader from another run)."""
        if 0 <= index < self.n_slots and not self._closed:
            bell_ring(self._seg.buf, HEADER_SIZE + index * SLOT_SIZE + _S_BELL)

    def ring_all_bells(self) -> None:
        """Wake every sleeping stage (after a flag change they must see at once)."""
        for i in range(self.n_slots):
            self.ring_bell(i)

    def flags(self) -> int:
        """The global flags word (``FLAG_*`` bits)."""
        return load_u32(self._seg.buf, _H_FLAGS)

    def set_flags(self, mask: int) -> int:
        """Set the bits of ``mask`` (atomic) and wake every stage; return the previous flags."""
        old = set_bits_u32(self._seg.buf, _H_FLAGS, mask)
        self.ring_all_bells()
        return old

    def clear_flags(self, mask: int) -> int:
        """Clear the bits of ``mask`` (atomic); return the previous flags."""
        return clear_bits_u32(self._seg.buf, _H_FLAGS, mask)

    def __repr__(self) -> str:
        return f"ControlBlock({self.name!r}, n_slots={self.n_slots})"
