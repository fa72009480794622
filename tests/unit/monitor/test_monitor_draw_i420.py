"""Snapshots of cameras whose ring carries I420: ``prepare`` gives the same BGR picture."""

from __future__ import annotations

import types

import cv2
import numpy as np

from itsd.monitor.draw import prepare


def test_prepare_takes_i420_frames() -> None:
    rgb = np.zeros((360, 640, 3), np.uint8)
    rgb[..., 0] = 200  # red
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    img = prepare(types.SimpleNamespace(pixels=yuv, pixel_format=3, frame_id=1), 320)
    assert img.shape == (180, 320, 3)
    assert np.allclose(img[90, 160], (0, 0, 200), atol=4)  # BGR
