"""Shared-memory data plane: segments, atomics, frame rings, record rings, control block.

- ``segments``: POSIX shm segments in /dev/shm (create/attach, free-space check, sweep).
- ``atomics``: the only door to acquire/release atomics on shared memory.
- ``frame_ring``: per-camera SPSC ring of frames, newest wins (lossy by design).
- ``record_ring``: SPSC ring of byte records, lossless with back-pressure.
- ``control``: the supervisor's control block (heartbeats, states, counters, flags).

This package must never import anything else from ``itsd``: every stage, the supervisor
and the tools depend on it, so it depends on nothing of theirs.
"""

from __future__ import annotations

from itsd.shm.control import (
    FLAG_DRAIN,
    FLAG_STOP,
    STATE_DRAINING,
    STATE_EMPTY,
    STATE_FAILED,
    STATE_NAMES,
    STATE_RUNNING,
    STATE_STARTING,
    STATE_STOPPED,
    ControlBlock,
    StageSlot,
)
from itsd.shm.frame_ring import (
    PIXEL_FORMAT_BGR24,
    PIXEL_FORMAT_GRAY8,
    PIXEL_FORMAT_RGB24,
    FrameRing,
    FrameSlot,
    RingStats,
    WriteSlot,
)
from itsd.shm.record_ring import RecordRing, RecordRingStats
from itsd.shm.segments import (
    SHM_DIR,
    Segment,
    SegmentInfo,
    ShmSpaceError,
    check_free_space,
    list_segments,
    new_run_id,
    segment_name,
    shm_dir,
    sweep_stale,
)

__all__ = [
    "FLAG_DRAIN",
    "FLAG_STOP",
    "PIXEL_FORMAT_BGR24",
    "PIXEL_FORMAT_GRAY8",
    "PIXEL_FORMAT_RGB24",
    "SHM_DIR",
    "STATE_DRAINING",
    "STATE_EMPTY",
    "STATE_FAILED",
    "STATE_NAMES",
    "STATE_RUNNING",
    "STATE_STARTING",
    "STATE_STOPPED",
    "ControlBlock",
    "FrameRing",
    "FrameSlot",
    "RecordRing",
    "RecordRingStats",
    "RingStats",
    "Segment",
    "SegmentInfo",
    "ShmSpaceError",
    "StageSlot",
    "WriteSlot",
    "check_free_space",
    "list_segments",
    "new_run_id",
    "segment_name",
    "shm_dir",
    "sweep_stale",
]
