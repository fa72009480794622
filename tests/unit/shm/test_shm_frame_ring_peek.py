"""FrameRing.peek: a read-only copy for a third party (the dashboard), whole frames only,
with a writer and a reader busy in other processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from collections.abc import Iterator

import numpy as np
import pytest

from itsd.shm import segment_name
from itsd.shm.frame_ring import FrameRing

MAX_W, MAX_H = 64, 48


def frame(frame_id: int, width: int = MAX_W, height: int = MAX_H) -> np.ndarray:
    n = width * height * 3
    flat = (np.arange(n, dtype=np.uint32) * 7 + frame_id * 13) % 251
    return flat.astype(np.uint8).reshape(height, width, 3)


@pytest.fixture
def ring(run_id: str) -> Iterator[FrameRing]:
    r = FrameRing.create(
        segment_name(run_id, "frame", "cam"), camera_key=1, slot_count=4, max_width=MAX_W,
        max_height=MAX_H,
    )  # fmt: skip
    yield r
    r.close()
    r.unlink()


def write(r: FrameRing, fid: int) -> None:
    assert r.write(frame(fid), frame_id=fid, capture_ts_ns=fid, pts=fid)


def test_peek_changes_nothing(ring: FrameRing) -> None:
    assert ring.peek() is None
    for fid in range(3):
        write(ring, fid)
    states, stats = ring.slot_states(), ring.stats()
    p = ring.peek()
    assert p is not None and p.frame_id == 2
    assert np.array_equal(p.pixels, frame(2))
    assert ring.slot_states() == states and ring.stats() == stats
    p.pixels[:] = 0  # a private copy
    slot = ring.acquire_newest()
    assert slot is not None and slot.frame_id == 2 and np.array_equal(slot.pixels, frame(2))
    slot.release()


def test_peek_by_frame_id_and_the_frame_taken_last(ring: FrameRing) -> None:
    for fid in range(3):
        write(ring, fid)
    assert ring.peek(1).frame_id == 1  # type: ignore[union-attr]
    assert ring.peek(99).frame_id == 2  # type: ignore[union-attr]
    slot = ring.acquire_newest()  # the reader takes 2 (0 and 1 are skipped)
    assert slot is not None
    slot.release()
    write(ring, 3)
    assert ring.peek().frame_id == 3  # type: ignore[union-attr]
    assert ring.peek(taken=True).frame_id == 2  # type: ignore[union-attr]


def _writer(name: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    r = FrameRing.attach(name)
    for fid in range(n):
        r.write(frame(fid), frame_id=fid, capture_ts_ns=fid, pts=fid)
        if rng.random() < 0.3:
            time.sleep(rng.random() * 0.001)
    r.close()


def _reader(name: str, stop_at: int) -> None:
    r = FrameRing.attach(name)
    while True:
        s = r.acquire_newest()
        if s is None:
            time.sleep(0.0001)
            continue
        fid = s.frame_id
        s.release()
        if fid >= stop_at - 1:
            break
    r.close()


def test_peeked_frames_are_whole_while_writer_and_reader_run(ring: FrameRing) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    n = 3000
    ctx = mp.get_context("spawn")
    w = ctx.Process(target=_writer, args=(ring.name, n, seed))
    rd = ctx.Process(target=_reader, args=(ring.name, n))
    w.start()
    rd.start()
    peeked = 0
    last = -1
    deadline = time.monotonic() + 60
    while w.is_alive() and time.monotonic() < deadline:
        p = ring.peek(taken=bool(peeked % 2))
        if p is None:
            continue
        peeked += 1
        assert np.array_equal(p.pixels, frame(p.frame_id)), f"torn frame {p.frame_id} (seed {seed})"
        assert p.capture_ts_ns == p.frame_id
        last = max(last, p.frame_id)
    w.join(30)
    rd.join(30)
    assert w.exitcode == 0 and rd.exitcode == 0
    assert peeked > 10 and last > 0
