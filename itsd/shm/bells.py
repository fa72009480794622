"""Doorbells between ring writers and the stage that reads them.

A stage whose inputs are all empty used to poll them every few milliseconds: hundreds of
wake-ups a second per process, a few percent of a core each, taken from inference on a
small machine. Instead it sleeps on its control slot's doorbell (``StageSlot.arm_bell``
/ ``wait_bell``), and whoever commits a record or a frame to one of its rings rings it.

The link is kept in the ring itself: a reader writes its control-slot index into the
ring's header (``RecordRing.set_reader_bell``, ``FrameRing.set_reader_bell``); after
each commit the writer calls ``ring_reader``, which rings that slot's bell in this
process's control block (``use_control``: the supervisor's or the stage's own). A camera
that moves to another inference worker is re-stamped by its new reader, so writers never
need to know who reads.

Bells only shorten waits: a reader still wakes after its timeout and checks everything,
so a ring without a reader bell, a process without a control block, or a stale index
costs latency, never a record. This module must never block, allocate on the hot path
or raise from ``ring_reader``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from itsd.shm.atomics import bell_wait, fence, load_u32, store_u32

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["arm", "clear_control", "disarm", "ring_reader", "set_reader", "use_control", "wait"]


class _Ringer(Protocol):
    def ring_bell(self, index: int) -> None: ...


_control: _Ringer | None = None


def use_control(block: _Ringer) -> None:
    """Ring readers through ``block`` (the control block this process attached)."""
    global _control
    _control = block


def clear_control(block: _Ringer) -> None:
    """Stop ringing through ``block`` (it is being closed)."""
    global _control
    if _control is block:
        _control = None


def set_reader(buf: WriteableBuffer, off: int, slot: int | None) -> None:
    """Store the reader's control-slot index (None: no reader bell) in a ring header."""
    store_u32(buf, off, 0 if slot is None else slot + 1)


def ring_reader(buf: WriteableBuffer, off: int) -> None:
    """Wake the reader named in a ring header, if any (after a commit)."""
    if _control is not None:
        index = load_u32(buf, off)
        if index:
            _control.ring_bell(index - 1)


def arm(buf: WriteableBuffer, off: int) -> int:
    """Set the sleeper flag of the bell at ``off``; the count to pass to ``wait``. Look
    at the inputs after arming: a commit before it is seen there, one after it rings."""
    store_u32(buf, off + 4, 1)
    fence()
    return load_u32(buf, off)


def disarm(buf: WriteableBuffer, off: int) -> None:
    """Clear the sleeper flag: the waiter is awake, ringers make no system call."""
    store_u32(buf, off + 4, 0)


def wait(buf: WriteableBuffer, off: int, count: int, timeout: float) -> bool:
    """Sleep until the bell rings after ``arm`` returned ``count`` (at most ``timeout``
    seconds), then disarm; True if it rang."""
    try:
        return bell_wait(buf, off, count, timeout)
    finally:
        disarm(buf, off)
