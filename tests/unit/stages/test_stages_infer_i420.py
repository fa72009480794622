"""Inference on I420 ring slots: each frame goes to the engine as RGB scaled to the size
the letterbox would give it, and its boxes come back in the slot's own coordinates."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from itsd.shm import FrameRing, new_run_id, segment_name
from itsd.shm.frame_ring import PIXEL_FORMAT_I420, PIXEL_FORMAT_RGB24
from itsd.stages.infer import _model_frames


@pytest.fixture
def ring() -> Iterator[FrameRing]:
    r = FrameRing.create(
        segment_name(new_run_id(), "frame", "cam"),
        camera_key=1,
        slot_count=4,
        max_width=640,
        max_height=360,
    )
    yield r
    r.close()
    r.unlink()


def test_i420_slots_are_scaled_and_rgb_slots_pass_as_they_are(ring: FrameRing) -> None:
    rgb = np.zeros((360, 640, 3), np.uint8)
    rgb[100:200, 300:500] = (200, 40, 40)  # a red block
    yuv = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), np.uint8)
    ring.write(yuv, frame_id=1, capture_ts_ns=1, pts=1, pixel_format=PIXEL_FORMAT_I420)
    a = ring.acquire_oldest()
    ring.write(rgb, frame_id=2, capture_ts_ns=2, pts=2, pixel_format=PIXEL_FORMAT_RGB24)
    b = ring.acquire_oldest()
    assert a is not None and b is not None
    taken: list[tuple[Any, Any]] = [(None, a), (None, b)]
    frames, scales = _model_frames((320, 320), taken)
    try:
        small, same = frames
        assert small.shape == (180, 320, 3)  # the letterbox's size for 640x360 in 320x320
        assert same is b.pixels and scales[1] is None
        assert np.allclose(small[75, 200], (200, 40, 40), atol=6)  # the block, in colour
        assert np.allclose(small[20, 20], (0, 0, 0), atol=3)
        box = np.array([[150.0, 50.0, 250.0, 100.0]], np.float32)  # in the small frame
        assert scales[0] is not None
        assert np.allclose(box * scales[0], [[300.0, 100.0, 500.0, 200.0]])
    finally:
        a.release()
        b.release()


def test_frames_smaller_than_the_model_are_converted_at_their_own_size(ring: FrameRing) -> None:
    yuv = np.full((120 * 3 // 2, 160), 128, np.uint8)
    ring.write(yuv, frame_id=1, capture_ts_ns=1, pts=1, pixel_format=PIXEL_FORMAT_I420)
    with ring.acquire_oldest() as s:  # type: ignore[union-attr]
        frames, scales = _model_frames((320, 320), [(None, s)])  # type: ignore[list-item]
        assert frames[0].shape == (120, 160, 3)
        assert scales[0] is not None and np.allclose(scales[0], 1.0)
