"""The one door to atomic memory access on shared-memory buffers.

Every load, store and read-modify-write of a word that another process reads or writes
concurrently (ring states, head/tail indices, counters, heartbeats, flags) goes through
this module. Plain Python stores into an ``mmap`` (``struct.pack_into``, slice assignment,
numpy) give no ordering guarantee on weakly ordered CPUs such as aarch64 (Jetson), so a
value published with them may be seen before the data it guards.

Ordering of the primitives (implemented in ``_atomics.c`` with ``__atomic`` builtins):

- ``load_u32`` / ``load_u64``: acquire. Reads issued after it see everything the
  publishing process wrote before its matching release store.
- ``store_u32`` / ``store_u64``: release. Everything this process wrote before (including
  bulk copies made by numpy or ``struct``) is visible to a process that loads the value
  with acquire.
- ``fetch_add_u64`` and ``cas_u32``: acquire+release read-modify-writes.
- ``fence``: a full sequentially consistent fence.
- ``bell_ring`` / ``bell_wait``: a doorbell, two u32 words at an 8-aligned offset (the
  ring count, a futex word, then the sleeper flag). ``bell_ring`` adds one to the count
  (seq_cst) and, when the flag is set, clears it and wakes the sleeper (one syscall per
  sleep however many ring, none while it is awake); ``bell_wait`` sleeps, without the
  GIL, while the count still equals the value the waiter read, at most ``timeout``
  seconds (Linux futex; elsewhere a 2 ms poll).

Offsets are byte offsets into the buffer and must be naturally aligned (4 for 32-bit,
8 for 64-bit words); a misaligned or out-of-range offset raises ``ValueError`` /
``IndexError`` from the extension. The functions are the C functions themselves (no
Python wrapper on the hot path); the typed stub ``_atomics.pyi`` gives them their types.

This module must never import anything else from ``itsd``, never hold a buffer between
calls and never be bypassed: no other module imports ``itsd.shm._atomics``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itsd.shm import _atomics

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "U32_MASK",
    "U64_MASK",
    "add_u64",
    "bell_ring",
    "bell_wait",
    "cas_u32",
    "check_aligned",
    "clear_bits_u32",
    "fence",
    "fetch_add_u64",
    "load_u32",
    "load_u64",
    "set_bits_u32",
    "store_u32",
    "store_u64",
]

U32_MASK = 0xFFFF_FFFF
U64_MASK = 0xFFFF_FFFF_FFFF_FFFF

load_u64 = _atomics.load_u64
store_u64 = _atomics.store_u64
fetch_add_u64 = _atomics.fetch_add_u64
load_u32 = _atomics.load_u32
store_u32 = _atomics.store_u32
cas_u32 = _atomics.cas_u32
fence = _atomics.fence
bell_ring = _atomics.bell_ring
bell_wait = _atomics.bell_wait


def add_u64(buf: WriteableBuffer, off: int, delta: int) -> int:
    """Atomically add ``delta`` (which may be negative) to a u64 word; return the old value.

    Negative deltas wrap modulo 2**64, so ``add_u64(buf, off, -1)`` decrements a counter
    that is above zero.
    """
    return _atomics.fetch_add_u64(buf, off, delta & U64_MASK)


def set_bits_u32(buf: WriteableBuffer, off: int, mask: int) -> int:
    """Atomically OR ``mask`` into a u32 word (CAS loop); return the previous value."""
    mask &= U32_MASK
    while True:
        old = _atomics.load_u32(buf, off)
        if _atomics.cas_u32(buf, off, old, old | mask):
            return old


def clear_bits_u32(buf: WriteableBuffer, off: int, mask: int) -> int:
    """Atomically clear the bits of ``mask`` in a u32 word (CAS loop); return the previous value."""
    keep = ~mask & U32_MASK
    while True:
        old = _atomics.load_u32(buf, off)
        if _atomics.cas_u32(buf, off, old, old & keep):
            return old


def check_aligned(offset: int, width: int, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``offset`` is a multiple of ``width``.

    Used by layout code at construction time, so a layout bug fails loudly and early
    instead of on the first atomic access.
    """
    if offset % width:
        raise ValueError(f"{what}: offset {offset} is not {width}-byte aligned")
