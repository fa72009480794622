"""``itsd calibrate``: draw a camera's calibration onto a frame of its source, as a PNG.

The picture shows the calibration points (numbered, with their ground coordinates and
their reprojection error), the ground grid projected back onto the road, the ground
axes, and the camera's counting lines and zones: if the grid lies flat on the road and
its squares look square, the calibration is right (``itsd.drawing.draw_calibration``).

The frame comes from the camera's own source (a file, or one frame of a stream) through
OpenCV's reader; ``frame_index`` picks a later frame of a file. Without a readable
source a grey canvas of ``canvas`` size is used, so the geometry can still be checked.

This module must never import a stage, an engine, a GPU library, itsd.control or
itsd.supervisor.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from itsd.analytics.calibration import Calibration
from itsd.config import CameraConfig
from itsd.drawing import Image, draw_calibration, write_png
from itsd.errors import ConfigError


def read_frame(source: str, frame_index: int = 0) -> Image | None:
    """One frame (BGR) of a source, or None if it cannot be read."""
    if source.startswith(("pattern://", "sample:")):
        return None
    path = source.removeprefix("file://")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return None
        if frame_index > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, float(frame_index))
        ok, frame = cap.read()
        return frame if ok else None
    finally:
        cap.release()


def calibrate(
    camera: CameraConfig,
    output: Path,
    frame_index: int = 0,
    grid_m: float = 5.0,
    canvas: tuple[int, int] = (1280, 720),
) -> tuple[Path, Calibration, bool]:
    """Draw ``camera``'s calibration; (PNG path, calibration, whether a real frame was used)."""
    cal_cfg = camera.calibration
    if cal_cfg is None:
        raise ConfigError(f"camera {camera.id!r} has no calibration (cameras[].calibration)")
    cal = Calibration.fit(cal_cfg.image_points, cal_cfg.world_points, cal_cfg.bearing_deg)
    frame = read_frame(camera.source, frame_index)
    real = frame is not None
    if frame is None:
        frame = np.full((canvas[1], canvas[0], 3), 60, dtype=np.uint8)
    img = draw_calibration(
        frame,
        cal,
        [(float(p[0]), float(p[1])) for p in cal_cfg.image_points],
        [(float(p[0]), float(p[1])) for p in cal_cfg.world_points],
        grid_m=grid_m,
        lines=[(ln.id, ln.start, ln.end) for ln in camera.lines],
        zones=[(z.id, list(z.polygon)) for z in camera.zones],
    )
    return write_png(output, img), cal, real
