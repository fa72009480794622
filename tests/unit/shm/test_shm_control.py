"""Unit tests of itsd.shm.control: stage slots (heartbeat, pid, state, name), flags."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from itsd.shm import (
    FLAG_DRAIN,
    FLAG_STOP,
    STATE_EMPTY,
    STATE_FAILED,
    STATE_RUNNING,
    ControlBlock,
    FrameRing,
    segment_name,
)
from itsd.shm.control import HEADER_SIZE, SLOT_SIZE


@pytest.fixture
def block(run_id: str) -> Iterator[ControlBlock]:
    b = ControlBlock.create(segment_name(run_id, "ctl", "main"), 4)
    yield b
    b.close()
    b.unlink()


def test_required_size() -> None:
    assert ControlBlock.required_size(4) == HEADER_SIZE + 4 * SLOT_SIZE
    with pytest.raises(ValueError, match="n_slots"):
        ControlBlock.required_size(0)


def test_fresh_slots_are_empty(block: ControlBlock) -> None:
    assert block.n_slots == 4
    for i in range(4):
        s = block.slot(i)
        assert (s.heartbeat(), s.pid(), s.state(), s.name()) == (0, 0, STATE_EMPTY, "")


def test_values_are_shared_between_mappings(block: ControlBlock) -> None:
    other = ControlBlock.attach(block.name)
    try:
        s = block.slot(2)
        s.beat()
        s.beat()
        s.set_pid(4242)
        s.set_state(STATE_RUNNING)
        s.set_name("decode:cam1")
        o = other.slot(2)
        assert o.heartbeat() == 2
        assert o.pid() == 4242
        assert o.state() == STATE_RUNNING
        assert o.name() == "decode:cam1"
        assert other.slot(1).heartbeat() == 0  # slots are independent
    finally:
        other.close()


def test_state_is_validated(block: ControlBlock) -> None:
    with pytest.raises(ValueError, match="unknown state 9"):
        block.slot(0).set_state(9)
    block.slot(0).set_state(STATE_FAILED)
    assert block.slot(0).state() == STATE_FAILED


def test_name_limits(block: ControlBlock) -> None:
    s = block.slot(1)
    s.set_name("x" * 32)
    assert s.name() == "x" * 32
    s.set_name("caméra")
    assert s.name() == "caméra"
    s.set_name("")
    assert s.name() == ""
    with pytest.raises(ValueError, match="33 bytes"):
        s.set_name("y" * 33)


def test_slot_indices_are_checked(block: ControlBlock) -> None:
    s = block.slot(0)
    with pytest.raises(IndexError, match="slot 4 out of range"):
        block.slot(4)
    with pytest.raises(ValueError, match="pid"):
        s.set_pid(-1)


def test_reset(block: ControlBlock) -> None:
    s = block.slot(3)
    s.beat()
    s.set_pid(5)
    s.set_state(STATE_RUNNING)
    s.reset()
    assert (s.heartbeat(), s.pid(), s.state()) == (0, 0, STATE_EMPTY)


def test_global_flags(block: ControlBlock) -> None:
    assert block.flags() == 0
    assert block.set_flags(FLAG_DRAIN) == 0
    assert block.set_flags(FLAG_STOP) == FLAG_DRAIN
    assert block.flags() == FLAG_STOP | FLAG_DRAIN
    assert block.clear_flags(FLAG_DRAIN) == FLAG_STOP | FLAG_DRAIN
    assert block.flags() == FLAG_STOP


def test_attach_checks_kind(run_id: str) -> None:
    ring = FrameRing.create(
        segment_name(run_id, "frame", "c"), camera_key=0, slot_count=2, max_width=4, max_height=4
    )
    try:
        with pytest.raises(ValueError, match="is not a control block"):
            ControlBlock.attach(ring.name)
    finally:
        ring.close()
        ring.unlink()
    with pytest.raises(FileNotFoundError, match="not found"):
        ControlBlock.attach("itsd-1x1-ctl-missing")
