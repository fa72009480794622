"""Alert snapshots of a camera whose ring carries I420: the background is the frame in BGR."""

from __future__ import annotations

import cv2
import numpy as np

from itsd.analytics import COCO_NAMES
from itsd.config import CameraConfig
from itsd.shm import FrameRing, new_run_id, segment_name
from itsd.shm.frame_ring import PIXEL_FORMAT_I420
from itsd.stages.analyze import CameraAnalytics


def test_snapshot_background_of_an_i420_frame_is_bgr() -> None:
    ring = FrameRing.create(
        segment_name(new_run_id(), "frame", "snap"),
        camera_key=1,
        slot_count=3,
        max_width=64,
        max_height=48,
    )
    cam = CameraAnalytics(CameraConfig(id="c", source="x.mp4"), COCO_NAMES)
    try:
        cam.attach_frames(ring.name)
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[..., 0] = 220  # red
        yuv = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), np.uint8)
        assert ring.write(yuv, frame_id=5, capture_ts_ns=1, pts=1, pixel_format=PIXEL_FORMAT_I420)
        img, frame_id = cam._background(5)
        assert frame_id == 5 and img.shape == (48, 64, 3)
        b, g, r = (int(v) for v in img[24, 32])
        assert r > 200 and b < 30 and g < 30, (b, g, r)
    finally:
        cam.close_frames()
        ring.close()
        ring.unlink()
