"""Unit tests of ``Idle``: how a stage with empty inputs waits (on its doorbell)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from itsd.shm import ControlBlock, RecordRing, bells, new_run_id, segment_name
from itsd.stages.runtime import Idle


@pytest.fixture
def parts() -> Iterator[tuple[ControlBlock, RecordRing]]:
    rid = new_run_id()
    block = ControlBlock.create(segment_name(rid, "ctl", "main"), 2)
    ring = RecordRing.create(segment_name(rid, "records", "in"), 4096)
    bells.use_control(block)
    yield block, ring
    bells.clear_control(block)
    for seg in (ring, block):
        seg.close()
        seg.unlink()


def test_first_pause_only_arms_then_a_put_ends_the_sleep(
    parts: tuple[ControlBlock, RecordRing],
) -> None:
    block, ring = parts
    ring.set_reader_bell(1)
    idle = Idle(block.slot(1), timeout=30.0)
    t0 = time.monotonic()
    assert idle.pause() is True  # armed: look at the inputs again
    assert time.monotonic() - t0 < 1.0
    threading.Timer(0.2, lambda: ring.try_put(b"r")).start()
    assert idle.pause() is True  # slept until the put
    assert 0.1 < time.monotonic() - t0 < 20.0
    assert ring.peek_many(1) == [b"r"]


def test_pause_times_out_and_busy_disarms(parts: tuple[ControlBlock, RecordRing]) -> None:
    block, _ = parts
    idle = Idle(block.slot(0), timeout=0.02)
    idle.pause()
    assert idle.pause() is False  # nothing rang
    idle.pause()
    idle.busy()  # work found after arming: the next pause arms afresh
    t0 = time.monotonic()
    assert idle.pause() is True
    assert time.monotonic() - t0 < 1.0
