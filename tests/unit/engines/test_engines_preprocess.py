"""Unit tests of the shared letterbox: parameters, padding, pixels, box round trips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itsd.engines.preprocess import (
    PAD_VALUE,
    boxes_to_frame,
    boxes_to_letterbox,
    letterbox_batch,
    letterbox_into,
    letterbox_params,
)


def _reference(frame: np.ndarray, dst_h: int, dst_w: int) -> np.ndarray:
    """Ultralytics' LetterBox(auto=False, center=True) followed by HWC->CHW /255."""
    h, w = frame.shape[:2]
    r = min(dst_h / h, dst_w / w)
    new_w, new_h = round(w * r), round(h * r)
    dw, dh = (dst_w - new_w) / 2, (dst_h - new_h) / 2
    img = frame if (w, h) == (new_w, new_h) else cv2.resize(frame, (new_w, new_h))
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114,) * 3)
    return img.transpose(2, 0, 1).astype(np.float32) / 255.0


def test_params_wide_frame_pads_top_and_bottom() -> None:
    lb = letterbox_params(360, 640, 320, 320)
    assert (lb.scale, lb.new_w, lb.new_h, lb.pad_x, lb.pad_y) == (0.5, 320, 180, 0, 70)


def test_params_tall_frame_pads_left_and_right() -> None:
    lb = letterbox_params(640, 480, 640, 640)
    assert (lb.new_w, lb.new_h, lb.pad_x, lb.pad_y) == (480, 640, 80, 0)


def test_params_small_frame_is_scaled_up() -> None:
    lb = letterbox_params(100, 200, 320, 320)
    assert lb.scale == pytest.approx(1.6)
    assert (lb.new_w, lb.new_h, lb.pad_x, lb.pad_y) == (320, 160, 0, 80)


def test_params_odd_padding_puts_extra_pixel_at_bottom() -> None:
    # 272 * 0.5 = 136 rows, 184 rows of border: 92 above, 92 below.
    lb = letterbox_params(272, 640, 320, 320)
    assert (lb.new_h, lb.pad_y) == (136, 92)
    # 175 rows of image leave 145 rows: 72 above, 73 below (as Ultralytics).
    lb = letterbox_params(350, 640, 320, 320)
    assert (lb.new_h, lb.pad_y) == (175, 72)


def test_params_reject_empty_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        letterbox_params(0, 640, 320, 320)


@pytest.mark.parametrize(
    ("h", "w", "dst"), [(360, 640, (320, 320)), (272, 640, (320, 320)), (480, 360, (640, 640)),
                        (100, 150, (320, 320)), (320, 320, (320, 320)), (1080, 1920, (384, 640))],
)  # fmt: skip
def test_letterbox_into_matches_reference(h: int, w: int, dst: tuple[int, int]) -> None:
    rng = np.random.default_rng(h * w)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = np.full((3, *dst), -1.0, dtype=np.float32)
    letterbox_into(frame, out, letterbox_params(h, w, *dst))
    np.testing.assert_allclose(out, _reference(frame, *dst), atol=1e-6)


def test_padding_is_grey_114_and_image_area_is_rgb_unit_range() -> None:
    frame = np.zeros((360, 640, 3), dtype=np.uint8)
    frame[..., 0] = 255  # pure red, RGB order
    out = np.full((3, 320, 320), -1.0, dtype=np.float32)
    lb = letterbox_params(360, 640, 320, 320)
    letterbox_into(frame, out, lb)
    assert np.all(out[:, : lb.pad_y] == np.float32(PAD_VALUE))
    assert np.all(out[:, lb.pad_y + lb.new_h :] == np.float32(PAD_VALUE))
    inner = out[:, lb.pad_y : lb.pad_y + lb.new_h]
    assert np.all(inner[0] == 1.0) and np.all(inner[1:] == 0.0)


def test_letterbox_into_writes_only_its_slot_of_a_batch() -> None:
    batch = np.full((3, 3, 64, 64), 7.0, dtype=np.float32)
    frame = np.full((30, 60, 3), 255, dtype=np.uint8)
    letterbox_into(frame, batch[1], letterbox_params(30, 60, 64, 64))
    assert np.all(batch[0] == 7.0) and np.all(batch[2] == 7.0)
    assert batch[1].max() == 1.0 and batch[1].min() == np.float32(PAD_VALUE)


def test_letterbox_into_accepts_non_contiguous_frames() -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (400, 700, 3), dtype=np.uint8)
    crop = big[20:380, 30:670]  # a view with a row stride, not contiguous
    out = np.empty((3, 320, 320), dtype=np.float32)
    letterbox_into(crop, out, letterbox_params(360, 640, 320, 320))
    np.testing.assert_allclose(out, _reference(np.ascontiguousarray(crop), 320, 320), atol=1e-6)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((360, 640), dtype=np.uint8), r"\(H, W, 3\)"),
        (np.zeros((360, 640, 4), dtype=np.uint8), r"\(H, W, 3\)"),
        (np.zeros((360, 640, 3), dtype=np.float32), "uint8"),
        (np.zeros((100, 640, 3), dtype=np.uint8), "computed for 360x640"),
    ],
)
def test_letterbox_into_rejects_bad_frames(frame: np.ndarray, message: str) -> None:
    out = np.empty((3, 320, 320), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        letterbox_into(frame, out, letterbox_params(360, 640, 320, 320))


def test_letterbox_into_rejects_wrong_output() -> None:
    frame = np.zeros((360, 640, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\(3, 320, 320\) float32"):
        letterbox_into(
            frame, np.empty((320, 320, 3), np.float32), letterbox_params(360, 640, 320, 320)
        )


def test_letterbox_batch_handles_mixed_sizes_and_names_bad_index() -> None:
    frames = [np.zeros((360, 640, 3), np.uint8), np.zeros((100, 50, 3), np.uint8)]
    batch = np.empty((4, 3, 320, 320), np.float32)
    boxes = letterbox_batch(frames, batch)
    assert [(b.src_h, b.src_w) for b in boxes] == [(360, 640), (100, 50)]
    with pytest.raises(ValueError, match="frame 1"):
        letterbox_batch([frames[0], np.zeros((10, 10), np.uint8)], batch)


@settings(max_examples=200, deadline=None)
@given(
    src_h=st.integers(1, 2000),
    src_w=st.integers(1, 2000),
    dst=st.sampled_from([(320, 320), (640, 640), (384, 640)]),
    fx=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    fy=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_box_round_trip_through_letterbox_is_identity(
    src_h: int,
    src_w: int,
    dst: tuple[int, int],
    fx: tuple[float, float],
    fy: tuple[float, float],
) -> None:
    lb = letterbox_params(src_h, src_w, *dst)
    x1, x2 = sorted(f * src_w for f in fx)
    y1, y2 = sorted(f * src_h for f in fy)
    box = np.array([[x1, y1, x2, y2]], dtype=np.float32)
    inside = boxes_to_letterbox(box, lb)
    assert np.all(inside[:, 0::2] >= lb.pad_x - 1e-3)
    assert np.all(inside[:, 0::2] <= lb.pad_x + lb.new_w + 0.5 + 1e-3)
    back = boxes_to_frame(inside, lb)
    tolerance = 1e-4 * max(src_h, src_w) + 1e-3
    np.testing.assert_allclose(back, box, atol=tolerance)


def test_boxes_to_frame_clips_to_the_frame() -> None:
    lb = letterbox_params(360, 640, 320, 320)
    back = boxes_to_frame(np.array([[-20, 10, 400, 300]], np.float32), lb)
    np.testing.assert_array_equal(back, [[0, 0, 640, 360]])
