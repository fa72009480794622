"""Snapshot drawing: scaling, boxes in the frame's coordinates, the lines' "in" arrow on
the side analytics counts as in, and the caption when boxes come from another frame."""

from __future__ import annotations

import types

import numpy as np

from itsd.monitor.draw import LINE_COLOUR, draw_snapshot, prepare


def frame(w: int, h: int, fmt: int = 0) -> types.SimpleNamespace:
    px = np.zeros((h, w, 3), np.uint8)
    px[..., 0] = 200  # red in RGB
    return types.SimpleNamespace(pixels=px, pixel_format=fmt, frame_id=7)


def test_prepare_converts_and_scales() -> None:
    img = prepare(frame(1920, 1080), 960)
    assert img.shape == (540, 960, 3)
    assert tuple(img[10, 10]) == (0, 0, 200)  # BGR now


def test_boxes_scale_with_the_picture_and_lines_point_in() -> None:
    img = prepare(frame(1280, 720), 640)  # half size
    det = [7, 1280, 720, [[200, 200, 600, 400, 3, "car"]]]
    line = [{"id": "h", "start": [0.0, 0.5], "end": [1.0, 0.5]}]
    out = draw_snapshot(img, 7, det, line)
    box = out[150:201, 100:301]
    assert (box != (0, 0, 200)).any(axis=2).sum() > 400  # the rectangle at half scale
    # Horizontal line left to right: "in" is downwards (itsd.analytics.lines).
    mid = (320, 180)
    below = out[mid[1] + 8 : mid[1] + 20, mid[0] - 1 : mid[0] + 2]
    above = out[mid[1] - 20 : mid[1] - 8, mid[0] - 1 : mid[0] + 2]
    assert (below == LINE_COLOUR).all(axis=2).any()
    assert not (above == LINE_COLOUR).all(axis=2).any()


def test_caption_says_when_boxes_are_of_another_frame() -> None:
    img = prepare(frame(320, 180), 960)
    plain = draw_snapshot(img.copy(), 7, [7, 320, 180, []], [])
    other = draw_snapshot(img.copy(), 7, [5, 320, 180, []], [])
    none = draw_snapshot(img.copy(), 7, None, [])
    assert not np.array_equal(plain, other) and not np.array_equal(plain, none)
