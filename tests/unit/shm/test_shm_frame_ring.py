"""Unit tests of itsd.shm.frame_ring: every slot transition, drops, skips, recovery, errors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itsd.shm import RecordRing, segment_name
from itsd.shm.frame_ring import (
    PAGE,
    PIXEL_FORMAT_BGR24,
    PIXEL_FORMAT_GRAY8,
    PIXEL_FORMAT_RGB24,
    SLOT_FREE,
    SLOT_READING,
    SLOT_READY,
    SLOT_WRITING,
    FrameRing,
    FrameSlot,
)

MAX_W, MAX_H = 64, 48


def frame(frame_id: int, width: int = MAX_W, height: int = MAX_H, channels: int = 3) -> np.ndarray:
    """A frame whose every byte depends on its id."""
    n = width * height * channels
    flat = (np.arange(n, dtype=np.uint32) * 7 + frame_id * 13) % 251
    return flat.astype(np.uint8).reshape(height, width, channels)


@pytest.fixture
def ring(run_id: str) -> Iterator[FrameRing]:
    r = FrameRing.create(
        segment_name(run_id, "frame", "cam3"),
        camera_key=3,
        slot_count=3,
        max_width=MAX_W,
        max_height=MAX_H,
    )
    yield r
    r.close()
    r.unlink()


def write(r: FrameRing, frame_id: int, width: int = MAX_W, height: int = MAX_H) -> bool:
    return r.write(
        frame(frame_id, width, height, r.channels),
        frame_id=frame_id,
        capture_ts_ns=1_000 + frame_id,
        pts=-frame_id,
        pixel_format=PIXEL_FORMAT_RGB24 if r.channels == 3 else PIXEL_FORMAT_GRAY8,
    )


def check(slot: FrameSlot, frame_id: int) -> None:
    assert slot.frame_id == frame_id
    assert slot.capture_ts_ns == 1_000 + frame_id
    assert slot.pts == -frame_id
    np.testing.assert_array_equal(
        slot.pixels, frame(frame_id, slot.width, slot.height, slot.pixels.shape[2])
    )


# ------------------------------------------------------------------ layout


def test_required_size_is_page_aligned() -> None:
    size = FrameRing.required_size(4, 1920, 1080, 3)
    assert size % PAGE == 0
    assert size >= 4 * 1920 * 1080 * 3


def test_create_attach_and_header_fields(ring: FrameRing) -> None:
    other = FrameRing.attach(ring.name)
    try:
        assert (other.camera_key, other.slot_count) == (3, 3)
        assert (other.max_width, other.max_height, other.channels) == (MAX_W, MAX_H, 3)
        assert other.name == ring.name
    finally:
        other.close()


def test_pixel_addresses_are_page_aligned(ring: FrameRing) -> None:
    assert write(ring, 1)
    slot = ring.acquire_newest()
    assert slot is not None
    with slot:
        assert slot.address % PAGE == 0
        assert slot.address == slot.pixels.__array_interface__["data"][0]
        assert slot.nbytes == MAX_W * MAX_H * 3
        assert ring.base_address <= slot.address < ring.base_address + ring.mapped_size


@pytest.mark.parametrize(
    ("slots", "w", "h", "c"), [(1, 8, 8, 3), (2, 0, 8, 3), (2, 8, 99999, 3), (2, 8, 8, 2)]
)
def test_bad_dimensions_are_refused(slots: int, w: int, h: int, c: int) -> None:
    with pytest.raises(ValueError, match="frame ring"):
        FrameRing.required_size(slots, w, h, c)


def test_attach_to_a_record_ring_is_refused(run_id: str) -> None:
    rec = RecordRing.create(segment_name(run_id, "rec", "x"), 4096)
    try:
        with pytest.raises(ValueError, match="is not a frame ring"):
            FrameRing.attach(rec.name)
    finally:
        rec.close()
        rec.unlink()


def test_attach_to_missing_ring() -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        FrameRing.attach("itsd-1x1-frame-missing")


# ------------------------------------------------------------------ transitions


def test_free_writing_ready_reading_free(ring: FrameRing) -> None:
    assert ring.slot_states() == [SLOT_FREE] * 3
    ws = ring.begin_write(32, 16)
    assert ws is not None
    assert ring.slot_states()[ws.index] == SLOT_WRITING
    assert ws.pixels.shape == (16, 32, 3)
    assert ws.address % PAGE == 0
    ws.pixels[...] = frame(9, 32, 16)
    assert ring.acquire_newest() is None  # WRITING is invisible to the reader
    seq = ws.commit(frame_id=9, capture_ts_ns=1_009, pts=-9, pixel_format=PIXEL_FORMAT_BGR24)
    assert seq == 1
    assert ring.slot_states()[ws.index] == SLOT_READY
    assert ring.pending() == 1
    slot = ring.acquire_newest()
    assert slot is not None
    assert ring.slot_states()[slot.index] == SLOT_READING
    assert (slot.seq, slot.camera_key, slot.width, slot.height) == (1, 3, 32, 16)
    assert slot.pixel_format == PIXEL_FORMAT_BGR24
    check(slot, 9)
    slot.release()
    assert ring.slot_states() == [SLOT_FREE] * 3
    assert ring.stats().written == 1
    assert ring.stats().read == 1


def test_abort_frees_the_slot(ring: FrameRing) -> None:
    ws = ring.begin_write(8, 8)
    assert ws is not None
    ws.abort()
    ws.abort()  # idempotent
    assert ring.slot_states() == [SLOT_FREE] * 3
    with pytest.raises(RuntimeError, match="already committed or aborted"):
        ws.commit(frame_id=1, capture_ts_ns=0, pts=0)
    assert ring.stats().written == 0
    assert ring.acquire_newest() is None


def test_write_slot_context_manager_aborts_unless_committed(ring: FrameRing) -> None:
    with ring.begin_write(8, 8) as ws:  # type: ignore[union-attr]
        pass
    assert ws.done
    assert ring.slot_states() == [SLOT_FREE] * 3
    with ring.begin_write(8, 8) as ws:  # type: ignore[union-attr]
        ws.commit(frame_id=1, capture_ts_ns=0, pts=0)
    assert ring.pending() == 1


def test_commit_twice_is_an_error(ring: FrameRing) -> None:
    ws = ring.begin_write(8, 8)
    assert ws is not None
    ws.commit(frame_id=1, capture_ts_ns=0, pts=0)
    with pytest.raises(RuntimeError, match="already committed"):
        ws.commit(frame_id=2, capture_ts_ns=0, pts=0)


def test_reader_skips_older_ready_frames(ring: FrameRing) -> None:
    for i in range(3):
        assert write(ring, i)
    assert ring.slot_states() == [SLOT_READY] * 3
    slot = ring.acquire_newest()
    assert slot is not None
    check(slot, 2)
    assert sorted(ring.slot_states()) == [SLOT_FREE, SLOT_FREE, SLOT_READING]
    stats = ring.stats()
    assert (stats.skipped, stats.read, stats.dropped) == (2, 1, 0)
    slot.release()
    assert ring.acquire_newest() is None  # nothing new


def test_writer_overwrites_oldest_unread_frame(ring: FrameRing) -> None:
    for i in range(5):  # 3 slots: frames 0 and 1 are overwritten
        assert write(ring, i)
    stats = ring.stats()
    assert (stats.written, stats.dropped, stats.rejected) == (5, 2, 0)
    assert ring.pending() == 3
    slot = ring.acquire_newest()
    assert slot is not None
    check(slot, 4)
    slot.release()
    assert ring.stats().skipped == 2


def test_writer_never_touches_a_reading_slot(ring: FrameRing) -> None:
    assert write(ring, 0)
    held = ring.acquire_newest()
    assert held is not None
    for i in range(1, 20):
        assert write(ring, i)
    assert ring.slot_states()[held.index] == SLOT_READING
    check(held, 0)  # untouched by 19 later writes
    newest = ring.acquire_newest()
    assert newest is not None
    check(newest, 19)
    held.release()
    newest.release()


def test_rejects_when_every_slot_is_held(run_id: str) -> None:
    r = FrameRing.create(
        segment_name(run_id, "frame", "two"),
        camera_key=0,
        slot_count=2,
        max_width=8,
        max_height=8,
    )
    try:
        held = []
        for i in range(2):
            assert write(r, i, 8, 8)
            s = r.acquire_newest()
            assert s is not None
            held.append(s)
        assert r.begin_write(8, 8) is None
        assert not write(r, 2, 8, 8)
        stats = r.stats()
        assert (stats.dropped, stats.rejected, stats.written) == (2, 2, 2)
        held[0].release()
        assert write(r, 3, 8, 8)
        for s in held:
            s.release()
    finally:
        r.close()
        r.unlink()


def test_two_slots_with_reader_and_writer_busy(run_id: str) -> None:
    r = FrameRing.create(
        segment_name(run_id, "frame", "pair"),
        camera_key=0,
        slot_count=2,
        max_width=8,
        max_height=8,
    )
    try:
        assert write(r, 0, 8, 8)
        held = r.acquire_newest()
        assert held is not None
        ws = r.begin_write(8, 8)
        assert ws is not None  # the other slot
        assert r.begin_write(8, 8) is None  # reader holds one, writer the other
        ws.abort()
        held.release()
    finally:
        r.close()
        r.unlink()


def test_sequence_numbers_strictly_increase(ring: FrameRing) -> None:
    seen: list[int] = []
    for i in range(30):
        for j in range(i % 4):
            write(ring, i * 10 + j)
        s = ring.acquire_newest()
        if s is not None:
            seen.append(s.seq)
            s.release()
    assert seen == sorted(set(seen))
    assert len(seen) > 10


def test_release_is_idempotent_and_runs_on_exceptions(ring: FrameRing) -> None:
    write(ring, 1)
    slot = ring.acquire_newest()
    assert slot is not None
    with pytest.raises(KeyError), slot:
        raise KeyError("reader failed")
    assert slot.released
    assert ring.slot_states() == [SLOT_FREE] * 3
    slot.release()
    assert ring.slot_states() == [SLOT_FREE] * 3


def test_reader_pixels_are_read_only(ring: FrameRing) -> None:
    write(ring, 1)
    slot = ring.acquire_newest()
    assert slot is not None
    with slot, pytest.raises(ValueError, match="read-only"):
        slot.pixels[0, 0, 0] = 1


def test_reader_and_writer_through_separate_mappings(ring: FrameRing) -> None:
    reader = FrameRing.attach(ring.name)
    try:
        write(ring, 5, 20, 10)
        slot = reader.acquire_newest()
        assert slot is not None
        check(slot, 5)
        slot.release()
        assert ring.stats().read == 1
    finally:
        reader.close()


def test_restarted_reader_continues_sequence(ring: FrameRing) -> None:
    write(ring, 1)
    first = FrameRing.attach(ring.name)
    s = first.acquire_newest()
    assert s is not None
    s.release()
    first.close()
    second = FrameRing.attach(ring.name)
    try:
        assert second.acquire_newest() is None  # frame 1 was already read
        write(ring, 2)
        s = second.acquire_newest()
        assert s is not None
        assert s.seq == 2
        s.release()
    finally:
        second.close()


# ------------------------------------------------------------------ recovery


def test_recover_reader(ring: FrameRing) -> None:
    write(ring, 1)
    dead_reader = FrameRing.attach(ring.name)
    slot = dead_reader.acquire_newest()
    assert slot is not None
    assert ring.slot_states().count(SLOT_READING) == 1
    assert ring.recover_reader() == 1
    assert ring.slot_states() == [SLOT_FREE] * 3
    assert ring.recover_reader() == 0
    for i in range(2, 10):  # the slot is usable again
        assert write(ring, i)
    assert ring.stats().rejected == 0
    del slot
    dead_reader.close()


def test_late_release_after_recovery_is_harmless(ring: FrameRing) -> None:
    write(ring, 1)
    slot = ring.acquire_newest()
    assert slot is not None
    assert ring.recover_reader() == 1
    ws = ring.begin_write(8, 8)  # reuses the recovered slot
    assert ws is not None
    assert ws.index == slot.index
    slot.release()  # stale: must not free the slot under the writer
    assert ring.slot_states()[ws.index] == SLOT_WRITING
    ws.abort()


def test_recover_writer(ring: FrameRing) -> None:
    dead_writer = FrameRing.attach(ring.name)
    ws = dead_writer.begin_write(8, 8)
    assert ws is not None
    assert ring.recover_writer() == 1
    assert ring.slot_states() == [SLOT_FREE] * 3
    with pytest.raises(RuntimeError, match="taken away while being written"):
        ws.commit(frame_id=1, capture_ts_ns=0, pts=0)
    dead_writer.close()


# ------------------------------------------------------------------ errors


def test_frame_too_large_names_ring_and_sizes(ring: FrameRing) -> None:
    with pytest.raises(ValueError) as info:
        ring.write(frame(0, MAX_W + 1, 10), frame_id=0, capture_ts_ns=0, pts=0)
    msg = str(info.value)
    assert ring.name in msg
    assert f"{MAX_W + 1}x10" in msg
    assert f"max {MAX_W}x{MAX_H}" in msg
    with pytest.raises(ValueError, match=rf"8x{MAX_H + 1}"):
        ring.begin_write(8, MAX_H + 1)
    with pytest.raises(ValueError, match="0x8"):
        ring.begin_write(0, 8)
    assert ring.stats().dropped == 0
    assert ring.slot_states() == [SLOT_FREE] * 3


def test_wrong_dtype_shape_and_format(ring: FrameRing) -> None:
    with pytest.raises(ValueError, match="uint8"):
        ring.write(np.zeros((4, 4, 3), np.float32), frame_id=0, capture_ts_ns=0, pts=0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ring.write(np.zeros((4, 4), np.uint8), frame_id=0, capture_ts_ns=0, pts=0)
    with pytest.raises(ValueError, match="pixel format 2"):
        ring.write(
            np.zeros((4, 4, 3), np.uint8),
            frame_id=0,
            capture_ts_ns=0,
            pts=0,
            pixel_format=PIXEL_FORMAT_GRAY8,
        )
    with pytest.raises(ValueError, match="signed 64-bit"):
        ring.write(np.zeros((4, 4, 3), np.uint8), frame_id=2**64, capture_ts_ns=0, pts=0)
    assert ring.slot_states() == [SLOT_FREE] * 3
    assert ring.stats().written == 0


def test_non_contiguous_input_is_copied_correctly(ring: FrameRing) -> None:
    big = frame(3, MAX_W, MAX_H)
    view = big[::2, ::2]  # strided view
    assert ring.write(view, frame_id=3, capture_ts_ns=0, pts=0)
    slot = ring.acquire_newest()
    assert slot is not None
    with slot:
        np.testing.assert_array_equal(slot.pixels, view)


def test_gray_ring_takes_2d_frames(run_id: str) -> None:
    r = FrameRing.create(
        segment_name(run_id, "frame", "gray"),
        camera_key=1,
        slot_count=2,
        max_width=16,
        max_height=16,
        channels=1,
    )
    try:
        img = frame(4, 10, 6, 1)
        assert r.write(img[:, :, 0], frame_id=4, capture_ts_ns=0, pts=0, pixel_format=2)
        slot = r.acquire_newest()
        assert slot is not None
        with slot:
            assert slot.pixels.shape == (6, 10, 1)
            np.testing.assert_array_equal(slot.pixels, img)
    finally:
        r.close()
        r.unlink()


def test_close_releases_held_slots_and_tolerates_views(ring: FrameRing) -> None:
    reader = FrameRing.attach(ring.name)
    write(ring, 1)
    slot = reader.acquire_newest()
    assert slot is not None
    pixels = slot.pixels
    ws = reader.begin_write(8, 8)
    assert ws is not None
    reader.close()  # views are alive: must not raise
    reader.close()
    assert ring.slot_states() == [SLOT_FREE] * 3
    assert slot.released
    assert ws.done
    check(slot, 1)  # the mapping lives on while a view does
    del pixels


# ------------------------------------------------------------------ model-based


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    slot_count=st.integers(min_value=2, max_value=5),
    ops=st.lists(
        st.sampled_from(["write", "write", "write", "acquire", "release", "abort"]), max_size=80
    ),
)
def test_random_operations_keep_the_invariants(
    run_id: str, slot_count: int, ops: list[str]
) -> None:
    """Policy-independent invariants under random single-process use.

    - a frame read is the newest one written since the last read, whole and intact;
    - a held frame is never altered by later writes;
    - writes fail only when the reader holds every slot;
    - counters balance: written == read + skipped + (dropped - rejected) + pending.
    """
    r = FrameRing.create(
        segment_name(run_id, "frame", f"m{slot_count}"),
        camera_key=7,
        slot_count=slot_count,
        max_width=16,
        max_height=16,
    )
    try:
        held: list[FrameSlot] = []
        next_id = 0
        newest_unread: int | None = None
        last_seq = 0
        for op in ops:
            if op == "write":
                fid = next_id
                next_id += 1
                ok = write(r, fid, 1 + fid % 16, 1 + (fid * 7) % 16)
                assert ok == (len(held) < slot_count)
                if ok:
                    newest_unread = fid
            elif op == "abort":
                ws = r.begin_write(4, 4)
                assert (ws is None) == (len(held) == slot_count)
                if ws is not None:
                    ws.pixels[...] = 0
                    ws.abort()
                    if r.pending() == 0:  # it overwrote the only unread frame
                        newest_unread = None
            elif op == "acquire":
                s = r.acquire_newest()
                if newest_unread is None:
                    assert s is None
                else:
                    assert s is not None
                    check(s, newest_unread)
                    assert s.camera_key == 7
                    assert s.seq > last_seq
                    last_seq = s.seq
                    held.append(s)
                    newest_unread = None
            elif held:
                s = held.pop(0)
                check(s, s.frame_id)
                s.release()
            st_ = r.stats()
            assert (
                st_.written == st_.read + st_.skipped + (st_.dropped - st_.rejected) + r.pending()
            )
            assert r.slot_states().count(SLOT_READING) == len(held)
            assert r.slot_states().count(SLOT_WRITING) == 0
        for s in held:
            check(s, s.frame_id)
            s.release()
    finally:
        r.close()
        r.unlink()


def test_closed_ring_refuses_work(run_id: str) -> None:
    r = FrameRing.create(
        segment_name(run_id, "frame", "closed"),
        camera_key=0,
        slot_count=2,
        max_width=4,
        max_height=4,
    )
    r.close()
    r.unlink()
    with pytest.raises(ValueError, match="is closed"):
        r.acquire_newest()
    with pytest.raises(ValueError, match="is closed"):
        r.begin_write(4, 4)
    with pytest.raises(ValueError, match="is closed"):
        r.write(np.zeros((4, 4, 3), np.uint8), frame_id=0, capture_ts_ns=0, pts=0)
