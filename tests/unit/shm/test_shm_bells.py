"""Unit tests of the doorbells (itsd.shm.bells, StageSlot's bell, the rings' reader bell).

A reader arms its slot's bell, looks at its rings, and sleeps; a writer that commits to
a ring naming that slot wakes it at once, in another process too. Bells never decide
correctness: without one a reader still wakes after its timeout.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator

import numpy as np
import pytest

from itsd.shm import ControlBlock, FrameRing, RecordRing, bells, segment_name
from itsd.shm.frame_ring import PIXEL_FORMAT_RGB24


@pytest.fixture
def block(run_id: str) -> Iterator[ControlBlock]:
    b = ControlBlock.create(segment_name(run_id, "ctl", "main"), 4)
    bells.use_control(b)
    yield b
    b.close()
    b.unlink()
    bells.clear_control(b)


@pytest.fixture
def records(run_id: str) -> Iterator[RecordRing]:
    r = RecordRing.create(segment_name(run_id, "records", "r"), 4096)
    yield r
    r.close()
    r.unlink()


def test_wait_times_out_when_nothing_rings(block: ControlBlock) -> None:
    slot = block.slot(1)
    count = slot.arm_bell()
    t0 = time.monotonic()
    assert slot.wait_bell(count, 0.05) is False
    assert time.monotonic() - t0 >= 0.04


def test_a_ring_before_the_wait_is_not_missed(block: ControlBlock) -> None:
    slot = block.slot(1)
    count = slot.arm_bell()
    block.ring_bell(1)  # between the look at the inputs and the sleep
    t0 = time.monotonic()
    assert slot.wait_bell(count, 5.0) is True
    assert time.monotonic() - t0 < 1.0


def test_put_on_a_ring_wakes_its_reader(block: ControlBlock, records: RecordRing) -> None:
    records.set_reader_bell(2)
    slot = block.slot(2)
    count = slot.arm_bell()
    assert records.try_put(b"x")
    assert slot.wait_bell(count, 5.0) is True
    other = block.slot(3).arm_bell()
    assert block.slot(3).wait_bell(other, 0.0) is False  # only the named reader rang


def test_frame_commit_wakes_its_reader(block: ControlBlock, run_id: str) -> None:
    ring = FrameRing.create(
        segment_name(run_id, "frame", "cam1"), camera_key=1, slot_count=2, max_width=8, max_height=4
    )
    try:
        ring.set_reader_bell(0)
        count = block.slot(0).arm_bell()
        pixels = np.zeros((4, 8, 3), np.uint8)
        assert ring.write(
            pixels, frame_id=1, capture_ts_ns=1, pts=0, pixel_format=PIXEL_FORMAT_RGB24
        )
        assert block.slot(0).wait_bell(count, 5.0) is True
    finally:
        ring.close()
        ring.unlink()


def test_no_bell_no_control_and_stale_indices_are_harmless(
    block: ControlBlock, records: RecordRing
) -> None:
    assert records.try_put(b"no reader bell")
    records.set_reader_bell(999)  # a slot this block does not have
    assert records.try_put(b"stale")
    bells.clear_control(block)
    records.set_reader_bell(0)
    assert records.try_put(b"no control block in this process")
    records.set_reader_bell(None)
    assert records.try_put(b"bell removed")
    assert len(records.peek_many(10)) == 4


def test_disarmed_slot_costs_the_writer_no_wake(block: ControlBlock) -> None:
    slot = block.slot(1)
    count = slot.arm_bell()
    slot.disarm_bell()
    block.ring_bell(1)
    # The count moved, so a wait on the old count returns at once (True), yet nobody
    # was asleep to be woken: the writer made no system call.
    assert slot.wait_bell(count, 5.0) is True


def _writer(control: str, ring: str, delay: float) -> None:
    b = ControlBlock.attach(control)
    bells.use_control(b)
    r = RecordRing.attach(ring)
    time.sleep(delay)
    r.try_put(b"from another process")
    r.close()
    b.close()


def test_wakes_a_reader_in_another_process(block: ControlBlock, records: RecordRing) -> None:
    records.set_reader_bell(1)
    slot = block.slot(1)
    proc = mp.get_context("spawn").Process(target=_writer, args=(block.name, records.name, 0.5))
    proc.start()
    try:
        count = slot.arm_bell()
        assert not records.peek_many(1)
        t0 = time.monotonic()
        rang = slot.wait_bell(count, 30.0)
        waited = time.monotonic() - t0
        assert rang is True
        assert waited < 29.0  # woken by the put, not by the timeout
        assert records.peek_many(1) == [b"from another process"]
    finally:
        proc.join(30)


def test_of_a_burst_only_the_first_ring_wakes(block: ControlBlock) -> None:
    """The first ring clears the sleeper flag as it wakes the sleeper, so the rest of
    a burst makes no system call (and does not wake it again)."""
    import threading

    from itsd.shm import atomics
    from itsd.shm.control import HEADER_SIZE, SLOT_SIZE

    slot = block.slot(2)
    count = slot.arm_bell()
    results: list[bool] = []
    sleeper = threading.Thread(target=lambda: results.append(slot.wait_bell(count, 30.0)))
    sleeper.start()
    time.sleep(0.3)  # asleep in the kernel by now
    off = HEADER_SIZE + 2 * SLOT_SIZE + 64
    woken = [atomics.bell_ring(block.segment.buf, off) for _ in range(3)]
    sleeper.join(30)
    assert results == [True]
    assert woken[1:] == [0, 0]
    assert woken[0] in (0, 1)  # 1 unless the sleeper had not reached the kernel yet


def test_a_lossless_writer_sleeps_until_the_reader_frees_a_slot(run_id: str) -> None:
    import threading

    ring = FrameRing.create(
        segment_name(run_id, "frame", "cam2"), camera_key=2, slot_count=2, max_width=8, max_height=4
    )
    try:
        pixels = np.zeros((4, 8, 3), np.uint8)
        for i in range(2):
            assert ring.write(
                pixels, frame_id=i, capture_ts_ns=1, pts=0, pixel_format=PIXEL_FORMAT_RGB24
            )
        assert not ring.has_free_slot()
        t0 = time.monotonic()
        assert ring.wait_free_slot(0.05) is False  # nobody reads: the timeout
        assert time.monotonic() - t0 >= 0.04
        slot = ring.acquire_oldest()
        assert slot is not None
        threading.Timer(0.2, slot.release).start()
        t0 = time.monotonic()
        assert ring.wait_free_slot(30.0) is True  # woken by the release
        assert time.monotonic() - t0 < 20.0
    finally:
        ring.close()
        ring.unlink()
