"""Drawing: alert snapshots and calibration overlays (OpenCV), written as JPEG or PNG.

Analytics never draws (ARCHITECTURE.md); what it reports is drawn here:

* ``write_snapshot``: an alert's evidence picture, the frame's boxes with the alert's
  tracks highlighted, the zone's outline and a caption, on ``background`` (the frame,
  BGR; the analytics stage peeks it from the camera's frame ring) or, without one, on a
  blank canvas of the frame's size; scaled to at most 960 pixels wide.
* ``draw_calibration``: ``itsd calibrate``'s check picture, on a real frame of the
  camera: the calibration points with their numbers and ground coordinates, the
  polygon through them, the ground grid projected back onto the picture (every
  ``grid_m`` metres, with the ground axes in colour), the counting lines and zones.

This module must never import a stage, an engine, a GPU library, itsd.control,
itsd.monitor or itsd.supervisor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from itsd.analytics.calibration import Calibration

Image = npt.NDArray[Any]

_GREY = (90, 90, 90)
_WHITE = (255, 255, 255)
_RED = (40, 40, 230)  # BGR
_YELLOW = (0, 215, 255)
_CYAN = (230, 200, 0)
_GREEN = (60, 200, 60)
_MAX_WIDTH = 960


@dataclass(frozen=True)
class Box:
    """One box to draw: pixels of the frame, its class, track id (0: none), highlight."""

    xyxy: tuple[float, ...]
    label: str
    track_id: int = 0
    highlight: bool = False


def _text(img: Image, text: str, org: tuple[int, int], color: tuple[int, int, int]) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)


def render_snapshot(
    width: int,
    height: int,
    boxes: Sequence[Box],
    polygon: Sequence[tuple[float, float]] | None,
    caption: str,
    background: Image | None = None,
) -> Image:
    """The snapshot picture (BGR)."""
    scale = min(1.0, _MAX_WIDTH / max(width, 1))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if background is not None:
        img = cv2.resize(background, (w, h))
    else:
        img = np.full((h, w, 3), 32, dtype=np.uint8)
        _text(img, "no pixels: boxes only", (8, h - 10), _GREY)
    if polygon:
        pts = np.array([[x * w, y * h] for x, y in polygon], dtype=np.int32)
        cv2.polylines(img, [pts], True, _YELLOW, 2, cv2.LINE_AA)
    for b in boxes:
        x0, y0, x1, y1 = (round(v * scale) for v in b.xyxy[:4])
        color = _RED if b.highlight else _GREEN
        cv2.rectangle(img, (x0, y0), (x1, y1), color, 3 if b.highlight else 1)
        tag = f"{b.label} #{b.track_id}" if b.track_id else b.label
        _text(img, tag, (x0, max(12, y0 - 4)), color)
    _text(img, caption[:120], (8, 18), _WHITE)
    return img


def write_snapshot(
    path: Path,
    width: int,
    height: int,
    boxes: Sequence[Box],
    polygon: Sequence[tuple[float, float]] | None,
    caption: str,
    background: Image | None = None,
    quality: int = 85,
) -> Path:
    """Render and write a JPEG snapshot (directories made as needed); OSError on failure."""
    img = render_snapshot(width, height, boxes, polygon, caption, background)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"JPEG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
    return path


def draw_calibration(
    frame: Image,
    calibration: Calibration,
    image_points: Sequence[tuple[float, float]],
    world_points: Sequence[tuple[float, float]],
    grid_m: float = 5.0,
    lines: Sequence[tuple[str, tuple[float, float], tuple[float, float]]] = (),
    zones: Sequence[tuple[str, Sequence[tuple[float, float]]]] = (),
) -> Image:
    """The calibration check picture on ``frame`` (BGR, modified copy returned)."""
    img = frame.copy()
    h, w = img.shape[:2]

    def px(p: Sequence[float]) -> tuple[int, int]:
        return (round(p[0] * w), round(p[1] * h))

    # The ground grid: lines of constant x and y around the calibrated area.
    world = np.asarray(world_points, dtype=np.float64)
    lo = np.floor(world.min(axis=0) / grid_m - 2) * grid_m
    hi = np.ceil(world.max(axis=0) / grid_m + 2) * grid_m
    steps = 60
    for axis in (0, 1):
        for v in np.arange(lo[axis], hi[axis] + grid_m / 2, grid_m):
            other = 1 - axis
            ts = np.linspace(lo[other], hi[other], steps)
            g = np.zeros((steps, 2))
            g[:, axis] = v
            g[:, other] = ts
            im = calibration.to_image(g)
            color = _GREY
            if abs(v) < 1e-9:
                color = _RED if axis == 1 else _CYAN  # y = 0 is the x axis, x = 0 the y axis
            _polyline(img, im, w, h, color)
    # Points, their numbers, ground coordinates and reprojection errors.
    mapped = calibration.to_ground(np.asarray(image_points, dtype=np.float64))
    for i, (p, wp) in enumerate(zip(image_points, world_points, strict=True)):
        c = px(p)
        cv2.circle(img, c, 5, _YELLOW, -1, cv2.LINE_AA)
        err = math.hypot(*(mapped[i] - np.asarray(wp)))
        _text(img, f"{i + 1} ({wp[0]:g}, {wp[1]:g}) m  err {err:.2f}", (c[0] + 7, c[1] - 7), _WHITE)
    for name, a, b in lines:
        cv2.line(img, px(a), px(b), _GREEN, 2, cv2.LINE_AA)
        _text(img, name, px(a), _GREEN)
    for name, polygon in zones:
        pts = np.array([px(p) for p in polygon], dtype=np.int32)
        cv2.polylines(img, [pts], True, _CYAN, 2, cv2.LINE_AA)
        _text(img, name, tuple(pts[0]), _CYAN)
    north = calibration.compass_vector(0.0)
    _text(
        img,
        f"grid {grid_m:g} m; red: ground x axis, cyan: y axis; bearing of +y "
        f"{calibration.bearing_deg:g} deg; north = ground ({north[0]:.2f}, {north[1]:.2f}); "
        f"reprojection rms {calibration.rms_error_m:.2f} m",
        (8, h - 10),
        _WHITE,
    )
    return img


def _polyline(
    img: Image, pts: npt.NDArray[np.float64], w: int, h: int, color: tuple[int, ...]
) -> None:
    """Draw the finite runs of normalised points, skipping NaNs and far-off points."""
    run: list[tuple[int, int]] = []
    for x, y in pts:
        ok = math.isfinite(x) and math.isfinite(y) and -1.0 < x < 2.0 and -1.0 < y < 2.0
        if ok:
            run.append((round(x * w), round(y * h)))
        if not ok or len(run) == len(pts):
            if len(run) >= 2:
                cv2.polylines(img, [np.array(run, dtype=np.int32)], False, color, 1, cv2.LINE_AA)
            run = []
    if len(run) >= 2:
        cv2.polylines(img, [np.array(run, dtype=np.int32)], False, color, 1, cv2.LINE_AA)


def write_png(path: Path, img: Image) -> Path:
    """Write a PNG (directories made as needed); OSError on failure."""
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path
