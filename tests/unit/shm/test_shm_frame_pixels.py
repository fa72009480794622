"""Unit tests of I420 frames in a frame ring and of itsd.shm.frame_pixels (to_rgb/to_bgr)."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from itsd.shm import segment_name
from itsd.shm.frame_pixels import i420_planes, picture_size, to_bgr, to_rgb
from itsd.shm.frame_ring import (
    PIXEL_FORMAT_BGR24,
    PIXEL_FORMAT_GRAY8,
    PIXEL_FORMAT_I420,
    PIXEL_FORMAT_RGB24,
    FrameRing,
)

MAX_W, MAX_H = 64, 48


def picture(width: int = 64, height: int = 48) -> np.ndarray:
    """A smooth RGB picture (gradients): scaling before or after converting agrees on it."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    rgb = np.stack([40 + 180 * x + 0 * y, 60 + 150 * y + 0 * x, 200 - 120 * x * y], axis=2)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def as_i420(rgb: np.ndarray) -> np.ndarray:
    out: np.ndarray = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    return out


@pytest.fixture
def ring(run_id: str) -> Iterator[FrameRing]:
    r = FrameRing.create(
        segment_name(run_id, "frame", "i420"),
        camera_key=5,
        slot_count=3,
        max_width=MAX_W,
        max_height=MAX_H,
    )
    yield r
    r.close()
    r.unlink()


def test_i420_frames_go_through_the_ring_beside_rgb_ones(ring: FrameRing) -> None:
    yuv = as_i420(picture())
    assert ring.write(yuv, frame_id=1, capture_ts_ns=10, pts=1, pixel_format=PIXEL_FORMAT_I420)
    with ring.acquire_oldest() as slot:  # type: ignore[union-attr]
        assert slot.pixel_format == PIXEL_FORMAT_I420
        assert (slot.width, slot.height) == (64, 48)
        assert slot.pixels.shape == (72, 64)
        assert slot.nbytes == 64 * 48 * 3 // 2
        assert np.array_equal(slot.pixels, yuv)
        assert not slot.pixels.flags.writeable
    rgb = picture(32, 16)
    assert ring.write(rgb, frame_id=2, capture_ts_ns=20, pts=2, pixel_format=PIXEL_FORMAT_RGB24)
    with ring.acquire_oldest() as slot:  # type: ignore[union-attr]
        assert slot.pixel_format == PIXEL_FORMAT_RGB24
        assert slot.pixels.shape == (16, 32, 3)
        assert np.array_equal(slot.pixels, rgb)


def test_zero_copy_write_of_an_i420_slot_and_peek(ring: FrameRing) -> None:
    yuv = as_i420(picture(32, 24))
    ws = ring.begin_write(32, 24, PIXEL_FORMAT_I420)
    assert ws is not None and ws.pixels.shape == (36, 32)
    ws.pixels[:] = yuv
    ws.commit(frame_id=7, capture_ts_ns=1, pts=0)  # the format the slot was begun with
    peeked = ring.peek()
    assert peeked is not None
    assert peeked.pixel_format == PIXEL_FORMAT_I420 and peeked.pixels.shape == (36, 32)
    assert np.array_equal(peeked.pixels, yuv)
    with ring.acquire_newest() as slot:  # type: ignore[union-attr]
        assert slot.frame_id == 7 and np.array_equal(slot.pixels, yuv)


def test_i420_mistakes_are_refused_with_reasons(ring: FrameRing, run_id: str) -> None:
    with pytest.raises(ValueError, match="even width and height"):
        ring.begin_write(31, 24, PIXEL_FORMAT_I420)
    with pytest.raises(ValueError, match=r"\(H \* 3 / 2, W\)"):
        ring.write(picture(), frame_id=1, capture_ts_ns=1, pts=1, pixel_format=PIXEL_FORMAT_I420)
    ws = ring.begin_write(32, 24, PIXEL_FORMAT_I420)
    assert ws is not None
    with pytest.raises(ValueError, match="cannot commit it as"):
        ws.commit(frame_id=1, capture_ts_ns=1, pts=1, pixel_format=PIXEL_FORMAT_RGB24)
    ws.abort()
    gray = FrameRing.create(
        segment_name(run_id, "frame", "gray"),
        camera_key=6,
        slot_count=2,
        max_width=8,
        max_height=8,
        channels=1,
    )
    try:
        with pytest.raises(ValueError, match="does not match"):
            gray.begin_write(8, 8, PIXEL_FORMAT_I420)
    finally:
        gray.close()
        gray.unlink()


def test_to_rgb_of_i420_matches_opencv_and_rgb_passes_through() -> None:
    rgb = picture()
    yuv = as_i420(rgb)
    assert picture_size(yuv, PIXEL_FORMAT_I420) == (64, 48)
    back = to_rgb(yuv, PIXEL_FORMAT_I420)
    assert back.shape == (48, 64, 3)
    assert np.array_equal(back, cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420))
    err = np.abs(back.astype(int) - rgb)  # a 4:2:0 round trip of a smooth picture
    assert err.mean() < 2.5 and err.max() <= 10
    assert np.array_equal(to_bgr(yuv, PIXEL_FORMAT_I420), back[:, :, ::-1])
    assert to_rgb(rgb, PIXEL_FORMAT_RGB24) is rgb
    assert np.array_equal(to_bgr(rgb, PIXEL_FORMAT_RGB24), rgb[:, :, ::-1])
    assert np.array_equal(to_rgb(rgb[:, :, ::-1].copy(), PIXEL_FORMAT_BGR24), rgb)
    gray = np.full((4, 6, 1), 77, np.uint8)
    assert np.array_equal(to_rgb(gray, PIXEL_FORMAT_GRAY8), np.full((4, 6, 3), 77, np.uint8))


@pytest.mark.parametrize("size", [(32, 24), (31, 23), (48, 36)])
def test_to_rgb_scales_the_planes_first_and_agrees_with_scaling_after(
    size: tuple[int, int],
) -> None:
    yuv = as_i420(picture())
    small = to_rgb(yuv, PIXEL_FORMAT_I420, size)
    assert (small.shape[1], small.shape[0]) == size
    after = cv2.resize(cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420), size)
    diff = np.abs(small.astype(int) - after)
    assert diff.mean() < 3.0 and diff.max() <= 12


def test_i420_planes_are_views_in_order() -> None:
    yuv = np.arange(72 * 64, dtype=np.uint32).astype(np.uint8).reshape(72, 64)
    y, u, v = i420_planes(yuv)
    assert y.shape == (48, 64) and u.shape == (24, 32) and v.shape == (24, 32)
    assert np.shares_memory(y, yuv) and np.shares_memory(v, yuv)
    assert v.reshape(-1)[-1] == yuv.reshape(-1)[-1]
    with pytest.raises(ValueError, match="even H and W"):
        i420_planes(np.zeros((9, 5), np.uint8))
